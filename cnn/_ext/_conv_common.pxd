"""Kernel declarations and helpers shared by the conv kernels (_conv.pyx) and the fused
inference kernels (_fused.pyx): the C headers' signatures (_im2col.h, _winograd.h, _direct.h)
and their typed wrappers, declared once.

One definition for both: the fused kernel's outputs are compared bit for bit with the conv's,
so they must group the Winograd tiles into the same blocks (the GEMMs then see the same shapes)
and apply bias and ReLU by the same pass.
"""
from cython cimport floating
from libc.string cimport memset

from cnn._ext._blas cimport _gemm

# Tiles per Winograd block: enough columns for the 16 GEMMs to run near the kernel's rate, few
# enough that the block's V (16 x Cin x tiles) stays in a core's L2: at most WINO_TILES tiles
# and WINO_V_BYTES of float32 V, at least one image. The grouping depends on the shapes only,
# never on the thread count.
cdef enum:
    WINO_TILES = 384
    WINO_V_BYTES = 524288


cdef inline int _wino_group(int N, int tiles_per_image, int Cin) noexcept nogil:
    """Images per Winograd block (see WINO_TILES and WINO_V_BYTES; ``Cin = 0``: no bound on
    V's bytes, for the weight gradient, whose BLAS GEMMs reduce over the block's tiles)."""
    cdef long long g = (WINO_TILES + tiles_per_image - 1) // tiles_per_image
    if Cin > 0:  # V holds 16 float32 values (64 bytes) per channel and tile
        g = min(g, WINO_V_BYTES // (64 * <long long> Cin * tiles_per_image))
    return <int> max(1, min(<long long> N, g))


# Columns per GEMM that the im2col path aims for: below it, OpenBLAS's per-call costs (packing
# the whole weight matrix for a few dozen columns) dominate; see _images_per_gemm.
cdef enum:
    GEMM_COLS = 256


cdef inline int _images_per_gemm(int N, int P) noexcept nogil:
    """Images whose im2col columns share one GEMM: enough for about GEMM_COLS columns when an
    image has P < GEMM_COLS output pixels, else 1. A function of the shapes only, so a result
    never depends on the thread count."""
    return max(1, min(N, GEMM_COLS // max(P, 1)))


# Reduction depth (C*kh*kw) from which an im2col forward product runs on cnn's own kernel.
cdef enum:
    OWN_IM2COL_MIN_DEPTH = 64


cdef inline bint _im2col_own_gemm(bint is_float, int groups, bint one_by_one,
                                  int depth) noexcept nogil:
    """Whether an im2col forward product runs on cnn's register-blocked kernel
    (_wino_gemm.h) instead of BLAS: float32, one group, a column matrix of its own (a 1x1
    stride-1 unpadded conv multiplies the input in place, on BLAS) and a reduction of at least
    OWN_IM2COL_MIN_DEPTH = C*kh*kw terms. The training forward (_conv.conv2d_forward) and the
    fused kernel (_fused.conv_pool_forward) both follow it, so predict keeps the training
    forward's bits: each output is one FMA chain over C*kh*kw, whatever the block of images or
    band of rows it is computed in. Measured (bench/RESULTS.md): it pays on the blocks of
    stride-2 layers (64 x 288 x 256, where OpenBLAS packs both operands on every call), and
    loses on shallow first layers over large planes (27 or 25 terms, 784-1024 columns)."""
    return is_float and groups == 1 and not one_by_one and depth >= OWN_IM2COL_MIN_DEPTH


cdef inline Py_ssize_t _round16(Py_ssize_t n) noexcept nogil:
    """n rounded up to a multiple of 16 elements (64 bytes of float32): offsets in a scratch row
    from :func:`cnn._ext._scratch.aligned_rows` that keep a 64-byte line boundary."""
    return (n + 15) // 16 * 16


cdef inline void _bias_act(floating *y, const floating *b, bint has_bias, bint relu,
                           int K, int P) noexcept nogil:
    """y[k, p] = act(y[k, p] + b[k]) in place for one image."""
    cdef int k, p
    cdef floating bk, v
    cdef floating *row
    for k in range(K):
        row = y + <Py_ssize_t> k * P
        bk = b[k] if has_bias else 0
        if relu:
            for p in range(P):
                v = row[p] + bk
                row[p] = 0 if v <= 0 else v  # NaN stays NaN, as in np.maximum
        elif has_bias:
            for p in range(P):
                row[p] += bk


cdef extern from "_im2col.h":
    void cnn_im2col_f(const float *x, float *cols, Py_ssize_t ld, int C, int H, int W, int kh, int kw,
                      int sh, int sw, int pt, int pl, int OH, int OW, int dh,
                      int dw) noexcept nogil
    void cnn_im2col_d(const double *x, double *cols, Py_ssize_t ld, int C, int H, int W, int kh, int kw,
                      int sh, int sw, int pt, int pl, int OH, int OW, int dh,
                      int dw) noexcept nogil
    void cnn_col2im_f(const float *cols, Py_ssize_t ld, float *dx, float *work, int C, int H,
                      int W, int kh, int kw, int sh, int sw, int pt, int pl, int OH, int OW,
                      int dh, int dw) noexcept nogil
    void cnn_col2im_d(const double *cols, Py_ssize_t ld, double *dx, double *work, int C, int H,
                      int W, int kh, int kw, int sh, int sw, int pt, int pl, int OH, int OW,
                      int dh, int dw) noexcept nogil
    Py_ssize_t cnn_col2im_work_size(int kh, int kw, int sh, int sw, int OH, int OW, int dh,
                                    int dw) noexcept nogil


cdef inline void _im2col(const floating *x, floating *cols, Py_ssize_t ld,
                         int C, int H, int W, int kh, int kw, int sh, int sw,
                         int pt, int pl, int OH, int OW, int dil_h, int dil_w) noexcept nogil:
    """cols[(c*kh + i)*kw + j, oh*OW + ow] = xpad[c, oh*sh + i*dil_h, ow*sw + j*dil_w], the
    rows ``ld`` apart (``ld >= OH*OW``; see _im2col.h)."""
    if floating is float:
        cnn_im2col_f(x, cols, ld, C, H, W, kh, kw, sh, sw, pt, pl, OH, OW, dil_h, dil_w)
    else:
        cnn_im2col_d(x, cols, ld, C, H, W, kh, kw, sh, sw, pt, pl, OH, OW, dil_h, dil_w)


cdef inline void _col2im(const floating *cols, Py_ssize_t ld, floating *dx, floating *work,
                         int C, int H, int W, int kh, int kw, int sh, int sw,
                         int pt, int pl, int OH, int OW, int dil_h, int dil_w) noexcept nogil:
    """dx = 0, then dx[c, ih, iw] += cols[row, p] over every (row, p) im2col read (c, ih, iw)
    from; the rows of cols lie ``ld`` apart. ``work``: ``cnn_col2im_work_size(...)`` elements
    of scratch (the column-stride phase planes; NULL allowed when that is 0)."""
    if floating is float:
        cnn_col2im_f(cols, ld, dx, work, C, H, W, kh, kw, sh, sw, pt, pl, OH, OW, dil_h, dil_w)
    else:
        cnn_col2im_d(cols, ld, dx, work, C, H, W, kh, kw, sh, sw, pt, pl, OH, OW, dil_h, dil_w)


cdef extern from "_winograd.h":
    Py_ssize_t CNN_WINO_TILES(Py_ssize_t th, Py_ssize_t tw) noexcept nogil
    Py_ssize_t CNN_WINO_PAD_SIZE(Py_ssize_t th, Py_ssize_t tw) noexcept nogil
    Py_ssize_t CNN_WINO_GRAD_PAD_SIZE(Py_ssize_t th, Py_ssize_t tw, Py_ssize_t OW) noexcept nogil
    void cnn_wino_weights_f(const float *w, float *U, int Kout, int Cin, int flip, int k0,
                            int k1) noexcept nogil
    void cnn_wino_weights_d(const double *w, double *U, int Kout, int Cin, int flip, int k0,
                            int k1) noexcept nogil
    void cnn_wino_input_f(const float *x, const float *mask, float *pad, float *V, int Cin,
                          int H, int W, int pt, int pl, int th, int tw, Py_ssize_t ldv,
                          Py_ssize_t lde, Py_ssize_t t0) noexcept nogil
    void cnn_wino_input_d(const double *x, const double *mask, double *pad, double *V, int Cin,
                          int H, int W, int pt, int pl, int th, int tw, Py_ssize_t ldv,
                          Py_ssize_t lde, Py_ssize_t t0) noexcept nogil
    void cnn_wino_grad_f(const float *dy, const float *mask, float *pad, float *D, int Kout,
                         int OH, int OW, int th, int tw, Py_ssize_t ldd, Py_ssize_t t0) noexcept nogil
    void cnn_wino_grad_d(const double *dy, const double *mask, double *pad, double *D, int Kout,
                         int OH, int OW, int th, int tw, Py_ssize_t ldd, Py_ssize_t t0) noexcept nogil
    void cnn_wino_weights_grad_f(const float *Mw, float *dw, float *db, int Kout, int Cin,
                                 Py_ssize_t ldw) noexcept nogil
    void cnn_wino_weights_grad_d(const double *Mw, double *dw, double *db, int Kout, int Cin,
                                 Py_ssize_t ldw) noexcept nogil
    void cnn_wino_output_f(const float *M, float *y, const float *bias, int relu, int Kout,
                           int OH, int OW, int th, int tw, Py_ssize_t ldm,
                           Py_ssize_t t0, float *o) noexcept nogil
    void cnn_wino_output_d(const double *M, double *y, const double *bias, int relu, int Kout,
                           int OH, int OW, int th, int tw, Py_ssize_t ldm,
                           Py_ssize_t t0, double *o) noexcept nogil
    void cnn_wino_output_pool_f(const float *M, float *yp, const float *bias, int relu,
                                int Kout, int PH, int PW, int th, int tw, Py_ssize_t ldm,
                                Py_ssize_t t0, float *o) noexcept nogil
    void cnn_wino_output_pool_d(const double *M, double *yp, const double *bias, int relu,
                                int Kout, int PH, int PW, int th, int tw, Py_ssize_t ldm,
                                Py_ssize_t t0, double *o) noexcept nogil


cdef inline void _wino_weights(const floating *w, floating *U, int Kout, int Cin,
                               bint flip) noexcept nogil:
    if floating is float:
        cnn_wino_weights_f(w, U, Kout, Cin, flip, 0, Kout)
    else:
        cnn_wino_weights_d(w, U, Kout, Cin, flip, 0, Kout)


cdef inline void _wino_input(const floating *x, const floating *mask, floating *pad,
                             floating *V, int Cin, int H, int W, int pt, int pl, int th, int tw,
                             Py_ssize_t ldv, Py_ssize_t lde, Py_ssize_t t0) noexcept nogil:
    if floating is float:
        cnn_wino_input_f(x, mask, pad, V, Cin, H, W, pt, pl, th, tw, ldv, lde, t0)
    else:
        cnn_wino_input_d(x, mask, pad, V, Cin, H, W, pt, pl, th, tw, ldv, lde, t0)


cdef inline void _wino_output(const floating *M, floating *y, const floating *bias, bint relu,
                              int Kout, int OH, int OW, int th, int tw, Py_ssize_t ldm,
                              Py_ssize_t t0, floating *o) noexcept nogil:
    if floating is float:
        cnn_wino_output_f(M, y, bias, relu, Kout, OH, OW, th, tw, ldm, t0, o)
    else:
        cnn_wino_output_d(M, y, bias, relu, Kout, OH, OW, th, tw, ldm, t0, o)


cdef inline void _wino_out(const floating *M, floating *y, const floating *bias, bint relu,
                           int Kout, int OH, int OW, int th, int tw, Py_ssize_t ldm,
                           Py_ssize_t t0, floating *o, bint pool2) noexcept nogil:
    """The output transform into y (Kout, OH, OW), or with ``pool2`` its 2x2, stride-2 max-pool
    into y (Kout, OH // 2, OW // 2)."""
    if pool2:
        if floating is float:
            cnn_wino_output_pool_f(M, y, bias, relu, Kout, OH // 2, OW // 2, th, tw, ldm, t0, o)
        else:
            cnn_wino_output_pool_d(M, y, bias, relu, Kout, OH // 2, OW // 2, th, tw, ldm, t0, o)
    else:
        _wino_output(M, y, bias, relu, Kout, OH, OW, th, tw, ldm, t0, o)


cdef inline void _wino_grad(const floating *dy, const floating *mask, floating *pad,
                            floating *D, int Kout, int OH, int OW, int th, int tw,
                            Py_ssize_t ldd, Py_ssize_t t0) noexcept nogil:
    if floating is float:
        cnn_wino_grad_f(dy, mask, pad, D, Kout, OH, OW, th, tw, ldd, t0)
    else:
        cnn_wino_grad_d(dy, mask, pad, D, Kout, OH, OW, th, tw, ldd, t0)


cdef inline void _wino_weights_grad(const floating *Mw, floating *dw, floating *db, int Kout,
                                    int Cin, Py_ssize_t ldw) noexcept nogil:
    if floating is float:
        cnn_wino_weights_grad_f(Mw, dw, db, Kout, Cin, ldw)
    else:
        cnn_wino_weights_grad_d(Mw, dw, db, Kout, Cin, ldw)


cdef extern from "_wino_wgrad.h":
    void cnn_wino_wgrad_f(const float *D, Py_ssize_t ldd, int Kout, const float *V,
                          Py_ssize_t ldv, int C1, Py_ssize_t T, float *Mw,
                          int accumulate) noexcept nogil


cdef extern from "_wino_gemm.h":
    Py_ssize_t CNN_WINO_GEMM_PAD(Py_ssize_t t) noexcept nogil
    int CNN_WINO_GEMM_ROWS
    void cnn_wino_gemm_f(const float *U, Py_ssize_t lde_u, int Cin, int rows, const float *V,
                         Py_ssize_t ldv, Py_ssize_t lde_v, Py_ssize_t S, float *M,
                         Py_ssize_t ldm, Py_ssize_t lde_m, int products) noexcept nogil


cdef inline Py_ssize_t _wino_block_sizes(int N, int Cin, int Kout, int OH, int OW,
                                         Py_ssize_t *pad_size, Py_ssize_t *v_size) noexcept nogil:
    """Elements of one thread's scratch for :func:`_wino_block` on blocks of
    ``_wino_group`` images: a padded plane and an output row (``pad_size``), V (16, Cin, S)
    (``v_size``) and M (16, Kout, S), S the block's tile slots rounded up for the GEMM kernel."""
    cdef Py_ssize_t th = (OH + 1) // 2, tw = (OW + 1) // 2, tpi = CNN_WINO_TILES(th, tw)
    cdef Py_ssize_t S = CNN_WINO_GEMM_PAD(_wino_group(N, <int> tpi, Cin) * tpi)
    pad_size[0] = _round16(CNN_WINO_PAD_SIZE(th, tw) + 4 * tpi)   # V and M start on a line
    v_size[0] = 16 * <Py_ssize_t> Cin * S
    return pad_size[0] + v_size[0] + 16 * <Py_ssize_t> Kout * S


cdef inline void _wino_block(const floating *x, const floating *mask, const floating *U,
                             const floating *bias, bint relu, floating *y, int n_img,
                             int Cin, int H, int W, int Kout, int OH, int OW, int pt, int pl,
                             floating *scratch, Py_ssize_t pad_size, Py_ssize_t v_size,
                             bint pool2, int k0, int k1, bint v_ready) noexcept nogil:
    """y (n_img, Kout, OH, OW) = act(conv3x3(x (n_img, Cin, H, W) [masked]) + bias) by
    Winograd F(2x2, 3x3), stride 1, for one block of images on one thread; with ``pool2``, y
    (n_img, Kout, OH // 2, OW // 2) is its 2x2, stride-2 max-pool, taken in the output transform.
    Only the output channels k0:k1 are written (0, Kout: all). ``v_ready``: the scratch's V
    already holds this block's input transform (the thread's last call was on the same block).

    ``U`` holds the transformed weights (16, Kout, Cin); ``mask`` (same shape as x) or NULL;
    ``scratch`` one thread's row laid out as :func:`_wino_block_sizes` says. float32: the 16
    products by the register-blocked kernel of _wino_gemm.h, 8 output channels at a time, each
    group's output transform run while its M is in cache; float64: by BLAS, all channels.
    The arithmetic of an output does not depend on the block it is in.
    """
    cdef int th = (OH + 1) // 2, tw = (OW + 1) // 2
    cdef int tpi = <int> CNN_WINO_TILES(th, tw)
    cdef Py_ssize_t T = <Py_ssize_t> n_img * tpi, S = CNN_WINO_GEMM_PAD(T)
    cdef Py_ssize_t in_img = <Py_ssize_t> Cin * H * W
    cdef Py_ssize_t plane = <Py_ssize_t> (OH // 2) * (OW // 2) if pool2 else <Py_ssize_t> OH * OW
    cdef Py_ssize_t out_img = Kout * plane, r
    cdef floating *pad = scratch
    cdef floating *o = scratch + pad_size - 4 * tpi
    cdef floating *V = scratch + pad_size
    cdef floating *M = V + v_size
    cdef int n, e, ko, rows
    if not v_ready:
        for n in range(n_img):
            _wino_input(x + n * in_img, mask + n * in_img if mask != NULL else NULL, pad, V,
                        Cin, H, W, pt, pl, th, tw, S, <Py_ssize_t> Cin * S,
                        <Py_ssize_t> n * tpi)
        if S > T:  # the slots past the block's last tile: zeros, never read back
            for r in range(16 * <Py_ssize_t> Cin):
                memset(V + r * S + T, 0, (S - T) * sizeof(floating))
    if floating is float:
        ko = k0
        while ko < k1:
            rows = min(<int> CNN_WINO_GEMM_ROWS, k1 - ko)
            cnn_wino_gemm_f(U + <Py_ssize_t> ko * Cin, <Py_ssize_t> Kout * Cin, Cin, rows,
                            V, S, <Py_ssize_t> Cin * S, S, M, S, <Py_ssize_t> rows * S, 16)
            for n in range(n_img):
                _wino_out(M, y + n * out_img + ko * plane, bias + ko if bias != NULL else NULL,
                          relu, rows, OH, OW, th, tw, S, <Py_ssize_t> n * tpi, o, pool2)
            ko += rows
    else:
        rows = k1 - k0
        for e in range(16):
            _gemm(False, False, rows, <int> S, Cin, 1,
                  U + <Py_ssize_t> e * Kout * Cin + <Py_ssize_t> k0 * Cin, Cin,
                  V + <Py_ssize_t> e * Cin * S, <int> S, 0, M + <Py_ssize_t> e * rows * S,
                  <int> S)
        for n in range(n_img):
            _wino_out(M, y + n * out_img + k0 * plane, bias + k0 if bias != NULL else NULL,
                      relu, rows, OH, OW, th, tw, S, <Py_ssize_t> n * tpi, o, pool2)


cdef extern from "_direct.h":
    Py_ssize_t CNN_DIRECT_SCRATCH(Py_ssize_t OH, Py_ssize_t OW) noexcept nogil
    void cnn_direct3x3_c1_f(const float *x, const float *w, const float *b, int relu, float *y,
                            int K, int H, int W, int pt, int pl, int OH, int OW,
                            float *scratch) noexcept nogil
    void cnn_direct3x3_c1_d(const double *x, const double *w, const double *b, int relu,
                            double *y, int K, int H, int W, int pt, int pl, int OH, int OW,
                            double *scratch) noexcept nogil
