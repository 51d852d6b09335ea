"""``python -m cnn.bench``: how fast cnn is, beside the NumPy reference and PyTorch.

One process runs every case for three backends:

* ``cnn``: :mod:`cnn.functional` for the kernel cases, :class:`cnn.Sequential` for the
  whole-model cases (``train_step``, ``predict``);
* ``reference``: :mod:`cnn.reference` (plain NumPy, the seed's equations) and a small NumPy
  network built on it with the same weights; skipped where one repetition would take longer
  than ``--reference-limit`` seconds (2 s; 0.3 s with ``--quick``);
* ``torch``: PyTorch on the CPU, when importable, with the same thread count, shapes, float32
  data and weights (copied from the cnn model).

Before anything is timed, the outputs of the three are compared (forward values, every
gradient, the model losses of two identical steps and the weights after them, predicted
probabilities) with the tolerances stated in :data:`TOLERANCES`; a mismatch is printed loudly,
recorded in the JSON and makes the exit status 1.

Timing: at least 2 warm-up calls, then repetitions until a time budget per backend is spent
(and at least a minimum count), in rounds that alternate the backends so that a change in the
machine's load hits all of them alike. Reported: median, min/max and the inter-quartile range.

FLOP counts (stated, not measured; bias, activations and the optimizer update are not counted):

* conv forward: ``2 N K C kh kw OH OW`` (one multiply and one add per weight and output);
* conv forward + backward: forward + ``dW`` (the same count) + ``dx`` (the same count); the
  kernel cases compute ``dx``;
* max-pool forward: ``N C OH OW (kh kw - 1)`` comparisons; backward: ``N C OH OW`` adds;
* dense: ``2 N in out``, with the same rule for its backward;
* a model: the sum over its layers; a training step adds each layer's backward, where the first
  layer with weights computes no ``dx`` (nothing before it needs it).

Ratios are ``other backend's median / cnn's median``: above 1 cnn is faster. For the memory
case they are ``other's peak RSS / cnn's peak RSS``: above 1 cnn uses less.

Run ``python -m cnn.bench --help`` for the options; see ``bench/README.md``.
"""

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time

import numpy as np

import cnn
from cnn import functional as F
from cnn import reference as R

SCHEMA_VERSION = 1
BACKENDS = ("cnn", "torch", "reference")

# Agreement before timing: max |a - b| <= tol * max(|a|, |b|) over each compared array (the
# scale of the values summed, so entries that cancel to ~0 are judged fairly); losses:
# |a - b| <= tol * max(1, |b|). float32 everywhere; the gradient sums run over up to
# N*OH*OW = 100,352 terms, hence the looser gradient bound.
TOLERANCES = {
    "conv_forward": 1e-4,
    "conv_gradient": 5e-4,
    "pool": 0.0,          # a max and its routing are exact
    "loss": 1e-4,
    "weights": 1e-3,      # after two SGD steps (momentum 0.9, lr 0.05)
    "probabilities": 1e-4,
}

FULL = {"budget": 1.2, "min_reps": 7, "slow_min_reps": 3, "warmups": 2, "rounds": 3,
        "reference_limit": 2.0, "memory_steps": 50, "breakdown_reps": 15}
QUICK = {"budget": 0.05, "min_reps": 3, "slow_min_reps": 2, "warmups": 2, "rounds": 1,
         "reference_limit": 0.3, "memory_steps": 10, "breakdown_reps": 3}

# A repetition slower than this is "slow": it needs only slow_min_reps repetitions.
_SLOW_REP = 0.25
# Pause between two backends, so that one library's spinning worker threads (OpenMP, OpenBLAS)
# have gone to sleep before the other's timing starts.
_SWITCH_PAUSE = 0.05


class Skip(Exception):
    """A backend cannot run a case; the message says why."""


# ----------------------------------------------------------------------------- FLOP counts

def conv_flops(n, c, k, kh, kw, oh, ow):
    """Multiply-adds of one conv forward, counted as 2 FLOPs: ``2 N K C kh kw OH OW``."""
    return 2 * n * k * c * kh * kw * oh * ow


def pool_forward_flops(n, c, oh, ow, kh, kw):
    """Comparisons of a max-pool forward: ``kh kw - 1`` per output."""
    return n * c * oh * ow * (kh * kw - 1)


def pool_backward_flops(n, c, oh, ow):
    """One add per output routed back."""
    return n * c * oh * ow


def layer_flops(layer, batch):
    """``(forward, backward)`` FLOPs of a built cnn layer for a batch (see the module doc)."""
    name = type(layer).__name__
    if name == "Conv2D":
        k, c, kh, kw = layer.params[0].shape
        _, oh, ow = layer.output_shape
        f = conv_flops(batch, c, k, kh, kw, oh, ow)
        return f, f + (f if layer.need_input_grad else 0)
    if name == "Dense":
        f = 2 * batch * layer.input_shape[0] * layer.units
        return f, f + (f if layer.need_input_grad else 0)
    if name == "MaxPool2D":
        c, oh, ow = layer.output_shape
        kh, kw = layer.size
        return (pool_forward_flops(batch, c, oh, ow, kh, kw),
                pool_backward_flops(batch, c, oh, ow) if layer.need_input_grad else 0)
    return 0, 0


def model_flops(model, batch, training):
    """FLOPs of one ``predict`` (forward) or ``train_step`` (forward + backward) on a batch."""
    total = 0
    for layer in model.layers:
        f, b = layer_flops(layer, batch)
        total += f + (b if training else 0)
    return total


# ----------------------------------------------------------------------------- models

def _model_api():
    """(Sequential, layers module, optimizers module) or raise Skip."""
    try:
        import importlib
        seq = getattr(cnn, "Sequential", None) or importlib.import_module("cnn.model").Sequential
        layers = getattr(cnn, "layers", None) or importlib.import_module("cnn.layers")
        optimizers = getattr(cnn, "optimizers", None) or importlib.import_module("cnn.optimizers")
    except Exception as exc:  # the model API not there (yet)
        raise Skip(f"cnn model API not available: {type(exc).__name__}: {exc}") from None
    return seq, layers, optimizers


def build_design_cnn(seed=0):
    """The CNN of DESIGN.md, compiled with cross-entropy and SGD(0.05, momentum 0.9)."""
    Sequential, L, O = _model_api()
    model = Sequential([
        L.Conv2D(32, 3, padding="same", activation="relu"),
        L.MaxPool2D(2),
        L.Conv2D(64, 3, padding="same", activation="relu"),
        L.MaxPool2D(2),
        L.Flatten(),
        L.Dense(128, activation="relu"),
        L.Dense(10, activation="softmax"),
    ], input_shape=(1, 28, 28), seed=seed)
    model.compile(loss="cross_entropy", optimizer=O.SGD(lr=0.05, momentum=0.9))
    return model


def build_seed_mlp(seed=0):
    """The seed's MLP: Flatten, Dense(512, leaky_relu), Dense(10, softmax)."""
    Sequential, L, O = _model_api()
    model = Sequential([
        L.Flatten(),
        L.Dense(512, activation="leaky_relu"),
        L.Dense(10, activation="softmax"),
    ], input_shape=(1, 28, 28), seed=seed)
    model.compile(loss="cross_entropy", optimizer=O.SGD(lr=0.05, momentum=0.9))
    return model


MODELS = {"cnn": build_design_cnn, "mlp": build_seed_mlp}


def _layer_spec(model):
    """A backend-neutral description of a cnn model's layers, with copies of its weights."""
    layers = model.layers
    spec = []
    for i, layer in enumerate(layers):
        name = type(layer).__name__
        act = getattr(getattr(layer, "activation", None), "name", None)
        entry = {"type": name, "activation": act, "need_dx": bool(layer.need_input_grad)}
        if act == "leaky_relu":
            entry["alpha"] = float(layer.activation.alpha)
        if act == "softmax" and i != len(layers) - 1:
            raise Skip("softmax is only supported on the last layer")
        if act not in (None, "identity", "linear", "relu", "leaky_relu", "softmax"):
            raise Skip(f"activation {act!r} not supported by the bench's other backends")
        if name == "Conv2D":
            if tuple(getattr(layer, "dilation", (1, 1))) != (1, 1) or getattr(layer, "groups", 1) != 1:
                raise Skip("dilated or grouped Conv2D not supported by the bench's other backends")
            entry.update(stride=tuple(layer.stride), padding=layer.padding,
                         pads=F.conv2d_padding(layer.padding, layer.kernel_size, layer.stride,
                                               layer.input_shape[1:]),
                         params=[p.copy() for p in layer.params])
        elif name == "Dense":
            entry["params"] = [p.copy() for p in layer.params]
        elif name == "MaxPool2D":
            entry.update(size=tuple(layer.size),
                         stride=tuple(layer.stride) if layer.stride is not None else None,
                         padding=layer.padding,
                         pads=F.maxpool2d_padding(layer.padding, layer.size, layer.stride,
                                                  layer.input_shape[1:]))
        elif name != "Flatten":
            raise Skip(f"layer {name} not supported by the bench's other backends")
        spec.append(entry)
    opt = model.optimizer
    spec_opt = {"lr": float(opt.lr), "momentum": float(getattr(opt, "momentum", 0.0)),
                "nesterov": bool(getattr(opt, "nesterov", False)),
                "weight_decay": float(getattr(opt, "weight_decay", 0.0))}
    if type(opt).__name__ != "SGD":
        raise Skip(f"optimizer {type(opt).__name__} not supported by the bench's other backends")
    if getattr(model.loss, "name", None) != "cross_entropy" or spec[-1]["activation"] != "softmax":
        raise Skip("the bench's other backends need a softmax output and cross-entropy")
    return spec, spec_opt


class NumpyNet:
    """The reference backend of a whole model: :mod:`cnn.reference` for conv and pool,
    plain NumPy for the rest (dense, activations, softmax cross-entropy, SGD with momentum).

    It computes every layer's input gradient (the reference kernels have no switch to skip it)
    but otherwise does exactly what the cnn model does.
    """

    def __init__(self, spec, opt):
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


def torch_net(spec, torch):
    """``nn.Sequential`` of one group per cnn layer (Conv2d + ReLU is one group), same weights."""
    nn = torch.nn
    groups = []
    for e in spec:
        t = e["type"]
        mods = []
        if t == "Conv2D":
            w = e["params"][0]
            k, c, kh, kw = w.shape
            top, bottom, left, right = e["pads"]
            if top != bottom or left != right:
                mods.append(nn.ZeroPad2d((left, right, top, bottom)))
                pad = 0
            else:
                pad = (top, left)
            conv = nn.Conv2d(c, k, (kh, kw), stride=e["stride"], padding=pad,
                             bias=len(e["params"]) > 1)
            mods.append(conv)
            params = [conv.weight] + ([conv.bias] if conv.bias is not None else [])
        elif t == "Dense":
            w = e["params"][0]
            lin = nn.Linear(w.shape[1], w.shape[0], bias=len(e["params"]) > 1)
            mods.append(lin)
            params = [lin.weight] + ([lin.bias] if lin.bias is not None else [])
        elif t == "MaxPool2D":
            top, bottom, left, right = e["pads"]
            if (top, bottom, left, right) != (0, 0, 0, 0):
                raise Skip("padded max-pool not mapped to torch by the bench")
            mods.append(nn.MaxPool2d(e["size"], stride=e["stride"] or e["size"]))
            params = []
        else:
            mods.append(nn.Flatten())
            params = []
        with torch.no_grad():
            for p, src in zip(params, e.get("params", [])):
                p.copy_(torch.from_numpy(src))
        if e["activation"] == "relu":
            mods.append(nn.ReLU())
        elif e["activation"] == "leaky_relu":
            mods.append(nn.LeakyReLU(e["alpha"]))
        groups.append(nn.Sequential(*mods))
    return nn.Sequential(*groups)


def torch_optimizer(net, opt, torch):
    return torch.optim.SGD(net.parameters(), lr=opt["lr"], momentum=opt["momentum"],
                           nesterov=opt["nesterov"], weight_decay=opt["weight_decay"])


# ----------------------------------------------------------------------------- data

_DATA = {}


def mnist_batches(batch, limit=None):
    """Shuffled batches of the bundled MNIST training images (random images if unavailable):
    a list of ``(x float32 (B, 1, 28, 28) C-contiguous, y int64 (B,))``. Training cycles
    through them, as a real epoch would (one batch again and again would drive the loss and
    gradients to ~0, and then into denormals)."""
    if "mnist" not in _DATA:
        try:
            from cnn import datasets
            (x, y), _ = datasets.load_mnist()
            source = "bundled MNIST (5,000 training images)"
        except Exception as exc:  # pragma: no cover - the data ships with the package
            rng = np.random.default_rng(1)
            x = rng.random((5000, 1, 28, 28), dtype=np.float32)
            y = rng.integers(0, 10, 5000)
            source = f"random images (MNIST not loadable: {exc})"
        order = np.random.default_rng(0).permutation(len(x))
        _DATA["mnist"] = (np.ascontiguousarray(x[order], dtype=np.float32),
                          np.ascontiguousarray(y[order], dtype=np.int64), source)
    x, y, _ = _DATA["mnist"]
    count = len(x) // batch if limit is None else min(limit, len(x) // batch)
    return [(np.ascontiguousarray(x[i * batch:(i + 1) * batch]),
             np.ascontiguousarray(y[i * batch:(i + 1) * batch])) for i in range(count)]


def _cycle(items):
    state = {"i": 0}

    def nxt():
        item = items[state["i"] % len(items)]
        state["i"] += 1
        return item
    return nxt


# ----------------------------------------------------------------------------- comparisons

def _as_np(a):
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def compare(outputs, pairs, rules):
    """Compare named outputs between backends.

    ``outputs``: backend -> {quantity: array}; ``rules``: quantity -> tolerance key; ``pairs``:
    (backend, backend) to compare. Returns a list of dicts with the error and the verdict.
    """
    report = []
    for a, b in pairs:
        if a not in outputs or b not in outputs:
            continue
        for q, key in rules.items():
            if q not in outputs[a] or q not in outputs[b]:
                continue
            x, y = _as_np(outputs[a][q]), _as_np(outputs[b][q])
            tol = TOLERANCES[key]
            entry = {"pair": f"{a}-{b}", "quantity": q, "tol": tol}
            if x.shape != y.shape:
                entry.update(ok=False, error=f"shapes differ: {x.shape} vs {y.shape}")
            elif x.dtype.kind in "iu" or y.dtype.kind in "iu":
                bad = int(np.count_nonzero(x.astype(np.int64) != y.astype(np.int64)))
                entry.update(ok=bad == 0, mismatched=bad, rel_err=bad / max(1, x.size))
            elif key == "loss":
                err = abs(float(x) - float(y))
                entry.update(abs_err=err, rel_err=err / max(1.0, abs(float(y))))
                entry["ok"] = entry["rel_err"] <= tol
            else:
                x64, y64 = x.astype(np.float64), y.astype(np.float64)
                if not (np.isfinite(x64).all() and np.isfinite(y64).all()):
                    entry.update(ok=False, error="non-finite values")
                else:
                    err = float(np.max(np.abs(x64 - y64))) if x.size else 0.0
                    scale = max(float(np.max(np.abs(x64))) if x.size else 0.0,
                                float(np.max(np.abs(y64))) if y.size else 0.0, 1e-30)
                    entry.update(abs_err=err, scale=scale, rel_err=err / scale)
                    entry["ok"] = entry["rel_err"] <= tol
            report.append(entry)
    return report


# ----------------------------------------------------------------------------- cases

class Case:
    """One benchmark case.

    ``setup(backend, ctx)`` returns ``(check, run)``: ``check()`` runs the operation once and
    returns ``{quantity: array}`` for the agreement check (it may also be the first warm-up);
    ``run()`` is one timed repetition. It raises :class:`Skip` when the backend cannot run.
    """

    def __init__(self, name, kind, shape, threads, flops, images, setup, rules,
                 reference_hint=None, model=None, batch=None, training=None):
        self.name, self.kind, self.shape, self.threads = name, kind, shape, threads
        self.flops, self.images, self.setup, self.rules = flops, images, setup, rules
        self.reference_hint = reference_hint  # (case name, factor): predicts the reference's time
        self.model, self.batch, self.training = model, batch, training


def _conv_case(n, c, hw, k, threads, backward):
    kh = kw = 3
    pads = F.conv2d_padding("same", (kh, kw))
    oh, ow = hw + pads[0] + pads[1] - kh + 1, hw + pads[2] + pads[3] - kw + 1
    f = conv_flops(n, c, k, kh, kw, oh, ow)
    rng = np.random.default_rng(n * 1000 + c * 10 + k)
    x = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
    w = (rng.standard_normal((k, c, kh, kw), dtype=np.float32) * np.float32(math.sqrt(2.0 / (c * kh * kw))))
    b = rng.standard_normal(k, dtype=np.float32) * np.float32(0.1)
    dy = rng.standard_normal((n, k, oh, ow), dtype=np.float32)
    tag = f"{n}x{c}x{hw}x{hw} k{k}"

    def setup(backend, ctx):
        if backend == "cnn":
            if not backward:
                return (lambda: {"y": F.conv2d(x, w, b, 1, "same")},
                        lambda: F.conv2d(x, w, b, 1, "same"))

            def run():
                y = F.conv2d(x, w, b, 1, "same")
                dx, dw, db = F.conv2d_backward(dy, x, w, 1, "same")
                return y, dx, dw, db
            return (lambda: dict(zip(("y", "dx", "dw", "db"), run())), run)
        if backend == "reference":
            if not backward:
                return (lambda: {"y": R.conv2d(x, w, b, 1, "same")},
                        lambda: R.conv2d(x, w, b, 1, "same"))

            def run():
                y = R.conv2d(x, w, b, 1, "same")
                dx, dw, db = R.conv2d_backward(dy, x, w, 1, "same")
                return y, dx, dw, db
            return (lambda: dict(zip(("y", "dx", "dw", "db"), run())), run)
        torch = ctx["torch"]
        tf = torch.nn.functional
        pad = (pads[0], pads[2])
        if pads[0] != pads[1] or pads[2] != pads[3]:
            raise Skip("asymmetric padding")
        xt, wt, bt, dyt = (torch.from_numpy(a) for a in (x, w, b, dy))
        if not backward:
            def fwd():
                with torch.inference_mode():
                    return tf.conv2d(xt, wt, bt, 1, pad)
            return (lambda: {"y": fwd()}, fwd)
        xg, wg, bg = (t.clone().requires_grad_(True) for t in (xt, wt, bt))

        def run():
            y = tf.conv2d(xg, wg, bg, 1, pad)
            dx, dw, db = torch.autograd.grad(y, (xg, wg, bg), dyt)
            return y, dx, dw, db
        return (lambda: dict(zip(("y", "dx", "dw", "db"), run())), run)

    kind = "conv_fwdbwd" if backward else "conv_fwd"
    rules = {"y": "conv_forward"}
    if backward:
        rules.update(dx="conv_gradient", dw="conv_gradient", db="conv_gradient")
    name = f"conv3x3 {'fwd+bwd' if backward else 'fwd'} {tag}"
    hint = (f"conv3x3 fwd {tag}", 6.0) if backward else None
    return Case(name, kind,
                {"N": n, "C": c, "H": hw, "W": hw, "K": k, "kernel": [kh, kw], "padding": "same",
                 "stride": 1, "bias": True, "dx": backward},
                threads, f * (3 if backward else 1), None, setup, rules, reference_hint=hint)


def _pool_case(n, c, hw, threads, backward):
    size = 2
    oh = ow = hw // size
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
    dy = rng.standard_normal((n, c, oh, ow), dtype=np.float32)
    flops = pool_backward_flops(n, c, oh, ow) if backward else pool_forward_flops(n, c, oh, ow, size, size)
    tag = f"{n}x{c}x{hw}x{hw}"

    def setup(backend, ctx):
        if backend in ("cnn", "reference"):
            mod = F if backend == "cnn" else R
            y, argmax = mod.maxpool2d(x, size)
            if not backward:
                return (lambda: dict(zip(("y", "argmax"), mod.maxpool2d(x, size))),
                        lambda: mod.maxpool2d(x, size))
            return (lambda: {"dx": mod.maxpool2d_backward(dy, argmax, x.shape)},
                    lambda: mod.maxpool2d_backward(dy, argmax, x.shape))
        torch = ctx["torch"]
        tf = torch.nn.functional
        xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)
        if not backward:
            def fwd():
                with torch.inference_mode():
                    return tf.max_pool2d(xt, size, size, return_indices=True)
            return (lambda: dict(zip(("y", "argmax"), fwd())), fwd)
        xg = xt.clone().requires_grad_(True)
        yg = tf.max_pool2d(xg, size, size)

        def bwd():
            return torch.autograd.grad(yg, xg, dyt, retain_graph=True)[0]
        return (lambda: {"dx": bwd()}, bwd)

    return Case(f"maxpool2x2 {'bwd' if backward else 'fwd'} {tag}",
                "pool_bwd" if backward else "pool_fwd",
                {"N": n, "C": c, "H": hw, "W": hw, "size": [size, size], "stride": [size, size]},
                threads, flops, None, setup,
                {"dx": "pool"} if backward else {"y": "pool", "argmax": "pool"})


def _model_case(model_key, batch, threads, training, base_batch=None):
    label = {"cnn": "CNN", "mlp": "MLP"}[model_key]
    what = "train_step" if training else "predict"
    name = f"{label} {what} B{batch} T{threads}"
    try:
        flops = model_flops(MODELS[model_key](0), batch, training)
    except Skip:
        flops = 0
    hint = None
    if base_batch and batch != base_batch:
        hint = (f"{label} {what} B{base_batch} T{threads}", batch / base_batch)

    def setup(backend, ctx):
        model = MODELS[model_key](0)  # raises Skip without the model API
        spec, opt = _layer_spec(model)
        if training:
            batches = mnist_batches(batch)
            nxt = _cycle(batches)
            x0, y0 = batches[0]
        else:
            x0, y0 = mnist_batches(batch, limit=1)[0]
        if backend == "cnn":
            if training:
                def check():
                    l1 = model.train_step(x0, y0)
                    l2 = model.train_step(x0, y0)
                    out = {"loss1": np.float64(l1), "loss2": np.float64(l2)}
                    for i, p in enumerate(p for layer in model.layers for p in layer.params):
                        out[f"w{i}"] = p.copy()
                    return out

                def run():
                    xb, yb = nxt()
                    return model.train_step(xb, yb)
                return check, run
            return (lambda: {"p": model.predict(x0, batch_size=batch)},
                    lambda: model.predict(x0, batch_size=batch))
        if backend == "reference":
            net = NumpyNet(spec, opt)
            if training:
                def check():
                    l1 = net.train_step(x0, y0)
                    l2 = net.train_step(x0, y0)
                    out = {"loss1": np.float64(l1), "loss2": np.float64(l2)}
                    out.update({f"w{i}": p.copy() for i, p in enumerate(net.weights())})
                    return out

                def run():
                    xb, yb = nxt()
                    return net.train_step(xb, yb)
                return check, run
            return (lambda: {"p": net.predict(x0)}, lambda: net.predict(x0))
        torch = ctx["torch"]
        net = torch_net(spec, torch)
        tf = torch.nn.functional
        if training:
            optim = torch_optimizer(net, opt, torch)
            tbatches = [(torch.from_numpy(xb), torch.from_numpy(yb)) for xb, yb in batches]
            tnxt = _cycle(tbatches)

            def step(xb, yb):
                optim.zero_grad(set_to_none=True)
                loss = tf.cross_entropy(net(xb), yb)
                loss.backward()
                optim.step()
                return loss.item()

            def check():
                l1 = step(*tbatches[0])
                l2 = step(*tbatches[0])
                out = {"loss1": np.float64(l1), "loss2": np.float64(l2)}
                out.update({f"w{i}": p.detach().numpy().copy() for i, p in enumerate(net.parameters())})
                return out
            return check, lambda: step(*tnxt())
        xt = torch.from_numpy(x0)

        def predict():
            with torch.inference_mode():
                return torch.softmax(net(xt), dim=1)
        return (lambda: {"p": predict()}, predict)

    rules = ({"loss1": "loss", "loss2": "loss"} if training else {"p": "probabilities"})
    if training:
        n_params = 4 if model_key == "mlp" else 8
        rules.update({f"w{i}": "weights" for i in range(n_params)})
    return Case(name, "train_step" if training else "predict",
                {"model": "design_cnn" if model_key == "cnn" else "seed_mlp", "batch": batch,
                 "input": [1, 28, 28]},
                threads, flops, batch, setup, rules, reference_hint=hint,
                model=model_key, batch=batch, training=training)


SIZES = {
    "full": {"conv": ((64, 1, 28, 32), (64, 32, 14, 64), (32, 64, 56, 64)), "pool": (64, 32, 28),
             "model_batches": (64, 256), "mlp_batch": 64, "memory_batch": 64},
    # --quick: the same cases on smaller batches (a smoke test of the whole run, not figures)
    "quick": {"conv": ((16, 1, 28, 32), (16, 32, 14, 64), (4, 64, 56, 64)), "pool": (16, 32, 28),
              "model_batches": (16, 64), "mlp_batch": 16, "memory_batch": 16},
}


def build_cases(threads, memory_steps, quick=False):
    """Every case, in run order. The model cases run at 1 thread and at ``threads``."""
    sizes = SIZES["quick" if quick else "full"]
    cases = []
    for n, c, hw, k in sizes["conv"]:
        cases.append(_conv_case(n, c, hw, k, threads, backward=False))
        cases.append(_conv_case(n, c, hw, k, threads, backward=True))
    cases.append(_pool_case(*sizes["pool"], threads, backward=False))
    cases.append(_pool_case(*sizes["pool"], threads, backward=True))
    model_threads = sorted({1, threads})
    base = sizes["model_batches"][0]
    for training in (True, False):
        for t in model_threads:
            for batch in sizes["model_batches"]:
                cases.append(_model_case("cnn", batch, t, training, base_batch=base))
    cases.append(_model_case("mlp", sizes["mlp_batch"], threads, True))
    cases.append(_memory_case(sizes["memory_batch"], memory_steps, threads))
    return cases


# ----------------------------------------------------------------------------- timing

def _stats(samples):
    s = np.sort(np.asarray(samples, dtype=np.float64))
    return {"median_s": float(np.median(s)), "min_s": float(s[0]), "max_s": float(s[-1]),
            "p25_s": float(np.percentile(s, 25)), "p75_s": float(np.percentile(s, 75)),
            "reps": int(s.size)}


def time_backends(runs, cfg, estimates):
    """Time each backend's ``run`` in alternating rounds.

    ``runs``: backend -> run(); ``estimates``: backend -> seconds of one call (from the check).
    Returns backend -> list of seconds.
    """
    clock = time.perf_counter
    samples = {b: [] for b in runs}
    for b, run in runs.items():  # warm-ups (the check call was one more)
        for _ in range(cfg["warmups"]):
            run()
        time.sleep(_SWITCH_PAUSE)
    rounds = cfg["rounds"]
    for r in range(rounds):
        for b, run in runs.items():
            slow = estimates.get(b, 0.0) > _SLOW_REP
            min_reps = cfg["slow_min_reps"] if slow else cfg["min_reps"]
            want = max(1, math.ceil(min_reps / rounds))
            budget = cfg["budget"] / rounds
            start = clock()
            done = 0
            while done < want or (clock() - start < budget and done < 5000):
                t0 = clock()
                run()
                samples[b].append(clock() - t0)
                done += 1
            time.sleep(_SWITCH_PAUSE)
    return samples


# ----------------------------------------------------------------------------- memory

_CNN_MEMORY_CHILD = r"""
import json, resource, sys, time
args = json.loads(sys.argv[1])
import numpy as np
import cnn
from cnn import bench
cnn.set_num_threads(args["threads"])
base = bench.peak_rss_bytes()
model = bench.build_design_cnn(0)
rng = np.random.default_rng(0)
B = args["batch"]
xs = rng.random((8, B, 1, 28, 28), dtype=np.float32)
ys = rng.integers(0, 10, (8, B))
times = []
for i in range(args["steps"]):
    t0 = time.perf_counter()
    model.train_step(xs[i % 8], ys[i % 8])
    times.append(time.perf_counter() - t0)
peak = bench.peak_rss_bytes()
print(json.dumps({"import_rss": base, "peak_rss": peak, "times": times}))
"""

_TORCH_MEMORY_CHILD = r"""
import json, resource, sys, time
args = json.loads(sys.argv[1])
__PEAK_RSS__
import torch
torch.set_num_threads(args["threads"])
base = peak_rss_bytes()
torch.manual_seed(0)
nn = torch.nn
net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                    nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
B = args["batch"]
xs = torch.rand(8, B, 1, 28, 28)
ys = torch.randint(0, 10, (8, B))
times = []
for i in range(args["steps"]):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(net(xs[i % 8]), ys[i % 8])
    loss.backward()
    opt.step()
    loss.item()
    times.append(time.perf_counter() - t0)
peak = peak_rss_bytes()
print(json.dumps({"import_rss": base, "peak_rss": peak, "times": times}))
"""


def peak_rss_bytes():
    """This process's peak resident set size in bytes.

    Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of this address space. Not
    ``getrusage().ru_maxrss``: Linux carries that across ``execve`` from the address space the
    child was forked from, so a child of a big parent reports the parent's peak. Elsewhere:
    ``ru_maxrss`` (bytes on macOS, KiB on the other Unixes).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _child_env():
    """The parent's environment, with the directory cnn was imported from first on the path."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(cnn.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def run_memory_child(backend, batch, steps, threads, timeout=600):
    """Peak RSS (bytes) of a fixed training run, in a fresh interpreter (never a fork of this
    process, whose OpenMP runtime has run: libgomp does not survive a fork)."""
    if backend == "cnn":
        code = _CNN_MEMORY_CHILD
    else:  # torch's child must not import cnn (its RSS would count): the function goes in as source
        import inspect
        code = _TORCH_MEMORY_CHILD.replace("__PEAK_RSS__", inspect.getsource(peak_rss_bytes))
    args = json.dumps({"batch": batch, "steps": steps, "threads": threads})
    proc = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True,
                          env=_child_env(), timeout=timeout)
    if proc.returncode != 0:
        raise Skip(f"child failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    data["import_rss_bytes"] = data.pop("import_rss")
    data["peak_rss_bytes"] = data.pop("peak_rss")
    return data


def _memory_case(batch, steps, threads):
    try:
        flops = model_flops(build_design_cnn(0), batch, True)
    except Skip:
        flops = 0
    return Case(f"peak RSS CNN train B{batch} x{steps} T{threads}", "memory",
                {"model": "design_cnn", "batch": batch, "steps": steps, "input": [1, 28, 28]},
                threads, flops, batch, None, {})


# ----------------------------------------------------------------------------- breakdown

def cnn_breakdown(model, batches, training, reps, warmups=2):
    """Per-layer forward/backward seconds (medians) of a manual pass through a cnn model."""
    clock = time.perf_counter
    layers = model.layers
    fwd = [[] for _ in layers]
    bwd = [[] for _ in layers]
    loss_t, opt_t = [], []
    params = [p for layer in layers for p in layer.params]
    grads = [g for layer in layers for g in layer.grads]
    fused = bool(getattr(model, "fused_softmax_cross_entropy", False))
    for r in range(warmups + reps):
        x, y = batches[r % len(batches)]
        keep = r >= warmups
        h = x
        for i, layer in enumerate(layers):
            t0 = clock()
            h = layer.forward(h, training)
            if keep:
                fwd[i].append(clock() - t0)
        if not training:
            continue
        t0 = clock()
        last = layers[-1]
        if fused:
            model.loss.forward_from_logits(last.z, y)
            g = model.loss.backward_from_logits(last.z, y)
        else:
            model.loss.forward(h, y)
            g = model.loss.backward(h, y)
        t1 = clock()
        if keep:
            loss_t.append(t1 - t0)
        for i in range(len(layers) - 1, -1, -1):
            t0 = clock()
            if g is not None:
                if i == len(layers) - 1 and fused:
                    g = layers[i].backward_preactivation(g)
                else:
                    g = layers[i].backward(g)
            if keep:
                bwd[i].append(clock() - t0)
        t0 = clock()
        model.optimizer.step(params, grads)
        if keep:
            opt_t.append(clock() - t0)
    rows = []
    for i, layer in enumerate(layers):
        rows.append({"layer": _layer_label(layer), "forward_s": float(np.median(fwd[i])),
                     "backward_s": float(np.median(bwd[i])) if training else None})
    if training:
        rows.append({"layer": "loss (softmax cross-entropy)", "forward_s": float(np.median(loss_t)),
                     "backward_s": None})
        rows.append({"layer": "optimizer (SGD momentum)", "forward_s": None,
                     "backward_s": float(np.median(opt_t))})
    return rows


def torch_breakdown(net, optim, batches, training, reps, torch, warmups=2):
    """The same manual pass through the torch groups (one group per cnn layer). Each group's
    backward is its own ``autograd.grad`` call, so the sum exceeds a fused step's time."""
    clock = time.perf_counter
    groups = list(net)
    tf = torch.nn.functional
    fwd = [[] for _ in groups]
    bwd = [[] for _ in groups]
    loss_t, opt_t = [], []
    tb = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]
    # the first group with parameters, and everything before it, need no input gradient
    first = next(i for i, g in enumerate(groups) if any(True for _ in g.parameters()))
    for r in range(warmups + reps):
        x, y = tb[r % len(tb)]
        keep = r >= warmups
        ins, outs = [], []
        h = x
        ctx = torch.enable_grad() if training else torch.inference_mode()
        with ctx:
            for i, g in enumerate(groups):
                hi = h.detach().requires_grad_(i > first) if training else h
                t0 = clock()
                h = g(hi)
                if keep:
                    fwd[i].append(clock() - t0)
                ins.append(hi)
                outs.append(h)
            if not training:
                continue
            t0 = clock()
            loss = tf.cross_entropy(h, y)
            grad = torch.autograd.grad(loss, h)[0]
            if keep:
                loss_t.append(clock() - t0)
            for i in range(len(groups) - 1, -1, -1):
                ps = list(groups[i].parameters())
                wrt = ([ins[i]] if ins[i].requires_grad else []) + ps
                t0 = clock()
                if wrt:
                    res = torch.autograd.grad(outs[i], wrt, grad)
                    if ins[i].requires_grad:
                        grad, res = res[0], res[1:]
                    for p, gp in zip(ps, res):
                        p.grad = gp
                if keep:
                    bwd[i].append(clock() - t0)
            t0 = clock()
            optim.step()
            if keep:
                opt_t.append(clock() - t0)
    rows = []
    for i, g in enumerate(groups):
        rows.append({"layer": "+".join(type(m).__name__ for m in g),
                     "forward_s": float(np.median(fwd[i])),
                     "backward_s": float(np.median(bwd[i])) if training else None})
    if training:
        rows.append({"layer": "loss (cross_entropy)", "forward_s": float(np.median(loss_t)),
                     "backward_s": None})
        rows.append({"layer": "optimizer (SGD momentum)", "forward_s": None,
                     "backward_s": float(np.median(opt_t))})
    return rows


def _layer_label(layer):
    name = type(layer).__name__
    act = getattr(getattr(layer, "activation", None), "name", None)
    if name == "Conv2D":
        return f"Conv2D({layer.filters}, {layer.kernel_size[0]}x{layer.kernel_size[1]}, {act})"
    if name == "Dense":
        return f"Dense({layer.units}, {act})"
    if name == "MaxPool2D":
        return f"MaxPool2D({layer.size[0]}x{layer.size[1]})"
    return name


# ----------------------------------------------------------------------------- machine facts

def _cpu_info():
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    if model is None:
        model = platform.processor() or platform.machine()
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "amx_tile") if f in flags]
    return model, simd


def _cgroup_quota():
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        return None if quota == "max" else round(int(quota) / int(period), 2)
    except (OSError, ValueError):
        return None


def _git_commit():
    root = os.path.dirname(os.path.dirname(os.path.abspath(cnn.__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None, None
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def sgemm_rate(threads, size=1024, seconds=0.3):
    """The machine's float32 GEMM rate (GFLOP/s, best repetition) through NumPy's BLAS at
    ``threads`` threads: the ceiling the convolutions (GEMMs after im2col) are measured against."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    c = np.empty((size, size), dtype=np.float32)
    cnn.set_num_threads(threads)  # NumPy's BLAS gets this count
    for _ in range(2):
        np.matmul(a, b, out=c)
    samples, start = [], time.perf_counter()
    while len(samples) < 5 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        samples.append(time.perf_counter() - t0)
    return 2.0 * size ** 3 / min(samples) / 1e9  # a ceiling: the best repetition


def cpu_snapshot():
    """``(busy CPU seconds of the whole machine, CPU seconds of this process and its waited-for
    children, wall time)``; busy is None where ``/proc/stat`` is missing."""
    busy = None
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
        if fields[0] == "cpu":
            v = [int(f) for f in fields[1:9]]  # user nice system idle iowait irq softirq steal
            busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    t = os.times()
    return busy, t.user + t.system + t.children_user + t.children_system, time.perf_counter()


def other_load(a, b):
    """Average number of cores that *other* processes kept busy between two snapshots."""
    if a[0] is None or b[0] is None or b[2] <= a[2]:
        return None
    return max(0.0, ((b[0] - a[0]) - (b[1] - a[1])) / (b[2] - a[2]))


def wait_for_idle(max_wait, threshold=0.15, window=1.0):
    """Wait (up to ``max_wait`` s) until other processes use fewer than ``threshold`` cores over
    a ``window``. Returns the seconds waited (0 when /proc/stat is unavailable)."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait:
        a = cpu_snapshot()
        time.sleep(window)
        load = other_load(a, cpu_snapshot())
        if load is None or load < threshold:
            break
    return time.perf_counter() - start


def machine_facts(threads, torch, torch_reason, load_start, others=None, sgemm=None, commit=None):
    """Everything that decides how fast the cases run, and warnings about it."""
    import scipy
    import threadpoolctl
    model, simd = _cpu_info()
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    config = cnn.show_config()
    pools = threadpoolctl.threadpool_info()
    commit, dirty = commit or _git_commit()
    env_keys = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_PROC_BIND",
                "KMP_DUPLICATE_LIB_OK")
    facts = {
        "cpu": model,
        "simd": simd,
        "cores_logical": os.cpu_count(),
        "cores_available": affinity,
        "cgroup_cpu_quota": _cgroup_quota(),
        "threads": threads,
        "load_average_start": load_start,
        "load_average_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "other_processes_cores": others,
        "sgemm_gflops": sgemm[1] if sgemm else None,
        "sgemm_size": sgemm[0] if sgemm else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "threadpoolctl": threadpoolctl.__version__,
        "torch": getattr(torch, "__version__", None),
        "torch_absent_reason": torch_reason,
        "cnn": config["version"],
        "cnn_path": os.path.dirname(os.path.abspath(cnn.__file__)),
        "git_commit": commit,
        "git_dirty": dirty,
        "openmp": config["openmp"],
        "blas": config["blas"],
        "compiler_flags": config.get("compiler_flags"),
        "flush_to_zero": config.get("flush_to_zero"),
        "threadpools": [{k: p.get(k) for k in ("user_api", "internal_api", "version", "num_threads",
                                                "threading_layer", "architecture", "filepath")}
                        for p in pools],
        "env": {k: os.environ.get(k) for k in env_keys},
        "data": _DATA["mnist"][2] if "mnist" in _DATA else None,
    }
    if torch is not None:
        try:
            facts["torch_parallel"] = [line.strip() for line in torch.__config__.parallel_info().splitlines()
                                       if "backend" in line or "MKL" in line.upper() or "OpenMP" in line][:6]
            facts["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available())
        except Exception:  # pragma: no cover - informational only
            pass
    warnings = []
    for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if os.environ.get(key):
            warnings.append(f"{key}={os.environ[key]} is set: it changes OpenBLAS' kernels; "
                            f"benchmark figures should be taken with it unset "
                            f"(env -u {key} python -m cnn.bench)")
    omp = {os.path.realpath(p["filepath"]) for p in pools if p.get("user_api") == "openmp"}
    facts["openmp_runtimes"] = sorted(omp)
    if len(omp) > 1:
        warnings.append(f"{len(omp)} OpenMP runtimes are loaded ({', '.join(sorted(omp))}): their "
                        f"thread pools compete for the cores, and mixing them can give wrong results")
    if not config["openmp"]:
        warnings.append("cnn was built without OpenMP: its kernels run on one thread")
    if affinity and threads > affinity:
        warnings.append(f"--threads {threads} exceeds the {affinity} cores available: oversubscribed")
    if others is not None and others > 0.25:
        warnings.append(f"other processes kept {others:.2f} of the {affinity} cores busy on average "
                        f"while the cases ran (column 'others' per case): figures are perturbed, "
                        f"multi-threaded ones most; ratios less so (backends alternate in rounds)")
    elif others is None and load_start and load_start[0] > 0.5:
        warnings.append(f"the machine was busy when the bench started (load average {load_start[0]:.2f} "
                        f"on {affinity} cores): figures may be perturbed, ratios less so "
                        f"(backends alternate in rounds)")
    if config.get("flush_to_zero"):
        warnings.append("flush-to-zero is on in this process (a library set FTZ/DAZ)")
    facts["warnings"] = warnings
    return facts


# ----------------------------------------------------------------------------- formatting

def _ms(s):
    if s is None:
        return "-"
    ms = s * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def _num(v, digits=1):
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def _ratio(v):
    return "-" if v is None else f"{v:.2f}x"


def format_table(cases):
    head = (f"{'case':<36} {'thr':>3} {'MFLOP':>8}  {'backend':<9} {'median ms':>9} "
            f"{'min..max ms':>17} {'GFLOP/s':>8} {'img/s':>8} {'vs torch':>9} {'vs ref':>8}  check  others")
    lines = [head, "-" * len(head)]
    for case in cases:
        first = True
        for b in BACKENDS:
            r = case["results"].get(b)
            if r is None:
                continue
            lead = (f"{case['name']:<36} {case['threads']:>3} {case['flops'] / 1e6:>8.1f}  " if first
                    else " " * 51)
            if "skipped" in r:
                lines.append(f"{lead}{b:<9} skipped: {r['skipped']}")
            else:
                spread = f"{_ms(r['min_s'])}..{_ms(r['max_s'])}"
                extra = ""
                if case["kind"] == "memory":
                    extra = (f"  peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB "
                             f"(after imports {r['import_rss_bytes'] / 2**20:.0f} MiB)")
                ratios = case["ratios"] if b == "cnn" else {}
                check = ""
                if b == "cnn":
                    check = "ok" if case["check"]["ok"] else "MISMATCH"
                    if not case["check"]["compared"]:
                        check = "-"
                    busy = case.get("other_load")
                    check = f"{check:<8} {'-' if busy is None else f'{busy:.2f}':>5}"
                lines.append(f"{lead}{b:<9} {_ms(r['median_s']):>9} {spread:>17} "
                             f"{_num(r['gflops']):>8} {_num(r['images_per_s'], 0):>8} "
                             f"{_ratio(ratios.get('vs_torch')):>9} {_ratio(ratios.get('vs_reference')):>8}"
                             f"  {check}{extra}")
            first = False
    return "\n".join(lines)


def format_scaling(scaling):
    if not scaling:
        return ""
    lines = ["Thread scaling (median time at 1 thread / at N threads):",
             f"  {'case':<28} {'backend':<9} {'T1 ms':>9} {'TN ms':>9} {'N':>3} {'speed-up':>9}"]
    for s in scaling:
        lines.append(f"  {s['case']:<28} {s['backend']:<9} {_ms(s['t1_s']):>9} {_ms(s['tn_s']):>9} "
                     f"{s['threads']:>3} {s['speedup']:>8.2f}x")
    return "\n".join(lines)


def format_breakdown(case):
    bd = case.get("breakdown")
    if not bd:
        return ""
    backends = [b for b in ("cnn", "torch") if b in bd]
    lines = [f"Breakdown of {case['name']} (manual per-layer pass, median ms):"]
    head = f"  {'layer':<30}" + "".join(f" {b + ' fwd':>10} {b + ' bwd':>10}" for b in backends)
    lines.append(head)
    n = max(len(bd[b]) for b in backends)
    sums = {b: 0.0 for b in backends}
    for i in range(n):
        label = bd["cnn"][i]["layer"] if "cnn" in bd and i < len(bd["cnn"]) else ""
        row = f"  {label:<30}"
        for b in backends:
            e = bd[b][i] if i < len(bd[b]) else {}
            f, k = e.get("forward_s"), e.get("backward_s")
            sums[b] += (f or 0.0) + (k or 0.0)
            row += f" {_ms(f):>10} {_ms(k):>10}"
        lines.append(row)
    lines.append(f"  {'sum':<30}" + "".join(f" {_ms(sums[b]):>21}" for b in backends))
    meas = "".join(f" {_ms(case['results'][b].get('median_s')) if 'median_s' in case['results'].get(b, {}) else '-':>21}"
                   for b in backends)
    lines.append(f"  {'measured (whole call, median)':<30}{meas}")
    return "\n".join(lines)


def format_facts(m):
    lines = ["Machine:",
             f"  CPU: {m['cpu']} ({', '.join(m['simd']) or 'no SIMD flags read'}); "
             f"{m['cores_available']} cores available of {m['cores_logical']}"
             + (f", cgroup quota {m['cgroup_cpu_quota']} CPUs" if m["cgroup_cpu_quota"] else ""),
             f"  threads: {m['threads']} (kernel cases and the MLP; model cases at 1 and {m['threads']})",
             f"  load average at start {', '.join(f'{v:.2f}' for v in m['load_average_start'] or [])}; "
             f"at end {', '.join(f'{v:.2f}' for v in m['load_average_end'] or [])}; other processes "
             f"used {'?' if m['other_processes_cores'] is None else format(m['other_processes_cores'], '.2f')} "
             f"cores on average while the kept cases ran",
             f"  SGEMM (NumPy's BLAS, float32 {m.get('sgemm_size')}^3): "
             + (", ".join(f"{v:.1f} GFLOP/s at {k} thread{'s' if k != '1' else ''}"
                          for k, v in (m.get("sgemm_gflops") or {}).items()) or "not measured"),
             f"  Python {m['python']}, numpy {m['numpy']}, scipy {m['scipy']}, threadpoolctl "
             f"{m['threadpoolctl']}, torch {m['torch'] or 'absent (' + str(m['torch_absent_reason']) + ')'}",
             f"  cnn {m['cnn']} from {m['cnn_path']}, commit {m['git_commit']}"
             + (" (working tree modified)" if m["git_dirty"] else ""),
             f"  cnn OpenMP: {m['openmp']}; compiler flags: {' '.join(m['compiler_flags'] or [])}; "
             f"flush-to-zero: {m['flush_to_zero']}",
             "  thread pools (threadpoolctl):"]
    for p in m["threadpools"]:
        lines.append(f"    {p['user_api']:<7} {p['internal_api']:<9} {str(p['version']):<14} "
                     f"{p['num_threads']} threads  {p.get('threading_layer') or ''} "
                     f"{p.get('architecture') or ''}  {p['filepath']}")
    if m.get("torch_parallel"):
        lines.append("  torch: " + "; ".join(m["torch_parallel"]))
    env = ", ".join(f"{k}={v}" for k, v in m["env"].items() if v is not None) or "none set"
    lines.append(f"  environment: {env}")
    lines.append(f"  model data: {m['data']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- running

def _import_torch(disabled):
    if disabled:
        return None, "disabled with --no-torch"
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken install (OSError from a .so)
        return None, f"not importable: {type(exc).__name__}: {exc}"
    return torch, None


def _set_threads(n, torch):
    cnn.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)


def _log(msg, quiet=False):
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def run_case(case, ctx, cfg, args, known):
    """Check, then time one case. Returns its JSON record."""
    torch = ctx["torch"]
    record = {"name": case.name, "kind": case.kind, "shape": case.shape, "threads": case.threads,
              "flops": int(case.flops), "results": {}, "ratios": {},
              "check": {"ok": True, "compared": [], "details": []}}
    _set_threads(case.threads, torch)
    if case.kind == "memory":
        return _run_memory_case(case, record, ctx)

    checks, runs, estimates, outputs = {}, {}, {}, {}
    for b in BACKENDS:
        if b == "torch" and torch is None:
            record["results"][b] = {"skipped": f"torch {ctx['torch_reason']}"}
            continue
        if b == "reference" and case.reference_hint and case.reference_hint[0] in known:
            predicted = known[case.reference_hint[0]] * case.reference_hint[1]
            if predicted > cfg["reference_limit"] and torch is not None:
                record["results"][b] = {"skipped": f"one repetition would take ~{predicted:.1f} s "
                                                   f"(> {cfg['reference_limit']} s)"}
                continue
        try:
            check, run = case.setup(b, ctx)
        except Skip as exc:
            record["results"][b] = {"skipped": str(exc)}
            continue
        t0 = time.perf_counter()
        outputs[b] = check()
        elapsed = time.perf_counter() - t0
        if case.kind == "train_step":
            elapsed /= 2  # the check made two steps
        estimates[b] = elapsed
        runs[b] = run
        if b == "reference":
            known[case.name] = elapsed
            if elapsed > cfg["reference_limit"]:
                record["results"][b] = {"skipped": f"one repetition took {elapsed:.1f} s "
                                                   f"(> {cfg['reference_limit']} s)"}
                del runs[b]

    pairs = [("cnn", "torch"), ("cnn", "reference")]
    if "cnn" not in outputs:
        pairs.append(("torch", "reference"))
    details = compare(outputs, pairs, case.rules)
    record["check"] = {"ok": all(d["ok"] for d in details),
                       "compared": sorted({d["pair"] for d in details}), "details": details,
                       "tolerances": {q: TOLERANCES[k] for q, k in case.rules.items()}}
    if not record["check"]["ok"]:
        for d in details:
            if not d["ok"]:
                _log(f"!!! MISMATCH in {case.name}: {d['pair']} {d['quantity']}: "
                     + (d.get("error") or f"relative error {d['rel_err']:.3g} > tolerance {d['tol']:.3g}"))
    del outputs

    samples = time_backends(runs, cfg, estimates)
    for b, s in samples.items():
        st = _stats(s)
        st["warmups"] = cfg["warmups"] + 1  # the check call warmed up too
        st["gflops"] = case.flops / st["median_s"] / 1e9 if case.flops else None
        st["images_per_s"] = case.images / st["median_s"] if case.images else None
        record["results"][b] = st
    _ratios(record, "median_s")
    if args.breakdown and case.kind in ("train_step", "predict"):
        record["breakdown"] = _breakdown(case, ctx, cfg)
    return record


def _ratios(record, key):
    res = record["results"]
    base = res.get("cnn", {}).get(key)
    for b, name in (("torch", "vs_torch"), ("reference", "vs_reference")):
        other = res.get(b, {}).get(key)
        record["ratios"][name] = other / base if base and other else None
    record["ratios"]["basis"] = key


def _run_memory_case(case, record, ctx):
    steps, batch = case.shape["steps"], case.shape["batch"]
    for b in BACKENDS:
        if b == "reference":
            record["results"][b] = {"skipped": "not measured (the memory case compares cnn and torch)"}
            continue
        if b == "torch" and ctx["torch"] is None:
            record["results"][b] = {"skipped": f"torch {ctx['torch_reason']}"}
            continue
        if b == "cnn" and not ctx["have_model"]:
            record["results"][b] = {"skipped": ctx["model_reason"]}
            continue
        try:
            data = run_memory_child(b, batch, steps, case.threads)
        except (Skip, subprocess.SubprocessError, ValueError) as exc:
            record["results"][b] = {"skipped": f"{type(exc).__name__}: {exc}"}
            continue
        st = _stats(data["times"])
        st["warmups"] = 0
        st["gflops"] = case.flops / st["median_s"] / 1e9 if case.flops else None
        st["images_per_s"] = batch / st["median_s"]
        st["peak_rss_bytes"] = int(data["peak_rss_bytes"])
        st["import_rss_bytes"] = int(data["import_rss_bytes"])
        record["results"][b] = st
    _ratios(record, "peak_rss_bytes")
    record["check"]["compared"] = []
    return record


def _breakdown(case, ctx, cfg):
    out = {}
    batches = mnist_batches(case.batch, limit=8)
    try:
        model = MODELS[case.model](0)
        out["cnn"] = cnn_breakdown(model, batches, case.training, cfg["breakdown_reps"])
    except Skip:
        pass
    torch = ctx["torch"]
    if torch is not None:
        try:
            model = MODELS[case.model](0)
            spec, opt = _layer_spec(model)
            net = torch_net(spec, torch)
            optim = torch_optimizer(net, opt, torch)
            out["torch"] = torch_breakdown(net, optim, batches, case.training, cfg["breakdown_reps"], torch)
        except Skip:
            pass
    return out


def _scaling(records, threads):
    out = []
    by_name = {r["name"]: r for r in records}
    for r in records:
        if r["kind"] not in ("train_step", "predict") or r["threads"] != 1 or threads == 1:
            continue
        other = by_name.get(r["name"][: -len("T1")] + f"T{threads}")
        if other is None:
            continue
        for b in ("cnn", "torch", "reference"):
            t1 = r["results"].get(b, {}).get("median_s")
            tn = other["results"].get(b, {}).get("median_s")
            if t1 and tn:
                out.append({"case": r["name"][: -len(" T1")], "backend": b, "threads": threads,
                            "t1_s": t1, "tn_s": tn, "speedup": t1 / tn})
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m cnn.bench",
                                description="Time cnn against the NumPy reference and PyTorch.")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for every backend (default: cnn.get_num_threads()); the model cases "
                        "run at 1 and at this count")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--quick", action="store_true",
                   help="a short run: the same cases on smaller batches, few repetitions, the same JSON "
                        "schema (a smoke test, not figures to quote)")
    p.add_argument("--breakdown", action="store_true",
                   help="per-layer forward/backward times of the whole-model cases")
    p.add_argument("--cases", metavar="REGEX",
                   help="only the cases whose name matches this regular expression (case-insensitive)")
    p.add_argument("--no-torch", action="store_true", help="do not import PyTorch")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timed repetitions per backend and case (default 1.2; 0.06 with --quick)")
    p.add_argument("--reference-limit", type=float, default=None,
                   help="skip the reference where one repetition takes longer (s; default 2, 0.3 with --quick)")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="on a shared machine: before each case, wait up to SECONDS until other "
                        "processes use under 0.15 cores (default 0: do not wait)")
    p.add_argument("--list", action="store_true", help="list the case names and exit")
    args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    return args


def main(argv=None):
    args = parse_args(argv)
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    cfg = dict(QUICK if args.quick else FULL)
    if args.budget is not None:
        cfg["budget"] = args.budget
    if args.reference_limit is not None:
        cfg["reference_limit"] = args.reference_limit
    threads = args.threads if args.threads is not None else cnn.get_num_threads()
    cases = build_cases(threads, cfg["memory_steps"], quick=args.quick)
    if args.cases:
        pattern = re.compile(args.cases, re.IGNORECASE)
        cases = [c for c in cases if pattern.search(c.name)]
    if args.list:
        print("\n".join(c.name for c in cases))
        return 0
    torch, torch_reason = _import_torch(args.no_torch)
    try:
        _model_api()
        have_model, model_reason = True, None
    except Skip as exc:
        have_model, model_reason = False, str(exc)
    ctx = {"torch": torch, "torch_reason": torch_reason, "have_model": have_model,
           "model_reason": model_reason}
    known = {}
    records = []
    t_start = time.perf_counter()
    size = 512 if args.quick else 1024
    if args.wait_idle:
        wait_for_idle(args.wait_idle)
    sgemm = (size, {str(t): sgemm_rate(t, size, 0.05 if args.quick else 0.5) for t in sorted({1, threads})})
    commit = _git_commit()  # now: HEAD may move while the bench runs
    for i, case in enumerate(cases):
        _log(f"[{i + 1}/{len(cases)}] {case.name} ...")
        best = None
        # With --wait-idle, a case that other processes disturbed anyway is run again (up to
        # 3 attempts); the least disturbed attempt is kept.
        for attempt in range(1, (3 if args.wait_idle else 1) + 1):
            waited = wait_for_idle(args.wait_idle) if args.wait_idle else 0.0
            if waited > 1.5:
                _log(f"      waited {waited:.0f} s for other processes to go quiet")
            before = cpu_snapshot()
            record = run_case(case, ctx, cfg, args, known)
            after = cpu_snapshot()
            record["bench_seconds"] = after[2] - before[2]
            record["other_load"] = other_load(before, after)
            record["waited_for_idle_s"] = waited
            record["attempts"] = attempt
            _log(f"      done in {record['bench_seconds']:.1f} s"
                 + ("" if record["other_load"] is None else
                    f" (other processes: {record['other_load']:.2f} cores)"))
            if best is None or (record["other_load"] or 0.0) < (best["other_load"] or 0.0):
                best = record
            if (record["other_load"] or 0.0) <= 0.25:
                break
        best["attempts"] = attempt
        records.append(best)
    elapsed = time.perf_counter() - t_start
    _set_threads(threads, torch)
    timed = sum(r["bench_seconds"] for r in records)
    loads = [(r["other_load"], r["bench_seconds"]) for r in records if r["other_load"] is not None]
    others = sum(l * t for l, t in loads) / timed if loads and timed > 0 else None
    facts = machine_facts(threads, torch, torch_reason, load_start, others, sgemm, commit)
    scaling = _scaling(records, threads)
    mismatches = [r["name"] for r in records if not r["check"]["ok"]]

    print(f"cnn.bench ({'quick' if args.quick else 'full'} run, {elapsed:.0f} s; ratios = other's time / "
          f"cnn's time, > 1 means cnn is faster; memory: other's peak RSS / cnn's)")
    print(format_table(records))
    text = format_scaling(scaling)
    if text:
        print()
        print(text)
    for r in records:
        text = format_breakdown(r)
        if text:
            print()
            print(text)
    print()
    print(format_facts(facts))
    for w in facts["warnings"]:
        print(f"WARNING: {w}")
    if mismatches:
        print(f"!!! OUTPUT MISMATCH (see the check details in the JSON) in: {', '.join(mismatches)}")
    if args.json:
        doc = {"schema_version": SCHEMA_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "quick": bool(args.quick), "argv": sys.argv[1:] if argv is None else list(argv),
               "config": cfg, "tolerances": TOLERANCES, "elapsed_s": elapsed, "machine": facts,
               "cases": records, "scaling": scaling, "mismatches": mismatches}
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1, default=_json_default)
    return 1 if mismatches else 0


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON-able: {type(o).__name__}")


if __name__ == "__main__":
    sys.exit(main())
