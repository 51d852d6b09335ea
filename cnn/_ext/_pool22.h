/* The 2x2 / stride-2 max-pool row kernel: one definition per float type.
 *
 * Windows ow in [lo, hi) of one output row; r0 points at the window row's first cell, `base` is
 * its flat index in the (H, W) plane. Ties keep the earlier cell (strict '>'). Returns nonzero if
 * a NaN was seen (the caller then redoes the plane with NaN-aware code).
 *
 * Written for the vectoriser: every comparison is computed and selected without a branch (on
 * real data each one is a coin toss), and the winner is first recorded as a 32-bit code
 * (0..3: row-major position in the window) in a short stack buffer, so that the first loop
 * holds only 32-bit lanes; a second loop widens the codes to flat int64 indices. gcc
 * vectorises both (with -fno-trapping-math, which setup.py passes: ordered comparisons may not
 * be speculated otherwise).
 */
#ifndef CNN_POOL22_H
#define CNN_POOL22_H

#include "_simd.h"

#define CNN_POOL22_CHUNK 256

#define CNN_DEFINE_POOL22_ROW(ISA, NAME, T)                                                  \
CNN_ATTR(ISA) static int NAME##_##ISA(const T *restrict r0, ptrdiff_t W, ptrdiff_t base,    \
                                  ptrdiff_t lo, ptrdiff_t hi, T *restrict y,                \
                                  ptrdiff_t *restrict arg) {                                \
    const T *restrict r1 = r0 + W;                                                          \
    int nan = 0;                                                                            \
    int code[CNN_POOL22_CHUNK];                                                             \
    for (ptrdiff_t c0 = lo; c0 < hi; c0 += CNN_POOL22_CHUNK) {                              \
        const ptrdiff_t c1 = hi - c0 < CNN_POOL22_CHUNK ? hi : c0 + CNN_POOL22_CHUNK;       \
        for (ptrdiff_t ow = c0; ow < c1; ow++) {                                            \
            T a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];       \
            nan |= (a != a) | (b != b) | (c != c) | (d != d);                               \
            int g0 = b > a, g1 = d > c;                                                     \
            T m0 = g0 ? b : a, m1 = g1 ? d : c;                                             \
            int g2 = m1 > m0;                                                               \
            y[ow] = g2 ? m1 : m0;                                                           \
            code[ow - c0] = g2 ? 2 + g1 : g0;                                               \
        }                                                                                   \
        for (ptrdiff_t ow = c0; ow < c1; ow++) {                                            \
            const ptrdiff_t k = code[ow - c0];                                              \
            arg[ow] = base + 2 * ow + (k & 1) + (k >> 1) * W;                               \
        }                                                                                   \
    }                                                                                       \
    return nan;                                                                             \
}

/* The loop above, left to the vectoriser, is the portable float copy; AVX2 and AVX-512F CPUs
 * run the hand-written copies below. Its vectorised clones were slower: on an AVX-512 Xeon
 * (Sapphire Rapids class) 64x32x28x28 took 0.78 ms (portable, SSE2), 1.15 ms (AVX2 clone) and
 * 1.65 ms (AVX-512F clone), min of 31, 1 thread, each copy in its own process, four rounds.
 * The hand-written ones on an AMD EPYC Zen 4 (AVX-512F), same protocol (64x32x28x28 /
 * 64x64x14x14, ms, ranges over four rounds on a noisy host): portable 0.79-1.03 / 0.73-0.99,
 * AVX2 0.57-1.02 / 0.48-0.89, AVX-512F 0.35-0.55 / 0.34-0.53 at 1 thread. double keeps the
 * clones of the loop (AVX2 only; AVX-512F CPUs run the portable copy). */
CNN_DEFINE_POOL22_ROW(default, cnn_pool22_row_f, float)
CNN_FOR_EACH_ISA_NO512(CNN_DEFINE_POOL22_ROW, cnn_pool22_row_d, double)

#if CNN_HAVE_CLONES
#include <immintrin.h>
#include <stdint.h>

/* float, AVX2, by hand: gcc vectorised the loop above only for rows of 8 or more windows and
 * ran the DESIGN CNN's 14- and 7-window rows as scalar compares (64x64x14x14 took 1.1 ms at 2
 * threads, about 5 GB/s). Here 8 windows per step, a short row in one masked step: the two
 * window rows loaded as 16 floats each, split into their even and odd columns a, b (row 0)
 * and c, d (row 1), then the same selects as the portable loop, the index computed in 32-bit
 * lanes (a plane of fewer than 2^31 cells; larger ones take the portable loop) and widened.
 * Masked-off lanes load +0.0 and are never stored. */
__attribute__((target("avx2"))) static int cnn_pool22_row_f_avx2(
        const float *restrict r0, ptrdiff_t W, ptrdiff_t base, ptrdiff_t lo, ptrdiff_t hi,
        float *restrict y, ptrdiff_t *restrict arg) {
    if (hi <= lo) return 0;
    if (base < 0 || base + 2 * hi + W + 1 > INT32_MAX)
        return cnn_pool22_row_f_default(r0, W, base, lo, hi, y, arg);
    const float *restrict r1 = r0 + W;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i step2 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    const __m256i width = _mm256_set1_epi32((int)W);
    __m256 nan = _mm256_setzero_ps();
    for (ptrdiff_t ow = lo; ow < hi; ow += 8) {
        const ptrdiff_t n = hi - ow < 8 ? hi - ow : 8;
        const float *p = r0 + 2 * ow, *q = r1 + 2 * ow;
        __m256 p0, p1, q0, q1;
        if (n == 8) {
            p0 = _mm256_loadu_ps(p); p1 = _mm256_loadu_ps(p + 8);
            q0 = _mm256_loadu_ps(q); q1 = _mm256_loadu_ps(q + 8);
        } else {
            const __m256i cells = _mm256_set1_epi32((int)(2 * n));
            const __m256i m0 = _mm256_cmpgt_epi32(cells, lane);
            const __m256i m1 = _mm256_cmpgt_epi32(
                cells, _mm256_add_epi32(lane, _mm256_set1_epi32(8)));
            p0 = _mm256_maskload_ps(p, m0); p1 = _mm256_maskload_ps(p + 8, m1);
            q0 = _mm256_maskload_ps(q, m0); q1 = _mm256_maskload_ps(q + 8, m1);
        }
        /* shuffle gives [0 2 8 10 | 4 6 12 14] of (p0, p1); the 64-bit permute puts it in order */
        const __m256 a = _mm256_castpd_ps(_mm256_permute4x64_pd(
            _mm256_castps_pd(_mm256_shuffle_ps(p0, p1, 0x88)), 0xD8));
        const __m256 b = _mm256_castpd_ps(_mm256_permute4x64_pd(
            _mm256_castps_pd(_mm256_shuffle_ps(p0, p1, 0xDD)), 0xD8));
        const __m256 c = _mm256_castpd_ps(_mm256_permute4x64_pd(
            _mm256_castps_pd(_mm256_shuffle_ps(q0, q1, 0x88)), 0xD8));
        const __m256 d = _mm256_castpd_ps(_mm256_permute4x64_pd(
            _mm256_castps_pd(_mm256_shuffle_ps(q0, q1, 0xDD)), 0xD8));
        nan = _mm256_or_ps(nan, _mm256_or_ps(_mm256_cmp_ps(a, b, _CMP_UNORD_Q),
                                             _mm256_cmp_ps(c, d, _CMP_UNORD_Q)));
        const __m256 g0 = _mm256_cmp_ps(b, a, _CMP_GT_OQ), g1 = _mm256_cmp_ps(d, c, _CMP_GT_OQ);
        const __m256 m0 = _mm256_blendv_ps(a, b, g0), m1 = _mm256_blendv_ps(c, d, g1);
        const __m256 g2 = _mm256_cmp_ps(m1, m0, _CMP_GT_OQ);
        const __m256 best = _mm256_blendv_ps(m0, m1, g2);
        /* flat index: base + 2 ow + 2 j, + 1 for the odd column (g1 in row 1, g0 in row 0),
           + W for row 1 (g2); a true mask is -1 */
        const __m256i odd = _mm256_castps_si256(_mm256_blendv_ps(g0, g1, g2));
        __m256i idx = _mm256_add_epi32(_mm256_set1_epi32((int)(base + 2 * ow)), step2);
        idx = _mm256_sub_epi32(idx, odd);
        idx = _mm256_add_epi32(idx, _mm256_and_si256(_mm256_castps_si256(g2), width));
        const __m256i lo64 = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(idx));
        const __m256i hi64 = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(idx, 1));
        if (n == 8) {
            _mm256_storeu_ps(y + ow, best);
            _mm256_storeu_si256((__m256i *)(arg + ow), lo64);
            _mm256_storeu_si256((__m256i *)(arg + ow + 4), hi64);
        } else {
            const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), lane);
            _mm256_maskstore_ps(y + ow, keep, best);
            _mm256_maskstore_epi64((long long *)(arg + ow),
                                   _mm256_cvtepi32_epi64(_mm256_castsi256_si128(keep)), lo64);
            _mm256_maskstore_epi64((long long *)(arg + ow + 4),
                                   _mm256_cvtepi32_epi64(_mm256_extracti128_si256(keep, 1)), hi64);
        }
    }
    return _mm256_movemask_ps(nan) != 0;
}

/* float, AVX-512F, by hand: the same selects on 16 windows per step (a row of up to 16 windows,
 * the DESIGN CNN's 14 and 7, in one masked step), the even and odd columns split by one
 * two-source permute each, the comparisons as mask registers. */
__attribute__((target("avx512f"))) static int cnn_pool22_row_f_avx512f(
        const float *restrict r0, ptrdiff_t W, ptrdiff_t base, ptrdiff_t lo, ptrdiff_t hi,
        float *restrict y, ptrdiff_t *restrict arg) {
    if (hi <= lo) return 0;
    if (base < 0 || base + 2 * hi + W + 1 > INT32_MAX)
        return cnn_pool22_row_f_default(r0, W, base, lo, hi, y, arg);
    const float *restrict r1 = r0 + W;
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512i step2 = even;
    const __m512i one = _mm512_set1_epi32(1), width = _mm512_set1_epi32((int)W);
    __mmask16 nan = 0;
    for (ptrdiff_t ow = lo; ow < hi; ow += 16) {
        const ptrdiff_t n = hi - ow < 16 ? hi - ow : 16;
        /* cells 0..2n-1 of each window row: the first 16 in p0/q0, the rest in p1/q1 */
        const __mmask16 keep = (__mmask16)((1u << n) - 1u);
        const __mmask16 k0 = n >= 8 ? (__mmask16)0xFFFF : (__mmask16)((1u << (2 * n)) - 1u);
        const __mmask16 k1 = n > 8 ? (__mmask16)((1u << (2 * n - 16)) - 1u) : (__mmask16)0;
        const float *p = r0 + 2 * ow, *q = r1 + 2 * ow;
        const __m512 p0 = _mm512_maskz_loadu_ps(k0, p), p1 = _mm512_maskz_loadu_ps(k1, p + 16);
        const __m512 q0 = _mm512_maskz_loadu_ps(k0, q), q1 = _mm512_maskz_loadu_ps(k1, q + 16);
        const __m512 a = _mm512_permutex2var_ps(p0, even, p1);
        const __m512 b = _mm512_permutex2var_ps(p0, odd, p1);
        const __m512 c = _mm512_permutex2var_ps(q0, even, q1);
        const __m512 d = _mm512_permutex2var_ps(q0, odd, q1);
        nan |= _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(c, d, _CMP_UNORD_Q);
        const __mmask16 g0 = _mm512_cmp_ps_mask(b, a, _CMP_GT_OQ);
        const __mmask16 g1 = _mm512_cmp_ps_mask(d, c, _CMP_GT_OQ);
        const __m512 m0 = _mm512_mask_blend_ps(g0, a, b), m1 = _mm512_mask_blend_ps(g1, c, d);
        const __mmask16 g2 = _mm512_cmp_ps_mask(m1, m0, _CMP_GT_OQ);
        const __m512 best = _mm512_mask_blend_ps(g2, m0, m1);
        /* flat index: base + 2 ow + 2 j, + 1 for the odd column (g1 in row 1, g0 in row 0),
           + W for row 1 (g2) */
        const __mmask16 right = (__mmask16)((g2 & g1) | (~g2 & g0));
        __m512i idx = _mm512_add_epi32(_mm512_set1_epi32((int)(base + 2 * ow)), step2);
        idx = _mm512_mask_add_epi32(idx, right, idx, one);
        idx = _mm512_mask_add_epi32(idx, g2, idx, width);
        _mm512_mask_storeu_ps(y + ow, keep, best);
        _mm512_mask_storeu_epi64(arg + ow, (__mmask8)keep,
                                 _mm512_cvtepi32_epi64(_mm512_castsi512_si256(idx)));
        _mm512_mask_storeu_epi64(arg + ow + 8, (__mmask8)(keep >> 8),
                                 _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(idx, 1)));
    }
    return nan != 0;
}

/* The hand-written copy of the process's level; the portable loop below AVX2. */
#define cnn_pool22_row_f                                                             \
    (cnn_kernel_isa() >= CNN_ISA_AVX512F ? cnn_pool22_row_f_avx512f                  \
     : cnn_kernel_isa() == CNN_ISA_AVX2 ? cnn_pool22_row_f_avx2 : cnn_pool22_row_f_default)
#else
#define cnn_pool22_row_f cnn_pool22_row_f_default
#endif
#define cnn_pool22_row_d CNN_DISPATCH_NO512_PORTABLE(cnn_pool22_row_d)

/* One (H, W) plane max-pooled into (OH, OW) with the argmax (flat indices into the plane):
 * the training max-pool's rule, in one place for _pool.pyx (the pooling layer) and _fused.pyx
 * (the training conv + pool, pooling each conv output plane while it is in cache). Padded
 * cells are never candidates, the first cell of a window in row-major order starts the running
 * maximum and a strict '>' replaces it, and a NaN wins its window: a first pass with plain
 * comparisons notes whether it saw a NaN, and only then is the plane redone NaN-aware. The
 * 2x2 / stride-2 interior runs the row kernel above; the edges and other windows run the
 * window loop. */
#define CNN_DEFINE_POOL_PLANE_ARG(NAME, ROW22, T)                                            \
static int NAME##_windows(const T *restrict x, ptrdiff_t W, ptrdiff_t h0, ptrdiff_t h1,     \
                          int kw, int sw, int pl, ptrdiff_t ow0, ptrdiff_t ow1, int nan_aware, \
                          T *restrict yr, ptrdiff_t *restrict ar) {                         \
    int nan = 0;                                                                            \
    for (ptrdiff_t ow = ow0; ow < ow1; ow++) {                                              \
        ptrdiff_t w0 = ow * sw - pl, w1 = w0 + kw;                                          \
        if (w0 < 0) w0 = 0;                                                                 \
        if (w1 > W) w1 = W;                                                                 \
        ptrdiff_t best_i = h0 * W + w0;                                                     \
        T best = x[best_i];                                                                 \
        for (ptrdiff_t ih = h0; ih < h1; ih++)                                              \
            for (ptrdiff_t iw = w0; iw < w1; iw++) {                                        \
                const T v = x[ih * W + iw];                                                 \
                int gt;                                                                     \
                nan |= v != v;                                                              \
                if (nan_aware)                                                              \
                    gt = (v > best) | ((v != v) & (best == best));                          \
                else                                                                        \
                    gt = v > best;                                                          \
                best = gt ? v : best;                                                       \
                best_i = gt ? ih * W + iw : best_i;                                         \
            }                                                                               \
        yr[ow] = best;                                                                      \
        ar[ow] = best_i;                                                                    \
    }                                                                                       \
    return nan;                                                                             \
}                                                                                           \
                                                                                            \
static void NAME(const T *restrict x, ptrdiff_t H, ptrdiff_t W, T *restrict y,              \
                 ptrdiff_t *restrict arg, ptrdiff_t OH, ptrdiff_t OW, int kh, int kw, int sh, \
                 int sw, int pt, int pl) {                                                  \
    const int fast22 = kh == 2 && kw == 2 && sh == 2 && sw == 2;                            \
    /* interior columns: windows that lie wholly inside [0, W) */                           \
    ptrdiff_t ow_lo = (pl + sw - 1) / sw;                                                   \
    ptrdiff_t ow_hi = W + pl >= kw ? (W + pl - kw) / sw + 1 : 0;                            \
    if (ow_hi > OW) ow_hi = OW;                                                             \
    if (ow_lo > OW) ow_lo = OW;                                                             \
    if (ow_hi < ow_lo) ow_hi = ow_lo;                                                       \
    for (int attempt = 0; attempt < 2; attempt++) {                                         \
        int nan = 0;                                                                        \
        for (ptrdiff_t oh = 0; oh < OH; oh++) {                                             \
            ptrdiff_t h0 = oh * sh - pt, h1 = h0 + kh;                                      \
            T *restrict yr = y + oh * OW;                                                   \
            ptrdiff_t *restrict ar = arg + oh * OW;                                         \
            if (h0 < 0) h0 = 0;                                                             \
            if (h1 > H) h1 = H;                                                             \
            if (attempt == 0 && fast22 && h1 - h0 == 2) {                                   \
                nan |= ROW22(x + h0 * W - pl, W, h0 * W - pl, ow_lo, ow_hi, yr, ar);        \
                nan |= NAME##_windows(x, W, h0, h1, kw, sw, pl, 0, ow_lo, 0, yr, ar);       \
                nan |= NAME##_windows(x, W, h0, h1, kw, sw, pl, ow_hi, OW, 0, yr, ar);      \
            } else {                                                                        \
                nan |= NAME##_windows(x, W, h0, h1, kw, sw, pl, 0, OW, attempt, yr, ar);    \
            }                                                                               \
        }                                                                                   \
        if (!nan) break;                                                                    \
    }                                                                                       \
}
CNN_DEFINE_POOL_PLANE_ARG(cnn_maxpool_plane_arg_f, cnn_pool22_row_f, float)
CNN_DEFINE_POOL_PLANE_ARG(cnn_maxpool_plane_arg_d, cnn_pool22_row_d, double)

#endif
