/* Winograd F(2x2, 3x3) transforms for a 3x3, stride-1 cross-correlation, NCHW, C-contiguous;
 * one definition per float type.
 *
 * A 2x2 output tile needs a 4x4 input tile d. With the transforms of Lavin & Gray (2016),
 *     y = A^T [ (G g G^T) (.) (B^T d B) ] A,
 * so the 36 multiplies of a direct 2x2 tile become 16 elementwise products; summed over input
 * channels those are 16 GEMMs, M[e] (Kout, T) = U[e] (Kout, Cin) @ V[e] (Cin, T), one per
 * element e = 4*r + s of the 4x4 transformed tile, over a block of T tiles.
 *
 *     B^T = [1  0 -1  0]      G = [ 1    0    0 ]      A^T = [1  1  1  0]
 *           [0  1  1  0]          [1/2  1/2  1/2]            [0  1 -1 -1]
 *           [0 -1  1  0]          [1/2 -1/2  1/2]
 *           [0  1  0 -1]          [ 0    0    1 ]
 *
 * Layouts: U[e][ko][ci] (16, Kout, Cin); V[e][ci][t] (16, Cin, ldv); M[e][ko][t] (16, Kout, ldm).
 * With th = ceil(OH / 2), tw = ceil(OW / 2), tile (a, b) of an image covers outputs
 * [2a, 2a+2) x [2b, 2b+2) and reads the zero-padded input rows [2a, 2a+4), columns [2b, 2b+4),
 * where padded (r, s) is x[r - pt, s - pl]. An image takes CNN_WINO_TILES(th, tw) =
 * th * (tw + 1) tile slots, t0 + a*(tw + 1) + b: one junk slot per tile row keeps every
 * transform loop flat and unit-stride. Outputs past (OH, OW) are computed and dropped.
 */
#ifndef CNN_WINOGRAD_H
#define CNN_WINOGRAD_H

#include <stddef.h>
#include <string.h>

#include "_simd.h"

/* Tile slots of one image, and the elements of the `pad` scratch of the input transform (two
 * split planes and a row) and of the gradient transform (two split planes of 4 x th x (tw + 1)
 * and a row of OW). */
#define CNN_WINO_TILES(th, tw) ((ptrdiff_t)(th) * ((ptrdiff_t)(tw) + 1))
/* Spare cells after each split sub-plane: the vector split's last store (see below) may run up
 * to 7 cells past a sub-row, and the tile loops' last vector loads up to 7 cells past the cells
 * the transforms use (values that only reach the masked-off lanes). */
#define CNN_WINO_SPLIT_SLACK 8
#define CNN_WINO_INPUT_SUB(th, tw) \
    (((ptrdiff_t)(th) + 1) * ((ptrdiff_t)(tw) + 1) + CNN_WINO_SPLIT_SLACK)
#define CNN_WINO_GRAD_SUB(th, tw) (CNN_WINO_TILES(th, tw) + CNN_WINO_SPLIT_SLACK)
#define CNN_WINO_PAD_SIZE(th, tw) (8 * CNN_WINO_INPUT_SUB(th, tw) + 2 * ((ptrdiff_t)(tw) + 1))
#define CNN_WINO_GRAD_PAD_SIZE(th, tw, OW) (8 * CNN_WINO_GRAD_SUB(th, tw) + (ptrdiff_t)(OW))

/* Names: cnn_wino_<name>_<f|d> for the functions built once, cnn_wino_<name>_<f|d>_<isa> for
 * the clones of the vectorised transforms (see _simd.h), dispatched under the plain name. */
#define CNN_WINO_CAT2_(a, b) cnn_wino_##a##_##b
#define CNN_WINO_CAT2(a, b) CNN_WINO_CAT2_(a, b)
#define CNN_WINO_CAT3_(a, b, c) cnn_wino_##a##_##b##_##c
#define CNN_WINO_CAT3(a, b, c) CNN_WINO_CAT3_(a, b, c)
#define CNN_WINO_ATTR_(isa) CNN_ATTR(isa)
#define CNN_WINO_FN(name) CNN_WINO_CAT2(name, CNN_WINO_SFX)
#define CNN_WINO_CLONE(name) CNN_WINO_CAT3(name, CNN_WINO_SFX, CNN_WINO_ISA)
#define CNN_WINO_ATTR CNN_WINO_ATTR_(CNN_WINO_ISA)

/* For the output transforms, in a function of float type T: the 16 streams m0..m15 of M[e] for
 * output channel ko (the e-th at M + e*KM + ko*ldm + t0), and, at slot u, the tile's four outputs
 * v00, v01, v10, v11 = act((A^T M A) + bk): A^T M combines rows (m_{4r+s}) for each column s,
 * then (A^T M) A the columns; bias bk, and ReLU when relu (NaN stays NaN). */
#define CNN_WINO_M_STREAMS(M, ko, ldm, t0, KM)                                               \
    const T *restrict m0 = (M) + (ptrdiff_t)(ko) * (ldm) + (t0), *restrict m1 = m0 + (KM);   \
    const T *restrict m2 = m1 + (KM), *restrict m3 = m2 + (KM), *restrict m4 = m3 + (KM);    \
    const T *restrict m5 = m4 + (KM), *restrict m6 = m5 + (KM), *restrict m7 = m6 + (KM);    \
    const T *restrict m8 = m7 + (KM), *restrict m9 = m8 + (KM), *restrict m10 = m9 + (KM);   \
    const T *restrict m11 = m10 + (KM), *restrict m12 = m11 + (KM);                          \
    const T *restrict m13 = m12 + (KM), *restrict m14 = m13 + (KM), *restrict m15 = m14 + (KM);
#define CNN_WINO_TILE_VALUES(u)                                                              \
    T z00 = m0[u] + m4[u] + m8[u], z01 = m1[u] + m5[u] + m9[u];                              \
    T z02 = m2[u] + m6[u] + m10[u], z03 = m3[u] + m7[u] + m11[u];                            \
    T z10 = m4[u] - m8[u] - m12[u], z11 = m5[u] - m9[u] - m13[u];                            \
    T z12 = m6[u] - m10[u] - m14[u], z13 = m7[u] - m11[u] - m15[u];                          \
    T v00 = z00 + z01 + z02 + bk, v01 = z01 - z02 - z03 + bk;                                \
    T v10 = z10 + z11 + z12 + bk, v11 = z11 - z12 - z13 + bk;                                \
    if (relu) {                                                                              \
        v00 = v00 <= 0 ? (T)0 : v00; v01 = v01 <= 0 ? (T)0 : v01;                            \
        v10 = v10 <= 0 ? (T)0 : v10; v11 = v11 <= 0 ? (T)0 : v11;                            \
    }

#if CNN_HAVE_CLONES
#include <immintrin.h>
/* One row of a transform's parity split, float32, AVX2: ev[j] = p[2j], od[j] = p[2j+1] for
 * j < HW, where p is the zero-padded row, p[s] = src[s - lo] for lo <= s < lo + n, else 0; with
 * mask not NULL (the same row of the ReLU output), p[s] = 0 also where mask[s - lo] <= 0 or is
 * NaN (an ordered compare and a bitwise and: src's bits or +0.0, as `mask > 0 ? src : 0`).
 * Masked loads (lanes outside the row are never read) and one permute per 16 columns; both
 * sub-rows are written whole, pad cells included, in whole vectors: ev and od need room for HW
 * rounded up to 8 cells, and the cells past HW get zeros (their columns lie past the padded row:
 * the callers leave CNN_WINO_SPLIT_SLACK spare cells after each sub-plane). The same values as
 * the scalar split. */
__attribute__((target("avx2"))) static inline void cnn_wino_split_row_f_avx2(
        const float *src, const float *mask, ptrdiff_t lo, ptrdiff_t n, float *restrict ev,
        float *restrict od, ptrdiff_t HW) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i none = _mm256_set1_epi32(-1), count = _mm256_set1_epi32((int)n);
    for (ptrdiff_t j0 = 0; j0 < HW; j0 += 8) {
        const ptrdiff_t first = 2 * j0 - lo;   /* the x index of lane 0 */
        const __m256i ia = _mm256_add_epi32(lane, _mm256_set1_epi32((int)first));
        const __m256i ib = _mm256_add_epi32(ia, _mm256_set1_epi32(8));
        const __m256i ma = _mm256_and_si256(_mm256_cmpgt_epi32(ia, none),
                                            _mm256_cmpgt_epi32(count, ia));
        const __m256i mb = _mm256_and_si256(_mm256_cmpgt_epi32(ib, none),
                                            _mm256_cmpgt_epi32(count, ib));
        const float *at = (const float *)((const char *)src + first * (ptrdiff_t)sizeof(float));
        __m256 p0 = _mm256_maskload_ps(at, ma), p1 = _mm256_maskload_ps(at + 8, mb);
        if (mask) {
            const float *mt =
                (const float *)((const char *)mask + first * (ptrdiff_t)sizeof(float));
            const __m256 zero = _mm256_setzero_ps();
            p0 = _mm256_and_ps(p0, _mm256_cmp_ps(_mm256_maskload_ps(mt, ma), zero, _CMP_GT_OQ));
            p1 = _mm256_and_ps(p1, _mm256_cmp_ps(_mm256_maskload_ps(mt + 8, mb), zero,
                                                 _CMP_GT_OQ));
        }
        __m256 e = _mm256_shuffle_ps(p0, p1, 0x88), o = _mm256_shuffle_ps(p0, p1, 0xDD);
        e = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8));
        o = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8));
        _mm256_storeu_ps(ev + j0, e);
        _mm256_storeu_ps(od + j0, o);
    }
}

/* The input transform's tile loop, float32, AVX2 (see CNN_WINO_CLONE(input) in _winograd_impl.h
 * for the maths): v_e[u] = (B^T d B)[e] of tile u < U for the 16 streams v_e = v0 + e * CV, from
 * the split sub-planes ee, eo, oe, oo (row length HW). The same adds and subtracts in the same
 * order as the portable loop, so the same bits. Written out because the portable loop needs 20
 * live pointers: the compiler kept them on the stack and reloaded one before every store. Here
 * the 16 results of 8 tiles stay in registers and go out through one pointer stepped by CV. The
 * last partial vector is a masked store (the slots past U belong to the next image or stream). */
__attribute__((target("avx2"))) static inline void cnn_wino_input_tiles_f_avx2(
        const float *restrict ee, const float *restrict eo, const float *restrict oe,
        const float *restrict oo, ptrdiff_t HW, ptrdiff_t U, float *restrict v0, ptrdiff_t CV) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (ptrdiff_t u = 0; u < U; u += 8) {
        const ptrdiff_t n = u + HW;
#define CNN_LD(p, i) _mm256_loadu_ps((p) + (i))
        const __m256 q00 = _mm256_sub_ps(CNN_LD(ee, u), CNN_LD(ee, u + 1));
        const __m256 q01 = _mm256_add_ps(CNN_LD(eo, u), CNN_LD(ee, u + 1));
        const __m256 q02 = _mm256_sub_ps(CNN_LD(ee, u + 1), CNN_LD(eo, u));
        const __m256 q03 = _mm256_sub_ps(CNN_LD(eo, u), CNN_LD(eo, u + 1));
        const __m256 q10 = _mm256_sub_ps(CNN_LD(oe, u), CNN_LD(oe, u + 1));
        const __m256 q11 = _mm256_add_ps(CNN_LD(oo, u), CNN_LD(oe, u + 1));
        const __m256 q12 = _mm256_sub_ps(CNN_LD(oe, u + 1), CNN_LD(oo, u));
        const __m256 q13 = _mm256_sub_ps(CNN_LD(oo, u), CNN_LD(oo, u + 1));
        const __m256 q20 = _mm256_sub_ps(CNN_LD(ee, n), CNN_LD(ee, n + 1));
        const __m256 q21 = _mm256_add_ps(CNN_LD(eo, n), CNN_LD(ee, n + 1));
        const __m256 q22 = _mm256_sub_ps(CNN_LD(ee, n + 1), CNN_LD(eo, n));
        const __m256 q23 = _mm256_sub_ps(CNN_LD(eo, n), CNN_LD(eo, n + 1));
        const __m256 q30 = _mm256_sub_ps(CNN_LD(oe, n), CNN_LD(oe, n + 1));
        const __m256 q31 = _mm256_add_ps(CNN_LD(oo, n), CNN_LD(oe, n + 1));
        const __m256 q32 = _mm256_sub_ps(CNN_LD(oe, n + 1), CNN_LD(oo, n));
        const __m256 q33 = _mm256_sub_ps(CNN_LD(oo, n), CNN_LD(oo, n + 1));
#undef CNN_LD
        const __m256 r[16] = {
            _mm256_sub_ps(q00, q20), _mm256_sub_ps(q01, q21), _mm256_sub_ps(q02, q22),
            _mm256_sub_ps(q03, q23), _mm256_add_ps(q10, q20), _mm256_add_ps(q11, q21),
            _mm256_add_ps(q12, q22), _mm256_add_ps(q13, q23), _mm256_sub_ps(q20, q10),
            _mm256_sub_ps(q21, q11), _mm256_sub_ps(q22, q12), _mm256_sub_ps(q23, q13),
            _mm256_sub_ps(q10, q30), _mm256_sub_ps(q11, q31), _mm256_sub_ps(q12, q32),
            _mm256_sub_ps(q13, q33)};
        /* the empty asm keeps p one register: without it gcc turns the 16 stores back into 16
           pointers, spilled (perf) */
        float *p = v0 + u;
        if (u + 8 <= U) {
            for (int e = 0; e < 16; e++) {
                _mm256_storeu_ps(p, r[e]);
                p += CV;
                __asm__("" : "+r"(p));
            }
        } else {
            const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(U - u)), lane);
            for (int e = 0; e < 16; e++) {
                _mm256_maskstore_ps(p, m, r[e]);
                p += CV;
                __asm__("" : "+r"(p));
            }
        }
    }
}

/* The gradient transform's tile loop, float32, AVX2 (see CNN_WINO_CLONE(grad)): d_e[u] =
 * (A g A^T)[e] of tile u < U for the 16 streams d_e = d0 + e * KD, from the split sub-planes ee,
 * eo, oe, oo of dy. The same operations as the portable loop (a negation is a sign flip there
 * too), written out for the reason given at cnn_wino_input_tiles_f_avx2. */
__attribute__((target("avx2"))) static inline void cnn_wino_grad_tiles_f_avx2(
        const float *restrict ee, const float *restrict eo, const float *restrict oe,
        const float *restrict oo, ptrdiff_t U, float *restrict d0, ptrdiff_t KD) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (ptrdiff_t u = 0; u < U; u += 8) {
        const __m256 g00 = _mm256_loadu_ps(ee + u), g01 = _mm256_loadu_ps(eo + u);
        const __m256 g10 = _mm256_loadu_ps(oe + u), g11 = _mm256_loadu_ps(oo + u);
        const __m256 p00 = g00, p01 = g01;
        const __m256 p10 = _mm256_add_ps(g00, g10), p11 = _mm256_add_ps(g01, g11);
        const __m256 p20 = _mm256_sub_ps(g00, g10), p21 = _mm256_sub_ps(g01, g11);
        const __m256 p30 = _mm256_xor_ps(g10, sign), p31 = _mm256_xor_ps(g11, sign);
        const __m256 r[16] = {
            p00, _mm256_add_ps(p00, p01), _mm256_sub_ps(p00, p01), _mm256_xor_ps(p01, sign),
            p10, _mm256_add_ps(p10, p11), _mm256_sub_ps(p10, p11), _mm256_xor_ps(p11, sign),
            p20, _mm256_add_ps(p20, p21), _mm256_sub_ps(p20, p21), _mm256_xor_ps(p21, sign),
            p30, _mm256_add_ps(p30, p31), _mm256_sub_ps(p30, p31), _mm256_xor_ps(p31, sign)};
        float *p = d0 + u;
        if (u + 8 <= U) {
            for (int e = 0; e < 16; e++) {
                _mm256_storeu_ps(p, r[e]);
                p += KD;
                __asm__("" : "+r"(p));
            }
        } else {
            const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(U - u)), lane);
            for (int e = 0; e < 16; e++) {
                _mm256_maskstore_ps(p, m, r[e]);
                p += KD;
                __asm__("" : "+r"(p));
            }
        }
    }
}

/* The same two tile loops with AVX-512F registers (16 tiles a vector; the tails masked both
 * ways, so no load reaches past the cells the AVX2 loops read). Called from the AVX2 clone of
 * the transforms when the process runs AVX-512F kernels (cnn_kernel_isa): the rest of those
 * transforms measured slower as an AVX-512F clone (see _winograd_clones.h). Same operations,
 * same bits. */
__attribute__((target("avx512f"))) static void cnn_wino_input_tiles_f_avx512f(
        const float *restrict ee, const float *restrict eo, const float *restrict oe,
        const float *restrict oo, ptrdiff_t HW, ptrdiff_t U, float *restrict v0, ptrdiff_t CV) {
    for (ptrdiff_t u = 0; u < U; u += 16) {
        const ptrdiff_t n = u + HW;
        const __mmask16 k = u + 16 <= U ? (__mmask16)0xFFFF : (__mmask16)((1u << (U - u)) - 1);
#define CNN_LD(p, i) _mm512_maskz_loadu_ps(k, (p) + (i))
        const __m512 q00 = _mm512_sub_ps(CNN_LD(ee, u), CNN_LD(ee, u + 1));
        const __m512 q01 = _mm512_add_ps(CNN_LD(eo, u), CNN_LD(ee, u + 1));
        const __m512 q02 = _mm512_sub_ps(CNN_LD(ee, u + 1), CNN_LD(eo, u));
        const __m512 q03 = _mm512_sub_ps(CNN_LD(eo, u), CNN_LD(eo, u + 1));
        const __m512 q10 = _mm512_sub_ps(CNN_LD(oe, u), CNN_LD(oe, u + 1));
        const __m512 q11 = _mm512_add_ps(CNN_LD(oo, u), CNN_LD(oe, u + 1));
        const __m512 q12 = _mm512_sub_ps(CNN_LD(oe, u + 1), CNN_LD(oo, u));
        const __m512 q13 = _mm512_sub_ps(CNN_LD(oo, u), CNN_LD(oo, u + 1));
        const __m512 q20 = _mm512_sub_ps(CNN_LD(ee, n), CNN_LD(ee, n + 1));
        const __m512 q21 = _mm512_add_ps(CNN_LD(eo, n), CNN_LD(ee, n + 1));
        const __m512 q22 = _mm512_sub_ps(CNN_LD(ee, n + 1), CNN_LD(eo, n));
        const __m512 q23 = _mm512_sub_ps(CNN_LD(eo, n), CNN_LD(eo, n + 1));
        const __m512 q30 = _mm512_sub_ps(CNN_LD(oe, n), CNN_LD(oe, n + 1));
        const __m512 q31 = _mm512_add_ps(CNN_LD(oo, n), CNN_LD(oe, n + 1));
        const __m512 q32 = _mm512_sub_ps(CNN_LD(oe, n + 1), CNN_LD(oo, n));
        const __m512 q33 = _mm512_sub_ps(CNN_LD(oo, n), CNN_LD(oo, n + 1));
#undef CNN_LD
        const __m512 r[16] = {
            _mm512_sub_ps(q00, q20), _mm512_sub_ps(q01, q21), _mm512_sub_ps(q02, q22),
            _mm512_sub_ps(q03, q23), _mm512_add_ps(q10, q20), _mm512_add_ps(q11, q21),
            _mm512_add_ps(q12, q22), _mm512_add_ps(q13, q23), _mm512_sub_ps(q20, q10),
            _mm512_sub_ps(q21, q11), _mm512_sub_ps(q22, q12), _mm512_sub_ps(q23, q13),
            _mm512_sub_ps(q10, q30), _mm512_sub_ps(q11, q31), _mm512_sub_ps(q12, q32),
            _mm512_sub_ps(q13, q33)};
        float *p = v0 + u;
        for (int e = 0; e < 16; e++) {
            _mm512_mask_storeu_ps(p, k, r[e]);
            p += CV;
            __asm__("" : "+r"(p));
        }
    }
}

__attribute__((target("avx512f"))) static void cnn_wino_grad_tiles_f_avx512f(
        const float *restrict ee, const float *restrict eo, const float *restrict oe,
        const float *restrict oo, ptrdiff_t U, float *restrict d0, ptrdiff_t KD) {
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
#define CNN_NEG(x) _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), sign))
    for (ptrdiff_t u = 0; u < U; u += 16) {
        const __mmask16 k = u + 16 <= U ? (__mmask16)0xFFFF : (__mmask16)((1u << (U - u)) - 1);
        const __m512 g00 = _mm512_maskz_loadu_ps(k, ee + u), g01 = _mm512_maskz_loadu_ps(k, eo + u);
        const __m512 g10 = _mm512_maskz_loadu_ps(k, oe + u), g11 = _mm512_maskz_loadu_ps(k, oo + u);
        const __m512 p00 = g00, p01 = g01;
        const __m512 p10 = _mm512_add_ps(g00, g10), p11 = _mm512_add_ps(g01, g11);
        const __m512 p20 = _mm512_sub_ps(g00, g10), p21 = _mm512_sub_ps(g01, g11);
        const __m512 p30 = CNN_NEG(g10), p31 = CNN_NEG(g11);
        const __m512 r[16] = {
            p00, _mm512_add_ps(p00, p01), _mm512_sub_ps(p00, p01), CNN_NEG(p01),
            p10, _mm512_add_ps(p10, p11), _mm512_sub_ps(p10, p11), CNN_NEG(p11),
            p20, _mm512_add_ps(p20, p21), _mm512_sub_ps(p20, p21), CNN_NEG(p21),
            p30, _mm512_add_ps(p30, p31), _mm512_sub_ps(p30, p31), CNN_NEG(p31)};
        float *p = d0 + u;
        for (int e = 0; e < 16; e++) {
            _mm512_mask_storeu_ps(p, k, r[e]);
            p += KD;
            __asm__("" : "+r"(p));
        }
    }
#undef CNN_NEG
}

/* The tile loops the AVX2 clone of the transforms calls: AVX-512F where the process runs it. */
#define CNN_WINO_INPUT_TILES_BEST(ee, eo, oe, oo, HW, U, v0, CV)                             \
    (cnn_kernel_isa() >= CNN_ISA_AVX512F                                                     \
         ? cnn_wino_input_tiles_f_avx512f(ee, eo, oe, oo, HW, U, v0, CV)                     \
         : cnn_wino_input_tiles_f_avx2(ee, eo, oe, oo, HW, U, v0, CV))
#define CNN_WINO_GRAD_TILES_BEST(ee, eo, oe, oo, U, d0, KD)                                  \
    (cnn_kernel_isa() >= CNN_ISA_AVX512F                                                     \
         ? cnn_wino_grad_tiles_f_avx512f(ee, eo, oe, oo, U, d0, KD)                          \
         : cnn_wino_grad_tiles_f_avx2(ee, eo, oe, oo, U, d0, KD))
#endif

#define T float
#define CNN_WINO_SFX f
#define CNN_WINO_FLOAT 1
#include "_winograd_clones.h"
#undef CNN_WINO_FLOAT
#undef CNN_WINO_SFX
#undef T

#define T double
#define CNN_WINO_SFX d
#define CNN_WINO_FLOAT 0
#include "_winograd_clones.h"
#undef CNN_WINO_FLOAT
#undef CNN_WINO_SFX
#undef T

#define cnn_wino_input_f CNN_DISPATCH_NO512(cnn_wino_input_f)
#define cnn_wino_input_d CNN_DISPATCH_NO512(cnn_wino_input_d)
#define cnn_wino_output_f CNN_DISPATCH_NO512(cnn_wino_output_f)
#define cnn_wino_output_d CNN_DISPATCH_NO512(cnn_wino_output_d)
#define cnn_wino_output_pool_f CNN_DISPATCH_NO512(cnn_wino_output_pool_f)
#define cnn_wino_output_pool_d CNN_DISPATCH_NO512(cnn_wino_output_pool_d)
#define cnn_wino_grad_f CNN_DISPATCH_NO512(cnn_wino_grad_f)
#define cnn_wino_grad_d CNN_DISPATCH_NO512(cnn_wino_grad_d)

#endif
