"""Activation functions ``a = g(z)`` and their backward passes.

Every activation has ``forward(z) -> a`` and ``backward(z, a, grad_a) -> grad_z``, where
``grad_a = dC/da`` and ``grad_z = dC/dz``. Element-wise activations use
``grad_z = grad_a * g'(z)``. Softmax is the seed's "multidimensional" activation: each output
depends on every input of its row, so its backward pass is the Jacobian-vector product of
eq. (4), ``ds_i/dz_k = s_i (delta_ik - s_k)``:

    grad_z_k = sum_i grad_a_i s_i (delta_ik - s_k) = s_k (grad_a_k - sum_i grad_a_i s_i)

Arrays are float32 or float64 of any shape (softmax: ``(N, classes)``, normalised over axis 1);
outputs are new arrays of the same shape and dtype as ``z``. All work is vectorised NumPy (ReLU
forward and backward: one threaded kernel pass each through :mod:`cnn._ops`): no Python loop
over items.
"""


import numpy as np

from . import _ops, _registry
from . import _validation as V
from ._configurable import Configurable

__all__ = ["Activation", "Identity", "Sigmoid", "ReLU", "LeakyReLU", "Tanh", "Softmax",
           "softmax", "get"]


def _check_z(z, name="z"):
    if not isinstance(z, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of float32 or float64, "
                        f"got {type(z).__name__}")
    if z.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must have dtype float32 or float64, got {z.dtype}")
    return z


def _check_same_shape(arr, name, z):
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(arr).__name__}")
    if arr.shape != z.shape:
        raise ValueError(f"{name} must have the shape of z {z.shape}, got {arr.shape}")
    return arr


def softmax(z):
    """Row-wise softmax of ``z`` (shape ``(N, classes)``), stable for any finite logits.

    ``s_i = exp(z_i - max_j z_j) / sum_k exp(z_k - max_j z_j)``: subtracting the row maximum
    leaves the value unchanged and keeps every exponent <= 0, so nothing overflows.

    Parameters
    ----------
    z : ndarray of shape (N, classes), dtype float32 or float64

    Returns
    -------
    ndarray of shape (N, classes), same dtype: rows are >= 0 and sum to 1.
    """
    _check_z(z)
    if z.ndim != 2:
        raise ValueError(f"z must be 2-D (N, classes) for softmax, got shape {z.shape}")
    return _ops.softmax_rows(np.ascontiguousarray(z))


class Activation(Configurable):
    """Base class.

    Attributes
    ----------
    name : str
        The identifier :func:`get` accepts.

    Methods
    -------
    forward(z) -> a
    backward(z, a, grad_a) -> grad_z
        ``a`` is ``forward(z)`` (may be None: it is then recomputed when needed).
    get_config() -> dict
    """

    name = "activation"

    def forward(self, z):
        raise NotImplementedError

    def backward(self, z, a, grad_a):
        raise NotImplementedError

    def __call__(self, z):
        return self.forward(z)

    def _args(self, z, a, grad_a):
        _check_z(z)
        _check_same_shape(grad_a, "grad_a", z)
        if a is None:
            a = self.forward(z)
        else:
            _check_same_shape(a, "a", z)
        return a



class Identity(Activation):
    """``a = z``; ``grad_z = grad_a`` (a copy)."""

    name = "identity"

    def forward(self, z):
        return _check_z(z).copy()

    def backward(self, z, a, grad_a):
        _check_z(z)
        _check_same_shape(grad_a, "grad_a", z)
        return grad_a.astype(z.dtype, copy=True)


class Sigmoid(Activation):
    """``a = 1 / (1 + exp(-z))``; ``g'(z) = a (1 - a)``.

    Evaluated as ``1 / (1 + e)`` for ``z >= 0`` and ``e / (1 + e)`` for ``z < 0`` with
    ``e = exp(-|z|) <= 1``: no overflow for any ``z`` (at ``z = -1e4``, ``e`` underflows
    quietly to 0 and ``a = 0``).
    """

    name = "sigmoid"

    def forward(self, z):
        _check_z(z)
        e = np.exp(-np.abs(z))
        return np.where(z >= 0, 1.0, e).astype(z.dtype, copy=False) / (1.0 + e)

    def backward(self, z, a, grad_a):
        a = self._args(z, a, grad_a)
        return (grad_a * (a * (1.0 - a))).astype(z.dtype, copy=False)


class Tanh(Activation):
    """``a = tanh(z)``; ``g'(z) = 1 - a^2``."""

    name = "tanh"

    def forward(self, z):
        return np.tanh(_check_z(z))

    def backward(self, z, a, grad_a):
        a = self._args(z, a, grad_a)
        return (grad_a * (1.0 - a * a)).astype(z.dtype, copy=False)


class ReLU(Activation):
    """``a = max(z, 0)``; ``g'(z) = 1`` for ``z > 0`` and 0 for ``z <= 0`` (0 at exactly 0).

    The backward pass only tests ``z > 0``, which is also ``a > 0``: passing the output for
    ``z`` (as a layer with a fused ReLU may) gives the same gradient.
    """

    name = "relu"

    def forward(self, z):
        _check_z(z)
        if z.flags.c_contiguous:
            # the bits of np.maximum(z, 0) (-0.0 -> +0.0, NaN kept), on the knob's threads
            return _ops.relu(z)
        return np.maximum(z, 0)

    def backward(self, z, a, grad_a):
        _check_z(z)
        _check_same_shape(grad_a, "grad_a", z)
        if grad_a.dtype == z.dtype and grad_a.flags.c_contiguous and z.flags.c_contiguous:
            # the same selection as below in one branch-free pass (np.where branches on
            # every element, a coin toss on real data: about 10x slower, measured)
            return _ops.relu_backward(grad_a, z)
        return np.where(z > 0, grad_a, 0).astype(z.dtype, copy=False)


class LeakyReLU(Activation):
    """``a = z`` for ``z > 0``, ``alpha * z`` otherwise; ``g'(z) = 1`` or ``alpha`` (``alpha`` at 0).

    Parameters
    ----------
    alpha : float in [0, 1), default 0.01
        Slope for ``z <= 0``. Since ``alpha >= 0``, ``a > 0`` exactly when ``z > 0``.
    """

    name = "leaky_relu"

    def __init__(self, alpha=0.01):
        self.alpha = V.real(alpha, "alpha", low=0.0, high=1.0, high_open=True)

    def forward(self, z):
        _check_z(z)
        return np.where(z > 0, z, self.alpha * z)

    def backward(self, z, a, grad_a):
        _check_z(z)
        _check_same_shape(grad_a, "grad_a", z)
        return np.where(z > 0, grad_a, self.alpha * grad_a).astype(z.dtype, copy=False)

    def get_config(self):
        return {"name": self.name, "alpha": self.alpha}


class Softmax(Activation):
    """Row-wise softmax over axis 1 of ``z`` of shape ``(N, classes)``; see :func:`softmax`.

    Backward is the Jacobian-vector product of eq. (4) (never the diagonal alone):
    ``grad_z = s * (grad_a - sum(grad_a * s, axis=1, keepdims=True))``.
    With cross-entropy after it, :meth:`cnn.losses.CrossEntropy.backward_from_logits` gives
    the same ``grad_z`` in one fused, cheaper step.
    """

    name = "softmax"

    def forward(self, z):
        return softmax(z)

    def backward(self, z, a, grad_a):
        if _check_z(z).ndim != 2:
            raise ValueError(f"z must be 2-D (N, classes) for softmax, got shape {z.shape}")
        s = self._args(z, a, grad_a)
        return (s * (grad_a - np.sum(grad_a * s, axis=1, keepdims=True))).astype(z.dtype, copy=False)


for _cls, _names in ((Identity, ("identity", "linear")), (Sigmoid, ("sigmoid",)), (ReLU, ("relu",)),
                     (LeakyReLU, ("leaky_relu",)), (Tanh, ("tanh",)), (Softmax, ("softmax",))):
    _registry.ACTIVATIONS.add(_cls, *_names)


def get(identifier):
    """Return an :class:`Activation` for ``identifier``.

    Parameters
    ----------
    identifier : None, str, dict or Activation
        None (identity); a registered name: ``"identity"``/``"linear"``, ``"sigmoid"``,
        ``"relu"``, ``"leaky_relu"``, ``"tanh"``, ``"softmax"`` or a ``cnn.register``'ed one; a
        ``get_config()`` dict; or an instance (returned as is).
    """
    if identifier is None:
        return Identity()
    return _registry.ACTIVATIONS.get(identifier, Activation, "activation",
                                     "None, a name, a config dict or an Activation")
