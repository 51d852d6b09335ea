/* im2col / col2im for one image, NCHW, C-contiguous; one definition per float type.
 *
 * cols[(c*kh + i)*kw + j, oh*OW + ow] = xpad[c, oh*sh + i*dh, ow*sw + j*dw], where xpad is x
 * with pt rows on top and pl columns on the left (the bottom/right padding is implied by OH,
 * OW) and (dh, dw) the dilation (1 for a plain kernel).
 * Written in plain C loops with `restrict` rather than memcpy/memset calls: the rows are
 * short (an output row, e.g. 14 or 28 values), so library calls per row cost more than the
 * copy, and these loops vectorise.
 */
#ifndef CNN_IM2COL_H
#define CNN_IM2COL_H

#include <stddef.h>
#include <string.h>

/* ceil(a / b) for b > 0 and any a. */
static inline ptrdiff_t cnn_ceil_div(ptrdiff_t a, ptrdiff_t b) {
    return a <= 0 ? -((-a) / b) : (a + b - 1) / b;
}

/* Output columns [lo, hi) of the kernel column at offset j (= column index * dilation) read
   real input columns; the rest is padding. */
static inline void cnn_valid_cols(int W, int OW, int sw, int pl, int j,
                                  ptrdiff_t *lo, ptrdiff_t *hi) {
    ptrdiff_t l = cnn_ceil_div(pl - j, sw), h = cnn_ceil_div((ptrdiff_t)W + pl - j, sw);
    if (l < 0) l = 0;
    if (h > OW) h = OW;
    if (h < l) h = l;
    *lo = l;
    *hi = h;
}

#define CNN_DEFINE_IM2COL(SUFFIX, T)                                                       \
static void cnn_im2col_##SUFFIX(const T *restrict x, T *restrict cols, int C, int H, int W, \
                                int kh, int kw, int sh, int sw, int pt, int pl,            \
                                int OH, int OW, int dh, int dw) {                          \
    T *restrict dst = cols;                                                                \
    for (int c = 0; c < C; c++)                                                            \
    for (int i = 0; i < kh * dh; i += dh)                                                  \
    for (int j = 0; j < kw * dw; j += dw) {                                                \
        ptrdiff_t lo, hi, off = (ptrdiff_t)j - pl;                                         \
        cnn_valid_cols(W, OW, sw, pl, j, &lo, &hi);                                        \
        if (sh == 1 && sw == 1 && OW == W) {                                               \
            /* stride 1, "same" width: rows oh_lo..oh_hi-1 of this block are one shifted   \
               contiguous span of the input; copy it whole, then zero the few cells that   \
               wrapped around a row edge (the padding columns). */                         \
            int oh_lo = pt - i > 0 ? pt - i : 0;                                           \
            int oh_hi = H + pt - i < OH ? H + pt - i : OH;                                 \
            if (oh_hi < oh_lo) oh_hi = oh_lo;                                              \
            ptrdiff_t n = (ptrdiff_t)(oh_hi - oh_lo) * OW;                                 \
            ptrdiff_t t0 = off < 0 ? -off : 0, t1 = off > 0 ? n - off : n;                 \
            T *restrict blk = dst + (ptrdiff_t)oh_lo * OW;                                 \
            if (oh_lo > 0) memset(dst, 0, (size_t)oh_lo * OW * sizeof(T));                 \
            if (t1 > t0)                                                                   \
                memcpy(blk + t0, x + ((ptrdiff_t)c * H + oh_lo + i - pt) * W + t0 + off,   \
                       (size_t)(t1 - t0) * sizeof(T));                                     \
            for (int oh = oh_lo; oh < oh_hi; oh++) {                                       \
                T *restrict r = dst + (ptrdiff_t)oh * OW;                                  \
                for (ptrdiff_t ow = 0; ow < lo; ow++) r[ow] = 0;                           \
                for (ptrdiff_t ow = hi; ow < OW; ow++) r[ow] = 0;                          \
            }                                                                              \
            if (oh_hi < OH)                                                                \
                memset(dst + (ptrdiff_t)oh_hi * OW, 0, (size_t)(OH - oh_hi) * OW * sizeof(T)); \
            dst += (ptrdiff_t)OH * OW;                                                     \
            continue;                                                                      \
        }                                                                                  \
        for (int oh = 0; oh < OH; oh++, dst += OW) {                                       \
            int ih = oh * sh + i - pt;                                                     \
            if (ih < 0 || ih >= H) {                                                       \
                for (ptrdiff_t ow = 0; ow < OW; ow++) dst[ow] = 0;                         \
                continue;                                                                  \
            }                                                                              \
            const T *restrict row = x + ((ptrdiff_t)c * H + ih) * W;                       \
            for (ptrdiff_t ow = 0; ow < lo; ow++) dst[ow] = 0;                             \
            if (sw == 1)                                                                   \
                for (ptrdiff_t ow = lo; ow < hi; ow++) dst[ow] = row[ow + off];            \
            else                                                                           \
                for (ptrdiff_t ow = lo; ow < hi; ow++) dst[ow] = row[ow * sw + off];       \
            for (ptrdiff_t ow = hi; ow < OW; ow++) dst[ow] = 0;                            \
        }                                                                                  \
    }                                                                                      \
}                                                                                          \
                                                                                           \
/* dx = 0, then dx[c, ih, iw] += cols[row, p] for every cell im2col read (c, ih, iw) from.
   Here and above, i and j are the tap offsets (row/column index times the dilation). */ \
static void cnn_col2im_##SUFFIX(const T *restrict cols, T *restrict dx, int C, int H, int W, \
                                int kh, int kw, int sh, int sw, int pt, int pl,            \
                                int OH, int OW, int dh, int dw) {                          \
    const T *restrict src = cols;                                                          \
    memset(dx, 0, (size_t)C * H * W * sizeof(T));                                          \
    for (int c = 0; c < C; c++)                                                            \
    for (int i = 0; i < kh * dh; i += dh)                                                  \
    for (int j = 0; j < kw * dw; j += dw) {                                                \
        ptrdiff_t lo, hi, off = (ptrdiff_t)j - pl;                                         \
        cnn_valid_cols(W, OW, sw, pl, j, &lo, &hi);                                        \
        for (int oh = 0; oh < OH; oh++, src += OW) {                                       \
            int ih = oh * sh + i - pt;                                                     \
            if (ih < 0 || ih >= H) continue;                                               \
            T *restrict row = dx + ((ptrdiff_t)c * H + ih) * W;                            \
            if (sw == 1)                                                                   \
                for (ptrdiff_t ow = lo; ow < hi; ow++) row[ow + off] += src[ow];           \
            else                                                                           \
                for (ptrdiff_t ow = lo; ow < hi; ow++) row[ow * sw + off] += src[ow];      \
        }                                                                                  \
    }                                                                                      \
}

CNN_DEFINE_IM2COL(f, float)
CNN_DEFINE_IM2COL(d, double)

#endif /* CNN_IM2COL_H */
