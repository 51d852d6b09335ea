"""cnn model -> ONNX graph, one exporter function per layer class (:data:`EXPORTERS`).

The model's calls (:meth:`cnn.Model.get_config` ``"calls"``; a :class:`cnn.Sequential` is the
chain ``0 -> 1 -> ...``) are written in order, one node group per call. An exporter gets the
:class:`_Graph` to add nodes and initializers to, the layer, its index in ``model.layers`` and
the name of its input tensor (a list of names for a layer that joins several tensors), and
returns the name of its output tensor. A new layer plugs in with one entry in
:data:`EXPORTERS`.
"""


import numpy as np

from .. import _atomic
from .. import functional as F
from .. import layers as _layers
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
    """Nodes and initializers being collected for one model.

    ``label`` names the call being written: the layer's index (``"3"``) when the layer is
    called once, ``"3@1"`` for the second call of a shared layer. Node and tensor names start
    with it, so every call's names are unique; initializers are named by the state-dict keys
    (``"3.weight"``) and written once, so the calls of a shared layer read the same ones.
    """

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers = [], []
        self.label = ""
        self._initialized = set()

    def tensor_name(self, index, what):
        """The name of the current call's tensor ``what`` (``index`` is the layer's, which
        the label already holds)."""
        return f"{self.label}.{what}"

    def initializer(self, name, array):
        """Add ``array`` (cast to float32) as initializer ``name`` unless already added (a
        shared layer's later calls); returns ``name``."""
        if name not in self._initialized:
            self._initialized.add(name)
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
    return graph.node(op_type, [x], graph.tensor_name(index, act.name), f"{graph.label}.{op_type}",
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
    z = graph.node("Gemm", inputs, graph.tensor_name(index, "z"), f"{graph.label}.Gemm", transB=1)
    return _activation(graph, layer, index, z)


def _export_conv(graph, layer, index, x):
    p = _params(layer, index)
    inputs = [x, graph.initializer(*p["weight"])]
    if layer.use_bias:
        inputs.append(graph.initializer(*p["bias"]))
    # Pads come from cnn's own rule, always explicit (never auto_pad): the layer's resolved
    # pads (F.conv2d_padding of its padding, stride and input size) are what the graph does.
    z = graph.node("Conv", inputs, graph.tensor_name(index, "z"), f"{graph.label}.Conv",
                   kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                   pads=_onnx_pads(layer.pads), dilations=list(layer.dilation),
                   group=int(layer.groups))
    return _activation(graph, layer, index, z)


def _export_maxpool(graph, layer, index, x):
    stride = layer.size if layer.stride is None else layer.stride
    pads = layer.pads
    # ONNX MaxPool never lets a padded cell win either, as cnn's padding rule requires
    return graph.node("MaxPool", [x], graph.tensor_name(index, "y"), f"{graph.label}.MaxPool",
                      kernel_shape=list(layer.size), strides=list(stride), pads=_onnx_pads(pads))


def _export_avgpool(graph, layer, index, x):
    stride = layer.size if layer.stride is None else layer.stride
    pads = F.maxpool2d_padding(layer.padding, layer.size, stride, layer.input_shape[1:])
    # count_include_pad=0 (ONNX's default, written out): padded cells are not counted in a
    # window's mean, cnn's rule
    return graph.node("AveragePool", [x], graph.tensor_name(index, "y"), f"{graph.label}.AveragePool",
                      kernel_shape=list(layer.size), strides=list(stride), pads=_onnx_pads(pads),
                      count_include_pad=0)


def _export_global_avgpool(graph, layer, index, x):
    # ONNX keeps the pooled axes, (N, C, 1, 1); cnn's output is (N, C)
    pooled = graph.node("GlobalAveragePool", [x], graph.tensor_name(index, "pooled"),
                        f"{graph.label}.GlobalAveragePool")
    return graph.node("Flatten", [pooled], graph.tensor_name(index, "y"), f"{graph.label}.Flatten",
                      axis=1)


def _export_batchnorm(graph, layer, index, x):
    """Inference form: ONNX BatchNormalization on the running statistics (training_mode left
    at its default 0). It computes ``(x - mean) / sqrt(var + epsilon) * scale + B`` with the
    given ``var``, cnn's evaluation formula; the running variance is used as stored (cnn keeps
    PyTorch's unbiased running variance, which ONNX only reads here). Written as its own node,
    not folded into the Conv/Gemm before it: a BN need not follow one (after a pool, on the
    input), the round trip gives back the same layers and state-dict values bit for bit, and
    ONNX Runtime fuses Conv + BatchNormalization itself when it optimises the graph."""
    p = _params(layer, index)
    c = layer.input_shape[0]
    # a layer without gamma (scale=False) or beta (center=False) reads fixed ones / zeros
    scale = graph.initializer(*p["weight"]) if layer.scale else graph.initializer(
        f"{index}.scale_one", np.ones(c))
    shift = graph.initializer(*p["bias"]) if layer.center else graph.initializer(
        f"{index}.bias_zero", np.zeros(c))
    mean, var = (graph.initializer(f"{index}.{name}", buf)
                 for name, buf in zip(layer.buffer_names, layer.buffers))
    # ONNX's momentum is the fraction kept, as cnn's (only a training-mode run would read it)
    return graph.node("BatchNormalization", [x, scale, shift, mean, var], graph.tensor_name(index, "y"),
                      f"{graph.label}.BatchNormalization", epsilon=float(layer.eps),
                      momentum=float(layer.momentum))


def _export_flatten(graph, layer, index, x):
    # ONNX Flatten(axis=1) is (N, prod(rest)) in C order, cnn's Flatten exactly
    return graph.node("Flatten", [x], graph.tensor_name(index, "y"), f"{graph.label}.Flatten", axis=1)


def _export_activation(graph, layer, index, x):
    if layer.activation.name in IDENTITY_ACTIVATIONS:
        return graph.node("Identity", [x], graph.tensor_name(index, "y"), f"{graph.label}.Identity")
    return _activation(graph, layer, index, x)


def _export_dropout(graph, layer, index, x):
    return x  # the identity at inference: left out of the graph


def _export_add(graph, layer, index, xs):
    # ONNX Add is binary (with broadcasting, which cnn's equal shapes never need); Sum takes
    # any number of inputs, in the order cnn adds them
    op_type = "Add" if len(xs) == 2 else "Sum"
    return graph.node(op_type, list(xs), graph.tensor_name(index, "y"), f"{graph.label}.{op_type}")


def _export_concatenate(graph, layer, index, xs):
    # cnn's axis counts item axes; ONNX's counts the batch axis too
    axis = layer._item_axis(len(layer.input_shapes[0])) + 1
    return graph.node("Concat", list(xs), graph.tensor_name(index, "y"), f"{graph.label}.Concat",
                      axis=axis)


#: layer class -> exporter(graph, layer, index, input name) -> output name. Exact classes only:
#: a subclass may compute something else, so it needs its own entry.
EXPORTERS = {
    _layers.Dense: _export_dense,
    _layers.Conv2D: _export_conv,
    _layers.MaxPool2D: _export_maxpool,
    _layers.AvgPool2D: _export_avgpool,
    _layers.GlobalAvgPool2D: _export_global_avgpool,
    _layers.BatchNormalization: _export_batchnorm,
    _layers.Flatten: _export_flatten,
    _layers.Activation: _export_activation,
    _layers.Dropout: _export_dropout,
    _layers.Add: _export_add,
    _layers.Concatenate: _export_concatenate,
}


def _check_opset(opset):
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"opset must be an int, got {opset!r} of type {type(opset).__name__}")
    newest = max_opset()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be in [{MIN_OPSET}, {newest}] (the installed onnx "
                         f"knows up to {newest}), got {opset}")
    return int(opset)


def _calls(model):
    """``[(layer index, [input tensor ids])]`` in execution order: tensor 0 is the model
    input, ``k + 1`` the output of call ``k`` (as in :meth:`cnn.Model.get_config`)."""
    from ..sequential import Sequential
    if isinstance(model, Sequential):
        return [(i, [i]) for i in range(len(model.layers))]
    return [(c["layer"], list(c["inputs"])) for c in model.get_config()["calls"]]


def _call_labels(calls):
    """The label of each call: the layer index, plus ``@n`` for the n-th (n >= 1) call of a
    shared layer."""
    seen, labels = {}, []
    for index, _ in calls:
        n = seen.get(index, 0)
        seen[index] = n + 1
        labels.append(str(index) if n == 0 else f"{index}@{n}")
    return labels


def to_model_proto(model, opset=DEFAULT_OPSET):
    """The ONNX ``ModelProto`` of a built :class:`cnn.Model` (or :class:`cnn.Sequential`),
    checked by ``onnx.checker.check_model(full_check=True)``; see :func:`cnn.onnx.export`."""
    onnx = require("onnx")
    from ..model import Model
    if not isinstance(model, Model):
        raise TypeError(f"model must be a cnn.Model or cnn.Sequential, got {type(model).__name__}")
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
    calls = _calls(model)
    tensors = [INPUT_NAME]  # tensor id -> ONNX name
    for (index, inputs), label in zip(calls, _call_labels(calls)):
        layer = model.layers[index]
        graph.label = label
        names = [tensors[t] for t in inputs]
        tensors.append(EXPORTERS[type(layer)](
            graph, layer, index, names if layer.takes_multiple_inputs else names[0]))
    x = tensors[-1]
    last = graph.nodes[-1] if graph.nodes else None
    read = {name for n in graph.nodes for name in n.input}
    if last is not None and last.output[0] == x and x not in read:
        last.output[0] = OUTPUT_NAME
    else:  # the input itself, or a tensor other nodes read too (a Dropout at the end)
        graph.label = "output"
        graph.node("Identity", [x], OUTPUT_NAME, "output.Identity")
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
