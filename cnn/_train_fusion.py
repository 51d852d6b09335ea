"""Training-time fusion of a ReLU into the layer before it, in :class:`cnn.Model`'s loops.

``BatchNormalization -> Activation("relu")`` and ``Add -> Activation("relu")`` (every ReLU of a
ResNet block) cost a pass over the tensor forward (read and write) and a masking pass backward.
When the producer's output is read by that activation alone, the producer runs with the ReLU in
its own output pass (``_forward_relu``: the normalising pass of BN, the sum of Add) and its
backward masks the gradient by the fused output (BN: inside its two gradient passes; Add: once,
for every input), and the activation's call becomes a pass-through: forward returns its input,
backward its gradient. The float operations are the unfused ones in the same order, so outputs,
losses, gradients and trajectories are the same bits (tests/test_train_fusion.py).

The decision is made when the model resolves its plan (:meth:`cnn.Model._set_graph`), never
saved; a layer used on its own (``layer.forward``) is untouched. The inference plan
(:mod:`cnn._inference`) has its own fusions and does not use this.
"""

from collections import Counter

from .layers import Activation
from .merging import Add
from .normalization import BatchNormalization

__all__ = ["relu_pairs", "assign", "forward", "backward"]

# Exact types: a subclass may override forward, which the fused call would bypass.
_PRODUCERS = (BatchNormalization, Add)


def _is_relu(layer):
    return type(layer) is Activation and layer.activation.name == "relu"


def relu_pairs(steps, output):
    """``[(producer, activation), ...]``: indices into ``steps`` of the calls to fuse.

    Parameters
    ----------
    steps : list of cnn.model._Step
        The resolved plan (``inputs``: tensor ids it reads; ``output``: the id it writes;
        ``shared``: its layer is called more than once).
    output : int
        The tensor id of the model's output.

    A pair is an exact ``Activation`` whose activation is named ``"relu"`` (not leaky, not
    ELU), reading one tensor written by an exact ``BatchNormalization`` or ``Add`` whose layer
    is called once, where that tensor is read by nothing else and is not the model's output.
    """
    readers = Counter(t for step in steps for t in step.inputs)
    writer = {step.output: k for k, step in enumerate(steps)}
    pairs = []
    for k, step in enumerate(steps):
        if not _is_relu(step.layer) or len(step.inputs) != 1:
            continue
        t = step.inputs[0]
        p = writer.get(t)  # None: the model's input
        if p is None or readers[t] != 1 or t == output:
            continue
        producer = steps[p]
        if type(producer.layer) in _PRODUCERS and not producer.shared:
            pairs.append((p, k))
    return pairs


def forward(step, inputs, training):
    """The forward of a step with ``step.fused`` set: the producer's ``_forward_relu``, or
    the activation's pass-through (its input, unchanged)."""
    if step.fused == "relu":
        return step.layer._forward_relu(inputs, training)
    return inputs


def backward(step, grad):
    """The backward of a step with ``step.fused`` set: the producer's own (its cache holds the
    fused output, which masks ``grad``), or the activation's pass-through (``grad``, or None
    where no call before it needs an input gradient, as its unfused backward)."""
    if step.fused == "relu":
        return step.layer.backward(grad)
    return grad if step.layer.need_input_grad else None


def assign(steps, enabled=True):
    """Set ``step.fused`` on every step of a plan (the last step writes the model's output):
    ``"relu"`` for the producer of a pair of :func:`relu_pairs` (when ``enabled``), ``"skip"``
    for its activation, None elsewhere. Returns the pairs."""
    for step in steps:
        step.fused = None
    pairs = relu_pairs(steps, steps[-1].output) if enabled and steps else []
    for p, k in pairs:
        steps[p].fused, steps[k].fused = "relu", "skip"
    return pairs
