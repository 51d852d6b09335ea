"""Fused inference kernels: conv + bias + ReLU + max-pool in one pass, one parallel region.

    x (N, C, H, W) -> conv (K, OH, OW) per image, in a thread's scratch -> y (N, K, PH, PW)

Each work item (an image; for Winograd a block of images) is convolved into the thread's
private scratch while it is in cache, and pooled from there straight into ``y``: the unpooled
tensor ``(N, K, OH, OW)`` is never written in full, no argmax is written, and the whole layer
pair is one OpenMP region instead of two.

The convolution of an item is the same arithmetic as the training kernels of ``_conv.pyx``
(the same im2col + GEMM per image, the same Winograd blocks of images, the same direct
one-channel kernel, the same bias/ReLU pass), and the pool keeps the same values as
``_pool.pyx`` (see ``_fused.h``): the result is bit-identical to ``conv2d`` then
``maxpool2d`` with the same algorithm. The direct kernel with a 2x2 / stride-2 pool pools in
its own epilogue, from registers (``_direct.h``): its conv output is not stored even in
scratch. Work items are handed out dynamically; which thread runs one never changes its
result.

Validation lives in the inference plan (:mod:`cnn._inference`), which builds these calls
from built layers; these kernels trust their arguments.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.string cimport memcpy, memset

from cnn._ext._blas cimport _gemm
from cnn._ext._conv_common cimport (
    WINO_TILES, _bias_act, _im2col_own_gemm, _images_per_gemm, _round16, _wino_block,
    _wino_block_sizes, _wino_group,
    CNN_DIRECT_SCRATCH,
    CNN_WINO_GEMM_PAD,
    CNN_WINO_GEMM_ROWS,
    cnn_wino_gemm_f,
    CNN_WINO_TILES,
    cnn_direct3x3_c1_d,
    cnn_direct3x3_c1_f,
    cnn_im2col_d,
    cnn_im2col_f,
    cnn_wino_weights_d,
    cnn_wino_weights_f,
)
from cnn._ext._openmp cimport cnn_omp_barrier, omp_get_thread_num
from cnn._ext._pool22 cimport cnn_maxpool_plane_arg_d, cnn_maxpool_plane_arg_f


# The algorithm codes of conv_pool_forward's ``method``.
cdef enum:
    M_IM2COL = 0
    M_WINOGRAD = 1
    M_DIRECT = 2

IM2COL, WINOGRAD, DIRECT = M_IM2COL, M_WINOGRAD, M_DIRECT

cdef enum:
    MAX_REUSE_THREADS = 256  # threads that track their im2col image (see conv_pool_forward)
    WINO_WEIGHT_CHUNK = 8    # filters per work item of the Winograd weight transform
# Tiles per Winograd block (_conv_common.pxd), for the plan's choice of algorithm.
WINOGRAD_BLOCK_TILES = WINO_TILES



# This module includes the training kernels' headers for their forward halves only: their
# backward helpers are static and unused here, which is expected.
cdef extern from *:
    """
    #if defined(__GNUC__)
    #pragma GCC diagnostic ignored "-Wunused-function"
    #endif
    """


cdef extern from "_simd.h":
    int cnn_kernel_isa() noexcept nogil

# Pick the kernel clones now, before any thread runs a kernel (see _simd.h).
cnn_kernel_isa()


# The direct kernel with the 2x2 pool in its epilogue (its unpooled twin, shared with the
# training forward, is declared in _conv_common.pxd).
cdef extern from "_direct.h":
    void cnn_direct3x3_c1_pool22_f(const float *x, const float *w, const float *b, int relu,
                                   float *y, int K, int H, int W, int pt, int pl, int OH,
                                   int OW, float *scratch) noexcept nogil
    void cnn_direct3x3_c1_pool22_d(const double *x, const double *w, const double *b,
                                   int relu, double *y, int K, int H, int W, int pt, int pl,
                                   int OH, int OW, double *scratch) noexcept nogil


cdef extern from "_fused.h":
    void cnn_maxpool_plane_f(const float *x, Py_ssize_t H, Py_ssize_t W, float *y,
                             Py_ssize_t OH, Py_ssize_t OW, int kh, int kw, int sh, int sw,
                             int pt, int pl) noexcept nogil
    void cnn_maxpool_plane_d(const double *x, Py_ssize_t H, Py_ssize_t W, double *y,
                             Py_ssize_t OH, Py_ssize_t OW, int kh, int kw, int sh, int sw,
                             int pt, int pl) noexcept nogil
    double cnn_max_abs_f(const float *y, Py_ssize_t n, double cur) noexcept nogil
    double cnn_max_abs_d(const double *y, Py_ssize_t n, double cur) noexcept nogil


cdef inline void _pool_plane(const floating *x, Py_ssize_t H, Py_ssize_t W, floating *y,
                             Py_ssize_t OH, Py_ssize_t OW, int kh, int kw, int sh, int sw,
                             int pt, int pl, Py_ssize_t *arg=NULL) noexcept nogil:
    """Values only (inference), or with the argmax of the training pool when ``arg``."""
    if arg != NULL:
        if floating is float:
            cnn_maxpool_plane_arg_f(x, H, W, y, arg, OH, OW, kh, kw, sh, sw, pt, pl)
        else:
            cnn_maxpool_plane_arg_d(x, H, W, y, arg, OH, OW, kh, kw, sh, sw, pt, pl)
    elif floating is float:
        cnn_maxpool_plane_f(x, H, W, y, OH, OW, kh, kw, sh, sw, pt, pl)
    else:
        cnn_maxpool_plane_d(x, H, W, y, OH, OW, kh, kw, sh, sw, pt, pl)


cdef inline void _pool_image(const floating *z, floating *y, int K, int OH, int OW, int PH,
                             int PW, int kh, int kw, int sh, int sw, int pt,
                             int pl, Py_ssize_t *arg=NULL) noexcept nogil:
    """Pool the K planes (OH, OW) of one image's conv output z into y (K, PH, PW) (and their
    argmax into arg (K, PH, PW), when given)."""
    cdef int k
    for k in range(K):
        _pool_plane(z + <Py_ssize_t> k * OH * OW, OH, OW, y + <Py_ssize_t> k * PH * PW,
                    PH, PW, kh, kw, sh, sw, pt, pl,
                    arg + <Py_ssize_t> k * PH * PW if arg != NULL else NULL)


cdef inline double _max_abs_into(const floating *y, Py_ssize_t n, double cur) noexcept nogil:
    """max(cur, max |y[:n]|), NaN if cur or any y is NaN."""
    if floating is float:
        return cnn_max_abs_f(y, n, cur)
    else:
        return cnn_max_abs_d(y, n, cur)


def pool_plane_forward(const floating[:, :, :, ::1] x,  # IN  (N, C, H, W)
                       floating[:, :, :, ::1] y,        # OUT (N, C, OH, OW)
                       int kh, int kw, int sh, int sw, int pt, int pl, int num_threads):
    """Max-pool values only (no argmax), OpenMP over the N*C planes: the inference pool."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t OH = y.shape[2], OW = y.shape[3], plane
    if N * C == 0 or OH * OW == 0:
        return
    for plane in prange(N * C, nogil=True, schedule='dynamic', chunksize=8,
                        num_threads=max(1, min(num_threads, N * C))):
        _pool_plane(&x[0, 0, 0, 0] + plane * H * W, H, W, &y[0, 0, 0, 0] + plane * OH * OW,
                    OH, OW, kh, kw, sh, sw, pt, pl)


# max_abs: values per thread below which one serial pass beats waking a second thread (and
# below which the GIL is kept: a pass over 256 KB takes a few microseconds).
cdef Py_ssize_t _MAX_ABS_MIN_PART = 1 << 16


def max_abs(const floating[::1] a, int num_threads=1):
    """max |a| (float), NaN if ``a`` holds a NaN, 0.0 if it is empty: one pass of the integer
    kernel of _fused.h, serial for a small array (a call's overhead counts there) and with the
    GIL held, else cut into ``num_threads`` contiguous parts. An exact max: the result does not
    depend on the thread count."""
    cdef Py_ssize_t n = a.shape[0], part, lo, hi
    cdef int t, parts
    cdef double out = 0.0
    cdef double[::1] part_max
    if n == 0:
        return 0.0
    parts = max(1, min(num_threads, <int> (n // _MAX_ABS_MIN_PART)))
    if parts == 1:
        if n <= _MAX_ABS_MIN_PART:
            return _max_abs_into(&a[0], n, 0.0)
        with nogil:
            out = _max_abs_into(&a[0], n, 0.0)
        return out
    part = (n + parts - 1) // parts
    part_max = np.empty(parts, dtype=np.float64)
    for t in prange(parts, nogil=True, schedule='static', num_threads=parts):
        lo = t * part
        hi = min(n, lo + part)
        part_max[t] = _max_abs_into(&a[0] + lo, hi - lo, 0.0)
    for t in range(parts):
        if part_max[t] != part_max[t]:
            return part_max[t]
        if part_max[t] > out:
            out = part_max[t]
    return out


cdef inline bint _one_by_one(int kh, int kw, int sh, int sw, int pt, int pl, int OH, int OW,
                             int H, int W) noexcept nogil:
    """A 1x1 stride-1 unpadded conv: its input already is the column matrix."""
    return kh == 1 and kw == 1 and sh == 1 and sw == 1 and pt == 0 and pl == 0 \
        and OH == H and OW == W


def im2col_own_gemm(dtype, int C, int H, int W, int kh, int kw, int sh, int sw, int pt,
                    int pl, int OH, int OW):
    """Whether :func:`conv_pool_forward` (and the training forward) runs the IM2COL product
    of this conv (C, H, W) -> (OH, OW), kernel (kh, kw), stride (sh, sw), top/left padding
    (pt, pl), in ``dtype``, on cnn's own kernel (size its scratch with ``own_gemm`` of that)."""
    return _im2col_own_gemm(np.dtype(dtype) == np.float32, 1,
                            _one_by_one(kh, kw, sh, sw, pt, pl, OH, OW, H, W), C * kh * kw)


def winograd_blocks(int N, int C, int OH, int OW):
    """Blocks of images (work items before any filter split) of a Winograd
    :func:`conv_pool_forward` on N images of C channels and (OH, OW) outputs."""
    cdef int G = _wino_group(N, <int> CNN_WINO_TILES((OH + 1) // 2, (OW + 1) // 2), C)
    return (N + G - 1) // G


def scratch_size(int method, int N, int C, int K, int kh, int kw, int OH, int OW,
                 own_gemm=None):
    """Elements of one thread's scratch for :func:`conv_pool_forward` with ``method``.

    im2col: the column matrix (C*kh*kw, OH*OW) and the conv output (K, OH*OW), both for the
    block of images that share one GEMM (_images_per_gemm, as in ``conv2d``), with
    ``own_gemm`` their rows padded for the register-blocked kernel (the float32 product,
    _conv_common's ``_im2col_own_gemm``; None: enough for either); direct: the
    direct kernel's padded plane and accumulators and the conv output; Winograd: the padded
    plane, an output row, V (16, C, T), M (16, K, T) and the conv output of a block of images.
    """
    cdef Py_ssize_t P = <Py_ssize_t> OH * OW, tpi, pad_size, v_size
    if method == M_WINOGRAD:
        tpi = CNN_WINO_TILES((OH + 1) // 2, (OW + 1) // 2)
        return (_wino_block_sizes(N, C, K, OH, OW, &pad_size, &v_size)
                + _wino_group(N, <int> tpi, C) * K * P)
    if method == M_DIRECT:
        return CNN_DIRECT_SCRATCH(OH, OW) + K * P
    if own_gemm is None:
        return max(scratch_size(method, N, C, K, kh, kw, OH, OW, True),
                   scratch_size(method, N, C, K, kh, kw, OH, OW, False))
    cdef Py_ssize_t B = _images_per_gemm(N, <int> P)  # (an upper bound for 1x1 convs)
    cdef Py_ssize_t SP = CNN_WINO_GEMM_PAD(P)
    if B == 1 and own_gemm:  # the columns and the product, rows of SP; then the conv output
        return _round16(<Py_ssize_t> C * kh * kw * SP) + K * SP + K * P
    if B == 1:
        return <Py_ssize_t> C * kh * kw * P + K * P
    if own_gemm:  # the block's columns and product, rows of B*P rounded up to 16 slots
        SP = CNN_WINO_GEMM_PAD(B * P)
        return _round16(<Py_ssize_t> C * kh * kw * SP) + K * SP
    return _round16(<Py_ssize_t> C * kh * kw * B * P) + K * B * P


cdef void _own_gemm_item(const floating *x, const floating *w, const floating *bias, bint relu,
                         floating *base, Py_ssize_t SP, floating *y, int k0, int k1, int r0,
                         int r1, int C, int H, int W, int kh, int kw, int sh, int sw, int pt,
                         int pl, int OH, int OW, int PH, int PW, bint pooled, int pkh, int pkw,
                         int psh, int psw, int ppt, int ppl, bint cols_ready,
                         Py_ssize_t *arg=NULL) noexcept nogil:
    """Filters k0:k1 and output rows r0:r1 (pooled rows when ``pooled``) of one image,
    float32: im2col of the conv rows they need into ``base`` (rows of the band's slots
    rounded up to 16) unless ``cols_ready``, the product by cnn_wino_gemm_f 8 filters at a
    time after the full image's columns (``SP`` slots a row), then bias and ReLU, and the
    pool (or the copy) of each filter's band into y (K, PH, PW), with the argmax into ``arg``
    (K, PH, PW) when given (whole images only, r0 = 0: its indices are into the band's rows).

    Each output is one FMA chain over C*kh*kw whatever the band, so bands that share conv
    rows (overlapping pool windows) compute them twice with the same bits."""
    cdef int CKK = C * kh * kw, k, kg, rows, c0 = r0, c1 = r1
    cdef Py_ssize_t r, P, SB
    cdef floating *prod = base + _round16(<Py_ssize_t> CKK * SP)
    cdef floating *plane
    if floating is double:
        return  # float32 only (conv_pool_forward never asks for it on float64)
    else:
        if pooled:  # the conv rows under pooled rows r0:r1, clipped to the plane
            c0 = max(0, r0 * psh - ppt)
            c1 = min(OH, (r1 - 1) * psh - ppt + pkh)
        P = <Py_ssize_t> (c1 - c0) * OW
        SB = CNN_WINO_GEMM_PAD(P)
        if not cols_ready:
            cnn_im2col_f(x, base, SB, C, H, W, kh, kw, sh, sw, pt - c0 * sh, pl, c1 - c0, OW,
                         1, 1)
            if SB > P:  # the slots past the band: zeros, so the padded products stay finite
                for r in range(CKK):
                    memset(base + r * SB + P, 0, (SB - P) * sizeof(float))
        kg = k0
        while kg < k1:
            rows = min(<int> CNN_WINO_GEMM_ROWS, k1 - kg)
            cnn_wino_gemm_f(w + <Py_ssize_t> kg * CKK, 0, CKK, rows, base, SB, 0, SB,
                            prod + <Py_ssize_t> (kg - k0) * SB, SB, 0, 1)
            kg += rows
        for k in range(k0, k1):
            plane = prod + <Py_ssize_t> (k - k0) * SB
            _bias_act(plane, bias + k if bias != NULL else NULL, bias != NULL, relu, 1, P)
            if pooled:
                _pool_plane(plane, c1 - c0, OW,
                            y + <Py_ssize_t> k * PH * PW + <Py_ssize_t> r0 * PW, r1 - r0, PW,
                            pkh, pkw, psh, psw, ppt + c0 - r0 * psh, ppl,
                            arg + <Py_ssize_t> k * PH * PW if arg != NULL else NULL)
            else:
                memcpy(y + <Py_ssize_t> k * OH * OW + <Py_ssize_t> c0 * OW, plane,
                       <size_t> P * sizeof(float))


def conv_pool_forward(const floating[:, :, :, ::1] x,   # IN  (N, C, H, W)
                      const floating[:, :, :, ::1] w,   # IN  (K, C, kh, kw)
                      const floating[::1] b,            # IN  (K,) or None
                      floating[:, :, :, ::1] y,         # OUT (N, K, PH, PW), pooled
                      floating[:, ::1] scratch,         # (threads, scratch_size(...))
                      floating[:, :, ::1] U,            # (16, K, C) Winograd weights, or None
                      int method, int sh, int sw, int pt, int pl, int OH, int OW, bint relu,
                      int pkh, int pkw, int psh, int psw, int ppt, int ppl, int num_threads,
                      double[::1] maxes=None, int ksplit=1, int rsplit=1,
                      Py_ssize_t[:, :, :, ::1] argmax=None):
    """y = maxpool(act(conv(x, w) + b)); the conv has stride (sh, sw), top/left padding
    (pt, pl) and output planes (OH, OW), the pool windows (pkh, pkw), strides (psh, psw) and
    top/left padding (ppt, ppl).

    ``pkh = 0`` means no pool: y is then (N, K, OH, OW) and receives the conv output
    directly (the same kernels with preallocated scratch, so a call allocates nothing).

    ``method`` is IM2COL (any kernel, dilation 1, groups 1; a 1x1 stride-1 unpadded conv reads
    the input as its column matrix), WINOGRAD (3x3, stride 1, 0 <= pt, pl <= 2; ``U`` receives
    the transformed weights) or DIRECT (one input channel, 3x3, stride 1). ``scratch`` has at
    least ``num_threads`` rows of :func:`scratch_size` elements.

    ``maxes`` (float64, at least ``num_threads`` entries), when given, receives per thread the
    largest ``|y|`` over the items that thread wrote, NaN if one held a NaN (taken while the
    item is in cache: the next conv's Winograd overflow test needs ``max |y|``, and this saves
    it a pass over ``y``). Its max over the entries is ``max |y|`` exactly, for any schedule.

    ``ksplit`` (IM2COL, DIRECT, and WINOGRAD in float32) cuts each image's filters (each
    Winograd block's) into that many blocks, each a work item of its own (its own im2col or
    input transform unless the thread's last item left it in scratch, GEMM rows, bias/ReLU and
    pool), so a batch of one image can use two threads. For IM2COL the caller picks it from the
    shapes, never from the thread count: BLAS's rounding may depend on the rows it is given,
    the result must not depend on threads. The direct and the float32 Winograd kernels' bits
    do not depend on the filter block (blocks of 8 filters there), so there it may follow the
    thread count.

    IM2COL in float32 with at least 64 terms (C*kh*kw; not 1x1) runs the product by the
    register-blocked kernel of _wino_gemm.h, as the training forward does (_conv_common's
    ``_im2col_own_gemm``, :func:`im2col_own_gemm`), so that predict keeps its bits;
    ``scratch`` must then be sized by :func:`scratch_size` with ``own_gemm=True`` (or None).
    Too small a ``scratch`` is a ValueError.

    ``rsplit`` (that own GEMM on one image per product only; ignored elsewhere) cuts each
    image's rows of ``y`` into that many bands, each a work item that unrolls only the conv
    rows its band needs. At batch 1 that halves the im2col of each of two threads against
    ``ksplit = 2``. The own GEMM's bits do not depend on the band, so ``rsplit`` may follow
    the thread count.

    ``argmax`` (intp (N, K, PH, PW), with a pool and ``rsplit = 1``), when given,
    receives the training max-pool's argmax (flat indices into each (OH, OW) conv output
    plane; _pool22.h's rule, the pool layer's bits): the training conv + pool, which never
    writes the unpooled tensor. Each conv output plane is then pooled from scratch (not in the
    Winograd output transform or the direct kernel's epilogue).
    """
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int K = w.shape[0], kh = w.shape[2], kw = w.shape[3]
    cdef int PH = y.shape[2], PW = y.shape[3]
    cdef int P = OH * OW, CKK = C * kh * kw
    cdef bint has_bias = b is not None
    cdef const floating *bptr = &b[0] if has_bias else NULL
    cdef const floating *xptr
    cdef const floating *wptr
    cdef floating *yptr
    cdef const floating *src
    cdef const floating *uptr
    cdef floating *base
    cdef floating *z
    cdef floating *zz
    cdef Py_ssize_t in_img = <Py_ssize_t> C * H * W, out_img = <Py_ssize_t> K * PH * PW
    cdef Py_ssize_t conv_img = <Py_ssize_t> K * P
    cdef bint one_by_one = _one_by_one(kh, kw, sh, sw, pt, pl, OH, OW, H, W)
    cdef int n, blk, n0, n1, tpi, G, n_items, k
    cdef Py_ssize_t LD, r
    cdef int kg
    cdef floating *prod
    cdef floating *plane
    cdef bint pooled = pkh > 0
    # the 2x2 / stride-2 unpadded pool (floor) that the direct kernel does in its epilogue and
    # the Winograd kernel in its output transform (each window is one output tile)
    cdef bint with_arg = argmax is not None
    cdef Py_ssize_t *aptr = NULL
    cdef bint pool22 = pooled and pkh == 2 and pkw == 2 and psh == 2 and psw == 2 \
        and ppt == 0 and ppl == 0 and PH == OH // 2 and PW == OW // 2 and not with_arg
    cdef bint track = maxes is not None
    cdef Py_ssize_t item0, item1, trk_off, trk_len
    cdef int ks, k0, k1, kblk, rs, rblk, r0, r1, kr
    cdef bint wino_split, any_split
    cdef int wc, w_chunks
    # per thread: the image whose im2col columns its scratch holds (-1: none; threads past
    # MAX_REUSE_THREADS never reuse); on the stack, so a call allocates nothing
    cdef int last_img[MAX_REUSE_THREADS]
    cdef int tid
    cdef Py_ssize_t pad_size = 0, v_size = 0, ssize = scratch.shape[1]
    # the own GEMM's column and product rows: P rounded up to its 16-slot vectors
    cdef Py_ssize_t SP = CNN_WINO_GEMM_PAD(OH * OW)
    if with_arg:
        if not pooled or rsplit != 1:
            raise ValueError("conv_pool_forward: argmax needs a pool and rsplit=1")
        if (argmax.shape[0] != y.shape[0] or argmax.shape[1] != y.shape[1]
                or argmax.shape[2] != y.shape[2] or argmax.shape[3] != y.shape[3]):
            raise ValueError(
                f"conv_pool_forward: argmax has shape ({argmax.shape[0]}, {argmax.shape[1]}, "
                f"{argmax.shape[2]}, {argmax.shape[3]}), y ({y.shape[0]}, {y.shape[1]}, "
                f"{y.shape[2]}, {y.shape[3]})")
    if N == 0 or K == 0 or P == 0 or PH * PW == 0:
        return
    if with_arg:
        aptr = &argmax[0, 0, 0, 0]
    xptr = &x[0, 0, 0, 0]
    wptr = &w[0, 0, 0, 0]
    yptr = &y[0, 0, 0, 0]
    tpi = <int> CNN_WINO_TILES((OH + 1) // 2, (OW + 1) // 2)
    if method == M_WINOGRAD:
        G = _wino_group(N, tpi, C)
    elif method == M_IM2COL and not one_by_one:
        G = _images_per_gemm(N, P)  # the blocks of conv2d's GEMMs: the same bits
    else:
        G = 1
    LD = <Py_ssize_t> G * P
    cdef bint own = method == M_IM2COL and _im2col_own_gemm(floating is float, 1, one_by_one,
                                                            CKK)
    cdef bint own_gemm
    if scratch.shape[1] < scratch_size(method, N, C, K, kh, kw, OH, OW, own):
        raise ValueError(f"conv_pool_forward: scratch rows of {scratch.shape[1]} elements, "
                         f"need {scratch_size(method, N, C, K, kh, kw, OH, OW, own)}")
    if own and G > 1:  # rows of the block's columns and product rounded up to 16 slots
        LD = CNN_WINO_GEMM_PAD(LD)
    own_gemm = own and G == 1
    # float32 Winograd and the direct kernel: an output's bits do not depend on the filter
    # block (float64 Winograd runs BLAS)
    wino_split = floating is float and method == M_WINOGRAD
    any_split = method == M_IM2COL or method == M_DIRECT or wino_split
    ks = max(1, min(ksplit, K)) if any_split else 1
    kblk = (K + ks - 1) // ks
    if method != M_IM2COL:  # whole blocks of the kernel's rows of filters (8: Winograd's GEMM)
        kblk = (kblk + CNN_WINO_GEMM_ROWS - 1) // CNN_WINO_GEMM_ROWS * CNN_WINO_GEMM_ROWS
    ks = (K + kblk - 1) // kblk
    rs = max(1, min(rsplit, PH)) if own_gemm else 1
    rblk = (PH + rs - 1) // rs
    rs = (PH + rblk - 1) // rblk
    kr = ks * rs  # the items of one image (or block of images): filter blocks x row bands
    n_items = (N + G - 1) // G * kr
    num_threads = max(1, min(num_threads, n_items))
    if method == M_WINOGRAD:
        _wino_block_sizes(N, C, K, OH, OW, &pad_size, &v_size)
    for tid in range(MAX_REUSE_THREADS):
        last_img[tid] = -1
    if track:
        for tid in range(maxes.shape[0]):
            maxes[tid] = 0
    uptr = &U[0, 0, 0] if method == M_WINOGRAD else NULL
    base = z = zz = NULL
    w_chunks = (K + WINO_WEIGHT_CHUNK - 1) // WINO_WEIGHT_CHUNK if method == M_WINOGRAD else 0
    with nogil, parallel(num_threads=num_threads):
        base = &scratch[omp_get_thread_num(), 0]
        # the conv output of the item sits at the end of the thread's row
        z = base + ssize - <Py_ssize_t> G * conv_img
        # the Winograd weights U, shared by the threads: every thread reads all of U next, so
        # a barrier after the loop (the condition is the same for every thread)
        if method == M_WINOGRAD:
            for wc in prange(w_chunks, schedule='static'):
                if floating is float:
                    cnn_wino_weights_f(wptr, uptr, K, C, False, wc * WINO_WEIGHT_CHUNK,
                                       min(K, (wc + 1) * WINO_WEIGHT_CHUNK))
                else:
                    cnn_wino_weights_d(wptr, uptr, K, C, False, wc * WINO_WEIGHT_CHUNK,
                                       min(K, (wc + 1) * WINO_WEIGHT_CHUNK))
            cnn_omp_barrier()
        for blk in prange(n_items, schedule='dynamic'):
            # the item's conv output: the thread's scratch, or (no pool) straight into y
            zz = z if pooled else yptr + <Py_ssize_t> (blk // kr) * G * conv_img
            if method == M_WINOGRAD:
                # filters k0:k1 of the block of images n0:n1; the thread's V is reused when
                # its last item was the same block
                n0 = (blk // ks) * G
                n1 = min(N, n0 + G)
                k0 = (blk % ks) * kblk
                k1 = min(K, k0 + kblk)
                tid = omp_get_thread_num()
                if pool22:
                    _wino_block(xptr + n0 * in_img, NULL, uptr, bptr, relu,
                                yptr + n0 * out_img, n1 - n0, C, H, W, K, OH, OW, pt, pl,
                                base, pad_size, v_size, True, k0, k1,
                                tid < MAX_REUSE_THREADS and last_img[tid] == n0)
                else:
                    _wino_block(xptr + n0 * in_img, NULL, uptr, bptr, relu, zz, n1 - n0,
                                C, H, W, K, OH, OW, pt, pl, base, pad_size, v_size, False,
                                k0, k1, tid < MAX_REUSE_THREADS and last_img[tid] == n0)
                if tid < MAX_REUSE_THREADS:
                    last_img[tid] = n0
                if pooled and not pool22:
                    for n in range(n0, n1):
                        _pool_image(zz + (n - n0) * conv_img + <Py_ssize_t> k0 * P,
                                    yptr + n * out_img + <Py_ssize_t> k0 * PH * PW, k1 - k0,
                                    OH, OW, PH, PW, pkh, pkw, psh, psw, ppt, ppl,
                                    aptr + n * out_img + <Py_ssize_t> k0 * PH * PW
                                    if with_arg else NULL)
            elif method == M_DIRECT:
                n = blk // ks  # filters k0:k1 of image n (w is (K, 1, 3, 3))
                k0 = (blk % ks) * kblk
                k1 = min(K, k0 + kblk)
                zz = z if pooled else yptr + <Py_ssize_t> n * conv_img
                if pool22:  # pooled in the kernel's epilogue: the conv plane is never stored
                    if floating is float:
                        cnn_direct3x3_c1_pool22_f(xptr + n * in_img, wptr + 9 * k0,
                                                  bptr + k0 if has_bias else NULL, relu,
                                                  yptr + n * out_img + <Py_ssize_t> k0 * PH * PW,
                                                  k1 - k0, H, W, pt, pl, OH, OW, base)
                    else:
                        cnn_direct3x3_c1_pool22_d(xptr + n * in_img, wptr + 9 * k0,
                                                  bptr + k0 if has_bias else NULL, relu,
                                                  yptr + n * out_img + <Py_ssize_t> k0 * PH * PW,
                                                  k1 - k0, H, W, pt, pl, OH, OW, base)
                else:
                    if floating is float:
                        cnn_direct3x3_c1_f(xptr + n * in_img, wptr + 9 * k0,
                                           bptr + k0 if has_bias else NULL, relu,
                                           zz + <Py_ssize_t> k0 * P, k1 - k0, H, W, pt, pl, OH,
                                           OW, base)
                    else:
                        cnn_direct3x3_c1_d(xptr + n * in_img, wptr + 9 * k0,
                                           bptr + k0 if has_bias else NULL, relu,
                                           zz + <Py_ssize_t> k0 * P, k1 - k0, H, W, pt, pl, OH,
                                           OW, base)
                    if pooled:
                        _pool_image(zz + <Py_ssize_t> k0 * P,
                                    yptr + n * out_img + <Py_ssize_t> k0 * PH * PW, k1 - k0, OH,
                                    OW, PH, PW, pkh, pkw, psh, psw, ppt, ppl,
                                    aptr + n * out_img + <Py_ssize_t> k0 * PH * PW
                                    if with_arg else NULL)
            elif G == 1:
                n = blk // kr  # filters k0:k1, rows r0:r1 of y, of image n
                k0 = (blk % kr) // rs * kblk
                k1 = min(K, k0 + kblk)
                r0 = (blk % rs) * rblk
                r1 = min(PH, r0 + rblk)
                zz = z if pooled else yptr + <Py_ssize_t> n * conv_img
                if own_gemm:
                    tid = omp_get_thread_num()
                    _own_gemm_item(xptr + n * in_img, wptr, bptr, relu, base, SP,
                                   yptr + n * out_img, k0, k1, r0, r1, C, H, W, kh, kw, sh, sw,
                                   pt, pl, OH, OW, PH, PW, pooled, pkh, pkw, psh, psw, ppt, ppl,
                                   rs == 1 and tid < MAX_REUSE_THREADS and last_img[tid] == n,
                                   aptr + n * out_img if with_arg else NULL)
                    if tid < MAX_REUSE_THREADS:
                        last_img[tid] = n
                elif one_by_one:
                    src = xptr + n * in_img
                else:
                    # the next filter block of the image this thread just unrolled: reuse it
                    tid = omp_get_thread_num()
                    if tid >= MAX_REUSE_THREADS or last_img[tid] != n:
                        if floating is float:
                            cnn_im2col_f(xptr + n * in_img, base, P, C, H, W, kh, kw, sh, sw, pt,
                                         pl, OH, OW, 1, 1)
                        else:
                            cnn_im2col_d(xptr + n * in_img, base, P, C, H, W, kh, kw, sh, sw, pt,
                                         pl, OH, OW, 1, 1)
                        if tid < MAX_REUSE_THREADS:
                            last_img[tid] = n
                    src = base
                if not own_gemm:
                    _gemm(False, False, k1 - k0, P, CKK, 1, wptr + <Py_ssize_t> k0 * CKK, CKK,
                          src, P, 0, zz + <Py_ssize_t> k0 * P, P)
                    _bias_act(zz + <Py_ssize_t> k0 * P, bptr + k0 if has_bias else NULL,
                              has_bias, relu, k1 - k0, P)
                    if pooled:
                        _pool_image(zz + <Py_ssize_t> k0 * P,
                                    yptr + n * out_img + <Py_ssize_t> k0 * PH * PW, k1 - k0, OH,
                                    OW, PH, PW, pkh, pkw, psh, psw, ppt, ppl,
                                    aptr + n * out_img + <Py_ssize_t> k0 * PH * PW
                                    if with_arg else NULL)
            else:
                # filters k0:k1 of images n0:n1, their columns side by side (LD apart): one
                # GEMM into prod (K, LD), then per image and filter a plane of prod to pool or
                # to copy into y
                n0 = (blk // kr) * G  # (kr == ks here: no row bands)
                n1 = min(N, n0 + G)
                k0 = (blk % ks) * kblk
                k1 = min(K, k0 + kblk)
                prod = base + _round16(CKK * LD)
                tid = omp_get_thread_num()
                if tid >= MAX_REUSE_THREADS or last_img[tid] != n0:
                    for n in range(n0, n1):
                        if floating is float:
                            cnn_im2col_f(xptr + n * in_img, base + <Py_ssize_t> (n - n0) * P, LD,
                                         C, H, W, kh, kw, sh, sw, pt, pl, OH, OW, 1, 1)
                        else:
                            cnn_im2col_d(xptr + n * in_img, base + <Py_ssize_t> (n - n0) * P, LD,
                                         C, H, W, kh, kw, sh, sw, pt, pl, OH, OW, 1, 1)
                    if own and LD > (n1 - n0) * P:  # the padded slots: zeros (finite products)
                        for r in range(CKK):
                            memset(base + r * LD + (n1 - n0) * P, 0,
                                   (LD - (n1 - n0) * P) * sizeof(floating))
                    if tid < MAX_REUSE_THREADS:
                        last_img[tid] = n0
                if own:
                    if floating is float:
                        for kg in range(k0, k1, 8):  # CNN_WINO_GEMM_ROWS filters at a time
                            cnn_wino_gemm_f(wptr + <Py_ssize_t> kg * CKK, 0, CKK, min(8, k1 - kg),
                                            base, LD, 0, LD, prod + kg * LD, LD, 0, 1)
                else:
                    _gemm(False, False, k1 - k0, (n1 - n0) * P, CKK, 1,
                          wptr + <Py_ssize_t> k0 * CKK, CKK, base, <int> LD, 0, prod + k0 * LD,
                          <int> LD)
                for k in range(k0, k1):
                    _bias_act(prod + k * LD, bptr + k if has_bias else NULL, has_bias, relu, 1,
                              (n1 - n0) * P)
                for n in range(n0, n1):
                    for k in range(k0, k1):
                        plane = prod + k * LD + <Py_ssize_t> (n - n0) * P
                        if pooled:
                            _pool_plane(plane, OH, OW, yptr + n * out_img + <Py_ssize_t> k * PH * PW,
                                        PH, PW, pkh, pkw, psh, psw, ppt, ppl,
                                        aptr + n * out_img + <Py_ssize_t> k * PH * PW
                                        if with_arg else NULL)
                        else:
                            memcpy(yptr + n * out_img + <Py_ssize_t> k * P, plane,
                                   <size_t> P * sizeof(floating))
            if track:
                # the part of y this item wrote: whole images, filters k0:k1 of a block of
                # images (one run of y per image), or rows r0:r1 of filters k0:k1 of one image
                # (one run per filter)
                tid = omp_get_thread_num()
                item0 = (blk // kr) * G
                item1 = min(<Py_ssize_t> N, item0 + G)
                k0 = (blk % kr) // rs * kblk
                k1 = min(K, k0 + kblk)
                if rs > 1:
                    r0 = (blk % rs) * rblk
                    r1 = min(PH, r0 + rblk)
                    for k in range(k0, k1):
                        trk_off = item0 * out_img + <Py_ssize_t> k * PH * PW + r0 * PW
                        maxes[tid] = _max_abs_into(yptr + trk_off, <Py_ssize_t> (r1 - r0) * PW,
                                                   maxes[tid])
                elif ks > 1:
                    trk_len = <Py_ssize_t> (k1 - k0) * PH * PW
                    for n in range(<int> item0, <int> item1):
                        trk_off = n * out_img + <Py_ssize_t> k0 * PH * PW
                        maxes[tid] = _max_abs_into(yptr + trk_off, trk_len, maxes[tid])
                else:
                    maxes[tid] = _max_abs_into(yptr + item0 * out_img,
                                               (item1 - item0) * out_img, maxes[tid])
