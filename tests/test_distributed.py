"""cnn.distributed: N MPI ranks make one process's steps, bit-identically on every rank.

The MPI tests launch ``mpiexec -n 2`` / ``-n 4`` (4 ranks oversubscribe a 2-core machine) on
``tests/mpi/worker.py`` as subprocesses, with stdin closed and a timeout; the one-process
oracle runs here, from ``tests/mpi/cases.py``. Without mpi4py, an MPI library or ``mpiexec``
they skip with the reason. The other tests need no MPI.
"""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from conftest import MPI_ENV, child_env, find_mpiexec

from cnn import distributed
from cnn.callbacks import ModelCheckpoint
from cnn.serialization import load_model

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "mpi", "worker.py")
sys.path.insert(0, os.path.join(HERE, "mpi"))
import cases  # noqa: E402 (tests/mpi is put on sys.path just above)

RTOL = {"float64": 1e-12, "float32": 1e-6}


@pytest.fixture(scope="module")
def mpiexec():
    exe, why = find_mpiexec()
    if exe is None:
        pytest.skip(why)
    return exe


def launch(mpiexec, n, args, timeout=90, **env):
    """``mpiexec -n n python args...``; returns the CompletedProcess (never hangs the suite)."""
    child = child_env(**MPI_ENV, **env)
    for name in distributed._LAUNCH_VARS:  # pytest itself might run under a launcher
        child.pop(name, None)
    child.pop("OMP_NUM_THREADS", None)
    return subprocess.run([mpiexec, "-n", str(n), sys.executable, *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, env=child, cwd=HERE,
                          check=False)


def run_worker(mpiexec, n, scenario, out, timeout=90):
    proc = launch(mpiexec, n, [WORKER, scenario, str(out)], timeout=timeout)
    assert proc.returncode == 0, f"mpiexec -n {n} {scenario} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def flat(net):
    return np.concatenate([p.ravel() for p in net.params])


def assert_rel(actual, expected, rtol):
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


# -- N ranks against one process ------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 4])
def test_n_ranks_make_one_process_steps(mpiexec, tmp_path, n):
    run_worker(mpiexec, n, "equivalence", tmp_path)
    ranks = [np.load(tmp_path / f"eq-{r}.npz") for r in range(n)]
    for r in range(1, n):  # every rank ends with the same bits (both summing algorithms)
        assert ranks[r].files == ranks[0].files
        for key in ranks[0].files:
            if not key.endswith("-local"):  # each rank's own slice of a batch
                assert np.array_equal(ranks[r][key], ranks[0][key]), f"rank {r} differs from rank 0 in {key}"
    got = ranks[0]
    assert int(got["world_size"]) == n
    assert int(got["threads"]) == max(1, len(os.sched_getaffinity(0)) // n)
    for dtype in ("float64", "float32"):
        for name, rows, batch, drop_last in cases.CASES:
            net = cases.model(dtype)
            start = flat(net).copy()
            history = cases.fit(net, rows, batch, drop_last)
            want = flat(net)
            for algorithm in ("reduce_scatter", "allreduce"):
                key = f"{algorithm}-{dtype}-{name}"
                assert got[key].dtype == np.dtype(dtype)
                assert not np.allclose(got[key], start)  # it trained
                assert_rel(got[key], want, RTOL[dtype])
                assert_rel(got[key + "-loss"], history.history["loss"], RTOL[dtype])
                assert_rel(got[key + "-val_loss"], history.history["val_loss"], RTOL[dtype])
    check_shards(ranks, n)
    # with dropout and augmentation: reproducible, and each rank drew its own numbers
    assert np.array_equal(got["random-0"], got["random-1"])
    assert np.array_equal(got["random-0-draws-local"], got["random-1-draws-local"])
    firsts = {float(rk["random-0-draws-local"][0]) for rk in ranks}
    assert len(firsts) == n


def check_shards(ranks, n):
    """Every global batch the trainer handed out is split over the ranks, in rank order, in
    ``np.array_split`` sizes (so each row is trained on exactly once)."""
    for name, rows, batch, _drop_last in cases.CASES:
        calls = sorted({int(k.split("-")[2]) for k in ranks[0].files if k.startswith(f"shard-{name}-")})
        assert len(calls) > 2 * (rows // batch)  # the buffer sizing, validation, every step
        empty = 0
        for j in calls:
            whole = ranks[0][f"shard-{name}-{j}-global"]
            parts = [rk[f"shard-{name}-{j}-local"] for rk in ranks]
            assert [p.size for p in parts] == [len(s) for s in np.array_split(whole, n)]
            assert np.array_equal(np.concatenate(parts), whole)
            empty += sum(p.size == 0 for p in parts)
        if batch < n:
            assert empty > 0  # the case is there to exercise empty shards


# -- resume -----------------------------------------------------------------------------------


def test_resume_distributed_is_exact_and_from_a_single_process_checkpoint(mpiexec, tmp_path):
    _, rows, batch, drop_last = cases.CASES[0]
    single = cases.model("float64")
    cases.fit(single, rows, batch, drop_last, epochs=2)
    single.save(str(tmp_path / "single.npz"))
    cases.fit(single, rows, batch, drop_last, epochs=3, initial_epoch=2)
    n = 4
    run_worker(mpiexec, n, "resume", tmp_path)
    ranks = [np.load(tmp_path / f"resume-{r}.npz") for r in range(n)]
    for r in range(1, n):
        for key in ranks[0].files:
            assert np.array_equal(ranks[r][key], ranks[0][key]), f"rank {r} differs in {key}"
    got = ranks[0]
    assert np.array_equal(got["resumed"], got["straight"])  # bit-exact resume
    assert_rel(got["straight"], flat(single), RTOL["float64"])
    assert_rel(got["from_single"], flat(single), RTOL["float64"])
    assert load_model(str(tmp_path / "dist-2.npz")).train_state["epoch"] == 2


# -- faults -----------------------------------------------------------------------------------


def test_a_rank_that_raises_mid_epoch_ends_the_job(mpiexec, tmp_path):
    proc = launch(mpiexec, 2, [WORKER, "fault", str(tmp_path)], timeout=30)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "injected fault on rank 1" in output
    assert "rank 1 of 2 failed" in output
    assert not list(tmp_path.glob("fault-survived-*"))
    saved = load_model(str(tmp_path / "fault.npz"))  # written at the end of epoch 1
    assert saved.train_state["epoch"] == 1
    assert saved.optimizer.iterations == 4  # ceil(23 / 6) steps


def test_an_uncaught_error_outside_fit_ends_the_job(mpiexec, tmp_path):
    proc = launch(mpiexec, 2, [WORKER, "outside", str(tmp_path)], timeout=30)
    assert proc.returncode != 0
    assert "injected error outside fit on rank 1" in proc.stdout + proc.stderr


def test_ranks_drawing_different_batches_fail_at_the_first_step(mpiexec, tmp_path):
    proc = launch(mpiexec, 2, [WORKER, "desync", str(tmp_path)], timeout=30)
    assert proc.returncode != 0
    assert "different global batches" in proc.stdout + proc.stderr


# -- the command line -------------------------------------------------------------------------


def test_cli_under_mpiexec(mpiexec, tmp_path):
    report, ckpt = tmp_path / "run.json", tmp_path / "run.npz"
    proc = launch(mpiexec, 2, ["-m", "cnn.train", "--model", "seed-mlp", "--limit", "256",
                               "--epochs", "1", "--verbose", "2", "--json", str(report),
                               "--save", str(ckpt)], timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "distributed: world size 2 (MPI)" in proc.stdout
    assert proc.stdout.count("test accuracy:") == 1  # rank 0 only
    data = json.loads(report.read_text())
    assert data["world_size"] == 2
    assert len(data["history"]["loss"]) == 1
    assert load_model(str(ckpt)).train_state["epoch"] == 1


# -- without MPI ------------------------------------------------------------------------------


def test_the_single_process_path_never_imports_mpi(tmp_path):
    code = ("import sys, cnn.distributed, cnn.train\n"
            "assert not cnn.distributed.launched_by_mpi()\n"
            "status = cnn.train.main(['--model', 'seed-mlp', '--limit', '64', '--epochs', '1', "
            "'--verbose', '0', '--json', sys.argv[1]])\n"
            "assert status == 0, status\n"
            "assert 'mpi4py.MPI' not in sys.modules, 'mpi4py.MPI was imported'\n")
    env = child_env()
    for name in distributed._LAUNCH_VARS:
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.json")], capture_output=True,
                          text=True, timeout=120, env=env, stdin=subprocess.DEVNULL, cwd=str(tmp_path),
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["world_size"] == 1


@pytest.mark.parametrize("var", ["PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"])
def test_launch_detection_reads_the_launchers_variables(monkeypatch, var):
    for name in distributed._LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched_by_mpi()
    monkeypatch.setenv(var, "0")
    assert distributed.launched_by_mpi()


def test_checkpoints_are_written_by_rank_0_only(tmp_path):
    net = cases.model("float64")
    for rank in (1, 0):
        cb = ModelCheckpoint(str(tmp_path / f"r{rank}.npz"))
        cb.set_model(net)
        cb.set_params({"rank": rank, "world_size": 2})
        cb.on_epoch_end(0, {"loss": 1.0})
        assert os.path.exists(tmp_path / f"r{rank}.npz") == (rank == 0)


def test_no_mpi_library_is_a_clear_error(monkeypatch):
    fake = types.ModuleType("mpi4py")

    def missing(name):
        raise RuntimeError("cannot load MPI library")

    fake.__getattr__ = missing
    monkeypatch.setitem(sys.modules, "mpi4py", fake)
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    with pytest.raises(RuntimeError, match="no MPI library.*pip install mpich"):
        distributed.rank()
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"pip install 'cnn\[mpi\]'"):
        distributed.size()


def test_bad_arguments_name_what_they_got():
    with pytest.raises(ValueError, match="algorithm must be one of .* got 'ring'"):
        distributed.DataParallel(algorithm="ring")
    with pytest.raises(ValueError, match="threads must be None or an int >= 1, got 0"):
        distributed.init(threads=0)
    with pytest.raises(TypeError, match="threads must be None or an int >= 1, got 2.0 of type float"):
        distributed.init(threads=2.0)


# -- the bench --------------------------------------------------------------------------------


def test_paper_model_by_hand():
    from cnn.bench.distributed import paper_model
    m = paper_model(params=995, ranks=4, bandwidth_gbit=10, seconds_per_image=1e-4, latency_s=0.0)
    sent = 2 * 3 / 4 * 4 * 995 + 3 * 40  # 2 (N-1)/N of the float32 gradients + the gathered tail
    assert m["bytes_per_step"] == pytest.approx(sent)
    assert m["comm_seconds"] == pytest.approx(sent * 8 / 1e10)
    # compute (B/4) 1e-4 s over compute + comm is 0.9 exactly at the reported batch
    b = m["batch_for_efficiency"]
    compute = b / 4 * 1e-4
    assert compute / (compute + m["comm_seconds"]) == pytest.approx(0.9)
    assert paper_model(995, 1, 10, 1e-4)["bytes_per_step"] == 0


def test_bench_smoke(mpiexec, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "cnn.bench.distributed", "--steps", "1", "--batch", "8",
                           "--json", str(out)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120, env=child_env(), cwd=str(tmp_path), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "scaling efficiency, 2 ranks x 1 thread vs 1 rank x 1 thread" in proc.stdout
    report = json.loads(out.read_text())
    assert [(r["ranks"], r["threads"]) for r in report["rows"][:2]] == [(1, 1), (2, 1)]
    assert [r["ranks"] for r in report["rows"]] == [1, 2, 4, 1]
    assert all(r["params"] == 421_642 for r in report["rows"])
