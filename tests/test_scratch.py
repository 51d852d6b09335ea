"""The kernels' per-thread scratch rows start on 64-byte lines (cnn/_ext/_scratch.py)."""

import numpy as np
import pytest

from cnn._ext._scratch import aligned_rows


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows, n", [(1, 1), (2, 17), (3, 1000), (2, 0), (4, 16)])
def test_every_row_starts_on_a_line(dtype, rows, n):
    for _ in range(5):   # several allocations: NumPy's own alignment varies with the size
        a = aligned_rows(rows, n, dtype)
        per_line = 64 // np.dtype(dtype).itemsize
        assert a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.shape[0] == rows and a.shape[1] >= max(n, 1) and a.shape[1] % per_line == 0
        assert a.shape[1] < max(n, 1) + per_line
        assert all(a[r].ctypes.data % 64 == 0 for r in range(rows))
        a[...] = 1.5   # the whole view is writable memory of its own
        assert (a == 1.5).all()
