"""Fault injection (issue 10): saves under a full disk, SIGKILL at random moments mid-save, and
writers racing a reader. Each asserts that the file at the target is, at every moment, either
the old one (loadable, byte-identical) or a new one, whole -- never a mix, never missing.

The full-disk tests mount a small tmpfs, so they need root (they are skipped, saying why,
otherwise); the mount is removed afterwards whatever happens. The whole module takes well
under two minutes.
"""

import errno
import inspect
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import child_env

import cnn
from cnn import _atomic, datasets, layers
from cnn.serialization import load_model


def temp_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def make(seed, units):
    return cnn.Sequential([layers.Flatten(), layers.Dense(units)], input_shape=(1, 32, 32), seed=seed)


# Children build the same models from the same seeds, so the weights identify the version.
MODEL_CODE = "import cnn\nfrom cnn import layers\n" + inspect.getsource(make)


def version_of(path, units):
    """Which seed (1 or 2) the model at ``path`` was built from; fails if it is neither."""
    got = load_model(path).get_weights()
    for seed in (1, 2):
        if all(np.array_equal(a, b) for a, b in zip(got, make(seed, units).get_weights())):
            return seed
    raise AssertionError(f"{path} holds weights of neither version")


# ----------------------------------------------------------------------------- disk full


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs mounted for the test (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("a full disk is simulated by mounting a small tmpfs, which needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(folder):
    """Fill the file system of ``folder`` (unbuffered writes, smaller and smaller) until not a
    byte more fits."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        size = 1 << 16
        while size:
            try:
                os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                size //= 2
    finally:
        os.close(fd)


def test_a_full_disk_leaves_every_old_file_byte_identical(small_disk):
    small = make(1, 8)
    small.save(small_disk / "m.npz")
    datasets.write_idx(small_disk / "d.idx", np.arange(100, dtype=np.uint8))
    old = {name: (small_disk / name).read_bytes() for name in ("m.npz", "d.idx")}
    fill(small_disk)
    big = make(2, 64)  # 256 KB of weights: cannot fit
    with pytest.raises(OSError) as info:
        big.save(small_disk / "m.npz")
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        datasets.write_idx(small_disk / "d.idx", np.zeros((512, 512), np.uint8))
    with pytest.raises(OSError):
        _atomic.atomic_write(small_disk / "d.idx", lambda f: f.write(b"x" * (1 << 20)))
    for name, content in old.items():
        assert (small_disk / name).read_bytes() == content
    assert temp_files(small_disk) == []
    assert version_of(small_disk / "m.npz", 8) == 1
    os.unlink(small_disk / "filler")
    big.save(small_disk / "m.npz")  # with room again, the save goes through
    assert version_of(small_disk / "m.npz", 64) == 2


# ----------------------------------------------------------------------------- SIGKILL


KILL_CHILD = MODEL_CODE + textwrap.dedent("""
    import sys
    path, units = sys.argv[1], int(sys.argv[2])
    models = [make(1, units), make(2, units)]
    models[0].save(path)
    print("ready", flush=True)
    i = 1
    while True:
        models[i % 2].save(path)
        i += 1
""")


def test_sigkill_at_random_moments_mid_save_never_breaks_the_file(tmp_path):
    target = tmp_path / "m.npz"
    units = 1024  # 4 MB of weights: a save takes a while, so kills land inside saves
    rng = np.random.default_rng(10)
    seen, mid_save = set(), 0
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(target), str(units)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(),
                                cwd=tmp_path)
        try:
            assert proc.stdout.readline().strip() == b"ready", proc.stderr.read().decode()
            time.sleep(float(rng.uniform(0.0, 0.3)))
            proc.kill()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        seen.add(version_of(target, units))  # whole, one version or the other, after every kill
        leftovers = temp_files(tmp_path)  # a kill mid-save leaves the child's temp file, which
        assert all(name.startswith(f".m.npz.{proc.pid}.") for name in leftovers)  # the next save removes
        mid_save += bool(leftovers)
    assert seen <= {1, 2}
    assert mid_save >= 1, "no kill landed inside a save: the test tested nothing"
    make(1, units).save(target)
    assert temp_files(tmp_path) == []
    assert version_of(target, units) == 1


# ----------------------------------------------------------------------------- racing writers


RACE_CHILD = MODEL_CODE + textwrap.dedent("""
    import sys
    path, seed, times = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    model = make(seed, 64)
    for _ in range(times):
        model.save(path)
""")


def test_two_racing_writers_and_a_reader_always_see_a_whole_file(tmp_path):
    target = tmp_path / "m.npz"
    make(1, 64).save(target)
    writers = [subprocess.Popen([sys.executable, "-c", RACE_CHILD, str(target), str(seed), "25"],
                                stderr=subprocess.PIPE, env=child_env(), cwd=tmp_path)
               for seed in (1, 2)]
    loads, seen = 0, set()
    try:
        deadline = time.monotonic() + 90
        while any(w.poll() is None for w in writers):
            assert time.monotonic() < deadline, "the writers did not finish"
            seen.add(version_of(target, 64))
            loads += 1
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
            w.wait(timeout=30)
    for w in writers:
        assert w.returncode == 0, w.stderr.read().decode()
    assert loads > 0 and seen <= {1, 2}
    assert version_of(target, 64) in (1, 2)
    assert temp_files(tmp_path) == []
