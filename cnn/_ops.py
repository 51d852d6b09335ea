"""Unchecked kernel calls: thread policy, algorithm choice and dispatch into ``cnn._ext``.

Nothing here validates: callers pass C-contiguous float32/float64 arrays of one dtype with
shapes that agree, and geometry already resolved to ints (strides ``(sh, sw)``, pads ``(top,
bottom, left, right)``, output planes). :mod:`cnn.functional` is the validated public door
that checks every argument and then calls these; layers and optimizers, which own their
arrays and check their inputs once, call them directly. The kernels run without bounds
checks: a wrong shape here would be a segfault, so never expose these to users.
"""

import math

import numpy as np

from cnn import _threads
from cnn._ext import _conv, _dense, _eltwise, _fused, _norm, _optim, _pool, _pool_grad
from cnn._ext._scratch import aligned_rows

__all__ = ["threads_for", "update_threads", "conv_algorithm", "linear", "linear_backward",
           "conv2d", "conv2d_backward", "maxpool2d", "maxpool2d_backward", "avgpool2d",
           "avgpool2d_backward", "global_avgpool2d", "global_avgpool2d_backward",
           "batch_norm_train", "batch_norm_train_backward", "batch_norm_eval", "sgd_update",
           "adam_update", "relu", "relu_backward", "add", "add_into", "add_relu", "conv2d_maxpool",
           "pooled_backward_path", "conv2d_pooled_backward"]

# ----------------------------------------------------------------------------- thread policy

# Below this many multiply-adds per thread, waking a second thread costs more than it saves
# (and on a loaded machine a sleeping OpenMP thread can take milliseconds to answer).
_MIN_WORK_PER_THREAD = 200_000
# Elementwise updates are memory-bound: a second thread only pays on large parameters.
_MIN_UPDATE_PER_THREAD = 32_768


def threads_for(work):
    """The knob's thread count, reduced for small jobs (``work`` in multiply-adds)."""
    return max(1, min(_threads.get_num_threads(), int(work // _MIN_WORK_PER_THREAD)))


def update_threads(p):
    """Threads for an elementwise update of ``p``: one per _MIN_UPDATE_PER_THREAD elements."""
    return max(1, min(_threads.get_num_threads(), p.size // _MIN_UPDATE_PER_THREAD))


# ----------------------------------------------------------------------------- algorithm choice

# Winograd pays once the 16 GEMMs have enough channels to amortise its transforms: measured
# on the bench shapes (bench/RESULTS.md); below this, or on small planes, im2col is faster.
_WINOGRAD_MIN_CHANNELS = 16
_WINOGRAD_MIN_PLANE = 6
ALGORITHMS = ("auto", "im2col", "winograd", "direct")


def conv_algorithm(algorithm, w_shape, stride, pads, out_hw, backward, dilation=(1, 1),
                   groups=1):
    """``algorithm`` resolved for these shapes: "im2col", "winograd" or "direct".

    "auto" decides from the shapes alone (never from the thread count, so results stay
    bit-identical across thread counts). ``w_shape`` is (K, C, kh, kw); ``pads`` is (top,
    left); ``out_hw`` the smallest plane the products work on. "direct" (one input channel,
    forward only) runs the backward by im2col. Winograd and direct serve dilation 1 and groups
    1 only; im2col is the general path. A forced algorithm the shapes do not allow is a
    ValueError.
    """
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    K, C, kh, kw = w_shape
    three_by_three = ((kh, kw) == (3, 3) and tuple(stride) == (1, 1)
                      and tuple(dilation) == (1, 1) and groups == 1)
    winograd_ok = three_by_three and all(0 <= p <= 2 for p in pads)
    direct_ok = three_by_three and C == 1
    if algorithm == "winograd" and not winograd_ok:
        raise ValueError(
            f"algorithm='winograd' needs a 3x3 kernel, stride 1, dilation 1, groups 1 and "
            f"top/left padding of at most 2; got kernel {(kh, kw)}, stride {tuple(stride)}, "
            f"dilation {tuple(dilation)}, groups {groups}, top/left padding {tuple(pads)}")
    if algorithm == "direct" and not direct_ok:
        raise ValueError(
            f"algorithm='direct' needs one input channel, a 3x3 kernel, stride 1, dilation 1 "
            f"and groups 1; got {C} channels, kernel {(kh, kw)}, stride {tuple(stride)}, "
            f"dilation {tuple(dilation)}, groups {groups}")
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


_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def max_abs(a):
    """``max|a|`` as a Python float, NaN if ``a`` holds a NaN, 0.0 if it is empty.

    A C-contiguous float32/float64 array takes one pass of the integer kernel of _fused.h (on
    the knob's threads past 64K values per thread: the Winograd overflow guards of a training
    step scan its largest tensors); anything else NumPy's max and min."""
    if a.size == 0:
        return 0.0
    if a.dtype in _KERNEL_DTYPES and a.flags.c_contiguous:
        return _fused.max_abs(a.reshape(-1), _threads.get_num_threads())
    return max(float(a.max()), -float(a.min()))


def all_finite(a):
    """Whether every value of the float array ``a`` is finite (no NaN, no inf), without the
    boolean temporary of ``np.isfinite(a).all()``."""
    return max_abs(a) < math.inf


def winograd_cannot_overflow(max_a, max_b, reduction, dtype):
    """Whether Winograd F(2x2, 3x3) on operands with ``max|a| = max_a`` and ``max|b| = max_b``
    (input/weight, or the two factors of a backward product) has no intermediate value that
    can overflow in ``dtype``.

    Its transforms add up to 4 entries of ``a`` and 2.25 times the largest entry of ``b``, and
    each output adds ``reduction`` (channels, or batch x plane) products of transformed tiles
    through a 9-term output transform, so every intermediate is bounded by ``4 max|a|``,
    ``4 max|b|`` and ``81 * reduction * max|a| * max|b|``. When these stay below the dtype's
    largest value, Winograd is as finite as the direct sum; otherwise (or with a NaN/inf
    operand) :func:`conv2d` and :func:`conv2d_backward` fall back to im2col. The cost is one
    read-only pass over each operand (:func:`max_abs`, on the knob's threads; the backward scans
    ``dy`` once for both products).
    """
    big = float(np.finfo(dtype).max)
    # written so that NaN fails every test, and products that overflow to inf fail too
    return 4.0 * max_a <= big and 4.0 * max_b <= big and 81.0 * reduction * max_a * max_b <= big


# ----------------------------------------------------------------------------- dense


def linear(x, w, b, relu):
    """``act(x @ w.T + b)``: x (N, in), w (out, in), b (out,) or None -> (N, out)."""
    y = np.empty((x.shape[0], w.shape[0]), dtype=x.dtype)
    _dense.dense_forward(x, w, b, y, relu, threads_for(y.size * w.shape[1]))
    return y


def gradient_buffers(w, dw=None, db=None):
    """``(dw, db)`` for a weight gradient and its bias gradient (K = ``w.shape[0]``): the given
    arrays where they fit the kernels (C-contiguous, ``w``'s dtype, shapes ``w.shape`` and
    ``(K,)``), new ones otherwise. Layers pass their own ``grads`` arrays, so a step writes the
    gradients in place instead of into fresh pages that are then copied."""
    def fits(a, shape):
        return (a is not None and a.shape == shape and a.dtype == w.dtype
                and a.flags.c_contiguous and a.flags.writeable)
    dw = dw if fits(dw, w.shape) else np.empty_like(w)
    db = db if fits(db, w.shape[:1]) else np.empty(w.shape[0], dtype=w.dtype)
    return dw, db


def linear_backward(dy, x, w, need_dx, relu_out, dw=None, db=None):
    """``(dx | None, dw, db)`` of :func:`linear`; ``relu_out`` is the forward output of a fused
    ReLU (masks ``dy``) or None. ``dw``/``db``: arrays to write the gradients into (see
    :func:`gradient_buffers`), or None for new ones."""
    masked = None if relu_out is None else np.empty_like(dy)
    dx = np.empty_like(x) if need_dx else None
    dw, db = gradient_buffers(w, dw, db)
    _dense.dense_backward(dy, x, w, dx, dw, db, relu_out, masked,
                          threads_for(2 * dy.size * w.shape[1]))
    return dx, dw, db


# ----------------------------------------------------------------------------- activations


def relu(z, out=None):
    """``max(z, 0)`` with the bits of ``np.maximum(z, 0)`` (-0.0 gives +0.0, NaN stays), into
    ``out`` (a new array when None; never ``z`` itself). z C-contiguous float32/float64."""
    if out is None:
        out = np.empty_like(z)
    _eltwise.relu_forward(z.reshape(-1), out.reshape(-1), update_threads(z))
    return out


def relu_backward(grad, z):
    """``grad`` where ``z > 0``, else 0, as a new array (grad, z: one shape and float dtype,
    C-contiguous)."""
    out = np.empty_like(z)
    _conv.relu_backward(grad.reshape(-1), z.reshape(-1), out.reshape(-1),
                        update_threads(z))
    return out


# ----------------------------------------------------------------------------- sums


def add(a, b, out=None):
    """``a + b`` with the bits of ``np.add(a, b)``, into ``out`` (a new array when None; never
    ``a`` or ``b``). a, b: one shape and float dtype, C-contiguous."""
    if out is None:
        out = np.empty_like(a)
    _eltwise.add(a.reshape(-1), b.reshape(-1), out.reshape(-1), update_threads(a))
    return out


def add_into(acc, b):
    """``acc += b`` in place (the bits of ``np.add(acc, b)``); returns ``acc``.
    acc, b: one shape and float dtype, C-contiguous, not overlapping."""
    _eltwise.add_into(acc.reshape(-1), b.reshape(-1), update_threads(acc))
    return acc


def add_relu(a, b, out):
    """``max(a + b, 0)`` into ``out`` in one pass: the bits of ``np.maximum(np.add(a, b), 0)``.
    a, b, out: one shape and float dtype, C-contiguous, out overlapping neither."""
    _eltwise.add_relu(a.reshape(-1), b.reshape(-1), out.reshape(-1), update_threads(a))
    return out


def softmax_rows(z):
    """Row-wise softmax of ``z`` (N, classes), C-contiguous float32/float64, as a new array:
    one kernel call (``_eltwise.softmax_rows``) where NumPy takes five."""
    out = np.empty_like(z)
    _eltwise.softmax_rows(z, out, _threads.get_num_threads())
    return out


# ----------------------------------------------------------------------------- conv2d


def conv2d(x, w, b, stride, pads, out_hw, relu, algorithm="auto", dilation=(1, 1), groups=1):
    """Cross-correlation of x (N, C, H, W) with w (K, C/groups, kh, kw) (+ b, fused ReLU) ->
    (N, K, OH, OW); ``pads`` = (top, bottom, left, right), ``out_hw`` = (OH, OW)."""
    sh, sw = stride
    pt, pl = pads[0], pads[2]
    y = np.empty((x.shape[0], w.shape[0]) + tuple(out_hw), dtype=x.dtype)
    threads = threads_for(y.size * w[0].size)
    method = conv_algorithm(algorithm, w.shape, stride, (pt, pl), out_hw, False, dilation, groups)
    if method == "winograd" and not winograd_cannot_overflow(max_abs(x), max_abs(w), w.shape[1],
                                                             x.dtype):
        method = "im2col"
    if method == "winograd":
        _conv.conv2d_forward_winograd(x, w, b, y, pt, pl, relu, threads)
    elif method == "direct":
        _conv.conv2d_forward_direct_c1(x, w, b, y, pt, pl, relu, threads)
    else:
        _conv.conv2d_forward(x, w, b, y, sh, sw, pt, pl, relu, threads, dilation[0], dilation[1],
                             groups)
    return y


def conv2d_backward(dy, x, w, stride, pads, need_dx, relu_out, algorithm="auto", dilation=(1, 1),
                    groups=1, dw=None, db=None):
    """``(dx | None, dw, db)`` of :func:`conv2d`, dw/db summed over the batch in a fixed
    order; one algorithm choice for the three products. ``dw``/``db``: arrays to write the
    gradients into (see :func:`gradient_buffers`), or None for new ones."""
    sh, sw = stride
    pt, pl = pads[0], pads[2]
    H, W = x.shape[2:]
    OH, OW = dy.shape[2:]
    winograd = conv_algorithm(algorithm, w.shape, stride, (pt, pl), (min(H, OH), min(W, OW)),
                              True, dilation, groups) == "winograd"
    # one choice for the three products, so dx, dw and db come from one algorithm
    if winograd:
        max_dy = max_abs(dy)
        winograd = winograd_cannot_overflow(max_dy, max_abs(x), x.shape[0] * H * W, x.dtype) \
            and (not need_dx or winograd_cannot_overflow(max_dy, max_abs(w), w.shape[0], x.dtype))
    dx = np.empty_like(x) if need_dx else None
    dw, db = gradient_buffers(w, dw, db)
    if winograd:
        threads = threads_for(dy.size * w[0].size)
        _conv.conv2d_weight_grad_winograd(dy, x, relu_out, dw, db, pt, pl, threads)
        if need_dx:
            _conv.conv2d_input_grad_winograd(dy, w, relu_out, dx, pt, pl, threads)
    else:
        _conv.conv2d_backward(dy, x, w, dx, dw, db, relu_out, sh, sw, pt, pl,
                              threads_for(2 * dy.size * w[0].size), dilation[0], dilation[1],
                              groups)
    return dx, dw, db


_FUSED_METHODS = {"im2col": _fused.IM2COL, "winograd": _fused.WINOGRAD, "direct": _fused.DIRECT}


def conv2d_maxpool(x, w, b, stride, pads, out_hw, relu, pool_size, pool_stride, pool_pads,
                   pool_hw, scratch=None):
    """``(y, argmax)`` of :func:`maxpool2d` over :func:`conv2d` (dilation 1, groups 1), in one
    kernel that pools each conv output plane while it is in cache and never writes the
    unpooled (N, K, OH, OW) tensor: the same algorithm choice, thread count and bits as the two
    calls (y: the pooled values; argmax: intp flat indices into each (OH, OW) plane).

    ``scratch``: a dict the caller keeps between calls (the kernel's per-thread rows, by method
    and shape), or None for new ones.
    """
    sh, sw = stride
    pt, pl = pads[0], pads[2]
    N, C = x.shape[:2]
    K, _, kh, kw = w.shape
    conv_size = N * K * out_hw[0] * out_hw[1]
    threads = threads_for(conv_size * w[0].size)
    method = conv_algorithm("auto", w.shape, stride, (pt, pl), out_hw, False)
    if method == "winograd" and not winograd_cannot_overflow(max_abs(x), max_abs(w), C,
                                                             x.dtype):
        method = "im2col"
    y = np.empty((N, K) + tuple(pool_hw), dtype=x.dtype)
    argmax = np.empty(y.shape, dtype=np.intp)
    code = _FUSED_METHODS[method]
    own_gemm = method == "im2col" and _fused.im2col_own_gemm(x.dtype, C, *x.shape[2:], kh, kw,
                                                             sh, sw, pt, pl, *out_hw)
    size = _fused.scratch_size(code, N, C, K, kh, kw, *out_hw, own_gemm=own_gemm)
    key = (method, threads, size, x.dtype)
    rows = None if scratch is None else scratch.get(key)
    if rows is None:
        rows = aligned_rows(threads, size, x.dtype)
        if scratch is not None:
            scratch.clear()  # one shape at a time: a new batch size replaces the old rows
            scratch[key] = rows
    U = np.empty((16, K, C), dtype=x.dtype) if method == "winograd" else None
    (pkh, pkw), (psh, psw) = pool_size, pool_stride
    _fused.conv_pool_forward(x, w, b, y, rows, U, code, sh, sw, pt, pl, out_hw[0], out_hw[1],
                             relu, pkh, pkw, psh, psw, pool_pads[0], pool_pads[2], threads,
                             argmax=argmax)
    return y, argmax


# Whether fused Conv2D -> MaxPool2D pairs may take the pooled backward at all (tests and A/B
# timing switch it off to compare with the scatter + dense backward).
POOLED_BACKWARD = True


def pooled_backward_path(dtype, channels, kernel, stride, pool_size, pool_stride,
                         pooled_cells, conv_cells, need_dx):
    """How a fused Conv2D -> MaxPool2D pair's conv backward takes the pooled cells themselves
    (:func:`conv2d_pooled_backward`) instead of their scatter into a dense gradient:
    ``"blocks"``, ``"columns"`` or None (the scatter + dense backward).

    Both need float32 and a pool that keeps at most a third of the conv outputs (a 2x2 /
    stride-2 pool keeps a quarter: a quarter of the dense multiply-adds, against Winograd's
    1 / 2.25). ``"blocks"`` (dx too): a kernel at most ``_pool_grad.MAX_KW`` wide and channel
    blocks of 32 at least three quarters full. ``"columns"`` (no dx: a first layer with few
    channels): C x kh x kw at most 64 (one input channel and a 3x3 kernel: 9)."""
    if not POOLED_BACKWARD or np.dtype(dtype) != np.float32 or 3 * pooled_cells > conv_cells:
        return None
    blocks = -(-channels // _pool_grad.BLOCK)
    if kernel[1] <= _pool_grad.MAX_KW and 4 * channels >= 3 * blocks * _pool_grad.BLOCK:
        return "blocks"
    if not need_dx and _pool_grad.column_size(channels, *kernel) <= 64:
        return "columns"
    return None


def conv2d_pooled_backward(g, argmax, x, w, stride, pads, out_hw, need_dx, path, dw=None,
                           db=None, scratch=None):
    """``(dx | None, dw, db)`` of :func:`conv2d` (dilation 1, groups 1) when its pre-activation
    gradient is zero but at the winners of a max-pool: ``g`` (N, K, PH, PW) the pooled
    gradient (already masked by a ReLU), ``argmax`` (intp, same shape) each pooled cell's
    winner, a flat index into the (OH, OW) conv output plane (:func:`conv2d_maxpool`'s),
    ``path`` what :func:`pooled_backward_path` named for these shapes (the caller decides
    once; a ValueError for None, or for "columns" with ``need_dx``). The same values as
    scattering ``g`` through ``argmax`` and calling :func:`conv2d_backward`, by a quarter of
    its multiply-adds for a 2x2 pool, summed in another fixed order (_pool_grad.h).

    Returns None, having written nothing, when ``x`` (or ``w``, with ``need_dx``) holds a
    non-finite value: the dense backward's products of zero gradients with infinities give
    NaN where this path skips them, and the caller then takes it. ``scratch``: a dict the caller
    keeps between calls (the copies of x, by shape), or None.
    """
    (sh, sw), pt, pl = stride, pads[0], pads[2]
    OH, OW = out_hw
    N, C = x.shape[:2]
    K, _, kh, kw = w.shape
    if path not in ("blocks", "columns") or (path == "columns" and need_dx):
        raise ValueError(f"conv2d_pooled_backward: no pooled path {path!r} for these shapes "
                         f"(see pooled_backward_path)")
    # (the blocked kernel checks x itself, in its copy)
    if (path == "columns" and not all_finite(x)) or (need_dx and not all_finite(w)):
        return None
    threads = threads_for(g.size * w[0].size)
    if path == "columns":
        shapes = ((N, OH * OW * _pool_grad.column_size(C, kh, kw)),)
    else:
        shapes = _pool_grad.scratch_shapes(N, C, OH, OW, kh, kw, sh, sw, threads)
    key = (path,) + shapes
    bufs = None if scratch is None else scratch.get(key)
    if bufs is None:
        bufs = tuple(aligned_rows(rows, n, np.float32) for rows, n in shapes)
        if scratch is not None:
            scratch.clear()  # one shape at a time: a new batch size replaces the old copies
            scratch[key] = bufs
    dx = np.empty_like(x) if need_dx else None
    dw, db = gradient_buffers(w, dw, db)
    if path == "columns":
        skipped = _pool_grad.conv_pool_column_backward(g, argmax, x, dw, db, OH, OW, sh, sw, pt,
                                                       pl, bufs[0], threads)
    else:
        finite, skipped = _pool_grad.conv_pool_backward(g, argmax, x, w, dx, dw, db, OH, OW, sh,
                                                        sw, pt, pl, bufs[0], bufs[1], threads)
        if not finite:
            return None
    if skipped:
        raise RuntimeError(f"conv2d_pooled_backward: {skipped} pooled cells name a winner "
                           f"outside the ({OH}, {OW}) conv output")
    return dx, dw, db


# ----------------------------------------------------------------------------- max-pool


def maxpool2d(x, size, stride, pads, out_hw):
    """``(y, argmax)`` of max-pooling x (N, C, H, W) with windows ``size`` = (kh, kw); argmax
    (intp) holds flat indices into each input plane."""
    kh, kw = size
    sh, sw = stride
    N, C = x.shape[:2]
    y = np.empty((N, C) + tuple(out_hw), dtype=x.dtype)
    argmax = np.empty(y.shape, dtype=np.intp)
    _pool.maxpool2d_forward(x, y, argmax, kh, kw, sh, sw, pads[0], pads[2],
                            threads_for(y.size * kh * kw))
    return y, argmax


def maxpool2d_backward(dy, argmax, x_shape):
    """``(dx, bad)``: the scatter of dy through argmax (intp, C-contiguous) into a zeroed
    array of ``x_shape``, and the number of out-of-range indices the kernel skipped."""
    dx = np.empty(x_shape, dtype=dy.dtype)
    bad = _pool.maxpool2d_backward(dy, argmax, dx, threads_for(dx.size))
    return dx, bad


def avgpool2d(x, size, stride, pads, out_hw):
    """Average of each window's real cells (padded cells not counted) -> (N, C, OH, OW)."""
    kh, kw = size
    y = np.empty(x.shape[:2] + tuple(out_hw), dtype=x.dtype)
    _pool.avgpool2d_forward(x, y, kh, kw, stride[0], stride[1], pads[0], pads[2],
                            threads_for(y.size * kh * kw))
    return y


def avgpool2d_backward(dy, x_shape, size, stride, pads):
    """dx of :func:`avgpool2d`: each window's real cells get dy / (their count)."""
    kh, kw = size
    dx = np.empty(x_shape, dtype=dy.dtype)
    _pool.avgpool2d_backward(dy, dx, kh, kw, stride[0], stride[1], pads[0], pads[2],
                             threads_for(dy.size * kh * kw))
    return dx


def global_avgpool2d(x):
    """(N, C, H, W) -> (N, C): the mean of each plane."""
    N, C = x.shape[:2]
    y = np.empty((N, C), dtype=x.dtype)
    _pool.global_avgpool2d_forward(x.reshape(N, C, -1), y, threads_for(x.size))
    return y


def global_avgpool2d_backward(dy, x_shape):
    """dx (x_shape) of :func:`global_avgpool2d`: dy[n, c] / (H*W) on every cell."""
    dx = np.empty(x_shape, dtype=dy.dtype)
    _pool.global_avgpool2d_backward(dy, dx.reshape(x_shape[0], x_shape[1], -1),
                                    threads_for(dx.size))
    return dx


# ----------------------------------------------------------------------------- batch norm
# x is (N, C) or (N, C, H, W); the kernels see it as (N, C, S).


def _ncs(a):
    return a.reshape(a.shape[0], a.shape[1], -1)


def batch_norm_train(x, gamma, beta, eps, relu=False):
    """``(y, mean, var)``: x normalised by its batch statistics per channel (then ``max(., 0)``
    with ``relu``, in the same pass); mean and the biased variance (float64, (C,)) are what the
    backward needs."""
    C = x.shape[1]
    y = np.empty_like(x)
    mean = np.empty(C, dtype=np.float64)
    var = np.empty(C, dtype=np.float64)
    _norm.batchnorm_forward_train(_ncs(x), gamma, beta, _ncs(y), mean, var, float(eps),
                                  threads_for(3 * x.size), relu)
    return y, mean, var


def batch_norm_train_backward(dy, x, gamma, mean, var, eps, need_dx, need_dgamma, need_dbeta,
                              relu_out=None):
    """``(dx | None, dgamma | None, dbeta | None)`` of :func:`batch_norm_train` (dgamma and
    dbeta summed over the batch, dx through the batch statistics too); ``relu_out``, the output
    of a forward with ``relu`` (or None), masks ``dy`` inside the same passes."""
    C = x.shape[1]
    dx = np.empty_like(x) if need_dx else None
    dgamma = np.empty(C, dtype=x.dtype) if need_dgamma else None
    dbeta = np.empty(C, dtype=x.dtype) if need_dbeta else None
    _norm.batchnorm_backward_train(_ncs(dy), _ncs(x), gamma, mean, var,
                                   None if dx is None else _ncs(dx), dgamma, dbeta, float(eps),
                                   threads_for(4 * x.size),
                                   None if relu_out is None else _ncs(relu_out))
    return dx, dgamma, dbeta


def batch_norm_eval(x, scale, shift, relu=False):
    """``x * scale[c] + shift[c]`` per channel (scale, shift float64 (C,)); then ``max(., 0)``
    in the same pass with ``relu``."""
    y = np.empty_like(x)
    _norm.channel_affine(_ncs(x), scale, shift, _ncs(y), threads_for(x.size), relu)
    return y


# ----------------------------------------------------------------------------- optimizers


def sgd_update(p, g, v, lr, momentum, nesterov, weight_decay):
    """One ``torch.optim.SGD`` step in place (p, v C-contiguous; g of p's shape and dtype)."""
    _optim.sgd_update(p.reshape(-1), g.reshape(-1), None if v is None else v.reshape(-1),
                      float(lr), float(momentum), bool(nesterov), float(weight_decay),
                      update_threads(p))


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """One bias-corrected Adam step in place (p, m, v C-contiguous; g of p's shape)."""
    b1, b2 = float(beta1), float(beta2)
    _optim.adam_update(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                       b1, 1.0 - b1, b2, 1.0 - b2, math.sqrt(1.0 - b2 ** step), float(eps),
                       float(lr) / (1.0 - b1 ** step), float(weight_decay), update_threads(p))
