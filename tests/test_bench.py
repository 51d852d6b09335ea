"""Smoke test of ``python -m cnn.bench --quick``: the run completes, the outputs of the backends
agree (exit status 0), and the JSON has its schema and is self-consistent.

No timing value is asserted: only that times are positive and ordered (min <= median <= max) and
that the derived figures (GFLOP/s, images/s, ratios) follow from them.
"""
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

import cnn

TIMING_KEYS = ("median_s", "min_s", "max_s", "p25_s", "p75_s", "reps", "gflops", "images_per_s")
BACKENDS = ("cnn", "torch", "reference")
def _importable(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


HAVE_TORCH = _importable("torch")
HAVE_ORT = _importable("onnx") and _importable("onnxruntime")
HAVE_MODEL = _importable("cnn.model")


def _run_bench(tmp_path, *extra, timeout=240):
    """Run the bench in a fresh interpreter (the same one as the tests), from an empty folder,
    importing the very cnn these tests import."""
    out = tmp_path / "bench.json"
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(cnn.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run([sys.executable, "-m", "cnn.bench", "--quick", "--json", str(out), *extra],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"bench failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    with open(out) as fh:
        return json.load(fh), proc.stdout


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return _run_bench(tmp_path_factory.mktemp("bench"))


def _close(a, b, rel=1e-9):
    return math.isclose(a, b, rel_tol=rel, abs_tol=0.0)


def _check_timing(result, case):
    for key in TIMING_KEYS:
        assert key in result, f"{case['name']}: result lacks {key}: {result}"
    assert result["reps"] >= 1
    assert 0 < result["min_s"] <= result["p25_s"] <= result["median_s"] <= result["p75_s"] <= result["max_s"]
    assert all(math.isfinite(result[k]) for k in ("min_s", "median_s", "max_s"))
    assert _close(result["gflops"], case["flops"] / result["median_s"] / 1e9)
    if case["kind"] in ("train_step", "predict", "memory"):
        assert _close(result["images_per_s"], case["shape"]["batch"] / result["median_s"])
    else:
        assert result["images_per_s"] is None


def test_schema_and_machine(quick):
    doc, _ = quick
    assert doc["schema_version"] == 1
    assert doc["quick"] is True
    m = doc["machine"]
    for key in ("cpu", "cores_available", "threads", "python", "numpy", "scipy", "torch", "openmp",
                "blas", "threadpools", "env", "warnings", "openmp_runtimes", "load_average_start",
                "other_processes_cores"):
        assert key in m, key
    assert isinstance(m["cpu"], str) and m["cpu"]
    assert m["threads"] >= 1 and m["cores_available"] >= 1
    assert "OPENBLAS_CORETYPE" in m["env"] and "OPENBLAS_L2_SIZE" in m["env"]
    assert isinstance(m["warnings"], list)
    assert (m["torch"] is not None) == HAVE_TORCH
    assert doc["mismatches"] == []


def test_every_case_present(quick):
    doc, stdout = quick
    threads = doc["machine"]["threads"]
    n_threads = len({1, threads})
    kinds = [c["kind"] for c in doc["cases"]]
    expected = {"conv_fwd": 3, "conv_fwdbwd": 3, "pool_fwd": 1, "pool_bwd": 1,
                "train_step": 2 * n_threads + 1 + 7, "predict": 2 * n_threads + 1 + 7, "memory": 1}
    assert {k: kinds.count(k) for k in expected} == expected
    assert len(kinds) == sum(expected.values())
    names = [c["name"] for c in doc["cases"]]
    assert len(set(names)) == len(names)
    for name in names:
        assert name in stdout  # the printed table has a row per case
    model_threads = {c["threads"] for c in doc["cases"] if c["kind"] in ("train_step", "predict")}
    assert model_threads == {1, threads}
    assert sorted({c["shape"]["batch"] for c in doc["cases"] if c["kind"] == "predict"}) == [1, 8, 16, 64]
    assert sum(c["zoo"] for c in doc["cases"]) == 2 * 8  # 7 zoo networks + the DESIGN CNN
    # the footer needs torch's ratios: printed with torch, left out (not printed empty) without
    assert ("Zoo geometric mean vs torch" in stdout) == HAVE_TORCH


def test_results_consistent(quick):
    doc, _ = quick
    for case in doc["cases"]:
        assert isinstance(case["flops"], int) and case["flops"] > 0, case["name"]
        assert case["threads"] >= 1
        assert case["other_load"] is None or case["other_load"] >= 0
        # ONNX Runtime runs the predict cases only
        expected = set(BACKENDS) | ({"onnxruntime"} if case["kind"] == "predict" else set())
        assert set(case["results"]) == expected, case["name"]
        assert case["check"]["ok"], case["check"]
        for result in case["results"].values():
            if "skipped" in result:
                assert isinstance(result["skipped"], str) and result["skipped"]
                continue
            _check_timing(result, case)
        cnn_result = case["results"]["cnn"]
        if HAVE_MODEL or case["kind"] not in ("train_step", "predict", "memory"):
            assert "skipped" not in cnn_result, (case["name"], cnn_result)
        torch_result = case["results"]["torch"]
        assert ("skipped" not in torch_result) == HAVE_TORCH, (case["name"], torch_result)
        # compared before timing: with torch there, every kernel case checks cnn against it
        if HAVE_TORCH and "skipped" not in cnn_result and case["kind"] != "memory":
            assert "cnn-torch" in case["check"]["compared"], case["name"]

        basis = case["ratios"]["basis"]
        assert basis == ("peak_rss_bytes" if case["kind"] == "memory" else "median_s")
        assert ("vs_onnxruntime" in case["ratios"]) == (case["kind"] == "predict"), case["name"]
        for backend, key in (("torch", "vs_torch"), ("reference", "vs_reference"),
                             ("onnxruntime", "vs_onnxruntime")):
            if backend not in case["results"]:
                continue
            other = case["results"][backend]
            ratio = case["ratios"][key]
            if basis in other and basis in cnn_result:
                assert _close(ratio, other[basis] / cnn_result[basis]), (case["name"], key)
            else:
                assert ratio is None, (case["name"], key)


def test_onnxruntime_beside_cnn_in_predict(quick):
    doc, stdout = quick
    predict = [c for c in doc["cases"] if c["kind"] == "predict"]
    assert predict
    assert doc["machine"]["onnxruntime"] is None or HAVE_ORT
    for case in predict:
        ort = case["results"]["onnxruntime"]
        if "cnn's ONNX exporter" in ort.get("skipped", ""):
            assert case["zoo"] and "BatchNormalization" in ort["skipped"], (case["name"], ort)
            continue  # the exporter's layers: the seed's
        assert ("skipped" not in ort) == HAVE_ORT, (case["name"], ort)
        if HAVE_ORT:
            # the same weights: ONNX Runtime's probabilities were checked against cnn's
            assert "cnn-onnxruntime" in case["check"]["compared"], case["name"]
            assert case["ratios"]["vs_onnxruntime"] is not None
    assert "vs ORT" in stdout
    if HAVE_ORT:
        assert "ORT" in stdout.split("Thread scaling")[0]


def test_memory_case(quick):
    doc, _ = quick
    (case,) = [c for c in doc["cases"] if c["kind"] == "memory"]
    assert "skipped" in case["results"]["reference"]
    for backend in ("cnn", "torch"):
        r = case["results"][backend]
        if "skipped" in r:
            continue
        assert r["reps"] == case["shape"]["steps"]
        assert 0 < r["import_rss_bytes"] <= r["peak_rss_bytes"]


def test_reference_timed_somewhere(quick):
    doc, _ = quick
    timed = [c["name"] for c in doc["cases"] if "median_s" in c["results"]["reference"]]
    assert any(name.startswith("conv3x3 fwd") for name in timed), timed
    assert any(name.startswith("maxpool2x2") for name in timed), timed


def test_without_torch(tmp_path):
    doc, stdout = _run_bench(tmp_path, "--no-torch", "--cases", r"^conv3x3 fwd 16x1x|^maxpool2x2 fwd")
    assert [c["kind"] for c in doc["cases"]] == ["conv_fwd", "pool_fwd"]
    assert doc["machine"]["torch"] is None
    for case in doc["cases"]:
        assert "skipped" in case["results"]["torch"]
        assert case["ratios"]["vs_torch"] is None
        assert "median_s" in case["results"]["cnn"] and "median_s" in case["results"]["reference"]
        assert case["check"]["compared"] == ["cnn-reference"]
    assert "skipped" in stdout


def test_without_onnxruntime(tmp_path):
    doc, _ = _run_bench(tmp_path, "--no-onnxruntime", "--cases", r"predict B16 T1$")
    assert [c["kind"] for c in doc["cases"]] == ["predict"]
    assert doc["machine"]["onnxruntime"] is None
    case = doc["cases"][0]
    assert case["results"]["onnxruntime"] == {"skipped": "onnxruntime disabled with --no-onnxruntime"}
    assert case["ratios"]["vs_onnxruntime"] is None
    assert "cnn-onnxruntime" not in case["check"]["compared"]
    assert "median_s" in case["results"]["cnn"]


def test_targets_block_and_mode(quick):
    doc, stdout = quick
    assert doc["mode"] == "interleaved"  # the default of --quick
    assert not any("alone" in c for c in doc["cases"])
    kinds = {t["target"] for t in doc["targets"]}
    assert {"zoo_vs_torch", "zoo_geomean", "cnn_predict_vs_ort", "cnn_train_vs_torch",
            "peak_memory"} == kinds
    for t in doc["targets"]:
        assert t["held"] is None or t["held"] == (t["figure"] >= t["minimum"]), t
        assert t["source"] in (None, "interleaved", "memory case", "mixed"), t
    assert "Targets (issue 15" in stdout
    assert "cnn kernel clone that ran:" in stdout


def test_alone_mode_end_to_end(tmp_path):
    doc, stdout = _run_bench(tmp_path, "--mode", "alone", "--cases", r"^CNN batch 1 latency")
    assert doc["mode"] == "alone" and doc["config"]["alone_rounds"] == 1
    (case,) = doc["cases"]
    assert case["results"]["cnn"] == {"skipped": "not timed interleaved (--mode alone)"}
    assert case["check"]["ok"]
    assert ("cnn-torch" in case["check"]["compared"]) == HAVE_TORCH
    a = case["alone"]
    assert a["rounds"] == 1 and a["check"]["ok"], a["check"]
    assert "median_s" in a["results"]["cnn"]
    assert ("median_s" in a["results"]["torch"]) == HAVE_TORCH
    assert ("median_s" in a["results"]["onnxruntime"]) == HAVE_ORT
    if HAVE_TORCH:
        r = a["results"]
        assert _close(a["ratios"]["vs_torch"], r["torch"]["median_s"] / r["cnn"]["median_s"])
    latency = [t for t in doc["targets"] if t["target"] == "cnn_predict_vs_ort"]
    assert len(latency) == 1 and latency[0]["source"] == ("alone" if HAVE_ORT else None)
    assert "Each library alone in its process: peak RSS" in stdout
