"""Weight initializers: ``f(shape, fan_in, fan_out, rng, dtype=np.float32) -> ndarray``.

Fans: Dense ``(out, in)`` has ``fan_in = in``, ``fan_out = out``; Conv2D ``(K, C, kh, kw)`` has
``fan_in = C*kh*kw``, ``fan_out = K*kh*kw``. Draws come from ``rng`` (a
``numpy.random.Generator``) in float64 and are then cast, so one seed gives the same numbers
(up to rounding) in float32 and float64.

==================  ===============================================  ============================
``glorot_uniform``  U(-l, l), ``l = sqrt(6 / (fan_in + fan_out))``   Var = 2 / (fan_in + fan_out)
``glorot_normal``   N(0, s^2), ``s = sqrt(2 / (fan_in + fan_out))``  Var = 2 / (fan_in + fan_out)
``he_uniform``      U(-l, l), ``l = sqrt(6 / fan_in)``               Var = 2 / fan_in
``he_normal``       N(0, s^2), ``s = sqrt(2 / fan_in)``              Var = 2 / fan_in
``lecun_uniform``   U(-l, l), ``l = sqrt(3 / fan_in)``               Var = 1 / fan_in
``zeros``           0 (``rng`` unused, may be None)
==================  ===============================================  ============================

The normal ones are plain (not truncated) normals. Defaults (:func:`default_for`): He for
ReLU-like activations, Glorot otherwise, zeros for biases.
"""

import math
import numbers

import numpy as np

from . import _registry

__all__ = ["glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform",
           "zeros", "get", "default_for"]


def _check(shape, fan_in, fan_out, rng, dtype, need_rng=True):
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise ValueError(f"shape must be a tuple of non-negative ints, got {shape!r}")
    for name, fan in (("fan_in", fan_in), ("fan_out", fan_out)):
        if isinstance(fan, bool) or not isinstance(fan, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {fan!r} of type {type(fan).__name__}")
        if fan < 1:
            raise ValueError(f"{name} must be >= 1, got {fan}")
    if need_rng and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return tuple(int(s) for s in shape), dtype


def _uniform(limit, shape, rng, dtype):
    return rng.uniform(-limit, limit, size=shape).astype(dtype, copy=False)


def _normal(std, shape, rng, dtype):
    return (std * rng.standard_normal(size=shape)).astype(dtype, copy=False)


def glorot_uniform(shape, fan_in, fan_out, rng, dtype=np.float32):
    """U(-l, l) with ``l = sqrt(6 / (fan_in + fan_out))`` (Glorot & Bengio, 2010).

    Returns ndarray of ``shape``, dtype ``dtype`` (float32 or float64).
    """
    shape, dtype = _check(shape, fan_in, fan_out, rng, dtype)
    return _uniform(math.sqrt(6.0 / (fan_in + fan_out)), shape, rng, dtype)


def glorot_normal(shape, fan_in, fan_out, rng, dtype=np.float32):
    """N(0, s^2) with ``s = sqrt(2 / (fan_in + fan_out))``."""
    shape, dtype = _check(shape, fan_in, fan_out, rng, dtype)
    return _normal(math.sqrt(2.0 / (fan_in + fan_out)), shape, rng, dtype)


def he_uniform(shape, fan_in, fan_out, rng, dtype=np.float32):
    """U(-l, l) with ``l = sqrt(6 / fan_in)`` (He et al., 2015): variance 2 / fan_in."""
    shape, dtype = _check(shape, fan_in, fan_out, rng, dtype)
    return _uniform(math.sqrt(6.0 / fan_in), shape, rng, dtype)


def he_normal(shape, fan_in, fan_out, rng, dtype=np.float32):
    """N(0, s^2) with ``s = sqrt(2 / fan_in)`` (He et al., 2015)."""
    shape, dtype = _check(shape, fan_in, fan_out, rng, dtype)
    return _normal(math.sqrt(2.0 / fan_in), shape, rng, dtype)


def lecun_uniform(shape, fan_in, fan_out, rng, dtype=np.float32):
    """U(-l, l) with ``l = sqrt(3 / fan_in)``: variance 1 / fan_in."""
    shape, dtype = _check(shape, fan_in, fan_out, rng, dtype)
    return _uniform(math.sqrt(3.0 / fan_in), shape, rng, dtype)


def zeros(shape, fan_in=1, fan_out=1, rng=None, dtype=np.float32):
    """All zeros (biases). ``rng`` is not used."""
    shape, dtype = _check(shape, fan_in, fan_out, rng, dtype, need_rng=False)
    return np.zeros(shape, dtype=dtype)


for _fn in (glorot_uniform, glorot_normal, he_uniform, he_normal, lecun_uniform, zeros):
    _registry.INITIALIZERS.add(_fn, _fn.__name__)


def get(identifier):
    """Return the initializer function registered as ``identifier`` (or ``identifier`` if
    callable)."""
    if callable(identifier):
        return identifier
    if isinstance(identifier, str):
        return _registry.INITIALIZERS.lookup(identifier, "initializer")
    raise TypeError(f"initializer must be a name or a callable, got {identifier!r} "
                    f"of type {type(identifier).__name__}")


def default_for(activation):
    """Name of the default kernel initializer for an activation name (or None).

    ``"he_normal"`` for ``"relu"``/``"leaky_relu"`` (keeps the variance of ReLU layers'
    outputs), ``"glorot_uniform"`` otherwise. Biases default to ``"zeros"``.
    """
    name = activation if isinstance(activation, str) or activation is None \
        else getattr(activation, "name", None)
    return "he_normal" if name in ("relu", "leaky_relu") else "glorot_uniform"
