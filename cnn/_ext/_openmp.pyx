"""What the OpenMP runtime says: compiled in or not, and its default thread count."""


def openmp_enabled():
    """True when the kernels were compiled with OpenMP (``prange`` runs threads)."""
    return bool(CNN_OPENMP_PARALLELISM_ENABLED)


def omp_max_threads():
    """``omp_get_max_threads()``: OpenMP's default team size (1 without OpenMP)."""
    return omp_get_max_threads()
