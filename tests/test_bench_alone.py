"""The bench's alone mode (each library in its own child process), its command line, the
per-layer FLOP counts of ``--breakdown``, the kernel-clone machine fact and the issue-15
targets block. No timing value is asserted: only the protocol, the arithmetic on the times,
and the agreement of the children's results with independent computations."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import child_env

from cnn.bench import alone, breakdown, cases, cli, nets, report, targets
from cnn.bench.flops import layer_flops, model_flops

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_ORT = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxruntime") is not None

CFG = {"alone_rounds": 2, "alone_budget": 0.0, "min_reps": 2, "warmups": 0}


def _case(key, batch, training):
    return cases._model_case(key, batch, 1, training, reference=False, zoo=True, alone=True)


# --- the command line ----------------------------------------------------------------------

def test_mode_defaults_and_choices():
    assert cli.parse_args([]).mode == "both"
    assert cli.parse_args(["--quick"]).mode == "interleaved"
    assert cli.parse_args(["--quick", "--mode", "alone"]).mode == "alone"
    assert cli.parse_args(["--rounds", "5"]).rounds == 5


@pytest.mark.parametrize("argv, message", [
    (["--mode", "solo"], "invalid choice: 'solo'"),
    (["--rounds", "0"], "--rounds must be >= 1, got 0"),
])
def test_bad_mode_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_alone_cases_are_the_zoo_the_ort_predicts_and_the_latency():
    built = cases.build_cases(2, 10, quick=True)
    chosen = {c.name for c in built if c.alone}
    zoo = {c.name for c in built if c.zoo}
    assert zoo < chosen
    assert chosen - zoo == {"CNN predict B64 T2", "CNN batch 1 latency T2"}
    assert all(c.kind in ("train_step", "predict") for c in built if c.alone)


# --- the child protocol ------------------------------------------------------------------

def _run(cmd, cwd):
    return subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=cwd, timeout=300)


def test_prepare_writes_the_case(tmp_path):
    case = _case("lenet5", 3, True)
    skipped = alone.prepare(case, tmp_path, onnx=True)
    assert skipped == {"onnxruntime": "ONNX Runtime runs the predict cases only"}
    with open(tmp_path / "case.json") as fh:
        meta = json.load(fh)
    assert (meta["model"], meta["kind"], meta["batch"], meta["threads"]) == ("lenet5", "train_step", 3, 1)
    model = nets.build("lenet5", 0)
    with np.load(tmp_path / "weights.npz") as z:
        got = [z[f"w{i}"] for i in range(len(model.get_weights()))]
        for a, b in zip(got, model.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
        # the torch side's copy of the same parameters, layer by layer
        assert sum(e["n_params"] for e in meta["spec"]) == len(model.params)
        np.testing.assert_array_equal(z["p0_0"], model.layers[0].params[0])
    with np.load(tmp_path / "data.npz") as z:
        assert z["x0"].shape == (3, 1, 28, 28) and z["x0"].dtype == np.float32
        assert len(z.files) == 2 * (5000 // 3)  # the batches the interleaved run cycles through


def test_cnn_child_predicts_what_cnn_predicts(tmp_path):
    case = _case("lenet5", 4, False)
    alone.prepare(case, tmp_path, onnx=False)
    out = alone.run_child("cnn", tmp_path, warmups=1, min_reps=3, budget=0.0)
    assert out["backend"] == "cnn"
    assert len(out["times"]) == 3 and all(t > 0 for t in out["times"])
    assert 0 < out["import_rss"] <= out["peak_rss"]
    assert out["wall_s"] >= sum(out["times"]) and out["cpu_s"] >= 0
    with np.load(tmp_path / "data.npz") as z:
        x = z["x0"]
    want = nets.build("lenet5", 0).predict(x, batch_size=4)
    np.testing.assert_allclose(np.array(out["fingerprint"]["p"]), want, rtol=1e-6, atol=1e-7)


def test_cnn_child_first_loss_is_the_models(tmp_path):
    case = _case("cnn", 2, True)
    alone.prepare(case, tmp_path, onnx=False)
    out = alone.run_child("cnn", tmp_path, warmups=0, min_reps=1, budget=0.0)
    with np.load(tmp_path / "data.npz") as z:
        x, y = z["x0"], z["y0"]
    model = nets.build("cnn", 0)
    assert math.isclose(out["fingerprint"]["loss1"], float(model.train_step(x, y)), rel_tol=1e-6)


def _imported(stderr):
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.skipif(not (HAVE_TORCH and HAVE_ORT), reason="torch, onnx and onnxruntime are needed")
@pytest.mark.parametrize("backend, library", [("torch", "torch"), ("onnxruntime", "onnxruntime")])
def test_other_children_never_import_cnn(backend, library, tmp_path):
    case = _case("cnn", 2, False)
    assert alone.prepare(case, tmp_path) == {}
    cmd = alone.child_command(backend, tmp_path, warmups=0, min_reps=1, budget=0.0)
    assert cmd[1] == alone.CHILD
    proc = _run([cmd[0], "-X", "importtime"] + cmd[1:], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = _imported(proc.stderr)
    assert library in imported
    assert not {m for m in imported if m == "cnn" or m.startswith("cnn.")}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    p = np.array(out["fingerprint"]["p"])
    assert p.shape == (2, 10)
    with np.load(tmp_path / "data.npz") as z:
        want = nets.build("cnn", 0).predict(z["x0"], batch_size=2)
    np.testing.assert_allclose(p, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("argv, message", [
    (["--backend", "cnn"], "the following arguments are required: --dir"),
    (["--backend", "mxnet", "--dir", "."], "invalid choice: 'mxnet'"),
    (["--backend", "cnn", "--dir", ".", "--min-reps", "0"], "--min-reps must be >= 1, got 0"),
    (["--backend", "cnn", "--dir", ".", "--warmups", "-1"], "--warmups must be >= 0, got -1"),
    (["--backend", "cnn", "--dir", "."], "--dir must hold the case.json the bench writes"),
])
def test_child_bad_arguments(argv, message, tmp_path):
    proc = _run([sys.executable, alone.CHILD] + argv, tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_a_failing_child_is_a_skip_with_its_reason(tmp_path):
    case = _case("lenet5", 2, True)
    alone.prepare(case, tmp_path, onnx=False)
    with pytest.raises(alone.Skip, match="predict cases only"):
        alone.run_child("onnxruntime", tmp_path, warmups=0, min_reps=1, budget=0.0)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_run_alone_rounds_and_ratios():
    import torch
    case = _case("lenet5", 2, False)
    ctx = {"torch": torch, "onnxruntime": None, "onnxruntime_reason": "off"}
    out = alone.run_alone(case, ctx, CFG)
    assert out["rounds"] == 2
    assert out["results"]["onnxruntime"] == {"skipped": "onnxruntime not available"}
    for b in ("cnn", "torch"):
        r = out["results"][b]
        assert r["reps"] == 2 * CFG["min_reps"] and len(r["round_medians_s"]) == 2
        assert 0 < r["min_s"] <= r["median_s"] <= r["max_s"]
        assert math.isclose(r["images_per_s"], 2 / r["median_s"])
        assert 0 < r["import_rss_bytes"] <= r["peak_rss_bytes"]
        assert r["cores_used"] is None or r["cores_used"] >= 0
    res = out["results"]
    assert math.isclose(out["ratios"]["vs_torch"], res["torch"]["median_s"] / res["cnn"]["median_s"])
    assert math.isclose(out["memory_ratios"]["vs_torch"],
                        res["torch"]["peak_rss_bytes"] / res["cnn"]["peak_rss_bytes"])
    assert out["check"]["ok"] and out["check"]["compared"] == ["cnn-torch"]


# --- FLOP counts of the breakdown -------------------------------------------------------------

def test_layer_flops_by_hand():
    """Each layer's count written out: conv 2 K C kh kw OH OW per image (backward: dW and, where
    the input needs it, dx, each the same); dense 2 in out; max-pool kh kw - 1 compares and one
    routed add per output; 0 for the layers without counted arithmetic."""
    model = nets.build("stride2", 0)  # 3x32x32 -> 32x16x16 -> 64x8x8 -> 128x4x4, Dense(10)
    convs = [2 * 32 * 3 * 9 * 16 * 16, 2 * 64 * 32 * 9 * 8 * 8, 2 * 128 * 64 * 9 * 4 * 4]
    got = [layer_flops(layer, 5) for layer in model.layers]
    assert got[0] == (5 * convs[0], 5 * convs[0])  # the first conv computes no dx
    assert got[1] == (5 * convs[1], 2 * 5 * convs[1])
    assert got[2] == (5 * convs[2], 2 * 5 * convs[2])
    assert got[3] == (0, 0)  # Flatten
    assert got[4] == (5 * 2 * 2048 * 10, 2 * 5 * 2 * 2048 * 10)
    one = nets.build("conv1x1", 0)
    assert layer_flops(one.layers[1], 1) == (2 * 64 * 32 * 32 * 32, 2 * 2 * 64 * 32 * 32 * 32)
    pool = one.layers[2]  # MaxPool2D(2) of 64x32x32
    assert layer_flops(pool, 2) == (2 * 64 * 16 * 16 * 3, 2 * 64 * 16 * 16)


def test_breakdown_rows_carry_the_counts_and_rates(rng):
    model = nets.build("cnn", 0)
    batches = [(rng.random((4, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 4)) for _ in range(2)]
    rows = breakdown.cnn_breakdown(model, batches, True, reps=2, warmups=1)
    for row, layer in zip(rows, model.layers):
        assert (row["forward_flops"], row["backward_flops"]) == layer_flops(layer, 4)
    assert sum(r["forward_flops"] + r["backward_flops"] for r in rows[:len(model.layers)]) == \
        model_flops(model, 4, True)
    assert "forward_flops" not in rows[-1]  # the optimizer row counts nothing
    # the max-pools run inside their convs' forward (cnn._train_fusion): marked, no forward rate
    kinds = [type(layer).__name__ for layer in model.layers]
    assert [r["fused"] for r in rows[:len(kinds)]] == [k == "MaxPool2D" for k in kinds]
    pool = rows[kinds.index("MaxPool2D")]
    assert breakdown.layer_rates(pool)[0] is None and breakdown.layer_rates(pool)[1] is not None
    fwd, bwd, cf, cb = breakdown.layer_rates({"forward_flops": 3e9, "forward_s": 0.5,
                                              "backward_flops": 0, "backward_s": 0.1}, ceiling=12.0)
    assert (fwd, bwd, cf, cb) == (6.0, None, 0.5, None)
    assert breakdown.layer_rates({"forward_flops": 3e9, "forward_s": 0.5})[2] is None
    text = report.format_breakdown({"name": "x", "threads": 2, "results": {},
                                    "breakdown": {"cnn": rows, "sgemm_gflops": 100.0}})
    assert "fwd GF/s" in text and "%c" in text and "100.0 GFLOP/s at 2 threads" in text
    assert text.count("MaxPool2D(2x2) [fused]") == 2


# --- the machine facts ----------------------------------------------------------------------

def _facts(**extra):
    m = {"cpu": "cpu", "simd": ["avx2"], "cores_available": 2, "cores_logical": 2, "cgroup_cpu_quota": None,
         "threads": 2, "load_average_start": [0.0], "load_average_end": [0.0], "other_processes_cores": 0.0,
         "sgemm_size": 64, "sgemm_gflops": {"1": 1.0}, "python": "3", "numpy": "2", "scipy": "1",
         "threadpoolctl": "3", "torch": None, "torch_absent_reason": "off", "cnn": "0", "cnn_path": "/x",
         "git_commit": "abc", "git_dirty": False, "openmp": True, "compiler_flags": [],
         "flush_to_zero": False, "threadpools": [], "env": {}, "data": None}
    m.update(extra)
    return m


def test_kernel_clone_fact():
    assert "cnn kernel clone that ran: not reported by this build" in report.format_facts(_facts())
    assert "cnn kernel clone that ran: avx512f" in report.format_facts(_facts(kernel_isa="avx512f"))


# --- the targets block on a synthetic record set -----------------------------------------

def _record(name, kind, model, batch, inter, alone_ratio=None, zoo=True, threads=2, ort=None,
            alone_ort=None, rss=None):
    r = {"name": name, "kind": kind, "threads": threads, "zoo": zoo,
         "shape": {"model": model, "batch": batch}, "ratios": {"vs_torch": inter, "basis": "median_s"},
         "results": {}}
    if ort is not None:
        r["ratios"]["vs_onnxruntime"] = ort
    if alone_ratio is not None or alone_ort is not None or rss is not None:
        cnn_rss, torch_rss = rss or (None, None)
        r["alone"] = {"ratios": {"vs_torch": alone_ratio, "vs_onnxruntime": alone_ort},
                      "memory_ratios": {"vs_torch": torch_rss / cnn_rss if rss else None},
                      "results": {"cnn": {"peak_rss_bytes": cnn_rss}, "torch": {"peak_rss_bytes": torch_rss}}
                      if rss else {}}
    return r


MIB = 2 ** 20


def _synthetic():
    return [
        _record("CNN train_step B64 T2", "train_step", "design_cnn", 64, 2.0, 2.6, rss=(100 * MIB, 300 * MIB)),
        _record("CNN predict B64 T2", "predict", "design_cnn", 64, 3.0, 1.2, ort=0.5, alone_ort=0.8),
        _record("CNN predict B256 T2", "predict", "design_cnn", 256, 2.0, zoo=False, ort=0.6),
        _record("CNN predict B64 T1", "predict", "design_cnn", 64, 2.0, zoo=False, threads=1, ort=0.1),
        _record("CNN batch 1 latency T2", "predict", "design_cnn", 1, 5.0, zoo=False, ort=0.2,
                alone_ort=0.1, alone_ratio=4.0),
        _record("stride2 predict B64 T2", "predict", "stride2", 64, 0.9, rss=(400 * MIB, 300 * MIB)),
        {"name": "peak RSS CNN train B64 x50 T2", "kind": "memory", "threads": 2, "zoo": False,
         "shape": {"model": "design_cnn", "batch": 64},
         "ratios": {"vs_torch": 3.5, "basis": "peak_rss_bytes"},
         "results": {"cnn": {"peak_rss_bytes": 100 * MIB}, "torch": {"peak_rss_bytes": 350 * MIB}}},
    ]


def test_targets_on_synthetic_records():
    lines = targets.targets(_synthetic(), threads=2)
    by = {t["label"]: t for t in lines}
    zoo = [t for t in lines if t["target"] == "zoo_vs_torch"]
    assert [(t["figure"], t["source"], t["held"]) for t in zoo] == [
        (2.6, "alone", True), (1.2, "alone", True), (0.9, "interleaved", False)]
    mean = by["zoo geometric mean vs PyTorch (3 of 3 cases)"]
    assert math.isclose(mean["figure"], (2.6 * 1.2 * 0.9) ** (1 / 3))
    assert mean["source"] == "mixed" and mean["held"] is (mean["figure"] >= 1.5)
    ort = [t for t in lines if t["target"] == "cnn_predict_vs_ort"]
    # the bench's thread count only, by batch; the alone figure where it ran
    assert [(t["label"], t["figure"], t["source"], t["held"]) for t in ort] == [
        ("DESIGN CNN batch-1 latency vs ONNX Runtime", 0.1, "alone", False),
        ("DESIGN CNN predict B64 vs ONNX Runtime", 0.8, "alone", True),
        ("DESIGN CNN predict B256 vs ONNX Runtime", 0.6, "interleaved", False)]
    train = by["DESIGN CNN train_step B64 vs PyTorch"]
    assert (train["figure"], train["held"], train["minimum"], train["aim"]) == (2.6, True, 2.5, 3.0)
    mem = [t for t in lines if t["target"] == "peak_memory"]
    assert [(t["label"], t["source"], t["held"]) for t in mem] == [
        ("peak RSS CNN train_step B64 T2", "alone", True),
        ("peak RSS CNN predict B64 T2", None, None),  # alone ran, no memory figure: not measured
        ("peak RSS CNN batch 1 latency T2", None, None),
        ("peak RSS stride2 predict B64 T2", "alone", False),
        ("peak RSS CNN train B64 x50 T2", "memory case", True)]
    assert mem[0]["detail"] == "cnn 100 MiB, torch 300 MiB"
    text = targets.format_targets(lines)
    assert "MISSED" in text and "held" in text and "not measured" in text
    held = sum(t["held"] is True for t in lines)
    missed = sum(t["held"] is False for t in lines)
    assert f"{held} held, {missed} missed, {len(lines) - held - missed} not measured" in text


def test_targets_without_figures():
    rec = _record("LeNet5 train_step B64 T2", "train_step", "lenet5", 64, None)
    lines = targets.targets([rec], threads=2)
    assert [t["held"] for t in lines] == [None, None]  # the case, and a mean of no ratio
    assert targets.format_targets([]).endswith("no case of the targets ran")


def test_alone_zoo_means_and_table_columns():
    recs = _synthetic()
    means = report.zoo_means(recs, alone=True)
    assert means["all"]["cases"] == 2  # stride2 did not run alone
    assert math.isclose(means["all"]["mean"], math.sqrt(2.6 * 1.2))
    assert report.zoo_means(recs)["all"]["cases"] == 3
    assert "each library alone" in report.format_zoo_means(means, alone=True)
    record = {"name": "CNN predict B64 T2", "kind": "predict", "threads": 2, "flops": 10**6,
              "check": {"ok": True, "compared": ["cnn-torch"]}, "other_load": 0.0,
              "ratios": {"vs_torch": 1.5, "vs_onnxruntime": 0.5},
              "results": {"cnn": {"skipped": "not timed interleaved (--mode alone)"}},
              "alone": {"ratios": {"vs_torch": 1.25, "vs_onnxruntime": 0.75},
                        "results": {"cnn": {"median_s": 0.002, "gflops": 0.5, "images_per_s": 32000.0}}}}
    table = report.format_table([record]).splitlines()
    head, row = table[0], table[2]
    assert "alone ms" in head and head.count("alone") == 3
    assert "2.00" in row and "1.25x" in row and "0.75x" in row and "1.50x" in row


def test_ort_child_session_settings(tmp_path, monkeypatch):
    """ONNX Runtime's child opens its session as cnn.onnx.inference_session does: the case's
    intra-op threads, one inter-op thread, sequential, idle spinning off."""
    import types

    from cnn.bench import alone_child
    seen = {}

    class Options:
        def __init__(self):
            self.entries = {}

        def add_session_config_entry(self, key, value):
            self.entries[key] = value

    class Session:
        def __init__(self, path, sess_options, providers):
            seen.update(path=path, options=sess_options, providers=providers)

        def get_inputs(self):
            return [types.SimpleNamespace(name="input")]

    fake = types.SimpleNamespace(SessionOptions=Options, InferenceSession=Session,
                                 ExecutionMode=types.SimpleNamespace(ORT_SEQUENTIAL="sequential"))
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    np.savez(tmp_path / "data.npz", x0=np.zeros((1, 1, 28, 28), np.float32), y0=np.zeros(1, np.int64))
    alone_child._onnxruntime({"threads": 3}, str(tmp_path), np)
    opts = seen["options"]
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads, opts.execution_mode) == (3, 1, "sequential")
    assert opts.entries == {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}
    assert seen["providers"] == ["CPUExecutionProvider"]
    assert seen["path"] == os.path.join(str(tmp_path), "model.onnx")
