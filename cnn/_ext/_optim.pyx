"""Optimizer updates in one pass over each parameter, OpenMP over elements.

The update is elementwise, so splitting it among threads never changes a result. Each
expression is evaluated in the order the NumPy formulation in :mod:`cnn.optimizers` uses
(a product, then a sum, each rounded: no fused multiply-add is requested and the portable build
has none), so the two give the same bits.
Validation lives in :mod:`cnn.optimizers`; these kernels trust their arguments.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt


def sgd_update(floating[::1] p,          # IN/OUT (n,) the parameter, flattened
               const floating[::1] g,    # IN     (n,) its gradient
               floating[::1] v,          # IN/OUT (n,) the momentum buffer, or None
               double lr, double momentum, bint nesterov, double weight_decay,
               int num_threads):
    """One ``torch.optim.SGD`` step (``dampening=0``) in place:

        d = g + weight_decay * p
        v = momentum * v + d                      (if v is not None)
        d = d + momentum * v  if nesterov  else  v   (if v is not None)
        p = p - lr * d
    """
    cdef Py_ssize_t i, n = p.shape[0]
    cdef floating d, vi
    cdef floating lr_ = <floating> lr, mu = <floating> momentum, wd = <floating> weight_decay
    cdef bint has_v = v is not None
    cdef bint decay = weight_decay != 0
    if n == 0:
        return
    for i in prange(n, nogil=True, schedule='static', num_threads=max(1, num_threads)):
        d = g[i]
        if decay:
            d = p[i] * wd + d
        if has_v:
            vi = v[i] * mu + d
            v[i] = vi
            if nesterov:
                d = vi * mu + d
            else:
                d = vi
        p[i] = p[i] - d * lr_


def adam_update(floating[::1] p,          # IN/OUT (n,) the parameter, flattened
                const floating[::1] g,    # IN     (n,) its gradient
                floating[::1] m,          # IN/OUT (n,) first-moment buffer
                floating[::1] v,          # IN/OUT (n,) second-moment buffer
                double beta1, double one_minus_beta1, double beta2, double one_minus_beta2,
                double bias2_sqrt, double eps, double step_size, double weight_decay,
                int num_threads):
    """One Adam step in place, in the order of the NumPy formulation:

        d = g + weight_decay * p
        m = beta1 * m + one_minus_beta1 * d
        v = beta2 * v + one_minus_beta2 * (d * d)
        p = p - step_size * (m / (sqrt(v) / bias2_sqrt + eps))

    with ``bias2_sqrt = sqrt(1 - beta2^t)`` and ``step_size = lr / (1 - beta1^t)`` computed by
    the caller in double precision (as NumPy's Python-float scalars are), each cast once to
    the parameter's dtype.
    """
    cdef Py_ssize_t i, n = p.shape[0]
    cdef floating d, mi, vi, t
    cdef floating b1 = <floating> beta1, c1 = <floating> one_minus_beta1
    cdef floating b2 = <floating> beta2, c2 = <floating> one_minus_beta2
    cdef floating s2 = <floating> bias2_sqrt, e = <floating> eps, lr_ = <floating> step_size
    cdef floating wd = <floating> weight_decay
    cdef bint decay = weight_decay != 0
    if n == 0:
        return
    for i in prange(n, nogil=True, schedule='static', num_threads=max(1, num_threads)):
        d = g[i]
        if decay:
            d = p[i] * wd + d
        mi = m[i] * b1 + d * c1
        m[i] = mi
        vi = v[i] * b2 + (d * d) * c2
        v[i] = vi
        t = sqrt(vi)          # libm's sqrt is double: round to the dtype here, as NumPy does
        t = t / s2 + e
        p[i] = p[i] - (mi / t) * lr_
