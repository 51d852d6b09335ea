"""Conv2D kernels: im2col + one GEMM per image (per block of images for small outputs),
OpenMP over the batch.

Layout (all C-contiguous, NCHW):
    x  (N, C, H, W)      w  (K, C, kh, kw)     y  (N, K, OH, OW)
For image n, ``cols`` (C*kh*kw, OH*OW) holds the padded input patches, so
``y[n] = w.reshape(K, -1) @ cols`` is written straight into NCHW. Each thread owns
a private ``cols`` scratch; images are independent, so threads never share output.

Backward recomputes ``cols`` per image instead of storing (N, C*kh*kw, OH*OW)
from forward: the copy is cheap next to the GEMMs and keeps memory at one scratch
per thread. The weight gradient sums over the batch in ``N_CHUNKS`` fixed chunks
of images: each chunk's partial sum is private, and the partials are added in
chunk order afterwards, so ``dw``/``db`` are bit-identical for any thread count.
BLAS is called from inside ``prange``: the caller keeps that BLAS at one thread
(see ``cnn._threads``) so the two pools never nest. Work items (images, chunks) are
handed out dynamically: when another process takes a core, the other thread carries on
instead of waiting at the barrier. Which thread does an item never changes its result.

Validation lives in :mod:`cnn.functional`; these kernels trust their arguments.
"""
import os

import numpy as np

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.string cimport memset, memcpy

from cnn._ext._blas cimport _gemm
from cnn._ext._scratch import aligned_rows
from cnn._ext._conv_common cimport (
    _bias_act, _im2col_own_gemm, _images_per_gemm, _round16, _wino_group,
    CNN_DIRECT_SCRATCH,
    CNN_WINO_PAD_SIZE,
    CNN_WINO_GRAD_PAD_SIZE,
    CNN_WINO_TILES,
    _col2im,
    _im2col,
    cnn_col2im_work_size,
    _wino_grad,
    _wino_input,
    _wino_block,
    _wino_block_sizes,
    _wino_weights,
    _wino_weights_grad,
    cnn_direct3x3_c1_d,
    cnn_direct3x3_c1_f,
    cnn_wino_wgrad_f,
    cnn_wino_gemm_f,
    CNN_WINO_GEMM_PAD,
    CNN_WINO_GEMM_ROWS,
)
from cnn._ext._openmp cimport omp_get_thread_num

# Upper bound on the number of private weight-gradient partials. Independent of the
# thread count on purpose: that is what makes dw/db thread-count invariant.
cdef enum:
    N_CHUNKS = 16

# The weight-gradient products in float32 (im2col: (Kg, CgKK + 1) (+)= dY (Kg, T) @ [cols; 1]^T;
# Winograd: the same with the transformed dY and x, C + 1 columns) run on cnn's own kernel
# (_wino_wgrad.h) up to this many columns: OpenBLAS packs both operands on every call, which
# dominates for few columns. The whole im2col backward, CPU
# samples over a fixed loop (perf, 2 threads, AMD Zen 3): -31 % (DESIGN CNN conv1, 10 columns),
# -33 % (3 -> 32 channels, stride 2, 28), -19 % (LeNet-5 conv2, 151), -40 % (32 -> 64 channels,
# stride 2, 289); at 577 columns a wash (+1 %, +6 %), so BLAS keeps the wider products.
cdef enum:
    OWN_WGRAD_MAX_COLS = 320


cdef extern from *:
    """
    /* In C for `restrict`, and with g[i] loaded unconditionally: then gcc vectorises the
       select into a blend instead of a data-dependent branch. */
    static void cnn_relu_mask_f(const float *restrict g, const float *restrict a,
                                float *restrict out, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) { float gi = g[i]; out[i] = a[i] > 0.0f ? gi : 0.0f; }
    }
    static void cnn_relu_mask_d(const double *restrict g, const double *restrict a,
                                double *restrict out, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) { double gi = g[i]; out[i] = a[i] > 0.0 ? gi : 0.0; }
    }
    """
    void cnn_relu_mask_f(const float *g, const float *a, float *out, Py_ssize_t n) noexcept nogil
    void cnn_relu_mask_d(const double *g, const double *a, double *out, Py_ssize_t n) noexcept nogil


cdef inline void _relu_mask(const floating *g, const floating *a, floating *out,
                            Py_ssize_t n) noexcept nogil:
    """out = g where a > 0, else 0 (ReLU'(0) = 0)."""
    if floating is float:
        cnn_relu_mask_f(g, a, out, n)
    else:
        cnn_relu_mask_d(g, a, out, n)


cdef extern from "_simd.h":
    int cnn_kernel_isa() noexcept nogil
    int CNN_HAVE_CLONES

_ISA_NAMES = ("default", "avx2", "avx512f")


def _check_isa_env():
    """CNN_KERNEL_ISA, when set, must name a clone (the C side ignores anything else)."""
    value = os.environ.get("CNN_KERNEL_ISA")
    if value is not None and value not in _ISA_NAMES:
        raise ValueError(f"CNN_KERNEL_ISA must be one of 'avx512f', 'avx2', 'default' or "
                         f"unset; got {value!r}")


# Pick the kernel clones now, before any thread runs a kernel (see _simd.h).
_check_isa_env()
cnn_kernel_isa()


def kernel_isa():
    """The kernel clone this process runs: ``"avx512f"``, ``"avx2"`` or ``"default"``.

    The best the CPU has, in that order, capped by the environment variable
    ``CNN_KERNEL_ISA``; ``"default"`` where the build has no clones (not x86-64 GNU C).
    Kernels whose AVX-512F copy measured slower have none (the Winograd transforms, the 2x2
    max-pool): at ``"avx512f"`` they run their AVX2 or portable copy (see ``_simd.h``).
    """
    return _ISA_NAMES[cnn_kernel_isa()]


def kernel_clones_built():
    """Whether this build has the AVX-512F and AVX2 kernel clones (x86-64 GNU C, without
    CNN_NO_TARGET_CLONES); without them :func:`kernel_isa` is always ``"default"``."""
    return bool(CNN_HAVE_CLONES)


# Elements per work item of relu_backward: items are fixed by the size alone.
cdef enum:
    RELU_CHUNK = 32768


def relu_backward(const floating[::1] g,   # IN  (n,) gradient w.r.t. the ReLU's output
                  const floating[::1] a,   # IN  (n,) the ReLU's input (or its output)
                  floating[::1] out,       # OUT (n,)
                  int num_threads):
    """``out = g where a > 0, else 0`` (ReLU'(0) = 0; a NaN in ``a`` gives 0, a NaN in ``g``
    passes where ``a > 0``): ``np.where(a > 0, g, 0)`` without its per-element branch.
    Elementwise, so any split over threads gives the same bits."""
    cdef Py_ssize_t n = g.shape[0], items = (n + RELU_CHUNK - 1) // RELU_CHUNK, t, lo
    if n == 0:
        return
    for t in prange(items, nogil=True, schedule='dynamic',
                    num_threads=max(1, min(num_threads, items))):
        lo = t * RELU_CHUNK
        _relu_mask(&g[lo], &a[lo], &out[lo], min(RELU_CHUNK, n - lo))


cdef inline void _copy_rows(const floating *src, Py_ssize_t ld, floating *dst, int rows,
                            int n) noexcept nogil:
    """dst (rows, n), contiguous = the first n columns of src (rows, ld)."""
    cdef int r
    for r in range(rows):
        memcpy(dst + <Py_ssize_t> r * n, src + r * ld, <size_t> n * sizeof(floating))


cdef object _dtype(const floating[:, :, :, ::1] like):
    """The NumPy dtype matching the fused type ``floating``."""
    return np.float32 if floating is float else np.float64


def conv2d_forward(const floating[:, :, :, ::1] x,   # IN  (N, C, H, W)
                   const floating[:, :, :, ::1] w,   # IN  (K, C/groups, kh, kw)
                   const floating[::1] b,            # IN  (K,) or None
                   floating[:, :, :, ::1] y,         # OUT (N, K, OH, OW)
                   int sh, int sw, int pt, int pl,
                   bint relu, int num_threads, int dil_h=1, int dil_w=1, int groups=1):
    """y = act(conv(x, w) + b), cross-correlation with stride (sh, sw), top/left padding
    (pt, pl), dilation (dil_h, dil_w) and ``groups`` channel groups.

    The bottom/right padding is implied by y's shape. ``b`` may be None. With groups, the
    im2col rows of group g (its C/groups channels) are one contiguous block, so group g is
    one GEMM ``y[n, g*Kg:(g+1)*Kg] = w[g*Kg:(g+1)*Kg] @ cols[g block]``. Small output planes
    are unrolled a block of images at a time (:func:`_images_per_gemm`), their columns side by
    side, so that one GEMM covers the block; the product is then copied out per image. In
    float32 with one group and at least 64 terms (C*kh*kw) the product runs on cnn's own
    kernel (_conv_common's ``_im2col_own_gemm``; rows of the block's columns rounded up to 16
    slots, the padding zeroed), else on BLAS.
    """
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int K = w.shape[0], kh = w.shape[2], kw = w.shape[3]
    cdef int OH = y.shape[2], OW = y.shape[3]
    cdef int G = groups, Kg = K // groups
    cdef int P = OH * OW, CKK = C * kh * kw, CgKK = (C // groups) * kh * kw
    cdef bint has_bias = b is not None
    cdef const floating *bptr = &b[0] if has_bias else NULL
    cdef const floating *xptr
    cdef const floating *wptr
    cdef const floating *src
    cdef floating *yptr
    cdef floating *cols
    cdef floating *prod
    cdef floating *dst
    cdef floating[:, ::1] scratch
    cdef int n, g, blk, n0, nb, i, B, n_blocks
    cdef Py_ssize_t LD
    cdef bint direct = kh == 1 and kw == 1 and sh == 1 and sw == 1 and pt == 0 and pl == 0 \
        and OH == H and OW == W
    cdef bint own = _im2col_own_gemm(floating is float, groups, direct, CKK)
    cdef int kg, rows, r
    if N == 0 or K == 0 or P == 0:
        return
    B = 1 if direct else _images_per_gemm(N, P)
    n_blocks = (N + B - 1) // B
    LD = <Py_ssize_t> B * P
    if own:
        LD = CNN_WINO_GEMM_PAD(LD)
    xptr = &x[0, 0, 0, 0]
    wptr = &w[0, 0, 0, 0]
    yptr = &y[0, 0, 0, 0]
    num_threads = max(1, min(num_threads, n_blocks))
    # Scratch is allocated here, under the GIL, so running out of memory is a clean MemoryError.
    # Per thread: the block's columns (CKK, B*P), then (B > 1) its product (K, B*P).
    scratch = aligned_rows(num_threads, 1 if direct else _round16(CKK * LD)
                           + (K * LD if B > 1 or own else 0), _dtype(x))
    cols = prod = NULL
    with nogil, parallel(num_threads=num_threads):
        cols = &scratch[omp_get_thread_num(), 0]
        prod = cols + _round16(CKK * LD)
        for blk in prange(n_blocks, schedule='dynamic'):
            n0 = blk * B
            nb = min(B, N - n0)
            if direct:
                # 1x1, stride 1, no padding: the input plane already is the column matrix.
                src = xptr + <Py_ssize_t> n0 * C * H * W
            else:
                for i in range(nb):
                    _im2col(xptr + <Py_ssize_t> (n0 + i) * C * H * W, cols + <Py_ssize_t> i * P,
                            LD, C, H, W, kh, kw, sh, sw, pt, pl, OH, OW, dil_h, dil_w)
                src = cols
            if own:
                if LD > nb * P:  # the padded slots: zeros, so the products stay finite
                    for r in range(CKK):
                        memset(cols + r * LD + nb * P, 0, (LD - nb * P) * sizeof(floating))
                for kg in range(0, K, 8):  # CNN_WINO_GEMM_ROWS filters at a time
                    rows = min(8, K - kg)
                    cnn_wino_gemm_f(<const float *> wptr + <Py_ssize_t> kg * CKK, 0, CKK, rows,
                                    <const float *> cols, LD, 0, LD,
                                    <float *> prod + <Py_ssize_t> kg * LD, LD, 0, 1)
                for i in range(nb):
                    _copy_rows(prod + <Py_ssize_t> i * P, LD, yptr + <Py_ssize_t> (n0 + i) * K * P,
                               K, P)
                    _bias_act(yptr + <Py_ssize_t> (n0 + i) * K * P, bptr, has_bias, relu, K, P)
                continue
            dst = yptr + <Py_ssize_t> n0 * K * P if B == 1 else prod
            for g in range(G):
                _gemm(False, False, Kg, nb * P, CgKK, 1, wptr + <Py_ssize_t> g * Kg * CgKK, CgKK,
                      src + <Py_ssize_t> g * CgKK * LD, <int> LD,
                      0, dst + <Py_ssize_t> g * Kg * LD, <int> LD)
            if B == 1:
                _bias_act(dst, bptr, has_bias, relu, K, P)
            else:
                for i in range(nb):
                    _copy_rows(prod + <Py_ssize_t> i * P, LD, yptr + <Py_ssize_t> (n0 + i) * K * P,
                               K, P)
                    _bias_act(yptr + <Py_ssize_t> (n0 + i) * K * P, bptr, has_bias, relu, K, P)


def conv2d_backward(const floating[:, :, :, ::1] dy,  # IN  (N, K, OH, OW)
                    const floating[:, :, :, ::1] x,   # IN  (N, C, H, W)
                    const floating[:, :, :, ::1] w,   # IN  (K, C/groups, kh, kw)
                    floating[:, :, :, ::1] dx,        # OUT (N, C, H, W) or None
                    floating[:, :, :, ::1] dw,        # OUT (K, C/groups, kh, kw)
                    floating[::1] db,                 # OUT (K,) or None
                    const floating[:, :, :, ::1] relu_out,  # IN (N, K, OH, OW) or None
                    int sh, int sw, int pt, int pl, int num_threads,
                    int dil_h=1, int dil_w=1, int groups=1):
    """Gradients of conv2d w.r.t. its input (skipped when dx is None), weight and bias.

    Without ``relu_out``, ``dy`` is the gradient w.r.t. the pre-activation output. With it
    (the forward output of a fused ReLU), ``dy`` is w.r.t. that output and is masked by
    ``relu_out > 0`` per image in a private buffer (ReLU'(0) = 0). dw and db are sums
    over the batch (callers wanting the batch mean fold 1/N into dy).

    Each group's column block carries one extra row of ones, so one GEMM per block of images
    and group, ``[dW_g | db_g] (Kg, CgKK + 1) += dY_g (Kg, P') @ [cols_g; 1]^T``, yields the
    bias gradient along with the weight gradient (Kg = K/groups, CgKK = C/groups*kh*kw). As in
    the forward, small output planes put the columns of a block of images side by side (P' =
    images * P, see :func:`_images_per_gemm`), the block's dy gathered beside them.
    """
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int K = w.shape[0], kh = w.shape[2], kw = w.shape[3]
    cdef int OH = dy.shape[2], OW = dy.shape[3]
    cdef int G = groups, Kg = K // groups, Cg = C // groups
    cdef int P = OH * OW, CKK = C * kh * kw, CgKK = Cg * kh * kw, CgKK1 = CgKK + 1
    cdef Py_ssize_t WSZ = <Py_ssize_t> K * CgKK, PSZ = <Py_ssize_t> K * CgKK1
    cdef bint need_dx = dx is not None
    cdef bint need_db = db is not None
    cdef bint masked = relu_out is not None
    cdef bint direct = kh == 1 and kw == 1 and sh == 1 and sw == 1 and pt == 0 and pl == 0 \
        and OH == H and OW == W
    cdef int B = 1 if direct else _images_per_gemm(N, P)
    cdef Py_ssize_t LD = <Py_ssize_t> B * P, BLK = CgKK1 * LD
    cdef bint gather = masked or B > 1
    cdef int n_chunks, chunk, n, n0, n1, k, p, j, g, i, b0, nb, blk
    cdef Py_ssize_t e
    cdef floating acc
    cdef floating *cols
    cdef floating *dcols
    cdef floating *dyblk
    cdef floating *work
    cdef const floating *dyn
    cdef const floating *wptr = &w[0, 0, 0, 0]
    cdef floating *part
    cdef floating[:, ::1] partials, scratch
    cdef floating *dxn
    cdef floating *dwptr = &dw[0, 0, 0, 0]

    if N == 0 or P == 0:
        memset(dwptr, 0, WSZ * sizeof(floating))
        if need_db and K > 0:
            memset(&db[0], 0, K * sizeof(floating))
        if need_dx and N > 0:
            memset(&dx[0, 0, 0, 0], 0, <Py_ssize_t> N * C * H * W * sizeof(floating))
        return
    # chunks of at least B images (on average), so that a chunk fills its GEMMs
    n_chunks = min(N_CHUNKS, (N + B - 1) // B)
    partials = np.empty((n_chunks, PSZ), dtype=_dtype(x))
    part = &partials[0, 0]
    num_threads = max(1, min(num_threads, n_chunks))
    # Per-thread scratch for a block of up to B images, their columns side by side (LD apart):
    # G blocks [cols_g; 1] (CgKK + 1, LD), dcols (CKK, LD), the block's (masked) dy (K, LD),
    # col2im's workspace.
    cdef Py_ssize_t DCOLS = _round16(CKK * LD) if need_dx and not direct else 0
    cdef Py_ssize_t DYBLK = _round16(K * LD) if gather else 0
    cdef Py_ssize_t WORK = cnn_col2im_work_size(kh, kw, sh, sw, OH, OW, dil_h, dil_w) \
        if need_dx and not direct else 0
    scratch = aligned_rows(num_threads, _round16(G * BLK) + DCOLS + DYBLK + WORK, _dtype(x))
    for e in range(num_threads):
        for g in range(G):
            for p in range(LD):
                scratch[e, g * BLK + <Py_ssize_t> CgKK * LD + p] = 1
    cols = dcols = dyblk = work = NULL
    with nogil, parallel(num_threads=num_threads):
        cols = &scratch[omp_get_thread_num(), 0]
        dcols = cols + _round16(G * BLK)
        dyblk = dcols + DCOLS
        work = dyblk + DYBLK
        for chunk in prange(n_chunks, schedule='dynamic'):
            n0 = <int> ((<long long> N * chunk) // n_chunks)
            n1 = <int> ((<long long> N * (chunk + 1)) // n_chunks)
            for blk in range((n1 - n0 + B - 1) // B):
                b0 = n0 + blk * B
                nb = min(B, n1 - b0)
                if gather:
                    # the block's dy (K, nb*P), masked by the ReLU's output when fused
                    for i in range(nb):
                        for k in range(K):
                            if masked:
                                _relu_mask(&dy[b0 + i, k, 0, 0], &relu_out[b0 + i, k, 0, 0],
                                           dyblk + k * LD + <Py_ssize_t> i * P, P)
                            else:
                                memcpy(dyblk + k * LD + <Py_ssize_t> i * P, &dy[b0 + i, k, 0, 0],
                                       <size_t> P * sizeof(floating))
                    dyn = dyblk
                else:
                    dyn = &dy[b0, 0, 0, 0]
                for g in range(G):
                    if direct:
                        memcpy(cols + g * BLK, &x[b0, g * Cg, 0, 0],
                               <size_t> CgKK * P * sizeof(floating))
                    else:
                        for i in range(nb):
                            _im2col(&x[b0 + i, g * Cg, 0, 0], cols + g * BLK + <Py_ssize_t> i * P,
                                    LD, Cg, H, W, kh, kw, sh, sw, pt, pl, OH, OW, dil_h, dil_w)
                    # partial [dW_g | db_g] (Kg, CgKK + 1) (+)= dY_g (Kg, nb*P) @ [cols_g; 1]^T
                    if floating is float and CgKK1 <= OWN_WGRAD_MAX_COLS:
                        cnn_wino_wgrad_f(dyn + g * Kg * LD, LD, Kg, cols + g * BLK, LD, CgKK1,
                                         <Py_ssize_t> nb * P,
                                         part + chunk * PSZ + <Py_ssize_t> g * Kg * CgKK1,
                                         b0 != n0)
                    else:
                        _gemm(False, True, Kg, CgKK1, nb * P, 1, dyn + g * Kg * LD, <int> LD,
                              cols + g * BLK, <int> LD, 0 if b0 == n0 else 1,
                              part + chunk * PSZ + <Py_ssize_t> g * Kg * CgKK1, CgKK1)
                if need_dx:
                    dxn = &dx[b0, 0, 0, 0]
                    for g in range(G):
                        # dcols_g (CgKK, nb*P) = W_g^T (CgKK, Kg) @ dY_g (Kg, nb*P)
                        _gemm(True, False, CgKK, nb * P, Kg, 1, wptr + <Py_ssize_t> g * Kg * CgKK,
                              CgKK, dyn + g * Kg * LD, <int> LD, 0,
                              (dxn if direct else dcols) + g * CgKK * LD, <int> LD)
                    if not direct:
                        # the groups' blocks lie in channel order: one col2im per image
                        for i in range(nb):
                            _col2im(dcols + <Py_ssize_t> i * P, LD, &dx[b0 + i, 0, 0, 0], work,
                                    C, H, W, kh, kw, sh, sw, pt, pl, OH, OW, dil_h, dil_w)

    # Fixed-order reduction of the chunk partials: element-parallel, each element summed
    # over chunks 0, 1, 2, ... so the result never depends on the schedule.
    for e in prange(PSZ, nogil=True, schedule='static', num_threads=num_threads):
        acc = part[e]
        for chunk in range(1, n_chunks):
            acc = acc + part[chunk * PSZ + e]
        k = <int> (e // CgKK1)
        j = <int> (e % CgKK1)
        if j < CgKK:
            dwptr[<Py_ssize_t> k * CgKK + j] = acc
        elif need_db:
            db[k] = acc


# ----------------------------------------------------------------------------- Winograd

cdef enum:
    REDUCE_SLICE = 2048


cdef void _add_rows(floating *part, Py_ssize_t stride, int n_rows, Py_ssize_t lo,
                    Py_ssize_t hi) noexcept nogil:
    """part[lo:hi] += part[r*stride + lo : r*stride + hi] for r = 1, 2, ..., n_rows - 1, in order."""
    cdef int r
    cdef Py_ssize_t i
    cdef floating *src
    for r in range(1, n_rows):
        src = part + r * stride
        for i in range(lo, hi):
            part[i] += src[i]


cdef void _wino_conv(const floating *x, const floating *mask, const floating *U,
                     const floating *bias, bint relu, floating *y,
                     int N, int Cin, int H, int W, int Kout, int OH, int OW, int pt, int pl,
                     floating[:, ::1] scratch, int num_threads) noexcept nogil:
    """y (N, Kout, OH, OW) = act(conv3x3(x (N, Cin, H, W) [masked], stride 1) + bias) by Winograd.

    ``U`` holds the transformed weights (16, Kout, Cin). ``scratch`` has a row per thread of
    ``_wino_scratch_size`` elements. Blocks of ``_wino_group`` images are handed out
    dynamically; a block's arithmetic does not depend on which thread runs it.
    """
    cdef int tpi = <int> CNN_WINO_TILES((OH + 1) // 2, (OW + 1) // 2)
    cdef int G = _wino_group(N, tpi, Cin)
    cdef int n_blocks = (N + G - 1) // G
    cdef Py_ssize_t pad_size, v_size
    cdef Py_ssize_t in_img = <Py_ssize_t> Cin * H * W, out_img = <Py_ssize_t> Kout * OH * OW
    cdef int blk, n0
    _wino_block_sizes(N, Cin, Kout, OH, OW, &pad_size, &v_size)
    with parallel(num_threads=num_threads):
        for blk in prange(n_blocks, schedule='dynamic'):
            n0 = blk * G
            _wino_block(x + n0 * in_img, mask + n0 * in_img if mask != NULL else NULL, U,
                        bias, relu, y + n0 * out_img, min(N, n0 + G) - n0, Cin, H, W, Kout,
                        OH, OW, pt, pl, &scratch[omp_get_thread_num(), 0], pad_size, v_size,
                        False, 0, Kout, False)


cdef Py_ssize_t _wino_scratch_size(int N, int Cin, int Kout, int OH, int OW):
    """Elements of one thread's Winograd scratch (see ``_wino_block_sizes``)."""
    cdef Py_ssize_t pad_size, v_size
    return _wino_block_sizes(N, Cin, Kout, OH, OW, &pad_size, &v_size)


def conv2d_forward_winograd(const floating[:, :, :, ::1] x,   # IN  (N, C, H, W)
                            const floating[:, :, :, ::1] w,   # IN  (K, C, 3, 3)
                            const floating[::1] b,            # IN  (K,) or None
                            floating[:, :, :, ::1] y,         # OUT (N, K, OH, OW)
                            int pt, int pl, bint relu, int num_threads):
    """``conv2d_forward`` for a 3x3 kernel at stride 1, by Winograd F(2x2, 3x3).

    Same contract as ``conv2d_forward`` with ``sh = sw = 1``; needs ``0 <= pt, pl <= 2``.
    2.25x fewer multiplies than im2col, at the price of transforms and float rounding a few
    times the direct sum's (the transforms add and subtract up to 4x4 inputs).
    """
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int K = w.shape[0], OH = y.shape[2], OW = y.shape[3]
    cdef floating[:, :, ::1] U
    cdef floating[:, ::1] scratch
    cdef const floating *bptr = &b[0] if b is not None else NULL
    if N == 0 or K == 0 or OH == 0 or OW == 0:
        return
    num_threads = max(1, min(num_threads, N))
    U = np.empty((16, K, C), dtype=_dtype(x))
    scratch = aligned_rows(num_threads, _wino_scratch_size(N, C, K, OH, OW), _dtype(x))
    with nogil:
        _wino_weights(&w[0, 0, 0, 0], &U[0, 0, 0], K, C, False)
        _wino_conv(&x[0, 0, 0, 0], NULL, &U[0, 0, 0], bptr, relu, &y[0, 0, 0, 0],
                   N, C, H, W, K, OH, OW, pt, pl, scratch, num_threads)


def conv2d_input_grad_winograd(const floating[:, :, :, ::1] dy,        # IN  (N, K, OH, OW)
                               const floating[:, :, :, ::1] w,         # IN  (K, C, 3, 3)
                               const floating[:, :, :, ::1] relu_out,  # IN  (N, K, OH, OW) or None
                               floating[:, :, :, ::1] dx,              # OUT (N, C, H, W)
                               int pt, int pl, int num_threads):
    """dx of a 3x3, stride-1 conv with top/left padding (pt, pl), by Winograd F(2x2, 3x3).

    ``dx[n, c, h, v] = sum_{k, i, j} g[n, k, h + pt - i, v + pl - j] * w[k, c, i, j]`` with
    ``g = dy`` (masked by ``relu_out > 0`` when given) and out-of-range terms zero: a 3x3
    cross-correlation of ``g`` with the flipped, transposed kernel and padding
    ``(2 - pt, 2 - pl)``. Needs ``0 <= pt, pl <= 2``.
    """
    cdef int N = dy.shape[0], K = dy.shape[1], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef int OH = dy.shape[2], OW = dy.shape[3]
    cdef floating[:, :, ::1] U
    cdef floating[:, ::1] scratch
    cdef const floating *mask = &relu_out[0, 0, 0, 0] if relu_out is not None else NULL
    if N == 0 or C == 0 or H == 0 or W == 0:
        return
    if K == 0 or OH == 0 or OW == 0:
        memset(&dx[0, 0, 0, 0], 0, <Py_ssize_t> N * C * H * W * sizeof(floating))
        return
    num_threads = max(1, min(num_threads, N))
    U = np.empty((16, C, K), dtype=_dtype(dy))
    scratch = aligned_rows(num_threads, _wino_scratch_size(N, K, C, H, W), _dtype(dy))
    with nogil:
        _wino_weights(&w[0, 0, 0, 0], &U[0, 0, 0], C, K, True)
        _wino_conv(&dy[0, 0, 0, 0], mask, &U[0, 0, 0], NULL, False, &dx[0, 0, 0, 0],
                   N, K, OH, OW, C, H, W, 2 - pt, 2 - pl, scratch, num_threads)


def conv2d_weight_grad_winograd(const floating[:, :, :, ::1] dy,        # IN  (N, K, OH, OW)
                                const floating[:, :, :, ::1] x,         # IN  (N, C, H, W)
                                const floating[:, :, :, ::1] relu_out,  # IN  (N, K, OH, OW) or None
                                floating[:, :, :, ::1] dw,              # OUT (K, C, 3, 3)
                                floating[::1] db,                       # OUT (K,) or None
                                int pt, int pl, int num_threads):
    """dw (and db) of a 3x3, stride-1 conv with top/left padding (pt, pl), by Winograd.

    ``dw = G^T [ sum over images and 2x2 output tiles of (A g A^T) (.) (B^T d B) ] G`` with
    ``g`` the tile of ``dy`` (masked by ``relu_out > 0`` when given) and ``d`` the 4x4 input
    tile: 16 GEMMs ``(K, T) @ (T, C + 1)`` per block of images, the extra column a row of ones
    whose sums give ``db`` (float32 up to ``OWN_WGRAD_MAX_COLS`` columns: cnn's own kernel,
    ``_wino_wgrad.h``, which reads both operands in place where BLAS packed them on every call;
    else BLAS). Images are split into ``N_CHUNKS`` fixed chunks; each chunk's partial sums are
    private and added in chunk order, so the result does not depend on the thread count (as in
    ``conv2d_backward``). Needs ``0 <= pt, pl <= 2``.
    """
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int K = dy.shape[1], OH = dy.shape[2], OW = dy.shape[3]
    cdef int th = (OH + 1) // 2, tw = (OW + 1) // 2
    cdef int tpi = <int> CNN_WINO_TILES(th, tw)
    cdef int G = _wino_group(N, tpi, 0)
    cdef int C1 = C + 1
    cdef Py_ssize_t T_max = <Py_ssize_t> G * tpi
    cdef Py_ssize_t MW = 16 * <Py_ssize_t> K * C1
    cdef Py_ssize_t pad_size = _round16(max(CNN_WINO_PAD_SIZE(th, tw),
                                                 CNN_WINO_GRAD_PAD_SIZE(th, tw, OW)))
    cdef Py_ssize_t v_size = 16 * <Py_ssize_t> C1 * _round16(T_max)   # rows of LD <= this
    cdef Py_ssize_t in_img = <Py_ssize_t> C * H * W, out_img = <Py_ssize_t> K * OH * OW
    cdef const floating *mask = &relu_out[0, 0, 0, 0] if relu_out is not None else NULL
    cdef bint need_db = db is not None
    cdef int n_chunks, chunk, n0, n1, b0, b1, n, e, T, j
    cdef Py_ssize_t LD
    cdef Py_ssize_t i
    cdef floating[:, ::1] partials, scratch
    cdef floating *part
    cdef floating *pad
    cdef floating *V
    cdef floating *D
    cdef const floating *xp = &x[0, 0, 0, 0]
    cdef const floating *dyp = &dy[0, 0, 0, 0]
    if N == 0 or OH == 0 or OW == 0:
        memset(&dw[0, 0, 0, 0], 0, <Py_ssize_t> K * C * 9 * sizeof(floating))
        if need_db and K > 0:
            memset(&db[0], 0, K * sizeof(floating))
        return
    n_chunks = min(N, N_CHUNKS)
    partials = np.empty((n_chunks, MW), dtype=_dtype(x))
    part = &partials[0, 0]
    num_threads = max(1, min(num_threads, n_chunks))
    scratch = aligned_rows(num_threads, pad_size + v_size + 16 * <Py_ssize_t> K * _round16(T_max),
                           _dtype(x))
    pad = V = D = NULL
    with nogil, parallel(num_threads=num_threads):
        pad = &scratch[omp_get_thread_num(), 0]
        V = pad + pad_size
        D = V + v_size
        for chunk in prange(n_chunks, schedule='dynamic'):
            n0 = <int> ((<long long> N * chunk) // n_chunks)
            n1 = <int> ((<long long> N * (chunk + 1)) // n_chunks)
            b0 = n0
            while b0 < n1:
                b1 = min(n1, b0 + G)
                T = (b1 - b0) * tpi
                LD = _round16(T)   # rows of V and D start on 64-byte lines
                for n in range(b0, b1):
                    _wino_input(xp + n * in_img, NULL, pad, V, C, H, W, pt, pl, th, tw, LD,
                                <Py_ssize_t> C1 * LD, <Py_ssize_t> (n - b0) * tpi)
                    _wino_grad(dyp + n * out_img, mask + n * out_img if mask != NULL else NULL,
                               pad, D, K, OH, OW, th, tw, LD, <Py_ssize_t> (n - b0) * tpi)
                for e in range(16):
                    # the row of ones (channel C of V) makes column C of Mw the sums of D
                    for i in range(T):
                        V[(<Py_ssize_t> e * C1 + C) * LD + i] = 1
                    # Mw[e] (K, C + 1) (+)= D[e] (K, T) @ V[e]^T (T, C + 1)
                    if floating is float and C1 <= OWN_WGRAD_MAX_COLS:
                        cnn_wino_wgrad_f(D + <Py_ssize_t> e * K * LD, LD, K,
                                         V + <Py_ssize_t> e * C1 * LD, LD, C1, T,
                                         part + chunk * MW + <Py_ssize_t> e * K * C1,
                                         b0 != n0)
                    else:
                        _gemm(False, True, K, C1, T, 1, D + <Py_ssize_t> e * K * LD, <int> LD,
                              V + <Py_ssize_t> e * C1 * LD, <int> LD, 0 if b0 == n0 else 1,
                              part + chunk * MW + <Py_ssize_t> e * K * C1, C1)
                b0 = b1

    # Fixed-order reduction of the chunk partials into chunk 0's row (each element summed over
    # chunks 0, 1, 2, ...), in slices of REDUCE_SLICE elements so the inner loop is unit-stride
    # and vectorises; then the inverse transform.
    for j in prange((MW + REDUCE_SLICE - 1) // REDUCE_SLICE, nogil=True, schedule='static',
                    num_threads=num_threads):
        _add_rows(part, MW, n_chunks, <Py_ssize_t> j * REDUCE_SLICE,
                  min(MW, <Py_ssize_t> (j + 1) * REDUCE_SLICE))
    with nogil:
        _wino_weights_grad(part, &dw[0, 0, 0, 0], &db[0] if need_db else NULL, K, C, C1)


# ----------------------------------------------------------------------- direct, one channel

def conv2d_forward_direct_c1(const floating[:, :, :, ::1] x,   # IN  (N, 1, H, W)
                             const floating[:, :, :, ::1] w,   # IN  (K, 1, 3, 3)
                             const floating[::1] b,            # IN  (K,) or None
                             floating[:, :, :, ::1] y,         # OUT (N, K, OH, OW)
                             int pt, int pl, bint relu, int num_threads):
    """``conv2d_forward`` for one input channel, a 3x3 kernel and stride 1, computed directly.

    Same contract as ``conv2d_forward`` with ``C = 1``, ``sh = sw = 1``; any padding. Images
    are spread over threads; each image's arithmetic is the same whichever thread runs it.
    """
    cdef int N = x.shape[0], H = x.shape[2], W = x.shape[3]
    cdef int K = w.shape[0], OH = y.shape[2], OW = y.shape[3]
    cdef Py_ssize_t in_img = <Py_ssize_t> H * W, out_img = <Py_ssize_t> K * OH * OW
    cdef Py_ssize_t ssize = CNN_DIRECT_SCRATCH(OH, OW)
    cdef const floating *bptr = &b[0] if b is not None else NULL
    cdef const floating *xptr
    cdef const floating *wptr
    cdef floating *yptr
    cdef floating *sp
    cdef floating[:, ::1] scratch
    cdef int n
    if N == 0 or K == 0 or OH == 0 or OW == 0:
        return
    num_threads = max(1, min(num_threads, N))
    scratch = aligned_rows(num_threads, ssize, _dtype(x))
    xptr = &x[0, 0, 0, 0]
    wptr = &w[0, 0, 0, 0]
    yptr = &y[0, 0, 0, 0]
    sp = NULL
    with nogil, parallel(num_threads=num_threads):
        sp = &scratch[omp_get_thread_num(), 0]
        for n in prange(N, schedule='dynamic'):
            if floating is float:
                cnn_direct3x3_c1_f(xptr + n * in_img, wptr, bptr, relu, yptr + n * out_img,
                                   K, H, W, pt, pl, OH, OW, sp)
            else:
                cnn_direct3x3_c1_d(xptr + n * in_img, wptr, bptr, relu, yptr + n * out_img,
                                   K, H, W, pt, pl, OH, OW, sp)
