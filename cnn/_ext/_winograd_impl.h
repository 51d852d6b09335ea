/* Body of the Winograd F(2x2, 3x3) transforms, included by _winograd.h once per float type and
 * kernel clone, with T (the type), CNN_WINO_FN(name) (the type-suffixed name of a function
 * built once), CNN_WINO_CLONE(name) (the name of this clone of a vectorised transform),
 * CNN_WINO_ATTR (its target attributes) and, in the one pass that defines the functions
 * built once, CNN_WINO_SHARED. See _winograd.h for the maths and the layouts. */
/* U = G g G^T for every (ko, ci) with k0 <= ko < k1. flip == 0: g = w[ko, ci] with w
 * (Kout, Cin, 3, 3). flip == 1: g = w[ci, ko] rotated by 180 degrees, with w
 * (Cin, Kout, 3, 3): the kernel of the input gradient, whose "input" is dy (Cin = the
 * forward K) and "output" dx.
 *
 * A run of up to CNN_WINO_WEIGHTS_RUN channels of one ko goes through a small local block
 * first, then out as 16 contiguous runs: the 16 elements of one filter lie Kout * Cin apart
 * in U, and storing them one by one (16 streams at a large power-of-two stride share an L1
 * set) made this transform 45 % of a batch-1 Winograd conv. */
#ifdef CNN_WINO_SHARED
#define CNN_WINO_WEIGHTS_RUN 64
static void CNN_WINO_FN(weights)(const T *restrict w, T *restrict U, int Kout, int Cin,
                                 int flip, int k0, int k1) {
    const ptrdiff_t KC = (ptrdiff_t)Kout * Cin;
    T blk[16][CNN_WINO_WEIGHTS_RUN];
    for (int ko = k0; ko < k1; ko++)
    for (int c0 = 0; c0 < Cin; c0 += CNN_WINO_WEIGHTS_RUN) {
        const int run = Cin - c0 < CNN_WINO_WEIGHTS_RUN ? Cin - c0 : CNN_WINO_WEIGHTS_RUN;
        for (int q = 0; q < run; q++) {
            const int ci = c0 + q;
            T g[3][3], u[4][3];
            const T *src = flip ? w + ((ptrdiff_t)ci * Kout + ko) * 9
                                : w + ((ptrdiff_t)ko * Cin + ci) * 9;
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++)
                    g[i][j] = flip ? src[(2 - i) * 3 + (2 - j)] : src[i * 3 + j];
            for (int j = 0; j < 3; j++) {
                u[0][j] = g[0][j];
                u[1][j] = (T)0.5 * (g[0][j] + g[1][j] + g[2][j]);
                u[2][j] = (T)0.5 * (g[0][j] - g[1][j] + g[2][j]);
                u[3][j] = g[2][j];
            }
            for (int r = 0; r < 4; r++) {
                blk[4 * r + 0][q] = u[r][0];
                blk[4 * r + 1][q] = (T)0.5 * (u[r][0] + u[r][1] + u[r][2]);
                blk[4 * r + 2][q] = (T)0.5 * (u[r][0] - u[r][1] + u[r][2]);
                blk[4 * r + 3][q] = u[r][2];
            }
        }
        T *dst = U + (ptrdiff_t)ko * Cin + c0;
        for (int e = 0; e < 16; e++)
            memcpy(dst + e * KC, blk[e], (size_t)run * sizeof(T));
    }
}

#endif

/* The parity split of one channel plane xc (H, W) of the input transform (masked by mc when not
 * NULL) into the sub-planes ee, eo, oe, oo of buf (see input): real rows [r0, r1), ns real x
 * columns; pad cells are left as they are (zero). mrow is a row of scratch. */
CNN_WINO_ATTR static inline void CNN_WINO_CLONE(split_input)(
        const T *restrict xc, const T *restrict mc, T *restrict buf, T *restrict mrow, int W,
        int pt, int pl, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t ns, ptrdiff_t HW, ptrdiff_t SUB) {
    T *restrict ee = buf, *restrict eo = buf + SUB, *restrict oe = buf + 2 * SUB;
    T *restrict oo = buf + 3 * SUB;
    /* x column 2k sits at padded column 2k + pl: parity pl & 1, index k + pl / 2; x column
       2k + 1 at parity (pl + 1) & 1, index k + (pl + 1) / 2. */
    const ptrdiff_t n_even = (ns + 1) / 2, n_odd = ns / 2;
    const ptrdiff_t at_even = pl / 2, at_odd = ((ptrdiff_t)pl + 1) / 2;
    for (ptrdiff_t r = r0; r < r1; r++) {
        const T *restrict xr = xc + (r - pt) * W;
        T *restrict ev = ((r & 1) ? oe : ee) + (r >> 1) * HW;
        T *restrict od = ((r & 1) ? oo : eo) + (r >> 1) * HW;
#ifdef CNN_WINO_SPLIT_ROW
        (void)mrow; (void)n_even; (void)n_odd; (void)at_even; (void)at_odd;
        CNN_WINO_SPLIT_ROW(xr, mc ? mc + (r - pt) * W : NULL, pl, ns, ev, od, HW);
#else
        T *restrict de = ((pl & 1) ? od : ev) + at_even;
        T *restrict dd = ((pl & 1) ? ev : od) + at_odd;
        if (mc) {
            /* the masked row first, unit-stride (a select the vectoriser takes; in the
               stride-2 loops it ran one element at a time, with a branch) */
            const T *restrict mr = mc + (r - pt) * W;
            CNN_IVDEP
            for (ptrdiff_t k = 0; k < ns; k++) mrow[k] = mr[k] > 0 ? xr[k] : 0;
            for (ptrdiff_t k = 0; k < n_even; k++) de[k] = mrow[2 * k];
            for (ptrdiff_t k = 0; k < n_odd; k++) dd[k] = mrow[2 * k + 1];
        } else {
            for (ptrdiff_t k = 0; k < n_even; k++) de[k] = xr[2 * k];
            for (ptrdiff_t k = 0; k < n_odd; k++) dd[k] = xr[2 * k + 1];
        }
#endif
    }
}

/* V[e][ci][t0 + a*(tw+1) + b] = (B^T d B)[e] for every channel ci and tile (a, b) of one
 * image, b < tw, stored at V + e*lde + ci*ldv + t (lde >= Cin * ldv). The column b = tw of each
 * tile row is junk (computed, never used): it lets the loop run flat over all tiles of the
 * image, unit-stride, in long vectors.
 * x is the image (Cin, H, W); if mask is not NULL (same shape), cells where mask <= 0 (or NaN)
 * read as 0: the ReLU derivative applied to dy on the way in. pad is scratch for two copies of
 * the zero-padded plane split by row and column parity into four sub-planes of (th + 1) x
 * (tw + 1), plus CNN_WINO_SPLIT_SLACK spare cells each, and a row of 2 * (tw + 1) for the masked
 * copy of an x row (see CNN_WINO_PAD_SIZE): padded (r, s) sits in sub-plane (r % 2, s % 2) at
 * (r / 2, s / 2), so the 4x4 tile (a, b) is rows a, a + 1 and columns b, b + 1 of all four. A
 * real row's even and odd x columns go to the sub-planes of their padded parity (AVX2 float32:
 * one masked-load pass, see _winograd.h; else two stride-2 loops with plain bounds, the
 * vectoriser's deinterleave), the pad cells staying zero. Channel ci + 1 is split into the other
 * copy before channel ci is transformed: the transform's unaligned loads then never wait on the
 * split's fresh stores (perf showed the store-forwarding stalls). */
CNN_WINO_ATTR static void CNN_WINO_CLONE(input)(const T *restrict x, const T *restrict mask,
                               T *restrict pad, T *restrict V, int Cin, int H, int W,
                               int pt, int pl, int th, int tw, ptrdiff_t ldv, ptrdiff_t lde,
                               ptrdiff_t t0) {
    const ptrdiff_t HW = (ptrdiff_t)tw + 1, SUB = CNN_WINO_INPUT_SUB(th, tw);
    const ptrdiff_t PH = 2 * ((ptrdiff_t)th + 1), PW = 2 * HW;
    const ptrdiff_t CV = lde, U = (ptrdiff_t)th * HW, plane = (ptrdiff_t)H * W;
    T *restrict mrow = pad + 8 * SUB;
    /* Real rows/columns of the padded plane: [r0, r1) x [pl, s1); x columns [0, ns). */
    ptrdiff_t r0 = pt < PH ? pt : PH, r1 = (ptrdiff_t)pt + H < PH ? (ptrdiff_t)pt + H : PH;
    ptrdiff_t s1 = (ptrdiff_t)pl + W < PW ? (ptrdiff_t)pl + W : PW;
    if (r1 < r0) r1 = r0;
    const ptrdiff_t ns = s1 > pl ? s1 - pl : 0;
    memset(pad, 0, (size_t)(8 * SUB) * sizeof(T));
    if (Cin > 0)
        CNN_WINO_CLONE(split_input)(x, mask, pad, mrow, W, pt, pl, r0, r1, ns, HW, SUB);
    for (int ci = 0; ci < Cin; ci++) {
        if (ci + 1 < Cin)
            CNN_WINO_CLONE(split_input)(x + (ci + 1) * plane,
                                        mask ? mask + (ci + 1) * plane : NULL,
                                        pad + ((ci + 1) & 1) * 4 * SUB, mrow, W, pt, pl, r0, r1,
                                        ns, HW, SUB);
        const T *restrict ee = pad + (ci & 1) * 4 * SUB, *restrict eo = ee + SUB;
        const T *restrict oe = ee + 2 * SUB, *restrict oo = ee + 3 * SUB;
#ifdef CNN_WINO_INPUT_TILES
        CNN_WINO_INPUT_TILES(ee, eo, oe, oo, HW, U, V + (ptrdiff_t)ci * ldv + t0, CV);
#else
        /* One output stream per transformed element e = 4r + s. */
        T *restrict v0 = V + (ptrdiff_t)ci * ldv + t0, *restrict v1 = v0 + CV;
        T *restrict v2 = v1 + CV, *restrict v3 = v2 + CV, *restrict v4 = v3 + CV;
        T *restrict v5 = v4 + CV, *restrict v6 = v5 + CV, *restrict v7 = v6 + CV;
        T *restrict v8 = v7 + CV, *restrict v9 = v8 + CV, *restrict v10 = v9 + CV;
        T *restrict v11 = v10 + CV, *restrict v12 = v11 + CV, *restrict v13 = v12 + CV;
        T *restrict v14 = v13 + CV, *restrict v15 = v14 + CV;
        CNN_IVDEP
        for (ptrdiff_t u = 0; u < U; u++) {
            /* Tile row k of tile u = a*HW + b is (d_k0, d_k1, d_k2, d_k3); rows 0..3 live in
               sub-planes (e, o, e, o) at tile rows (a, a, a+1, a+1). d B, row by row: */
            const ptrdiff_t n = u + HW;
            T q00 = ee[u] - ee[u + 1], q01 = eo[u] + ee[u + 1];
            T q02 = ee[u + 1] - eo[u], q03 = eo[u] - eo[u + 1];
            T q10 = oe[u] - oe[u + 1], q11 = oo[u] + oe[u + 1];
            T q12 = oe[u + 1] - oo[u], q13 = oo[u] - oo[u + 1];
            T q20 = ee[n] - ee[n + 1], q21 = eo[n] + ee[n + 1];
            T q22 = ee[n + 1] - eo[n], q23 = eo[n] - eo[n + 1];
            T q30 = oe[n] - oe[n + 1], q31 = oo[n] + oe[n + 1];
            T q32 = oe[n + 1] - oo[n], q33 = oo[n] - oo[n + 1];
            /* then B^T (d B): combine rows. */
            v0[u] = q00 - q20;  v1[u] = q01 - q21;  v2[u] = q02 - q22;  v3[u] = q03 - q23;
            v4[u] = q10 + q20;  v5[u] = q11 + q21;  v6[u] = q12 + q22;  v7[u] = q13 + q23;
            v8[u] = q20 - q10;  v9[u] = q21 - q11;  v10[u] = q22 - q12; v11[u] = q23 - q13;
            v12[u] = q10 - q30; v13[u] = q11 - q31; v14[u] = q12 - q32; v15[u] = q13 - q33;
        }
#endif
    }
}

/* y[ko, 2a+i, 2b+j] = act((A^T M A)[i][j] + bias[ko]) for one image y (Kout, OH, OW), from
 * M[e][ko][t0 + a*(tw+1) + b] (the junk column b = tw is dropped). bias may be NULL; relu != 0
 * clamps at 0 (NaN stays NaN). The transform runs flat over the image's tiles into o, scratch
 * of 4 * th * (tw + 1) elements, then the 2x2 blocks are copied out row by row. */
CNN_WINO_ATTR static void CNN_WINO_CLONE(output)(const T *restrict M, T *restrict y,
                                                  const T *restrict bias, int relu, int Kout,
                                                  int OH, int OW, int th, int tw, ptrdiff_t ldm,
                                                  ptrdiff_t t0, T *restrict o) {
    const ptrdiff_t KM = (ptrdiff_t)Kout * ldm, HW = (ptrdiff_t)tw + 1, U = (ptrdiff_t)th * HW;
    T *restrict o00 = o, *restrict o01 = o + U, *restrict o10 = o + 2 * U;
    T *restrict o11 = o + 3 * U;
    const int full = OW / 2;   /* tiles whose two columns are both inside y */
    for (int ko = 0; ko < Kout; ko++) {
        const T bk = bias ? bias[ko] : (T)0;
        CNN_WINO_M_STREAMS(M, ko, ldm, t0, KM)
        CNN_IVDEP
        for (ptrdiff_t u = 0; u < U; u++) {
            CNN_WINO_TILE_VALUES(u)
            o00[u] = v00; o01[u] = v01; o10[u] = v10; o11[u] = v11;
        }
        T *restrict yk = y + (ptrdiff_t)ko * OH * OW;
        for (ptrdiff_t a = 0; a < th; a++) {
            const ptrdiff_t row = a * HW;
            T *restrict y0 = yk + 2 * a * OW;
            for (int b = 0; b < full; b++) {
                y0[2 * b] = o00[row + b]; y0[2 * b + 1] = o01[row + b];
            }
            if (full < tw) y0[2 * full] = o00[row + full];
            if (2 * a + 1 < OH) {
                T *restrict y1 = y0 + OW;
                for (int b = 0; b < full; b++) {
                    y1[2 * b] = o10[row + b]; y1[2 * b + 1] = o11[row + b];
                }
                if (full < tw) y1[2 * full] = o10[row + full];
            }
        }
    }
}

/* The output transform with a 2x2, stride-2, unpadded max-pool in its epilogue: the pool's
 * window (a, b) is exactly output tile (a, b), so yp[ko, a, b] = max of the tile's four values
 * act((A^T M A)[i][j] + bias[ko]) for a < PH, b < PW (PH = OH / 2, PW = OW / 2, rounded down:
 * the windows that fit), and the unpooled tensor is never written. The maximum follows the
 * max-pool's rules (_fused.h): the window's cells in row-major order, the first starts, a
 * strict '>' replaces (of +0.0 and -0.0 the first wins), and the first NaN wins. */
CNN_WINO_ATTR static void CNN_WINO_CLONE(output_pool)(const T *restrict M, T *restrict yp,
                                                       const T *restrict bias, int relu,
                                                       int Kout, int PH, int PW, int th,
                                                       int tw, ptrdiff_t ldm, ptrdiff_t t0,
                                                       T *restrict o) {
    const ptrdiff_t KM = (ptrdiff_t)Kout * ldm, HW = (ptrdiff_t)tw + 1;
    const ptrdiff_t U = (ptrdiff_t)(PH < th ? PH : th) * HW;
    for (int ko = 0; ko < Kout; ko++) {
        const T bk = bias ? bias[ko] : (T)0;
        CNN_WINO_M_STREAMS(M, ko, ldm, t0, KM)
        /* As in the max-pool: plain comparisons first, noting whether the plane may hold a NaN
           (a NaN among the four makes their sum NaN; so do +inf and -inf, harmlessly); only
           then is it redone with the NaN-aware rule. In this form the first pass vectorises. */
        int nan = 0;
        CNN_IVDEP
        for (ptrdiff_t u = 0; u < U; u++) {
            CNN_WINO_TILE_VALUES(u)
            T best = v00;
            best = v01 > best ? v01 : best;
            best = v10 > best ? v10 : best;
            best = v11 > best ? v11 : best;
            o[u] = best;
            const T sum = (v00 + v01) + (v10 + v11);
            nan |= sum != sum;
        }
        if (nan) {
            for (ptrdiff_t u = 0; u < U; u++) {
                CNN_WINO_TILE_VALUES(u)
                T best = v00;
                int gt = (v01 > best) | ((v01 != v01) & (best == best));
                best = gt ? v01 : best;
                gt = (v10 > best) | ((v10 != v10) & (best == best));
                best = gt ? v10 : best;
                gt = (v11 > best) | ((v11 != v11) & (best == best));
                o[u] = gt ? v11 : best;
            }
        }
        T *restrict yk = yp + (ptrdiff_t)ko * PH * PW;
        for (ptrdiff_t a = 0; a < PH; a++)
            for (ptrdiff_t b = 0; b < PW; b++) yk[a * PW + b] = o[a * HW + b];
    }
}

/* The parity split of one plane gk (OH, OW) of dy (masked by mk when not NULL) into the
 * sub-planes ee, eo, oe, oo of buf (th x (tw + 1) cells each, SUB apart; see grad); grow is a
 * row of scratch. */
CNN_WINO_ATTR static inline void CNN_WINO_CLONE(split_grad)(
        const T *restrict gk, const T *restrict mk, T *restrict buf, T *restrict grow, int OH,
        int OW, ptrdiff_t HW, ptrdiff_t SUB) {
    T *restrict ee = buf, *restrict eo = buf + SUB, *restrict oe = buf + 2 * SUB;
    T *restrict oo = buf + 3 * SUB;
    const ptrdiff_t je1 = (OW + 1) / 2, jo1 = OW / 2;
    for (ptrdiff_t r = 0; r < OH; r++) {
        const T *restrict gr = gk + r * OW;
        const T *restrict mr = mk ? mk + r * OW : NULL;
        T *restrict ev = ((r & 1) ? oe : ee) + (r >> 1) * HW;
        T *restrict od = ((r & 1) ? oo : eo) + (r >> 1) * HW;
#ifdef CNN_WINO_SPLIT_ROW
        /* the split writes whole sub-rows of HW cells: those past the row stay zero */
        (void)grow; (void)je1; (void)jo1;
        CNN_WINO_SPLIT_ROW(gr, mr, 0, OW, ev, od, HW);
#else
        /* one loop for both parities (rows are short: loop count matters), then the last
           even column of an odd-width row */
        if (mr) {
            /* the masked row first, unit-stride (see the input transform) */
            CNN_IVDEP
            for (ptrdiff_t j = 0; j < OW; j++) grow[j] = mr[j] > 0 ? gr[j] : 0;
            for (ptrdiff_t j = 0; j < jo1; j++) { ev[j] = grow[2 * j]; od[j] = grow[2 * j + 1]; }
            if (je1 > jo1) ev[jo1] = grow[2 * jo1];
        } else {
            for (ptrdiff_t j = 0; j < jo1; j++) { ev[j] = gr[2 * j]; od[j] = gr[2 * j + 1]; }
            if (je1 > jo1) ev[jo1] = gr[2 * jo1];
        }
#endif
    }
}

/* D[e][ko][t0 + a*(tw+1) + b] = (A g A^T)[e] for every channel ko and tile (a, b) of one image,
 * with g the 2x2 block [2a, 2a+2) x [2b, 2b+2) of the output gradient dy (Kout, OH, OW), zero past
 * its edges, so junk slots b = tw hold exact zeros. If mask is not NULL (same shape as dy), cells
 * where mask <= 0 (or NaN) read as 0. A = (A^T)^T is 4x2: rows (1, 0), (1, 1), (1, -1), (0, -1).
 * With V from CNN_WINO_FN(input), the weight gradient of the image is
 *     dW = G^T [ sum_t D_t (.) V_t ] G    (Lavin & Gray's F(3x3, 2x2) with the same points).
 * pad is scratch of CNN_WINO_GRAD_PAD_SIZE(th, tw, OW) elements: two copies of g split by row
 * and column parity, four sub-planes of th x (tw + 1) cells and CNN_WINO_SPLIT_SLACK spare ones
 * each (channel ko + 1 is split into one while ko is transformed from the other, as
 * in the input transform), and a row for the masked copy of a dy row. */
CNN_WINO_ATTR static void CNN_WINO_CLONE(grad)(const T *restrict dy, const T *restrict mask,
                                                T *restrict pad, T *restrict D, int Kout, int OH,
                                                int OW, int th, int tw, ptrdiff_t ldd,
                                                ptrdiff_t t0) {
    const ptrdiff_t HW = (ptrdiff_t)tw + 1, U = (ptrdiff_t)th * HW;
    const ptrdiff_t KD = (ptrdiff_t)Kout * ldd, plane = (ptrdiff_t)OH * OW;
    const ptrdiff_t SUB = CNN_WINO_GRAD_SUB(th, tw);
    T *restrict grow = pad + 8 * SUB;
    memset(pad, 0, (size_t)(8 * SUB) * sizeof(T));
    if (Kout > 0)
        CNN_WINO_CLONE(split_grad)(dy, mask, pad, grow, OH, OW, HW, SUB);
    for (int ko = 0; ko < Kout; ko++) {
        if (ko + 1 < Kout)
            CNN_WINO_CLONE(split_grad)(dy + (ko + 1) * plane, mask ? mask + (ko + 1) * plane : NULL,
                                       pad + ((ko + 1) & 1) * 4 * SUB, grow, OH, OW, HW, SUB);
        const T *restrict ee = pad + (ko & 1) * 4 * SUB, *restrict eo = ee + SUB;
        const T *restrict oe = ee + 2 * SUB, *restrict oo = ee + 3 * SUB;
#ifdef CNN_WINO_GRAD_TILES
        CNN_WINO_GRAD_TILES(ee, eo, oe, oo, U, D + (ptrdiff_t)ko * ldd + t0, KD);
#else
        T *restrict d0 = D + (ptrdiff_t)ko * ldd + t0, *restrict d1 = d0 + KD;
        T *restrict d2 = d1 + KD, *restrict d3 = d2 + KD, *restrict d4 = d3 + KD;
        T *restrict d5 = d4 + KD, *restrict d6 = d5 + KD, *restrict d7 = d6 + KD;
        T *restrict d8 = d7 + KD, *restrict d9 = d8 + KD, *restrict d10 = d9 + KD;
        T *restrict d11 = d10 + KD, *restrict d12 = d11 + KD, *restrict d13 = d12 + KD;
        T *restrict d14 = d13 + KD, *restrict d15 = d14 + KD;
        CNN_IVDEP
        for (ptrdiff_t u = 0; u < U; u++) {
            const T g00 = ee[u], g01 = eo[u], g10 = oe[u], g11 = oo[u];
            /* A g: rows g0, g0 + g1, g0 - g1, -g1 (per column q) */
            const T p00 = g00, p01 = g01, p10 = g00 + g10, p11 = g01 + g11;
            const T p20 = g00 - g10, p21 = g01 - g11, p30 = -g10, p31 = -g11;
            /* (A g) A^T: the same on the columns of each row */
            d0[u] = p00;  d1[u] = p00 + p01;  d2[u] = p00 - p01;  d3[u] = -p01;
            d4[u] = p10;  d5[u] = p10 + p11;  d6[u] = p10 - p11;  d7[u] = -p11;
            d8[u] = p20;  d9[u] = p20 + p21;  d10[u] = p20 - p21; d11[u] = -p21;
            d12[u] = p30; d13[u] = p30 + p31; d14[u] = p30 - p31; d15[u] = -p31;
        }
#endif
    }
}

/* dw[ko, ci] (3x3) = G^T Mw[.][ko][ci] G for every (ko, ci), with Mw (16, Kout, ldw) the summed
 * products D (.) V over all tiles; dw is (Kout, Cin, 3, 3). If db is not NULL, column ci = Cin of
 * Mw holds the sums of D against a row of ones, and db[ko] = the sum of the masked output
 * gradient = Mw[0] - Mw[3] - Mw[12] + Mw[15] at that column (u^T A = (1, 1) for u = (1, 0, 0, -1),
 * and those four entries of D are exactly +-g00, g01, g10, g11). */
#ifdef CNN_WINO_SHARED
static void CNN_WINO_FN(weights_grad)(const T *restrict Mw, T *restrict dw, T *restrict db,
                                      int Kout, int Cin, ptrdiff_t ldw) {
    const ptrdiff_t KW = (ptrdiff_t)Kout * ldw;
    for (int ko = 0; ko < Kout; ko++) {
        for (int ci = 0; ci < Cin; ci++) {
            const T *restrict m = Mw + (ptrdiff_t)ko * ldw + ci;
            T q[3][4];
            /* G^T m: rows (1, 1/2, 1/2, 0), (0, 1/2, -1/2, 0), (0, 1/2, 1/2, 1) */
            for (int s = 0; s < 4; s++) {
                const T m0 = m[s * KW], m1 = m[(4 + s) * KW];
                const T m2 = m[(8 + s) * KW], m3 = m[(12 + s) * KW];
                q[0][s] = m0 + (T)0.5 * (m1 + m2);
                q[1][s] = (T)0.5 * (m1 - m2);
                q[2][s] = (T)0.5 * (m1 + m2) + m3;
            }
            T *restrict out = dw + ((ptrdiff_t)ko * Cin + ci) * 9;
            for (int i = 0; i < 3; i++) {   /* (G^T m) G: the same on the columns */
                out[3 * i + 0] = q[i][0] + (T)0.5 * (q[i][1] + q[i][2]);
                out[3 * i + 1] = (T)0.5 * (q[i][1] - q[i][2]);
                out[3 * i + 2] = (T)0.5 * (q[i][1] + q[i][2]) + q[i][3];
            }
        }
        if (db) {
            const T *restrict m = Mw + (ptrdiff_t)ko * ldw + Cin;
            db[ko] = m[0] - m[3 * KW] - m[12 * KW] + m[15 * KW];
        }
    }
}
#endif
