"""Winograd F(2x2, 3x3) tiles: each 2x2 block of outputs is computed from one 4x4 tile of the
zero-padded input, and neighbouring tiles overlap by two rows/columns (stride 2 between tiles,
a 3x3 kernel). An odd output size rounds the tile grid up: the last tiles read zeros past the
padding, and the outputs past (OH, OW) are computed and dropped (cnn/_ext/_winograd.h).
The tile arithmetic below, y = A^T [(G g G^T) (.) (B^T d B)] A summed over channels, is checked
against ``cnn.reference.conv2d``."""

import matplotlib.pyplot as plt
import numpy as np
from _draw import COLOURS, EXTRA, PAD, REAL, finish, grid, outline

from cnn import reference as R

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=float)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=float)

rng = np.random.default_rng(3)
H = W = 5
x = rng.integers(-4, 5, size=(1, 2, H, W)).astype(float)   # two channels: the GEMM's sum
w = rng.integers(-2, 3, size=(1, 2, 3, 3)).astype(float)
pt, pb, pl, pr = R.pad_amounts("same", 3)
OH, OW = H, W
th, tw = -(-OH // 2), -(-OW // 2)                             # tiles per column / row
# the padded plane, extended with zeros to the 2*th + 2 rows the last tiles read
xe = np.zeros((2, 2 * th + 2, 2 * tw + 2))
xe[:, pt:pt + H, pl:pl + W] = x[0]
y = np.zeros((2 * th, 2 * tw))
for a in range(th):
    for b in range(tw):
        m = sum((G @ w[0, c] @ G.T) * (BT @ xe[c, 2 * a:2 * a + 4, 2 * b:2 * b + 4] @ BT.T)
                for c in range(2))
        y[2 * a:2 * a + 2, 2 * b:2 * b + 2] = AT @ m @ AT.T
np.testing.assert_allclose(y[:OH, :OW], R.conv2d(x, w, padding="same")[0, 0], rtol=0, atol=1e-12)

fig, ax = plt.subplots(figsize=(9, 4.6))
fill = np.full(xe.shape[1:], EXTRA, dtype=object)
fill[:H + pt + pb, :W + pl + pr] = PAD
fill[pt:pt + H, pl:pl + W] = REAL
cell = grid(ax, xe[0], 0, 0, fill=fill, title="input channel 0, 'same' padding, extended")
tiles = [(0, 0), (0, 1), (1, 0), (1, 1)]
for n, (a, b) in enumerate(tiles):
    outline(ax, cell(2 * a, 2 * b), 4, 4, COLOURS[n], inset=0.05 + 0.07 * n, lw=2)

x_out = xe.shape[2] + 2.5
ofill = np.full(y.shape, REAL, dtype=object)
ofill[OH:, :] = EXTRA
ofill[:, OW:] = EXTRA
labels = np.where(ofill == EXTRA, "\u00d7", np.vectorize(lambda v: f"{v:g}")(y)).astype(object)
cell = grid(ax, labels, x_out, -1.0, fill=ofill, title="output y (channel sums)")
for n, (a, b) in enumerate(tiles):
    outline(ax, cell(2 * a, 2 * b), 2, 2, COLOURS[n], inset=0.06, lw=2)
ax.text(x_out, -2 * th - 1.4,
        f"{th}x{tw} tiles of 2x2 outputs for a {OH}x{OW} output;\n"
        "\u00d7: computed and dropped (past OH, OW)",
        fontsize=8, va="top")
ax.text(0, -xe.shape[1] - 0.5, "white: input; grey: 'same' padding; beige: zeros the last tiles "
        "read past the padding", fontsize=8, va="top")
finish(ax)
ax.set_ylim(-xe.shape[1] - 1.4, 1.3)
fig.subplots_adjust(left=0.01, right=0.99, top=0.93, bottom=0.02)
