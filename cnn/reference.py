"""Plain NumPy convolution and max-pooling, written straight from the seed's equations.

This module is the baseline the benchmark compares against and a second oracle for the
tests; it is never the product. Clarity comes before speed: every kernel loops explicitly
over the kernel (or window) offsets, exactly as the sums in the seed are written, and lets
NumPy vectorise only over the batch, the channels and the output positions. That is fast
enough for MNIST-sized layers such as ``x`` of shape ``(64, 32, 28, 28)``.

Conventions (the same as :mod:`cnn.functional`):

* tensors are NCHW; ``x`` has shape ``(N, C, H, W)``, conv weights ``w`` ``(K, C, kh, kw)``,
  the bias ``b`` ``(K,)``;
* float32 and float64 are accepted, all arrays of one call share one dtype, and the results
  keep it;
* the convolution is a cross-correlation (no kernel flip), as ``scipy.signal.correlate2d``;
* bad input raises :class:`TypeError` (dtype or type problems) or :class:`ValueError` (shape or
  value problems) with a message that names the argument, what it got and what was wanted.

Equations (seed, section III, 1-based there, 0-based here). With ``xp`` the zero-padded input
and stride ``s``:

* forward (eq. 8):  ``y[n, k, a, b] = b[k] + sum_{c, i, j} xp[n, c, s*a + i, s*b + j] * w[k, c, i, j]``
* input gradient (eq. 10): ``dxp[n, c, s*a + i, s*b + j] += dy[n, k, a, b] * w[k, c, i, j]``,
  then the padding is cropped away;
* filter gradient (eq. 13): ``dw[k, c, i, j] = sum_{n, a, b} dy[n, k, a, b] * xp[n, c, s*a + i, s*b + j]``,
  ``db[k] = sum_{n, a, b} dy[n, k, a, b]``;
* max-pool (eq. 16-17): each output is the max of its window, the gradient goes to that one
  cell (the first in row-major window order on ties); padded cells count as ``-inf``.

The activation (ReLU in the seed's example) is not part of these kernels: eq. 11-12 multiply
the gradients above by the activation's derivative, which the caller applies to ``dy``.
"""

import numbers

import numpy as np

__all__ = [
    "pad_amounts",
    "pool_pad_amounts",
    "conv2d",
    "conv2d_backward",
    "maxpool2d",
    "maxpool2d_backward",
]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# --------------------------------------------------------------------------- validation


def _is_int(v):
    """True for Python and NumPy integers, False for bools (``True`` is not a size)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _pair(value, name, minimum):
    """Normalise an int or a pair of ints to ``(rows, cols)``, each ``>= minimum``."""
    if _is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(
            f"{name} must be an int or a pair of ints (rows, cols); got {value!r} "
            f"of type {type(value).__name__}"
        )
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value!r}")
    return pair


def _explicit_padding(padding, name):
    """``int``, ``(ph, pw)`` or ``(top, bottom, left, right)`` -> ``(top, bottom, left, right)``."""
    if _is_int(padding):
        pads = (int(padding),) * 4
    elif isinstance(padding, (tuple, list)) and all(_is_int(p) for p in padding):
        if len(padding) == 2:
            ph, pw = (int(p) for p in padding)
            pads = (ph, ph, pw, pw)
        elif len(padding) == 4:
            pads = tuple(int(p) for p in padding)
        else:
            raise ValueError(
                f"{name} as a tuple must have 2 entries (ph, pw) or 4 entries "
                f"(top, bottom, left, right); got {len(padding)} entries: {padding!r}"
            )
    else:
        raise TypeError(
            f"{name} must be a string, an int, (ph, pw) or (top, bottom, left, right); "
            f"got {padding!r} of type {type(padding).__name__}"
        )
    if min(pads) < 0:
        raise ValueError(f"{name} must be >= 0 on every side; got {padding!r}")
    return pads


def _split(total):
    """Split ``total`` padding as the seed does: floor half first (top/left), the rest last."""
    first = total // 2
    return first, total - first


def pad_amounts(padding, kernel_size, stride=1, input_hw=(1, 1)):
    """Normalise a convolution padding to ``(top, bottom, left, right)``.

    Parameters
    ----------
    padding : {"valid", "same"} or int or tuple of 2 or 4 ints
        Strings are case-insensitive. ``"valid"``: none. ``"same"``: TensorFlow/Keras' rule:
        the output has ``ceil(H / s)`` rows, and the total padding is the least that lets
        the last window fit, ``max((ceil(H / s) - 1) * s + kh - H, 0)``, of which the
        smaller half goes on the top and the rest on the bottom (likewise the columns). For
        stride 1 that is ``k - 1`` whatever ``H``, the seed's eq. 7. An int ``p`` pads ``p``
        on every side, ``(ph, pw)`` pads ``ph`` on top and bottom and ``pw`` left and right,
        and ``(top, bottom, left, right)`` is taken as it is. All amounts must be ``>= 0``.
    kernel_size : int or tuple of 2 ints
        ``(kh, kw)``, each ``>= 1``.
    stride : int or tuple of 2 ints, default 1
    input_hw : tuple of 2 ints
        ``(H, W)``: only "same" with a stride > 1 depends on it.

    Returns
    -------
    tuple of 4 ints
        ``(top, bottom, left, right)``.
    """
    kh, kw = _pair(kernel_size, "kernel_size", 1)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0, 0, 0)
        if mode == "same":
            sh, sw = _pair(stride, "stride", 1)
            totals = [max((-(-n // s) - 1) * s + k - n, 0)
                      for n, k, s in zip(input_hw, (kh, kw), (sh, sw))]
            return _split(totals[0]) + _split(totals[1])
        raise ValueError(
            f"padding must be 'valid', 'same', an int, (ph, pw) or (top, bottom, left, right); "
            f"got the string {padding!r}"
        )
    return _explicit_padding(padding, "padding")


def pool_pad_amounts(padding, size, input_hw, stride=None):
    """Normalise a max-pool padding to ``(top, bottom, left, right)``.

    Parameters
    ----------
    padding : {"tile", "valid"} or int or tuple of 2 or 4 ints
        ``"tile"``: the smallest padding after which the windows end exactly at the padded
        edge, split like the convolution's ``"same"`` (floor half on top/left, the rest
        bottom/right). With the default stride (= size) that is the seed's minimal padding
        ``(s - H mod s) mod s`` for window height ``s`` (NOTES.md item 8; likewise for the
        columns); in general ``s - H`` when ``H <= s``, else ``(-(H - s)) mod stride``.
        ``"tile"`` needs ``stride <= size``: windows that skip cells cannot tile the input.
        ``"valid"``: none. Explicit forms as in :func:`pad_amounts`. Every amount must be
        smaller than the window along its axis, so that every window holds a real cell.
    size : int or tuple of 2 ints
        Window ``(kh, kw)``, each ``>= 1``.
    input_hw : tuple of 2 ints
        ``(H, W)`` of the unpadded input.
    stride : int or tuple of 2 ints, optional
        Step between windows, ``>= 1``; defaults to ``size``.

    Returns
    -------
    tuple of 4 ints
        ``(top, bottom, left, right)``.
    """
    kh, kw = _pair(size, "size", 1)
    sh, sw = (kh, kw) if stride is None else _pair(stride, "stride", 1)
    h, w = input_hw
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0, 0, 0)
        if mode == "tile":
            if sh > kh or sw > kw:
                raise ValueError(
                    f"padding='tile' needs stride <= size (windows that skip cells cannot "
                    f"tile the input); got size {(kh, kw)}, stride {(sh, sw)}"
                )
            return _split(_tile_total(h, kh, sh)) + _split(_tile_total(w, kw, sw))
        raise ValueError(
            f"padding must be 'tile', 'valid', an int, (ph, pw) or (top, bottom, left, right); "
            f"got the string {padding!r}"
        )
    top, bottom, left, right = _explicit_padding(padding, "padding")
    if max(top, bottom) >= kh or max(left, right) >= kw:
        raise ValueError(
            f"padding must be smaller than the pooling window on each side (a window of "
            f"padding only has no maximum); got padding {padding!r} for size {(kh, kw)}"
        )
    return (top, bottom, left, right)


def _tile_total(n, k, s):
    """Rows to add to ``n`` so that windows of ``k`` at stride ``s`` end exactly at the edge."""
    if n <= k:
        return k - n  # one window, filled up
    # need (n + p - k) to be a multiple of s; with s == k this is (k - n mod k) mod k
    return (s - (n - k) % s) % s


def _check_array(a, name, ndim, dtype=None):
    """Return ``a`` as an ndarray after checking its dimension count and floating dtype."""
    a = np.asarray(a)
    if a.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64; got dtype {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(
            f"{name} must have the same dtype as x ({dtype}); got dtype {a.dtype}"
        )
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got shape {a.shape} ({a.ndim}-D)")
    return a


def _conv_geometry(x_shape, w_shape, stride, padding):
    """Validate conv shapes; return ``(pads, (sh, sw), (Ho, Wo))``."""
    n, c, h, wd = x_shape
    k, cw, kh, kw = w_shape
    if cw != c:
        raise ValueError(
            f"w must have as many input channels as x: x has C={c} (shape {x_shape}), "
            f"w has shape {w_shape} with C={cw}; wanted w of shape (K, {c}, kh, kw)"
        )
    if kh < 1 or kw < 1 or k < 1:
        raise ValueError(f"w must have K, kh, kw >= 1; got shape {w_shape}")
    sh, sw = _pair(stride, "stride", 1)
    top, bottom, left, right = pad_amounts(padding, (kh, kw), (sh, sw), (h, wd))
    hp, wp = h + top + bottom, wd + left + right
    if kh > hp or kw > wp:
        raise ValueError(
            f"w's kernel ({kh}, {kw}) is larger than the padded input ({hp}, {wp}) "
            f"(x spatial size ({h}, {wd}), padding {padding!r})"
        )
    return (top, bottom, left, right), (sh, sw), ((hp - kh) // sh + 1, (wp - kw) // sw + 1)


def _window(xp, i, j, sh, sw, ho, wo):
    """The ``(N, C, Ho, Wo)`` view of ``xp`` read by kernel offset ``(i, j)``: ``xp[.., s*a+i, s*b+j]``."""
    return xp[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]


# --------------------------------------------------------------------------- convolution


def conv2d(x, w, b=None, stride=1, padding="valid"):
    """2-D cross-correlation of a batch with a bank of filters (seed eq. 5-8).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), dtype float32 or float64
        Input batch.
    w : ndarray of shape (K, C, kh, kw), same dtype as ``x``
        Filters (not flipped).
    b : ndarray of shape (K,), same dtype as ``x``, optional
        Bias, one per filter.
    stride : int or tuple of 2 ints, default 1
        Step between two reads of the filter, ``>= 1``.
    padding : {"valid", "same"} or int or tuple, default "valid"
        See :func:`pad_amounts` (``"same"`` is TensorFlow/Keras' rule for every stride).

    Returns
    -------
    y : ndarray of shape (N, K, Ho, Wo), dtype of ``x``
        ``Ho = (H + top + bottom - kh) // sh + 1`` and likewise ``Wo``.
    """
    x = _check_array(x, "x", 4)
    w = _check_array(w, "w", 4, x.dtype)
    (top, bottom, left, right), (sh, sw), (ho, wo) = _conv_geometry(x.shape, w.shape, stride, padding)
    n, k, kh, kw = x.shape[0], w.shape[0], w.shape[2], w.shape[3]
    if b is not None:
        b = _check_array(b, "b", 1, x.dtype)
        if b.shape != (k,):
            raise ValueError(f"b must have shape ({k},) (one bias per filter); got shape {b.shape}")

    # eq. 7: zero rows/columns around every input plane.
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    # eq. 8, one kernel offset (i, j) at a time: y += w[:, :, i, j] . xp[.., s*a+i, s*b+j]
    y = np.zeros((k, n, ho, wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            # (K, C) x (N, C, Ho, Wo) summed over C -> (K, N, Ho, Wo)
            y += np.tensordot(w[:, :, i, j], _window(xp, i, j, sh, sw, ho, wo), axes=([1], [1]))
    y = y.transpose(1, 0, 2, 3)
    if b is not None:
        y += b[None, :, None, None]
    return np.ascontiguousarray(y)


def conv2d_backward(dy, x, w, stride=1, padding="valid"):
    """Gradients of :func:`conv2d` (seed eq. 9-13).

    Parameters
    ----------
    dy : ndarray of shape (N, K, Ho, Wo), dtype of ``x``
        Gradient of the loss with respect to the conv output ``y`` (the pre-activation
        ``z`` of the seed). If an activation follows, multiply by its derivative first
        (eq. 11-12).
    x : ndarray of shape (N, C, H, W), dtype float32 or float64
        The forward input.
    w : ndarray of shape (K, C, kh, kw), dtype of ``x``
        The forward filters.
    stride, padding
        As in :func:`conv2d`.

    Returns
    -------
    dx : ndarray of shape (N, C, H, W), dtype of ``x``
    dw : ndarray of shape (K, C, kh, kw), dtype of ``x``
    db : ndarray of shape (K,), dtype of ``x``
    """
    x = _check_array(x, "x", 4)
    w = _check_array(w, "w", 4, x.dtype)
    dy = _check_array(dy, "dy", 4, x.dtype)
    (top, bottom, left, right), (sh, sw), (ho, wo) = _conv_geometry(x.shape, w.shape, stride, padding)
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    if dy.shape != (n, k, ho, wo):
        raise ValueError(
            f"dy must have the shape of the conv output (N, K, Ho, Wo) = {(n, k, ho, wo)}; "
            f"got shape {dy.shape}"
        )

    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for i in range(kh):
        for j in range(kw):
            # eq. 13: dz[a, b] / dw[i, j] = xp[s*a + i, s*b + j]
            # (N, K, Ho, Wo) x (N, C, Ho, Wo) summed over N, Ho, Wo -> (K, C)
            dw[:, :, i, j] = np.tensordot(
                dy, _window(xp, i, j, sh, sw, ho, wo), axes=([0, 2, 3], [0, 2, 3])
            )
            # eq. 10: dz[a, b] / dxp[s*a + i, s*b + j] = w[i, j]
            # (N, K, Ho, Wo) x (K, C) summed over K -> (N, Ho, Wo, C)
            _window(dxp, i, j, sh, sw, ho, wo)[...] += np.tensordot(
                dy, w[:, :, i, j], axes=([1], [0])
            ).transpose(0, 3, 1, 2)
    dx = np.ascontiguousarray(dxp[:, :, top : top + h, left : left + wd])
    db = dy.sum(axis=(0, 2, 3))
    return dx, dw, db


# --------------------------------------------------------------------------- max-pooling


def _pool_geometry(x_shape, size, stride, padding):
    """Validate pool arguments; return ``(pads, (kh, kw), (sh, sw), (Ho, Wo))``."""
    h, wd = x_shape[2], x_shape[3]
    kh, kw = _pair(size, "size", 1)
    sh, sw = (kh, kw) if stride is None else _pair(stride, "stride", 1)
    top, bottom, left, right = pool_pad_amounts(padding, (kh, kw), (h, wd), (sh, sw))
    hp, wp = h + top + bottom, wd + left + right
    if kh > hp or kw > wp:
        raise ValueError(
            f"size {(kh, kw)} is larger than the padded input ({hp}, {wp}) "
            f"(x spatial size ({h}, {wd}), padding {padding!r})"
        )
    return (top, bottom, left, right), (kh, kw), (sh, sw), ((hp - kh) // sh + 1, (wp - kw) // sw + 1)


def maxpool2d(x, size=2, stride=None, padding="tile"):
    """Max-pooling of every input plane (seed eq. 15-16).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), dtype float32 or float64
        Input batch.
    size : int or tuple of 2 ints, default 2
        Window ``(kh, kw)``.
    stride : int or tuple of 2 ints, optional
        Step between windows; defaults to ``size`` (the seed's ``s = w_F``).
    padding : {"tile", "valid"} or int or tuple, default "tile"
        See :func:`pool_pad_amounts`. Padded cells are ``-inf``: they never win the max.

    Returns
    -------
    y : ndarray of shape (N, C, Ho, Wo), dtype of ``x``
        ``Ho = (H + top + bottom - kh) // sh + 1`` and likewise ``Wo``.
    argmax : ndarray of shape (N, C, Ho, Wo), dtype intp
        Flat index ``h * W + w`` in the *unpadded* input plane of the cell that won each
        window: the first in row-major window order when several cells share the max.
        A NaN in a window wins it (``y`` is NaN, ``argmax`` the first NaN).
    """
    x = _check_array(x, "x", 4)
    (top, bottom, left, right), (kh, kw), (sh, sw), (ho, wo) = _pool_geometry(
        x.shape, size, stride, padding
    )
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=-np.inf)
    rows = np.arange(ho) * sh - top  # unpadded row of window offset 0, per output row
    cols = np.arange(wo) * sw - left

    y = np.full((n, c, ho, wo), -np.inf, dtype=x.dtype)
    argmax = np.full((n, c, ho, wo), -1, dtype=np.intp)
    # eq. 16-17, window offsets in row-major order; a later cell wins only if strictly greater,
    # so ties stay with the first. Padded cells are skipped outright (never win); the first
    # real cell of a window is always taken, so an all -inf window still has an argmax.
    # NaN propagates: the first NaN of a window wins and keeps the window.
    for i in range(kh):
        for j in range(kw):
            r, q = rows + i, cols + j
            real = ((r >= 0) & (r < h))[:, None] & ((q >= 0) & (q < wd))[None, :]  # (Ho, Wo)
            v = _window(xp, i, j, sh, sw, ho, wo)
            take = real & ((v > y) | (argmax < 0) | (np.isnan(v) & ~np.isnan(y)))
            y = np.where(take, v, y)
            argmax = np.where(take, r[:, None] * wd + q[None, :], argmax)
    return y, argmax


def maxpool2d_backward(dy, argmax, x_shape):
    """Gradient of :func:`maxpool2d` with respect to its input (seed eq. 17).

    Parameters
    ----------
    dy : ndarray of shape (N, C, Ho, Wo), dtype float32 or float64
        Gradient with respect to the pool output.
    argmax : ndarray of shape (N, C, Ho, Wo), integer dtype
        As returned by :func:`maxpool2d`: flat indices into each ``H * W`` input plane.
    x_shape : tuple of 4 ints
        ``(N, C, H, W)`` of the forward input.

    Returns
    -------
    dx : ndarray of shape x_shape, dtype of ``dy``
        Each ``dy`` value added to the input cell that won its window (overlapping windows,
        stride < size, may send several to one cell); zero elsewhere.
    """
    dy = _check_array(dy, "dy", 4)
    argmax = np.asarray(argmax)
    if argmax.dtype.kind not in "iu":
        raise TypeError(f"argmax must have an integer dtype; got dtype {argmax.dtype}")
    if argmax.shape != dy.shape:
        raise ValueError(f"argmax must have the shape of dy {dy.shape}; got shape {argmax.shape}")
    if (
        not isinstance(x_shape, (tuple, list))
        or len(x_shape) != 4
        or not all(_is_int(d) and d >= 0 for d in x_shape)
    ):
        raise ValueError(f"x_shape must be 4 non-negative ints (N, C, H, W); got {x_shape!r}")
    n, c, h, wd = (int(d) for d in x_shape)
    if dy.shape[:2] != (n, c):
        raise ValueError(
            f"dy must have the batch and channel sizes of x_shape {(n, c)}; got shape {dy.shape}"
        )
    if argmax.size and (argmax.min() < 0 or argmax.max() >= h * wd):
        raise ValueError(
            f"argmax values must lie in [0, H*W) = [0, {h * wd}); got values in "
            f"[{argmax.min()}, {argmax.max()}]"
        )
    dx = np.zeros((n * c, h * wd), dtype=dy.dtype)
    plane = np.arange(n * c).reshape(n, c, 1, 1) * (h * wd)
    # add.at, not fancy assignment: with stride < size one cell can win several windows.
    np.add.at(dx.reshape(-1), (plane + argmax).reshape(-1), dy.reshape(-1))
    return dx.reshape(n, c, h, wd)
