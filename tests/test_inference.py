"""The inference plan of :meth:`cnn.Model.predict` (issue 15).

Its outputs must be those of the layer-by-layer inference forward (``model._forward``): bit
for bit where the same kernels run, within rounding where it folds a BatchNormalization or
takes im2col for a batch too small for a Winograd block. Oracles: the per-layer forward,
``cnn.reference`` (plain NumPy), thread-count invariance; and the plan must never be stale
(training, set_weights, load, in-place edits, compile, an activation swapped).
"""

import numpy as np
import pytest

import cnn
from cnn import activations, layers, models, reference

DTYPES = ("float32", "float64")
TOL = {"float32": 2e-5, "float64": 1e-12}


def zoo(name, dtype="float32", seed=0, **options):
    m = models.build(name, seed=seed, **options)
    if dtype != "float32":
        config = m.get_config()
        config["dtype"] = dtype
        m = type(m).from_config(config)
    return m


def randomize_bn(model, rng):
    """Give every BatchNormalization non-trivial gamma, beta and running statistics."""
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            c = layer.buffers[0].shape[0]
            for p in layer.params:
                p[...] = rng.uniform(0.5, 1.5, c) if p is layer.params[0] else rng.normal(0, 0.3, c)
            layer.buffers[0][...] = rng.normal(0, 0.2, c)
            layer.buffers[1][...] = rng.uniform(0.5, 2.0, c)


def layerwise(model, x, batch_size):
    """The layer-by-layer inference forward, batch by batch (predict before the plan)."""
    parts = [model._forward(np.ascontiguousarray(x[i:i + batch_size]), False)
             for i in range(0, x.shape[0], batch_size)]
    return np.concatenate(parts) if parts else np.empty((0,) + model.output_shape, model.dtype)


def exact(plan):
    """Whether this plan runs the layer path's kernels only (so its outputs are bit-identical)."""
    for op in plan.ops:
        if getattr(op, "bn", None) is not None:
            return False
        if getattr(op, "method", None) != getattr(op, "layer_method", None):
            return False
    return True


def check_against_layerwise(model, x, batch_size):
    got = model.predict(x, batch_size=batch_size)
    want = layerwise(model, x, batch_size)
    assert got.dtype == model.dtype and got.shape == want.shape
    sizes = {min(batch_size, x.shape[0] - i) for i in range(0, x.shape[0], batch_size)}
    if all(exact(model._inference_plan(n)) for n in sizes):
        np.testing.assert_array_equal(got, want)
    else:
        tol = TOL[str(model.dtype)]
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    return got


def data(model, n, seed=1):
    return np.random.default_rng(seed).random((n,) + model.input_shape).astype(model.dtype)


# ----------------------------------------------------------------------------- equality


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["cnn", "lenet5", "seed-mlp", "cnn-bn", "bn4", "resnet8"])
def test_zoo_plan_equals_layerwise_forward(name, dtype):
    m = zoo(name, dtype)
    randomize_bn(m, np.random.default_rng(7))
    x = data(m, 37)
    got = check_against_layerwise(m, x, 16)  # batches of 16, 16 and a ragged 5
    check_against_layerwise(m, x[:1], 256)  # batch 1
    assert np.all(np.isfinite(got))


@pytest.mark.parametrize("name", ["cnn", "lenet5"])
def test_plan_without_fold_is_bit_identical_at_full_blocks(name):
    m = zoo(name)
    x = data(m, 64)
    plan = m._inference_plan(64)
    assert exact(plan)
    np.testing.assert_array_equal(m.predict(x, batch_size=64), layerwise(m, x, 64))


def test_design_cnn_runs_two_fused_conv_pool_kernels():
    m = zoo("cnn")
    plan = m._inference_plan(64)
    groups = [[type(layer).__name__ for layer in node.layers] for node in plan.nodes]
    assert groups[:2] == [["Conv2D", "MaxPool2D"], ["Conv2D", "MaxPool2D"]]
    assert [op.method for op in plan.ops[:2]] == ["direct", "winograd"]
    assert m._inference_plan(1).ops[1].method == "im2col"  # batch 1: no Winograd block
    # ... on cnn's own GEMM in float32, as every float32 im2col forward (the training one too)
    assert m._inference_plan(1).ops[1].own_gemm
    assert not zoo("cnn", np.float64)._inference_plan(1).ops[1].own_gemm


def test_bn_models_fold_every_batchnorm():
    m = zoo("bn4")
    plan = m._inference_plan(8)
    names = [type(layer).__name__ for node in plan.nodes for layer in node.layers]
    assert names == [type(layer).__name__ for layer in m.layers]  # every layer, in order
    for node in plan.nodes:
        kinds = [type(layer).__name__ for layer in node.layers]
        if "BatchNormalization" in kinds:
            assert kinds[0] in ("Conv2D", "Dense") and node.op.bn is node.layers[1]


def _reference_forward(model, x):
    """float64 NumPy forward of a Sequential of Conv2D/MaxPool2D/BN/Activation/Dense/...,
    from cnn.reference's conv and pool and the written equations."""
    h = x.astype(np.float64)
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            w, *b = [p.astype(np.float64) for p in layer.params]
            h = reference.conv2d(h, w, b[0] if b else None, layer.stride, layer.pads)
        elif kind == "MaxPool2D":
            size, stride, pads, _ = layer._geometry
            h = reference.maxpool2d(h, size, stride, pads)[0]
        elif kind == "BatchNormalization":
            g, beta = (p.astype(np.float64) for p in layer.params)
            mean, var = (b.astype(np.float64) for b in layer.buffers)
            shape = (1, -1) + (1,) * (h.ndim - 2)
            h = (h - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + layer.eps) \
                * g.reshape(shape) + beta.reshape(shape)
        elif kind == "Flatten":
            h = h.reshape(h.shape[0], -1)
        elif kind == "Dense":
            w, *b = [p.astype(np.float64) for p in layer.params]
            h = h @ w.T + (b[0] if b else 0)
        elif kind == "Dropout":
            continue
        elif kind != "Activation":
            raise AssertionError(kind)
        act = getattr(layer, "activation", None)
        if act is not None and act.name == "relu":
            h = np.maximum(h, 0)
        elif act is not None and act.name == "tanh":
            h = np.tanh(h)
        elif act is not None and act.name == "softmax":
            e = np.exp(h - h.max(axis=1, keepdims=True))
            h = e / e.sum(axis=1, keepdims=True)
        elif act is not None and act.name not in ("identity", "linear"):
            raise AssertionError(act.name)
    return h


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["cnn", "cnn-bn", "lenet5"])
def test_plan_matches_the_numpy_reference(name, dtype):
    m = zoo(name, dtype)
    randomize_bn(m, np.random.default_rng(3))
    x = data(m, 9)
    tol = 1e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(m.predict(x, batch_size=4), _reference_forward(m, x),
                               rtol=tol, atol=tol)


def odd_model(dtype, padding):
    """Ragged pools, 'same'/'valid' convs, stride 2, non-square kernels, BN after a pool."""
    return cnn.Sequential([
        layers.Conv2D(4, 3, padding=padding),            # 15x13 -> 15x13 | 13x11
        layers.Activation("relu"),
        layers.MaxPool2D(2),                             # "tile": pads the odd edge
        layers.Conv2D(5, (2, 3), stride=2, padding="same", activation="relu"),
        layers.MaxPool2D(3, stride=2, padding="same"),
        layers.BatchNormalization(),                     # after a pool: not folded
        layers.Conv2D(3, 1, use_bias=False),             # 1x1
        layers.BatchNormalization(),
        layers.Flatten(),
        layers.Dense(7, activation="tanh"),
        layers.Dense(3),
    ], input_shape=(2, 15, 13), seed=4, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_odd_shapes_and_ragged_batches(padding, dtype):
    m = odd_model(dtype, padding)
    randomize_bn(m, np.random.default_rng(5))
    x = np.random.default_rng(2).standard_normal((10, 2, 15, 13)).astype(dtype)
    for n, batch_size in [(10, 4), (1, 4), (3, 4), (10, 10), (7, 1)]:
        check_against_layerwise(m, x[:n], batch_size)
    assert m.predict(x[:0]).shape == (0, 3)
    np.testing.assert_allclose(m.predict(x, batch_size=3), _reference_forward(m, x),
                               rtol=1e-4 if dtype == "float32" else 1e-10, atol=1e-5)


def graph_model(dtype="float32", bn=True):
    """A branch (one conv's output read by a pool and by an Add), a Concatenate, a shared
    conv called twice."""
    inputs = cnn.Input((3, 12, 12))
    a = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    p = layers.MaxPool2D(2)(a)                                        # a is read twice:
    q = layers.Conv2D(8, 3, stride=2, padding="same")(a)              # no fusion into p
    h = layers.Activation("relu")(layers.Add()([p, q]))
    shared = layers.Conv2D(8, 3, padding="same", activation="relu")
    h = layers.Concatenate()([shared(h), shared(h)])
    h = layers.Conv2D(6, 3, padding="same")(h)
    h = layers.MaxPool2D(2)(layers.BatchNormalization()(h) if bn else h)
    outputs = layers.Dense(4, activation="softmax")(layers.Flatten()(h))
    return cnn.Model(inputs, outputs, seed=9, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_graph_model(dtype):
    m = graph_model(dtype)
    randomize_bn(m, np.random.default_rng(8))
    x = np.random.default_rng(4).random((11, 3, 12, 12)).astype(dtype)
    check_against_layerwise(m, x, 4)
    plan = m._inference_plan(4)
    first = [type(layer).__name__ for layer in plan.nodes[0].layers]
    assert first == ["Conv2D"]  # its output feeds two calls: not fused with the pool


def test_graph_model_without_fold_is_bit_identical():
    m = graph_model(bn=False)
    x = np.random.default_rng(4).random((11, 3, 12, 12)).astype(np.float32)
    assert exact(m._inference_plan(11))
    groups = ["+".join(type(layer).__name__ for layer in node.layers)
              for node in m._inference_plan(11).nodes]
    assert "Add+Activation" in groups and "Conv2D+MaxPool2D" in groups
    np.testing.assert_array_equal(m.predict(x, batch_size=11), layerwise(m, x, 11))


# ----------------------------------------------------------------------------- threads


@pytest.mark.parametrize("name", ["cnn", "cnn-bn", "resnet8"])
def test_thread_count_invariance(name):
    m = zoo(name)
    randomize_bn(m, np.random.default_rng(1))
    x = data(m, 19)
    old = cnn.get_num_threads()
    try:
        cnn.set_num_threads(1)
        one = m.predict(x, batch_size=8)
        cnn.set_num_threads(2)
        two = m.predict(x, batch_size=8)
        cnn.set_num_threads(3)
        three = m.predict(x, batch_size=8)
    finally:
        cnn.set_num_threads(old)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, three)


# ----------------------------------------------------------------------------- staleness


@pytest.mark.parametrize("name", ["cnn", "cnn-bn"])
def test_predict_follows_training(name):
    m = zoo(name).compile("cross_entropy", cnn.optimizers.SGD(lr=0.5, momentum=0.9))
    x = data(m, 16)
    y = np.arange(16) % 10
    before = m.predict(x)
    m.train_step(x, y)  # weights and (cnn-bn) running statistics change
    after = check_against_layerwise(m, x, 256)
    assert not np.allclose(before, after)


def test_predict_follows_set_weights_load_and_inplace_edits(tmp_path):
    m = zoo("cnn-bn")
    x = data(m, 8)
    m.predict(x)
    rng = np.random.default_rng(0)
    m.set_weights([w + rng.normal(0, 0.05, w.shape) for w in m.get_weights()])
    check_against_layerwise(m, x, 256)
    m.params[0][...] *= -1  # in place, behind the model's back
    m.layers[1].buffers[1][...] *= 3.0  # a running variance
    got = check_against_layerwise(m, x, 256)
    path = tmp_path / "m.npz"
    m.save(path)
    other = zoo("cnn-bn", seed=5)
    other.predict(x)
    other.load_state_dict(m.state_dict())
    np.testing.assert_array_equal(other.predict(x), got)
    np.testing.assert_array_equal(cnn.load_model(path).predict(x), got)


def test_plans_are_cached_and_dropped():
    m = zoo("cnn")
    x = data(m, 10)
    m.predict(x, batch_size=4)
    plan = m._inference_plan(4)
    m.predict(x, batch_size=4)
    assert m._inference_plan(4) is plan  # reused
    assert set(k[0] for k in m._inference_plans) == {4, 2}
    m.compile()
    assert not m._inference_plans
    for n in range(1, 9):
        m.predict(x[:n])
    assert len(m._inference_plans) <= m._MAX_PLANS


def test_swapped_activation_rebuilds_the_plan():
    m = zoo("cnn")
    x = data(m, 8)
    m.predict(x)
    m.layers[0].activation = activations.get("tanh")
    m.layers[0]._identity = False
    check_against_layerwise(m, x, 256)


# ----------------------------------------------------------------------------- hooks, errors


def test_hooks_see_every_layer_and_the_same_outputs():
    m = zoo("cnn")
    x = data(m, 16)
    plain = m.predict(x)
    seen = []
    handle = m.register_layer_hook(lambda event, k, layer: seen.append((event, k)))
    hooked = m.predict(x)
    handle.remove()
    assert seen == [(e, k) for k in range(len(m.layers)) for e in ("forward_begin", "forward_end")]
    np.testing.assert_array_equal(hooked, plain)


def test_bad_input_raises_as_before():
    m = zoo("cnn")
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 28, 28\)"):
        m.predict(np.zeros((2, 1, 27, 28), np.float32))
    with pytest.raises(ValueError, match="x must be finite, got 1 NaN/inf"):
        bad = np.zeros((2, 1, 28, 28), np.float32)
        bad[1, 0, 3, 3] = np.nan
        m.predict(bad)
    with pytest.raises(TypeError, match="x must be a real numeric array"):
        m.predict(np.zeros((2, 1, 28, 28), dtype=object))
    with pytest.raises(ValueError, match="batch_size"):
        m.predict(np.zeros((2, 1, 28, 28), np.float32), batch_size=0)
    # the plan takes any layout and dtype predict accepts (cast and made contiguous)
    x = data(m, 6)
    want = m.predict(x)
    np.testing.assert_array_equal(m.predict(np.asfortranarray(x.astype(np.float64))), want)
    np.testing.assert_array_equal(m.predict(x[::-1][::-1].copy()), want)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("name", ["cnn", "cnn-bn"])
def test_evaluate_runs_the_plan_and_agrees_with_the_layer_path(name, loss):
    m = zoo(name).compile(loss, "sgd")
    randomize_bn(m, np.random.default_rng(2))
    x = data(m, 80)
    y = np.arange(80) % 10
    got = m.evaluate(x, y, batch_size=64)
    assert m._inference_plans  # the plan ran
    handle = m.register_layer_hook(lambda *a: None)  # forces the layer-by-layer path
    want = m.evaluate(x, y, batch_size=64)
    handle.remove()
    assert got["accuracy"] == want["accuracy"]
    if name == "cnn" and exact(m._inference_plan(64)) and exact(m._inference_plan(16)):
        assert got["loss"] == want["loss"]
    else:
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)


@pytest.mark.parametrize("scale", [1.0, 1e36])
def test_winograd_overflow_test_uses_the_fused_max(scale):
    """conv2 of the DESIGN CNN takes max |x| from conv1's fused kernel; with inputs so large
    that Winograd could overflow, it falls back to im2col exactly as the layer path does."""
    from cnn import _ops

    m = zoo("cnn")
    x = data(m, 16) * np.float32(scale)
    plan = m._inference_plan(16)
    conv2 = plan.ops[1]
    assert conv2.method == "winograd" and conv2.source is plan.ops[0]
    got = m.predict(x)
    first = plan.ops[0].y
    assert conv2.source.maxes.max() == _ops.max_abs(first)
    overflow = not _ops.winograd_cannot_overflow(_ops.max_abs(first), _ops.max_abs(
        m.layers[2].params[0]), 32, np.float32)
    assert overflow == (scale > 1)
    np.testing.assert_array_equal(got, layerwise(m, x, 256))


def test_a_subclass_of_a_builtin_layer_runs_its_own_forward():
    class Doubled(layers.Conv2D):
        def forward(self, x, training=False):
            return 2 * super().forward(x, training)

    m = cnn.Sequential([Doubled(4, 3, padding="same", activation="relu"), layers.MaxPool2D(2),
                        layers.Flatten(), layers.Dense(3)], input_shape=(1, 8, 8), seed=0)
    x = np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32)
    plan = m._inference_plan(5)
    assert [len(node.layers) for node in plan.nodes][:2] == [1, 1]  # not fused
    np.testing.assert_array_equal(m.predict(x), layerwise(m, x, 256))


def test_buffers_of_one_shape_take_turns():
    m = zoo("resnet8")
    randomize_bn(m, np.random.default_rng(6))
    plan = m._inference_plan(6)
    owned = [op.y for op in plan.ops if hasattr(op, "y")]
    distinct = {id(y) for y in owned}
    assert len(distinct) < len(owned)
    producers = {nd.output: nd.op for nd in plan.nodes}
    for node in plan.nodes:  # an op never writes a buffer it reads
        y = getattr(node.op, "y", None)
        if y is not None:
            for t in node.inputs:
                assert getattr(producers.get(t), "y", None) is not y
    x = data(m, 6)
    check_against_layerwise(m, x, 6)
