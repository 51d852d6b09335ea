"""Shared helpers for the kernel tests (conv, pool, reference).

The oracles here are independent of the code under test: convolution goes through
``scipy.signal.correlate2d`` / ``convolve2d`` in float64, max-pooling through an explicit
per-window loop, and padding amounts are recomputed from the written rules.
Test modules import them with ``from conftest import ...`` (pytest puts ``tests/`` on
``sys.path`` because it holds this conftest and no ``__init__.py``).
"""

import numpy as np
import pytest
from scipy.signal import convolve2d, correlate2d

DTYPES = (np.float32, np.float64)

# Relative tolerance of a kernel result against a float64 oracle computed from the same data.
RTOL = {np.float32: 1e-5, np.float64: 1e-10}


@pytest.fixture
def rng():
    """A seeded generator: every test sees the same data on every run."""
    return np.random.default_rng(20240601)


@pytest.fixture
def one_thread():
    """Run the test with cnn on one thread (finite differences make hundreds of tiny calls,
    for which thread start-up costs more than the work); restores the count afterwards."""
    import cnn

    old = cnn.get_num_threads()
    cnn.set_num_threads(1)
    try:
        yield
    finally:
        cnn.set_num_threads(old)


def assert_close(actual, expected, dtype, scale=None):
    """``actual`` has ``dtype`` and matches the float64 ``expected`` to ``RTOL[dtype]``.

    The absolute floor is ``RTOL * scale`` with ``scale`` the largest ``|expected|`` by
    default, so entries that cancel to near zero are judged against the size of the
    numbers that were summed, not against themselves.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.dtype == np.dtype(dtype), f"dtype {actual.dtype}, wanted {np.dtype(dtype)}"
    assert actual.shape == expected.shape, f"shape {actual.shape}, wanted {expected.shape}"
    rtol = RTOL[dtype]
    if scale is None:
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=rtol, atol=rtol * max(scale, 1e-30))


# ----------------------------------------------------------------------------- padding rules


def _tf_same(n, k, s):
    """TF/Keras "same" on one axis, found by search: the least total padding after which the
    output has ceil(n / s) positions; the smaller half first."""
    want = -(-n // s)
    p = next(p for p in range(10**6) if n + p >= k and (n + p - k) // s + 1 == want)
    return p // 2, p - p // 2


def pads_conv(padding, kh, kw, hw=None, stride=1):
    """(top, bottom, left, right) for a conv padding: "same" is TensorFlow/Keras' rule for
    the input size ``hw`` and ``stride`` (for stride 1: total k - 1, the seed's)."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        sh, sw = (stride, stride) if np.isscalar(stride) else stride
        h, w = hw if hw is not None else (1, 1)
        if hw is None:
            assert (sh, sw) == (1, 1), "'same' with a stride > 1 needs the input size"
        return _tf_same(h, kh, sh) + _tf_same(w, kw, sw)
    return _explicit(padding)


def pads_pool(padding, kh, kw, h, w, sh=None, sw=None):
    """(top, bottom, left, right) for a pool padding. "tile" = the least padding after which
    windows (stride defaults to the window) end exactly at the padded edge: NOTES 8's
    (k - H mod k) mod k at stride k. Found by search, not by formula."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "tile":
        ph = next(p for p in range(10**6) if h + p >= kh and (h + p - kh) % (sh or kh) == 0)
        pw = next(p for p in range(10**6) if w + p >= kw and (w + p - kw) % (sw or kw) == 0)
        return (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
    return _explicit(padding)


def _explicit(padding):
    if isinstance(padding, int):
        return (padding,) * 4
    if len(padding) == 2:
        return (padding[0], padding[0], padding[1], padding[1])
    return tuple(padding)


def pad_hw(x, pads, value=0.0):
    t, b, l, r = pads
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=value)


# ----------------------------------------------------------------------------- conv oracles


def scipy_conv2d(x, w, b, pads, stride):
    """Float64 forward: per (n, k), sum over c of correlate2d 'valid', then subsampled by stride."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    xp = pad_hw(x, pads)
    n, k = x.shape[0], w.shape[0]
    full = np.array(
        [[sum(correlate2d(xp[i, c], w[j, c], mode="valid") for c in range(x.shape[1]))
          for j in range(k)] for i in range(n)]
    )
    y = full[:, :, :: stride[0], :: stride[1]]
    if b is not None:
        y = y + np.asarray(b, np.float64)[None, :, None, None]
    return y


def scipy_conv2d_backward(dy, x, w, pads, stride):
    """Float64 (dx, dw, db): dy scattered back onto the stride-1 output grid, then
    dx_pad[n, c] = sum_k convolve2d(dy1[n, k], w[k, c], 'full') and
    dw[k, c] = sum_n correlate2d(x_pad[n, c], dy1[n, k], 'valid')."""
    dy, x, w = (np.asarray(a, np.float64) for a in (dy, x, w))
    t, bo, l, r = pads
    xp = pad_hw(x, pads)
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    dy1 = np.zeros((n, k, xp.shape[2] - kh + 1, xp.shape[3] - kw + 1))
    dy1[:, :, :: stride[0], :: stride[1]] = dy
    dxp = np.array(
        [[sum(convolve2d(dy1[i, j], w[j, ch], mode="full") for j in range(k))
          for ch in range(c)] for i in range(n)]
    )
    dw = np.array(
        [[sum(correlate2d(xp[i, ch], dy1[i, j], mode="valid") for i in range(n))
          for ch in range(c)] for j in range(k)]
    )
    return dxp[:, :, t : t + h, l : l + wd], dw, dy.sum(axis=(0, 2, 3))


# ----------------------------------------------------------------------------- pool oracle


def naive_maxpool(x, size, stride, pads):
    """Per-window loop: padded cells are -inf, np.argmax picks the first max (row-major)."""
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    kh, kw = size
    sh, sw = stride
    t, _, l, _ = pads
    xp = pad_hw(x, pads, value=-np.inf)
    ho, wo = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    y = np.empty((n, c, ho, wo))
    idx = np.empty((n, c, ho, wo), dtype=np.int64)
    for i in range(n):
        for ch in range(c):
            for a in range(ho):
                for bb in range(wo):
                    win = xp[i, ch, a * sh : a * sh + kh, bb * sw : bb * sw + kw]
                    m = int(np.argmax(win))
                    y[i, ch, a, bb] = win.flat[m]
                    idx[i, ch, a, bb] = (a * sh + m // kw - t) * w + (bb * sw + m % kw - l)
    return y, idx


def naive_maxpool_backward(dy, idx, x_shape):
    dx = np.zeros(x_shape)
    n, c, h, w = x_shape
    for i, ch, a, bb in np.ndindex(*dy.shape):
        dx[i, ch].flat[idx[i, ch, a, bb]] += dy[i, ch, a, bb]
    return dx


# ----------------------------------------------------------------------------- finite differences


def numerical_grad(f, x, eps=1e-6):
    """Central differences of the scalar ``f()`` with respect to every entry of ``x`` (in place)."""
    g = np.zeros_like(x, dtype=np.float64)
    for i in np.ndindex(*x.shape):
        old = x[i]
        x[i] = old + eps
        fp = f()
        x[i] = old - eps
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def numerical_grad_of(f, x, h=1e-6):
    """Central differences of the scalar ``f(x)`` at a float64 copy of ``x``, one entry at a time."""
    x = x.astype(np.float64, copy=True)
    return numerical_grad(lambda: f(x), x, eps=h)


def distinct_values(rng, shape, spacing=0.01):
    """Float64 array of the given shape whose entries differ pairwise by >= ``spacing``
    (random order, both signs): max-pool has no near-ties, so finite differences are exact."""
    n = int(np.prod(shape))
    return (rng.permutation(n) - n / 2).reshape(shape) * spacing


# ----------------------------------------------------------------------------- child processes


def child_env(**extra):
    """``os.environ`` for a child Python that must import the same ``cnn`` as this process.

    Children run with a cwd outside the source tree (which holds no compiled kernels when
    the package is installed with ``pip install .``); PYTHONPATH points them at the folder
    that holds the ``cnn`` imported here, whether installed or built in place.
    """
    import os

    import cnn
    root = os.path.dirname(os.path.dirname(os.path.abspath(cnn.__file__)))
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def run_under_clones(script, tmp_path, isas):
    """Run ``script`` (Python source that saves its arrays with ``np.savez(sys.argv[1], ...)``,
    an ``isa`` entry among them) in one child per kernel-clone cap of ``isas`` (CNN_KERNEL_ISA);
    returns ``{cap: {name: array}}``. A child that fails fails the test with its stderr."""
    import subprocess
    import sys

    runs = {}
    for isa in isas:
        path = tmp_path / f"{isa}.npz"
        out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                             text=True, env=child_env(CNN_KERNEL_ISA=isa), timeout=300,
                             cwd=str(tmp_path))
        assert out.returncode == 0, out.stderr
        with np.load(path) as f:
            runs[isa] = {k: f[k] for k in f.files}
    return runs


# Open MPI refuses root and more ranks than cores without these; MPICH ignores them.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1",
           "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe"}


def find_mpiexec():
    """``(path, None)`` of the mpiexec to launch with, or ``(None, reason)`` when there is none:
    no mpi4py, no mpiexec beside this Python or on PATH, or an mpi4py that finds no MPI."""
    import importlib.util
    import os
    import shutil
    import subprocess
    import sys

    if importlib.util.find_spec("mpi4py") is None:
        return None, "mpi4py is not installed (pip install 'cnn[mpi]')"
    exe = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if exe is None:
        return None, "no mpiexec on PATH (pip install mpich)"
    probe = subprocess.run([sys.executable, "-c", "from mpi4py import MPI"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60, env=child_env(), check=False)
    if probe.returncode:
        return None, f"mpi4py finds no MPI library: {probe.stderr.strip()[-300:]}"
    return exe, None


@pytest.fixture(autouse=True, scope="session")
def _sigint_reaches_python():
    """POSIX shells start background jobs with SIGINT ignored, and Python then leaves it
    ignored, so the Ctrl-C tests would send signals nobody sees (CI may run that way). The
    tests need Python's own handler, as in an interactive session."""
    import signal
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, previous)


def sigint_by_default():
    """``preexec_fn`` for children that must see Ctrl-C (see :func:`_sigint_reaches_python`)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)
