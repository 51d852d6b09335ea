"""BatchNormalization: the kernels against float64 finite differences and a NumPy oracle, a
training trajectory against torch.nn.BatchNorm2d / BatchNorm1d (weights and running
statistics), evaluation mode, the one-value-per-channel rule, thread-count invariance,
config, save/load and errors."""
import numpy as np
import pytest
from conftest import DTYPES, assert_close, numerical_grad_of

import cnn
from cnn import functional as F
from cnn import layers, optimizers


def _numpy_bn(x, gamma, beta, eps):
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=axes)
    var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes)
    xhat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    return gamma.reshape(shape) * xhat + beta.reshape(shape), mean, var


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6, 3, 4, 5), (7, 5), (1, 2, 3, 3), (2, 1)])
def test_forward_matches_numpy(rng, dtype, shape):
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    gamma = rng.standard_normal(shape[1]).astype(dtype)
    beta = rng.standard_normal(shape[1]).astype(dtype)
    y, mean, var = F.batch_norm(x, gamma, beta, eps=1e-3)
    want, wmean, wvar = _numpy_bn(x.astype(np.float64), gamma.astype(np.float64),
                                  beta.astype(np.float64), 1e-3)
    assert y.dtype == dtype
    assert_close(y, want, dtype)
    np.testing.assert_allclose(mean, wmean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(var, wvar, rtol=1e-10, atol=1e-12)
    rm, rv = rng.standard_normal(shape[1]), rng.random(shape[1]) + 0.5
    ye = F.batch_norm(x, gamma, beta, 1e-3, running_mean=rm, running_var=rv)[0]
    r = (1, -1) + (1,) * (x.ndim - 2)
    assert_close(ye, (x - rm.reshape(r)) / np.sqrt(rv.reshape(r) + 1e-3) * gamma.reshape(r)
                 + beta.reshape(r), dtype)


@pytest.mark.parametrize("shape", [(4, 3, 3, 2), (5, 4), (1, 2, 2, 2)])
@pytest.mark.parametrize("affine", [True, False])
def test_backward_matches_finite_differences(rng, shape, affine):
    x = rng.standard_normal(shape) * 2 + 1
    gamma = rng.standard_normal(shape[1]) if affine else None
    beta = rng.standard_normal(shape[1]) if affine else None
    r = rng.standard_normal(shape)
    _, mean, var = F.batch_norm(x, gamma, beta, eps=1e-2)
    dx, dgamma, dbeta = F.batch_norm_backward(r, x, mean, var, gamma, eps=1e-2)

    def loss(x_, g_, b_):
        return float((F.batch_norm(x_, g_, b_, eps=1e-2)[0] * r).sum())

    np.testing.assert_allclose(dx, numerical_grad_of(lambda v: loss(v, gamma, beta), x),
                               rtol=1e-6, atol=1e-8)
    g = np.ones(shape[1]) if gamma is None else gamma
    b = np.zeros(shape[1]) if beta is None else beta
    np.testing.assert_allclose(dgamma, numerical_grad_of(lambda v: loss(x, v, b), g),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dbeta, numerical_grad_of(lambda v: loss(x, g, v), b),
                               rtol=1e-6, atol=1e-8)


def test_layer_backward_matches_finite_differences(rng):
    layer = layers.BatchNormalization(momentum=0.5, eps=1e-3)
    layer.build((3, 2, 3), rng=rng, dtype=np.float64)
    layer.params[0][...] = rng.standard_normal(3)
    layer.params[1][...] = rng.standard_normal(3)
    x = rng.standard_normal((4, 3, 2, 3))
    r = rng.standard_normal(x.shape)
    layer.forward(x, training=True)
    dx = layer.backward(r)
    saved = [b.copy() for b in layer.buffers]

    def loss(v):
        return float((layer.forward(v, training=True) * r).sum())

    np.testing.assert_allclose(dx, numerical_grad_of(loss, x), rtol=1e-6, atol=1e-8)
    for buf, old in zip(layer.buffers, saved):
        buf[...] = old


@pytest.mark.parametrize("shape", [(64, 8, 20, 20), (128, 16, 9, 9), (8192, 24)])
def test_threads_give_identical_bits(rng, shape):
    # big enough for 2 threads (see _ops.threads_for); repeated, as a race shows only now and then
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    gamma = rng.standard_normal(shape[1]).astype(np.float32)
    beta = rng.standard_normal(shape[1]).astype(np.float32)
    old = cnn.get_num_threads()
    runs = []
    try:
        for n in (1, 2, 3) * 4:
            cnn.set_num_threads(n)
            y, mean, var = F.batch_norm(x, gamma, beta)
            ye = F.batch_norm(x, gamma, beta, running_mean=mean, running_var=var)[0]
            runs.append((y, mean, var, ye) + F.batch_norm_backward(dy, x, mean, var, gamma))
    finally:
        cnn.set_num_threads(old)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- vs PyTorch


def _trajectory(torch, conv, dtype, steps=6):
    """Train the same net with the same batches in cnn and torch; return both."""
    rng = np.random.default_rng(3)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    if conv:
        model = cnn.Sequential([layers.Conv2D(4, 3, padding="same", use_bias=False),
                                layers.BatchNormalization(momentum=0.8, eps=1e-4),
                                layers.Activation("relu"), layers.Flatten(),
                                layers.Dense(3, activation="softmax")],
                               input_shape=(2, 5, 5), seed=0, dtype=dtype)
        net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1, bias=False),
                                  torch.nn.BatchNorm2d(4, momentum=0.2, eps=1e-4),
                                  torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(100, 3))
        x = (rng.standard_normal((steps, 10, 2, 5, 5)) * 2 + 0.5).astype(dtype)
        bn_index, torch_pairs = 1, [(0, 0), (4, 4)]
    else:
        model = cnn.Sequential([layers.Dense(6), layers.BatchNormalization(momentum=0.8, eps=1e-4),
                                layers.Activation("relu"), layers.Dense(3, activation="softmax")],
                               input_shape=(5,), seed=0, dtype=dtype)
        net = torch.nn.Sequential(torch.nn.Linear(5, 6),
                                  torch.nn.BatchNorm1d(6, momentum=0.2, eps=1e-4),
                                  torch.nn.ReLU(), torch.nn.Linear(6, 3))
        x = (rng.standard_normal((steps, 10, 5)) * 2 + 0.5).astype(dtype)
        bn_index, torch_pairs = 1, [(0, 0), (3, 3)]
    net = net.to(tdtype)
    y = rng.integers(0, 3, size=(steps, 10))
    model.compile(loss="cross_entropy", optimizer=optimizers.SGD(lr=0.1, momentum=0.9))
    # same starting point: cnn's weights into torch (BN gamma/beta start at 1/0 in both)
    with torch.no_grad():
        for ci, ti in torch_pairs:
            for p, name in zip(model.layers[ci].params, model.layers[ci].param_names):
                getattr(net[ti], name).copy_(torch.tensor(p))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for s in range(steps):
        model.train_step(x[s], y[s])
        net.train()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(torch.tensor(x[s])), torch.tensor(y[s])).backward()
        opt.step()
    return model, net, x, bn_index, torch_pairs


@pytest.mark.parametrize("conv", [True, False], ids=["BatchNorm2d", "BatchNorm1d"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_training_trajectory_matches_torch(conv, dtype):
    torch = pytest.importorskip("torch")
    model, net, x, bn, pairs = _trajectory(torch, conv, dtype)
    tol = {"rtol": 1e-9, "atol": 1e-10} if dtype == np.float64 else {"rtol": 2e-4, "atol": 2e-5}
    tbn = net[1]
    lbn = model.layers[bn]
    np.testing.assert_allclose(lbn.buffers[0], tbn.running_mean.detach().numpy(), **tol)
    np.testing.assert_allclose(lbn.buffers[1], tbn.running_var.detach().numpy(), **tol)
    np.testing.assert_allclose(lbn.params[0], tbn.weight.detach().numpy(), **tol)
    np.testing.assert_allclose(lbn.params[1], tbn.bias.detach().numpy(), **tol)
    for ci, ti in pairs:
        for p, name in zip(model.layers[ci].params, model.layers[ci].param_names):
            np.testing.assert_allclose(p, getattr(net[ti], name).detach().numpy(), **tol)
    # the weights moved: the comparison is of a trajectory, not of the starting point
    assert np.abs(lbn.params[0] - 1).max() > 1e-3
    # evaluation uses the running statistics in both
    net.eval()
    with torch.no_grad():
        want = torch.softmax(net(torch.tensor(x[0])), dim=1).numpy()
    np.testing.assert_allclose(model.predict(x[0]), want, **tol)


# ----------------------------------------------------------------------------- the layer


def test_one_value_per_channel_in_training_is_an_error_not_nan(rng):
    layer = layers.BatchNormalization()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer.forward(rng.standard_normal((1, 4)).astype(np.float32), training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer.forward(np.ones((1, 4), dtype=np.float32).reshape(1, 4), training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(np.ones((1, 2, 1, 1)))
    # evaluation of one item is fine, and so is one image with several pixels in training
    assert np.isfinite(layer.forward(rng.standard_normal((1, 4)).astype(np.float32))).all()
    conv_bn = layers.BatchNormalization()
    y = conv_bn.forward(rng.standard_normal((1, 2, 3, 3)).astype(np.float32), training=True)
    assert np.isfinite(y).all() and np.isfinite(conv_bn.buffers[1]).all()
    # a constant channel: variance 0, y = beta, finite
    y = conv_bn.forward(np.full((2, 2, 3, 3), 5.0, dtype=np.float32), training=True)
    np.testing.assert_array_equal(y, 0.0)


def test_running_statistics_follow_the_documented_update(rng):
    layer = layers.BatchNormalization(momentum=0.7)
    x = rng.standard_normal((5, 3, 2, 2))
    layer.build((3, 2, 2), rng=rng, dtype=np.float64)
    layer.forward(x, training=True)
    m = x.size // 3
    mean = x.mean(axis=(0, 2, 3))
    var_unbiased = x.var(axis=(0, 2, 3)) * m / (m - 1)
    np.testing.assert_allclose(layer.buffers[0], 0.3 * mean, rtol=1e-12)
    np.testing.assert_allclose(layer.buffers[1], 0.7 + 0.3 * var_unbiased, rtol=1e-12)
    before = [b.copy() for b in layer.buffers]
    layer.forward(x, training=False)  # evaluation leaves them alone
    for a, b in zip(before, layer.buffers):
        np.testing.assert_array_equal(a, b)


def test_center_scale_config_save_load_summary(rng, tmp_path):
    model = cnn.Sequential([layers.Conv2D(3, 3, use_bias=False),
                            layers.BatchNormalization(momentum=0.95, eps=1e-3, center=False),
                            layers.Activation("relu"), layers.GlobalAvgPool2D(),
                            layers.BatchNormalization(scale=False), layers.Dense(2)],
                           input_shape=(2, 6, 6), seed=0)
    assert model.layers[1].param_names == ("weight",)
    assert model.layers[4].param_names == ("bias",)
    keys = set(model.state_dict())
    assert {"1.weight", "1.running_mean", "1.running_var", "4.bias", "4.running_var"} <= keys
    assert "1.bias" not in keys and "4.weight" not in keys
    cfg = model.layers[1].get_config()
    assert cfg == {"momentum": 0.95, "eps": 1e-3, "center": False, "scale": True}
    assert repr(model.layers[1]) == "BatchNormalization(momentum=0.95, eps=0.001, center=False)"
    text = model.summary(print_fn=None)
    assert "BatchNormalization" in text and "GlobalAvgPool2D" in text
    model.compile(loss="cross_entropy", optimizer="sgd")
    x = rng.standard_normal((8, 2, 6, 6)).astype(np.float32)
    y = rng.integers(0, 2, 8)
    for _ in range(3):
        model.train_step(x, y)
    model.save(tmp_path / "bn.npz")
    loaded = cnn.load_model(tmp_path / "bn.npz")
    np.testing.assert_array_equal(loaded.layers[1].buffers[1], model.layers[1].buffers[1])
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"momentum": 1.0}, ValueError, r"momentum must be a finite number in \[0.0, 1.0\), got 1.0"),
    ({"momentum": "0.9"}, TypeError, r"momentum must be a real number"),
    ({"eps": 0.0}, ValueError, r"eps must be a finite number in \(0.0, inf\)"),
    ({"center": 1}, TypeError, r"center must be a bool"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        layers.BatchNormalization(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"items of shape \(C, H, W\) or \(F,\)"):
        layers.BatchNormalization().build((2, 3))
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\)"):
        F.batch_norm(np.ones((4, 3)), gamma=np.ones(2))
    with pytest.raises(ValueError, match=r"x must be 2-D \(N, F\) or 4-D"):
        F.batch_norm(np.ones((4, 3, 2)))
    with pytest.raises(TypeError, match=r"gamma has dtype float32 but the input has dtype float64"):
        F.batch_norm(np.ones((4, 3)), gamma=np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match="running_mean and running_var go together"):
        F.batch_norm(np.ones((4, 3)), running_mean=np.zeros(3))
    with pytest.raises(ValueError, match=r"dy must have x's shape"):
        F.batch_norm_backward(np.ones((4, 2)), np.ones((4, 3)), np.zeros(3), np.ones(3))
