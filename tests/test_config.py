"""Build facts, the thread knob and process-wide side effects of importing cnn."""
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import child_env

import cnn
from cnn import _threads


def test_show_config_reports_the_build():
    config = cnn.show_config()
    for key in ("version", "openmp", "num_threads", "blas", "compiler_flags"):
        assert key in config
    assert config["version"] == cnn.__version__
    assert isinstance(config["openmp"], bool)
    assert config["num_threads"] == cnn.get_num_threads() >= 1
    assert config["blas"], "threadpoolctl found no BLAS library"
    flags = config["compiler_flags"]
    assert flags is not None and "-O3" in flags
    # portable by default: no -march=native unless CNN_NATIVE was asked for, never fast-math
    assert "-ffast-math" not in flags
    if os.environ.get("CNN_NATIVE", "") not in ("1", "true", "yes", "on"):
        assert "-march=native" not in flags


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.environ.get("CNN_NO_OPENMP"),
                    reason="OpenMP is required of Linux builds with gcc")
def test_linux_build_has_openmp():
    assert cnn.show_config()["openmp"] is True


def test_subnormals_survive_import():
    # -ffast-math in any extension would set flush-to-zero for the whole process on load.
    assert sys.float_info.min / 2 != 0.0
    tiny = np.array([np.finfo(np.float32).tiny], dtype=np.float32)
    assert (tiny / 2)[0] != 0.0


def test_python_dash_m_cnn_prints_the_config(tmp_path):
    # cwd outside the source tree, so the child imports the installed package
    out = subprocess.run([sys.executable, "-m", "cnn"], capture_output=True, text=True,
                         timeout=120, env=child_env(), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "openmp:" in out.stdout and "num_threads:" in out.stdout


@pytest.fixture
def restore_threads():
    old = cnn.get_num_threads()
    yield
    cnn.set_num_threads(old)


def test_set_num_threads_sets_openmp_and_blas_together(restore_threads):
    assert cnn.set_num_threads(1) == 1
    assert cnn.get_num_threads() == 1
    libs = _threads.blas_info()
    assert all(lib["num_threads"] == 1 for lib in libs)
    n = cnn.set_num_threads(2)
    assert cnn.get_num_threads() == n
    inner = _threads._scipy_blas_paths(_threads._blas_libraries())
    for lib in _threads.blas_info():
        # the BLAS called inside cnn's parallel loops stays at one thread: no nested pools
        assert lib["num_threads"] == (1 if lib["filepath"] in inner else n)


def test_set_num_threads_counts_back_from_the_cores(restore_threads):
    cores = _threads._available_cores()
    expected = cores if cnn.show_config()["openmp"] else 1
    assert cnn.set_num_threads(-1) == expected


@pytest.mark.parametrize("bad, error, match", [
    (0, ValueError, "got 0"),
    (True, TypeError, "num_threads must be an int"),
    (2.5, TypeError, "num_threads must be an int"),
    ("2", TypeError, "num_threads must be an int"),
])
def test_set_num_threads_rejects_bad_values(restore_threads, bad, error, match):
    with pytest.raises(error, match=match):
        cnn.set_num_threads(bad)


def test_default_thread_count_follows_omp_num_threads(tmp_path):
    code = "import cnn; print(cnn.get_num_threads())"
    env = child_env(OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_kernels_and_blas_alternate_without_hanging(restore_threads):
    # OpenMP loops calling SciPy's BLAS, then NumPy's BLAS on the full thread count, many
    # times over: the pattern that hangs or crawls when two pools nest (scipy#20294).
    cnn.set_num_threads(2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    dense = rng.standard_normal((16 * 144, 64)).astype(np.float32)
    first = None
    for _ in range(30):
        y = cnn.functional.conv2d(x, w, padding="same", activation="relu")
        h = y.reshape(32, -1) @ dense
        dx, dw, db = cnn.functional.conv2d_backward(y, x, w, padding="same")
        if first is None:
            first = (h, dw)
    np.testing.assert_array_equal(first[1], dw)
    np.testing.assert_array_equal(first[0], h)
