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
from cnn import layers
from cnn.train import build_model

HAVE_ONNX = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxruntime") is not None
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx and onnxruntime are not installed "
                                                      "(pip install cnn[onnx])")
if HAVE_ONNX:
    import cnn.onnx
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

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


def _zoo(name):
    if name in ("cnn", "seed-mlp"):
        return build_model(name, (1, 28, 28), 10, 0)
    if name == "lenet5":
        return lenet5()
    return cnn.Sequential(SMALL[name](), input_shape=(1, 28, 28), seed=3, name=name)


ZOO = ["cnn", "seed-mlp", "lenet5", *SMALL]


def _ort(path_or_model, x):
    return cnn.onnx.inference_session(path_or_model, threads=1).run(None, {"input": x})[0]


@pytest.fixture(scope="module")
def exported(mnist, tmp_path_factory):
    """name -> (trained model, path of its export)."""
    folder = tmp_path_factory.mktemp("zoo")
    out = {}
    for name in ZOO:
        model = _zoo(name)
        if name in ("cnn", "seed-mlp", "lenet5"):
            _trained(model, mnist)
        path = folder / f"{name}.onnx"
        cnn.onnx.export(model, path)
        out[name] = (model, path)
    return out


# ----------------------------------------------------------------------------- export


@needs_onnx
@pytest.mark.parametrize("name", ZOO)
def test_onnxruntime_predicts_what_cnn_predicts(name, exported, mnist):
    model, path = exported[name]
    x = mnist[2]
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
            t, b, l, r = F.conv2d_padding(layer.padding, layer.kernel_size)
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
def test_round_trip_predicts_identically(name, exported, mnist):
    model, path = exported[name]
    back = cnn.onnx.load(path)
    assert isinstance(back, cnn.Sequential) and back.built and not back.compiled
    assert back.input_shape == model.input_shape and back.output_shape == model.output_shape
    def structure(m):  # standalone activations may fold into the layer before them
        return [type(layer) for layer in m.layers if not isinstance(layer, (layers.Dropout, layers.Activation))]

    assert structure(back) == structure(model)
    for a, b in zip(back.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.predict(mnist[2]), model.predict(mnist[2]))


@needs_onnx
def test_activations_fold_back_into_their_layers(exported):
    model, path = exported["cnn"]
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
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
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
