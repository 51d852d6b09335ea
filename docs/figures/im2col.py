"""im2col on the seed's Conv2D example (eq. 5-8): 3x3 input, three 2x2 filters, 'same'
padding (one zero row and column on the bottom/right). Every output position becomes one
column of ``cols`` (rows ordered (c, i, j)), so the whole convolution is one GEMM
``Y (K, OH*OW) = W (K, C*kh*kw) @ cols``. Checked here against ``cnn.reference.conv2d``."""

import matplotlib.pyplot as plt
import numpy as np
from _draw import COLOURS, PAD, REAL, finish, grid, outline

from cnn import reference as R

# the seed example of tests/test_conv.py::test_seed_example_exact_with_and_without_relu
i = np.array([[2.0, -3.0, 5.0], [7.0, 11.0, -13.0], [17.0, 19.0, 23.0]])
f = np.array([[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 0.0], [0.0, 1.0]], [[0.5, -2.0], [3.0, -0.25]]])
x, w = i[None, None], f[:, None]                      # (N, C, H, W) = (1, 1, 3, 3), (3, 1, 2, 2)
K, C, kh, kw = w.shape
top, bottom, left, right = R.pad_amounts("same", (kh, kw))
xp = np.pad(x[0], ((0, 0), (top, bottom), (left, right)))
OH, OW = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
# cols[(c*kh + i)*kw + j, oh*OW + ow] = xp[c, oh + i, ow + j]   (the layout of cnn/_ext/_im2col.h)
cols = np.array([[xp[c, oh + a, ow + b] for oh in range(OH) for ow in range(OW)]
                 for c in range(C) for a in range(kh) for b in range(kw)])
Y = w.reshape(K, -1) @ cols
np.testing.assert_array_equal(Y.reshape(1, K, OH, OW), R.conv2d(x, w, padding="same"))

pick = (1, 0)                         # O_{2,1} of the seed, 0-based (1, 0): column 1*OW + 0
col = pick[0] * OW + pick[1]
fig, ax = plt.subplots(figsize=(10.5, 3.6))
fill = np.full(xp.shape[1:], PAD, dtype=object)
fill[top:top + 3, left:left + 3] = REAL
cell = grid(ax, xp[0], 0, 0, fill=fill, title="padded input $I_{pad}$ (eq. 7)")
outline(ax, cell(*pick), kh, kw, COLOURS[1], inset=0.06)

colfill = np.full(cols.shape, REAL, dtype=object)
colfill[:, col] = "#f6d5d5"
x_cols = 6.4
cell = grid(ax, cols, x_cols, 0, fill=colfill, title="cols (C·kh·kw, OH·OW): a row per (c, i, j), a column per output (a, b)")
for r, (a, b) in enumerate((a, b) for a in range(kh) for b in range(kw)):
    ax.text(x_cols - 0.15, -(r + 0.5), f"(0,{a},{b})", ha="right", va="center", fontsize=7)
for p in range(OH * OW):
    ax.text(x_cols + p + 0.5, -cols.shape[0] - 0.3, f"{p // OW + 1},{p % OW + 1}", ha="center",
            va="top", fontsize=6.5)
outline(ax, cell(0, col), cols.shape[0], 1, COLOURS[1])

x_w = x_cols + cols.shape[1] + 1.2
grid(ax, w.reshape(K, -1), x_w, -5.2, title="W (K, C·kh·kw)")
ax.text(x_w + 4.6, -6.7, "@ cols =", ha="left", va="center", fontsize=9)
yfill = np.full(Y.shape, REAL, dtype=object)
yfill[:, col] = "#f6d5d5"
x_y = x_w + 6.6
grid(ax, Y, x_y, -5.2, fill=yfill, fontsize=7, title="Y (K, OH·OW) = conv output, NCHW")
ax.text(0, -5.8, "column (2,1) of cols is the red window; its\n"
        "products with the rows of W are the three\n"
        "$z_{2,1}$ of the seed's $O_{2,1}$ (before ReLU)", fontsize=8, va="top")
finish(ax)
fig.subplots_adjust(left=0.01, right=0.99, top=0.95, bottom=0.02)
