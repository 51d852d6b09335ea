/* The 16 products of a Winograd F(2x2, 3x3) weight gradient, float32, register-blocked:
 *
 *     Mw[r][c] (+)= sum_{t < T} D[r][t] * V[c][t]        r < Kout, c < C1,
 *
 * with D[r][t] at D[r * ldd + t] (the transformed output gradient of one product, Kout rows)
 * and V[c][t] at V[c * ldv + t] (the transformed input, C1 rows, the last one a row of ones
 * whose sums give the bias gradient), Mw row-major (Kout, C1). ``accumulate`` 0 writes Mw,
 * 1 adds to it. _conv.pyx calls it up to OWN_WGRAD_MAX_COLS columns, for this product and
 * for the im2col weight gradient's (D = the block's dY, V = its [cols; 1]).
 *
 * Why not BLAS: the product is a long reduction (T = a block's tiles, ~400) into a small
 * output (Kout x C1, e.g. 64 x 33), so OpenBLAS's packing of both operands on every call
 * (about (Kout + C1) * T values for Kout * C1 * T multiply-adds) took as long as half its
 * kernel: 16 % of the DESIGN CNN's 14x14 weight gradient against 29 % for the multiply.
 * Here both operands are read where they lie: a block of 4 rows of D and 3 rows of V, 12
 * accumulators of 8 lanes, 7 loads per 12 fused multiply-adds.
 *
 * Every element is the same sum whatever the clone: 8 partial sums, lane l taking
 * t = l, l + 8, l + 16, ... by fused multiply-adds from +0.0 (a last partial group of t
 * masked: the missing terms are not added), then ((p0 + p4) + (p2 + p6)) + ((p1 + p5) +
 * (p3 + p7)), then added to Mw when accumulating. The portable copy (fmaf) computes exactly
 * that, so the clones give the same bits. AVX-512 CPUs run the AVX2 clone: 16-lane partial
 * sums would be another order, hence other bits. An AVX-512VL copy with the same 8-lane sums
 * and a block of 8 rows by 3 (24 of the 32 registers as accumulators, 11 loads per 24
 * multiply-adds) did not pay on an AMD EPYC Zen 4 (1 thread, C microbenchmark, min of 2,000):
 * 64 x 33 x 400 (the DESIGN CNN's 14x14 layer) 18.5-19.2 us against 18.4-19.1 for this one,
 * 32 x 10 x 3136 22.3 against 25.0, 64 x 289 x 100 67.4 against 56.7; this kernel already
 * runs at 88-90 GFLOP/s there, against 104 for a 1-thread SGEMM of 1024^3.
 */
#ifndef CNN_WINO_WGRAD_H
#define CNN_WINO_WGRAD_H

#include <math.h>
#include <stddef.h>

#include "_simd.h"

#define CNN_WGRAD_LANES 8

/* The fixed horizontal order of the 8 partial sums. */
static inline float cnn_wgrad_hsum8(const float p[CNN_WGRAD_LANES]) {
    return ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7]));
}

static void cnn_wino_wgrad_f_default(const float *restrict D, ptrdiff_t ldd, int Kout,
                                     const float *restrict V, ptrdiff_t ldv, int C1,
                                     ptrdiff_t T, float *restrict Mw, int accumulate) {
    for (int r = 0; r < Kout; r++)
        for (int c = 0; c < C1; c++) {
            const float *restrict d = D + (ptrdiff_t)r * ldd, *restrict v = V + (ptrdiff_t)c * ldv;
            float p[CNN_WGRAD_LANES] = {0};
            for (ptrdiff_t t = 0; t < T; t++)
                p[t % CNN_WGRAD_LANES] = fmaf(d[t], v[t], p[t % CNN_WGRAD_LANES]);
            const float s = cnn_wgrad_hsum8(p);
            float *m = Mw + (ptrdiff_t)r * C1 + c;
            *m = accumulate ? *m + s : s;
        }
}

#if CNN_HAVE_CLONES
#include <immintrin.h>

/* cnn_wgrad_hsum8 in registers (the scalar form cost as long as a block's products): the
 * halves added lane by lane give p0+p4, p1+p5, p2+p6, p3+p7; then lanes 0+2 and 1+3; then
 * those two. The same additions in the same order (addition commutes bit for bit). */
__attribute__((target("avx2,fma"))) static inline float cnn_wgrad_hsum8_avx2(__m256 v) {
    const __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
}

/* Rows r0..r0+3 of D and c0..c0+2 of V (indices past the end clamped to the last row; their
 * results are never stored). Tried: running t in chunks of 64-512 over all blocks so that the
 * chunk of V stays in L1, the partial sums waiting in memory between chunks: no faster on the
 * DESIGN CNN's or a VGG layer's shapes (C microbenchmark), so the whole of t runs here. */
__attribute__((target("avx2,fma"))) static inline void cnn_wgrad_block_avx2(
        const float *restrict D, ptrdiff_t ldd, int Kout, const float *restrict V,
        ptrdiff_t ldv, int C1, ptrdiff_t T, float *restrict Mw, int accumulate, int r0,
        int c0) {
    const float *d0 = D + (ptrdiff_t)r0 * ldd;
    const float *d1 = D + (ptrdiff_t)(r0 + 1 < Kout ? r0 + 1 : Kout - 1) * ldd;
    const float *d2 = D + (ptrdiff_t)(r0 + 2 < Kout ? r0 + 2 : Kout - 1) * ldd;
    const float *d3 = D + (ptrdiff_t)(r0 + 3 < Kout ? r0 + 3 : Kout - 1) * ldd;
    const float *v0 = V + (ptrdiff_t)c0 * ldv;
    const float *v1 = V + (ptrdiff_t)(c0 + 1 < C1 ? c0 + 1 : C1 - 1) * ldv;
    const float *v2 = V + (ptrdiff_t)(c0 + 2 < C1 ? c0 + 2 : C1 - 1) * ldv;
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;
    __m256 a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
    ptrdiff_t t = 0;
#define CNN_WGRAD_STEP(LOAD)                                                                 \
    {                                                                                        \
        const __m256 x0 = LOAD(v0), x1 = LOAD(v1), x2 = LOAD(v2);                            \
        __m256 g;                                                                            \
        g = LOAD(d0); a00 = _mm256_fmadd_ps(g, x0, a00); a01 = _mm256_fmadd_ps(g, x1, a01);  \
        a02 = _mm256_fmadd_ps(g, x2, a02);                                                   \
        g = LOAD(d1); a10 = _mm256_fmadd_ps(g, x0, a10); a11 = _mm256_fmadd_ps(g, x1, a11);  \
        a12 = _mm256_fmadd_ps(g, x2, a12);                                                   \
        g = LOAD(d2); a20 = _mm256_fmadd_ps(g, x0, a20); a21 = _mm256_fmadd_ps(g, x1, a21);  \
        a22 = _mm256_fmadd_ps(g, x2, a22);                                                   \
        g = LOAD(d3); a30 = _mm256_fmadd_ps(g, x0, a30); a31 = _mm256_fmadd_ps(g, x1, a31);  \
        a32 = _mm256_fmadd_ps(g, x2, a32);                                                   \
    }
#define CNN_WGRAD_LOADU(p) _mm256_loadu_ps((p) + t)
    for (; t + CNN_WGRAD_LANES <= T; t += CNN_WGRAD_LANES) CNN_WGRAD_STEP(CNN_WGRAD_LOADU)
    if (t < T) {
        const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(T - t)),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
#define CNN_WGRAD_LOADM(p) _mm256_maskload_ps((p) + t, keep)
        CNN_WGRAD_STEP(CNN_WGRAD_LOADM)
#undef CNN_WGRAD_LOADM
    }
#undef CNN_WGRAD_LOADU
#undef CNN_WGRAD_STEP
    const __m256 acc[4][3] = {{a00, a01, a02}, {a10, a11, a12}, {a20, a21, a22},
                              {a30, a31, a32}};
    for (int i = 0; i < 4 && r0 + i < Kout; i++)
        for (int j = 0; j < 3 && c0 + j < C1; j++) {
            const float s = cnn_wgrad_hsum8_avx2(acc[i][j]);
            float *m = Mw + (ptrdiff_t)(r0 + i) * C1 + c0 + j;
            *m = accumulate ? *m + s : s;
        }
}

__attribute__((target("avx2,fma"))) static void cnn_wino_wgrad_f_avx2(
        const float *restrict D, ptrdiff_t ldd, int Kout, const float *restrict V,
        ptrdiff_t ldv, int C1, ptrdiff_t T, float *restrict Mw, int accumulate) {
    for (int r0 = 0; r0 < Kout; r0 += 4)
        for (int c0 = 0; c0 < C1; c0 += 3)
            cnn_wgrad_block_avx2(D, ldd, Kout, V, ldv, C1, T, Mw, accumulate, r0, c0);
}

/* The AVX2 clone needs FMA too (every AVX2 CPU from Intel and AMD has it; checked anyway). */
static inline int cnn_wino_wgrad_level(void) {
    static int level = -1;
    if (level < 0)
        level = cnn_kernel_isa() >= CNN_ISA_AVX2 && __builtin_cpu_supports("fma")
                    ? CNN_ISA_AVX2 : CNN_ISA_DEFAULT;
    return level;
}
#define cnn_wino_wgrad_f \
    (cnn_wino_wgrad_level() >= CNN_ISA_AVX2 ? cnn_wino_wgrad_f_avx2 : cnn_wino_wgrad_f_default)
#else
#define cnn_wino_wgrad_f cnn_wino_wgrad_f_default
#endif

#endif
