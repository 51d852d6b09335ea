"""Plots of a training run (needs matplotlib, the ``plot`` extra)."""

import numpy as np

from . import _atomic

__all__ = ["plot_history"]


def plot_history(path, history, cm):
    """Write the training curves and the confusion matrix as a PNG.

    Three panels: loss and accuracy per epoch (training, and validation when ``history`` has
    ``val_`` keys), and the confusion matrix with its counts (for up to 20 classes). Uses
    matplotlib's Agg canvas, never a window or the global pyplot state.

    Parameters
    ----------
    path : str or os.PathLike
        The PNG to write.
    history : cnn.callbacks.History
        What ``fit`` returned (``history.epoch``, ``history.history``).
    cm : ndarray of shape (K, K), int
        Confusion matrix, rows the true classes (:func:`cnn.metrics.confusion_matrix`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(13, 4), dpi=100)
    FigureCanvasAgg(fig)
    epochs = [e + 1 for e in history.epoch]
    for i, metric in enumerate(("loss", "accuracy")):
        ax = fig.add_subplot(1, 3, i + 1)
        for key, label in ((metric, "train"), ("val_" + metric, "validation")):
            if key in history.history:
                ax.plot(epochs, history.history[key], marker="o", label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        if epochs:
            ax.legend()
    ax = fig.add_subplot(1, 3, 3)
    ax.imshow(cm, cmap="Blues")
    k = cm.shape[0]
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (test)")
    if k <= 20:
        top = cm.max() if cm.size else 0
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if v > top / 2 else "black")
    fig.tight_layout()
    _atomic.atomic_write(path, lambda f: fig.savefig(f, format="png"))
