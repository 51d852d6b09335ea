"""The state of one ONNX import and the cnn model made from it.

The importers of :mod:`cnn.onnx._import` read one node at a time in topological order
(:func:`order_nodes`) and record *calls* on a :class:`Builder`: a cnn layer, its weights, the
tensors it reads and the tensor it writes. Identities (``Identity``, ``Dropout``) write no call:
their output becomes another name (an alias) of their input. At the end the activations that
follow a ``Conv``/``Gemm`` are folded into that layer (:func:`fuse_activations`) and the calls
become a :class:`cnn.Sequential` when they form a chain, a :class:`cnn.Model` built with the
functional API otherwise (:func:`build_model`).
"""

import heapq

import numpy as np

from .. import layers as _layers
from . import _checks
from ._checks import error


class Call:
    """One cnn layer call: ``output = layer(inputs)``, ``weights`` its parameters by name."""

    __slots__ = ("inputs", "layer", "op_type", "output", "shape", "weights")

    def __init__(self, layer, weights, inputs, output, op_type, shape):
        self.layer, self.weights, self.inputs = layer, weights, inputs
        self.output, self.op_type, self.shape = output, op_type, shape


class Builder:
    """Constants, tensors and the calls made so far.

    While a node is imported, :attr:`inputs` are its (resolved) data inputs, :attr:`shape` the
    per-item shape of the first, :attr:`output` its output's name.
    """

    def __init__(self, path, folder, proto, dtype, input_name, input_shape, readers):
        self.path, self.folder = path, folder
        self.opset = _checks.default_opset(proto)
        self.dtype = dtype
        self.input_name = input_name
        self.shapes = {input_name: input_shape}  # tensor -> per-item shape
        self.producers = {}  # tensor -> the Call that writes it
        self.aliases = {}  # tensor -> the tensor it is the same as (after an identity)
        self.readers = readers  # tensor -> how many node inputs (and graph outputs) read it
        self.calls = []
        # GlobalAveragePool outputs: (N, C, 1, 1) in ONNX, (N, C) in cnn; only a flattening reads them
        self.squeezed = set()
        self.inputs, self.raw_inputs, self.shape, self.output = [], [], None, None
        self._tensors = {t.name: t for t in proto.graph.initializer}
        self._arrays = {}

    # -- constants ------------------------------------------------------------------------

    def add_constant(self, name, tensor_or_array):
        self._tensors[name] = tensor_or_array

    def alias_constant(self, name, source):
        """Make ``name`` the same constant as ``source`` (an Identity of a constant: PyTorch
        writes one for each initializer equal to another, e.g. a fresh BatchNorm's ones)."""
        self._tensors[name] = self._tensors[source]

    def is_const(self, name):
        return name in self._tensors

    def const(self, name, where, what):
        """The checked array of constant ``name`` (an initializer or a Constant's output)."""
        if name not in self._tensors:
            raise error(self.path, f"{where}: its {what} {name!r} must be a constant (an initializer "
                                   f"or a Constant node); cnn reads weights and shapes only from "
                                   f"constants")
        if name not in self._arrays:
            t = self._tensors[name]
            self._arrays[name] = t if isinstance(t, np.ndarray) else _checks.tensor_array(
                self.path, t, self.folder, where)
        return self._arrays[name]

    def weight(self, name, where, what, shape):
        """A float constant of exactly ``shape``."""
        a = self.const(name, where, what)
        if a.dtype.kind != "f":
            raise error(self.path, f"{where}: {what} {name!r} must be float, got {a.dtype}")
        if a.shape != tuple(shape):
            raise error(self.path, f"{where}: {what} {name!r} has shape {a.shape}, wanted {tuple(shape)}")
        return a

    # -- tensors and calls ----------------------------------------------------------------

    def resolve(self, name):
        while name in self.aliases:
            name = self.aliases[name]
        return name

    def begin(self, node, data):
        """Start importing ``node`` whose data (non-constant) inputs are ``data``."""
        self.raw_inputs = list(data)
        self.inputs = [self.resolve(n) for n in data]
        self.shape = self.shapes[self.inputs[0]] if self.inputs else None
        self.output = node.output[0]

    def done(self):
        """After the importer: an output no call wrote is the same tensor as the input."""
        if self.output not in self.shapes and self.output not in self.aliases:
            self.aliases[self.output] = self.inputs[0]

    def producer(self, name):
        return self.producers.get(self.resolve(name))

    def add(self, layer_factory, weights, where, op_type):
        """Record the call ``layer_factory()(inputs) -> output`` (its errors become ValueErrors
        naming the node)."""
        many = len(self.inputs) > 1
        in_shapes = [self.shapes[n] for n in self.inputs] if many else self.shape
        try:
            layer = layer_factory()
            shape = layer.compute_output_shape(in_shapes)
        except (TypeError, ValueError) as exc:
            raise error(self.path, f"{where}: cnn cannot run it on items of shape {in_shapes}: "
                                   f"{exc}") from None
        _checks.check_item(self.path, shape, f"{where}: its output")
        call = Call(layer, weights, list(self.inputs), self.output, op_type, shape)
        self.calls.append(call)
        self.producers[self.output] = call
        self.shapes[self.output] = shape

    def replace(self, call, layer_factory, weights, where):
        """Rebuild ``call``'s layer (a bias added to it) and make the current node's output
        the same tensor as the call's."""
        try:
            call.layer = layer_factory()
        except (TypeError, ValueError) as exc:
            raise error(self.path, f"{where}: {exc}") from None
        call.weights = weights
        self.aliases[self.output] = call.output

    def need_rank(self, rank, where, what):
        if len(self.shape) != rank:
            raise error(self.path, f"{where}: {what} needs items of rank {rank}, got item shape "
                                   f"{self.shape}")


# ----------------------------------------------------------------------------- graph order


def order_nodes(path, nodes, input_name, initializers, where):
    """Node indices in an order where every node comes after the nodes it reads (file order
    among the ready ones). Raises a ValueError for a tensor written twice, a node reading a
    tensor that is neither the model's input, an initializer nor any node's output, or a
    cycle."""
    producer = {}
    for i, node in enumerate(nodes):
        for name in node.output:
            if not name:
                continue
            if name in producer or name == input_name or name in initializers:
                raise error(path, f"{where(i, node)}: its output {name!r} is already a tensor of "
                                  f"the graph (each tensor is written once)")
            producer[name] = i
    waiting, readers = [0] * len(nodes), [[] for _ in nodes]
    for i, node in enumerate(nodes):
        if len(node.input) > _checks.MAX_NODE_INPUTS:
            raise error(path, f"{where(i, node)}: {len(node.input)} inputs, more than the "
                              f"{_checks.MAX_NODE_INPUTS} this loader reads")
        deps = set()
        for name in node.input:
            if not name or name == input_name or name in initializers:
                continue
            if name not in producer:
                raise error(path, f"{where(i, node)}: it reads {name!r}, which is not the model's "
                                  f"input {input_name!r}, an initializer or any node's output; a cnn "
                                  f"model has one input and every path starts there")
            deps.add(producer[name])
        waiting[i] = len(deps)
        for d in deps:
            readers[d].append(i)
    ready = [i for i in range(len(nodes)) if waiting[i] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for r in readers[i]:
            waiting[r] -= 1
            if waiting[r] == 0:
                heapq.heappush(ready, r)
    if len(order) != len(nodes):
        done = set(order)
        stuck = [where(i, nodes[i]) for i in range(len(nodes)) if i not in done]
        raise error(path, f"the graph has a cycle through {', '.join(stuck[:10])}"
                          f"{' ...' if len(stuck) > 10 else ''}: a cnn model is a DAG")
    return order


# ----------------------------------------------------------------------------- the model


def fuse_activations(calls, output):
    """Fold an activation call into the Dense/Conv2D call it reads when nothing else reads
    that layer's output (Conv + Relu -> Conv2D(activation="relu")), as cnn's own models are
    written. Returns the calls left and the (renamed) output tensor."""
    reads = {}
    for c in calls:
        for name in c.inputs:
            reads[name] = reads.get(name, 0) + 1
    reads[output] = reads.get(output, 0) + 1
    producers = {c.output: c for c in calls}
    renamed, kept = {}, []
    for c in calls:
        c.inputs = [renamed.get(n, n) for n in c.inputs]
        prev = producers.get(c.inputs[0]) if len(c.inputs) == 1 else None
        if (type(c.layer) is _layers.Activation and prev is not None
                and isinstance(prev.layer, (_layers.Dense, _layers.Conv2D))
                and prev.layer.activation.name in ("identity", "linear")
                and reads[prev.output] == 1
                and not (isinstance(prev.layer, _layers.Conv2D) and c.layer.activation.name == "softmax")):
            cfg = dict(prev.layer.get_config(), activation=c.layer.get_config()["activation"])
            prev.layer = type(prev.layer).from_config(cfg)
            renamed[c.output] = prev.output
            continue
        kept.append(c)
    return kept, renamed.get(output, output)


def reachable(calls, output):
    """The calls the output depends on, in their order."""
    producers = {c.output: c for c in calls}
    needed, stack = set(), [output]
    while stack:
        c = producers.get(stack.pop())
        if c is not None and id(c) not in needed:
            needed.add(id(c))
            stack.extend(c.inputs)
    return [c for c in calls if id(c) in needed]


def build_model(path, calls, input_name, input_shape, output, dtype, name):
    """A built cnn model running ``calls``: a Sequential for a chain, else a cnn.Model."""
    from ..graph import Input
    from ..model import Model
    from ..sequential import Sequential
    chain = all(len(c.inputs) == 1 and c.inputs[0] == (calls[k - 1].output if k else input_name)
                for k, c in enumerate(calls))
    try:
        if chain:
            model = Sequential([c.layer for c in calls], input_shape=input_shape, seed=0,
                               dtype=dtype, name=name)
        else:
            x = Input(input_shape)
            tensors = {input_name: x}
            for c in calls:
                args = [tensors[n] for n in c.inputs]
                tensors[c.output] = c.layer(args if c.layer.takes_multiple_inputs else args[0])
            model = Model(x, tensors[output], seed=0, dtype=dtype, name=name)
    except (TypeError, ValueError) as exc:
        raise error(path, f"cannot build the cnn model: {exc}") from None
    index = {id(layer): i for i, layer in enumerate(model.layers)}
    state = {f"{index[id(c.layer)]}.{key}": np.asarray(v, dtype=dtype) for c in calls
             for key, v in c.weights.items()}
    model.load_state_dict(state)
    return model
