"""One thread knob for cnn's OpenMP kernels and the BLAS libraries around them.

cnn's convolution kernels parallelise over the batch with OpenMP and call SciPy's
BLAS (``scipy.linalg.cython_blas``) from inside those parallel loops. A threaded BLAS
there would nest a second pool inside the first and oversubscribe the cores, so the
knob keeps *that* BLAS at one thread, while NumPy's BLAS (used by Dense layers, where
one large GEMM per layer runs outside any parallel loop) gets the full count.
When NumPy and SciPy share one BLAS library, it is kept at one thread.

Processes: forking after cnn's OpenMP kernels ran can hang the child with GNU libgomp
(GCC bug 60035): the child inherits a thread pool whose threads do not exist in it. Use
``multiprocessing.get_context("spawn")`` or ``"forkserver"``; cnn's tests and
``python -m cnn.bench`` never fork after kernels ran.
"""
import os

from cnn._ext import _openmp

_state = {"num_threads": None, "controller": None}


def _available_cores():
    """Cores this process may run on: the affinity mask, else the CPU count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_num_threads():
    """``OMP_NUM_THREADS`` when set to a positive int, else the cores this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return _available_cores()


def _effective(n):
    """scikit-learn's semantics: None -> default, n < 0 counts back from the cores (-1 = all)."""
    if n is None:
        n = default_num_threads()
    elif isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"num_threads must be an int or None, got {type(n).__name__}")
    n = int(n)
    if n == 0:
        raise ValueError("num_threads must be a positive int, a negative int (-1 = all cores) "
                         "or None, got 0")
    if n < 0:
        n = max(1, _available_cores() + 1 + n)
    if not _openmp.openmp_enabled():
        n = 1
    return n


def _blas_libraries():
    """threadpoolctl's controller, built once (building one scans every loaded library)."""
    if _state["controller"] is None:
        import scipy.linalg  # noqa: F401  (loads SciPy's BLAS so the controller sees it)
        from threadpoolctl import ThreadpoolController
        _state["controller"] = ThreadpoolController()
    return _state["controller"]


def _scipy_blas_paths(controller):
    """File paths of the BLAS libraries that live in SciPy's package (the one cython_blas calls)."""
    import scipy
    root = os.path.dirname(os.path.dirname(os.path.abspath(scipy.__file__)))
    scipy_dirs = (os.path.join(root, "scipy"), os.path.join(root, "scipy.libs"))
    return {lib.filepath for lib in controller.lib_controllers
            if lib.user_api == "blas" and os.path.abspath(lib.filepath).startswith(scipy_dirs)}


def set_num_threads(n=None):
    """Set the number of threads cnn uses, for OpenMP and BLAS together.

    Parameters
    ----------
    n : int or None
        Positive: that many threads. Negative: counts back from the available cores
        (-1 = all of them). None: ``OMP_NUM_THREADS`` if set, else the cores this process
        may use (its affinity mask). Without OpenMP the kernels always run on one thread.

    Returns
    -------
    int
        The thread count now in force.

    Notes
    -----
    SciPy's BLAS (called from inside cnn's parallel loops) is limited to one thread;
    NumPy's BLAS gets ``n``. Both limits are process-wide, as BLAS thread counts are.
    """
    n = _effective(n)
    controller = _blas_libraries()
    inner = _scipy_blas_paths(controller)
    for lib in controller.lib_controllers:
        if lib.user_api != "blas":
            continue
        lib.set_num_threads(1 if lib.filepath in inner else n)
    _state["num_threads"] = n
    return n


def get_num_threads():
    """The thread count cnn's kernels use (set on first use from :func:`default_num_threads`)."""
    n = _state["num_threads"]
    if n is None:
        n = set_num_threads(None)
    return n


def blas_info():
    """threadpoolctl's view of the BLAS libraries loaded in this process (a list of dicts)."""
    return [info for info in _blas_libraries().info() if info.get("user_api") == "blas"]
