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


cdef inline void _window_max(const floating *xp, Py_ssize_t W, Py_ssize_t h0, Py_ssize_t h1,
                             Py_ssize_t w0, Py_ssize_t w1, floating *out,
                             Py_ssize_t *out_i) noexcept nogil:
    """Max of xp[h0:h1, w0:w1] (row stride W) and the flat index of its first occurrence."""
    cdef Py_ssize_t ih, iw, best_i = h0 * W + w0
    cdef floating v, best = xp[best_i]
    cdef bint gt
    for ih in range(h0, h1):
        for iw in range(w0, w1):
            v = xp[ih * W + iw]
            # strict '>' keeps the first maximum; 'v != v' lets NaN win. Bitwise ops and
            # selects rather than branches: on real data the comparison is a coin toss.
            gt = (v > best) | ((v != v) & (best == best))
            best = v if gt else best
            best_i = (ih * W + iw) if gt else best_i
    out[0] = best
    out_i[0] = best_i


cdef void _pool22_row(const floating *r0, Py_ssize_t W, Py_ssize_t base,
                      Py_ssize_t ow_lo, Py_ssize_t ow_hi,
                      floating *yrow, Py_ssize_t *arow) noexcept nogil:
    """2x2 / stride-2 windows ow_lo <= ow < ow_hi whose top-left cell is r0[2 * ow].

    Straight-line selects with no branches, so the compiler can vectorise the row.
    ``base`` is the flat index of r0[0] in its plane.
    """
    cdef Py_ssize_t ow, i
    cdef floating a, b, c, d, m0, m1
    cdef Py_ssize_t j0, j1
    cdef bint gt
    cdef const floating *r1 = r0 + W
    for ow in range(ow_lo, ow_hi):
        i = 2 * ow
        a = r0[i]
        b = r0[i + 1]
        c = r1[i]
        d = r1[i + 1]
        gt = (b > a) | ((b != b) & (a == a))
        m0 = b if gt else a
        j0 = i + 1 if gt else i
        gt = (d > c) | ((d != d) & (c == c))
        m1 = d if gt else c
        j1 = i + 1 + W if gt else i + W
        gt = (m1 > m0) | ((m1 != m1) & (m0 == m0))
        yrow[ow] = m1 if gt else m0
        arow[ow] = base + (j1 if gt else j0)


def maxpool2d_forward(const floating[:, :, :, ::1] x,  # IN  (N, C, H, W)
                      floating[:, :, :, ::1] y,        # OUT (N, C, OH, OW)
                      Py_ssize_t[:, :, :, ::1] argmax, # OUT (N, C, OH, OW)
                      int kh, int kw, int sh, int sw, int pt, int pl, int num_threads):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t OH = y.shape[2], OW = y.shape[3]
    cdef Py_ssize_t plane, oh, ow, h0, h1, w0, w1, i0, ow_lo, ow_hi
    cdef floating m0, m1, v
    cdef bint gt
    cdef Py_ssize_t j0, j1
    cdef const floating *xp
    cdef floating *yp
    cdef Py_ssize_t *ap
    # The 2x2 / stride-2 window (the common case) gets an unrolled interior loop.
    cdef bint fast22 = kh == 2 and kw == 2 and sh == 2 and sw == 2
    if N * C == 0 or OH * OW == 0:
        return
    # Interior columns: windows that lie wholly inside [0, W).
    ow_lo = (pl + sw - 1) // sw
    ow_hi = (W + pl - kw) // sw + 1 if W + pl >= kw else 0
    if ow_hi > OW:
        ow_hi = OW
    if ow_hi < ow_lo:
        ow_hi = ow_lo
    for plane in prange(N * C, nogil=True, schedule='static',
                        num_threads=max(1, min(num_threads, N * C))):
        xp = &x[0, 0, 0, 0] + plane * H * W
        yp = &y[0, 0, 0, 0] + plane * OH * OW
        ap = &argmax[0, 0, 0, 0] + plane * OH * OW
        for oh in range(OH):
            h0 = oh * sh - pt
            h1 = h0 + kh
            if h0 < 0:
                h0 = 0
            if h1 > H:
                h1 = H
            if fast22 and h1 - h0 == 2:
                for ow in range(ow_lo):
                    _window_max(xp, W, h0, h1, 0, ow * sw - pl + kw, yp + oh * OW + ow,
                                ap + oh * OW + ow)
                _pool22_row(xp + h0 * W - pl, W, h0 * W - pl, ow_lo, ow_hi,
                            yp + oh * OW, ap + oh * OW)
                for ow in range(ow_hi, OW):
                    w0 = ow * sw - pl
                    _window_max(xp, W, h0, h1, w0 if w0 > 0 else 0, W if w0 + kw > W else w0 + kw,
                                yp + oh * OW + ow, ap + oh * OW + ow)
            else:
                for ow in range(OW):
                    w0 = ow * sw - pl
                    w1 = w0 + kw
                    if w0 < 0:
                        w0 = 0
                    if w1 > W:
                        w1 = W
                    _window_max(xp, W, h0, h1, w0, w1, yp + oh * OW + ow, ap + oh * OW + ow)


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
