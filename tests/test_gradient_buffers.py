"""Weighted layers write their gradients into their own ``grads`` arrays (no fresh array and
copy per step), and still get them right when those arrays were replaced by ones the kernels
cannot take. Oracle: cnn.reference (the seed's NumPy equations) through a forward/backward of
the same layer on the same data."""

import numpy as np
import pytest

import cnn
from cnn import _ops
from cnn import layers as L
from cnn import reference as R


def _layers():
    conv = L.Conv2D(5, 3, padding="same", activation="relu")
    conv.build((4, 8, 8), rng=np.random.default_rng(1), dtype=np.float64)
    dense = L.Dense(6, activation="relu")
    dense.build((20,), rng=np.random.default_rng(2), dtype=np.float64)
    return conv, dense


def _expected(layer, x, g):
    """dW, db of the layer for input x and upstream gradient g, by the reference."""
    w, b = layer.params
    if isinstance(layer, L.Conv2D):
        z = R.conv2d(x, w, b, 1, "same")
        _, dw, db = R.conv2d_backward(g * (z > 0), x, w, 1, "same")
    else:
        z = x @ w.T + b
        gz = g * (z > 0)
        dw, db = gz.T @ x, gz.sum(axis=0)
    return dw, db


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("fortran", [False, True])
def test_gradients_land_in_the_grads_arrays(rng, which, fortran):
    layer = _layers()[which]
    x = rng.standard_normal((3,) + tuple(layer.input_shape))
    layer.need_input_grad = True
    if fortran:   # an array the kernels cannot write into: the layer copies into it instead
        layer.grads[0] = np.asfortranarray(np.zeros_like(layer.grads[0]))
        assert not layer.grads[0].flags.c_contiguous
    before = list(layer.grads)
    y = layer.forward(x, training=True)
    g = rng.standard_normal(y.shape)
    layer.backward(g)
    dw, db = _expected(layer, x, g)
    assert all(a is b for a, b in zip(layer.grads, before))
    np.testing.assert_allclose(layer.grads[0], dw, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads[1], db, rtol=1e-10, atol=1e-12)


def test_gradient_buffers_take_only_arrays_that_fit():
    w = np.zeros((4, 3, 3, 3), np.float32)
    good, gb = np.zeros_like(w), np.zeros(4, np.float32)
    assert _ops.gradient_buffers(w, good, gb) == (good, gb)
    for bad in (np.zeros_like(w, dtype=np.float64), np.zeros((4, 3, 3, 4), np.float32)[..., :3],
                np.zeros((4, 27), np.float32), None):
        dw, db = _ops.gradient_buffers(w, bad, gb)
        assert dw is not bad and dw.shape == w.shape and dw.dtype == w.dtype
        assert db is gb
    ro = np.zeros_like(w)
    ro.setflags(write=False)
    assert _ops.gradient_buffers(w, ro, None)[0] is not ro
    assert _ops.gradient_buffers(w, None, np.zeros(5, np.float32))[1].shape == (4,)


def test_a_training_step_keeps_the_grads_objects(rng):
    model = cnn.Sequential([L.Conv2D(4, 3, activation="relu"), L.Flatten(), L.Dense(3, activation="softmax")],
                           input_shape=(2, 6, 6), seed=0)
    model.compile(optimizer="sgd", loss="cross_entropy")
    ids = [id(g) for layer in model.layers for g in layer.grads]
    x = rng.standard_normal((5, 2, 6, 6)).astype(np.float32)
    model.train_step(x, rng.integers(0, 3, 5))
    assert ids == [id(g) for layer in model.layers for g in layer.grads]
    assert all(np.abs(g).sum() > 0 for layer in model.layers for g in layer.grads)
