"""Losses: the cost ``C`` of a batch and its gradient ``dC/dy_pred``.

``forward(y_pred, y_true) -> float`` is the mean over the N items of the batch;
``backward(y_pred, y_true) -> grad`` is ``d forward / d y_pred``, a new array of the shape and
dtype of ``y_pred`` (so it already carries the ``1/N`` of the batch mean).

``y_pred`` is ``(N, classes)``, float32 or float64. ``y_true`` is either integer class ids of
shape ``(N,)`` with values in ``[0, classes)``, or targets of shape ``(N, classes)`` (one-hot
rows, or any real targets for MSE); both are accepted everywhere and validated.
"""


import numpy as np

from . import _registry
from . import _validation as V
from ._configurable import Configurable
from .activations import softmax

__all__ = ["Loss", "MeanSquaredError", "CrossEntropy", "one_hot", "get"]


def one_hot(y, num_classes, dtype=np.float32):
    """One-hot encode integer class ids.

    Parameters
    ----------
    y : array_like of shape (N,), integer dtype, values in [0, num_classes)
    num_classes : int >= 1
    dtype : numeric dtype, default float32

    Returns
    -------
    ndarray of shape (N, num_classes), dtype ``dtype``: row n is 1 at column ``y[n]``, else 0.
    """
    num_classes = V.integer(num_classes, "num_classes", 1)
    dtype = np.dtype(dtype)
    if dtype.kind not in "biuf":
        raise TypeError(f"dtype must be a numeric dtype, got {dtype}")
    y = _check_labels(np.asarray(y), int(num_classes))
    out = np.zeros((y.shape[0], num_classes), dtype=dtype)
    out[np.arange(y.shape[0]), y] = 1
    return out


def _check_labels(y, num_classes, name="y"):
    if y.ndim != 1:
        raise ValueError(f"{name} must be integer class ids of shape (N,), got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class ids (shape (N,), integer dtype), "
                        f"got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        bad = y[(y < 0) | (y >= num_classes)]
        raise ValueError(f"{name} must hold class ids in [0, {num_classes}), "
                         f"got {bad.size} value(s) out of range, e.g. {bad[0]}")
    return y


def _check_pred(y_pred, name="y_pred"):
    if not isinstance(y_pred, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(y_pred).__name__}")
    if y_pred.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must have dtype float32 or float64, got {y_pred.dtype}")
    if y_pred.ndim != 2 or y_pred.shape[0] < 1 or y_pred.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, classes) with N, classes >= 1, "
                         f"got shape {y_pred.shape}")
    return y_pred


def _check_classes_output(loss, shape):
    """The built-in losses take ``y_pred`` of shape (N, classes): one axis per item."""
    shape = tuple(shape)
    if len(shape) != 1:
        dims = ", ".join(map(str, ("N",) + shape))
        raise ValueError(f"the {loss.name} loss needs outputs of shape (N, classes), got ({dims})")


def _split_targets(y_pred, y_true, name="y_pred"):
    """Validate; return ``(labels, None)`` for class ids or ``(None, targets)`` for 2-D targets.

    ``labels`` is an integer array of shape (N,); ``targets`` has ``y_pred``'s shape and dtype.
    """
    _check_pred(y_pred, name)
    n, classes = y_pred.shape
    y = np.asarray(y_true)
    if y.ndim == 1:
        if y.shape[0] != n:
            raise ValueError(f"y_true has {y.shape[0]} labels but {name} has {n} rows "
                             f"(shape {y_pred.shape})")
        return _check_labels(y, classes, "y_true"), None
    if y.ndim == 2:
        if y.shape != y_pred.shape:
            raise ValueError(f"y_true of shape (N, classes) must match {name}'s shape "
                             f"{y_pred.shape}, got {y.shape}")
        if y.dtype.kind not in "biuf":
            raise TypeError(f"y_true targets must be numeric, got dtype {y.dtype}")
        return None, y.astype(y_pred.dtype, copy=False)
    raise ValueError(f"y_true must be class ids of shape (N,) or targets of shape (N, classes), "
                     f"got shape {y.shape}")


class Loss(Configurable):
    """Base class: ``forward(y_pred, y_true) -> float``, ``backward(y_pred, y_true) -> grad``,
    ``get_config() -> dict``. ``has_logits_path`` tells whether the loss also offers
    ``forward_from_logits``/``backward_from_logits`` for a softmax output layer.
    ``check_output_shape(shape)`` tells whether model outputs of that shape can be fed to it.
    """

    name = "loss"
    has_logits_path = False

    def check_output_shape(self, shape):
        """Raise ValueError when ``y_pred`` of shape ``(N, *shape)`` cannot be fed to this loss.

        ``shape`` is one item's output shape (no batch axis), e.g. a model's ``output_shape``.
        The base class accepts any shape; losses that need more override this.
        """

    def forward(self, y_pred, y_true):
        raise NotImplementedError

    def backward(self, y_pred, y_true):
        raise NotImplementedError

    def __call__(self, y_pred, y_true):
        return self.forward(y_pred, y_true)



class MeanSquaredError(Loss):
    """The seed's MSE: per item ``C = (1/n_L) sum_i 1/2 (yhat_i - y_i)^2``, then the batch mean.

    With ``N`` items and ``n_L`` outputs:

        forward  = 1/(N n_L) sum_n sum_i 1/2 (yhat_ni - y_ni)^2
        backward = (yhat - y) / (N n_L)

    This is half of Keras' ``MeanSquaredError`` (the mean of ``(yhat - y)^2``, without the
    1/2) and half of ``torch.nn.MSELoss()``: the 1/2 makes the derivative of each ``C_i`` be
    ``yhat_i - y_i``, as in the seed. Integer class ids are one-hot encoded first.
    """

    name = "mse"

    def check_output_shape(self, shape):
        """Outputs must be ``(N, classes)`` (``shape`` of length 1), as :meth:`forward` needs."""
        _check_classes_output(self, shape)

    def forward(self, y_pred, y_true):
        labels, targets = _split_targets(y_pred, y_true)
        diff = self._diff(y_pred, labels, targets)
        return float(0.5 * np.mean(diff * diff, dtype=np.float64))

    def backward(self, y_pred, y_true):
        labels, targets = _split_targets(y_pred, y_true)
        diff = self._diff(y_pred, labels, targets)
        diff /= y_pred.size
        return diff

    @staticmethod
    def _diff(y_pred, labels, targets):
        if targets is not None:
            return y_pred - targets
        diff = y_pred.copy()
        diff[np.arange(diff.shape[0]), labels] -= 1
        return diff


_DEFAULT_EPS = {np.dtype(np.float32): 1e-7, np.dtype(np.float64): 1e-12}


class CrossEntropy(Loss):
    """Categorical cross-entropy ``C = -(1/N) sum_n sum_i y_ni log(p_ni)``.

    Two ways in:

    * on probabilities ``p`` (:meth:`forward`, :meth:`backward`): ``log`` is taken of
      ``max(p, eps)`` so ``p = 0`` gives a large finite loss, never inf/NaN. The gradient is
      ``-y / (N max(p, eps))``: the exact derivative wherever ``p >= eps``; below ``eps`` it
      is kept at ``-y / (N eps)`` (not 0) so a confidently wrong prediction still gets pushed.
    * on logits ``z`` of a softmax output layer (:meth:`forward_from_logits`,
      :meth:`backward_from_logits`): ``log softmax(z) = z - max(z) - log sum exp(z - max(z))``
      (log-sum-exp, stable for any finite logits), and the fused gradient
      ``(softmax(z) sum_i y_i - y) / N``, i.e. ``(softmax(z) - onehot) / N`` for one-hot rows.
      It equals ``Softmax.backward(z, s, CrossEntropy.backward(s, y))`` (eq. (4)) exactly in
      exact arithmetic, and needs neither the Jacobian nor a clamp.

    Parameters
    ----------
    eps : float in (0, 0.5) or None
        Clamp for probabilities. None (default): 1e-7 for float32, 1e-12 for float64.
    """

    name = "cross_entropy"
    has_logits_path = True

    def __init__(self, eps=None):
        if eps is not None:
            eps = V.real(eps, "eps", low=0.0, high=0.5, low_open=True, high_open=True)
        self.eps = eps

    def check_output_shape(self, shape):
        """Outputs must be ``(N, classes)`` (``shape`` of length 1), as :meth:`forward` needs."""
        _check_classes_output(self, shape)

    def _eps(self, dtype):
        return _DEFAULT_EPS[dtype] if self.eps is None else self.eps

    def forward(self, y_pred, y_true):
        labels, targets = _split_targets(y_pred, y_true)
        eps = self._eps(y_pred.dtype)
        n = y_pred.shape[0]
        if labels is not None:
            picked = y_pred[np.arange(n), labels]
            return float(-np.sum(np.log(np.maximum(picked, eps)), dtype=np.float64) / n)
        return float(-np.sum(targets * np.log(np.maximum(y_pred, eps)), dtype=np.float64) / n)

    def backward(self, y_pred, y_true):
        labels, targets = _split_targets(y_pred, y_true)
        eps = self._eps(y_pred.dtype)
        n = y_pred.shape[0]
        if labels is not None:
            rows = np.arange(n)
            grad = np.zeros_like(y_pred)
            grad[rows, labels] = -1.0 / (n * np.maximum(y_pred[rows, labels], eps))
            return grad
        grad = targets / np.maximum(y_pred, eps)
        grad /= -n
        return grad

    def forward_from_logits(self, z, y_true):
        """Cross-entropy of ``softmax(z)`` computed from the logits ``z`` (shape (N, classes)).

        Uses ``log softmax(z)_i = (z_i - m) - log sum_k exp(z_k - m)`` with ``m = max_k z_k``:
        finite for any finite logits (e.g. +-1e4), where ``log(softmax(z))`` would give
        ``log(0) = -inf``.
        """
        labels, targets = _split_targets(z, y_true, "z")
        n = z.shape[0]
        shifted = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.sum(np.exp(shifted), axis=1))
        if labels is not None:
            return float(np.sum(lse - shifted[np.arange(n), labels], dtype=np.float64) / n)
        log_s = shifted - lse[:, None]
        return float(-np.sum(targets * log_s, dtype=np.float64) / n)

    def backward_from_logits(self, z, y_true):
        """Gradient of :meth:`forward_from_logits` w.r.t. ``z``: ``(softmax(z) - onehot) / N``.

        For general target rows ``y`` it is ``(softmax(z) * sum_i y_i - y) / N`` (the same for
        one-hot rows). Shape and dtype of ``z``.
        """
        labels, targets = _split_targets(z, y_true, "z")
        n = z.shape[0]
        s = softmax(z)
        if labels is not None:
            s[np.arange(n), labels] -= 1
        else:
            s *= targets.sum(axis=1, keepdims=True)
            s -= targets
        s /= n
        return s

    def get_config(self):
        return {"name": self.name, "eps": self.eps}


_registry.LOSSES.add(MeanSquaredError, "mse", "mean_squared_error")
_registry.LOSSES.add(CrossEntropy, "cross_entropy", "categorical_crossentropy",
                     "categorical_cross_entropy")


def get(identifier):
    """Return a :class:`Loss` for ``identifier``.

    Parameters
    ----------
    identifier : str, dict or Loss
        A registered name: ``"mse"``/``"mean_squared_error"``,
        ``"cross_entropy"``/``"categorical_crossentropy"`` or a ``cnn.register``'ed one; a
        ``get_config()`` dict; or an instance (returned as is).
    """
    return _registry.LOSSES.get(identifier, Loss, "loss", "a name, a config dict or a Loss")
