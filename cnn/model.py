"""``Model``: a graph of layers trained as one network; :class:`cnn.Sequential` is its chain.

Build a graph model with Keras' functional API::

    inputs = cnn.Input((3, 32, 32))
    h = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    y = layers.Conv2D(16, 3, padding="same")(h)
    h = layers.Activation("relu")(layers.Add()([h, y]))
    outputs = layers.Dense(10, activation="softmax")(layers.Flatten()(h))
    model = cnn.Model(inputs, outputs, seed=0)

The model orders the calls once (:func:`cnn.graph.plan`). The forward pass runs them in that
order; the backward pass runs them in reverse from the loss gradient ``dC/d output`` (the
seed's back-propagation, one batch at a time), and a tensor read by several layers gets the sum
of their gradients. A layer called more than once shares its weights, and its gradients are the
sum over its calls. When the last layer ends in a softmax and the loss is cross-entropy, the
model takes the logits path chosen at :meth:`Model.compile`: the last layer is asked for its
pre-activation ``z`` and the gradient is ``dC/dz = (softmax(z) - y) / N`` (stable, and no
Jacobian); every other pairing (e.g. the seed's softmax + MSE) goes through the activation's
own backward, the Jacobian-vector product for softmax. Both give the same gradient.

The model protocol (what :class:`cnn.Trainer`, :mod:`cnn.serialization`, the bench and the
CLI use): ``validate_data``, ``forward_backward``, ``apply_gradients``, ``zero_grads``,
``evaluation_sums``, ``params``/``grads``/``param_names``, ``named_params``/``named_buffers``,
``state_dict``, ``get_config``/``from_config``/``state_shapes``, ``compile``, ``built``.
"""

import json
import threading

import numpy as np

from . import _inference, _interrupt, _registry, _threads, _train_fusion
from . import _validation as V
from . import graph as _graph
from . import losses as _losses
from . import optimizers as _optimizers
from . import serialization as _serialization
from ._model_checks import ModelChecks
from ._model_config import GraphConfig
from ._model_weights import ModelWeights
from .trainer import Trainer

__all__ = ["Model", "HookHandle"]


def _check_seed(seed):
    seed = V.integer(seed, "seed", 0, optional=True)
    return int(np.random.SeedSequence().entropy % (2 ** 63)) if seed is None else seed


class HookHandle:
    """Returned by ``register_*_hook``: :meth:`remove` unregisters the hook (idempotent)."""

    def __init__(self, hooks, hook):
        self._hooks = hooks
        self.hook = hook
        hooks.append(hook)

    @classmethod
    def add(cls, hooks, hook):
        """Append the callable ``hook`` to ``hooks``; its handle (TypeError for a non-callable)."""
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        return cls(hooks, hook)

    def remove(self):
        for i, h in enumerate(self._hooks):
            if h is self.hook:
                del self._hooks[i]
                return


class _Step:
    """One node of the execution plan, resolved for the loops; ``fused`` is None, or how a
    ReLU or a max-pool is fused into this call (see :mod:`cnn._train_fusion`)."""

    __slots__ = ("layer", "inputs", "output", "frees", "shared", "fused", "partner")

    def __init__(self, layer, inputs, output, shared):
        self.layer, self.inputs, self.output, self.shared = layer, inputs, output, shared
        self.frees = ()
        self.fused = None
        self.partner = None  # the other layer of a fused Conv2D -> MaxPool2D pair


class Model(ModelChecks, GraphConfig, ModelWeights):
    """A network of layers from a symbolic input to a symbolic output (Keras' functional API).

    Parameters
    ----------
    inputs : cnn.graph.SymbolicTensor
        From :func:`cnn.Input`: the one input of the model.
    outputs : cnn.graph.SymbolicTensor
        What the layers called on ``inputs`` (and on each other's outputs) return: the one output.
    seed : int >= 0, optional
        Seeds the model's generator, the one source of initial weights and dropout masks (and,
        through :meth:`fit`'s default, of the shuffling). None draws a seed from the OS and
        records it in ``model.seed``.
    dtype : {"float32", "float64"}, default "float32"
        Dtype of parameters and computations; inputs are cast to it.
    name : str, default "model"

    Attributes
    ----------
    layers : list of Layer
        Each layer once, in the order of its first call in the plan; parameter keys
        (``"3.weight"``) use these indices.
    rng : numpy.random.Generator
    loss, optimizer : set by :meth:`compile`
    history : cnn.callbacks.History of the last :meth:`fit`, or None
    stop_training : bool
        A callback sets it to end :meth:`fit` after the current epoch.

    Raises
    ------
    ValueError
        A graph that is disconnected (a path to the output that does not start at ``inputs``),
        has a cycle, or joins tensors of shapes that do not fit (at the ``Add``/``Concatenate``
        call already), or a layer called on two input shapes.

    Notes
    -----
    Thread safety: :meth:`predict`, :meth:`evaluate`, :meth:`train_step` and the steps of
    :meth:`fit` take the model's lock, so calls from several Python threads are safe and each
    sees whole training steps (they run one at a time on one model; different models run in
    parallel). Layers used on their own are not thread-safe (they keep the last forward pass).
    Processes: use the multiprocessing "spawn" (or "forkserver") context; forking a process
    after cnn's OpenMP kernels ran can hang the child (GNU libgomp).

    Examples
    --------
    A residual block: ``h`` feeds both the branch and the ``Add``, so its gradient is the sum
    of the two paths'.

    >>> import cnn
    >>> from cnn import layers
    >>> inputs = cnn.Input((1, 8, 8))
    >>> h = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    >>> r = layers.Conv2D(4, 3, padding="same")(h)
    >>> h = layers.Activation("relu")(layers.Add()([h, r]))
    >>> outputs = layers.Dense(2, activation="softmax")(layers.Flatten()(h))
    >>> model = cnn.Model(inputs, outputs, seed=0)
    >>> [type(layer).__name__ for layer in model.layers]
    ['Conv2D', 'Conv2D', 'Add', 'Activation', 'Flatten', 'Dense']
    >>> model.count_params()                     # 40 + (4*4*9 + 4) + (2*256 + 2)
    702
    """

    def __init__(self, inputs=None, outputs=None, seed=None, dtype="float32", name="model"):
        self._init_state(seed, dtype, name)
        if type(self) is Model or inputs is not None or outputs is not None:
            if not isinstance(inputs, _graph.SymbolicTensor) or not inputs.is_input:
                raise TypeError(f"inputs must be one cnn.Input(...) tensor, got "
                                f"{type(inputs).__name__}")
            if not isinstance(outputs, _graph.SymbolicTensor):
                raise TypeError(f"outputs must be the symbolic tensor a layer returned, got "
                                f"{type(outputs).__name__}")
            self._set_graph(inputs, outputs)

    def _init_state(self, seed, dtype, name):
        self.seed = _check_seed(seed)
        self.dtype = V.float_dtype(dtype)
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self.name = name
        self.rng = np.random.default_rng(self.seed)
        self.layers = []
        self.input_shape = None
        self.output_shape = None
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
        self._relu_fusion = True  # private switch (tests): fuse ReLUs into BN / Add in training
        self._pool_fusion = True  # private switch (tests): fuse max-pools into convs in training
        self._gradient_hooks = []
        self._layer_hooks = []
        self._steps = []
        self._chain = True
        self._node_caches = {}
        self._inference_plans = {}

    # -- structure ------------------------------------------------------------------------

    def _set_graph(self, inputs, outputs, label=None):
        """Plan the graph, build its layers (in plan order, from the model's generator) and
        resolve the loops' steps. ``label(i, layer)`` names a layer in build errors."""
        nodes = _graph.plan(inputs, outputs)
        layers, uses = [], {}
        for node in nodes:
            if id(node.layer) not in uses:
                layers.append(node.layer)
                uses[id(node.layer)] = 0
            uses[id(node.layer)] += 1
        for node in nodes:
            layer = node.layer
            if layer.built:
                if layer.dtype != self.dtype:
                    raise TypeError(f"{type(layer).__name__} is built with dtype {layer.dtype}, "
                                    f"the model's is {self.dtype}")
                continue
            try:
                layer.build(node.input_shapes, rng=self.rng, dtype=self.dtype)
            except (TypeError, ValueError) as exc:
                where = label(layers.index(layer), layer) if label else f"{type(layer).__name__}"
                raise type(exc)(f"{where}: {exc}") from None
        ids = {inputs.id: 0}
        for k, node in enumerate(nodes):
            ids[node.output.id] = k + 1
        steps = [_Step(n.layer, [ids[t.id] for t in n.inputs], ids[n.output.id],
                       uses[id(n.layer)] > 1) for n in nodes]
        for step, frees in zip(steps, _graph.release_after([s.inputs for s in steps])):
            step.frees = frees
        self._chain = all(len(s.inputs) == 1 and s.inputs[0] == k and not s.shared
                          for k, s in enumerate(steps))
        # a call needs its input gradient when some call before it (on a path) has parameters
        upstream = {0: False}
        for node, step in zip(nodes, steps):
            upstream[step.output] = bool(node.layer.params) or any(upstream[t] for t in step.inputs)
        for layer in layers:
            layer.need_input_grad = False
        for step in steps:
            step.layer.need_input_grad |= any(upstream[t] for t in step.inputs)
        self._inputs, self._outputs, self._nodes = inputs, outputs, nodes
        self.layers = layers
        self._steps = steps
        self.input_shape = inputs.shape
        self.output_shape = outputs.shape
        self.built = True
        self._params = [p for layer in layers for p in layer.params]
        self._grads = [g for layer in layers for g in layer.grads]
        self._checked = None
        self._node_caches = {}
        self._inference_plans = {}
        _train_fusion.assign(steps, self._relu_fusion, self._pool_fusion)
        self._update_fused()

    def _set_relu_fusion(self, enabled):
        """Fuse (True, the default) or not each ReLU that follows a BatchNormalization or an
        Add into it in training and eager forward passes (:mod:`cnn._train_fusion`)."""
        self._relu_fusion = bool(enabled)
        _train_fusion.assign(self._steps, self._relu_fusion, self._pool_fusion)

    def _set_pool_fusion(self, enabled):
        """Fuse (True, the default) or not each MaxPool2D that follows a Conv2D into the conv's
        call in training and eager forward passes (:mod:`cnn._train_fusion`)."""
        self._pool_fusion = bool(enabled)
        _train_fusion.assign(self._steps, self._relu_fusion, self._pool_fusion)

    def _ensure_built(self, x):
        if not self.built:
            if x.ndim < 2:
                raise ValueError(f"x must be a batch (N, ...), got shape {x.shape}")
            self.build(x.shape[1:])

    def build(self, input_shape):
        """A graph model is built when it is made; this checks ``input_shape`` against it."""
        if tuple(input_shape) != self.input_shape:
            raise ValueError(f"this model takes items of shape {self.input_shape}, got "
                             f"{tuple(input_shape)}")

    def _update_fused(self):
        last = self._steps[-1].layer if self._steps else None
        act = getattr(last, "activation", None)
        self._fused = (self.loss is not None and getattr(self.loss, "has_logits_path", False)
                       and act is not None and act.name == "softmax"
                       and callable(getattr(last, "forward_preactivation", None))
                       and not self._steps[-1].shared)

    def compile(self, loss="cross_entropy", optimizer="sgd", *, check_output=True):
        """Choose the loss and the optimizer.

        Parameters
        ----------
        loss : str, dict or cnn.losses.Loss
            ``"cross_entropy"`` or ``"mse"`` (the seed's), see :func:`cnn.losses.get`.
        optimizer : str, dict or cnn.optimizers.Optimizer
            ``"sgd"``, ``"adam"`` or an instance, see :func:`cnn.optimizers.get`.
        check_output : bool, default True
            False installs them without the check below (:func:`cnn.load_model` restores a
            file as it was saved; :meth:`train_step` then reports a misfit).

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
        V.boolean(check_output, "check_output")
        if self.built and check_output:
            self._check_output_fits_loss("compile", loss)
        self.loss = loss
        self.optimizer = optimizer
        self._inference_plans = {}
        if self._steps:
            self._update_fused()
        return self

    @property
    def compiled(self):
        return self.loss is not None and self.optimizer is not None

    @property
    def fused_softmax_cross_entropy(self):
        """True when training takes the fused ``(s - y) / N`` path."""
        return bool(self._steps) and self._fused

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
        return HookHandle.add(self._gradient_hooks, hook)

    def register_layer_hook(self, hook):
        """Call ``hook(event, index, layer)`` around every layer's forward and backward pass.

        ``event`` is ``"forward_begin"``, ``"forward_end"``, ``"backward_begin"`` or
        ``"backward_end"``; ``index`` is the call's position in the plan (for a
        :class:`cnn.Sequential`, the layer's position in ``model.layers``). Hooks run in
        :meth:`forward_backward` (so in :meth:`train_step` and ``fit``), :meth:`predict` and
        :meth:`evaluate`, in registration order; the per-layer breakdown of ``python -m
        cnn.bench`` times layers this way. With no hooks the loops pay nothing for them.

        Returns
        -------
        HookHandle
            ``handle.remove()`` unregisters the hook.
        """
        return HookHandle.add(self._layer_hooks, hook)

    def _notify(self, event, index, layer):
        for hook in tuple(self._layer_hooks):
            hook(event, index, layer)

    # -- forward / backward ---------------------------------------------------------------

    def _call(self, k, step, inputs, training, logits=False):
        """Run plan step ``k`` (hooks around it); ``inputs`` is its one array or its list."""
        layer = step.layer
        hooks = self._layer_hooks
        if hooks:
            self._notify("forward_begin", k, layer)
        if logits:
            out = layer.forward_preactivation(inputs, training)
        elif step.fused is None:
            out = layer.forward(inputs, training)
        else:
            out = _train_fusion.forward(step, inputs, training)
        if step.shared and training and step.fused is None:
            self._node_caches[k] = layer._cache
        if hooks:
            self._notify("forward_end", k, layer)
        return out

    def _run_forward(self, x, training, logits=False):
        """The output of the last step (its pre-activation ``z`` with ``logits``)."""
        steps = self._steps
        last = len(steps) - 1
        if self._chain:
            if not self._layer_hooks and not logits:
                for step in steps:
                    x = (step.layer.forward(x, training) if step.fused is None
                         else _train_fusion.forward(step, x, training))
                return x
            for k, step in enumerate(steps):
                x = self._call(k, step, x, training, logits and k == last)
            return x
        values = {0: x}
        for k, step in enumerate(steps):
            args = [values[t] for t in step.inputs]
            for t in step.frees:
                del values[t]
            values[step.output] = self._call(k, step, args if step.layer.takes_multiple_inputs
                                             else args[0], training, logits and k == last)
        return values[steps[-1].output]

    def _forward(self, x, training):
        return self._run_forward(x, training)

    def _call_backward(self, k, step, grad, preactivation=False):
        layer = step.layer
        if step.shared and step.fused is None:
            layer._cache = self._node_caches[k]
        if self._layer_hooks:
            self._notify("backward_begin", k, layer)
        if preactivation:
            grad = layer.backward_preactivation(grad)
        else:
            grad = layer.backward(grad) if step.fused is None else _train_fusion.backward(step, grad)
        if self._layer_hooks:
            self._notify("backward_end", k, layer)
        return grad

    def _run_backward(self, grad, preactivation=False):
        """Backward through every step from the output's gradient (``dC/dz`` of the last
        layer with ``preactivation``); fills every layer's grads."""
        steps = self._steps
        if self._chain:
            for k in range(len(steps) - 1, -1, -1):
                if grad is None:  # nothing before this point has parameters
                    break
                grad = self._call_backward(k, steps[k], grad, preactivation and k == len(steps) - 1)
            return
        grads = {steps[-1].output: grad}
        sums = {}  # shared layers: their gradients summed over their calls
        summed = set()  # tensors whose gradient is an array of this pass's own (a sum)
        for k in range(len(steps) - 1, -1, -1):
            step = steps[k]
            g = grads.pop(step.output, None)
            if g is None:
                continue
            result = self._call_backward(k, step, g, preactivation and k == len(steps) - 1)
            if step.shared and step.layer.grads:
                acc = sums.get(id(step.layer))
                if acc is None:
                    sums[id(step.layer)] = (step.layer, [a.copy() for a in step.layer.grads])
                else:
                    for a, b in zip(acc[1], step.layer.grads):
                        a += b
            if result is None:
                continue
            results = result if step.layer.takes_multiple_inputs else [result]
            for t, gi in zip(step.inputs, results):
                if gi is None or t == 0:
                    continue
                _graph._accumulate_gradient(grads, summed, t, gi)
        for layer, acc in sums.values():
            for g, a in zip(layer.grads, acc):
                np.copyto(g, a)

    def _outputs_and_loss(self, x, y, training):
        """Forward pass; returns ``(outputs, loss)``. On the logits path (chosen at
        :meth:`compile`) the last layer is asked for its pre-activation ``z`` and the loss is
        taken from it; the outputs are still ``activation(z)``, and ``loss`` is ``(z, value)``."""
        if not self._fused:
            out = self._run_forward(x, training)
            return out, self.loss.forward(out, y)
        z = self._run_forward(x, training, logits=True)
        out = self._steps[-1].layer.activation.forward(z)
        return out, (z, self.loss.forward_from_logits(z, y))

    def _forward_backward_checked(self, x, y):
        """Training forward + loss + backward on checked arrays: ``(loss, outputs)``."""
        out, loss = self._outputs_and_loss(x, y, True)
        if self._fused:
            z, loss = loss
            self._run_backward(self.loss.backward_from_logits(z, y), preactivation=True)
        else:
            self._run_backward(self.loss.backward(out, y))
        self._node_caches = {}
        return float(loss), out

    def forward_backward(self, x, y, return_outputs=False, *, validate=True):
        """Training-mode forward pass, loss and backward pass: fills every gradient.

        The first part of :meth:`train_step`; nothing is updated. ``model.grads`` then hold the
        gradients of the batch-mean loss, aligned with ``model.params``. A strategy or a user
        loop may act on them (all-reduce, clipping) before :meth:`apply_gradients`.

        Parameters
        ----------
        x : ndarray of shape ``(B, *input_shape)``, B >= 1
        y : ndarray of shape (B,) (int class ids) or ``(B, *output_shape)``
            Validated as in :meth:`train_step` (shapes, dtypes, finite values, class range).
        return_outputs : bool, default False
            Also return the model's outputs (probabilities for a softmax model).
        validate : bool, default True
            False skips the checks of ``x`` and ``y``: for arrays cut from what
            :meth:`validate_data` returned (``fit`` checks its data once, not every batch).
            The layers still check shapes and dtypes, and the loss the class ids.

        Returns
        -------
        loss : float
            The batch-mean loss (before any update).
        outputs : ndarray of shape ``(B, *output_shape)``, only with ``return_outputs``
        """
        self._require_compiled("forward_backward")
        if validate:
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

    def train_step(self, xb, yb):
        """One mini-batch step: :meth:`forward_backward`, the gradient hooks, then
        :meth:`apply_gradients`.

        Parameters
        ----------
        xb : ndarray of shape ``(B, *input_shape)``
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

    _MAX_PLANS = 4  # plans kept per model: the full batch and a ragged last one, a few thread counts

    def _inference_plan(self, n):
        """The cached inference plan for batches of ``n`` items (see :func:`cnn._inference.plan_for`)."""
        return _inference.plan_for(self, n, (n, self.dtype, _threads.get_num_threads()))

    def _predict_checked(self, x, batch_size):
        n = x.shape[0]
        with self._lock:
            if 0 < n <= batch_size and not self._layer_hooks:  # one batch: a copy of the plan's
                return self._inference_plan(n).run(x).astype(self.dtype)  # buffer
            out = np.empty((n,) + self.output_shape, dtype=self.dtype)
            if self._layer_hooks:  # every layer runs on its own, so the hooks see each one
                for i in range(0, n, batch_size):
                    out[i:i + batch_size] = self._forward(x[i:i + batch_size], False)
                return out
            for i in range(0, n, batch_size):
                xb = np.ascontiguousarray(x[i:i + batch_size])
                out[i:i + batch_size] = self._inference_plan(xb.shape[0]).run(xb)
        return out

    def predict(self, x, batch_size=256):
        """Outputs of the last layer (probabilities for a softmax model), at inference
        (dropout off).

        Runs the model's inference plan (:mod:`cnn._inference`: fused conv + max-pool, BatchNorm
        folded into the layer before it); outputs are the layer-by-layer forward's bit for bit,
        or to rounding where BatchNorm is folded or a batch is below one Winograd block. With
        layer hooks registered every layer runs on its own, so the hooks see each one.

        Parameters
        ----------
        x : array_like of shape ``(N, *input_shape)``
        batch_size : int >= 1, default 256

        Returns
        -------
        ndarray of shape ``(N, *output_shape)``, dtype of the model

        Examples
        --------
        >>> import numpy as np, cnn
        >>> from cnn import layers
        >>> model = cnn.Sequential([layers.Flatten(), layers.Dense(3, activation="softmax")],
        ...                        input_shape=(1, 4, 4), seed=0)
        >>> p = model.predict(np.zeros((5, 1, 4, 4), dtype=np.float32))
        >>> p.shape, p.dtype
        ((5, 3), dtype('float32'))
        >>> bool(np.allclose(p.sum(axis=1), 1.0))                     # softmax rows
        True
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

    def _inference_outputs_and_loss(self, xb, yb):
        """``(outputs, loss)`` of one batch at inference, by the plan when it can (z from it)."""
        if not self._layer_hooks:
            plan = self._inference_plan(xb.shape[0])
            if not self._fused or plan.logits_op is not None:
                out = plan.run(np.ascontiguousarray(xb))
                if self._fused:
                    return out, self.loss.forward_from_logits(plan.logits(), yb)
                return out, self.loss.forward(out, yb)
        out, loss = self._outputs_and_loss(xb, yb, False)
        return out, (loss[1] if self._fused else loss)

    def _evaluation_sums_checked(self, x, y, batch_size):
        n = x.shape[0]
        total_loss = 0.0
        correct = 0
        labels = y if y.ndim == 1 else None
        with self._lock:
            for i in range(0, n, batch_size):
                xb, yb = x[i:i + batch_size], y[i:i + batch_size]
                out, loss = self._inference_outputs_and_loss(xb, yb)
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
        x : array_like of shape ``(N, *input_shape)``
        y : class ids (N,) or targets (N, classes)
        batch_size : int >= 1, default 256

        Runs the inference plan of :meth:`predict`.

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

        Examples
        --------
        >>> import numpy as np, cnn
        >>> from cnn import layers, optimizers
        >>> x = np.random.default_rng(0).random((64, 1, 8, 8), dtype=np.float32)
        >>> y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int64)      # class ids (N,)
        >>> model = cnn.Sequential([layers.Flatten(), layers.Dense(2, activation="softmax")],
        ...                        input_shape=(1, 8, 8), seed=0)
        >>> model = model.compile(loss="cross_entropy", optimizer=optimizers.SGD(lr=0.1))
        >>> history = model.fit(x, y, epochs=3, batch_size=16, seed=0, verbose=0)
        >>> sorted(history.history)
        ['accuracy', 'images_per_second', 'loss', 'lr', 'seconds']
        >>> len(history.history["loss"])                              # one entry per epoch
        3
        """
        return Trainer(self, strategy=strategy).fit(x, y, epochs=epochs, batch_size=batch_size,
                                 validation_data=validation_data, shuffle=shuffle, seed=seed,
                                 verbose=verbose, callbacks=callbacks, initial_epoch=initial_epoch,
                                 drop_last=drop_last, augment=augment)

    # -- persistence ---------------------------------------------------------------------

    def to_json(self):
        return json.dumps(self.get_config())

    def save(self, path, include_optimizer=True):
        """Write the model to ``path`` (an ``.npz``, atomically); see :mod:`cnn.serialization`.

        The file is written as ``.<name>.<pid>.<random>.tmp`` beside ``path``, fsync'ed, then
        renamed over ``path``. A temp file left by a process killed mid-save is removed by the
        next save to ``path`` (only once that process is gone; a live one may be mid-save).
        """
        _serialization.save_model(self, path, include_optimizer=include_optimizer)


_registry.MODELS.add(Model, "cnn.Model")
