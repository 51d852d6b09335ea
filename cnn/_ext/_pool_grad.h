/* The convolution backward of a training Conv2D -> MaxPool2D pair, from the pooled gradient.
 *
 * Behind a max-pool, the conv's pre-activation gradient dC/dz is zero except at each window's
 * winner: one cell in four for a 2x2 / stride-2 pool. The dense backward scatters the pooled
 * gradient into a zeroed (N, K, OH, OW) tensor and convolves all of it; these kernels take the
 * entries themselves, e = (n, k, p) for every pooled cell p, with the value g[e] (already
 * masked by the ReLU) and the winner q = arg[e], a flat index into the (OH, OW) plane, and do
 * only their multiply-adds, a quarter of the dense ones for that pool:
 *
 *     dw[k][c][i][j] = sum over n, then p, of g[n,k,p] * xt[n][pos[q] + i * rs + j * 32 + c]
 *     dxt[n][pos[q] + i * rs + j * 32 + c] += g[n,k,p] * w[k][c][i][j]
 *
 * Layout: channels in blocks of CNN_PG_BLOCK = 32, each image's block an (Hp, Wp, 32) array
 * (rs = Wp * 32 floats per row), padded so that every tap of every conv output is inside it,
 * and zero wherever x has no cell (padding, the channel tail). pos[q] is the offset in such a
 * block of conv output q's window origin (row oy * sh, column ox * sw). Weights are (T, 32)
 * per filter and block, tap t = i * kw + j.
 *
 * Taps go in chunks of whole kernel rows (NR rows of KW taps, NR * KW <= 9): a chunk's
 * accumulators (dw: 9 taps x 2 vectors of 16 lanes in AVX-512, 9 x 1 of 8 lanes in AVX2) or
 * weights (dx) stay in registers while the entries stream past, and every load is a row
 * pointer plus a constant. A nonzero entry whose q is outside [0, Q) is skipped and counted
 * (the argmax is the caller's own forward's; the count is a check, never expected nonzero).
 *
 * Zero entries (the pooled cells the ReLU masked: about 70 % of them in the DESIGN CNN's
 * training) are skipped: with finite x and w (the callers check) a product of +-0 added to a
 * sum that starts at +0.0 never changes its bits (such a sum is never -0.0), so this is exact.
 *
 * Every sum is one chain of fused multiply-adds in the order written (dw: images, then pooled
 * cells, from +0.0; dx: filters, then pooled cells, onto +0.0), whatever the clone: a lane is
 * a channel, so 8 or 16 lanes only change how many chains run side by side, and the portable
 * copy (fmaf) computes the same chains. The bits do not depend on the thread count: dw is
 * split over filters, dx over images. Kernels wider than CNN_PG_MAX_KW are not handled here
 * (the caller takes the dense backward).
 */
#ifndef CNN_POOL_GRAD_H
#define CNN_POOL_GRAD_H

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "_simd.h"

#define CNN_PG_BLOCK 32 /* channels per block */

/* The hand-written copies' targets (FMA with AVX2, as in _wino_gemm.h: every AVX2 CPU the
 * dispatch meets has it; AVX-512F implies it). */
#define CNN_PG_ATTR_avx512f __attribute__((target("avx512f")))
#define CNN_PG_ATTR_avx2 __attribute__((target("avx2,fma")))
#define CNN_PG_MAX_KW 5 /* widest kernel row these kernels take */
#define CNN_PG_RUN 256  /* entries compacted at a time by the hand-written copies */

/* The indices e < n with g[e] != 0 (NaN kept) into idx, in order, without a branch: the
 * hand-written copies then stream the nonzero entries only (a branch per entry mispredicted
 * too often to pay). Returns their count. */
static inline int cnn_pg_nonzero(const float *restrict g, int n, int *restrict idx) {
    int m = 0;
    for (int e = 0; e < n; e++) {
        idx[m] = e;
        m += g[e] != 0.0f;
    }
    return m;
}

/* Rows of a kernel of width kw per register chunk (at most 9 taps, a 3x3 kernel in one). */
static inline int cnn_pg_chunk_rows(int kw) {
    return kw == 1 ? 1 : kw == 2 ? 2 : kw == 3 ? 3 : kw == 4 ? 2 : 1;
}

/* x (C, H, W) of one image -> its channel block cb: (Hp, Wp, 32) at xt, top/left padding
 * (pt, pl). Returns nonzero if the block's channels of x hold a non-finite value (the caller
 * then takes the dense backward, whose products of zeros with infinities give NaN where these
 * kernels skip the zeros). */
static int cnn_pg_pack_f(const float *restrict x, int C, int H, int W, int cb, int pt, int pl,
                         int Hp, int Wp, float *restrict xt) {
    int bad = 0;
    const ptrdiff_t plane = (ptrdiff_t)H * W;
    const int c0 = cb * CNN_PG_BLOCK;
    const int nc = C - c0 < CNN_PG_BLOCK ? C - c0 : CNN_PG_BLOCK;
    for (int yp = 0; yp < Hp; yp++) {
        float *row = xt + (ptrdiff_t)yp * Wp * CNN_PG_BLOCK;
        const int y = yp - pt;
        if (y < 0 || y >= H) {
            memset(row, 0, sizeof(float) * (size_t)Wp * CNN_PG_BLOCK);
            continue;
        }
        for (int xp = 0; xp < Wp; xp++) {
            float *cell = row + (ptrdiff_t)xp * CNN_PG_BLOCK;
            const int xx = xp - pl;
            if (xx < 0 || xx >= W) {
                memset(cell, 0, sizeof(float) * CNN_PG_BLOCK);
                continue;
            }
            const float *src = x + c0 * plane + (ptrdiff_t)y * W + xx;
            for (int c = 0; c < nc; c++) {
                const float v = src[c * plane];
                bad |= !(v - v == 0.0f);
                cell[c] = v;
            }
            for (int c = nc; c < CNN_PG_BLOCK; c++) cell[c] = 0.0f;
        }
    }
    return bad;
}

/* Channel block cb of one image's input gradient, (Hp, Wp, 32) at dxt -> dx (C, H, W); cells
 * no tap reaches are 0. */
static void cnn_pg_unpack_f(const float *restrict dxt, int C, int H, int W, int cb, int pt,
                            int pl, int Hp, int Wp, float *restrict dx) {
    const ptrdiff_t plane = (ptrdiff_t)H * W;
    const int c0 = cb * CNN_PG_BLOCK;
    const int nc = C - c0 < CNN_PG_BLOCK ? C - c0 : CNN_PG_BLOCK;
    for (int y = 0; y < H; y++) {
        const int yp = y + pt;
        for (int xx = 0; xx < W; xx++) {
            const int xp = xx + pl;
            float *dst = dx + c0 * plane + (ptrdiff_t)y * W + xx;
            if (yp >= Hp || xp >= Wp) {
                for (int c = 0; c < nc; c++) dst[c * plane] = 0.0f;
                continue;
            }
            const float *cell = dxt + ((ptrdiff_t)yp * Wp + xp) * CNN_PG_BLOCK;
            for (int c = 0; c < nc; c++) dst[c * plane] = cell[c];
        }
    }
}

/* dw, one image, filters [k0, k1), one channel block: g, arg point at the image's (K, P)
 * entries, xt at its (Hp, Wp, 32) block; acc (K, T, 32) holds the running sums, read and
 * written back per filter and chunk; bias (K,) (or NULL) the running sums of g, the bias
 * gradient (the entries of every winner in range, in the same order). Returns the entries
 * skipped. */
#define CNN_PG_WGRAD_ARGS                                                                    \
    const float *restrict g, const ptrdiff_t *restrict arg, int k0, int k1, ptrdiff_t P,     \
    const float *restrict xt, const ptrdiff_t *restrict pos, ptrdiff_t Q, ptrdiff_t rs,      \
    int kh, int kw, float *restrict acc, float *restrict bias

/* dx, one image, every filter k < K, one channel block: wt (K, T, 32) the block's weights,
 * dxt the image's (Hp, Wp, 32) block (zeroed by the caller), added into in the order k, chunk,
 * p, tap. Returns the entries skipped. */
#define CNN_PG_DGRAD_ARGS                                                                    \
    const float *restrict g, const ptrdiff_t *restrict arg, int K, ptrdiff_t P,              \
    const float *restrict wt, const ptrdiff_t *restrict pos, ptrdiff_t Q, ptrdiff_t rs,      \
    int kh, int kw, float *restrict dxt

CNN_ATTR(default) static ptrdiff_t cnn_pg_wgrad_f_default(CNN_PG_WGRAD_ARGS) {
    const int T = kh * kw, nr = cnn_pg_chunk_rows(kw);
    ptrdiff_t bad = 0;
    for (int k = k0; k < k1; k++) {
        const float *gk = g + (ptrdiff_t)k * P;
        const ptrdiff_t *ak = arg + (ptrdiff_t)k * P;
        for (int i0 = 0; i0 < kh; i0 += nr) {
            const int rows = kh - i0 < nr ? kh - i0 : nr;
            float a[9][CNN_PG_BLOCK];
            float *m = acc + ((ptrdiff_t)k * T + (ptrdiff_t)i0 * kw) * CNN_PG_BLOCK;
            memcpy(a, m, sizeof(float) * (size_t)rows * kw * CNN_PG_BLOCK);
            float *sum = i0 == 0 && bias ? bias + k : NULL;
            for (ptrdiff_t p = 0; p < P; p++) {
                const float v = gk[p];
                if (v == 0.0f) continue;
                const ptrdiff_t q = ak[p];
                if ((size_t)q >= (size_t)Q) { bad += i0 == 0; continue; }
                if (sum) *sum += v;
                const float *r = xt + pos[q] + i0 * rs;
                for (int i = 0; i < rows; i++)
                    for (int j = 0; j < kw; j++)
                        for (int l = 0; l < CNN_PG_BLOCK; l++)
                            a[i * kw + j][l] = fmaf(v, r[i * rs + j * CNN_PG_BLOCK + l],
                                                    a[i * kw + j][l]);
            }
            memcpy(m, a, sizeof(float) * (size_t)rows * kw * CNN_PG_BLOCK);
        }
    }
    return bad;
}

CNN_ATTR(default) static ptrdiff_t cnn_pg_dgrad_f_default(CNN_PG_DGRAD_ARGS) {
    const int T = kh * kw, nr = cnn_pg_chunk_rows(kw);
    ptrdiff_t bad = 0;
    for (int k = 0; k < K; k++) {
        const float *gk = g + (ptrdiff_t)k * P;
        const ptrdiff_t *ak = arg + (ptrdiff_t)k * P;
        for (int i0 = 0; i0 < kh; i0 += nr) {
            const int rows = kh - i0 < nr ? kh - i0 : nr;
            const float *wk = wt + ((ptrdiff_t)k * T + (ptrdiff_t)i0 * kw) * CNN_PG_BLOCK;
            for (ptrdiff_t p = 0; p < P; p++) {
                const float v = gk[p];
                if (v == 0.0f) continue;
                const ptrdiff_t q = ak[p];
                if ((size_t)q >= (size_t)Q) { bad += i0 == 0; continue; }
                float *r = dxt + pos[q] + i0 * rs;
                for (int i = 0; i < rows; i++)
                    for (int j = 0; j < kw; j++)
                        for (int l = 0; l < CNN_PG_BLOCK; l++) {
                            float *d = r + i * rs + j * CNN_PG_BLOCK + l;
                            *d = fmaf(v, wk[(i * kw + j) * CNN_PG_BLOCK + l], *d);
                        }
            }
        }
    }
    return bad;
}


/* The weight gradient of a conv with few input channels (no input gradient: a network's first
 * layer), from its winners' columns. With C = 1 the channel blocks above would be 1/32 full;
 * here each conv output q of an image gets its column, the C x kh x kw inputs it reads
 * (cols[q][(c * kh + i) * kw + j], zero-padded to CS = 16 * NV floats, NV <= 4), and an entry
 * adds g times its winner's column into its filter's accumulator: dw[k] = sum over images,
 * then pooled cells, of g * cols[winner], from +0.0, one fused multiply-add per entry and
 * lane (a lane is a tap, so every clone computes the same sums). Four filters go side by side
 * (four independent chains). */

/* Columns from a zero-padded image xp (C, Hp, Wp): each of the C x kh kernel rows (kw
 * contiguous floats) copied into its lanes. Portable: one float at a time; the hand-written
 * copies load a kernel row per vector it meets with a masked load (masked-off lanes read
 * nothing) and store whole vectors. The same floats either way. */
CNN_ATTR(default) static void cnn_pg_fill_cols_f_default(
        const float *restrict xp, int C, int kh, int kw, int sh, int sw, int Hp, int Wp, int OH,
        int OW, int T, int CS, float *restrict out) {
    for (int oy = 0; oy < OH; oy++)
        for (int ox = 0; ox < OW; ox++) {
            float *o = out + ((ptrdiff_t)oy * OW + ox) * CS;
            const float *src = xp + (ptrdiff_t)oy * sh * Wp + (ptrdiff_t)ox * sw;
            int e = 0;
            for (int c = 0; c < C; c++)
                for (int i = 0; i < kh; i++)
                    for (int j = 0; j < kw; j++)
                        o[e++] = src[((ptrdiff_t)c * Hp + i) * Wp + j];
            for (e = T; e < CS; e++) o[e] = 0.0f;
        }
}

#if CNN_HAVE_CLONES
#include <immintrin.h>
#define CNN_PG_MAX_ROWS 64 /* kernel rows of a column: C * kh <= T <= 64 */

/* The pieces of the kernel rows per 16-lane vector b: lanes [16 b, 16 b + 16) of a column take
 * the lanes of a kernel row that fall in them (mask) from src + delta, so that lane l reads the
 * row's element l + 16 b - e (e: the row's first lane in the column). */
typedef struct {
    int n;                          /* pieces (a vector meets at most 16 kernel rows) */
    ptrdiff_t delta[CNN_PG_MAX_ROWS];
    unsigned mask[CNN_PG_MAX_ROWS];
} cnn_pg_pieces;

static void cnn_pg_plan_pieces(int C, int kh, int kw, int Hp, int Wp, int b,
                               cnn_pg_pieces *pc) {
    pc->n = 0;
    for (int c = 0; c < C; c++)
        for (int i = 0; i < kh; i++) {
            const int e = (c * kh + i) * kw;
            const int lo = e > 16 * b ? e : 16 * b, hi = e + kw < 16 * b + 16 ? e + kw : 16 * b + 16;
            if (hi <= lo) continue;
            unsigned m = 0;
            for (int l = lo; l < hi; l++) m |= 1u << (l - 16 * b);
            pc->delta[pc->n] = ((ptrdiff_t)c * Hp + i) * Wp + 16 * b - e;
            pc->mask[pc->n] = m;
            pc->n++;
        }
}

CNN_PG_ATTR_avx512f static void cnn_pg_fill_cols_f_avx512f(
        const float *restrict xp, int C, int kh, int kw, int sh, int sw, int Hp, int Wp, int OH,
        int OW, int T, int CS, float *restrict out) {
    cnn_pg_pieces pc[4];
    (void)T;
    for (int b = 0; b < CS / 16; b++) cnn_pg_plan_pieces(C, kh, kw, Hp, Wp, b, &pc[b]);
    for (int oy = 0; oy < OH; oy++)
        for (int ox = 0; ox < OW; ox++) {
            float *o = out + ((ptrdiff_t)oy * OW + ox) * CS;
            const float *src = xp + (ptrdiff_t)oy * sh * Wp + (ptrdiff_t)ox * sw;
            for (int b = 0; b < CS / 16; b++) {
                __m512 v = _mm512_setzero_ps();
                for (int e = 0; e < pc[b].n; e++)
                    v = _mm512_mask_loadu_ps(v, (__mmask16)pc[b].mask[e], src + pc[b].delta[e]);
                _mm512_storeu_ps(o + 16 * b, v);
            }
        }
}

CNN_PG_ATTR_avx2 static void cnn_pg_fill_cols_f_avx2(
        const float *restrict xp, int C, int kh, int kw, int sh, int sw, int Hp, int Wp, int OH,
        int OW, int T, int CS, float *restrict out) {
    cnn_pg_pieces pc[4];
    (void)T;
    for (int b = 0; b < CS / 16; b++) cnn_pg_plan_pieces(C, kh, kw, Hp, Wp, b, &pc[b]);
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    for (int oy = 0; oy < OH; oy++)
        for (int ox = 0; ox < OW; ox++) {
            float *o = out + ((ptrdiff_t)oy * OW + ox) * CS;
            const float *src = xp + (ptrdiff_t)oy * sh * Wp + (ptrdiff_t)ox * sw;
            for (int b = 0; b < CS / 16; b++) {
                __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
                for (int e = 0; e < pc[b].n; e++) {
                    const unsigned m = pc[b].mask[e];
                    const float *s = src + pc[b].delta[e];
                    if (m & 0xFFu) {
                        const __m256i ml = _mm256_cmpeq_epi32(
                            _mm256_and_si256(_mm256_set1_epi32((int)(m & 0xFFu)), bit), bit);
                        lo = _mm256_or_ps(lo, _mm256_maskload_ps(s, ml));
                    }
                    if (m >> 8) {
                        const __m256i mh = _mm256_cmpeq_epi32(
                            _mm256_and_si256(_mm256_set1_epi32((int)(m >> 8)), bit), bit);
                        hi = _mm256_or_ps(hi, _mm256_maskload_ps(s + 8, mh));
                    }
                }
                _mm256_storeu_ps(o + 16 * b, lo);
                _mm256_storeu_ps(o + 16 * b + 8, hi);
            }
        }
}
#define cnn_pg_fill_cols_f CNN_DISPATCH(cnn_pg_fill_cols_f)
#else
#define cnn_pg_fill_cols_f cnn_pg_fill_cols_f_default
#endif

/* The columns of one image x (C, H, W): out (OH * OW, CS); cells outside x are 0. From a
 * zero-padded copy of the image (malloc'ed; without memory, bounds tests per cell). */
static void cnn_pg_cols_f(const float *restrict x, int C, int H, int W, int kh, int kw, int sh,
                          int sw, int pt, int pl, int OH, int OW, int CS, float *restrict out) {
    const int Hp = (OH - 1) * sh + kh, Wp = (OW - 1) * sw + kw, T = C * kh * kw;
    float *xp = (float *)malloc(sizeof(float) * (size_t)C * Hp * Wp);
    if (xp) {
        memset(xp, 0, sizeof(float) * (size_t)C * Hp * Wp);
        for (int c = 0; c < C; c++)
            for (int yp = 0; yp < Hp; yp++) {
                const int y = yp - pt;
                if (y < 0 || y >= H) continue;
                const int x0 = pl > 0 ? pl : 0, x1 = W + pl < Wp ? W + pl : Wp;
                if (x1 > x0)
                    memcpy(xp + ((ptrdiff_t)c * Hp + yp) * Wp + x0,
                           x + ((ptrdiff_t)c * H + y) * W + (x0 - pl),
                           sizeof(float) * (size_t)(x1 - x0));
            }
        cnn_pg_fill_cols_f(xp, C, kh, kw, sh, sw, Hp, Wp, OH, OW, T, CS, out);
        free(xp);
        return;
    }
    for (int oy = 0; oy < OH; oy++)
        for (int ox = 0; ox < OW; ox++) {
            float *o = out + ((ptrdiff_t)oy * OW + ox) * CS;
            int e = 0;
            for (int c = 0; c < C; c++)
                for (int i = 0; i < kh; i++)
                    for (int j = 0; j < kw; j++, e++) {
                        const int y = oy * sh + i - pt, xx = ox * sw + j - pl;
                        o[e] = y >= 0 && y < H && xx >= 0 && xx < W
                               ? x[((ptrdiff_t)c * H + y) * W + xx] : 0.0f;
                    }
            for (; e < CS; e++) o[e] = 0.0f;
        }
}

/* One image's entries for filters [k0, k1): g, arg its (K, P), cols its (Q, CS); acc (K, CS)
 * and bias (K,) (or NULL) the running sums. Returns the entries skipped (winner out of
 * range). */
#define CNN_PG_COLS_ARGS                                                                     \
    const float *restrict g, const ptrdiff_t *restrict arg, int k0, int k1, ptrdiff_t P,     \
    const float *restrict cols, int CS, ptrdiff_t Q, float *restrict acc,                   \
    float *restrict bias

CNN_ATTR(default) static ptrdiff_t cnn_pg_cols_wgrad_f_default(CNN_PG_COLS_ARGS) {
    ptrdiff_t bad = 0;
    for (int k = k0; k < k1; k++) {
        const float *gk = g + (ptrdiff_t)k * P;
        const ptrdiff_t *ak = arg + (ptrdiff_t)k * P;
        float *a = acc + (ptrdiff_t)k * CS;
        float s = bias ? bias[k] : 0.0f;
        for (ptrdiff_t p = 0; p < P; p++) {
            const float v = gk[p];
            if (v == 0.0f) continue;  /* (see "Zero entries" above) */
            const ptrdiff_t q = ak[p];
            if ((size_t)q >= (size_t)Q) { bad++; continue; }
            s += v;
            const float *x = cols + q * CS;
            for (int l = 0; l < CS; l++) a[l] = fmaf(v, x[l], a[l]);
        }
        if (bias) bias[k] = s;
    }
    return bad;
}

#if CNN_HAVE_CLONES
#include <immintrin.h>


/* One chunk of NR rows by KW taps, L-lane vectors, lanes [l0, l0 + NB * L) of the block:
 * constants (always_inline, called through cnn_pg_chunk's switch), so that the loops unroll
 * and the accumulators (dw) or weights (dx) stay in registers. */
#define CNN_PG_BODIES(ISA, VEC, L, LOAD, STORE, SET1, FMA)                                   \
CNN_PG_ATTR_##ISA static inline __attribute__((always_inline)) ptrdiff_t                   \
cnn_pg_wgrad_run_##ISA(const float *restrict gk, const ptrdiff_t *restrict ak, ptrdiff_t P, \
                       const float *restrict xt, const ptrdiff_t *restrict pos, ptrdiff_t Q, \
                       ptrdiff_t rs, float *restrict m, float *restrict sum, const int NR,   \
                       const int KW, const int NB) {                                        \
    VEC a[3][CNN_PG_MAX_KW][CNN_PG_BLOCK / L];                                              \
    ptrdiff_t bad = 0;                                                                      \
    float s = sum ? *sum : 0.0f;                                                            \
    for (int i = 0; i < NR; i++)                                                            \
        for (int j = 0; j < KW; j++)                                                        \
            for (int b = 0; b < NB; b++)                                                    \
                a[i][j][b] = LOAD(m + (i * KW + j) * CNN_PG_BLOCK + b * L);                 \
    for (ptrdiff_t p0 = 0; p0 < P; p0 += CNN_PG_RUN) {                                      \
        int idx[CNN_PG_RUN];                                                                \
        const int nnz = cnn_pg_nonzero(gk + p0, P - p0 < CNN_PG_RUN ? (int)(P - p0)         \
                                                                    : CNN_PG_RUN, idx);     \
        for (int e = 0; e < nnz; e++) {                                                     \
            const ptrdiff_t p = p0 + idx[e];                                                \
            const ptrdiff_t q = ak[p];                                                      \
            if ((size_t)q >= (size_t)Q) { bad++; continue; }                                \
            const VEC v = SET1(gk[p]);                                                      \
            s += gk[p];                                                                     \
            const float *r = xt + pos[q];                                                   \
            for (int i = 0; i < NR; i++, r += rs)                                           \
                for (int j = 0; j < KW; j++)                                                \
                    for (int b = 0; b < NB; b++)                                            \
                        a[i][j][b] = FMA(v, LOAD(r + j * CNN_PG_BLOCK + b * L), a[i][j][b]); \
        }                                                                                   \
    }                                                                                       \
    for (int i = 0; i < NR; i++)                                                            \
        for (int j = 0; j < KW; j++)                                                        \
            for (int b = 0; b < NB; b++)                                                    \
                STORE(m + (i * KW + j) * CNN_PG_BLOCK + b * L, a[i][j][b]);                 \
    if (sum) *sum = s;                                                                      \
    return bad;                                                                             \
}                                                                                           \
CNN_PG_ATTR_##ISA static inline __attribute__((always_inline)) ptrdiff_t                   \
cnn_pg_dgrad_run_##ISA(const float *restrict gk, const ptrdiff_t *restrict ak, ptrdiff_t P, \
                       const float *restrict wk, const ptrdiff_t *restrict pos, ptrdiff_t Q, \
                       ptrdiff_t rs, float *restrict dxt, const int NR, const int KW,        \
                       const int NB) {                                                      \
    VEC w[3][CNN_PG_MAX_KW][CNN_PG_BLOCK / L];                                              \
    ptrdiff_t bad = 0;                                                                      \
    for (int i = 0; i < NR; i++)                                                            \
        for (int j = 0; j < KW; j++)                                                        \
            for (int b = 0; b < NB; b++)                                                    \
                w[i][j][b] = LOAD(wk + (i * KW + j) * CNN_PG_BLOCK + b * L);                \
    for (ptrdiff_t p0 = 0; p0 < P; p0 += CNN_PG_RUN) {                                      \
        int idx[CNN_PG_RUN];                                                                \
        const int nnz = cnn_pg_nonzero(gk + p0, P - p0 < CNN_PG_RUN ? (int)(P - p0)         \
                                                                    : CNN_PG_RUN, idx);     \
        for (int e = 0; e < nnz; e++) {                                                     \
            const ptrdiff_t p = p0 + idx[e];                                                \
            const ptrdiff_t q = ak[p];                                                      \
            if ((size_t)q >= (size_t)Q) { bad++; continue; }                                \
            const VEC v = SET1(gk[p]);                                                      \
            float *r = dxt + pos[q];                                                        \
            for (int i = 0; i < NR; i++, r += rs)                                           \
                for (int j = 0; j < KW; j++)                                                \
                    for (int b = 0; b < NB; b++) {                                          \
                        float *d = r + j * CNN_PG_BLOCK + b * L;                            \
                        STORE(d, FMA(v, w[i][j][b], LOAD(d)));                              \
                    }                                                                       \
        }                                                                                   \
    }                                                                                       \
    return bad;                                                                             \
}

CNN_PG_BODIES(avx512f, __m512, 16, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps,
              _mm512_fmadd_ps)
CNN_PG_BODIES(avx2, __m256, 8, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps,
              _mm256_fmadd_ps)

/* The switch over a chunk's shape (NR rows of KW taps); RUN's other arguments are the call's
 * own, the last three (NR, KW, NB) appended. */
#define CNN_PG_CHUNK(RUN, NB, rows, kw, ...)                                                 \
    switch ((kw) * 4 + (rows)) {                                                            \
    case 1 * 4 + 1: return RUN(__VA_ARGS__, 1, 1, NB);                                      \
    case 2 * 4 + 1: return RUN(__VA_ARGS__, 1, 2, NB);                                      \
    case 2 * 4 + 2: return RUN(__VA_ARGS__, 2, 2, NB);                                      \
    case 3 * 4 + 1: return RUN(__VA_ARGS__, 1, 3, NB);                                      \
    case 3 * 4 + 2: return RUN(__VA_ARGS__, 2, 3, NB);                                      \
    case 3 * 4 + 3: return RUN(__VA_ARGS__, 3, 3, NB);                                      \
    case 4 * 4 + 1: return RUN(__VA_ARGS__, 1, 4, NB);                                      \
    case 4 * 4 + 2: return RUN(__VA_ARGS__, 2, 4, NB);                                      \
    default: return RUN(__VA_ARGS__, 1, 5, NB);                                             \
    }

/* AVX-512F: the whole 32-channel block at once (two 16-lane vectors per tap). AVX2: one
 * 8-lane quarter of it per pass over the entries (9 of the 16 registers). */
CNN_PG_ATTR_avx512f static ptrdiff_t cnn_pg_wgrad_chunk_avx512f(
        const float *gk, const ptrdiff_t *ak, ptrdiff_t P, const float *xt, const ptrdiff_t *pos,
        ptrdiff_t Q, ptrdiff_t rs, float *m, float *sum, int rows, int kw) {
    CNN_PG_CHUNK(cnn_pg_wgrad_run_avx512f, 2, rows, kw, gk, ak, P, xt, pos, Q, rs, m, sum)
}
CNN_PG_ATTR_avx512f static ptrdiff_t cnn_pg_dgrad_chunk_avx512f(
        const float *gk, const ptrdiff_t *ak, ptrdiff_t P, const float *wk, const ptrdiff_t *pos,
        ptrdiff_t Q, ptrdiff_t rs, float *dxt, int rows, int kw) {
    CNN_PG_CHUNK(cnn_pg_dgrad_run_avx512f, 2, rows, kw, gk, ak, P, wk, pos, Q, rs, dxt)
}
CNN_PG_ATTR_avx2 static ptrdiff_t cnn_pg_wgrad_chunk_avx2(
        const float *gk, const ptrdiff_t *ak, ptrdiff_t P, const float *xt, const ptrdiff_t *pos,
        ptrdiff_t Q, ptrdiff_t rs, float *m, float *sum, int rows, int kw) {
    CNN_PG_CHUNK(cnn_pg_wgrad_run_avx2, 1, rows, kw, gk, ak, P, xt, pos, Q, rs, m, sum)
}
CNN_PG_ATTR_avx2 static ptrdiff_t cnn_pg_dgrad_chunk_avx2(
        const float *gk, const ptrdiff_t *ak, ptrdiff_t P, const float *wk, const ptrdiff_t *pos,
        ptrdiff_t Q, ptrdiff_t rs, float *dxt, int rows, int kw) {
    CNN_PG_CHUNK(cnn_pg_dgrad_run_avx2, 1, rows, kw, gk, ak, P, wk, pos, Q, rs, dxt)
}

/* The filter and chunk loops around them, per ISA: 16-lane blocks of 2 (AVX-512F) or 8-lane
 * quarters one at a time (AVX2). */
#define CNN_PG_LOOPS(ISA, L)                                                                 \
CNN_PG_ATTR_##ISA static ptrdiff_t cnn_pg_wgrad_f_##ISA(CNN_PG_WGRAD_ARGS) {                \
    const int T = kh * kw, nr = cnn_pg_chunk_rows(kw);                                      \
    ptrdiff_t bad = 0;                                                                      \
    for (int k = k0; k < k1; k++)                                                           \
        for (int i0 = 0; i0 < kh; i0 += nr) {                                               \
            const int rows = kh - i0 < nr ? kh - i0 : nr;                                   \
            float *m = acc + ((ptrdiff_t)k * T + (ptrdiff_t)i0 * kw) * CNN_PG_BLOCK;        \
            for (int l0 = 0; l0 < CNN_PG_BLOCK; l0 += L) {                                  \
                const ptrdiff_t skipped = cnn_pg_wgrad_chunk_##ISA(g + (ptrdiff_t)k * P, arg + (ptrdiff_t)k * P, \
                                               P, xt + i0 * rs + l0, pos, Q, rs, m + l0,    \
                                               i0 == 0 && l0 == 0 && bias ? bias + k : NULL, \
                                               rows, kw);                                   \
                if (i0 == 0 && l0 == 0) bad += skipped; /* each entry counted once */       \
            }                                                                               \
        }                                                                                   \
    return bad;                                                                             \
}                                                                                           \
CNN_PG_ATTR_##ISA static ptrdiff_t cnn_pg_dgrad_f_##ISA(CNN_PG_DGRAD_ARGS) {                \
    const int T = kh * kw, nr = cnn_pg_chunk_rows(kw);                                      \
    ptrdiff_t bad = 0;                                                                      \
    for (int k = 0; k < K; k++)                                                             \
        for (int i0 = 0; i0 < kh; i0 += nr) {                                               \
            const int rows = kh - i0 < nr ? kh - i0 : nr;                                   \
            const float *wk = wt + ((ptrdiff_t)k * T + (ptrdiff_t)i0 * kw) * CNN_PG_BLOCK;  \
            for (int l0 = 0; l0 < CNN_PG_BLOCK; l0 += L) {                                  \
                const ptrdiff_t skipped = cnn_pg_dgrad_chunk_##ISA(g + (ptrdiff_t)k * P, arg + (ptrdiff_t)k * P, \
                                               P, wk + l0, pos, Q, rs, dxt + i0 * rs + l0,  \
                                               rows, kw);                                   \
                if (i0 == 0 && l0 == 0) bad += skipped; /* each entry counted once */       \
            }                                                                               \
        }                                                                                   \
    return bad;                                                                             \
}

CNN_PG_LOOPS(avx512f, 32)
CNN_PG_LOOPS(avx2, 8)


/* The column weight gradient by hand: CS = 16 * NV floats as vectors in registers, U filters
 * side by side (a switch on NV; U = 4, then the rest one by one). */
#define CNN_PG_COLS_RUN(ISA, VEC, L, LOAD, STORE, SET1, FMA)                                 \
CNN_PG_ATTR_##ISA static inline __attribute__((always_inline)) ptrdiff_t                   \
cnn_pg_cols_run_##ISA(CNN_PG_COLS_ARGS, const int NV, const int U) {                        \
    ptrdiff_t bad = 0;                                                                      \
    for (int k = k0; k + U <= k1; k += U) {                                                 \
        VEC a[4][4 * 16 / L];                                                               \
        float s[4];                                                                         \
        for (int u = 0; u < U; u++) {                                                       \
            s[u] = bias ? bias[k + u] : 0.0f;                                               \
            for (int l = 0; l < NV * 16 / L; l++)                                           \
                a[u][l] = LOAD(acc + (ptrdiff_t)(k + u) * CS + l * L);                      \
        }                                                                                   \
        for (ptrdiff_t p = 0; p < P; p++)                                                   \
            for (int u = 0; u < U; u++) {                                                   \
                const float v = g[(ptrdiff_t)(k + u) * P + p];                              \
                if (v == 0.0f) continue;                                                    \
                const ptrdiff_t q = arg[(ptrdiff_t)(k + u) * P + p];                        \
                if ((size_t)q >= (size_t)Q) { bad++; continue; }                            \
                s[u] += v;                                                                  \
                const VEC vv = SET1(v);                                                     \
                const float *x = cols + q * CS;                                             \
                for (int l = 0; l < NV * 16 / L; l++)                                       \
                    a[u][l] = FMA(vv, LOAD(x + l * L), a[u][l]);                            \
            }                                                                               \
        for (int u = 0; u < U; u++) {                                                       \
            if (bias) bias[k + u] = s[u];                                                   \
            for (int l = 0; l < NV * 16 / L; l++)                                           \
                STORE(acc + (ptrdiff_t)(k + u) * CS + l * L, a[u][l]);                      \
        }                                                                                   \
    }                                                                                       \
    return bad;                                                                             \
}                                                                                           \
CNN_PG_ATTR_##ISA static inline __attribute__((always_inline)) ptrdiff_t                   \
cnn_pg_cols_nv_##ISA(CNN_PG_COLS_ARGS, const int NV) {                                      \
    const int k4 = k0 + (k1 - k0) / 4 * 4;                                                  \
    return cnn_pg_cols_run_##ISA(g, arg, k0, k4, P, cols, CS, Q, acc, bias, NV, 4)          \
         + cnn_pg_cols_run_##ISA(g, arg, k4, k1, P, cols, CS, Q, acc, bias, NV, 1);         \
}                                                                                           \
CNN_PG_ATTR_##ISA static ptrdiff_t cnn_pg_cols_wgrad_f_##ISA(CNN_PG_COLS_ARGS) {            \
    switch (CS / 16) {                                                                      \
    case 1: return cnn_pg_cols_nv_##ISA(g, arg, k0, k1, P, cols, CS, Q, acc, bias, 1);      \
    case 2: return cnn_pg_cols_nv_##ISA(g, arg, k0, k1, P, cols, CS, Q, acc, bias, 2);      \
    case 3: return cnn_pg_cols_nv_##ISA(g, arg, k0, k1, P, cols, CS, Q, acc, bias, 3);      \
    default: return cnn_pg_cols_nv_##ISA(g, arg, k0, k1, P, cols, CS, Q, acc, bias, 4);     \
    }                                                                                       \
}

CNN_PG_COLS_RUN(avx512f, __m512, 16, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps,
                _mm512_fmadd_ps)
CNN_PG_COLS_RUN(avx2, __m256, 8, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps,
                _mm256_fmadd_ps)

#define cnn_pg_cols_wgrad_f CNN_DISPATCH(cnn_pg_cols_wgrad_f)
#define cnn_pg_wgrad_f CNN_DISPATCH(cnn_pg_wgrad_f)
#define cnn_pg_dgrad_f CNN_DISPATCH(cnn_pg_dgrad_f)
#else
#define cnn_pg_wgrad_f cnn_pg_wgrad_f_default
#define cnn_pg_cols_wgrad_f cnn_pg_cols_wgrad_f_default
#define cnn_pg_dgrad_f cnn_pg_dgrad_f_default
#endif

#endif
