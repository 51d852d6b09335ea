"""Runs the hypothesis fuzz cases (tests/fuzz_cases.py) in a child ``python -m pytest``.

A kernel that crashes (segfault, abort) on some drawn argument would take the whole test
run down with it if it ran here; in a child it is one failed test that says what happened.
"""

import pathlib
import re
import signal
import subprocess
import sys

from conftest import child_env

HERE = pathlib.Path(__file__).resolve().parent


def run_pytest_child(path, tmp_path, timeout=600, **env):
    return subprocess.run([sys.executable, "-m", "pytest", str(path), "-q", "-p", "no:cacheprovider",
                           "--hypothesis-show-statistics"],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env=child_env(**env))


def describe(proc):
    if proc.returncode < 0:
        how = f"the child CRASHED with signal {signal.Signals(-proc.returncode).name}"
    else:
        how = f"the child exited with status {proc.returncode}"
    return f"{how}\n--- stdout (tail) ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-3000:]}"


def test_fuzz_functional_and_layers(tmp_path):
    proc = run_pytest_child(HERE / "fuzz_cases.py", tmp_path, CNN_FUZZ_EXAMPLES="150")
    assert proc.returncode == 0, describe(proc)
    assert re.search(r"\b7 passed\b", proc.stdout), describe(proc)
    # every fuzz test drew both kinds of arguments
    stats = proc.stdout.split("Hypothesis Statistics")[-1]
    for name in ("test_conv2d", "test_conv2d_backward", "test_maxpool2d_and_backward", "test_linear_and_backward",
                 "test_layers_build_forward_backward", "test_sequential_stacks_chain_or_fail_clearly"):
        block = stats.split(f"::{name}:")[1].split("::")[0]
        assert "valid" in block.replace("invalid", "") and "invalid" in block, (name, block)


CRASHER = """
import os

def test_a_kernel_that_crashes():
    os.abort()
"""


def test_a_crash_in_the_child_fails_here_instead_of_killing_the_run(tmp_path):
    path = tmp_path / "crash_cases.py"
    path.write_text(CRASHER)
    proc = run_pytest_child(path, tmp_path, timeout=120)
    assert proc.returncode == -signal.SIGABRT
    assert "CRASHED with signal SIGABRT" in describe(proc)
