"""Scratch arrays for the kernels: one row per thread, every row starting on a 64-byte line."""

import numpy as np

LINE = 64  # bytes: an AVX-512 vector, and the cache line of x86-64 CPUs


def aligned_rows(rows, n, dtype):
    """An uninitialised C-contiguous ``(rows, m)`` array of ``dtype``, ``m >= n`` rounded up to
    whole 64-byte lines, whose rows all start on a 64-byte boundary (NumPy's allocator only
    promises 16 bytes; the kernels' unaligned full-vector loads and stores then split lines).

    Parameters
    ----------
    rows, n : int >= 0
    dtype : numpy dtype (itemsize dividing 64)

    Returns
    -------
    ndarray of shape (rows, m)
    """
    itemsize = np.dtype(dtype).itemsize
    per_line = LINE // itemsize
    m = -(-max(n, 1) // per_line) * per_line
    flat = np.empty(rows * m + per_line, dtype=dtype)
    offset = (-flat.ctypes.data % LINE) // itemsize
    return flat[offset:offset + rows * m].reshape(rows, m)
