"""``cnn.show_config()``: how this copy of cnn was built and what it runs on."""
import platform
import sys

from cnn import _threads
from cnn._ext import _conv, _openmp
from cnn._version import __version__


def _build_info():
    try:
        from cnn._ext import _build_info
    except ImportError:  # built by a tool that skipped setup.py's build_ext
        return {"compile_args": None, "link_args": None, "compiler": None}
    return {"compile_args": list(_build_info.COMPILE_ARGS), "link_args": list(_build_info.LINK_ARGS),
            "compiler": _build_info.COMPILER}


def show_config(print_out=False):
    """Return (and optionally print) a dict describing this build and runtime.

    Keys: ``version``, ``openmp`` (kernels compiled with OpenMP), ``num_threads`` (the
    knob's value), ``blas`` (the BLAS libraries loaded, as threadpoolctl sees them:
    SciPy's is the one the kernels call), ``compiler_flags``, ``link_flags``, ``compiler``,
    ``python``, ``numpy``, ``scipy``, ``platform``, ``flush_to_zero`` (True would mean a
    library set FTZ/DAZ, breaking subnormals), ``kernel_isa`` (the kernel clone chosen at
    load time: ``"avx512f"``, ``"avx2"`` or ``"default"``, the best the CPU has in that
    order, capped by the environment variable ``CNN_KERNEL_ISA``).
    """
    import numpy
    import scipy

    info = _build_info()
    config = {
        "version": __version__,
        "openmp": _openmp.openmp_enabled(),
        "num_threads": _threads.get_num_threads(),
        "blas": [{k: lib.get(k) for k in ("internal_api", "version", "num_threads",
                                          "threading_layer", "architecture", "filepath")}
                 for lib in _threads.blas_info()],
        "compiler_flags": info["compile_args"],
        "link_flags": info["link_args"],
        "compiler": info["compiler"],
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
        "flush_to_zero": sys.float_info.min / 2 == 0.0,
        "kernel_isa": _conv.kernel_isa(),
    }
    if print_out:
        print(format_config(config))
    return config


def format_config(config):
    """A readable multi-line text of :func:`show_config`'s dict."""
    lines = []
    for key, value in config.items():
        if key == "blas":
            lines.append("blas:")
            for lib in value:
                lines.append(f"  - {lib['internal_api']} {lib['version']} ({lib['threading_layer']}, "
                             f"{lib['num_threads']} threads, {lib['architecture']}): {lib['filepath']}")
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)
