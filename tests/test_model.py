"""Sequential: building, inference against plain NumPy, train_step, weights, summary, and
save/load (round trip, atomic writes, and every way a file can be wrong)."""

import json
import os
import pickle
import threading
import zipfile

import numpy as np
import pytest
from scipy.special import softmax as scipy_softmax

from cnn import layers, optimizers
from cnn.sequential import Sequential
from cnn.serialization import load_model


def small_cnn(seed=0, dtype="float32"):
    return Sequential([
        layers.Conv2D(4, 3, padding="same", activation="relu"),
        layers.MaxPool2D(2),
        layers.Flatten(),
        layers.Dropout(0.2),
        layers.Dense(10, activation="softmax"),
    ], input_shape=(1, 8, 8), seed=seed, dtype=dtype)


def mlp(seed=0, dtype="float64"):
    return Sequential([layers.Dense(6, activation="relu"), layers.Dense(3, activation="softmax")],
                      input_shape=(4,), seed=seed, dtype=dtype)


# ----------------------------------------------------------------------------- construction


def test_same_seed_same_weights_and_add_equals_list():
    a = small_cnn(seed=3)
    b = Sequential(input_shape=None, seed=3)
    for layer in small_cnn(seed=99).layers:
        b.add(type(layer).from_config(layer.get_config()))
    b.build((1, 8, 8))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    c = small_cnn(seed=4)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


def test_add_after_build_builds_the_layer():
    model = Sequential([layers.Flatten()], input_shape=(2, 3, 3), seed=0)
    model.add(layers.Dense(5))
    assert model.layers[-1].built and model.output_shape == (5,)
    assert model.layers[1].need_input_grad is False  # nothing trainable before it


def test_failed_add_leaves_the_model_unchanged():
    model = Sequential([layers.Conv2D(2, 3)], input_shape=(1, 5, 5), seed=0)
    with pytest.raises(ValueError, match="layer 1 .*Flatten"):
        model.add(layers.Dense(3))
    assert len(model.layers) == 1 and model.output_shape == (2, 3, 3)


def test_first_trainable_layer_skips_input_gradient():
    model = small_cnn()
    assert [layer.need_input_grad for layer in model.layers] == [False, True, True, True, True]


def test_lazy_build_from_data(rng):
    model = Sequential([layers.Flatten(), layers.Dense(3, activation="softmax")], seed=0)
    assert not model.built
    out = model.predict(rng.random((2, 2, 2, 2)))
    assert model.built and model.input_shape == (2, 2, 2) and out.shape == (2, 3)


@pytest.mark.parametrize("make, error, words", [
    (lambda: Sequential([layers.Dense(3), "relu"]), TypeError, "Layer"),
    (lambda: Sequential(layers.Dense(3)), TypeError, "iterable"),
    (lambda: Sequential([layers.Dense(3)], seed=-1), ValueError, "seed"),
    (lambda: Sequential([layers.Dense(3)], seed=1.5), TypeError, "seed"),
    (lambda: Sequential([layers.Dense(3)], dtype="int32"), TypeError, "dtype"),
    (lambda: Sequential([], input_shape=(3,)), ValueError, "without layers"),
    (lambda: Sequential([layers.Conv2D(2, 3), layers.Dense(3)], input_shape=(1, 5, 5)), ValueError,
     "layer 1 .*Flatten"),
    (lambda: Sequential([layers.Dense(3)], input_shape=(0,)), ValueError, "input_shape"),
])
def test_construction_errors(make, error, words):
    with pytest.raises(error, match=words):
        make()


def test_same_layer_twice_is_rejected():
    d = layers.Dense(3)
    with pytest.raises(ValueError, match="already in this model"):
        Sequential([d, d])


# ----------------------------------------------------------------------------- inference


def test_predict_and_evaluate_match_plain_numpy(rng):
    model = mlp().compile(loss="cross_entropy", optimizer="sgd")
    x, y = rng.standard_normal((10, 4)), rng.integers(0, 3, 10)
    w1, b1, w2, b2 = model.get_weights()
    probs = scipy_softmax(np.maximum(x @ w1.T + b1, 0) @ w2.T + b2, axis=1)
    np.testing.assert_allclose(model.predict(x, batch_size=3), probs, rtol=1e-12)
    result = model.evaluate(x, y, batch_size=4)
    assert result["loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(10), y])), rel=1e-10)
    assert result["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == y))
    assert model.evaluate(x, np.eye(3)[y]) == pytest.approx(result)


def test_predict_is_independent_of_batch_size_and_dropout_is_off(rng):
    model = small_cnn()
    x = rng.random((9, 1, 8, 8)).astype(np.float32)
    a = model.predict(x, batch_size=2)
    b = model.predict(x, batch_size=256)
    assert a.dtype == np.float32 and a.shape == (9, 10)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    np.testing.assert_allclose(a.sum(axis=1), 1, rtol=1e-5)


def test_predict_casts_integer_images(rng):
    model = small_cnn()
    x = rng.integers(0, 2, (3, 1, 8, 8))
    np.testing.assert_allclose(model.predict(x), model.predict(x.astype(np.float32)))


def test_predict_from_two_threads(rng):
    model = small_cnn()
    xs = [rng.random((64, 1, 8, 8)).astype(np.float32) for _ in range(2)]
    want = [model.predict(x, batch_size=8) for x in xs]
    got = [None, None]

    def work(i):
        for _ in range(5):
            got[i] = model.predict(xs[i], batch_size=8)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("call, error, words", [
    (lambda m: m.predict(np.zeros((2, 8, 8))), ValueError, r"shape \(N, 1, 8, 8\)"),
    (lambda m: m.predict(np.zeros((2, 1, 8, 7))), ValueError, "got \\(2, 1, 8, 7\\)"),
    (lambda m: m.predict(np.full((1, 1, 8, 8), np.nan)), ValueError, "finite"),
    (lambda m: m.predict(np.zeros((1, 1, 8, 8)), batch_size=0), ValueError, "batch_size"),
    (lambda m: m.predict(np.array([["a"]])), TypeError, "numeric"),
    (lambda m: m.evaluate(np.zeros((2, 1, 8, 8)), np.array([1, 10])), ValueError, r"\[0, 10\)"),
    (lambda m: m.evaluate(np.zeros((2, 1, 8, 8)), np.array([1])), ValueError, "1 labels but x has 2"),
    (lambda m: m.evaluate(np.zeros((2, 1, 8, 8)), np.array([1.0, 2.0])), TypeError, "integer class ids"),
    (lambda m: m.evaluate(np.zeros((2, 1, 8, 8)), np.zeros((2, 9))), ValueError, r"\(N, 10\)"),
    (lambda m: m.evaluate(np.zeros((0, 1, 8, 8)), np.zeros(0, int)), ValueError, "at least one"),
])
def test_inference_errors(call, error, words):
    model = small_cnn().compile(loss="cross_entropy", optimizer="sgd")
    with pytest.raises(error, match=words):
        call(model)


# ----------------------------------------------------------------------------- training step


def test_train_step_is_one_sgd_step(rng):
    model = mlp().compile(loss="cross_entropy", optimizer=optimizers.SGD(lr=0.1))
    x, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    before = model.state_dict()
    loss_g, grads = model.compute_gradients(x, y)
    loss = model.train_step(x, y)
    assert isinstance(loss, float) and loss == pytest.approx(loss_g, rel=1e-12)
    after = model.state_dict()
    for key in before:
        np.testing.assert_allclose(after[key], before[key] - 0.1 * grads[key], rtol=1e-12, atol=1e-15)


def test_train_step_reduces_the_loss(rng):
    model = small_cnn().compile(loss="cross_entropy", optimizer=optimizers.SGD(lr=0.1, momentum=0.9))
    x = rng.random((16, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    first = model.train_step(x, y)
    for _ in range(60):
        last = model.train_step(x, y)
    assert last < first / 2


def test_train_step_checks_values_every_call(rng):
    model = small_cnn().compile(loss="cross_entropy", optimizer="sgd")
    x = rng.random((4, 1, 8, 8)).astype(np.float32)
    y = np.array([1, 2, 3, 4])
    model.train_step(x, y)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        model.train_step(x, np.array([1, 2, 3, 10]))   # same shapes: the cached path
    x[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="finite"):
        model.train_step(x, y)
    with pytest.raises(ValueError, match="xb must have shape"):
        model.train_step(x[:, 0], y)
    with pytest.raises(ValueError, match="empty"):
        model.train_step(x[:0], y[:0])


def test_train_step_with_one_item(rng):
    model = small_cnn().compile(loss="mse", optimizer="sgd")
    before = model.get_weights()[0].copy()
    loss = model.train_step(rng.random((1, 1, 8, 8)), np.array([7]))
    assert np.isfinite(loss) and not np.array_equal(model.get_weights()[0], before)


def test_train_step_needs_compile():
    with pytest.raises(RuntimeError, match="compile"):
        small_cnn().train_step(np.zeros((1, 1, 8, 8), np.float32), np.array([0]))


def conv_only(input_shape=(1, 8, 8)):
    """A model whose output is (N, 2, 3, 3): no Flatten + Dense at the end."""
    return Sequential([layers.Conv2D(2, 3, activation="relu"), layers.MaxPool2D(2)],
                      input_shape=input_shape, seed=0)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_compile_refuses_an_output_the_loss_cannot_take(loss):
    model = conv_only()
    with pytest.raises(ValueError, match=rf"^compile: the {loss} loss needs outputs of shape \(N, classes\), "
                                         rf"got \(N, 2, 3, 3\) from this model's last layer, MaxPool2D\(\); "
                                         rf"end the model with Flatten\(\) and Dense\(classes\)$"):
        model.compile(loss=loss)
    assert not model.compiled and model.loss is None  # left as it was
    model.add(layers.Flatten()).add(layers.Dense(3, activation="softmax"))
    model.compile(loss=loss)  # now (N, 3): fine
    assert model.output_shape == (3,)
    assert np.isfinite(model.train_step(np.ones((2, 1, 8, 8)), np.array([0, 2])))


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_an_output_the_loss_cannot_take_is_named_on_first_use_when_built_late(loss, rng):
    """Without input_shape compile cannot see the output shape; the first call that needs the
    loss says what is wrong (instead of a y-shape or y_pred error), and predict still works."""
    model = Sequential([layers.Conv2D(2, 3, activation="relu"), layers.MaxPool2D(2)], seed=0)
    model.compile(loss=loss)
    x, y = rng.random((4, 1, 8, 8)), np.array([0, 1, 0, 1])
    words = rf"the {loss} loss needs outputs of shape \(N, classes\), got \(N, 2, 3, 3\) from " \
            rf"this model's last layer, MaxPool2D\(\); end the model with Flatten\(\) and Dense\(classes\)"
    targets = np.zeros((4, 2, 3, 3))  # targets of the output's own shape do not help either
    for what, call in [("train_step", lambda: model.train_step(x, y)),
                       ("train_step", lambda: model.train_step(x, targets)),
                       ("fit", lambda: model.fit(x, y, batch_size=2, verbose=0)),
                       ("evaluate", lambda: model.evaluate(x, y)),
                       ("compute_gradients", lambda: model.compute_gradients(x, y))]:
        with pytest.raises(ValueError, match=f"^{what}: {words}$"):
            call()
    assert model.predict(x).shape == (4, 2, 3, 3)


def test_a_saved_model_whose_output_cannot_feed_its_loss_still_loads(tmp_path, rng):
    model = Sequential([layers.Conv2D(2, 3), layers.MaxPool2D(2)], seed=0).compile(loss="mse")
    x = rng.random((4, 1, 8, 8))
    want = model.predict(x)  # builds it: compile could not check
    model.save(tmp_path / "m.npz")
    again = load_model(tmp_path / "m.npz")
    assert again.compiled
    np.testing.assert_array_equal(again.predict(x), want)
    with pytest.raises(ValueError, match=r"^train_step: the mse loss needs outputs of shape \(N, classes\)"):
        again.train_step(x, np.zeros((4, 2, 3, 3)))


def test_a_loss_without_output_requirements_is_not_refused():
    from cnn import losses

    class SumLoss(losses.Loss):
        name = "sum"

        def forward(self, y_pred, y_true):
            return float(y_pred.sum() / y_pred.shape[0])

        def backward(self, y_pred, y_true):
            return np.full_like(y_pred, 1.0 / y_pred.shape[0])

    model = conv_only().compile(loss=SumLoss())
    assert np.isfinite(model.train_step(np.ones((2, 1, 8, 8)), np.zeros((2, 2, 3, 3))))


def test_fused_path_selection():
    assert mlp().compile(loss="cross_entropy").fused_softmax_cross_entropy
    assert not mlp().compile(loss="mse").fused_softmax_cross_entropy
    sig = Sequential([layers.Dense(3, activation="sigmoid")], input_shape=(2,), seed=0)
    assert not sig.compile(loss="cross_entropy").fused_softmax_cross_entropy


# ----------------------------------------------------------------------------- weights / summary


def test_weights_round_trip_and_errors():
    model, other = small_cnn(seed=1), small_cnn(seed=2)
    other.set_weights(model.get_weights())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[key], value)
    assert list(model.state_dict()) == ["0.weight", "0.bias", "4.weight", "4.bias"]
    with pytest.raises(ValueError, match="4 arrays"):
        model.set_weights(model.get_weights()[:3])
    bad = model.get_weights()
    bad[2] = bad[2][:, :5]
    with pytest.raises(ValueError, match="4.weight"):
        model.set_weights(bad)
    with pytest.raises(ValueError, match=r"missing keys \['4.bias'\], unexpected keys \['9.weight'\]"):
        state = model.state_dict()
        state["9.weight"] = state.pop("4.bias")
        model.load_state_dict(state)


def test_summary_counts_parameters():
    model = Sequential([
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPool2D(2),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPool2D(2),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ], input_shape=(1, 28, 28), seed=0)
    printed = []
    text = model.summary(print_fn=printed.append)
    assert printed == [text]
    total = (32 * 9 + 32) + (64 * 32 * 9 + 64) + (64 * 7 * 7 * 128 + 128) + (128 * 10 + 10)
    assert f"Total params: {total:,}" in text
    for shape in ("(None, 32, 28, 28)", "(None, 64, 7, 7)", "(None, 3136)", "(None, 10)"):
        assert shape in text
    assert "Conv2D(32, 3, padding='same', activation='relu')" in text
    assert model.count_params() == total


def test_summary_needs_a_built_model():
    with pytest.raises(ValueError, match="input_shape"):
        Sequential([layers.Dense(2)]).summary()


# ----------------------------------------------------------------------------- save / load


def trained_model(rng):
    model = small_cnn(seed=5).compile(loss="cross_entropy", optimizer=optimizers.Adam(lr=1e-2))
    x = rng.random((16, 1, 8, 8)).astype(np.float32)
    model.train_step(x, rng.integers(0, 10, 16))
    return model, x


def test_save_load_round_trip(tmp_path, rng):
    model, x = trained_model(rng)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.get_config() == model.get_config()
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.loss.get_config() == model.loss.get_config()
    for key, value in model.optimizer.state_dict().items():
        np.testing.assert_array_equal(loaded.optimizer.state_dict()[key], value)
    assert loaded.rng.bit_generator.state == model.rng.bit_generator.state
    # the same next step from both
    y = np.arange(16) % 10
    assert loaded.train_step(x, y) == model.train_step(x, y)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_load_without_optimizer(tmp_path, rng):
    model, x = trained_model(rng)
    model.save(tmp_path / "w.npz", include_optimizer=False)
    loaded = load_model(tmp_path / "w.npz")
    assert not loaded.compiled
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_file_is_plain_npz_without_pickle(tmp_path, rng):
    model, _ = trained_model(rng)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        arch = json.loads(f["architecture"].tobytes().decode())
        assert arch["layers"][0] == {"class_name": "Conv2D", "config": model.layers[0].get_config()}
        assert f["layers.0.weight"].shape == (4, 1, 3, 3)
        assert "optimizer.m.0" in f.files and "optimizer.iterations" in f.files
        assert all(f[k].dtype != object for k in f.files)


def test_save_is_atomic(tmp_path, rng, monkeypatch):
    model, x = trained_model(rng)
    path = tmp_path / "m.npz"
    model.save(path)
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", explode)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]  # no temp file left behind


def _rewrite(src, dst, change):
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    np.savez(dst, **arrays)


def _with_input_shape(arch, shape):
    config = json.loads(arch.tobytes().decode())
    config["input_shape"] = shape
    return np.frombuffer(json.dumps(config).encode(), np.uint8)


@pytest.mark.parametrize("change, words", [
    (lambda a: a.pop("layers.4.bias"), r"missing \['layers.4.bias'\]"),
    (lambda a: a.update({"layers.7.weight": np.zeros(3)}), r"unexpected \['layers.7.weight'\]"),
    (lambda a: (a.pop("layers.0.bias"), a.update({"extra": np.zeros(1)})),
     r"missing \['layers.0.bias'\], unexpected \['extra'\]"),
    (lambda a: a.update({"layers.4.weight": np.zeros((10, 63), np.float32)}), r"shape \(10, 63\)"),
    (lambda a: a.update({"layers.4.weight": a["layers.4.weight"].astype(np.float64)}), "dtype float64"),
    (lambda a: a["layers.0.weight"].__setitem__((0, 0, 0, 0), np.nan), "NaN"),
    (lambda a: a.update({"architecture": np.frombuffer(b"{not json", np.uint8)}), "valid JSON"),
    (lambda a: a.update({"architecture": np.frombuffer(json.dumps(
        {"name": "x", "input_shape": [1, 8, 8], "seed": 0, "dtype": "float32",
         "layers": [{"class_name": "Evil", "config": {}}]}).encode(), np.uint8)}), "Evil"),
    (lambda a: a.pop("architecture"), "missing array 'architecture'"),
    # a huge input makes 3.6e9 features for the Dense: refused before anything is allocated
    (lambda a: a.update({"architecture": _with_input_shape(a["architecture"], [1, 60000, 60000])}),
     r"bad 'architecture': Flatten of items of shape \(4, 30000, 30000\) gives 3600000000 features"),
    # a large one that BLAS can take: the weight in the file must have the architecture's shape
    (lambda a: a.update({"architecture": _with_input_shape(a["architecture"], [1, 2000, 2000])}),
     r"'layers.4.weight' has shape \(10, 64\), the architecture wants \(10, 4000000\)"),
    (lambda a: a.update({"architecture": np.frombuffer(json.dumps(
        {"name": "x", "input_shape": [1, 8, 8], "seed": 0, "dtype": "int8", "layers": []}).encode(),
        np.uint8)}), "dtype"),
    (lambda a: a.update({"optimizer.m.0": np.zeros((2, 2), np.float32)}), "optimizer.m.0"),
])
def test_tampered_files_are_rejected(tmp_path, rng, change, words):
    model, _ = trained_model(rng)
    model.save(tmp_path / "m.npz")
    _rewrite(tmp_path / "m.npz", tmp_path / "bad.npz", change)
    with pytest.raises(ValueError, match=words):
        load_model(tmp_path / "bad.npz")


def test_object_arrays_are_refused(tmp_path, rng):
    model, _ = trained_model(rng)
    model.save(tmp_path / "m.npz")
    _rewrite(tmp_path / "m.npz", tmp_path / "obj.npz",
             lambda a: a.update({"layers.0.bias": np.array([object()] * 4, dtype=object)}))
    with pytest.raises(ValueError, match="layers.0.bias"):
        load_model(tmp_path / "obj.npz")


def test_unreadable_files(tmp_path, rng):
    model, _ = trained_model(rng)
    model.save(tmp_path / "m.npz")
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.npz"):
        load_model(tmp_path / "cut.npz")
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="p.npz"):
        load_model(tmp_path / "p.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        load_model(tmp_path / "one.npy")
    with zipfile.ZipFile(tmp_path / "z.npz", "w") as z:
        z.writestr("architecture.npy", b"garbage")
    with pytest.raises(ValueError, match="z.npz"):
        load_model(tmp_path / "z.npz")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.npz")


def test_float64_model_round_trip(tmp_path, rng):
    model = mlp(dtype="float64")
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.dtype == np.float64
    x = rng.standard_normal((3, 4))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
