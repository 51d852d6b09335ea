/* im2col / col2im for one image, NCHW, C-contiguous; one definition per float type.
 *
 * cols[(c*kh + i)*kw + j, oh*OW + ow] = xpad[c, oh*sh + i*dh, ow*sw + j*dw], the rows of cols
 * ld >= OH*OW apart, where xpad is x with pt rows on top and pl columns on the left (the
 * bottom/right padding is implied by OH, OW) and (dh, dw) the dilation (1 for a plain kernel).
 * Written in plain C loops with `restrict` rather than memcpy/memset calls: the rows are
 * short (an output row, e.g. 14 or 28 values), so library calls per row cost more than the
 * copy, and these loops vectorise.
 */
#ifndef CNN_IM2COL_H
#define CNN_IM2COL_H

#include <stddef.h>
#include <string.h>

/* The rows added here are short (4-32 values): gcc would turn the plane-clearing loop into a
   memset call, costing more than the loop. */
#if defined(__GNUC__) && !defined(__clang__)
#define CNN_INLINE_LOOPS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define CNN_INLINE_LOOPS
#endif

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

/* col2im with column strides above one accumulates into "phase planes" of the padded input
   channel, plane r holding the cells xpad[h, q*sw + r], so that every tap's row adds into one
   contiguous run instead of a strided scatter; the planes are then merged back into dx. (The
   same planes did not speed up im2col: its short rows cost the same either way.) Plane sizes:
   Hn rows (the padded rows any tap reaches) and Wq columns each. */
static inline void cnn_phase_plane_size(int kh, int kw, int sh, int sw, int OH, int OW,
                                        int dh, int dw, ptrdiff_t *Hn, ptrdiff_t *Wq) {
    *Hn = (ptrdiff_t)(OH - 1) * sh + (ptrdiff_t)(kh - 1) * dh + 1;
    *Wq = (ptrdiff_t)OW + ((ptrdiff_t)(kw - 1) * dw) / sw;
}

/* Elements of T that cnn_col2im_* needs in its `work` argument: the sw phase planes; 0 for
   column stride 1 (work may then be NULL). */
static inline ptrdiff_t cnn_col2im_work_size(int kh, int kw, int sh, int sw, int OH, int OW,
                                             int dh, int dw) {
    ptrdiff_t Hn, Wq;
    if (sw <= 1) return 0;
    cnn_phase_plane_size(kh, kw, sh, sw, OH, OW, dh, dw, &Hn, &Wq);
    return (ptrdiff_t)sw * Hn * Wq;
}

#define CNN_DEFINE_IM2COL(SUFFIX, T)                                                       \
static void cnn_im2col_##SUFFIX(const T *restrict x, T *restrict cols, ptrdiff_t ld,        \
                                int C, int H, int W,                                       \
                                int kh, int kw, int sh, int sw, int pt, int pl,            \
                                int OH, int OW, int dh, int dw) {                          \
    T *restrict dst = cols;                                                                \
    ptrdiff_t gap = ld - (ptrdiff_t)OH * OW; /* from the end of one row to the next */     \
    for (int c = 0; c < C; c++)                                                            \
    for (int i = 0; i < kh * dh; i += dh)                                                  \
    for (int j = 0; j < kw * dw; j += dw, dst += gap) {                                    \
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
/* col2im through the phase planes (in `planes`, cnn_col2im_work_size elements): each plane  \
   cell gathers the same terms in the same order as the direct loop below, so the two agree \
   bit for bit. */                                                                         \
CNN_INLINE_LOOPS static void cnn_col2im_phased_##SUFFIX(                                   \
        const T *restrict cols, ptrdiff_t ld, T *restrict dx, T *restrict planes, int C,   \
        int H, int W, int kh, int kw, int sh, int sw, int pt, int pl, int OH, int OW,      \
        int dh, int dw) {                                                                  \
    ptrdiff_t Hn, Wq;                                                                      \
    cnn_phase_plane_size(kh, kw, sh, sw, OH, OW, dh, dw, &Hn, &Wq);                        \
    ptrdiff_t psz = Hn * Wq;                                                               \
    const T *restrict src = cols;                                                          \
    ptrdiff_t h_end = Hn < (ptrdiff_t)H + pt ? Hn : (ptrdiff_t)H + pt;                     \
    memset(dx, 0, (size_t)C * H * W * sizeof(T));                                          \
    for (int c = 0; c < C; c++) {                                                          \
        for (ptrdiff_t e = 0; e < sw * psz; e++) planes[e] = 0;                            \
        for (int i = 0; i < kh * dh; i += dh)                                              \
        for (int j = 0; j < kw * dw; j += dw, src += ld) {                                 \
            T *restrict acc = planes + (j % sw) * psz + (ptrdiff_t)i * Wq + j / sw;        \
            for (int oh = 0; oh < OH; oh++) {                                              \
                T *restrict a = acc + (ptrdiff_t)oh * sh * Wq;                             \
                const T *restrict s = src + (ptrdiff_t)oh * OW;                            \
                for (int ow = 0; ow < OW; ow++) a[ow] += s[ow];                            \
            }                                                                              \
        }                                                                                  \
        T *restrict dxc = dx + (ptrdiff_t)c * H * W;                                       \
        for (int r = 0; r < sw; r++) {                                                     \
            /* plane r's column q is padded column q*sw + r; [l, u) the real ones */       \
            ptrdiff_t l, u, off = (ptrdiff_t)r - pl;                                       \
            cnn_valid_cols(W, (int)Wq, sw, pl, r, &l, &u);                                 \
            for (ptrdiff_t h = pt; h < h_end; h++) {                                       \
                const T *restrict a = planes + r * psz + h * Wq;                           \
                T *restrict row = dxc + (h - pt) * W;                                      \
                if (sw == 2)                                                               \
                    for (ptrdiff_t q = l; q < u; q++) row[2 * q + off] = a[q];             \
                else                                                                       \
                    for (ptrdiff_t q = l; q < u; q++) row[q * sw + off] = a[q];            \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
}                                                                                          \
                                                                                           \
/* dx = 0, then dx[c, ih, iw] += cols[row, p] for every cell im2col read (c, ih, iw) from.
   Here and above, i and j are the tap offsets (row/column index times the dilation). `work`
   holds cnn_col2im_work_size elements (NULL allowed when that is 0). */                  \
static void cnn_col2im_##SUFFIX(const T *restrict cols, ptrdiff_t ld, T *restrict dx,      \
                                T *restrict work, int C, int H, int W,                     \
                                int kh, int kw, int sh, int sw, int pt, int pl,            \
                                int OH, int OW, int dh, int dw) {                          \
    if (sw > 1) {                                                                          \
        cnn_col2im_phased_##SUFFIX(cols, ld, dx, work, C, H, W, kh, kw, sh, sw, pt, pl,    \
                                   OH, OW, dh, dw);                                        \
        return;                                                                            \
    }                                                                                      \
    const T *restrict src = cols;                                                          \
    ptrdiff_t gap = ld - (ptrdiff_t)OH * OW;                                               \
    memset(dx, 0, (size_t)C * H * W * sizeof(T));                                          \
    for (int c = 0; c < C; c++)                                                            \
    for (int i = 0; i < kh * dh; i += dh)                                                  \
    for (int j = 0; j < kw * dw; j += dw, src += gap) {                                    \
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
