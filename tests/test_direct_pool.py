"""The register-blocked direct one-channel 3x3 conv (``_direct.h``) and its pooled twin.

The fused inference kernel (``conv_pool_forward`` with DIRECT and a 2x2 / stride-2 pool) does
the pool in the conv's epilogue; it must equal the training kernel
(``conv2d_forward_direct_c1``) then the training max-pool bit for bit, and both must match an
independent oracle: ``scipy.signal.correlate2d`` on the zero-padded image, then a NumPy 2x2
max. Sizes are chosen to hit every block edge: widths of one and of several column blocks
(a block is 2 x 16 float columns on AVX-512, 2 x 8 on AVX2), odd heights and widths (the pool
drops the last row / column), filter counts that are not a multiple of the filter block.
"""

import os
import shutil
import subprocess

import numpy as np
import pytest
from scipy.signal import correlate2d

from cnn import _ops
from cnn._ext import _conv, _fused

DTYPES = (np.float32, np.float64)
# (N, H, W, K, (top, bottom, left, right) padding)
GEOMETRIES = [
    (3, 28, 28, 32, (1, 1, 1, 1)),   # the DESIGN CNN's first conv
    (2, 13, 11, 5, (0, 0, 0, 0)),    # odd plane, "valid"
    (2, 9, 40, 7, (2, 1, 0, 2)),     # two column blocks (float, AVX-512), uneven padding
    (1, 7, 70, 3, (0, 2, 1, 0)),     # three and more blocks
    (2, 4, 3, 1, (1, 1, 1, 1)),      # narrower than a block, one filter
    (1, 3, 3, 9, (0, 0, 0, 0)),      # a 1x1 output: the pooled plane is empty
    (2, 6, 5, 6, (2, 2, 2, 2)),      # padding wider than the kernel's reach
]


def oracle_conv(x, w, b, pads, relu):
    """float64 conv of (N, 1, H, W) by (K, 1, 3, 3) with padding (t, b, l, r): scipy."""
    t, bo, le, r = pads
    xp = np.pad(x[:, 0].astype(np.float64), ((0, 0), (t, bo), (le, r)))
    out = np.stack([np.stack([correlate2d(img, wk[0].astype(np.float64), mode="valid")
                              + (0.0 if b is None else float(bk))
                              for wk, bk in zip(w, b if b is not None else [None] * len(w))])
                    for img in xp])
    return np.maximum(out, 0) if relu else out


def oracle_pool22(z):
    """2x2 / stride-2 max over (N, K, H, W), the last odd row / column dropped (NaN wins)."""
    N, K, H, W = z.shape
    z = z[:, :, :H // 2 * 2, :W // 2 * 2]
    return z.reshape(N, K, H // 2, 2, W // 2, 2).max(axis=(3, 5))


def out_hw(H, W, pads):
    return H + pads[0] + pads[1] - 2, W + pads[2] + pads[3] - 2


def direct(x, w, b, pads, relu, threads):
    OH, OW = out_hw(*x.shape[2:], pads)
    y = np.full((x.shape[0], w.shape[0], OH, OW), np.nan, dtype=x.dtype)
    _conv.conv2d_forward_direct_c1(x, w, b, y, pads[0], pads[2], relu, threads)
    return y


def fused_pool22(x, w, b, pads, relu, threads, maxes=None):
    N, K = x.shape[0], w.shape[0]
    OH, OW = out_hw(*x.shape[2:], pads)
    y = np.full((N, K, OH // 2, OW // 2), np.nan, dtype=x.dtype)
    size = _fused.scratch_size(_fused.DIRECT, N, 1, K, 3, 3, OH, OW)
    _fused.conv_pool_forward(x, w, b, y, np.full((threads, size), np.nan, x.dtype), None,
                             _fused.DIRECT, 1, 1, pads[0], pads[2], OH, OW, relu,
                             2, 2, 2, 2, 0, 0, threads, maxes)
    return y


def unfused_pool22(z):
    """The training pool of the training kernel's output (values)."""
    ph, pw = z.shape[2] // 2, z.shape[3] // 2
    return _ops.maxpool2d(z, (2, 2), (2, 2), (0, 0, 0, 0), (ph, pw))[0]


def data(shape_x, K, dtype, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape_x).astype(dtype),
            rng.standard_normal((K, 1, 3, 3)).astype(dtype),
            rng.standard_normal(K).astype(dtype))


def tol(dtype, x, w, b, pads):
    scale = oracle_conv(np.abs(x), np.abs(w), np.abs(b), pads, False).max(initial=1.0)
    return (1e-5 if dtype == np.float32 else 1e-13) * scale


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_direct_conv_matches_scipy(geometry, relu, dtype):
    N, H, W, K, pads = geometry
    x, w, b = data((N, 1, H, W), K, dtype, seed=H * 100 + W)
    want = oracle_conv(x, w, b, pads, relu)
    got = direct(x, w, b, pads, relu, 2)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol(dtype, x, w, b, pads))
    if relu:
        assert (got >= 0).all() and not np.signbit(got).any()   # ReLU gives +0, never -0
    got_nobias = direct(x, w, None, pads, relu, 1)
    np.testing.assert_allclose(got_nobias, oracle_conv(x, w, None, pads, relu), rtol=0,
                               atol=tol(dtype, x, w, b, pads))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_pooled_epilogue_equals_conv_then_pool_and_scipy(geometry, relu, dtype):
    N, H, W, K, pads = geometry
    x, w, b = data((N, 1, H, W), K, dtype, seed=H * 100 + W + 1)
    want = unfused_pool22(direct(x, w, b, pads, relu, 2))
    for threads in (1, 2, 3):
        got = fused_pool22(x, w, b, pads, relu, threads)
        np.testing.assert_array_equal(got, want)
        assert np.array_equal(np.signbit(got), np.signbit(want))
    ref = oracle_pool22(oracle_conv(x, w, b, pads, relu))
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol(dtype, x, w, b, pads))
    np.testing.assert_array_equal(fused_pool22(x, w, None, pads, relu, 2),
                                  unfused_pool22(direct(x, w, None, pads, relu, 1)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [True, False])
def test_nan_and_inf_inputs_propagate_like_the_layer_path(relu, dtype):
    x, w, b = data((3, 1, 15, 37), 6, dtype, seed=4)
    x[0, 0, 3, 4] = np.nan
    x[1, 0, 0, 36] = np.nan           # last column, top row: the padded edge
    x[2, 0, 10, 20] = np.inf          # inf * w of both signs: +inf, -inf and inf - inf = NaN
    pads = (1, 1, 1, 1)
    z = direct(x, w, b, pads, relu, 2)
    ref = oracle_conv(x, w, b, pads, relu)
    assert np.isnan(z).any() and np.array_equal(np.isnan(z), np.isnan(ref))
    finite = np.isfinite(ref)
    np.testing.assert_allclose(z[finite], ref[finite], rtol=0, atol=tol(dtype, x, w, b, pads)
                               if np.isfinite(tol(dtype, x, w, b, pads)) else 1e-3)
    want = unfused_pool22(z)
    got = fused_pool22(x, w, b, pads, relu, 2)
    np.testing.assert_array_equal(got, want)             # NaN == NaN here
    assert np.array_equal(np.isnan(got), np.isnan(oracle_pool22(ref)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_signed_zero_ties_keep_the_first_in_row_major_order(dtype):
    """Without ReLU, windows of +0.0 and -0.0 only: the pool keeps the first, like _pool.pyx."""
    rng = np.random.default_rng(9)
    x = np.where(rng.random((4, 1, 12, 35)) < 0.1, 1.0, -1.0).astype(dtype)
    w = np.zeros((5, 1, 3, 3), dtype=dtype)            # every product is +0 or -0 ...
    b = np.full(5, -0.0, dtype=dtype)                  # ... and -0 + (-0) = -0, -0 + 0 = +0
    w[1] = -0.0
    w[3, 0, 1, 1] = -0.0
    z = direct(x, w, b, (0, 0, 0, 0), False, 1)
    assert np.signbit(z).any() and (~np.signbit(z)).any() and not z.any()
    want = unfused_pool22(z)
    got = fused_pool22(x, w, b, (0, 0, 0, 0), False, 2)
    assert np.array_equal(np.signbit(got), np.signbit(want))
    # the oracle of the rule: the first cell (row-major) of each window equal to the max
    first = z[:, :, :z.shape[2] // 2 * 2:2, :z.shape[3] // 2 * 2:2]
    assert np.array_equal(np.signbit(got), np.signbit(first))


@pytest.mark.parametrize("dtype", DTYPES)
def test_pooled_kernel_reports_max_abs_with_a_vector_tail(dtype):
    # a pooled image of 7 x 5 x 6 = 210 values: 13 blocks of 16 lanes and a tail of 2
    x, w, b = data((5, 1, 11, 14), 7, dtype, seed=12)
    pads = (1, 1, 1, 1)
    for threads in (1, 2):
        maxes = np.full(threads + 1, -1.0)
        y = fused_pool22(x, w, b, pads, False, threads, maxes)
        assert maxes.max() == np.abs(y).max() and maxes.min() >= 0
    x[3, 0, 10, 13] = np.nan                     # lands in the dropped-free last window
    maxes = np.zeros(2)
    y = fused_pool22(x, w, b, pads, False, 2, maxes)
    assert np.isnan(y).any() and np.isnan(maxes.max())


def test_other_pools_still_take_the_stored_plane():
    """A 3x3 / stride-2 pool (not the epilogue's 2x2) is the conv, stored, then pooled."""
    x, w, b = data((2, 1, 17, 19), 5, np.float32, seed=3)
    pads = (1, 1, 1, 1)
    z = direct(x, w, b, pads, True, 1)
    OH, OW = z.shape[2:]
    ph, pw = (OH - 3) // 2 + 1, (OW - 3) // 2 + 1
    want = _ops.maxpool2d(z, (3, 3), (2, 2), (0, 0, 0, 0), (ph, pw))[0]
    y = np.empty((2, 5, ph, pw), np.float32)
    size = _fused.scratch_size(_fused.DIRECT, 2, 1, 5, 3, 3, OH, OW)
    _fused.conv_pool_forward(x, w, b, y, np.empty((2, size), np.float32), None, _fused.DIRECT,
                             1, 1, 1, 1, OH, OW, True, 3, 3, 2, 2, 0, 0, 2)
    np.testing.assert_array_equal(y, want)


_HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include "_direct.h"
int main(int argc, char **argv) {
    int N = 3, H = 13, W = 37, K = 7, pt = 1, pl = 2, OH = 13, OW = 38;
    float *x = malloc(sizeof(float) * N * H * W), w[63], b[7];
    srand(1);
    for (int i = 0; i < N * H * W; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
    x[40] = NAN;
    for (int i = 0; i < 63; i++) w[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int i = 0; i < 7; i++) b[i] = (float)rand() / RAND_MAX - 0.5f;
    float *y = calloc(K * OH * OW, sizeof(float));
    float *yp = calloc(K * (OH / 2) * (OW / 2), sizeof(float));
    float *s = malloc(sizeof(float) * CNN_DIRECT_SCRATCH(OH, OW));
    FILE *f = fopen(argv[1], "wb");
    for (int n = 0; n < N; n++)
        for (int relu = 0; relu < 2; relu++) {
            cnn_direct3x3_c1_f(x + n * H * W, w, b, relu, y, K, H, W, pt, pl, OH, OW, s);
            cnn_direct3x3_c1_pool22_f(x + n * H * W, w, b, relu, yp, K, H, W, pt, pl, OH, OW, s);
            fwrite(y, sizeof(float), K * OH * OW, f);
            fwrite(yp, sizeof(float), K * (OH / 2) * (OW / 2), f);
        }
    fclose(f);
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the C harness")
def test_scalar_fallback_gives_the_vector_kernels_bits(tmp_path):
    """Compilers without GNU C vectors (MSVC) get the one-lane build of _direct.h: the same
    bytes as the vector build (forced here with CNN_DIRECT_NO_VECTOR)."""
    src = tmp_path / "harness.c"
    src.write_text(_HARNESS)
    inc = os.path.dirname(_fused.__file__)
    if not os.path.exists(os.path.join(inc, "_direct.h")):
        pytest.skip("the kernel headers are not installed beside the extensions")
    outs = []
    for flags in ([], ["-DCNN_DIRECT_NO_VECTOR", "-DCNN_NO_TARGET_CLONES"]):
        exe, out = tmp_path / f"h{len(outs)}", tmp_path / f"o{len(outs)}"
        subprocess.run(["gcc", "-O2", "-fno-trapping-math", "-I", inc, *flags, str(src), "-o",
                        str(exe), "-lm"], check=True, capture_output=True)
        subprocess.run([str(exe), str(out)], check=True)
        outs.append(np.fromfile(out, dtype=np.float32))
    assert outs[0].size == 3 * 2 * 7 * (13 * 38 + 6 * 19) and np.isnan(outs[0]).any()
    assert outs[0].tobytes() == outs[1].tobytes()
