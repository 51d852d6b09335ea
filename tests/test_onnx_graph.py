"""ONNX export and import of graph models (cnn.Model): residual and concatenate networks
against ONNX Runtime, the round trip, PyTorch-exported DAGs, and the graphs that are refused.

Oracles: ONNX Runtime runs cnn's exported graph; PyTorch runs its own module, whose export
cnn loads. Inputs are random 3x32x32 float32 items.
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
    from onnx import TensorProto, helper, numpy_helper

    import cnn.onnx

ATOL = 1e-5
SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(7).standard_normal((16, *SHAPE)).astype(np.float32)


def residual_model(seed=0):
    """conv -> relu -> conv -> add (shortcut) -> relu, twice, after a stem; flatten, dense
    softmax."""
    x = cnn.Input(SHAPE)
    h = layers.Conv2D(8, 3, stride=2, padding="same", activation="relu")(x)
    for _ in range(2):
        y = layers.Conv2D(8, 3, padding="same", activation="relu")(h)
        y = layers.Conv2D(8, 3, padding="same")(y)
        h = layers.Activation("relu")(layers.Add()([h, y]))
    h = layers.MaxPool2D(2)(h)
    out = layers.Dense(10, activation="softmax")(layers.Flatten()(h))
    return cnn.Model(x, out, seed=seed, name="residual")


def concat_model(seed=0):
    """Inception-like branches joined by Concatenate, a shared 1x1 conv called twice, a
    three-way Add (exported as Sum) and a Concatenate along the width."""
    x = cnn.Input(SHAPE)
    stem = layers.Conv2D(6, 3, stride=2, padding=1, activation="tanh")(x)
    a = layers.Conv2D(4, 1, activation="relu")(stem)
    b = layers.Conv2D(4, 3, padding="same", activation="leaky_relu")(stem)
    c = layers.MaxPool2D(3, stride=1, padding=1)(stem)
    joined = layers.Concatenate()([a, b, c])  # 14 channels
    shared = layers.Conv2D(5, 1)
    s1 = shared(joined)
    s2 = shared(layers.Activation("sigmoid")(joined))
    summed = layers.Add()([s1, s2, layers.Conv2D(5, 1, use_bias=False)(joined)])
    wide = layers.Concatenate(axis=-1)([summed, layers.Dropout(0.3)(summed)])
    out = layers.Dense(7, activation="softmax")(layers.Flatten()(layers.MaxPool2D(4)(wide)))
    return cnn.Model(x, out, seed=seed, name="concat")


GRAPHS = {"residual": residual_model, "concat": concat_model}


def _ort(path_or_model, x):
    return cnn.onnx.inference_session(path_or_model, threads=1).run(None, {"input": x})[0]


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_onnxruntime_predicts_what_cnn_predicts(name, images, tmp_path):
    model = GRAPHS[name]()
    path = tmp_path / f"{name}.onnx"
    cnn.onnx.export(model, path)
    expected = model.predict(images)
    assert expected.shape == (16, model.output_shape[0])
    assert np.abs(expected - 1 / expected.shape[1]).max() > 1e-3  # the softmax is not flat
    np.testing.assert_allclose(_ort(path, images), expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(_ort(model, images), expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_round_trip_predicts_identically(name, images, tmp_path):
    model = GRAPHS[name]()
    path = tmp_path / f"{name}.onnx"
    cnn.onnx.export(model, path)
    back = cnn.onnx.load(path)
    assert type(back) is cnn.Model
    assert back.input_shape == model.input_shape and back.output_shape == model.output_shape
    # every call but the Dropouts (left out at inference); a shared layer's calls come back
    # as layers of their own, each with a copy of its weights
    kept = [c for c in model.get_config()["calls"] if type(model.layers[c["layer"]]) is not layers.Dropout]
    assert len(back.get_config()["calls"]) == len(kept)
    assert len(back.layers) == len(kept)
    np.testing.assert_array_equal(back.predict(images), model.predict(images))
    # exported again, the same graph
    again = cnn.onnx.to_model_proto(back)
    assert [n.op_type for n in again.graph.node] == [n.op_type for n in cnn.onnx.to_model_proto(model).graph.node]


def test_graph_names_shared_layers_and_joins(images):
    model = concat_model()
    proto = cnn.onnx.to_model_proto(model)
    nodes = proto.graph.node
    ops = [n.op_type for n in nodes]
    assert ops.count("Concat") == 2 and ops.count("Sum") == 1 and "Dropout" not in ops
    concats = [n for n in nodes if n.op_type == "Concat"]
    assert [a.i for n in concats for a in n.attribute if a.name == "axis"] == [1, 3]
    # the shared 1x1 conv: two Conv nodes, one set of initializers
    index = next(i for i, layer in enumerate(model.layers)
                 if isinstance(layer, layers.Conv2D) and layer.filters == 5 and layer.use_bias)
    shared = [n for n in nodes if n.op_type == "Conv" and f"{index}.weight" in n.input]
    assert [n.name for n in shared] == [f"{index}.Conv", f"{index}@1.Conv"]
    names = [t.name for t in proto.graph.initializer]
    assert len(names) == len(set(names)) == len(model.state_dict())
    assert set(names) == set(model.state_dict())
    assert len({o for n in nodes for o in n.output}) == len(nodes)


def test_chain_still_loads_as_a_sequential(images, tmp_path):
    model = cnn.Sequential([layers.Conv2D(4, 3, activation="relu"), layers.Flatten(),
                            layers.Dense(5, activation="softmax")], input_shape=SHAPE, seed=1)
    path = tmp_path / "chain.onnx"
    cnn.onnx.export(model, path)
    back = cnn.onnx.load(path)
    assert type(back) is cnn.Sequential
    np.testing.assert_array_equal(back.predict(images), model.predict(images))
    # a chain written as a cnn.Model exports the same operators
    x = cnn.Input(SHAPE)
    same = cnn.Model(x, layers.Dense(5, activation="softmax")(layers.Flatten()(
        layers.Conv2D(4, 3, activation="relu")(x))), seed=1)
    same.set_weights(model.get_weights())
    assert [n.op_type for n in cnn.onnx.to_model_proto(same).graph.node] == \
           [n.op_type for n in cnn.onnx.to_model_proto(model).graph.node]
    np.testing.assert_allclose(_ort(same, images), model.predict(images), rtol=0, atol=ATOL)


def test_dropout_at_the_end_of_a_branch_gets_an_identity_output(images):
    x = cnn.Input(SHAPE)
    h = layers.Flatten()(x)
    out = layers.Dropout(0.5)(layers.Add()([h, layers.Activation("tanh")(h)]))
    model = cnn.Model(x, out, seed=0)
    np.testing.assert_allclose(_ort(model, images), model.predict(images), rtol=0, atol=ATOL)


# ----------------------------------------------------------------------------- from PyTorch


def _torch_nets():
    import torch
    from torch import nn

    class ResBlock(nn.Module):
        """ResNet-style: identity shortcut, then a strided block with a 1x1 projection."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.c1, self.c2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
            self.down1 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
            self.down2 = nn.Conv2d(16, 16, 3, padding=1)
            self.proj = nn.Conv2d(8, 16, 1, stride=2)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(16 * 8 * 8, 10)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            x = torch.relu(x + self.c2(torch.relu(self.c1(x))))
            x = torch.relu(self.proj(x) + self.down2(torch.relu(self.down1(x))))
            return torch.softmax(self.fc(torch.flatten(self.pool(x), 1)), dim=1)

    class Branches(nn.Module):
        """Parallel branches joined with torch.cat on the channels and on the height."""

        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.b = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh())
            self.c = nn.MaxPool2d(3, stride=1, padding=1)
            self.mix = nn.Conv2d(13, 8, 3, stride=2, padding=1)
            self.fc = nn.Linear(8 * 32 * 16, 6)

        def forward(self, x):
            y = torch.cat([torch.relu(self.a(x)), self.b(x), self.c(x)], dim=1)
            y = torch.sigmoid(self.mix(y))
            y = torch.cat([y, torch.relu(y)], dim=-2)
            return self.fc(torch.flatten(y, 1))

    return {"resblock": ResBlock, "branches": Branches}


@pytest.mark.parametrize("opset", [11, 17])
@pytest.mark.parametrize("name", ["resblock", "branches"])
def test_torch_graph_export_loads_and_predicts_like_torch(name, opset, images, tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (an optional oracle)")
    torch.manual_seed(0)
    net = _torch_nets()[name]().eval()
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(net, torch.zeros(1, *SHAPE), str(path), dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    model = cnn.onnx.load(path)
    assert type(model) is cnn.Model
    kinds = {type(layer) for layer in model.layers}
    assert (layers.Add if name == "resblock" else layers.Concatenate) in kinds
    with torch.no_grad():
        expected = net(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(model.predict(images), expected, rtol=0, atol=ATOL)
    # the weights are torch's, by value (each torch parameter is one cnn parameter)
    theirs = sorted((v.detach().numpy() for v in net.state_dict().values()), key=lambda a: (a.shape, a.ravel()[0]))
    ours = sorted(model.get_weights(), key=lambda a: (a.shape, a.ravel()[0]))
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    # and cnn's re-export runs in ONNX Runtime like torch
    np.testing.assert_allclose(_ort(model, images), expected, rtol=0, atol=ATOL)


# ----------------------------------------------------------------------------- hand-written graphs


def _graph(nodes, inits=(), in_shape=("N", 2, 4, 4), out_shape=("N", 32), inputs=None):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))]
    graph = helper.make_graph(nodes, "g", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
                              initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save(proto, path):
    path.write_bytes(proto.SerializeToString())
    return path


def test_hand_written_residual_and_shared_tensor(tmp_path, rng):
    """Add(x, relu(x)) reads the model input twice; a Conv output read by two nodes keeps its
    own Relu node (no folding), and an Identity inside a branch is an alias."""
    w = numpy_helper.from_array(rng.standard_normal((2, 2, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Add", ["x", "r"], ["a"], name="residual"),
             helper.make_node("Conv", ["a", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["cr"]),
             helper.make_node("Identity", ["c"], ["ci"]),
             helper.make_node("Concat", ["cr", "ci", "a"], ["cat"], axis=-3),
             helper.make_node("MaxPool", ["cat"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["y"])]
    path = _save(_graph(nodes, [w], out_shape=("N", 24)), tmp_path / "res.onnx")
    model = cnn.onnx.load(path)
    assert type(model) is cnn.Model
    assert [type(layer).__name__ for layer in model.layers] == [
        "Activation", "Add", "Conv2D", "Activation", "Concatenate", "MaxPool2D", "Flatten"]
    x = rng.standard_normal((5, 2, 4, 4)).astype(np.float32)
    import onnxruntime as ort
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(model.predict(x), expected, rtol=0, atol=ATOL)


def test_nodes_out_of_file_order_are_refused_by_the_checker_not_misread(tmp_path):
    nodes = [helper.make_node("Flatten", ["r"], ["y"]), helper.make_node("Relu", ["x"], ["r"])]
    path = _save(_graph(nodes), tmp_path / "order.onnx")
    with pytest.raises(ValueError, match="not a valid ONNX model.*topologically"):
        cnn.onnx.load(path)


def test_cycle_is_a_clear_value_error(tmp_path):
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="loop_add"),
             helper.make_node("Relu", ["a"], ["b"], name="loop_relu"),
             helper.make_node("Flatten", ["b"], ["y"])]
    path = _save(_graph(nodes), tmp_path / "cycle.onnx")
    with pytest.raises(ValueError, match=r"cycle\.onnx: the graph has a cycle through .*'loop_add'.*'loop_relu'"):
        cnn.onnx.load(path)


def test_input_that_is_not_the_model_input(tmp_path):
    nodes = [helper.make_node("Add", ["x", "other"], ["a"], name="join"),
             helper.make_node("Flatten", ["a"], ["y"])]
    path = _save(_graph(nodes), tmp_path / "dangling.onnx")
    with pytest.raises(ValueError, match="'join'.*reads 'other', which is not the model's input 'x'"):
        cnn.onnx.load(path)
    two = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 2, 4, 4]) for n in ("x", "other")]
    path = _save(_graph(nodes, inputs=two), tmp_path / "two.onnx")
    with pytest.raises(ValueError, match="2 data inputs.*one input and one output"):
        cnn.onnx.load(path)


def test_tensor_written_twice(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Tanh", ["x"], ["r"], name="again"),
             helper.make_node("Flatten", ["r"], ["y"])]
    with pytest.raises(ValueError, match="'again'.*'r' is already a tensor"):
        cnn.onnx.load(_save(_graph(nodes), tmp_path / "twice.onnx"))


@pytest.mark.parametrize("case, message", [
    ("broadcast", r"Add of tensors of item shapes \[\(2, 4, 4\), \(2, 1, 4\)\].*no broadcasting"),
    ("batch-concat", "Concat along the batch axis"),
    ("const-add", "Add of a constant other than the bias"),
    ("const-concat", "Concat with a constant input"),
    ("bias-of-shared", "Add of a constant other than the bias"),
])
def test_joins_cnn_cannot_run(case, message, tmp_path, rng):
    def f32(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
    pool = helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[4, 1], strides=[1, 1], pads=[3, 0, 0, 0])
    cases = {
        "broadcast": ([helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[4, 1]),
                       helper.make_node("Add", ["x", "p"], ["z"])], []),
        "batch-concat": ([pool, helper.make_node("Concat", ["x", "p"], ["z"], axis=0)], []),
        "const-add": ([helper.make_node("Add", ["x", "k"], ["z"])], [f32("k", 1, 2, 4, 4)]),
        "const-concat": ([helper.make_node("Concat", ["x", "k"], ["z"], axis=1)], [f32("k", 1, 2, 4, 4)]),
        "bias-of-shared": ([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                            helper.make_node("Add", ["c", "b"], ["cb"]),
                            helper.make_node("Add", ["cb", "c"], ["z"])],
                           [f32("w", 2, 2, 3, 3), f32("b", 2, 1, 1)]),
    }
    nodes, inits = cases[case]
    nodes = nodes + [helper.make_node("Flatten", ["z"], ["y"])]
    with pytest.raises(ValueError, match=message):
        cnn.onnx.load(_save(_graph(nodes, inits), tmp_path / f"{case}.onnx"))


def test_node_count_is_bounded(tmp_path):
    nodes = [helper.make_node("Identity", ["x" if i == 0 else f"t{i - 1}"], [f"t{i}"]) for i in range(10_001)]
    nodes.append(helper.make_node("Flatten", ["t10000"], ["y"]))
    with pytest.raises(ValueError, match="nodes, more than the 10000"):
        cnn.onnx.load(_save(_graph(nodes), tmp_path / "many.onnx"))
