"""Average pooling: :class:`AvgPool2D` and :class:`GlobalAvgPool2D`, part of the
:mod:`cnn.layers` namespace (max-pooling is :class:`cnn.layers.MaxPool2D`).

Padded cells are *not* counted: a window's mean is over its real cells only. That is the
Keras/TensorFlow rule (``padding="same"``) and ONNX ``AveragePool``'s default
``count_include_pad=0``; PyTorch's default ``count_include_pad=True`` counts them (set it to
False for this behaviour).
"""
import numpy as np

from cnn import _ops, _registry
from cnn import _validation as V
from cnn import functional as F
from cnn._layer import Layer, compact_pair

__all__ = ["AveragePooling2D", "AvgPool2D", "GlobalAveragePooling2D", "GlobalAvgPool2D"]


class AvgPool2D(Layer):
    """Average of every window of each channel plane, by :func:`cnn.functional.avgpool2d`.

    Parameters
    ----------
    size : int or (int, int), default 2
        Window.
    stride : int or (int, int), optional
        Defaults to ``size``.
    padding : "valid", "same", "tile", int, (ph, pw) or (top, bottom, left, right), default "valid"
        ``"same"`` is TensorFlow/Keras' (``ceil(H / s)`` outputs, the smaller half of the
        padding on top/left); ``"tile"`` as for :class:`cnn.layers.MaxPool2D`. Padded cells
        are not counted in the mean. Every pad must be smaller than the window.

    Shapes
    ------
    input ``(N, C, H, W)``, output ``(N, C, OH, OW)``.
    """

    def __init__(self, size=2, stride=None, padding="valid"):
        super().__init__()
        self.size = V.int_pair(size, "size", 1)
        self.stride = None if stride is None else V.int_pair(stride, "stride", 1)
        self.padding = V.padding(padding, "padding", ("valid", "same", "tile"))
        self._cache = None

    def compute_output_shape(self, input_shape):
        input_shape = V.item_shape(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"AvgPool2D expects image items of shape (C, H, W), got item shape "
                             f"{input_shape}")
        return tuple(int(v) for v in F.avgpool2d_output_shape(
            input_shape, self.size, self.stride, self.padding))

    def _create_params(self, rng):
        stride = self.size if self.stride is None else self.stride
        self._geometry = (self.size, stride,
                          F.maxpool2d_padding(self.padding, self.size, stride, self.input_shape[1:]))
        self._out_hw = tuple(self.output_shape[1:])

    def forward(self, x, training=False):
        self._check_input(x)
        self._cache = x.shape if training else None
        return _ops.avgpool2d(np.ascontiguousarray(x), *self._geometry, self._out_hw)

    def backward(self, grad):
        x_shape = self._cached()
        self._check_grad(grad, x_shape[0])
        if not self.need_input_grad:
            return None
        return _ops.avgpool2d_backward(np.ascontiguousarray(grad), x_shape, *self._geometry)

    def get_config(self):
        padding = list(self.padding) if isinstance(self.padding, tuple) else self.padding
        return {"size": compact_pair(self.size),
                "stride": None if self.stride is None else compact_pair(self.stride),
                "padding": padding}


class GlobalAvgPool2D(Layer):
    """The mean of each channel plane: ``(N, C, H, W)`` -> ``(N, C)`` (Keras'
    ``GlobalAveragePooling2D``, ``keepdims=False``), by :func:`cnn.functional.global_avgpool2d`."""

    def __init__(self):
        super().__init__()
        self._cache = None

    def compute_output_shape(self, input_shape):
        input_shape = V.item_shape(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"GlobalAvgPool2D expects image items of shape (C, H, W), got item "
                             f"shape {input_shape}")
        return (input_shape[0],)

    def forward(self, x, training=False):
        self._check_input(x)
        self._cache = x.shape if training else None
        return _ops.global_avgpool2d(np.ascontiguousarray(x))

    def backward(self, grad):
        x_shape = self._cached()
        self._check_grad(grad, x_shape[0])
        if not self.need_input_grad:
            return None
        return _ops.global_avgpool2d_backward(np.ascontiguousarray(grad), x_shape)


AveragePooling2D = AvgPool2D
GlobalAveragePooling2D = GlobalAvgPool2D

for _cls in (AvgPool2D, GlobalAvgPool2D):
    _registry.LAYERS.add(_cls, _cls.__name__)
_registry.LAYERS.add(AvgPool2D, "AveragePooling2D")
_registry.LAYERS.add(GlobalAvgPool2D, "GlobalAveragePooling2D")
