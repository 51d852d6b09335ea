"""Callbacks: code that :meth:`cnn.trainer.Trainer.fit` calls at fixed points of training.

Hooks, in order: ``on_train_begin(logs)``; per epoch ``on_epoch_begin(epoch, logs)``, per step
``on_batch_end(step, logs)``, ``on_epoch_end(epoch, logs)``; finally ``on_train_end(logs)``,
which runs however training ends (done, stopped early, Ctrl-C, or an error). Epochs and steps
are counted from 0. Epoch ``logs`` hold ``loss``, ``accuracy``, ``val_loss``,
``val_accuracy`` (with validation data), ``lr``, ``seconds`` and ``images_per_second``; batch
``logs`` hold ``loss``, ``accuracy`` and ``size``.

A callback stops training after the current epoch by setting ``self.model.stop_training``.
"""

import math
import warnings

import numpy as np

from . import _validation as V

__all__ = ["Callback", "History", "EarlyStopping", "ModelCheckpoint"]


class Callback:
    """Base class: every hook does nothing. ``self.model`` is set before training starts and
    ``self.params`` holds ``epochs``, ``steps`` (per epoch), ``batch_size``, ``samples``."""

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = dict(params)

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_batch_end(self, step, logs=None):
        pass


class History(Callback):
    """Records the epoch logs. :meth:`cnn.Sequential.fit` returns it.

    Attributes
    ----------
    history : dict of str -> list
        One list per metric (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``lr``,
        ``seconds``, ``images_per_second``), one entry per completed epoch.
    epoch : list of int
        The epoch index of each entry (from ``initial_epoch`` on).
    interrupted : bool
        True when training was cut short by Ctrl-C (KeyboardInterrupt).
    last_step : (int, int) or None
        ``(epoch, step)`` of the last parameter update the model holds (None before the first):
        after Ctrl-C, where the in-memory model stands. An epoch is in :attr:`epoch` only
        once its epoch-end callbacks (checkpoints included) have all finished.
    """

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []
        self.interrupted = False
        self.last_step = None

    def on_train_begin(self, logs=None):
        self.history = {}
        self.epoch = []
        self.interrupted = False
        self.last_step = None

    def discard_epoch(self, epoch):
        """Forget the entry of ``epoch`` if it is the last one: the trainer calls it when the
        epoch end was cut short (a Ctrl-C inside a checkpoint write), so History never counts
        an epoch whose checkpoint was not written."""
        if self.epoch and self.epoch[-1] == epoch:
            self.epoch.pop()
            for key in self._last_keys:
                self.history[key].pop()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(int(epoch))
        self._last_keys = list(logs or {})
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)}, interrupted={self.interrupted})"


def _mode(mode, monitor):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    return mode


def _check_monitor(monitor):
    if not isinstance(monitor, str) or not monitor:
        raise TypeError(f"monitor must be a metric name such as 'val_loss', got {monitor!r}")
    return monitor


class _Monitor:
    """Tracks the best value of a metric."""

    def __init__(self, monitor, mode, min_delta=0.0):
        self.monitor = monitor
        self.mode = mode
        self.min_delta = min_delta
        self.reset()

    def reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.warned = False

    def value(self, logs, who):
        value = (logs or {}).get(self.monitor)
        if value is None:
            if not self.warned:
                warnings.warn(f"{who}: metric {self.monitor!r} is not in the logs (available: "
                              f"{sorted(logs or {})}); pass validation_data for val_ metrics",
                              RuntimeWarning, stacklevel=3)
                self.warned = True
            return None
        return float(value)

    def improved(self, value):
        if not math.isfinite(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(Callback):
    """Stop when a metric stops improving; optionally go back to the best weights.

    Parameters
    ----------
    monitor : str, default "val_loss"
    patience : int >= 0, default 0
        Number of epochs in a row without improvement after which training stops (0 and 1:
        stop at the first).
    min_delta : float >= 0, default 0
        Smallest change that counts as an improvement.
    mode : {"auto", "min", "max"}
        "auto": max for accuracy-like names, min otherwise.
    restore_best_weights : bool, default False
        When training ends (for whatever reason: this callback, the last epoch, Ctrl-C), put
        back the weights of the best epoch whose weights were all finite (never NaN/inf ones).

    Attributes
    ----------
    best : float
    best_epoch : int or None
    stopped_epoch : int or None
        The epoch after which this callback stopped training.
    """

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto",
                 restore_best_weights=False):
        super().__init__()
        monitor = _check_monitor(monitor)
        self.patience = V.integer(patience, "patience", 0)
        min_delta = V.real(min_delta, "min_delta", low=0.0)
        self.restore_best_weights = V.boolean(restore_best_weights, "restore_best_weights")
        self._monitor = _Monitor(monitor, _mode(mode, monitor), min_delta)
        self.monitor, self.mode, self.min_delta = monitor, self._monitor.mode, min_delta
        self._reset()

    def _reset(self):
        self._monitor.reset()
        self.wait = 0
        self.best_epoch = None
        self.best_weights = None
        self.stopped_epoch = None

    @property
    def best(self):
        return self._monitor.best

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        value = self._monitor.value(logs, "EarlyStopping")
        if value is None:
            return
        if self._monitor.improved(value):
            self._monitor.best = value
            self.best_epoch = epoch
            self.wait = 0
            if self.restore_best_weights:
                weights = self.model.get_weights()
                if all(np.isfinite(w).all() for w in weights):
                    self.best_weights = weights
                else:  # a finite metric from non-finite weights is no weights to go back to
                    warnings.warn(f"EarlyStopping: epoch {epoch + 1} has the best {self.monitor} "
                                  f"but non-finite weights; they will not be restored",
                                  RuntimeWarning, stacklevel=2)
            return
        self.wait += 1
        if self.wait >= max(self.patience, 1):
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)  # finite: only such are kept


class ModelCheckpoint(Callback):
    """Save the model (weights, optimizer state, epoch, generators) after epochs, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        May contain ``{epoch}`` (1-based) and metric fields, e.g.
        ``"ckpt-{epoch:02d}-{val_loss:.3f}.npz"``.
    monitor : str, default "val_loss"
        Used with ``save_best_only``.
    save_best_only : bool, default False
        Save only when ``monitor`` improves (otherwise every epoch).
    mode : {"auto", "min", "max"}

    Attributes
    ----------
    last_saved : str or None
        The path of the newest checkpoint written. Only loadable checkpoints are written: an
        epoch whose parameters or optimizer state hold NaN/inf is not saved (a RuntimeWarning
        says so), so ``last_saved`` is always the last good checkpoint.

    Notes
    -----
    In a distributed run only rank 0 (``params["rank"]``) writes; the weights are the same on
    every rank.
    """

    def __init__(self, path, monitor="val_loss", save_best_only=False, mode="auto"):
        super().__init__()
        self.path = V.path(path)
        monitor = _check_monitor(monitor)
        self.save_best_only = V.boolean(save_best_only, "save_best_only")
        self._monitor = _Monitor(monitor, _mode(mode, monitor))
        self.monitor, self.mode = monitor, self._monitor.mode
        self.last_saved = None

    def on_train_begin(self, logs=None):
        self._monitor.reset()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.params.get("rank", 0) != 0:
            return
        if self.save_best_only:
            value = self._monitor.value(logs, "ModelCheckpoint")
            if value is None or not self._monitor.improved(value):
                return
            self._monitor.best = value
        try:
            path = self.path.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"ModelCheckpoint path {self.path!r} cannot be formatted with epoch "
                             f"and {sorted(logs)}: {exc}") from None
        from .serialization import UnsavableModelError
        try:
            self.model.save(path)
        except UnsavableModelError as exc:  # NaN/inf weights: never a "good" checkpoint
            warnings.warn(f"ModelCheckpoint: epoch {epoch + 1} not saved ({exc}); the last good "
                          f"checkpoint is {self.last_saved}", RuntimeWarning, stacklevel=2)
            return
        self.last_saved = path
