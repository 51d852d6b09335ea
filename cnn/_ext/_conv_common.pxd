"""Helpers shared by the conv kernels (_conv.pyx) and the fused inference kernels (_fused.pyx).

One definition for both: the fused kernel's outputs are compared bit for bit with the conv's,
so they must group the Winograd tiles into the same blocks (the GEMMs then see the same shapes)
and apply bias and ReLU by the same pass.
"""
from cython cimport floating

# Tiles per Winograd block: enough columns for the 16 GEMMs to run near the BLAS kernel's
# rate, few enough that the block's V and M stay in a core's L2. A block holds whole images;
# the grouping depends on the shapes only, never on the thread count.
cdef enum:
    WINO_TILES = 384


cdef inline int _wino_group(int N, int tiles_per_image) noexcept nogil:
    """Images per Winograd block: about WINO_TILES tiles, at least one image."""
    cdef int g = (WINO_TILES + tiles_per_image - 1) // tiles_per_image
    return max(1, min(N, g))


cdef inline void _bias_act(floating *y, const floating *b, bint has_bias, bint relu,
                           int K, int P) noexcept nogil:
    """y[k, p] = act(y[k, p] + b[k]) in place for one image."""
    cdef int k, p
    cdef floating bk, v
    cdef floating *row
    for k in range(K):
        row = y + <Py_ssize_t> k * P
        bk = b[k] if has_bias else 0
        if relu:
            for p in range(P):
                v = row[p] + bk
                row[p] = 0 if v <= 0 else v  # NaN stays NaN, as in np.maximum
        elif has_bias:
            for p in range(P):
                row[p] += bk
