"""Optimizer updates in one pass over each parameter, OpenMP over elements.

The update is elementwise, so splitting it among threads never changes a result. Each
expression is evaluated in the order the NumPy formulation in :mod:`cnn.optimizers` uses
(a product, then a sum, each rounded: no fused multiply-add is requested and the portable build
has none), so the two give the same bits.
Validation lives in :mod:`cnn.optimizers`; these kernels trust their arguments.
"""
from cython cimport floating
from cython.parallel cimport prange


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
