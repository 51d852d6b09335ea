"""cnn.onnx for BatchNormalization, AvgPool2D, GlobalAvgPool2D and grouped/dilated Conv2D:
export checked by ONNX Runtime, round trips, PyTorch-exported graphs, hand-written graphs with
the forms cnn refuses.

Oracles: ONNX Runtime runs the exported graphs; PyTorch runs its own modules, whose export cnn
loads. Every model is trained a few steps first, so the BatchNorm running statistics are not
their initial 0 / 1 and the weights not the initial ones.
"""

import importlib.util
import warnings

import numpy as np
import pytest

import cnn
from cnn import layers

HAVE_ONNX = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxruntime") is not None
pytestmark = pytest.mark.skipif(not HAVE_ONNX, reason="onnx and onnxruntime are not installed "
                                                      "(pip install cnn[onnx])")
if HAVE_ONNX:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    import cnn.onnx

ATOL = 1e-5
SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(11).standard_normal((24, *SHAPE)).astype(np.float32)


def _trained(model, x, steps=4):
    """A few SGD steps on labels that depend on the input (random labels would teach a flat
    softmax): BN running statistics and weights move."""
    y = x.reshape(len(x), -1)[:, :model.output_shape[-1]].argmax(axis=1)
    model.compile(loss="cross_entropy", optimizer=cnn.optimizers.SGD(lr=0.05, momentum=0.9))
    for _ in range(steps):
        model.train_step(x, y)
    return model


def _softmax_head(classes=6):
    return [layers.Flatten(), layers.Dense(classes, activation="softmax")]


# Models between them use every new layer and form: BN per channel and per feature, with and
# without gamma/beta, BN not after a Conv; every AvgPool2D padding form; GlobalAvgPool2D;
# grouped, depthwise and dilated convolutions with "same" and explicit pads.
MODELS = {
    "bn-2d-and-1d": lambda: [
        layers.Conv2D(6, 3, padding="same", use_bias=False), layers.BatchNormalization(),
        layers.Activation("relu"), layers.MaxPool2D(2), layers.BatchNormalization(momentum=0.7, eps=1e-3),
        layers.Flatten(), layers.Dense(12), layers.BatchNormalization(), layers.Activation("tanh"),
        layers.Dense(6, activation="softmax")],
    "bn-no-gamma-beta": lambda: [
        layers.BatchNormalization(scale=False), layers.Conv2D(4, 3, stride=2, activation="relu"),
        layers.BatchNormalization(center=False), layers.Conv2D(4, 1, activation="relu"),
        layers.BatchNormalization(scale=False, center=False),
        *_softmax_head()],
    "avgpools": lambda: [
        layers.Conv2D(5, 3, padding=1, activation="relu"),
        layers.AvgPool2D(3, stride=2, padding="same"),
        layers.AvgPool2D((2, 3), stride=1, padding=(1, 0, 2, 1)),
        layers.AvgPool2D(3, padding="tile"),
        layers.AvgPool2D(2, padding="valid"), *_softmax_head()],
    "grouped-dilated": lambda: [
        layers.Conv2D(6, 3, padding="same", groups=3, activation="relu"),
        layers.Conv2D(6, 3, padding="same", groups=6, use_bias=False),  # depthwise
        layers.Conv2D(4, 3, padding="same", dilation=2, stride=2, activation="leaky_relu"),
        layers.Conv2D(8, (3, 2), padding=(2, 1, 0, 3), dilation=(2, 3), groups=2, activation="tanh"),
        layers.GlobalAvgPool2D(), layers.Dense(6, activation="softmax")],
}


def _model(name):
    return cnn.Sequential(MODELS[name](), input_shape=SHAPE, seed=2, name=name)


def _bn_block_model():
    """A graph model: stem, a residual block with BN on both paths, global average pooling."""
    x = cnn.Input(SHAPE)
    h = layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    h = layers.Activation("relu")(layers.BatchNormalization()(h))
    y = layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same", groups=2)(h))
    y = layers.Conv2D(8, 3, padding="same", dilation=2)(layers.Activation("relu")(y))
    h = layers.Activation("relu")(layers.Add()([h, layers.BatchNormalization()(y)]))
    out = layers.Dense(5, activation="softmax")(layers.GlobalAvgPool2D()(layers.AvgPool2D(2)(h)))
    return cnn.Model(x, out, seed=4, name="bn-block")


ALL = [*MODELS, "bn-block"]


@pytest.fixture(scope="module")
def trained(images):
    return {name: _trained(_bn_block_model() if name == "bn-block" else _model(name), images)
            for name in ALL}


def _ort(path_or_model, x):
    return cnn.onnx.inference_session(path_or_model, threads=1).run(None, {"input": x})[0]


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("name", ALL)
def test_onnxruntime_predicts_what_cnn_predicts(name, trained, images, tmp_path):
    model = trained[name]
    bns = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    for bn in bns:  # the statistics are the trained ones
        assert np.abs(bn.buffers[0]).max() > 1e-3 and np.abs(bn.buffers[1] - 1).max() > 1e-3
    path = tmp_path / f"{name}.onnx"
    cnn.onnx.export(model, path)
    expected = model.predict(images)
    assert np.abs(expected - 1 / expected.shape[1]).max() > 1e-3  # not a flat softmax
    np.testing.assert_allclose(_ort(path, images), expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(_ort(path, images[:1]), expected[:1], rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", ALL)
def test_round_trip_predicts_identically(name, trained, images, tmp_path):
    model = trained[name]
    path = tmp_path / f"{name}.onnx"
    cnn.onnx.export(model, path)
    back = cnn.onnx.load(path)
    assert type(back) is type(model)
    np.testing.assert_array_equal(back.predict(images), model.predict(images))
    # the same layers with the same configurations (standalone activations may fold into the
    # conv before them; a BN without gamma/beta comes back with fixed ones/zeros as parameters)
    def configs(m):
        out = []
        for layer in m.layers:
            if isinstance(layer, (layers.Activation, layers.Dropout)):
                continue
            cfg = dict(layer.get_config())
            for key in ("activation", "scale", "center", "use_bias", "kernel_initializer"):
                cfg.pop(key, None)
            # the padding comes back explicit: compare the resolved pads
            if isinstance(layer, (layers.Conv2D, layers.MaxPool2D)):
                cfg["padding"] = layer.pads
            elif isinstance(layer, layers.AvgPool2D):
                cfg["padding"] = cnn.functional.maxpool2d_padding(
                    layer.padding, layer.size, layer.stride or layer.size, layer.input_shape[1:])
            out.append((type(layer).__name__, cfg))
        return out

    assert configs(back) == configs(model)
    state, back_state = model.state_dict(), back.state_dict()
    for key in state:  # every parameter and BN buffer, by value
        np.testing.assert_array_equal(back_state[key], state[key])


def test_batchnorm_nodes_read_the_running_statistics(trained):
    model = trained["bn-2d-and-1d"]
    proto = cnn.onnx.to_model_proto(model)
    bns = [n for n in proto.graph.node if n.op_type == "BatchNormalization"]
    indices = [i for i, layer in enumerate(model.layers) if isinstance(layer, layers.BatchNormalization)]
    assert [n.name for n in bns] == [f"{i}.BatchNormalization" for i in indices]
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node, i in zip(bns, indices):
        layer = model.layers[i]
        assert list(node.input[1:]) == [f"{i}.weight", f"{i}.bias", f"{i}.running_mean", f"{i}.running_var"]
        np.testing.assert_array_equal(inits[f"{i}.running_var"], layer.buffers[1])
        attrs = _attrs(node)
        assert attrs["epsilon"] == pytest.approx(layer.eps, rel=1e-7)
        assert attrs["momentum"] == pytest.approx(layer.momentum, rel=1e-7)
        assert attrs.get("training_mode", 0) == 0
    # no Conv/Gemm was changed by folding: their initializers are the layers' weights
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(inits[key], value)


def test_batchnorm_per_feature_on_n_f_input(images):
    """ONNX BatchNormalization on (N, F): ONNX Runtime normalises per feature, as cnn."""
    model = cnn.Sequential([layers.Dense(9), layers.BatchNormalization(momentum=0.5),
                            layers.Activation("sigmoid")], input_shape=(20,), seed=0)
    x = images.reshape(len(images), -1)[:, :20]
    _trained(model, x)
    bn = model.layers[1]
    # an independent check of the statistics being read as given: the NumPy formula
    z = x @ model.layers[0].params[0].T + model.layers[0].params[1]
    ref = 1 / (1 + np.exp(-((z - bn.buffers[0]) / np.sqrt(bn.buffers[1] + bn.eps) * bn.params[0] + bn.params[1])))
    np.testing.assert_allclose(_ort(model, x), ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(_ort(model, x), model.predict(x), rtol=0, atol=ATOL)


def test_avgpool_exports_without_counting_padded_cells(trained, images):
    model = trained["avgpools"]
    proto = cnn.onnx.to_model_proto(model)
    pools = [n for n in proto.graph.node if n.op_type == "AveragePool"]
    assert len(pools) == 4
    for node, layer in zip(pools, [la for la in model.layers if isinstance(la, layers.AvgPool2D)]):
        attrs = _attrs(node)
        stride = layer.stride or layer.size
        t, b, l, r = cnn.functional.maxpool2d_padding(layer.padding, layer.size, stride, layer.input_shape[1:])
        assert attrs["pads"] == [t, l, b, r] and attrs["count_include_pad"] == 0
        assert attrs["kernel_shape"] == list(layer.size) and attrs["strides"] == list(stride)
        assert "auto_pad" not in attrs
    # the padded cells matter here: counting them gives other outputs
    for node in pools:
        for a in node.attribute:
            if a.name == "count_include_pad":
                a.i = 1
    wrong = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.abs(wrong.run(None, {"input": images})[0] - model.predict(images)).max() > 1e-4


def test_global_avgpool_is_pool_then_flatten(trained):
    model = trained["grouped-dilated"]
    proto = cnn.onnx.to_model_proto(model)
    ops = [n.op_type for n in proto.graph.node]
    i = ops.index("GlobalAveragePool")
    assert ops[i + 1] == "Flatten" and _attrs(proto.graph.node[i + 1])["axis"] == 1
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert [(_attrs(n)["group"], _attrs(n)["dilations"]) for n in convs] == [
        (3, [1, 1]), (6, [1, 1]), (1, [2, 2]), (2, [2, 3])]
    # a model ending in the pooling: output (N, C)
    end = cnn.Sequential([layers.Conv2D(4, 3), layers.GlobalAvgPool2D()], input_shape=SHAPE, seed=0)
    x = np.random.default_rng(1).standard_normal((3, *SHAPE)).astype(np.float32)
    got = _ort(end, x)
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got, end.predict(x), rtol=0, atol=ATOL)
    back = cnn.onnx.to_model_proto(end)
    assert back.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 4


# ----------------------------------------------------------------------------- from PyTorch


def _torch_nets():
    import torch
    from torch import nn

    class ResBlock(nn.Module):
        """ResNet basic blocks: conv-BN-ReLU-conv-BN + shortcut (identity, then a strided 1x1
        projection with BN), global average pooling, Linear."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
            self.a = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                   nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
            self.b = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16),
                                   nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
            self.proj = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = self.stem(x)
            x = torch.relu(x + self.a(x))
            x = torch.relu(self.proj(x) + self.b(x))
            return torch.softmax(self.fc(torch.flatten(self.pool(x), 1)), dim=1)

    return {
        "batchnorm": lambda: nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(6, momentum=0.3), nn.MaxPool2d(2),
            nn.Conv2d(6, 6, 3), nn.BatchNorm2d(6), nn.Flatten(), nn.Linear(6 * 6 * 6, 10),
            nn.BatchNorm1d(10, eps=1e-3), nn.Tanh()),
        "grouped-depthwise": lambda: nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1, groups=3), nn.ReLU(), nn.Conv2d(6, 6, 3, stride=2, groups=6),
            nn.Conv2d(6, 12, 1, groups=2), nn.Flatten(), nn.Linear(12 * 7 * 7, 5)),
        "dilated": lambda: nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=2, dilation=2), nn.Sigmoid(), nn.Conv2d(4, 4, (3, 2), dilation=(2, 3),
                                                                          stride=(1, 2)),
            nn.Flatten(), nn.Linear(4 * 12 * 7, 5)),
        "avgpool": lambda: nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
            nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5)),
        "global-avgpool": lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
            nn.Softmax(dim=1)),
        "resblock": ResBlock,
    }


def _torch_trained(net, torch, x):
    """Training-mode forwards, so the BN running statistics move (momentum as given)."""
    net.train()
    with torch.no_grad():
        for k in range(3):
            net(torch.from_numpy(x) * (1 + k) + k)
    return net.eval()


@pytest.mark.parametrize("opset", [11, 17])
@pytest.mark.parametrize("name", ["batchnorm", "grouped-depthwise", "dilated", "avgpool", "global-avgpool",
                                  "resblock"])
def test_torch_export_loads_and_predicts_like_torch(name, opset, images, tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (an optional oracle)")
    torch.manual_seed(0)
    net = _torch_trained(_torch_nets()[name](), torch, images)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(net, torch.zeros(1, *SHAPE), str(path), dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    model = cnn.onnx.load(path)
    with torch.no_grad():
        expected = net(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(model.predict(images), expected, rtol=0, atol=ATOL)
    kinds = {type(layer) for layer in model.layers}
    want = {"batchnorm": layers.BatchNormalization, "avgpool": layers.AvgPool2D,
            "global-avgpool": layers.GlobalAvgPool2D, "resblock": layers.Add}.get(name)
    if want is not None:
        assert want in kinds
    if name == "batchnorm":  # torch's momentum 0.3 is cnn's 0.7 (the fraction kept); eps as given
        bns = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
        # torch's exporter folds the BatchNorm2d right after a Conv into it (net[5]); the
        # others arrive as BatchNormalization nodes
        assert [(bn.momentum, bn.eps) for bn in bns] == [(0.7, 1e-5), (0.9, 1e-3)]
        for bn, tbn in zip(bns, (net[2], net[8])):
            np.testing.assert_array_equal(bn.buffers[1], tbn.running_var.numpy())
    if name in ("grouped-depthwise", "dilated"):
        convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
        ours = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
        assert [(c.groups, c.dilation) for c in convs] == [(c.groups, c.dilation) for c in ours]
    # cnn's own export of the imported model runs in ONNX Runtime like torch
    np.testing.assert_allclose(_ort(model, images), expected, rtol=0, atol=ATOL)


# ----------------------------------------------------------------------------- hand-written graphs


def _graph(nodes, inits=(), in_shape=("N", 2, 6, 6), out_shape=("N", 2, 6, 6), opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
                              initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _save(proto, path):
    path.write_bytes(proto.SerializeToString())
    return path


def _bn_inits(c, var=None):
    rng = np.random.default_rng(3)
    var = rng.uniform(0.5, 2, c) if var is None else var
    values = [rng.standard_normal(c), rng.standard_normal(c), rng.standard_normal(c), var]
    return [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in zip("sbmv", values)]


def _check_against_ort(proto, path, x):
    _save(proto, path)
    model = cnn.onnx.load(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(model.predict(x), session.run(None, {"x": x})[0], rtol=0, atol=ATOL)
    return model


def test_keras_style_same_dilated_conv_and_avgpool(tmp_path):
    """auto_pad SAME_UPPER / SAME_LOWER on a grouped conv and an AveragePool; an AveragePool with count_include_pad=1 and no padding is the same average as cnn's."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 2, 9, 9)).astype(np.float32)
    for auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 2], strides=[2, 1],
                                  auto_pad=auto_pad, group=2),
                 helper.make_node("AveragePool", ["c"], ["p"], kernel_shape=[2, 2], strides=[1, 1],
                                  auto_pad=auto_pad),
                 helper.make_node("AveragePool", ["p"], ["y"], kernel_shape=[2, 2], count_include_pad=1)]
        inits = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 2)).astype(np.float32), "w")]
        proto = _graph(nodes, inits, in_shape=("N", 2, 9, 9), out_shape=("N", 4, 4, 8))
        model = _check_against_ort(proto, tmp_path / "same.onnx", x)
        conv = model.layers[0]
        assert conv.groups == 2 and model.output_shape == (4, 4, 8)


def test_batchnorm_in_a_hand_written_graph_and_as_torch_writes_identities(tmp_path):
    x = np.random.default_rng(6).standard_normal((5, 2, 6, 6)).astype(np.float32)
    # scale read through an Identity of the initializer, epsilon 1e-3, default momentum
    nodes = [helper.make_node("Identity", ["s"], ["s2"]),
             helper.make_node("BatchNormalization", ["x", "s2", "b", "m", "v"], ["y"], epsilon=1e-3)]
    model = _check_against_ort(_graph(nodes, _bn_inits(2)), tmp_path / "bn.onnx", x)
    bn = model.layers[0]
    assert isinstance(bn, layers.BatchNormalization) and bn.eps == 1e-3 and bn.momentum == 0.9


@pytest.mark.parametrize("case, message", [
    ("bn-training", "training_mode=1"),
    ("bn-negative-var", "negative"),
    ("bn-wrong-shape", r"shape \(3,\), wanted \(2,\)"),
    ("bn-momentum-1", "momentum=1.0"),
    ("avgpool-count-pads", "count_include_pad=1"),
    ("avgpool-dilated", r"dilations=\[2, 2\]"),
    ("gap-read-by-conv", "GlobalAveragePool"),
    ("gap-is-the-output", "GlobalAveragePool"),
    ("conv-group-mismatch", "group=3"),
    ("conv-same-dilated", "auto_pad=SAME_UPPER and dilations"),
])
def test_forms_cnn_cannot_run_are_clear_errors(case, message, tmp_path):
    rng = np.random.default_rng(8)
    inits, out = _bn_inits(2), ("N", 2, 6, 6)
    bn = {"bn-training": dict(training_mode=1), "bn-momentum-1": dict(momentum=1.0)}.get(case, {})
    if case == "bn-negative-var":
        inits = _bn_inits(2, var=[1.0, -0.5])
    if case == "bn-wrong-shape":
        inits = _bn_inits(3)
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn", **bn)]
    if case.startswith("avgpool"):
        extra = dict(pads=[1, 1, 1, 1], count_include_pad=1) if case == "avgpool-count-pads" else dict(dilations=[2, 2])
        nodes, inits = [helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[3, 3], **extra)], []
    if case == "gap-read-by-conv":
        nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]),
                 helper.make_node("Conv", ["g", "w"], ["y"], name="conv1x1")]
        inits, out = [numpy_helper.from_array(rng.standard_normal((2, 2, 1, 1)).astype(np.float32), "w")], ("N", 2, 1, 1)
    if case == "gap-is-the-output":
        nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]), helper.make_node("Identity", ["g"], ["y"])]
        inits, out = [], ("N", 2, 1, 1)
    if case == "conv-group-mismatch":
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", group=3)]
        inits = [numpy_helper.from_array(rng.standard_normal((3, 1, 1, 1)).astype(np.float32), "w")]
        out = ("N", 3, 6, 6)
    if case == "conv-same-dilated":
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", dilations=[2, 2], auto_pad="SAME_UPPER")]
        inits = [numpy_helper.from_array(rng.standard_normal((2, 2, 3, 3)).astype(np.float32), "w")]
    path = _save(_graph(nodes, inits, out_shape=out), tmp_path / f"{case}.onnx")
    with pytest.raises(ValueError, match=message) as info:
        cnn.onnx.load(path)
    assert str(path) in str(info.value)


def test_flatten_after_global_pool_through_identity_and_reshape(tmp_path):
    """GlobalAveragePool -> Dropout -> Reshape(0, -1) -> Gemm: the Reshape is absorbed, the
    pooling's (N, C) goes to the Dense."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 2, 6, 6)).astype(np.float32)
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]), helper.make_node("Dropout", ["g"], ["d"]),
             helper.make_node("Reshape", ["d", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)]
    inits = [numpy_helper.from_array(np.array([0, -1], np.int64), "shape"),
             numpy_helper.from_array(rng.standard_normal((4, 2)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")]
    model = _check_against_ort(_graph(nodes, inits, out_shape=("N", 4)), tmp_path / "gap.onnx", x)
    assert [type(layer) for layer in model.layers] == [layers.GlobalAvgPool2D, layers.Dense]
