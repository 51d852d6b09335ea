"""Shared drawing helpers of the maths figures: a matrix drawn as a grid of labelled cells.

Not a figure itself (the leading underscore): the figure scripts import it, the docs build
puts ``docs/figures`` on ``sys.path`` (``docs/conf.py``).
"""

import matplotlib.patches as mpatches
import numpy as np

REAL = "#ffffff"
PAD = "#d9d9d9"
EXTRA = "#f2e6d9"
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def fmt(v):
    """A cell's label: integers without a decimal point, -inf as a minus-infinity sign."""
    if isinstance(v, str):
        return v
    if np.isneginf(v):
        return "\u2212\u221e"
    if float(v).is_integer():
        return f"{int(v)}"
    return f"{v:.3g}"


def grid(ax, labels, x0=0.0, y0=0.0, fill=None, size=1.0, fontsize=8, title=None):
    """Draw ``labels`` (2-D, row 0 on top) with its top-left corner at ``(x0, y0)``.

    ``fill`` is an array of face colours of the same shape (default white). Returns the
    function ``cell(r, c) -> (x, y)`` giving the top-left corner of cell ``(r, c)`` in axes
    units, for outlines drawn on top.
    """
    labels = np.asarray(labels, dtype=object)
    rows, cols = labels.shape
    for r in range(rows):
        for c in range(cols):
            face = REAL if fill is None else fill[r][c]
            ax.add_patch(mpatches.Rectangle((x0 + c * size, y0 - (r + 1) * size), size, size,
                                            facecolor=face, edgecolor="#555555", lw=0.6))
            ax.text(x0 + (c + 0.5) * size, y0 - (r + 0.5) * size, fmt(labels[r, c]),
                    ha="center", va="center", fontsize=fontsize)
    if title:
        ax.text(x0 + cols * size / 2, y0 + 0.35 * size, title, ha="center", va="bottom",
                fontsize=fontsize + 1)
    return lambda r, c: (x0 + c * size, y0 - r * size)


def outline(ax, corner, rows, cols, colour, size=1.0, lw=2.2, ls="-", inset=0.0):
    """A rectangle of ``rows`` x ``cols`` cells whose top-left corner is ``corner``."""
    x, y = corner
    ax.add_patch(mpatches.Rectangle((x + inset, y - rows * size + inset),
                                    cols * size - 2 * inset, rows * size - 2 * inset,
                                    fill=False, edgecolor=colour, lw=lw, ls=ls))


def finish(ax):
    """Equal aspect, no axes, limits fitted to what was drawn."""
    ax.set_aspect("equal")
    ax.autoscale_view()
    ax.axis("off")
