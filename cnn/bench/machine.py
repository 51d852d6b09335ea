"""The facts about the machine that decide how fast the cases run (CPU, cores, load, thread
pools, versions, the SGEMM ceiling), the load other processes put on it, and warnings."""

import os
import platform
import subprocess
import sys
import time

import numpy as np

import cnn

from . import data

__all__ = ["machine_facts", "sgemm_rate", "cpu_snapshot", "other_load", "wait_for_idle", "git_commit"]


def _cpu_info():
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    if model is None:
        model = platform.processor() or platform.machine()
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512cd",
                        "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    return model, simd


def _cgroup_quota():
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        return None if quota == "max" else round(int(quota) / int(period), 2)
    except (OSError, ValueError):
        return None


def git_commit():
    """``(short HEAD commit, working tree modified)`` of the tree cnn was imported from, or
    ``(None, None)`` outside a git checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(cnn.__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None, None
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def sgemm_rate(threads, size=1024, seconds=0.3):
    """The machine's float32 GEMM rate (GFLOP/s, best repetition) through NumPy's BLAS at
    ``threads`` threads: the ceiling the convolutions (GEMMs after im2col) are measured against."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    c = np.empty((size, size), dtype=np.float32)
    cnn.set_num_threads(threads)  # NumPy's BLAS gets this count
    for _ in range(2):
        np.matmul(a, b, out=c)
    samples, start = [], time.perf_counter()
    while len(samples) < 5 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        samples.append(time.perf_counter() - t0)
    return 2.0 * size ** 3 / min(samples) / 1e9  # a ceiling: the best repetition


def cpu_snapshot():
    """``(busy CPU seconds of the whole machine, CPU seconds of this process and its waited-for
    children, wall time)``; busy is None where ``/proc/stat`` is missing."""
    busy = None
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
        if fields[0] == "cpu":
            v = [int(f) for f in fields[1:9]]  # user nice system idle iowait irq softirq steal
            busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    t = os.times()
    return busy, t.user + t.system + t.children_user + t.children_system, time.perf_counter()


def other_load(a, b):
    """Average number of cores that *other* processes kept busy between two snapshots."""
    if a[0] is None or b[0] is None or b[2] <= a[2]:
        return None
    return max(0.0, ((b[0] - a[0]) - (b[1] - a[1])) / (b[2] - a[2]))


def wait_for_idle(max_wait, threshold=0.15, window=1.0):
    """Wait (up to ``max_wait`` s) until other processes use fewer than ``threshold`` cores over
    a ``window``. Returns the seconds waited (0 when /proc/stat is unavailable)."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait:
        a = cpu_snapshot()
        time.sleep(window)
        load = other_load(a, cpu_snapshot())
        if load is None or load < threshold:
            break
    return time.perf_counter() - start


def machine_facts(threads, torch, torch_reason, load_start, others=None, sgemm=None, commit=None):
    """Everything that decides how fast the cases run, and warnings about it."""
    import scipy
    import threadpoolctl
    model, simd = _cpu_info()
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    config = cnn.show_config()
    pools = threadpoolctl.threadpool_info()
    commit, dirty = commit or git_commit()
    env_keys = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_PROC_BIND",
                "KMP_DUPLICATE_LIB_OK")
    facts = {
        "cpu": model,
        "simd": simd,
        "cores_logical": os.cpu_count(),
        "cores_available": affinity,
        "cgroup_cpu_quota": _cgroup_quota(),
        "threads": threads,
        "load_average_start": load_start,
        "load_average_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "other_processes_cores": others,
        "sgemm_gflops": sgemm[1] if sgemm else None,
        "sgemm_size": sgemm[0] if sgemm else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "threadpoolctl": threadpoolctl.__version__,
        "torch": getattr(torch, "__version__", None),
        "torch_absent_reason": torch_reason,
        "cnn": config["version"],
        "cnn_path": os.path.dirname(os.path.abspath(cnn.__file__)),
        "git_commit": commit,
        "git_dirty": dirty,
        "openmp": config["openmp"],
        "blas": config["blas"],
        "compiler_flags": config.get("compiler_flags"),
        "flush_to_zero": config.get("flush_to_zero"),
        # which clone of the hand-vectorised kernels this build dispatches to ("avx512f",
        # "avx2", "default"); None: the build does not report it
        "kernel_isa": config.get("kernel_isa"),
        "threadpools": [{k: p.get(k) for k in ("user_api", "internal_api", "version", "num_threads",
                                                "threading_layer", "architecture", "filepath")}
                        for p in pools],
        "env": {k: os.environ.get(k) for k in env_keys},
        "data": data.source(),
    }
    if torch is not None:
        try:
            facts["torch_parallel"] = [line.strip() for line in torch.__config__.parallel_info().splitlines()
                                       if "backend" in line or "MKL" in line.upper() or "OpenMP" in line][:6]
            facts["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available())
        except Exception:  # pragma: no cover - informational only
            pass
    warnings = []
    for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if os.environ.get(key):
            warnings.append(f"{key}={os.environ[key]} is set: it changes OpenBLAS' kernels; "
                            f"benchmark figures should be taken with it unset "
                            f"(env -u {key} python -m cnn.bench)")
    omp = {os.path.realpath(p["filepath"]) for p in pools if p.get("user_api") == "openmp"}
    facts["openmp_runtimes"] = sorted(omp)
    if len(omp) > 1:
        warnings.append(f"{len(omp)} OpenMP runtimes are loaded ({', '.join(sorted(omp))}): their "
                        f"thread pools compete for the cores, and mixing them can give wrong results")
    if not config["openmp"]:
        warnings.append("cnn was built without OpenMP: its kernels run on one thread")
    if affinity and threads > affinity:
        warnings.append(f"--threads {threads} exceeds the {affinity} cores available: oversubscribed")
    if others is not None and others > 0.25:
        warnings.append(f"other processes kept {others:.2f} of the {affinity} cores busy on average "
                        f"while the cases ran (column 'others' per case): figures are perturbed, "
                        f"multi-threaded ones most; ratios less so (backends alternate in rounds)")
    elif others is None and load_start and load_start[0] > 0.5:
        warnings.append(f"the machine was busy when the bench started (load average {load_start[0]:.2f} "
                        f"on {affinity} cores): figures may be perturbed, ratios less so "
                        f"(backends alternate in rounds)")
    if config.get("flush_to_zero"):
        warnings.append("flush-to-zero is on in this process (a library set FTZ/DAZ)")
    facts["warnings"] = warnings
    return facts
