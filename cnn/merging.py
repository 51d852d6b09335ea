"""Layers that join several tensors of a graph model: :class:`Add` and :class:`Concatenate`.

Both take a list of at least two inputs (``layers.Add()([a, b])``), have no parameters, and
their backward returns one gradient per input: ``Add`` passes the output gradient to every
input (``d(a + b)/da = 1``), ``Concatenate`` cuts it back into the inputs' slices.
"""

import numpy as np

from . import _ops, _registry
from . import _validation as V
from ._layer import Layer
from .activations import ReLU

_RELU = ReLU()  # the fused ReLU of Add._forward_relu (stateless)

__all__ = ["Add", "Concatenate"]


class _Merge(Layer):
    """Base of the joining layers: ``build``/``forward`` take lists, ``backward`` returns one."""

    takes_multiple_inputs = True

    def __init__(self):
        super().__init__()
        self.input_shapes = None
        self._cache = None

    def build(self, input_shapes, rng=None, dtype=np.float32):
        """Check the list of per-item ``input_shapes``; returns the output shape."""
        if not isinstance(input_shapes, (list, tuple)) or len(input_shapes) < 2:
            raise ValueError(f"{type(self).__name__} needs a list of at least 2 input shapes, "
                             f"got {V.short_repr(input_shapes)}")
        shapes = [V.item_shape(s, f"input_shapes[{i}]") for i, s in enumerate(input_shapes)]
        self.output_shape = self.compute_output_shape(shapes)
        self.input_shapes = shapes
        self.input_shape = shapes[0]
        self.dtype = V.float_dtype(dtype)
        self.params, self.grads, self.buffers = [], [], []
        self.built = True
        return self.output_shape

    def _check_inputs(self, xs):
        if not isinstance(xs, (list, tuple)) or len(xs) != len(self.input_shapes or xs) or len(xs) < 2:
            raise TypeError(f"{type(self).__name__} takes a list of {len(self.input_shapes or ())} "
                            f"arrays, got {type(xs).__name__}")
        if not self.built:
            self.build([x.shape[1:] for x in xs], dtype=xs[0].dtype)
        n = xs[0].shape[0]
        for i, (x, shape) in enumerate(zip(xs, self.input_shapes)):
            if not isinstance(x, np.ndarray) or x.dtype != self.dtype:
                raise TypeError(f"{type(self).__name__} input {i} must be an ndarray of dtype "
                                f"{self.dtype}")
            if x.shape != (n,) + shape:
                raise ValueError(f"{type(self).__name__} input {i} must have shape "
                                 f"{(n,) + shape}, got {x.shape}")
        return n


class Add(_Merge):
    """Element-wise sum of inputs of one shape (a residual connection: ``Add()([x, f(x)])``).

    Shapes
    ------
    inputs: k >= 2 arrays ``(N, *shape)``; output ``(N, *shape)``.
    """

    def compute_output_shape(self, input_shapes):
        shapes = [tuple(s) for s in input_shapes]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"Add needs inputs of one shape, got {shapes}")
        return shapes[0]

    def forward(self, xs, training=False):
        return self._forward(xs, training, False)

    def _forward_relu(self, xs, training=False):
        """``max(forward(xs), 0)``, with the bits of ``Activation("relu")`` after
        :meth:`forward` (two inputs: in one pass); :meth:`backward` then takes the gradient of
        that output, masks it once and hands the masked gradient to every input. A model calls
        this when the ReLU after this call is fused into it (see :mod:`cnn._train_fusion`)."""
        return self._forward(xs, training, True)

    def _forward(self, xs, training, relu):
        n = self._check_inputs(xs)
        contiguous = all(x.flags.c_contiguous for x in xs)
        if relu and contiguous and len(xs) == 2:
            out = _ops.add_relu(xs[0], xs[1], np.empty_like(xs[0]))
        elif contiguous:
            # the bits of np.add and += below, in threaded passes (into one new array)
            out = _ops.add(xs[0], xs[1])
            for x in xs[2:]:
                _ops.add_into(out, x)
        else:
            out = np.add(xs[0], xs[1])
            for x in xs[2:]:
                out += x
        if relu and not (contiguous and len(xs) == 2):
            out = _RELU.forward(out)
        self._cache = (n, out if relu else None) if training else None
        return out

    def backward(self, grad):
        n, relu_out = self._cached()
        self._check_grad(grad, n)
        if relu_out is not None:  # one mask for every input
            grad = _RELU.backward(relu_out, relu_out, grad)
        return [grad] * len(self.input_shapes)


class Concatenate(_Merge):
    """Inputs joined along ``axis`` of the item (0, the channels of ``(C, H, W)`` items, by
    default; negative counts from the end).

    Parameters
    ----------
    axis : int, default 0
        Axis of the per-item shape (the batch axis is not counted).

    Shapes
    ------
    inputs: k >= 2 arrays that agree on every axis but ``axis``; output: their sizes summed
    along it.
    """

    def __init__(self, axis=0):
        super().__init__()
        self.axis = V.integer(axis, "axis")

    def _item_axis(self, ndim):
        axis = self.axis + ndim if self.axis < 0 else self.axis
        if not 0 <= axis < ndim:
            raise ValueError(f"Concatenate axis {self.axis} is out of range for items with "
                             f"{ndim} axes")
        return axis

    def compute_output_shape(self, input_shapes):
        shapes = [tuple(s) for s in input_shapes]
        if len({len(s) for s in shapes}) != 1:
            raise ValueError(f"Concatenate needs inputs with the same number of axes, got {shapes}")
        axis = self._item_axis(len(shapes[0]))
        rest = {s[:axis] + s[axis + 1:] for s in shapes}
        if len(rest) != 1:
            raise ValueError(f"Concatenate needs inputs that agree on every axis but {self.axis}, "
                             f"got {shapes}")
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        return tuple(out)

    def forward(self, xs, training=False):
        n = self._check_inputs(xs)
        out = np.concatenate(xs, axis=self._item_axis(len(self.input_shapes[0])) + 1)
        self._cache = n if training else None
        return out

    def backward(self, grad):
        n = self._cached()
        self._check_grad(grad, n)
        axis = self._item_axis(len(self.input_shapes[0]))
        cuts = np.cumsum([s[axis] for s in self.input_shapes])[:-1]
        return [np.ascontiguousarray(g) for g in np.split(grad, cuts, axis=axis + 1)]

    def get_config(self):
        return {"axis": self.axis}


for _cls in (Add, Concatenate):
    _registry.LAYERS.add(_cls, _cls.__name__)
