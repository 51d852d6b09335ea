"""Pooling kernels (max, average, global average), OpenMP over the N*C planes.

Max-pooling: padded cells are never candidates (they act as minus infinity), ties go to the first
cell in row-major window order, and NaN propagates (a NaN cell wins its window).
``argmax`` holds flat indices ``ih * W + iw`` into each unpadded (H, W) input plane.
Validation lives in :mod:`cnn.functional`; these kernels trust their arguments
(in particular every window holds at least one real cell, and argmax is in range).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset

from cnn._ext._pool22 cimport cnn_maxpool_plane_arg_d, cnn_maxpool_plane_arg_f


cdef extern from "_simd.h":
    int cnn_kernel_isa() noexcept nogil

# Pick the kernel clones now, before any thread runs a kernel (see _simd.h).
cnn_kernel_isa()


def maxpool2d_forward(const floating[:, :, :, ::1] x,  # IN  (N, C, H, W)
                      floating[:, :, :, ::1] y,        # OUT (N, C, OH, OW)
                      Py_ssize_t[:, :, :, ::1] argmax, # OUT (N, C, OH, OW)
                      int kh, int kw, int sh, int sw, int pt, int pl, int num_threads):
    """Each (H, W) plane of x pooled into y with the flat index of each window's winner in
    argmax: the rule of _pool22.h's cnn_maxpool_plane_arg (shared with the training conv +
    pool of _fused.pyx), one plane per work item."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t OH = y.shape[2], OW = y.shape[3]
    cdef Py_ssize_t plane
    if N * C == 0 or OH * OW == 0:
        return
    for plane in prange(N * C, nogil=True, schedule='dynamic', chunksize=8,
                        num_threads=max(1, min(num_threads, N * C))):
        if floating is float:
            cnn_maxpool_plane_arg_f(&x[0, 0, 0, 0] + plane * H * W, H, W,
                                    &y[0, 0, 0, 0] + plane * OH * OW,
                                    &argmax[0, 0, 0, 0] + plane * OH * OW, OH, OW, kh, kw, sh,
                                    sw, pt, pl)
        else:
            cnn_maxpool_plane_arg_d(&x[0, 0, 0, 0] + plane * H * W, H, W,
                                    &y[0, 0, 0, 0] + plane * OH * OW,
                                    &argmax[0, 0, 0, 0] + plane * OH * OW, OH, OW, kh, kw, sh,
                                    sw, pt, pl)


def maxpool2d_backward(const floating[:, :, :, ::1] dy,       # IN  (N, C, OH, OW)
                       const Py_ssize_t[:, :, :, ::1] argmax, # IN  (N, C, OH, OW)
                       floating[:, :, :, ::1] dx,             # OUT (N, C, H, W)
                       int num_threads):
    """dx = 0, then dx[n, c].flat[argmax[n, c, i, j]] += dy[n, c, i, j].

    Indices outside [0, H*W) are skipped and counted, in the same pass (a predictable
    branch, cheaper than a separate scan): returns their number, and the caller raises
    when it is not 0.
    """
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t OH = dy.shape[2], OW = dy.shape[3]
    cdef Py_ssize_t plane, n, c, oh, ow, idx, HW = H * W
    cdef Py_ssize_t bad = 0
    cdef floating *dxp
    if N * C == 0:
        return 0
    for plane in prange(N * C, nogil=True, schedule='dynamic', chunksize=8,
                        num_threads=max(1, min(num_threads, N * C))):
        n = plane // C
        c = plane % C
        dxp = &dx[n, c, 0, 0]
        memset(dxp, 0, HW * sizeof(floating))
        # One plane belongs to one thread, so '+=' into dxp never races.
        for oh in range(OH):
            for ow in range(OW):
                idx = argmax[n, c, oh, ow]
                if idx < 0 or idx >= HW:
                    bad += 1
                else:
                    dxp[idx] += dy[n, c, oh, ow]
    return bad


# ----------------------------------------------------------------------------- average pooling
# Padded cells are not counted: each window's mean is over its real cells only (Keras/TF
# "same", ONNX AveragePool count_include_pad=0, torch count_include_pad=False). Sums run in
# float64 in row-major window order, one plane per thread, so results never depend on the
# thread count.

def avgpool2d_forward(const floating[:, :, :, ::1] x,  # IN  (N, C, H, W)
                      floating[:, :, :, ::1] y,        # OUT (N, C, OH, OW)
                      int kh, int kw, int sh, int sw, int pt, int pl, int num_threads):
    """y = mean of each window's real cells (top/left padding (pt, pl); every window holds
    at least one real cell)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t OH = y.shape[2], OW = y.shape[3]
    cdef Py_ssize_t plane, oh, ow, h0, h1, w0, w1, ih, iw
    cdef const floating *xp
    cdef floating *yp
    cdef double acc
    if N * C == 0 or OH * OW == 0:
        return
    for plane in prange(N * C, nogil=True, schedule='static',
                        num_threads=max(1, min(num_threads, N * C))):
        xp = &x[0, 0, 0, 0] + plane * H * W
        yp = &y[0, 0, 0, 0] + plane * OH * OW
        for oh in range(OH):
            h0 = max(oh * sh - pt, 0)
            h1 = min(oh * sh - pt + kh, H)
            for ow in range(OW):
                w0 = max(ow * sw - pl, 0)
                w1 = min(ow * sw - pl + kw, W)
                acc = 0
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        acc = acc + xp[ih * W + iw]
                yp[oh * OW + ow] = <floating> (acc / <double> ((h1 - h0) * (w1 - w0)))


def avgpool2d_backward(const floating[:, :, :, ::1] dy,  # IN  (N, C, OH, OW)
                       floating[:, :, :, ::1] dx,        # OUT (N, C, H, W)
                       int kh, int kw, int sh, int sw, int pt, int pl, int num_threads):
    """dx = 0, then each window's real cells get dy / (their count), windows in row-major
    order (one plane per thread, so '+=' never races)."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t OH = dy.shape[2], OW = dy.shape[3]
    cdef Py_ssize_t plane, oh, ow, h0, h1, w0, w1, ih, iw
    cdef const floating *gp
    cdef floating *dxp
    cdef floating g
    if N * C == 0:
        return
    for plane in prange(N * C, nogil=True, schedule='static',
                        num_threads=max(1, min(num_threads, N * C))):
        gp = &dy[0, 0, 0, 0] + plane * OH * OW
        dxp = &dx[0, 0, 0, 0] + plane * H * W
        memset(dxp, 0, H * W * sizeof(floating))
        for oh in range(OH):
            h0 = max(oh * sh - pt, 0)
            h1 = min(oh * sh - pt + kh, H)
            for ow in range(OW):
                w0 = max(ow * sw - pl, 0)
                w1 = min(ow * sw - pl + kw, W)
                g = <floating> (gp[oh * OW + ow] / <double> ((h1 - h0) * (w1 - w0)))
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        dxp[ih * W + iw] += g


def global_avgpool2d_forward(const floating[:, :, ::1] x,  # IN  (N, C, S), S = H*W
                             floating[:, ::1] y,           # OUT (N, C)
                             int num_threads):
    """y[n, c] = mean over the plane, summed in float64 in index order."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t plane, s
    cdef double acc
    if N * C == 0:
        return
    for plane in prange(N * C, nogil=True, schedule='static',
                        num_threads=max(1, min(num_threads, N * C))):
        acc = 0
        for s in range(S):
            acc = acc + x[plane // C, plane % C, s]
        y[plane // C, plane % C] = <floating> (acc / <double> S)


def global_avgpool2d_backward(const floating[:, ::1] dy,  # IN  (N, C)
                              floating[:, :, ::1] dx,     # OUT (N, C, S)
                              int num_threads):
    """dx[n, c, :] = dy[n, c] / S."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], S = dx.shape[2]
    cdef Py_ssize_t plane, s
    cdef floating g
    if N * C == 0:
        return
    for plane in prange(N * C, nogil=True, schedule='static',
                        num_threads=max(1, min(num_threads, N * C))):
        g = <floating> (dy[plane // C, plane % C] / <double> S)
        for s in range(S):
            dx[plane // C, plane % C, s] = g
