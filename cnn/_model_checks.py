"""Input checks of a model: data, batches, labels against the output, loss and optimizer.

A mixin of :class:`cnn.Model`: every public door validates here once (``fit`` checks its data
up front; a batch of the shapes and dtypes last seen only has its values checked).
"""

import numpy as np

from . import _ops
from . import _validation as V

__all__ = ["ModelChecks"]


class ModelChecks:
    """Validation of what a model is given (uses ``self.input_shape``, ``output_shape``,
    ``dtype``, ``loss``)."""

    def _check_output_fits_loss(self, what, loss=None):
        """ValueError naming ``what``, the output shape and the last layer when the built
        model's outputs ``(N, *output_shape)`` cannot feed ``loss`` (default: ``self.loss``)."""
        loss = self.loss if loss is None else loss
        try:
            loss.check_output_shape(self.output_shape)
        except ValueError as exc:
            hint = "; end the model with Flatten() and Dense(classes)" if len(self.output_shape) > 1 else ""
            raise ValueError(f"{what}: {exc} from this model's last layer, "
                             f"{self._steps[-1].layer!r}{hint}") from None

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
        if not _ops.all_finite(x):
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

    def validate_data(self, x, y, what="fit", name_x="x", name_y="y"):
        """``(x, y)`` checked once for training or evaluation (what ``fit`` does with its data).

        Parameters
        ----------
        x : array_like of shape (N, *input_shape), N >= 1, finite
        y : class ids (N,) in range, or targets (N, *output_shape), finite
        what : str
            Named in the error when the model's output cannot feed the loss.
        name_x, name_y : str
            The names the errors use for ``x`` and ``y``.

        Returns
        -------
        x : C-contiguous ndarray of the model dtype (the input itself when it already is)
        y : ndarray (int class ids as given, or targets cast to the model dtype)
        """
        x = self._check_x(x, name_x)
        if x.shape[0] == 0:
            raise ValueError(f"{name_x} must hold at least one item, got shape {x.shape}")
        if self.loss is not None:
            self._check_output_fits_loss(what)
        return x, self._check_y(y, x.shape[0], name_y)

    def _check_batch_size(self, batch_size):
        return V.integer(batch_size, "batch_size", 1)

    def _require_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f"{what} needs a loss and an optimizer: call "
                               f"model.compile(loss=..., optimizer=...) first")

    def _check_batch(self, xb, yb, name_x, name_y):
        """``(x, y)`` of one batch, validated; a batch of the shapes and dtypes last seen only
        has its values checked."""
        key = (type(xb), getattr(xb, "shape", None), getattr(xb, "dtype", None),
               type(yb), getattr(yb, "shape", None), getattr(yb, "dtype", None))
        if key == self._checked and xb.flags.c_contiguous:
            # Shapes and dtypes already validated: only the values are checked.
            if not _ops.all_finite(xb):
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
