"""Batch normalisation: :class:`BatchNormalization`, part of the :mod:`cnn.layers` namespace.

Statistics, and which variance each one uses (the thing users trip over):

- In training the layer normalises with the batch's own mean and *biased* variance
  ``mean((x - mean)^2)`` (as PyTorch, Keras and ONNX do), computed per channel over the
  N*H*W values of that channel (per feature over N for ``(N, F)`` input), in float64.
- The running variance is updated with the *unbiased* batch variance
  ``M / (M - 1) * var`` (M = N*H*W), as PyTorch does; Keras and ONNX use the biased one there.
  The two agree up to that factor per update; this layer follows PyTorch so that a trajectory
  (weights and running statistics) matches ``torch.nn.BatchNorm2d``/``BatchNorm1d``.
- ``momentum`` is Keras' convention, the fraction *kept*:
  ``running = momentum * running + (1 - momentum) * batch``. PyTorch's ``momentum`` is the
  fraction *taken* from the batch: ``torch_momentum = 1 - momentum``. The default 0.9 is
  PyTorch's default 0.1 (Keras' default is 0.99, which needs ~10x more steps to settle:
  too slow for a few epochs on a small data set); ``eps`` defaults to PyTorch's 1e-5
  (Keras' is 1e-3).
- In evaluation (``training=False``) the running mean and variance replace the batch's.
- A batch with one value per channel in training (``(1, F)`` input, or ``(1, C, 1, 1)``) is
  a ValueError, as in PyTorch: its variance is 0, so it would normalise to ``beta`` and
  have no gradient.
"""

import numpy as np

from cnn import _ops, _registry
from cnn import _validation as V
from cnn._layer import Layer

__all__ = ["BatchNormalization"]


class BatchNormalization(Layer):
    """``y = gamma * (x - mean) / sqrt(var + eps) + beta`` per channel of ``(N, C, H, W)``
    batches, or per feature of ``(N, F)`` batches (see the module docstring for the
    statistics and the PyTorch/Keras conventions).

    Parameters
    ----------
    momentum : float in [0, 1), default 0.9
        Fraction of the running statistics kept at each training step (Keras' meaning;
        PyTorch's ``momentum`` is ``1 - momentum``).
    eps : float > 0, default 1e-5
        Added to the variance before the square root.
    center : bool, default True
        Learn the shift ``beta`` (parameter "bias"); False fixes it at 0.
    scale : bool, default True
        Learn the scale ``gamma`` (parameter "weight"); False fixes it at 1.

    Shapes
    ------
    input ``(N, C, H, W)`` or ``(N, F)``, output the same; parameters "weight" (gamma, starts
    at 1) and "bias" (beta, starts at 0), buffers "running_mean" (starts at 0) and
    "running_var" (starts at 1), all of shape ``(C,)``: PyTorch's state-dict names.
    """

    buffer_names = ("running_mean", "running_var")

    def __init__(self, momentum=0.9, eps=1e-5, center=True, scale=True):
        super().__init__()
        # momentum: the fraction of the running statistics kept (PyTorch's momentum is 1 - it)
        self.momentum = V.real(momentum, "momentum", low=0.0, high=1.0, high_open=True)
        self.eps = V.real(eps, "eps", low=0.0, low_open=True)
        self.center, self.scale = V.boolean(center, "center"), V.boolean(scale, "scale")
        self.param_names = (("weight",) if self.scale else ()) + (("bias",) if self.center else ())
        self._cache = None

    def compute_output_shape(self, input_shape):
        input_shape = V.item_shape(input_shape)
        if len(input_shape) not in (1, 3):
            raise ValueError(f"BatchNormalization expects items of shape (C, H, W) or (F,), got "
                             f"item shape {input_shape}")
        return input_shape

    def param_shapes(self, input_shape):
        c = self.compute_output_shape(input_shape)[0]
        return [(name, (c,)) for name in self.param_names]

    def buffer_shapes(self, input_shape):
        c = self.compute_output_shape(input_shape)[0]
        return [("running_mean", (c,)), ("running_var", (c,))]

    def _create_params(self, rng):
        c = self.input_shape[0]
        starts = {"weight": 1.0, "bias": 0.0}
        self.params = [np.full(c, starts[name], dtype=self.dtype) for name in self.param_names]
        self.grads = [np.zeros(c, dtype=self.dtype) for _ in self.param_names]
        self.add_buffer("running_mean", np.zeros(c))
        self.add_buffer("running_var", np.ones(c))

    def _gamma_beta(self):
        gamma = self.params[0] if self.scale else None
        beta = self.params[-1] if self.center else None
        return gamma, beta

    def forward(self, x, training=False):
        return self._forward(x, training, False)

    def _forward_relu(self, x, training=False):
        """``max(forward(x), 0)`` in the normalising pass, with the bits of
        ``Activation("relu")`` after :meth:`forward`; :meth:`backward` then takes the gradient
        of that output and applies the ReLU's derivative itself. A model calls this when the
        ReLU after this call is fused into it (see :mod:`cnn._train_fusion`)."""
        return self._forward(x, training, True)

    def _forward(self, x, training, relu):
        self._check_input(x)
        x = np.ascontiguousarray(x)
        gamma, beta = self._gamma_beta()
        running_mean, running_var = self.buffers
        if not training:
            self._cache = None
            scale = (1.0 if gamma is None else gamma.astype(np.float64)) / np.sqrt(
                running_var.astype(np.float64) + self.eps)
            scale = np.ascontiguousarray(np.broadcast_to(scale, running_var.shape))
            shift = (0.0 if beta is None else beta.astype(np.float64)) - running_mean * scale
            return _ops.batch_norm_eval(x, scale, np.ascontiguousarray(shift, dtype=np.float64),
                                        relu)
        m = x.shape[0] * int(np.prod(self.input_shape[1:]))
        if m < 2:
            raise ValueError(f"BatchNormalization in training needs more than 1 value per "
                             f"channel (as PyTorch), got input shape {x.shape}: use a larger "
                             f"batch, or evaluate with training=False")
        y, mean, var = _ops.batch_norm_train(x, gamma, beta, self.eps, relu)
        keep = self.momentum
        running_mean[...] = keep * running_mean + (1.0 - keep) * mean
        running_var[...] = keep * running_var + (1.0 - keep) * (var * (m / (m - 1.0)))
        # a fused ReLU's output is its mask in the backward
        self._cache = (x, mean, var, y if relu else None)
        return y

    def backward(self, grad):
        x, mean, var, relu_out = self._cached()
        self._check_grad(grad, x.shape[0])
        gamma, _ = self._gamma_beta()
        dx, dgamma, dbeta = _ops.batch_norm_train_backward(
            np.ascontiguousarray(grad), x, gamma, mean, var, self.eps, self.need_input_grad,
            self.scale, self.center, relu_out)
        if self.scale:
            np.copyto(self.grads[0], dgamma)
        if self.center:
            np.copyto(self.grads[-1], dbeta)
        return dx

    def get_config(self):
        return {"momentum": self.momentum, "eps": self.eps, "center": self.center,
                "scale": self.scale}


_registry.LAYERS.add(BatchNormalization, "BatchNormalization")
