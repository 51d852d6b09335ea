"""Files and training that goes wrong (issue 5): hostile saved models, atomic saves and
checkpoints (a write that fails midway, a process killed mid-save), NaN/inf losses, Ctrl-C,
and resuming -- from the API and from ``python -m cnn.train --resume`` -- bit for bit.
"""

import io
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from conftest import child_env, sigint_by_default

import cnn
from cnn import callbacks as cb
from cnn import layers, optimizers, schedules, serialization
from cnn.augment import random_shift
from cnn.serialization import load_model


def model_with_state(seed=0, opt=None):
    """A small CNN with dropout, after two Adam steps (so every kind of state is non-trivial)."""
    model = cnn.Sequential([
        layers.Conv2D(3, 3, padding="same", activation="relu"), layers.MaxPool2D(2), layers.Flatten(),
        layers.Dropout(0.25), layers.Dense(4, activation="softmax"),
    ], input_shape=(1, 6, 6), seed=seed)
    model.compile(loss="cross_entropy", optimizer=opt or optimizers.Adam(lr=schedules.CosineLR(0.01, 4)))
    x, y = data(16)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    return model


def data(n=48, seed=0):
    r = np.random.default_rng(seed)
    y = r.integers(0, 4, n)
    x = r.random((n, 1, 6, 6)).astype(np.float32) * 0.3
    x[np.arange(n), 0, y, y] += 1.0
    return x, y


def arrays_of(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def assert_same_file_content(a, b):
    """Two checkpoints hold the same arrays, bit for bit (weights, optimizer state, JSON)."""
    fa, fb = arrays_of(a), arrays_of(b)
    assert sorted(fa) == sorted(fb)
    for key in fa:
        np.testing.assert_array_equal(fa[key], fb[key], err_msg=key)


def temp_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ----------------------------------------------------------------------------- hostile files


def rewrite_zip(src, dst, change):
    """Copy an npz entry by entry; ``change(name, bytes) -> bytes or None (drop it)``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = change(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)


def npy_with_header(raw, **header):
    """``raw`` (a .npy file) with its header fields replaced, the data bytes kept."""
    bio = io.BytesIO(raw)
    version = np.lib.format.read_magic(bio)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(bio)
    fields = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran, "shape": shape}
    fields.update(header)
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, fields)
    return out.getvalue() + raw[bio.tell():]


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.npz"
    model_with_state().save(path)
    return path


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.3, 0.5, 0.8, 0.99])
def test_truncated_files_are_value_errors_naming_the_file(saved, tmp_path, fraction):
    raw = saved.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(raw[:int(len(raw) * fraction)])
    with pytest.raises(ValueError, match="cut.npz"):
        load_model(cut)


@pytest.mark.parametrize("key, header, words", [
    # a header promising 400 GB: refused from the header, nothing allocated (was a MemoryError)
    ("layers.4.weight", {"shape": (10 ** 11,)}, r"header promises shape \(100000000000,\).*truncated or tampered"),
    ("layers.4.weight", {"shape": (3,)}, r"header promises shape \(3,\)"),
    ("optimizer.m.0", {"shape": (10 ** 10, 10)}, r"optimizer.m.0.*header promises"),
    ("architecture", {"shape": (2 ** 40,)}, r"'architecture'.*header promises"),
    # the same bytes reinterpreted: right size, wrong shape -> never loaded into the layer
    ("layers.0.weight", {"shape": (27,)}, r"'layers.0.weight' has shape \(27,\), the architecture wants \(3, 1, 3, 3\)"),
    ("layers.0.weight", {"shape": (1, 3, 3, 3)}, r"has shape \(1, 3, 3, 3\), the architecture wants \(3, 1, 3, 3\)"),
    ("layers.0.bias", {"descr": "<i4"}, r"'layers.0.bias' has dtype int32, the architecture wants float32"),
    ("optimizer.iterations", {"shape": (1,), "descr": "<i8"}, r"'optimizer.iterations' must be a scalar"),
])
def test_tampered_npy_headers_are_refused_before_reading(saved, tmp_path, key, header, words):
    bad = tmp_path / "bad.npz"
    rewrite_zip(saved, bad, lambda name, raw: npy_with_header(raw, **header) if name == key + ".npy" else raw)
    with pytest.raises(ValueError, match=words):
        load_model(bad)


def _json_entry(obj):
    out = io.BytesIO()
    np.lib.format.write_array(out, np.frombuffer(json.dumps(obj).encode(), np.uint8))
    return out.getvalue()


def _with_architecture(saved, tmp_path, change):
    arch = json.loads(arrays_of(saved)["architecture"].tobytes())
    new = change(arch)
    bad = tmp_path / "arch.npz"
    rewrite_zip(saved, bad, lambda name, raw: _json_entry(new) if name == "architecture.npy" else raw)
    return bad


@pytest.mark.parametrize("change, words", [
    (lambda a: {**a, "layers": a["layers"][:-1]}, r"missing \[\], unexpected \['layers.4.bias', 'layers.4.weight'\]"),
    (lambda a: {**a, "layers": a["layers"][:4] + [{"class_name": "Dense", "config": {
        **a["layers"][4]["config"], "units": 5}}]}, r"'layers.4.weight' has shape \(4, 27\), the architecture wants \(5, 27\)"),
    (lambda a: {**a, "input_shape": [2, 6, 6]}, r"'layers.0.weight' has shape \(3, 1, 3, 3\), the architecture wants \(3, 2, 3, 3\)"),
    (lambda a: {**a, "input_shape": [1, -6, 6]}, r"bad 'architecture': input_shape"),
    (lambda a: {**a, "input_shape": [1, 1, 1]}, r"bad 'architecture': layer|larger than the padded input|wants"),
    (lambda a: {**a, "layers": [{"class_name": "Lambda", "config": {"code": "os.system('x')"}}]},
     r"class_name must be one of .*'Lambda'"),
    (lambda a: {**a, "layers": "Dense"}, r"'layers' must be a non-empty list"),
    (lambda a: {k: v for k, v in a.items() if k != "seed"}, r"wanted a dict with keys"),
    (lambda a: [a], r"bad 'architecture': wanted a dict"),
    (lambda a: {**a, "dtype": "object"}, r"dtype must be float32 or float64"),
])
def test_wrong_architecture_json_is_refused(saved, tmp_path, change, words):
    with pytest.raises(ValueError, match=words):
        load_model(_with_architecture(saved, tmp_path, change))


class Boom:
    """Unpickling this creates a marker file: proof that nothing was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_nothing_is_ever_unpickled(saved, tmp_path):
    marker = tmp_path / "UNPICKLED"
    whole = tmp_path / "pickle.npz"
    whole.write_bytes(pickle.dumps(Boom(str(marker))))
    with pytest.raises(ValueError, match="pickle.npz"):
        load_model(whole)

    evil = io.BytesIO()
    np.lib.format.write_array(evil, np.array([Boom(str(marker))], dtype=object), allow_pickle=True)
    for key in ("layers.0.bias", "optimizer.m.1", "format", "architecture", "training"):
        bad = tmp_path / f"object-{key}.npz"
        rewrite_zip(saved, bad, lambda name, raw, key=key: evil.getvalue() if name == key + ".npy" else raw)
        with pytest.raises(ValueError, match=rf"object-{re.escape(key)}.npz.*{re.escape(key)}.*(object|pickle)"):
            load_model(bad)
    assert not marker.exists()


@pytest.mark.parametrize("change, words", [
    (lambda a: a.pop("optimizer.v.2"), r"missing keys \['v.2'\]"),
    (lambda a: a.update({"optimizer.iterations": np.array(-1)}), r"iterations.*non-negative integer"),
    (lambda a: a.update({"optimizer.m.9": np.zeros(3, np.float32)}), r"optimizer.m.9.*parameter 9, the model has 4"),
    (lambda a: a["optimizer.v.0"].__setitem__(0, np.nan), r"optimizer.v.0' holds NaN/inf"),
    (lambda a: a.update({"training": np.frombuffer(b'{"model_rng": 3, "fit": null}', np.uint8)}),
     r"model_rng must be a PCG64 state"),
    (lambda a: a.update({"training": np.frombuffer(b'{"model_rng": {}, "fit": null, "x": 1}', np.uint8)}),
     r"'training' must be a dict with keys"),
    (lambda a: a.update({"format": np.frombuffer(b'{"format": "cnn.Sequential", "version": 99}', np.uint8)}),
     r"version 99 is not supported"),
    (lambda a: a.update({"compile": np.frombuffer(b'{"loss": "mse", "optimizer": {"name": "evil"}}', np.uint8)}),
     r"bad 'compile'"),
])
def test_tampered_optimizer_and_training_state_is_refused(saved, tmp_path, change, words):
    arrays = arrays_of(saved)
    arrays["optimizer.v.0"] = arrays["optimizer.v.0"].copy()
    change(arrays)
    bad = tmp_path / "state.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match=words):
        load_model(bad)


def test_an_inflating_json_entry_is_refused_before_it_is_read(saved, tmp_path):
    arrays = arrays_of(saved)
    arrays["training"] = np.full(17 << 20, ord(" "), np.uint8)   # 17 MB of spaces, ~20 KB compressed
    np.savez_compressed(tmp_path / "bomb.npz", **arrays)
    assert (tmp_path / "bomb.npz").stat().st_size < 1 << 20
    with pytest.raises(ValueError, match=r"bomb.npz: archive entry '.*' is compressed"):
        load_model(tmp_path / "bomb.npz")
    np.savez(tmp_path / "big.npz", **arrays)                      # stored: the size is the file's
    with pytest.raises(ValueError, match=r"'training' is a JSON document of 17825792 bytes"):
        load_model(tmp_path / "big.npz")


def test_a_compressed_file_is_refused_naming_the_file(saved, tmp_path):
    # cnn never writes deflated entries (issue 10): refused before any entry is inflated
    np.savez_compressed(tmp_path / "c.npz", **arrays_of(saved))
    with pytest.raises(ValueError, match=r"c.npz: archive entry '.*' is compressed .*not written by cnn"):
        load_model(tmp_path / "c.npz")


# ----------------------------------------------------------------------------- atomic saves


def _half_then(exc):
    """A stand-in for np.savez that writes half a real archive into the temp file, then fails."""
    real = np.savez

    def savez(f, **arrays):
        buf = io.BytesIO()
        real(buf, **arrays)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        raise exc
    return savez


@pytest.mark.parametrize("where, exc", [
    ("write", OSError(28, "No space left on device")),
    ("write", KeyboardInterrupt()),
    ("fsync", OSError(5, "Input/output error")),
    ("replace", PermissionError(13, "Permission denied")),
])
def test_a_save_that_fails_midway_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch, where, exc):
    path = tmp_path / "m.npz"
    model = model_with_state()
    model.save(path)
    before = path.read_bytes()
    x, y = data(16)
    model.fit(x, y, epochs=2, initial_epoch=1, batch_size=8, verbose=0)  # new weights to save
    if where == "write":
        monkeypatch.setattr(np, "savez", _half_then(exc))
    else:
        def fail(*args, **kwargs):
            raise exc
        monkeypatch.setattr(os, where, fail)
    with pytest.raises(type(exc)):
        model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
    load_model(path)


_KILLED_MID_SAVE = r"""
import pathlib, sys, time
import numpy as np
import cnn
from cnn import layers
folder = pathlib.Path(sys.argv[1])
model = cnn.Sequential([layers.Flatten(), layers.Dense(300), layers.Dense(10)], input_shape=(1, 28, 28), seed=1)
model.save(folder / "m.npz")                      # the previous, complete file
real = np.savez

def half_then_hang(f, **arrays):
    import io
    buf = io.BytesIO()
    real(buf, **arrays)
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    f.flush()
    (folder / "MID-SAVE").write_text("now")        # tell the parent: kill me here
    time.sleep(120)

np.savez = half_then_hang
model.set_weights([w + 1 for w in model.get_weights()])
model.save(folder / "m.npz")
"""


def test_a_process_killed_mid_save_leaves_the_previous_file_intact(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_MID_SAVE, str(tmp_path)], cwd=tmp_path,
                            env=child_env(OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "MID-SAVE").exists():
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "the child never reached the middle of its save"
            time.sleep(0.05)
        proc.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    model = load_model(tmp_path / "m.npz")   # complete, and the old version (weights not + 1)
    want = cnn.Sequential([layers.Flatten(), layers.Dense(300), layers.Dense(10)], input_shape=(1, 28, 28), seed=1)
    for a, b in zip(model.get_weights(), want.get_weights()):
        np.testing.assert_array_equal(a, b)
    # A killed process cannot clean up after itself: its half-written temp file is a hidden
    # sibling, named after the child's pid, that never replaced the target ...
    leftovers = temp_files(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].startswith(f".m.npz.{proc.pid}.")
    # ... until the next save to the same target, which removes it (the child is gone).
    model.save(tmp_path / "m.npz")
    assert temp_files(tmp_path) == []
    load_model(tmp_path / "m.npz")


def _dead_pid():
    """The pid of a child that has exited and been reaped."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


@pytest.mark.skipif(os.name != "posix", reason="stale temp files are detected with os.kill(pid, 0)")
def test_a_save_removes_stale_temp_files_of_its_target_only(tmp_path):
    dead = _dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        stale = [f".m.npz.{dead}.abc_123x.tmp", f".m.npz.{dead}.zz9.tmp"]
        kept = [f".m.npz.{os.getpid()}.abc_123x.tmp",   # this process: may be mid-save in a thread
                f".m.npz.{sleeper.pid}.abc_123x.tmp",   # another live process: may be mid-save
                f".other.npz.{dead}.abc_123x.tmp",      # another target
                ".m.npz.abc_123x.tmp",                  # no pid
                f".m.npz.{dead}.abc.tmp.bak", "m.npz.tmp", f"m.npz.{dead}.abc.tmp"]
        for name in stale + kept:
            (tmp_path / name).write_bytes(b"half a save")
        (tmp_path / f".m.npz.{dead}.dir.tmp").mkdir()  # not a file: left alone
        model = model_with_state()
        model.save(tmp_path / "m.npz")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["m.npz", f".m.npz.{dead}.dir.tmp"])
        for name in kept:
            assert (tmp_path / name).read_bytes() == b"half a save"
        load_model(tmp_path / "m.npz")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_temp_file_is_named_after_the_target_and_the_pid(tmp_path, monkeypatch):
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        real(src, dst)
    monkeypatch.setattr(os, "replace", spy)
    model_with_state().save(tmp_path / "m.npz")
    assert len(seen) == 1 and re.fullmatch(rf"\.m\.npz\.{os.getpid()}\.[^.]+\.tmp", seen[0]), seen


def test_a_checkpoint_that_fails_to_save_keeps_the_last_good_one(tmp_path, monkeypatch):
    x, y = data()
    path = tmp_path / "ck.npz"

    class BreakSavesAfterEpoch0(cb.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                monkeypatch.setattr(np, "savez", _half_then(OSError(28, "No space left on device")))

    model = model_with_state()
    ck = cb.ModelCheckpoint(str(path))
    # BreakSaves runs after the checkpoint of epoch 0, so epoch 1's save is the one that fails
    with pytest.raises(OSError, match="No space left"):
        model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[ck, BreakSavesAfterEpoch0()])
    monkeypatch.undo()
    assert ck.last_saved == str(path) and temp_files(tmp_path) == []
    assert load_model(path).train_state["epoch"] == 1


# ----------------------------------------------------------------------------- NaN / inf, Ctrl-C


class PoisonAt(cb.Callback):
    """Sets the output layer's weights to ``value`` after step ``step`` of epoch ``epoch``."""

    def __init__(self, epoch, step, value=np.nan):
        super().__init__()
        self.epoch, self.step, self.value, self.current = epoch, step, value, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_batch_end(self, step, logs=None):
        if (self.current, step) == (self.epoch, self.step):
            self.model.layers[-1].params[0][...] = self.value


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_non_finite_loss_stops_fit_naming_epoch_step_and_last_checkpoint(tmp_path, value):
    x, y = data()
    model = model_with_state()
    ck = cb.ModelCheckpoint(str(tmp_path / "ck-{epoch}.npz"))
    with pytest.raises(FloatingPointError) as info:
        model.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=[ck, PoisonAt(2, 3, value)])
    msg = str(info.value)
    assert re.search(r"the loss became (nan|inf) at epoch 3/4, step 5/6", msg), msg
    assert f"the last good checkpoint is {tmp_path / 'ck-2.npz'}" in msg
    good = load_model(tmp_path / "ck-2.npz")
    assert good.train_state["epoch"] == 2 and all(np.isfinite(w).all() for w in good.get_weights())
    assert model.history.epoch == [0, 1]       # what was completed before it went wrong
    assert temp_files(tmp_path) == []


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_non_finite_loss_without_checkpoint_says_so_plainly():
    x, y = data()
    with pytest.raises(FloatingPointError, match=r"at epoch 1/2, step 2/6; training stopped") as info:
        model_with_state().fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[PoisonAt(0, 0)])
    assert "checkpoint" not in str(info.value)


def test_non_finite_inputs_are_rejected_before_any_step():
    x, y = data()
    x[7, 0, 2, 2] = np.nan
    model = model_with_state()
    before = [w.copy() for w in model.get_weights()]
    steps = model.optimizer.iterations
    with pytest.raises(ValueError, match=r"x must be finite, got 1 NaN/inf value"):
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert model.optimizer.iterations == steps
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


class InterruptAt(cb.Callback):
    def __init__(self, epoch, step):
        super().__init__()
        self.at, self.current = (epoch, step), None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_batch_end(self, step, logs=None):
        if (self.current, step) == self.at:
            raise KeyboardInterrupt


def fit_args():
    x, y = data(48)
    xv, yv = data(16, seed=1)
    return dict(x=x, y=y, batch_size=8, validation_data=(xv, yv), verbose=0,
                augment=lambda xb, rng: random_shift(xb, rng, 1))


COMPARED = ("loss", "accuracy", "val_loss", "val_accuracy", "lr")


def test_ctrl_c_returns_the_history_keeps_checkpoints_and_resumes_bit_for_bit(tmp_path):
    full = model_with_state()
    full_history = full.fit(epochs=4, **fit_args())

    model = model_with_state()
    ck = cb.ModelCheckpoint(str(tmp_path / "ck.npz"))
    history = model.fit(epochs=4, callbacks=[ck, InterruptAt(2, 3)], **fit_args())
    assert history.interrupted and history.epoch == [0, 1] and model.history is history
    assert {k: history.history[k] for k in COMPARED} == {k: full_history.history[k][:2] for k in COMPARED}
    assert temp_files(tmp_path) == []

    resumed = load_model(tmp_path / "ck.npz")    # the checkpoint of epoch 2, untouched by Ctrl-C
    assert resumed.train_state["epoch"] == 2
    rest = resumed.fit(epochs=4, initial_epoch=2, **fit_args())
    assert rest.epoch == [2, 3]
    assert {k: rest.history[k] for k in COMPARED} == {k: full_history.history[k][2:] for k in COMPARED}
    for a, b in zip(resumed.get_weights(), full.get_weights()):
        np.testing.assert_array_equal(a, b)
    for key, value in full.optimizer.state_dict().items():
        np.testing.assert_array_equal(resumed.optimizer.state_dict()[key], value)
    assert resumed.rng.bit_generator.state == full.rng.bit_generator.state   # dropout stream


def test_ctrl_c_during_a_checkpoint_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"

    class InterruptTheNextSave(cb.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                monkeypatch.setattr(np, "savez", _half_then(KeyboardInterrupt()))

    model = model_with_state()
    history = model.fit(epochs=3, callbacks=[cb.ModelCheckpoint(str(path)), InterruptTheNextSave()], **fit_args())
    monkeypatch.undo()
    assert history.interrupted and temp_files(tmp_path) == []
    assert load_model(path).train_state["epoch"] == 1


@pytest.mark.parametrize("initial_epoch, seed, words", [
    (2, None, r"saved state ends at epoch 1"),
    (1, 99, r"seed=99 differs from the saved run's seed=None"),
])
def test_a_resume_that_cannot_match_says_so(tmp_path, initial_epoch, seed, words):
    model = model_with_state()                     # state: epoch 1, default seed
    with pytest.warns(RuntimeWarning, match=words + r".*will not match an uninterrupted one"):
        model.fit(epochs=3, initial_epoch=initial_epoch, seed=seed, **fit_args())
    fresh = model_with_state()
    fresh.train_state = None
    with pytest.warns(RuntimeWarning, match=r"has no saved training state"):
        fresh.fit(epochs=2, initial_epoch=1, **fit_args())


# ----------------------------------------------------------------------------- what a checkpoint holds


@pytest.mark.parametrize("make_opt, buffers", [
    (lambda: optimizers.Adam(lr=schedules.CosineLR(0.01, 4)), ("m", "v")),
    (lambda: optimizers.SGD(lr=schedules.StepLR(0.1, step_size=1, gamma=0.5), momentum=0.9), ("velocity",)),
])
def test_a_checkpoint_holds_everything_a_resume_needs(tmp_path, make_opt, buffers):
    model = model_with_state(opt=make_opt())
    model.fit(epochs=2, initial_epoch=1, callbacks=[cb.ModelCheckpoint(str(tmp_path / "ck.npz"))], **fit_args())
    a = arrays_of(tmp_path / "ck.npz")
    assert all(a[k].dtype != object for k in a)
    # weights
    for key, p in model.state_dict().items():
        np.testing.assert_array_equal(a[f"layers.{key}"], p)
    # optimizer state: one buffer per parameter, the step count and the epoch
    for b in buffers:
        for i, p in enumerate(model.get_weights()):
            assert a[f"optimizer.{b}.{i}"].shape == p.shape and np.abs(a[f"optimizer.{b}.{i}"]).sum() > 0
    assert int(a["optimizer.iterations"]) == model.optimizer.iterations == 2 + 6
    assert int(a["optimizer.epoch"]) == 1
    # the learning-rate schedule and where it stands
    compile_cfg = json.loads(a["compile"].tobytes())
    assert compile_cfg["optimizer"]["lr"] == model.optimizer.schedule.get_config()
    # generators: dropout (the model's) and shuffling/augmentation, and the epoch reached
    training = json.loads(a["training"].tobytes())
    assert training["model_rng"] == model.rng.bit_generator.state
    assert training["fit"]["epoch"] == 2
    assert training["fit"]["shuffle_rng"] == model.train_state["shuffle_rng"]
    loaded = load_model(tmp_path / "ck.npz")
    assert loaded.optimizer.lr == model.optimizer.lr and loaded.optimizer.epoch == 1


# ----------------------------------------------------------------------------- the CLI


_INTERRUPT_AFTER_FIRST_EPOCH = r"""
import sys
from cnn import callbacks, train
save = callbacks.ModelCheckpoint.on_epoch_end

def save_then_ctrl_c(self, epoch, logs=None):
    save(self, epoch, logs)
    if epoch == 0:
        raise KeyboardInterrupt    # as if Ctrl-C came right after the first checkpoint

callbacks.ModelCheckpoint.on_epoch_end = save_then_ctrl_c
sys.exit(train.main(sys.argv[1:]))
"""


def _cli(tmp_path, args, code=None):
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "cnn.train"]
    proc = subprocess.run(cmd + args, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=child_env())
    assert proc.returncode == 0, proc.stderr
    return proc


def test_cli_resume_continues_as_if_never_stopped(tmp_path):
    """The default CNN (dropout, random affine augmentation, Adam on a cosine schedule): two
    epochs straight vs one epoch, Ctrl-C, ``--resume``: the same file bit for bit."""
    common = ["--limit", "96", "--batch-size", "32", "--epochs", "2", "--threads", "1", "--verbose", "0"]
    _cli(tmp_path, common + ["--save", "full.npz", "--json", "full.json"])
    _cli(tmp_path, common + ["--save", "ck.npz"], code=_INTERRUPT_AFTER_FIRST_EPOCH)
    assert load_model(tmp_path / "ck.npz").train_state["epoch"] == 1
    resumed = _cli(tmp_path, common + ["--resume", "ck.npz", "--save", "resumed.npz", "--json", "resumed.json"])
    assert "resuming ck.npz at epoch 1" in resumed.stdout
    assert_same_file_content(tmp_path / "full.npz", tmp_path / "resumed.npz")
    full, res = (json.loads((tmp_path / f).read_text()) for f in ("full.json", "resumed.json"))
    assert res["epochs"] == [1]
    for key in ("loss", "accuracy", "lr"):
        assert res["history"][key] == full["history"][key][1:]
    assert res["test_accuracy"] == full["test_accuracy"]


def test_cli_real_ctrl_c_keeps_a_loadable_checkpoint(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "cnn.train", "--model", "seed-mlp", "--limit", "256",
                             "--batch-size", "32", "--epochs", "10000", "--threads", "1", "--verbose", "2",
                             "--save", "ck.npz"], cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_by_default)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "ck.npz").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "training interrupted after" in out and "test accuracy:" in out
    assert load_model(tmp_path / "ck.npz").train_state["epoch"] >= 1
    assert temp_files(tmp_path) == []


def test_atomic_savez_is_what_model_save_uses(tmp_path, monkeypatch):
    calls = []
    real = serialization.atomic_savez
    monkeypatch.setattr(serialization, "atomic_savez", lambda path, arrays: (calls.append(path), real(path, arrays)))
    model_with_state().save(tmp_path / "m.npz")
    assert calls == [tmp_path / "m.npz"]
