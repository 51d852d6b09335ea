"""The fit loop: mini-batches as the seed defines them, History, seeds, callbacks, resume,
interruptions, bad input, progress display, and a learning test on the bundled MNIST."""

import io
import re

import numpy as np
import pytest
from conftest import child_env

from cnn import callbacks as cb
from cnn import layers, optimizers, schedules
from cnn.progress import EpochProgress
from cnn.sequential import Sequential
from cnn.serialization import load_model


def tiny(seed=0, dropout=True):
    stack = [layers.Conv2D(3, 3, activation="relu"), layers.MaxPool2D(2), layers.Flatten()]
    if dropout:
        stack.append(layers.Dropout(0.2))
    stack.append(layers.Dense(4, activation="softmax"))
    return Sequential(stack, input_shape=(1, 6, 6), seed=seed)


def dataset(n=50, seed=0):
    r = np.random.default_rng(seed)
    y = r.integers(0, 4, n)
    x = r.random((n, 1, 6, 6)).astype(np.float32) * 0.3
    x[np.arange(n), 0, y, y] += 1.0  # learnable: the class is where the bright pixel is
    return x, y


class Recorder(cb.Callback):
    def __init__(self):
        super().__init__()
        self.events = []
        self.batches = []

    def on_train_begin(self, logs=None):
        self.events.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(("epoch_begin", epoch))

    def on_batch_end(self, step, logs=None):
        self.batches.append((step, logs["size"], logs["loss"]))

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch_end", epoch))

    def on_train_end(self, logs=None):
        self.events.append("train_end")


def compiled(seed=0, opt=None, **kw):
    return tiny(seed, **kw).compile(loss="cross_entropy", optimizer=opt or optimizers.SGD(lr=0.1, momentum=0.9))


# ----------------------------------------------------------------------------- batches


@pytest.mark.parametrize("n, batch, drop_last, sizes", [
    (50, 16, True, [16, 16, 16]),
    (50, 16, False, [16, 16, 16, 2]),
    (48, 16, True, [16, 16, 16]),
    (7, 7, True, [7]),
])
def test_steps_per_epoch(n, batch, drop_last, sizes):
    x, y = dataset(n)
    rec = Recorder()
    compiled().fit(x, y, epochs=2, batch_size=batch, drop_last=drop_last, verbose=0, callbacks=[rec])
    assert [s for _, s, _ in rec.batches] == sizes * 2
    assert [st for st, _, _ in rec.batches] == list(range(len(sizes))) * 2
    assert rec.events == ["train_begin", ("epoch_begin", 0), ("epoch_end", 0),
                          ("epoch_begin", 1), ("epoch_end", 1), "train_end"]


def _seen_order(model, x, y, **kw):
    """Item indices in the order fit trains on them (each image is constant = its index)."""
    seen = []

    def spy(xb, rng):
        seen.append(np.rint(xb[:, 0, 0, 0]).astype(int))
        return xb

    model.fit(x, y, verbose=0, augment=spy, **kw)
    return seen


def test_a_fresh_permutation_each_epoch():
    n = 20
    x = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, 1, 6, 6)).copy()
    y = np.arange(n) % 4
    seen = _seen_order(compiled(), x, y, epochs=3, batch_size=6)
    epochs = [np.concatenate(seen[i * 3:(i + 1) * 3]) for i in range(3)]
    for e in epochs:
        assert len(e) == 18 and len(set(e.tolist())) == 18  # 3 complete batches, no repeats
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    in_order = _seen_order(compiled(), x, y, epochs=1, batch_size=6, shuffle=False)
    np.testing.assert_array_equal(np.concatenate(in_order), np.arange(18))


# ----------------------------------------------------------------------------- history


def test_history_holds_what_it_promises():
    x, y = dataset(50)
    xv, yv = dataset(30, seed=1)
    rec = Recorder()
    model = compiled(opt=optimizers.SGD(lr=schedules.StepLR(0.1, step_size=1, gamma=0.5)))
    history = model.fit(x, y, epochs=3, batch_size=10, validation_data=(xv, yv), verbose=0,
                        callbacks=[rec])
    assert model.history is history and history.epoch == [0, 1, 2] and not history.interrupted
    h = history.history
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_second"}
    assert all(len(v) == 3 for v in h.values())
    assert h["lr"] == pytest.approx([0.1, 0.05, 0.025])  # optimizer.set_epoch at each epoch start
    batch_losses = np.array([loss for _, _, loss in rec.batches]).reshape(3, 5)
    np.testing.assert_allclose(h["loss"], batch_losses.mean(axis=1), rtol=1e-12)
    assert all(0 <= a <= 1 for a in h["accuracy"] + h["val_accuracy"])
    for seconds, ips in zip(h["seconds"], h["images_per_second"]):
        assert seconds > 0 and ips == pytest.approx(50 // 10 * 10 / seconds)
    # validation runs after the epoch's updates, on the weights the model ends with
    final = model.evaluate(xv, yv)
    assert h["val_loss"][-1] == pytest.approx(final["loss"], rel=1e-6)
    assert h["val_accuracy"][-1] == final["accuracy"]


def test_no_validation_keys_without_validation_data():
    x, y = dataset()
    h = compiled().fit(x, y, epochs=1, batch_size=10, verbose=0).history
    assert "val_loss" not in h and "loss" in h


# ----------------------------------------------------------------------------- seeds


def _weights_after(model_seed, fit_seed, epochs=2):
    x, y = dataset()
    model = compiled(model_seed)
    history = model.fit(x, y, epochs=epochs, batch_size=8, seed=fit_seed, verbose=0)
    return model.get_weights(), history.history["loss"]


def test_same_seeds_same_weights():
    w1, l1 = _weights_after(0, 5)
    w2, l2 = _weights_after(0, 5)
    assert l1 == l2
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    w3, _ = _weights_after(0, 6)
    assert not np.array_equal(w1[0], w3[0])
    w4, _ = _weights_after(0, None)
    w5, _ = _weights_after(0, None)
    np.testing.assert_array_equal(w4[0], w5[0])


@pytest.mark.parametrize("opt", [lambda: optimizers.Adam(lr=schedules.CosineLR(0.01, 3)),
                                 lambda: optimizers.SGD(lr=0.05, momentum=0.9, nesterov=True)])
def test_resume_from_checkpoint_is_bit_identical(tmp_path, opt):
    x, y = dataset(60)
    xv, yv = dataset(20, seed=1)
    full = compiled(opt=opt())
    ckpt = cb.ModelCheckpoint(str(tmp_path / "ck-{epoch}.npz"))
    full.fit(x, y, epochs=3, batch_size=8, validation_data=(xv, yv), verbose=0, callbacks=[ckpt])
    assert ckpt.last_saved == str(tmp_path / "ck-3.npz")

    resumed = load_model(tmp_path / "ck-1.npz")
    assert resumed.train_state["epoch"] == 1
    history = resumed.fit(x, y, epochs=3, batch_size=8, validation_data=(xv, yv), verbose=0,
                          initial_epoch=1)
    assert history.epoch == [1, 2]
    for a, b in zip(resumed.get_weights(), full.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_resume_after_fit_save_load(tmp_path):
    x, y = dataset(40)
    full = compiled(3)
    full.fit(x, y, epochs=2, batch_size=8, verbose=0)
    part = compiled(3)
    part.fit(x, y, epochs=1, batch_size=8, verbose=0)
    part.save(tmp_path / "m.npz")
    again = load_model(tmp_path / "m.npz")
    again.fit(x, y, epochs=2, batch_size=8, verbose=0, initial_epoch=1)
    for a, b in zip(again.get_weights(), full.get_weights()):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- callbacks


class FakeModel:
    def __init__(self):
        self.weights = [np.zeros(1)]
        self.stop_training = False

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, w):
        self.weights = [a.copy() for a in w]


def _drive(callback, values, key="val_loss"):
    model = FakeModel()
    callback.set_model(model)
    callback.on_train_begin()
    stopped = None
    for epoch, v in enumerate(values):
        model.weights = [np.array([float(epoch)])]
        callback.on_epoch_end(epoch, {key: v})
        if model.stop_training:
            stopped = epoch
            break
    callback.on_train_end()
    return model, stopped


@pytest.mark.parametrize("patience, values, stop", [
    (0, [1.0, 0.9, 0.95, 0.5], 2),
    (2, [1.0, 0.9, 0.95, 0.96, 0.5], 3),
    (2, [1.0, 0.9, 0.95, 0.8, 0.85, 0.7], None),
])
def test_early_stopping_patience(patience, values, stop):
    es = cb.EarlyStopping(patience=patience)
    _, stopped = _drive(es, values)
    assert stopped == stop and es.stopped_epoch == stop


def test_early_stopping_min_delta_and_mode():
    es = cb.EarlyStopping(monitor="val_accuracy", patience=1, min_delta=0.05)
    assert es.mode == "max"
    _, stopped = _drive(es, [0.5, 0.52, 0.9], key="val_accuracy")
    assert stopped == 1  # +0.02 is not an improvement of at least 0.05


def test_early_stopping_restores_best_weights_when_training_just_ends():
    es = cb.EarlyStopping(patience=10, restore_best_weights=True)
    model, stopped = _drive(es, [1.0, 0.4, 0.6, 0.7])
    assert stopped is None and es.best_epoch == 1
    assert model.weights[0][0] == 1.0


def test_early_stopping_in_fit_restores_the_best_epoch():
    x, y = dataset(40)
    xv, yv = dataset(40, seed=2)
    snapshots = []

    class Snap(cb.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(self.model.get_weights())

    es = cb.EarlyStopping(monitor="val_loss", patience=100, restore_best_weights=True)
    model = compiled(opt=optimizers.SGD(lr=0.5, momentum=0.9))
    history = model.fit(x, y, epochs=6, batch_size=8, validation_data=(xv, yv), verbose=0,
                        callbacks=[es, Snap()])
    best = int(np.argmin(history.history["val_loss"]))
    assert es.best_epoch == best
    for a, b in zip(model.get_weights(), snapshots[best]):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_warns_on_a_missing_metric():
    with pytest.warns(RuntimeWarning, match="val_loss"):
        _drive(cb.EarlyStopping(), [1.0], key="loss")


def test_model_checkpoint_save_best_only(tmp_path):
    ck = cb.ModelCheckpoint(str(tmp_path / "best.npz"), monitor="loss", save_best_only=True)
    saved = []
    model = FakeModel()
    model.save = lambda path: saved.append(path)
    ck.set_model(model)
    ck.on_train_begin()
    for epoch, v in enumerate([1.0, 0.5, 0.7, 0.4]):
        ck.on_epoch_end(epoch, {"loss": v})
    assert len(saved) == 3  # epochs 0, 1 and 3


@pytest.mark.parametrize("make, error", [
    (lambda: cb.EarlyStopping(patience=-1), ValueError),
    (lambda: cb.EarlyStopping(mode="up"), ValueError),
    (lambda: cb.EarlyStopping(min_delta=-0.1), ValueError),
    (lambda: cb.ModelCheckpoint(3), TypeError),
])
def test_callback_argument_errors(make, error):
    with pytest.raises(error):
        make()


# ----------------------------------------------------------------------------- going wrong


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_nan_loss_stops_fit_naming_epoch_step_and_checkpoint(tmp_path):
    x, y = dataset(40)

    class Poison(cb.Callback):  # after epoch 2, step 2, the output layer's weights blow up
        def on_batch_end(self, step, logs=None):
            if self.model.train_state and self.model.train_state["epoch"] == 1 and step == 1:
                self.model.layers[-1].params[0][...] = np.inf

    ck = cb.ModelCheckpoint(str(tmp_path / "ck.npz"))
    model = compiled()
    with pytest.raises(FloatingPointError, match=r"epoch 2/3, step 3/5.*ck\.npz"):
        model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[ck, Poison()])
    assert load_model(tmp_path / "ck.npz").train_state["epoch"] == 1


def test_non_finite_augmented_batch_is_rejected():
    def poison(xb, rng):
        xb = xb.copy()
        xb[0, 0, 0, 0] = np.nan
        return xb

    with pytest.raises(ValueError, match="augment returned NaN/inf"):
        compiled().fit(*dataset(), batch_size=10, verbose=0, augment=poison)


def test_keyboard_interrupt_returns_the_history_so_far():
    x, y = dataset(40)

    class Interrupt(cb.Callback):
        def on_batch_end(self, step, logs=None):
            if self.model.train_state and self.model.train_state["epoch"] == 1 and step == 2:
                raise KeyboardInterrupt

    rec = Recorder()
    history = compiled().fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[Interrupt(), rec])
    assert history.interrupted and history.epoch == [0]
    assert rec.events[-1] == "train_end"


def test_stop_training_ends_after_the_epoch():
    class Stop(cb.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    x, y = dataset()
    assert compiled().fit(x, y, epochs=5, batch_size=10, verbose=0, callbacks=[Stop()]).epoch == [0, 1]


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(x=np.zeros((10, 6, 6))), ValueError, r"x must have shape \(N, 1, 6, 6\)"),
    (dict(x=np.zeros((10, 1, 6, 5))), ValueError, r"got \(10, 1, 6, 5\)"),
    (dict(y=np.zeros(9, int)), ValueError, "9 labels but x has 10"),
    (dict(y=np.full(10, 4)), ValueError, r"\[0, 4\)"),
    (dict(y=np.zeros(10)), TypeError, "integer class ids"),
    (dict(x=np.full((10, 1, 6, 6), np.inf)), ValueError, "finite"),
    (dict(x=np.zeros((0, 1, 6, 6)), y=np.zeros(0, int)), ValueError, "at least one"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=2.0), TypeError, "batch_size"),
    (dict(batch_size=11), ValueError, r"batch_size must be <= the number of training items \(10\)"),
    (dict(epochs=-1), ValueError, "epochs"),
    (dict(epochs=2, initial_epoch=3), ValueError, "initial_epoch"),
    (dict(verbose=3), ValueError, "verbose"),
    (dict(validation_data=np.zeros((2, 1, 6, 6))), ValueError, "validation_data"),
    (dict(validation_data=(np.zeros((2, 1, 6, 6)), np.array([0, 5]))), ValueError, "validation_data\\[1\\]"),
    (dict(callbacks=[print]), TypeError, "Callback"),
    (dict(augment=3), TypeError, "augment"),
])
def test_fit_argument_errors(kwargs, error, words):
    args = dict(x=np.zeros((10, 1, 6, 6), np.float32), y=np.zeros(10, int), epochs=1, batch_size=5, verbose=0)
    args.update(kwargs)
    with pytest.raises(error, match=words):
        compiled().fit(**args)


def test_batch_size_larger_than_data_allowed_without_drop_last():
    x, y = dataset(10)
    rec = Recorder()
    compiled().fit(x, y, epochs=1, batch_size=32, drop_last=False, verbose=0, callbacks=[rec])
    assert [s for _, s, _ in rec.batches] == [10]


def test_fit_needs_compile():
    with pytest.raises(RuntimeError, match="compile"):
        tiny().fit(*dataset(), verbose=0)


def test_bad_augment_output_is_reported():
    with pytest.raises(ValueError, match="augment must return"):
        compiled().fit(*dataset(), batch_size=10, verbose=0, augment=lambda xb, rng: xb[:, :, :5])


# ----------------------------------------------------------------------------- progress


def test_verbose_levels(capsys):
    x, y = dataset()
    compiled().fit(x, y, epochs=2, batch_size=10, verbose=0)
    assert capsys.readouterr().out == ""
    for verbose in (1, 2):  # not a terminal: one line per epoch either way, no bar
        compiled().fit(x, y, epochs=2, batch_size=10, verbose=verbose)
        out = capsys.readouterr().out
        lines = out.strip().splitlines()
        assert len(lines) == 2 and "\r" not in out
        assert re.match(r"epoch 1/2 - loss \d\.\d{4} - acc \d\.\d{4} - lr 0\.1 - img/s [\d,]+ - \d+\.\ds", lines[0])


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("use_tqdm", [True, False])
def test_progress_bar_on_a_terminal(use_tqdm, monkeypatch):
    import cnn.progress as progress
    if not use_tqdm:
        monkeypatch.setattr(progress, "_tqdm", lambda: None)
    elif progress._tqdm() is None:
        pytest.skip("tqdm not installed")
    stream = FakeTerminal()
    bar = EpochProgress(4, 0, 3, verbose=1, stream=stream)
    assert bar.mode == "bar"
    for step in range(4):
        bar.update(step, {"loss": 0.5, "accuracy": 0.75, "images_per_second": 1000.0})
    bar.close({"loss": 0.5, "accuracy": 0.75, "val_loss": 0.25}, 1.5)
    text = stream.getvalue()
    assert "epoch 1/3" in text and "4/4" in text and "val_loss 0.2500" in text
    assert EpochProgress(4, 0, 3, verbose=2, stream=FakeTerminal()).mode == "line"
    assert EpochProgress(4, 0, 3, verbose=0, stream=FakeTerminal()).mode == "off"


# ----------------------------------------------------------------------------- learning


def test_small_cnn_learns_mnist():
    from cnn.datasets import load_mnist
    (x, y), (xt, yt) = load_mnist()
    model = Sequential([
        layers.Conv2D(8, 3, padding="same", activation="relu"),
        layers.MaxPool2D(2),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPool2D(2),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ], input_shape=(1, 28, 28), seed=0)
    model.compile(loss="cross_entropy", optimizer=optimizers.SGD(lr=0.05, momentum=0.9))
    steps = []

    class Count(cb.Callback):
        def on_batch_end(self, step, logs=None):
            steps.append(step)

    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[Count()])
    assert len(steps) == 2 * (5000 // 32)  # 312 steps
    # held-out: the first 2,000 images of the official test set, never trained on
    assert model.evaluate(xt[:2000], yt[:2000])["accuracy"] >= 0.90


_RUN = """
import hashlib, json, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_trainer import compiled, dataset
x, y = dataset(60)
model = compiled(1)
h = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
digest = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()
print(json.dumps([digest, h.history["loss"]]))
"""


def test_same_seed_same_weights_across_processes(tmp_path):
    import json
    import pathlib
    import subprocess
    import sys
    tests = pathlib.Path(__file__).resolve().parent
    code = _RUN.format(tests=str(tests))
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           cwd=tmp_path, env=child_env()) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    assert json.loads(runs[0].stdout) == json.loads(runs[1].stdout)
