"""Dense (fully connected) kernels: row-split GEMMs on OpenMP threads.

    x (N, I)   w (O, I)   b (O,)   y (N, O) = act(x @ w.T + b)

The outputs are cut into blocks of a fixed number of rows (batch rows for ``y`` and
``dx``, output units for ``dw`` and ``db``), one single-threaded GEMM call per block, the
blocks shared out among cnn's OpenMP threads. So the work stays in one thread pool (no
second BLAS pool competing for the cores), and since the blocks do not depend on the
thread count (BLAS's rounding does depend on the shape it is given), neither do the
results: bit-identical for any number of threads.
Validation lives in :mod:`cnn.functional`.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange

from cnn._ext._blas cimport _gemm

# Rows per GEMM call. Fixed, not derived from the thread count: see the module docstring.
cdef enum:
    BLOCK = 32


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
    """y = act(x @ w.T + b); batch rows split across threads."""
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], O = w.shape[0]
    cdef Py_ssize_t t, n0, n1, n, o, blocks = (N + BLOCK - 1) // BLOCK
    cdef floating v
    cdef bint has_bias = b is not None
    if N == 0 or O == 0:
        return
    num_threads = max(1, min(num_threads, blocks))
    for t in prange(blocks, nogil=True, schedule='dynamic', num_threads=num_threads):
        n0 = t * BLOCK
        n1 = min(N, n0 + BLOCK)
        if n1 > n0:
            _gemm(False, True, <int> (n1 - n0), <int> O, <int> I, 1, &x[n0, 0], <int> I,
                  &w[0, 0], <int> I, 0, &y[n0, 0], <int> O)
            if has_bias or relu:
                for n in range(n0, n1):
                    for o in range(O):
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
    cdef Py_ssize_t t, n0, n1, o0, o1, n, o, row_blocks, unit_blocks, all_blocks
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
    unit_blocks = (O + BLOCK - 1) // BLOCK
    num_threads = max(1, min(num_threads, max(row_blocks, unit_blocks)))
    if relu_out is not None:
        for t in prange(row_blocks, nogil=True, schedule='static', num_threads=num_threads):
            n0 = t * BLOCK
            n1 = min(N, n0 + BLOCK)
            _mask(&dy[n0, 0], &relu_out[n0, 0], &masked[n0, 0], (n1 - n0) * O)
        g = &masked[0, 0]
    all_blocks = max(row_blocks, unit_blocks)
    for t in prange(all_blocks, nogil=True, schedule='dynamic', num_threads=num_threads):
        n0 = t * BLOCK
        n1 = min(N, n0 + BLOCK)
        if need_dx and n1 > n0:
            _gemm(False, False, <int> (n1 - n0), <int> I, <int> O, 1, g + n0 * O, <int> O,
                  &w[0, 0], <int> I, 0, &dx[n0, 0], <int> I)
        o0 = t * BLOCK
        o1 = min(O, o0 + BLOCK)
        if o1 > o0:
            _gemm(True, False, <int> (o1 - o0), <int> I, <int> N, 1, g + o0, <int> O,
                  &x[0, 0], <int> I, 0, &dw[o0, 0], <int> I)
            if need_db:
                for o in range(o0, o1):
                    db[o] = 0
                for n in range(N):
                    for o in range(o0, o1):
                        db[o] += g[n * O + o]
