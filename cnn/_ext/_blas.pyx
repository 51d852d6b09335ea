"""Row-major GEMM on top of SciPy's column-major ``cython_blas`` (no GIL).

``C = alpha * op(A) @ op(B) + beta * C`` with every matrix row-major. A row-major
matrix read as column-major is its transpose, so we ask BLAS for
``C^T = op(B)^T @ op(A)^T``: swap the operands and ``m``/``n``.
The pointers are cast away from ``const`` because scipy's pxd lacks it (scipy#14262).
"""
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef void _gemm(bint trans_a, bint trans_b, int m, int n, int k,
                floating alpha, const floating *a, int lda,
                const floating *b, int ldb,
                floating beta, floating *c, int ldc) noexcept nogil:
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'T' if trans_a else b'N'
    if floating is float:
        sgemm(&ta, &tb, &n, &m, &k, &alpha, <float *> b, &ldb, <float *> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&ta, &tb, &n, &m, &k, &alpha, <double *> b, &ldb, <double *> a, &lda,
              &beta, c, &ldc)


def gemm_memview(bint trans_a, bint trans_b, double alpha,
                 const floating[:, ::1] a,  # IN
                 const floating[:, ::1] b,  # IN
                 double beta,
                 floating[:, ::1] c):       # IN/OUT
    """Test door: ``c = alpha * op(a) @ op(b) + beta * c`` on C-contiguous 2-D arrays.

    Shapes are checked here; this is for tests, not the hot path.
    """
    cdef int m = a.shape[1] if trans_a else a.shape[0]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    cdef int kb = b.shape[1] if trans_b else b.shape[0]
    cdef int n = b.shape[0] if trans_b else b.shape[1]
    if k != kb or c.shape[0] != m or c.shape[1] != n:
        raise ValueError(
            f"gemm shapes do not agree: op(a) {m}x{k}, op(b) {kb}x{n}, c {c.shape[0]}x{c.shape[1]}")
    if k == 0:
        raise ValueError("gemm needs an inner dimension k >= 1")
    if m == 0 or n == 0:
        return
    with nogil:
        _gemm(trans_a, trans_b, m, n, k, <floating> alpha, &a[0, 0], a.shape[1],
              &b[0, 0], b.shape[1], <floating> beta, &c[0, 0], c.shape[1])
