"""Convolution and max-pooling, forward and backward: the validated door to ``cnn._ext``.

Every function here checks its arguments (ndim, shapes, channel agreement, kernel vs
padded input, stride/size/padding values, dtypes, the range of ``argmax``) before the
compiled kernels, which run without bounds checks, see them. A wrong argument raises
``ValueError`` (a value or shape) or ``TypeError`` (a type or dtype) naming it.

Conventions
-----------
- Tensors are NCHW. Inputs must be float32 or float64 NumPy arrays (or array-likes
  that convert to one), all of one dtype; other dtypes raise ``TypeError`` rather than
  being cast silently. Non-contiguous inputs are copied to C order first.
- Convolution is cross-correlation (no kernel flip), as ``scipy.signal.correlate2d``
  and ``torch.nn.functional.conv2d``. Weights are ``(K, C, kh, kw)``, bias ``(K,)``.
- ``padding``: ``"valid"`` (none), ``"same"`` (total ``k - 1`` per axis, ``floor`` half on
  top/left and the rest on bottom/right: the seed's rule, PyTorch's and Keras'; with a
  stride > 1 the same total is used, so the output is ``ceil``-like, not ``H / stride``),
  an int ``p`` (``p`` on every side), ``(ph, pw)``, or ``(top, bottom, left, right)``.
- ``algorithm`` (conv only): ``"auto"`` picks per call from the shapes alone (never from the
  thread count, so results stay bit-identical across thread counts): Winograd F(2x2, 3x3)
  for 3x3 stride-1 convolutions with at least 16 input and output channels; a direct kernel
  for the forward pass of 3x3 stride-1 convolutions of one input channel (a first layer on
  grey images); im2col + GEMM otherwise. ``"im2col"``, ``"winograd"`` or ``"direct"`` force
  one (``"direct"`` computes the backward by im2col). They round differently: Winograd's
  float32 error is a few ulps above the direct sum's. Its transforms add up to four inputs,
  so near the float32 limit (inputs above ~8.5e37) they would overflow where the direct sum
  does not: Winograd (chosen or forced) is therefore used only when no intermediate can
  overflow (``4 max|x|``, ``4 max|w|`` and ``81 * C * max|x| * max|w|`` below the dtype's
  largest value; for the backward the same with ``dy``), and im2col is used otherwise, also
  for NaN/inf operands. Finite inputs thus give finite-exact results either way; the check
  costs two read-only passes over each operand.
- Max-pool padding: ``"tile"`` (the seed's minimal padding so that windows tile the
  input, split like ``"same"``), ``"valid"``, or the explicit forms above. Padded cells
  never win; ties go to the first cell in row-major order; NaN propagates.
"""
import math
import numbers
import operator

import numpy as np

from cnn import _threads
from cnn._ext import _conv, _dense, _optim, _pool

__all__ = [
    "linear", "linear_backward", "conv2d", "conv2d_backward", "maxpool2d", "maxpool2d_backward",
    "conv2d_output_shape", "maxpool2d_output_shape", "conv2d_padding", "maxpool2d_padding",
    "sgd_update", "adam_update",
]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_ACTIVATIONS = {None: False, "linear": False, "identity": False, "relu": True}
# Sizes, strides and paddings reach the kernels as C ints.
_MAX_INT = 2 ** 31 - 1


def _fused_relu(activation):
    """True for "relu", False for None/"linear"/"identity"; anything else is an error."""
    if activation is not None and not isinstance(activation, str):
        raise TypeError(f"activation must be None or 'relu', got {type(activation).__name__} "
                        f"{activation!r}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be None or 'relu', got {activation!r}")
    return _ACTIVATIONS[activation]


# ----------------------------------------------------------------------------- arguments

def _as_pair(value, name, minimum):
    """An int or a pair of ints -> (a, b), each >= minimum."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        pair = tuple(value)
    else:
        pair = (value, value)
    out = []
    for v in pair:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
        if v > _MAX_INT:
            raise ValueError(f"{name} must be <= {_MAX_INT}, got {value!r}")
        out.append(operator.index(v))
    return tuple(out)


def _explicit_padding(padding, name):
    """int | (ph, pw) | (top, bottom, left, right) -> (top, bottom, left, right)."""
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        values = tuple(padding)
    elif isinstance(padding, (tuple, list)) and len(padding) == 2:
        values = (padding[0], padding[0], padding[1], padding[1])
    elif isinstance(padding, (tuple, list)):
        raise ValueError(f"{name} must be a string, an int, (ph, pw) or (top, bottom, left, right), "
                         f"got a sequence of length {len(padding)}: {padding!r}")
    else:
        values = (padding,) * 4
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must hold ints, got {padding!r}")
        if v < 0:
            raise ValueError(f"{name} must be >= 0, got {padding!r}")
        if v > _MAX_INT:
            raise ValueError(f"{name} must be <= {_MAX_INT}, got {padding!r}")
    return tuple(int(v) for v in values)


def _same_split(total):
    """The seed's split: floor(total / 2) before, the rest after."""
    return total // 2, total - total // 2


def conv2d_padding(padding, kernel_size):
    """Normalise a conv ``padding`` argument to ``(top, bottom, left, right)``.

    Parameters
    ----------
    padding : {"valid", "same"} or int or (ph, pw) or (top, bottom, left, right)
    kernel_size : int or (kh, kw)
    """
    kh, kw = _as_pair(kernel_size, "kernel_size", 1)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0, 0, 0)
        if mode == "same":
            return _same_split(kh - 1) + _same_split(kw - 1)
        raise ValueError(f"padding must be 'valid', 'same', an int or a tuple, got {padding!r}")
    return _explicit_padding(padding, "padding")


def maxpool2d_padding(padding, size, stride, input_hw):
    """Normalise a max-pool ``padding`` argument to ``(top, bottom, left, right)``.

    ``"tile"`` is the smallest padding that makes the windows cover the input exactly
    (the seed's ``(k - H mod k) mod k`` when the stride equals the window), split like
    conv ``"same"``. Every pad must be smaller than the window along its axis, so that
    each window holds at least one real cell.
    """
    kh, kw = _as_pair(size, "size", 1)
    sh, sw = (kh, kw) if stride is None else _as_pair(stride, "stride", 1)
    H, W = input_hw
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            pads = (0, 0, 0, 0)
        elif mode == "tile":
            if sh > kh or sw > kw:
                raise ValueError(
                    f"padding='tile' needs stride <= size (windows that skip cells cannot tile the "
                    f"input), got size={(kh, kw)}, stride={(sh, sw)}; use 'valid' or explicit padding")
            pads = _same_split(_tile_total(H, kh, sh)) + _same_split(_tile_total(W, kw, sw))
        else:
            raise ValueError(f"padding must be 'tile', 'valid', an int or a tuple, got {padding!r}")
    else:
        pads = _explicit_padding(padding, "padding")
    t, b, l, r = pads
    if max(t, b) >= kh or max(l, r) >= kw:
        raise ValueError(f"max-pool padding must be smaller than the window on each side, got "
                         f"padding (top, bottom, left, right)={pads} for size={(kh, kw)}")
    return pads


def _tile_total(n, k, s):
    """Total padding so that windows of size k, stride s, end exactly at the padded edge."""
    if n <= k:
        return k - n
    return (-(n - k)) % s


def _out_size(n, k, s, before, after, what):
    padded = n + before + after
    if padded < k:
        raise ValueError(f"{what} ({k}) is larger than the padded input ({n} + "
                         f"{before} + {after} = {padded}); use a smaller kernel or more padding")
    return (padded - k) // s + 1


def conv2d_output_shape(input_shape, filters, kernel_size, stride=1, padding="valid"):
    """``(K, OH, OW)`` of a conv on ``input_shape = (C, H, W)``."""
    _, H, W = _shape3(input_shape, "input_shape")
    kh, kw = _as_pair(kernel_size, "kernel_size", 1)
    sh, sw = _as_pair(stride, "stride", 1)
    t, b, l, r = conv2d_padding(padding, (kh, kw))
    return (int(filters), _out_size(H, kh, sh, t, b, "conv2d: the kernel height (w.shape[2])"),
            _out_size(W, kw, sw, l, r, "conv2d: the kernel width (w.shape[3])"))


def maxpool2d_output_shape(input_shape, size=2, stride=None, padding="tile"):
    """``(C, OH, OW)`` of a max-pool on ``input_shape = (C, H, W)``."""
    C, H, W = _shape3(input_shape, "input_shape")
    kh, kw = _as_pair(size, "size", 1)
    sh, sw = (kh, kw) if stride is None else _as_pair(stride, "stride", 1)
    t, b, l, r = maxpool2d_padding(padding, (kh, kw), (sh, sw), (H, W))
    return (C, _out_size(H, kh, sh, t, b, "maxpool2d: the window height (size)"),
            _out_size(W, kw, sw, l, r, "maxpool2d: the window width (size)"))


def _shape3(shape, name):
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of 3 ints (C, H, W), got {shape!r}") from None
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"{name} must be 3 positive ints (C, H, W), got {shape!r}")
    return dims


# Below this many multiply-adds per thread, waking a second thread costs more than it saves
# (and on a loaded machine a sleeping OpenMP thread can take milliseconds to answer).
_MIN_WORK_PER_THREAD = 200_000


def _threads_for(work):
    """The knob's thread count, reduced for small jobs."""
    return max(1, min(_threads.get_num_threads(), int(work // _MIN_WORK_PER_THREAD)))


# ------------------------------------------------------------------------------- arrays

def _array(a, name, ndim, layout):
    """A C-contiguous float32/float64 ndarray of the given ndim, or an error naming ``name``."""
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name} must be an array of floats, got {type(a).__name__}: {exc}") from None
    if a.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype} "
                        f"(convert with .astype(np.float32))")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {a.shape}")
    return np.ascontiguousarray(a)


def _same_dtype(dtype, **arrays):
    for name, a in arrays.items():
        if a is not None and a.dtype != dtype:
            raise TypeError(f"{name} has dtype {a.dtype} but the input has dtype {dtype}; "
                            f"all arrays must share one dtype")


def _relu_output(activation, y, expected, dtype, layout, what="the output's"):
    """The forward output a fused-ReLU backward masks with (validated), or None."""
    if not _fused_relu(activation):
        return None
    if y is None:
        raise ValueError("activation='relu' needs y, the forward output, to mask dy")
    y = _array(y, "y", len(expected), layout)
    _same_dtype(dtype, y=y)
    if y.shape != expected:
        raise ValueError(f"y must have {what} shape {expected}, got {y.shape}")
    return y


# ------------------------------------------------------------------------------ linear

def _linear_args(x, w):
    x = _array(x, "x", 2, "(N, in_features)")
    w = _array(w, "w", 2, "(out_features, in_features)")
    _same_dtype(x.dtype, w=w)
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"w has {w.shape[1]} input features (w.shape={w.shape}) but x has "
                         f"{x.shape[1]} (x.shape={x.shape})")
    if w.shape[0] < 1 or w.shape[1] < 1:
        raise ValueError(f"w must have at least one output and one input feature, got w.shape={w.shape}")
    return x, w


def linear(x, w, b=None, activation=None):
    """Fully connected layer: ``y = act(x @ w.T + b)``.

    Parameters
    ----------
    x : ndarray of shape (N, in_features), dtype float32 or float64
    w : ndarray of shape (out_features, in_features), same dtype (the seed's ``w_ij``:
        row i is output neuron i, column j input neuron j)
    b : ndarray of shape (out_features,), same dtype, or None
    activation : None or "relu" (fused into the output pass)

    Returns
    -------
    y : ndarray of shape (N, out_features), dtype of x
        Every element is one whole dot product whatever the thread count, so results do
        not depend on it.
    """
    x, w = _linear_args(x, w)
    if b is not None:
        b = _array(b, "b", 1, "(out_features,)")
        _same_dtype(x.dtype, b=b)
        if b.shape[0] != w.shape[0]:
            raise ValueError(f"b must have shape ({w.shape[0]},) to match w.shape={w.shape}, got {b.shape}")
    relu = _fused_relu(activation)
    y = np.empty((x.shape[0], w.shape[0]), dtype=x.dtype)
    _dense.dense_forward(x, w, b, y, relu, _threads_for(y.size * w.shape[1]))
    return y


def linear_backward(dy, x, w, need_dx=True, activation=None, y=None):
    """Gradients of :func:`linear` w.r.t. input, weight and bias.

    Parameters
    ----------
    dy : ndarray of shape (N, out_features)
        Gradient w.r.t. the output: before the activation when ``activation`` is None,
        else w.r.t. the fused activation's output (then ``y`` is required).
    x : ndarray of shape (N, in_features)
    w : ndarray of shape (out_features, in_features)
    need_dx : bool
    activation : None or "relu"
    y : ndarray of shape (N, out_features), the forward output, with ``activation="relu"``

    Returns
    -------
    dx : ndarray of shape (N, in_features), or None when ``need_dx`` is False
    dw : ndarray of shape (out_features, in_features), summed over the batch
    db : ndarray of shape (out_features,), summed over the batch
    """
    x, w = _linear_args(x, w)
    dy = _array(dy, "dy", 2, "(N, out_features)")
    _same_dtype(x.dtype, dy=dy)
    expected = (x.shape[0], w.shape[0])
    if dy.shape != expected:
        raise ValueError(f"dy must have the output's shape {expected}, got {dy.shape}")
    relu_out = _relu_output(activation, y, expected, x.dtype, "(N, out_features)")
    masked = None if relu_out is None else np.empty_like(dy)
    dx = np.empty_like(x) if need_dx else None
    dw = np.empty_like(w)
    db = np.empty(w.shape[0], dtype=x.dtype)
    _dense.dense_backward(dy, x, w, dx, dw, db, relu_out, masked,
                          _threads_for(2 * dy.size * w.shape[1]))
    return dx, dw, db


# ------------------------------------------------------------------------------ conv2d

# Winograd pays once the 16 GEMMs have enough channels to amortise its transforms: measured
# on the bench shapes (bench/RESULTS.md); below this, or on small planes, im2col is faster.
_WINOGRAD_MIN_CHANNELS = 16
_WINOGRAD_MIN_PLANE = 6
_ALGORITHMS = ("auto", "im2col", "winograd", "direct")


def _conv_algorithm(algorithm, w_shape, stride_pair, pads, out_hw, backward):
    """``algorithm`` resolved for these shapes: "im2col", "winograd" or "direct".

    ``w_shape`` is (K, C, kh, kw); ``pads`` is (top, left); ``out_hw`` the smallest plane the
    products work on. "direct" (one input channel, forward only) runs the backward by im2col.
    """
    if not isinstance(algorithm, str) or algorithm not in _ALGORITHMS:
        raise ValueError(f"algorithm must be one of {_ALGORITHMS}, got {algorithm!r}")
    K, C, kh, kw = w_shape
    three_by_three = (kh, kw) == (3, 3) and tuple(stride_pair) == (1, 1)
    winograd_ok = three_by_three and all(0 <= p <= 2 for p in pads)
    direct_ok = three_by_three and C == 1
    if algorithm == "winograd" and not winograd_ok:
        raise ValueError(
            f"algorithm='winograd' needs a 3x3 kernel, stride 1 and top/left padding of "
            f"at most 2; got kernel {(kh, kw)}, stride {tuple(stride_pair)}, "
            f"top/left padding {tuple(pads)}")
    if algorithm == "direct" and not direct_ok:
        raise ValueError(
            f"algorithm='direct' needs one input channel, a 3x3 kernel and stride 1; got "
            f"{C} channels, kernel {(kh, kw)}, stride {tuple(stride_pair)}")
    if algorithm == "auto":
        if winograd_ok and min(C, K) >= _WINOGRAD_MIN_CHANNELS and min(out_hw) >= _WINOGRAD_MIN_PLANE:
            algorithm = "winograd"
        elif direct_ok:
            algorithm = "direct"
        else:
            algorithm = "im2col"
    if algorithm == "direct" and backward:
        return "im2col"
    return algorithm


def _max_abs(a):
    """``max|a|`` as a Python float in two read-only passes (no temporary array); NaN if ``a``
    holds a NaN."""
    if a.size == 0:
        return 0.0
    return max(float(a.max()), -float(a.min()))


def _winograd_cannot_overflow(a, b, reduction):
    """Whether Winograd F(2x2, 3x3) on operands ``a`` and ``b`` (input/weight, or the two
    factors of a backward product) has no intermediate value that can overflow.

    Its transforms add up to 4 entries of ``a`` and 2.25 times the largest entry of ``b``, and
    each output adds ``reduction`` (channels, or batch x plane) products of transformed tiles
    through a 9-term output transform, so every intermediate is bounded by ``4 max|a|``,
    ``4 max|b|`` and ``81 * reduction * max|a| * max|b|``. When these stay below the dtype's
    largest value, Winograd is as finite as the direct sum; otherwise (or with a NaN/inf
    operand) the caller falls back to im2col. The cost is two read-only passes over each
    operand, small next to the convolution (about 9 multiply-adds per input element and
    output channel).
    """
    big = float(np.finfo(a.dtype).max)
    ma, mb = _max_abs(a), _max_abs(b)
    # written so that NaN fails every test, and products that overflow to inf fail too
    return 4.0 * ma <= big and 4.0 * mb <= big and 81.0 * reduction * ma * mb <= big


def _conv_geometry(x_shape, w_shape, stride, padding):
    N, C, H, W = x_shape
    K, Cw, kh, kw = w_shape
    if Cw != C:
        raise ValueError(f"w has {Cw} input channels (w.shape={w_shape}) but x has {C} "
                         f"(x.shape={x_shape})")
    if K < 1 or C < 1 or kh < 1 or kw < 1:
        raise ValueError(f"w must have at least one filter, one channel and a 1x1 kernel, "
                         f"got w.shape={w_shape}")
    sh, sw = _as_pair(stride, "stride", 1)
    t, b, l, r = conv2d_padding(padding, (kh, kw))
    OH = _out_size(H, kh, sh, t, b, "conv2d: the kernel height (w.shape[2])")
    OW = _out_size(W, kw, sw, l, r, "conv2d: the kernel width (w.shape[3])")
    return sh, sw, t, l, OH, OW


def conv2d(x, w, b=None, stride=1, padding="valid", activation=None, algorithm="auto"):
    """2-D cross-correlation of a batch, with optional bias and fused ReLU.

    ``y[n, k, i, j] = act(b[k] + sum_{c, u, v} xpad[n, c, i*sh + u, j*sw + v] * w[k, c, u, v])``

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), dtype float32 or float64
    w : ndarray of shape (K, C, kh, kw), same dtype
    b : ndarray of shape (K,), same dtype, or None
    stride : int or (sh, sw), >= 1
    padding : {"valid", "same"} or int or (ph, pw) or (top, bottom, left, right)
    activation : None or "relu"
        ``"relu"`` is applied in the kernel's output pass (``max(z, 0)``).
    algorithm : {"auto", "im2col", "winograd", "direct"}
        How the sum is computed (see the module docstring); the result is the same
        convolution up to float rounding.

    Returns
    -------
    y : ndarray of shape (N, K, OH, OW), dtype of x
        ``OH = (H + top + bottom - kh) // sh + 1``, likewise ``OW``.
    """
    x = _array(x, "x", 4, "(N, C, H, W)")
    w = _array(w, "w", 4, "(K, C, kh, kw)")
    _same_dtype(x.dtype, w=w)
    if b is not None:
        b = _array(b, "b", 1, "(K,)")
        _same_dtype(x.dtype, b=b)
        if b.shape[0] != w.shape[0]:
            raise ValueError(f"b must have shape ({w.shape[0]},) to match w.shape={w.shape}, "
                             f"got {b.shape}")
    relu = _fused_relu(activation)
    sh, sw, pt, pl, OH, OW = _conv_geometry(x.shape, w.shape, stride, padding)
    y = np.empty((x.shape[0], w.shape[0], OH, OW), dtype=x.dtype)
    threads = _threads_for(y.size * w[0].size)
    method = _conv_algorithm(algorithm, w.shape, (sh, sw), (pt, pl), (OH, OW), backward=False)
    if method == "winograd" and not _winograd_cannot_overflow(x, w, w.shape[1]):
        method = "im2col"
    if method == "winograd":
        _conv.conv2d_forward_winograd(x, w, b, y, pt, pl, relu, threads)
    elif method == "direct":
        _conv.conv2d_forward_direct_c1(x, w, b, y, pt, pl, relu, threads)
    else:
        _conv.conv2d_forward(x, w, b, y, sh, sw, pt, pl, relu, threads)
    return y


def conv2d_backward(dy, x, w, stride=1, padding="valid", need_dx=True, activation=None, y=None,
                    algorithm="auto"):
    """Gradients of :func:`conv2d` w.r.t. input, weight and bias.

    Parameters
    ----------
    dy : ndarray of shape (N, K, OH, OW)
        Gradient of the loss w.r.t. the conv output: before any activation when
        ``activation`` is None, else w.r.t. the output of the fused activation.
    x : ndarray of shape (N, C, H, W)
        The forward input.
    w : ndarray of shape (K, C, kh, kw)
    stride, padding : as in :func:`conv2d`
    need_dx : bool
        False skips the input gradient (a first layer has no use for it).
    activation : None or "relu"
        The ``activation`` the forward pass fused. With ``"relu"``, ``y`` is required and
        ``dy`` is masked by ``y > 0`` inside the kernel (ReLU'(0) = 0).
    y : ndarray of shape (N, K, OH, OW), optional
        The forward output of ``conv2d(..., activation="relu")``.
    algorithm : {"auto", "im2col", "winograd", "direct"}
        How ``dx``, ``dw`` and ``db`` are computed (one choice for all three; ``"direct"``
        means im2col here); see the module docstring.

    Returns
    -------
    dx : ndarray of shape (N, C, H, W), or None when ``need_dx`` is False
    dw : ndarray of shape (K, C, kh, kw)
        Summed over the batch (fold a 1/N into ``dy`` for the mean), reduced in a
        fixed order: bit-identical for any thread count.
    db : ndarray of shape (K,)
    """
    x = _array(x, "x", 4, "(N, C, H, W)")
    w = _array(w, "w", 4, "(K, C, kh, kw)")
    dy = _array(dy, "dy", 4, "(N, K, OH, OW)")
    _same_dtype(x.dtype, w=w, dy=dy)
    sh, sw, pt, pl, OH, OW = _conv_geometry(x.shape, w.shape, stride, padding)
    expected = (x.shape[0], w.shape[0], OH, OW)
    if dy.shape != expected:
        raise ValueError(f"dy must have the conv output's shape {expected}, got {dy.shape}")
    relu_out = _relu_output(activation, y, expected, x.dtype, "(N, K, OH, OW)",
                            what="the conv output's")
    N, C, H, W = x.shape
    # One choice for the three products, so dx, dw and db come from one algorithm.
    winograd = _conv_algorithm(algorithm, w.shape, (sh, sw), (pt, pl),
                               (min(H, OH), min(W, OW)), backward=True) == "winograd"
    winograd = winograd and _winograd_cannot_overflow(dy, x, N * H * W) \
        and (not need_dx or _winograd_cannot_overflow(dy, w, w.shape[0]))
    dx = np.empty_like(x) if need_dx else None
    dw = np.empty_like(w)
    db = np.empty(w.shape[0], dtype=x.dtype)
    threads = _threads_for(dy.size * w[0].size)
    if winograd:
        _conv.conv2d_weight_grad_winograd(dy, x, relu_out, dw, db, pt, pl, threads)
        if need_dx:
            _conv.conv2d_input_grad_winograd(dy, w, relu_out, dx, pt, pl, threads)
    else:
        _conv.conv2d_backward(dy, x, w, dx, dw, db, relu_out, sh, sw, pt, pl,
                              _threads_for(2 * dy.size * w[0].size))
    return dx, dw, db


# --------------------------------------------------------------------------- maxpool2d

def maxpool2d(x, size=2, stride=None, padding="tile"):
    """Max-pooling over windows of each (H, W) plane.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), dtype float32 or float64
    size : int or (kh, kw), >= 1
    stride : int or (sh, sw), >= 1, or None for ``size`` (the seed's non-overlapping windows)
    padding : {"tile", "valid"} or int or (ph, pw) or (top, bottom, left, right)

    Returns
    -------
    y : ndarray of shape (N, C, OH, OW), dtype of x
    argmax : ndarray of shape (N, C, OH, OW), dtype intp
        Flat index ``ih * W + iw`` of each window's maximum in its unpadded input plane
        (the first one in row-major order on ties).
    """
    x = _array(x, "x", 4, "(N, C, H, W)")
    kh, kw = _as_pair(size, "size", 1)
    sh, sw = (kh, kw) if stride is None else _as_pair(stride, "stride", 1)
    N, C, H, W = x.shape
    if H == 0 or W == 0:
        raise ValueError(f"x must have non-empty (H, W) planes to pool, got x.shape={x.shape}")
    t, b, l, r = maxpool2d_padding(padding, (kh, kw), (sh, sw), (H, W))
    OH = _out_size(H, kh, sh, t, b, "maxpool2d: the window height (size)")
    OW = _out_size(W, kw, sw, l, r, "maxpool2d: the window width (size)")
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    argmax = np.empty((N, C, OH, OW), dtype=np.intp)
    _pool.maxpool2d_forward(x, y, argmax, kh, kw, sh, sw, t, l, _threads_for(y.size * kh * kw))
    return y, argmax


def maxpool2d_backward(dy, argmax, x_shape):
    """Route each output gradient to the input cell that won its window.

    Parameters
    ----------
    dy : ndarray of shape (N, C, OH, OW), dtype float32 or float64
    argmax : integer ndarray of shape (N, C, OH, OW), values in ``[0, H * W)``
        As returned by :func:`maxpool2d`.
    x_shape : tuple (N, C, H, W)
        The forward input's shape.

    Returns
    -------
    dx : ndarray of shape x_shape, dtype of dy
        ``dx[n, c].flat[argmax[n, c, i, j]] += dy[n, c, i, j]``, zero elsewhere.
    """
    dy = _array(dy, "dy", 4, "(N, C, OH, OW)")
    argmax = np.asarray(argmax)
    if argmax.dtype.kind not in "iu":
        raise TypeError(f"argmax must be an integer array, got dtype {argmax.dtype}")
    if argmax.shape != dy.shape:
        raise ValueError(f"argmax must have dy's shape {dy.shape}, got {argmax.shape}")
    try:
        x_shape = tuple(operator.index(d) for d in x_shape)
    except TypeError:
        raise TypeError(f"x_shape must be a tuple of 4 ints (N, C, H, W), got {x_shape!r}") from None
    if len(x_shape) != 4 or min(x_shape) < 0:
        raise ValueError(f"x_shape must be 4 non-negative ints (N, C, H, W), got {x_shape!r}")
    if x_shape[:2] != dy.shape[:2]:
        raise ValueError(f"x_shape {x_shape} and dy.shape {dy.shape} disagree on (N, C)")
    plane = x_shape[2] * x_shape[3]
    original = argmax
    if argmax.dtype.itemsize > np.dtype(np.intp).itemsize:
        # (32-bit platforms) a cast to intp could wrap a bad value into range: check first
        if argmax.size and (int(argmax.max()) >= plane or int(argmax.min()) < 0):
            _bad_argmax(original, plane, x_shape)
    argmax = np.ascontiguousarray(argmax, dtype=np.intp)
    dx = np.empty(x_shape, dtype=dy.dtype)
    # the kernel checks every index as it scatters (no separate scan) and counts bad ones
    if _pool.maxpool2d_backward(dy, argmax, dx, _threads_for(dx.size)):
        _bad_argmax(original, plane, x_shape)
    return dx


def _bad_argmax(argmax, plane, x_shape):
    raise ValueError(f"argmax values must lie in [0, H*W) = [0, {plane}) for x_shape "
                     f"{x_shape}, got values in [{int(argmax.min())}, {int(argmax.max())}]")


# --------------------------------------------------------------------------- optimizers

# Elementwise updates are memory-bound: a second thread only pays on large parameters.
_MIN_UPDATE_PER_THREAD = 32_768


def _update_args(p, g, **buffers):
    """Validate an in-place update's parameter, gradient and buffers; return g, C-contiguous."""
    for name, a in (("p", p),) + tuple(buffers.items()):
        if a is None and name != "p":
            continue
        if not isinstance(a, np.ndarray) or a.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be a float32 or float64 ndarray, got "
                            f"{a.dtype if isinstance(a, np.ndarray) else type(a).__name__}")
        if not a.flags.c_contiguous or not a.flags.writeable:
            raise ValueError(f"{name} must be C-contiguous and writeable (it is updated in place)")
    g = _array(g, "g", p.ndim, f"{p.shape}")
    for name, a in (("g", g),) + tuple(buffers.items()):
        if a is not None and a.shape != p.shape:
            raise ValueError(f"{name} must have the shape of p {p.shape}, got {a.shape}")
        if a is not None:
            _same_dtype(p.dtype, **{name: a})
    return g


def _update_threads(p):
    """Threads for an elementwise update of p: one per _MIN_UPDATE_PER_THREAD elements."""
    return max(1, min(_threads.get_num_threads(), p.size // _MIN_UPDATE_PER_THREAD))


def sgd_update(p, g, v=None, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
    """One ``torch.optim.SGD`` step (``dampening=0``), in place, in one pass over ``p``.

    ``d = g + weight_decay * p``; with a momentum buffer ``v``: ``v = momentum * v + d`` and
    ``d = d + momentum * v`` (Nesterov) or ``d = v``; then ``p = p - lr * d``. Each product and
    sum is rounded as in the same NumPy expressions, and the result does not depend on the
    thread count.

    Parameters
    ----------
    p : C-contiguous writeable ndarray, float32 or float64: the parameter (updated in place)
    g : ndarray of p's shape and dtype: its gradient
    v : C-contiguous writeable ndarray of p's shape and dtype, or None: the momentum buffer
        (updated in place); None only with ``momentum=0`` (plain SGD)
    lr, momentum, weight_decay : float
    nesterov : bool (needs ``v``)
    """
    g = _update_args(p, g, v=v)
    if v is None and (nesterov or momentum != 0):
        raise ValueError(f"momentum={momentum!r}, nesterov={nesterov!r} need a momentum buffer v")
    _sgd_update_checked(p, g, v, lr, momentum, nesterov, weight_decay)


def _sgd_update_checked(p, g, v, lr, momentum, nesterov, weight_decay):
    """:func:`sgd_update` on arguments already checked (by it, or by ``Optimizer.step`` once a
    step): p and v C-contiguous, g of p's shape and dtype."""
    _optim.sgd_update(p.reshape(-1), g.reshape(-1), None if v is None else v.reshape(-1),
                      float(lr), float(momentum), bool(nesterov), float(weight_decay),
                      _update_threads(p))


def adam_update(p, g, m, v, step, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    """One Adam step (bias-corrected, L2 ``weight_decay`` in the gradient), in place, one pass.

    ``d = g + weight_decay * p``, ``m = beta1 * m + (1 - beta1) * d``,
    ``v = beta2 * v + (1 - beta2) * d^2``,
    ``p = p - lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)``; each
    product, sum, square root and quotient is rounded as in the same NumPy expressions (the
    scalar factors computed in double precision), and the result does not depend on the thread
    count.

    Parameters
    ----------
    p : C-contiguous writeable ndarray, float32 or float64: the parameter (updated in place)
    g : ndarray of p's shape and dtype: its gradient
    m, v : C-contiguous writeable ndarrays of p's shape and dtype: the moment buffers (updated)
    step : int >= 1, the step count t (1 on the first step)
    lr, beta1, beta2, eps, weight_decay : float
    """
    g = _update_args(p, g, m=m, v=v)
    if m is None or v is None:
        raise ValueError("adam_update needs both moment buffers m and v")
    step = operator.index(step)
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    _adam_update_checked(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay)


def _adam_update_checked(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """:func:`adam_update` on arguments already checked (by it, or by ``Optimizer.step``)."""
    b1, b2 = float(beta1), float(beta2)
    _optim.adam_update(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                       b1, 1.0 - b1, b2, 1.0 - b2, math.sqrt(1.0 - b2 ** step), float(eps),
                       float(lr) / (1.0 - b1 ** step), float(weight_decay), _update_threads(p))
