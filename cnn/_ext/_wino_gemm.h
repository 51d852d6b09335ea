/* The 16 products of a Winograd F(2x2, 3x3) block, float32, register-blocked:
 *
 *     M[e][r][s] = sum_{c < Cin} U[e][r][c] * V[e][c][s]    e < products, r < rows <= 8, s < S,
 *
 * with U[e][r][c] at U[e * lde_u + r * Cin + c], V[e][c][s] at V[e * lde_v + c * ldv + s] and
 * M[e][r][s] at M[e * lde_m + r * ldm + s]. S must be a multiple of CNN_WINO_GEMM_SLOTS (16).
 * products is 16 for a Winograd block; 1 makes it a plain GEMM (the im2col product of a small
 * batch at inference, where OpenBLAS spends as long packing the columns as multiplying).
 *
 * Why not BLAS: a tile of 8 rows x 32 slots stays in registers while c runs, and the caller
 * runs the output transform on 8 rows at a time while their M is in cache, so the block's full
 * M (16 x Kout x S) is never written; and an output's bits do not depend on the blocking. On the
 * DESIGN CNN's 14x14 layer it runs at about the rate of OpenBLAS's small-matrix kernel (both near
 * the FMA rate), on VGG-sized layers about 20 % faster (bench/RESULTS.md). A last 16 slots take
 * one zmm per row.
 *
 * Every element is one chain of fused multiply-adds over c = 0, 1, ..., Cin - 1 from +0.0,
 * whatever the clone and the blocking: the AVX-512F clone (8 rows x 2 zmm), the AVX2 + FMA one
 * (4 rows x 2 ymm, twice) and the portable one (fmaf) give the same bits, and the result of a
 * slot does not depend on which block, thread or batch size it was computed in.
 */
#ifndef CNN_WINO_GEMM_H
#define CNN_WINO_GEMM_H

#include <math.h>
#include <stddef.h>

#include "_simd.h"

#define CNN_WINO_GEMM_ROWS 8
#define CNN_WINO_GEMM_SLOTS 16

/* Slots rounded up to a multiple of CNN_WINO_GEMM_SLOTS. */
#define CNN_WINO_GEMM_PAD(t) \
    ((((ptrdiff_t)(t) + CNN_WINO_GEMM_SLOTS - 1) / CNN_WINO_GEMM_SLOTS) * CNN_WINO_GEMM_SLOTS)

/* Any number of rows, one row at a time: the portable copy, and the row tail (rows < 8) of the
 * vector clones, compiled once per clone (ISA) so that fmaf becomes the FMA instruction there. */
#define CNN_DEFINE_WINO_GEMM_ROWS(ISA, ATTR)                                                 \
ATTR static void cnn_wino_gemm_rows_f_##ISA(const float *restrict u, int Cin, int rows,      \
                                            const float *restrict v, ptrdiff_t ldv,          \
                                            ptrdiff_t S, float *restrict m, ptrdiff_t ldm) { \
    for (int r = 0; r < rows; r++) {                                                         \
        float *restrict mr = m + (ptrdiff_t)r * ldm;                                         \
        const float *restrict ur = u + (ptrdiff_t)r * Cin;                                   \
        for (ptrdiff_t s = 0; s < S; s++) mr[s] = 0.0f;                                      \
        for (int c = 0; c < Cin; c++) {                                                      \
            const float w = ur[c];                                                           \
            const float *restrict vc = v + (ptrdiff_t)c * ldv;                               \
            for (ptrdiff_t s = 0; s < S; s++) mr[s] = fmaf(w, vc[s], mr[s]);                 \
        }                                                                                    \
    }                                                                                        \
}

CNN_DEFINE_WINO_GEMM_ROWS(default, )

static void cnn_wino_gemm_f_default(const float *restrict U, ptrdiff_t lde_u, int Cin, int rows,
                                    const float *restrict V, ptrdiff_t ldv, ptrdiff_t lde_v,
                                    ptrdiff_t S, float *restrict M, ptrdiff_t ldm,
                                    ptrdiff_t lde_m, int products) {
    for (int e = 0; e < products; e++)
        cnn_wino_gemm_rows_f_default(U + e * lde_u, Cin, rows, V + e * lde_v, ldv, S,
                                     M + e * lde_m, ldm);
}

#if CNN_HAVE_CLONES
#include <immintrin.h>

CNN_DEFINE_WINO_GEMM_ROWS(avx512f, __attribute__((target("avx512f"))))
CNN_DEFINE_WINO_GEMM_ROWS(avx2, __attribute__((target("avx2,fma"))))

__attribute__((target("avx512f"))) static void cnn_wino_gemm_f_avx512f(
        const float *restrict U, ptrdiff_t lde_u, int Cin, int rows, const float *restrict V,
        ptrdiff_t ldv, ptrdiff_t lde_v, ptrdiff_t S, float *restrict M, ptrdiff_t ldm,
        ptrdiff_t lde_m, int products) {
    for (int e = 0; e < products; e++) {
        const float *restrict u = U + e * lde_u;
        const float *restrict v = V + e * lde_v;
        float *restrict m = M + e * lde_m;
        if (rows < 8) {
            cnn_wino_gemm_rows_f_avx512f(u, Cin, rows, v, ldv, S, m, ldm);
            continue;
        }
        const float *restrict u0 = u, *restrict u1 = u + Cin, *restrict u2 = u + 2 * Cin;
        const float *restrict u3 = u + 3 * Cin, *restrict u4 = u + 4 * Cin;
        const float *restrict u5 = u + 5 * Cin, *restrict u6 = u + 6 * Cin;
        const float *restrict u7 = u + 7 * Cin;
        ptrdiff_t s = 0;
        for (; s + 32 <= S; s += 32) {
            __m512 a0 = _mm512_setzero_ps(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0;
            __m512 a3 = a0, b3 = a0, a4 = a0, b4 = a0, a5 = a0, b5 = a0, a6 = a0, b6 = a0;
            __m512 a7 = a0, b7 = a0;
            const float *restrict vs = v + s;
            for (int c = 0; c < Cin; c++) {
                const __m512 x = _mm512_loadu_ps(vs), y = _mm512_loadu_ps(vs + 16);
                __m512 w;
                w = _mm512_set1_ps(u0[c]); a0 = _mm512_fmadd_ps(w, x, a0); b0 = _mm512_fmadd_ps(w, y, b0);
                w = _mm512_set1_ps(u1[c]); a1 = _mm512_fmadd_ps(w, x, a1); b1 = _mm512_fmadd_ps(w, y, b1);
                w = _mm512_set1_ps(u2[c]); a2 = _mm512_fmadd_ps(w, x, a2); b2 = _mm512_fmadd_ps(w, y, b2);
                w = _mm512_set1_ps(u3[c]); a3 = _mm512_fmadd_ps(w, x, a3); b3 = _mm512_fmadd_ps(w, y, b3);
                w = _mm512_set1_ps(u4[c]); a4 = _mm512_fmadd_ps(w, x, a4); b4 = _mm512_fmadd_ps(w, y, b4);
                w = _mm512_set1_ps(u5[c]); a5 = _mm512_fmadd_ps(w, x, a5); b5 = _mm512_fmadd_ps(w, y, b5);
                w = _mm512_set1_ps(u6[c]); a6 = _mm512_fmadd_ps(w, x, a6); b6 = _mm512_fmadd_ps(w, y, b6);
                w = _mm512_set1_ps(u7[c]); a7 = _mm512_fmadd_ps(w, x, a7); b7 = _mm512_fmadd_ps(w, y, b7);
                vs += ldv;
            }
            float *restrict ms = m + s;
            _mm512_storeu_ps(ms, a0); _mm512_storeu_ps(ms + 16, b0); ms += ldm;
            _mm512_storeu_ps(ms, a1); _mm512_storeu_ps(ms + 16, b1); ms += ldm;
            _mm512_storeu_ps(ms, a2); _mm512_storeu_ps(ms + 16, b2); ms += ldm;
            _mm512_storeu_ps(ms, a3); _mm512_storeu_ps(ms + 16, b3); ms += ldm;
            _mm512_storeu_ps(ms, a4); _mm512_storeu_ps(ms + 16, b4); ms += ldm;
            _mm512_storeu_ps(ms, a5); _mm512_storeu_ps(ms + 16, b5); ms += ldm;
            _mm512_storeu_ps(ms, a6); _mm512_storeu_ps(ms + 16, b6); ms += ldm;
            _mm512_storeu_ps(ms, a7); _mm512_storeu_ps(ms + 16, b7);
        }
        if (s < S) {   /* the last 16 slots */
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
            __m512 a6 = a0, a7 = a0;
            const float *restrict vs = v + s;
            for (int c = 0; c < Cin; c++) {
                const __m512 x = _mm512_loadu_ps(vs);
                a0 = _mm512_fmadd_ps(_mm512_set1_ps(u0[c]), x, a0);
                a1 = _mm512_fmadd_ps(_mm512_set1_ps(u1[c]), x, a1);
                a2 = _mm512_fmadd_ps(_mm512_set1_ps(u2[c]), x, a2);
                a3 = _mm512_fmadd_ps(_mm512_set1_ps(u3[c]), x, a3);
                a4 = _mm512_fmadd_ps(_mm512_set1_ps(u4[c]), x, a4);
                a5 = _mm512_fmadd_ps(_mm512_set1_ps(u5[c]), x, a5);
                a6 = _mm512_fmadd_ps(_mm512_set1_ps(u6[c]), x, a6);
                a7 = _mm512_fmadd_ps(_mm512_set1_ps(u7[c]), x, a7);
                vs += ldv;
            }
            float *restrict ms = m + s;
            _mm512_storeu_ps(ms, a0); ms += ldm; _mm512_storeu_ps(ms, a1); ms += ldm;
            _mm512_storeu_ps(ms, a2); ms += ldm; _mm512_storeu_ps(ms, a3); ms += ldm;
            _mm512_storeu_ps(ms, a4); ms += ldm; _mm512_storeu_ps(ms, a5); ms += ldm;
            _mm512_storeu_ps(ms, a6); ms += ldm; _mm512_storeu_ps(ms, a7);
        }
    }
}

/* AVX2 has 16 ymm registers: 4 rows x 2 ymm accumulators per pass, two passes per 8 rows. */
__attribute__((target("avx2,fma"))) static void cnn_wino_gemm_f_avx2(
        const float *restrict U, ptrdiff_t lde_u, int Cin, int rows, const float *restrict V,
        ptrdiff_t ldv, ptrdiff_t lde_v, ptrdiff_t S, float *restrict M, ptrdiff_t ldm,
        ptrdiff_t lde_m, int products) {
    for (int e = 0; e < products; e++) {
        const float *restrict u = U + e * lde_u;
        const float *restrict v = V + e * lde_v;
        float *restrict m = M + e * lde_m;
        if (rows < 8) {
            cnn_wino_gemm_rows_f_avx2(u, Cin, rows, v, ldv, S, m, ldm);
            continue;
        }
        for (int half = 0; half < 8; half += 4) {
            const float *restrict u0 = u + half * Cin, *restrict u1 = u0 + Cin;
            const float *restrict u2 = u1 + Cin, *restrict u3 = u2 + Cin;
            for (ptrdiff_t s = 0; s < S; s += 16) {
                __m256 a0 = _mm256_setzero_ps(), b0 = a0, a1 = a0, b1 = a0;
                __m256 a2 = a0, b2 = a0, a3 = a0, b3 = a0;
                const float *restrict vs = v + s;
                for (int c = 0; c < Cin; c++) {
                    const __m256 x = _mm256_loadu_ps(vs), y = _mm256_loadu_ps(vs + 8);
                    __m256 w;
                    w = _mm256_set1_ps(u0[c]); a0 = _mm256_fmadd_ps(w, x, a0); b0 = _mm256_fmadd_ps(w, y, b0);
                    w = _mm256_set1_ps(u1[c]); a1 = _mm256_fmadd_ps(w, x, a1); b1 = _mm256_fmadd_ps(w, y, b1);
                    w = _mm256_set1_ps(u2[c]); a2 = _mm256_fmadd_ps(w, x, a2); b2 = _mm256_fmadd_ps(w, y, b2);
                    w = _mm256_set1_ps(u3[c]); a3 = _mm256_fmadd_ps(w, x, a3); b3 = _mm256_fmadd_ps(w, y, b3);
                    vs += ldv;
                }
                float *restrict ms = m + (ptrdiff_t)half * ldm + s;
                _mm256_storeu_ps(ms, a0); _mm256_storeu_ps(ms + 8, b0); ms += ldm;
                _mm256_storeu_ps(ms, a1); _mm256_storeu_ps(ms + 8, b1); ms += ldm;
                _mm256_storeu_ps(ms, a2); _mm256_storeu_ps(ms + 8, b2); ms += ldm;
                _mm256_storeu_ps(ms, a3); _mm256_storeu_ps(ms + 8, b3);
            }
        }
    }
}

/* The AVX2 clone also needs FMA (every AVX2 CPU from Intel and AMD has it; checked anyway). */
static inline int cnn_wino_gemm_level(void) {
    static int level = -1;
    if (level < 0) {
        int isa = cnn_kernel_isa();
        if (isa == CNN_ISA_AVX2 && !__builtin_cpu_supports("fma")) isa = CNN_ISA_DEFAULT;
        level = isa;
    }
    return level;
}
#define cnn_wino_gemm_f                                                                     \
    (cnn_wino_gemm_level() >= CNN_ISA_AVX512F ? cnn_wino_gemm_f_avx512f                     \
     : cnn_wino_gemm_level() >= CNN_ISA_AVX2 ? cnn_wino_gemm_f_avx2 : cnn_wino_gemm_f_default)
#else
#define cnn_wino_gemm_f cnn_wino_gemm_f_default
#endif

#endif
