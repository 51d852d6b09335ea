"""``Layer``: the base class of every layer (parameters, gradients, buffers, config).

Kept apart from :mod:`cnn.layers` so that modules of more layers (:mod:`cnn.merging`, ...)
build on it and :mod:`cnn.layers` re-exports them all without an import cycle. See
:mod:`cnn.layers` for the conventions every layer follows.
"""

import inspect

import numpy as np

from . import _registry
from . import _validation as V
from . import graph as _graph

__all__ = ["Layer", "compact_pair"]


def compact_pair(pair):
    """``(a, a)`` -> ``a`` for configs and reprs; other pairs -> list (JSON has no tuples)."""
    return pair[0] if pair[0] == pair[1] else list(pair)


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
    #: True for layers that take a list of inputs (Add, Concatenate)
    takes_multiple_inputs = False

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
        input_shape = V.item_shape(input_shape)
        dtype = V.float_dtype(dtype)
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
            self.build(x.shape[1:], dtype=x.dtype if x.dtype in V.FLOAT_DTYPES else np.float32)
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
        """``forward(x, training)`` on arrays; on symbolic tensors (``cnn.Input`` and what
        layers return from them) it records the call in a layer graph for :class:`cnn.Model`
        and returns the output's symbolic tensor."""
        if isinstance(x, _graph.SymbolicTensor) or (
                isinstance(x, (list, tuple)) and x and isinstance(x[0], _graph.SymbolicTensor)):
            return _graph.symbolic_call(self, x)
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
