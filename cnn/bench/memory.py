"""The memory case: peak RSS of a fixed training run, each library in a fresh interpreter
(never a fork of the bench, whose OpenMP runtime has run: libgomp does not survive a fork).

The children are the probe scripts :mod:`cnn.bench.memory_cnn` and
:mod:`cnn.bench.memory_torch`; each prints one JSON line ``{"import_rss", "peak_rss",
"times"}``.
"""

import json
import os
import subprocess
import sys

import cnn

from . import nets
from .common import Skip

__all__ = ["run_memory_child", "child_env"]

_HERE = os.path.dirname(os.path.abspath(__file__))
# The folder cnn was imported from: first on the children's path, and their working directory
# (``python -m`` puts the working directory first on sys.path: a ``cnn`` folder there would
# otherwise be imported instead).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(cnn.__file__)))


def child_env():
    """The parent's environment, with the folder cnn was imported from first on the path."""
    env = dict(os.environ)
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([_ROOT] + rest)
    return env


def probe_command(backend, batch, steps, threads, model="cnn"):
    """The command line of the memory probe of ``backend`` ("cnn" or "torch").

    cnn's probe runs as ``python -m cnn.bench.memory_cnn``. torch's runs by its file path, so
    that cnn is never imported in it (``-m cnn.bench.memory_torch`` would import the package
    ``cnn`` first, and its memory would count as torch's); it gets the network as a layer spec
    of :func:`cnn.bench.nets.layer_spec` without weights.
    """
    common = ["--batch", str(batch), "--steps", str(steps), "--threads", str(threads)]
    if backend == "cnn":
        return [sys.executable, "-m", "cnn.bench.memory_cnn", "--model", model] + common
    spec = nets.layer_spec(nets.build(model), weights=False)
    return [sys.executable, os.path.join(_HERE, "memory_torch.py"), "--spec", json.dumps(spec)] + common


def run_memory_child(backend, batch, steps, threads, timeout=600, model="cnn"):
    """Peak RSS (bytes) after imports and at the end, and the step times, of ``steps`` training
    steps at ``batch`` in a fresh interpreter: ``{"peak_rss_bytes", "import_rss_bytes",
    "times"}``. :class:`Skip` when the child fails."""
    proc = subprocess.run(probe_command(backend, batch, steps, threads, model), capture_output=True,
                          text=True, env=child_env(), cwd=_ROOT, timeout=timeout)
    if proc.returncode != 0:
        raise Skip(f"child failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    data["import_rss_bytes"] = data.pop("import_rss")
    data["peak_rss_bytes"] = data.pop("peak_rss")
    return data
