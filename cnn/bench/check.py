"""The agreement check before timing: the outputs of the backends are compared with the
tolerances of :data:`TOLERANCES`."""

import numpy as np

__all__ = ["TOLERANCES", "compare"]

# Agreement before timing: max |a - b| <= tol * max(|a|, |b|) over each compared array (the
# scale of the values summed, so entries that cancel to ~0 are judged fairly); losses:
# |a - b| <= tol * max(1, |b|). float32 everywhere; the gradient sums run over up to
# N*OH*OW = 100,352 terms, hence the looser gradient bound.
TOLERANCES = {
    "conv_forward": 1e-4,
    "conv_gradient": 5e-4,
    "pool": 0.0,          # a max and its routing are exact
    "loss": 1e-4,
    "weights": 1e-3,      # after two SGD steps (momentum 0.9, lr 0.05)
    "probabilities": 1e-4,
}


def _as_np(a):
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def compare(outputs, pairs, rules):
    """Compare named outputs between backends.

    ``outputs``: backend -> {quantity: array}; ``rules``: quantity -> tolerance key; ``pairs``:
    (backend, backend) to compare. Returns a list of dicts with the error and the verdict.
    """
    report = []
    for a, b in pairs:
        if a not in outputs or b not in outputs:
            continue
        for q, key in rules.items():
            if q not in outputs[a] or q not in outputs[b]:
                continue
            x, y = _as_np(outputs[a][q]), _as_np(outputs[b][q])
            tol = TOLERANCES[key]
            entry = {"pair": f"{a}-{b}", "quantity": q, "tol": tol}
            if x.shape != y.shape:
                entry.update(ok=False, error=f"shapes differ: {x.shape} vs {y.shape}")
            elif x.dtype.kind in "iu" or y.dtype.kind in "iu":
                bad = int(np.count_nonzero(x.astype(np.int64) != y.astype(np.int64)))
                entry.update(ok=bad == 0, mismatched=bad, rel_err=bad / max(1, x.size))
            elif key == "loss":
                err = abs(float(x) - float(y))
                entry.update(abs_err=err, rel_err=err / max(1.0, abs(float(y))))
                entry["ok"] = entry["rel_err"] <= tol
            else:
                x64, y64 = x.astype(np.float64), y.astype(np.float64)
                if not (np.isfinite(x64).all() and np.isfinite(y64).all()):
                    entry.update(ok=False, error="non-finite values")
                else:
                    err = float(np.max(np.abs(x64 - y64))) if x.size else 0.0
                    scale = max(float(np.max(np.abs(x64))) if x.size else 0.0,
                                float(np.max(np.abs(y64))) if y.size else 0.0, 1e-30)
                    entry.update(abs_err=err, scale=scale, rel_err=err / scale)
                    entry["ok"] = entry["rel_err"] <= tol
            report.append(entry)
    return report
