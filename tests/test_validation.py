"""Bad input at every public door is a ValueError or TypeError whose message names the argument,
what it got and what it wanted (issue 5, "Input, everywhere"); empty batches and batch size 1
work or fail clearly.

Doors: cnn.functional, every layer (construction, build, call, backward), Sequential (build,
predict, evaluate, train_step, fit, weights), cnn.datasets, load_model / save, and the
``python -m cnn.train`` arguments. Each row asserts the exception type and a regex over the
message. The last tests are gaps found (and fixed) in cnn.functional.
"""

import re

import numpy as np
import pytest

import cnn
from cnn import callbacks, datasets, layers, train
from cnn import functional as F
from cnn.sequential import Sequential

f32 = np.float32


def zeros(*shape, dtype=f32):
    return np.zeros(shape, dtype)


X = zeros(2, 1, 5, 5)
W = zeros(3, 1, 3, 3)
DY = zeros(2, 3, 3, 3)


def check(call, error, words):
    with pytest.raises(error) as info:
        call()
    assert info.type is error or issubclass(info.type, error)
    assert re.search(words, str(info.value)), f"message {str(info.value)!r} does not match {words!r}"


# ----------------------------------------------------------------------------- cnn.functional

FUNCTIONAL = {
    # wrong ndim
    "conv x 3-D": (lambda: F.conv2d(zeros(1, 5, 5), W), ValueError, r"x must be 4-D .*got shape \(1, 5, 5\)"),
    "conv w 3-D": (lambda: F.conv2d(X, zeros(3, 3, 3)), ValueError, r"w must be 4-D .*got shape \(3, 3, 3\)"),
    "conv b 2-D": (lambda: F.conv2d(X, W, zeros(3, 1)), ValueError, r"b must be 1-D .*got shape \(3, 1\)"),
    "pool x 5-D": (lambda: F.maxpool2d(zeros(1, 1, 1, 4, 4)), ValueError, r"x must be 4-D .*\(1, 1, 1, 4, 4\)"),
    # channels, shapes that do not agree
    "conv channels": (lambda: F.conv2d(X, zeros(3, 2, 3, 3)), ValueError,
                      r"w has 2 input channels .* but x has 1"),
    "conv bias length": (lambda: F.conv2d(X, W, zeros(4)), ValueError, r"b must have shape \(3,\) .*got \(4,\)"),
    "conv dy shape": (lambda: F.conv2d_backward(zeros(2, 3, 4, 4), X, W), ValueError,
                      r"dy must have the conv output's shape \(2, 3, 3, 3\), got \(2, 3, 4, 4\)"),
    "conv relu y shape": (lambda: F.conv2d_backward(DY, X, W, activation="relu", y=zeros(2, 3, 2, 2)),
                          ValueError, r"y must have the conv output's shape \(2, 3, 3, 3\)"),
    "conv relu without y": (lambda: F.conv2d_backward(DY, X, W, activation="relu"), ValueError,
                            r"activation='relu' needs y"),
    "pool argmax shape": (lambda: F.maxpool2d_backward(zeros(1, 1, 2, 2), np.zeros((1, 1, 2, 1), int),
                                                       (1, 1, 4, 4)), ValueError,
                          r"argmax must have dy's shape \(1, 1, 2, 2\), got \(1, 1, 2, 1\)"),
    "pool argmax range": (lambda: F.maxpool2d_backward(zeros(1, 1, 2, 2), np.full((1, 1, 2, 2), 16),
                                                       (1, 1, 4, 4)), ValueError,
                          r"argmax values must lie in \[0, H\*W\) = \[0, 16\).*got values in \[16, 16\]"),
    "pool negative argmax": (lambda: F.maxpool2d_backward(zeros(1, 1, 1, 1), np.full((1, 1, 1, 1), -1),
                                                          (1, 1, 2, 2)), ValueError, r"argmax values .*\[-1, -1\]"),
    "pool x_shape length": (lambda: F.maxpool2d_backward(zeros(1, 1, 1, 1), np.zeros((1, 1, 1, 1), int),
                                                         (1, 1, 2)), ValueError, r"x_shape must be 4 .*\(1, 1, 2\)"),
    "pool x_shape vs dy": (lambda: F.maxpool2d_backward(zeros(1, 1, 1, 1), np.zeros((1, 1, 1, 1), int),
                                                        (2, 1, 2, 2)), ValueError, r"x_shape \(2, 1, 2, 2\) and dy.shape"),
    # kernel larger than the padded input
    "conv kernel too big": (lambda: F.conv2d(X, zeros(1, 1, 7, 3)), ValueError,
                            r"kernel height .*\(7\) is larger than the padded input \(5 \+ 0 \+ 0 = 5\)"),
    "conv kernel too big even padded": (lambda: F.conv2d(X, zeros(1, 1, 3, 8), padding=1), ValueError,
                                        r"kernel width .*\(8\) is larger than the padded input \(5 \+ 1 \+ 1 = 7\)"),
    "pool window too big": (lambda: F.maxpool2d(X, 6, padding="valid"), ValueError,
                            r"window height \(size\) \(6\) is larger than the padded input"),
    # zero / negative sizes and strides
    "conv stride 0": (lambda: F.conv2d(X, W, stride=0), ValueError, r"stride must be >= 1, got 0"),
    "conv stride -1 pair": (lambda: F.conv2d(X, W, stride=(1, -1)), ValueError, r"stride must be >= 1, got \(1, -1\)"),
    "conv stride float": (lambda: F.conv2d(X, W, stride=1.0), TypeError, r"stride must be an int or a pair of ints, got 1.0"),
    "conv stride bool": (lambda: F.conv2d(X, W, stride=True), TypeError, r"stride .* got True"),
    "conv stride triple": (lambda: F.conv2d(X, W, stride=(1, 1, 1)), ValueError, r"stride .* got \(1, 1, 1\)"),
    "conv zero filters": (lambda: F.conv2d(X, zeros(0, 1, 3, 3)), ValueError,
                          r"w must have at least one filter.*w.shape=\(0, 1, 3, 3\)"),
    "conv zero kernel": (lambda: F.conv2d(X, zeros(3, 1, 0, 3)), ValueError, r"1x1 kernel, got w.shape=\(3, 1, 0, 3\)"),
    "conv negative padding": (lambda: F.conv2d(X, W, padding=-1), ValueError, r"padding must be >= 0, got -1"),
    "conv padding 3-tuple": (lambda: F.conv2d(X, W, padding=(1, 1, 1)), ValueError, r"padding .*length 3"),
    "conv padding name": (lambda: F.conv2d(X, W, padding="full"), ValueError, r"padding must be one of \['valid', 'same'\].*'full'"),
    "conv padding None": (lambda: F.conv2d(X, W, padding=None), TypeError, r"padding must be one of \['valid', 'same'\], an int.*got None"),
    "pool size 0": (lambda: F.maxpool2d(X, 0), ValueError, r"size must be >= 1, got 0"),
    "pool stride -2": (lambda: F.maxpool2d(X, 2, -2), ValueError, r"stride must be >= 1, got -2"),
    "pool tile with big stride": (lambda: F.maxpool2d(X, 2, 3), ValueError, r"padding='tile' needs stride <= size"),
    "pool pad >= window": (lambda: F.maxpool2d(X, 2, padding=2), ValueError, r"smaller than the window.*\(2, 2, 2, 2\)"),
    "pool padding name": (lambda: F.maxpool2d(X, 2, padding="full"), ValueError, r"padding must be one of \['tile', 'valid', 'same'\].*'full'"),
    # dtypes
    "conv int x": (lambda: F.conv2d(X.astype(int), W), TypeError, r"x must have dtype float32 or float64, got int64"),
    "conv float16 w": (lambda: F.conv2d(X, W.astype(np.float16)), TypeError, r"w must have dtype .*got float16"),
    "conv mixed dtypes": (lambda: F.conv2d(X, W.astype(np.float64)), TypeError,
                          r"w has dtype float64 but the input has dtype float32"),
    "conv mixed bias": (lambda: F.conv2d(X, W, zeros(3, dtype=np.float64)), TypeError, r"b has dtype float64"),
    "conv string x": (lambda: F.conv2d("image", W), TypeError, r"x must have dtype .*got <U5"),
    "conv object x": (lambda: F.conv2d(np.empty((1, 1, 3, 3), object), W), TypeError, r"x must have dtype .*got object"),
    "conv ragged list": (lambda: F.conv2d([[1.0], [1.0, 2.0]], W), TypeError, r"x must be an array of floats, got list"),
    "conv activation": (lambda: F.conv2d(X, W, activation="sigmoid"), ValueError,
                        r"activation must be None or 'relu', got 'sigmoid'"),
    "pool float argmax": (lambda: F.maxpool2d_backward(zeros(1, 1, 1, 1), zeros(1, 1, 1, 1), (1, 1, 2, 2)),
                          TypeError, r"argmax must be an integer array, got dtype float32"),
    "pool x_shape floats": (lambda: F.maxpool2d_backward(zeros(1, 1, 1, 1), np.zeros((1, 1, 1, 1), int),
                                                         (1, 1, 2.0, 2)), TypeError, r"x_shape must be a tuple of 4 ints"),
    "output shape helper": (lambda: F.conv2d_output_shape((1, 5), 2, 3), ValueError,
                            r"input_shape must be 3 positive ints \(C, H, W\), got \(1, 5\)"),
}


@pytest.mark.parametrize("case", sorted(FUNCTIONAL))
def test_functional_rejects(case):
    check(*FUNCTIONAL[case])


def test_functional_empty_batch_and_single_items_work():
    y = F.conv2d(zeros(0, 1, 5, 5), W, zeros(3))
    assert y.shape == (0, 3, 3, 3)
    dx, dw, db = F.conv2d_backward(zeros(0, 3, 3, 3), zeros(0, 1, 5, 5), W)
    assert dx.shape == (0, 1, 5, 5) and not dw.any() and not db.any()  # an empty sum is 0
    p, arg = F.maxpool2d(zeros(0, 2, 4, 4))
    assert p.shape == arg.shape == (0, 2, 2, 2)
    assert F.maxpool2d_backward(p, arg, (0, 2, 4, 4)).shape == (0, 2, 4, 4)
    one = F.conv2d(np.ones((1, 1, 1, 1), f32), np.full((1, 1, 1, 1), 2, f32), np.ones(1, f32))
    assert one.tolist() == [[[[3.0]]]]


def test_functional_zero_height_input_with_padding_is_well_defined():
    # a 0 x 4 image padded by 1 on every side: the 1x1 kernel only sees padding -> the bias
    y = F.conv2d(zeros(1, 1, 0, 4), np.ones((1, 1, 1, 1), f32), np.full(1, 5, f32), padding=1)
    assert y.shape == (1, 1, 2, 6) and (y == 5).all()


# ----------------------------------------------------------------------------- layers

CONSTRUCT = {
    "Dense units 0": (lambda: layers.Dense(0), ValueError, r"units must be an int >= 1, got 0"),
    "Dense units float": (lambda: layers.Dense(2.5), TypeError, r"units must be an int >= 1, got 2.5"),
    "Dense activation": (lambda: layers.Dense(3, activation="swish"), ValueError, r"activation must be one of .*got 'swish'"),
    "Dense use_bias": (lambda: layers.Dense(3, use_bias="no"), TypeError, r"use_bias must be a bool, got 'no'"),
    "Dense initializer": (lambda: layers.Dense(3, kernel_initializer=0.1), TypeError, r"kernel_initializer .*got 0.1"),
    "Conv filters -1": (lambda: layers.Conv2D(-1, 3), ValueError, r"filters must be an int >= 1, got -1"),
    "Conv kernel 0": (lambda: layers.Conv2D(2, 0), ValueError, r"kernel_size must be >= 1, got 0"),
    "Conv kernel triple": (lambda: layers.Conv2D(2, (3, 3, 3)), ValueError, r"kernel_size must be an int or a pair"),
    "Conv stride 0": (lambda: layers.Conv2D(2, 3, stride=(1, 0)), ValueError, r"stride must be >= 1, got \(1, 0\)"),
    "Conv padding": (lambda: layers.Conv2D(2, 3, padding="full"), ValueError, r"padding must be one of \['valid', 'same'\].*'full'"),
    "Conv padding negative": (lambda: layers.Conv2D(2, 3, padding=(1, -1)), ValueError, r"padding must be >= 0, got \(1, -1\)"),
    "Conv softmax": (lambda: layers.Conv2D(2, 3, activation="softmax"), ValueError, r"Conv2D activation must not be 'softmax'"),
    "Pool size 0": (lambda: layers.MaxPool2D(0), ValueError, r"size must be >= 1, got 0"),
    "Pool stride -1": (lambda: layers.MaxPool2D(2, -1), ValueError, r"stride must be >= 1, got -1"),
    "Pool padding": (lambda: layers.MaxPool2D(2, padding="full"), ValueError, r"padding must be one of \['tile', 'valid', 'same'\]"),
    "Dropout rate 1": (lambda: layers.Dropout(1.0), ValueError, r"rate must be a finite number in \[0.0, 1.0\), got 1.0"),
    "Dropout rate nan": (lambda: layers.Dropout(float("nan")), ValueError, r"rate must be a finite number in \[0.0, 1.0\), got nan"),
    "Dropout rate str": (lambda: layers.Dropout("0.5"), TypeError, r"rate must be a real number, got '0.5' of type str"),
    "Activation name": (lambda: layers.Activation("bogus"), ValueError, r"activation must be one of .*'bogus'"),
    "deserialize class": (lambda: layers.deserialize({"class_name": "os.system", "config": {}}), ValueError,
                          r"class_name must be one of .*got 'os.system'"),
    "from_config extra": (lambda: layers.Dense.from_config({"units": 3, "evil": 1}), ValueError,
                          r"does not fit Dense"),
}


@pytest.mark.parametrize("case", sorted(CONSTRUCT))
def test_layer_construction_rejects(case):
    check(*CONSTRUCT[case])


BUILD = {
    "Dense on images": (lambda: layers.Dense(3).build((1, 4, 4)), ValueError,
                        r"Dense expects flat items of shape \(features,\), got item shape \(1, 4, 4\).*Flatten"),
    "Conv on vectors": (lambda: layers.Conv2D(2, 3).build((16,)), ValueError,
                        r"Conv2D expects image items of shape \(C, H, W\), got item shape \(16,\)"),
    "Conv kernel > input": (lambda: layers.Conv2D(2, 5).build((1, 3, 8)), ValueError,
                            r"kernel height .*\(5\) is larger than the padded input \(3 \+ 0 \+ 0 = 3\)"),
    "Pool window > input": (lambda: layers.MaxPool2D(4, padding="valid").build((1, 8, 3)), ValueError,
                            r"window width \(size\) \(4\) is larger than the padded input"),
    "Pool on vectors": (lambda: layers.MaxPool2D(2).build((8,)), ValueError, r"MaxPool2D expects image items"),
    "softmax on images": (lambda: layers.Activation("softmax").build((1, 2, 2)), ValueError,
                          r"Activation\('softmax'\) expects flat items of shape \(classes,\)"),
    "zero size": (lambda: layers.Conv2D(2, 1).build((1, 0, 4)), ValueError,
                  r"input_shape must be a non-empty tuple of positive ints, got \(1, 0, 4\)"),
    "negative size": (lambda: layers.Flatten().build((-2,)), ValueError, r"input_shape .*got \(-2,\)"),
    "empty shape": (lambda: layers.Flatten().build(()), ValueError, r"input_shape .*got \(\)"),
    "float size": (lambda: layers.Dense(2).build((4.0,)), TypeError, r"input_shape must be a tuple of ints .*got \(4.0,\)"),
    "int dtype": (lambda: layers.Dense(2).build((4,), dtype=np.int32), TypeError, r"dtype must be float32 or float64, got int32"),
    "bad rng": (lambda: layers.Dense(2).build((4,), rng=42), TypeError, r"rng must be a numpy.random.Generator, got int"),
}


@pytest.mark.parametrize("case", sorted(BUILD))
def test_layer_build_rejects(case):
    check(*BUILD[case])


def built(layer, shape, dtype=f32):
    layer.build(shape, rng=np.random.default_rng(0), dtype=dtype)
    return layer


CALL = {
    "Conv channels": (lambda: built(layers.Conv2D(2, 3), (1, 5, 5)).forward(zeros(2, 3, 5, 5)), ValueError,
                      r"Conv2D input x must have shape \(N, 1, 5, 5\), got \(2, 3, 5, 5\)"),
    "Conv image size": (lambda: built(layers.Conv2D(2, 3), (1, 5, 5)).forward(zeros(2, 1, 6, 5)), ValueError,
                        r"got \(2, 1, 6, 5\)"),
    "Conv no batch axis": (lambda: built(layers.Conv2D(2, 3), (1, 5, 5)).forward(zeros(1, 5, 5)), ValueError,
                           r"must have shape \(N, 1, 5, 5\), got \(1, 5, 5\)"),
    "Conv dtype": (lambda: built(layers.Conv2D(2, 3), (1, 5, 5)).forward(zeros(1, 1, 5, 5, dtype=np.float64)),
                   TypeError, r"Conv2D input x must have dtype float32 \(the layer's\), got float64"),
    "Dense list": (lambda: built(layers.Dense(2), (3,)).forward([[1.0, 2.0, 3.0]]), TypeError,
                   r"Dense input x must be a numpy.ndarray, got list"),
    "Dense features": (lambda: built(layers.Dense(2), (3,)).forward(zeros(4, 5)), ValueError,
                       r"Dense input x must have shape \(N, 3\), got \(4, 5\)"),
    "Pool int": (lambda: built(layers.MaxPool2D(2), (1, 4, 4)).forward(zeros(1, 1, 4, 4, dtype=np.int64)),
                 TypeError, r"MaxPool2D input x must have dtype float32"),
    "Flatten no batch": (lambda: layers.Flatten().forward(zeros(3)), ValueError,
                         r"Flatten input x must be a batch \(N, ...\), got shape \(3,\)"),
    "Dropout shape": (lambda: built(layers.Dropout(0.5), (3,)).forward(zeros(2, 4), True), ValueError,
                      r"Dropout input x must have shape \(N, 3\), got \(2, 4\)"),
}


@pytest.mark.parametrize("case", sorted(CALL))
def test_layer_call_rejects(case):
    check(*CALL[case])


def _trained_conv():
    conv = built(layers.Conv2D(2, 3), (1, 5, 5))
    conv.forward(zeros(2, 1, 5, 5), training=True)
    return conv


BACKWARD = {
    "without forward": (lambda: built(layers.Conv2D(2, 3), (1, 5, 5)).backward(zeros(2, 2, 3, 3)), RuntimeError,
                        r"Conv2D.backward called without a forward\(x, training=True\)"),
    "after inference forward": (lambda: (lambda c: (c.forward(zeros(2, 1, 5, 5)), c.backward(zeros(2, 2, 3, 3))))(
        built(layers.Conv2D(2, 3), (1, 5, 5))), RuntimeError, r"without a forward\(x, training=True\)"),
    "grad shape": (lambda: _trained_conv().backward(zeros(2, 2, 3, 4)), ValueError,
                   r"Conv2D.backward: grad must have the output's shape \(2, 2, 3, 3\), got \(2, 2, 3, 4\)"),
    "grad batch": (lambda: _trained_conv().backward(zeros(1, 2, 3, 3)), ValueError, r"got \(1, 2, 3, 3\)"),
    "grad dtype": (lambda: _trained_conv().backward(zeros(2, 2, 3, 3, dtype=np.float64)), TypeError,
                   r"grad must have dtype float32, got float64"),
    "grad list": (lambda: _trained_conv().backward([[0.0]]), ValueError, r"grad must have the output's shape .*got list"),
}


@pytest.mark.parametrize("case", sorted(BACKWARD))
def test_layer_backward_rejects(case):
    check(*BACKWARD[case])


@pytest.mark.parametrize("make, shape", [
    (lambda: layers.Conv2D(2, 3, padding="same", activation="relu"), (1, 5, 5)),
    (lambda: layers.Dense(3, activation="softmax"), (4,)),
    (lambda: layers.MaxPool2D(2), (2, 5, 5)),
    (lambda: layers.Flatten(), (2, 3, 3)),
    (lambda: layers.Dropout(0.5), (6,)),
    (lambda: layers.Activation("tanh"), (2, 2, 2)),
])
@pytest.mark.parametrize("n", [0, 1])
def test_every_layer_takes_an_empty_batch_and_a_single_item(make, shape, n):
    layer = built(make(), shape)
    x = np.random.default_rng(0).random((n,) + shape).astype(f32)
    out = layer.forward(x, training=True)
    assert out.shape == (n,) + layer.output_shape and np.isfinite(out).all()
    dx = layer.backward(np.ones_like(out))
    assert dx.shape == x.shape and np.isfinite(dx).all()
    assert all(np.isfinite(g).all() for g in layer.grads)


# ----------------------------------------------------------------------------- Sequential


def net(compiled=True):
    model = Sequential([layers.Conv2D(2, 3, activation="relu"), layers.MaxPool2D(2), layers.Flatten(),
                        layers.Dense(4, activation="softmax")], input_shape=(1, 6, 6), seed=0)
    return model.compile(loss="cross_entropy", optimizer="sgd") if compiled else model


XS, YS = np.random.default_rng(0).random((8, 1, 6, 6)).astype(f32), np.arange(8) % 4

MODEL = {
    # shapes that do not chain: the message names the layer
    "conv then dense": (lambda: Sequential([layers.Conv2D(2, 3), layers.Dense(3)], input_shape=(1, 6, 6)),
                        ValueError, r"layer 1 \(Dense\): Dense expects flat items .*Flatten"),
    "kernel > feature map": (lambda: Sequential([layers.Conv2D(2, 3), layers.MaxPool2D(2), layers.Conv2D(2, 4)],
                                                input_shape=(1, 6, 6)), ValueError,
                             r"layer 2 \(Conv2D\): .*kernel height .*\(4\) is larger than the padded input \(2 \+ 0 \+ 0 = 2\)"),
    "pool on vectors": (lambda: Sequential([layers.Flatten(), layers.MaxPool2D(2)], input_shape=(1, 4, 4)),
                        ValueError, r"layer 1 \(MaxPool2D\)"),
    "not a layer": (lambda: Sequential([layers.Flatten(), "relu"]), TypeError,
                    r"layer must be a cnn.layers.Layer, got 'relu' of type str"),
    "bad input_shape": (lambda: Sequential([layers.Flatten()], input_shape=(1, 0, 4)), ValueError,
                        r"input_shape must be a non-empty tuple of positive ints, got \(1, 0, 4\)"),
    "seed": (lambda: Sequential([layers.Flatten()], seed="0"), TypeError, r"seed must be None or an int >= 0, got '0'"),
    "dtype": (lambda: Sequential([layers.Flatten()], dtype="float16"), TypeError, r"dtype must be float32 or float64, got float16"),
    # predict: wrong size, ndim, dtype, values
    "predict image size": (lambda: net().predict(zeros(2, 1, 7, 6)), ValueError,
                           r"x must have shape \(N, 1, 6, 6\) for this model, got \(2, 1, 7, 6\)"),
    "predict channels": (lambda: net().predict(zeros(2, 3, 6, 6)), ValueError, r"got \(2, 3, 6, 6\)"),
    "predict no batch axis": (lambda: net().predict(zeros(1, 6, 6)), ValueError, r"got \(1, 6, 6\)"),
    "predict nan": (lambda: net().predict(np.full((2, 1, 6, 6), np.nan)), ValueError,
                    r"x must be finite, got 72 NaN/inf value\(s\)"),
    "predict inf": (lambda: net().predict(np.where(np.eye(6, dtype=bool), np.inf, 0)[None, None]),
                    ValueError, r"x must be finite, got 6 NaN/inf"),
    "predict overflow to inf": (lambda: net().predict(np.full((1, 1, 6, 6), 1e39)), ValueError, r"x must be finite"),
    "predict complex": (lambda: net().predict(zeros(1, 1, 6, 6, dtype=np.complex64)), TypeError,
                        r"x must be a real numeric array, got dtype complex64"),
    "predict strings": (lambda: net().predict(np.full((1, 1, 6, 6), "a")), TypeError, r"got dtype <U1"),
    "predict batch_size 0": (lambda: net().predict(XS, batch_size=0), ValueError, r"batch_size must be an int >= 1, got 0"),
    "predict batch_size float": (lambda: net().predict(XS, batch_size=2.0), TypeError, r"batch_size must be an int >= 1, got 2.0"),
    # evaluate: labels
    "labels out of range": (lambda: net().evaluate(XS, YS + 1), ValueError, r"y must hold class ids in \[0, 4\), got values in \[1, 4\]"),
    "negative labels": (lambda: net().evaluate(XS, YS - 1), ValueError, r"got values in \[-1, 2\]"),
    "float labels": (lambda: net().evaluate(XS, YS.astype(float)), TypeError, r"y of shape \(8,\) must hold integer class ids, got dtype float64"),
    "x/y length": (lambda: net().evaluate(XS, YS[:5]), ValueError, r"y has 5 labels but x has 8 items"),
    "one-hot width": (lambda: net().evaluate(XS, np.eye(5)[YS]), ValueError,
                      r"y must be class ids of shape \(N,\) or targets of shape \(N, 4\), got \(8, 5\)"),
    "one-hot rows": (lambda: net().evaluate(XS, np.eye(4)[YS][:3]), ValueError, r"y has 3 rows but x has 8 items"),
    "non-finite targets": (lambda: net().evaluate(XS, np.full((8, 4), np.nan)), ValueError, r"y must be finite"),
    "evaluate empty": (lambda: net().evaluate(XS[:0], YS[:0]), ValueError, r"x must hold at least one item"),
    "evaluate uncompiled": (lambda: net(False).evaluate(XS, YS), RuntimeError, r"evaluate needs a loss: call model.compile"),
    # train_step
    "step empty": (lambda: net().train_step(XS[:0], YS[:0]), ValueError, r"xb must hold at least one item, got an empty batch"),
    "step labels": (lambda: net().train_step(XS, YS * 2), ValueError, r"yb must hold class ids in \[0, 4\), got values in \[0, 6\]"),
    "step length": (lambda: net().train_step(XS, YS[:7]), ValueError, r"yb has 7 labels but x has 8 items"),
    "step nan": (lambda: net().train_step(np.where(XS > 0.5, np.nan, XS), YS), ValueError, r"xb must be finite"),
    "step object": (lambda: net().train_step(XS.astype(object), YS), TypeError, r"xb must be a real numeric array, got dtype object"),
    "step uncompiled": (lambda: net(False).train_step(XS, YS), RuntimeError, r"train_step needs a loss and an optimizer"),
    # compile, weights
    "loss name": (lambda: net(False).compile(loss="hinge"), ValueError, r"loss must be one of .*got 'hinge'"),
    "optimizer name": (lambda: net(False).compile(optimizer="rmsprop"), ValueError, r"optimizer must be one of .*got 'rmsprop'"),
    "set_weights count": (lambda: net().set_weights([np.zeros(3)]), ValueError, r"weights must hold 4 arrays .*got 1"),
    "set_weights shape": (lambda: net().set_weights([np.zeros((2, 1, 3, 4))] + net().get_weights()[1:]), ValueError,
                          r"weights for 0.weight must have shape \(2, 1, 3, 3\), got \(2, 1, 3, 4\)"),
    "set_weights dtype": (lambda: net().set_weights([np.full((2, 1, 3, 3), "a")] + net().get_weights()[1:]),
                          TypeError, r"weights for 0.weight must be real numbers, got dtype <U1"),
}


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("case", sorted(MODEL))
def test_model_rejects(case):
    check(*MODEL[case])


FIT = {
    "x nan": (dict(x=np.where(XS > 0.9, np.nan, XS)), ValueError, r"x must be finite, got \d+ NaN/inf"),
    "y nan targets": (dict(y=np.where(np.eye(4)[YS] > 0, np.inf, 0.0)), ValueError, r"y must be finite"),
    "labels": (dict(y=YS + 4), ValueError, r"y must hold class ids in \[0, 4\)"),
    "length": (dict(y=YS[:-1]), ValueError, r"y has 7 labels but x has 8 items"),
    "image size": (dict(x=zeros(8, 1, 6, 5)), ValueError, r"x must have shape \(N, 1, 6, 6\) for this model, got \(8, 1, 6, 5\)"),
    "empty": (dict(x=XS[:0], y=YS[:0]), ValueError, r"x must hold at least one item, got shape \(0, 1, 6, 6\)"),
    "batch_size 0": (dict(batch_size=0), ValueError, r"batch_size must be an int >= 1, got 0"),
    "batch_size > n": (dict(batch_size=9), ValueError, r"batch_size must be <= the number of training items \(8\).*got 9"),
    "epochs": (dict(epochs=-2), ValueError, r"epochs must be an int >= 0, got -2"),
    "epochs float": (dict(epochs=2.5), TypeError, r"epochs must be an int >= 0, got 2.5"),
    "initial_epoch": (dict(epochs=1, initial_epoch=2), ValueError, r"initial_epoch must be <= epochs .*initial_epoch=2, epochs=1"),
    "seed": (dict(seed=-1), ValueError, r"seed must be None or an int >= 0, got -1"),
    "shuffle": (dict(shuffle="yes"), TypeError, r"shuffle must be a bool, got 'yes'"),
    "drop_last": (dict(drop_last=None), TypeError, r"drop_last must be a bool, got None"),
    "verbose": (dict(verbose=True), ValueError, r"verbose must be 0, 1 or 2, got True"),
    "validation pair": (dict(validation_data=(XS,)), ValueError, r"validation_data must be a pair \(x_val, y_val\), got tuple of length 1"),
    "validation image size": (dict(validation_data=(zeros(2, 1, 5, 6), YS[:2])), ValueError,
                              r"validation_data\[0\] must have shape \(N, 1, 6, 6\)"),
    "validation labels": (dict(validation_data=(XS[:2], np.array([0, 9]))), ValueError,
                          r"validation_data\[1\] must hold class ids in \[0, 4\)"),
    "callback": (dict(callbacks=[lambda *a: None]), TypeError, r"callbacks must be cnn.callbacks.Callback instances, got function"),
    "augment": (dict(augment="shift"), TypeError, r"augment must be callable \(xb, rng\) -> xb, got str"),
}


@pytest.mark.parametrize("case", sorted(FIT))
def test_fit_rejects_before_training(case):
    kwargs, error, words = FIT[case]
    args = dict(x=XS, y=YS, epochs=1, batch_size=4, verbose=0)
    args.update(kwargs)
    model = net()
    before = model.get_weights()
    check(lambda: model.fit(**args), error, words)
    for a, b in zip(model.get_weights(), before):  # nothing was trained
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == 0


def test_batch_size_one_and_tiny_data_sets_work_without_dividing_by_zero():
    model = net()
    history = model.fit(XS[:1], YS[:1], epochs=2, batch_size=1, verbose=0, validation_data=(XS[:1], YS[:1]))
    h = history.history
    assert len(h["loss"]) == 2 and all(np.isfinite(v) for k in ("loss", "accuracy", "val_loss", "val_accuracy")
                                       for v in h[k])
    assert model.optimizer.iterations == 2
    assert model.predict(XS[:1], batch_size=1).shape == (1, 4)
    assert np.isfinite(model.train_step(XS[:1], YS[:1]))
    r = model.evaluate(XS[:1], YS[:1], batch_size=1)
    assert np.isfinite(r["loss"]) and r["accuracy"] in (0.0, 1.0)
    # a batch larger than the data when incomplete batches are allowed: one step of 3
    model.fit(XS[:3], YS[:3], epochs=1, batch_size=64, drop_last=False, verbose=0)
    assert model.optimizer.iterations == 4


def test_predict_on_an_empty_batch_returns_an_empty_result():
    out = net().predict(XS[:0])
    assert out.shape == (0, 4) and out.dtype == f32


def test_fit_with_zero_epochs_trains_nothing_and_returns_an_empty_history():
    model = net()
    before = model.get_weights()
    history = model.fit(XS, YS, epochs=0, batch_size=4, verbose=0)
    assert history.epoch == [] and history.history == {}
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_callback_arguments():
    check(lambda: callbacks.ModelCheckpoint(None), TypeError, r"path must be a str, bytes or os.PathLike, got NoneType")
    check(lambda: callbacks.ModelCheckpoint("m.npz", save_best_only="yes"), TypeError, r"save_best_only must be a bool")
    check(lambda: callbacks.EarlyStopping(patience=1.5), TypeError, r"patience must be an int >= 0, got 1.5")
    check(lambda: callbacks.EarlyStopping(monitor=""), TypeError, r"monitor must be a metric name")


# ----------------------------------------------------------------------------- datasets, files


def test_dataset_arguments(tmp_path):
    check(lambda: datasets.read_idx(None), TypeError, r"path must be a str or os.PathLike, got NoneType")
    check(lambda: datasets.load_idx_dir(3), TypeError, r"path must be a str or os.PathLike, got int")
    check(lambda: datasets.load_idx_dir(tmp_path, prefix=1), TypeError, r"prefix must be a str, got int")
    check(lambda: datasets.load_mnist(data_dir=5), TypeError, r"data_dir must be a str or os.PathLike, got int")
    check(lambda: datasets.load_mnist(download="yes"), TypeError, r"download must be a bool, got str")
    check(lambda: datasets.write_idx(tmp_path / "a", np.zeros(3, np.int64)), TypeError,
          r"array dtype int64 cannot be stored in IDX file .*a; wanted one of uint8")
    check(lambda: datasets.write_idx(tmp_path / "b", np.float32(1)), ValueError, r"at least 1 dimension")
    check(lambda: datasets.load_idx_dir(tmp_path / "nowhere"), datasets.DataNotFoundError, r"nowhere")
    assert issubclass(datasets.DataNotFoundError, (FileNotFoundError, ValueError, OSError))


def test_load_model_and_save_arguments(tmp_path):
    model = net()
    check(lambda: cnn.load_model(123), TypeError, r"path must be a str, bytes or os.PathLike, got int")
    check(lambda: cnn.load_model(tmp_path / "m.npz", compile="yes"), TypeError, r"compile must be a bool, got 'yes'")
    check(lambda: model.save(None), TypeError, r"path must be a str, bytes or os.PathLike, got NoneType")
    check(lambda: model.save(tmp_path / "m.npz", include_optimizer=1), TypeError, r"include_optimizer must be a bool, got 1")
    check(lambda: model.save(tmp_path / "no" / "m.npz"), FileNotFoundError,
          r"cannot save .*m.npz: the folder .*no does not exist")
    check(lambda: model.save(tmp_path), IsADirectoryError, r"is a directory")
    check(lambda: Sequential([layers.Dense(2)]).save(tmp_path / "x.npz"), ValueError, r"save needs a built model")
    with pytest.raises(FileNotFoundError):
        cnn.load_model(tmp_path / "missing.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written anywhere


# ----------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("argv, words", [
    (["--epochs", "-1"], r"argument --epochs: wanted an integer >= 0, got '-1'"),
    (["--epochs", "two"], r"argument --epochs: wanted an integer >= 0, got 'two'"),
    (["--batch-size", "0"], r"argument --batch-size: wanted a positive int, got '0'"),
    (["--limit", "-5"], r"argument --limit: wanted a positive int, got '-5'"),
    (["--threads", "0"], r"argument --threads: wanted a positive int, got '0'"),
    (["--lr", "inf"], r"argument --lr: wanted a positive float, got 'inf'"),
    (["--seed", "1.5"], r"argument --seed: wanted an integer >= 0, got '1.5'"),
    (["--shift", "-1"], r"argument --shift: wanted a number >= 0, got '-1'"),
    (["--model", "vgg"], r"argument --model: invalid choice: 'vgg'"),
    (["--schedule", "step"], r"argument --schedule: invalid choice: 'step'"),
    (["--verbose", "3"], r"argument --verbose: invalid choice: 3"),
    (["--save", "/nonexistent-folder/m.npz"], r"--save /nonexistent-folder/m.npz: the folder /nonexistent-folder does not exist"),
    (["--json", "{tmp}"], r"--json .*: is a directory; wanted a file path"),
])
def test_cli_argument_errors_exit_2_before_any_work(argv, words, capsys, tmp_path):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as info:
        train.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err
    assert re.search(words, err), err


def _small_model_file(tmp_path, input_shape=(1, 8, 8), classes=10, compiled=True):
    model = Sequential([layers.Flatten(), layers.Dense(classes, activation="softmax")], input_shape=input_shape, seed=0)
    if compiled:
        model.compile()
    path = tmp_path / "m.npz"
    model.save(path)
    return str(path)


@pytest.mark.parametrize("make, words", [
    (lambda t: str(t / "missing.npz"), r"error: .*No such file or directory: .*missing.npz"),
    (lambda t: _small_model_file(t), r"error: .*m.npz holds a model for images of shape \(1, 8, 8\) and 10 classes, "
                                     r"but the data has images of shape \(1, 28, 28\)"),
    (lambda t: _small_model_file(t, (1, 28, 28), classes=3), r"error: .*3 classes, but the data has .*10 classes"),
    (lambda t: _small_model_file(t, (1, 28, 28), compiled=False), r"error: .*m.npz holds no optimizer state: it cannot be resumed"),
    (lambda t: (t / "junk.npz").write_bytes(b"PK\x03\x04 not really") and str(t / "junk.npz"),
     r"error: .*junk.npz: not a readable cnn model file"),
])
def test_cli_resume_errors_name_the_file(make, words, tmp_path, capsys):
    path = make(tmp_path)
    status = train.main(["--resume", path, "--epochs", "1", "--limit", "32", "--batch-size", "16", "--verbose", "0"])
    assert status == 1
    err = capsys.readouterr().err
    assert re.search(words, err), err


def test_cli_batch_larger_than_the_data_is_an_error(capsys):
    status = train.main(["--limit", "20", "--batch-size", "32", "--epochs", "1", "--verbose", "0", "--model", "seed-mlp"])
    assert status == 1
    assert "batch_size must be <= the number of training items (20)" in capsys.readouterr().err


def test_cli_bad_momentum_is_an_error(capsys):
    status = train.main(["--optimizer", "sgd", "--momentum", "1.5", "--epochs", "0", "--limit", "16",
                         "--batch-size", "8", "--verbose", "0", "--model", "seed-mlp"])
    assert status == 1
    assert "momentum must be a finite number in [0.0, 1.0), got 1.5" in capsys.readouterr().err


# ----------------------------------------------------------------------------- known gaps (owned elsewhere)


def test_maxpool_on_an_empty_plane_is_an_error():
    with pytest.raises(ValueError, match="x"):
        F.maxpool2d(zeros(1, 1, 0, 4), 2)


@pytest.mark.parametrize("call", [lambda: F.conv2d(X, W, stride=2 ** 70), lambda: F.maxpool2d(X, 2 ** 40)])
def test_huge_integer_arguments_are_value_errors(call):
    with pytest.raises(ValueError):
        call()


def test_unhashable_activation_is_named():
    with pytest.raises(TypeError, match="activation"):
        F.conv2d(X, W, activation=["relu"])
