"""Inference plans: :meth:`cnn.Model.predict` as a straight run of kernels.

A plan is built once per (batch size, dtype, thread count) from a built model's steps and
cached on the model. It holds the validated shapes, a preallocated output buffer per op, the
per-thread scratch of the fused kernels and the algorithm chosen for each convolution, so a
call is one loop over ops that call ``cnn._ext`` kernels directly.

Rewrites at build time (inference only):

- ``Conv2D`` / ``Dense`` with no activation followed by ``BatchNormalization``: the
  normalisation is folded into the weights and bias, ``w' = w * s`` and ``b' = b * s + t``
  per output channel, with ``s = gamma / sqrt(running_var + eps)`` and ``t = beta -
  running_mean * s`` (computed in float64, then cast). This changes the rounding: the plan's
  outputs then agree with the layer-by-layer forward to about 1e-5 relative in float32 (1e-12
  in float64), not bit for bit.
- ``Activation("relu")`` after such a layer (or after the folded BN) becomes the kernel's
  fused ReLU; ``Dropout`` (the identity at inference) and ``Flatten`` (a view) cost nothing.
- ``Conv2D`` (identity or ReLU, dilation 1, groups 1) then ``MaxPool2D``: one fused kernel
  (:func:`cnn._ext._fused.conv_pool_forward`) that pools each image's conv output while it is
  in cache and writes no argmax. Without folding this is bit-identical to the two layers.
- A ``MaxPool2D`` on its own writes no argmax (same values); ``Add`` (+ ``Activation("relu")``)
  writes one preallocated output (same values).

Everything else runs its layer's own ``forward(x, training=False)``. Fusions only join a
tensor that one call reads and that is not the model's output.

The plan keeps nothing derived from the weights between calls: the folded weights, the
Winograd transform and the Winograd overflow test (:func:`cnn._ops.winograd_cannot_overflow`,
as in :func:`cnn._ops.conv2d`) are recomputed from the live parameters and buffers in every
call, so training steps, ``set_weights``, ``load_state_dict`` and in-place edits of
``model.params`` need no invalidation. The model drops its plans when its graph or dtype can
have changed (``_set_graph``, ``compile``) and when a layer's activation object is swapped.
"""

import numpy as np

from cnn import _ops, _threads, graph, layers
from cnn._ext import _conv, _dense, _fused
from cnn._ext._scratch import aligned_rows

__all__ = ["InferencePlan", "plan_signature", "plan_for"]

_METHOD_CODES = {"im2col": _fused.IM2COL, "winograd": _fused.WINOGRAD, "direct": _fused.DIRECT}


# Winograd runs its 16 GEMMs over blocks of about 384 tiles (whole images); a batch smaller
# than one block gives GEMMs too narrow to pay for the transforms. Measured on the DESIGN CNN's
# 14x14 layer (64 <- 32 channels, 1 thread, loaded machine, interleaved): per image, Winograd
# 187/128/115/67/61 us against im2col 84/83/~100/81/83 us at batch 1/2/7/16/64. So a plan
# for fewer tiles than this takes im2col (results then differ from the layer path's Winograd
# by rounding only).
_WINO_MIN_TILES = _fused.WINOGRAD_BLOCK_TILES


# Filters per work item when an im2col conv of one image is cut in two (see _Conv).
_SPLIT_MIN_FILTERS = 16


def _wino_tiles(out_hw):
    """Winograd tile slots of one image (CNN_WINO_TILES of _winograd.h)."""
    th, tw = (out_hw[0] + 1) // 2, (out_hw[1] + 1) // 2
    return th * (tw + 1)


_CLASSES = {cls.__name__: cls for cls in (layers.Conv2D, layers.Dense, layers.MaxPool2D,
                                          layers.Flatten, layers.Dropout, layers.Activation,
                                          layers.BatchNormalization, layers.Add)}


def _is(layer, *names):
    """``layer`` is exactly one of these built-in classes (a subclass may override forward,
    so it runs as itself)."""
    return any(type(layer) is _CLASSES[name] for name in names)


def _activation_name(layer):
    act = getattr(layer, "activation", None)
    return None if act is None else act.name


def _identity(layer):
    return _activation_name(layer) in ("identity", "linear")


def plan_signature(model):
    """What a plan depends on beyond shapes: the steps and each layer's activation object."""
    return (id(model._steps),) + tuple(id(getattr(s.layer, "activation", None))
                                      for s in model._steps)


# ----------------------------------------------------------------------------- ops


class _Generic:
    """A layer's own inference forward (any layer, any number of inputs)."""

    def __init__(self, step):
        self.layer = step.layer
        self.multiple = step.layer.takes_multiple_inputs

    def __call__(self, args):
        return self.layer.forward(args if self.multiple else args[0], False)


class _Flatten:
    def __init__(self, step):
        self.features = step.layer.output_shape[0]

    def __call__(self, args):
        x = args[0]
        return x.reshape(x.shape[0], self.features)


class _Identity:
    def __call__(self, args):
        return args[0]


class _MaxPool:
    """MaxPool2D at inference: values only, into a preallocated output."""

    def __init__(self, step, n, dtype):
        layer = step.layer
        (self.kh, self.kw), (self.sh, self.sw), pads, out_hw = layer._geometry
        self.pt, self.pl = pads[0], pads[2]
        self.y = np.empty((n,) + layer.output_shape, dtype=dtype)
        self.threads = _ops.threads_for(self.y.size * self.kh * self.kw)

    def __call__(self, args):
        _fused.pool_plane_forward(np.ascontiguousarray(args[0]), self.y, self.kh, self.kw,
                                  self.sh, self.sw, self.pt, self.pl, self.threads)
        return self.y


class _Add:
    """Add (+ a following Activation("relu")) into a preallocated output: the layers' own
    operations (``np.add``, ``+=``, ``np.maximum(., 0)``, whose bits the threaded kernels of
    :mod:`cnn._ops` reproduce), with one output written once instead of two allocated; two
    inputs and the ReLU are one pass."""

    def __init__(self, step, relu, n, dtype):
        self.relu = relu
        self.y = np.empty((n,) + step.layer.output_shape, dtype=dtype)

    def __call__(self, args):
        y = self.y
        args = [np.ascontiguousarray(x) for x in args]
        if self.relu and len(args) == 2:
            return _ops.add_relu(args[0], args[1], y)
        _ops.add(args[0], args[1], y)
        for x in args[2:]:
            _ops.add_into(y, x)
        if self.relu:  # three or more inputs: rare, NumPy in place
            np.maximum(y, 0, out=y)
        return y


def _folded(layer, bn, w_out, b_out):
    """The weight and bias of ``layer`` with the BatchNormalization ``bn`` after it folded in,
    written into ``w_out`` / ``b_out``; without ``bn``, the layer's own arrays."""
    w = layer.params[0]
    b = layer.params[1] if layer.use_bias else None
    if bn is None:
        return w, b
    gamma, beta = bn._gamma_beta()
    running_mean, running_var = bn.buffers
    scale = (1.0 if gamma is None else gamma.astype(np.float64)) / np.sqrt(
        running_var.astype(np.float64) + bn.eps)
    scale = np.broadcast_to(scale, running_var.shape)
    shift = (0.0 if beta is None else beta.astype(np.float64)) - running_mean * scale
    np.multiply(w, scale.reshape((-1,) + (1,) * (w.ndim - 1)), out=w_out, casting="unsafe")
    if b is None:
        np.copyto(b_out, shift, casting="unsafe")
    else:
        np.copyto(b_out, b * scale + shift, casting="unsafe")
    return w_out, b_out


class _Weighted:
    """Conv2D or Dense, with an optional folded BatchNormalization and fused ReLU."""

    def _init_weights(self, layer, bn, dtype):
        self.layer, self.bn = layer, bn
        w = layer.params[0]
        self.w_buf = np.empty_like(w) if bn is not None else None
        self.b_buf = np.empty(w.shape[0], dtype=dtype) if bn is not None else None

    def weights(self):
        return _folded(self.layer, self.bn, self.w_buf, self.b_buf)


class _Dense(_Weighted):
    def __init__(self, layer, bn, relu, n, dtype):
        self._init_weights(layer, bn, dtype)
        self.relu = relu
        self.y = np.empty((n, layer.units), dtype=dtype)
        self.threads = _ops.threads_for(self.y.size * layer.input_shape[0])
        # an activation other than identity/relu runs after the kernel (softmax of the logits)
        self.after = None if relu or _identity(layer) else layer.activation

    def __call__(self, args):
        w, b = self.weights()
        _dense.dense_forward(np.ascontiguousarray(args[0]), w, b, self.y, self.relu, self.threads)
        return self.y if self.after is None else self.after.forward(self.y)


class _Conv(_Weighted):
    """Conv2D (+ folded BN, + ReLU, + MaxPool2D when ``pool`` is given)."""

    def __init__(self, layer, bn, relu, pool, n, dtype):
        self._init_weights(layer, bn, dtype)
        self.relu = relu
        w_shape = layer.params[0].shape
        self.stride, self.pads, self.out_hw = layer.stride, layer.pads, layer._out_hw
        self.dilation, self.groups = layer.dilation, layer.groups
        conv_size = n * w_shape[0] * self.out_hw[0] * self.out_hw[1]
        self.threads = _ops.threads_for(conv_size * int(np.prod(w_shape[1:])))
        self.method = _ops.conv_algorithm("auto", w_shape, self.stride,
                                          (self.pads[0], self.pads[2]), self.out_hw, False,
                                          self.dilation, self.groups)
        self.layer_method = self.method  # what the layer's own forward chooses
        float32 = np.dtype(dtype) == np.float32
        if self.method == "winograd" and n * _wino_tiles(self.out_hw) < _WINO_MIN_TILES:
            self.method = "im2col"
        # the im2col products that run on cnn's own register-blocked GEMM, as in the training
        # forward (float32, deep enough; _conv_common._im2col_own_gemm)
        _, C, kh, kw = w_shape
        self.own_gemm = _fused.im2col_own_gemm(dtype, C, *layer.input_shape[1:], kh, kw,
                                               *self.stride, self.pads[0], self.pads[2],
                                               *self.out_hw)
        # im2col on one image: two work items of half the filters each, so two threads share
        # it. From the shapes only (the GEMM's rounding may depend on its rows): one image and
        # at least _SPLIT_MIN_FILTERS filters per half. The own GEMM cuts the image's rows
        # instead (each thread then unrolls only its half); its bits depend on neither, so its
        # bands follow the thread count.
        im2col_ksplit = 2 if n == 1 and w_shape[0] >= 2 * _SPLIT_MIN_FILTERS else 1
        self.rsplit = 1
        if self.own_gemm and n == 1:
            im2col_ksplit, self.rsplit = 1, self.threads
        # The direct kernel, and float32 Winograd, on fewer work items than threads (one image;
        # a batch in one Winograd block of images): each item's filters cut into groups of 8
        # so that every thread has work (the bits do not depend on the cut).
        items = {"direct": n, "winograd": _fused.winograd_blocks(n, w_shape[1], *self.out_hw)}
        self.ksplits = {"im2col": im2col_ksplit}
        for name, count in items.items():
            splittable = name == "direct" or float32
            self.ksplits[name] = (max(1, self.threads // count)
                                  if splittable and count < self.threads else 1)
        self.reduction = w_shape[1]
        # the fused kernel serves dilation 1, groups 1; with no pool (code 0) it writes the
        # conv output itself, from preallocated scratch (the _conv kernels allocate theirs)
        self.fused = self.groups == 1 and tuple(self.dilation) == (1, 1)
        if pool is None:
            self.pool = (0, 0, 1, 1, 0, 0)
            self.y = np.empty((n, w_shape[0]) + self.out_hw, dtype=dtype)
        else:
            (pkh, pkw), (psh, psw), ppads, pool_hw = pool._geometry
            self.pool = (pkh, pkw, psh, psw, ppads[0], ppads[2])
            self.y = np.empty((n, w_shape[0]) + tuple(pool_hw), dtype=dtype)
        if not self.fused:
            return
        self.n, self.dtype = n, dtype
        # max |y| of the last call, per thread, when a Winograd conv reads y (see InferencePlan)
        self.maxes = None
        self.source = None  # the fused op whose output is this op's input, when it tracks maxes
        self.scratch = {}
        self.U = (np.empty((16, w_shape[0], w_shape[1]), dtype=dtype)
                  if self.method == "winograd" else None)
        self._scratch(self.method)  # allocated now: the call allocates nothing

    def _scratch(self, method):
        s = self.scratch.get(method)
        if s is None:
            K, C, kh, kw = self.layer.params[0].shape
            size = _fused.scratch_size(_METHOD_CODES[method], self.n, C, K, kh, kw, *self.out_hw,
                                       own_gemm=self.own_gemm and method == "im2col")
            s = self.scratch[method] = aligned_rows(self.threads, size, self.dtype)
        return s

    def __call__(self, args):
        x = np.ascontiguousarray(args[0])
        w, b = self.weights()
        method = self.method
        max_x = None
        if method == "winograd":
            max_x = (float(self.source.maxes.max()) if self.source is not None
                     else _ops.max_abs(x))  # (NaN propagates through .max(), as through max_abs)
        if method == "winograd" and not _ops.winograd_cannot_overflow(
                max_x, _ops.max_abs(w), self.reduction, x.dtype):
            method = "im2col"
        y = self.y
        pt, pl = self.pads[0], self.pads[2]
        if self.fused:
            _fused.conv_pool_forward(x, w, b, y, self._scratch(method),
                                     self.U if method == "winograd" else None,
                                     _METHOD_CODES[method], self.stride[0], self.stride[1],
                                     pt, pl, self.out_hw[0], self.out_hw[1], self.relu,
                                     *self.pool, self.threads, self.maxes,
                                     self.ksplits[method], rsplit=self.rsplit)
            return y
        # groups or dilation: im2col (the only algorithm conv_algorithm allows for them)
        _conv.conv2d_forward(x, w, b, y, self.stride[0], self.stride[1], pt, pl, self.relu,
                             self.threads, self.dilation[0], self.dilation[1], self.groups)
        return y


# ----------------------------------------------------------------------------- the plan


class _Node:
    __slots__ = ("op", "inputs", "output", "frees", "layers")

    def __init__(self, op, inputs, output, layers):
        self.op, self.inputs, self.output, self.layers = op, inputs, output, layers
        self.frees = ()


def _share_buffers(nodes):
    """Let the output buffers of ops take turns: a node's output takes over a buffer of the
    same shape and dtype whose last reader ran before it (a chain of equal shapes ping-pongs
    between two buffers), so the plan's working set stays near the layer path's, whose freed
    arrays the allocator hands back hot.

    Outputs of ops that own no buffer (Flatten, Dropout, a layer's own forward) may be views
    of their inputs, so they keep every buffer their inputs may view alive as long as
    themselves. The model's output is never given away.
    """
    owned = (_Conv, _Dense, _MaxPool, _Add)
    alias = {0: frozenset()}  # tensor -> the nodes whose buffer it may view
    for i, node in enumerate(nodes):
        if isinstance(node.op, owned):
            alias[node.output] = frozenset((i,))
        else:
            alias[node.output] = frozenset().union(*(alias[t] for t in node.inputs))
    last_use = {}
    for i, node in enumerate(nodes):
        for t in node.inputs:
            for b in alias[t]:
                last_use[b] = i
    for b in alias[nodes[-1].output]:
        last_use[b] = len(nodes)
    free, live = {}, []
    for i, node in enumerate(nodes):
        keep = []
        for end, key, buf in live:
            if end < i:
                free.setdefault(key, []).append(buf)
            else:
                keep.append((end, key, buf))
        live = keep
        if isinstance(node.op, owned):
            y = node.op.y
            key = (y.shape, y.dtype.str)
            if free.get(key):
                node.op.y = free[key].pop()
            live.append((last_use.get(i, i), key, node.op.y))


class InferencePlan:
    """The ops of one model for batches of ``n`` items of ``dtype`` at the current thread count.

    Parameters
    ----------
    model : cnn.Model
        Built; its steps are read once here.
    n : int >= 1
        Batch size the buffers are made for (a call takes exactly ``n`` items).
    dtype : numpy.dtype
        The model's dtype (float32 or float64).

    Attributes
    ----------
    nodes : list of _Node
        ``node.layers`` lists the layers an op stands for (one, or a fused run).
    signature : tuple
        :func:`plan_signature` of the model when the plan was built.
    """

    def __init__(self, model, n, dtype):
        self.n, self.dtype = n, np.dtype(dtype)
        self.threads = _threads.get_num_threads()
        self.signature = plan_signature(model)
        steps = model._steps
        readers = {}
        for k, step in enumerate(steps):
            for t in step.inputs:
                readers.setdefault(t, []).append(k)
        final = steps[-1].output
        nodes, k = [], 0
        while k < len(steps):
            op, used = self._op_at(steps, k, readers, final)
            last = steps[k + used - 1]
            nodes.append(_Node(op, list(steps[k].inputs), last.output,
                               [s.layer for s in steps[k:k + used]]))
            k += used
        for node, frees in zip(nodes, graph.release_after([n.inputs for n in nodes])):
            node.frees = frees
        # A Winograd conv reading a fused conv's output gets max |x| from that kernel (taken
        # while each item was in cache) instead of two more passes over x.
        producer = {node.output: node.op for node in nodes}
        for node in nodes:
            op, src = node.op, producer.get(node.inputs[0])
            if (isinstance(op, _Conv) and op.method == "winograd" and op.fused
                    and isinstance(src, _Conv) and src.fused):
                if src.maxes is None:
                    src.maxes = np.zeros(max(1, src.threads), dtype=np.float64)
                op.source = src
        _share_buffers(nodes)
        self.nodes = nodes
        self.chain = all(len(nd.inputs) == 1 and nd.inputs[0] == (nodes[i - 1].output if i else 0)
                         for i, nd in enumerate(nodes))
        self.ops = [nd.op for nd in nodes]
        # the op whose output buffer holds the logits z of a last Dense with an activation
        last = nodes[-1]
        self.logits_op = (last.op if isinstance(last.op, _Dense) and last.op.after is not None
                          and len(last.layers) == 1 else None)

    def _op_at(self, steps, k, readers, final):
        """The op starting at step ``k`` and the number of steps it covers."""
        step = steps[k]
        layer = step.layer
        n, dtype = self.n, self.dtype

        def follower(j):
            """Step j + 1 if it alone reads step j's output (and that is not the model's)."""
            out = steps[j].output
            if j + 1 >= len(steps) or out == final or readers.get(out) != [j + 1]:
                return None
            nxt = steps[j + 1]
            return None if nxt.shared or len(nxt.inputs) != 1 else nxt.layer

        if step.shared:
            return _Generic(step), 1
        if _is(layer, "Flatten"):
            return _Flatten(step), 1
        if _is(layer, "Dropout"):
            return _Identity(), 1
        if _is(layer, "MaxPool2D"):
            return _MaxPool(step, n, dtype), 1
        if _is(layer, "Add"):
            nxt = follower(k)
            if nxt is not None and _is(nxt, "Activation") and _activation_name(nxt) == "relu":
                return _Add(step, True, n, dtype), 2
            return _Add(step, False, n, dtype), 1
        if _is(layer, "Dense") and _activation_name(layer) not in ("identity", "linear", "relu"):
            return _Dense(layer, None, False, n, dtype), 1  # then its activation (softmax)
        if not _is(layer, "Conv2D", "Dense") or _activation_name(layer) not in (
                "identity", "linear", "relu"):
            return _Generic(step), 1
        used, bn, pool = 1, None, None
        relu = _activation_name(layer) == "relu"
        conv = _is(layer, "Conv2D")
        while True:
            nxt = follower(k + used - 1)
            if nxt is None:
                break
            if _is(nxt, "Dropout"):
                used += 1
            elif _is(nxt, "BatchNormalization") and bn is None and not relu and pool is None:
                bn = nxt
                used += 1
            elif (_is(nxt, "Activation") and _activation_name(nxt) == "relu" and not relu
                  and pool is None):
                relu = True
                used += 1
            elif (conv and _is(nxt, "MaxPool2D") and pool is None and layer.groups == 1
                  and tuple(layer.dilation) == (1, 1)):
                pool = nxt
                used += 1
                break
            else:
                break
        if conv:
            return _Conv(layer, bn, relu, pool, n, dtype), used
        return _Dense(layer, bn, relu, n, dtype), used

    def logits(self):
        """The pre-activation ``z`` of the last layer in the last :meth:`run` (a buffer of the
        plan), or None when the plan does not keep it (the last op is not a Dense with its
        own activation)."""
        return None if self.logits_op is None else self.logits_op.y

    def run(self, x):
        """The model's inference output for ``x`` (n items, the model's dtype, checked); a
        buffer of the plan, valid until its next call."""
        if self.chain:
            args = [x]
            for op in self.ops:
                args[0] = op(args)
            return args[0]
        values = {0: x}
        for node in self.nodes:
            args = [values[t] for t in node.inputs]
            for t in node.frees:
                del values[t]
            values[node.output] = node.op(args)
        return values[self.nodes[-1].output]


def plan_for(model, n, key):
    """``model``'s cached plan under ``key`` (batch size, dtype, thread count) for batches of
    ``n`` items: built on first use, rebuilt when :func:`plan_signature` changed; at most
    ``model._MAX_PLANS`` are kept (the oldest goes first)."""
    plans = model._inference_plans
    plan = plans.get(key)
    if plan is None or plan.signature != plan_signature(model):
        if len(plans) >= model._MAX_PLANS:
            plans.pop(next(iter(plans)))
        plan = plans[key] = InferencePlan(model, n, model.dtype)
    return plan
