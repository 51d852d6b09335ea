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

import inspect
import numbers

import numpy as np

from . import _registry
from . import _ops
from . import activations as _activations
from . import functional as F
from . import initializers as _initializers

__all__ = ["Layer", "Dense", "Conv2D", "MaxPool2D", "MaxPooling2D", "Flatten", "Activation",
           "Dropout", "get", "serialize", "deserialize"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# ----------------------------------------------------------------------------- validation


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _positive_int(value, name):
    if not _is_int(value):
        raise TypeError(f"{name} must be a positive integer, got {value!r} of type {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def _int_pair(value, name, minimum):
    """``int`` or 2-sequence of ints, each >= minimum -> ``(a, b)``."""
    if _is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


def _padding(value, name, strings):
    """A padding string from ``strings``, an int >= 0, or a tuple of 2 or 4 ints >= 0."""
    if isinstance(value, str):
        if value not in strings:
            raise ValueError(f"{name} must be one of {list(strings)}, an int or a tuple of 2 or 4 "
                             f"ints, got {value!r}")
        return value
    if _is_int(value):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
        return int(value)
    if isinstance(value, (tuple, list)) and len(value) in (2, 4) and all(_is_int(v) for v in value):
        if min(value) < 0:
            raise ValueError(f"{name} must hold amounts >= 0, got {value!r}")
        return tuple(int(v) for v in value)
    raise TypeError(f"{name} must be one of {list(strings)}, an int or a tuple of 2 or 4 ints, "
                    f"got {value!r}")


def _bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r} of type {type(value).__name__}")
    return bool(value)


def _shape(value, name="input_shape"):
    if not isinstance(value, (tuple, list)) or not all(_is_int(v) for v in value):
        raise TypeError(f"{name} must be a tuple of ints (per item, without the batch axis), "
                        f"got {value!r}")
    if len(value) == 0 or min(value) < 1:
        raise ValueError(f"{name} must be a non-empty tuple of positive ints, got {tuple(value)!r}")
    return tuple(int(v) for v in value)


def _initializer(value, name):
    if value is None:
        return None
    if isinstance(value, str):
        _initializers.get(value)  # raises on an unknown name
        return value
    raise TypeError(f"{name} must be None or an initializer name, got {value!r}")


def _compact(pair):
    """``(a, a)`` -> ``a`` for configs and reprs; other pairs -> list (JSON has no tuples)."""
    return pair[0] if pair[0] == pair[1] else list(pair)


def _activation_config(act):
    if act.name in ("identity", "linear"):
        return None
    config = act.get_config()
    return config["name"] if set(config) == {"name"} else config


# ----------------------------------------------------------------------------- base


class Layer:
    """Base class of all layers.

    Subclasses implement ``compute_output_shape``, ``forward`` and ``backward`` and, if they
    have parameters, ``_create_params(rng)``; ``get_config`` returns the constructor's
    arguments as JSON-able values, so ``type(layer).from_config(layer.get_config())`` is an
    equal, unbuilt layer.

    Attributes
    ----------
    built : bool
    input_shape, output_shape : tuple of int or None
        Per item (no batch axis); set by :meth:`build`.
    dtype : numpy.dtype or None
        float32 or float64; set by :meth:`build`.
    params, grads : list of ndarray
        Parameters and their gradients, in the order of ``param_names``.
    param_names : tuple of str
    buffers : list of ndarray
        Non-trainable state (e.g. running statistics), in the order of ``buffer_names``: no
        gradient, never touched by the optimizer, but part of ``state_dict``, ``get_weights``,
        saved files and checkpoints. A layer creates them in ``_create_params`` (with
        :meth:`add_buffer`) and updates them in place in ``forward(x, training=True)``; the
        ``training`` argument is how a layer knows whether it trains or evaluates.
    buffer_names : tuple of str
    need_input_grad : bool
        When False, ``backward`` skips ``dC/d input`` and returns None (the model sets it to
        False for layers that have no trainable layer before them).
    """

    param_names = ()
    buffer_names = ()

    def __init__(self):
        self.built = False
        self.input_shape = None
        self.output_shape = None
        self.dtype = None
        self.params = []
        self.grads = []
        self.buffers = []
        self.need_input_grad = True
        self._rng = None

    # -- building -------------------------------------------------------------------------

    def build(self, input_shape, rng=None, dtype=np.float32):
        """Create the parameters for items of shape ``input_shape``.

        Parameters
        ----------
        input_shape : tuple of int
            Shape of one item, without the batch axis.
        rng : numpy.random.Generator, optional
            Source of all the layer's randomness (initial weights, dropout masks). A model
            passes its own, seeded generator; default: a fresh unseeded one.
        dtype : {float32, float64}

        Returns
        -------
        tuple of int
            The per-item output shape.
        """
        input_shape = _shape(input_shape)
        dtype = np.dtype(dtype)
        if dtype not in _FLOATS:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        if rng is None:
            rng = np.random.default_rng()
        elif not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        output_shape = self.compute_output_shape(input_shape)
        self.input_shape, self.output_shape, self.dtype, self._rng = input_shape, output_shape, dtype, rng
        self.params, self.grads, self.buffers = [], [], []
        self.buffer_names = type(self).buffer_names
        self._create_params(rng)
        self.built = True
        return output_shape

    def _create_params(self, rng):
        pass

    def compute_output_shape(self, input_shape):
        """Per-item output shape for per-item ``input_shape`` (ValueError if it does not fit)."""
        raise NotImplementedError

    def param_shapes(self, input_shape):
        """``[(name, shape), ...]`` of the parameters :meth:`build` would create for
        ``input_shape``, without creating them."""
        return []

    def buffer_shapes(self, input_shape):
        """``[(name, shape), ...]`` of the buffers :meth:`build` would create for
        ``input_shape``, without creating them (a loader checks a file against these)."""
        return []

    def add_buffer(self, name, value):
        """Create the buffer ``name`` (in ``_create_params``) from ``value``, as a C-contiguous
        array of the layer's dtype; returns it. Buffers are updated in place afterwards."""
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"buffer name must be a Python identifier, got {name!r}")
        if name in self.buffer_names[:len(self.buffers)] or name in self.param_names:
            raise ValueError(f"{type(self).__name__} already has a parameter or buffer {name!r}")
        buffer = np.array(value, dtype=self.dtype, order="C", copy=True)
        if len(self.buffers) < len(self.buffer_names):
            if self.buffer_names[len(self.buffers)] != name:
                raise ValueError(f"{type(self).__name__}.add_buffer({name!r}): buffers must be "
                                 f"added in the order of buffer_names {self.buffer_names}")
        else:
            self.buffer_names = tuple(self.buffer_names) + (name,)
        self.buffers.append(buffer)
        return buffer

    def count_params(self):
        """Number of scalar parameters (0 before :meth:`build` for layers that have any)."""
        return int(sum(p.size for p in self.params))

    def _check_input(self, x):
        """Validate a forward input (building the layer from it on first use)."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{type(self).__name__} input x must be a numpy.ndarray, got {type(x).__name__}")
        if not self.built:
            if x.ndim < 2:
                raise ValueError(f"{type(self).__name__} input x must be a batch (N, ...), got shape {x.shape}")
            self.build(x.shape[1:], dtype=x.dtype if x.dtype in _FLOATS else np.float32)
        if x.dtype != self.dtype:
            raise TypeError(f"{type(self).__name__} input x must have dtype {self.dtype} (the layer's), "
                            f"got {x.dtype}")
        if x.shape[1:] != self.input_shape or x.ndim != len(self.input_shape) + 1:
            raise ValueError(f"{type(self).__name__} input x must have shape (N, "
                             f"{', '.join(map(str, self.input_shape))}), got {x.shape}")

    def _check_grad(self, grad, n):
        want = (n,) + self.output_shape
        if not isinstance(grad, np.ndarray) or grad.shape != want:
            got = grad.shape if isinstance(grad, np.ndarray) else type(grad).__name__
            raise ValueError(f"{type(self).__name__}.backward: grad must have the output's shape {want}, got {got}")
        if grad.dtype != self.dtype:
            raise TypeError(f"{type(self).__name__}.backward: grad must have dtype {self.dtype}, got {grad.dtype}")

    # -- computing ------------------------------------------------------------------------

    def forward(self, x, training=False):
        """``(N, *input_shape)`` -> ``(N, *output_shape)``; with ``training`` keep what
        :meth:`backward` needs."""
        raise NotImplementedError

    def backward(self, grad):
        """``dC/d output`` -> ``dC/d input`` (None if ``need_input_grad`` is False); fills ``grads``."""
        raise NotImplementedError

    def __call__(self, x, training=False):
        return self.forward(x, training)

    def _cached(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called without a forward(x, training=True) "
                               f"before it")
        return self._cache

    # -- config ---------------------------------------------------------------------------

    def get_config(self):
        """The constructor's arguments as a JSON-able dict."""
        return {}

    @classmethod
    def from_config(cls, config):
        """A new, unbuilt layer from :meth:`get_config` output."""
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        return _registry.construct(cls, config, f"config {config!r}")

    def __repr__(self):
        config = self.get_config()
        parts = []
        for name, p in inspect.signature(type(self)).parameters.items():
            if name not in config:
                continue
            value = config[name]
            if p.default is inspect.Parameter.empty:
                parts.append(repr(value))
            elif value != p.default:
                parts.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


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

    def _kernel_backward(self, grad, x, activation, y):
        """``(dx | None, dw, db)``; ``activation``/``y`` as in the functional backward."""
        raise NotImplementedError

    def _set_weight_options(self, use_bias, kernel_initializer):
        """Validate and store the constructor options both weighted layers share."""
        self.use_bias = _bool(use_bias, "use_bias")
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
        dx, dw, db = self._kernel_backward(grad_z, self._cache[0],
                                           None if relu_output is None else "relu", relu_output)
        np.copyto(self.grads[0], dw)
        if self.use_bias:
            np.copyto(self.grads[1], db)
        return dx


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
        self.units = _positive_int(units, "units")
        self._set_activation(activation)
        self._set_weight_options(use_bias, kernel_initializer)

    def compute_output_shape(self, input_shape):
        input_shape = _shape(input_shape)
        if len(input_shape) != 1:
            raise ValueError(f"Dense expects flat items of shape (features,), got item shape {input_shape}; "
                             f"put a Flatten() layer before it")
        return (self.units,)

    def param_shapes(self, input_shape):
        self.compute_output_shape(input_shape)  # validates
        fan_in = _shape(input_shape)[0]
        return [("weight", (self.units, fan_in))] + ([("bias", (self.units,))] if self.use_bias else [])

    def _weight_shape_and_fans(self):
        fan_in = self.input_shape[0]
        return (self.units, fan_in), fan_in, self.units

    def _kernel(self, x, b, activation):
        return _ops.linear(x, self.params[0], b, activation == "relu")

    def _kernel_backward(self, grad, x, activation, y):
        return _ops.linear_backward(np.ascontiguousarray(grad), x, self.params[0],
                                    self.need_input_grad, y if activation == "relu" else None)

    def get_config(self):
        return {"units": self.units, "activation": _activation_config(self.activation),
                "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer}


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
        self.filters = _positive_int(filters, "filters")
        self.kernel_size = _int_pair(kernel_size, "kernel_size", 1)
        self.stride = _int_pair(stride, "stride", 1)
        self.dilation = _int_pair(dilation, "dilation", 1)
        self.groups = _positive_int(groups, "groups")
        if self.filters % self.groups:
            raise ValueError(f"groups={self.groups} must divide filters={self.filters}")
        self.padding = _padding(padding, "padding", ("valid", "same"))
        self._set_activation(activation)
        if self.activation.name == "softmax":
            raise ValueError("Conv2D activation must not be 'softmax' (softmax normalises flat "
                             "(N, classes) rows); put Flatten() and Dense(classes, "
                             "activation='softmax') after the convolutions")
        self._set_weight_options(use_bias, kernel_initializer)

    def compute_output_shape(self, input_shape):
        input_shape = _shape(input_shape)
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
        shape = (self.filters, _shape(input_shape)[0] // self.groups) + self.kernel_size
        return [("weight", shape)] + ([("bias", (self.filters,))] if self.use_bias else [])

    def _weight_shape_and_fans(self):
        cg = self.input_shape[0] // self.groups
        kh, kw = self.kernel_size
        return (self.filters, cg, kh, kw), cg * kh * kw, self.filters * kh * kw

    def _create_params(self, rng):
        super()._create_params(rng)
        # geometry resolved once: the kernels get ints
        self._pads = F.conv2d_padding(self.padding, self.kernel_size, self.stride,
                                      self.input_shape[1:], self.dilation)
        self._out_hw = tuple(self.output_shape[1:])

    def _kernel(self, x, b, activation):
        return _ops.conv2d(x, self.params[0], b, self.stride, self._pads, self._out_hw,
                           activation == "relu", "auto", self.dilation, self.groups)

    def _kernel_backward(self, grad, x, activation, y):
        return _ops.conv2d_backward(np.ascontiguousarray(grad), x, self.params[0], self.stride,
                                    self._pads, self.need_input_grad,
                                    y if activation == "relu" else None, "auto", self.dilation,
                                    self.groups)

    def get_config(self):
        padding = list(self.padding) if isinstance(self.padding, tuple) else self.padding
        return {"filters": self.filters, "kernel_size": _compact(self.kernel_size),
                "stride": _compact(self.stride), "padding": padding,
                "activation": _activation_config(self.activation), "use_bias": self.use_bias,
                "kernel_initializer": self.kernel_initializer,
                "dilation": _compact(self.dilation), "groups": self.groups}


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
        self.size = _int_pair(size, "size", 1)
        self.stride = None if stride is None else _int_pair(stride, "stride", 1)
        self.padding = _padding(padding, "padding", ("tile", "valid", "same"))
        self._cache = None

    def compute_output_shape(self, input_shape):
        input_shape = _shape(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"MaxPool2D expects image items of shape (C, H, W), got item shape {input_shape}")
        return tuple(int(v) for v in F.maxpool2d_output_shape(
            input_shape, self.size, self.stride, self.padding))

    def _create_params(self, rng):
        stride = self.size if self.stride is None else self.stride
        self._geometry = (self.size, stride,
                          F.maxpool2d_padding(self.padding, self.size, stride, self.input_shape[1:]),
                          tuple(self.output_shape[1:]))

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
        return {"size": _compact(self.size),
                "stride": None if self.stride is None else _compact(self.stride),
                "padding": padding}


MaxPooling2D = MaxPool2D


class Flatten(Layer):
    """``(N, C, H, W)`` (or any item shape) -> ``(N, C*H*W)`` in C order (channels first,
    then rows); backward is the reshape back (seed eq. 18-19)."""

    def __init__(self):
        super().__init__()
        self._cache = None

    def compute_output_shape(self, input_shape):
        return (int(np.prod(_shape(input_shape))),)

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
        input_shape = _shape(input_shape)
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
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise TypeError(f"rate must be a float in [0, 1), got {rate!r} of type {type(rate).__name__}")
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"rate must be a float in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self._cache = None

    def compute_output_shape(self, input_shape):
        return _shape(input_shape)

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
