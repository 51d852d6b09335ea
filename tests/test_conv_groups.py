"""Conv2D dilation and groups (im2col path), and TensorFlow/Keras "same" padding for every
stride (conv and max-pool): against PyTorch with explicit pads, hand-computed values,
float64 finite differences and thread-count invariance."""
import numpy as np
import pytest
from conftest import DTYPES, assert_close, numerical_grad_of

import cnn
from cnn import functional as F
from cnn import layers

try:
    import torch
except ImportError:  # the torch oracle's tests skip; the others (finite differences...) run
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed (an oracle only)")


def _torch_conv(x, w, b, stride, pads, dilation, groups):
    t, bo, l, r = pads
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    bt = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.conv2d(torch.nn.functional.pad(xt, (l, r, t, bo)), wt, bt,
                                   stride=stride, dilation=dilation, groups=groups)
    return xt, wt, bt, y


CASES = [  # x shape, K, kernel, stride, padding, dilation, groups
    ((2, 4, 9, 8), 6, 3, 1, (1, 1, 1, 1), 1, 2),
    ((2, 4, 9, 8), 4, 3, 1, (2, 2, 2, 2), 2, 4),       # depthwise, dilated
    ((3, 6, 9, 8), 3, 3, 2, (1, 0, 2, 1), 2, 3),
    ((2, 3, 10, 9), 6, 3, 1, (0, 0, 0, 0), 3, 1),      # dilated, one group
    ((2, 4, 7, 7), 8, 1, 1, (0, 0, 0, 0), 1, 4),       # 1x1 grouped (the direct 1x1 path)
    ((2, 2, 8, 7), 4, 2, (2, 1), (0, 1, 1, 0), (2, 1), 2),
    ((1, 8, 6, 6), 8, 3, 1, "same", 1, 8),             # depthwise "same" (Winograd excluded)
]


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, K, k, stride, padding, dilation, groups", CASES)
def test_dilated_grouped_conv_matches_torch(rng, dtype, xs, K, k, stride, padding, dilation,
                                            groups):
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((K, xs[1] // groups, k, k)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    d = (dilation, dilation) if np.isscalar(dilation) else dilation
    s = (stride, stride) if np.isscalar(stride) else stride
    pads = F.conv2d_padding(padding, k, s, xs[2:], d)
    xt, wt, bt, yt = _torch_conv(x, w, b, s, pads, d, groups)
    y = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert_close(y, yt.detach().numpy(), dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(torch.tensor(dy, dtype=torch.float64))
    dx, dw, db = F.conv2d_backward(dy, x, w, stride=stride, padding=padding, dilation=dilation,
                                   groups=groups)
    assert_close(dx, xt.grad.numpy(), dtype)
    assert_close(dw, wt.grad.numpy(), dtype)
    assert_close(db, bt.grad.numpy(), dtype)
    # fused ReLU through the grouped path
    ya = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups,
                  activation="relu")
    assert_close(ya, np.maximum(yt.detach().numpy(), 0), dtype, scale=np.abs(y).max())


def test_grouped_dilated_conv_finite_differences(rng):
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((6, 2, 3, 2))
    b = rng.standard_normal(6)
    kw = {"stride": (1, 2), "padding": (1, 2, 0, 1), "dilation": (2, 1), "groups": 2}
    r = rng.standard_normal(F.conv2d(x, w, b, **kw).shape)
    dx, dw, db = F.conv2d_backward(r, x, w, **kw)

    def loss(x_, w_, b_):
        return float((F.conv2d(x_, w_, b_, **kw) * r).sum())

    np.testing.assert_allclose(dx, numerical_grad_of(lambda v: loss(v, w, b), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dw, numerical_grad_of(lambda v: loss(x, v, b), w), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(db, numerical_grad_of(lambda v: loss(x, w, v), b), rtol=1e-6, atol=1e-8)


def test_grouped_conv_bit_identical_for_1_2_3_threads(rng):
    x = rng.standard_normal((37, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, 2, 3, 3)).astype(np.float32)
    kw = {"padding": "same", "dilation": 2, "groups": 4}
    dy = rng.standard_normal((37, 8, 12, 12)).astype(np.float32)
    old = cnn.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            cnn.set_num_threads(n)
            results.append((F.conv2d(x, w, **kw),) + F.conv2d_backward(dy, x, w, **kw)[:2])
    finally:
        cnn.set_num_threads(old)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_conv_algorithm_choice_keeps_winograd_and_direct_for_their_shapes():
    from cnn import _ops
    assert _ops.conv_algorithm("auto", (32, 32, 3, 3), (1, 1), (1, 1), (14, 14), False) == "winograd"
    assert _ops.conv_algorithm("auto", (32, 32, 3, 3), (1, 1), (1, 1), (14, 14), False,
                               (2, 2), 1) == "im2col"
    assert _ops.conv_algorithm("auto", (32, 1, 3, 3), (1, 1), (1, 1), (14, 14), False,
                               (1, 1), 32) == "im2col"
    assert _ops.conv_algorithm("auto", (8, 1, 3, 3), (1, 1), (1, 1), (14, 14), False) == "direct"
    with pytest.raises(ValueError, match="dilation 1, groups 1"):
        _ops.conv_algorithm("winograd", (32, 32, 3, 3), (1, 1), (1, 1), (14, 14), False, (2, 2), 1)


@pytest.mark.parametrize("call, exc, match", [
    (lambda x: F.conv2d(x, np.zeros((4, 4, 3, 3)), groups=2), ValueError,
     r"w has 4 input channels per group .* 2 each"),
    (lambda x: F.conv2d(x, np.zeros((3, 2, 3, 3)), groups=2), ValueError,
     r"groups=2 must divide .* filters \(w.shape\[0\]=3\)"),
    (lambda x: F.conv2d(x, np.zeros((4, 1, 3, 3)), groups=3), ValueError, r"groups=3 must divide"),
    (lambda x: F.conv2d(x, np.zeros((4, 4, 3, 3)), groups=0), ValueError, r"groups must be an int >= 1"),
    (lambda x: F.conv2d(x, np.zeros((4, 4, 3, 3)), dilation=0), ValueError, r"dilation must be >= 1"),
    (lambda x: F.conv2d(x, np.zeros((4, 4, 3, 3)), dilation=4), ValueError,
     r"\(dilated\) kernel height \(9\) is larger than the padded input"),
])
def test_bad_groups_and_dilation(call, exc, match):
    with pytest.raises(exc, match=match):
        call(np.zeros((1, 4, 8, 8)))


def test_conv2d_layer_with_groups_and_dilation(rng, tmp_path):
    with pytest.raises(ValueError, match="groups=3 must divide filters=8"):
        layers.Conv2D(8, 3, groups=3)
    model = cnn.Sequential([layers.Conv2D(8, 3, padding="same", activation="relu"),
                            layers.Conv2D(8, 3, padding="same", dilation=2, groups=8),
                            layers.Conv2D(4, 1, groups=2), layers.Flatten(), layers.Dense(3)],
                           input_shape=(3, 8, 8), seed=1)
    assert model.layers[1].params[0].shape == (8, 1, 3, 3)
    assert model.layers[2].params[0].shape == (4, 4, 1, 1)
    assert model.layers[1].get_config()["dilation"] == 2 and model.layers[1].get_config()["groups"] == 8
    assert "groups=8" in repr(model.layers[1]) and "dilation=2" in repr(model.layers[1])
    with pytest.raises(ValueError, match="groups=3 must divide the input channels"):
        cnn.Sequential([layers.Conv2D(6, 3, groups=3)], input_shape=(4, 8, 8))
    model.compile(loss="cross_entropy", optimizer="sgd")
    x = rng.standard_normal((5, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 5)
    model.train_step(x, y)
    model.save(tmp_path / "m.npz")
    loaded = cnn.load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert "groups=8" in model.summary(print_fn=None)


# ----------------------------------------------------------------------------- "same" (TF rule)


def test_same_padding_4x4_kernel3_stride2_by_hand():
    # TF/Keras: out = ceil(4/2) = 2, total = (2 - 1)*2 + 3 - 4 = 1 -> (top, bottom) = (0, 1)
    assert F.conv2d_padding("same", 3, 2, (4, 4)) == (0, 1, 0, 1)
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    w = np.ones((1, 1, 3, 3))
    y = F.conv2d(x, w, stride=2, padding="same")
    # windows start at rows/cols 0 and 2; the one at 2 covers 2, 3 and a zero pad row/col
    want = np.array([[0 + 1 + 2 + 4 + 5 + 6 + 8 + 9 + 10, 2 + 3 + 6 + 7 + 10 + 11],
                     [8 + 9 + 10 + 12 + 13 + 14, 10 + 11 + 14 + 15]], dtype=np.float64)
    np.testing.assert_array_equal(y[0, 0], want)
    # max-pool "same" 3x3 / 2 on the same input: the same windows, padded cells never win
    yp, arg = F.maxpool2d(x, 3, 2, padding="same")
    np.testing.assert_array_equal(yp[0, 0], [[10, 11], [14, 15]])
    np.testing.assert_array_equal(arg[0, 0], [[10, 11], [14, 15]])


@pytest.mark.parametrize("hw, k, s", [((4, 4), 3, 2), ((9, 8), 3, 2), ((7, 10), 4, 3),
                                      ((5, 5), 1, 3), ((6, 7), 5, 2), ((8, 8), 2, 2)])
@needs_torch
def test_same_padding_matches_tf_formula_and_torch(rng, hw, k, s):
    H, W = hw
    pads = F.conv2d_padding("same", k, s, hw)
    for n, (before, after) in ((H, pads[:2]), (W, pads[2:])):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        assert (before, after) == (total // 2, total - total // 2)
    x = rng.standard_normal((2, 3, H, W))
    w = rng.standard_normal((4, 3, k, k))
    b = rng.standard_normal(4)
    y = F.conv2d(x, w, b, stride=s, padding="same")
    assert y.shape[2:] == (-(-H // s), -(-W // s))
    _, _, _, yt = _torch_conv(x, w, b, (s, s), pads, (1, 1), 1)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    # stride 1 unchanged: k - 1 in total, floor half first
    assert F.conv2d_padding("same", k, 1, hw) == ((k - 1) // 2, k // 2, (k - 1) // 2, k // 2)


def test_same_padding_needs_the_input_size_for_strides():
    with pytest.raises(ValueError, match="input_hw"):
        F.conv2d_padding("same", 3, 2)
    assert F.conv2d_padding("same", 3) == (1, 1, 1, 1)


def test_conv_layer_same_stride2_matches_functional(rng):
    layer = layers.Conv2D(2, 3, stride=2, padding="same")
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    y = layer(x)
    assert layer.pads == (0, 1, 0, 1)
    np.testing.assert_array_equal(y, F.conv2d(x, layer.params[0], layer.params[1], stride=2,
                                              padding=(0, 1, 0, 1)))


@needs_torch
def test_maxpool_same_layer(rng):
    layer = layers.MaxPool2D(3, 2, padding="same")
    assert layer.compute_output_shape((2, 7, 8)) == (2, 4, 4)
    assert layers.MaxPool2D.from_config(layer.get_config()).padding == "same"
    x = rng.standard_normal((2, 2, 7, 8))
    t = torch.nn.functional.max_pool2d(
        torch.nn.functional.pad(torch.tensor(x), (0, 1, 1, 1), value=-np.inf), 3, 2)
    assert F.maxpool2d_padding("same", 3, 2, (7, 8)) == (1, 1, 0, 1)
    np.testing.assert_array_equal(layer.forward(x.astype(np.float32)), t.numpy().astype(np.float32))
