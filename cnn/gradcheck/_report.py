"""The result of :func:`cnn.gradcheck`: one row per checked tensor, and the table."""

import math

__all__ = ["GradcheckRow", "GradcheckReport"]


class GradcheckRow:
    """The audit of one tensor (an input or a parameter).

    Attributes
    ----------
    name : str
        ``"input"`` (``"input[k]"`` for input k of a multi-input layer), a layer's parameter
        name (``"weight"``) or a model's parameter key (``"0.weight"``).
    shape : tuple of int
    indices : ndarray of int64, shape (checked,)
        The flat (C-order) indices of the entries compared, sorted: every entry, or a fixed
        random sample of them when the tensor has more than ``max_entries``.
    size : int
        Number of entries of the tensor.
    max_abs_error : float
        Largest ``|analytic - numeric|`` over the checked entries.
    max_rel_error : float
        Largest ``|analytic - numeric| / max(|analytic|, |numeric|, atol)`` (0 where all
        three are 0): gradients smaller than ``atol`` are judged against ``atol``.
    worst_index : tuple of int or None
        The entry (multi-index) that is furthest outside the tolerance, or the one with the
        largest absolute error when all pass; None when nothing was compared.
    passed : bool
        Every checked entry has ``|analytic - numeric| <= atol + rtol * |numeric|``.
    kinks : int
        Checked entries at a kink (one-sided slopes that differ), judged as subgradients.
    note : str
        Why a row failed without numbers (e.g. a backward that returned a wrong shape), or "".
    """

    def __init__(self, name, shape, indices, size, max_abs_error, max_rel_error, worst_index,
                 passed, note="", kinks=0):
        self.name = name
        self.shape = tuple(shape)
        self.indices = indices
        self.size = int(size)
        self.max_abs_error = float(max_abs_error)
        self.max_rel_error = float(max_rel_error)
        self.worst_index = worst_index
        self.passed = bool(passed)
        self.note = note
        self.kinks = int(kinks)

    @property
    def checked(self):
        """Number of entries compared."""
        return int(len(self.indices))

    def __repr__(self):
        return (f"GradcheckRow({self.name!r}, shape={self.shape}, checked={self.checked}/"
                f"{self.size}, max_abs_error={self.max_abs_error:.3g}, "
                f"max_rel_error={self.max_rel_error:.3g}, passed={self.passed})")


def _number(value):
    return "-" if math.isnan(value) else f"{value:.2e}"


class GradcheckReport:
    """What :func:`cnn.gradcheck` found: the rows, the tolerances and how it measured.

    Attributes
    ----------
    subject : str
        ``repr`` of the audited layer or model.
    loss : str
        The scalar that was differentiated.
    rows : list of GradcheckRow
        Inputs first, then the parameters in ``params`` order.
    eps, atol, rtol : float
    max_entries, seed : int
    passed : bool
        Every row passed.
    """

    def __init__(self, subject, loss, rows, eps, atol, rtol, max_entries, seed):
        self.subject = subject
        self.loss = loss
        self.rows = list(rows)
        self.eps, self.atol, self.rtol = float(eps), float(atol), float(rtol)
        self.max_entries, self.seed = int(max_entries), int(seed)

    @property
    def passed(self):
        return all(row.passed for row in self.rows)

    @property
    def failed_rows(self):
        """The rows that failed."""
        return [row for row in self.rows if not row.passed]

    def __getitem__(self, name):
        """The row called ``name`` (KeyError listing the names when there is none)."""
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no row {name!r}; the rows are {[row.name for row in self.rows]}")

    def __bool__(self):
        return self.passed

    def table(self):
        """The report as text: a header stating the loss, ``eps``, the pass rule and the
        sampling, then one line per tensor, then the verdict."""
        header = ("tensor", "shape", "checked", "kinks", "max abs err", "max rel err", "worst at",
                  "result")
        lines = []
        for row in self.rows:
            checked = f"{row.checked}" if row.checked == row.size else f"{row.checked} of {row.size}"
            worst = "-" if row.worst_index is None else str(tuple(int(i) for i in row.worst_index))
            result = "pass" if row.passed else "FAIL" + (f" ({row.note})" if row.note else "")
            lines.append((row.name, str(row.shape), checked, str(row.kinks), _number(row.max_abs_error),
                          _number(row.max_rel_error), worst, result))
        widths = [max(len(r[c]) for r in [header] + lines) for c in range(len(header))]

        def line(r):
            return "  ".join(f"{v:<{w}}" for v, w in zip(r, widths, strict=True)).rstrip()

        rule = "-" * len(line(header))
        verdict = ("passed" if self.passed else
                   f"FAILED: {', '.join(row.name for row in self.failed_rows)}")
        return "\n".join([
            f"gradcheck of {self.subject}",
            f"float64, loss {self.loss}; central differences with eps {self.eps:g} (at a kink, "
            f"where the one-sided slopes differ, the analytic value must lie between them)",
            f"an entry passes when |analytic - numeric| <= atol + rtol * |numeric|, "
            f"atol {self.atol:g}, rtol {self.rtol:g}",
            f"tensors of more than {self.max_entries} entries: {self.max_entries} entries drawn "
            f"at random (seed {self.seed}, without replacement)",
            rule, line(header), rule, *(line(r) for r in lines), rule, verdict])

    def __str__(self):
        return self.table()

    def __repr__(self):
        return (f"GradcheckReport({self.subject}, {len(self.rows)} rows, "
                f"passed={self.passed})")
