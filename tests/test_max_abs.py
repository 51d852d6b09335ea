"""cnn._ops.max_abs (the Winograd overflow guards' scan, the inference plan's running bound)
against NumPy's ``np.abs(a).max()``: serial and split over threads, NaN, infinities, signed
zeros, subnormals."""

import numpy as np
import pytest

import cnn
from cnn import _ops
from cnn._ext import _fused

DTYPES = (np.float32, np.float64)
# empty, tiny, one vector, around the 64K-per-thread split, several parts with a ragged end
SIZES = (0, 1, 7, 65535, 65536, 65537, 131073, 300001)


def oracle(a):
    return 0.0 if a.size == 0 else float(np.abs(a).max())


def _same(got, want):
    return (np.isnan(got) and np.isnan(want)) or got == want


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_matches_numpy_for_every_thread_count(rng, dtype, n):
    a = rng.standard_normal(n).astype(dtype)
    if n:
        a[rng.integers(n)] = -7.5           # the largest magnitude is negative
    want = oracle(a)
    for threads in (1, 2, 3, 8):
        got = _fused.max_abs(a, threads)
        assert type(got) is float and _same(got, want), (threads, got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", [0, 65536, 150000, 299999])
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_nan_and_infinities_in_any_part(rng, dtype, where, special):
    a = rng.standard_normal(300000).astype(dtype)
    a[where] = special
    if special != special:
        a[1] = np.inf                       # NaN wins over inf wherever it lies
    for threads in (1, 2, 4):
        got = _fused.max_abs(a, threads)
        assert _same(got, oracle(a)), (threads, got)
        if special != special:
            assert np.isnan(got)


@pytest.mark.parametrize("dtype", DTYPES)
def test_signed_zeros_and_subnormals(dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    z = np.full(200000, -0.0, dtype)
    assert _fused.max_abs(z, 2) == 0.0
    z[123456] = -tiny
    assert _fused.max_abs(z, 2) == float(tiny)
    z[5] = 3 * tiny
    assert _fused.max_abs(z, 2) == float(3 * tiny)


def test_ops_max_abs_takes_any_layout_and_the_knob(rng):
    a = rng.standard_normal((64, 32, 14, 14)).astype(np.float32)
    want = oracle(a)
    before = cnn.get_num_threads()
    try:
        for threads in (1, 2):
            cnn.set_num_threads(threads)
            assert _ops.max_abs(a) == want
            assert _ops.max_abs(a[:, ::2]) == oracle(a[:, ::2])   # not contiguous: NumPy's
            assert _ops.max_abs(a.astype(np.float16)) == oracle(a.astype(np.float16))
    finally:
        cnn.set_num_threads(before)
    assert _ops.max_abs(np.empty((0, 3), np.float32)) == 0.0
    assert _ops.all_finite(a) and not _ops.all_finite(np.append(a.ravel(), np.inf))
