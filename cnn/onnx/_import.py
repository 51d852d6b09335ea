"""ONNX graph -> cnn model, one importer function per operator (:data:`IMPORTERS`).

The graph must be a DAG with one data input and one output; nodes read tensors of the graph
plus constants (initializers or ``Constant`` nodes). A chain becomes a :class:`cnn.Sequential`,
a graph with branches (``Add`` of two tensors, ``Concat``, residual shortcuts) a
:class:`cnn.Model`. An importer gets the :class:`~cnn.onnx._builder.Builder` (``chain`` in the
signatures: the node's data inputs, the first one's per-item shape, the calls so far), the
node, its checked attributes and a ``where`` string for messages; it records a call, changes
the call it reads (a bias ``Add`` after ``MatMul``) or records nothing (``Identity``,
``Dropout``: the output is the input). A new operator plugs in with one entry in
:data:`IMPORTERS` (and, for attribute values cnn cannot run yet, one in
:data:`UNSUPPORTED_FORMS`).
"""

import math
import os

import numpy as np

from .. import layers as _layers
from . import _builder, _checks
from ._checks import bounded_ints, error
from ._common import ACTIVATION_OPS, require

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _unsupported(chain_or_path, where, message):
    path = chain_or_path.path if isinstance(chain_or_path, _builder.Builder) else chain_or_path
    return error(path, f"unsupported ONNX graph: {where}: {message}")


# ----------------------------------------------------------------------------- padding


def _same_pads(n, k, s, upper):
    """ONNX auto_pad SAME_UPPER / SAME_LOWER along one axis: output ceil(n / s), the odd
    cell of padding at the end (UPPER) or the beginning (LOWER)."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    small, big = total // 2, total - total // 2
    return (small, big) if upper else (big, small)


def _pads(chain, a, kernel, strides, where):
    """cnn ``(top, bottom, left, right)`` from ``pads`` / ``auto_pad`` on the static shape."""
    auto = a.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise error(chain.path, f"{where}: auto_pad must be NOTSET, VALID, SAME_UPPER or SAME_LOWER, "
                                f"got {auto!r}")
    if auto != "NOTSET" and any(a.get("pads", [0])):
        raise error(chain.path, f"{where}: auto_pad={auto} and explicit pads {a['pads']} together")
    if auto == "NOTSET":
        t, l, b, r = bounded_ints(chain.path, a.get("pads", [0, 0, 0, 0]), "pads", where, 4, 0)
        return (t, b, l, r)
    if auto == "VALID":
        return (0, 0, 0, 0)
    upper = auto == "SAME_UPPER"
    t, b = _same_pads(chain.shape[1], kernel[0], strides[0], upper)
    l, r = _same_pads(chain.shape[2], kernel[1], strides[1], upper)
    return (t, b, l, r)


def _cnn_padding(pads):
    return "valid" if not any(pads) else tuple(int(p) for p in pads)


def _strides(chain, a, where):
    return tuple(bounded_ints(chain.path, a.get("strides", [1, 1]), "strides", where, 2, 1))


# ----------------------------------------------------------------------------- importers


def _conv(chain, node, a, where):
    chain.need_rank(3, where, "Conv")
    if len(node.input) < 2:
        raise error(chain.path, f"{where}: Conv needs a weight input")
    w = chain.const(node.input[1], where, "weight")
    if w.ndim != 4 or w.dtype.kind != "f":
        raise error(chain.path, f"{where}: Conv weight must be a float (K, C, kh, kw) tensor, "
                                f"got {w.dtype} of shape {w.shape}")
    k, c, kh, kw = w.shape
    group = a.get("group", 1)
    if not 1 <= group <= _checks.MAX_ATTR_INT:
        raise error(chain.path, f"{where}: group must be an int in [1, {_checks.MAX_ATTR_INT}], got {group}")
    # the weight is (K, C / group, kh, kw): each of the group filter blocks sees C / group channels
    if c * group != chain.shape[0] or k % group:
        raise error(chain.path, f"{where}: Conv weight of shape {w.shape} with group={group} needs "
                                f"{c * group} input channels and K divisible by {group}; its input "
                                f"has {chain.shape[0]} channels")
    if "kernel_shape" in a and list(a["kernel_shape"]) != [kh, kw]:
        raise error(chain.path, f"{where}: kernel_shape {a['kernel_shape']} does not match the weight's "
                                f"{[kh, kw]}")
    strides = _strides(chain, a, where)
    dilations = tuple(bounded_ints(chain.path, a.get("dilations", [1, 1]), "dilations", where, 2, 1))
    if a.get("auto_pad", "NOTSET").startswith("SAME") and dilations != (1, 1):
        # ONNX Runtime refuses to run this form, so no oracle says where its pads go
        raise _unsupported(chain, where, f"Conv with auto_pad={a['auto_pad']} and dilations="
                                         f"{list(dilations)} (ONNX Runtime does not run it either); "
                                         f"write explicit pads")
    pads = _pads(chain, a, (kh, kw), strides, where)
    weights = {"weight": w}
    if len(node.input) > 2 and node.input[2]:
        weights["bias"] = chain.weight(node.input[2], where, "bias", (k,))
    chain.add(lambda: _layers.Conv2D(k, (kh, kw), stride=strides, padding=_cnn_padding(pads),
                                     use_bias="bias" in weights, dilation=dilations, groups=group),
              weights, where, "Conv")


def _pool_geometry(chain, node, a, where):
    """``(size, stride or None, pads)`` of a MaxPool/AveragePool node; ``stride`` is None when
    it equals the window (cnn's default)."""
    op = node.op_type
    chain.need_rank(3, where, op)
    if "kernel_shape" not in a:
        raise error(chain.path, f"{where}: {op} needs kernel_shape")
    size = tuple(bounded_ints(chain.path, a["kernel_shape"], "kernel_shape", where, 2, 1))
    strides = _strides(chain, a, where)
    pads = _pads(chain, a, size, strides, where)
    if a.get("ceil_mode", 0):
        # Same output size with ceil as with floor: the ceil mode changes nothing.
        for n, k, s, p in zip(chain.shape[1:], size, strides, (pads[0] + pads[1], pads[2] + pads[3])):
            if (n + p - k) % s:
                raise _unsupported(chain, where, f"{op} with ceil_mode=1 where it adds a partial "
                                                 f"window (input {chain.shape}, kernel {size}, strides "
                                                 f"{strides}); cnn pools with floor")
    return size, None if strides == size else strides, pads


def _maxpool(chain, node, a, where):
    size, stride, pads = _pool_geometry(chain, node, a, where)
    chain.add(lambda: _layers.MaxPool2D(size, stride=stride, padding=_cnn_padding(pads)), {},
              where, "MaxPool")


def _averagepool(chain, node, a, where):
    size, stride, pads = _pool_geometry(chain, node, a, where)
    # cnn's AvgPool2D never counts padded cells (count_include_pad=0); with no padding the two
    # modes are the same average
    if a.get("count_include_pad", 0) and any(pads):
        raise _unsupported(chain, where, f"AveragePool with count_include_pad=1 and pads {pads}: cnn's "
                                         f"AvgPool2D does not count padded cells (count_include_pad=0)")
    chain.add(lambda: _layers.AvgPool2D(size, stride=stride, padding=_cnn_padding(pads)), {},
              where, "AveragePool")


def _global_averagepool(chain, node, a, where):
    chain.need_rank(3, where, "GlobalAveragePool")
    chain.add(_layers.GlobalAvgPool2D, {}, where, "GlobalAveragePool")
    # ONNX's output is (N, C, 1, 1), cnn's (N, C): only the flattening may read it (the names
    # in chain.squeezed are the file's, not resolved through the flattening's alias)
    chain.squeezed.add(chain.output)


def _shortest_float32(value):
    """The shortest decimal that rounds to the float32 ``value``: an ONNX float attribute is a
    float32, so PyTorch's eps 1e-5 arrives as 9.99999974e-06; this gives 1e-05 back, and a
    cnn -> ONNX -> cnn round trip keeps the layer's float64 eps bit for bit."""
    return float(str(np.float32(value)))


def _batchnorm(chain, node, a, where):
    """Inference BatchNormalization: ``(x - mean) / sqrt(var + epsilon) * scale + B`` with
    the file's statistics, read into cnn's layer as its running mean and variance."""
    if len(chain.shape) not in (1, 3):
        raise error(chain.path, f"{where}: BatchNormalization needs items (C, H, W) or (F,), got item "
                                f"shape {chain.shape}")
    if a.get("training_mode", 0):
        raise _unsupported(chain, where, "BatchNormalization with training_mode=1 (it normalises with "
                                         "the batch's statistics); cnn imports the inference form")
    if len(node.input) != 5:
        raise error(chain.path, f"{where}: BatchNormalization needs 5 inputs (X, scale, B, mean, var), "
                                f"got {len(node.input)}")
    c = chain.shape[0]
    w = {key: chain.weight(name, where, key, (c,))
         for key, name in zip(("weight", "bias", "running_mean", "running_var"), node.input[1:])}
    if (w["running_var"] < 0).any():
        raise error(chain.path, f"{where}: BatchNormalization var {node.input[4]!r} has negative values")
    eps, momentum = a.get("epsilon", 1e-5), a.get("momentum", 0.9)
    if not eps > 0:
        raise _unsupported(chain, where, f"BatchNormalization with epsilon={eps}; cnn needs epsilon > 0")
    # ONNX's momentum is the fraction of the running statistics kept, cnn's convention (and
    # Keras'); PyTorch's exporter writes 1 - torch's momentum. Only training reads it.
    if not 0.0 <= momentum < 1.0:
        raise _unsupported(chain, where, f"BatchNormalization with momentum={momentum}; cnn's momentum "
                                         f"(the fraction kept) is in [0, 1)")
    eps, momentum = _shortest_float32(eps), _shortest_float32(momentum)
    chain.add(lambda: _layers.BatchNormalization(momentum=momentum, eps=eps), w, where,
              "BatchNormalization")


def _dense_from(chain, w, b, where, op_type):
    """A Dense layer of weight ``w`` (out, in) and optional bias."""
    chain.need_rank(1, where, op_type)
    if w.shape[1] != chain.shape[0]:
        raise error(chain.path, f"{where}: {op_type} weight expects {w.shape[1]} input features, "
                                f"its input has {chain.shape[0]}")
    weights = {"weight": np.ascontiguousarray(w)}
    if b is not None:
        weights["bias"] = b
    chain.add(lambda: _layers.Dense(w.shape[0], use_bias=b is not None), weights, where, op_type)


def _bias_vector(chain, name, out, where, shapes):
    """A bias constant of one of ``shapes`` (e.g. (out,), (1, out)), as (out,)."""
    b = chain.const(name, where, "bias")
    if b.dtype.kind != "f" or b.shape not in shapes:
        raise error(chain.path, f"{where}: bias {name!r} must be float of shape "
                                f"{' or '.join(map(str, shapes))}, got {b.dtype} {b.shape}")
    return np.broadcast_to(b.reshape(-1), (out,)).copy()


def _gemm(chain, node, a, where):
    if a.get("transA", 0):
        raise _unsupported(chain, where, "Gemm with transA=1 (the batch would be transposed)")
    if len(node.input) < 2:
        raise error(chain.path, f"{where}: Gemm needs an input B")
    w = chain.const(node.input[1], where, "B")
    if w.ndim != 2 or w.dtype.kind != "f":
        raise error(chain.path, f"{where}: Gemm B must be a float matrix, got {w.dtype} {w.shape}")
    if not a.get("transB", 0):
        w = w.T  # B is (in, out); cnn's weight is (out, in)
    alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
    if alpha != 1.0:
        w = w * np.asarray(alpha, dtype=w.dtype)
    b = None
    if len(node.input) > 2 and node.input[2]:
        out = w.shape[0]
        b = _bias_vector(chain, node.input[2], out, where, [(out,), (1, out), (1,), ()])
        if beta != 1.0:
            b = b * np.asarray(beta, dtype=b.dtype)
    _dense_from(chain, w, b, where, "Gemm")


def _matmul(chain, node, a, where):
    w = chain.const(node.input[1], where, "matrix")
    if w.ndim != 2 or w.dtype.kind != "f":
        raise error(chain.path, f"{where}: MatMul by a float (in, out) matrix only, got {w.dtype} {w.shape}")
    _dense_from(chain, w.T, None, where, "MatMul")


def _add(chain, node, a, where):
    """``Add`` of two tensors of one shape (cnn's Add layer), or of a bias constant to the
    output of a bias-free MatMul/Gemm/Conv that nothing else reads (folded into that layer)."""
    consts = [i for i in node.input if i and chain.is_const(i)]
    if not consts:
        _join(chain, node, where, "Add")
        return
    last = chain.producer(chain.raw_inputs[0]) if len(chain.raw_inputs) == 1 else None
    if (last is None or last.op_type not in ("MatMul", "Gemm", "Conv") or last.layer.use_bias
            or len(consts) != 1 or last.output != chain.raw_inputs[0]
            or chain.readers.get(last.output, 0) != 1):
        raise _unsupported(chain, where, "Add of a constant other than the bias of a MatMul/Gemm/"
                                         "Conv whose output nothing else reads (cnn's Add joins "
                                         "tensors of the graph)")
    layer = last.layer
    if isinstance(layer, _layers.Dense):
        out = layer.units
        bias = _bias_vector(chain, consts[0], out, where, [(out,), (1, out)])
        def factory():
            return _layers.Dense(out, use_bias=True)
    else:
        out = layer.filters
        bias = _bias_vector(chain, consts[0], out, where, [(out, 1, 1), (1, out, 1, 1)])
        cfg = dict(layer.get_config(), use_bias=True)
        def factory():
            return _layers.Conv2D.from_config(cfg)
    chain.replace(last, factory, dict(last.weights, bias=bias), where)


def _join(chain, node, where, op_type):
    """``Add``/``Sum`` of tensors of one shape -> cnn's Add layer (one input: the identity)."""
    if len(chain.inputs) == 1:
        return
    shapes = [chain.shapes[n] for n in chain.inputs]
    if any(s != shapes[0] for s in shapes):
        raise _unsupported(chain, where, f"{op_type} of tensors of item shapes {shapes}: cnn's Add "
                                         f"needs one shape (no broadcasting)")
    chain.add(_layers.Add, {}, where, op_type)


def _sum(chain, node, a, where):
    if len(chain.raw_inputs) != len([i for i in node.input if i]):
        raise _unsupported(chain, where, "Sum with a constant input (cnn's Add joins tensors of "
                                         "the graph)")
    _join(chain, node, where, "Sum")


def _concat(chain, node, a, where):
    if len(chain.raw_inputs) != len([i for i in node.input if i]):
        raise _unsupported(chain, where, "Concat with a constant input (cnn's Concatenate joins "
                                         "tensors of the graph)")
    if "axis" not in a:
        raise error(chain.path, f"{where}: Concat needs an axis")
    rank = len(chain.shape) + 1
    axis = a["axis"] + rank if a["axis"] < 0 else a["axis"]
    if not 0 <= axis < rank:
        raise error(chain.path, f"{where}: Concat axis {a['axis']} is out of range for rank {rank}")
    if axis == 0:
        raise _unsupported(chain, where, "Concat along the batch axis (cnn joins items' axes)")
    if len(chain.inputs) == 1:
        return
    chain.add(lambda: _layers.Concatenate(axis=axis - 1), {}, where, "Concat")


def _activation(name):
    def importer(chain, node, a, where):
        chain.add(lambda: _layers.Activation(name), {}, where, node.op_type)
    return importer


def _leaky_relu(chain, node, a, where):
    alpha = a.get("alpha", 0.01)
    if not 0.0 <= alpha < 1.0:
        raise _unsupported(chain, where, f"LeakyRelu with alpha={alpha}: cnn's leaky_relu takes alpha "
                                         f"in [0, 1)")
    chain.add(lambda: _layers.Activation({"name": "leaky_relu", "alpha": alpha}), {}, where,
              "LeakyRelu")


def _softmax(chain, node, a, where):
    chain.need_rank(1, where, "Softmax (cnn normalises flat (N, classes) rows)")
    axis = a.get("axis", -1 if chain.opset >= 13 else 1)
    if axis not in (1, -1):
        raise _unsupported(chain, where, f"Softmax over axis {axis}; cnn normalises the last axis "
                                         f"of (N, classes)")
    chain.add(lambda: _layers.Activation("softmax"), {}, where, "Softmax")


def _flatten_or_alias(chain, where, op_type):
    """A Flatten layer, or nothing after a GlobalAveragePool (cnn's is flat already)."""
    if chain.raw_inputs[0] in chain.squeezed:
        return
    chain.add(_layers.Flatten, {}, where, op_type)


def _flatten(chain, node, a, where):
    axis = a.get("axis", 1)
    if axis != 1:
        raise _unsupported(chain, where, f"Flatten with axis={axis}; cnn flattens to (N, -1)")
    _flatten_or_alias(chain, where, "Flatten")


def _reshape(chain, node, a, where):
    if len(node.input) < 2:
        raise error(chain.path, f"{where}: Reshape needs a shape input")
    shape = chain.const(node.input[1], where, "shape")
    items = math.prod(chain.shape)
    target = [int(v) for v in shape.reshape(-1)] if shape.dtype.kind == "i" and shape.ndim == 1 else None
    ok = target is not None and len(target) == 2 and (
        (target[0] == -1 and target[1] == items)
        or (target[0] == 0 and not a.get("allowzero", 0) and target[1] in (-1, items)))
    if not ok:
        raise _unsupported(chain, where, f"Reshape to {target if target is not None else shape.shape}; "
                                         f"cnn reads only the flattening (N, -1) = [0 or -1, {items}] here")
    _flatten_or_alias(chain, where, "Reshape")


def _dropout(chain, node, a, where):
    # Inference: the identity. A constant training_mode=True would make it random.
    if len(node.input) > 2 and node.input[2]:
        mode = chain.const(node.input[2], where, "training_mode")
        if mode.size != 1 or bool(mode.reshape(-1)[0]):
            raise _unsupported(chain, where, "Dropout in training mode")


def _identity(chain, node, a, where):
    pass


#: op_type -> importer(chain, node, attributes, where). Constant nodes are read by the walk
#: itself, so they are listed here without an importer.
IMPORTERS = {
    "Conv": _conv, "MaxPool": _maxpool, "AveragePool": _averagepool,
    "GlobalAveragePool": _global_averagepool, "BatchNormalization": _batchnorm, "Gemm": _gemm, "MatMul": _matmul, "Add": _add,
    "Sum": _sum, "Concat": _concat,
    "Relu": _activation("relu"), "Sigmoid": _activation("sigmoid"), "Tanh": _activation("tanh"),
    "LeakyRelu": _leaky_relu, "Softmax": _softmax, "Flatten": _flatten, "Reshape": _reshape,
    "Dropout": _dropout, "Identity": _identity, "Constant": None,
}
assert {op for op, _ in ACTIVATION_OPS.values()} <= set(IMPORTERS)
#: Operators that join several tensors of the graph; every other reads one (plus constants).
JOINS = {"Add", "Sum", "Concat"}
#: Operators that may read a GlobalAveragePool's output (the flattening, and the identities).
_FLATTENINGS = {"Flatten", "Reshape", "Identity", "Dropout"}

#: Operators ONNX models often hold that wait for a cnn layer, and why (none at present).
NOT_YET = {}


def _pool_form(a):
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        return f"dilations={a['dilations']} (dilated pooling)"
    return None


#: op_type -> fn(attributes) -> why this node's form is unsupported, or None.
UNSUPPORTED_FORMS = {"MaxPool": _pool_form, "AveragePool": _pool_form}


# ----------------------------------------------------------------------------- the chain


def _node_where(i, node):
    return f"node {i} ({node.op_type}{' ' + repr(node.name) if node.name else ''})"


def _check_supported(path, nodes, attrs):
    """One error listing every unsupported operator (and form) with its nodes."""
    problems = {}
    for i, node in enumerate(nodes):
        label = node.name or f"#{i}"
        if node.domain not in ("", "ai.onnx"):
            key = f"{node.domain}.{node.op_type} (a custom domain)"
        elif node.op_type not in IMPORTERS:
            key = f"{node.op_type}" + (f" ({NOT_YET[node.op_type]})" if node.op_type in NOT_YET else "")
        elif node.op_type in UNSUPPORTED_FORMS and UNSUPPORTED_FORMS[node.op_type](attrs[i]):
            key = f"{node.op_type} with {UNSUPPORTED_FORMS[node.op_type](attrs[i])}"
        else:
            continue
        problems.setdefault(key, []).append(label)
    if problems:
        listed = "; ".join(f"{key} at node{'s' if len(labels) > 1 else ''} "
                           f"{', '.join(map(repr, labels[:20]))}{' ...' if len(labels) > 20 else ''}"
                           for key, labels in problems.items())
        raise error(path, f"unsupported ONNX operators: {listed}. cnn.onnx.load reads "
                          f"{', '.join(op for op in IMPORTERS if op != 'Constant')} (and Constant)")


def _constant_value(chain, node, a, where):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in a:
            v = a[key]
            if key == "value":
                return v
            return np.asarray(v, dtype=np.float32 if "float" in key else np.int64)
    raise _unsupported(chain, where, f"Constant with attributes {sorted(a)}")


def load(path, max_bytes=_checks.MAX_FILE_BYTES):
    """See :func:`cnn.onnx.load`."""
    onnx = require("onnx")
    from .._validation import path as _fspath
    path = _fspath(path)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
        raise TypeError(f"max_bytes must be an int, got {max_bytes!r} of type {type(max_bytes).__name__}")
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    proto = _checks.read_model(path, max_bytes)
    graph = proto.graph
    nodes = list(graph.node)
    attrs = [_checks.attributes(path, n, _node_where(i, n)) for i, n in enumerate(nodes)]
    _check_supported(path, nodes, attrs)
    if len(graph.sparse_initializer):
        raise error(path, "sparse initializers are not supported")
    folder = os.path.dirname(os.path.abspath(path))
    # every tensor, before onnx.checker looks at any external file
    for t in graph.initializer:
        _checks.check_tensor(path, t, folder, "initializer")
    for i, (node, a) in enumerate(zip(nodes, attrs)):
        if node.op_type == "Constant" and "value" in a:
            _checks.check_tensor(path, a["value"], folder, _node_where(i, node))
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise _unsupported(path, "the graph", f"{len(inputs)} data inputs and {len(graph.output)} "
                                              f"outputs; a cnn model has one input and one output")
    input_name, output_name = inputs[0].name, graph.output[0].name
    # before the checker, so that a cycle or a dangling input gets its own message
    order = _builder.order_nodes(path, nodes, input_name, initializers, _node_where)
    try:
        # given the path, the checker resolves external data beside the file (not the cwd)
        onnx.checker.check_model(path)
    except onnx.checker.ValidationError as exc:
        text = str(exc).strip().splitlines()
        raise error(path, f"not a valid ONNX model (onnx.checker: {' '.join(text)[:600]})") from None

    dtype, input_shape = _checks.item_shape(path, inputs[0], "the input")
    readers = {}
    for n in nodes:
        for name in n.input:
            if name:
                readers[name] = readers.get(name, 0) + 1
    readers[output_name] = readers.get(output_name, 0) + 1
    chain = _builder.Builder(path, folder, proto, dtype, input_name, input_shape, readers)
    for i in order:
        node, a = nodes[i], attrs[i]
        where = _node_where(i, node)
        if node.op_type == "Constant":
            if len(node.output) != 1:
                raise error(path, f"{where}: a Constant has one output")
            chain.add_constant(node.output[0], _constant_value(chain, node, a, where))
            continue
        data = [name for name in node.input if name and not chain.is_const(name)]
        if not data and node.op_type == "Identity" and len(node.input) == 1 and len(node.output) == 1:
            chain.alias_constant(node.output[0], node.input[0])
            continue
        if not data:
            raise _unsupported(chain, where, "it reads only constants: cnn computes nothing from "
                                             "constants alone")
        if node.op_type not in JOINS and data != [node.input[0]]:
            raise _unsupported(chain, where, f"it reads the tensors {data}; cnn's {node.op_type} "
                                             f"reads one tensor, its other inputs must be constants")
        if not node.output or not node.output[0]:
            raise error(path, f"{where}: it has no output")
        extra = [o for o in node.output[1:] if o and o in readers]
        if extra:
            raise _unsupported(chain, where, f"its extra outputs {extra} are used (e.g. MaxPool "
                                             f"indices, a Dropout mask)")
        chain.begin(node, data)
        squeezed = chain.squeezed.intersection(chain.raw_inputs)
        if squeezed and node.op_type not in _FLATTENINGS:
            raise _unsupported(chain, where, "it reads the (N, C, 1, 1) output of a GlobalAveragePool; "
                                             "cnn's GlobalAvgPool2D gives (N, C), so only a Flatten or a "
                                             "Reshape to (N, C) may follow it (an Identity or a Dropout on "
                                             "the way is fine)")
        IMPORTERS[node.op_type](chain, node, a, where)
        if squeezed and node.op_type in ("Identity", "Dropout"):
            chain.squeezed.add(node.output[0])  # still the (N, C, 1, 1) tensor
        chain.done()
    output = chain.resolve(output_name)
    if output not in chain.shapes:
        raise error(path, f"the graph's output {output_name!r} is written by no node")
    if output_name in chain.squeezed:
        raise _unsupported(path, "the graph", "its output is a GlobalAveragePool's (N, C, 1, 1); cnn's "
                                              "GlobalAvgPool2D gives (N, C): flatten it in the graph")
    calls, output = _builder.fuse_activations(_builder.reachable(chain.calls, output), output)
    if not calls:
        raise _unsupported(path, "the graph", "no layers (only identities): nothing for cnn to run")
    name = graph.name if graph.name else "onnx"
    return _builder.build_model(path, calls, input_name, input_shape, output, dtype, name)
