"""The fused inference kernels of ``cnn._ext._fused`` against the unfused composition.

``conv_pool_forward`` must equal ``_ops.conv2d`` (same algorithm) then the max-pool's values
bit for bit, for every algorithm, geometry and dtype; the values-only pool must equal the
training pool's values (NaN wins, padded cells never do, of +0.0 / -0.0 the first wins). The
reference (``cnn.reference``, plain NumPy) is the independent oracle of the whole.
"""

import numpy as np
import pytest

import cnn
from cnn import _ops, reference
from cnn import functional as F
from cnn._ext import _conv, _fused

DTYPES = (np.float32, np.float64)
CODES = {"im2col": _fused.IM2COL, "winograd": _fused.WINOGRAD, "direct": _fused.DIRECT}


def _conv_geometry(x_shape, w_shape, stride, padding):
    pads = F.conv2d_padding(padding, w_shape[2:], stride, x_shape[2:])
    oh, ow = F.conv2d_output_shape(x_shape[1:], w_shape[0], w_shape[2:], stride, padding)[1:]
    return pads, (int(oh), int(ow))


def _pool_geometry(hw, size, stride, padding):
    stride = size if stride is None else stride
    pads = F.maxpool2d_padding(padding, size, stride, hw)
    ph, pw = F.maxpool2d_output_shape((1,) + tuple(hw), size, stride, padding)[1:]
    return stride, pads, (int(ph), int(pw))


def fused(x, w, b, stride, padding, relu, method, size, pstride, ppadding, threads):
    """conv_pool_forward with its buffers made here."""
    pads, out_hw = _conv_geometry(x.shape, w.shape, stride, padding)
    pst, ppads, pool_hw = _pool_geometry(out_hw, size, pstride, ppadding)
    N, K = x.shape[0], w.shape[0]
    y = np.full((N, K) + pool_hw, np.nan, dtype=x.dtype)
    size_ = _fused.scratch_size(CODES[method], N, w.shape[1], K, w.shape[2], w.shape[3], *out_hw)
    scratch = np.empty((threads, size_), dtype=x.dtype)
    U = np.empty((16, K, w.shape[1]), dtype=x.dtype) if method == "winograd" else None
    _fused.conv_pool_forward(x, w, b, y, scratch, U, CODES[method], stride[0], stride[1],
                             pads[0], pads[2], out_hw[0], out_hw[1], relu, size[0], size[1],
                             pst[0], pst[1], ppads[0], ppads[2], threads)
    return y


def unfused(x, w, b, stride, padding, relu, method, size, pstride, ppadding):
    pads, out_hw = _conv_geometry(x.shape, w.shape, stride, padding)
    z = np.empty((x.shape[0], w.shape[0]) + out_hw, dtype=x.dtype)
    threads = cnn.get_num_threads()
    # the kernels themselves (_ops.conv2d would leave Winograd for im2col on a NaN input)
    if method == "winograd":
        _conv.conv2d_forward_winograd(x, w, b, z, pads[0], pads[2], relu, threads)
    elif method == "direct":
        _conv.conv2d_forward_direct_c1(x, w, b, z, pads[0], pads[2], relu, threads)
    else:
        _conv.conv2d_forward(x, w, b, z, stride[0], stride[1], pads[0], pads[2], relu, threads)
    pst, ppads, pool_hw = _pool_geometry(out_hw, size, pstride, ppadding)
    return _ops.maxpool2d(z, size, pst, ppads, pool_hw)[0]


CASES = [
    # (N, C, H, W, K, kernel, stride, padding, method, pool size, pool stride, pool padding)
    (3, 1, 28, 28, 8, (3, 3), (1, 1), "same", "direct", (2, 2), None, "tile"),
    (2, 1, 13, 11, 5, (3, 3), (1, 1), "valid", "direct", (2, 2), None, "tile"),
    (9, 16, 14, 14, 16, (3, 3), (1, 1), "same", "winograd", (2, 2), None, "tile"),
    (2, 17, 9, 7, 18, (3, 3), (1, 1), "same", "winograd", (3, 3), (2, 2), "tile"),
    (4, 3, 15, 15, 6, (5, 5), (1, 1), "same", "im2col", (2, 2), None, "tile"),
    (3, 4, 12, 10, 5, (3, 3), (2, 2), "same", "im2col", (3, 3), (2, 2), "valid"),
    (2, 6, 8, 8, 7, (1, 1), (1, 1), "valid", "im2col", (2, 2), None, "tile"),
    (2, 3, 10, 9, 4, (3, 2), (1, 1), (1, 0, 2, 1), "im2col", (2, 3), (1, 2), "same"),
    (1, 2, 7, 7, 3, (3, 3), (1, 1), "same", "im2col", (7, 7), None, "valid"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("case", CASES)
def test_fused_conv_pool_equals_conv_then_pool_bit_for_bit(case, relu, dtype):
    N, C, H, W, K, ks, stride, padding, method, size, pstride, ppadding = case
    rng = np.random.default_rng(hash(case) % 2 ** 32)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C) + ks).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    want = unfused(x, w, b, stride, padding, relu, method, size, pstride, ppadding)
    for threads in (1, 2, 3):
        got = fused(x, w, b, stride, padding, relu, method, size, pstride, ppadding, threads)
        np.testing.assert_array_equal(got, want)
    # and the independent oracle: the plain NumPy reference's conv, bias, ReLU and pool
    z = reference.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                         stride, padding)
    if relu:
        z = np.maximum(z, 0)
    pst, ppads, _ = _pool_geometry(z.shape[2:], size, pstride, ppadding)
    ref = reference.maxpool2d(z, size, pst, ppads)[0]
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_without_bias_equals_unfused(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 16, 10, 10)).astype(dtype)
    w = rng.standard_normal((16, 16, 3, 3)).astype(dtype)
    for method in ("im2col", "winograd"):
        want = unfused(x, w, None, (1, 1), "same", True, method, (2, 2), None, "tile")
        got = fused(x, w, None, (1, 1), "same", True, method, (2, 2), None, "tile", 2)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", [((2, 2), None, "tile"), ((3, 3), (2, 2), "same"),
                                      ((2, 3), (1, 1), "valid"), ((3, 2), (3, 1), (1, 1, 0, 1))])
def test_values_only_pool_equals_training_pool(geometry, dtype):
    size, stride, padding = geometry
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 9, 11)).astype(dtype)
    x[0, 0, 2, 3] = np.nan  # NaN wins its window (and the plane is redone NaN-aware)
    x[1, 2] = 0.0
    x[1, 2, ::2, ::3] = -0.0  # ties of +0.0 and -0.0: the first cell in row-major order wins
    x[2, 3, :4, :4] = 1.5  # exact ties
    want = F.maxpool2d(x, size, stride, padding)[0]
    st, pads, out_hw = _pool_geometry(x.shape[2:], size, stride, padding)
    for threads in (1, 2):
        got = np.empty_like(want)
        _fused.pool_plane_forward(x, got, size[0], size[1], st[0], st[1], pads[0], pads[2],
                                  threads)
        np.testing.assert_array_equal(got, want)  # NaN == NaN here
        assert np.array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("bad", ["nan", "inf"])
@pytest.mark.parametrize("method", ["im2col", "winograd", "direct"])
def test_fused_nan_input_propagates_like_unfused(method, bad):
    """Winograd + 2x2 pool takes the pool in the output transform (a first pass with plain
    comparisons, the NaN-aware redo when a window's sum is NaN: NaN, or +inf beside -inf)."""
    rng = np.random.default_rng(11)
    C = 1 if method == "direct" else 16
    x = rng.standard_normal((2, C, 8, 8)).astype(np.float32)
    w = rng.standard_normal((16, C, 3, 3)).astype(np.float32)
    if bad == "nan":
        x[1, 0, 4, 4] = np.nan
    else:
        x[1, 0, 4, 4], x[0, 0, 1, 6] = np.inf, -np.inf
    want = unfused(x, w, None, (1, 1), "same", False, method, (2, 2), None, "tile")
    got = fused(x, w, None, (1, 1), "same", False, method, (2, 2), None, "tile", 2)
    assert np.isnan(want).any() or (bad == "inf" and np.isinf(want).any())
    np.testing.assert_array_equal(got, want)


def test_kernels_agree_with_the_thread_knob():
    """The kernels run under the serial build too (one thread): the knob's count is honoured."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 16, 6, 6)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    want = unfused(x, w, None, (1, 1), "same", True, "winograd", (2, 2), None, "tile")
    got = fused(x, w, None, (1, 1), "same", True, "winograd", (2, 2), None, "tile",
                cnn.get_num_threads())
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_no_pool_mode_equals_the_conv_kernel(case, dtype):
    """pkh = 0: the conv output written straight into y, bit for bit the _conv kernel's."""
    N, C, H, W, K, ks, stride, padding, method = case[:9]
    rng = np.random.default_rng(abs(hash(case)) % 2 ** 32 + 1)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C) + ks).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    pads, out_hw = _conv_geometry(x.shape, w.shape, stride, padding)
    want = unfused(x, w, b, stride, padding, True, method, (1, 1), None, "valid")  # 1x1 pool
    for threads in (1, 2):
        y = np.full((N, K) + out_hw, np.nan, dtype=dtype)
        size = _fused.scratch_size(CODES[method], N, C, K, ks[0], ks[1], *out_hw)
        U = np.empty((16, K, C), dtype=dtype) if method == "winograd" else None
        _fused.conv_pool_forward(x, w, b, y, np.empty((threads, size), dtype), U, CODES[method],
                                 stride[0], stride[1], pads[0], pads[2], out_hw[0], out_hw[1],
                                 True, 0, 0, 1, 1, 0, 0, threads)
        np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["im2col", "winograd", "direct"])
def test_fused_kernel_reports_max_abs_of_its_output(method, dtype):
    rng = np.random.default_rng(21)
    C = 1 if method == "direct" else 16
    x = rng.standard_normal((9, C, 10, 10)).astype(dtype)
    w = rng.standard_normal((16, C, 3, 3)).astype(dtype)
    pads, out_hw = _conv_geometry(x.shape, w.shape, (1, 1), "same")
    for relu, pool in [(False, (2, 2, 2, 2, 0, 0)), (True, (0, 0, 1, 1, 0, 0))]:
        for threads in (1, 2, 3):
            y = np.empty((9, 16) + ((5, 5) if pool[0] else out_hw), dtype=dtype)
            size = _fused.scratch_size(CODES[method], 9, C, 16, 3, 3, *out_hw)
            U = np.empty((16, 16, C), dtype=dtype) if method == "winograd" else None
            maxes = np.full(threads + 1, -1.0)
            _fused.conv_pool_forward(x, w, None, y, np.empty((threads, size), dtype), U,
                                     CODES[method], 1, 1, pads[0], pads[2], *out_hw, relu, *pool,
                                     threads, maxes)
            assert maxes.max() == _ops.max_abs(y) and maxes.min() >= 0
    x[4, 0, 5, 5] = np.nan
    maxes = np.zeros(2)
    _fused.conv_pool_forward(x, w, None, y, np.empty((2, size), dtype), U, CODES[method], 1, 1,
                             pads[0], pads[2], *out_hw, True, 0, 0, 1, 1, 0, 0, 2, maxes)
    assert np.isnan(maxes.max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pooled", [True, False])
def test_im2col_filter_split_items(pooled, dtype):
    """ksplit cuts each image's filters into work items (a batch of one on two threads): the
    conv + pool of the reference, the same bits for any thread count, max |y| of all of y."""
    rng = np.random.default_rng(17)
    N, C, K = 2, 5, 37                               # 37 filters: blocks of 19 + 18, 13 + 12 + 12
    x = rng.standard_normal((N, C, 9, 11)).astype(dtype)
    w = rng.standard_normal((K, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    pads, out_hw = _conv_geometry(x.shape, w.shape, (1, 1), "same")
    pool = (2, 2, 2, 2, 0, 0) if pooled else (0, 0, 1, 1, 0, 0)
    y_hw = (4, 5) if pooled else out_hw
    z = np.maximum(reference.conv2d(*(a.astype(np.float64) for a in (x, w, b)), (1, 1), "same"),
                   0)
    ref = reference.maxpool2d(z, (2, 2), (2, 2), (0, 0, 0, 0))[0] if pooled else z
    size = _fused.scratch_size(_fused.IM2COL, N, C, K, 3, 3, *out_hw)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for ksplit in (1, 2, 3, 64):
        outs = []
        for threads in (1, 2, 3):
            y = np.full((N, K) + y_hw, np.nan, dtype=dtype)
            maxes = np.full(threads, -1.0)
            _fused.conv_pool_forward(x, w, b, y, np.empty((threads, size), dtype), None,
                                     _fused.IM2COL, 1, 1, pads[0], pads[2], *out_hw, True, *pool,
                                     threads, maxes, ksplit)
            assert maxes.max() == np.abs(y).max()
            outs.append(y)
        for y in outs[1:]:
            np.testing.assert_array_equal(y, outs[0])
        np.testing.assert_allclose(outs[0], ref, rtol=tol, atol=tol * np.abs(ref).max())


@pytest.mark.parametrize("pool", [None, (2, 2, 0), (3, 2, 1)])   # (window, stride, pad)
@pytest.mark.parametrize("geometry", [((8, 9, 17), 37, 3, 1, "same"),    # 37: a row tail of 5
                                      ((3, 16, 13), 16, 5, 2, "valid")])
def test_im2col_own_gemm(geometry, pool):
    """float32 im2col, one image per GEMM: the register-blocked product instead of BLAS.
    Against the float64 reference, the same bits for any thread count, filter split and row
    bands (also where 3x3 / stride-2 pool windows overlap across bands), and max |y| of all
    of y."""
    (C, H, W), K, k, s, padding = geometry
    rng = np.random.default_rng(23)
    x = rng.standard_normal((1, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, k, k)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    pads, out_hw = _conv_geometry(x.shape, w.shape, (s, s), padding)
    z = np.maximum(reference.conv2d(*(a.astype(np.float64) for a in (x, w, b)), (s, s),
                                    padding), 0)
    if pool is None:
        codes, ref = (0, 0, 1, 1, 0, 0), z
    else:
        pk, ps, pp = pool
        codes = (pk, pk, ps, ps, pp, pp)
        ref = reference.maxpool2d(z, (pk, pk), (ps, ps), (pp,) * 4)[0]
    size = _fused.scratch_size(_fused.IM2COL, 1, C, K, k, k, *out_hw, own_gemm=True)
    assert size > _fused.scratch_size(_fused.IM2COL, 1, C, K, k, k, *out_hw, own_gemm=False)
    with pytest.raises(ValueError, match="scratch rows"):
        small = _fused.scratch_size(_fused.IM2COL, 1, C, K, k, k, *out_hw, own_gemm=False)
        _fused.conv_pool_forward(x, w, b, np.empty(ref.shape, np.float32),
                                 np.empty((1, small), np.float32), None, _fused.IM2COL, s, s,
                                 pads[0], pads[2], *out_hw, True, *codes, 1)
    outs = []
    for ksplit, rsplit in [(1, 1), (2, 1), (3, 1), (1, 2), (1, 3), (1, 64), (2, 3)]:
        for threads in (1, 2, 3):
            y = np.full(ref.shape, np.nan, dtype=np.float32)
            maxes = np.full(threads, -1.0)
            _fused.conv_pool_forward(x, w, b, y, np.full((threads, size), np.nan, np.float32),
                                     None, _fused.IM2COL, s, s, pads[0], pads[2], *out_hw, True,
                                     *codes, threads, maxes, ksplit, rsplit=rsplit)
            assert maxes.max() == np.abs(y).max()
            outs.append(y)
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])
    np.testing.assert_allclose(outs[0], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("pool", [None, (2, 2, 0), (3, 2, 1)])   # (window, stride, pad)
@pytest.mark.parametrize("n", [1, 15])          # 15: two Winograd blocks of images (13 + 2)
@pytest.mark.parametrize("method,dtype", [("winograd", np.float32), ("direct", np.float32),
                                          ("direct", np.float64)])
def test_filter_split_items_keep_the_kernel_bits(method, dtype, n, pool):
    """ksplit on the direct kernel and on float32 Winograd: filter blocks (whole groups of 8)
    as work items, Winograd's running its input transform unless its thread's last item left
    it in scratch. The bits of the training kernel (then the pool) for every split and thread
    count (the 2x2 pool in the epilogue or the output transform too), the float64 reference to
    rounding, and max |y| of all of y."""
    rng = np.random.default_rng(29)
    C = 6 if method == "winograd" else 1
    H, W, K = 10, 9, 37                          # 37 filters: blocks of 8, 16 or 24, and a tail
    x = rng.standard_normal((n, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    pads, out_hw = _conv_geometry(x.shape, w.shape, (1, 1), "same")
    z = np.empty((n, K) + out_hw, dtype)
    kernel = (_conv.conv2d_forward_winograd if method == "winograd"
              else _conv.conv2d_forward_direct_c1)
    kernel(x, w, b, z, pads[0], pads[2], True, 1)
    z64 = np.maximum(reference.conv2d(*(a.astype(np.float64) for a in (x, w, b)), (1, 1),
                                      "same"), 0)
    if pool is None:
        codes, want, ref = (0, 0, 1, 1, 0, 0), z, z64
    else:
        pk, ps, pp = pool
        codes = (pk, pk, ps, ps, pp, pp)
        _, ppads, pool_hw = _pool_geometry(out_hw, (pk, pk), (ps, ps), (pp,) * 4)
        want = _ops.maxpool2d(z, (pk, pk), (ps, ps), ppads, pool_hw)[0]
        ref = reference.maxpool2d(z64, (pk, pk), (ps, ps), (pp,) * 4)[0]
    size = _fused.scratch_size(CODES[method], n, C, K, 3, 3, *out_hw)
    for ksplit in (1, 2, 3, 5, 64):
        for threads in (1, 2, 3):
            y = np.full(want.shape, np.nan, dtype=dtype)
            maxes = np.full(threads, -1.0)
            U = np.full((16, K, C), np.nan, dtype) if method == "winograd" else None
            _fused.conv_pool_forward(x, w, b, y, np.full((threads, size), np.nan, dtype),
                                     U, CODES[method], 1, 1, pads[0], pads[2], *out_hw, True,
                                     *codes, threads, maxes, ksplit)
            np.testing.assert_array_equal(y, want)
            assert maxes.max() == np.abs(y).max()
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(want, ref, rtol=tol, atol=tol * np.abs(ref).max())


@pytest.mark.parametrize("shape, k, s", [((7, 32, 9, 9), 3, 2),     # 25 pixels: blocks of 10
                                         ((5, 8, 12, 12), 3, 1),    # 144: blocks of 1
                                         ((9, 24, 6, 7), 3, 2),     # 12: blocks of 9, ragged
                                         ((3, 3, 16, 16), 3, 1)])   # 27 terms: BLAS
def test_im2col_forward_on_the_own_gemm_in_blocks(shape, k, s):
    """float32 im2col of at least 64 terms (_conv_common._im2col_own_gemm): the training
    forward and the fused kernel run cnn's own product over blocks of images whose columns
    are padded to 16 slots; against the float64 reference, the same bits in both kernels and
    for any thread count."""
    rng = np.random.default_rng(5)
    N, C, H, W = shape
    K = 19                                                   # a tail of 3 filters
    x = rng.standard_normal(shape).astype(np.float32)
    w = (rng.standard_normal((K, C, k, k)) * 0.2).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    OH, OW = -(-H // s), -(-W // s)
    assert _fused.im2col_own_gemm(np.float32, C, H, W, k, k, s, s, 1, 1, OH, OW) == \
        (C * k * k >= 64)
    assert not _fused.im2col_own_gemm(np.float64, C, H, W, k, k, s, s, 1, 1, OH, OW)
    # a 1x1 stride-1 unpadded conv multiplies its input in place (BLAS), however deep
    assert not _fused.im2col_own_gemm(np.float32, 128, H, W, 1, 1, 1, 1, 0, 0, H, W)
    assert _fused.im2col_own_gemm(np.float32, 128, H, W, 1, 1, 2, 2, 0, 0, -(-H // 2),
                                  -(-W // 2))
    want = np.maximum(reference.conv2d(*(a.astype(np.float64) for a in (x, w, b)), (s, s),
                                       "same"), 0)
    outs = []
    old = cnn.get_num_threads()
    try:
        for threads in (1, 2, 3):
            cnn.set_num_threads(threads)
            z = F.conv2d(x, w, b, stride=s, padding="same", activation="relu",
                         algorithm="im2col")
            y = fused(x, w, b, (s, s), "same", True, "im2col", (2, 2), None, "valid", threads)
            assert y.tobytes() == unfused(x, w, b, (s, s), "same", True, "im2col", (2, 2), None,
                                          "valid").tobytes()
            outs.append(z)
    finally:
        cnn.set_num_threads(old)
    for z in outs[1:]:
        assert z.tobytes() == outs[0].tobytes()
    np.testing.assert_allclose(outs[0], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
