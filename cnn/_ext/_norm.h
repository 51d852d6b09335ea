/* Batch-normalisation passes over one channel, one definition per float type and kernel clone
 * (see _simd.h).
 *
 * A channel is N segments of S contiguous values, segment n at x + n * ld (an (N, C, S) array
 * seen from channel c: ld = C * S). Its sums are float64 over CNN_BN_LANES fixed lanes: value s
 * of every segment goes to lane s % CNN_BN_LANES in the full blocks of CNN_BN_LANES values,
 * the values of the last partial block to lanes 0, 1, ... in order, segments in order n = 0,
 * 1, ..., and the lanes are then added in a fixed pairwise tree. The order of
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

/* The lanes as one GNU C vector of 8 doubles (gcc's vectoriser does not find these
 * reductions in plain loops: it may not reorder the additions, and its SLP pass gives up on
 * two accumulators): one zmm register, two ymm or four xmm, lane by lane the same arithmetic.
 * CNN_BN_LOAD8(v, p, T) sets v to p[0..8) as float64. Elsewhere, plain arrays of lanes. */
#if defined(__GNUC__)
typedef double cnn_bn_v8d __attribute__((vector_size(8 * sizeof(double))));
typedef float cnn_bn_v8f __attribute__((vector_size(8 * sizeof(float))));
#define CNN_BN_LOAD8(v, p, T)                                                                 \
    do {                                                                                      \
        if (sizeof(T) == sizeof(float)) {                                                     \
            cnn_bn_v8f f_; memcpy(&f_, (p), sizeof f_);                                       \
            (v) = __builtin_convertvector(f_, cnn_bn_v8d);                                    \
        } else {                                                                              \
            memcpy(&(v), (p), sizeof(v));                                                     \
        }                                                                                     \
    } while (0)
#define CNN_BN_VECTOR 1
#else
#define CNN_BN_VECTOR 0
#endif

#if CNN_BN_VECTOR
#define CNN_BN_SUM_BODY(T)                                                                     \
    cnn_bn_v8d va = {0}, vb = {0};                                                             \
    for (ptrdiff_t n = 0; n < N; n++) {                                                        \
        const T *restrict p = x + n * ld;                                                      \
        for (ptrdiff_t s = 0; s < SB; s += CNN_BN_LANES) {                                     \
            cnn_bn_v8d v; CNN_BN_LOAD8(v, p + s, T);                                           \
            va += v;                                                                           \
        }                                                                                      \
        for (ptrdiff_t s = SB; s < S; s++) va[s - SB] += (double)p[s];                         \
    }                                                                                          \
    memcpy(acc, &va, sizeof va);                                                               \
    const double m = cnn_bn_reduce(acc) / M;                                                   \
    for (ptrdiff_t n = 0; n < N; n++) {                                                        \
        const T *restrict p = x + n * ld;                                                      \
        for (ptrdiff_t s = 0; s < SB; s += CNN_BN_LANES) {                                     \
            cnn_bn_v8d v; CNN_BN_LOAD8(v, p + s, T);                                           \
            v -= m;                                                                            \
            vb += v * v;                                                                       \
        }                                                                                      \
        for (ptrdiff_t s = SB; s < S; s++) {                                                   \
            const double d = (double)p[s] - m;                                                 \
            vb[s - SB] += d * d;                                                               \
        }                                                                                      \
    }                                                                                          \
    memcpy(acc, &vb, sizeof vb);
#define CNN_BN_GRAD_SUMS_BODY(T)                                                               \
    cnn_bn_v8d va = {0}, vb = {0};                                                             \
    for (ptrdiff_t n = 0; n < N; n++) {                                                        \
        const T *restrict g = dy + n * ld, *restrict p = x + n * ld;                           \
        for (ptrdiff_t s = 0; s < SB; s += CNN_BN_LANES) {                                     \
            cnn_bn_v8d d, h; CNN_BN_LOAD8(d, g + s, T); CNN_BN_LOAD8(h, p + s, T);             \
            va += d;                                                                           \
            vb += d * ((h - m) * inv);                                                         \
        }                                                                                      \
        for (ptrdiff_t s = SB; s < S; s++) {                                                   \
            const double d = (double)g[s];                                                     \
            va[s - SB] += d;                                                                   \
            vb[s - SB] += d * (((double)p[s] - m) * inv);                                      \
        }                                                                                      \
    }                                                                                          \
    memcpy(a, &va, sizeof va);                                                                 \
    memcpy(b, &vb, sizeof vb);
#else
#define CNN_BN_SUM_BODY(T)                                                                     \
    for (int k = 0; k < CNN_BN_LANES; k++) acc[k] = 0;                                         \
    for (ptrdiff_t n = 0; n < N; n++) {                                                        \
        const T *restrict p = x + n * ld;                                                      \
        for (ptrdiff_t s = 0; s < SB; s += CNN_BN_LANES)                                       \
            for (int k = 0; k < CNN_BN_LANES; k++) acc[k] += (double)p[s + k];                 \
        for (ptrdiff_t s = SB; s < S; s++) acc[s - SB] += (double)p[s];                        \
    }                                                                                          \
    const double m = cnn_bn_reduce(acc) / M;                                                   \
    for (int k = 0; k < CNN_BN_LANES; k++) acc[k] = 0;                                         \
    for (ptrdiff_t n = 0; n < N; n++) {                                                        \
        const T *restrict p = x + n * ld;                                                      \
        for (ptrdiff_t s = 0; s < S; s++) {                                                    \
            const double d = (double)p[s] - m;                                                 \
            acc[s < SB ? s % CNN_BN_LANES : s - SB] += d * d;                                  \
        }                                                                                      \
    }
#define CNN_BN_GRAD_SUMS_BODY(T)                                                               \
    for (int k = 0; k < CNN_BN_LANES; k++) a[k] = b[k] = 0;                                    \
    for (ptrdiff_t n = 0; n < N; n++) {                                                        \
        const T *restrict g = dy + n * ld, *restrict p = x + n * ld;                           \
        for (ptrdiff_t s = 0; s < S; s++) {                                                    \
            const int k = s < SB ? (int)(s % CNN_BN_LANES) : (int)(s - SB);                    \
            const double d = (double)g[s];                                                     \
            a[k] += d;                                                                         \
            b[k] += d * (((double)p[s] - m) * inv);                                            \
        }                                                                                      \
    }
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
    *var = cnn_bn_reduce(acc) / M;                                                             \
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
/* sums over one channel of dy and of dy * xhat, xhat = (x - m) * inv */                       \
CNN_ATTR(ISA) static void cnn_bn_grad_sums_##SFX##_##ISA(const T *restrict dy,                \
        const T *restrict x, ptrdiff_t N, ptrdiff_t S, ptrdiff_t ld, double m, double inv,    \
        double *sdy, double *sdyx) {                                                           \
    const ptrdiff_t SB = S - S % CNN_BN_LANES;                                                 \
    double a[CNN_BN_LANES], b[CNN_BN_LANES];                                                   \
    CNN_BN_GRAD_SUMS_BODY(T)                                                                   \
    *sdy = cnn_bn_reduce(a);                                                                   \
    *sdyx = cnn_bn_reduce(b);                                                                  \
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

#endif
