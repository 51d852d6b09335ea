"""The alone mode: each library times a whole-model case alone in its own child process.

In the interleaved mode (:func:`cnn.bench.timing.time_backends`) the backends alternate in one
process, and each keeps the others' thread pools warm: a sleeping pool costs a wake-up per
parallel region, so both look faster than a user's program, which runs one library, would see.
Here every backend gets a fresh interpreter per round (:mod:`cnn.bench.alone_child`, run by its
file path so that torch's and ONNX Runtime's children never import cnn), in the order cnn, torch,
ONNX Runtime, cnn, torch, ... for ``rounds`` rounds. Each child times the same case with the same
weights and inputs (written once by :func:`prepare`), and reports its peak RSS: the memory of
that library running that network, imports included.

Before its times count, each child's first result (the probabilities, or the first training
loss) is compared with cnn's child's, with the bench's tolerances (:data:`cnn.bench.check.TOLERANCES`):
the children ran the same network on the same data.
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from . import nets
from .check import TOLERANCES, compare
from .common import Skip
from .data import image_batches
from .memory import _ROOT, child_env
from .timing import stats

__all__ = ["CHILD", "child_command", "prepare", "run_alone", "run_child"]

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "alone_child.py")


def prepare(case, directory, onnx=True):
    """Write ``case`` (a whole-model :class:`~cnn.bench.cases.Case`) into ``directory`` for the
    children (the files are listed in :mod:`cnn.bench.alone_child`).

    Returns
    -------
    dict
        backend -> reason, for the backends that cannot run the case (torch: a layer the bench
        does not map; onnxruntime: a training case, ``onnx=False``, or a layer cnn's exporter
        does not write).
    """
    model = nets.build(case.model, 0)
    shape = case.shape["input"]
    batches = image_batches(case.batch, shape, limit=None if case.training else 1)
    np.savez(os.path.join(directory, "data.npz"),
             **{f"{k}{i}": a for i, (x, y) in enumerate(batches) for k, a in (("x", x), ("y", y))})
    weights = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    skipped = {}
    spec = opt = None
    try:
        spec, opt = nets.layer_spec(model), nets.optimizer_spec(model)
    except Skip as exc:
        skipped["torch"] = str(exc)
    for i, entry in enumerate(spec or []):
        params, buffers = entry.pop("params", []), entry.pop("buffers", [])
        entry["n_params"], entry["n_buffers"] = len(params), len(buffers)
        weights.update({f"p{i}_{k}": p for k, p in enumerate(params)})
        weights.update({f"b{i}_{k}": b for k, b in enumerate(buffers)})
    np.savez(os.path.join(directory, "weights.npz"), **weights)
    with open(os.path.join(directory, "case.json"), "w") as fh:
        json.dump({"model": case.model, "kind": case.kind, "batch": case.batch,
                   "threads": case.threads, "spec": spec, "optimizer": opt}, fh)
    if case.training:
        skipped["onnxruntime"] = "ONNX Runtime runs the predict cases only"
    elif not onnx:
        skipped["onnxruntime"] = "onnxruntime not available"
    else:
        try:
            from cnn.onnx import to_model_proto
            with open(os.path.join(directory, "model.onnx"), "wb") as fh:
                fh.write(to_model_proto(model).SerializeToString())
        except (ImportError, ValueError, TypeError, NotImplementedError) as exc:
            skipped["onnxruntime"] = f"cnn's ONNX exporter: {exc}"
    return skipped


def child_command(backend, directory, warmups, min_reps, budget):
    """The command line of one child (by file path: see the module doc)."""
    return [sys.executable, CHILD, "--dir", str(directory), "--backend", backend,
            "--warmups", str(warmups), "--min-reps", str(min_reps), "--budget", repr(float(budget))]


def run_child(backend, directory, warmups, min_reps, budget, timeout=600):
    """Run one child; its JSON line as a dict. :class:`Skip` when it fails."""
    try:
        proc = subprocess.run(child_command(backend, directory, warmups, min_reps, budget),
                              capture_output=True, text=True, env=child_env(), cwd=_ROOT,
                              timeout=timeout)
    except subprocess.SubprocessError as exc:
        raise Skip(f"child failed: {type(exc).__name__}: {exc}") from None
    if proc.returncode != 0:
        raise Skip(f"child failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise Skip(f"child printed no JSON line: {proc.stdout.strip()[-400:]!r}") from None


def _ratio(results, b, key):
    base, other = results.get("cnn", {}).get(key), results.get(b, {}).get(key)
    return other / base if base and other else None


def run_alone(case, ctx, cfg):
    """Time ``case`` with every backend alone (``cfg["alone_rounds"]`` rounds of children, each
    ``cfg["alone_budget"]`` s and at least ``cfg["min_reps"]`` timed calls after
    ``cfg["warmups"]`` warm-ups). Returns the record's ``"alone"`` entry: ``{"rounds",
    "results": {backend: stats + "round_medians_s", "peak_rss_bytes", "import_rss_bytes",
    "cores_used" (CPU seconds / wall seconds of the timed calls), ...
    or {"skipped": reason}}, "ratios": {"vs_torch", "vs_onnxruntime", "basis"},
    "memory_ratios": {...} (other's peak RSS / cnn's), "check": {"ok", "compared", "details"}}``.
    """
    rounds = cfg["alone_rounds"]
    out = {"rounds": rounds, "results": {}, "ratios": {}, "memory_ratios": {}}
    with tempfile.TemporaryDirectory(prefix="cnn-bench-alone-") as directory:
        skipped = prepare(case, directory, onnx=ctx.get("onnxruntime") is not None)
        if ctx.get("torch") is None:
            skipped["torch"] = f"torch {ctx.get('torch_reason')}"
        backends = [b for b in ("cnn", "torch", "onnxruntime") if b not in skipped]
        for b, reason in skipped.items():
            if b != "onnxruntime" or case.kind == "predict":
                out["results"][b] = {"skipped": reason}
        runs = {b: [] for b in backends}
        for _ in range(rounds):
            for b in list(backends):
                try:
                    runs[b].append(run_child(b, directory, cfg["warmups"], cfg["min_reps"],
                                             cfg["alone_budget"]))
                except Skip as exc:
                    out["results"][b] = {"skipped": str(exc)}
                    backends.remove(b)
                    del runs[b]
    for b, children in runs.items():
        st = stats([t for c in children for t in c["times"]])
        st["round_medians_s"] = [float(np.median(c["times"])) for c in children]
        st["warmups"] = cfg["warmups"] + 1
        st["gflops"] = case.flops / st["median_s"] / 1e9 if case.flops else None
        st["images_per_s"] = case.images / st["median_s"] if case.images else None
        st["peak_rss_bytes"] = int(max(c["peak_rss"] for c in children))
        st["import_rss_bytes"] = int(max(c["import_rss"] for c in children))
        # cores the library kept busy while timed (threads x the share of the wall time they
        # ran): well under its thread count means its threads waited for a core or for work
        wall = sum(c["wall_s"] for c in children)
        st["cores_used"] = sum(c["cpu_s"] for c in children) / wall if wall > 0 else None
        out["results"][b] = st
    for b, name in (("torch", "vs_torch"), ("onnxruntime", "vs_onnxruntime")):
        if b in out["results"]:
            out["ratios"][name] = _ratio(out["results"], b, "median_s")
            out["memory_ratios"][name] = _ratio(out["results"], b, "peak_rss_bytes")
    out["ratios"]["basis"] = "median_s"
    out["memory_ratios"]["basis"] = "peak_rss_bytes"
    rules = {"loss1": "loss"} if case.kind == "train_step" else {"p": "probabilities"}
    prints = {b: {q: np.asarray(v) for q, v in children[0]["fingerprint"].items()}
              for b, children in runs.items()}
    details = compare(prints, [("cnn", "torch"), ("cnn", "onnxruntime")], rules)
    out["check"] = {"ok": all(d["ok"] for d in details),
                    "compared": sorted({d["pair"] for d in details}), "details": details,
                    "tolerances": {q: TOLERANCES[k] for q, k in rules.items()}}
    return out
