"""``cnn.gradcheck``: a layer's or a model's backward pass against central differences."""

import numpy as np

from .. import _validation as V
from .. import losses as _losses
from .._layer import Layer
from ..graph import Input, plan
from ..model import Model
from ..sequential import Sequential
from ._report import GradcheckReport, GradcheckRow

__all__ = ["gradcheck"]


def gradcheck(layer_or_model, x, y=None, *, eps=1e-6, atol=1e-6, rtol=1e-4, max_entries=200,
              seed=0, raise_exception=False):
    """Check a layer's or a model's backward pass against central differences, in float64.

    The audit never modifies its argument: it works on a float64 copy (``from_config`` plus the
    weights), so a float32 layer or model is checked as the same function in float64.

    * A **layer** (built-in, or any custom :class:`cnn.layers.Layer` subclass, registered or
      not; multi-input layers such as ``layers.Add`` take a list ``x``): the scalar is
      ``C = sum(output * r)`` with ``r`` a fixed standard-normal array of the output's shape,
      drawn from ``seed``. The analytic gradients are the layer's own: ``backward(r)`` for
      ``dC/dx`` and ``layer.grads`` for the parameters.
    * A **model** (:class:`cnn.Sequential` or a graph :class:`cnn.Model`, compiled or not):
      the scalar is the model's loss when it is compiled; otherwise cross-entropy when the
      output is a softmax over ``(classes,)``, else ``C = sum(output * r)``. The parameter
      gradients come from ``model.compute_gradients``; ``dC/dx`` comes from the same engine
      pass, through an identity layer with a zero offset put in front of the copy (its
      gradient is ``dC/dx``, and every layer then computes its input gradient).

    Each checked entry ``v`` of an input or parameter is compared with
    ``(C(v + eps) - C(v - eps)) / (2 eps)``; it passes when
    ``|analytic - numeric| <= atol + rtol * |numeric|``. Kinks: where the one-sided slopes
    ``(C(v + eps) - C(v)) / eps`` and ``(C(v) - C(v - eps)) / eps`` differ by more than the
    tolerance (a ReLU at exactly 0, as on the blank background of an image with zero biases,
    or a max-pool tie, within ``eps`` of the point), the entry passes when the analytic value
    lies between them (a subgradient); the row counts such entries. A wrong backward at a
    smooth point has equal one-sided slopes and fails.

    Randomness: the forward passes run in training mode (the mode ``backward`` follows), and
    the generator the layers draw from (a layer copy's own, a model copy's ``rng``) is reset to
    one state before every forward pass, so Dropout draws the same mask every time and the
    audit checks exactly the function whose gradient the backward pass computed.

    Max-pooling: where two cells of a window tie, the maximum is not differentiable; with
    several ties in one loss the subgradient rule above can still fail. For a sharp audit
    pass inputs whose values are distinct by far more than ``eps`` (e.g. a permutation of
    ``arange(size)`` times 0.01, or continuous random values).

    Parameters
    ----------
    layer_or_model : cnn.layers.Layer, cnn.Sequential or cnn.Model
        A layer that is not built yet is built for ``x`` (weights from ``seed``).
    x : ndarray of shape ``(N, *input_shape)``, N >= 1, or a list of them for a multi-input layer
        Real, finite values; cast to float64.
    y : ndarray, optional
        Models only: labels for the loss, ``(N,)`` class ids or ``(N, *output_shape)``
        targets. Default: random class ids from ``seed`` when the loss takes them. Not allowed
        when the loss is ``sum(output * r)`` (layers, uncompiled models without softmax).
    eps : float > 0, default 1e-6
        Central-difference step.
    atol, rtol : float >= 0, default 1e-6 and 1e-4
        The pass rule above. In float64 the differences' own error is about 1e-9 of the
        loss for these defaults, and a gradient off by 1% fails.
    max_entries : int >= 1, default 200
        A tensor with more entries has this many of them checked, drawn at random without
        replacement from ``seed`` (the row's ``indices``); smaller tensors are checked whole.
        Each checked entry costs two forward passes (two ``compute_gradients`` for a model).
    seed : int >= 0, default 0
        Seeds ``r``, default labels, the sample of entries and unbuilt weights.
    raise_exception : bool, default False
        Raise AssertionError with the table when the audit fails.

    Returns
    -------
    GradcheckReport
        ``.passed``, ``.rows`` (inputs, then parameters), ``.table()``; ``str()`` is the table.

    Raises
    ------
    TypeError, ValueError
        Bad arguments (named in the message).
    AssertionError
        With ``raise_exception``, when a row fails.

    Examples
    --------
    >>> import numpy as np, cnn
    >>> from cnn import layers
    >>> x = np.random.default_rng(0).standard_normal((2, 1, 6, 6))
    >>> cnn.gradcheck(layers.Conv2D(3, 3, activation="tanh"), x).passed
    True
    """
    eps = V.real(eps, "eps", low=0.0, low_open=True)
    atol = V.real(atol, "atol", low=0.0)
    rtol = V.real(rtol, "rtol", low=0.0)
    max_entries = V.integer(max_entries, "max_entries", 1)
    seed = V.integer(seed, "seed", 0)
    raise_exception = V.boolean(raise_exception, "raise_exception")
    settings = _Settings(eps, atol, rtol, max_entries, seed)
    if isinstance(layer_or_model, Model):
        report = _audit_model(layer_or_model, x, y, settings)
    elif isinstance(layer_or_model, Layer):
        if y is not None:
            raise ValueError(f"y must be None for a layer (the audit differentiates "
                             f"sum(output * r)), got {V.short_repr(y, 80)}")
        report = _audit_layer(layer_or_model, x, settings)
    else:
        raise TypeError(f"layer_or_model must be a cnn.layers.Layer, cnn.Sequential or cnn.Model, "
                        f"got {type(layer_or_model).__name__}")
    if raise_exception and not report.passed:
        raise AssertionError(f"gradcheck failed\n{report.table()}")
    return report


class _Settings:
    def __init__(self, eps, atol, rtol, max_entries, seed):
        self.eps, self.atol, self.rtol = eps, atol, rtol
        self.max_entries, self.seed = max_entries, seed

    def report(self, subject, loss, rows):
        return GradcheckReport(subject, loss, rows, self.eps, self.atol, self.rtol,
                               self.max_entries, self.seed)

    def sample(self, size, k):
        """The sorted flat indices checked in a tensor of ``size`` entries (row ``k``)."""
        if size <= self.max_entries:
            return np.arange(size, dtype=np.int64)
        rng = np.random.default_rng([self.seed, k])
        return np.sort(rng.choice(size, self.max_entries, replace=False)).astype(np.int64)


# ----------------------------------------------------------------------------- the comparison


def _row(name, target, analytic, loss, settings, k):
    """Compare ``analytic`` (dC/d target) with central differences of ``loss()`` in the entries
    of ``target`` (a C-contiguous float64 array the loss reads, perturbed in place)."""
    shape = target.shape
    if not isinstance(analytic, np.ndarray) or analytic.shape != shape:
        got = analytic.shape if isinstance(analytic, np.ndarray) else type(analytic).__name__
        return GradcheckRow(name, shape, np.zeros(0, np.int64), target.size, np.nan, np.nan, None,
                            False, note=f"the analytic gradient is {got}, wanted shape {shape}")
    indices = settings.sample(target.size, k)
    flat = target.reshape(-1)
    assert np.shares_memory(flat, target)
    expected = analytic.astype(np.float64).reshape(-1)[indices]
    base = loss()
    up, down = _perturbed(flat, indices, loss, settings.eps)
    numeric = (up - down) / (2 * settings.eps)
    right, left = (up - base) / settings.eps, (base - down) / settings.eps
    lo, hi = np.minimum(left, right), np.maximum(left, right)
    # a kink (ReLU at 0, a max-pool tie) at the point: the one-sided slopes differ, and the
    # analytic gradient must be one of them or between them (a subgradient)
    kink = (hi - lo) > settings.atol + settings.rtol * np.maximum(np.abs(lo), np.abs(hi))
    abs_err = np.where(kink, np.maximum(0.0, np.maximum(lo - expected, expected - hi)),
                       np.abs(expected - numeric))
    slack = abs_err - (settings.atol + settings.rtol * np.where(kink, np.abs(hi), np.abs(numeric)))
    scale = np.maximum(np.maximum(np.abs(expected), np.abs(numeric)), settings.atol)
    rel_err = np.divide(abs_err, scale, out=np.zeros_like(abs_err), where=scale > 0)
    passed = bool(np.all(slack <= 0))
    if indices.size:
        bad = np.isnan(slack)
        worst = int(np.argmax(bad)) if bad.any() else int(np.argmax(slack if not passed else abs_err))
        worst_index = np.unravel_index(indices[worst], shape)
        max_abs, max_rel = float(np.max(abs_err)), float(np.max(rel_err))
    else:
        worst_index, max_abs, max_rel = None, 0.0, 0.0
    return GradcheckRow(name, shape, indices, target.size, max_abs, max_rel, worst_index, passed,
                        kinks=int(np.count_nonzero(kink)))


def _perturbed(flat, indices, loss, eps):
    """``(loss at v + eps, loss at v - eps)`` for each checked entry ``v``."""
    up, down = np.empty(len(indices)), np.empty(len(indices))
    for k, i in enumerate(indices):
        old = flat[i]
        flat[i] = old + eps
        up[k] = loss()
        flat[i] = old - eps
        down[k] = loss()
        flat[i] = old
    return up, down


def _check_deterministic(loss, first, what):
    """RuntimeError unless ``loss()`` gives ``first`` again (to float64 rounding): central
    differences of a forward pass that draws randomness from elsewhere than its generator, or
    keeps state between calls, measure nothing."""
    again = loss()
    if not abs(again - first) <= 1e-9 * max(abs(first), 1.0):
        raise RuntimeError(f"the {what}'s training forward pass is not a function of its inputs "
                           f"and weights: two passes at one point gave losses {first!r} and "
                           f"{again!r}; gradcheck can only check a deterministic forward (draw "
                           f"randomness from the generator given to build)")


# ----------------------------------------------------------------------------- inputs


def _batch(value, name):
    """``value`` as a C-contiguous float64 copy of shape (N, ...), N >= 1, finite."""
    if isinstance(value, (list, tuple)) or value is None:
        raise TypeError(f"{name} must be an array of shape (N, ...), got {type(value).__name__}")
    a = np.asarray(value)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    if a.ndim < 2 or a.shape[0] < 1:
        raise ValueError(f"{name} must be a batch of shape (N, ...) with N >= 1, got shape {a.shape}")
    a = np.array(a, dtype=np.float64, order="C", copy=True)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite, got {int(np.count_nonzero(~np.isfinite(a)))} "
                         f"NaN/inf value(s)")
    return a


def _copy_state(source, copy, what):
    """Copy ``source``'s parameters and buffers (any float dtype) into the float64 ``copy``."""
    for kind in ("params", "buffers"):
        src, dst = getattr(source, kind), getattr(copy, kind)
        if len(src) != len(dst) or any(s.shape != d.shape for s, d in zip(src, dst, strict=True)):
            raise ValueError(f"{what}: its {kind} have shapes {[s.shape for s in src]}, but "
                             f"type(layer).from_config(layer.get_config()) builds "
                             f"{[d.shape for d in dst]}; get_config must return every "
                             f"constructor argument")
        for s, d in zip(src, dst, strict=True):
            np.copyto(d, s)


def _layer_copy(layer):
    """An unbuilt copy of ``layer`` from its config (registration not needed)."""
    try:
        return type(layer).from_config(layer.get_config())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"gradcheck copies {type(layer).__name__} with "
                         f"type(layer).from_config(layer.get_config()), which failed: {exc}") from None


# ----------------------------------------------------------------------------- layers


def _audit_layer(layer, x, settings):
    multi = layer.takes_multiple_inputs
    if multi:
        if not isinstance(x, (list, tuple)) or len(x) < 2:
            raise TypeError(f"x must be a list of at least 2 arrays for {type(layer).__name__}, "
                            f"got {type(x).__name__}")
        xs = [_batch(v, f"x[{i}]") for i, v in enumerate(x)]
        if len({v.shape[0] for v in xs}) != 1:
            raise ValueError(f"x arrays must share the batch size, got shapes {[v.shape for v in xs]}")
        shapes = [v.shape[1:] for v in xs]
    else:
        xs = [_batch(x, "x")]
        shapes = xs[0].shape[1:]
    if layer.built:
        want = layer.input_shapes if multi else layer.input_shape
        if (list(map(tuple, want)) if multi else tuple(want)) != (list(shapes) if multi else shapes):
            raise ValueError(f"x must have items of shape {want} (the layer is built for them), "
                             f"got {shapes}")
    copy = _layer_copy(layer)
    rng = np.random.default_rng(settings.seed)
    try:
        copy.build(list(shapes) if multi else shapes, rng=rng, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"x does not fit {type(layer).__name__}: {exc}") from None
    if layer.built:
        _copy_state(layer, copy, type(layer).__name__)
    copy.need_input_grad = True
    state = rng.bit_generator.state
    arg = xs if multi else xs[0]

    def forward():
        rng.bit_generator.state = state  # the same dropout mask on every pass
        return copy.forward(arg, training=True)

    out = forward()
    want = (xs[0].shape[0],) + tuple(copy.output_shape)
    if not isinstance(out, np.ndarray) or out.shape != want:
        raise ValueError(f"{type(layer).__name__}.forward returned "
                         f"{getattr(out, 'shape', type(out).__name__)}, wanted shape {want}")
    r = np.random.default_rng([settings.seed, 2 ** 32]).standard_normal(want)
    dx = copy.backward(r.copy())
    dxs = list(dx) if multi and isinstance(dx, (list, tuple)) else [dx]
    grads = [np.array(g, dtype=np.float64) for g in copy.grads]

    def loss():
        return float(np.sum(forward() * r))

    _check_deterministic(loss, float(np.sum(out * r)), type(layer).__name__)

    rows = []
    names = [f"input[{i}]" for i in range(len(xs))] if multi else ["input"]
    if len(dxs) != len(xs):
        dxs = [f"a list of {len(dxs)} gradients"] * len(xs)
    for k, (name, target, g) in enumerate(zip(names, xs, dxs, strict=True)):
        rows.append(_row(name, target, g, loss, settings, k))
    for k, (name, p, g) in enumerate(zip(copy.param_names, copy.params, grads, strict=True)):
        rows.append(_row(name, p, g, loss, settings, len(xs) + k))
    return settings.report(repr(layer), "sum(output * r), r ~ N(0, 1) of the output's shape", rows)


# ----------------------------------------------------------------------------- models


class _InputProbe(Layer):
    """The identity ``x + offset`` with a zero ``offset`` of the whole batch's shape
    ``(batch, *input_shape)``: put first in a model copy, its gradient is ``dC/dx``."""

    param_names = ("offset",)

    def __init__(self, batch):
        super().__init__()
        self.batch = batch
        self._cache = None

    def compute_output_shape(self, input_shape):
        return V.item_shape(input_shape)

    def _create_params(self, rng):
        shape = (self.batch,) + self.input_shape
        self.params = [np.zeros(shape, dtype=self.dtype)]
        self.grads = [np.zeros(shape, dtype=self.dtype)]

    def forward(self, x, training=False):
        self._check_input(x)
        if x.shape[0] != self.batch:
            raise ValueError(f"the audit's model copy takes batches of {self.batch}, got {x.shape[0]}")
        self._cache = x.shape[0] if training else None
        return x + self.params[0]

    def backward(self, grad):
        self._check_grad(grad, self._cached())
        np.copyto(self.grads[0], grad)
        return grad if self.need_input_grad else None

    def get_config(self):
        return {"batch": self.batch}


class _WeightedSum(_losses.Loss):
    """``C = sum(y_pred * y_true)``: the audit passes ``r`` as ``y_true``."""

    name = "weighted_sum"

    def forward(self, y_pred, y_true):
        return float(np.sum(y_pred * y_true))

    def backward(self, y_pred, y_true):
        return np.array(y_true, dtype=y_pred.dtype, copy=True)


def _calls(model):
    """``[(layer index, [tensor, ...]), ...]``: tensor 0 is the input, ``k + 1`` call k's output."""
    if isinstance(model, Sequential):
        return [(i, [i]) for i in range(len(model.layers))]
    try:
        config = model.get_config()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"gradcheck copies a graph model through model.get_config(), which "
                         f"failed: {exc}") from None
    return [(call["layer"], list(call["inputs"])) for call in config["calls"]]


def _model_copy(model, input_shape, batch):
    """A float64 copy of ``model`` behind an :class:`_InputProbe`, its weights copied; returns
    ``(copy, names, nodes)``: ``names[j]`` is the audit's name of the copy's parameter ``j``,
    ``nodes`` the copy's calls in the order the engine runs them (:func:`cnn.graph.plan`)."""
    copies = [_layer_copy(layer) for layer in model.layers]
    inputs = Input(input_shape)
    probe = _InputProbe(batch)
    tensors = [probe(inputs)]
    for index, refs in _calls(model):
        layer = copies[index]
        args = [tensors[t] for t in refs]
        tensors.append(layer(args if layer.takes_multiple_inputs else args[0]))
    copy = Model(inputs, tensors[-1], seed=model.seed, dtype="float64", name=model.name)
    origin = {id(c): i for i, c in enumerate(copies)}
    for source, target in zip(model.layers, copies, strict=True):
        if source.built:
            _copy_state(source, target, f"layer {origin[id(target)]} ({type(source).__name__})")
    names = []
    for layer in copy.layers:
        for pname in layer.param_names:
            names.append("input" if layer is probe else f"{origin[id(layer)]}.{pname}")
    return copy, names, plan(inputs, tensors[-1])


def _output_layer(model):
    if isinstance(model, Sequential) or not model.layers:
        return model.layers[-1] if model.layers else None
    return model.layers[_calls(model)[-1][0]]


def _audit_model(model, x, y, settings):
    if not model.layers:
        raise ValueError("the model has no layers to check")
    x = _batch(x, "x")
    if model.built and x.shape[1:] != tuple(model.input_shape):
        raise ValueError(f"x must have shape (N, {', '.join(map(str, model.input_shape))}) for "
                         f"this model, got {x.shape}")
    try:
        copy, names, nodes = _model_copy(model, x.shape[1:], x.shape[0])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"x of shape {x.shape} does not fit the model: {exc}") from None
    n, out_shape = x.shape[0], tuple(copy.output_shape)
    last = _output_layer(model)
    softmax = getattr(getattr(last, "activation", None), "name", None) == "softmax"
    if model.loss is not None:
        loss, what = model.loss, f"the model's {model.loss.name} loss (batch mean)"
    elif softmax and len(out_shape) == 1:
        loss, what = _losses.CrossEntropy(), "cross_entropy (batch mean; the model is not compiled)"
    else:
        loss = _WeightedSum()
        what = "sum(output * r), r ~ N(0, 1) of the output's shape (the model is not compiled)"
    copy.compile(loss=loss, optimizer="sgd")
    if isinstance(loss, _WeightedSum):
        if y is not None:
            raise ValueError("y must be None for an uncompiled model without a softmax output "
                             "(the audit differentiates sum(output * r)); compile the model to "
                             "check its loss on y")
        y = np.random.default_rng([settings.seed, 2 ** 32]).standard_normal((n,) + out_shape)
    elif y is None:
        if len(out_shape) != 1:
            raise ValueError(f"y is needed: the model's outputs have shape (N, "
                             f"{', '.join(map(str, out_shape))}), so no class ids can stand in")
        y = np.random.default_rng([settings.seed, 2 ** 32 + 1]).integers(0, out_shape[0], n)
    state = copy.rng.bit_generator.state

    def gradients():
        copy.rng.bit_generator.state = state  # the same dropout mask on every pass
        return copy.compute_gradients(x, y)

    engine_loss, grads = gradients()  # validates y (errors name it)
    analytic = list(grads.values())  # the copy's params order

    def loss_value():
        # The layers' training forward in the engine's order (so Dropout draws its masks in
        # the same order), and the loss the engine differentiates: from the logits on the
        # fused softmax + cross-entropy path.
        copy.rng.bit_generator.state = state
        values = {nodes[0].inputs[0].id: x}
        for k, node in enumerate(nodes):
            args = [values[t.id] for t in node.inputs]
            arg = args if node.layer.takes_multiple_inputs else args[0]
            if k == len(nodes) - 1 and copy.fused_softmax_cross_entropy:
                return float(loss.forward_from_logits(node.layer.forward_preactivation(arg, True), y))
            values[node.output.id] = node.layer.forward(arg, True)
        return float(loss.forward(values[nodes[-1].output.id], y))

    _check_deterministic(loss_value, engine_loss, "model")

    # perturbing x is perturbing the probe's input (x + 0)
    targets = [x if name == "input" else p for name, p in zip(names, copy.params, strict=True)]
    rows = [_row(name, target, g, loss_value, settings, k)
            for k, (name, target, g) in enumerate(zip(names, targets, analytic, strict=True))]
    return settings.report(_describe(model), what, rows)


def _describe(model):
    kind = "Sequential" if isinstance(model, Sequential) else "Model"
    layers = ", ".join(type(layer).__name__ for layer in model.layers)
    return f"{kind} {model.name!r} [{layers}]"
