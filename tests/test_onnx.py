"""cnn.onnx: export checked by ONNX Runtime on real MNIST images, round trips, import of
PyTorch-exported and Keras-style ("same" as auto_pad) graphs, and untrusted files.

Oracles: ONNX Runtime (an independent implementation of every operator) and PyTorch (for the
graphs torch.onnx writes); nothing is compared with a hard-coded output.
"""

import importlib.util
import os
import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
import pytest

import cnn
from cnn import functional as F
from cnn import layers, models

HAVE_ONNX = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxruntime") is not None
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx and onnxruntime are not installed "
                                                      "(pip install cnn[onnx])")
if HAVE_ONNX:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    import cnn.onnx

ATOL = 1e-5


@pytest.fixture(scope="module")
def mnist():
    (x_train, y_train), (x_test, _) = cnn.datasets.load_mnist()
    return x_train[:640], y_train[:640], x_test[:500]


def _trained(model, mnist, steps=10):
    """A few Adam steps, so the weights are not the initial ones and the softmax is not flat."""
    x, y, _ = mnist
    model.compile(loss="cross_entropy", optimizer=cnn.optimizers.Adam(lr=1e-3))
    for i in range(steps):
        model.train_step(x[64 * i:64 * (i + 1)], y[64 * i:64 * (i + 1)])
    return model


def lenet5():
    return cnn.Sequential([
        layers.Conv2D(6, 5, padding="same", activation="tanh"),
        layers.MaxPool2D(2),
        layers.Conv2D(16, 5, activation="tanh"),
        layers.MaxPool2D(2),
        layers.Flatten(),
        layers.Dense(120, activation="tanh"),
        layers.Dense(84, activation="tanh"),
        layers.Dense(10, activation="softmax"),
    ], input_shape=(1, 28, 28), seed=0, name="lenet5")


# Small models that between them use every padding form, strides, window shapes and activation.
SMALL = {
    "same-stride2-tile": lambda: [
        layers.Conv2D(4, 3, stride=2, padding="same", activation="sigmoid"),
        layers.MaxPool2D(3, stride=2, padding="tile"),
        layers.Flatten(), layers.Dense(10, activation="softmax")],
    "explicit-4-and-2": lambda: [
        layers.Conv2D(5, (2, 3), padding=(1, 0, 2, 1), activation="leaky_relu"),
        layers.MaxPool2D((2, 3), stride=1, padding=(1, 0, 1, 2)),
        layers.Conv2D(3, 3, stride=(2, 1), padding=(1, 2), activation={"name": "leaky_relu", "alpha": 0.2}),
        layers.MaxPool2D(2, padding="valid"),
        layers.Flatten(), layers.Dense(6, use_bias=False), layers.Activation("tanh")],
    "int-padding-strided-pools": lambda: [
        layers.Conv2D(3, 1, padding=2),
        layers.Activation("relu"),
        layers.MaxPool2D(3, stride=(1, 2), padding=1),
        layers.Conv2D(2, 4, stride=3, padding="valid", activation="tanh", use_bias=False),
        layers.MaxPool2D(2, stride=3, padding="valid"),
        layers.Flatten(), layers.Dropout(0.5),
        layers.Dense(9), layers.Activation("identity"), layers.Activation("sigmoid"),
        layers.Dense(4), layers.Activation("softmax")],
    "mlp-activations": lambda: [
        layers.Flatten(), layers.Dense(16, activation="relu"), layers.Activation("leaky_relu"),
        layers.Dense(12, activation="sigmoid"), layers.Dense(8, activation="tanh"),
        layers.Dense(10, activation="identity"), layers.Dropout(0.1)],
}


#: Zoo models for CIFAR shapes: exported and checked on random 3x32x32 images
CIFAR = {"resnet8"}


def _zoo(name):
    if name in models.MODELS:
        return models.build(name, (3, 32, 32) if name in CIFAR else (1, 28, 28), 10, 0)
    if name == "lenet5-tanh":
        return lenet5()
    return cnn.Sequential(SMALL[name](), input_shape=(1, 28, 28), seed=3, name=name)


ZOO = [*models.MODELS, "lenet5-tanh", *SMALL]


def _ort(path_or_model, x):
    return cnn.onnx.inference_session(path_or_model, threads=1).run(None, {"input": x})[0]


@pytest.fixture(scope="module")
def cifar_like():
    """Random 3x32x32 images: train (labels from the pixels, so the softmax is not flat) and test."""
    rng = np.random.default_rng(32)
    x = rng.standard_normal((640, 3, 32, 32)).astype(np.float32)
    return x, x.reshape(640, -1)[:, :10].argmax(axis=1), rng.standard_normal((64, 3, 32, 32)).astype(np.float32)


def _data(name, mnist, cifar_like):
    return cifar_like if name in CIFAR else mnist


@pytest.fixture(scope="module")
def exported(mnist, cifar_like, tmp_path_factory):
    """name -> (trained model, path of its export). Zoo models are trained a few steps, so
    the BatchNorm running statistics are not their initial 0 / 1."""
    folder = tmp_path_factory.mktemp("zoo")
    out = {}
    for name in ZOO:
        model = _zoo(name)
        if name in models.MODELS or name == "lenet5-tanh":
            _trained(model, _data(name, mnist, cifar_like), steps=3 if name in CIFAR else 10)
        path = folder / f"{name}.onnx"
        cnn.onnx.export(model, path)
        out[name] = (model, path)
    return out


# ----------------------------------------------------------------------------- export


@needs_onnx
@pytest.mark.parametrize("name", ZOO)
def test_onnxruntime_predicts_what_cnn_predicts(name, exported, mnist, cifar_like):
    model, path = exported[name]
    x = _data(name, mnist, cifar_like)[2]
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            assert np.abs(layer.buffers[1] - 1).max() > 1e-3  # trained running statistics
    expected = model.predict(x)
    got = _ort(path, x)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    if getattr(getattr(model.layers[-1], "activation", None), "name", None) == "softmax":
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)  # the softmax is in the graph
    # the batch axis is dynamic: one image and an odd batch run too
    np.testing.assert_allclose(_ort(path, x[:1]), expected[:1], rtol=0, atol=ATOL)
    np.testing.assert_allclose(_ort(path, x[3:10]), expected[3:10], rtol=0, atol=ATOL)


@needs_onnx
@pytest.mark.parametrize("name", ZOO)
def test_graph_uses_cnn_padding_rules_and_state_dict_names(name, exported):
    model, path = exported[name]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    g = proto.graph
    assert {t.name for t in g.initializer} == set(model.state_dict())
    for t in g.initializer:
        assert t.data_type == TensorProto.FLOAT
        np.testing.assert_array_equal(numpy_helper.to_array(t), model.state_dict()[t.name])
    dim0 = g.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.HasField("dim_value")
    assert [d.dim_value for d in g.input[0].type.tensor_type.shape.dim[1:]] == list(model.input_shape)
    assert "Dropout" not in [n.op_type for n in g.node]
    by_layer = {}
    for n in g.node:
        by_layer.setdefault(int(n.name.split(".")[0]), []).append(n)
    for i, layer in enumerate(model.layers):
        nodes = by_layer.get(i, [])
        attrs = {a.name: helper.get_attribute_value(a) for n in nodes[:1] for a in n.attribute}
        assert "auto_pad" not in attrs
        if isinstance(layer, layers.Conv2D):
            t, b, l, r = F.conv2d_padding(layer.padding, layer.kernel_size, layer.stride,
                                          layer.input_shape[1:], layer.dilation)
            assert nodes[0].op_type == "Conv" and attrs["pads"] == [t, l, b, r]
            assert attrs["strides"] == list(layer.stride)
        elif isinstance(layer, layers.MaxPool2D):
            stride = layer.stride or layer.size
            t, b, l, r = F.maxpool2d_padding(layer.padding, layer.size, stride, layer.input_shape[1:])
            assert nodes[0].op_type == "MaxPool" and attrs["pads"] == [t, l, b, r]
            assert attrs["strides"] == list(stride) and attrs["kernel_shape"] == list(layer.size)
        elif isinstance(layer, layers.Dense):
            assert nodes[0].op_type == "Gemm" and attrs["transB"] == 1
            assert list(nodes[0].input[1:]) == [f"{i}.{p}" for p in layer.param_names]
        elif isinstance(layer, layers.Dropout):
            assert nodes == []


@needs_onnx
@pytest.mark.parametrize("name", ZOO)
def test_round_trip_predicts_identically(name, exported, mnist, cifar_like):
    model, path = exported[name]
    back = cnn.onnx.load(path)
    assert type(back) is type(model) and back.built and not back.compiled
    assert back.input_shape == model.input_shape and back.output_shape == model.output_shape
    def structure(m):  # standalone activations may fold into the layer before them
        return [type(layer) for layer in m.layers if not isinstance(layer, (layers.Dropout, layers.Activation))]

    assert structure(back) == structure(model)
    for a, b in zip(back.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = _data(name, mnist, cifar_like)[2]
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    # parameters and BN buffers, in order (layer indices shift where Dropouts were left out)
    ours, theirs = back.state_dict(), model.state_dict()
    assert [k.split(".")[1] for k in ours] == [k.split(".")[1] for k in theirs]
    for a, b in zip(ours.values(), theirs.values()):
        np.testing.assert_array_equal(a, b)


@needs_onnx
def test_activations_fold_back_into_their_layers(exported):
    path = exported["cnn"][1]
    back = cnn.onnx.load(path)
    assert [getattr(layer, "activation", None) and layer.activation.name for layer in back.layers] == [
        "relu", None, "relu", None, None, "relu", "softmax"]
    assert isinstance(back.layers[1], layers.MaxPool2D) and back.layers[1].stride is None


@needs_onnx
def test_float64_model_is_exported_in_float32(mnist, tmp_path):
    model = cnn.Sequential(SMALL["same-stride2-tile"](), input_shape=(1, 28, 28), seed=1, dtype="float64")
    path = tmp_path / "m64.onnx"
    cnn.onnx.export(model, path)
    proto = onnx.load(str(path))
    assert all(t.data_type == TensorProto.FLOAT for t in proto.graph.initializer)
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    got = _ort(path, mnist[2])
    np.testing.assert_allclose(got, model.predict(mnist[2].astype(np.float64)), rtol=0, atol=ATOL)


@needs_onnx
@pytest.mark.parametrize("opset", [11, 13, 21])
def test_other_opsets(opset, exported, mnist, tmp_path):
    model = exported["lenet5"][0]
    path = tmp_path / "m.onnx"
    cnn.onnx.export(model, path, opset=opset)
    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    np.testing.assert_allclose(_ort(path, mnist[2]), model.predict(mnist[2]), rtol=0, atol=ATOL)
    np.testing.assert_array_equal(cnn.onnx.load(path).predict(mnist[2]), model.predict(mnist[2]))


@needs_onnx
def test_export_errors(tmp_path):
    class MyDense(layers.Dense):
        pass

    model = cnn.Sequential([layers.Flatten(), MyDense(3)], input_shape=(1, 4, 4), seed=0)
    with pytest.raises(ValueError, match=r"layer 1 \(MyDense\)"):
        cnn.onnx.export(model, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="built"):
        cnn.onnx.export(cnn.Sequential([layers.Flatten()]), tmp_path / "x.onnx")
    with pytest.raises(TypeError, match="cnn.Sequential"):
        cnn.onnx.export("model", tmp_path / "x.onnx")
    ok = cnn.Sequential([layers.Flatten(), layers.Dense(3)], input_shape=(1, 4, 4), seed=0)
    with pytest.raises(ValueError, match="opset must be in"):
        cnn.onnx.export(ok, tmp_path / "x.onnx", opset=7)
    with pytest.raises(TypeError, match="opset must be an int"):
        cnn.onnx.export(ok, tmp_path / "x.onnx", opset="17")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cnn.onnx.export(ok, tmp_path / "missing" / "x.onnx")
    assert not os.path.exists(tmp_path / "x.onnx")


@needs_onnx
def test_export_is_atomic_and_replaces(tmp_path, mnist):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old contents")
    a = cnn.Sequential(SMALL["mlp-activations"](), input_shape=(1, 28, 28), seed=5)
    cnn.onnx.export(a, path)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]  # no temporary file left behind
    np.testing.assert_allclose(_ort(path, mnist[2][:20]), a.predict(mnist[2][:20]), rtol=0, atol=ATOL)
    # a stale temporary file of a dead process is cleaned up by the next export
    stale = tmp_path / ".m.onnx.999999999.abcd.tmp"
    stale.write_bytes(b"partial")
    cnn.onnx.export(a, path)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


@needs_onnx
def test_only_dropout_still_has_an_output(tmp_path):
    model = cnn.Sequential([layers.Dropout(0.5)], input_shape=(3,), seed=0)
    path = tmp_path / "d.onnx"
    cnn.onnx.export(model, path)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(_ort(path, x), x)


@needs_onnx
def test_inference_session_settings(exported, mnist):
    model, path = exported["seed-mlp"]
    for source in (path, str(path), model):
        session = cnn.onnx.inference_session(source, threads=2)
        options = session.get_session_options()
        assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        got = session.run(None, {"input": mnist[2][:50]})[0]
        np.testing.assert_allclose(got, model.predict(mnist[2][:50]), rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="threads"):
        cnn.onnx.inference_session(path, threads=0)


def test_import_without_onnx_fails_only_when_called():
    code = ("import sys; sys.modules['onnx'] = None; sys.modules['onnxruntime'] = None\n"
            "import cnn, cnn.onnx\n"
            "m = cnn.Sequential([cnn.layers.Flatten()], input_shape=(2,), seed=0)\n"
            "for call in (lambda: cnn.onnx.export(m, 'x.onnx'), lambda: cnn.onnx.load('x.onnx'),\n"
            "             lambda: cnn.onnx.inference_session('x.onnx')):\n"
            "    try:\n"
            "        call()\n"
            "    except ImportError as exc:\n"
            "        assert 'pip install cnn[onnx]' in str(exc), exc\n"
            "    else:\n"
            "        raise SystemExit('no ImportError')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False,
                            cwd=os.path.dirname(os.path.abspath(__file__)), timeout=120)
    assert result.returncode == 0, result.stderr


@needs_onnx
def test_cli_export_onnx(tmp_path, mnist, capsys):
    from cnn import train
    from cnn.serialization import load_model
    saved, exported_path = tmp_path / "m.npz", tmp_path / "m.onnx"
    status = train.main(["--epochs", "1", "--limit", "256", "--batch-size", "64", "--verbose", "0",
                         "--model", "seed-mlp", "--save", str(saved), "--export-onnx", str(exported_path)])
    assert status == 0
    assert f"exported the model to ONNX: {exported_path}" in capsys.readouterr().out
    model = load_model(saved)
    np.testing.assert_allclose(_ort(exported_path, mnist[2]), model.predict(mnist[2]), rtol=0, atol=ATOL)
    with pytest.raises(SystemExit):
        train.main(["--export-onnx", str(tmp_path / "nope" / "m.onnx")])
    assert "--export-onnx" in capsys.readouterr().err


# ----------------------------------------------------------------------------- from PyTorch


def _torch_models():
    from torch import nn
    return {
        "strided": lambda: nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.Tanh(), nn.MaxPool2d(3, stride=2, padding=1),
            nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.LeakyReLU(0.1), nn.Linear(32, 10),
            nn.Softmax(dim=1)),
        "design-cnn": lambda: nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Dropout(0.25), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25),
            nn.Linear(128, 10), nn.Softmax(dim=1)),
        "lenet5": lambda: nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.Sigmoid(), nn.MaxPool2d(2, stride=1), nn.Flatten(),
            nn.Linear(16 * 9 * 9, 120), nn.Tanh(), nn.Linear(120, 84, bias=False), nn.ReLU(),
            nn.Linear(84, 10)),
        "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.LeakyReLU(0.01),
                                     nn.Linear(512, 10), nn.Softmax(dim=-1)),
    }


@needs_onnx
@pytest.mark.parametrize("opset", [11, 17])
@pytest.mark.parametrize("name", ["strided", "design-cnn", "lenet5", "mlp"])
def test_torch_onnx_export_loads_and_predicts_like_torch(name, opset, mnist, tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (an optional oracle)")
    torch.manual_seed(0)
    net = _torch_models()[name]().eval()
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        # dynamo=False: the TorchScript exporter needs no extra package (onnxscript) and no network
        torch.onnx.export(net, torch.zeros(1, 1, 28, 28), str(path), dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    model = cnn.onnx.load(path)
    x = mnist[2]
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x), expected, rtol=0, atol=ATOL)
    # the weights are torch's, by value
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    ours = [w for w in model.get_weights()]
    theirs = [state[k] for k in state]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- Keras-style graphs


def _keras_style_graph(rng, auto_pad="SAME_UPPER", extra_nodes=()):
    """A graph as Keras/TF converters write it: "same" as auto_pad, a MatMul + Add head, the
    flattening as a Reshape to a constant (-1, F), an Identity and a Dropout on the way."""
    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3],
                         strides=[2, 2], auto_pad=auto_pad),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", kernel_shape=[2, 2], auto_pad=auto_pad),
        helper.make_node("Add", ["c2", "b2"], ["c2b"], name="conv2_bias"),
        helper.make_node("MaxPool", ["c2b"], ["p1"], name="pool1", kernel_shape=[3, 3], strides=[2, 2],
                         auto_pad=auto_pad),
        helper.make_node("Identity", ["p1"], ["i1"], name="identity"),
        helper.make_node("Constant", [], ["shape"], name="shape_const",
                         value=numpy_helper.from_array(np.array([-1, 6 * 7 * 7], dtype=np.int64))),
        helper.make_node("Reshape", ["i1", "shape"], ["flat"], name="flatten"),
        helper.make_node("Dropout", ["flat"], ["d1"], name="dropout"),
        helper.make_node("MatMul", ["d1", "w3"], ["m1"], name="dense"),
        helper.make_node("Add", ["m1", "b3"], ["a1"], name="dense_bias"),
        helper.make_node("Softmax", ["a1"], ["y"], name="softmax", axis=-1),
        *extra_nodes,
    ]
    inits = [init("w1", 4, 1, 3, 3), init("b1", 4), init("w2", 6, 4, 2, 2), init("b2", 1, 6, 1, 1),
             init("w3", 6 * 7 * 7, 10), init("b3", 10)]
    graph = helper.make_graph(nodes, "keras_style",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)


@needs_onnx
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_keras_style_same_padding_graph(auto_pad, mnist, tmp_path, rng):
    proto = _keras_style_graph(rng, auto_pad)
    onnx.checker.check_model(proto, full_check=True)
    path = tmp_path / "keras.onnx"
    onnx.save(proto, str(path))
    model = cnn.onnx.load(path)
    x = mnist[2]
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(model.predict(x), expected, rtol=0, atol=ATOL)
    conv1, pool, conv2 = model.layers[0], model.layers[2], model.layers[1]
    # 28 with k=3, s=2: output 14, total pad 1; k=2, s=1: total pad 1. UPPER puts the odd one
    # at the end, LOWER at the beginning.
    one = (0, 1) if auto_pad == "SAME_UPPER" else (1, 0)
    assert conv1.padding == one + one and conv1.stride == (2, 2)
    assert conv2.padding == one + one and conv2.use_bias
    assert pool.padding == one + one and pool.output_shape == (6, 7, 7)
    assert conv1.activation.name == "relu" and model.layers[-1].activation.name == "softmax"


@needs_onnx
def test_valid_auto_pad_and_gemm_forms(mnist, tmp_path, rng):
    w = rng.standard_normal((784, 5)).astype(np.float32) * 0.1
    b = rng.standard_normal((1, 5)).astype(np.float32)
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[1, 1], auto_pad="VALID"),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "w", "b"], ["z"], alpha=0.5, beta=2.0),  # transB=0
             helper.make_node("LeakyRelu", ["z"], ["y"], alpha=0.3)]
    graph = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
                              initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    path = tmp_path / "gemm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    model = cnn.onnx.load(path)  # a fixed batch of 1 in the file; cnn models take any batch
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = mnist[2][:8]
    expected = np.concatenate([session.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    np.testing.assert_allclose(model.predict(x), expected, rtol=0, atol=ATOL)
    assert model.layers[-1].activation.get_config() == {"name": "leaky_relu", "alpha": pytest.approx(0.3)}


# ----------------------------------------------------------------------------- untrusted files


def _save(proto, path):
    path.write_bytes(proto.SerializeToString())
    return path


def _chain_graph(nodes, inits, in_shape=("N", 1, 8, 8), out_shape=("N", 4), opset=17, name="g"):
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@needs_onnx
def test_truncated_files_are_value_errors_naming_the_file(exported, tmp_path):
    data = exported["lenet5"][1].read_bytes()
    path = tmp_path / "cut.onnx"
    cuts = sorted({1, 2, 10, 100, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 10,
                   len(data) - 1, *range(0, len(data), max(1, len(data) // 40))} - {0})
    for n in cuts:
        path.write_bytes(data[:n])
        with pytest.raises(ValueError, match=str(path).replace(".", r"\.")):
            cnn.onnx.load(path)


@needs_onnx
@pytest.mark.parametrize("content", [b"", b"hello, this is not a model\n", bytes(range(256)) * 40,
                                     b"\x08\x07\x12\x03cnn" * 10, "npz"])
def test_not_onnx(content, tmp_path, rng):
    path = tmp_path / "junk.onnx"
    if content == "npz":  # a cnn model file is not an ONNX one
        cnn.Sequential([layers.Flatten(), layers.Dense(2)], input_shape=(3,), seed=0).save(path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="junk.onnx") as info:
        cnn.onnx.load(path)
    assert "ONNX" in str(info.value) or "opset" in str(info.value)
    with pytest.raises(FileNotFoundError):
        cnn.onnx.load(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="not a regular file"):
        cnn.onnx.load(tmp_path)


@needs_onnx
def test_file_size_limit_is_checked_before_reading(exported):
    path = exported["cnn"][1]
    with pytest.raises(ValueError, match="max_bytes"):
        cnn.onnx.load(path, max_bytes=1000)
    with pytest.raises(TypeError, match="max_bytes"):
        cnn.onnx.load(path, max_bytes=1.5)


@needs_onnx
def test_unsupported_operators_are_all_listed(tmp_path, rng):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv_grouped", group=2, pads=[1, 1, 1, 1]),
             helper.make_node("LpNormalization", ["c"], ["n"], name="lpn1"),
             helper.make_node("Erf", ["n"], ["e"], name="erf1"),
             helper.make_node("MaxPool", ["e"], ["p"], name="dilpool", kernel_shape=[2, 2], dilations=[2, 2]),
             helper.make_node("GlobalMaxPool", ["p"], ["g"], name="gmp"),
             helper.make_node("Flatten", ["g"], ["y"])]
    inits = [numpy_helper.from_array(_f32(rng, 4, 1, 3, 3), "w")]
    path = _save(_chain_graph(nodes, inits, in_shape=("N", 2, 8, 8)), tmp_path / "unsup.onnx")
    with pytest.raises(ValueError) as info:
        cnn.onnx.load(path)
    message = str(info.value)
    assert str(path) in message and "unsupported ONNX operators" in message
    for part in ("LpNormalization", "'lpn1'", "Erf", "'erf1'", "GlobalMaxPool", "'gmp'",
                 "MaxPool with dilations=[2, 2]", "'dilpool'", "BatchNormalization", "AveragePool"):
        assert part in message, part
    assert "conv_grouped" not in message  # grouped convolutions are read now


@needs_onnx
def test_dilated_pool_and_custom_domain_are_unsupported(tmp_path, rng):
    nodes = [helper.make_node("AveragePool", ["x"], ["c"], name="dil", kernel_shape=[2, 2], dilations=[2, 2]),
             helper.make_node("Gelu", ["c"], ["y"], name="mine", domain="com.example")]
    model = _chain_graph(nodes, [], opset=19)
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    path = _save(model, tmp_path / "dil.onnx")
    with pytest.raises(ValueError, match=r"dilations=\[2, 2\].*'dil'.*com\.example\.Gelu.*'mine'"):
        cnn.onnx.load(path)


@needs_onnx
def test_branches_load_as_a_graph_model(tmp_path, rng):
    # graph models: tests/test_onnx_graph.py; here only that a branch is no longer refused
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["x", "r"], ["a"], name="residual"),
             helper.make_node("Flatten", ["a"], ["y"])]
    path = _save(_chain_graph(nodes, [], out_shape=("N", 64)), tmp_path / "res.onnx")
    model = cnn.onnx.load(path)
    assert type(model) is cnn.Model
    x = _f32(rng, 3, 1, 8, 8)
    np.testing.assert_allclose(model.predict(x), (x + np.maximum(x, 0)).reshape(3, -1), rtol=0, atol=1e-6)


def _raw_tensor(name, dims, raw):
    """A float TensorProto whose dims may lie about its data (helper.make_tensor refuses that)."""
    t = TensorProto()
    t.name, t.data_type = name, TensorProto.FLOAT
    t.dims.extend(dims)
    t.raw_data = raw
    return t


def _conv_model(rng, in_shape=("N", 1, 8, 8), w=None, **attrs):
    w = numpy_helper.from_array(_f32(rng, 4, 1, 3, 3), "w") if w is None else w
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", **attrs),
             helper.make_node("Flatten", ["c"], ["y"])]
    return _chain_graph(nodes, [w], in_shape=in_shape, out_shape=("N", 4 * 36))


@needs_onnx
def test_absurd_dims_are_refused_without_allocating(tmp_path, rng):
    cases = {
        "input": _conv_model(rng, in_shape=("N", 1, 1 << 30, 1 << 30)),
        "input-elements": _conv_model(rng, in_shape=("N", 1, 1 << 19, 1 << 19)),
        "weight-dims": _conv_model(rng, w=_raw_tensor("w", [1 << 20, 1, 1 << 10, 1 << 10], b"\0" * 16)),
        "negative-dims": _conv_model(rng, w=_raw_tensor("w", [-4, 1, 3, 3], b"")),
        "pads": _conv_model(rng, pads=[1 << 30] * 4),
        "strides": _conv_model(rng, strides=[0, 1]),
        "output": _conv_model(rng, w=numpy_helper.from_array(_f32(rng, 4096, 1, 1, 1), "w"),
                              in_shape=("N", 1, 1024, 1024)),
        "pads-list": _conv_model(rng, pads=[1] * 100000),
    }
    for name, proto in cases.items():
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(proto.SerializeToString())
        tracemalloc.start()
        try:
            with pytest.raises(ValueError, match=f"{name}\\.onnx") as info:
                cnn.onnx.load(path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < (16 << 20), (name, peak)  # what the file holds, not what its dims claim
        assert any(w in str(info.value) for w in ("node", "input", "tensor")), (name, info.value)


@needs_onnx
def test_external_data_inside_the_folder_loads_and_outside_is_refused(exported, mnist, tmp_path):
    model, src = exported["seed-mlp"]
    proto = onnx.load(str(src))
    inside = tmp_path / "inside"
    inside.mkdir()
    onnx.save_model(proto, str(inside / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    loaded = cnn.onnx.load(inside / "m.onnx")
    np.testing.assert_array_equal(loaded.predict(mnist[2]), model.predict(mnist[2]))

    outside = tmp_path / "secret.bin"
    outside.write_bytes((inside / "weights.bin").read_bytes())
    external = onnx.load(str(inside / "m.onnx"), load_external_data=False)

    def with_location(location, length=None):
        p = onnx.ModelProto()
        p.CopyFrom(external)
        for t in p.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = location
                if e.key == "length" and length is not None:
                    e.value = str(length)
        path = inside / "bad.onnx"
        path.write_bytes(p.SerializeToString())
        return path

    os.symlink(outside, inside / "link.bin")
    for location, pattern in [("../secret.bin", "outside the model's folder"),
                              (str(outside), "absolute"),
                              ("link.bin", "outside the model's folder"),
                              ("nowhere.bin", "does not exist")]:
        with pytest.raises(ValueError, match=pattern) as info:
            cnn.onnx.load(with_location(location))
        assert "bad.onnx" in str(info.value)
    with pytest.raises(ValueError, match="needs .* bytes"):
        cnn.onnx.load(with_location("weights.bin", length=8))


@needs_onnx
def test_non_finite_weights_and_wrong_shapes(tmp_path, rng):
    w = _f32(rng, 4, 1, 3, 3)
    w[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cnn.onnx.load(_save(_conv_model(rng, w=numpy_helper.from_array(w, "w")), tmp_path / "nan.onnx"))
    with pytest.raises(ValueError, match="input channels"):
        cnn.onnx.load(_save(_conv_model(rng, in_shape=("N", 3, 8, 8)), tmp_path / "ch.onnx"))
    nodes = [helper.make_node("Softmax", ["x"], ["y"], axis=1)]
    with pytest.raises(ValueError, match="Softmax"):
        cnn.onnx.load(_save(_chain_graph(nodes, []), tmp_path / "sm.onnx"))
    # a Constant's tensor is checked like an initializer
    shape = _raw_tensor("s", [1 << 30], b"\0" * 8)
    shape.data_type = TensorProto.INT64
    nodes = [helper.make_node("Constant", [], ["shape"], value=shape),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    with pytest.raises(ValueError, match="Constant.*needs 8589934592 bytes"):
        cnn.onnx.load(_save(_chain_graph(nodes, [], out_shape=("N", 64)), tmp_path / "const.onnx"))
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("Dropout", ["f", "ratio", "train"], ["y"], name="drop")]
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "ratio"),
             numpy_helper.from_array(np.array(True), "train")]
    with pytest.raises(ValueError, match="'drop'.*training mode"):
        cnn.onnx.load(_save(_chain_graph(nodes, inits, out_shape=("N", 64)), tmp_path / "drop.onnx"))
