"""Optimizers: in-place parameter updates from batch-mean gradients.

``step(params, grads)`` updates every ``params[i]`` in place from ``grads[i]`` (same shape and
dtype), in one fused OpenMP pass per parameter (``cnn._ops``; the same rounding as the
equivalent NumPy expressions, bit for bit, and the same result for any thread count). The
state (momentum buffers, Adam moments, C-contiguous) is allocated on the first call; later
calls allocate nothing array-sized for C-contiguous parameters (as layers create them; any
other layout is updated through a contiguous copy). The gradients are never modified.

The learning rate is a number or a :mod:`cnn.schedules` schedule; the trainer calls
``set_epoch(e)`` at the start of every epoch and ``lr`` is then ``schedule(e)``.

``state_dict()`` is flat and numeric (``np.savez`` stores it without pickle):
``"iterations"``, ``"epoch"`` and one array per parameter and buffer, e.g. ``"velocity.0"``,
``"m.3"``, ``"v.3"``. An optimizer rebuilt with ``from_config(get_config())`` and given that
dict by ``load_state_dict`` continues bit-identically.
"""


import numpy as np

from . import _ops, _registry, schedules
from . import _validation as V

__all__ = ["Optimizer", "SGD", "Adam", "get"]

# Step and epoch counters: far beyond any run, far within the int64 they are saved as.
MAX_COUNTER = 2 ** 62


class Optimizer:
    """Base class. Subclasses set ``name`` and ``_buffers`` (the state names, e.g. ``("m", "v")``)
    and implement ``_update(i, p, g, lr)``.

    Parameters
    ----------
    lr : float > 0 or LRSchedule

    Attributes
    ----------
    lr : float
        The learning rate in force now (settable: a number replaces the schedule).
    iterations : int
        Number of ``step()`` calls so far.
    epoch : int
        The last epoch given to ``set_epoch`` (0 before any).
    """

    name = "optimizer"
    _buffers = ()

    def __init__(self, lr):
        self._set_schedule(lr)
        self.iterations = 0
        self.epoch = 0
        self._lr = self.schedule(0)
        self._state = None    # {buffer name: [ndarray per param]} once shapes are known
        self._stepped = None  # [(shape, dtype) per param] of the first step

    def _set_schedule(self, lr):
        if isinstance(lr, schedules.LRSchedule):
            self.schedule = lr
        elif isinstance(lr, dict):
            self.schedule = schedules.get(lr)
        else:
            self.schedule = schedules.ConstantLR(V.real(lr, "lr", low=0.0, low_open=True))

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        self._set_schedule(V.real(value, "lr", low=0.0, low_open=True))
        self._lr = self.schedule(self.epoch)

    def set_epoch(self, epoch):
        """Enter ``epoch`` (int >= 0): ``lr`` becomes ``schedule(epoch)``."""
        self.epoch = V.integer(epoch, "epoch", 0)
        self._lr = self.schedule(self.epoch)

    # -- stepping -------------------------------------------------------------------------

    def step(self, params, grads):
        """Update ``params`` in place from ``grads``.

        Parameters
        ----------
        params : list of ndarray (float32 or float64, writeable)
        grads : list of ndarray, ``grads[i]`` of the shape and dtype of ``params[i]``
        """
        self._check(params, grads)
        if self._state is None:
            self._state = {b: [np.zeros(p.shape, p.dtype) for p in params] for b in self._buffers}
        if self._stepped is None:
            self._stepped = [(p.shape, p.dtype) for p in params]
        self.iterations += 1
        lr = self._lr
        for i, (p, g) in enumerate(zip(params, grads)):
            g = np.ascontiguousarray(g)
            if p.flags.c_contiguous:
                self._update(i, p, g, lr)
            else:  # the kernels work on C order: update a copy, then write it back
                q = np.ascontiguousarray(p)
                self._update(i, q, g, lr)
                np.copyto(p, q)

    def _check(self, params, grads):
        if not isinstance(params, (list, tuple)):
            raise TypeError(f"params must be a list of arrays, got {type(params).__name__}")
        if not isinstance(grads, (list, tuple)):
            raise TypeError(f"grads must be a list of arrays, got {type(grads).__name__}")
        if len(params) != len(grads):
            raise ValueError(f"params and grads must have the same length, "
                             f"got {len(params)} params and {len(grads)} grads")
        for i, (p, g) in enumerate(zip(params, grads)):
            if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
                what = p.dtype if isinstance(p, np.ndarray) else type(p).__name__
                raise TypeError(f"params[{i}] must be a float32 or float64 ndarray, got {what}")
            if not p.flags.writeable:
                raise ValueError(f"params[{i}] must be writeable (it is updated in place)")
            if not isinstance(g, np.ndarray):
                raise TypeError(f"grads[{i}] must be an ndarray, got {type(g).__name__}")
            if g.shape != p.shape:
                raise ValueError(f"grads[{i}] must have the shape of params[{i}] {p.shape}, "
                                 f"got {g.shape}")
            if g.dtype != p.dtype:
                raise TypeError(f"grads[{i}] must have the dtype of params[{i}] ({p.dtype}), "
                                f"got {g.dtype}")
        if self._stepped is not None:
            if len(self._stepped) != len(params):
                raise ValueError(f"params must be the {len(self._stepped)} arrays this optimizer "
                                 f"was stepped with, got {len(params)}")
            for i, (p, (shape, dtype)) in enumerate(zip(params, self._stepped)):
                if (p.shape, p.dtype) != (shape, dtype):
                    raise ValueError(f"params[{i}] has shape {p.shape} and dtype {p.dtype}, but "
                                     f"this optimizer was stepped with shape {shape} and dtype "
                                     f"{dtype} there")
        known = dict(self._state) if self._state else {}
        for b, bufs in known.items():
            if len(bufs) != len(params):
                raise ValueError(f"params must be the {len(bufs)} arrays this optimizer was "
                                 f"stepped with (or loaded for), got {len(params)}")
            for i, (p, s) in enumerate(zip(params, bufs)):
                if s.shape != p.shape or s.dtype != p.dtype:
                    raise ValueError(f"params[{i}] has shape {p.shape} and dtype {p.dtype}, but this "
                                     f"optimizer's '{b}.{i}' has shape {s.shape} and dtype {s.dtype}")

    def _update(self, i, p, g, lr):
        """Update the C-contiguous ``p`` in place from ``g`` (its shape and dtype, C order)."""
        raise NotImplementedError

    # -- saving ---------------------------------------------------------------------------

    def state_dict(self):
        """Flat dict of numeric arrays: ``"iterations"``, ``"epoch"``, ``"<buffer>.<i>"``.

        Arrays are copies: later steps do not change a dict already taken.
        """
        d = {"iterations": np.array(self.iterations, dtype=np.int64),
             "epoch": np.array(self.epoch, dtype=np.int64)}
        if self._state is not None:
            for b, bufs in self._state.items():
                for i, s in enumerate(bufs):
                    d[f"{b}.{i}"] = s.copy()
        return d

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned (e.g. read back with ``np.load``).

        The optimizer's state is replaced by ``state``. Raises ValueError naming every missing
        or unexpected key, a non-integer counter, or a buffer whose shape or dtype does not fit
        the state this optimizer already has (a fresh optimizer checks them at the next step).
        """
        if not hasattr(state, "keys"):
            raise TypeError(f"state must be a dict of arrays, got {type(state).__name__}")
        keys = set(state.keys())
        indices = {b: set() for b in self._buffers}
        unexpected = []
        for k in keys - {"iterations", "epoch"}:
            b, _, idx = k.partition(".")
            if b in indices and idx.isdigit() and str(int(idx)) == idx:
                indices[b].add(int(idx))
            else:
                unexpected.append(k)
        n = max((max(ix) + 1 for ix in indices.values() if ix), default=0)
        missing = [k for k in ("iterations", "epoch") if k not in keys]
        missing += [f"{b}.{i}" for b in self._buffers for i in range(n) if i not in indices[b]]
        if missing or unexpected:
            raise ValueError(f"state for {type(self).__name__} has missing keys {sorted(missing)} "
                             f"and unexpected keys {sorted(unexpected)}")
        counters = {}
        for key in ("iterations", "epoch"):
            v = np.asarray(state[key])
            if v.shape != () or v.dtype.kind not in "iu" or not 0 <= int(v) <= MAX_COUNTER:
                raise ValueError(f"state['{key}'] must be a non-negative integer scalar (at most 2**62), got "
                                 f"{v!r:.100}")
            counters[key] = int(v)
        new_state = None
        if n:
            old = self._state if self._state else None
            if old is not None and len(old[self._buffers[0]]) != n:
                raise ValueError(f"state holds buffers for {n} parameters, this optimizer's state "
                                 f"has {len(old[self._buffers[0]])}")
            new_state = {}
            for b in self._buffers:
                new_state[b] = []
                for i in range(n):
                    v = np.asarray(state[f"{b}.{i}"])
                    if v.dtype not in (np.float32, np.float64):
                        raise ValueError(f"state['{b}.{i}'] must be float32 or float64, got {v.dtype}")
                    problem = self._buffer_problem(b, v)
                    if problem:
                        raise ValueError(f"state['{b}.{i}'] {problem}")
                    if old is not None and (old[b][i].shape, old[b][i].dtype) != (v.shape, v.dtype):
                        raise ValueError(f"state['{b}.{i}'] has shape {v.shape} and dtype {v.dtype}; "
                                         f"this optimizer's state has shape {old[b][i].shape} and "
                                         f"dtype {old[b][i].dtype}")
                    new_state[b].append(np.array(v, dtype=v.dtype, copy=True, order="C"))
        self._state = new_state
        self._stepped = None
        self.iterations = counters["iterations"]
        self.set_epoch(counters["epoch"])

    def _buffer_problem(self, name, buf):
        """Why ``buf`` cannot be the state buffer ``name`` (a phrase), or None."""
        if not np.isfinite(buf).all():
            return "holds NaN/inf values"
        return None

    def state_problem(self):
        """Why this optimizer's state could not be saved and loaded back (a message naming the
        key), or None: the same rule :meth:`load_state_dict` applies, so nothing is written
        that cannot be read."""
        for key in ("iterations", "epoch"):
            if not 0 <= getattr(self, key) <= MAX_COUNTER:
                return f"optimizer {key} = {getattr(self, key)} is outside [0, 2**62]"
        for b, bufs in (self._state or {}).items():
            for i, buf in enumerate(bufs):
                problem = self._buffer_problem(b, buf)
                if problem:
                    return f"optimizer state '{b}.{i}' {problem}"
        return None

    # -- config ---------------------------------------------------------------------------

    def get_config(self):
        """JSON-able dict: ``"name"``, ``"lr"`` (a number, or the schedule's config) and the
        hyper-parameters."""
        lr = self.schedule.lr if isinstance(self.schedule, schedules.ConstantLR) \
            else self.schedule.get_config()
        return {"name": self.name, "lr": lr, **self._hyper()}

    def _hyper(self):
        return {}

    @classmethod
    def from_config(cls, config):
        """Build an optimizer from :meth:`get_config` output (state not included)."""
        config = dict(config)
        name = config.pop("name", cls.name)
        if name != cls.name:
            raise ValueError(f"config 'name' must be {cls.name!r} for {cls.__name__}, got {name!r}")
        return _registry.construct(cls, config, f"optimizer config {config!r}")

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay.

    PyTorch's formulation (``torch.optim.SGD`` with ``dampening=0``), per parameter ``p`` with
    gradient ``g`` and momentum buffer ``v`` (zero at first):

        d = g + weight_decay * p
        v = momentum * v + d                      (if momentum > 0)
        d = d + momentum * v  if nesterov  else  v   (if momentum > 0)
        p = p - lr * d

    Parameters
    ----------
    lr : float > 0 or LRSchedule, default 0.01
    momentum : float in [0, 1), default 0.0
    nesterov : bool, default False (requires momentum > 0)
    weight_decay : float >= 0, default 0.0
    """

    name = "sgd"

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.momentum = V.real(momentum, "momentum", low=0.0, high=1.0, high_open=True)
        nesterov = V.boolean(nesterov, "nesterov")
        if nesterov and self.momentum == 0.0:
            raise ValueError(f"nesterov=True requires momentum > 0, got momentum={self.momentum!r}")
        self.nesterov = bool(nesterov)
        self.weight_decay = V.real(weight_decay, "weight_decay", low=0.0)
        self._buffers = ("velocity",) if self.momentum > 0 else ()
        super().__init__(lr)

    def _hyper(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}

    def _update(self, i, p, g, lr):
        v = self._state["velocity"][i] if self.momentum else None
        _ops.sgd_update(p, g, v, lr, self.momentum, self.nesterov, self.weight_decay)


class Adam(Optimizer):
    """Adam with bias correction; ``weight_decay`` is L2 added to the gradient (like
    ``torch.optim.Adam``, not AdamW).

    With step count ``t`` (1 on the first step), per parameter ``p`` and gradient ``g``:

        d = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * d
        v = beta2 * v + (1 - beta2) * d^2
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    Parameters
    ----------
    lr : float > 0 or LRSchedule, default 0.001
    beta1, beta2 : float in [0, 1), defaults 0.9, 0.999
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0.0
    """

    name = "adam"
    _buffers = ("m", "v")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        self.beta1 = V.real(beta1, "beta1", low=0.0, high=1.0, high_open=True)
        self.beta2 = V.real(beta2, "beta2", low=0.0, high=1.0, high_open=True)
        self.eps = V.real(eps, "eps", low=0.0, low_open=True)
        self.weight_decay = V.real(weight_decay, "weight_decay", low=0.0)
        super().__init__(lr)

    def _hyper(self):
        return {"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay}

    def _buffer_problem(self, name, buf):
        problem = super()._buffer_problem(name, buf)
        if problem is None and name == "v" and (buf < 0).any():
            problem = "holds negative values (the second moments are averages of squares)"
        return problem

    def _update(self, i, p, g, lr):
        _ops.adam_update(p, g, self._state["m"][i], self._state["v"][i], self.iterations, lr,
                         self.beta1, self.beta2, self.eps, self.weight_decay)


for _cls in (SGD, Adam):
    _registry.OPTIMIZERS.add(_cls, _cls.name)


def get(identifier):
    """Return an :class:`Optimizer` for ``identifier``.

    Parameters
    ----------
    identifier : str, dict or Optimizer
        ``"sgd"`` or ``"adam"`` (any case; default hyper-parameters) or a ``cnn.register``'ed
        name; a ``get_config()`` dict; or an instance (returned as is).
    """
    if isinstance(identifier, str) and identifier not in _registry.OPTIMIZERS:
        identifier = identifier.lower()
    return _registry.OPTIMIZERS.get(identifier, Optimizer, "optimizer",
                                    "a name, a config dict or an Optimizer")
