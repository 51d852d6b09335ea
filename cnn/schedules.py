"""Learning-rate schedules: the learning rate as a function of the epoch.

A schedule is a callable ``schedule(epoch) -> lr`` (``epoch`` an int >= 0, counted from 0).
Optimizers accept one in place of a number for ``lr``; the trainer calls
``optimizer.set_epoch(epoch)`` at the start of every epoch and ``optimizer.lr`` then follows
the schedule. Every schedule has a JSON-able ``get_config()`` that :func:`get` turns back into
an equal schedule.

=================  =====================================================================
``ConstantLR``     ``lr``
``StepLR``         ``lr * gamma ** (epoch // step_size)``
``CosineLR``       ``min_lr + (lr - min_lr) * (1 + cos(pi * epoch / total_epochs)) / 2``,
                   then ``min_lr`` from ``epoch >= total_epochs`` on
``ExponentialLR``  ``lr * gamma ** epoch``
=================  =====================================================================
"""

import math
import numbers

from . import _registry
from ._configurable import Configurable

__all__ = ["LRSchedule", "ConstantLR", "StepLR", "CosineLR", "ExponentialLR", "get"]


def _real(value, name, *, low=None, high=None, low_open=False, high_open=False):
    """Return ``value`` as a finite float in the given range, or raise naming ``name``.

    Shared with :mod:`cnn.optimizers`. Booleans are rejected: ``lr=True`` is a bug, not 1.0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    lo = "-inf" if low is None else repr(low)
    hi = "inf" if high is None else repr(high)
    wanted = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
    ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ValueError(f"{name} must be a finite number in {wanted}, got {value!r}")
    return value


def _int(value, name, *, low):
    """Return ``value`` as an int >= ``low``, or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}")
    value = int(value)
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return value


class LRSchedule(Configurable):
    """Base class: ``schedule(epoch) -> float``, ``get_config() -> dict``.

    Subclasses implement ``_value(epoch)`` for an already validated ``epoch``.
    """

    name = "schedule"

    def __call__(self, epoch):
        """The learning rate in force during ``epoch`` (an int >= 0)."""
        return float(self._value(_int(epoch, "epoch", low=0)))

    def _value(self, epoch):
        raise NotImplementedError

    def get_config(self):
        """JSON-able dict with ``"name"`` and the constructor arguments."""
        raise NotImplementedError



class ConstantLR(LRSchedule):
    """The same learning rate ``lr`` (> 0) at every epoch."""

    name = "constant"

    def __init__(self, lr):
        self.lr = _real(lr, "lr", low=0.0, low_open=True)

    def _value(self, epoch):
        return self.lr

    def get_config(self):
        return {"name": self.name, "lr": self.lr}


class StepLR(LRSchedule):
    """``lr * gamma ** (epoch // step_size)``: multiply by ``gamma`` every ``step_size`` epochs.

    Parameters
    ----------
    lr : float > 0
    step_size : int >= 1
    gamma : float in (0, 1], default 0.1
    """

    name = "step"

    def __init__(self, lr, step_size, gamma=0.1):
        self.lr = _real(lr, "lr", low=0.0, low_open=True)
        self.step_size = _int(step_size, "step_size", low=1)
        self.gamma = _real(gamma, "gamma", low=0.0, high=1.0, low_open=True)

    def _value(self, epoch):
        return self.lr * self.gamma ** (epoch // self.step_size)

    def get_config(self):
        return {"name": self.name, "lr": self.lr, "step_size": self.step_size, "gamma": self.gamma}


class CosineLR(LRSchedule):
    """Cosine annealing from ``lr`` at epoch 0 to ``min_lr`` at ``total_epochs``.

    ``min_lr + (lr - min_lr) * (1 + cos(pi * epoch / total_epochs)) / 2`` for
    ``epoch < total_epochs``, ``min_lr`` afterwards.

    Parameters
    ----------
    lr : float > 0
    total_epochs : int >= 1
    min_lr : float in [0, lr], default 0.0
    """

    name = "cosine"

    def __init__(self, lr, total_epochs, min_lr=0.0):
        self.lr = _real(lr, "lr", low=0.0, low_open=True)
        self.total_epochs = _int(total_epochs, "total_epochs", low=1)
        self.min_lr = _real(min_lr, "min_lr", low=0.0, high=self.lr)

    def _value(self, epoch):
        if epoch >= self.total_epochs:
            return self.min_lr
        cos = math.cos(math.pi * epoch / self.total_epochs)
        return self.min_lr + (self.lr - self.min_lr) * (1.0 + cos) / 2.0

    def get_config(self):
        return {"name": self.name, "lr": self.lr, "total_epochs": self.total_epochs,
                "min_lr": self.min_lr}


class ExponentialLR(LRSchedule):
    """``lr * gamma ** epoch``.

    Parameters
    ----------
    lr : float > 0
    gamma : float in (0, 1]
    """

    name = "exponential"

    def __init__(self, lr, gamma):
        self.lr = _real(lr, "lr", low=0.0, low_open=True)
        self.gamma = _real(gamma, "gamma", low=0.0, high=1.0, low_open=True)

    def _value(self, epoch):
        return self.lr * self.gamma ** epoch

    def get_config(self):
        return {"name": self.name, "lr": self.lr, "gamma": self.gamma}


for _cls in (ConstantLR, StepLR, CosineLR, ExponentialLR):
    _registry.SCHEDULES.add(_cls, _cls.name)


def get(identifier):
    """Return a schedule for ``identifier``.

    Parameters
    ----------
    identifier : LRSchedule, dict or float
        A schedule (returned as is), a ``get_config()`` dict (``"name"`` one of
        ``"constant"``, ``"step"``, ``"cosine"``, ``"exponential"`` or a ``cnn.register``'ed
        one, plus the constructor arguments), or a number (-> ``ConstantLR``).
    """
    if isinstance(identifier, numbers.Real) and not isinstance(identifier, bool):
        return ConstantLR(identifier)
    if isinstance(identifier, str):
        raise TypeError(f"schedule identifier must be an LRSchedule, a config dict or a number, "
                        f"got {identifier!r} of type str")
    return _registry.SCHEDULES.get(identifier, LRSchedule, "schedule",
                                   "an LRSchedule, a config dict or a number")
