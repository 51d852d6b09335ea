"""Symbolic tensors and the layer graph of a :class:`cnn.Model` (Keras' functional API).

``x = cnn.Input((3, 32, 32))`` is a symbolic tensor: a per-item shape and where it comes from.
Calling a layer on symbolic tensors (``y = layers.Dense(10)(x)``) computes nothing; it checks
the shapes, records a :class:`Node` (one call of one layer) and returns the node's output, a new
symbolic tensor. ``cnn.Model(inputs, outputs)`` walks back from the output to the input and
orders the nodes so that every node comes after the nodes it reads (:func:`plan`); the model
then runs that plan forward, and backward in reverse, summing the gradients of a tensor read by
several nodes.

A layer may be called more than once (a shared layer: one set of weights, several nodes) as
long as every call sees the same input shape; its gradients are the sum over its nodes.
"""

import itertools

import numpy as np

from . import _ops
from . import _validation as V

__all__ = ["SymbolicTensor", "Node", "Input", "plan", "release_after"]

_ids = itertools.count()


class SymbolicTensor:
    """A placeholder for a batch of items of ``shape`` in a layer graph.

    Attributes
    ----------
    shape : tuple of int
        Per-item shape (no batch axis).
    node : Node or None
        The call that produces it; None for an :func:`Input`.
    name : str
    """

    def __init__(self, shape, node=None, name=None):
        self.shape = tuple(shape)
        self.node = node
        self.id = next(_ids)
        self.name = name or (f"{node.layer_label}:out" if node is not None else f"input_{self.id}")

    @property
    def is_input(self):
        return self.node is None

    def __repr__(self):
        return f"<SymbolicTensor {self.name} shape=(None, {', '.join(map(str, self.shape))})>"


class Node:
    """One call of ``layer`` on ``inputs`` (symbolic tensors), producing ``output``."""

    def __init__(self, layer, inputs, output_shape):
        self.layer = layer
        self.inputs = list(inputs)
        self.layer_label = f"{type(layer).__name__}#{next(_ids)}"
        self.output = SymbolicTensor(output_shape, node=self)

    @property
    def input_shapes(self):
        shapes = [t.shape for t in self.inputs]
        return shapes if self.layer.takes_multiple_inputs else shapes[0]


def Input(shape, name=None):
    """A symbolic model input: items of ``shape`` (no batch axis), e.g. ``(3, 32, 32)``.

    Parameters
    ----------
    shape : tuple of int
    name : str, optional

    Returns
    -------
    SymbolicTensor
    """
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    return SymbolicTensor(V.item_shape(shape, "shape"), name=name)


def symbolic_call(layer, inputs):
    """Record ``layer(inputs)`` on symbolic tensors; return the output tensor.

    Raises ValueError when the shapes do not fit the layer, or when a layer already called on
    one input shape is called on another.
    """
    many = layer.takes_multiple_inputs
    if many:
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 2 \
                or not all(isinstance(t, SymbolicTensor) for t in inputs):
            raise TypeError(f"{type(layer).__name__} takes a list of at least 2 symbolic tensors, "
                            f"got {inputs!r}")
        shapes = [t.shape for t in inputs]
        tensors = list(inputs)
    else:
        if not isinstance(inputs, SymbolicTensor):
            raise TypeError(f"{type(layer).__name__} takes one symbolic tensor, got "
                            f"{type(inputs).__name__}")
        shapes = inputs.shape
        tensors = [inputs]
    seen = getattr(layer, "_call_shapes", None)
    if seen is not None and seen != shapes:
        raise ValueError(f"{type(layer).__name__} was called on input shape {seen} and is now "
                         f"called on {shapes}: a shared layer must see one input shape (create "
                         f"a new layer instead)")
    if layer.built and layer.input_shape is not None and \
            (layer.input_shape if not many else layer.input_shapes) != shapes:
        raise ValueError(f"{type(layer).__name__} is built for input shape {layer.input_shape} "
                         f"and cannot be called on {shapes}")
    try:
        out_shape = layer.compute_output_shape(shapes)
    except ValueError as exc:
        where = [t.name for t in tensors] if many else tensors[0].name
        raise ValueError(f"{exc} (calling {type(layer).__name__} on {where} of shape "
                         f"{shapes})") from None
    layer._call_shapes = shapes
    return Node(layer, tensors, out_shape).output


def plan(inputs, outputs):
    """The nodes between ``inputs`` and ``outputs`` in execution order.

    Every node comes after the nodes whose outputs it reads; ties keep the order in which the
    layers were called. Raises ValueError for an output that does not depend on the input, a
    node reading a tensor that does not come from the input ("graph disconnected"), or a cycle.

    Returns
    -------
    list of Node
    """
    found = {}
    stack = [outputs]
    while stack:
        tensor = stack.pop()
        node = tensor.node
        if node is None:
            if tensor is not inputs:
                raise ValueError(f"graph disconnected: {tensor.name} is an input that is not the "
                                 f"model's input {inputs.name}; every path to the output must "
                                 f"start at the model's input")
            continue
        if id(node) in found:
            continue
        found[id(node)] = node
        stack.extend(node.inputs)
    if outputs.node is None:
        raise ValueError("the model's output is its input: add at least one layer")
    nodes = sorted(found.values(), key=lambda n: n.output.id)
    # Kahn's algorithm over the found nodes (a cycle leaves nodes that are never ready)
    readers = {id(n): [] for n in nodes}
    waiting = {}
    for n in nodes:
        deps = {id(t.node) for t in n.inputs if t.node is not None}
        waiting[id(n)] = len(deps)
        for d in deps:
            readers[d].append(n)
    ready = [n for n in nodes if waiting[id(n)] == 0]
    order = []
    while ready:
        ready.sort(key=lambda n: n.output.id)
        n = ready.pop(0)
        order.append(n)
        for r in readers[id(n)]:
            waiting[id(r)] -= 1
            if waiting[id(r)] == 0:
                ready.append(r)
    if len(order) != len(nodes):
        stuck = [n.layer_label for n in nodes if n not in order]
        raise ValueError(f"the layer graph has a cycle through {', '.join(stuck)}")
    return order


def release_after(inputs):
    """Where each tensor can be dropped: after its last reader.

    Parameters
    ----------
    inputs : list of sequences of hashable
        The tensors (ids) each step reads, in execution order.

    Returns
    -------
    list of tuple
        For each step, the tensors it is the last reader of (each once).
    """
    last_read = {}
    for k, step_inputs in enumerate(inputs):
        for t in step_inputs:
            last_read[t] = k
    return [tuple(t for t in set(step_inputs) if last_read[t] == k)
            for k, step_inputs in enumerate(inputs)]


def _accumulate_gradient(grads, summed, t, g):
    """Add ``g`` to the gradient of tensor ``t`` in ``grads`` (a dict of tensor -> ndarray),
    where several readers of ``t`` meet in the backward pass.

    The first gradient is kept as it is (no copy). The first sum goes into a new array,
    since both terms may be shared (``Add`` hands one array to each of its inputs); ``t`` is
    then recorded in the set ``summed`` and later terms are added into that array in place.
    Sums run in the order the gradients arrive, as ``np.add`` would (the same bits), in one
    threaded pass.
    """
    acc = grads.get(t)
    if acc is None:
        grads[t] = g
        return
    fast = (acc.dtype == g.dtype and acc.shape == g.shape and acc.flags.c_contiguous
            and g.flags.c_contiguous)
    if t in summed:
        if fast and not np.may_share_memory(acc, g):
            _ops.add_into(acc, g)
        else:  # rare (a strided or another-dtype term): NumPy, into a new array of its own
            grads[t] = np.add(acc, g)
        return
    grads[t] = _ops.add(acc, g) if fast else np.add(acc, g)
    summed.add(t)
