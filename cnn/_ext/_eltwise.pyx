"""Elementwise kernels of the layers between the convolutions: ReLU, the sum of two tensors
(the ``Add`` layer and the gradient sum where a graph tensor is read twice) and their fusion;
and the row softmax of the output layer.

Arrays are 1-D views of C-contiguous tensors of one float type, ``(n,)``. Work is cut into
items of ``CHUNK`` values, a count set by ``n`` alone, handed out to the threads dynamically
(when another process takes a core, the other thread carries on). Every output value depends
on its own index alone (see ``_eltwise.h``), so the bits never depend on the thread count or
on the kernel clone, and equal NumPy's ``np.maximum(z, 0)`` and ``np.add(a, b)`` (NaN + NaN:
the first operand's NaN, as NumPy's vector loops; its one-value loops may keep the second's).
Validation lives in the callers (:mod:`cnn._ops` is called with checked arrays only).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, expf


cdef extern from "_eltwise.h":
    int cnn_kernel_isa() noexcept nogil
    void cnn_relu_f(const float *z, float *out, Py_ssize_t n) noexcept nogil
    void cnn_relu_d(const double *z, double *out, Py_ssize_t n) noexcept nogil
    void cnn_add_f(const float *a, const float *b, float *out, Py_ssize_t n) noexcept nogil
    void cnn_add_d(const double *a, const double *b, double *out, Py_ssize_t n) noexcept nogil
    void cnn_add_into_f(float *acc, const float *b, Py_ssize_t n) noexcept nogil
    void cnn_add_into_d(double *acc, const double *b, Py_ssize_t n) noexcept nogil
    void cnn_add_relu_f(const float *a, const float *b, float *out, Py_ssize_t n) noexcept nogil
    void cnn_add_relu_d(const double *a, const double *b, double *out,
                        Py_ssize_t n) noexcept nogil

# Pick the kernel clones now, before any thread runs a kernel (see _simd.h).
cnn_kernel_isa()

# Values per work item (128 KiB of float32): items are fixed by the size alone.
cdef enum:
    CHUNK = 32768


cdef inline Py_ssize_t _items(Py_ssize_t n) noexcept nogil:
    return (n + CHUNK - 1) // CHUNK


cdef inline int _threads(int num_threads, Py_ssize_t items) noexcept nogil:
    return <int> max(1, min(<Py_ssize_t> num_threads, items))


def relu_forward(const floating[::1] z,   # IN  (n,)
                 floating[::1] out,       # OUT (n,); may not overlap z
                 int num_threads):
    """``out = max(z, 0)``, the bits of ``np.maximum(z, 0)``: -0.0 gives +0.0, NaN stays NaN
    (its payload and sign kept)."""
    cdef Py_ssize_t n = z.shape[0], items = _items(n), t, lo
    if n == 0:
        return
    for t in prange(items, nogil=True, schedule='dynamic',
                    num_threads=_threads(num_threads, items)):
        lo = t * CHUNK
        if floating is float:
            cnn_relu_f(&z[lo], &out[lo], min(<Py_ssize_t> CHUNK, n - lo))
        else:
            cnn_relu_d(&z[lo], &out[lo], min(<Py_ssize_t> CHUNK, n - lo))


def add(const floating[::1] a,   # IN  (n,)
        const floating[::1] b,   # IN  (n,)
        floating[::1] out,       # OUT (n,); may not overlap a or b
        int num_threads):
    """``out = a + b``, the bits of ``np.add(a, b)``."""
    cdef Py_ssize_t n = a.shape[0], items = _items(n), t, lo
    if n == 0:
        return
    for t in prange(items, nogil=True, schedule='dynamic',
                    num_threads=_threads(num_threads, items)):
        lo = t * CHUNK
        if floating is float:
            cnn_add_f(&a[lo], &b[lo], &out[lo], min(<Py_ssize_t> CHUNK, n - lo))
        else:
            cnn_add_d(&a[lo], &b[lo], &out[lo], min(<Py_ssize_t> CHUNK, n - lo))


def add_into(floating[::1] acc,      # IN/OUT (n,)
             const floating[::1] b,  # IN  (n,); may not overlap acc
             int num_threads):
    """``acc += b`` in place, the bits of ``np.add(acc, b)`` (NaN + NaN keeps ``acc``'s payload;
    NumPy's own ``+=`` keeps either, by array size)."""
    cdef Py_ssize_t n = acc.shape[0], items = _items(n), t, lo
    if n == 0:
        return
    for t in prange(items, nogil=True, schedule='dynamic',
                    num_threads=_threads(num_threads, items)):
        lo = t * CHUNK
        if floating is float:
            cnn_add_into_f(&acc[lo], &b[lo], min(<Py_ssize_t> CHUNK, n - lo))
        else:
            cnn_add_into_d(&acc[lo], &b[lo], min(<Py_ssize_t> CHUNK, n - lo))


def add_relu(const floating[::1] a,   # IN  (n,)
             const floating[::1] b,   # IN  (n,)
             floating[::1] out,       # OUT (n,); may not overlap a or b
             int num_threads):
    """``out = max(a + b, 0)``, the bits of ``np.maximum(np.add(a, b), 0)`` in one pass."""
    cdef Py_ssize_t n = a.shape[0], items = _items(n), t, lo
    if n == 0:
        return
    for t in prange(items, nogil=True, schedule='dynamic',
                    num_threads=_threads(num_threads, items)):
        lo = t * CHUNK
        if floating is float:
            cnn_add_relu_f(&a[lo], &b[lo], &out[lo], min(<Py_ssize_t> CHUNK, n - lo))
        else:
            cnn_add_relu_d(&a[lo], &b[lo], &out[lo], min(<Py_ssize_t> CHUNK, n - lo))


def softmax_rows(const floating[:, ::1] z,   # IN  (N, classes)
                 floating[:, ::1] out,       # OUT (N, classes), may be z itself
                 int num_threads):
    """out[n] = exp(z[n] - max z[n]) / sum exp(z[n] - max z[n]), row by row.

    One call in place of NumPy's five (max, subtract, exp, sum, divide; about 12 us on a
    (1, 10) batch, most of it call overhead, against a whole batch-1 predict of 0.15 ms). A NaN
    anywhere in a row makes the row NaN, as NumPy's; rows are independent, so the bits do not
    depend on the thread count (rows shared out over threads past 64K values).
    """
    cdef Py_ssize_t N = z.shape[0], C = z.shape[1], n, c
    cdef floating m, v, s
    if N == 0 or C == 0:
        return
    num_threads = max(1, min(num_threads, <int> (N * C // 65536) + 1, <int> N))
    for n in prange(N, nogil=True, schedule='static', num_threads=num_threads):
        m = z[n, 0]
        for c in range(1, C):
            v = z[n, c]
            if v > m or v != v:
                m = v
            if m != m:
                break
        s = 0
        for c in range(C):
            if floating is float:
                v = expf(z[n, c] - m)
            else:
                v = exp(z[n, c] - m)
            out[n, c] = v
            s = s + v
        for c in range(C):
            out[n, c] = out[n, c] / s
