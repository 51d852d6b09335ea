"""Initializers: shape, dtype, bounds, variance and distribution against the stated laws,
determinism from the rng, validation."""

import math

import numpy as np
import pytest
from scipy import stats

from cnn import initializers as I

FAN_IN, FAN_OUT = 3 * 5 * 5, 8 * 5 * 5      # a Conv2D (8, 3, 5, 5)
UNIFORM_LIMITS = {
    "glorot_uniform": math.sqrt(6 / (FAN_IN + FAN_OUT)),
    "he_uniform": math.sqrt(6 / FAN_IN),
    "lecun_uniform": math.sqrt(3 / FAN_IN),
}
NORMAL_STDS = {
    "glorot_normal": math.sqrt(2 / (FAN_IN + FAN_OUT)),
    "he_normal": math.sqrt(2 / FAN_IN),
}
RANDOM = sorted(UNIFORM_LIMITS) + sorted(NORMAL_STDS)
N = 200_000


@pytest.mark.parametrize("name", RANDOM + ["zeros"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shape_and_dtype(name, dtype):
    w = I.get(name)((8, 3, 5, 5), FAN_IN, FAN_OUT, np.random.default_rng(0), dtype=dtype)
    assert w.shape == (8, 3, 5, 5) and w.dtype == dtype and w.flags.c_contiguous
    assert I.get(name)((4,), 2, 4, np.random.default_rng(0)).dtype == np.float32  # default


@pytest.mark.parametrize("name", sorted(UNIFORM_LIMITS))
def test_uniform_bounds_variance_and_distribution(name):
    limit = UNIFORM_LIMITS[name]
    w = I.get(name)((N,), FAN_IN, FAN_OUT, np.random.default_rng(1), dtype=np.float64)
    assert np.all(np.abs(w) <= limit)
    assert w.max() > 0.999 * limit and w.min() < -0.999 * limit   # fills the whole interval
    assert abs(w.mean()) < 5 * limit / math.sqrt(3 * N)
    assert w.var() == pytest.approx(limit ** 2 / 3, rel=0.02)
    assert stats.kstest(w, stats.uniform(loc=-limit, scale=2 * limit).cdf).pvalue > 1e-3


@pytest.mark.parametrize("name", sorted(NORMAL_STDS))
def test_normal_variance_and_distribution(name):
    std = NORMAL_STDS[name]
    w = I.get(name)((N,), FAN_IN, FAN_OUT, np.random.default_rng(2), dtype=np.float64)
    assert abs(w.mean()) < 5 * std / math.sqrt(N)
    assert w.std() == pytest.approx(std, rel=0.02)
    assert stats.kstest(w, stats.norm(scale=std).cdf).pvalue > 1e-3


@pytest.mark.parametrize("name", RANDOM)
def test_deterministic_from_rng(name):
    f = I.get(name)
    a = f((6, 7), 7, 6, np.random.default_rng(42))
    b = f((6, 7), 7, 6, np.random.default_rng(42))
    c = f((6, 7), 7, 6, np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # one seed, same numbers in float32 and float64 (up to rounding)
    d = f((6, 7), 7, 6, np.random.default_rng(42), dtype=np.float64)
    np.testing.assert_array_equal(a, d.astype(np.float32))
    # the generator advances: two draws from one rng differ
    rng = np.random.default_rng(42)
    assert not np.array_equal(f((6, 7), 7, 6, rng), f((6, 7), 7, 6, rng))


def test_zeros():
    np.testing.assert_array_equal(I.zeros((3, 2), 2, 3, None), np.zeros((3, 2)))
    assert I.zeros((5,), dtype=np.float64).dtype == np.float64


def test_get_and_default_for():
    assert I.get("he_normal") is I.he_normal
    def custom(shape, fan_in, fan_out, rng, dtype=np.float32):
        return np.ones(shape, dtype)
    assert I.get(custom) is custom
    assert I.default_for("relu") == "he_normal" and I.default_for("leaky_relu") == "he_normal"
    assert I.default_for("softmax") == "glorot_uniform" and I.default_for(None) == "glorot_uniform"
    with pytest.raises(ValueError, match=r"initializer must be one of .*got 'orthogonal'"):
        I.get("orthogonal")
    with pytest.raises(TypeError, match=r"initializer must be a name or a callable, got 3"):
        I.get(3)


@pytest.mark.parametrize("call, exc, message", [
    (lambda: I.he_normal((2, 2), 2, 2, 0), TypeError, r"rng must be a numpy.random.Generator, got int"),
    (lambda: I.glorot_uniform((2, 2), 2, 2, np.random.RandomState(0)), TypeError,
     r"rng must be a numpy.random.Generator, got RandomState"),
    (lambda: I.he_uniform((2, 2), 0, 2, np.random.default_rng()), ValueError, r"fan_in must be >= 1, got 0"),
    (lambda: I.glorot_normal((2, 2), 2, 2.0, np.random.default_rng()), TypeError,
     r"fan_out must be an integer, got 2.0"),
    (lambda: I.lecun_uniform((2, -1), 2, 2, np.random.default_rng()), ValueError,
     r"shape must be a tuple of non-negative ints, got \(2, -1\)"),
    (lambda: I.he_normal((2, 2), 2, 2, np.random.default_rng(), dtype=np.int32), TypeError,
     r"dtype must be float32 or float64, got int32"),
])
def test_validation(call, exc, message):
    with pytest.raises(exc, match=message):
        call()
