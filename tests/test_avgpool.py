"""AvgPool2D and GlobalAvgPool2D: a loop oracle (padded cells not counted), PyTorch
(count_include_pad=False), float64 finite differences, threads, layers and errors."""
import numpy as np
import pytest
from conftest import DTYPES, assert_close, numerical_grad_of

import cnn
from cnn import functional as F
from cnn import layers


def _loop_avgpool(x, k, s, pads):
    """Plain loops: the mean of each window's cells that lie inside the input."""
    (kh, kw), (sh, sw), (t, b, l, r) = k, s, pads
    N, C, H, W = x.shape
    OH, OW = (H + t + b - kh) // sh + 1, (W + l + r - kw) // sw + 1
    y = np.zeros((N, C, OH, OW))
    for i in range(OH):
        for j in range(OW):
            cells = [(u, v) for u in range(i * sh - t, i * sh - t + kh)
                     for v in range(j * sw - l, j * sw - l + kw) if 0 <= u < H and 0 <= v < W]
            y[:, :, i, j] = np.mean([x[:, :, u, v] for u, v in cells], axis=0)
    return y


CASES = [  # x shape, size, stride, padding
    ((2, 3, 6, 6), 2, None, "valid"),
    ((2, 2, 7, 5), 3, 2, "same"),
    ((1, 2, 4, 4), 3, 2, "same"),
    ((2, 1, 7, 7), (3, 2), (2, 1), (1, 0, 1, 1)),
    ((1, 3, 5, 6), 2, None, "tile"),
    ((2, 2, 5, 5), 3, 1, 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, size, stride, padding", CASES)
def test_forward_backward_match_loops_and_finite_differences(rng, dtype, xs, size, stride, padding):
    x = rng.standard_normal(xs).astype(dtype)
    k = (size, size) if np.isscalar(size) else size
    s = k if stride is None else ((stride, stride) if np.isscalar(stride) else stride)
    pads = F.maxpool2d_padding(padding, k, s, xs[2:])
    y = F.avgpool2d(x, size, stride, padding)
    assert_close(y, _loop_avgpool(x.astype(np.float64), k, s, pads), dtype)
    r = rng.standard_normal(y.shape)
    dx = F.avgpool2d_backward(r.astype(dtype), xs, size, stride, padding)
    num = numerical_grad_of(lambda v: float((F.avgpool2d(v, size, stride, padding) * r).sum()), x)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, num, rtol=1e-5 if dtype == np.float32 else 1e-7, atol=1e-6)


@pytest.mark.parametrize("xs, k, s, p", [((2, 3, 7, 7), 3, 2, 1), ((1, 2, 8, 6), 2, 2, 1),
                                         ((2, 2, 9, 9), 3, 3, 0)])
def test_matches_torch_without_pad_counting(rng, xs, k, s, p):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(xs)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.avg_pool2d(xt, k, s, p, count_include_pad=False)
    y = F.avgpool2d(x, k, s, p)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-13)
    dy = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(F.avgpool2d_backward(dy, xs, k, s, p), xt.grad.numpy(),
                               rtol=1e-12, atol=1e-13)


def test_global_avgpool_matches_mean_torch_and_finite_differences(rng):
    x = rng.standard_normal((3, 4, 5, 6))
    y = F.global_avgpool2d(x)
    np.testing.assert_allclose(y, x.mean(axis=(2, 3)), rtol=1e-13)
    r = rng.standard_normal(y.shape)
    dx = F.global_avgpool2d_backward(r, x.shape)
    np.testing.assert_allclose(dx, numerical_grad_of(lambda v: float((F.global_avgpool2d(v) * r).sum()), x),
                               rtol=1e-7, atol=1e-9)
    torch = pytest.importorskip("torch")
    t = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x), 1)[:, :, 0, 0].numpy()
    np.testing.assert_allclose(y, t, rtol=1e-12)


def test_threads_give_identical_bits(rng):
    x = rng.standard_normal((16, 8, 15, 15)).astype(np.float32)
    dy = rng.standard_normal((16, 8, 8, 8)).astype(np.float32)
    dg = rng.standard_normal((16, 8)).astype(np.float32)
    old = cnn.get_num_threads()
    runs = []
    try:
        for n in (1, 2, 3):
            cnn.set_num_threads(n)
            runs.append((F.avgpool2d(x, 3, 2, "same"), F.avgpool2d_backward(dy, x.shape, 3, 2, "same"),
                         F.global_avgpool2d(x), F.global_avgpool2d_backward(dg, x.shape)))
    finally:
        cnn.set_num_threads(old)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


def test_layers_train_save_load(rng, tmp_path):
    model = cnn.Sequential([layers.Conv2D(4, 3, padding="same", activation="relu"),
                            layers.AvgPool2D(2), layers.Conv2D(4, 3, padding="same"),
                            layers.AveragePooling2D(3, 2, padding="same"),
                            layers.GlobalAveragePooling2D(), layers.Dense(2, activation="softmax")],
                           input_shape=(1, 9, 9), seed=2)
    assert [l.output_shape for l in model.layers[1:5]] == [(4, 4, 4), (4, 4, 4), (4, 2, 2), (4,)]
    assert isinstance(model.layers[3], layers.AvgPool2D)
    assert model.layers[3].get_config() == {"size": 3, "stride": 2, "padding": "same"}
    model.compile(loss="cross_entropy", optimizer="sgd")
    x = rng.standard_normal((6, 1, 9, 9)).astype(np.float32)
    y = rng.integers(0, 2, 6)
    loss0 = model.train_step(x, y)
    assert np.isfinite(loss0)
    assert "AvgPool2D(size=3, stride=2, padding='same')" in model.summary(print_fn=None)
    model.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(cnn.load_model(tmp_path / "m.npz").predict(x), model.predict(x))


def test_errors():
    with pytest.raises(ValueError, match="smaller than the window"):
        F.avgpool2d(np.ones((1, 1, 4, 4)), 2, padding=2)
    with pytest.raises(ValueError, match="padding must be one of"):
        layers.AvgPool2D(padding="full")
    with pytest.raises(ValueError, match=r"AvgPool2D expects image items of shape \(C, H, W\)"):
        layers.AvgPool2D().build((4,))
    with pytest.raises(ValueError, match=r"GlobalAvgPool2D expects image items"):
        layers.GlobalAvgPool2D().build((4,))
    with pytest.raises(ValueError, match=r"dy must have the pool output's shape \(1, 1, 2, 2\)"):
        F.avgpool2d_backward(np.ones((1, 1, 3, 3)), (1, 1, 4, 4), 2)
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        F.global_avgpool2d(np.ones((1, 1, 2, 2), dtype=np.int32))
