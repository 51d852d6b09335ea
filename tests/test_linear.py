"""cnn.functional.linear / linear_backward against NumPy float64 and finite differences."""
import numpy as np
import pytest
from conftest import numerical_grad

import cnn
from cnn import functional as F

DTYPES = (np.float32, np.float64)
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, i, o", [(1, 1, 1), (7, 5, 3), (64, 300, 17), (3, 10, 128)])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_forward_and_backward_match_numpy(rng, dtype, n, i, o, activation):
    x = rng.standard_normal((n, i)).astype(dtype)
    w = rng.standard_normal((o, i)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    z = x64 @ w64.T + b64
    y = F.linear(x, w, b, activation=activation)
    want = np.maximum(z, 0) if activation else z
    assert y.dtype == dtype and y.shape == (n, o)
    np.testing.assert_allclose(y, want, **TOL[dtype])
    dy = rng.standard_normal((n, o)).astype(dtype)
    g = dy.astype(np.float64) * (y > 0) if activation else dy.astype(np.float64)
    dx, dw, db = F.linear_backward(dy, x, w, activation=activation, y=y if activation else None)
    np.testing.assert_allclose(dx, g @ w64, **TOL[dtype])
    np.testing.assert_allclose(dw, g.T @ x64, **TOL[dtype])
    np.testing.assert_allclose(db, g.sum(axis=0), **TOL[dtype])
    assert F.linear_backward(dy, x, w, need_dx=False, activation=activation,
                             y=y if activation else None)[0] is None


def test_finite_differences_float64(rng):
    x = rng.standard_normal((4, 6))
    w = rng.standard_normal((5, 6))
    b = rng.standard_normal(5)
    g = rng.standard_normal((4, 5))

    def loss():
        return float(np.sum(F.linear(x, w, b) * g))

    dx, dw, db = F.linear_backward(g, x, w)
    np.testing.assert_allclose(dx, numerical_grad(loss, x), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(dw, numerical_grad(loss, w), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(db, numerical_grad(loss, b), rtol=1e-7, atol=1e-8)


def test_results_do_not_depend_on_thread_count(rng):
    x = rng.standard_normal((64, 3136)).astype(np.float32)
    w = rng.standard_normal((128, 3136)).astype(np.float32)
    b = rng.standard_normal(128).astype(np.float32)
    dy = rng.standard_normal((64, 128)).astype(np.float32)
    old = cnn.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            cnn.set_num_threads(n)
            y = F.linear(x, w, b, activation="relu")
            out.append((y,) + F.linear_backward(dy, x, w, activation="relu", y=y))
    finally:
        cnn.set_num_threads(old)
    for one, two in zip(*out):
        np.testing.assert_array_equal(one, two)


def test_empty_batch(rng):
    w = rng.standard_normal((3, 4))
    y = F.linear(np.zeros((0, 4)), w)
    assert y.shape == (0, 3)
    dx, dw, db = F.linear_backward(np.zeros((0, 3)), np.zeros((0, 4)), w)
    assert dx.shape == (0, 4) and not dw.any() and not db.any()


@pytest.mark.parametrize("args, error, match", [
    ((np.zeros((2, 3, 1)), np.zeros((4, 3))), ValueError, r"x must be 2-D"),
    ((np.zeros((2, 3)), np.zeros((4, 5))), ValueError, r"w has 5 input features"),
    ((np.zeros((2, 3), np.float32), np.zeros((4, 3))), TypeError, r"w has dtype float64"),
    ((np.zeros((2, 3), np.int64), np.zeros((4, 3))), TypeError, r"x must have dtype float32 or float64"),
    ((np.zeros((2, 3)), np.zeros((4, 3)), np.zeros(5)), ValueError, r"b must have shape \(4,\)"),
])
def test_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        F.linear(*args)


def test_bad_backward_input():
    x, w = np.zeros((2, 3)), np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"dy must have the output's shape \(2, 4\)"):
        F.linear_backward(np.zeros((2, 5)), x, w)
    with pytest.raises(ValueError, match="needs y"):
        F.linear_backward(np.zeros((2, 4)), x, w, activation="relu")
