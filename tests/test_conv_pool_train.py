"""The training conv + max-pool kernel (cnn._ops.conv2d_maxpool: one pass, the unpooled tensor
never written) against the two training calls it replaces, conv2d then maxpool2d: the same
bits for the pooled values and the same argmax, for every conv algorithm, pool geometry,
dtype and thread count; and a Model whose Conv2D -> MaxPool2D pairs run fused against the same
model unfused (outputs, losses, gradients, weights after steps: bit for bit, on the scatter +
dense backward; the pooled backward has tests/test_pooled_backward.py)."""

import numpy as np
import pytest

import cnn
from cnn import _ops
from cnn import functional as F

DTYPES = (np.float32, np.float64)

# (x shape, K, kernel, stride, conv padding, pool size, pool stride, pool padding)
CASES = [
    ((5, 16, 14, 14), 24, 3, 1, "same", 2, 2, "tile"),     # Winograd, the 2x2 pool
    ((3, 16, 13, 11), 16, 3, 1, "same", 2, 2, "tile"),     # Winograd, odd planes (padded pool)
    ((4, 1, 28, 28), 8, 3, 1, "same", 2, 2, "tile"),       # the direct one-channel kernel
    ((3, 1, 15, 12), 9, 3, 1, "valid", 3, 2, "same"),      # direct, overlapping windows
    ((6, 3, 16, 16), 12, 3, 2, "same", 2, 2, "tile"),      # im2col, stride 2, blocks of images
    ((2, 5, 12, 10), 7, 5, 1, "same", 3, 3, "valid"),      # im2col 5x5, 3x3 pool
    ((3, 8, 9, 9), 10, 1, 1, "valid", 2, 1, "valid"),      # 1x1: the input is the columns
    ((40, 16, 6, 6), 16, 3, 1, "same", 2, 2, "tile"),      # Winograd over many blocks
]


def _conv_geometry(xs, k, kernel, stride, padding):
    return F._conv_geometry(xs, (k, xs[1], kernel, kernel), stride, padding)


def _pool_geometry(conv_hw, size, stride, padding):
    pads = F.maxpool2d_padding(padding, size, stride, conv_hw)
    out = F.maxpool2d_output_shape((1,) + tuple(conv_hw), size, stride, padding)[1:]
    return (size, size), (stride, stride), pads, tuple(int(v) for v in out)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("relu", [True, False])
def test_fused_pool_is_conv_then_pool_bit_for_bit(rng, dtype, case, relu):
    xs, k, kernel, stride, padding, psize, pstride, ppad = case
    x = rng.standard_normal(xs).astype(dtype)
    x[0, 0, :3, :3] = 0.0                       # windows of ties (zeros after the ReLU)
    w = (rng.standard_normal((k, xs[1], kernel, kernel)) * 0.3).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    (sh, sw), pads, out_hw, _, _ = _conv_geometry(xs, k, kernel, stride, padding)
    pool = _pool_geometry(out_hw, psize, pstride, ppad)
    before = cnn.get_num_threads()
    try:
        for threads in (1, 2):
            cnn.set_num_threads(threads)
            z = _ops.conv2d(x, w, b, (sh, sw), pads, out_hw, relu)
            want_y, want_arg = _ops.maxpool2d(z, *pool)
            scratch = {}
            for _ in range(2):                  # the second call reuses the scratch rows
                y, arg = _ops.conv2d_maxpool(x, w, b, (sh, sw), pads, out_hw, relu, *pool,
                                             scratch=scratch)
                assert y.dtype == dtype and arg.dtype == np.intp
                assert y.tobytes() == want_y.tobytes(), threads
                np.testing.assert_array_equal(arg, want_arg)
    finally:
        cnn.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_plane_takes_the_nan_aware_pool(rng, dtype):
    x = rng.standard_normal((2, 16, 10, 10)).astype(dtype)
    x[1, 3, 4, 5] = np.nan                      # every filter's plane of image 1 holds NaN
    w = (rng.standard_normal((8, 16, 3, 3)) * 0.3).astype(dtype)
    (sh, sw), pads, out_hw, _, _ = _conv_geometry(x.shape, 8, 3, 1, "same")
    pool = _pool_geometry(out_hw, 2, 2, "tile")
    z = _ops.conv2d(x, w, None, (sh, sw), pads, out_hw, False)
    want_y, want_arg = _ops.maxpool2d(z, *pool)
    y, arg = _ops.conv2d_maxpool(x, w, None, (sh, sw), pads, out_hw, False, *pool)
    assert np.isnan(y[1]).any() and not np.isnan(y[0]).any()
    assert y.tobytes() == want_y.tobytes()
    np.testing.assert_array_equal(arg, want_arg)


# ----------------------------------------------------------------------------- models

def _bits(a):
    a = np.ascontiguousarray(a)
    return a.dtype, a.shape, a.tobytes()


def _graph_conv_pool(dtype, seed):
    """A graph with one fusable pair (conv -> pool), one conv read twice (by a pool and by an
    Add: not fused), a tanh conv before a pool (not fused) and a padded overlapping pool."""
    inp = cnn.Input((3, 12, 12))
    a = cnn.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    p = cnn.layers.MaxPool2D(3, stride=1, padding="same")(a)           # fused, overlapping
    c = cnn.layers.Conv2D(8, 3, padding="same")(p)                    # read by two layers
    d = cnn.layers.MaxPool2D(2)(c)
    e = cnn.layers.Conv2D(8, 1)(c)
    f = cnn.layers.MaxPool2D(2)(e)                                     # fused, no activation
    g = cnn.layers.Add()([d, f])
    h = cnn.layers.Conv2D(6, 3, padding="same", activation="tanh")(g)
    i = cnn.layers.MaxPool2D(2)(h)                                     # not fused: tanh
    out = cnn.layers.Dense(3, activation="softmax")(cnn.layers.Flatten()(i))
    return cnn.Model(inp, out, seed=seed, dtype=dtype)


def _small_cnn(dtype, seed):
    """The DESIGN CNN's layers (dropout left out) on 14x14 images, in ``dtype``."""
    L = cnn.layers
    return cnn.Sequential([L.Conv2D(8, 3, padding="same", activation="relu"), L.MaxPool2D(2),
                           L.Conv2D(16, 3, padding="same", activation="relu"), L.MaxPool2D(2),
                           L.Flatten(), L.Dense(12, activation="relu"),
                           L.Dense(3, activation="softmax")],
                          input_shape=(1, 14, 14), seed=seed, dtype=dtype)


# name -> (builder(dtype, seed), item shape, fused pairs)
MODELS = {
    "design": (lambda dtype, seed: cnn.models.design_cnn(input_shape=(1, 14, 14), classes=3,
                                                         seed=seed), (1, 14, 14), 2),
    "lenet5": (lambda dtype, seed: cnn.models.lenet5(input_shape=(1, 28, 28), classes=3,
                                                     seed=seed), (1, 28, 28), 2),
    "small64": (lambda dtype, seed: _small_cnn("float64", seed), (1, 14, 14), 2),
    "graph": (_graph_conv_pool, (3, 12, 12), 2),
}


def _trajectory(name, dtype, fuse, x, y, steps=3):
    model = MODELS[name][0](dtype, 5)
    model._set_pool_fusion(fuse)
    pairs = sum(s.fused == "pool" for s in model._steps)
    assert pairs == (MODELS[name][2] if fuse else 0)
    model.compile("cross_entropy", cnn.optimizers.SGD(lr=0.05, momentum=0.9))
    record = []
    for _ in range(steps):
        loss, out = model.forward_backward(x, y, return_outputs=True)
        record += [np.float64(loss), out] + [g.copy() for g in model.grads]
        model.apply_gradients()
    record += [p.copy() for p in model.params]
    record.append(model._forward(x, False))
    record.append(model.predict(x))
    return record, pairs


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fused_pool_model_trains_bit_identically(monkeypatch, name):
    # the scatter + dense backward of the fused pair; the pooled backward (other sums, other
    # bits) is compared with it in tests/test_pooled_backward.py
    monkeypatch.setattr(_ops, "POOLED_BACKWARD", False)
    rng = np.random.default_rng(3)
    shape = MODELS[name][1]
    dtype = "float64" if name == "small64" else "float32"
    x = rng.standard_normal((6,) + shape).astype(dtype)
    x[0, 0, :4, :4] = 0.0                      # ties among the ReLU outputs
    x[1, 0, 2, 3] = -0.0
    y = rng.integers(0, 3, 6)
    fused, _ = _trajectory(name, dtype, True, x, y)
    plain, _ = _trajectory(name, dtype, False, x, y)
    assert len(fused) == len(plain)
    for i, (a, b) in enumerate(zip(fused, plain)):
        assert _bits(a) == _bits(b), f"{name} item {i}: fused and unfused differ"


def test_fused_pool_graph_rules():
    model = _graph_conv_pool("float32", 0)
    convs = [s for s in model._steps if type(s.layer) is cnn.layers.Conv2D]
    assert [s.fused for s in convs] == ["pool", None, "pool", None]
    # the fused ones: the ReLU conv before the overlapping pool, the 1x1 conv without
    # activation; not: the conv read by a pool and a 1x1 conv, the tanh conv
    assert [s.layer.activation.name for s in convs if s.fused] == ["relu", "identity"]
    for s in model._steps:
        if s.fused == "pool":
            assert type(s.partner) is cnn.layers.MaxPool2D
        elif s.fused == "pooled":
            assert type(s.partner) is cnn.layers.Conv2D
        else:
            assert s.partner is None


def test_fused_pool_thread_count_invariant():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 1, 14, 14))
    y = rng.integers(0, 3, 16)
    old = cnn.get_num_threads()
    runs = {}
    try:
        for threads in (1, 2):
            cnn.set_num_threads(threads)
            for dtype in ("float32", "float64"):
                model = _small_cnn(dtype, 1).compile("cross_entropy", "sgd")
                assert sum(s.fused == "pool" for s in model._steps) == 2
                runs[threads, dtype] = [_bits(model.train_step(x.astype(dtype), y))
                                        for _ in range(2)] + [_bits(g) for g in model.grads]
    finally:
        cnn.set_num_threads(old)
    for dtype in ("float32", "float64"):
        assert runs[1, dtype] == runs[2, dtype]


def test_hooks_see_both_layers_of_a_fused_pair(rng):
    x = rng.standard_normal((4, 1, 14, 14)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    events = {}
    for fuse in (True, False):
        model = cnn.models.design_cnn(input_shape=(1, 14, 14), classes=3, seed=0)
        model._set_pool_fusion(fuse)
        model.compile("cross_entropy", "sgd")
        seen = events[fuse] = []
        model.register_layer_hook(
            lambda event, k, layer, seen=seen: seen.append((event, k, type(layer))))
        model.train_step(x, y)
    assert events[True] == events[False]
    assert sum(e[2] is cnn.layers.MaxPool2D for e in events[True]) == 2 * 4


def test_fused_pool_is_not_saved_and_layers_alone_are_unchanged(tmp_path, rng):
    x = rng.standard_normal((4, 1, 14, 14)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    model = cnn.models.design_cnn(input_shape=(1, 14, 14), classes=3, seed=0)
    model.compile("cross_entropy", "sgd")
    model.train_step(x, y)
    model.save(tmp_path / "m.npz")
    loaded = cnn.load_model(tmp_path / "m.npz")
    assert sum(s.fused == "pool" for s in loaded._steps) == 2
    assert _bits(loaded.train_step(x, y)) == _bits(model.train_step(x, y))
    # the conv used on its own: its unpooled output, its own backward
    conv = next(s.layer for s in model._steps if s.fused == "pool")
    a = conv.forward(x, training=True)
    want = F.conv2d(x, conv.params[0], conv.params[1], padding="same", activation="relu")
    assert _bits(a) == _bits(want)
    assert conv.backward(np.ones_like(a)) is None      # the first layer: no input gradient


def test_activation_swapped_after_build_falls_back_unfused(rng):
    # the fusion is chosen when the model is built; a conv whose activation is replaced later
    # (to tanh: no longer fusable) must run its own forward and backward, not a fused ReLU-less
    # kernel
    x = rng.standard_normal((4, 1, 14, 14)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    runs = []
    for fuse in (True, False):
        model = _small_cnn("float32", 2)
        model._set_pool_fusion(fuse)
        conv = model.layers[0]
        conv.activation = cnn.activations.get("tanh")
        conv._identity = False
        model.compile("cross_entropy", "sgd")
        runs.append([_bits(model.train_step(x, y)) for _ in range(2)]
                    + [_bits(g) for g in model.grads] + [_bits(model._forward(x, False))])
        assert sum(s.fused == "pool" for s in model._steps) == (2 if fuse else 0)
    assert runs[0] == runs[1]


def test_fused_kernel_rejects_a_bad_argmax(rng):
    from cnn._ext import _fused
    x = rng.standard_normal((2, 16, 8, 8)).astype(np.float32)
    w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    y = np.empty((2, 8, 4, 4), np.float32)
    size = _fused.scratch_size(_fused.WINOGRAD, 2, 16, 8, 3, 3, 8, 8)
    scratch = np.empty((1, size), np.float32)
    U = np.empty((16, 8, 16), np.float32)
    args = (x, w, None, y, scratch, U, _fused.WINOGRAD, 1, 1, 1, 1, 8, 8, True)
    with pytest.raises(ValueError, match="argmax has shape"):
        _fused.conv_pool_forward(*args, 2, 2, 2, 2, 0, 0, 1,
                                 argmax=np.empty((2, 8, 4, 3), np.intp))
    with pytest.raises(ValueError, match="needs a pool"):
        _fused.conv_pool_forward(*args, 0, 0, 1, 1, 0, 0, 1,
                                 argmax=np.empty((2, 8, 4, 4), np.intp))
    arg = np.empty((2, 8, 4, 4), np.intp)
    _fused.conv_pool_forward(*args, 2, 2, 2, 2, 0, 0, 1, argmax=arg)
    z = _ops.conv2d(x, w, None, (1, 1), (1, 1, 1, 1), (8, 8), True, algorithm="winograd")
    want_y, want_arg = _ops.maxpool2d(z, (2, 2), (2, 2), (0, 0, 0, 0), (4, 4))
    assert y.tobytes() == want_y.tobytes()
    np.testing.assert_array_equal(arg, want_arg)
