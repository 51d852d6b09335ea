"""Reliability, round two (issue 10): every writer keeps what is at its path, loaders check
before they read, loaders fail only with ValueErrors naming the file, one rule for non-finite
weights, sizes that come from data are bounded, Winograd stays finite where im2col is, and
Ctrl-C leaves a model and a History that agree with the last complete step.

Each test here failed on main at 4189430. The fault-injection tests (full disk, SIGKILL,
racing writers) are in ``test_fault_injection.py``.
"""

import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest
from conftest import child_env

import cnn
from cnn import callbacks as cb
from cnn import datasets, layers, optimizers, serialization, train
from cnn import functional as F
from cnn.serialization import load_model


def small_model(seed=0, opt="adam"):
    model = cnn.Sequential([layers.Conv2D(2, 3, padding="same", activation="relu"), layers.Flatten(),
                            layers.Dense(3, activation="softmax")], input_shape=(1, 5, 5), seed=seed)
    model.compile(loss="cross_entropy", optimizer=opt)
    return model


def data(n=24, seed=0):
    r = np.random.default_rng(seed)
    return r.random((n, 1, 5, 5)).astype(np.float32), r.integers(0, 3, n)


def trained(seed=0):
    model = small_model(seed)
    model.fit(*data(), epochs=1, batch_size=8, verbose=0)
    return model


def same_weights(model, path):
    return all(np.array_equal(a, b) for a, b in zip(model.get_weights(), load_model(path).get_weights()))


def temp_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def arrays_of(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def json_entry(obj_or_text):
    text = obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text)
    return np.frombuffer(text.encode(), np.uint8).copy()


# ----------------------------------------------------------------------------- 1. targets


def _save(path):
    trained(1).save(path)


def _checkpoint(path):
    model = trained(1)
    ck = cb.ModelCheckpoint(path)
    ck.set_model(model)
    ck.on_epoch_end(0, {})


def _idx(path):
    datasets.write_idx(path, np.arange(12, dtype=np.uint8).reshape(3, 4))


def _savez(path):
    serialization.atomic_savez(path, {"a": np.arange(3)})


WRITERS = {"save": _save, "ModelCheckpoint": _checkpoint, "write_idx": _idx, "atomic_savez": _savez}


@pytest.mark.parametrize("writer", WRITERS)
def test_a_symlink_is_written_through_to_its_target(tmp_path, writer):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "file"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    link = tmp_path / "link"
    link.symlink_to(target)
    WRITERS[writer](str(link))
    assert link.is_symlink() and os.readlink(link) == str(target)   # still the same link
    assert target.read_bytes() != b"old" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert temp_files(tmp_path) == [] and temp_files(tmp_path / "real") == []
    if writer in ("save", "ModelCheckpoint"):
        assert same_weights(trained(1), link)
    elif writer == "write_idx":
        np.testing.assert_array_equal(datasets.read_idx(link), np.arange(12).reshape(3, 4))


def _fifo(path):
    os.mkfifo(path)
    return stat.S_ISFIFO


def _device(path):
    if os.geteuid() != 0:
        pytest.skip("creating a device node (a copy of /dev/null) needs root")
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return stat.S_ISCHR


def _socket(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    return stat.S_ISSOCK


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("make, kind", [(_fifo, r"a FIFO \(named pipe\)"), (_device, "a character device"),
                                        (_socket, "a socket")])
def test_a_fifo_device_or_socket_is_refused_and_left_alone(tmp_path, writer, make, kind):
    path = tmp_path / "special"
    is_kind = make(path)
    with pytest.raises(ValueError, match=rf"{path}: it is {kind}, not a regular file"):
        WRITERS[writer](str(path))
    assert is_kind(os.lstat(path).st_mode)
    assert temp_files(tmp_path) == []


def test_a_symlink_to_a_device_is_refused_naming_both(tmp_path):
    link = tmp_path / "null"
    link.symlink_to("/dev/null")
    with pytest.raises(ValueError, match=r"null \(-> /dev/null\): it is a character device"):
        _save(link)
    assert link.is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_symlink_loop_is_an_os_error_naming_the_path(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(OSError, match=r"cannot save .*a"):
        _save(tmp_path / "a")


def test_bytes_paths_work_for_save_checkpoint_and_load(tmp_path):
    path = os.fsencode(tmp_path / "m.npz")
    model = trained()
    model.save(path)
    assert same_weights(model, os.fsdecode(path)) and load_model(path).count_params() == model.count_params()
    _checkpoint(os.fsencode(tmp_path / "ck-{epoch}.npz"))
    load_model(tmp_path / "ck-1.npz")


def test_the_cli_refuses_a_fifo_for_json_before_training(tmp_path, capsys):
    os.mkfifo(tmp_path / "report")
    reader = os.open(tmp_path / "report", os.O_RDONLY | os.O_NONBLOCK)  # a writer would not block
    try:
        with pytest.raises(SystemExit) as info:
            train.main(["--json", str(tmp_path / "report"), "--epochs", "0", "--verbose", "0"])
    finally:
        os.close(reader)
    assert info.value.code == 2
    assert "report: it is a FIFO" in capsys.readouterr().err
    assert stat.S_ISFIFO(os.lstat(tmp_path / "report").st_mode)


def test_every_writer_goes_through_the_one_atomic_helper():
    import inspect

    from cnn import _atomic
    for module in (serialization, datasets, train):
        src = inspect.getsource(module)
        assert "atomic_write(" in src and "os.replace(" not in src and "mkstemp(" not in src.replace(
            "tempfile.mkstemp(dir=dest_dir", ""), module.__name__
    assert "os.replace(" in inspect.getsource(_atomic)


# ----------------------------------------------------------------------------- 2. check before reading


def test_an_unknown_optimizer_entry_is_refused_before_it_is_read(tmp_path, monkeypatch):
    trained().save(tmp_path / "m.npz")
    arrays = arrays_of(tmp_path / "m.npz")
    arrays["optimizer.junk.0"] = np.zeros(1 << 18, np.float32)    # 1 MB that nothing needs
    np.savez(tmp_path / "junk.npz", **arrays)
    read = []
    real = np.lib.npyio.NpzFile.__getitem__
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", lambda self, key: (read.append(key), real(self, key))[1])
    with pytest.raises(ValueError, match=r"junk.npz: unexpected optimizer state for Adam: \['optimizer.junk.0'\]"):
        load_model(tmp_path / "junk.npz")
    assert "optimizer.junk.0" not in read


def test_an_entry_that_declares_more_than_the_file_holds_is_refused(tmp_path):
    trained().save(tmp_path / "m.npz")
    raw = bytearray((tmp_path / "m.npz").read_bytes())
    # Grow the sizes the central directory declares for the first entry (zip64 extra or not,
    # the 32-bit fields are what a short entry uses): it now claims far more than the file.
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as z:
        first = z.infolist()[0]
    cd = raw.find(b"PK\x01\x02")   # the first central-directory record
    assert cd > 0
    name_len = int.from_bytes(raw[cd + 28:cd + 30], "little")
    assert raw[cd + 46:cd + 46 + name_len].decode() == first.filename
    extra_len = int.from_bytes(raw[cd + 30:cd + 32], "little")
    extra = raw[cd + 46 + name_len:cd + 46 + name_len + extra_len]
    if int.from_bytes(raw[cd + 20:cd + 24], "little") == 0xFFFFFFFF:  # sizes in the zip64 extra
        at = cd + 46 + name_len + extra.find(b"\x01\x00") + 4
        raw[at:at + 16] = (10 ** 12).to_bytes(8, "little") * 2
    else:
        raw[cd + 20:cd + 28] = (2 ** 31).to_bytes(4, "little") * 2
    (tmp_path / "big.npz").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"big.npz: .*declares .* bytes .*in a file of"):
        load_model(tmp_path / "big.npz")


# ----------------------------------------------------------------------------- 3. every failure a ValueError naming the file


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.npz"
    trained().save(path)
    return path


@pytest.mark.parametrize("key, text, words", [
    ("architecture", "[" * 100_000 + "]" * 100_000, r"'architecture' does not hold valid JSON: RecursionError"),
    ("training", "[" * 40 + "]" * 40, r"'training' nests more than 32 levels"),
    ("architecture", '{"seed": ' + "9" * 5000 + "}", r"'architecture' does not hold valid JSON: ValueError"),
])
def test_hostile_json_is_a_value_error_naming_the_file(saved, tmp_path, key, text, words):
    arrays = arrays_of(saved)
    arrays[key] = json_entry(text)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=r"bad.npz: " + words):
        load_model(tmp_path / "bad.npz")


def test_a_tampered_rng_state_is_a_value_error_naming_the_file(saved, tmp_path):
    arrays = arrays_of(saved)
    training = json.loads(arrays["training"].tobytes())
    training["model_rng"]["state"]["state"] = 2 ** 200
    arrays["training"] = json_entry(training)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=r"bad.npz: bad 'training': model_rng: .*too large"):
        load_model(tmp_path / "bad.npz")


def test_error_messages_are_capped(saved, tmp_path):
    arrays = arrays_of(saved)
    arrays["format"] = json_entry({"format": "x" * 10 ** 6})
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=r"bad.npz: 'format' must be") as info:
        load_model(tmp_path / "bad.npz")
    assert len(str(info.value)) <= 2100


def test_an_idx_file_with_more_than_64_dimensions_names_the_file(tmp_path):
    (tmp_path / "d.idx").write_bytes(bytes([0, 0, 8, 65]) + b"\x00\x00\x00\x01" * 65 + b"\x07")
    with pytest.raises(ValueError, match=r"d.idx: IDX header declares 65 dimensions; wanted 1 to 64"):
        datasets.read_idx(tmp_path / "d.idx")


def test_loading_a_fifo_is_refused_instead_of_hanging(tmp_path):
    os.mkfifo(tmp_path / "m.npz")
    os.mkfifo(tmp_path / "d.idx")
    code = ("import cnn, sys\nfrom cnn import datasets\n"
            "for f in (cnn.load_model, datasets.read_idx):\n"
            "    try: f(sys.argv[1 + (f is datasets.read_idx)])\n"
            "    except ValueError as e: print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.npz"), str(tmp_path / "d.idx")],
                         capture_output=True, text=True, timeout=60, env=child_env(), cwd=tmp_path, check=False)
    assert "m.npz: not a regular file" in out.stdout and "d.idx: not a regular file" in out.stdout, out.stderr


# ----------------------------------------------------------------------------- 4. non-finite weights


def test_set_weights_refuses_nan_and_values_that_overflow_the_dtype():
    model = trained()
    before = model.get_weights()
    bad = [w.copy() for w in before]
    bad[-1] = bad[-1].astype(np.float64)
    bad[-1][0] = 1e39                       # finite in float64, inf in float32
    with pytest.raises(ValueError, match=r"weights for 2.bias must be finite in float32, got 1 value"):
        model.set_weights(bad)
    bad[-1][0] = 0.0
    bad[0][0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"weights for 0.weight must be finite in float32"):
        model.set_weights(bad)
    with pytest.raises(ValueError, match=r"state\['0.weight'\] must be finite"):
        model.load_state_dict(dict(zip(model.param_names, bad)))
    for a, b in zip(model.get_weights(), before):   # nothing changed
        np.testing.assert_array_equal(a, b)
    model.set_weights(bad, allow_nonfinite=True)
    assert np.isnan(model.params[0][0, 0, 0, 0])


def test_save_refuses_non_finite_weights_and_keeps_the_old_file(tmp_path):
    model = trained()
    model.save(tmp_path / "m.npz")
    old = (tmp_path / "m.npz").read_bytes()
    model.params[1][0] = np.inf
    with pytest.raises(serialization.UnsavableModelError, match=r"cannot save .*m.npz: parameter 0.bias holds 1 NaN/inf"):
        model.save(tmp_path / "m.npz")
    assert (tmp_path / "m.npz").read_bytes() == old and temp_files(tmp_path) == []


def test_a_diverging_run_names_only_a_checkpoint_that_loads(tmp_path):
    x, y = data(8)
    model = small_model(opt=optimizers.SGD(lr=1e300))
    ck = cb.ModelCheckpoint(str(tmp_path / "ck-{epoch}.npz"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(FloatingPointError) as info:
            model.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=[ck])
    for path in tmp_path.glob("ck-*.npz"):   # every checkpoint written loads
        load_model(path)
    if ck.last_saved is not None:
        assert f"the last good checkpoint is {ck.last_saved}" in str(info.value)
        load_model(ck.last_saved)
    else:
        assert "checkpoint" not in str(info.value)


def test_a_checkpoint_of_non_finite_weights_is_skipped_with_a_warning(tmp_path):
    model = trained()
    ck = cb.ModelCheckpoint(str(tmp_path / "ck-{epoch}.npz"))
    ck.set_model(model)
    ck.on_epoch_end(0, {})
    model.params[0][...] = np.nan
    with pytest.warns(RuntimeWarning, match=r"epoch 2 not saved .*NaN/inf.*the last good checkpoint is .*ck-1.npz"):
        ck.on_epoch_end(1, {})
    assert ck.last_saved == str(tmp_path / "ck-1.npz") and not (tmp_path / "ck-2.npz").exists()


def test_early_stopping_never_restores_non_finite_weights():
    model = trained()
    good = model.get_weights()
    es = cb.EarlyStopping(monitor="val_loss", restore_best_weights=True, patience=5)
    es.set_model(model)
    es.on_train_begin()
    es.on_epoch_end(0, {"val_loss": 1.0})
    model.params[2][...] = np.inf            # a better (finite) metric, from inf weights
    with pytest.warns(RuntimeWarning, match=r"non-finite weights"):
        es.on_epoch_end(1, {"val_loss": 0.5})
    es.on_train_end()
    for a, b in zip(model.get_weights(), good):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- 5. sizes from data


def test_fit_sizes_its_buffers_by_the_batch_drawn():
    x, y = data(5000)
    model = small_model()
    history = model.fit(x, y, epochs=1, batch_size=10 ** 12, drop_last=False, verbose=0)
    assert history.params["steps"] == 1 and np.isfinite(history.history["loss"][0])


def _data_dir(folder, max_label):
    folder.mkdir()
    r = np.random.default_rng(0)
    for stem, n in (("train", 6), ("t10k", 4)):
        datasets.write_idx(folder / f"{stem}-images-idx3-ubyte", r.integers(0, 255, (n, 8, 8), dtype=np.uint8))
        labels = np.arange(n, dtype=np.int32) % 3
        labels[-1] = max_label
        datasets.write_idx(folder / f"{stem}-labels-idx1-ubyte", labels)
    return folder


def test_the_cli_bounds_the_class_count_naming_the_file_and_label(tmp_path, capsys):
    folder = _data_dir(tmp_path / "d", 2 ** 31 - 1)
    assert train.main(["--data-dir", str(folder), "--epochs", "0", "--verbose", "0"]) == 1
    err = capsys.readouterr().err
    assert "train-labels-idx1-ubyte: label 2147483647 (item 5) asks for 2147483648 classes, more " \
           "than max_classes=1000" in err
    folder = _data_dir(tmp_path / "d12", 11)
    assert train.main(["--data-dir", str(folder), "--epochs", "0", "--verbose", "0", "--max-classes", "5"]) == 1
    assert "label 11 (item 5)" in capsys.readouterr().err
    assert train.main(["--data-dir", str(folder), "--epochs", "0", "--verbose", "0", "--model", "seed-mlp",
                      "--batch-size", "2"]) == 0
    assert "12 classes" in capsys.readouterr().out


def test_flatten_refuses_a_feature_count_that_overflows():
    with pytest.raises(ValueError, match=r"Flatten of items of shape .* gives 79228162514264337593543950336 features"):
        layers.Flatten().compute_output_shape((2 ** 32, 2 ** 32, 2 ** 32))
    with pytest.raises(ValueError, match=r"gives 2147483648 features"):
        cnn.Sequential([layers.Flatten(), layers.Dense(2)], input_shape=(2 ** 11, 2 ** 10, 2 ** 10))


@pytest.mark.parametrize("change, words", [
    (lambda a: a.__setitem__("optimizer.v.0", -a["optimizer.v.0"] - 1), r"state\['v.0'\] holds negative values"),
    (lambda a: a.__setitem__("optimizer.iterations", np.array(2 ** 64 - 1, np.uint64)),
     r"state\['iterations'\] must be a non-negative integer scalar \(at most 2\*\*62\)"),
    (lambda a: a.__setitem__("optimizer.epoch", np.array(2 ** 63 - 1, np.int64)), r"state\['epoch'\]"),
])
def test_tampered_optimizer_state_is_refused_on_load(saved, tmp_path, change, words):
    arrays = arrays_of(saved)
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=r"bad.npz: bad optimizer state: " + words):
        load_model(tmp_path / "bad.npz")
    opt = optimizers.Adam()
    state = {k[len("optimizer."):]: v for k, v in arrays.items() if k.startswith("optimizer.")}
    with pytest.raises(ValueError, match=words):
        opt.load_state_dict(state)


# ----------------------------------------------------------------------------- 6. Winograd near the float32 limit


@pytest.mark.parametrize("algorithm", ["auto", "winograd"])
def test_winograd_keeps_finite_inputs_near_the_float32_limit_finite(algorithm):
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(3)
    x = (r.uniform(-1, 1, (2, 16, 10, 10)) * 3e38).astype(np.float32)   # finite, > 8.5e37
    w = (r.standard_normal((16, 16, 3, 3)) * 1e-3).astype(np.float32)
    dy = (r.standard_normal((2, 16, 10, 10)) * 1e-9).astype(np.float32)
    assert np.isfinite(x).all()
    y = F.conv2d(x, w, padding="same", algorithm=algorithm)
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    wt = torch.from_numpy(w.astype(np.float64)).requires_grad_()
    yt = torch.nn.functional.conv2d(xt, wt, padding=1)
    yt.backward(torch.from_numpy(dy.astype(np.float64)))
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-5 * float(np.abs(yt.detach().numpy()).max()))
    dx, dw, _ = F.conv2d_backward(dy, x, w, padding="same", algorithm=algorithm)
    for got, want in ((dx, xt.grad.numpy()), (dw, wt.grad.numpy())):
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))


def test_winograd_is_still_chosen_for_ordinary_inputs(monkeypatch):
    r = np.random.default_rng(4)
    x = r.standard_normal((1, 16, 8, 8)).astype(np.float32)
    w = r.standard_normal((16, 16, 3, 3)).astype(np.float32)
    calls = []
    from cnn import _ops
    real = _ops._conv.conv2d_forward_winograd
    monkeypatch.setattr(_ops._conv, "conv2d_forward_winograd", lambda *a: (calls.append(1), real(*a)))
    F.conv2d(x, w, padding="same")
    x[0, 0, 0, 0] = 1e38
    F.conv2d(x, w, padding="same")
    assert calls == [1]


# ----------------------------------------------------------------------------- 7. Ctrl-C


class SignalInsideStep(optimizers.Adam):
    """An Adam that receives a real SIGINT while it updates its second parameter."""

    armed = False

    def _update(self, i, p, g, lr):
        super()._update(i, p, g, lr)
        if self.armed and i == 1:
            self.armed = False
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):   # the handler runs between bytecodes, i.e. right here
                pass


def test_ctrl_c_inside_an_update_finishes_it_for_every_parameter():
    x, y = data(8)
    ref = small_model(opt=optimizers.Adam())
    ref.train_step(x, y)
    model = small_model(opt=SignalInsideStep())
    model.optimizer.armed = True
    with pytest.raises(KeyboardInterrupt):
        model.train_step(x, y)
    assert model.optimizer.iterations == 1
    for a, b in zip(model.get_weights(), ref.get_weights()):
        np.testing.assert_array_equal(a, b)


class ArmAt(cb.Callback):
    """Arms the SIGINT inside the update of step ``(epoch, step)``."""

    def __init__(self, epoch, step):
        super().__init__()
        self.at, self.current = (epoch, step), None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch
        if self.at == (epoch, 0):
            self.model.optimizer.armed = True

    def on_batch_end(self, step, logs=None):
        if (self.current, step + 1) == self.at:
            self.model.optimizer.armed = True


class InterruptAfter(cb.Callback):
    """A Ctrl-C right after step ``(epoch, step)`` is complete (the reference)."""

    def __init__(self, epoch, step):
        super().__init__()
        self.at, self.current = (epoch, step), None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_batch_end(self, step, logs=None):
        if (self.current, step) == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("at", [(1, 0), (1, 1)])
def test_ctrl_c_in_fit_leaves_model_and_history_at_the_last_complete_step(at):
    x, y = data(24)
    ref = small_model(opt=SignalInsideStep())
    ref_history = ref.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[InterruptAfter(*at)])
    model = small_model(opt=SignalInsideStep())
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[ArmAt(*at)])
    assert history.interrupted and history.epoch == [0] and history.last_step == at
    assert ref_history.last_step == at
    assert model.optimizer.iterations == 3 + at[1] + 1      # 3 steps of epoch 0, then these
    for key in ("loss", "accuracy", "lr"):
        assert history.history[key] == ref_history.history[key]
    for a, b in zip(model.get_weights(), ref.get_weights()):   # every parameter of that step
        np.testing.assert_array_equal(a, b)
    assert model.train_state["epoch"] == 1


def test_ctrl_c_inside_a_checkpoint_write_does_not_count_the_epoch(tmp_path, monkeypatch):
    x, y = data(24)
    model = small_model()
    ck = cb.ModelCheckpoint(str(tmp_path / "ck.npz"))
    real = np.savez
    calls = []

    def savez(f, **arrays):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"half a file")
            raise KeyboardInterrupt
        real(f, **arrays)
    monkeypatch.setattr(np, "savez", savez)
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[ck])
    monkeypatch.setattr(np, "savez", real)
    assert history.interrupted and history.epoch == [0] and len(history.history["loss"]) == 1
    assert history.last_step == (1, 2)                      # the model holds all of epoch 1
    assert load_model(tmp_path / "ck.npz").train_state["epoch"] == 1   # epoch 0's checkpoint
    assert temp_files(tmp_path) == []
