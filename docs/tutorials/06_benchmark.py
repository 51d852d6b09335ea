"""Tutorial 6: run ``python -m cnn.bench`` on a quick selection and read what it prints.

Run: ``python docs/tutorials/06_benchmark.py`` (about 20 s on 2 cores; PyTorch and ONNX
Runtime are used when installed). It writes ``bench.json`` in the current folder. It asserts
what the bench *checks* (the backends' outputs agree) and that the printed ratios are the
ratios of the medians, never a time: on a shared machine any time can come out.
"""

import json
import shlex
import subprocess
import sys

CASES = r"^conv3x3 fwd\+bwd 16x32x14x14 k64$|^CNN train_step B16 T2$"
command = [sys.executable, "-m", "cnn.bench", "--quick", "--threads", "2", "--cases", CASES,
           "--breakdown", "--json", "bench.json"]
print("$ " + shlex.join(["python", *command[1:]]), flush=True)
# -- 1. the bench itself: its table, the breakdown, the machine facts (exit status 1 = mismatch)
status = subprocess.run(command, stdin=subprocess.DEVNULL, check=False).returncode
assert status == 0, f"the bench failed or its backends disagreed (exit status {status})"

# -- 2. the same run, read back from its JSON
with open("bench.json") as f:
    run = json.load(f)
assert run["quick"] and not run["mismatches"]
machine = run["machine"]
ceiling = {int(k): v for k, v in machine["sgemm_gflops"].items()}
print(f"\nreading bench.json: {len(run['cases'])} cases, SGEMM ceiling "
      + ", ".join(f"{v:.0f} GFLOP/s at {k} thread(s)" for k, v in sorted(ceiling.items()))
      + f"; other processes kept {machine['other_processes_cores']:.2f} cores busy")
for case in run["cases"]:
    assert case["check"]["ok"], case["check"]  # the figures of a mismatching case mean nothing
    results = {name: r for name, r in case["results"].items() if "median_s" in r}
    cnn_median = results["cnn"]["median_s"]
    print(f"\n{case['name']} ({case['kind']}, {case['flops'] / 1e6:.1f} MFLOP, "
          f"{case['threads']} threads, others {case['other_load']:.2f} cores)")
    for name, r in results.items():
        ratio = r["median_s"] / cnn_median
        line = (f"  {name:<12} median {r['median_s'] * 1e3:8.2f} ms over {r['reps']} reps, "
                f"{r['gflops']:7.1f} GFLOP/s")
        if name == "cnn":
            line += f" = {r['gflops'] / ceiling[case['threads']]:.2f} of the SGEMM ceiling"
        else:
            line += f"; {name} / cnn = {ratio:.2f}x"
        print(line)
    # the ratio columns are exactly other median / cnn median
    for key, name in (("vs_torch", "torch"), ("vs_reference", "reference")):
        if name in results:
            assert abs(case["ratios"][key] - results[name]["median_s"] / cnn_median) < 1e-9
    for skipped in (r["skipped"] for r in case["results"].values() if "skipped" in r):
        print(f"  skipped: {skipped}")
    if "breakdown" in case:
        rows = case["breakdown"]["cnn"]
        total = sum((r["forward_s"] or 0) + (r["backward_s"] or 0) for r in rows)
        top = max(rows, key=lambda r: (r["forward_s"] or 0) + (r["backward_s"] or 0))
        share = ((top["forward_s"] or 0) + (top["backward_s"] or 0)) / total
        print(f"  breakdown: the rows sum to {total * 1e3:.1f} ms (whole step {cnn_median * 1e3:.1f}"
              f" ms); the largest is {top['layer']}, {share:.0%} of the sum")
print("\nRead the ratios, not the times, and only ratios taken in one run on a quiet machine.")
