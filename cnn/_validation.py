"""One rule per kind of argument, one message format, for every public door.

Functional, layers, models, the trainer, optimizers, schedules, losses, activations and
callbacks all check their arguments here, so the same argument gets the same rule and the same
message everywhere: ``"<name> must be <what is wanted>, got <what was given>"``, a TypeError
for a wrong type and a ValueError for a wrong value. Booleans are never integers or reals
(``lr=True`` is a bug, not 1.0). Sizes, strides and paddings reach the kernels as C ints, so
they are bounded by ``MAX_INT``.
"""

import math
import numbers
import os

import numpy as np

__all__ = ["MAX_INT", "is_int", "integer", "real", "boolean", "int_pair", "padding",
           "explicit_padding", "item_shape", "image_shape", "float_array", "same_dtype", "float_dtype", "path", "short_repr"]

MAX_INT = 2 ** 31 - 1
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def short_repr(value, limit=200):
    """``repr(value)``, cut to ``limit`` characters (an error message quotes untrusted input)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _type_name(value):
    return type(value).__name__


def is_int(value):
    """True for Python and NumPy integers, False for bools."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def integer(value, name, low=None, *, optional=False):
    """``value`` as an int >= ``low`` (None allowed with ``optional``).

    Messages: ``"<name> must be an int >= <low>, got <value>"`` (``"None or an int ..."`` when
    optional); TypeError for a non-integer, ValueError for one out of range.
    """
    if type(value) is int and (low is None or value >= low):  # the common case, first
        return value
    if value is None and optional:
        return None
    wanted = ("None or " if optional else "") + "an int" + ("" if low is None else f" >= {low}")
    if not is_int(value):
        raise TypeError(f"{name} must be {wanted}, got {short_repr(value)} of type {_type_name(value)}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be {wanted}, got {value}")
    return value


def real(value, name, *, low=None, high=None, low_open=False, high_open=False):
    """``value`` as a finite float in the interval given (bounds included unless ``*_open``).

    Message: ``"<name> must be a finite number in [low, high), got <value>"``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {short_repr(value)} of type "
                        f"{_type_name(value)}")
    value = float(value)
    lo = "-inf" if low is None else repr(float(low))
    hi = "inf" if high is None else repr(float(high))
    wanted = (f"{'(' if low_open or low is None else '['}{lo}, "
              f"{hi}{')' if high_open or high is None else ']'}")
    ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ValueError(f"{name} must be a finite number in {wanted}, got {value!r}")
    return value


def boolean(value, name):
    """``value`` as a bool (Python or NumPy bool only)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {short_repr(value)} of type {_type_name(value)}")
    return bool(value)


def int_pair(value, name, minimum):
    """An int or a pair of ints, each in [minimum, MAX_INT] -> ``(a, b)``."""
    if is_int(value):
        pair = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(is_int(v) for v in value):
        pair = tuple(value)
    elif isinstance(value, (tuple, list)) and len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {short_repr(value)} "
                         f"(a sequence of length {len(value)})")
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {short_repr(value)}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {short_repr(value)}")
    if max(pair) > MAX_INT:
        raise ValueError(f"{name} must be <= {MAX_INT}, got {short_repr(value)}")
    return int(pair[0]), int(pair[1])


def _padding_words(strings):
    return f"one of {list(strings)}, an int, (ph, pw) or (top, bottom, left, right)"


def padding(value, name, strings):
    """A padding mode from ``strings`` (any case; returned lower-case), an int >= 0, or a
    tuple of 2 or 4 ints >= 0 (returned as a tuple). Amounts are bounded by MAX_INT."""
    if isinstance(value, str):
        if value.lower() not in strings:
            raise ValueError(f"{name} must be {_padding_words(strings)}, got {short_repr(value)}")
        return value.lower()
    if is_int(value):
        amounts = (value,)
    elif isinstance(value, (tuple, list)) and len(value) in (2, 4):
        amounts = tuple(value)
        if not all(is_int(v) for v in amounts):
            raise TypeError(f"{name} must hold ints, got {short_repr(value)}")
    elif isinstance(value, (tuple, list)):
        raise ValueError(f"{name} must be {_padding_words(strings)}, got a sequence of length "
                         f"{len(value)}: {short_repr(value)}")
    else:
        raise TypeError(f"{name} must be {_padding_words(strings)}, got {short_repr(value)}")
    if min(amounts) < 0:
        raise ValueError(f"{name} must be >= 0, got {short_repr(value)}")
    if max(amounts) > MAX_INT:
        raise ValueError(f"{name} must be <= {MAX_INT}, got {short_repr(value)}")
    return int(value) if is_int(value) else tuple(int(v) for v in amounts)


def explicit_padding(value):
    """A validated explicit padding (int, (ph, pw) or 4-tuple) -> (top, bottom, left, right)."""
    if isinstance(value, tuple) and len(value) == 4:
        return value
    if isinstance(value, tuple):
        return (value[0], value[0], value[1], value[1])
    return (value,) * 4


def item_shape(value, name="input_shape"):
    """A per-item shape (no batch axis): a non-empty tuple of positive ints."""
    if not isinstance(value, (tuple, list)) or not all(is_int(v) for v in value):
        raise TypeError(f"{name} must be a tuple of ints (per item, without the batch axis), "
                        f"got {short_repr(value)}")
    if len(value) == 0 or min(value) < 1:
        raise ValueError(f"{name} must be a non-empty tuple of positive ints, got "
                         f"{short_repr(tuple(value))}")
    return tuple(int(v) for v in value)


def image_shape(value, name="input_shape"):
    """``(C, H, W)``: three positive ints."""
    if not isinstance(value, (tuple, list)) or not all(is_int(d) for d in value):
        raise TypeError(f"{name} must be a tuple of 3 ints (C, H, W), got {short_repr(value)}")
    if len(value) != 3 or min(value) < 1:
        raise ValueError(f"{name} must be 3 positive ints (C, H, W), got {short_repr(value)}")
    return tuple(int(d) for d in value)


def float_array(a, name, ndim, layout):
    """A C-contiguous float32/float64 ndarray of the given ndim, or an error naming ``name``."""
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name} must be an array of floats, got {type(a).__name__}: {exc}") from None
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype} "
                        f"(convert with .astype(np.float32))")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {a.shape}")
    return np.ascontiguousarray(a)


def same_dtype(dtype, **arrays):
    for name, a in arrays.items():
        if a is not None and a.dtype != dtype:
            raise TypeError(f"{name} has dtype {a.dtype} but the input has dtype {dtype}; "
                            f"all arrays must share one dtype")


def float_dtype(value, name="dtype"):
    """``value`` as numpy.dtype float32 or float64."""
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise TypeError(f"{name} must be float32 or float64, got {short_repr(value)}") from None
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dtype}")
    return dtype


def path(value, name="path"):
    """A filesystem path as str: str, bytes (decoded as the OS does) or os.PathLike."""
    try:
        return os.fsdecode(os.fspath(value))
    except TypeError:
        raise TypeError(f"{name} must be a str, bytes or os.PathLike, got {_type_name(value)}") from None
