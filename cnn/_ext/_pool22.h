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

/* No AVX-512F clone: on an AVX-512 Xeon (Sapphire Rapids class) the copies ran 64x32x28x28
 * in 0.78 ms (portable, SSE2), 1.15 ms (AVX2 clone) and 1.65 ms (AVX-512F clone): min of 31,
 * 1 thread, each copy in its own process, four rounds, loaded machine. So CPUs with AVX-512F
 * run the portable copy; the AVX2 clone stays for AVX2-only CPUs, where it was added. */
CNN_FOR_EACH_ISA_NO512(CNN_DEFINE_POOL22_ROW, cnn_pool22_row_f, float)
CNN_FOR_EACH_ISA_NO512(CNN_DEFINE_POOL22_ROW, cnn_pool22_row_d, double)
#define cnn_pool22_row_f CNN_DISPATCH_NO512_PORTABLE(cnn_pool22_row_f)
#define cnn_pool22_row_d CNN_DISPATCH_NO512_PORTABLE(cnn_pool22_row_d)

#endif
