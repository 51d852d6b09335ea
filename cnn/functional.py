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
- ``padding``: ``"valid"`` (none), ``"same"`` (TensorFlow/Keras' rule for every stride:
  ``ceil(H / s)`` outputs, total padding ``max((ceil(H / s) - 1) * s + k - H, 0)`` per axis,
  the smaller half on top/left and the rest on bottom/right, as ONNX ``SAME_UPPER``; for
  stride 1 that is ``k - 1``, the seed's rule; a dilated kernel counts as ``(k - 1) * d + 1``;
  see :func:`same_padding`), an int ``p`` (``p`` on every side), ``(ph, pw)``, or
  ``(top, bottom, left, right)``.
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
  input, split floor half first), ``"same"`` (TF/Keras', as for conv), ``"valid"``, or the
  explicit forms above. Padded cells
  never win; ties go to the first cell in row-major order; NaN propagates.
"""
import operator

import numpy as np

from cnn import _ops
from cnn import _validation as V

__all__ = [
    "linear", "linear_backward", "conv2d", "conv2d_backward", "maxpool2d", "maxpool2d_backward",
    "avgpool2d", "avgpool2d_backward", "global_avgpool2d", "global_avgpool2d_backward",
    "batch_norm", "batch_norm_backward",
    "conv2d_output_shape", "maxpool2d_output_shape", "avgpool2d_output_shape",
    "conv2d_padding", "maxpool2d_padding", "same_padding", "sgd_update", "adam_update",
]

_ACTIVATIONS = {None: False, "linear": False, "identity": False, "relu": True}


def _fused_relu(activation):
    """True for "relu", False for None/"linear"/"identity"; anything else is an error."""
    if activation is not None and not isinstance(activation, str):
        raise TypeError(f"activation must be None or 'relu', got {type(activation).__name__} "
                        f"{activation!r}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be None or 'relu', got {activation!r}")
    return _ACTIVATIONS[activation]


# ----------------------------------------------------------------------------- arguments

def _same_split(total):
    """The seed's split: floor(total / 2) before, the rest after."""
    return total // 2, total - total // 2


def same_padding(n, k, s=1):
    """TensorFlow/Keras "same" padding of one axis: ``(before, after)``.

    The output has ``ceil(n / s)`` positions; the total padding is the least that lets the
    last window fit, ``max((ceil(n / s) - 1) * s + k - n, 0)``, split with the smaller half
    before (top/left), as TF, Keras and ONNX ``SAME_UPPER``. For ``s = 1`` that is ``k - 1``
    whatever ``n`` (the seed's rule). ``k`` is the effective kernel extent (a dilated kernel
    spans ``(k - 1) * d + 1`` cells). Example: ``n = 4, k = 3, s = 2`` pads ``(0, 1)``.
    """
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return _same_split(total)


def conv2d_padding(padding, kernel_size, stride=1, input_hw=None, dilation=1):
    """Normalise a conv ``padding`` argument to ``(top, bottom, left, right)``.

    Parameters
    ----------
    padding : {"valid", "same"} or int or (ph, pw) or (top, bottom, left, right)
        ``"same"`` follows TensorFlow/Keras for every stride (see :func:`same_padding`).
    kernel_size : int or (kh, kw)
    stride : int or (sh, sw), default 1
    input_hw : (H, W), optional
        Needed only for ``"same"`` with a stride > 1 (the padding then depends on the size).
    dilation : int or (dh, dw), default 1
    """
    kh, kw = V.int_pair(kernel_size, "kernel_size", 1)
    sh, sw = V.int_pair(stride, "stride", 1)
    dh, dw = V.int_pair(dilation, "dilation", 1)
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if isinstance(padding, str):
        mode = V.padding(padding, "padding", ("valid", "same"))
        if mode == "valid":
            return (0, 0, 0, 0)
        if mode == "same":
            if input_hw is None:
                if sh > 1 or sw > 1:
                    raise ValueError("padding='same' with a stride > 1 depends on the input size: "
                                     "pass input_hw=(H, W)")
                input_hw = (1, 1)
            H, W = input_hw
            return same_padding(H, eh, sh) + same_padding(W, ew, sw)
    return V.explicit_padding(V.padding(padding, "padding", ("valid", "same")))


def maxpool2d_padding(padding, size, stride, input_hw):
    """Normalise a max-pool ``padding`` argument to ``(top, bottom, left, right)``.

    ``"tile"`` is the smallest padding that makes the windows cover the input exactly
    (the seed's ``(k - H mod k) mod k`` when the stride equals the window), split like
    conv ``"same"``; ``"same"`` is TensorFlow/Keras' (:func:`same_padding`: ``ceil(H / s)``
    outputs, the smaller half of the padding on top/left). Every pad must be smaller than
    the window along its axis, so that each window holds at least one real cell.
    """
    kh, kw = V.int_pair(size, "size", 1)
    sh, sw = (kh, kw) if stride is None else V.int_pair(stride, "stride", 1)
    H, W = input_hw
    if isinstance(padding, str):
        mode = V.padding(padding, "padding", ("tile", "valid", "same"))
        if mode == "valid":
            pads = (0, 0, 0, 0)
        elif mode == "tile":
            if sh > kh or sw > kw:
                raise ValueError(
                    f"padding='tile' needs stride <= size (windows that skip cells cannot tile the "
                    f"input), got size={(kh, kw)}, stride={(sh, sw)}; use 'valid' or explicit padding")
            pads = _same_split(_tile_total(H, kh, sh)) + _same_split(_tile_total(W, kw, sw))
        elif mode == "same":
            pads = same_padding(H, kh, sh) + same_padding(W, kw, sw)
    else:
        pads = V.explicit_padding(V.padding(padding, "padding", ("tile", "valid", "same")))
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


def conv2d_output_shape(input_shape, filters, kernel_size, stride=1, padding="valid",
                        dilation=1):
    """``(K, OH, OW)`` of a conv on ``input_shape = (C, H, W)``."""
    _, H, W = V.image_shape(input_shape, "input_shape")
    kh, kw = V.int_pair(kernel_size, "kernel_size", 1)
    sh, sw = V.int_pair(stride, "stride", 1)
    dh, dw = V.int_pair(dilation, "dilation", 1)
    t, b, l, r = conv2d_padding(padding, (kh, kw), (sh, sw), (H, W), (dh, dw))
    return (int(filters),
            _out_size(H, (kh - 1) * dh + 1, sh, t, b, "conv2d: the (dilated) kernel height"),
            _out_size(W, (kw - 1) * dw + 1, sw, l, r, "conv2d: the (dilated) kernel width"))


def maxpool2d_output_shape(input_shape, size=2, stride=None, padding="tile"):
    """``(C, OH, OW)`` of a max-pool on ``input_shape = (C, H, W)``."""
    C, H, W = V.image_shape(input_shape, "input_shape")
    kh, kw = V.int_pair(size, "size", 1)
    sh, sw = (kh, kw) if stride is None else V.int_pair(stride, "stride", 1)
    t, b, l, r = maxpool2d_padding(padding, (kh, kw), (sh, sw), (H, W))
    return (C, _out_size(H, kh, sh, t, b, "maxpool2d: the window height (size)"),
            _out_size(W, kw, sw, l, r, "maxpool2d: the window width (size)"))


# ------------------------------------------------------------------------------- arrays

def _relu_output(activation, y, expected, dtype, layout, what="the output's"):
    """The forward output a fused-ReLU backward masks with (validated), or None."""
    if not _fused_relu(activation):
        return None
    if y is None:
        raise ValueError("activation='relu' needs y, the forward output, to mask dy")
    y = V.float_array(y, "y", len(expected), layout)
    V.same_dtype(dtype, y=y)
    if y.shape != expected:
        raise ValueError(f"y must have {what} shape {expected}, got {y.shape}")
    return y


# ------------------------------------------------------------------------------ linear

def _linear_args(x, w):
    x = V.float_array(x, "x", 2, "(N, in_features)")
    w = V.float_array(w, "w", 2, "(out_features, in_features)")
    V.same_dtype(x.dtype, w=w)
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
        b = V.float_array(b, "b", 1, "(out_features,)")
        V.same_dtype(x.dtype, b=b)
        if b.shape[0] != w.shape[0]:
            raise ValueError(f"b must have shape ({w.shape[0]},) to match w.shape={w.shape}, got {b.shape}")
    return _ops.linear(x, w, b, _fused_relu(activation))


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
    dy = V.float_array(dy, "dy", 2, "(N, out_features)")
    V.same_dtype(x.dtype, dy=dy)
    expected = (x.shape[0], w.shape[0])
    if dy.shape != expected:
        raise ValueError(f"dy must have the output's shape {expected}, got {dy.shape}")
    relu_out = _relu_output(activation, y, expected, x.dtype, "(N, out_features)")
    return _ops.linear_backward(dy, x, w, bool(need_dx), relu_out)


# ------------------------------------------------------------------------------ conv2d

def _conv_geometry(x_shape, w_shape, stride, padding, dilation=1, groups=1):
    N, C, H, W = x_shape
    K, Cw, kh, kw = w_shape
    groups = V.integer(groups, "groups", 1)
    if C % groups or K % groups:
        raise ValueError(f"groups={groups} must divide both the input channels (x.shape[1]={C}) "
                         f"and the filters (w.shape[0]={K})")
    if Cw * groups != C:
        raise ValueError(f"w has {Cw} input channels per group (w.shape={w_shape}) but x has "
                         f"{C} channels in {groups} group(s), {C // groups} each "
                         f"(x.shape={x_shape}); w must be (K, C/groups, kh, kw)")
    if K < 1 or C < 1 or kh < 1 or kw < 1:
        raise ValueError(f"w must have at least one filter, one channel and a 1x1 kernel, "
                         f"got w.shape={w_shape}")
    sh, sw = V.int_pair(stride, "stride", 1)
    dh, dw = V.int_pair(dilation, "dilation", 1)
    pads = conv2d_padding(padding, (kh, kw), (sh, sw), (H, W), (dh, dw))
    t, b, l, r = pads
    OH = _out_size(H, (kh - 1) * dh + 1, sh, t, b, "conv2d: the (dilated) kernel height")
    OW = _out_size(W, (kw - 1) * dw + 1, sw, l, r, "conv2d: the (dilated) kernel width")
    return (sh, sw), pads, (OH, OW), (dh, dw), groups


def conv2d(x, w, b=None, stride=1, padding="valid", activation=None, algorithm="auto",
           dilation=1, groups=1):
    """2-D cross-correlation of a batch, with optional bias and fused ReLU.

    ``y[n, k, i, j] = act(b[k] + sum_{c, u, v} xpad[n, g*Cg + c, i*sh + u*dh, j*sw + v*dw]
    * w[k, c, u, v])`` with ``Cg = C / groups`` and ``g = k // (K / groups)`` the group of
    filter k (PyTorch's grouped convolution; ``groups = C`` is depthwise).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), dtype float32 or float64
    w : ndarray of shape (K, C / groups, kh, kw), same dtype
    b : ndarray of shape (K,), same dtype, or None
    stride : int or (sh, sw), >= 1
    padding : {"valid", "same"} or int or (ph, pw) or (top, bottom, left, right)
    activation : None or "relu"
        ``"relu"`` is applied in the kernel's output pass (``max(z, 0)``).
    algorithm : {"auto", "im2col", "winograd", "direct"}
        How the sum is computed (see the module docstring); the result is the same
        convolution up to float rounding. Winograd and direct need dilation 1, groups 1.
    dilation : int or (dh, dw), >= 1
        Spacing of the kernel taps (a 3x3 kernel with dilation 2 spans 5x5 cells).
    groups : int >= 1 dividing C and K
        Channels and filters split into ``groups`` independent convolutions.

    Returns
    -------
    y : ndarray of shape (N, K, OH, OW), dtype of x
        ``OH = (H + top + bottom - ((kh - 1) * dh + 1)) // sh + 1``, likewise ``OW``.

    Examples
    --------
    Cross-correlation (no kernel flip), as ``scipy.signal.correlate2d``:

    >>> import numpy as np
    >>> from scipy.signal import correlate2d
    >>> from cnn import functional as F
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)   # (N, C, H, W)
    >>> w = np.ones((1, 1, 3, 3), dtype=np.float32)               # (K, C, kh, kw)
    >>> F.conv2d(x, w)                                            # "valid": 4 - 3 + 1 = 2
    array([[[[45., 54.],
             [81., 90.]]]], dtype=float32)
    >>> bool(np.array_equal(F.conv2d(x, w)[0, 0], correlate2d(x[0, 0], w[0, 0], mode="valid")))
    True
    >>> F.conv2d(x, w, padding="same").shape, F.conv2d(x, w, stride=2, padding="same").shape
    ((1, 1, 4, 4), (1, 1, 2, 2))
    """
    x = V.float_array(x, "x", 4, "(N, C, H, W)")
    w = V.float_array(w, "w", 4, "(K, C, kh, kw)")
    V.same_dtype(x.dtype, w=w)
    if b is not None:
        b = V.float_array(b, "b", 1, "(K,)")
        V.same_dtype(x.dtype, b=b)
        if b.shape[0] != w.shape[0]:
            raise ValueError(f"b must have shape ({w.shape[0]},) to match w.shape={w.shape}, "
                             f"got {b.shape}")
    relu = _fused_relu(activation)
    stride, pads, out_hw, dilation, groups = _conv_geometry(x.shape, w.shape, stride, padding,
                                                            dilation, groups)
    return _ops.conv2d(x, w, b, stride, pads, out_hw, relu, algorithm, dilation, groups)


def conv2d_backward(dy, x, w, stride=1, padding="valid", need_dx=True, activation=None, y=None,
                    algorithm="auto", dilation=1, groups=1):
    """Gradients of :func:`conv2d` w.r.t. input, weight and bias.

    Parameters
    ----------
    dy : ndarray of shape (N, K, OH, OW)
        Gradient of the loss w.r.t. the conv output: before any activation when
        ``activation`` is None, else w.r.t. the output of the fused activation.
    x : ndarray of shape (N, C, H, W)
        The forward input.
    w : ndarray of shape (K, C / groups, kh, kw)
    stride, padding, dilation, groups : as in :func:`conv2d`
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
    dw : ndarray of shape (K, C / groups, kh, kw)
        Summed over the batch (fold a 1/N into ``dy`` for the mean), reduced in a
        fixed order: bit-identical for any thread count.
    db : ndarray of shape (K,)

    Examples
    --------
    The weight gradient of a one-channel "valid" convolution is the correlation of the input
    with ``dy`` (eq. 12 of the seed); with ``dy = 1`` it sums each tap's input window:

    >>> import numpy as np
    >>> from scipy.signal import correlate2d
    >>> from cnn import functional as F
    >>> x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 3, 3))
    >>> dy = np.ones((1, 1, 2, 2))                                # shape of F.conv2d(x, w)
    >>> dx, dw, db = F.conv2d_backward(dy, x, w)
    >>> dw[0, 0]
    array([[10., 14., 18.],
           [26., 30., 34.],
           [42., 46., 50.]])
    >>> bool(np.allclose(dw[0, 0], correlate2d(x[0, 0], dy[0, 0], mode="valid"))), db
    (True, array([4.]))
    """
    x = V.float_array(x, "x", 4, "(N, C, H, W)")
    w = V.float_array(w, "w", 4, "(K, C, kh, kw)")
    dy = V.float_array(dy, "dy", 4, "(N, K, OH, OW)")
    V.same_dtype(x.dtype, w=w, dy=dy)
    stride, pads, out_hw, dilation, groups = _conv_geometry(x.shape, w.shape, stride, padding,
                                                            dilation, groups)
    expected = (x.shape[0], w.shape[0]) + out_hw
    if dy.shape != expected:
        raise ValueError(f"dy must have the conv output's shape {expected}, got {dy.shape}")
    relu_out = _relu_output(activation, y, expected, x.dtype, "(N, K, OH, OW)",
                            what="the conv output's")
    return _ops.conv2d_backward(dy, x, w, stride, pads, bool(need_dx), relu_out, algorithm,
                                dilation, groups)


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

    Examples
    --------
    ``argmax`` holds flat indices into each input plane, which the backward scatters through:

    >>> import numpy as np
    >>> from cnn import functional as F
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> y, argmax = F.maxpool2d(x, size=2)
    >>> y
    array([[[[ 5.,  7.],
             [13., 15.]]]], dtype=float32)
    >>> argmax
    array([[[[ 5,  7],
             [13, 15]]]])
    >>> F.maxpool2d_backward(np.ones_like(y), argmax, x.shape)[0, 0]
    array([[0., 0., 0., 0.],
           [0., 1., 0., 1.],
           [0., 0., 0., 0.],
           [0., 1., 0., 1.]], dtype=float32)
    """
    x = V.float_array(x, "x", 4, "(N, C, H, W)")
    kh, kw = V.int_pair(size, "size", 1)
    sh, sw = (kh, kw) if stride is None else V.int_pair(stride, "stride", 1)
    N, C, H, W = x.shape
    if H == 0 or W == 0:
        raise ValueError(f"x must have non-empty (H, W) planes to pool, got x.shape={x.shape}")
    t, b, l, r = maxpool2d_padding(padding, (kh, kw), (sh, sw), (H, W))
    OH = _out_size(H, kh, sh, t, b, "maxpool2d: the window height (size)")
    OW = _out_size(W, kw, sw, l, r, "maxpool2d: the window width (size)")
    return _ops.maxpool2d(x, (kh, kw), (sh, sw), (t, b, l, r), (OH, OW))


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
    dy = V.float_array(dy, "dy", 4, "(N, C, OH, OW)")
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
    # the kernel checks every index as it scatters (no separate scan) and counts bad ones
    dx, bad = _ops.maxpool2d_backward(dy, argmax, x_shape)
    if bad:
        _bad_argmax(original, plane, x_shape)
    return dx


def _bad_argmax(argmax, plane, x_shape):
    raise ValueError(f"argmax values must lie in [0, H*W) = [0, {plane}) for x_shape "
                     f"{x_shape}, got values in [{int(argmax.min())}, {int(argmax.max())}]")


# --------------------------------------------------------------------------- average pools

def avgpool2d_output_shape(input_shape, size=2, stride=None, padding="valid"):
    """``(C, OH, OW)`` of an average pool on ``input_shape = (C, H, W)``."""
    return maxpool2d_output_shape(input_shape, size, stride, padding)


def _avgpool_geometry(x, size, stride, padding):
    kh, kw = V.int_pair(size, "size", 1)
    sh, sw = (kh, kw) if stride is None else V.int_pair(stride, "stride", 1)
    H, W = x.shape[2:]
    if H == 0 or W == 0:
        raise ValueError(f"x must have non-empty (H, W) planes to pool, got x.shape={x.shape}")
    pads = maxpool2d_padding(padding, (kh, kw), (sh, sw), (H, W))
    out = (_out_size(H, kh, sh, pads[0], pads[1], "avgpool2d: the window height (size)"),
           _out_size(W, kw, sw, pads[2], pads[3], "avgpool2d: the window width (size)"))
    return (kh, kw), (sh, sw), pads, out


def avgpool2d(x, size=2, stride=None, padding="valid"):
    """Average pooling: the mean of each window's *real* cells (padded cells are not counted,
    as Keras/TF "same", ONNX ``count_include_pad=0``, torch ``count_include_pad=False``).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), dtype float32 or float64
    size : int or (kh, kw); stride : int or (sh, sw), or None for ``size``
    padding : {"valid", "same", "tile"} or int or (ph, pw) or (top, bottom, left, right)
        As for :func:`maxpool2d`; every pad must be smaller than the window.

    Returns
    -------
    y : ndarray of shape (N, C, OH, OW), dtype of x (summed in float64)
    """
    x = V.float_array(x, "x", 4, "(N, C, H, W)")
    return _ops.avgpool2d(x, *_avgpool_geometry(x, size, stride, padding))


def avgpool2d_backward(dy, x_shape, size=2, stride=None, padding="valid"):
    """``dx`` of :func:`avgpool2d`: each window's real cells receive ``dy / (their count)``.

    dy : ndarray of shape (N, C, OH, OW); x_shape : (N, C, H, W), the forward input's shape.
    Returns dx : ndarray of shape x_shape, dtype of dy.
    """
    dy = V.float_array(dy, "dy", 4, "(N, C, OH, OW)")
    x_shape = _shape4(x_shape)
    size, stride, pads, out = _avgpool_geometry(np.empty(x_shape, dtype=np.uint8), size, stride,
                                                padding)
    if dy.shape != x_shape[:2] + out:
        raise ValueError(f"dy must have the pool output's shape {x_shape[:2] + out}, got {dy.shape}")
    return _ops.avgpool2d_backward(dy, x_shape, size, stride, pads)


def global_avgpool2d(x):
    """The mean of every (H, W) plane: x (N, C, H, W) -> y (N, C), summed in float64."""
    x = V.float_array(x, "x", 4, "(N, C, H, W)")
    if x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"x must have non-empty (H, W) planes to pool, got x.shape={x.shape}")
    return _ops.global_avgpool2d(x)


def global_avgpool2d_backward(dy, x_shape):
    """``dx[n, c, i, j] = dy[n, c] / (H * W)``: dy (N, C) -> dx of shape x_shape (N, C, H, W)."""
    dy = V.float_array(dy, "dy", 2, "(N, C)")
    x_shape = _shape4(x_shape)
    if dy.shape != x_shape[:2] or x_shape[2] * x_shape[3] == 0:
        raise ValueError(f"dy must have shape (N, C) = {x_shape[:2]} and x_shape non-empty "
                         f"planes, got dy.shape={dy.shape}, x_shape={x_shape}")
    return _ops.global_avgpool2d_backward(dy, x_shape)


def _shape4(x_shape):
    try:
        x_shape = tuple(operator.index(d) for d in x_shape)
    except TypeError:
        raise TypeError(f"x_shape must be a tuple of 4 ints (N, C, H, W), got {x_shape!r}") from None
    if len(x_shape) != 4 or min(x_shape) < 0:
        raise ValueError(f"x_shape must be 4 non-negative ints (N, C, H, W), got {x_shape!r}")
    return x_shape


# --------------------------------------------------------------------------- batch norm

def _bn_args(x, gamma, beta, eps):
    x = np.asarray(x) if not isinstance(x, np.ndarray) else x
    if x.ndim not in (2, 4):
        raise ValueError(f"x must be 2-D (N, F) or 4-D (N, C, H, W), got shape {x.shape}")
    x = V.float_array(x, "x", x.ndim, "(N, C, ...)")
    C = x.shape[1]
    out = []
    for name, a in (("gamma", gamma), ("beta", beta)):
        if a is not None:
            a = V.float_array(a, name, 1, f"({C},)")
            V.same_dtype(x.dtype, **{name: a})
            if a.shape != (C,):
                raise ValueError(f"{name} must have shape ({C},) (one per channel), got {a.shape}")
        out.append(a)
    V.real(eps, "eps", low=0.0, low_open=True)
    return x, out[0], out[1]


def batch_norm(x, gamma=None, beta=None, eps=1e-5, running_mean=None, running_var=None):
    """Batch normalisation per channel (axis 1 of (N, C, H, W), or per feature of (N, F)).

    Without running statistics (training): ``mean`` and the *biased* variance
    ``var = mean((x - mean)^2)`` over the N*H*W values of each channel (two-pass, float64),
    ``y = gamma * (x - mean) / sqrt(var + eps) + beta``; it needs more than one value per
    channel (PyTorch's rule: one value gives var = 0, y = beta, and no gradient). With
    ``running_mean`` and ``running_var`` (evaluation), those replace the batch statistics.
    gamma = None means 1, beta = None means 0.

    Returns
    -------
    y : ndarray of x's shape and dtype
    mean, var : float64 ndarrays of shape (C,): the batch statistics (training) or None
    """
    x, gamma, beta = _bn_args(x, gamma, beta, eps)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var go together (both or neither)")
    if running_mean is None:
        if x.shape[0] * (x[0, 0].size if x.ndim == 4 else 1) < 2:
            raise ValueError(f"batch_norm in training needs more than 1 value per channel, got "
                             f"x.shape={x.shape}")
        return _ops.batch_norm_train(x, gamma, beta, eps)
    stats = []
    for name, a in (("running_mean", running_mean), ("running_var", running_var)):
        a = np.asarray(a, dtype=np.float64)
        if a.shape != (x.shape[1],):
            raise ValueError(f"{name} must have shape ({x.shape[1]},), got {a.shape}")
        stats.append(a)
    scale = (1.0 if gamma is None else gamma.astype(np.float64)) / np.sqrt(stats[1] + eps)
    shift = (0.0 if beta is None else beta.astype(np.float64)) - stats[0] * scale
    scale = np.ascontiguousarray(np.broadcast_to(scale, (x.shape[1],)), dtype=np.float64)
    return _ops.batch_norm_eval(x, scale, np.ascontiguousarray(shift, dtype=np.float64)), None, None


def batch_norm_backward(dy, x, mean, var, gamma=None, eps=1e-5, need_dx=True):
    """Gradients of training-mode :func:`batch_norm` (through the batch statistics).

    With ``xhat = (x - mean) / sqrt(var + eps)``: ``dbeta = sum(dy)``, ``dgamma =
    sum(dy * xhat)`` (sums over N*H*W, float64, fixed order), and ``dx = gamma / sqrt(var +
    eps) * (dy - dbeta / M - xhat * dgamma / M)`` with M = N*H*W.

    Parameters
    ----------
    dy, x : ndarrays of one shape, (N, F) or (N, C, H, W)
    mean, var : (C,) float64, as returned by :func:`batch_norm`
    gamma : (C,) or None; eps : as in the forward

    Returns
    -------
    dx (x's shape, or None), dgamma (C,), dbeta (C,): dtype of x
    """
    x, gamma, _ = _bn_args(x, gamma, None, eps)
    dy = V.float_array(dy, "dy", x.ndim, "like x")
    V.same_dtype(x.dtype, dy=dy)
    if dy.shape != x.shape:
        raise ValueError(f"dy must have x's shape {x.shape}, got {dy.shape}")
    stats = [np.ascontiguousarray(a, dtype=np.float64) for a in (mean, var)]
    if any(a.shape != (x.shape[1],) for a in stats):
        raise ValueError(f"mean and var must have shape ({x.shape[1]},)")
    return _ops.batch_norm_train_backward(dy, x, gamma, stats[0], stats[1], eps, bool(need_dx),
                                          True, True)


# --------------------------------------------------------------------------- optimizers

def _update_args(p, g, **buffers):
    """Validate an in-place update's parameter, gradient and buffers; return g, C-contiguous."""
    for name, a in (("p", p),) + tuple(buffers.items()):
        if a is None and name != "p":
            continue
        if not isinstance(a, np.ndarray) or a.dtype not in V.FLOAT_DTYPES:
            raise TypeError(f"{name} must be a float32 or float64 ndarray, got "
                            f"{a.dtype if isinstance(a, np.ndarray) else type(a).__name__}")
        if not a.flags.c_contiguous or not a.flags.writeable:
            raise ValueError(f"{name} must be C-contiguous and writeable (it is updated in place)")
    g = V.float_array(g, "g", p.ndim, f"{p.shape}")
    for name, a in (("g", g),) + tuple(buffers.items()):
        if a is not None and a.shape != p.shape:
            raise ValueError(f"{name} must have the shape of p {p.shape}, got {a.shape}")
        if a is not None:
            V.same_dtype(p.dtype, **{name: a})
    return g


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
    _ops.sgd_update(p, g, v, lr, momentum, nesterov, weight_decay)


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
    step = V.integer(step, "step", 1)
    _ops.adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay)
