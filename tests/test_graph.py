"""Graph models (Keras' functional API): residual and branching networks against float64 finite
differences, shared layers, Sequential as the chain case, the model API on a graph (fit,
evaluate, predict, summary, save/load, checkpoints and resume), and bad graphs."""

import numpy as np
import pytest
from conftest import numerical_grad

import cnn
from cnn import layers
from cnn.graph import Node

# ----------------------------------------------------------------------------- networks


def residual_net(seed=0, dtype="float64", classes=5):
    """conv -> relu -> conv -> add -> relu, twice (the second block with its own shortcut),
    then flatten and dense. Returns the model and its layers by name (for the oracles)."""
    inputs = cnn.Input((3, 6, 6))
    stem = layers.Conv2D(4, 3, padding="same", activation="relu")
    h = stem(inputs)
    named = {"stem": stem}
    for b in range(2):
        c1 = layers.Conv2D(4, 3, padding="same", activation="relu")
        c2 = layers.Conv2D(4, 3, padding="same")
        add = layers.Add()
        act = layers.Activation("relu")
        h = act(add([h, c2(c1(h))]))
        named.update({f"c1_{b}": c1, f"c2_{b}": c2, f"add_{b}": add, f"act_{b}": act})
    flat, dense = layers.Flatten(), layers.Dense(classes, activation="softmax")
    named.update(flat=flat, dense=dense)
    model = cnn.Model(inputs, dense(flat(h)), seed=seed, dtype=dtype, name="resnet")
    return model, named


def residual_forward(named, x):
    """The residual net written out by hand (training mode): the oracle's forward."""
    h = named["stem"].forward(x, True)
    for b in range(2):
        branch = named[f"c2_{b}"].forward(named[f"c1_{b}"].forward(h, True), True)
        h = np.maximum(h + branch, 0)
    return named["dense"].forward(named["flat"].forward(h, True), True)


@pytest.fixture
def batch(rng):
    return rng.standard_normal((4, 3, 6, 6)), np.array([0, 3, 4, 1])


def check_gradients(model, loss_fn, x, y):
    loss, grads = model.compute_gradients(x, y)
    assert loss == pytest.approx(loss_fn(), rel=1e-10)
    for key, p in model.named_params():
        num = numerical_grad(loss_fn, p)
        np.testing.assert_allclose(grads[key], num, rtol=1e-5, atol=1e-8, err_msg=key)
    return grads


def test_residual_network_gradients_match_finite_differences(batch):
    x, y = batch
    model, named = residual_net()
    model.compile(loss="cross_entropy", optimizer="sgd")
    assert not model._chain
    assert model.fused_softmax_cross_entropy
    loss = cnn.losses.CrossEntropy()
    grads = check_gradients(model, lambda: loss.forward(residual_forward(named, x), y), x, y)
    # the shortcut carries gradient: the stem's weights get more than through the branch alone
    assert np.abs(grads["0.weight"]).max() > 0


def test_residual_network_through_the_general_mse_path(batch):
    x, y = batch
    model, named = residual_net()
    model.compile(loss="mse", optimizer="sgd")
    assert not model.fused_softmax_cross_entropy
    loss = cnn.losses.MeanSquaredError()
    check_gradients(model, lambda: loss.forward(residual_forward(named, x), y), x, y)


def bn_residual_net(seed=0):
    """The issue's network: conv -> BN -> ReLU -> conv -> BN -> add -> ReLU, twice, then global
    average pooling and dense; with the layers by name for the oracle."""
    inputs = cnn.Input((3, 6, 6))
    named = {}
    h = inputs
    for b in range(2):
        c1, n1 = layers.Conv2D(3, 3, padding="same", use_bias=False), layers.BatchNormalization()
        c2, n2 = layers.Conv2D(3, 3, padding="same", use_bias=False), layers.BatchNormalization()
        branch = n2(c2(layers.Activation("relu")(n1(c1(h)))))
        h = layers.Activation("relu")(layers.Add()([h, branch]))
        named.update({f"c1_{b}": c1, f"n1_{b}": n1, f"c2_{b}": c2, f"n2_{b}": n2})
    gap, dense = layers.GlobalAvgPool2D(), layers.Dense(4, activation="softmax")
    named.update(gap=gap, dense=dense)
    model = cnn.Model(inputs, dense(gap(h)), seed=seed, dtype="float64")
    return model, named


def test_bn_residual_network_gradients_match_finite_differences(rng):
    x, y = rng.standard_normal((5, 3, 6, 6)), np.array([0, 3, 1, 2, 3])
    model, named = bn_residual_net()
    model.compile(loss="cross_entropy", optimizer="sgd")
    loss = cnn.losses.CrossEntropy()

    def oracle():
        h = x
        for b in range(2):
            t = named[f"n1_{b}"].forward(named[f"c1_{b}"].forward(h, True), True)
            t = named[f"n2_{b}"].forward(named[f"c2_{b}"].forward(np.maximum(t, 0), True), True)
            h = np.maximum(h + t, 0)
        return loss.forward(named["dense"].forward(h.mean(axis=(2, 3)), True), y)

    grads = check_gradients(model, oracle, x, y)
    assert {k.rsplit(".", 1)[1] for k in grads} == {"weight", "bias"}
    assert len(grads) == 4 * 2 * 2 - 4 + 2   # 4 convs (weight only), 4 BNs (weight, bias), dense


def test_concatenate_and_a_shared_layer(rng):
    """x -> [conv a, conv b] -> concatenate -> flatten -> shared dense twice -> dense."""
    inputs = cnn.Input((2, 5, 5))
    a = layers.Conv2D(3, 3, activation="tanh")
    b = layers.Conv2D(2, 2)
    cat = layers.Concatenate(axis=0)
    flat = layers.Flatten()
    shared = layers.Dense(12, activation="tanh")
    head = layers.Dense(4, activation="softmax")
    h = flat(cat([a(inputs), b(layers.MaxPool2D(2, stride=1, padding="valid")(inputs))]))
    assert h.shape == (5 * 3 * 3,)
    first = layers.Dense(12, activation="tanh")
    out = head(shared(shared(first(h))))
    model = cnn.Model(inputs, out, seed=1, dtype="float64")
    model.compile(loss="cross_entropy", optimizer="sgd")
    x, y = rng.standard_normal((3, 2, 5, 5)), np.array([0, 3, 1])
    pool = model.layers[2] if isinstance(model.layers[2], layers.MaxPool2D) else \
        next(layer for layer in model.layers if isinstance(layer, layers.MaxPool2D))
    loss = cnn.losses.CrossEntropy()

    def oracle():
        ha = a.forward(x, True)
        hb = b.forward(pool.forward(x, True), True)
        h = np.concatenate([ha, hb], axis=1).reshape(3, -1)
        return loss.forward(head.forward(shared.forward(shared.forward(first.forward(h, True), True), True), True), y)

    grads = check_gradients(model, oracle, x, y)
    assert len([k for k in grads if k.endswith("weight")]) == 5  # the shared Dense once
    assert "(shared)" in model.summary(print_fn=None)


def test_a_chain_model_equals_sequential_bit_for_bit(rng):
    def stack():
        return [layers.Conv2D(4, 3, padding="same", activation="relu"), layers.MaxPool2D(2),
                layers.Flatten(), layers.Dropout(0.2), layers.Dense(10, activation="softmax")]
    seq = cnn.Sequential(stack(), input_shape=(1, 8, 8), seed=3)
    inputs = cnn.Input((1, 8, 8))
    h = inputs
    for layer in stack():
        h = layer(h)
    graph = cnn.Model(inputs, h, seed=3)
    for m in (seq, graph):
        m.compile(loss="cross_entropy", optimizer=cnn.optimizers.Adam(lr=0.01))
    for a, b in zip(seq.get_weights(), graph.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = rng.random((40, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    h1 = seq.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=5)
    h2 = graph.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=5)
    assert h1.history["loss"] == h2.history["loss"]
    for a, b in zip(seq.get_weights(), graph.get_weights()):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- the model API


@pytest.fixture(scope="module")
def cifar_like():
    rng = np.random.default_rng(7)
    x = rng.random((48, 3, 6, 6)).astype(np.float32)
    y = (x[:, 0].mean(axis=(1, 2)) > 0.5).astype(np.int64) + 2 * (x[:, 1, :3].mean(axis=(1, 2)) > 0.5)
    return x, y


def test_graph_model_fit_evaluate_predict_save_load(tmp_path, cifar_like):
    x, y = cifar_like
    model, _ = residual_net(dtype="float32", classes=4)
    model.compile(loss="cross_entropy", optimizer=cnn.optimizers.Adam(lr=0.01))
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0, validation_data=(x, y))
    assert history.history["loss"][-1] < history.history["loss"][0]
    result = model.evaluate(x, y)
    assert result["accuracy"] == pytest.approx(history.history["val_accuracy"][-1])
    text = model.summary(print_fn=None)
    assert "Inputs" in text
    add_rows = [row for row in text.splitlines() if row.split()[1:2] == ["Add()"]]
    assert [row.split()[-2:] for row in add_rows] == [["#0,", "#2"], ["#4,", "#6"]]
    path = tmp_path / "res.npz"
    model.save(path)
    loaded = cnn.load_model(path)
    assert type(loaded) is cnn.Model
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    for (k1, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2
        np.testing.assert_array_equal(a, b)
    assert loaded.get_config() == model.get_config()


def test_graph_model_resumes_from_a_checkpoint_bit_for_bit(tmp_path, cifar_like):
    x, y = cifar_like

    def make():
        model, _ = residual_net(dtype="float32", classes=4)
        return model.compile(loss="cross_entropy", optimizer=cnn.optimizers.SGD(lr=0.05, momentum=0.9))

    straight = make()
    straight.fit(x, y, epochs=3, batch_size=8, verbose=0)
    first = make()
    first.fit(x, y, epochs=2, batch_size=8, verbose=0,
              callbacks=[cnn.ModelCheckpoint(str(tmp_path / "g{epoch}.npz"))])
    resumed = cnn.load_model(tmp_path / "g2.npz")
    resumed.fit(x, y, epochs=3, batch_size=8, verbose=0, initial_epoch=2)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_layer_hooks_report_calls_in_plan_order(cifar_like):
    x, y = cifar_like
    model, _ = residual_net(dtype="float32", classes=4)
    model.compile(loss="cross_entropy", optimizer="sgd")
    events = []
    model.register_layer_hook(lambda e, i, layer: events.append((e, i)))
    model.train_step(x[:4], y[:4])
    n = len(model._steps)
    assert [i for e, i in events if e == "forward_end"] == list(range(n))
    assert [i for e, i in events if e == "backward_end"] == list(range(n - 1, -1, -1))


# ----------------------------------------------------------------------------- bad graphs


def test_disconnected_inputs_are_refused():
    a, b = cnn.Input((4,)), cnn.Input((4,))
    out = layers.Add()([layers.Dense(3)(a), layers.Dense(3)(b)])
    with pytest.raises(ValueError, match="graph disconnected"):
        cnn.Model(a, out)


def test_shape_mismatches_at_add_and_concatenate():
    x = cnn.Input((2, 6, 6))
    with pytest.raises(ValueError, match=r"Add needs inputs of one shape.*\(2, 6, 6\).*\(3, 6, 6\)"):
        layers.Add()([x, layers.Conv2D(3, 3, padding="same")(x)])
    with pytest.raises(ValueError, match="agree on every axis but 0"):
        layers.Concatenate()([x, layers.Conv2D(3, 3)(x)])
    with pytest.raises(ValueError, match="out of range"):
        layers.Concatenate(axis=3)([x, x])
    with pytest.raises(TypeError, match="list of at least 2"):
        layers.Add()(x)


def test_a_layer_reused_with_another_input_shape_is_refused():
    x = cnn.Input((3, 8, 8))
    conv = layers.Conv2D(3, 3, padding="same")
    conv(x)
    with pytest.raises(ValueError, match="shared layer must see one input shape"):
        conv(layers.MaxPool2D(2)(x))


def test_a_cycle_is_refused():
    x = cnn.Input((4,))
    d1, d2 = layers.Dense(4), layers.Dense(4)
    h = d1(x)
    out = d2(h)
    # rewire by hand (the API cannot express this): d1 now reads d2's output
    h.node.inputs = [out]
    with pytest.raises(ValueError, match="graph disconnected|cycle"):
        cnn.Model(x, out)
    node = Node(d2, [x], (4,))
    node.inputs = [node.output]
    with pytest.raises(ValueError, match="cycle"):
        cnn.graph.plan(x, node.output)


def test_output_equal_to_input_and_wrong_arguments():
    x = cnn.Input((4,))
    with pytest.raises(ValueError, match="at least one layer"):
        cnn.Model(x, x)
    with pytest.raises(TypeError, match="inputs must be one cnn.Input"):
        cnn.Model(layers.Dense(2)(x), layers.Dense(2)(x))
    with pytest.raises(TypeError, match="outputs must be the symbolic tensor"):
        cnn.Model(x, np.zeros(3))
    with pytest.raises(TypeError, match="use it in a graph model"):
        cnn.Sequential([layers.Add()])


def test_a_tampered_graph_config_is_refused():
    model, _ = residual_net(dtype="float32")
    config = model.get_config()
    config["calls"][1]["inputs"] = [5]   # reads a later tensor
    with pytest.raises(ValueError, match="must list earlier tensors"):
        cnn.Model.from_config(config)
    config = model.get_config()
    config["calls"][0]["layer"] = 99
    with pytest.raises(ValueError, match="index into the"):
        cnn.Model.from_config(config)
