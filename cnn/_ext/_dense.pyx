"""Dense (fully connected) kernels: row-split GEMMs on OpenMP threads.

    x (N, I)   w (O, I)   b (O,)   y (N, O) = act(x @ w.T + b)

The outputs are cut into blocks of a fixed number of columns or rows (output units for
``y``, ``dw`` and ``db``; input features for ``dx``), one single-threaded GEMM call per
block, the blocks shared out among cnn's OpenMP threads. Blocking over features rather than
batch rows means each call packs only its own slice of the weights. So the work stays in one thread pool (no
second BLAS pool competing for the cores), and since the blocks do not depend on the
thread count (BLAS's rounding does depend on the shape it is given), neither do the
results: bit-identical for any number of threads. A batch of one row (the latency case)
takes GEMV instead of GEMM for ``y`` and ``dx``: a GEMM packs its whole slice of the
weights on every call, which at one row costs several times the product (see
:func:`cnn._ext._blas._gemv`); the choice depends on N alone, so it too is the same at
every thread count.
Validation lives in :mod:`cnn.functional`.
"""
from cython cimport floating
from cython.parallel cimport prange

from cnn._ext._blas cimport _gemm, _gemv

# A dimension of n units (or features) is cut into at most MAX_BLOCKS blocks of at least
# MIN_BLOCK: a function of the shape alone, never of the thread count (see above). Few,
# large blocks keep each GEMM efficient; several let two or four threads share the work.
cdef enum:
    MIN_BLOCK = 64
    MAX_BLOCKS = 4
    BLOCK = 64  # batch rows per ReLU-mask block


cdef inline Py_ssize_t _block(Py_ssize_t n) noexcept nogil:
    """Block length for a dimension of n."""
    cdef Py_ssize_t b = (n + MAX_BLOCKS - 1) // MAX_BLOCKS
    return b if b > MIN_BLOCK else MIN_BLOCK


cdef extern from *:
    """
    /* out = g where a > 0 else 0; g loaded unconditionally so gcc emits a blend. */
    #define CNN_DENSE_MASK(NAME, T)                                                    \\
    static void NAME(const T *restrict g, const T *restrict a, T *restrict out,        \\
                     Py_ssize_t n) {                                                   \\
        for (Py_ssize_t i = 0; i < n; i++) { T gi = g[i]; out[i] = a[i] > 0 ? gi : 0; } \\
    }
    CNN_DENSE_MASK(cnn_dense_mask_f, float)
    CNN_DENSE_MASK(cnn_dense_mask_d, double)
    """
    void cnn_dense_mask_f(const float *g, const float *a, float *out, Py_ssize_t n) noexcept nogil
    void cnn_dense_mask_d(const double *g, const double *a, double *out, Py_ssize_t n) noexcept nogil


cdef inline void _mask(const floating *g, const floating *a, floating *out, Py_ssize_t n) noexcept nogil:
    if floating is float:
        cnn_dense_mask_f(g, a, out, n)
    else:
        cnn_dense_mask_d(g, a, out, n)


def dense_forward(const floating[:, ::1] x,   # IN  (N, I)
                  const floating[:, ::1] w,   # IN  (O, I)
                  const floating[::1] b,      # IN  (O,) or None
                  floating[:, ::1] y,         # OUT (N, O)
                  bint relu, int num_threads):
    """y = act(x @ w.T + b); blocks of output units across threads."""
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], O = w.shape[0]
    cdef Py_ssize_t t, o0, o1, n, o, ob = _block(O), blocks = (O + ob - 1) // ob
    cdef floating v
    cdef bint has_bias = b is not None
    if N == 0 or O == 0:
        return
    num_threads = max(1, min(num_threads, blocks))
    for t in prange(blocks, nogil=True, schedule='dynamic', num_threads=num_threads):
        o0 = t * ob
        o1 = min(O, o0 + ob)
        # y[:, o0:o1] = x @ w[o0:o1].T
        if N == 1:
            _gemv(False, <int> (o1 - o0), <int> I, 1, &w[o0, 0], <int> I, &x[0, 0], 0, &y[0, o0])
        else:
            _gemm(False, True, <int> N, <int> (o1 - o0), <int> I, 1, &x[0, 0], <int> I,
                  &w[o0, 0], <int> I, 0, &y[0, o0], <int> O)
        if has_bias or relu:
            for n in range(N):
                for o in range(o0, o1):
                    v = y[n, o] + (b[o] if has_bias else 0)
                    y[n, o] = (0 if v <= 0 else v) if relu else v  # NaN stays NaN


def dense_backward(const floating[:, ::1] dy,        # IN  (N, O)
                   const floating[:, ::1] x,         # IN  (N, I)
                   const floating[:, ::1] w,         # IN  (O, I)
                   floating[:, ::1] dx,              # OUT (N, I) or None
                   floating[:, ::1] dw,              # OUT (O, I)
                   floating[::1] db,                 # OUT (O,) or None
                   const floating[:, ::1] relu_out,  # IN  (N, O) or None
                   floating[:, ::1] masked,          # scratch (N, O), needed with relu_out
                   int num_threads):
    """dx = g @ w, dw = g.T @ x, db = sum_n g[n] with g = dy (masked by relu_out > 0 if given).

    dw and db are sums over the batch (fold 1/N into dy for the mean).
    """
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], O = w.shape[0]
    cdef Py_ssize_t t, n0, n1, o0, o1, i0, i1, n, o, ob, ib, row_blocks, unit_blocks, feature_blocks, all_blocks
    cdef const floating *g = &dy[0, 0] if N > 0 and O > 0 else NULL
    cdef bint need_dx = dx is not None
    cdef bint need_db = db is not None
    if O == 0:
        return
    if N == 0:
        dw[:, :] = 0
        if need_db:
            db[:] = 0
        return
    row_blocks = (N + BLOCK - 1) // BLOCK
    ob = _block(O)
    ib = _block(I)
    unit_blocks = (O + ob - 1) // ob
    feature_blocks = (I + ib - 1) // ib if need_dx else 0
    all_blocks = max(unit_blocks, feature_blocks)
    num_threads = max(1, min(num_threads, max(row_blocks, all_blocks)))
    if relu_out is not None:
        for t in prange(row_blocks, nogil=True, schedule='static', num_threads=num_threads):
            n0 = t * BLOCK
            n1 = min(N, n0 + BLOCK)
            _mask(&dy[n0, 0], &relu_out[n0, 0], &masked[n0, 0], (n1 - n0) * O)
        g = &masked[0, 0]
    for t in prange(all_blocks, nogil=True, schedule='dynamic', num_threads=num_threads):
        i0 = t * ib
        i1 = min(I, i0 + ib)
        if need_dx and i1 > i0:
            # dx[:, i0:i1] = g @ w[:, i0:i1]
            if N == 1:
                _gemv(True, <int> O, <int> (i1 - i0), 1, &w[0, i0], <int> I, g, 0, &dx[0, i0])
            else:
                _gemm(False, False, <int> N, <int> (i1 - i0), <int> O, 1, g, <int> O,
                      &w[0, i0], <int> I, 0, &dx[0, i0], <int> I)
        o0 = t * ob
        o1 = min(O, o0 + ob)
        if o1 > o0:
            # dw[o0:o1] = g[:, o0:o1].T @ x
            _gemm(True, False, <int> (o1 - o0), <int> I, <int> N, 1, g + o0, <int> O,
                  &x[0, 0], <int> I, 0, &dw[o0, 0], <int> I)
            if need_db:
                for o in range(o0, o1):
                    db[o] = 0
                for n in range(N):
                    for o in range(o0, o1):
                        db[o] += g[n * O + o]
