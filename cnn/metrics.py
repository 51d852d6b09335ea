"""Classification metrics: accuracy and the confusion matrix.

Labels and predictions are accepted in the library's two forms: integer class ids of shape
(N,), or one row per item of shape (N, classes) (one-hot labels, or probabilities / scores,
whose argmax is the predicted class; ties go to the lowest class id, as ``np.argmax``).
"""

from __future__ import annotations

import numpy as np

from . import _validation as V

__all__ = ["accuracy", "confusion_matrix", "format_confusion_matrix"]


def _class_ids(y, name: str) -> tuple[np.ndarray, int | None, np.ndarray | None]:
    """Return (ids int64 (N,), number of columns or None, rows containing NaN or None)."""
    a = np.asarray(y)
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {a.dtype}")
    if a.ndim == 1:
        if a.size == 0:
            return np.zeros(0, np.int64), None, None  # [] arrives as float64; the caller rejects it
        if a.dtype.kind not in "iu":
            raise TypeError(
                f"{name} of shape {a.shape} must hold integer class ids, got dtype {a.dtype}; "
                f"pass scores or one-hot rows as (N, classes)")
        if a.size and a.min() < 0:
            raise ValueError(f"{name} holds class id {a.min()}; wanted ids >= 0")
        return a.astype(np.int64, copy=False), None, None
    if a.ndim == 2:
        if a.shape[1] == 0:
            raise ValueError(f"{name} has shape {a.shape}; wanted (N, classes) with classes >= 1")
        nan_rows = np.isnan(a).any(axis=1) if a.dtype.kind == "f" else None
        return np.argmax(a, axis=1).astype(np.int64), a.shape[1], nan_rows
    raise ValueError(f"{name} must have shape (N,) of class ids or (N, classes), got shape "
                     f"{a.shape}")


def _pair(y_true, y_pred):
    t, t_cols, _ = _class_ids(y_true, "y_true")
    p, p_cols, nan_rows = _class_ids(y_pred, "y_pred")
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"y_true has {t.shape[0]} items but y_pred has {p.shape[0]}; wanted "
                         f"equal lengths")
    if t.shape[0] == 0:
        raise ValueError("y_true and y_pred are empty; wanted at least one item")
    if t_cols is not None and p_cols is not None and t_cols != p_cols:
        raise ValueError(f"y_true has {t_cols} classes (columns) but y_pred has {p_cols}")
    cols = t_cols if t_cols is not None else p_cols
    if cols is not None:
        for ids, name in ((t, "y_true"), (p, "y_pred")):
            if ids.max() >= cols:
                raise ValueError(f"{name} holds class id {ids.max()} but the other argument "
                                 f"has only {cols} classes (columns)")
    return t, p, cols, nan_rows


def accuracy(y_true, y_pred) -> float:
    """Fraction of items whose predicted class is the true class.

    Parameters
    ----------
    y_true : array_like of shape (N,) or (N, classes)
        Integer class ids, or one-hot rows (the argmax is taken).
    y_pred : array_like of shape (N,) or (N, classes)
        Integer class ids, or probabilities / scores (the argmax is taken). A row that holds
        NaN is never counted as correct.

    Returns
    -------
    float
        In [0, 1].

    Raises
    ------
    ValueError
        Different lengths, no items, a shape other than (N,) or (N, classes), negative ids,
        ids beyond the other argument's number of columns.
    TypeError
        Non-numeric input, or 1-D input that is not integer.
    """
    t, p, _, nan_rows = _pair(y_true, y_pred)
    correct = t == p
    if nan_rows is not None:
        correct &= ~nan_rows
    return float(np.count_nonzero(correct)) / t.shape[0]


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Count items by (true class, predicted class).

    Parameters
    ----------
    y_true, y_pred : array_like of shape (N,) or (N, classes)
        As for :func:`accuracy`. ``y_pred`` must not contain NaN.
    num_classes : int, optional
        Size of the matrix. Default: the number of columns of a 2-D argument, else the largest
        id in either argument plus one.

    Returns
    -------
    ndarray of shape (num_classes, num_classes), dtype int64
        ``cm[i, j]`` = number of items of true class ``i`` predicted as class ``j`` (rows true,
        columns predicted); the entries sum to N and the diagonal holds the correct ones.

    Examples
    --------
    >>> from cnn import metrics
    >>> cm = metrics.confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2])
    >>> cm
    array([[1, 0, 0],
           [0, 1, 1],
           [0, 0, 1]])
    >>> print(metrics.format_confusion_matrix(cm))
    true\\pred  0  1  2 | total  recall
            0  1  0  0 |     1  100.0%
            1  0  1  1 |     2   50.0%
            2  0  0  1 |     1  100.0%
    """
    t, p, cols, nan_rows = _pair(y_true, y_pred)
    if nan_rows is not None and nan_rows.any():
        raise ValueError(f"y_pred holds NaN in {np.count_nonzero(nan_rows)} row(s) (first: row "
                         f"{int(np.argmax(nan_rows))}); a confusion matrix needs a class for "
                         f"every item")
    largest = int(max(t.max(), p.max()))
    if num_classes is None:
        num_classes = cols if cols is not None else largest + 1
    else:
        num_classes = V.integer(num_classes, "num_classes", 1)
        if largest >= num_classes:
            raise ValueError(f"num_classes is {num_classes} but the labels hold class id "
                             f"{largest}")
        if cols is not None and cols != num_classes:
            raise ValueError(f"num_classes is {num_classes} but the inputs have {cols} columns")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def format_confusion_matrix(cm, labels=None, recall: bool = True) -> str:
    """Render a confusion matrix as an aligned text table.

    Parameters
    ----------
    cm : array_like of shape (C, C), integer
        Rows true classes, columns predicted classes (as from :func:`confusion_matrix`).
    labels : sequence of str, optional
        C class names; default ``0 .. C-1``.
    recall : bool
        Append each row's total and recall (diagonal / total, "-" for an empty row).

    Returns
    -------
    str
        One header line and one line per true class, no trailing newline, e.g.::

            true\\pred  0  1 | total  recall
                    0  5  1 |     6   83.3%
                    1  0  4 |     4  100.0%
    """
    a = np.asarray(cm)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"cm must be a non-empty square matrix (C, C), got shape {a.shape}")
    if a.dtype.kind not in "iu":
        raise TypeError(f"cm must hold integer counts, got dtype {a.dtype}")
    if a.min() < 0:
        raise ValueError(f"cm must hold counts >= 0, found {a.min()}")
    c = a.shape[0]
    if labels is None:
        labels = [str(i) for i in range(c)]
    else:
        labels = [str(s) for s in labels]
        if len(labels) != c:
            raise ValueError(f"labels has {len(labels)} names but cm has {c} classes")

    corner = "true\\pred"
    row_w = max(len(corner), *(len(s) for s in labels))
    cell_w = max(max(len(s) for s in labels), len(str(int(a.max()))))
    header = corner.rjust(row_w) + "".join("  " + s.rjust(cell_w) for s in labels)
    totals = a.sum(axis=1)
    total_w = max(len("total"), len(str(int(totals.max()))))
    if recall:
        header += " | " + "total".rjust(total_w) + "  " + "recall".rjust(6)
    lines = [header]
    for i in range(c):
        line = labels[i].rjust(row_w) + "".join("  " + str(int(v)).rjust(cell_w) for v in a[i])
        if recall:
            r = f"{100.0 * a[i, i] / totals[i]:.1f}%" if totals[i] else "-"
            line += " | " + str(int(totals[i])).rjust(total_w) + "  " + r.rjust(6)
        lines.append(line)
    return "\n".join(lines)
