"""Layers: float64 finite-difference gradient checks, forward results against independent
oracles (scipy.signal, plain NumPy), shapes, configs, initialisation and bad input."""

import json

import numpy as np
import pytest
from conftest import distinct_values, naive_maxpool, numerical_grad, pads_conv, scipy_conv2d
from scipy.special import expit

from cnn import layers


def _built(layer, item_shape, seed=1, dtype=np.float64):
    layer.build(item_shape, rng=np.random.default_rng(seed), dtype=dtype)
    return layer


def check_layer_gradients(layer, x, rng, reset=None):
    """Compare ``backward`` with central differences of ``sum(forward(x) * g)`` for the input
    and every parameter. ``reset()`` is called before each forward (fixes dropout masks)."""
    reset = reset or (lambda: None)
    reset()
    out = layer.forward(x, training=True)
    g = rng.standard_normal(out.shape)

    def f():
        reset()
        return float(np.sum(layer.forward(x, training=True) * g))

    reset()
    layer.forward(x, training=True)
    dx = layer.backward(g)
    analytic = [p.copy() for p in layer.grads]
    np.testing.assert_allclose(dx, numerical_grad(f, x), rtol=1e-6, atol=1e-8)
    for name, p, a in zip(layer.param_names, layer.params, analytic):
        np.testing.assert_allclose(a, numerical_grad(f, p), rtol=1e-6, atol=1e-8,
                                   err_msg=f"gradient of {name}")


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("activation", [None, "sigmoid", "tanh", "relu", "leaky_relu", "softmax"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_gradients(activation, use_bias, rng):
    layer = _built(layers.Dense(4, activation=activation, use_bias=use_bias), (5,))
    check_layer_gradients(layer, rng.standard_normal((3, 5)), rng)


@pytest.mark.parametrize("kwargs, item", [
    (dict(filters=3, kernel_size=3), (2, 5, 6)),
    (dict(filters=2, kernel_size=3, padding="same", activation="relu"), (2, 5, 5)),
    (dict(filters=2, kernel_size=3, stride=2, padding=1, activation="tanh"), (3, 7, 6)),
    (dict(filters=3, kernel_size=(2, 3), stride=(2, 1), padding=(0, 1, 2, 0), use_bias=False), (2, 5, 5)),
    (dict(filters=2, kernel_size=2, stride=3, padding="same", activation="sigmoid"), (1, 7, 7)),
])
def test_conv2d_gradients(kwargs, item, rng):
    layer = _built(layers.Conv2D(**kwargs), item)
    check_layer_gradients(layer, rng.standard_normal((2,) + item), rng)


@pytest.mark.parametrize("kwargs, item", [
    (dict(size=2), (2, 5, 5)),                        # "tile" pads 5 -> 6
    (dict(size=3, stride=2, padding="valid"), (2, 7, 6)),  # overlapping windows
    (dict(size=(2, 3), stride=(1, 2), padding=1), (1, 4, 5)),
])
def test_maxpool_gradients(kwargs, item, rng):
    layer = _built(layers.MaxPool2D(**kwargs), item)
    # Values spaced 0.01 apart: no near-ties, so the finite differences never cross an argmax.
    check_layer_gradients(layer, distinct_values(rng, (2,) + item), rng)


def test_flatten_gradient_and_order(rng):
    layer = _built(layers.Flatten(), (2, 3, 4))
    x = rng.standard_normal((2, 2, 3, 4))
    out = layer.forward(x)
    # channels first, then rows (C order): item 1, channel 1, row 2, column 3
    assert out.shape == (2, 24)
    assert out[1, 1 * 12 + 2 * 4 + 3] == x[1, 1, 2, 3]
    check_layer_gradients(layer, x, rng)


@pytest.mark.parametrize("name", ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "softmax"])
def test_activation_layer_gradients(name, rng):
    layer = _built(layers.Activation(name), (6,))
    check_layer_gradients(layer, rng.standard_normal((3, 6)), rng)


def test_activation_layer_on_images(rng):
    layer = _built(layers.Activation("tanh"), (2, 3, 3))
    check_layer_gradients(layer, rng.standard_normal((2, 2, 3, 3)), rng)


def test_dropout_gradient_with_fixed_mask(rng):
    layer = layers.Dropout(0.4)
    gen = np.random.default_rng(7)
    _ = layer.build((3, 4), rng=gen, dtype=np.float64)
    saved = gen.bit_generator.state

    def reset():
        gen.bit_generator.state = saved

    check_layer_gradients(layer, rng.standard_normal((5, 3, 4)), rng, reset=reset)


def test_no_input_gradient_when_not_needed(rng):
    layer = _built(layers.Conv2D(2, 3, activation="relu"), (1, 5, 5))
    x = rng.standard_normal((2, 1, 5, 5))
    layer.forward(x, training=True)
    g = rng.standard_normal((2, 2, 3, 3))
    layer.backward(g)
    want = layer.grads[0].copy()
    layer.need_input_grad = False
    layer.forward(x, training=True)
    assert layer.backward(g) is None
    np.testing.assert_array_equal(layer.grads[0], want)


def test_gradient_buffers_are_reused(rng):
    layer = _built(layers.Dense(3, activation="relu"), (4,))
    ids = [id(g) for g in layer.grads]
    for _ in range(2):
        layer.forward(rng.standard_normal((2, 4)), training=True)
        layer.backward(rng.standard_normal((2, 3)))
    assert [id(g) for g in layer.grads] == ids


# ----------------------------------------------------------------------------- forward oracles


@pytest.mark.parametrize("kwargs", [
    dict(filters=4, kernel_size=3, padding="same", activation="relu"),
    dict(filters=3, kernel_size=(3, 2), stride=2, padding=(1, 0)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_forward_matches_scipy(kwargs, dtype, rng):
    layer = _built(layers.Conv2D(**kwargs), (2, 7, 6), dtype=dtype)
    layer.params[1][...] = rng.standard_normal(layer.params[1].shape)
    x = rng.standard_normal((3, 2, 7, 6)).astype(dtype)
    kh, kw = layer.kernel_size
    want = scipy_conv2d(x, layer.params[0], layer.params[1], pads_conv(kwargs.get("padding", "valid"), kh, kw),
                        layer.stride)
    if kwargs.get("activation") == "relu":
        want = np.maximum(want, 0)
    got = layer.forward(x)
    assert got.dtype == dtype and got.shape == (3,) + layer.output_shape
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


def test_dense_forward_matches_numpy(rng):
    layer = _built(layers.Dense(3, activation="sigmoid"), (4,))
    layer.params[1][...] = [0.5, -1.0, 2.0]
    x = rng.standard_normal((5, 4))
    want = expit(np.einsum("ij,nj->ni", layer.params[0], x) + layer.params[1])
    np.testing.assert_allclose(layer.forward(x), want, rtol=1e-12)


def test_maxpool_forward_matches_window_loop(rng):
    layer = _built(layers.MaxPool2D(3, stride=2, padding="tile"), (2, 7, 8))
    x = rng.standard_normal((2, 2, 7, 8))
    top = (3 - 1) // 2  # "tile" for stride < size pads so the windows end at the edge
    got = layer.forward(x)
    assert got.shape == (2,) + layer.output_shape
    # every output is the max of a 3x3 window of the -inf padded input
    want, _ = naive_maxpool(x, (3, 3), (2, 2), _tile_pads(7, 8, 3, 2))
    np.testing.assert_array_equal(got, want)
    assert top == 1


def _tile_pads(h, w, k, s):
    from cnn.functional import maxpool2d_padding
    return maxpool2d_padding("tile", (k, k), (s, s), (h, w))


def test_dropout_training_and_inference():
    layer = layers.Dropout(0.25)
    layer.build((1000,), rng=np.random.default_rng(3), dtype=np.float32)
    x = np.ones((20, 1000), dtype=np.float32)
    assert layer.forward(x, training=False) is x
    y = layer.forward(x, training=True)
    dropped = np.mean(y == 0)
    assert 0.23 < dropped < 0.27
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.75], rtol=1e-6)
    # the same generator state gives the same mask
    layer2 = layers.Dropout(0.25)
    layer2.build((1000,), rng=np.random.default_rng(3), dtype=np.float32)
    np.testing.assert_array_equal(layer2.forward(x, training=True), y)


# ----------------------------------------------------------------------------- shapes / config


@pytest.mark.parametrize("layer, item, want", [
    (layers.Conv2D(8, 3), (1, 28, 28), (8, 26, 26)),
    (layers.Conv2D(8, 3, padding="same"), (3, 28, 28), (8, 28, 28)),
    (layers.Conv2D(4, (3, 5), stride=2, padding=(1, 2)), (2, 9, 9), (4, 5, 5)),
    (layers.MaxPool2D(2), (4, 5, 5), (4, 3, 3)),
    (layers.MaxPool2D(2, padding="valid"), (4, 5, 5), (4, 2, 2)),
    (layers.MaxPool2D(3, stride=1, padding="valid"), (1, 5, 6), (1, 3, 4)),
    (layers.Flatten(), (3, 4, 5), (60,)),
    (layers.Dense(7), (60,), (7,)),
    (layers.Activation("relu"), (3, 4, 5), (3, 4, 5)),
    (layers.Dropout(0.5), (3, 4), (3, 4)),
])
def test_output_shapes(layer, item, want, rng):
    assert layer.compute_output_shape(item) == want
    layer.build(item, rng=np.random.default_rng(0))
    out = layer.forward(rng.standard_normal((2,) + item).astype(np.float32))
    assert out.shape == (2,) + want and out.dtype == np.float32


@pytest.mark.parametrize("layer", [
    layers.Dense(10, activation="softmax", use_bias=False, kernel_initializer="he_normal"),
    layers.Conv2D(16, (3, 5), stride=(1, 2), padding=(1, 2, 0, 0), activation="leaky_relu"),
    layers.Conv2D(8, 3, padding="same", activation={"name": "leaky_relu", "alpha": 0.2}),
    layers.MaxPool2D((2, 3), stride=1, padding="valid"),
    layers.Flatten(),
    layers.Activation("tanh"),
    layers.Dropout(0.3),
])
def test_config_round_trip(layer):
    config = json.loads(json.dumps(layers.serialize(layer)))
    clone = layers.deserialize(config)
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()
    assert repr(clone) == repr(layer)


def test_repr_shows_only_non_default_arguments():
    assert repr(layers.Conv2D(32, 3, padding="same", activation="relu")) == \
        "Conv2D(32, 3, padding='same', activation='relu')"
    assert repr(layers.Dense(10)) == "Dense(10)"
    assert repr(layers.MaxPool2D()) == "MaxPool2D()"
    assert repr(layers.MaxPool2D(3, stride=2)) == "MaxPool2D(size=3, stride=2)"
    assert repr(layers.Dropout(0.5)) == "Dropout(0.5)"


def test_alias():
    assert layers.MaxPooling2D is layers.MaxPool2D


def test_deserialize_rejects_unknown_classes():
    with pytest.raises(ValueError, match="class_name"):
        layers.deserialize({"class_name": "os.system", "config": {}})
    with pytest.raises(ValueError, match="does not fit Dense"):
        layers.deserialize({"class_name": "Dense", "config": {"units": 3, "bogus": 1}})


# ----------------------------------------------------------------------------- initialisation


def test_default_initialisers_and_seed():
    relu = _built(layers.Dense(400, activation="relu"), (900,), seed=5, dtype=np.float32)
    sig = _built(layers.Dense(400, activation="sigmoid"), (900,), seed=5, dtype=np.float32)
    # He: variance 2 / fan_in; Glorot: variance 2 / (fan_in + fan_out)
    assert relu.params[0].var() == pytest.approx(2 / 900, rel=0.03)
    assert sig.params[0].var() == pytest.approx(2 / 1300, rel=0.03)
    assert np.abs(sig.params[0]).max() <= np.sqrt(6 / 1300)
    assert not relu.params[1].any()
    again = _built(layers.Dense(400, activation="relu"), (900,), seed=5, dtype=np.float32)
    np.testing.assert_array_equal(again.params[0], relu.params[0])
    other = _built(layers.Dense(400, activation="relu"), (900,), seed=6, dtype=np.float32)
    assert not np.array_equal(other.params[0], relu.params[0])


def test_conv_initialiser_fans():
    layer = _built(layers.Conv2D(64, 3, activation="relu"), (32, 9, 9), dtype=np.float32)
    assert layer.params[0].shape == (64, 32, 3, 3)
    assert layer.params[0].var() == pytest.approx(2 / (32 * 9), rel=0.05)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("make, error, words", [
    (lambda: layers.Dense(0), ValueError, "units"),
    (lambda: layers.Dense(2.5), TypeError, "units"),
    (lambda: layers.Dense(3, activation="swish"), ValueError, "activation"),
    (lambda: layers.Dense(3, use_bias=1), TypeError, "use_bias"),
    (lambda: layers.Dense(3, kernel_initializer="nope"), ValueError, "initializer"),
    (lambda: layers.Conv2D(0, 3), ValueError, "filters"),
    (lambda: layers.Conv2D(4, 0), ValueError, "kernel_size"),
    (lambda: layers.Conv2D(4, (3, 3, 3)), ValueError, "kernel_size"),
    (lambda: layers.Conv2D(4, 3, stride=0), ValueError, "stride"),
    (lambda: layers.Conv2D(4, 3, padding="full"), ValueError, "padding"),
    (lambda: layers.Conv2D(4, 3, padding=-1), ValueError, "padding"),
    (lambda: layers.MaxPool2D(0), ValueError, "size"),
    (lambda: layers.MaxPool2D(2, padding="full"), ValueError, "padding"),
    (lambda: layers.Dropout(1.0), ValueError, "rate"),
    (lambda: layers.Dropout("0.5"), TypeError, "rate"),
])
def test_constructor_errors(make, error, words):
    with pytest.raises(error, match=words):
        make()


@pytest.mark.parametrize("layer, item, words", [
    (layers.Dense(3), (1, 28, 28), "Flatten"),
    (layers.Conv2D(3, 3), (10,), r"\(C, H, W\)"),
    (layers.Conv2D(3, 5), (1, 3, 3), "larger than the padded input"),
    (layers.MaxPool2D(2), (10,), r"\(C, H, W\)"),
    (layers.Activation("softmax"), (2, 3, 3), "classes"),
])
def test_build_errors(layer, item, words):
    with pytest.raises(ValueError, match=words):
        layer.build(item)


def test_call_errors(rng):
    layer = _built(layers.Dense(3), (4,))
    with pytest.raises(ValueError, match=r"shape \(N, 4\), got \(2, 5\)"):
        layer.forward(rng.standard_normal((2, 5)))
    with pytest.raises(TypeError, match="float64"):
        layer.forward(rng.standard_normal((2, 4)).astype(np.float32))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        layer.forward([[1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(RuntimeError, match="forward"):
        _built(layers.Dense(3), (4,)).backward(np.zeros((2, 3)))
    layer.forward(rng.standard_normal((2, 4)), training=True)
    with pytest.raises(ValueError, match=r"grad must have the output's shape \(2, 3\)"):
        layer.backward(np.zeros((2, 4)))
    layer.forward(rng.standard_normal((2, 4)), training=False)
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.zeros((2, 3)))


def test_lazy_build_on_first_call(rng):
    layer = layers.Conv2D(2, 3)
    out = layer.forward(rng.standard_normal((1, 3, 5, 5)))
    assert layer.built and layer.input_shape == (3, 5, 5) and layer.dtype == np.float64
    assert out.shape == (1, 2, 3, 3)
