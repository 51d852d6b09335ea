"""cnn.functional.linear / linear_backward against NumPy float64 and finite differences."""
import numpy as np
import pytest
from conftest import numerical_grad

import cnn
from cnn import functional as F

DTYPES = (np.float32, np.float64)
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def tol(dtype, length):
    """TOL for a sum of `length` products of unit-scale values: rounding grows about as
    sqrt(length), so the absolute part scales with it past 100 terms."""
    return dict(TOL[dtype], atol=TOL[dtype]["atol"] * max(1.0, np.sqrt(length) / 10))


@pytest.mark.parametrize("dtype", DTYPES)
# one row (the GEMV path) with several unit and feature blocks: (1, 3136, 128), (1, 300, 200)
@pytest.mark.parametrize("n, i, o", [(1, 1, 1), (7, 5, 3), (64, 300, 17), (3, 10, 128),
                                     (1, 3136, 128), (1, 300, 200)])
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
    np.testing.assert_allclose(y, want, **tol(dtype, i))
    dy = rng.standard_normal((n, o)).astype(dtype)
    g = dy.astype(np.float64) * (y > 0) if activation else dy.astype(np.float64)
    dx, dw, db = F.linear_backward(dy, x, w, activation=activation, y=y if activation else None)
    np.testing.assert_allclose(dx, g @ w64, **tol(dtype, o))
    np.testing.assert_allclose(dw, g.T @ x64, **tol(dtype, n))
    np.testing.assert_allclose(db, g.sum(axis=0), **tol(dtype, n))
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


@pytest.mark.parametrize("n", [64, 1])
def test_results_do_not_depend_on_thread_count(rng, n):
    x = rng.standard_normal((n, 3136)).astype(np.float32)
    w = rng.standard_normal((128, 3136)).astype(np.float32)
    b = rng.standard_normal(128).astype(np.float32)
    dy = rng.standard_normal((n, 128)).astype(np.float32)
    old = cnn.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            cnn.set_num_threads(threads)
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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans", [False, True])
def test_gemv_door_matches_numpy(rng, dtype, trans):
    from cnn._ext import _blas
    a = rng.standard_normal((37, 300)).astype(dtype)
    x = rng.standard_normal(37 if trans else 300).astype(dtype)
    y = rng.standard_normal(300 if trans else 37).astype(dtype)
    a64, x64, y64 = (v.astype(np.float64) for v in (a, x, y))
    want = 0.5 * ((a64.T if trans else a64) @ x64) + 2.0 * y64
    _blas.gemv_memview(trans, 0.5, a, x, 2.0, y)
    np.testing.assert_allclose(y, want, rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-4)
    with pytest.raises(ValueError, match="gemv shapes"):
        _blas.gemv_memview(trans, 1.0, a, y, 0.0, x)
