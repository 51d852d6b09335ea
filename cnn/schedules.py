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
from . import _validation as V
from ._configurable import Configurable

__all__ = ["LRSchedule", "ConstantLR", "StepLR", "CosineLR", "ExponentialLR", "get"]


class LRSchedule(Configurable):
    """Base class: ``schedule(epoch) -> float``, ``get_config() -> dict``.

    Subclasses implement ``_value(epoch)`` for an already validated ``epoch``.
    """

    name = "schedule"

    def __call__(self, epoch):
        """The learning rate in force during ``epoch`` (an int >= 0)."""
        return float(self._value(V.integer(epoch, "epoch", 0)))

    def _value(self, epoch):
        raise NotImplementedError

    def get_config(self):
        """JSON-able dict with ``"name"`` and the constructor arguments."""
        raise NotImplementedError



class ConstantLR(LRSchedule):
    """The same learning rate ``lr`` (> 0) at every epoch."""

    name = "constant"

    def __init__(self, lr):
        self.lr = V.real(lr, "lr", low=0.0, low_open=True)

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
        self.lr = V.real(lr, "lr", low=0.0, low_open=True)
        self.step_size = V.integer(step_size, "step_size", 1)
        self.gamma = V.real(gamma, "gamma", low=0.0, high=1.0, low_open=True)

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
        self.lr = V.real(lr, "lr", low=0.0, low_open=True)
        self.total_epochs = V.integer(total_epochs, "total_epochs", 1)
        self.min_lr = V.real(min_lr, "min_lr", low=0.0, high=self.lr)

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
        self.lr = V.real(lr, "lr", low=0.0, low_open=True)
        self.gamma = V.real(gamma, "gamma", low=0.0, high=1.0, low_open=True)

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
