"""The fit loop: epochs of shuffled mini-batches, validation, callbacks, history.

Mini-batches follow the seed (section II.5): each epoch draws a fresh random permutation of the
training set and cuts it into batches of ``batch_size``; only complete batches are trained on
(``floor(N / batch_size)`` steps per epoch) unless ``drop_last=False``. Every step moves the
parameters by the learning rate times the batch-mean gradient.

Randomness: the model's generator (seeded by ``Sequential(seed=...)``) draws the initial
weights and the dropout masks; one shuffling generator, seeded by ``fit(seed=...)`` (default:
derived from the model seed), draws the permutations and any augmentation. Same seeds and
thread count -> the same weights and History. At the end of every epoch the shuffling
generator's state is stored in ``model.train_state`` (and saved with the model), so
``fit(..., initial_epoch=k)`` after loading a checkpoint of epoch ``k`` continues exactly as the
uninterrupted run would have.
"""

import math
import time
import warnings

import numpy as np

from . import _interrupt
from . import _validation as V
from . import strategy as _strategy
from .callbacks import Callback, History, ModelCheckpoint
from .progress import EpochProgress

__all__ = ["Trainer"]

# What the loop calls on a model (cnn.Model's public protocol; Sequential is a Model).
_MODEL_PROTOCOL = ("validate_data", "forward_backward", "apply_gradients", "zero_grads",
                   "evaluation_sums")
# Spawn key that separates the default shuffling stream from the model's init/dropout stream.
_SHUFFLE_STREAM = 1


def shuffle_generator(model, seed=None):
    """The shuffling generator ``fit`` uses: ``default_rng(seed)``, or for ``seed=None`` a
    stream derived from ``model.seed`` (independent of the model's own generator)."""
    if seed is None:
        return np.random.default_rng(np.random.SeedSequence(model.seed, spawn_key=(_SHUFFLE_STREAM,)))
    return np.random.default_rng(seed)


class Trainer:
    """Runs :meth:`fit` for one compiled :class:`cnn.Model` or :class:`cnn.Sequential`
    (``model.fit`` delegates here).

    Parameters
    ----------
    model : cnn.Model or cnn.Sequential
    strategy : cnn.strategy.Strategy, optional
        How the run is spread over processes; default :class:`cnn.strategy.SingleProcess`.
    """

    def __init__(self, model, strategy=None):
        missing = [name for name in _MODEL_PROTOCOL if not callable(getattr(model, name, None))]
        if missing:
            raise TypeError(f"model must be a cnn model (cnn.Model or cnn.Sequential), got "
                            f"{type(model).__name__} without {', '.join(missing)}")
        self.model = model
        self.strategy = _strategy.get(strategy)

    # -- checks ---------------------------------------------------------------------------

    def _check_data(self, x, y, name_x="x", name_y="y"):
        return self.model.validate_data(x, y, "fit", name_x, name_y)

    def _check_validation(self, validation_data):
        if validation_data is None:
            return None
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (x_val, y_val), got "
                             f"{type(validation_data).__name__}"
                             + (f" of length {len(validation_data)}" if isinstance(validation_data, (tuple, list)) else ""))
        return self._check_data(*validation_data, "validation_data[0]", "validation_data[1]")

    # -- the loop -------------------------------------------------------------------------

    def fit(self, x, y, epochs=1, batch_size=32, validation_data=None, shuffle=True, seed=None,
            verbose=1, callbacks=(), initial_epoch=0, drop_last=True, augment=None):
        """Train the model.

        Parameters
        ----------
        x : ndarray of shape ``(N, *input_shape)``
            Cast once to the model dtype; must be finite.
        y : ndarray of int class ids (N,) in [0, classes), or targets (N, classes)
        epochs : int >= 0
            Index of the last epoch + 1 (as in Keras): trains epochs ``initial_epoch`` ..
            ``epochs - 1``.
        batch_size : int >= 1
            At most N when ``drop_last`` (otherwise no step would run).
        validation_data : (x_val, y_val), optional
            Evaluated after every epoch (``val_loss``, ``val_accuracy``).
        shuffle : bool, default True
            A fresh permutation each epoch; False keeps the data order.
        seed : int >= 0, optional
            Seeds the shuffling generator; default derived from the model seed.
        verbose : {0, 1, 2}
            0 silent, 1 progress bar (one line per epoch when not a terminal), 2 one line per epoch.
        callbacks : iterable of cnn.callbacks.Callback
        initial_epoch : int >= 0
            Epoch to start at (resuming). When the model's ``train_state`` ends at this epoch
            (after :func:`cnn.load_model` of a checkpoint, or a previous ``fit``) and ``seed``
            is None or the same, the shuffling continues from the saved generator state.
        drop_last : bool, default True
            Drop the incomplete last batch (the seed's rule); False trains on it too.
        augment : callable, optional
            ``augment(xb, rng) -> xb'`` applied to every training batch (same shape and
            dtype), with ``rng`` the shuffling generator.

        Returns
        -------
        cnn.callbacks.History
            Also ``model.history``. On Ctrl-C the History so far, with ``interrupted = True``:
            ``history.epoch`` lists the epochs whose steps and epoch-end callbacks (checkpoint
            writes included) all finished; the model holds the parameters and optimizer state
            of the last complete step, ``history.last_step`` (a Ctrl-C during an update is
            raised once every parameter is updated, never between two); ``model.train_state``
            ends at the last epoch whose steps all ran.

        Raises
        ------
        FloatingPointError
            The loss became NaN or inf (the message names the epoch and step, and the last
            checkpoint written by a ModelCheckpoint, if any).
        """
        model = self.model
        if not model.compiled:
            raise RuntimeError("fit needs a loss and an optimizer: call "
                               "model.compile(loss=..., optimizer=...) first")
        x, y = self._check_data(x, y)
        n = x.shape[0]
        epochs = V.integer(epochs, "epochs", 0)
        initial_epoch = V.integer(initial_epoch, "initial_epoch", 0)
        if initial_epoch > epochs:
            raise ValueError(f"initial_epoch must be <= epochs (the index of the last epoch + 1), "
                             f"got initial_epoch={initial_epoch}, epochs={epochs}")
        batch_size = V.integer(batch_size, "batch_size", 1)
        drop_last = V.boolean(drop_last, "drop_last")
        shuffle = V.boolean(shuffle, "shuffle")
        if drop_last and batch_size > n:
            raise ValueError(f"batch_size must be <= the number of training items ({n}) when "
                             f"drop_last=True (only complete batches are used), got {batch_size}")
        if verbose not in (0, 1, 2) or isinstance(verbose, bool):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        seed = V.integer(seed, "seed", 0, optional=True)
        if augment is not None and not callable(augment):
            raise TypeError(f"augment must be callable (xb, rng) -> xb, got {type(augment).__name__}")
        callbacks = list(callbacks or ())
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be cnn.callbacks.Callback instances, got {type(cb).__name__}")
        validation = self._check_validation(validation_data)

        rng = shuffle_generator(model, seed)
        state = model.train_state
        if state is not None and state["epoch"] == initial_epoch and initial_epoch > 0 \
                and (seed is None or seed == state["seed"]):
            rng.bit_generator.state = state["shuffle_rng"]
        elif initial_epoch > 0 and (shuffle or augment is not None):
            why = ("the model has no saved training state" if state is None else
                   f"the model's saved state ends at epoch {state['epoch']}" if state["epoch"] != initial_epoch
                   else f"seed={seed} differs from the saved run's seed={state['seed']}")
            warnings.warn(f"fit(initial_epoch={initial_epoch}): {why}, so shuffling starts a fresh "
                          f"stream and the run will not match an uninterrupted one", RuntimeWarning,
                          stacklevel=3)

        strategy = self.strategy
        chief = strategy.is_chief
        if not chief:
            verbose = 0
        steps = n // batch_size if drop_last else math.ceil(n / batch_size)
        history = History()
        callbacks = [history] + callbacks
        params = {"epochs": epochs, "steps": steps, "batch_size": batch_size, "samples": n,
                  "rank": strategy.rank, "world_size": strategy.world_size}
        for cb in callbacks:
            cb.set_model(model)
            cb.set_params(params)
        model.history = history
        model.stop_training = False
        # class ids for the running accuracy (none for targets that are not (N, classes) rows)
        labels = y if y.ndim == 1 else y.argmax(axis=1) if y.ndim == 2 else np.zeros(n, np.intp)
        order = np.arange(n)
        # buffers for this process's rows of a full batch (sized by what is drawn, not asked)
        rows = strategy.shard(order[:batch_size]).shape[0]
        xbuf = np.empty((rows,) + x.shape[1:], dtype=x.dtype)
        ybuf = np.empty((rows,) + y.shape[1:], dtype=y.dtype)
        lbuf = np.empty(rows, dtype=labels.dtype)
        eval_batch = max(min(batch_size, n), 256)
        aug_rng = strategy.augment_generator(rng, seed) if augment is not None else None
        if validation is not None:
            val_rows = strategy.shard(np.arange(validation[0].shape[0]))
            if val_rows.shape[0] != validation[0].shape[0]:
                validation = (validation[0][val_rows], validation[1][val_rows])
        stats = np.zeros(2, dtype=np.float64)

        strategy.begin(model)
        for cb in callbacks:
            cb.on_train_begin({})
        progress = None
        try:
            for epoch in range(initial_epoch, epochs):
                model.optimizer.set_epoch(epoch)
                for cb in callbacks:
                    cb.on_epoch_begin(epoch, {})
                if shuffle:
                    order = rng.permutation(n)
                progress = EpochProgress(steps, epoch, epochs, verbose)
                seen, loss_sum, correct = 0, 0.0, 0
                start = time.perf_counter()
                for step in range(steps):
                    idx = strategy.shard(order[step * batch_size:(step + 1) * batch_size])
                    b = idx.shape[0]
                    if b == rows:
                        xb = np.take(x, idx, axis=0, out=xbuf)
                        yb = np.take(y, idx, axis=0, out=ybuf)
                        lb = np.take(labels, idx, out=lbuf)
                    else:
                        xb, yb, lb = x[idx], y[idx], labels[idx]
                    if b:
                        if augment is not None:
                            xb = self._augmented(augment, xb, aug_rng)
                        # x and y were validated once, above; augment's output by _augmented
                        loss, out = model.forward_backward(xb, yb, return_outputs=True,
                                                           validate=False)
                        batch_correct = int(np.count_nonzero(out.argmax(axis=1) == lb)) if y.ndim <= 2 else 0
                    else:
                        model.zero_grads()
                        loss, batch_correct = 0.0, 0
                    stats[0], stats[1] = loss * b, batch_correct
                    b, step_sums = strategy.reduce_gradients(model, b, stats)
                    if strategy.world_size > 1:
                        loss = float(step_sums[0]) / b if b else float("nan")
                        batch_correct = int(step_sums[1])
                    if not math.isfinite(loss):
                        raise FloatingPointError(self._nan_message(loss, epoch, epochs, step, steps, callbacks))
                    with _interrupt.deferred():  # the update and its record, whole or not at all
                        model.apply_gradients()
                        history.last_step = (epoch, step)
                        if step == steps - 1:
                            model.train_state = {"epoch": epoch + 1, "seed": seed,
                                                 "shuffle_rng": rng.bit_generator.state}
                    seen += b
                    loss_sum += float(step_sums[0])
                    correct += batch_correct
                    batch_logs = {"loss": loss, "accuracy": batch_correct / b, "size": b}
                    for cb in callbacks:
                        cb.on_batch_end(step, batch_logs)
                    progress.update(step, {"loss": loss_sum / seen, "accuracy": correct / seen,
                                           "images_per_second": seen / max(time.perf_counter() - start, 1e-9)})
                seconds = time.perf_counter() - start
                logs = {"loss": loss_sum / seen if seen else float("nan"),
                        "accuracy": correct / seen if seen else float("nan")}
                if validation is not None:
                    sums = model.evaluation_sums(validation[0], validation[1], eval_batch)
                    loss_total, correct_total, count = strategy.reduce_sums(sums)
                    logs["val_loss"] = float(loss_total) / int(count)
                    logs["val_accuracy"] = int(correct_total) / int(count)
                logs["lr"] = float(model.optimizer.lr)
                logs["seconds"] = seconds
                logs["images_per_second"] = seen / seconds if seconds > 0 else float("nan")
                if steps == 0:
                    model.train_state = {"epoch": epoch + 1, "seed": seed,
                                         "shuffle_rng": rng.bit_generator.state}
                progress.close(logs, seconds)
                progress = None
                try:
                    for cb in callbacks:
                        cb.on_epoch_end(epoch, dict(logs))
                except KeyboardInterrupt:
                    # Ctrl-C inside an epoch-end callback (a checkpoint write, say): the epoch
                    # is not counted, since what should follow it (its checkpoint) never did
                    history.discard_epoch(epoch)
                    raise
                if model.stop_training:
                    break
        except KeyboardInterrupt:
            history.interrupted = True
            if progress is not None:
                progress.abort()
            if verbose:
                print(f"training interrupted after {len(history.epoch)} complete epoch(s)", flush=True)
        except BaseException as exc:
            if progress is not None:
                progress.abort()
            strategy.fail(exc)
            raise
        finally:
            for cb in callbacks:
                cb.on_train_end({})
            strategy.end(model)
        return history

    @staticmethod
    def _augmented(augment, xb, rng):
        out = augment(xb, rng)
        if not isinstance(out, np.ndarray) or out.shape != xb.shape or out.dtype != xb.dtype:
            got = (out.shape, out.dtype) if isinstance(out, np.ndarray) else type(out).__name__
            raise ValueError(f"augment must return an array of shape {xb.shape} and dtype {xb.dtype}, got {got}")
        if not np.isfinite(out).all():
            raise ValueError("augment returned NaN/inf values")
        return np.ascontiguousarray(out)

    @staticmethod
    def _nan_message(loss, epoch, epochs, step, steps, callbacks):
        msg = (f"the loss became {loss} at epoch {epoch + 1}/{epochs}, step {step + 1}/{steps}; "
               f"training stopped (try a lower learning rate)")
        saved = [cb.last_saved for cb in callbacks if isinstance(cb, ModelCheckpoint) and cb.last_saved]
        if saved:
            msg += f"; the last good checkpoint is {saved[-1]}"
        return msg
