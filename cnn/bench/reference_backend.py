"""The ``reference`` backend of the whole-model cases: :mod:`cnn.reference` (the seed's
equations in plain NumPy) for conv and pool, plain NumPy for dense, activations, softmax
cross-entropy and SGD with momentum, over a layer spec of :mod:`cnn.bench.nets`."""

import numpy as np

from cnn import reference as R

from .common import Skip

__all__ = ["NumpyNet"]

_TYPES = ("Conv2D", "Dense", "MaxPool2D", "Flatten")


class NumpyNet:
    """The reference backend of a whole model: :mod:`cnn.reference` for conv and pool,
    plain NumPy for the rest (dense, activations, softmax cross-entropy, SGD with momentum).

    It computes every layer's input gradient (the reference kernels have no switch to skip it)
    but otherwise does exactly what the cnn model does. It runs chains of Conv2D (undilated,
    ungrouped), Dense, MaxPool2D and Flatten; anything else is a :class:`Skip` with the reason.
    """

    def __init__(self, spec, opt):
        for e in spec:
            if "inputs" in e:
                raise Skip("the reference backend runs chains only (not graph models)")
            if e["type"] not in _TYPES:
                raise Skip(f"layer {e['type']} not in the reference backend")
            if e["activation"] not in (None, "identity", "linear", "relu", "leaky_relu", "softmax"):
                raise Skip(f"activation {e['activation']!r} not in the reference backend")
            if e["type"] == "Conv2D" and (tuple(e["dilation"]) != (1, 1) or e["groups"] != 1):
                raise Skip("dilated or grouped Conv2D not in the reference backend")
        self.spec = [dict(e, params=[p.copy() for p in e.get("params", [])]) for e in spec]
        self.opt = opt
        self.velocity = [[np.zeros_like(p) for p in e["params"]] for e in self.spec]

    @staticmethod
    def _act(e, z):
        a = e["activation"]
        if a == "relu":
            return np.maximum(z, 0)
        if a == "leaky_relu":
            return np.where(z > 0, z, z * z.dtype.type(e["alpha"]))
        return z  # identity; softmax is left to the loss (logits)

    @staticmethod
    def _act_backward(e, z, a, g):
        act = e["activation"]
        if act == "relu":
            return np.where(a > 0, g, 0).astype(g.dtype, copy=False)
        if act == "leaky_relu":
            return np.where(z > 0, g, g * g.dtype.type(e["alpha"]))
        return g

    def forward(self, x, training=False):
        caches = []
        for e in self.spec:
            t = e["type"]
            if t == "Conv2D":
                w, b = e["params"][0], (e["params"][1] if len(e["params"]) > 1 else None)
                z = R.conv2d(x, w, b, e["stride"], e["padding"])
                y = self._act(e, z)
                caches.append((x, z, y))
            elif t == "Dense":
                w = e["params"][0]
                z = x @ w.T
                if len(e["params"]) > 1:
                    z += e["params"][1]
                y = self._act(e, z)
                caches.append((x, z, y))
            elif t == "MaxPool2D":
                y, argmax = R.maxpool2d(x, e["size"], e["stride"], e["padding"])
                caches.append((x.shape, argmax))
            else:  # Flatten
                y = x.reshape(x.shape[0], -1)
                caches.append(x.shape)
            x = y
        self._caches = caches if training else None
        return x  # logits of the last layer (softmax not applied)

    def predict(self, x):
        z = self.forward(x)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def train_step(self, x, y):
        z = self.forward(x, training=True)
        n = z.shape[0]
        shifted = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(shifted).sum(axis=1))
        loss = float(np.mean(lse - shifted[np.arange(n), y], dtype=np.float64))
        g = np.exp(shifted - lse[:, None])
        g[np.arange(n), y] -= 1
        g /= n
        grads = [None] * len(self.spec)
        for i in range(len(self.spec) - 1, -1, -1):
            e, cache = self.spec[i], self._caches[i]
            t = e["type"]
            if t == "Conv2D":
                xin, zc, a = cache
                gz = g if i == len(self.spec) - 1 else self._act_backward(e, zc, a, g)
                g, dw, db = R.conv2d_backward(gz, xin, e["params"][0], e["stride"], e["padding"])
                grads[i] = [dw, db][:len(e["params"])]
            elif t == "Dense":
                xin, zc, a = cache
                gz = g if i == len(self.spec) - 1 else self._act_backward(e, zc, a, g)
                grads[i] = [gz.T @ xin, gz.sum(axis=0)][:len(e["params"])]
                g = gz @ e["params"][0]
            elif t == "MaxPool2D":
                g = R.maxpool2d_backward(g, cache[1], cache[0])
            else:
                g = g.reshape(cache)
        lr, mu, wd, nest = (self.opt[k] for k in ("lr", "momentum", "weight_decay", "nesterov"))
        for e, gs, vs in zip(self.spec, grads, self.velocity):
            for p, gp, v in zip(e["params"], gs or [], vs):
                d = gp + p.dtype.type(wd) * p if wd else gp
                if mu:
                    v *= p.dtype.type(mu)
                    v += d
                    d = d + p.dtype.type(mu) * v if nest else v
                p -= p.dtype.type(lr) * d
        return loss

    def weights(self):
        return [p for e in self.spec for p in e["params"]]
