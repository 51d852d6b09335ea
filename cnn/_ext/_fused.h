/* Max-pool of one (H, W) plane into one (OH, OW) plane, values only (no argmax): the
 * inference epilogue of the fused conv + bias + ReLU + max-pool kernel. One definition per
 * float type.
 *
 * The same values as the training kernel (_pool.pyx, _pool22.h), bit for bit: padded cells are
 * never candidates, the first cell of the window in row-major order starts the running maximum
 * and a strict '>' replaces it (so of +0.0 and -0.0 the first wins), and a NaN wins its window.
 * As there, a first pass uses plain comparisons and notes whether it saw a NaN; only a plane
 * holding one is redone with NaN-aware comparisons. The 2x2 / stride-2 interior is written
 * branch-free for the vectoriser (with -fno-trapping-math, which setup.py passes).
 */
#ifndef CNN_FUSED_H
#define CNN_FUSED_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_simd.h"

#define CNN_DEFINE_MAXPOOL_PLANE(ISA, NAME, T)                                               \
CNN_ATTR(ISA) static int NAME##_windows_##ISA(const T *restrict x, ptrdiff_t H, ptrdiff_t W, T *restrict yr,     \
                          ptrdiff_t h0, ptrdiff_t h1, int kw, int sw, int pl, ptrdiff_t ow0, \
                          ptrdiff_t ow1, int nan_aware) {                                    \
    int nan = 0;                                                                             \
    (void)H;                                                                                 \
    for (ptrdiff_t ow = ow0; ow < ow1; ow++) {                                               \
        ptrdiff_t w0 = ow * sw - pl, w1 = w0 + kw;                                           \
        if (w0 < 0) w0 = 0;                                                                  \
        if (w1 > W) w1 = W;                                                                  \
        T best = x[h0 * W + w0];                                                             \
        for (ptrdiff_t ih = h0; ih < h1; ih++) {                                             \
            for (ptrdiff_t iw = w0; iw < w1; iw++) {                                         \
                T v = x[ih * W + iw];                                                        \
                int gt;                                                                      \
                nan |= v != v;                                                               \
                if (nan_aware)                                                               \
                    gt = (v > best) | ((v != v) & (best == best));                           \
                else                                                                         \
                    gt = v > best;                                                           \
                best = gt ? v : best;                                                        \
            }                                                                                \
        }                                                                                    \
        yr[ow] = best;                                                                       \
    }                                                                                        \
    return nan;                                                                              \
}                                                                                            \
                                                                                             \
CNN_ATTR(ISA) static void NAME##_##ISA(const T *restrict x, ptrdiff_t H, ptrdiff_t W,           \
                                   T *restrict y, ptrdiff_t OH, ptrdiff_t OW, int kh, int kw, \
                                   int sh, int sw, int pt, int pl) {                         \
    const int fast22 = kh == 2 && kw == 2 && sh == 2 && sw == 2;                             \
    /* interior columns: windows wholly inside [0, W) */                                     \
    ptrdiff_t ow_lo = (pl + sw - 1) / sw;                                                    \
    ptrdiff_t ow_hi = W + pl >= kw ? (W + pl - kw) / sw + 1 : 0;                             \
    if (ow_hi > OW) ow_hi = OW;                                                              \
    if (ow_lo > OW) ow_lo = OW;                                                              \
    if (ow_hi < ow_lo) ow_hi = ow_lo;                                                        \
    for (int attempt = 0; attempt < 2; attempt++) {                                          \
        int nan = 0;                                                                         \
        for (ptrdiff_t oh = 0; oh < OH; oh++) {                                              \
            ptrdiff_t h0 = oh * sh - pt, h1 = h0 + kh;                                       \
            T *restrict yr = y + oh * OW;                                                    \
            if (h0 < 0) h0 = 0;                                                              \
            if (h1 > H) h1 = H;                                                              \
            if (attempt == 0 && fast22 && h1 - h0 == 2) {                                    \
                const T *restrict r0 = x + h0 * W - pl, *restrict r1 = r0 + W;               \
                int n22 = 0;                                                                 \
                for (ptrdiff_t ow = ow_lo; ow < ow_hi; ow++) {                               \
                    T a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1]; \
                    n22 |= (a != a) | (b != b) | (c != c) | (d != d);                        \
                    T m0 = b > a ? b : a, m1 = d > c ? d : c;                                \
                    yr[ow] = m1 > m0 ? m1 : m0;                                              \
                }                                                                            \
                nan |= n22;                                                                  \
                nan |= NAME##_windows_##ISA(x, H, W, yr, h0, h1, kw, sw, pl, 0, ow_lo, 0);         \
                nan |= NAME##_windows_##ISA(x, H, W, yr, h0, h1, kw, sw, pl, ow_hi, OW, 0);        \
            } else {                                                                         \
                nan |= NAME##_windows_##ISA(x, H, W, yr, h0, h1, kw, sw, pl, 0, OW, attempt);      \
            }                                                                                \
        }                                                                                    \
        if (!nan) break;                                                                     \
    }                                                                                        \
}

/* The clones of _pool22.h's 2x2 row kernel, dispatched the same way (no AVX-512F copy: on an
 * AVX-512 CPU the portable copy of that loop measured fastest, see _pool22.h). */
CNN_FOR_EACH_ISA_NO512(CNN_DEFINE_MAXPOOL_PLANE, cnn_maxpool_plane_f, float)
CNN_FOR_EACH_ISA_NO512(CNN_DEFINE_MAXPOOL_PLANE, cnn_maxpool_plane_d, double)
#define cnn_maxpool_plane_f CNN_DISPATCH_NO512_PORTABLE(cnn_maxpool_plane_f)
#define cnn_maxpool_plane_d CNN_DISPATCH_NO512_PORTABLE(cnn_maxpool_plane_d)

/* max(cur, max |y[:n]|), NaN if cur or any y is NaN: the inference plan's running bound on a
 * layer's output (the Winograd overflow guard of the next layer), and _ops.max_abs. On the bit
 * patterns with the sign cleared, unsigned order is the order of |y|, and every NaN lies above
 * +inf: an integer max, which vectorises (the float loop ran one element at a time: 7 % of a
 * DESIGN CNN predict). Cloned: x86-64's baseline (SSE2) has no unsigned 32-bit max, so the
 * portable copy ran at about 3.4 GB/s, a third of NumPy's max + min pair. An exact max: every
 * copy gives the same result. */
#define CNN_DEFINE_MAX_ABS(ISA, NAME, T, U, ABS_MASK, INF_BITS)                              \
CNN_ATTR(ISA) static double NAME##_##ISA(const T *restrict y, ptrdiff_t n, double cur) {     \
    U m = 0;                                                                                 \
    for (ptrdiff_t i = 0; i < n; i++) {                                                      \
        U b;                                                                                 \
        memcpy(&b, y + i, sizeof b);                                                         \
        b &= ABS_MASK;                                                                       \
        m = b > m ? b : m;                                                                   \
    }                                                                                        \
    if (m > INF_BITS || cur != cur) return (double)NAN;                                      \
    T v;                                                                                     \
    memcpy(&v, &m, sizeof v);                                                                \
    return cur > (double)v ? cur : (double)v;                                                \
}
#define CNN_DEFINE_MAX_ABS_F(ISA, NAME, UNUSED) \
    CNN_DEFINE_MAX_ABS(ISA, NAME, float, uint32_t, 0x7fffffffu, 0x7f800000u)
#define CNN_DEFINE_MAX_ABS_D(ISA, NAME, UNUSED) \
    CNN_DEFINE_MAX_ABS(ISA, NAME, double, uint64_t, 0x7fffffffffffffffull, 0x7ff0000000000000ull)
CNN_FOR_EACH_ISA(CNN_DEFINE_MAX_ABS_F, cnn_max_abs_f, 0)
CNN_FOR_EACH_ISA(CNN_DEFINE_MAX_ABS_D, cnn_max_abs_d, 0)
#define cnn_max_abs_f CNN_DISPATCH(cnn_max_abs_f)
#define cnn_max_abs_d CNN_DISPATCH(cnn_max_abs_d)

#endif
