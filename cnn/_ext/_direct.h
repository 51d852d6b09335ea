/* Direct 3x3 stride-1 convolution of a single-channel image (C = 1: a first layer), one
 * definition per float type.
 *
 * With one input channel the im2col GEMM has an inner dimension of 9: BLAS runs it far below
 * its rate, and the column matrix is 9x the image. Here the image is copied once into a
 * zero-padded plane P of width PW = OW + 2, and every output is computed in place as
 *     acc[u] = sum_{i,j} w[i][j] * P[u + i*PW + j],   u = oh*PW + ow,
 * a flat loop over u (the two junk columns ow = OW, OW + 1 of each row are computed and
 * dropped), four filters at a time so each P value loaded serves four accumulators. The
 * products are summed in the order (0,0), (0,1), ..., (2,2) after the bias.
 */
#ifndef CNN_DIRECT_H
#define CNN_DIRECT_H

#include <stddef.h>
#include <string.h>

#include "_simd.h"

/* Elements of the per-thread scratch: the padded plane (plus slack read by junk columns) and
 * four accumulator planes. */
#define CNN_DIRECT_SCRATCH(OH, OW)                                \
    ((((ptrdiff_t)(OH) + 2) * ((ptrdiff_t)(OW) + 2) + 2)          \
     + 4 * (ptrdiff_t)(OH) * ((ptrdiff_t)(OW) + 2))

#define CNN_DEFINE_DIRECT(ISA, SUFFIX, T)                                                      \
CNN_ATTR(ISA) static void cnn_direct3x3_c1_##SUFFIX##_##ISA(                                  \
        const T *restrict x, const T *restrict w, const T *restrict b, int relu,              \
        T *restrict y, int K, int H, int W, int pt, int pl, int OH, int OW,                   \
        T *restrict scratch) {                                                                \
    const ptrdiff_t PW = (ptrdiff_t)OW + 2, PH = (ptrdiff_t)OH + 2, U = (ptrdiff_t)OH * PW;   \
    T *restrict P = scratch, *restrict acc = scratch + PH * PW + 2;                           \
    memset(P, 0, (size_t)(PH * PW + 2) * sizeof(T));                                          \
    for (ptrdiff_t r = 0; r < PH; r++) {          /* padded row r is x row r - pt */          \
        const ptrdiff_t xr = r - pt;                                                          \
        if (xr < 0 || xr >= H) continue;                                                      \
        for (ptrdiff_t s = 0; s < PW; s++) {                                                  \
            const ptrdiff_t xs = s - pl;                                                      \
            if (xs >= 0 && xs < W) P[r * PW + s] = x[xr * W + xs];                            \
        }                                                                                     \
    }                                                                                         \
    for (int k0 = 0; k0 < K; k0 += 4) {                                                       \
        const int nk = K - k0 < 4 ? K - k0 : 4;                                               \
        T wk[4][9], bk[4];                                                                    \
        for (int q = 0; q < 4; q++) {             /* missing filters: zero weights */         \
            for (int t = 0; t < 9; t++) wk[q][t] = q < nk ? w[(ptrdiff_t)(k0 + q) * 9 + t] : 0; \
            bk[q] = (q < nk && b) ? b[k0 + q] : 0;                                            \
        }                                                                                     \
        T *restrict a0 = acc, *restrict a1 = acc + U, *restrict a2 = acc + 2 * U;             \
        T *restrict a3 = acc + 3 * U;                                                         \
        const T *restrict p0 = P, *restrict p1 = P + PW, *restrict p2 = P + 2 * PW;           \
        CNN_IVDEP                                                                             \
        for (ptrdiff_t u = 0; u < U; u++) {                                                   \
            const T v0 = p0[u], v1 = p0[u + 1], v2 = p0[u + 2];                               \
            const T v3 = p1[u], v4 = p1[u + 1], v5 = p1[u + 2];                               \
            const T v6 = p2[u], v7 = p2[u + 1], v8 = p2[u + 2];                               \
            T s0 = bk[0], s1 = bk[1], s2 = bk[2], s3 = bk[3];                                 \
            s0 += wk[0][0] * v0; s1 += wk[1][0] * v0; s2 += wk[2][0] * v0; s3 += wk[3][0] * v0; \
            s0 += wk[0][1] * v1; s1 += wk[1][1] * v1; s2 += wk[2][1] * v1; s3 += wk[3][1] * v1; \
            s0 += wk[0][2] * v2; s1 += wk[1][2] * v2; s2 += wk[2][2] * v2; s3 += wk[3][2] * v2; \
            s0 += wk[0][3] * v3; s1 += wk[1][3] * v3; s2 += wk[2][3] * v3; s3 += wk[3][3] * v3; \
            s0 += wk[0][4] * v4; s1 += wk[1][4] * v4; s2 += wk[2][4] * v4; s3 += wk[3][4] * v4; \
            s0 += wk[0][5] * v5; s1 += wk[1][5] * v5; s2 += wk[2][5] * v5; s3 += wk[3][5] * v5; \
            s0 += wk[0][6] * v6; s1 += wk[1][6] * v6; s2 += wk[2][6] * v6; s3 += wk[3][6] * v6; \
            s0 += wk[0][7] * v7; s1 += wk[1][7] * v7; s2 += wk[2][7] * v7; s3 += wk[3][7] * v7; \
            s0 += wk[0][8] * v8; s1 += wk[1][8] * v8; s2 += wk[2][8] * v8; s3 += wk[3][8] * v8; \
            a0[u] = s0; a1[u] = s1; a2[u] = s2; a3[u] = s3;                                   \
        }                                                                                     \
        for (int q = 0; q < nk; q++) {            /* drop the junk columns; ReLU */          \
            const T *restrict aq = acc + (ptrdiff_t)q * U;                                    \
            T *restrict yk = y + (ptrdiff_t)(k0 + q) * OH * OW;                               \
            for (ptrdiff_t oh = 0; oh < OH; oh++) {                                           \
                const T *restrict src = aq + oh * PW;                                         \
                T *restrict dst = yk + oh * OW;                                               \
                if (relu) {                                                                   \
                    for (ptrdiff_t ow = 0; ow < OW; ow++) {                                   \
                        T v = src[ow]; dst[ow] = v <= 0 ? (T)0 : v;                           \
                    }                                                                         \
                } else {                                                                      \
                    for (ptrdiff_t ow = 0; ow < OW; ow++) dst[ow] = src[ow];                  \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
}

CNN_FOR_EACH_ISA(CNN_DEFINE_DIRECT, f, float)
CNN_FOR_EACH_ISA(CNN_DEFINE_DIRECT, d, double)
#define cnn_direct3x3_c1_f CNN_DISPATCH(cnn_direct3x3_c1_f)
#define cnn_direct3x3_c1_d CNN_DISPATCH(cnn_direct3x3_c1_d)

#endif
