/* Direct 3x3 stride-1 convolution of a single-channel image (C = 1: a first layer), register
 * blocked, with an optional 2x2 / stride-2 max-pool in its epilogue. One definition per float
 * type and kernel clone (_simd.h).
 *
 * With one input channel the im2col GEMM has an inner dimension of 9: BLAS runs it far below
 * its rate, and the column matrix is 9x the image. Here the image is copied once into a
 * zero-padded plane P (rows r = oh + i, columns s = ow + j), split by column parity into
 * E[r][t] = P[r][2t] and O[r][t] = P[r][2t + 1]. An output row's even columns ow = 2t read
 * E[t], O[t], E[t + 1] (taps j = 0, 1, 2) and its odd columns ow = 2t + 1 read O[t], E[t + 1],
 * O[t + 1]: four vector loads per padded row serve both parities. A register block is
 * 2 output rows x L even + L odd columns x KB filters (L lanes of the clone's vector width,
 * KB per clone), 4 x KB vector accumulators; each loaded vector serves every accumulator that
 * reads it. Every output is
 *     acc = b + w[0][0]*P[oh][ow] + w[0][1]*P[oh][ow+1] + ... + w[2][2]*P[oh+2][ow+2],
 * the products added one by one in that order after the bias (fp-contract off: every clone,
 * every block size and every lane gives the same bits; columns past OW are computed on zero
 * padding and dropped).
 *
 * Epilogue, no pool: ReLU (v <= 0 ? 0 : v, NaN kept), even and odd lanes interleaved, the row
 * stored. With the pool (cnn_direct3x3_c1_pool22_*): the 2x2 window of pooled (s, t) is
 * a = (2s, 2t), b = (2s, 2t+1), c = (2s+1, 2t), d = (2s+1, 2t+1): lane t of the block's four
 * accumulators, so the pool is lanewise, max(max(a, b), max(c, d)) with the rule of _fused.h
 * and _pool.pyx (the first of equal values in row-major order wins, so of +0 and -0 the first;
 * the first NaN wins its window), then ReLU. That is the layer path's relu-then-pool bit for
 * bit: ReLU keeps NaNs and the order of the values, and maps every value <= 0 to +0. The
 * unpooled plane is never stored.
 *
 * A vector store of a row may run past the row's last valid column into the next row's first
 * columns, which are written later: the column blocks of a row pair run last block first, so
 * the spill of row 2 sp's last block into row 2 sp + 1 is overwritten by that row's first
 * block, and row 2 sp + 1's (or a pooled row's) spill lands in the next pair's rows. A store
 * that would leave the plane is done element by element.
 */
#ifndef CNN_DIRECT_H
#define CNN_DIRECT_H

#include <stddef.h>
#include <string.h>

#include "_simd.h"

/* Vector width in bytes and filters per register block, per clone (measured on the DESIGN CNN's
 * first conv, one thread, loaded machine, interleaved). AVX-512: KB = 2, 8 accumulators and the
 * 16 loaded vectors of a block stay in registers, 8 % faster than KB = 4. AVX2 (16 registers,
 * the loads are streamed either way): KB = 4, 14 % faster than KB = 2. Portable: KB = 4, no
 * measurable difference. */
#define CNN_DIRECT_VB_avx512f 64
#define CNN_DIRECT_VB_avx2 32
#define CNN_DIRECT_VB_default 16
#define CNN_DIRECT_KB_avx512f 2
#define CNN_DIRECT_KB_avx2 4
#define CNN_DIRECT_KB_default 4
/* GNU C vectors (gcc, clang); elsewhere (MSVC, or CNN_DIRECT_NO_VECTOR for tests) one lane,
 * V = T, with the same operations written for scalars. Per lane the arithmetic is the same.
 *   CNN_DV_TYPE(V, T, VB):   declares the vector type V of VB bytes of T
 *   CNN_DV_TAKE(u, z):       z if z > u or (z is NaN and u is not), else u (the pool's rule)
 *   CNN_DV_RELU(v):          v <= 0 ? +0 : v lane by lane (NaN kept)
 *   CNN_DV_ZIP(lo, hi, ev, od, V, L): lo, hi = the lanes ev[0], od[0], ev[1], od[1], ... */
#if defined(__GNUC__) && !defined(CNN_DIRECT_NO_VECTOR)
#define CNN_DIRECT_VECTOR 1
#define CNN_DV_TYPE(V, T, VB) typedef T V __attribute__((vector_size(VB)));
#define CNN_DV_MASK(V) __typeof__((V){0} == (V){0})
#define CNN_DV_TAKE(V, u, z)                                                              \
    ((V)(((CNN_DV_MASK(V))(z) & (~((z) <= (u)) & ((u) == (u))))                            \
         | ((CNN_DV_MASK(V))(u) & ~(~((z) <= (u)) & ((u) == (u))))))
#define CNN_DV_RELU(V, v) ((V)((CNN_DV_MASK(V))(v) & ~((v) <= 0)))
#if defined(__clang__)  /* no __builtin_shuffle: through memory */
#define CNN_DV_ZIP(lo, hi, ev, od, V, L)                                                  \
    do {                                                                                  \
        __typeof__((ev)[0]) te_[L], to_[L], z_[2 * (L)];                                  \
        memcpy(te_, &(ev), sizeof(V)); memcpy(to_, &(od), sizeof(V));                     \
        for (int t_ = 0; t_ < (L); t_++) { z_[2 * t_] = te_[t_]; z_[2 * t_ + 1] = to_[t_]; } \
        memcpy(&(lo), z_, sizeof(V)); memcpy(&(hi), z_ + (L), sizeof(V));                 \
    } while (0)
#else                    /* two permutes */
#define CNN_DV_ZIP(lo, hi, ev, od, V, L)                                                  \
    do {                                                                                  \
        CNN_DV_MASK(V) lo_, hi_;                                                          \
        for (int t_ = 0; t_ < (L) / 2; t_++) {                                            \
            lo_[2 * t_] = t_; lo_[2 * t_ + 1] = (L) + t_;                                 \
            hi_[2 * t_] = (L) / 2 + t_; hi_[2 * t_ + 1] = (L) + (L) / 2 + t_;             \
        }                                                                                 \
        (lo) = __builtin_shuffle((ev), (od), lo_); (hi) = __builtin_shuffle((ev), (od), hi_); \
    } while (0)
#endif
#else
#define CNN_DIRECT_VECTOR 0
#undef CNN_DIRECT_VB_avx512f
#undef CNN_DIRECT_VB_avx2
#undef CNN_DIRECT_VB_default
#define CNN_DIRECT_VB_avx512f 0
#define CNN_DIRECT_VB_avx2 0
#define CNN_DIRECT_VB_default 0
#define CNN_DV_TYPE(V, T, VB) typedef T V;
#define CNN_DV_TAKE(V, u, z) ((!((z) <= (u)) && (u) == (u)) ? (z) : (u))
#define CNN_DV_RELU(V, v) ((v) <= 0 ? (V)0 : (v))
#define CNN_DV_ZIP(lo, hi, ev, od, V, L) do { (lo) = (ev); (hi) = (od); } while (0)
#endif
/* Lanes of V (one without vectors). */
#define CNN_DV_LANES(VB, T) ((VB) ? (int)((VB) / sizeof(T)) : 1)
/* The widest block: 2 x 16 float columns. */
#define CNN_DIRECT_MAX_LANES 16

/* Elements of the per-thread scratch (any clone, float or double): the planes E and O, each
 * 2 * ceil(OH / 2) + 2 rows of at most ceil(OW / 2) + CNN_DIRECT_MAX_LANES + 1 elements. */
#define CNN_DIRECT_SCRATCH(OH, OW)                                                      \
    (2 * (2 * (((ptrdiff_t)(OH) + 1) / 2) + 2)                                            \
     * (((ptrdiff_t)(OW) + 1) / 2 + CNN_DIRECT_MAX_LANES + 1))

/* y[0..n) = v[0..n) of a block of FULL elements; the whole vector when it stays below end. */
#define CNN_DIRECT_STORE(dst, v, n, FULL, end, T)                                        \
    do {                                                                                  \
        if ((dst) + (FULL) <= (end)) {                                                    \
            memcpy((dst), (v), (FULL) * sizeof(T));                                       \
        } else {                                                                          \
            for (ptrdiff_t t_ = 0; t_ < (n); t_++) (dst)[t_] = (v)[t_];                   \
        }                                                                                 \
    } while (0)

#define CNN_DEFINE_DIRECT(ISA, SUFFIX, T)                                                     \
CNN_DV_TYPE(cnn_direct_v_##SUFFIX##_##ISA, T, CNN_DIRECT_VB_##ISA)                            \
CNN_ATTR(ISA) static void cnn_direct3x3_c1_run_##SUFFIX##_##ISA(                              \
        const T *restrict x, const T *restrict w, const T *restrict b, int relu,              \
        T *restrict y, int K, int H, int W, int pt, int pl, int OH, int OW,                   \
        T *restrict scratch, int pool) {                                                      \
    typedef cnn_direct_v_##SUFFIX##_##ISA V;                                                  \
    enum { L = CNN_DV_LANES(CNN_DIRECT_VB_##ISA, T), KB = CNN_DIRECT_KB_##ISA };              \
    const ptrdiff_t nb = ((ptrdiff_t)OW + 2 * L - 1) / (2 * L);  /* column blocks */          \
    const ptrdiff_t LW = nb * L + 1, PR = 2 * (((ptrdiff_t)OH + 1) / 2) + 2;                  \
    const ptrdiff_t YH = pool ? OH / 2 : OH, YW = pool ? OW / 2 : OW, plane = YH * YW;        \
    const ptrdiff_t pairs = pool ? YH : ((ptrdiff_t)OH + 1) / 2;                              \
    T *restrict E = scratch, *restrict O = scratch + PR * LW;                                 \
    if (plane == 0) return;                                                                   \
    memset(scratch, 0, (size_t)(2 * PR * LW) * sizeof(T));                                    \
    for (ptrdiff_t xr = 0; xr < H; xr++) {        /* padded row r = xr + pt */                \
        const ptrdiff_t r = xr + pt;                                                          \
        if (r >= PR) break;                                                                   \
        for (ptrdiff_t xs = 0; xs < W; xs++) {                                                \
            const ptrdiff_t s = xs + pl;                                                      \
            if (s >= 2 * LW) break;                                                           \
            ((s & 1) ? O : E)[r * LW + (s >> 1)] = x[xr * W + xs];                            \
        }                                                                                     \
    }                                                                                         \
    for (ptrdiff_t sp = 0; sp < pairs; sp++) {    /* output rows 2 sp, 2 sp + 1 */            \
        for (int k0 = 0; k0 < K; k0 += KB) {                                                  \
            const int nk = K - k0 < KB ? K - k0 : KB;                                         \
            T wk[KB][9], bk[KB];                                                              \
            for (int q = 0; q < KB; q++) {        /* missing filters: zero weights */         \
                for (int t = 0; t < 9; t++) wk[q][t] = q < nk ? w[(ptrdiff_t)(k0 + q) * 9 + t] : 0; \
                bk[q] = (q < nk && b) ? b[k0 + q] : 0;                                        \
            }                                                                                 \
            for (ptrdiff_t cb = nb - 1; cb >= 0; cb--) {  /* last block first: see above */   \
                V acc[2][2][KB];                  /* [row][parity][filter] */                 \
                V nz;                             /* -0 + b == b in every lane, b = -0 too */ \
                { T z0[L]; for (int t = 0; t < L; t++) z0[t] = -(T)0; memcpy(&nz, z0, sizeof(V)); } \
                _Pragma("GCC unroll 16")                                                      \
                for (int q = 0; q < KB; q++) {                                                \
                    acc[0][0][q] = acc[0][1][q] = acc[1][0][q] = acc[1][1][q] = nz + bk[q];   \
                }                                                                             \
                _Pragma("GCC unroll 4")                                                       \
                for (int i = 0; i < 4; i++) {     /* padded row 2 sp + i */                   \
                    const T *e = E + (2 * sp + i) * LW + cb * L, *o = O + (2 * sp + i) * LW + cb * L; \
                    V ld[4];                                                                  \
                    memcpy(&ld[0], e, sizeof(V)); memcpy(&ld[1], o, sizeof(V));               \
                    memcpy(&ld[2], e + 1, sizeof(V)); memcpy(&ld[3], o + 1, sizeof(V));       \
                    _Pragma("GCC unroll 4")                                                   \
                    for (int m = 0; m < 4; m++) { /* E[t], O[t], E[t+1], O[t+1] */            \
                        _Pragma("GCC unroll 2")                                               \
                        for (int rr = 0; rr < 2; rr++) {                                      \
                            const int ti = i - rr; /* tap row of output row 2 sp + rr */      \
                            if (ti < 0 || ti > 2) continue;                                   \
                            _Pragma("GCC unroll 16")                                          \
                            for (int q = 0; q < KB; q++) {                                    \
                                if (m <= 2) acc[rr][0][q] += ld[m] * wk[q][ti * 3 + m];       \
                                if (m >= 1) acc[rr][1][q] += ld[m] * wk[q][ti * 3 + m - 1];   \
                            }                                                                 \
                        }                                                                     \
                    }                                                                         \
                }                                                                             \
                if (pool) {                                                                   \
                    const ptrdiff_t t0 = cb * L, n = YW - t0 < L ? YW - t0 : L;               \
                    for (int q = 0; q < nk; q++) {                                            \
                        V v[4] = {acc[0][0][q], acc[0][1][q], acc[1][0][q], acc[1][1][q]};    \
                        for (int h = 0; h < 3; h++) {  /* (a, b), (c, d), then the two */     \
                            const V u = h < 2 ? v[2 * h] : v[0], z = h < 2 ? v[2 * h + 1] : v[1]; \
                            v[h < 2 ? h : 0] = CNN_DV_TAKE(V, u, z);                          \
                        }                                                                     \
                        if (relu) v[0] = CNN_DV_RELU(V, v[0]);                                \
                        T out[L];                                                             \
                        memcpy(out, &v[0], sizeof(V));                                        \
                        T *yq = y + (ptrdiff_t)(k0 + q) * plane;                              \
                        CNN_DIRECT_STORE(yq + sp * YW + t0, out, n, L, yq + plane, T);        \
                    }                                                                         \
                } else {                                                                      \
                    const ptrdiff_t c0 = cb * 2 * L, n = OW - c0 < 2 * L ? OW - c0 : 2 * L;   \
                    for (int rr = 0; rr < 2; rr++) {                                          \
                        if (2 * sp + rr >= OH) break;                                         \
                        for (int q = 0; q < nk; q++) {                                        \
                            V ev = acc[rr][0][q], od = acc[rr][1][q];                         \
                            if (relu) {                                                       \
                                ev = CNN_DV_RELU(V, ev);                                      \
                                od = CNN_DV_RELU(V, od);                                      \
                            }                                                                 \
                            V lo, hi;                                                         \
                            CNN_DV_ZIP(lo, hi, ev, od, V, L);                                 \
                            T *yq = y + (ptrdiff_t)(k0 + q) * plane;                          \
                            T *dst = yq + (2 * sp + rr) * YW + c0;                            \
                            if (dst + 2 * L <= yq + plane) {                                  \
                                memcpy(dst, &lo, sizeof(V)); memcpy(dst + L, &hi, sizeof(V)); \
                            } else {                                                          \
                                T out[2 * L];                                                 \
                                memcpy(out, &lo, sizeof(V)); memcpy(out + L, &hi, sizeof(V)); \
                                for (ptrdiff_t t = 0; t < n; t++) dst[t] = out[t];            \
                            }                                                                 \
                        }                                                                     \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* y (K, OH, OW) = act(conv(x (H, W), w (K, 1, 3, 3)) + b), b may be NULL */                  \
CNN_ATTR(ISA) static void cnn_direct3x3_c1_##SUFFIX##_##ISA(                                  \
        const T *restrict x, const T *restrict w, const T *restrict b, int relu,              \
        T *restrict y, int K, int H, int W, int pt, int pl, int OH, int OW,                   \
        T *restrict scratch) {                                                                \
    cnn_direct3x3_c1_run_##SUFFIX##_##ISA(x, w, b, relu, y, K, H, W, pt, pl, OH, OW, scratch, 0); \
}                                                                                             \
/* y (K, OH / 2, OW / 2) = maxpool2x2(act(conv(x, w) + b)): the same values as the above then \
 * a 2x2 / stride-2 unpadded max-pool (the last row / column of an odd OH / OW dropped) */    \
CNN_ATTR(ISA) static void cnn_direct3x3_c1_pool22_##SUFFIX##_##ISA(                           \
        const T *restrict x, const T *restrict w, const T *restrict b, int relu,              \
        T *restrict y, int K, int H, int W, int pt, int pl, int OH, int OW,                   \
        T *restrict scratch) {                                                                \
    cnn_direct3x3_c1_run_##SUFFIX##_##ISA(x, w, b, relu, y, K, H, W, pt, pl, OH, OW, scratch, 1); \
}

CNN_FOR_EACH_ISA(CNN_DEFINE_DIRECT, f, float)
CNN_FOR_EACH_ISA(CNN_DEFINE_DIRECT, d, double)
#define cnn_direct3x3_c1_f CNN_DISPATCH(cnn_direct3x3_c1_f)
#define cnn_direct3x3_c1_d CNN_DISPATCH(cnn_direct3x3_c1_d)
#define cnn_direct3x3_c1_pool22_f CNN_DISPATCH(cnn_direct3x3_c1_pool22_f)
#define cnn_direct3x3_c1_pool22_d CNN_DISPATCH(cnn_direct3x3_c1_pool22_d)

#endif
