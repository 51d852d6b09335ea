"""Layers: the parameterised (and parameter-free) steps of a :class:`cnn.Sequential` model.

Every layer works on a batch: ``forward(x, training)`` takes ``(N, *input_shape)`` and returns
``(N, *output_shape)``; ``backward(grad)`` takes ``dC/d output`` of that shape and returns
``dC/d input`` (or None when the model says nobody needs it). Shapes given to and returned by
``build`` / ``compute_output_shape`` are per item, without the batch axis (``(C, H, W)`` for
images, ``(features,)`` for vectors). Arrays are NCHW, C-contiguous, float32 or float64 (the
dtype the layer was built with).

Parameters live in ``layer.params`` with names ``layer.param_names`` (``"weight"``,
``"bias"``); ``backward`` writes the batch-mean gradients into the matching arrays of
``layer.grads`` in place (the losses already divide by N). Those arrays are created once at
``build`` and reused by every step, so an optimizer may keep references to both lists.

Layers with an activation (:class:`Dense`, :class:`Conv2D`, :class:`Activation`) also offer
the logits path: ``forward_preactivation(x, training)`` returns the pre-activation ``z``
(and, in training, keeps what ``backward_preactivation(grad_z)`` needs), which skips the
activation's backward. A model whose loss takes logits (cross-entropy after a softmax) asks
its last layer for ``z`` this way, for the fused gradient ``(s - y) / N``. No layer keeps
``z`` after an inference pass.
"""

import math

import numpy as np

from . import _ops, _registry
from . import _validation as V
from . import activations as _activations
from . import functional as F
from . import initializers as _initializers
from ._layer import Layer, compact_pair
from .merging import Add, Concatenate
from .normalization import BatchNormalization
from .pooling import AveragePooling2D, AvgPool2D, GlobalAveragePooling2D, GlobalAvgPool2D

__all__ = ["Layer", "Add", "Concatenate", "BatchNormalization", "AvgPool2D", "AveragePooling2D",
           "GlobalAvgPool2D", "GlobalAveragePooling2D", "Dense", "Conv2D", "MaxPool2D", "MaxPooling2D", "Flatten", "Activation",
           "Dropout", "get", "serialize", "deserialize"]

_MAX_FEATURES = 2 ** 31 - 1  # GEMM sizes are C ints


# ----------------------------------------------------------------------------- validation


def _initializer(value, name):
    if value is None:
        return None
    if isinstance(value, str):
        _initializers.get(value)  # raises on an unknown name
        return value
    raise TypeError(f"{name} must be None or an initializer name, got {value!r}")


def _activation_config(act):
    if act.name in ("identity", "linear"):
        return None
    config = act.get_config()
    return config["name"] if set(config) == {"name"} else config


# ----------------------------------------------------------------------------- base


class _ActivatedLayer(Layer):
    """A layer computing ``z`` then ``a = activation(z)``; in training its cache holds
    ``(x, z, a)`` for the backward pass."""

    def _set_activation(self, activation):
        self.activation = _activations.get(activation)
        self._identity = self.activation.name in ("identity", "linear")

    def _activate(self, z):
        return z if self._identity else self.activation.forward(z)

    def forward_preactivation(self, x, training=False):
        """The pre-activation ``z`` of :meth:`forward` (the logits of a softmax layer); in
        training, keeps what :meth:`backward_preactivation` needs."""
        raise NotImplementedError

    def backward(self, grad):
        x, z, a = self._cached()
        self._check_grad(grad, x.shape[0])
        grad_z = grad if self._identity else self.activation.backward(z, a, grad)
        return self._backward_z(grad_z)

    def backward_preactivation(self, grad_z):
        """Backward from ``dC/dz`` (the activation's input) instead of ``dC/d output``."""
        x = self._cached()[0]
        self._check_grad(grad_z, x.shape[0])
        return self._backward_z(grad_z)

    def _backward_z(self, grad_z):
        raise NotImplementedError

    def _default_initializer(self):
        return _initializers.default_for(self.activation.name)


class _WeightedLayer(_ActivatedLayer):
    """Weight + optional bias computed by a kernel pair from :mod:`cnn.functional`.

    A ReLU activation is fused into the kernels: the forward's output pass applies it and
    the backward masks the incoming gradient by ``a > 0`` (where ``z > 0``) itself, so
    ``z`` is never materialised. Subclasses give the weight's shape and fans and the two
    kernel calls.
    """

    def _weight_shape_and_fans(self):
        """``(shape, fan_in, fan_out)`` of the weight, from ``self.input_shape``."""
        raise NotImplementedError

    def _kernel(self, x, b, activation):
        raise NotImplementedError

    def _kernel_backward(self, grad, x, activation, y, dw, db):
        """``(dx | None, dw, db)``; ``activation``/``y`` as in the functional backward; ``dw``,
        ``db``: the arrays to write the gradients into where they fit (else new ones)."""
        raise NotImplementedError

    def _set_weight_options(self, use_bias, kernel_initializer):
        """Validate and store the constructor options both weighted layers share."""
        self.use_bias = V.boolean(use_bias, "use_bias")
        self.kernel_initializer = _initializer(kernel_initializer, "kernel_initializer")
        self.param_names = ("weight", "bias") if self.use_bias else ("weight",)
        self._cache = None

    @property
    def _fused_relu(self):
        return self.activation.name == "relu"

    def _create_params(self, rng):
        shape, fan_in, fan_out = self._weight_shape_and_fans()
        init = _initializers.get(self.kernel_initializer or self._default_initializer())
        w = np.ascontiguousarray(init(shape, fan_in, fan_out, rng, dtype=self.dtype))
        self.params = [w]
        self.grads = [np.zeros_like(w)]
        if self.use_bias:
            self.params.append(np.zeros(shape[0], dtype=self.dtype))
            self.grads.append(np.zeros(shape[0], dtype=self.dtype))

    def forward(self, x, training=False):
        self._check_input(x)
        x = np.ascontiguousarray(x)
        b = self.params[1] if self.use_bias else None
        if self._fused_relu:
            z = None  # not materialised: relu's backward only needs a > 0
            a = self._kernel(x, b, "relu")
        else:
            z = self._kernel(x, b, None)
            a = self._activate(z)
        self._cache = (x, z, a) if training else None
        return a

    def forward_preactivation(self, x, training=False):
        self._check_input(x)
        x = np.ascontiguousarray(x)
        z = self._kernel(x, self.params[1] if self.use_bias else None, None)
        self._cache = (x, z, None) if training else None
        return z

    def backward(self, grad):
        if not self._fused_relu:
            return super().backward(grad)
        x, _, a = self._cached()
        self._check_grad(grad, x.shape[0])
        # grad is dC/d relu-output; the kernel masks it by a > 0 itself
        return self._backward_z(grad, relu_output=a)

    def _backward_z(self, grad_z, relu_output=None):
        grads = self.grads
        dx, dw, db = self._kernel_backward(grad_z, self._cache[0],
                                           None if relu_output is None else "relu", relu_output,
                                           grads[0], grads[1] if self.use_bias else None)
        self._store_grads(dw, db)
        return dx

    def _store_grads(self, dw, db):
        """Put a kernel's ``dw``/``db`` into ``grads``: the kernels write them in place when
        the grads arrays fit (they do unless replaced), else they are copied."""
        grads = self.grads
        if dw is not grads[0]:
            np.copyto(grads[0], dw)
        if self.use_bias and db is not grads[1]:
            np.copyto(grads[1], db)


# ----------------------------------------------------------------------------- layers


class Dense(_WeightedLayer):
    """Fully connected layer: ``a = activation(x @ weight.T + bias)``.

    Parameters
    ----------
    units : int >= 1
        Number of neurons (outputs).
    activation : None, str, dict or cnn.activations.Activation
        None is the identity.
    use_bias : bool, default True
    kernel_initializer : str, optional
        A :mod:`cnn.initializers` name; default :func:`cnn.initializers.default_for` the
        activation (He for relu / leaky_relu, Glorot otherwise). Biases start at zero.

    Shapes
    ------
    input ``(N, in)``, output ``(N, units)``; ``weight`` ``(units, in)`` (the seed's
    ``w_ij``: neuron i of this layer, neuron j of the previous one), ``bias`` ``(units,)``.
    """

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer=None):
        super().__init__()
        self.units = V.integer(units, "units", 1)
        self._set_activation(activation)
        self._set_weight_options(use_bias, kernel_initializer)

    def compute_output_shape(self, input_shape):
        input_shape = V.item_shape(input_shape)
        if len(input_shape) != 1:
            raise ValueError(f"Dense expects flat items of shape (features,), got item shape {input_shape}; "
                             f"put a Flatten() layer before it")
        return (self.units,)

    def param_shapes(self, input_shape):
        self.compute_output_shape(input_shape)  # validates
        fan_in = V.item_shape(input_shape)[0]
        return [("weight", (self.units, fan_in))] + ([("bias", (self.units,))] if self.use_bias else [])

    def _weight_shape_and_fans(self):
        fan_in = self.input_shape[0]
        return (self.units, fan_in), fan_in, self.units

    def _kernel(self, x, b, activation):
        return _ops.linear(x, self.params[0], b, activation == "relu")

    def _kernel_backward(self, grad, x, activation, y, dw, db):
        return _ops.linear_backward(np.ascontiguousarray(grad), x, self.params[0],
                                    self.need_input_grad, y if activation == "relu" else None,
                                    dw, db)

    def get_config(self):
        return {"units": self.units, "activation": _activation_config(self.activation),
                "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer}


class _PooledGradient:
    """dC/dz of a fused Conv2D -> MaxPool2D pair as the pooled cells, passed from the pool's
    backward step to the conv's (:meth:`Conv2D._pooled_grad`): ``grad`` the masked gradient
    of the pooled output (C-contiguous, checked), ``pool`` the layer whose cache holds each
    cell's winner (its argmax), ``path`` what :func:`cnn._ops.pooled_backward_path` named;
    ``pool.backward(grad)`` is the dense dC/dz."""

    __slots__ = ("grad", "pool", "path")

    def __init__(self, grad, pool, path):
        self.grad = grad
        self.pool = pool
        self.path = path


class Conv2D(_WeightedLayer):
    """2-D convolution (cross-correlation, no kernel flip) over NCHW batches.

    ``a = activation(conv2d(x, weight) + bias)``; a ReLU is fused into the kernel's output
    pass. Computed by :func:`cnn.functional.conv2d` / :func:`cnn.functional.conv2d_backward`.

    Parameters
    ----------
    filters : int >= 1
        Number of output channels K.
    kernel_size : int or (int, int)
    stride : int or (int, int), default 1
    padding : "valid", "same", int, (ph, pw) or (top, bottom, left, right), default "valid"
        ``"same"`` is TensorFlow/Keras' rule for every stride: ``ceil(H / s)`` outputs, total
        padding ``max((ceil(H / s) - 1) * s + k' - H, 0)`` with ``k' = (k - 1) * d + 1``, the
        smaller half on the top/left (for stride 1: ``k' - 1``, the seed's rule); see
        :func:`cnn.functional.same_padding`.
    activation : None, str, dict or cnn.activations.Activation
    use_bias : bool, default True
    kernel_initializer : str, optional
        As for :class:`Dense`; fan_in = C/groups*kh*kw, fan_out = K*kh*kw (PyTorch's fans).
    dilation : int or (int, int), default 1
        Spacing of the kernel taps (PyTorch's ``dilation``, Keras' ``dilation_rate``).
    groups : int, default 1
        Split the C input channels and the K filters into ``groups`` independent
        convolutions (both divisible by it); ``groups == C`` is a depthwise convolution.

    Shapes
    ------
    input ``(N, C, H, W)``, output ``(N, K, OH, OW)``; ``weight`` ``(K, C/groups, kh, kw)``
    (PyTorch's layout), ``bias`` ``(K,)``.
    """

    def __init__(self, filters, kernel_size, stride=1, padding="valid", activation=None,
                 use_bias=True, kernel_initializer=None, dilation=1, groups=1):
        super().__init__()
        self.filters = V.integer(filters, "filters", 1)
        self.kernel_size = V.int_pair(kernel_size, "kernel_size", 1)
        self.stride = V.int_pair(stride, "stride", 1)
        self.dilation = V.int_pair(dilation, "dilation", 1)
        self.groups = V.integer(groups, "groups", 1)
        if self.filters % self.groups:
            raise ValueError(f"groups={self.groups} must divide filters={self.filters}")
        self.padding = V.padding(padding, "padding", ("valid", "same"))
        self._set_activation(activation)
        if self.activation.name == "softmax":
            raise ValueError("Conv2D activation must not be 'softmax' (softmax normalises flat "
                             "(N, classes) rows); put Flatten() and Dense(classes, "
                             "activation='softmax') after the convolutions")
        self._set_weight_options(use_bias, kernel_initializer)
        self._pool_scratch = {}  # the fused conv + pool kernel's per-thread rows (_forward_pool)
        self._pool_fused_call = False  # whether the last _forward_pool ran fused
        self._pool_grad_scratch = {}  # the pooled backward's channels-last copies

    def compute_output_shape(self, input_shape):
        input_shape = V.item_shape(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"Conv2D expects image items of shape (C, H, W), got item shape {input_shape}")
        if input_shape[0] % self.groups:
            raise ValueError(f"Conv2D groups={self.groups} must divide the input channels, got "
                             f"item shape {input_shape} ({input_shape[0]} channels)")
        return tuple(int(v) for v in F.conv2d_output_shape(
            input_shape, self.filters, self.kernel_size, self.stride, self.padding,
            self.dilation))

    def param_shapes(self, input_shape):
        self.compute_output_shape(input_shape)
        shape = (self.filters, V.item_shape(input_shape)[0] // self.groups) + self.kernel_size
        return [("weight", shape)] + ([("bias", (self.filters,))] if self.use_bias else [])

    def _weight_shape_and_fans(self):
        cg = self.input_shape[0] // self.groups
        kh, kw = self.kernel_size
        return (self.filters, cg, kh, kw), cg * kh * kw, self.filters * kh * kw

    def _create_params(self, rng):
        super()._create_params(rng)
        # geometry resolved once: the kernels get ints
        self.pads = F.conv2d_padding(self.padding, self.kernel_size, self.stride,
                                     self.input_shape[1:], self.dilation)
        self._out_hw = tuple(self.output_shape[1:])

    def _kernel(self, x, b, activation):
        return _ops.conv2d(x, self.params[0], b, self.stride, self.pads, self._out_hw,
                           activation == "relu", "auto", self.dilation, self.groups)

    def _kernel_backward(self, grad, x, activation, y, dw, db):
        return _ops.conv2d_backward(np.ascontiguousarray(grad), x, self.params[0], self.stride,
                                    self.pads, self.need_input_grad,
                                    y if activation == "relu" else None, "auto", self.dilation,
                                    self.groups, dw, db)

    # -- the training conv + max-pool (cnn._train_fusion: a model's Conv2D -> MaxPool2D pair)

    @property
    def _poolable(self):
        """Whether a MaxPool2D after this layer may be fused into its call: a ReLU or no
        activation, the fused kernel's convolutions (dilation 1, groups 1)."""
        return ((self._fused_relu or self._identity) and tuple(self.dilation) == (1, 1)
                and self.groups == 1)

    def _forward_pool(self, x, pool, training):
        """``pool.forward(self.forward(x, training), training)`` in one kernel that never
        writes this layer's (N, K, OH, OW) output; with ``training`` both layers' caches are
        set for :meth:`_pooled_grad` and :meth:`_backward_pooled`."""
        if not self._poolable:  # the activation was replaced after the model chose the fusion
            self._pool_fused_call = False
            return pool.forward(self.forward(x, training), training)
        self._check_input(x)
        x = np.ascontiguousarray(x)
        relu = self._fused_relu
        size, stride, pads, pool_hw = pool._geometry
        y, argmax = _ops.conv2d_maxpool(x, self.params[0], self.params[1] if self.use_bias
                                        else None, self.stride, self.pads, self._out_hw, relu,
                                        size, stride, pads, pool_hw, self._pool_scratch)
        if training:
            self._cache = (x, None, y if relu else None)
            pool._cache = ((x.shape[0], self.filters) + self._out_hw, argmax)
        else:
            self._cache = pool._cache = None
        self._pool_fused_call = True
        return y

    def _pooled_grad(self, pool, grad):
        """The fused pool's backward: ``grad`` (dC/d pooled output) masked by the pooled ReLU
        output (the conv output at each window's winner, so the same selection as the
        unfused mask: only the winners receive gradient). Where
        :func:`cnn._ops.pooled_backward_path` names a path, the masked cells and their
        winners go to :meth:`_backward_pooled` as they are (a :class:`_PooledGradient`);
        else they are scattered through the argmax into dC/dz, which it takes unmasked."""
        if not self._pool_fused_call:
            return pool.backward(grad)
        pooled = self._cached()[2]
        if pooled is not None:  # (the ReLU's backward checks grad against the pooled shape)
            grad = self.activation.backward(pooled, pooled, grad)
        x_shape, argmax = pool._cached()
        size, stride = pool._geometry[:2]
        path = pool.need_input_grad and _ops.pooled_backward_path(
            grad.dtype, self.input_shape[0], self.kernel_size, self.stride, size, stride,
            argmax.shape[2] * argmax.shape[3], x_shape[2] * x_shape[3], self.need_input_grad)
        if path:
            pool._check_grad(grad, x_shape[0])
            return _PooledGradient(np.ascontiguousarray(grad), pool, path)
        return pool.backward(grad)

    def _backward_pooled(self, grad_z):
        """This layer's backward from dC/dz (already masked by :meth:`_pooled_grad`), or from
        the pooled cells themselves (:func:`cnn._ops.conv2d_pooled_backward`; the dense
        backward of their scatter where x or the weight holds a non-finite value)."""
        if not self._pool_fused_call:
            return self.backward(grad_z)
        x = self._cached()[0]
        if isinstance(grad_z, _PooledGradient):
            grads = self.grads
            out = _ops.conv2d_pooled_backward(
                grad_z.grad, grad_z.pool._cached()[1], x, self.params[0], self.stride,
                self.pads, self._out_hw, self.need_input_grad, grad_z.path, grads[0],
                grads[1] if self.use_bias else None, self._pool_grad_scratch)
            if out is not None:
                self._store_grads(out[1], out[2])
                return out[0]
            grad_z = grad_z.pool.backward(grad_z.grad)
        self._check_grad(grad_z, x.shape[0])
        return self._backward_z(grad_z)

    def get_config(self):
        padding = list(self.padding) if isinstance(self.padding, tuple) else self.padding
        return {"filters": self.filters, "kernel_size": compact_pair(self.kernel_size),
                "stride": compact_pair(self.stride), "padding": padding,
                "activation": _activation_config(self.activation), "use_bias": self.use_bias,
                "kernel_initializer": self.kernel_initializer,
                "dilation": compact_pair(self.dilation), "groups": self.groups}


class MaxPool2D(Layer):
    """Max-pooling of every channel plane, by :func:`cnn.functional.maxpool2d`.

    Parameters
    ----------
    size : int or (int, int), default 2
        Window.
    stride : int or (int, int), optional
        Defaults to ``size`` (the seed's ``s = w_F``).
    padding : "tile", "valid", "same", int, (ph, pw) or (top, bottom, left, right), default "tile"
        ``"tile"``: the least padding that makes the windows tile the input (the seed's),
        split floor half first; ``"same"``: TensorFlow/Keras' (``ceil(H / s)`` outputs, the
        smaller half of the padding on top/left, as conv "same"). Padded cells never win;
        ties go to the first cell in row-major order, which alone receives the gradient.

    Shapes
    ------
    input ``(N, C, H, W)``, output ``(N, C, OH, OW)``.
    """

    def __init__(self, size=2, stride=None, padding="tile"):
        super().__init__()
        self.size = V.int_pair(size, "size", 1)
        self.stride = None if stride is None else V.int_pair(stride, "stride", 1)
        self.padding = V.padding(padding, "padding", ("tile", "valid", "same"))
        self._cache = None

    def compute_output_shape(self, input_shape):
        input_shape = V.item_shape(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"MaxPool2D expects image items of shape (C, H, W), got item shape {input_shape}")
        return tuple(int(v) for v in F.maxpool2d_output_shape(
            input_shape, self.size, self.stride, self.padding))

    def _create_params(self, rng):
        stride = self.size if self.stride is None else self.stride
        self._geometry = (self.size, stride,
                          F.maxpool2d_padding(self.padding, self.size, stride, self.input_shape[1:]),
                          tuple(self.output_shape[1:]))

    @property
    def pads(self):
        """The resolved padding ``(top, bottom, left, right)`` (after :meth:`build`)."""
        return self._geometry[2]

    def forward(self, x, training=False):
        self._check_input(x)
        y, argmax = _ops.maxpool2d(np.ascontiguousarray(x), *self._geometry)
        self._cache = (x.shape, argmax) if training else None
        return y

    def backward(self, grad):
        x_shape, argmax = self._cached()
        self._check_grad(grad, x_shape[0])
        if not self.need_input_grad:
            return None
        return _ops.maxpool2d_backward(np.ascontiguousarray(grad), argmax, x_shape)[0]

    def get_config(self):
        padding = list(self.padding) if isinstance(self.padding, tuple) else self.padding
        return {"size": compact_pair(self.size),
                "stride": None if self.stride is None else compact_pair(self.stride),
                "padding": padding}


MaxPooling2D = MaxPool2D


class Flatten(Layer):
    """``(N, C, H, W)`` (or any item shape) -> ``(N, C*H*W)`` in C order (channels first,
    then rows); backward is the reshape back (seed eq. 18-19)."""

    def __init__(self):
        super().__init__()
        self._cache = None

    def compute_output_shape(self, input_shape):
        shape = V.item_shape(input_shape)
        features = math.prod(shape)  # Python ints: np.prod would wrap around int64 silently
        if features > _MAX_FEATURES:
            raise ValueError(f"Flatten of items of shape {shape} gives {features} features, more "
                             f"than {_MAX_FEATURES} (2**31 - 1, the largest size BLAS takes)")
        return (features,)

    def forward(self, x, training=False):
        self._check_input(x)
        self._cache = x.shape if training else None
        return x.reshape(x.shape[0], self.output_shape[0])  # not -1: an empty batch is fine too

    def backward(self, grad):
        x_shape = self._cached()
        self._check_grad(grad, x_shape[0])
        return grad.reshape(x_shape) if self.need_input_grad else None


class Activation(_ActivatedLayer):
    """An activation on its own: ``a = activation(x)``, any item shape (softmax: ``(classes,)``).

    Parameters
    ----------
    activation : str, dict or cnn.activations.Activation
        ``"relu"``, ``"sigmoid"``, ``"tanh"``, ``"leaky_relu"``, ``"softmax"``, ``"identity"``...
    """

    def __init__(self, activation):
        super().__init__()
        self._set_activation(activation)
        self._cache = None

    def compute_output_shape(self, input_shape):
        input_shape = V.item_shape(input_shape)
        if self.activation.name == "softmax" and len(input_shape) != 1:
            raise ValueError(f"Activation('softmax') expects flat items of shape (classes,), "
                             f"got item shape {input_shape}")
        return input_shape

    def forward(self, x, training=False):
        self._check_input(x)
        a = self._activate(x)
        self._cache = (x, x, a) if training else None
        return a

    def forward_preactivation(self, x, training=False):
        self._check_input(x)
        self._cache = (x, x, None) if training else None
        return x

    def _backward_z(self, grad_z):
        return grad_z if self.need_input_grad else None

    def get_config(self):
        config = _activation_config(self.activation)
        return {"activation": "identity" if config is None else config}


class Dropout(Layer):
    """Inverted dropout: in training, each value is zeroed with probability ``rate`` and the
    survivors are scaled by ``1 / (1 - rate)``; at inference it is the identity.

    The masks come from the generator given to :meth:`build` (the model's, so one seed
    reproduces them).

    Parameters
    ----------
    rate : float in [0, 1)
    """

    def __init__(self, rate):
        super().__init__()
        self.rate = V.real(rate, "rate", low=0.0, high=1.0, high_open=True)
        self._cache = None

    def compute_output_shape(self, input_shape):
        return V.item_shape(input_shape)

    def forward(self, x, training=False):
        self._check_input(x)
        if not training or self.rate == 0.0:
            self._cache = (x.shape[0], None) if training else None
            return x
        mask = (self._rng.random(x.shape, dtype=self.dtype) >= self.rate).astype(self.dtype)
        mask *= self.dtype.type(1.0 / (1.0 - self.rate))
        self._cache = (x.shape[0], mask)
        return x * mask

    def backward(self, grad):
        n, mask = self._cached()
        self._check_grad(grad, n)
        if not self.need_input_grad:
            return None
        return grad if mask is None else grad * mask

    def get_config(self):
        return {"rate": self.rate}


# ----------------------------------------------------------------------------- (de)serialisation

for _cls in (Dense, Conv2D, MaxPool2D, Flatten, Activation, Dropout):
    _registry.LAYERS.add(_cls, _cls.__name__)
_registry.LAYERS.add(MaxPool2D, "MaxPooling2D")


def serialize(layer):
    """``{"class_name": ..., "config": layer.get_config()}`` (JSON-able); ``class_name`` is the
    name the layer's class is registered under."""
    if not isinstance(layer, Layer):
        raise TypeError(f"layer must be a cnn.layers.Layer, got {type(layer).__name__}")
    key = _registry.LAYERS.key_of(type(layer))
    if key is None:
        raise ValueError(f"layer class {type(layer).__qualname__} is not registered, so a model "
                         f"using it cannot be saved: decorate the class with @cnn.register")
    return {"class_name": key, "config": layer.get_config()}


def deserialize(spec):
    """A new, unbuilt layer from :func:`serialize` output. Only registered classes are
    accepted (a saved file cannot name arbitrary code)."""
    if not isinstance(spec, dict) or set(spec) != {"class_name", "config"}:
        raise ValueError(f"layer spec must be a dict with keys 'class_name' and 'config', got "
                         f"{_registry._short_repr(spec)}")
    cls = _registry.LAYERS.lookup(spec["class_name"], "layer class_name")
    return cls.from_config(spec["config"])


def get(identifier):
    """A layer from an instance (returned as is) or a :func:`serialize` dict."""
    if isinstance(identifier, Layer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise TypeError(f"layer must be a Layer or a serialized layer dict, got {type(identifier).__name__}")
