"""Activations: values against hand formulas, backward against float64 central differences
and (softmax) the explicit Jacobian of eq. (4), stability at +-1e4, dtypes, validation."""

import math

import numpy as np
import pytest
from conftest import numerical_grad_of
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn import activations as A

NAMES = ["identity", "sigmoid", "relu", "leaky_relu", "tanh", "softmax"]


def away_from_zero(rng, shape, margin=1e-2):
    """Random z with |z| >= margin, so ReLU kinks are out of reach of the finite differences."""
    z = rng.standard_normal(shape)
    return np.where(np.abs(z) < margin, np.copysign(margin, z) + z, z)


@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_finite_differences(name):
    rng = np.random.default_rng(1)
    act = A.get(name)
    z = away_from_zero(rng, (4, 5)) * 2
    g = rng.standard_normal(z.shape)  # random upstream gradient: exercises the full Jacobian

    def f(zz):
        return float(np.sum(g * act.forward(zz)))

    expected = numerical_grad_of(f, z)
    got = act.backward(z, act.forward(z), g)
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-9)
    # a=None recomputes the forward pass and must give the same answer
    np.testing.assert_array_equal(act.backward(z, None, g), got)


def test_forward_values_hand_formulas():
    z = np.array([[0.0, math.log(3.0), -math.log(3.0), 2.0]])
    np.testing.assert_allclose(A.Sigmoid().forward(z), [[0.5, 0.75, 0.25, 1 / (1 + math.exp(-2))]],
                               rtol=1e-15)
    np.testing.assert_allclose(A.Tanh().forward(z)[0, 3], (math.e ** 4 - 1) / (math.e ** 4 + 1),
                               rtol=1e-15)
    np.testing.assert_array_equal(A.ReLU().forward(np.array([-2.0, 0.0, 3.0])), [0.0, 0.0, 3.0])
    np.testing.assert_array_equal(A.LeakyReLU(0.1).forward(np.array([-2.0, 0.0, 3.0])),
                                  [-0.2, 0.0, 3.0])
    s = A.Softmax().forward(np.array([[1.0, 2.0, 3.0]]))
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(s, [e / e.sum()], rtol=1e-15)


def test_relu_derivative_at_zero_is_zero_and_leaky_is_alpha():
    z = np.array([-1.0, 0.0, 1.0])
    g = np.array([5.0, 7.0, 11.0])
    np.testing.assert_array_equal(A.ReLU().backward(z, None, g), [0.0, 0.0, 11.0])
    np.testing.assert_array_equal(A.LeakyReLU(0.25).backward(z, None, g), [1.25, 1.75, 11.0])


def softmax_jacobian_product(s, g):
    """g^T J per row, J[i, k] = s_i (delta_ik - s_k): eq. (4) written out as a matrix."""
    out = np.empty_like(s)
    for n in range(s.shape[0]):
        jac = np.diag(s[n]) - np.outer(s[n], s[n])
        out[n] = g[n] @ jac
    return out


def test_softmax_backward_is_full_jacobian_not_diagonal():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((3, 6))
    g = rng.standard_normal((3, 6))
    s = A.softmax(z)
    got = A.Softmax().backward(z, s, g)
    np.testing.assert_allclose(got, softmax_jacobian_product(s, g), rtol=1e-12, atol=1e-15)
    diagonal_only = g * s * (1 - s)  # the seed's item 12: wrong for a random upstream gradient
    assert not np.allclose(got, diagonal_only, atol=1e-3)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5), k=st.integers(1, 8), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([1e-3, 1.0, 30.0, 300.0]))
def test_softmax_properties(n, k, seed, scale):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, k)) * scale
    s = A.softmax(z)
    assert np.all(s >= 0) and np.all(np.isfinite(s))
    np.testing.assert_allclose(s.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(A.softmax(z + 123.0), s, rtol=1e-9, atol=1e-300)  # shift invariance
    g = rng.standard_normal((n, k))
    np.testing.assert_allclose(A.Softmax().backward(z, s, g), softmax_jacobian_product(s, g),
                               rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stable_at_large_inputs(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=dtype)
    g = np.ones_like(z)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        sig = A.Sigmoid().forward(z)
        np.testing.assert_array_equal(sig, np.array([[1, 0, 0.5], [0, 0, 0]], dtype=dtype))
        assert np.all(np.isfinite(A.Sigmoid().backward(z, sig, g)))
        s = A.softmax(z)
        np.testing.assert_allclose(s, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6)
        assert np.all(np.isfinite(A.Softmax().backward(z, s, g)))
        t = A.Tanh().forward(z)
        np.testing.assert_array_equal(t[0], np.array([1, -1, 0], dtype=dtype))
        assert np.all(np.isfinite(A.Tanh().backward(z, t, g)))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_shape_preserved_and_float32_close_to_float64(name, dtype):
    rng = np.random.default_rng(3)
    z64 = away_from_zero(rng, (5, 7))
    g64 = rng.standard_normal(z64.shape)
    act = A.get(name)
    z, g = z64.astype(dtype), g64.astype(dtype)
    a = act.forward(z)
    dz = act.backward(z, a, g)
    assert a.dtype == dtype and dz.dtype == dtype
    assert a.shape == z.shape and dz.shape == z.shape
    assert not np.shares_memory(a, z) and not np.shares_memory(dz, g)
    np.testing.assert_allclose(a, act.forward(z64), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dz, act.backward(z64, None, g64), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["identity", "sigmoid", "relu", "leaky_relu", "tanh"])
def test_elementwise_activations_take_any_shape(name):
    z = np.random.default_rng(4).standard_normal((2, 3, 4, 5)).astype(np.float32)
    act = A.get(name)
    assert act.backward(z, act.forward(z), np.ones_like(z)).shape == z.shape


def test_get_and_config_round_trip():
    assert isinstance(A.get(None), A.Identity)
    assert isinstance(A.get("linear"), A.Identity)
    for name in NAMES:
        act = A.get(name)
        assert act.name == name
        config = act.get_config()
        assert config["name"] == name
        assert A.get(config) == act
    leaky = A.LeakyReLU(alpha=0.2)
    assert A.get(leaky) is leaky
    assert A.get({"name": "leaky_relu", "alpha": 0.2}).alpha == 0.2
    assert A.get({"name": "leaky_relu", "alpha": 0.2}) != A.LeakyReLU()


def test_validation_errors():
    with pytest.raises(ValueError, match=r"activation must be one of .*got 'relux'"):
        A.get("relux")
    with pytest.raises(TypeError, match=r"activation must be None, a name.*got 3 of type int"):
        A.get(3)
    with pytest.raises(ValueError, match=r"keys \['alpha'\] that ReLU does not take"):
        A.get({"name": "relu", "alpha": 0.1})
    with pytest.raises(ValueError, match=r"alpha must be a finite number in \[0.0, 1.0\), got -0.1"):
        A.LeakyReLU(-0.1)
    with pytest.raises(TypeError, match=r"z must have dtype float32 or float64, got int64"):
        A.ReLU().forward(np.arange(3))
    with pytest.raises(TypeError, match=r"z must be a numpy.ndarray .*got list"):
        A.Sigmoid().forward([1.0, 2.0])
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"grad_a must have the shape of z \(2, 3\), got \(3, 2\)"):
        A.Tanh().backward(z, None, np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"a must have the shape of z \(2, 3\), got \(2, 2\)"):
        A.Softmax().backward(z, np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"z must be 2-D \(N, classes\) for softmax, got shape \(3,\)"):
        A.softmax(np.zeros(3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 7, 32768 * 3 + 5])
def test_relu_backward_kernel_is_the_selection_bit_for_bit(dtype, size):
    # the kernel path (same dtype, C-contiguous) against the plain selection, specials included,
    # over several work items at 1 and 2 threads
    import cnn

    rng = np.random.default_rng(size)
    z = rng.standard_normal(size).astype(dtype)
    g = rng.standard_normal(size).astype(dtype)
    specials = [0.0, -0.0, np.nan, np.inf, -np.inf, 1.0, -1.0]
    k = min(size, len(specials))
    z[:k] = specials[:k]
    g[:k] = specials[::-1][:k]
    expected = np.where(z > 0, g, 0).astype(dtype)
    old = cnn.get_num_threads()
    try:
        for threads in (1, 2):
            cnn.set_num_threads(threads)
            got = A.ReLU().backward(z, None, g)
            assert got.dtype == dtype and got.shape == z.shape
            assert got.tobytes() == expected.tobytes()
    finally:
        cnn.set_num_threads(old)
    # the fallbacks: a strided gradient, a gradient of another dtype
    z2 = z.reshape(1, -1)
    np.testing.assert_array_equal(A.ReLU().backward(z2[:, ::-1], None, g.reshape(1, -1)[:, ::-1]),
                                  expected.reshape(1, -1)[:, ::-1])
    other = np.float64 if dtype == np.float32 else np.float32
    got = A.ReLU().backward(z, None, g.astype(other))
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, np.where(z > 0, g.astype(other), 0).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_kernel_matches_numpy_and_keeps_its_nans(dtype):
    """The one-call softmax kernel: NumPy's formula in float64 to rounding, a NaN or an inf
    that meets another inf makes the row NaN (as NumPy's), -inf entries give 0, the bits do
    not depend on the thread count (rows shared out past 64K values), and a non-contiguous
    input is fine."""
    import cnn
    rng = np.random.default_rng(5)
    z = (rng.standard_normal((300, 1000)) * 30).astype(dtype)
    z64 = z.astype(np.float64)
    e = np.exp(z64 - z64.max(axis=1, keepdims=True))
    want = e / e.sum(axis=1, keepdims=True)
    old = cnn.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            cnn.set_num_threads(threads)
            outs.append(A.softmax(z))
    finally:
        cnn.set_num_threads(old)
    np.testing.assert_array_equal(outs[0], outs[1])
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(outs[0], want, rtol=tol * 10, atol=tol)
    assert outs[0].dtype == dtype
    np.testing.assert_allclose(A.softmax(z[:, ::3]), A.softmax(np.ascontiguousarray(z[:, ::3])),
                               rtol=0, atol=0)
    inf, nan = np.inf, np.nan
    odd = np.array([[1, nan, 2], [inf, 0, 1], [-inf, -inf, -inf], [-inf, 0, 1], [nan, 0, 1]],
                   dtype=dtype)
    s = A.softmax(odd)
    assert np.isnan(s[[0, 1, 2, 4]]).all()
    np.testing.assert_allclose(s[3], [0, 1 / (1 + math.e), math.e / (1 + math.e)], rtol=tol * 10)
