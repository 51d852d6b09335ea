"""Training strategies: how :meth:`cnn.trainer.Trainer.fit` spreads one training run.

A strategy sits at the seams of the training step. For every global mini-batch the trainer

1. asks :meth:`Strategy.shard` which rows of the batch this process trains on,
2. runs ``model.forward_backward`` on them (the gradients are then the mean over those rows),
3. calls :meth:`Strategy.reduce_gradients`, which must leave in ``model.grads`` the mean over
   the *global* batch and return the step's statistics summed over processes,
4. calls ``model.apply_gradients()`` (the optimizer update).

Validation sums go through :meth:`Strategy.reduce_sums`, so every process logs the same
numbers. :class:`SingleProcess` (the default) does nothing at any seam: one process trains on
every row. ``cnn.distributed.DataParallel`` is the MPI one.
"""

import numpy as np

__all__ = ["Strategy", "SingleProcess"]


class Strategy:
    """Base class of training strategies; every hook is the single-process identity.

    Attributes
    ----------
    rank : int
        This process's index among ``world_size`` (0 for one process).
    world_size : int
        Number of processes training together.
    """

    rank = 0
    world_size = 1

    @property
    def is_chief(self):
        """True on the process that prints progress and writes files (rank 0)."""
        return self.rank == 0

    def begin(self, model):
        """Called once by ``fit`` after its checks, before the first step (e.g. to make every
        process start from rank 0's parameters, buffers and optimizer state)."""

    def end(self, model):
        """Called once when ``fit`` returns or raises."""

    def fail(self, exc):
        """Called when an exception other than KeyboardInterrupt escapes the training loop,
        before it propagates (a distributed strategy aborts the other processes here)."""

    def shard(self, indices):
        """The rows of one global batch this process trains on.

        Parameters
        ----------
        indices : ndarray of int, shape (B,)
            Row indices of the global batch, the same on every process.

        Returns
        -------
        ndarray of int, shape (b,), 0 <= b <= B
        """
        return indices

    def augment_generator(self, shuffle_rng, seed):
        """The generator the ``augment`` callable draws from. One process uses the shuffling
        generator itself; processes of one run must not share it (their draws would differ and
        desynchronise the shuffling)."""
        return shuffle_rng

    def reduce_gradients(self, model, n_local, stats):
        """Between ``forward_backward`` and ``apply_gradients``.

        Parameters
        ----------
        model : the model being trained
            ``model.grads`` hold the mean gradient over this process's ``n_local`` rows (they
            are zero when ``n_local`` is 0). On return they must hold the mean over the global
            batch, identical on every process.
        n_local : int >= 0
            Rows this process trained on.
        stats : ndarray of float64, shape (k,)
            This process's sums for the step (loss times rows, correct predictions).

        Returns
        -------
        (n_total, stats_total) : int and ndarray of float64, shape (k,)
            Rows and sums over every process.
        """
        return n_local, stats

    def reduce_sums(self, values):
        """``values`` (ndarray of float64) summed over every process."""
        return np.asarray(values, dtype=np.float64)


class SingleProcess(Strategy):
    """The default: one process trains on every row of every batch."""


def get(strategy):
    """``strategy`` itself, or :class:`SingleProcess` for None (TypeError otherwise)."""
    if strategy is None:
        return SingleProcess()
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be None or a cnn.strategy.Strategy, got "
                        f"{type(strategy).__name__}")
    return strategy
