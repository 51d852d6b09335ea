"""``python -m cnn.bench``: the command line, and the run of every case (check, then time)."""

import argparse
import json
import os
import re
import subprocess
import sys
import time

import cnn

from .alone import run_alone
from .breakdown import breakdown
from .cases import build_cases
from .check import TOLERANCES, compare
from .common import Skip
from .machine import cpu_snapshot, git_commit, machine_facts, other_load, sgemm_rate, wait_for_idle
from .memory import run_memory_child
from .ort_backend import import_onnxruntime
from .report import (
    BACKENDS,
    ONLY_FOR,
    format_alone_memory,
    format_breakdown,
    format_facts,
    format_scaling,
    format_table,
    format_zoo_means,
    json_default,
    zoo_means,
)
from .targets import format_targets, targets
from .timing import FULL, QUICK, stats, time_backends
from .torch_backend import import_torch

__all__ = ["SCHEMA_VERSION", "main", "parse_args", "run_case"]

SCHEMA_VERSION = 1


def _set_threads(n, torch):
    cnn.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)


def _log(msg, quiet=False):
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def run_case(case, ctx, cfg, args, known):
    """Check, then time one case. Returns its JSON record."""
    torch = ctx["torch"]
    record = {"name": case.name, "kind": case.kind, "shape": case.shape, "threads": case.threads,
              "flops": int(case.flops), "zoo": bool(getattr(case, "zoo", False)),
              "results": {}, "ratios": {},
              "check": {"ok": True, "compared": [], "details": []}}
    _set_threads(case.threads, torch)
    if case.kind == "memory":
        return _run_memory_case(case, record, ctx)

    runs, estimates, outputs = {}, {}, {}
    for b in BACKENDS:
        if b in ONLY_FOR and case.kind not in ONLY_FOR[b]:
            continue
        if b == "torch" and torch is None:
            record["results"][b] = {"skipped": f"torch {ctx['torch_reason']}"}
            continue
        if b == "onnxruntime" and ctx.get("onnxruntime") is None:
            record["results"][b] = {"skipped": f"onnxruntime {ctx.get('onnxruntime_reason')}"}
            continue
        if b == "reference" and case.reference_hint and case.reference_hint[0] in known:
            predicted = known[case.reference_hint[0]] * case.reference_hint[1]
            if predicted > cfg["reference_limit"] and torch is not None:
                record["results"][b] = {"skipped": f"one repetition would take ~{predicted:.1f} s "
                                                   f"(> {cfg['reference_limit']} s)"}
                continue
        try:
            check, run = case.setup(b, ctx)
        except Skip as exc:
            record["results"][b] = {"skipped": str(exc)}
            continue
        t0 = time.perf_counter()
        outputs[b] = check()
        elapsed = time.perf_counter() - t0
        if case.kind == "train_step":
            elapsed /= 2  # the check made two steps
        estimates[b] = elapsed
        runs[b] = run
        if b == "reference":
            known[case.name] = elapsed
            if elapsed > cfg["reference_limit"]:
                record["results"][b] = {"skipped": f"one repetition took {elapsed:.1f} s "
                                                   f"(> {cfg['reference_limit']} s)"}
                del runs[b]

    pairs = [("cnn", "torch"), ("cnn", "reference"), ("cnn", "onnxruntime")]
    if "cnn" not in outputs:
        pairs.append(("torch", "reference"))
    details = compare(outputs, pairs, case.rules)
    record["check"] = {"ok": all(d["ok"] for d in details),
                       "compared": sorted({d["pair"] for d in details}), "details": details,
                       "tolerances": {q: TOLERANCES[k] for q, k in case.rules.items()}}
    if not record["check"]["ok"]:
        for d in details:
            if not d["ok"]:
                _log(f"!!! MISMATCH in {case.name}: {d['pair']} {d['quantity']}: "
                     + (d.get("error") or f"relative error {d['rel_err']:.3g} > tolerance {d['tol']:.3g}"))
    del outputs

    alone = getattr(case, "alone", False) and args.mode in ("alone", "both")
    if alone and args.mode == "alone":
        samples = {}
        for b in runs:
            record["results"][b] = {"skipped": "not timed interleaved (--mode alone)"}
    else:
        samples = time_backends(runs, cfg, estimates)
    ceiling = (ctx.get("sgemm") or {}).get(str(case.threads))
    for b, s in samples.items():
        st = stats(s)
        st["warmups"] = cfg["warmups"] + 1  # the check call warmed up too
        st["gflops"] = case.flops / st["median_s"] / 1e9 if case.flops else None
        st["images_per_s"] = case.images / st["median_s"] if case.images else None
        st["ceiling_fraction"] = st["gflops"] / ceiling if st["gflops"] and ceiling else None
        record["results"][b] = st
    _ratios(record, "median_s")
    if alone:
        del runs, samples  # the parent's models and buffers are not needed by the children
        record["alone"] = run_alone(case, ctx, cfg)
        for st in record["alone"]["results"].values():
            if "gflops" in st:
                st["ceiling_fraction"] = st["gflops"] / ceiling if st["gflops"] and ceiling else None
        if not record["alone"]["check"]["ok"]:
            record["check"]["ok"] = False
            for d in record["alone"]["check"]["details"]:
                if not d["ok"]:
                    _log(f"!!! MISMATCH in {case.name} (alone children): {d['pair']} {d['quantity']}: "
                         + (d.get("error") or f"relative error {d['rel_err']:.3g} > tolerance {d['tol']:.3g}"))
    if args.breakdown and case.kind in ("train_step", "predict"):
        record["breakdown"] = breakdown(case, ctx, cfg)
        record["breakdown"]["sgemm_gflops"] = ceiling
    return record


def _ratios(record, key):
    res = record["results"]
    base = res.get("cnn", {}).get(key)
    for b, name in (("torch", "vs_torch"), ("reference", "vs_reference"),
                    ("onnxruntime", "vs_onnxruntime")):
        if b not in res:
            continue  # a backend that does not run this kind of case
        other = res[b].get(key)
        record["ratios"][name] = other / base if base and other else None
    record["ratios"]["basis"] = key


def _run_memory_case(case, record, ctx):
    steps, batch = case.shape["steps"], case.shape["batch"]
    for b in BACKENDS:
        if b in ONLY_FOR and case.kind not in ONLY_FOR[b]:
            continue
        if b == "reference":
            record["results"][b] = {"skipped": "not measured (the memory case compares cnn and torch)"}
            continue
        if b == "torch" and ctx["torch"] is None:
            record["results"][b] = {"skipped": f"torch {ctx['torch_reason']}"}
            continue
        try:
            data = run_memory_child(b, batch, steps, case.threads)
        except (Skip, subprocess.SubprocessError, ValueError) as exc:
            record["results"][b] = {"skipped": f"{type(exc).__name__}: {exc}"}
            continue
        st = stats(data["times"])
        st["warmups"] = 0
        st["gflops"] = case.flops / st["median_s"] / 1e9 if case.flops else None
        st["images_per_s"] = batch / st["median_s"]
        st["peak_rss_bytes"] = int(data["peak_rss_bytes"])
        st["import_rss_bytes"] = int(data["import_rss_bytes"])
        record["results"][b] = st
    _ratios(record, "peak_rss_bytes")
    record["check"]["compared"] = []
    return record


def _scaling(records, threads):
    out = []
    by_name = {r["name"]: r for r in records}
    for r in records:
        if r["kind"] not in ("train_step", "predict") or r["threads"] != 1 or threads == 1:
            continue
        other = by_name.get(r["name"][: -len("T1")] + f"T{threads}")
        if other is None:
            continue
        for b in BACKENDS:
            t1 = r["results"].get(b, {}).get("median_s")
            tn = other["results"].get(b, {}).get("median_s")
            if t1 and tn:
                out.append({"case": r["name"][: -len(" T1")], "backend": b, "threads": threads,
                            "t1_s": t1, "tn_s": tn, "speedup": t1 / tn})
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m cnn.bench",
                                description="Time cnn against the NumPy reference, PyTorch and (predict) ONNX Runtime.")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for every backend (default: cnn.get_num_threads()); the model cases "
                        "run at 1 and at this count")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--quick", action="store_true",
                   help="a short run: the same cases on smaller batches, few repetitions, the same JSON "
                        "schema (a smoke test, not figures to quote)")
    p.add_argument("--mode", choices=("interleaved", "alone", "both"), default=None,
                   help="how the whole-model cases of the zoo, the DESIGN CNN's predict and its "
                        "batch-1 latency are timed: 'interleaved' (the backends alternate in this "
                        "process: each keeps the others' thread pools warm), 'alone' (each library "
                        "in its own child process, cnn/torch/ORT children alternating for --rounds "
                        "rounds: what a user sees; their peak RSS too), or 'both' (default; "
                        "'interleaved' with --quick). The other cases are always interleaved")
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds of children in the alone mode (default 3; 1 with --quick)")
    p.add_argument("--breakdown", action="store_true",
                   help="per-layer forward/backward times and GFLOP/s (against the measured SGEMM "
                        "ceiling) of the whole-model cases")
    p.add_argument("--cases", metavar="REGEX",
                   help="only the cases whose name matches this regular expression (case-insensitive)")
    p.add_argument("--no-torch", action="store_true", help="do not import PyTorch")
    p.add_argument("--no-onnxruntime", action="store_true",
                   help="do not run ONNX Runtime (by default it runs the predict cases when onnx and "
                        "onnxruntime are importable)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timed repetitions per backend and case (default 1.2; 0.06 with --quick)")
    p.add_argument("--reference-limit", type=float, default=None,
                   help="skip the reference where one repetition takes longer (s; default 2, 0.3 with --quick)")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="on a shared machine: before each case, wait up to SECONDS until other "
                        "processes use under 0.15 cores (default 0: do not wait)")
    p.add_argument("--list", action="store_true", help="list the case names and exit")
    p.add_argument("--distributed", action="store_true",
                   help="instead: DESIGN-CNN training throughput over MPI at 1, 2 and 4 ranks "
                        "(see python -m cnn.bench --distributed --help)")
    args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.rounds is not None and args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.mode is None:
        args.mode = "interleaved" if args.quick else "both"
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--distributed" in argv:  # the MPI scaling run has options of its own
        from .distributed import main as distributed_main
        return distributed_main([a for a in argv if a != "--distributed"])
    args = parse_args(argv)
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    cfg = dict(QUICK if args.quick else FULL)
    if args.budget is not None:
        cfg["budget"] = args.budget
    if args.reference_limit is not None:
        cfg["reference_limit"] = args.reference_limit
    if args.rounds is not None:
        cfg["alone_rounds"] = args.rounds
    threads = args.threads if args.threads is not None else cnn.get_num_threads()
    cases = build_cases(threads, cfg["memory_steps"], quick=args.quick)
    if args.cases:
        pattern = re.compile(args.cases, re.IGNORECASE)
        cases = [c for c in cases if pattern.search(c.name)]
    if args.list:
        print("\n".join(c.name for c in cases))
        return 0
    torch, torch_reason = import_torch(args.no_torch)
    ort, ort_reason = import_onnxruntime(args.no_onnxruntime)
    ctx = {"torch": torch, "torch_reason": torch_reason, "onnxruntime": ort,
           "onnxruntime_reason": ort_reason}
    known = {}
    records = []
    t_start = time.perf_counter()
    size = 512 if args.quick else 1024
    if args.wait_idle:
        wait_for_idle(args.wait_idle)
    sgemm = (size, {str(t): sgemm_rate(t, size, 0.05 if args.quick else 0.5) for t in sorted({1, threads})})
    ctx["sgemm"] = sgemm[1]
    commit = git_commit()  # now: HEAD may move while the bench runs
    for i, case in enumerate(cases):
        _log(f"[{i + 1}/{len(cases)}] {case.name} ...")
        best = None
        # With --wait-idle, a case that other processes disturbed anyway is run again (up to
        # 3 attempts); the least disturbed attempt is kept.
        for attempt in range(1, (3 if args.wait_idle else 1) + 1):
            waited = wait_for_idle(args.wait_idle) if args.wait_idle else 0.0
            if waited > 1.5:
                _log(f"      waited {waited:.0f} s for other processes to go quiet")
            before = cpu_snapshot()
            record = run_case(case, ctx, cfg, args, known)
            after = cpu_snapshot()
            record["bench_seconds"] = after[2] - before[2]
            record["other_load"] = other_load(before, after)
            record["waited_for_idle_s"] = waited
            record["attempts"] = attempt
            _log(f"      done in {record['bench_seconds']:.1f} s"
                 + ("" if record["other_load"] is None else
                    f" (other processes: {record['other_load']:.2f} cores)"))
            if best is None or (record["other_load"] or 0.0) < (best["other_load"] or 0.0):
                best = record
            if (record["other_load"] or 0.0) <= 0.25:
                break
        best["attempts"] = attempt
        records.append(best)
    elapsed = time.perf_counter() - t_start
    _set_threads(threads, torch)
    timed = sum(r["bench_seconds"] for r in records)
    loads = [(r["other_load"], r["bench_seconds"]) for r in records if r["other_load"] is not None]
    others = sum(l * t for l, t in loads) / timed if loads and timed > 0 else None
    facts = machine_facts(threads, torch, torch_reason, load_start, others, sgemm, commit)
    facts["onnxruntime"] = ort.__version__ if ort is not None else None
    facts["onnxruntime_absent_reason"] = ort_reason
    scaling = _scaling(records, threads)
    mismatches = [r["name"] for r in records if not r["check"]["ok"]]

    goals = targets(records, threads)
    print(f"cnn.bench ({'quick' if args.quick else 'full'} run, mode {args.mode}, {elapsed:.0f} s; ratios = "
          f"other's time / cnn's time, > 1 means cnn is faster; memory: other's peak RSS / cnn's)")
    print(format_table(records))
    text = format_zoo_means(zoo_means(records))
    if text:
        print(text)
    text = format_zoo_means(zoo_means(records, alone=True), alone=True)
    if text:
        print(text)
    text = format_alone_memory(records)
    if text:
        print()
        print(text)
    text = format_scaling(scaling)
    if text:
        print()
        print(text)
    for r in records:
        text = format_breakdown(r)
        if text:
            print()
            print(text)
    print()
    print(format_facts(facts))
    for w in facts["warnings"]:
        print(f"WARNING: {w}")
    print()
    print(format_targets(goals))
    if mismatches:
        print(f"!!! OUTPUT MISMATCH (see the check details in the JSON) in: {', '.join(mismatches)}")
    if args.json:
        doc = {"schema_version": SCHEMA_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "quick": bool(args.quick), "argv": sys.argv[1:] if argv is None else list(argv),
               "mode": args.mode, "config": cfg, "tolerances": TOLERANCES, "elapsed_s": elapsed,
               "machine": facts, "cases": records, "scaling": scaling, "zoo_means": zoo_means(records),
               "zoo_means_alone": zoo_means(records, alone=True), "targets": goals,
               "mismatches": mismatches}
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1, default=json_default)
    return 1 if mismatches else 0
