"""The padding rule of Conv2D: 'same' puts floor(p/2) rows/columns on the top/left and the
rest on the bottom/right (p = k - 1 at stride 1, seed eq. 7 and NOTES.md item 6); 'valid' pads
nothing. The amounts come from ``cnn.reference.pad_amounts`` and the output shapes from
``cnn.reference.conv2d`` on a real 3x3 input."""

import matplotlib.pyplot as plt
import numpy as np
from _draw import COLOURS, PAD, REAL, finish, grid, outline

from cnn import reference as R

H = W = 3
CASES = [(2, "same"), (3, "same"), (4, "same"), (2, "valid")]

fig, axes = plt.subplots(1, len(CASES), figsize=(10.5, 3.9))
x = np.arange(1.0, H * W + 1).reshape(1, 1, H, W)
for ax, (k, padding) in zip(axes, CASES):
    top, bottom, left, right = R.pad_amounts(padding, k)
    y = R.conv2d(x, np.ones((1, 1, k, k)), padding=padding)
    oh, ow = y.shape[2:]
    assert (oh, ow) == (H + top + bottom - k + 1, W + left + right - k + 1)
    if padding == "same":
        assert (oh, ow) == (H, W) and top == (k - 1) // 2 and bottom == k - 1 - top
    hp, wp = H + top + bottom, W + left + right
    labels = np.full((hp, wp), "0", dtype=object)
    fill = np.full((hp, wp), PAD, dtype=object)
    for r in range(H):
        for c in range(W):
            labels[top + r, left + c] = f"$I_{{{r + 1},{c + 1}}}$"  # the seed's 1-based names
            fill[top + r, left + c] = REAL
    cell = grid(ax, labels, fill=fill, fontsize=8)
    outline(ax, cell(0, 0), k, k, COLOURS[0], inset=0.06)            # window of output (1, 1)
    outline(ax, cell(oh - 1, ow - 1), k, k, COLOURS[1], ls="--", inset=0.12)  # the last one
    ax.set_title(f"{k}x{k} kernel, padding={padding!r}\n"
                 f"top {top}, bottom {bottom}, left {left}, right {right}\n"
                 f"output {oh}x{ow}", fontsize=9)
    finish(ax)
fig.text(0.5, 0.02, "grey: padding zeros.  solid: window of the first output; "
         "dashed: window of the last output", ha="center", fontsize=8)
fig.subplots_adjust(left=0.02, right=0.98, top=0.8, bottom=0.08, wspace=0.15)
