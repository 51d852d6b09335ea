"""The targets of issue 15, judged on a run's records: the block at the end of the report and
the JSON's ``"targets"``.

Each target line takes its figure from the alone mode (:mod:`cnn.bench.alone`: each library in
its own process, what a user sees) where that ran for the case, else from the interleaved run,
and says which. The targets (2 threads on the machine measured):

* every zoo case (records with ``"zoo": True``) >= 1.0x PyTorch, ``train_step`` and ``predict``;
* the geometric mean of those ratios >= 1.5x;
* the DESIGN CNN's ``predict`` >= 0.7x ONNX Runtime (aim 1.0x) at each batch the run has at the
  bench's thread count (64 and 256 in a full run) and its batch-1 latency;
* the DESIGN CNN's ``train_step`` (its zoo case) >= 2.5x PyTorch (aim 3x);
* peak memory no higher than PyTorch's: per case of the alone mode (peak RSS of the children,
  imports included), and the interleaved run's memory case (a fresh child per library).
"""

import math

__all__ = ["TARGETS", "targets", "format_targets"]

#: target key -> (minimum, aim, what): ratios are other's figure / cnn's (above 1 cnn is ahead)
TARGETS = {
    "zoo_vs_torch": (1.0, None, "vs PyTorch"),
    "zoo_geomean": (1.5, None, "zoo geometric mean vs PyTorch"),
    "cnn_predict_vs_ort": (0.7, 1.0, "vs ONNX Runtime"),
    "cnn_train_vs_torch": (2.5, 3.0, "DESIGN CNN train_step vs PyTorch"),
    "peak_memory": (1.0, None, "peak RSS: PyTorch's / cnn's"),
}


def _figure(record, key, memory=False):
    """``(ratio, source)`` of a record: the alone mode's where it has one, else the
    interleaved run's; ``(None, None)`` when neither has it."""
    alone = record.get("alone") or {}
    value = alone.get("memory_ratios" if memory else "ratios", {}).get(key)
    if value is not None:
        return value, "alone"
    if memory:
        if record.get("kind") == "memory":
            value = record.get("ratios", {}).get(key)
            return (value, "memory case") if value is not None else (None, None)
        return None, None
    value = record.get("ratios", {}).get(key)
    return (value, "interleaved") if value is not None else (None, None)


def _line(key, label, figure, source, detail=None):
    minimum, aim, _ = TARGETS[key]
    held = None if figure is None else figure >= minimum
    return {"target": key, "label": label, "minimum": minimum, "aim": aim, "figure": figure,
            "held": held, "source": source, "detail": detail}


def _is_design_cnn(record):
    return record.get("shape", {}).get("model") == "design_cnn"


def targets(records, threads):
    """The target lines of a run: a list of ``{"target", "label", "minimum", "aim",
    "figure", "held" (True / False / None: not measured), "source" ("alone", "interleaved",
    "memory case", "mixed" or None), "detail"}``, in the order of the module doc.

    ``records``: the run's case records (as in the JSON's ``"cases"``); ``threads``: the
    bench's thread count (the DESIGN CNN's lines take its cases at that count)."""
    lines = []
    zoo = [r for r in records if r.get("zoo") and r["kind"] in ("train_step", "predict")]
    figures = []
    for r in zoo:
        value, source = _figure(r, "vs_torch")
        lines.append(_line("zoo_vs_torch", f"{r['name']} vs PyTorch", value, source))
        if value:
            figures.append((value, source))
    if zoo:
        sources = {s for _, s in figures}
        mean = math.exp(sum(math.log(v) for v, _ in figures) / len(figures)) if figures else None
        lines.append(_line("zoo_geomean", f"zoo geometric mean vs PyTorch ({len(figures)} of "
                                          f"{len(zoo)} cases)", mean,
                           (sources.pop() if len(sources) == 1 else "mixed") if sources else None))
    cnn = [r for r in records if _is_design_cnn(r) and r["threads"] == threads]
    for r in sorted((r for r in cnn if r["kind"] == "predict"), key=lambda r: r["shape"]["batch"]):
        what = "batch-1 latency" if r["shape"]["batch"] == 1 else f"predict B{r['shape']['batch']}"
        value, source = _figure(r, "vs_onnxruntime")
        lines.append(_line("cnn_predict_vs_ort", f"DESIGN CNN {what} vs ONNX Runtime", value, source))
    for r in cnn:
        if r["kind"] == "train_step" and r.get("zoo"):
            value, source = _figure(r, "vs_torch")
            lines.append(_line("cnn_train_vs_torch", f"DESIGN CNN train_step B{r['shape']['batch']} "
                                                     f"vs PyTorch", value, source))
    for r in records:
        value, source = _figure(r, "vs_torch", memory=True)
        if value is None and not (r.get("alone") or r.get("kind") == "memory"):
            continue
        res = (r.get("alone") or {}).get("results") if source == "alone" else r.get("results")
        mib = [(res or {}).get(b, {}).get("peak_rss_bytes") for b in ("cnn", "torch")]
        detail = (f"cnn {mib[0] / 2**20:.0f} MiB, torch {mib[1] / 2**20:.0f} MiB"
                  if None not in mib else None)
        label = r["name"] if r.get("kind") == "memory" else f"peak RSS {r['name']}"
        lines.append(_line("peak_memory", label, value, source, detail))
    return lines


def format_targets(lines):
    """The printed block: one line per target, held / missed / not measured, with its figure
    and where it came from."""
    if not lines:
        return "Targets (issue 15): no case of the targets ran"
    out = ["Targets (issue 15; figure: other's / cnn's, from the alone mode where it ran, else "
           "interleaved; minimum, aim):"]
    for t in lines:
        verdict = {True: "held", False: "MISSED", None: "not measured"}[t["held"]]
        figure = "-" if t["figure"] is None else f"{t['figure']:.2f}x"
        goal = f">= {t['minimum']:.1f}x" + (f", aim {t['aim']:.1f}x" if t["aim"] else "")
        extra = f"; {t['detail']}" if t.get("detail") else ""
        out.append(f"  {verdict:<12} {figure:>7}  ({goal}; {t['source'] or '-'}{extra})  {t['label']}")
    held = sum(t["held"] is True for t in lines)
    missed = sum(t["held"] is False for t in lines)
    out.append(f"  {held} held, {missed} missed, {len(lines) - held - missed} not measured")
    return "\n".join(out)
