"""Row-major GEMM and GEMV on top of SciPy's column-major ``cython_blas`` (no GIL).

``C = alpha * op(A) @ op(B) + beta * C`` with every matrix row-major. A row-major
matrix read as column-major is its transpose, so we ask BLAS for
``C^T = op(B)^T @ op(A)^T``: swap the operands and ``m``/``n``.
The pointers are cast away from ``const`` because scipy's pxd lacks it (scipy#14262).
"""
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv


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


cdef void _gemv(bint trans_a, int m, int n, floating alpha, const floating *a, int lda,
                const floating *x, floating beta, floating *y) noexcept nogil:
    """``y = alpha * op(A) @ x + beta * y`` with A row-major (m, n), rows ``lda`` apart, and
    x, y contiguous. For one row of inputs a GEMM packs all of A on every call (a Dense(128)
    on 3136 features: 1.6 MB, five times the product's own time at batch 1); GEMV streams it.
    """
    cdef char ta = b'N' if trans_a else b'T'  # row-major A read column-major is A^T
    cdef int one = 1
    if floating is float:
        sgemv(&ta, &n, &m, &alpha, <float *> a, &lda, <float *> x, &one, &beta, y, &one)
    else:
        dgemv(&ta, &n, &m, &alpha, <double *> a, &lda, <double *> x, &one, &beta, y, &one)


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


def gemv_memview(bint trans_a, double alpha,
                 const floating[:, ::1] a,  # IN  (m, n)
                 const floating[::1] x,     # IN  (n,) or (m,) with trans_a
                 double beta,
                 floating[::1] y):          # IN/OUT (m,) or (n,) with trans_a
    """Test door: ``y = alpha * op(a) @ x + beta * y`` on contiguous arrays; shapes checked."""
    cdef int m = a.shape[0], n = a.shape[1]
    if x.shape[0] != (m if trans_a else n) or y.shape[0] != (n if trans_a else m):
        raise ValueError(f"gemv shapes do not agree: a {m}x{n} (trans {bool(trans_a)}), "
                         f"x {x.shape[0]}, y {y.shape[0]}")
    if m == 0 or n == 0:
        raise ValueError("gemv needs a non-empty matrix")
    with nogil:
        _gemv(trans_a, m, n, <floating> alpha, &a[0, 0], n, &x[0], <floating> beta, &y[0])
