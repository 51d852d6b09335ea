"""Training-time fusion of a ReLU into BatchNormalization and Add (cnn/_train_fusion.py).

The oracle is the unfused computation: the same model with the fusion switched off
(``Model._set_relu_fusion(False)``), or at kernel level the BN/Add kernel followed by the ReLU
kernels. Fusion must give the same bits (outputs, losses, every gradient, running statistics,
SGD trajectories), in float32 and float64, with NaN/inf/-0.0 values, on 1 and 2 threads and
on every kernel clone; the rules of which calls fuse; hooks; save/load/config untouched.
"""

import numpy as np
import pytest
from conftest import DTYPES, run_under_clones

import cnn
from cnn import _ops, _train_fusion, layers, models, optimizers
from cnn.activations import ReLU


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.dtype, a.shape, a.tobytes()


def _assert_same_bits(a, b, what=""):
    assert _bits(a) == _bits(b), f"{what}: fused and unfused differ"


# ----------------------------------------------------------------------------- kernels

def _bn_data(rng, shape, dtype):
    """BN inputs with special values: a NaN channel, an inf channel, a channel whose outputs
    overflow to +-inf, one that normalises to +-0.0 (gamma 0, beta -0.0), and S with lanes and
    a tail."""
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    gamma = rng.standard_normal(shape[1]).astype(dtype)
    beta = rng.standard_normal(shape[1]).astype(dtype)
    c = shape[1]
    if c >= 5:
        rest = (0,) * (len(shape) - 2)
        x[(1, 0) + rest] = np.nan
        x[(0, 1) + rest] = np.inf
        gamma[2] = np.finfo(dtype).max           # |xhat| > 1 overflows, on both sides
        gamma[3], beta[3] = 0.0, -0.0            # -0.0 and +0.0 outputs
        beta[4] = -0.0
    return np.ascontiguousarray(x), gamma, beta


SHAPES = [(6, 7, 13, 11), (4, 6, 2, 4), (37, 9), (3, 7, 1, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_bn_relu_kernels_are_bn_then_relu(rng, dtype, shape):
    x, gamma, beta = _bn_data(rng, shape, dtype)
    with np.errstate(all="ignore"):
        y, mean, var = _ops.batch_norm_train(x, gamma, beta, 1e-5)
        yf, meanf, varf = _ops.batch_norm_train(x, gamma, beta, 1e-5, relu=True)
    relu = _ops.relu(y)
    _assert_same_bits(yf, relu, "forward")
    _assert_same_bits(meanf, mean, "mean")
    _assert_same_bits(varf, var, "var")
    assert np.isnan(yf).any() and not np.signbit(yf[yf == 0]).any()
    if len(shape) == 4 and shape[1] >= 5:
        assert np.isinf(y).any() and (y == 0).any() and np.signbit(y[y == 0]).any()
    dy = rng.standard_normal(shape).astype(dtype)
    # the last channel (normal values): NaNs where the ReLU passes (NaN sums) and where it masks;
    # -0.0 in every channel; the other channels stay finite (NaN sums would hide a wrong mask)
    dy[:, shape[1] - 1].flat[::3] = np.nan
    dy.flat[1::7] = -0.0
    with np.errstate(all="ignore"):
        for need in [(True, True, True), (False, True, False), (True, False, True)]:
            want = _ops.batch_norm_train_backward(_ops.relu_backward(dy, y), x, gamma, mean, var,
                                                  1e-5, *need)
            got = _ops.batch_norm_train_backward(dy, x, gamma, mean, var, 1e-5, *need,
                                                 relu_out=yf)
            for g, w, name in zip(got, want, ("dx", "dgamma", "dbeta")):
                assert (g is None) == (w is None)
                if g is not None:
                    _assert_same_bits(g, w, f"{name} {need}")
        # no gamma (scale=False): the mask still applies
        want = _ops.batch_norm_train_backward(_ops.relu_backward(dy, y), x, None, mean, var,
                                              1e-5, True, False, True)
        got = _ops.batch_norm_train_backward(dy, x, None, mean, var, 1e-5, True, False, True,
                                             relu_out=yf)
        _assert_same_bits(got[0], want[0], "dx without gamma")
        _assert_same_bits(got[2], want[2], "dbeta without gamma")
        scale = rng.standard_normal(shape[1])
        shift = rng.standard_normal(shape[1])
        scale[0], shift[0] = 0.0, -0.0
        _assert_same_bits(_ops.batch_norm_eval(x, scale, shift, relu=True),
                          _ops.relu(_ops.batch_norm_eval(x, scale, shift)), "eval")


def test_bn_relu_kernels_oracle(rng):
    """The fused BN + ReLU against plain NumPy in float64: ``max(bn(x), 0)`` forward, and the
    BN gradients of ``dy * (y > 0)`` (written out from the equations) backward."""
    x = rng.standard_normal((5, 3, 4, 6)) * 2 - 0.5
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    y, mean, var = _ops.batch_norm_train(x, gamma, beta, 1e-3, relu=True)
    mu = x.mean(axis=(0, 2, 3), keepdims=True)
    v = ((x - mu) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    xhat = (x - mu) / np.sqrt(v + 1e-3)
    z = gamma.reshape(1, -1, 1, 1) * xhat + beta.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(y, np.maximum(z, 0), rtol=1e-12, atol=1e-12)
    assert (y == 0).mean() > 0.1                 # the mask matters
    dy = rng.standard_normal(x.shape)
    dz = dy * (z > 0)
    m = x.shape[0] * x.shape[2] * x.shape[3]
    db = dz.sum(axis=(0, 2, 3))
    dg = (dz * xhat).sum(axis=(0, 2, 3))
    dx = (gamma.reshape(1, -1, 1, 1) / np.sqrt(v + 1e-3)
          * (dz - db.reshape(1, -1, 1, 1) / m - xhat * dg.reshape(1, -1, 1, 1) / m))
    got = _ops.batch_norm_train_backward(dy, x, gamma, mean, var, 1e-3, True, True, True,
                                         relu_out=y)
    for g, w in zip(got, (dx, dg, db)):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


def test_bn_relu_kernels_thread_count_invariant(rng):
    x, gamma, beta = _bn_data(rng, (16, 16, 32, 32), np.float32)  # big enough for 2 threads
    dy = rng.standard_normal(x.shape).astype(np.float32)
    old = cnn.get_num_threads()
    runs = []
    try:
        for threads in (1, 2):
            cnn.set_num_threads(threads)
            with np.errstate(all="ignore"):
                y, mean, var = _ops.batch_norm_train(x, gamma, beta, 1e-5, relu=True)
                grads = _ops.batch_norm_train_backward(dy, x, gamma, mean, var, 1e-5, True, True,
                                                       True, relu_out=y)
            runs.append([_bits(a) for a in (y, mean, var) + grads])
    finally:
        cnn.set_num_threads(old)
    assert runs[0] == runs[1]


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_relu_layer_is_add_then_relu(rng, dtype):
    a, b, c = (rng.standard_normal((3, 4, 5, 6)).astype(dtype) for _ in range(3))
    a.flat[::9] = np.nan
    a.flat[1::9] = -0.0
    b.flat[1::9] = -0.0
    b.flat[2::9] = np.inf
    cases = [[a, b], [a, b, c], [a[:, :, :, ::-1], b]]   # one pass; three inputs; strided input
    for xs in cases:
        add = layers.Add()
        with np.errstate(all="ignore"):
            plain = add.forward(xs, training=True)
            want = ReLU().forward(plain)
            fused = layers.Add()
            got = fused._forward_relu(xs, training=True)
        _assert_same_bits(got, want, f"Add forward, {len(xs)} inputs")
        grad = rng.standard_normal(want.shape).astype(dtype)
        grad.flat[::4] = np.nan
        masked = ReLU().backward(plain, want, grad)
        back = fused.backward(grad)
        assert len(back) == len(xs) and all(g is back[0] for g in back)
        _assert_same_bits(back[0], masked, "Add backward")
        assert add.backward(grad)[0] is grad        # the plain layer is unchanged


_CLONE_CHILD = """
import sys
import numpy as np
import cnn
from cnn import _ops
cnn.set_num_threads(2)
rng = np.random.default_rng(3)
out = {"isa": np.array(cnn.show_config()["kernel_isa"])}
np.seterr(all="ignore")
for dt in (np.float32, np.float64):
    for shape in ((6, 5, 13, 11), (37, 9), (4, 3, 3, 3)):
        x = (rng.standard_normal(shape) * 3 + 1).astype(dt)
        x[(1, 0) + (0,) * (len(shape) - 2)] = np.nan
        g = rng.standard_normal(shape[1]).astype(dt)
        b = rng.standard_normal(shape[1]).astype(dt)
        y, mean, var = _ops.batch_norm_train(x, g, b, 1e-5)
        yf, _, _ = _ops.batch_norm_train(x, g, b, 1e-5, relu=True)
        dy = rng.standard_normal(shape).astype(dt)
        dy.flat[::5] = np.nan
        got = _ops.batch_norm_train_backward(dy, x, g, mean, var, 1e-5, True, True, True,
                                             relu_out=yf)
        want = _ops.batch_norm_train_backward(_ops.relu_backward(dy, y), x, g, mean, var, 1e-5,
                                              True, True, True)
        if _ops.relu(y).tobytes() != yf.tobytes() or any(
                p.tobytes() != q.tobytes() for p, q in zip(got, want)):
            sys.exit(f"fused BN + ReLU differs from BN then ReLU, {shape} {dt}")
        key = f"{len(shape)}_{shape[0]}_{np.dtype(dt).name}"
        out.update({f"y_{key}": yf, f"dx_{key}": got[0], f"dg_{key}": got[1],
                    f"db_{key}": got[2]})
np.savez(sys.argv[1], **out)
"""


def test_bn_relu_kernel_clones_bit_identical(tmp_path):
    """Each kernel clone (forced with CNN_KERNEL_ISA in a child) equals BN then ReLU, and all
    clones agree to the bit."""
    runs = {}
    for got in run_under_clones(_CLONE_CHILD, tmp_path, ("default", "avx2", "avx512f")).values():
        runs[str(got.pop("isa"))] = got   # keyed by the clone that ran (capped by the CPU)
    assert "default" in runs
    for isa, got in runs.items():
        for key, value in runs["default"].items():
            assert got[key].tobytes() == value.tobytes(), f"{key}: {isa} vs default"


# ----------------------------------------------------------------------------- which calls fuse

def _pairs(model):
    return [(type(model._steps[p].layer).__name__, type(model._steps[k].layer).__name__)
            for p, k in _train_fusion.relu_pairs(model._steps, model._steps[-1].output)]


def test_every_relu_of_resnet8_is_fused():
    model = models.resnet8(input_shape=(3, 16, 16))
    acts = [s for s in model._steps if type(s.layer) is layers.Activation]
    assert len(acts) == 7
    assert all(s.fused == "skip" for s in acts)
    assert sorted(_pairs(model)) == sorted([("BatchNormalization", "Activation")] * 4
                                           + [("Add", "Activation")] * 3)
    for p, k in _train_fusion.relu_pairs(model._steps, model._steps[-1].output):
        assert model._steps[p].fused == "relu" and model._steps[k].fused == "skip"
    assert sum(s.fused == "relu" for s in model._steps) == 7
    model._set_relu_fusion(False)
    assert all(s.fused is None for s in model._steps)
    model._set_relu_fusion(True)
    assert sum(s.fused == "skip" for s in model._steps) == 7


class _MyBN(layers.BatchNormalization):
    pass


def test_only_safe_pairs_fuse():
    inputs = cnn.Input((3, 6, 6))
    h = layers.Conv2D(4, 3, padding="same")(inputs)
    bn = layers.BatchNormalization()(h)
    a = layers.Activation("relu")(bn)                   # bn is also read by the Add: no
    s = layers.Add()([a, bn])
    b = layers.Activation("leaky_relu")(s)               # not ReLU: no
    c = layers.Activation("relu")(layers.Conv2D(4, 3, padding="same")(b))   # after a conv: no
    d = layers.Activation("relu")(_MyBN()(c))            # a subclass: no
    shared = layers.BatchNormalization()
    e = layers.Activation("relu")(shared(d))             # a shared layer: no
    f = layers.Activation("relu")(shared(e))
    g = layers.Activation("relu")(layers.BatchNormalization()(f))   # yes
    out = layers.Dense(2, activation="softmax")(layers.Flatten()(g))
    model = cnn.Model(inputs, out, seed=0)
    assert _pairs(model) == [("BatchNormalization", "Activation")]
    # the model's output may be the activation's, never the producer's
    x = cnn.Input((5,))
    assert _pairs(cnn.Model(x, layers.Activation("relu")(layers.BatchNormalization()(x)))) == [
        ("BatchNormalization", "Activation")]


# ----------------------------------------------------------------------------- whole models

def _bn_mlp(dtype, seed):
    return cnn.Sequential([layers.Dense(12), layers.BatchNormalization(),
                           layers.Activation("relu"), layers.Dense(3, activation="softmax")],
                          input_shape=(7,), seed=seed, dtype=dtype)


def _graph_bn(dtype, seed):
    """A residual net with a three-way Add, BN without scale or without shift, and one
    Activation layer called three times: fused after the two BNs, not after a conv."""
    inputs = cnn.Input((2, 9, 9))
    relu = layers.Activation("relu")
    h = relu(layers.BatchNormalization(scale=False)(layers.Conv2D(4, 3, padding="same")(inputs)))
    r = relu(layers.Conv2D(4, 3, padding="same")(h))
    h = layers.Activation("relu")(layers.Add()([h, r, layers.Conv2D(4, 1)(h)]))
    h = relu(layers.BatchNormalization(center=False)(h))
    return cnn.Model(inputs, layers.Dense(3, activation="softmax")(layers.Flatten()(h)),
                     seed=seed, dtype=dtype)


# name -> (builder(dtype, seed), item shape); the zoo builders are float32 only
MODELS = {
    "resnet8": (lambda dtype, seed: models.resnet8(input_shape=(3, 12, 12), seed=seed),
                (3, 12, 12)),
    "cnn-bn": (lambda dtype, seed: models.design_cnn_bn(input_shape=(1, 12, 12), seed=seed),
               (1, 12, 12)),
    "bn-mlp": (_bn_mlp, (7,)),
    "graph": (_graph_bn, (2, 9, 9)),
}
CASES = [("resnet8", "float32"), ("cnn-bn", "float32"), ("bn-mlp", "float32"),
         ("bn-mlp", "float64"), ("graph", "float32"), ("graph", "float64")]


def _model_input(name, dtype, n=6):
    rng = np.random.default_rng(11)
    return (rng.standard_normal((n,) + MODELS[name][1]).astype(dtype),
            rng.integers(0, 3, n))


def _trajectory(name, dtype, fuse, x, y, steps=4):
    """Everything a user can see of ``steps`` SGD steps: losses, outputs, every gradient of
    every step, then the parameters, buffers, the eager and planned inference outputs."""
    model = MODELS[name][0](dtype, 5)
    model._set_relu_fusion(fuse)
    assert any(s.fused for s in model._steps) == fuse
    model.compile("cross_entropy", optimizers.SGD(lr=0.05, momentum=0.9))
    record = []
    for _ in range(steps):
        loss, out = model.forward_backward(x, y, return_outputs=True)
        record += [np.float64(loss), out] + [g.copy() for g in model.grads]
        model.apply_gradients()
    record += [p.copy() for p in model.params] + [b.copy() for _, b in model.named_buffers()]
    record.append(model._forward(x, False))          # the eager inference forward
    record.append(model.predict(x))
    record.append(np.float64(model.evaluate(x, y)["loss"]))
    return record


@pytest.mark.parametrize("name, dtype", CASES)
def test_fused_model_trains_bit_identically(name, dtype):
    x, y = _model_input(name, dtype)
    fused = _trajectory(name, dtype, True, x, y)
    plain = _trajectory(name, dtype, False, x, y)
    assert len(fused) == len(plain)
    for i, (a, b) in enumerate(zip(fused, plain)):
        _assert_same_bits(a, b, f"{name} {dtype} item {i}")


def test_fused_model_thread_count_invariant():
    x, y = _model_input("resnet8", "float32", n=16)
    old = cnn.get_num_threads()
    runs = []
    try:
        for threads in (1, 2):
            cnn.set_num_threads(threads)
            runs.append([_bits(a) for a in _trajectory("resnet8", "float32", True, x, y, 2)])
    finally:
        cnn.set_num_threads(old)
    assert runs[0] == runs[1]


def test_hooks_see_every_layer_of_a_fused_model():
    x, y = _model_input("graph", "float32")
    events = {}
    for fuse in (True, False):
        model = _graph_bn("float32", 0)
        model._set_relu_fusion(fuse)
        model.compile("cross_entropy", "sgd")
        seen = events[fuse] = []
        model.register_layer_hook(
            lambda event, k, layer, seen=seen: seen.append((event, k, type(layer))))
        model.train_step(x, y)
        model.predict(x[:2])
    assert events[True] == events[False]
    acts = [e for e in events[True] if e[2] is layers.Activation]
    # 4 activation calls (3 fused): begin + end forward and backward in training, forward in
    # predict
    assert len(acts) == 4 * 6


def test_fusion_is_not_saved_and_layers_alone_are_unchanged(tmp_path, rng):
    x, y = _model_input("graph", "float32")
    model = _graph_bn("float32", 0).compile("cross_entropy", "sgd")
    plain = _graph_bn("float32", 0).compile("cross_entropy", "sgd")
    plain._set_relu_fusion(False)
    assert model.get_config() == plain.get_config()
    model.train_step(x, y)
    model.save(tmp_path / "m.npz")
    loaded = cnn.load_model(tmp_path / "m.npz")
    assert sum(s.fused == "skip" for s in loaded._steps) == 3
    assert loaded.get_config() == model.get_config()
    _assert_same_bits(loaded.train_step(x, y), model.train_step(x, y), "after load")
    # a layer used on its own: the plain BN output (negative values kept), its own backward
    bn = next(s.layer for s in model._steps if s.fused == "relu")
    h = rng.standard_normal((4,) + bn.input_shape).astype(np.float32)
    out = bn.forward(h, training=True)
    assert (out < 0).any()
    grad = rng.standard_normal(out.shape).astype(np.float32)
    dx = bn.backward(grad)
    fresh = layers.BatchNormalization(center=bn.center, scale=bn.scale)
    fresh.build(bn.input_shape, dtype=np.float32)
    for p, q in zip(fresh.params, bn.params):
        p[...] = q
    fresh.need_input_grad = bn.need_input_grad
    _assert_same_bits(fresh.forward(h, training=True), out, "BN alone")
    _assert_same_bits(fresh.backward(grad), dx, "BN alone backward")
