"""Data augmentation for ``fit(..., augment=...)``: whole-pixel shifts and random affine warps.

Every function takes a batch ``x`` of shape (N, C, H, W) and a ``numpy.random.Generator`` where
it draws, and returns a new batch of the same shape and dtype; all are vectorised over the
batch. :func:`make_augment` turns the ``python -m cnn.train`` options into the
``augment(xb, rng)`` callable that ``fit`` takes.
"""

import numpy as np

__all__ = ["random_shift", "affine_warp", "random_affine", "make_augment"]


def random_shift(x, rng, max_shift):
    """Shift every image of ``x`` (N, C, H, W) by its own random whole-pixel offset in
    ``[-max_shift, max_shift]`` along each axis, filling with zeros; vectorised."""
    if max_shift == 0:
        return x
    n, c, h, w = x.shape
    s = max_shift
    padded = np.pad(x, ((0, 0), (0, 0), (s, s), (s, s)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))
    dy = rng.integers(0, 2 * s + 1, size=n)
    dx = rng.integers(0, 2 * s + 1, size=n)
    # windows: (N, C, 2s+1, 2s+1, H, W); the advanced indices pick one window per image.
    return np.ascontiguousarray(windows[np.arange(n), :, dy, dx])


def affine_warp(x, angle, scale, shift_y, shift_x):
    """Rotate (radians, about the image centre), scale and shift each image of ``x``.

    Output pixel ``(i, j)`` of image n samples the input at ``c + A_n^-1 ((i, j) - c) - t_n``
    (``A_n`` rotation by ``angle[n]`` times ``scale[n]``, ``t_n`` the shift, ``c`` the centre)
    by bilinear interpolation, with zeros outside the image (``scipy.ndimage.affine_transform``
    with ``order=1, mode="grid-constant"``). Vectorised over the batch.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float
    angle, scale, shift_y, shift_x : ndarray of shape (N,)

    Returns
    -------
    ndarray of the shape and dtype of ``x``
    """
    n, c, h, w = x.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    ii, jj = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
    cos = (np.cos(angle) / scale)[:, None, None]
    sin = (np.sin(angle) / scale)[:, None, None]
    # Source coordinates, clipped to [-1, H] x [-1, W]: with two rows/columns of zeros around
    # the image, every clipped-away point then reads only zeros, as it should.
    sy = np.clip(cos * ii - sin * jj + (cy - np.asarray(shift_y))[:, None, None], -1, h)
    sx = np.clip(sin * ii + cos * jj + (cx - np.asarray(shift_x))[:, None, None], -1, w)
    y0, x0 = np.floor(sy), np.floor(sx)
    fy, fx = (sy - y0).astype(x.dtype), (sx - x0).astype(x.dtype)
    pw = w + 4
    index = ((y0.astype(np.intp) + 2) * pw + (x0.astype(np.intp) + 2)).reshape(n, 1, h * w)
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))).reshape(n, c, -1)

    def at(offset):
        return np.take_along_axis(padded, np.broadcast_to(index + offset, (n, c, h * w)), axis=2)

    fy, fx = fy.reshape(n, 1, h * w), fx.reshape(n, 1, h * w)
    top, bottom = at(0), at(pw)
    top += fx * (at(1) - top)
    bottom += fx * (at(pw + 1) - bottom)
    top += fy * (bottom - top)
    return top.reshape(x.shape)


def random_affine(x, rng, max_shift=2.0, max_rotate=10.0, max_scale=0.1):
    """:func:`affine_warp` with, per image, a shift uniform in ``[-max_shift, max_shift]`` px
    on each axis, a rotation uniform in ``[-max_rotate, max_rotate]`` degrees and a scale
    uniform in ``[1 - max_scale, 1 + max_scale]``."""
    n = x.shape[0]
    angle = np.deg2rad(rng.uniform(-max_rotate, max_rotate, n))
    scale = 1.0 + rng.uniform(-max_scale, max_scale, n)
    shift = rng.uniform(-max_shift, max_shift, (2, n))
    return affine_warp(x, angle, scale, shift[0], shift[1])


def make_augment(shift, rotate, scale):
    """The ``augment(xb, rng)`` for ``fit``: None, whole-pixel shifts (when only a whole
    ``shift`` is asked for), or :func:`random_affine`."""
    if not 0 <= scale < 1:
        raise ValueError(f"scale must be in [0, 1), got {scale}")
    if rotate == 0 and scale == 0 and float(shift).is_integer():
        return (lambda xb, rng: random_shift(xb, rng, int(shift))) if shift else None
    return lambda xb, rng: random_affine(xb, rng, shift, rotate, scale)
