"""The printed report: the table of cases (interleaved and alone figures side by side), thread
scaling, the alone children's peak memory, the per-layer breakdowns and the machine facts; and
the JSON encoding of NumPy values."""

import numpy as np

from .breakdown import layer_rates

__all__ = ["BACKENDS", "format_table", "format_scaling", "format_breakdown", "format_facts", "json_default",
           "zoo_means", "format_zoo_means", "format_alone_memory"]

BACKENDS = ("cnn", "torch", "reference", "onnxruntime")
#: The backend that runs only some kinds of case (it has no entry in the others).
ONLY_FOR = {"onnxruntime": ("predict",)}


def _ms(s):
    if s is None:
        return "-"
    ms = s * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def _num(v, digits=1):
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def _ratio(v):
    return "-" if v is None else f"{v:.2f}x"


def _pct(v):
    return "-" if v is None else f"{100 * v:.0f}%"


def format_table(cases):
    """The table: one row per backend of each case. ``median ms`` .. ``vs ORT``: the
    interleaved run; ``alone ms`` and the ``alone`` ratio columns: each library alone in its
    process (``-`` where the alone mode did not time the case); ``%ceil``: GFLOP/s over the
    measured SGEMM ceiling at the case's threads. Where the case was not timed interleaved
    (``--mode alone``), ``GFLOP/s``, ``%ceil`` and ``img/s`` are the alone mode's."""
    head = (f"{'case':<36} {'thr':>3} {'MFLOP':>8}  {'backend':<9} {'median ms':>9} "
            f"{'min..max ms':>17} {'GFLOP/s':>8} {'%ceil':>5} {'img/s':>8} {'alone ms':>9} "
            f"{'vs torch':>9} {'alone':>7} {'vs ref':>8} {'vs ORT':>8} {'alone':>7}  check  others")
    lines = [head, "-" * len(head)]
    for case in cases:
        first = True
        alone = case.get("alone") or {}
        for b in BACKENDS:
            r = case["results"].get(b)
            if r is None:
                continue
            lead = (f"{case['name']:<36} {case['threads']:>3} {case['flops'] / 1e6:>8.1f}  " if first
                    else " " * 51)
            label = "ORT" if b == "onnxruntime" else b
            a = alone.get("results", {}).get(b, {})
            alone_ms = _ms(a.get("median_s")) if "median_s" in a else ("skip" if "skipped" in a else "-")
            if "skipped" in r and "median_s" not in a:
                lines.append(f"{lead}{label:<9} skipped: {r['skipped']}"
                             + (f"; alone: {a['skipped']}" if "skipped" in a and a["skipped"] != r["skipped"]
                                else ""))
            else:
                spread = f"{_ms(r['min_s'])}..{_ms(r['max_s'])}" if "min_s" in r else "-"
                extra = ""
                if case["kind"] == "memory":
                    extra = (f"  peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB "
                             f"(after imports {r['import_rss_bytes'] / 2**20:.0f} MiB)")
                ratios = case["ratios"] if b == "cnn" else {}
                aratios = alone.get("ratios", {}) if b == "cnn" else {}
                check = ""
                if b == "cnn":
                    check = "ok" if case["check"]["ok"] else "MISMATCH"
                    if not case["check"]["compared"]:
                        check = "-"
                    busy = case.get("other_load")
                    check = f"{check:<8} {'-' if busy is None else f'{busy:.2f}':>5}"
                gflops = r.get("gflops", a.get("gflops"))
                frac = r.get("ceiling_fraction", a.get("ceiling_fraction"))
                ips = r.get("images_per_s", a.get("images_per_s"))
                lines.append(f"{lead}{label:<9} {_ms(r.get('median_s')):>9} {spread:>17} "
                             f"{_num(gflops):>8} {_pct(frac):>5} {_num(ips, 0):>8} {alone_ms:>9} "
                             f"{_ratio(ratios.get('vs_torch')):>9} {_ratio(aratios.get('vs_torch')):>7} "
                             f"{_ratio(ratios.get('vs_reference')):>8} "
                             f"{_ratio(ratios.get('vs_onnxruntime')):>8} {_ratio(aratios.get('vs_onnxruntime')):>7}"
                             f"  {check}{extra}")
            first = False
    return "\n".join(lines)


def format_alone_memory(cases):
    """Peak RSS of the alone children (imports included), per case the alone mode ran; ""
    when it ran none."""
    rows = [c for c in cases if c.get("alone")]
    if not rows:
        return ""
    lines = ["Each library alone in its process: peak RSS (MiB, imports included; after the imports "
             "in brackets; torch / cnn: above 1 cnn uses less) and cores used while timed (CPU s / "
             "wall s; below the thread count: its threads waited):",
             f"  {'case':<36} {'cnn':>14} {'torch':>14} {'ORT':>14} {'torch/cnn':>10}   "
             f"{'cores cnn/torch/ORT':>20}"]
    for c in rows:
        res = c["alone"]["results"]
        cells, cores = [], []
        for b in ("cnn", "torch", "onnxruntime"):
            r = res.get(b, {})
            cells.append(f"{r['peak_rss_bytes'] / 2**20:.0f} ({r['import_rss_bytes'] / 2**20:.0f})"
                         if "peak_rss_bytes" in r else "-")
            cores.append("-" if r.get("cores_used") is None else f"{r['cores_used']:.2f}")
        ratio = c["alone"]["memory_ratios"].get("vs_torch")
        lines.append(f"  {c['name']:<36} {cells[0]:>14} {cells[1]:>14} {cells[2]:>14} {_ratio(ratio):>10}   "
                     f"{'/'.join(cores):>20}")
    return "\n".join(lines)


def _geomean(values):
    return float(np.exp(np.mean(np.log(values)))) if values else None


def zoo_means(records, alone=False):
    """The geometric mean of the ``vs_torch`` ratios of the zoo cases (records with
    ``"zoo": True``): ``{"train_step": {"mean", "cases"}, "predict": {...}, "all": {...}}``,
    ``mean`` None where no zoo case has a ratio (torch skipped); ``{}`` without zoo cases (with
    ``alone``: without zoo cases the alone mode ran). ``cases`` counts the ratios in the mean; a
    case whose torch run was skipped is left out. ``alone``: the ratios of the alone mode."""
    zoo = [r for r in records if r.get("zoo") and (r.get("alone") or not alone)]
    if not zoo:
        return {}
    out = {}
    for kind in ("train_step", "predict", "all"):
        ratios = [(r["alone"] if alone else r)["ratios"].get("vs_torch")
                  for r in zoo if kind in ("all", r["kind"])]
        ratios = [v for v in ratios if v]
        out[kind] = {"mean": _geomean(ratios), "cases": len(ratios)}
    return out


def format_zoo_means(means, alone=False):
    """The table footer line of :func:`zoo_means` ("" without a zoo ratio)."""
    if not means or all(m["mean"] is None for m in means.values()):
        return ""
    parts = [f"{kind} {_ratio(m['mean'])} ({m['cases']} cases)" for kind, m in means.items()]
    how = "each library alone" if alone else "interleaved"
    return f"Zoo geometric mean vs torch ({how}; torch's time / cnn's): " + ", ".join(parts)


def format_scaling(scaling):
    if not scaling:
        return ""
    lines = ["Thread scaling (median time at 1 thread / at N threads):",
             f"  {'case':<28} {'backend':<9} {'T1 ms':>9} {'TN ms':>9} {'N':>3} {'speed-up':>9}"]
    for s in scaling:
        lines.append(f"  {s['case']:<28} {s['backend']:<9} {_ms(s['t1_s']):>9} {_ms(s['tn_s']):>9} "
                     f"{s['threads']:>3} {s['speedup']:>8.2f}x")
    return "\n".join(lines)


def format_breakdown(case):
    """The per-layer table of a case's ``--breakdown``: median ms, GFLOP/s and the fraction of
    the measured SGEMM ceiling (``%c``) of each layer's forward and backward, per backend."""
    bd = case.get("breakdown")
    if not bd:
        return ""
    backends = [b for b in ("cnn", "torch") if b in bd]
    ceiling = bd.get("sgemm_gflops")
    lines = [f"Breakdown of {case['name']} (median ms; GFLOP/s; %c: of the SGEMM ceiling, "
             f"{_num(ceiling)} GFLOP/s at {case['threads']} threads; cnn: the step timed through "
             f"layer hooks; torch: a manual per-layer pass):"]
    cols = ("fwd ms", "bwd ms", "fwd GF/s", "bwd GF/s", "fwd %c", "bwd %c")
    head = f"  {'layer':<30}" + "".join(f" {b + ' ' + c:>14}" if k == 0 else f" {c:>8}"
                                         for b in backends for k, c in enumerate(cols))
    lines.append(head)
    n = max(len(bd[b]) for b in backends)
    sums = {b: 0.0 for b in backends}
    for i in range(n):
        label = bd["cnn"][i]["layer"] if "cnn" in bd and i < len(bd["cnn"]) else ""
        if "cnn" in bd and i < len(bd["cnn"]) and bd["cnn"][i].get("fused"):
            label += " [fused]"  # its forward runs in the row above (cnn._train_fusion)
        row = f"  {label:<30}"
        for b in backends:
            e = bd[b][i] if i < len(bd[b]) else {}
            f, k = e.get("forward_s"), e.get("backward_s")
            sums[b] += (f or 0.0) + (k or 0.0)
            gf, gb, cf, cb = layer_rates(e, ceiling)
            row += (f" {_ms(f):>14} {_ms(k):>8} {_num(gf):>8} {_num(gb):>8} {_pct(cf):>8} "
                    f"{_pct(cb):>8}")
        lines.append(row)
    width = 14 + 5 * 9
    lines.append(f"  {'sum':<30}" + "".join(f" {_ms(sums[b]):>{width}}" for b in backends))
    meas = "".join(f" {_ms(case['results'][b].get('median_s')) if 'median_s' in case['results'].get(b, {}) else '-':>{width}}"
                   for b in backends)
    lines.append(f"  {'measured (whole call, median)':<30}{meas}")
    return "\n".join(lines)


def format_facts(m):
    lines = ["Machine:",
             f"  CPU: {m['cpu']} ({', '.join(m['simd']) or 'no SIMD flags read'}); "
             f"{m['cores_available']} cores available of {m['cores_logical']}"
             + (f", cgroup quota {m['cgroup_cpu_quota']} CPUs" if m["cgroup_cpu_quota"] else ""),
             f"  threads: {m['threads']} (kernel cases and the MLP; model cases at 1 and {m['threads']})",
             f"  load average at start {', '.join(f'{v:.2f}' for v in m['load_average_start'] or [])}; "
             f"at end {', '.join(f'{v:.2f}' for v in m['load_average_end'] or [])}; other processes "
             f"used {'?' if m['other_processes_cores'] is None else format(m['other_processes_cores'], '.2f')} "
             f"cores on average while the kept cases ran",
             f"  SGEMM (NumPy's BLAS, float32 {m.get('sgemm_size')}^3): "
             + (", ".join(f"{v:.1f} GFLOP/s at {k} thread{'s' if k != '1' else ''}"
                          for k, v in (m.get("sgemm_gflops") or {}).items()) or "not measured"),
             f"  Python {m['python']}, numpy {m['numpy']}, scipy {m['scipy']}, threadpoolctl "
             f"{m['threadpoolctl']}, torch {m['torch'] or 'absent (' + str(m['torch_absent_reason']) + ')'}"
             + (f", onnxruntime {m['onnxruntime'] or 'absent (' + str(m.get('onnxruntime_absent_reason')) + ')'}"
                if "onnxruntime" in m else ""),
             f"  cnn {m['cnn']} from {m['cnn_path']}, commit {m['git_commit']}"
             + (" (working tree modified)" if m["git_dirty"] else ""),
             f"  cnn OpenMP: {m['openmp']}; compiler flags: {' '.join(m['compiler_flags'] or [])}; "
             f"flush-to-zero: {m['flush_to_zero']}",
             f"  cnn kernel clone that ran: {m.get('kernel_isa') or 'not reported by this build'}",
             "  thread pools (threadpoolctl):"]
    for p in m["threadpools"]:
        lines.append(f"    {p['user_api']:<7} {p['internal_api']:<9} {str(p['version']):<14} "
                     f"{p['num_threads']} threads  {p.get('threading_layer') or ''} "
                     f"{p.get('architecture') or ''}  {p['filepath']}")
    if m.get("torch_parallel"):
        lines.append("  torch: " + "; ".join(m["torch_parallel"]))
    env = ", ".join(f"{k}={v}" for k, v in m["env"].items() if v is not None) or "none set"
    lines.append(f"  environment: {env}")
    lines.append(f"  model data: {m['data']}")
    return "\n".join(lines)


def json_default(o):
    """``json.dump``'s ``default``: NumPy scalars and tuples as JSON values."""
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON-able: {type(o).__name__}")
