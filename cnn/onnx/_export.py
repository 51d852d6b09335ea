"""cnn model -> ONNX graph, one exporter function per layer class (:data:`EXPORTERS`).

An exporter gets the layer, its index, the name of its input tensor and a :class:`_Graph`
to add nodes and initializers to, and returns the name of its output tensor. A new layer
plugs in with one entry in :data:`EXPORTERS`.
"""


import numpy as np

from .. import layers as _layers
from .. import _atomic
from ._common import (
    ACTIVATION_OPS,
    DEFAULT_OPSET,
    IDENTITY_ACTIVATIONS,
    MIN_OPSET,
    max_opset,
    require,
)

INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH_AXIS = "N"
_MAX_PROTO_BYTES = 2 ** 31 - 1  # protobuf cannot serialise more in one message


class _Graph:
    """Nodes and initializers being collected for one model."""

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers = [], []

    @staticmethod
    def tensor_name(index, what):
        return f"{index}.{what}"

    def initializer(self, name, array):
        """Add ``array`` (cast to float32) as initializer ``name``; returns ``name``."""
        self.initializers.append(self.numpy_helper.from_array(
            np.ascontiguousarray(array, dtype=np.float32), name=name))
        return name

    def node(self, op_type, inputs, output, name, **attrs):
        self.nodes.append(self.helper.make_node(op_type, inputs, [output], name=name, **attrs))
        return output


def _params(layer, index):
    """``{param name: (state-dict key, array)}`` of ``layer``, the keys as in
    :meth:`cnn.Sequential.state_dict`."""
    return {name: (f"{index}.{name}", p) for name, p in zip(layer.param_names, layer.params)}


def _activation(graph, layer, index, x):
    """The layer's activation as its own node after ``x`` (nothing for the identity)."""
    act = layer.activation
    if act.name in IDENTITY_ACTIVATIONS:
        return x
    if act.name not in ACTIVATION_OPS:
        raise ValueError(f"layer {index} ({type(layer).__name__}): activation {act.name!r} has no "
                         f"ONNX operator here (supported: {sorted(ACTIVATION_OPS)})")
    op_type, attrs = ACTIVATION_OPS[act.name]
    return graph.node(op_type, [x], graph.tensor_name(index, act.name), f"{index}.{op_type}",
                      **attrs(act))


def _onnx_pads(pads):
    """cnn's ``(top, bottom, left, right)`` -> ONNX's ``[top, left, bottom, right]``."""
    t, b, l, r = pads
    return [t, l, b, r]


def _export_dense(graph, layer, index, x):
    p = _params(layer, index)
    inputs = [x, graph.initializer(*p["weight"])]
    if layer.use_bias:
        inputs.append(graph.initializer(*p["bias"]))
    # weight is (out, in): Gemm computes x @ B.T with transB=1, no copy of the weight
    z = graph.node("Gemm", inputs, graph.tensor_name(index, "z"), f"{index}.Gemm", transB=1)
    return _activation(graph, layer, index, z)


def _export_conv(graph, layer, index, x):
    p = _params(layer, index)
    inputs = [x, graph.initializer(*p["weight"])]
    if layer.use_bias:
        inputs.append(graph.initializer(*p["bias"]))
    # Pads come from cnn's own rule, always explicit (never auto_pad): the layer's resolved
    # pads (F.conv2d_padding of its padding, stride and input size) are what the graph does.
    z = graph.node("Conv", inputs, graph.tensor_name(index, "z"), f"{index}.Conv",
                   kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                   pads=_onnx_pads(layer.pads), dilations=list(layer.dilation),
                   group=int(layer.groups))
    return _activation(graph, layer, index, z)


def _export_maxpool(graph, layer, index, x):
    stride = layer.size if layer.stride is None else layer.stride
    pads = layer.pads
    # ONNX MaxPool never lets a padded cell win either, as cnn's padding rule requires
    return graph.node("MaxPool", [x], graph.tensor_name(index, "y"), f"{index}.MaxPool",
                      kernel_shape=list(layer.size), strides=list(stride), pads=_onnx_pads(pads))


def _export_flatten(graph, layer, index, x):
    # ONNX Flatten(axis=1) is (N, prod(rest)) in C order, cnn's Flatten exactly
    return graph.node("Flatten", [x], graph.tensor_name(index, "y"), f"{index}.Flatten", axis=1)


def _export_activation(graph, layer, index, x):
    if layer.activation.name in IDENTITY_ACTIVATIONS:
        return graph.node("Identity", [x], graph.tensor_name(index, "y"), f"{index}.Identity")
    return _activation(graph, layer, index, x)


def _export_dropout(graph, layer, index, x):
    return x  # the identity at inference: left out of the graph


#: layer class -> exporter(graph, layer, index, input name) -> output name. Exact classes only:
#: a subclass may compute something else, so it needs its own entry.
EXPORTERS = {
    _layers.Dense: _export_dense,
    _layers.Conv2D: _export_conv,
    _layers.MaxPool2D: _export_maxpool,
    _layers.Flatten: _export_flatten,
    _layers.Activation: _export_activation,
    _layers.Dropout: _export_dropout,
}


def _check_opset(opset):
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"opset must be an int, got {opset!r} of type {type(opset).__name__}")
    newest = max_opset()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be in [{MIN_OPSET}, {newest}] (the installed onnx "
                         f"knows up to {newest}), got {opset}")
    return int(opset)


def to_model_proto(model, opset=DEFAULT_OPSET):
    """The ONNX ``ModelProto`` of a built :class:`cnn.Sequential`, checked by
    ``onnx.checker.check_model(full_check=True)``; see :func:`cnn.onnx.export`."""
    onnx = require("onnx")
    from ..sequential import Sequential
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a cnn.Sequential, got {type(model).__name__}")
    if not model.built:
        raise ValueError("ONNX export needs a built model: pass input_shape= to Sequential or "
                         "call model.build(input_shape)")
    opset = _check_opset(opset)
    unsupported = [f"layer {i} ({type(layer).__name__})" for i, layer in enumerate(model.layers)
                   if type(layer) not in EXPORTERS]
    if unsupported:
        raise ValueError(f"cannot export to ONNX: no exporter for {', '.join(unsupported)}; "
                         f"exportable layers: {sorted(c.__name__ for c in EXPORTERS)}")
    graph = _Graph(onnx.helper, onnx.numpy_helper)
    x = INPUT_NAME
    for i, layer in enumerate(model.layers):
        x = EXPORTERS[type(layer)](graph, layer, i, x)
    if x == INPUT_NAME:  # nothing but Dropout: the graph still needs an output tensor
        x = graph.node("Identity", [x], OUTPUT_NAME, "output.Identity")
    else:
        last = graph.nodes[-1]
        assert last.output[0] == x
        last.output[0] = OUTPUT_NAME
    elem = onnx.TensorProto.FLOAT
    g = onnx.helper.make_graph(
        graph.nodes, model.name,
        [onnx.helper.make_tensor_value_info(INPUT_NAME, elem, [BATCH_AXIS, *model.input_shape])],
        [onnx.helper.make_tensor_value_info(OUTPUT_NAME, elem, [BATCH_AXIS, *model.output_shape])],
        initializer=graph.initializers)
    opsets = [onnx.helper.make_opsetid("", opset)]
    from .._version import __version__
    proto = onnx.helper.make_model(
        g, opset_imports=opsets, producer_name="cnn", producer_version=__version__,
        doc_string=f"exported by cnn {__version__} from a {model.dtype} model",
        ir_version=onnx.helper.find_min_ir_version_for(opsets))
    if proto.ByteSize() > _MAX_PROTO_BYTES:
        raise ValueError(f"the model's ONNX graph would be {proto.ByteSize()} bytes, more than "
                         f"the 2 GiB one protobuf message can hold")
    onnx.checker.check_model(proto, full_check=True)
    return proto


def write_atomic(path, data):
    """Write ``data`` (bytes) to ``path`` atomically, by the rules of every cnn writer
    (:func:`cnn._atomic.atomic_write`: a temporary file in the target's folder, fsync'ed, then
    renamed over it; a symlink is followed; FIFOs, devices and directories are refused)."""
    _atomic.atomic_write(path, lambda f: f.write(data))
