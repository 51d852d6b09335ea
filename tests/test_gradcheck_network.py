"""Whole networks: every parameter's gradient against float64 central differences of the
loss, through the fused softmax + cross-entropy path and the general (Jacobian) path."""

import numpy as np
import pytest
from conftest import numerical_grad

from cnn import layers
from cnn.sequential import Sequential


def loss_of(model, x, y, reset=None):
    """The training loss computed straight from the layers' forward outputs (no backward)."""
    if reset:
        reset()
    out = x
    for layer in model.layers:
        out = layer.forward(out, training=True)
    return model.loss.forward(out, y)


def check_network(model, x, y, reset=None):
    if reset:
        reset()
    loss, grads = model.compute_gradients(x, y)
    assert loss == pytest.approx(loss_of(model, x, y, reset), rel=1e-10)
    for key, p in model._named_params():
        num = numerical_grad(lambda: loss_of(model, x, y, reset), p)
        np.testing.assert_allclose(grads[key], num, rtol=1e-5, atol=1e-8, err_msg=key)
    return grads


def conv_net(seed=0, last_activation="softmax"):
    return Sequential([
        layers.Conv2D(3, 3, padding="same", activation="relu"),
        layers.MaxPool2D(2),
        layers.Conv2D(4, (2, 3), stride=(1, 2), padding=1, activation="tanh"),
        layers.Flatten(),
        layers.Dense(6, activation="sigmoid"),
        layers.Dense(5, activation=last_activation),
    ], input_shape=(2, 8, 8), seed=seed, dtype="float64")


@pytest.fixture
def data(rng):
    x = rng.standard_normal((4, 2, 8, 8))
    y = np.array([0, 3, 4, 1])
    return x, y


def test_conv_pool_flatten_dense_softmax_cross_entropy(data):
    model = conv_net().compile(loss="cross_entropy", optimizer="sgd")
    assert model.fused_softmax_cross_entropy
    check_network(model, *data)


def test_one_hot_labels_give_the_same_gradients(data):
    x, y = data
    model = conv_net().compile(loss="cross_entropy", optimizer="sgd")
    _, by_id = model.compute_gradients(x, y)
    _, by_row = model.compute_gradients(x, np.eye(5)[y])
    for key in by_id:
        np.testing.assert_allclose(by_row[key], by_id[key], rtol=1e-12, atol=1e-15)


def test_sigmoid_hidden_softmax_mse_the_seed_network(rng):
    # The seed's network: sigmoid hidden layers, softmax output, MSE (with the 1/2 and the
    # mean over n_L), which must go through softmax's Jacobian-vector product.
    model = Sequential([
        layers.Dense(7, activation="sigmoid"),
        layers.Dense(6, activation="sigmoid"),
        layers.Dense(4, activation="softmax"),
    ], input_shape=(5,), seed=1, dtype="float64").compile(loss="mse", optimizer="sgd")
    assert not model.fused_softmax_cross_entropy
    check_network(model, rng.standard_normal((6, 5)), np.array([0, 1, 2, 3, 2, 1]))


def test_seed_mse_gradient_by_hand(rng):
    # Independent of the loss module: C = 1/N sum_n 1/n_L sum_i 1/2 (yhat - y)^2, so with the
    # identity output layer dC/db = mean_n (yhat - y) / n_L and dC/dW = (yhat - y)^T x / (N n_L).
    model = Sequential([layers.Dense(3)], input_shape=(4,), seed=2, dtype="float64")
    model.compile(loss="mse", optimizer="sgd")
    x, t = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    _, grads = model.compute_gradients(x, t)
    w, b = model.layers[0].params
    err = x @ w.T + b - t
    np.testing.assert_allclose(grads["0.bias"], err.sum(0) / (5 * 3), rtol=1e-12)
    np.testing.assert_allclose(grads["0.weight"], err.T @ x / (5 * 3), rtol=1e-12)


def test_fused_and_general_paths_agree(data):
    x, y = data
    model = conv_net().compile(loss="cross_entropy", optimizer="sgd")
    loss_fused, fused = model.compute_gradients(x, y)
    model._fused = False  # force softmax backward (Jacobian) + cross-entropy on probabilities
    loss_general, general = model.compute_gradients(x, y)
    assert loss_general == pytest.approx(loss_fused, rel=1e-12)
    for key in fused:
        np.testing.assert_allclose(general[key], fused[key], rtol=1e-9, atol=1e-14, err_msg=key)


def test_separate_softmax_layer_takes_the_fused_path(rng):
    model = Sequential([
        layers.Flatten(),
        layers.Dense(5, activation="tanh"),
        layers.Dense(3),
        layers.Activation("softmax"),
    ], input_shape=(2, 2, 2), seed=3, dtype="float64").compile(loss="cross_entropy", optimizer="sgd")
    assert model.fused_softmax_cross_entropy
    check_network(model, rng.standard_normal((4, 2, 2, 2)), np.array([2, 0, 1, 1]))


def test_network_with_dropout(rng):
    model = Sequential([
        layers.Conv2D(2, 3, activation="relu"),
        layers.Flatten(),
        layers.Dropout(0.3),
        layers.Dense(3, activation="softmax"),
    ], input_shape=(1, 5, 5), seed=4, dtype="float64").compile(loss="cross_entropy", optimizer="sgd")
    saved = model.rng.bit_generator.state

    def reset():  # the same dropout mask for every evaluation
        model.rng.bit_generator.state = saved

    check_network(model, rng.standard_normal((3, 1, 5, 5)), np.array([0, 2, 1]), reset)


def _relu_net(fused, seed=0):
    """Conv and Dense with ReLU fused into the kernels, or as separate Activation layers."""
    def block(layer, **kw):
        if fused:
            return [layer(activation="relu", **kw)]
        return [layer(activation=None, **kw), layers.Activation("relu")]
    stack = (block(lambda **kw: layers.Conv2D(3, 3, padding="same", **kw))
             + [layers.MaxPool2D(2), layers.Flatten()]
             + block(lambda **kw: layers.Dense(6, **kw))
             + [layers.Dense(5, activation="softmax")])
    return Sequential(stack, input_shape=(2, 8, 8), seed=seed, dtype="float64")


def test_fused_relu_gives_the_same_gradients_as_a_separate_activation(data):
    x, y = data
    fused = _relu_net(True).compile(loss="cross_entropy", optimizer="sgd")
    plain = _relu_net(False).compile(loss="cross_entropy", optimizer="sgd")
    plain.set_weights(fused.get_weights())
    loss_f, g_f = fused.compute_gradients(x, y)
    loss_p, g_p = plain.compute_gradients(x, y)
    assert loss_f == pytest.approx(loss_p, rel=1e-12)
    # Activation layers hold no parameters, so the two models' parameters pair up in order
    assert len(g_f) == len(g_p) == 6
    for (kf, vf), (kp, vp) in zip(g_f.items(), g_p.items()):
        np.testing.assert_allclose(vf, vp, rtol=1e-12, atol=1e-15, err_msg=f"{kf} vs {kp}")


def test_gradient_is_the_batch_mean(rng):
    model = conv_net().compile(loss="cross_entropy", optimizer="sgd")
    x = rng.standard_normal((1, 2, 8, 8))
    _, one = model.compute_gradients(x, np.array([2]))
    _, three = model.compute_gradients(np.repeat(x, 3, axis=0), np.array([2, 2, 2]))
    for key in one:
        np.testing.assert_allclose(three[key], one[key], rtol=1e-10, atol=1e-15)


def test_float32_gradients_close_to_float64(data):
    x, y = data
    m64 = conv_net().compile(loss="cross_entropy", optimizer="sgd")
    m32 = Sequential.from_config({**m64.get_config(), "dtype": "float32"})
    m32.set_weights(m64.get_weights())
    m32.compile(loss="cross_entropy", optimizer="sgd")
    _, g64 = m64.compute_gradients(x, y)
    _, g32 = m32.compute_gradients(x.astype(np.float32), y)
    for key in g64:
        assert g32[key].dtype == np.float32
        scale = np.abs(g64[key]).max()
        np.testing.assert_allclose(g32[key], g64[key], rtol=1e-4, atol=1e-5 * scale)


def test_against_torch(data):
    torch = pytest.importorskip("torch")
    x, y = data
    model = conv_net().compile(loss="cross_entropy", optimizer="sgd")
    _, grads = model.compute_gradients(x, y)
    p = {k: torch.tensor(v, requires_grad=True) for k, v in model.state_dict().items()}
    F = torch.nn.functional
    h = F.relu(F.conv2d(torch.tensor(x), p["0.weight"], p["0.bias"], padding=1))
    h = F.max_pool2d(h, 2)
    h = torch.tanh(F.conv2d(h, p["2.weight"], p["2.bias"], stride=(1, 2), padding=1))
    h = torch.sigmoid(h.flatten(1) @ p["4.weight"].T + p["4.bias"])
    z = h @ p["5.weight"].T + p["5.bias"]
    F.cross_entropy(z, torch.tensor(y)).backward()
    for key, t in p.items():
        np.testing.assert_allclose(grads[key], t.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=key)
