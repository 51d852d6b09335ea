"""The convolution backward of a training Conv2D -> MaxPool2D pair from the pooled gradient
(_pool_grad.h): dw, db and dx from the pooled cells' values and winners, without the scattered
(N, K, OH, OW) gradient, float32.

    g, arg (N, K, PH, PW), x (N, C, H, W), w (K, C, kh, kw) -> dw, db, dx

Validation lives in :mod:`cnn._ops` (which also decides when this path applies); these
kernels trust their shapes (and the caller checks w's finiteness) but check the argmax they
are given (out-of-range winners are skipped and counted) and the finiteness of x (a
non-finite value: nothing is written, the caller takes the dense backward).
"""
import numpy as np

from cython.parallel cimport prange
from libc.string cimport memset

from cnn._ext._openmp cimport omp_get_thread_num


cdef extern from "_simd.h":
    int cnn_kernel_isa() noexcept nogil

# Pick the kernel clones now, before any thread runs a kernel (see _simd.h).
cnn_kernel_isa()


cdef extern from "_pool_grad.h":
    int CNN_PG_BLOCK
    int CNN_PG_MAX_KW
    int cnn_pg_pack_f(const float *x, int C, int H, int W, int cb, int pt, int pl, int Hp,
                      int Wp, float *xt) noexcept nogil
    void cnn_pg_unpack_f(const float *dxt, int C, int H, int W, int cb, int pt, int pl, int Hp,
                         int Wp, float *dx) noexcept nogil
    Py_ssize_t cnn_pg_wgrad_f(const float *g, const Py_ssize_t *arg, int k0, int k1,
                              Py_ssize_t P, const float *xt, const Py_ssize_t *pos,
                              Py_ssize_t Q, Py_ssize_t rs, int kh, int kw, float *acc,
                              float *bias) noexcept nogil
    void cnn_pg_cols_f(const float *x, int C, int H, int W, int kh, int kw, int sh, int sw,
                       int pt, int pl, int OH, int OW, int CS, float *out) noexcept nogil
    Py_ssize_t cnn_pg_cols_wgrad_f(const float *g, const Py_ssize_t *arg, int k0, int k1,
                                   Py_ssize_t P, const float *cols, int CS, Py_ssize_t Q,
                                   float *acc, float *bias) noexcept nogil
    Py_ssize_t cnn_pg_dgrad_f(const float *g, const Py_ssize_t *arg, int K, Py_ssize_t P,
                              const float *wt, const Py_ssize_t *pos, Py_ssize_t Q,
                              Py_ssize_t rs, int kh, int kw, float *dxt) noexcept nogil


BLOCK = CNN_PG_BLOCK      # channels per block of the channels-last copies
MAX_KW = CNN_PG_MAX_KW    # widest kernel the kernels take


def padded_extent(int OH, int OW, int kh, int kw, int sh, int sw):
    """``(Hp, Wp)``: the padded plane every tap of every conv output falls in."""
    return (OH - 1) * sh + kh, (OW - 1) * sw + kw


def scratch_shapes(int N, int C, int OH, int OW, int kh, int kw, int sh, int sw, int threads):
    """The shapes of :func:`conv_pool_backward`'s two float32 scratch arrays: the input's
    channels-last copy ``(blocks * N, Hp * Wp * 32)`` and the per-thread input-gradient
    rows ``(threads, Hp * Wp * 32)``."""
    Hp, Wp = padded_extent(OH, OW, kh, kw, sh, sw)
    blocks = (C + CNN_PG_BLOCK - 1) // CNN_PG_BLOCK
    cell = Hp * Wp * CNN_PG_BLOCK
    return (blocks * N, cell), (threads, cell)


def conv_pool_backward(const float[:, :, :, ::1] g,          # IN  (N, K, PH, PW), ReLU-masked
                       const Py_ssize_t[:, :, :, ::1] arg,   # IN  (N, K, PH, PW), in (OH, OW)
                       const float[:, :, :, ::1] x,          # IN  (N, C, H, W)
                       const float[:, :, :, ::1] w,          # IN  (K, C, kh, kw)
                       float[:, :, :, ::1] dx,               # OUT (N, C, H, W) or None
                       float[:, :, :, ::1] dw,               # OUT (K, C, kh, kw)
                       float[::1] db,                        # OUT (K,) or None
                       int OH, int OW, int sh, int sw, int pt, int pl,
                       float[:, ::1] xt,                     # scratch (scratch_shapes)
                       float[:, ::1] rows,                   # scratch (scratch_shapes)
                       int num_threads):
    """dw (and db, dx) of a convolution whose pre-activation gradient is zero except at the
    winners of a max-pool over its (OH, OW) output: ``dz[n, k, arg[n, k, p]] += g[n, k, p]``.

    ``dw[k, c, i, j] = sum_{n, p} g[n, k, p] * x[n, c, oy * sh + i - pt, ox * sw + j - pl]``
    (``(oy, ox)`` the winner, out-of-range cells zero), ``db[k] = sum_{n, p} g[n, k, p]``,
    ``dx[n, c, oy * sh + i - pt, ox * sw + j - pl] += g[n, k, p] * w[k, c, i, j]``. Every
    sum in a fixed order (_pool_grad.h): the same bits for any thread count and kernel clone.

    Returns ``(finite, skipped)``: ``finite`` False if x holds a non-finite value, and then
    nothing is written; ``skipped`` the entries whose winner is outside the
    (OH, OW) plane (none, for the argmax of the pair's own forward).
    """
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int K = w.shape[0], kh = w.shape[2], kw = w.shape[3], T = kh * kw
    cdef Py_ssize_t P = <Py_ssize_t> g.shape[2] * g.shape[3], Q = <Py_ssize_t> OH * OW
    cdef int Hp = (OH - 1) * sh + kh, Wp = (OW - 1) * sw + kw
    cdef int blocks = (C + CNN_PG_BLOCK - 1) // CNN_PG_BLOCK
    cdef Py_ssize_t cell = <Py_ssize_t> Hp * Wp * CNN_PG_BLOCK, rs = <Py_ssize_t> Wp * CNN_PG_BLOCK
    cdef bint need_dx = dx is not None, need_db = db is not None
    cdef int threads = max(1, num_threads)
    cdef int parts = max(1, min(threads, K))  # filter ranges of the weight gradient
    cdef int item, n, cb, k, k0, k1, c, t, tid
    cdef Py_ssize_t q, bad = 0, skipped = 0
    cdef Py_ssize_t[::1] pos
    cdef float[:, :, :, ::1] acc, wt
    cdef float[::1] bias
    cdef float *dxt
    if N == 0 or K == 0:
        if need_dx and N:
            memset(&dx[0, 0, 0, 0], 0, sizeof(float) * <Py_ssize_t> N * C * H * W)
        if K:
            memset(&dw[0, 0, 0, 0], 0, sizeof(float) * <Py_ssize_t> K * C * T)
            if need_db:
                memset(&db[0], 0, sizeof(float) * K)
        return True, 0
    if kw > CNN_PG_MAX_KW:
        raise ValueError(f"conv_pool_backward takes kernels up to {CNN_PG_MAX_KW} wide, got {kw}")
    if xt.shape[0] < blocks * N or xt.shape[1] < cell or (
            need_dx and (rows.shape[0] < threads or rows.shape[1] < cell)):
        raise ValueError("conv_pool_backward: scratch smaller than scratch_shapes")

    for item in prange(blocks * N, nogil=True, schedule='static', num_threads=threads):
        cb = item // N
        n = item % N
        bad += cnn_pg_pack_f(&x[n, 0, 0, 0], C, H, W, cb, pt, pl, Hp, Wp, &xt[item, 0])
    if bad:
        return False, 0

    pos = np.empty(Q, dtype=np.intp)
    for q in range(Q):
        pos[q] = ((q // OW) * sh * <Py_ssize_t> Wp + (q % OW) * sw) * CNN_PG_BLOCK

    # dw: each item one channel block and one range of filters, over every image in order
    acc = np.zeros((blocks, K, T, CNN_PG_BLOCK), dtype=np.float32)
    bias = np.zeros(K, dtype=np.float32)
    for item in prange(blocks * parts, nogil=True, schedule='static', num_threads=threads):
        cb = item // parts
        k0 = (item % parts) * K // parts
        k1 = (item % parts + 1) * K // parts
        for n in range(N):
            skipped += cnn_pg_wgrad_f(&g[n, 0, 0, 0], &arg[n, 0, 0, 0], k0, k1, P,
                                      &xt[cb * N + n, 0], &pos[0], Q, rs, kh, kw,
                                      &acc[cb, 0, 0, 0], &bias[0] if cb == 0 else NULL)
    for k in range(K):
        for c in range(C):
            for t in range(T):
                dw[k, c, t // kw, t % kw] = acc[c // CNN_PG_BLOCK, k, t, c % CNN_PG_BLOCK]
    if need_db:
        db[:] = bias
    if not need_dx:
        return True, skipped // blocks

    # dx: each image one item, its channel blocks in a thread's row, unpacked into dx
    wt = np.zeros((blocks, K, T, CNN_PG_BLOCK), dtype=np.float32)
    for k in range(K):
        for c in range(C):
            for t in range(T):
                wt[c // CNN_PG_BLOCK, k, t, c % CNN_PG_BLOCK] = w[k, c, t // kw, t % kw]
    for n in prange(N, nogil=True, schedule='dynamic', num_threads=min(threads, N)):
        tid = omp_get_thread_num()
        dxt = &rows[tid, 0]
        for cb in range(blocks):
            memset(dxt, 0, sizeof(float) * cell)
            cnn_pg_dgrad_f(&g[n, 0, 0, 0], &arg[n, 0, 0, 0], K, P, &wt[cb, 0, 0, 0], &pos[0],
                           Q, rs, kh, kw, dxt)
            cnn_pg_unpack_f(dxt, C, H, W, cb, pt, pl, Hp, Wp, &dx[n, 0, 0, 0])
    return True, skipped // blocks


def column_size(int C, int kh, int kw):
    """Floats per column of :func:`conv_pool_column_backward`: C x kh x kw, rounded up to 16."""
    return (C * kh * kw + 15) // 16 * 16


def conv_pool_column_backward(const float[:, :, :, ::1] g,          # IN  (N, K, PH, PW)
                              const Py_ssize_t[:, :, :, ::1] arg,   # IN  (N, K, PH, PW)
                              const float[:, :, :, ::1] x,          # IN  (N, C, H, W)
                              float[:, :, :, ::1] dw,               # OUT (K, C, kh, kw)
                              float[::1] db,                        # OUT (K,) or None
                              int OH, int OW, int sh, int sw, int pt, int pl,
                              float[:, ::1] cols,                   # scratch (N, OH*OW*CS)
                              int num_threads):
    """dw (and db) as :func:`conv_pool_backward`, no dx, for few input channels
    (``column_size`` at most 64): from each winner's column of inputs (_pool_grad.h,
    cnn_pg_cols_wgrad). The same bits for any thread count and clone. Returns the entries
    skipped (a winner outside the (OH, OW) plane)."""
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int K = dw.shape[0], kh = dw.shape[2], kw = dw.shape[3]
    cdef Py_ssize_t P = <Py_ssize_t> g.shape[2] * g.shape[3], Q = <Py_ssize_t> OH * OW
    cdef int CS = column_size(C, kh, kw)
    cdef int threads = max(1, num_threads), parts = max(1, min(threads, K))
    cdef bint need_db = db is not None
    cdef int n, item, k0, k1, k, t
    cdef Py_ssize_t skipped = 0
    cdef float[:, ::1] acc
    cdef float[::1] bias
    if CS > 64:
        raise ValueError(f"conv_pool_column_backward takes columns up to 64 floats, got {CS}")
    if cols.shape[0] < N or cols.shape[1] < Q * CS:
        raise ValueError("conv_pool_column_backward: cols smaller than (N, OH * OW * CS)")
    if K == 0:
        return 0
    acc = np.zeros((K, CS), dtype=np.float32)
    bias = np.zeros(K, dtype=np.float32)
    if N > 0 and P > 0:
        for n in prange(N, nogil=True, schedule='static', num_threads=threads):
            cnn_pg_cols_f(&x[n, 0, 0, 0], C, H, W, kh, kw, sh, sw, pt, pl, OH, OW, CS,
                          &cols[n, 0])
        for item in prange(parts, nogil=True, schedule='static', num_threads=threads):
            k0 = item * K // parts
            k1 = (item + 1) * K // parts
            for n in range(N):
                skipped += cnn_pg_cols_wgrad_f(&g[n, 0, 0, 0], &arg[n, 0, 0, 0], k0, k1, P,
                                               &cols[n, 0], CS, Q, &acc[0, 0],
                                               &bias[0] if need_db else NULL)
    for k in range(K):
        for t in range(C * kh * kw):
            dw[k, t // (kh * kw), (t // kw) % kh, t % kw] = acc[k, t]
    if need_db:
        db[:] = bias
    return skipped
