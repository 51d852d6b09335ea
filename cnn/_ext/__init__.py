"""Compiled kernels (Cython + OpenMP). Private: use :mod:`cnn.functional`, which validates.

Importing this package loads the OpenMP runtime first, with the wait policy of
:data:`WAIT_POLICY` (see there).
"""
import os

#: How the OpenMP runtime (libgomp) that cnn's kernels load waits between parallel regions:
#: ``"passive"`` unless the environment sets ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` (then
#: those hold, and this is ``"environment"``), or the runtime was already loaded by another
#: library (``"already loaded"``: its settings hold). libgomp's own default spins for up to
#: 300,000 iterations before sleeping; on a host where other processes want the cores, a
#: waiting thread then burns the time slice its partner needs, and 2-thread calls ran 4-25x
#: slower (bench/RESULTS.md). The runtime reads its environment once, when it is loaded, so
#: the variable is set for that moment only and removed again: child processes inherit
#: nothing.
WAIT_POLICY = "environment"


def _load_openmp():
    global WAIT_POLICY
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        from cnn._ext import _openmp  # noqa: F401
        return
    before = _mapped_openmp()
    os.environ["OMP_WAIT_POLICY"] = "passive"
    try:
        from cnn._ext import _openmp  # noqa: F401  (loads libgomp, which reads it now)
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)
    fresh = _mapped_openmp() - before
    WAIT_POLICY = "passive" if fresh or before is None else "already loaded"


def _mapped_openmp():
    """Paths of the libgomp copies mapped into this process (Linux), or None where unknown."""
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            return {line.split()[-1] for line in maps if "libgomp" in line}
    except OSError:
        return None


_load_openmp()
