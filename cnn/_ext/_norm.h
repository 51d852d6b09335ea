/* Batch-normalisation passes over one channel, one definition per float type and kernel clone
 * (see _simd.h).
 *
 * A channel is N segments of S contiguous values, segment n at x + n * ld (an (N, C, S) array
 * seen from channel c: ld = C * S). Its sums are float64 over CNN_BN_LANES fixed lanes: value s
 * of every segment goes to lane s % CNN_BN_LANES in the full blocks of CNN_BN_LANES values,
 * segments in order n = 0, 1, ...; the values of the last partial block go to separate tail
 * lanes 0, 1, ... in the same order; lane k + tail lane k, then a fixed pairwise tree. The order of
 * every addition depends on N and S alone: the same bits for any thread count and any clone,
 * and independent accumulators the vectoriser can keep in registers (one float64 chain adds
 * one value per add latency, the lanes one per cycle or better).
 */
#ifndef CNN_NORM_H
#define CNN_NORM_H

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "_simd.h"

#define CNN_BN_LANES 8

/* sum of the lanes, pairwise in a fixed order */
static inline double cnn_bn_reduce(const double *lanes) {
    double acc[CNN_BN_LANES];
    for (int k = 0; k < CNN_BN_LANES; k++) acc[k] = lanes[k];
    for (int w = CNN_BN_LANES / 2; w >= 1; w /= 2)
        for (int k = 0; k < w; k++) acc[k] += acc[k + w];
    return acc[0];
}

/* The 8 lanes of the full blocks are two GNU C vectors of 4 doubles (gcc's vectoriser does not
 * find these reductions in plain loops: it may not reorder the additions, and its SLP pass
 * gives up on two accumulators): two ymm registers, or four xmm, lane by lane the same
 * arithmetic. (One vector of 8 is a zmm register in the AVX-512 clone but is kept in memory
 * by the AVX2 one: 20x slower, measured.) The values of the partial blocks go to a separate
 * array of 8 lanes, added to the block lanes before the final tree. Elsewhere, plain arrays
 * of lanes in the same order (also with CNN_BN_NO_VECTOR defined, to check that they agree).
 * CNN_BN_LOAD4(v, p, T) sets v to p[0..4) as float64. */
#if defined(__GNUC__) && !defined(CNN_BN_NO_VECTOR)
typedef double cnn_bn_v4d __attribute__((vector_size(4 * sizeof(double))));
typedef float cnn_bn_v4f __attribute__((vector_size(4 * sizeof(float))));
#define CNN_BN_LOAD4(v, p, T)                                                                 \
    do {                                                                                      \
        if (sizeof(T) == sizeof(float)) {                                                     \
            cnn_bn_v4f f_; memcpy(&f_, (p), sizeof f_);                                       \
            (v) = __builtin_convertvector(f_, cnn_bn_v4d);                                    \
        } else {                                                                              \
            memcpy(&(v), (p), sizeof(v));                                                     \
        }                                                                                     \
    } while (0)
/* v = p[0..4) as float64 where r[0..4) > 0, else +0.0 (r: a fused ReLU's output; a NaN in r
   fails the test): the bits of (double) np.where(r > 0, p, 0) */
typedef long long cnn_bn_v4l __attribute__((vector_size(4 * sizeof(long long))));
#define CNN_BN_LOAD4_MASKED(v, p, r, T)                                                       \
    do {                                                                                      \
        cnn_bn_v4d r_; CNN_BN_LOAD4(v, p, T); CNN_BN_LOAD4(r_, r, T);                         \
        (v) = (cnn_bn_v4d)((cnn_bn_v4l)(v) & (cnn_bn_v4l)(r_ > 0.0));                         \
    } while (0)
/* acc[0..8) = the block lanes va0, va1 */
#define CNN_BN_STORE8(acc, va0, va1) \
    do { memcpy((acc), &(va0), sizeof(va0)); memcpy((acc) + 4, &(va1), sizeof(va1)); } while (0)
#define CNN_BN_VECTOR 1
#else
#define CNN_BN_VECTOR 0
#endif

/* dy[s] as float64, masked by a fused ReLU's output r (r[s] > 0, else +0.0) when MASK */
#define CNN_BN_DY(g, r, s, MASK) ((MASK) ? ((r)[s] > 0 ? (double)(g)[s] : 0.0) : (double)(g)[s])

/* lanes (blocks) += tail lanes, then the tree */
static inline double cnn_bn_finish(double *acc, const double *tail) {
    for (int k = 0; k < CNN_BN_LANES; k++) acc[k] += tail[k];
    return cnn_bn_reduce(acc);
}

#if CNN_BN_VECTOR
#define CNN_BN_SUM_BODY(T)                                                                     \
    cnn_bn_v4d va0 = {0}, va1 = {0}, vb0 = {0}, vb1 = {0};                                     \
    double ta[CNN_BN_LANES] = {0}, tb[CNN_BN_LANES] = {0};                                     \
    for (ptrdiff_t n = 0; n < N; n++) {                                                        \
        const T *restrict p = x + n * ld;                                                      \
        for (ptrdiff_t s = 0; s < SB; s += CNN_BN_LANES) {                                     \
            cnn_bn_v4d v0, v1; CNN_BN_LOAD4(v0, p + s, T); CNN_BN_LOAD4(v1, p + s + 4, T);     \
            va0 += v0; va1 += v1;                                                              \
        }                                                                                      \
        for (ptrdiff_t s = SB; s < S; s++) ta[s - SB] += (double)p[s];                         \
    }                                                                                          \
    CNN_BN_STORE8(acc, va0, va1);                                                              \
    const double m = cnn_bn_finish(acc, ta) / M;                                               \
    for (ptrdiff_t n = 0; n < N; n++) {                                                        \
        const T *restrict p = x + n * ld;                                                      \
        for (ptrdiff_t s = 0; s < SB; s += CNN_BN_LANES) {                                     \
            cnn_bn_v4d v0, v1; CNN_BN_LOAD4(v0, p + s, T); CNN_BN_LOAD4(v1, p + s + 4, T);     \
            v0 -= m; v1 -= m;                                                                  \
            vb0 += v0 * v0; vb1 += v1 * v1;                                                    \
        }                                                                                      \
        for (ptrdiff_t s = SB; s < S; s++) {                                                   \
            const double d = (double)p[s] - m;                                                 \
            tb[s - SB] += d * d;                                                               \
        }                                                                                      \
    }                                                                                          \
    CNN_BN_STORE8(acc, vb0, vb1);                                                              \
    const double sq = cnn_bn_finish(acc, tb);
#define CNN_BN_GRAD_SUMS_BODY(T, MASK)                                                         \
    cnn_bn_v4d va0 = {0}, va1 = {0}, vb0 = {0}, vb1 = {0};                                     \
    double ta[CNN_BN_LANES] = {0}, tb[CNN_BN_LANES] = {0};                                     \
    for (ptrdiff_t n = 0; n < N; n++) {                                                        \
        const T *restrict g = dy + n * ld, *restrict p = x + n * ld;                           \
        const T *restrict r = MASK ? relu_out + n * ld : NULL;                                 \
        for (ptrdiff_t s = 0; s < SB; s += CNN_BN_LANES) {                                     \
            cnn_bn_v4d d0, d1, h0, h1;                                                         \
            if (MASK) {                                                                        \
                CNN_BN_LOAD4_MASKED(d0, g + s, r + s, T);                                      \
                CNN_BN_LOAD4_MASKED(d1, g + s + 4, r + s + 4, T);                              \
            } else {                                                                           \
                CNN_BN_LOAD4(d0, g + s, T); CNN_BN_LOAD4(d1, g + s + 4, T);                    \
            }                                                                                  \
            CNN_BN_LOAD4(h0, p + s, T); CNN_BN_LOAD4(h1, p + s + 4, T);                        \
            va0 += d0; va1 += d1;                                                              \
            vb0 += d0 * ((h0 - m) * inv); vb1 += d1 * ((h1 - m) * inv);                        \
        }                                                                                      \
        for (ptrdiff_t s = SB; s < S; s++) {                                                   \
            const double d = CNN_BN_DY(g, r, s, MASK);                                         \
            ta[s - SB] += d;                                                                   \
            tb[s - SB] += d * (((double)p[s] - m) * inv);                                      \
        }                                                                                      \
    }                                                                                          \
    CNN_BN_STORE8(a, va0, va1);                                                                \
    CNN_BN_STORE8(b, vb0, vb1);                                                                \
    const double sa = cnn_bn_finish(a, ta), sb = cnn_bn_finish(b, tb);
#else
#define CNN_BN_SUM_BODY(T)                                                                     \
    double ta[CNN_BN_LANES] = {0}, tb[CNN_BN_LANES] = {0};                                     \
    for (int k = 0; k < CNN_BN_LANES; k++) acc[k] = 0;                                         \
    for (ptrdiff_t n = 0; n < N; n++) {                                                        \
        const T *restrict p = x + n * ld;                                                      \
        for (ptrdiff_t s = 0; s < SB; s++) acc[s % CNN_BN_LANES] += (double)p[s];              \
        for (ptrdiff_t s = SB; s < S; s++) ta[s - SB] += (double)p[s];                         \
    }                                                                                          \
    const double m = cnn_bn_finish(acc, ta) / M;                                               \
    for (int k = 0; k < CNN_BN_LANES; k++) acc[k] = 0;                                         \
    for (ptrdiff_t n = 0; n < N; n++) {                                                        \
        const T *restrict p = x + n * ld;                                                      \
        for (ptrdiff_t s = 0; s < S; s++) {                                                    \
            const double d = (double)p[s] - m;                                                 \
            if (s < SB) acc[s % CNN_BN_LANES] += d * d; else tb[s - SB] += d * d;              \
        }                                                                                      \
    }                                                                                          \
    const double sq = cnn_bn_finish(acc, tb);
#define CNN_BN_GRAD_SUMS_BODY(T, MASK)                                                         \
    double ta[CNN_BN_LANES] = {0}, tb[CNN_BN_LANES] = {0};                                     \
    for (int k = 0; k < CNN_BN_LANES; k++) a[k] = b[k] = 0;                                    \
    for (ptrdiff_t n = 0; n < N; n++) {                                                        \
        const T *restrict g = dy + n * ld, *restrict p = x + n * ld;                           \
        const T *restrict r = MASK ? relu_out + n * ld : NULL;                                 \
        for (ptrdiff_t s = 0; s < S; s++) {                                                    \
            const double d = CNN_BN_DY(g, r, s, MASK), e = d * (((double)p[s] - m) * inv);     \
            if (s < SB) { a[s % CNN_BN_LANES] += d; b[s % CNN_BN_LANES] += e; }                \
            else { ta[s - SB] += d; tb[s - SB] += e; }                                         \
        }                                                                                      \
    }                                                                                          \
    const double sa = cnn_bn_finish(a, ta), sb = cnn_bn_finish(b, tb);
#endif

#define CNN_DEFINE_NORM(ISA, SFX, T)                                                           \
/* mean and biased variance (two-pass) of one channel, M = N * S > 0 */                       \
CNN_ATTR(ISA) static void cnn_bn_stats_##SFX##_##ISA(const T *restrict x, ptrdiff_t N,        \
        ptrdiff_t S, ptrdiff_t ld, double *mean, double *var) {                                \
    const ptrdiff_t SB = S - S % CNN_BN_LANES;                                                 \
    const double M = (double)N * (double)S;                                                    \
    double acc[CNN_BN_LANES];                                                                  \
    CNN_BN_SUM_BODY(T)                                                                         \
    *mean = m;                                                                                 \
    *var = sq / M;                                                                             \
}                                                                                              \
                                                                                               \
/* y = (x - m) * inv * g + b over one channel (y laid out as x) */                             \
CNN_ATTR(ISA) static void cnn_bn_normalize_##SFX##_##ISA(const T *restrict x, T *restrict y,  \
        ptrdiff_t N, ptrdiff_t S, ptrdiff_t ld, double m, double inv, double g, double b) {   \
    for (ptrdiff_t n = 0; n < N; n++) {                                                        \
        const T *restrict p = x + n * ld;                                                      \
        T *restrict q = y + n * ld;                                                            \
        for (ptrdiff_t s = 0; s < S; s++) q[s] = (T)(((double)p[s] - m) * inv * g + b);        \
    }                                                                                          \
}                                                                                              \
                                                                                               \
/* y = max((x - m) * inv * g + b, 0): the value rounded to T first, then the ReLU of           \
   _eltwise.h (v <= 0, also -0.0, gives +0.0; a NaN passes with its bits) */                   \
CNN_ATTR(ISA) static void cnn_bn_normalize_relu_##SFX##_##ISA(const T *restrict x,            \
        T *restrict y, ptrdiff_t N, ptrdiff_t S, ptrdiff_t ld, double m, double inv, double g, \
        double b) {                                                                            \
    for (ptrdiff_t n = 0; n < N; n++) {                                                        \
        const T *restrict p = x + n * ld;                                                      \
        T *restrict q = y + n * ld;                                                            \
        for (ptrdiff_t s = 0; s < S; s++) {                                                    \
            const T v = (T)(((double)p[s] - m) * inv * g + b);                                 \
            q[s] = v <= (T)0 ? (T)0 : v;                                                       \
        }                                                                                      \
    }                                                                                          \
}                                                                                              \
                                                                                               \
/* sums over one channel of dy and of dy * xhat, xhat = (x - m) * inv */                       \
CNN_ATTR(ISA) static void cnn_bn_grad_sums_##SFX##_##ISA(const T *restrict dy,                \
        const T *restrict x, ptrdiff_t N, ptrdiff_t S, ptrdiff_t ld, double m, double inv,    \
        double *sdy, double *sdyx) {                                                           \
    const ptrdiff_t SB = S - S % CNN_BN_LANES;                                                 \
    const T *restrict relu_out = NULL;                                                         \
    double a[CNN_BN_LANES], b[CNN_BN_LANES];                                                   \
    CNN_BN_GRAD_SUMS_BODY(T, 0)                                                                \
    *sdy = sa;                                                                                 \
    *sdyx = sb;                                                                                \
}                                                                                              \
                                                                                               \
/* the sums above of dy masked by a fused ReLU's output relu_out (laid out as x): dy where     \
   relu_out > 0, else 0, as if the masked dy had been written first (the same bits) */         \
CNN_ATTR(ISA) static void cnn_bn_grad_sums_masked_##SFX##_##ISA(const T *restrict dy,         \
        const T *restrict relu_out, const T *restrict x, ptrdiff_t N, ptrdiff_t S,            \
        ptrdiff_t ld, double m, double inv, double *sdy, double *sdyx) {                       \
    const ptrdiff_t SB = S - S % CNN_BN_LANES;                                                 \
    double a[CNN_BN_LANES], b[CNN_BN_LANES];                                                   \
    CNN_BN_GRAD_SUMS_BODY(T, 1)                                                                \
    *sdy = sa;                                                                                 \
    *sdyx = sb;                                                                                \
}                                                                                              \
                                                                                               \
/* dx = gi * (dy - mdy - xhat * mdyx) over one channel: gi = gamma * inv, mdy = sum(dy) / M,   \
   mdyx = sum(dy * xhat) / M */                                                                \
CNN_ATTR(ISA) static void cnn_bn_input_grad_##SFX##_##ISA(const T *restrict dy,               \
        const T *restrict x, T *restrict dx, ptrdiff_t N, ptrdiff_t S, ptrdiff_t ld,          \
        double m, double inv, double gi, double mdy, double mdyx) {                            \
    for (ptrdiff_t n = 0; n < N; n++) {                                                        \
        const T *restrict g = dy + n * ld, *restrict p = x + n * ld;                           \
        T *restrict q = dx + n * ld;                                                           \
        for (ptrdiff_t s = 0; s < S; s++) {                                                    \
            const double xh = ((double)p[s] - m) * inv;                                        \
            q[s] = (T)(gi * ((double)g[s] - mdy - xh * mdyx));                                 \
        }                                                                                      \
    }                                                                                          \
}                                                                                              \
                                                                                               \
/* dx above from dy masked by a fused ReLU's output relu_out (laid out as x) */                \
CNN_ATTR(ISA) static void cnn_bn_input_grad_masked_##SFX##_##ISA(const T *restrict dy,        \
        const T *restrict relu_out, const T *restrict x, T *restrict dx, ptrdiff_t N,         \
        ptrdiff_t S, ptrdiff_t ld, double m, double inv, double gi, double mdy,               \
        double mdyx) {                                                                         \
    for (ptrdiff_t n = 0; n < N; n++) {                                                        \
        const T *restrict g = dy + n * ld, *restrict r = relu_out + n * ld;                    \
        const T *restrict p = x + n * ld;                                                      \
        T *restrict q = dx + n * ld;                                                           \
        for (ptrdiff_t s = 0; s < S; s++) {                                                    \
            const double xh = ((double)p[s] - m) * inv;                                        \
            q[s] = (T)(gi * (CNN_BN_DY(g, r, s, 1) - mdy - xh * mdyx));                        \
        }                                                                                      \
    }                                                                                          \
}

CNN_FOR_EACH_ISA(CNN_DEFINE_NORM, f, float)
CNN_FOR_EACH_ISA(CNN_DEFINE_NORM, d, double)
#define cnn_bn_stats_f CNN_DISPATCH(cnn_bn_stats_f)
#define cnn_bn_stats_d CNN_DISPATCH(cnn_bn_stats_d)
#define cnn_bn_normalize_f CNN_DISPATCH(cnn_bn_normalize_f)
#define cnn_bn_normalize_d CNN_DISPATCH(cnn_bn_normalize_d)
#define cnn_bn_grad_sums_f CNN_DISPATCH(cnn_bn_grad_sums_f)
#define cnn_bn_grad_sums_d CNN_DISPATCH(cnn_bn_grad_sums_d)
#define cnn_bn_input_grad_f CNN_DISPATCH(cnn_bn_input_grad_f)
#define cnn_bn_input_grad_d CNN_DISPATCH(cnn_bn_input_grad_d)
#define cnn_bn_normalize_relu_f CNN_DISPATCH(cnn_bn_normalize_relu_f)
#define cnn_bn_normalize_relu_d CNN_DISPATCH(cnn_bn_normalize_relu_d)
#define cnn_bn_grad_sums_masked_f CNN_DISPATCH(cnn_bn_grad_sums_masked_f)
#define cnn_bn_grad_sums_masked_d CNN_DISPATCH(cnn_bn_grad_sums_masked_d)
#define cnn_bn_input_grad_masked_f CNN_DISPATCH(cnn_bn_input_grad_masked_f)
#define cnn_bn_input_grad_masked_d CNN_DISPATCH(cnn_bn_input_grad_masked_d)

#endif
