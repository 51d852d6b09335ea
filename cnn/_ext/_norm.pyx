"""Batch-normalisation kernels, OpenMP over the channels.

Layout (C-contiguous): x, y, dy, dx are ``(N, C, S)``: a conv batch (N, C, H, W) seen with
S = H*W, or a dense batch (N, F) with C = F and S = 1. Statistics are per channel, over the
M = N*S values of that channel.

Each channel's sums are computed by one thread, serially in index order (n, then s) and in
float64 whatever the data type, so every result depends on the channel alone: bit-identical
for any thread count. Means and variances are two-pass (mean first, then the sum of squared
deviations), which does not cancel the way E[x^2] - E[x]^2 does.
Validation lives in :mod:`cnn.functional`; these kernels trust their arguments.
"""
from libc.math cimport sqrt

from cython cimport floating
from cython.parallel cimport prange


def batchnorm_forward_train(const floating[:, :, ::1] x,  # IN  (N, C, S)
                            const floating[::1] gamma,    # IN  (C,) or None (= 1)
                            const floating[::1] beta,     # IN  (C,) or None (= 0)
                            floating[:, :, ::1] y,        # OUT (N, C, S)
                            double[::1] mean,             # OUT (C,) batch mean
                            double[::1] var,              # OUT (C,) biased batch variance
                            double eps, int num_threads):
    """Normalise with the batch's own statistics:
    ``y = gamma * (x - mean) / sqrt(var + eps) + beta``, var = sum((x - mean)^2) / M."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t c, n, s
    cdef double acc, d, m, inv, g, b, M = <double> (N * S)
    cdef bint has_gamma = gamma is not None, has_beta = beta is not None
    if C == 0 or N * S == 0:
        return
    for c in prange(C, nogil=True, schedule='static', num_threads=max(1, min(num_threads, C))):
        acc = 0
        for n in range(N):
            for s in range(S):
                acc = acc + x[n, c, s]
        m = acc / M
        acc = 0
        for n in range(N):
            for s in range(S):
                d = x[n, c, s] - m
                acc = acc + d * d
        mean[c] = m
        var[c] = acc / M
        inv = 1.0 / sqrt(acc / M + eps)
        g = gamma[c] if has_gamma else 1.0
        b = beta[c] if has_beta else 0.0
        for n in range(N):
            for s in range(S):
                y[n, c, s] = <floating> ((x[n, c, s] - m) * inv * g + b)


def batchnorm_backward_train(const floating[:, :, ::1] dy,  # IN  (N, C, S)
                             const floating[:, :, ::1] x,   # IN  (N, C, S) forward input
                             const floating[::1] gamma,     # IN  (C,) or None (= 1)
                             const double[::1] mean,        # IN  (C,) from the forward
                             const double[::1] var,         # IN  (C,) from the forward
                             floating[:, :, ::1] dx,        # OUT (N, C, S) or None
                             floating[::1] dgamma,          # OUT (C,) or None
                             floating[::1] dbeta,           # OUT (C,) or None
                             double eps, int num_threads):
    """Gradients of :func:`batchnorm_forward_train` (the statistics depend on x too):

    with xhat = (x - mean) / sqrt(var + eps), ``dbeta = sum(dy)``, ``dgamma = sum(dy * xhat)``
    and ``dx = gamma / sqrt(var + eps) * (dy - dbeta / M - xhat * dgamma / M)``.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t c, n, s
    cdef double sdy, sdyx, inv, m, g, xh, M = <double> (N * S)
    cdef bint has_gamma = gamma is not None, need_dx = dx is not None
    cdef bint need_dg = dgamma is not None, need_db = dbeta is not None
    if C == 0:
        return
    for c in prange(C, nogil=True, schedule='static', num_threads=max(1, min(num_threads, C))):
        m = mean[c]
        inv = 1.0 / sqrt(var[c] + eps)
        sdy = 0
        sdyx = 0
        for n in range(N):
            for s in range(S):
                sdy = sdy + dy[n, c, s]
                sdyx = sdyx + dy[n, c, s] * ((x[n, c, s] - m) * inv)
        if need_db:
            dbeta[c] = <floating> sdy
        if need_dg:
            dgamma[c] = <floating> sdyx
        if need_dx and N * S > 0:
            g = (gamma[c] if has_gamma else 1.0) * inv
            for n in range(N):
                for s in range(S):
                    xh = (x[n, c, s] - m) * inv
                    dx[n, c, s] = <floating> (g * (dy[n, c, s] - sdy / M - xh * sdyx / M))


def channel_affine(const floating[:, :, ::1] x,  # IN  (N, C, S)
                   const double[::1] scale,      # IN  (C,)
                   const double[::1] shift,      # IN  (C,)
                   floating[:, :, ::1] y,        # OUT (N, C, S)
                   int num_threads):
    """``y[n, c, s] = x[n, c, s] * scale[c] + shift[c]`` (in float64, rounded once): BN in
    evaluation. Elementwise, so any split over threads gives the same bits."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t plane, c, s
    cdef double a, b
    if N * C == 0:
        return
    for plane in prange(N * C, nogil=True, schedule='static',
                        num_threads=max(1, min(num_threads, N * C))):
        c = plane % C
        a = scale[c]
        b = shift[c]
        for s in range(S):
            y[plane // C, c, s] = <floating> (x[plane // C, c, s] * a + b)

