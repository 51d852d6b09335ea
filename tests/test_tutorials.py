"""The tutorials (docs/tutorials/NN_*.py) run as written: each script in a fresh interpreter,
with a temporary folder as cwd and this test run's environment; the data-parallel one under
``mpiexec -n 2`` (skipped only without mpi4py or mpiexec); the ONNX one skips without the
onnx extra, like tests/test_onnx.py. Each script asserts what it teaches (accuracy,
bit-identical reloads, the audit catching the wrong backward, ONNX Runtime agreeing, the
bench's check), so a script that exits 0 and reaches its last line has passed its own checks.
"""

import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest
from conftest import MPI_ENV, child_env, find_mpiexec

from cnn import distributed

TUTORIALS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "tutorials"
SCRIPTS = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))
# what each script prints last: reaching it means every assertion before it held
LAST_LINES = {
    "01_training": "the loaded model predicts bit-identically",
    "02_custom_layer": "the loaded model predicts bit-identically",
    "03_residual_graph": "the loaded graph predicts bit-identically",
    "04_data_parallel": "rank 0 saved tutorial-dp.npz",
    "05_onnx": "cnn.onnx.load -> Sequential",
    "06_benchmark": "Read the ratios, not the times",
}
# optional extras a script imports: without them its test skips, as tests/test_onnx.py does
# (CI installs them, so it runs there)
EXTRAS = {"05_onnx": ("onnx", "onnxruntime")}
TIMEOUT = 300  # seconds per script; they take 2-25 s on 2 idle cores


def _run(command, cwd, env):
    proc = subprocess.run(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)
    return proc, f"$ {' '.join(command)}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"


def test_the_six_tutorials_are_here_and_each_has_a_page():
    assert [s.stem for s in SCRIPTS] == sorted(LAST_LINES)
    pages = {p.name: p.read_text() for p in TUTORIALS.glob("*.rst")}
    for script in SCRIPTS:
        including = [name for name, text in pages.items()
                     if re.search(rf"\.\. literalinclude:: {re.escape(script.name)}\b", text)]
        assert including, f"no page in docs/tutorials literalincludes {script.name}"


@pytest.mark.parametrize("script", [s for s in SCRIPTS if "data_parallel" not in s.stem],
                         ids=lambda s: s.stem)
def test_tutorial_runs(script, tmp_path):
    missing = [m for m in EXTRAS.get(script.stem, ()) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pip install 'cnn[onnx]')")
    proc, log = _run([sys.executable, str(script)], tmp_path, child_env())
    assert proc.returncode == 0, log
    assert LAST_LINES[script.stem] in proc.stdout, log


@pytest.mark.parametrize("script", [s for s in SCRIPTS if "data_parallel" in s.stem],
                         ids=lambda s: s.stem)
def test_data_parallel_tutorial_runs_under_mpiexec(script, tmp_path):
    exe, why = find_mpiexec()
    if exe is None:
        pytest.skip(why)
    env = child_env(**MPI_ENV)
    for name in distributed._LAUNCH_VARS:  # pytest itself might run under a launcher
        env.pop(name, None)
    env.pop("OMP_NUM_THREADS", None)  # each rank takes its share of the cores
    proc, log = _run([exe, "-n", "2", sys.executable, str(script)], tmp_path, env)
    assert proc.returncode == 0, log
    assert "2 ranks" in proc.stdout and LAST_LINES[script.stem] in proc.stdout, log
    assert (tmp_path / "tutorial-dp.npz").is_file(), log
