"""Max-pooling kernels, OpenMP over the N*C planes.

Padded cells are never candidates (they act as minus infinity), ties go to the first
cell in row-major window order, and NaN propagates (a NaN cell wins its window).
``argmax`` holds flat indices ``ih * W + iw`` into each unpadded (H, W) input plane.
Validation lives in :mod:`cnn.functional`; these kernels trust their arguments
(in particular every window holds at least one real cell, and argmax is in range).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset


def maxpool2d_forward(const floating[:, :, :, ::1] x,  # IN  (N, C, H, W)
                      floating[:, :, :, ::1] y,        # OUT (N, C, OH, OW)
                      Py_ssize_t[:, :, :, ::1] argmax, # OUT (N, C, OH, OW)
                      int kh, int kw, int sh, int sw, int pt, int pl, int num_threads):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t OH = y.shape[2], OW = y.shape[3]
    cdef Py_ssize_t plane, n, c, oh, ow, ih, iw, h0, h1, w0, w1, best_i
    cdef floating best, v
    cdef const floating *xp
    if N * C == 0 or OH * OW == 0:
        return
    for plane in prange(N * C, nogil=True, schedule='static',
                        num_threads=max(1, min(num_threads, N * C))):
        n = plane // C
        c = plane % C
        xp = &x[n, c, 0, 0]
        for oh in range(OH):
            h0 = oh * sh - pt
            h1 = h0 + kh
            if h0 < 0:
                h0 = 0
            if h1 > H:
                h1 = H
            for ow in range(OW):
                w0 = ow * sw - pl
                w1 = w0 + kw
                if w0 < 0:
                    w0 = 0
                if w1 > W:
                    w1 = W
                best_i = h0 * W + w0
                best = xp[best_i]
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        v = xp[ih * W + iw]
                        # strict '>' keeps the first maximum; 'v != v' lets NaN win
                        if v > best or (v != v and best == best):
                            best = v
                            best_i = ih * W + iw
                y[n, c, oh, ow] = best
                argmax[n, c, oh, ow] = best_i


def maxpool2d_backward(const floating[:, :, :, ::1] dy,       # IN  (N, C, OH, OW)
                       const Py_ssize_t[:, :, :, ::1] argmax, # IN  (N, C, OH, OW)
                       floating[:, :, :, ::1] dx,             # OUT (N, C, H, W)
                       int num_threads):
    """dx = 0, then dx[n, c].flat[argmax[n, c, i, j]] += dy[n, c, i, j]."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t OH = dy.shape[2], OW = dy.shape[3]
    cdef Py_ssize_t plane, n, c, oh, ow
    cdef floating *dxp
    if N * C == 0:
        return
    for plane in prange(N * C, nogil=True, schedule='static',
                        num_threads=max(1, min(num_threads, N * C))):
        n = plane // C
        c = plane % C
        dxp = &dx[n, c, 0, 0]
        memset(dxp, 0, H * W * sizeof(floating))
        # One plane belongs to one thread, so '+=' here never races.
        for oh in range(OH):
            for ow in range(OW):
                dxp[argmax[n, c, oh, ow]] += dy[n, c, oh, ow]
