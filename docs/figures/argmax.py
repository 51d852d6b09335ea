"""The max-pool backward pass (eq. 17) is a scatter through the argmax that the forward pass
stored: each dy value goes to the one input cell that won its window; every other cell gets 0.
Top: the seed's geometry (2x2 windows, stride 2, 'tile' padding, padded cells -inf). Bottom:
overlapping windows (3x3, stride 2): a cell that wins two windows receives the sum of both dy.
Everything is computed by ``cnn.reference.maxpool2d`` and ``maxpool2d_backward``."""

import matplotlib.pyplot as plt
import numpy as np
from _draw import COLOURS, PAD, REAL, finish, grid, outline

from cnn import reference as R


def row(ax, x, size, stride, padding, dy, y0, label):
    """Draw input + windows, y, dy and dx of one max-pool geometry at height y0."""
    kh = kw = size
    y, arg = R.maxpool2d(x[None, None], size, stride, padding)
    dx = R.maxpool2d_backward(dy[None, None], arg, (1, 1) + x.shape)[0, 0]
    # eq. 17 by hand: dx[h, w] = sum of dy over the windows whose argmax is (h, w)
    want = np.zeros_like(x)
    for (a, b), k in np.ndenumerate(arg[0, 0]):
        want.flat[k] += dy[a, b]
    np.testing.assert_array_equal(dx, want)
    top, bottom, left, right = R.pool_pad_amounts(padding, size, x.shape, stride)
    xp = np.pad(x, ((top, bottom), (left, right)), constant_values=-np.inf)
    fill = np.full(xp.shape, PAD, dtype=object)
    fill[top:top + x.shape[0], left:left + x.shape[1]] = REAL
    cell = grid(ax, xp, 0, y0, fill=fill, title=f"{label}: input, windows")
    oh, ow = y.shape[2:]
    for n, (a, b) in enumerate(np.ndindex(oh, ow)):
        outline(ax, cell(a * stride, b * stride), kh, kw, COLOURS[n % len(COLOURS)],
                inset=0.05 + 0.05 * (n % 3), lw=1.6)
        r, c = divmod(int(arg[0, 0, a, b]), x.shape[1])
        ax.add_patch(plt.Circle((cell(r + top, c + left)[0] + 0.5, cell(r + top, c + left)[1] - 0.5),
                                0.36, fill=False, edgecolor=COLOURS[n % len(COLOURS)], lw=1.6))
    x1 = xp.shape[1] + 1.2
    cell = grid(ax, y[0, 0], x1, y0, title="y = window max")
    x2 = x1 + ow + 1.2
    cell = grid(ax, dy, x2, y0, title="dy")
    for n, (a, b) in enumerate(np.ndindex(oh, ow)):
        outline(ax, cell(a, b), 1, 1, COLOURS[n % len(COLOURS)], inset=0.06, lw=1.6)
    x3 = x2 + ow + 1.2
    dfill = np.where(dx != 0, "#fdebd0", REAL).astype(object)
    grid(ax, dx, x3, y0, fill=dfill, title="dx = scatter of dy through argmax")
    return arg, dx


fig, ax = plt.subplots(figsize=(10, 7.2))
x1 = np.array([[1, 9, 4, -2, 0], [3, 2, 8, 5, -6], [6, -5, 7, 1, 2],
               [-1, 4, 0, 3, 8], [2, 7, -3, 6, -4]], dtype=float)
dy1 = np.arange(1.0, 10.0).reshape(3, 3)
row(ax, x1, 2, 2, "tile", dy1, 0, "2x2, stride 2, 'tile'")
x2 = x1.copy()
x2[2, 2] = 10.0                         # the centre wins all four overlapping 3x3 windows
dy2 = np.array([[1.0, 2.0], [3.0, 4.0]])
arg, dx = row(ax, x2, 3, 2, "valid", dy2, -8.2, "3x3, stride 2, 'valid'")
assert (arg == 12).all() and dx[2, 2] == dy2.sum()
finish(ax)
fig.subplots_adjust(left=0.01, right=0.99, top=0.96, bottom=0.02)
