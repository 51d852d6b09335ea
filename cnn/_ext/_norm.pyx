"""Batch-normalisation kernels, OpenMP over the channels.

Layout (C-contiguous): x, y, dy, dx are ``(N, C, S)``: a conv batch (N, C, H, W) seen with
S = H*W, or a dense batch (N, F) with C = F and S = 1. Statistics are per channel, over the
M = N*S values of that channel.

Each channel's sums are computed by one thread, in float64 whatever the data type, over
CNN_BN_LANES (8) fixed lanes and their tail lanes, in an order set by the shapes alone (see
``_norm.h``), so every result depends on the channel alone: bit-identical for any thread count
and any kernel clone. Means and variances are two-pass (mean first, then the sum of squared
deviations), which does not cancel the way E[x^2] - E[x]^2 does.
Validation lives in :mod:`cnn.functional`; these kernels trust their arguments.
"""
from libc.math cimport sqrt

from cython cimport floating
from cython.parallel cimport prange


cdef extern from "_norm.h":
    int cnn_kernel_isa() noexcept nogil
    void cnn_bn_stats_f(const float *x, Py_ssize_t N, Py_ssize_t S, Py_ssize_t ld,
                        double *mean, double *var) noexcept nogil
    void cnn_bn_stats_d(const double *x, Py_ssize_t N, Py_ssize_t S, Py_ssize_t ld,
                        double *mean, double *var) noexcept nogil
    void cnn_bn_normalize_f(const float *x, float *y, Py_ssize_t N, Py_ssize_t S, Py_ssize_t ld,
                            double m, double inv, double g, double b) noexcept nogil
    void cnn_bn_normalize_d(const double *x, double *y, Py_ssize_t N, Py_ssize_t S,
                            Py_ssize_t ld, double m, double inv, double g,
                            double b) noexcept nogil
    void cnn_bn_grad_sums_f(const float *dy, const float *x, Py_ssize_t N, Py_ssize_t S,
                            Py_ssize_t ld, double m, double inv, double *sdy,
                            double *sdyx) noexcept nogil
    void cnn_bn_grad_sums_d(const double *dy, const double *x, Py_ssize_t N, Py_ssize_t S,
                            Py_ssize_t ld, double m, double inv, double *sdy,
                            double *sdyx) noexcept nogil
    void cnn_bn_input_grad_f(const float *dy, const float *x, float *dx, Py_ssize_t N,
                             Py_ssize_t S, Py_ssize_t ld, double m, double inv, double gi,
                             double mdy, double mdyx) noexcept nogil
    void cnn_bn_input_grad_d(const double *dy, const double *x, double *dx, Py_ssize_t N,
                             Py_ssize_t S, Py_ssize_t ld, double m, double inv, double gi,
                             double mdy, double mdyx) noexcept nogil
    void cnn_bn_normalize_relu_f(const float *x, float *y, Py_ssize_t N, Py_ssize_t S,
                                 Py_ssize_t ld, double m, double inv, double g,
                                 double b) noexcept nogil
    void cnn_bn_normalize_relu_d(const double *x, double *y, Py_ssize_t N, Py_ssize_t S,
                                 Py_ssize_t ld, double m, double inv, double g,
                                 double b) noexcept nogil
    void cnn_bn_grad_sums_masked_f(const float *dy, const float *r, const float *x,
                                   Py_ssize_t N, Py_ssize_t S, Py_ssize_t ld, double m,
                                   double inv, double *sdy, double *sdyx) noexcept nogil
    void cnn_bn_grad_sums_masked_d(const double *dy, const double *r, const double *x,
                                   Py_ssize_t N, Py_ssize_t S, Py_ssize_t ld, double m,
                                   double inv, double *sdy, double *sdyx) noexcept nogil
    void cnn_bn_input_grad_masked_f(const float *dy, const float *r, const float *x, float *dx,
                                    Py_ssize_t N, Py_ssize_t S, Py_ssize_t ld, double m,
                                    double inv, double gi, double mdy,
                                    double mdyx) noexcept nogil
    void cnn_bn_input_grad_masked_d(const double *dy, const double *r, const double *x,
                                    double *dx, Py_ssize_t N, Py_ssize_t S, Py_ssize_t ld,
                                    double m, double inv, double gi, double mdy,
                                    double mdyx) noexcept nogil

# Pick the kernel clones now, before any thread runs a kernel (see _simd.h).
cnn_kernel_isa()


cdef inline void _stats(const floating *x, Py_ssize_t N, Py_ssize_t S, Py_ssize_t ld,
                        double *mean, double *var) noexcept nogil:
    if floating is float:
        cnn_bn_stats_f(x, N, S, ld, mean, var)
    else:
        cnn_bn_stats_d(x, N, S, ld, mean, var)


cdef inline void _normalize(const floating *x, floating *y, Py_ssize_t N, Py_ssize_t S,
                            Py_ssize_t ld, double m, double inv, double g, double b,
                            bint relu) noexcept nogil:
    if floating is float:
        if relu:
            cnn_bn_normalize_relu_f(x, y, N, S, ld, m, inv, g, b)
        else:
            cnn_bn_normalize_f(x, y, N, S, ld, m, inv, g, b)
    else:
        if relu:
            cnn_bn_normalize_relu_d(x, y, N, S, ld, m, inv, g, b)
        else:
            cnn_bn_normalize_d(x, y, N, S, ld, m, inv, g, b)


cdef inline void _grad_sums(const floating *dy, const floating *r, const floating *x,
                            Py_ssize_t N, Py_ssize_t S, Py_ssize_t ld, double m, double inv,
                            double *sdy, double *sdyx) noexcept nogil:
    """The sums of dy, masked by ``r > 0`` when ``r`` (a fused ReLU's output) is not NULL."""
    if floating is float:
        if r != NULL:
            cnn_bn_grad_sums_masked_f(dy, r, x, N, S, ld, m, inv, sdy, sdyx)
        else:
            cnn_bn_grad_sums_f(dy, x, N, S, ld, m, inv, sdy, sdyx)
    else:
        if r != NULL:
            cnn_bn_grad_sums_masked_d(dy, r, x, N, S, ld, m, inv, sdy, sdyx)
        else:
            cnn_bn_grad_sums_d(dy, x, N, S, ld, m, inv, sdy, sdyx)


cdef inline void _input_grad(const floating *dy, const floating *r, const floating *x,
                             floating *dx, Py_ssize_t N, Py_ssize_t S, Py_ssize_t ld, double m,
                             double inv, double gi, double mdy, double mdyx) noexcept nogil:
    if floating is float:
        if r != NULL:
            cnn_bn_input_grad_masked_f(dy, r, x, dx, N, S, ld, m, inv, gi, mdy, mdyx)
        else:
            cnn_bn_input_grad_f(dy, x, dx, N, S, ld, m, inv, gi, mdy, mdyx)
    else:
        if r != NULL:
            cnn_bn_input_grad_masked_d(dy, r, x, dx, N, S, ld, m, inv, gi, mdy, mdyx)
        else:
            cnn_bn_input_grad_d(dy, x, dx, N, S, ld, m, inv, gi, mdy, mdyx)


def batchnorm_forward_train(const floating[:, :, ::1] x,  # IN  (N, C, S)
                            const floating[::1] gamma,    # IN  (C,) or None (= 1)
                            const floating[::1] beta,     # IN  (C,) or None (= 0)
                            floating[:, :, ::1] y,        # OUT (N, C, S)
                            double[::1] mean,             # OUT (C,) batch mean
                            double[::1] var,              # OUT (C,) biased batch variance
                            double eps, int num_threads, bint relu=False):
    """Normalise with the batch's own statistics:
    ``y = gamma * (x - mean) / sqrt(var + eps) + beta``, var = sum((x - mean)^2) / M; with
    ``relu``, ``y = max(that, 0)`` in the same pass (the value rounded to the float type
    first: the bits of the ReLU kernel of ``_eltwise`` applied after)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], ld = C * S
    cdef Py_ssize_t c
    cdef double m, v, inv, g, b
    cdef bint has_gamma = gamma is not None, has_beta = beta is not None
    if C == 0 or N * S == 0:
        return
    for c in prange(C, nogil=True, schedule='static', num_threads=max(1, min(num_threads, C))):
        _stats(&x[0, c, 0], N, S, ld, &mean[c], &var[c])
        m = mean[c]
        v = var[c]
        inv = 1.0 / sqrt(v + eps)
        g = gamma[c] if has_gamma else 1.0
        b = beta[c] if has_beta else 0.0
        _normalize(&x[0, c, 0], &y[0, c, 0], N, S, ld, m, inv, g, b, relu)


def batchnorm_backward_train(const floating[:, :, ::1] dy,  # IN  (N, C, S)
                             const floating[:, :, ::1] x,   # IN  (N, C, S) forward input
                             const floating[::1] gamma,     # IN  (C,) or None (= 1)
                             const double[::1] mean,        # IN  (C,) from the forward
                             const double[::1] var,         # IN  (C,) from the forward
                             floating[:, :, ::1] dx,        # OUT (N, C, S) or None
                             floating[::1] dgamma,          # OUT (C,) or None
                             floating[::1] dbeta,           # OUT (C,) or None
                             double eps, int num_threads,
                             const floating[:, :, ::1] relu_out=None):  # IN (N, C, S) or None
    """Gradients of :func:`batchnorm_forward_train` (the statistics depend on x too):

    with xhat = (x - mean) / sqrt(var + eps), ``dbeta = sum(dy)``, ``dgamma = sum(dy * xhat)``
    and ``dx = gamma / sqrt(var + eps) * (dy - dbeta / M - xhat * dgamma / M)``.

    ``relu_out``, the output of a forward with ``relu``, masks dy first (dy where relu_out > 0,
    else 0: the ReLU's backward) inside both passes; the bits of masking dy beforehand.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], ld = C * S
    cdef Py_ssize_t c
    cdef double sdy, sdyx, inv, m, g, M = <double> (N * S)
    cdef bint has_gamma = gamma is not None, need_dx = dx is not None
    cdef bint need_dg = dgamma is not None, need_db = dbeta is not None
    cdef bint masked = relu_out is not None
    cdef const floating *r
    if C == 0:
        return
    if N * S == 0:
        for c in range(C):
            if need_db:
                dbeta[c] = 0
            if need_dg:
                dgamma[c] = 0
        return
    for c in prange(C, nogil=True, schedule='static', num_threads=max(1, min(num_threads, C))):
        m = mean[c]
        inv = 1.0 / sqrt(var[c] + eps)
        # assigned in the loop body, so each thread has its own (Cython's prange rule)
        sdy = 0
        sdyx = 0
        r = &relu_out[0, c, 0] if masked else NULL
        _grad_sums(&dy[0, c, 0], r, &x[0, c, 0], N, S, ld, m, inv, &sdy, &sdyx)
        if need_db:
            dbeta[c] = <floating> sdy
        if need_dg:
            dgamma[c] = <floating> sdyx
        if need_dx:
            g = (gamma[c] if has_gamma else 1.0) * inv
            _input_grad(&dy[0, c, 0], r, &x[0, c, 0], &dx[0, c, 0], N, S, ld, m, inv, g,
                        sdy / M, sdyx / M)


def channel_affine(const floating[:, :, ::1] x,  # IN  (N, C, S)
                   const double[::1] scale,      # IN  (C,)
                   const double[::1] shift,      # IN  (C,)
                   floating[:, :, ::1] y,        # OUT (N, C, S)
                   int num_threads, bint relu=False):
    """``y[n, c, s] = x[n, c, s] * scale[c] + shift[c]`` (in float64, rounded once): BN in
    evaluation; with ``relu``, ``max(y, 0)`` of that rounded value (-0.0 gives +0.0, NaN
    kept: the ReLU kernel's bits). Elementwise, so any split over threads gives the same bits."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t plane, c, s
    cdef double a, b
    cdef floating v
    if N * C == 0:
        return
    for plane in prange(N * C, nogil=True, schedule='static',
                        num_threads=max(1, min(num_threads, N * C))):
        c = plane % C
        a = scale[c]
        b = shift[c]
        if relu:
            for s in range(S):
                v = <floating> (x[plane // C, c, s] * a + b)
                y[plane // C, c, s] = 0 if v <= 0 else v
        else:
            for s in range(S):
                y[plane // C, c, s] = <floating> (x[plane // C, c, s] * a + b)

