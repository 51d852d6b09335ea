"""``Sequential``: a stack of layers trained as one network.

The forward pass runs the layers in order; the backward pass runs them in reverse from the
loss gradient ``dC/d output`` (the seed's back-propagation, one batch at a time). When the last
layer ends in a softmax and the loss is cross-entropy, the model takes the fused shortcut
``dC/dz = (softmax(z) - y) / N`` from the logits ``z`` (stable, and no Jacobian); every other
pairing (e.g. the seed's softmax + MSE) goes through the activation's own backward, the
Jacobian-vector product for softmax. Both give the same gradient.
"""

import json
import threading

import numpy as np

from . import _interrupt
from . import layers as _layers
from . import losses as _losses
from . import optimizers as _optimizers

__all__ = ["Sequential", "HookHandle"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _check_seed(seed):
    if seed is None:
        return int(np.random.SeedSequence().entropy % (2 ** 63))
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be None or an int >= 0, got {seed!r} of type {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be None or an int >= 0, got {seed}")
    return int(seed)


def _bool_arg(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def _check_finite_as(w, dtype, what, hint=""):
    """ValueError unless every value of ``w`` is finite once cast to ``dtype`` (1e39 is finite
    in float64 but inf in float32)."""
    if w.dtype.kind != "f" or not w.size:
        return  # integers are finite in float32 and float64
    with np.errstate(over="ignore", invalid="ignore"):
        cast = w if w.dtype == dtype else w.astype(dtype)
        bad = int(np.count_nonzero(~np.isfinite(cast)))
    if bad:
        raise ValueError(f"{what} must be finite in {np.dtype(dtype)}, got {bad} value(s) that are "
                         f"NaN or inf{' there' if w.dtype != dtype else ''}{hint}")


def _positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {value!r} of type {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


class HookHandle:
    """Returned by ``register_*_hook``: :meth:`remove` unregisters the hook (idempotent)."""

    def __init__(self, hooks, hook):
        self._hooks = hooks
        self.hook = hook
        hooks.append(hook)

    def remove(self):
        for i, h in enumerate(self._hooks):
            if h is self.hook:
                del self._hooks[i]
                return


class Sequential:
    """A linear stack of layers.

    Parameters
    ----------
    layers : iterable of cnn.layers.Layer, optional
    input_shape : tuple of int, optional
        Shape of one input item without the batch axis, e.g. ``(1, 28, 28)``. When given the
        model is built at once (so :meth:`summary` works); otherwise on the first data.
    seed : int >= 0, optional
        Seeds the model's generator, the one source of initial weights and dropout masks (and,
        through :meth:`fit`'s default, of the shuffling). None draws a seed from the OS and
        records it in ``model.seed``.
    dtype : {"float32", "float64"}, default "float32"
        Dtype of parameters and computations; inputs are cast to it.
    name : str, default "sequential"

    Attributes
    ----------
    layers : list of Layer
    rng : numpy.random.Generator
    loss, optimizer : set by :meth:`compile`
    history : cnn.callbacks.History of the last :meth:`fit`, or None
    stop_training : bool
        A callback sets it to end :meth:`fit` after the current epoch.

    Notes
    -----
    Thread safety: :meth:`predict`, :meth:`evaluate`, :meth:`train_step` and the steps of
    :meth:`fit` take the model's lock, so calls from several Python threads are safe and each
    sees whole training steps (they run one at a time on one model; different models run in
    parallel). Layers used on their own are not thread-safe (they keep the last forward pass).
    Processes: use the multiprocessing "spawn" (or "forkserver") context; forking a process
    after cnn's OpenMP kernels ran can hang the child (GNU libgomp).
    """

    def __init__(self, layers=None, input_shape=None, seed=None, dtype="float32", name="sequential"):
        self.seed = _check_seed(seed)
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
        if self.dtype not in _FLOATS:
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self.name = name
        self.rng = np.random.default_rng(self.seed)
        self.layers = []
        self.input_shape = None
        self.built = False
        self.loss = None
        self.optimizer = None
        self.history = None
        self.stop_training = False
        # Where the last fit left off: {"epoch", "seed", "shuffle_rng"}; saved with the model
        # so that fit(initial_epoch=...) resumes the same shuffling.
        self.train_state = None
        self._lock = threading.RLock()
        self._checked = None
        self._fused = False
        self._gradient_hooks = []
        self._layer_hooks = []
        if layers is not None:
            if isinstance(layers, _layers.Layer) or isinstance(layers, (str, bytes)):
                raise TypeError("layers must be an iterable of Layer objects, got a single "
                                f"{type(layers).__name__}")
            for layer in layers:
                self.add(layer)
        if input_shape is not None:
            self.build(input_shape)

    # -- structure ------------------------------------------------------------------------

    def add(self, layer):
        """Append ``layer`` (built at once if the model already is)."""
        if not isinstance(layer, _layers.Layer):
            raise TypeError(f"layer must be a cnn.layers.Layer, got {layer!r} of type {type(layer).__name__}")
        if any(layer is other for other in self.layers):
            raise ValueError(f"layer {layer!r} is already in this model; create a new instance")
        self.layers.append(layer)
        if self.built:
            try:
                layer.build(self.output_shape, rng=self.rng, dtype=self.dtype)
            except (TypeError, ValueError) as exc:
                self.layers.pop()
                raise type(exc)(f"layer {len(self.layers)} ({type(layer).__name__}): {exc}") from None
            self._finish_build()
        return self

    def build(self, input_shape):
        """Build every layer for items of shape ``input_shape`` (per item, no batch axis)."""
        shape = _layers._shape(input_shape, "input_shape")
        if not self.layers:
            raise ValueError("cannot build a Sequential without layers; add some first")
        self.input_shape = shape
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.build(shape, rng=self.rng, dtype=self.dtype)
            except ValueError as exc:
                raise ValueError(f"layer {i} ({type(layer).__name__}): {exc}") from None
        self._finish_build()

    def _finish_build(self):
        seen_params = False
        for layer in self.layers:
            layer.need_input_grad = seen_params
            seen_params = seen_params or bool(layer.params)
        self.output_shape = self.layers[-1].output_shape
        self.built = True
        self._params = [p for layer in self.layers for p in layer.params]
        self._grads = [g for layer in self.layers for g in layer.grads]
        self._checked = None
        self._update_fused()

    def _ensure_built(self, x):
        if not self.built:
            if x.ndim < 2:
                raise ValueError(f"x must be a batch (N, ...), got shape {x.shape}")
            self.build(x.shape[1:])

    def _update_fused(self):
        last = self.layers[-1] if self.layers else None
        act = getattr(last, "activation", None)
        self._fused = (self.loss is not None and getattr(self.loss, "has_logits_path", False)
                       and act is not None and act.name == "softmax"
                       and callable(getattr(last, "forward_preactivation", None)))

    def compile(self, loss="cross_entropy", optimizer="sgd"):
        """Choose the loss and the optimizer.

        Parameters
        ----------
        loss : str, dict or cnn.losses.Loss
            ``"cross_entropy"`` or ``"mse"`` (the seed's), see :func:`cnn.losses.get`.
        optimizer : str, dict or cnn.optimizers.Optimizer
            ``"sgd"``, ``"adam"`` or an instance, see :func:`cnn.optimizers.get`.

        Raises
        ------
        ValueError
            The model is built and its output cannot feed the loss: both built-in losses need
            outputs of shape ``(N, classes)``, so e.g. a model ending in Conv2D or MaxPool2D
            needs ``Flatten()`` and ``Dense(classes)`` at the end. (A model built later, on its
            first data, is checked then, by :meth:`train_step`, :meth:`fit`, :meth:`evaluate`
            and :meth:`compute_gradients`.) The model is left as it was.
        """
        loss = _losses.get(loss)
        optimizer = _optimizers.get(optimizer)
        if self.built:
            self._check_output_fits_loss("compile", loss)
        return self._set_loss_and_optimizer(loss, optimizer)

    def _set_loss_and_optimizer(self, loss, optimizer):
        """Install already-resolved ``loss`` and ``optimizer`` objects (no output check)."""
        self.loss = loss
        self.optimizer = optimizer
        if self.layers:
            self._update_fused()
        return self

    def _check_output_fits_loss(self, what, loss=None):
        """ValueError naming ``what``, the output shape and the last layer when the built
        model's outputs ``(N, *output_shape)`` cannot feed ``loss`` (default: ``self.loss``)."""
        loss = self.loss if loss is None else loss
        try:
            loss.check_output_shape(self.output_shape)
        except ValueError as exc:
            hint = "; end the model with Flatten() and Dense(classes)" if len(self.output_shape) > 1 else ""
            raise ValueError(f"{what}: {exc} from this model's last layer, "
                             f"{self.layers[-1]!r}{hint}") from None

    @property
    def compiled(self):
        return self.loss is not None and self.optimizer is not None

    @property
    def fused_softmax_cross_entropy(self):
        """True when training takes the fused ``(s - y) / N`` path."""
        return bool(self.layers) and self._fused

    # -- input checks ---------------------------------------------------------------------

    def _check_x(self, x, name="x"):
        """``x`` as a C-contiguous array of the model dtype, shape (N, *input_shape), finite."""
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        if x.dtype.kind not in "iuf":
            raise TypeError(f"{name} must be a real numeric array, got dtype {x.dtype}")
        self._ensure_built(x)
        want = len(self.input_shape) + 1
        if x.ndim != want or x.shape[1:] != self.input_shape:
            raise ValueError(f"{name} must have shape (N, {', '.join(map(str, self.input_shape))}) "
                             f"for this model, got {x.shape}")
        x = np.ascontiguousarray(x, dtype=self.dtype)
        if not np.isfinite(x).all():
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise ValueError(f"{name} must be finite, got {bad} NaN/inf value(s)")
        return x

    def _check_y(self, y, n, name="y"):
        """Class ids (N,) in range, or targets of shape (N, *output_shape), finite."""
        if not isinstance(y, np.ndarray):
            y = np.asarray(y)
        out = self.output_shape
        if y.ndim == 1 and len(out) == 1:
            if y.dtype.kind not in "iu":
                raise TypeError(f"{name} of shape {y.shape} must hold integer class ids, got dtype {y.dtype}")
            if y.shape[0] != n:
                raise ValueError(f"{name} has {y.shape[0]} labels but x has {n} items")
            if n and (y.min() < 0 or y.max() >= out[0]):
                raise ValueError(f"{name} must hold class ids in [0, {out[0]}), got values in "
                                 f"[{y.min()}, {y.max()}]")
            return y
        if y.shape[1:] != out or y.ndim != len(out) + 1:
            raise ValueError(f"{name} must be class ids of shape (N,) or targets of shape "
                             f"(N, {', '.join(map(str, out))}), got {y.shape}")
        if y.shape[0] != n:
            raise ValueError(f"{name} has {y.shape[0]} rows but x has {n} items")
        if y.dtype.kind not in "biuf":
            raise TypeError(f"{name} targets must be numeric, got dtype {y.dtype}")
        y = np.ascontiguousarray(y, dtype=self.dtype)
        if not np.isfinite(y).all():
            raise ValueError(f"{name} must be finite, got NaN/inf values")
        return y

    def _check_batch_size(self, batch_size):
        return _positive_int(batch_size, "batch_size")

    def _require_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f"{what} needs a loss and an optimizer: call "
                               f"model.compile(loss=..., optimizer=...) first")

    # -- hooks ----------------------------------------------------------------------------

    def register_gradient_hook(self, hook):
        """Call ``hook(grads)`` in every :meth:`train_step`, after the gradients are computed and
        before the optimizer uses them.

        Parameters
        ----------
        hook : callable
            Gets ``model.grads`` (list of ndarray, aligned with ``model.params``) and may change
            them in place (clipping, scaling, an all-reduce). Its return value is ignored.

        Returns
        -------
        HookHandle
            ``handle.remove()`` unregisters the hook.
        """
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        return HookHandle(self._gradient_hooks, hook)

    def register_layer_hook(self, hook):
        """Call ``hook(event, index, layer)`` around every layer's forward and backward pass.

        ``event`` is ``"forward_begin"``, ``"forward_end"``, ``"backward_begin"`` or
        ``"backward_end"``; ``index`` is the layer's position in ``model.layers``. Hooks run in
        :meth:`forward_backward` (so in :meth:`train_step` and ``fit``), :meth:`predict` and
        :meth:`evaluate`, in registration order; the per-layer breakdown of ``python -m
        cnn.bench`` times layers this way. With no hooks the loops pay nothing for them.

        Returns
        -------
        HookHandle
            ``handle.remove()`` unregisters the hook.
        """
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        return HookHandle(self._layer_hooks, hook)

    def _notify(self, event, index, layer):
        for hook in tuple(self._layer_hooks):
            hook(event, index, layer)

    # -- forward / backward ---------------------------------------------------------------

    def _forward(self, x, training, layers=None):
        layers = self.layers if layers is None else layers
        if not self._layer_hooks:
            for layer in layers:
                x = layer.forward(x, training)
            return x
        for i, layer in enumerate(layers):
            self._notify("forward_begin", i, layer)
            x = layer.forward(x, training)
            self._notify("forward_end", i, layer)
        return x

    def _backward_layers(self, grad, stop):
        """Backward through ``layers[stop-1], ..., layers[0]`` from ``grad``."""
        hooks = bool(self._layer_hooks)
        for i in range(stop - 1, -1, -1):
            if grad is None:  # nothing before this point has parameters
                break
            layer = self.layers[i]
            if hooks:
                self._notify("backward_begin", i, layer)
            grad = layer.backward(grad)
            if hooks:
                self._notify("backward_end", i, layer)

    def _outputs_and_loss(self, x, y, training):
        """Forward pass; returns ``(outputs, loss)``. On the logits path (chosen at
        :meth:`compile`) the last layer is asked for its pre-activation ``z`` and the loss is
        taken from it; the outputs are still ``activation(z)``."""
        if not self._fused:
            out = self._forward(x, training)
            return out, self.loss.forward(out, y)
        last = len(self.layers) - 1
        h = self._forward(x, training, self.layers[:-1])
        layer = self.layers[last]
        if self._layer_hooks:
            self._notify("forward_begin", last, layer)
        z = layer.forward_preactivation(h, training)
        out = layer.activation.forward(z)
        if self._layer_hooks:
            self._notify("forward_end", last, layer)
        return out, (z, self.loss.forward_from_logits(z, y))

    def _forward_backward_checked(self, x, y):
        """Training forward + loss + backward on checked arrays: ``(loss, outputs)``."""
        out, loss = self._outputs_and_loss(x, y, True)
        n = len(self.layers)
        if self._fused:
            z, loss = loss
            last = self.layers[-1]
            if self._layer_hooks:
                self._notify("backward_begin", n - 1, last)
            grad = last.backward_preactivation(self.loss.backward_from_logits(z, y))
            if self._layer_hooks:
                self._notify("backward_end", n - 1, last)
            self._backward_layers(grad, n - 1)
        else:
            self._backward_layers(self.loss.backward(out, y), n)
        return float(loss), out

    def forward_backward(self, x, y, return_outputs=False):
        """Training-mode forward pass, loss and backward pass: fills every gradient.

        The first part of :meth:`train_step`; nothing is updated. ``model.grads`` then hold the
        gradients of the batch-mean loss, aligned with ``model.params``. A strategy or a user
        loop may act on them (all-reduce, clipping) before :meth:`apply_gradients`.

        Parameters
        ----------
        x : ndarray of shape (B, *input_shape), B >= 1
        y : ndarray of shape (B,) (int class ids) or (B, *output_shape)
            Validated as in :meth:`train_step` (shapes, dtypes, finite values, class range).
        return_outputs : bool, default False
            Also return the model's outputs (probabilities for a softmax model).

        Returns
        -------
        loss : float
            The batch-mean loss (before any update).
        outputs : ndarray of shape (B, *output_shape), only with ``return_outputs``
        """
        self._require_compiled("forward_backward")
        x, y = self._check_batch(x, y, "x", "y")
        with self._lock:
            loss, out = self._forward_backward_checked(x, y)
        return (loss, out) if return_outputs else loss

    def apply_gradients(self):
        """The gradient hooks (see :meth:`register_gradient_hook`), then the optimizer's update
        of every parameter from ``model.grads``: the last part of :meth:`train_step`.

        The update is atomic with respect to Ctrl-C: a KeyboardInterrupt arriving during it is
        raised once every parameter (and the optimizer state) is updated, never in between."""
        self._require_compiled("apply_gradients")
        with self._lock:
            self._apply_gradients_locked()

    def _apply_gradients_locked(self):
        for hook in tuple(self._gradient_hooks):
            hook(list(self._grads))
        with _interrupt.deferred():  # Ctrl-C: every parameter updated, or none
            self.optimizer.step(self._params, self._grads)

    def zero_grads(self):
        """Set every gradient to 0 (a process that trains on no row of a batch contributes
        zeros to a distributed step)."""
        self._require_built("zero_grads")
        for g in self._grads:
            g.fill(0)

    @property
    def params(self):
        """The trainable parameters (list of ndarray, layer order, ``weight`` before ``bias``),
        the arrays themselves: the optimizer updates them in place."""
        self._require_built("params")
        return list(self._params)

    @property
    def grads(self):
        """The gradients matching :attr:`params` (filled by :meth:`forward_backward`)."""
        self._require_built("grads")
        return list(self._grads)

    @property
    def param_names(self):
        """Keys of :attr:`params` as in :meth:`state_dict` (``"0.weight"``, ...)."""
        self._require_built("param_names")
        return [key for key, _ in self._named_params()]

    def _train_batch(self, x, y):
        """One step on checked arrays: returns (loss, output probabilities)."""
        with self._lock:
            loss, out = self._forward_backward_checked(x, y)
            self._apply_gradients_locked()
            return loss, out

    def compute_gradients(self, x, y):
        """Loss and batch-mean gradients of every parameter for one batch, without updating.

        Runs the training-mode forward pass (dropout on) and the same backward pass as
        :meth:`train_step`.

        Returns
        -------
        loss : float
        grads : dict of str -> ndarray
            Copies, keyed like :meth:`state_dict` (``"0.weight"``, ...).
        """
        if self.loss is None:
            raise RuntimeError("compute_gradients needs a loss: call model.compile(loss=...) first")
        x = self._check_x(x)
        if x.shape[0] == 0:
            raise ValueError("x must hold at least one item, got an empty batch")
        self._check_output_fits_loss("compute_gradients")
        y = self._check_y(y, x.shape[0])
        with self._lock:
            loss, _ = self._forward_backward_checked(x, y)
            grads = {f"{i}.{name}": g.copy() for i, layer in enumerate(self.layers)
                     for name, g in zip(layer.param_names, layer.grads)}
        return float(loss), grads

    def _check_batch(self, xb, yb, name_x, name_y):
        """``(x, y)`` of one batch, validated; a batch of the shapes and dtypes last seen only
        has its values checked."""
        key = (type(xb), getattr(xb, "shape", None), getattr(xb, "dtype", None),
               type(yb), getattr(yb, "shape", None), getattr(yb, "dtype", None))
        if key == self._checked and xb.flags.c_contiguous:
            # Shapes and dtypes already validated: only the values are checked.
            if not np.isfinite(xb).all():
                raise ValueError(f"{name_x} must be finite, got NaN/inf values")
            if yb.ndim == 1:
                if yb.min() < 0 or yb.max() >= self.output_shape[0]:
                    raise ValueError(f"{name_y} must hold class ids in [0, {self.output_shape[0]}), "
                                     f"got values in [{yb.min()}, {yb.max()}]")
            elif not np.isfinite(yb).all():
                raise ValueError(f"{name_y} must be finite, got NaN/inf values")
            return xb, yb
        x = self._check_x(xb, name_x)
        if x.shape[0] == 0:
            raise ValueError(f"{name_x} must hold at least one item, got an empty batch")
        self._check_output_fits_loss("train_step")
        y = self._check_y(yb, x.shape[0], name_y)
        if x is xb and y is yb:
            self._checked = key
        return x, y

    def train_step(self, xb, yb):
        """One mini-batch step: :meth:`forward_backward`, the gradient hooks, then
        :meth:`apply_gradients`.

        Parameters
        ----------
        xb : ndarray of shape (B, *input_shape)
            Cast to the model dtype (no copy when it already has it).
        yb : ndarray of shape (B,) (int class ids) or (B, classes)

        Returns
        -------
        float
            The batch-mean loss before the update.
        """
        self._require_compiled("train_step")
        x, y = self._check_batch(xb, yb, "xb", "yb")
        return self._train_batch(x, y)[0]

    # -- inference ------------------------------------------------------------------------

    def _predict_checked(self, x, batch_size):
        n = x.shape[0]
        out = np.empty((n,) + self.output_shape, dtype=self.dtype)
        with self._lock:
            for i in range(0, n, batch_size):
                out[i:i + batch_size] = self._forward(x[i:i + batch_size], False)
        return out

    def predict(self, x, batch_size=256):
        """Outputs of the last layer (probabilities for a softmax model), at inference
        (dropout off).

        Parameters
        ----------
        x : array_like of shape (N, *input_shape)
        batch_size : int >= 1, default 256

        Returns
        -------
        ndarray of shape (N, *output_shape), dtype of the model
        """
        batch_size = self._check_batch_size(batch_size)
        return self._predict_checked(self._check_x(x), batch_size)

    def evaluation_sums(self, x, y, batch_size=256):
        """Inference-mode sums over a data set: what :meth:`evaluate` divides by the count.

        Distributed evaluation adds these over processes before dividing.

        Parameters
        ----------
        x, y, batch_size : as in :meth:`evaluate` (``x`` may be empty here)

        Returns
        -------
        (loss_sum, correct, count) : float, int, int
            ``loss_sum`` is the sum over items of the per-item loss (the batch mean times the
            batch size, batch by batch), ``correct`` the number of argmax hits.
        """
        if self.loss is None:
            raise RuntimeError("evaluation_sums needs a loss: call model.compile(loss=..., optimizer=...) first")
        batch_size = self._check_batch_size(batch_size)
        x = self._check_x(x)
        self._check_output_fits_loss("evaluate")
        y = self._check_y(y, x.shape[0])
        return self._evaluation_sums_checked(x, y, batch_size)

    def _evaluation_sums_checked(self, x, y, batch_size):
        n = x.shape[0]
        total_loss = 0.0
        correct = 0
        labels = y if y.ndim == 1 else None
        with self._lock:
            for i in range(0, n, batch_size):
                xb, yb = x[i:i + batch_size], y[i:i + batch_size]
                out, loss = self._outputs_and_loss(xb, yb, False)
                if self._fused:
                    loss = loss[1]
                total_loss += loss * xb.shape[0]
                if out.ndim == 2:
                    truth = labels[i:i + batch_size] if labels is not None else yb.argmax(axis=1)
                    correct += int(np.count_nonzero(out.argmax(axis=1) == truth))
        return total_loss, correct, n

    def _evaluate_checked(self, x, y, batch_size):
        n = x.shape[0]
        if n == 0:
            raise ValueError("x must hold at least one item to evaluate, got 0")
        total_loss, correct, _ = self._evaluation_sums_checked(x, y, batch_size)
        return {"loss": total_loss / n, "accuracy": correct / n}

    def evaluate(self, x, y, batch_size=256):
        """Mean loss and accuracy over a data set, at inference (dropout off).

        Parameters
        ----------
        x : array_like of shape (N, *input_shape)
        y : class ids (N,) or targets (N, classes)
        batch_size : int >= 1, default 256

        Returns
        -------
        dict
            ``{"loss": float, "accuracy": float}``; accuracy compares the argmax of the output
            with the label (the argmax of a one-hot row).
        """
        if self.loss is None:
            raise RuntimeError("evaluate needs a loss: call model.compile(loss=..., optimizer=...) first")
        batch_size = self._check_batch_size(batch_size)
        x = self._check_x(x)
        self._check_output_fits_loss("evaluate")
        y = self._check_y(y, x.shape[0])
        return self._evaluate_checked(x, y, batch_size)

    # -- training -------------------------------------------------------------------------

    def fit(self, x, y, epochs=1, batch_size=32, validation_data=None, shuffle=True, seed=None,
            verbose=1, callbacks=(), initial_epoch=0, drop_last=True, augment=None, strategy=None):
        """Train; see :meth:`cnn.trainer.Trainer.fit` for every argument.

        Returns
        -------
        cnn.callbacks.History
        """
        from .trainer import Trainer
        return Trainer(self, strategy=strategy).fit(x, y, epochs=epochs, batch_size=batch_size,
                                 validation_data=validation_data, shuffle=shuffle, seed=seed,
                                 verbose=verbose, callbacks=callbacks, initial_epoch=initial_epoch,
                                 drop_last=drop_last, augment=augment)

    # -- weights --------------------------------------------------------------------------

    def _require_built(self, what):
        if not self.built:
            raise ValueError(f"{what} needs a built model: pass input_shape= to Sequential or "
                             f"call model.build(input_shape)")

    def _named_params(self):
        return [(f"{i}.{name}", p) for i, layer in enumerate(self.layers)
                for name, p in zip(layer.param_names, layer.params)]

    def get_weights(self):
        """Copies of all parameters, in layer order (``weight`` before ``bias``)."""
        self._require_built("get_weights")
        return [p.copy() for p in self._params]

    def set_weights(self, weights, allow_nonfinite=False):
        """Copy ``weights`` (as from :meth:`get_weights`) into the parameters, in place.

        Parameters
        ----------
        weights : list of array_like
            One per parameter, of its shape; real numbers, cast to the model dtype.
        allow_nonfinite : bool, default False
            Accept NaN/inf, and values that become inf in the model dtype (1e39 in float32).
            By default they are a ValueError naming the parameter: a model holds finite
            parameters only, so that it can always be saved and loaded back.

        All arrays are checked before any parameter changes.
        """
        self._require_built("set_weights")
        named = self._named_params()
        weights = list(weights)
        if len(weights) != len(named):
            raise ValueError(f"weights must hold {len(named)} arrays ({', '.join(k for k, _ in named)}), "
                             f"got {len(weights)}")
        allow_nonfinite = _bool_arg(allow_nonfinite, "allow_nonfinite")
        arrays = []
        for (key, p), w in zip(named, weights):
            w = np.asarray(w)
            if w.shape != p.shape:
                raise ValueError(f"weights for {key} must have shape {p.shape}, got {w.shape}")
            if w.dtype.kind not in "iuf":
                raise TypeError(f"weights for {key} must be real numbers, got dtype {w.dtype}")
            if not allow_nonfinite:
                _check_finite_as(w, p.dtype, f"weights for {key}",
                                 " (allow_nonfinite=True accepts them)")
            arrays.append(w)
        for (_, p), w in zip(named, arrays):
            np.copyto(p, w, casting="unsafe")

    def state_dict(self):
        """``{"0.weight": array, "0.bias": array, "2.weight": ...}`` (copies), keyed by layer
        index and parameter name."""
        self._require_built("state_dict")
        return {key: p.copy() for key, p in self._named_params()}

    def load_state_dict(self, state, strict=True):
        """Copy a :meth:`state_dict` into the parameters.

        Every missing and unexpected key is listed in one ValueError (with ``strict``; without
        it the keys present are loaded and the rest kept). Shapes must match, and values must
        be finite in the model dtype (as for :meth:`set_weights`).

        Returns
        -------
        (missing, unexpected) : tuple of lists of str
        """
        self._require_built("load_state_dict")
        named = dict(self._named_params())
        missing = [k for k in named if k not in state]
        unexpected = [k for k in state if k not in named]
        if strict and (missing or unexpected):
            raise ValueError(f"state dict does not fit this model: missing keys {missing}, "
                             f"unexpected keys {unexpected}")
        for key, p in named.items():
            if key in state:
                w = np.asarray(state[key])
                if w.shape != p.shape:
                    raise ValueError(f"state[{key!r}] must have shape {p.shape}, got {w.shape}")
                if w.dtype.kind not in "iuf":
                    raise TypeError(f"state[{key!r}] must be real numbers, got dtype {w.dtype}")
                _check_finite_as(w, p.dtype, f"state[{key!r}]")
        for key, p in named.items():
            if key in state:
                np.copyto(p, np.asarray(state[key]), casting="unsafe")
        return missing, unexpected

    def count_params(self):
        self._require_built("count_params")
        return int(sum(p.size for p in self._params))

    # -- description ----------------------------------------------------------------------

    def summary(self, print_fn=print):
        """Print and return a table of layers, output shapes and parameter counts.

        Parameters
        ----------
        print_fn : callable or None
            Called with the table; None prints nothing.

        Returns
        -------
        str
        """
        self._require_built("summary")
        rows = [("#", "Layer", "Output shape", "Params")]
        for i, layer in enumerate(self.layers):
            shape = "(None, " + ", ".join(map(str, layer.output_shape)) + ")"
            rows.append((str(i), repr(layer), shape, f"{layer.count_params():,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]

        def line(r):
            return (f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  "
                    f"{r[3]:>{widths[3]}}").rstrip()

        rule = "=" * len(line(rows[0]).ljust(sum(widths) + 6))
        text = "\n".join(
            [f'Model: "{self.name}"  input (None, {", ".join(map(str, self.input_shape))}), {self.dtype}',
             rule, line(rows[0]), rule]
            + [line(r) for r in rows[1:]]
            + [rule, f"Total params: {self.count_params():,}"])
        if print_fn is not None:
            print_fn(text)
        return text

    def __repr__(self):
        inner = ",\n".join(f"  {layer!r}" for layer in self.layers)
        shape = f", input_shape={self.input_shape}" if self.input_shape else ""
        return f"Sequential([\n{inner}\n]{shape}, seed={self.seed})"

    # -- config / persistence -------------------------------------------------------------

    def get_config(self):
        """JSON-able architecture: layers, input shape, seed, dtype, name."""
        return {"name": self.name, "input_shape": list(self.input_shape) if self.input_shape else None,
                "seed": self.seed, "dtype": self.dtype.name,
                "layers": [_layers.serialize(layer) for layer in self.layers]}

    @classmethod
    def from_config(cls, config):
        """A new model (built if ``input_shape`` is given, not compiled) from :meth:`get_config`."""
        if not isinstance(config, dict):
            raise ValueError(f"model config must be a dict, got {type(config).__name__}")
        expected = {"name", "input_shape", "seed", "dtype", "layers"}
        if set(config) != expected:
            raise ValueError(f"model config must have keys {sorted(expected)}, got {sorted(config)}")
        if not isinstance(config["layers"], list):
            raise ValueError(f"model config 'layers' must be a list, got {type(config['layers']).__name__}")
        built_layers = []
        for i, spec in enumerate(config["layers"]):
            try:
                built_layers.append(_layers.deserialize(spec))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"model config layer {i}: {exc}") from None
        try:
            return cls(built_layers, input_shape=config["input_shape"], seed=config["seed"],
                       dtype=config["dtype"], name=config["name"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model config does not describe a valid model: {exc}") from None

    def to_json(self):
        return json.dumps(self.get_config())

    def save(self, path, include_optimizer=True):
        """Write the model to ``path`` (an ``.npz``, atomically); see :mod:`cnn.serialization`.

        The file is written as ``.<name>.<pid>.<random>.tmp`` beside ``path``, fsync'ed, then
        renamed over ``path``. A temp file left by a process killed mid-save is removed by the
        next save to ``path`` (only once that process is gone; a live one may be mid-save).
        """
        from .serialization import save_model
        save_model(self, path, include_optimizer=include_optimizer)
