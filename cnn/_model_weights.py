"""Weights and state of a model: parameters, buffers, ``state_dict``, ``get_weights``.

A mixin of :class:`cnn.Model`. Keys are ``"<layer index>.<name>"`` (``"0.weight"``,
``"3.running_mean"``), the layer index being the position in ``model.layers``.
"""

import numpy as np

from . import _validation as V

__all__ = ["ModelWeights"]


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


class ModelWeights:
    """Parameter and buffer access for a built model (``self.layers``, ``self._params``,
    ``self._grads`` are the model's)."""

    def _require_built(self, what):
        if not self.built:
            raise ValueError(f"{what} needs a built model: pass input_shape= to Sequential or "
                             f"call model.build(input_shape)")

    def named_params(self):
        """``[(key, array), ...]`` of every trainable parameter, keys as in :meth:`state_dict`
        (``"0.weight"``): the arrays themselves, not copies."""
        self._require_built("named_params")
        return self._named_params()

    def named_buffers(self):
        """``[(key, array), ...]`` of every buffer (non-trainable state such as running
        statistics), keys as in :meth:`state_dict`: the arrays themselves."""
        self._require_built("named_buffers")
        return [(f"{i}.{name}", b) for i, layer in enumerate(self.layers)
                for name, b in zip(layer.buffer_names, layer.buffers)]

    def _named_params(self):
        return [(f"{i}.{name}", p) for i, layer in enumerate(self.layers)
                for name, p in zip(layer.param_names, layer.params)]

    def _named_state(self):
        """Parameters then buffers of each layer, in layer order (the weights' order)."""
        return [(f"{i}.{name}", a) for i, layer in enumerate(self.layers)
                for name, a in list(zip(layer.param_names, layer.params))
                + list(zip(layer.buffer_names, layer.buffers))]

    def get_weights(self):
        """Copies of all parameters and buffers, layer by layer: each layer's parameters
        (``weight`` before ``bias``), then its buffers (Keras' order: trainable, then
        non-trainable weights)."""
        self._require_built("get_weights")
        return [a.copy() for _, a in self._named_state()]

    def set_weights(self, weights, allow_nonfinite=False):
        """Copy ``weights`` (as from :meth:`get_weights`) into the parameters and buffers, in
        place.

        Parameters
        ----------
        weights : list of array_like
            One per parameter and buffer, of its shape; real numbers, cast to the model dtype.
        allow_nonfinite : bool, default False
            Accept NaN/inf, and values that become inf in the model dtype (1e39 in float32).
            By default they are a ValueError naming the array: a model holds finite
            parameters only, so that it can always be saved and loaded back.

        All arrays are checked before any parameter changes.
        """
        self._require_built("set_weights")
        named = self._named_state()
        weights = list(weights)
        if len(weights) != len(named):
            raise ValueError(f"weights must hold {len(named)} arrays ({', '.join(k for k, _ in named)}), "
                             f"got {len(weights)}")
        allow_nonfinite = V.boolean(allow_nonfinite, "allow_nonfinite")
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
        """``{"0.weight": array, "0.bias": array, ..., "3.running_mean": ...}`` (copies), keyed
        by layer index and parameter or buffer name (PyTorch's layout: parameters and buffers
        in one dict)."""
        self._require_built("state_dict")
        return {key: p.copy() for key, p in self._named_state()}

    def load_state_dict(self, state, strict=True):
        """Copy a :meth:`state_dict` into the parameters and buffers.

        Every missing and unexpected key is listed in one ValueError (with ``strict``; without
        it the keys present are loaded and the rest kept). Shapes must match, and values must
        be finite in the model dtype (as for :meth:`set_weights`).

        Returns
        -------
        (missing, unexpected) : tuple of lists of str
        """
        self._require_built("load_state_dict")
        named = dict(self._named_state())
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
