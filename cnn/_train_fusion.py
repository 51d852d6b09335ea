"""Training-time fusions in :class:`cnn.Model`'s loops: a ReLU into the layer before it, and
a max-pool into the convolution before it.

``BatchNormalization -> Activation("relu")`` and ``Add -> Activation("relu")`` (every ReLU of a
ResNet block) cost a pass over the tensor forward (read and write) and a masking pass backward.
When the producer's output is read by that activation alone, the producer runs with the ReLU in
its own output pass (``_forward_relu``: the normalising pass of BN, the sum of Add) and its
backward masks the gradient by the fused output (BN: inside its two gradient passes; Add: once,
for every input), and the activation's call becomes a pass-through: forward returns its input,
backward its gradient. The float operations are the unfused ones in the same order, so outputs,
losses, gradients and trajectories are the same bits (tests/test_train_fusion.py).

``Conv2D -> MaxPool2D`` (the DESIGN CNN's two pairs, LeNet's, VGG's): when the conv (ReLU or
no activation, dilation 1, groups 1) is read by the pool alone, the pair runs as one kernel
(:func:`cnn._ops.conv2d_maxpool`) that pools each conv output plane while it is in cache and
never writes the unpooled tensor; backward, the pool's gradient is masked by the pooled ReLU
output (the conv output at each window's winner: the unfused mask, read at the only places
that receive gradient), scattered through the argmax, and the conv's backward takes it
unmasked: the same bits again (tests/test_conv_pool_train.py). Where
:func:`cnn._ops.pooled_backward_path` names a path (float32, a pool keeping at most a third
of the cells), the masked cells and their winners go to the conv's backward as they are and
it does only their multiply-adds (:func:`cnn._ops.conv2d_pooled_backward`): the same values
up to rounding, in another fixed order (tests/test_pooled_backward.py).

The decision is made when the model resolves its plan (:meth:`cnn.Model._set_graph`), never
saved; a layer used on its own (``layer.forward``) is untouched. The inference plan
(:mod:`cnn._inference`) has its own fusions and does not use this.
"""

from collections import Counter

from .layers import Activation, Conv2D, MaxPool2D
from .merging import Add
from .normalization import BatchNormalization

__all__ = ["relu_pairs", "pool_pairs", "assign", "forward", "backward"]

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


def pool_pairs(steps, output):
    """``[(conv, pool), ...]``: indices into ``steps`` of the Conv2D -> MaxPool2D calls to fuse.

    A pair is an exact ``MaxPool2D`` called once, reading one tensor written by an exact
    ``Conv2D`` called once whose activation is a ReLU or none, with dilation 1 and groups 1,
    where that tensor is read by nothing else and is not the model's output.
    """
    readers = Counter(t for step in steps for t in step.inputs)
    writer = {step.output: k for k, step in enumerate(steps)}
    pairs = []
    for k, step in enumerate(steps):
        if type(step.layer) is not MaxPool2D or step.shared or len(step.inputs) != 1:
            continue
        t = step.inputs[0]
        p = writer.get(t)
        if p is None or readers[t] != 1 or t == output:
            continue
        conv = steps[p]
        if type(conv.layer) is Conv2D and not conv.shared and conv.layer._poolable:
            pairs.append((p, k))
    return pairs


def forward(step, inputs, training):
    """The forward of a step with ``step.fused`` set: the producer's ``_forward_relu``, the
    conv's ``_forward_pool`` (the pooled output), or the pass-through of the activation or
    pool fused before it (its input, unchanged)."""
    if step.fused == "relu":
        return step.layer._forward_relu(inputs, training)
    if step.fused == "pool":
        return step.layer._forward_pool(inputs, step.partner, training)
    return inputs


def backward(step, grad):
    """The backward of a step with ``step.fused`` set: the producer's own (its cache holds the
    fused output, which masks ``grad``); for a fused pool the masked scatter through its argmax
    (``Conv2D._pooled_grad``), then the conv's unmasked backward; or the activation's
    pass-through (``grad``, or None where no call before it needs an input gradient, as its
    unfused backward)."""
    if step.fused == "relu":
        return step.layer.backward(grad)
    if step.fused == "pooled":
        return step.partner._pooled_grad(step.layer, grad)
    if step.fused == "pool":
        return step.layer._backward_pooled(grad)
    return grad if step.layer.need_input_grad else None


def assign(steps, enabled=True, pool=True):
    """Set ``step.fused`` (and ``step.partner``) on every step of a plan (the last step writes
    the model's output): ``"relu"`` for the producer of a pair of :func:`relu_pairs` (when
    ``enabled``), ``"skip"`` for its activation; ``"pool"`` for the conv of a pair of
    :func:`pool_pairs` (when ``pool``), ``"pooled"`` for its pool, each the other's
    ``partner``; None elsewhere. Returns the pairs."""
    for step in steps:
        step.fused = step.partner = None
    pairs = relu_pairs(steps, steps[-1].output) if enabled and steps else []
    for p, k in pairs:
        steps[p].fused, steps[k].fused = "relu", "skip"
    pooled = pool_pairs(steps, steps[-1].output) if pool and steps else []
    for p, k in pooled:
        steps[p].fused, steps[k].fused = "pool", "pooled"
        steps[p].partner, steps[k].partner = steps[k].layer, steps[p].layer
    return pairs + pooled
