"""The ``torch`` backend: the same network in PyTorch, built from a layer spec of
:mod:`cnn.bench.nets` (one ``nn.Sequential`` group per cnn layer: Conv2d + ReLU is one group),
its SGD optimizer, and its per-layer breakdown.

This module imports neither cnn nor torch at import time (torch is passed in): the torch memory
probe, :mod:`cnn.bench.memory_torch`, runs it without importing cnn, whose memory would count.
"""

import time

import numpy as np

try:
    from .common import Skip
except ImportError:  # imported by memory_torch run by its file path (see there)
    from common import Skip

__all__ = ["import_torch", "torch_net", "torch_optimizer", "torch_breakdown"]


def import_torch(disabled):
    """``(torch, None)``, or ``(None, reason)`` when disabled or not importable."""
    if disabled:
        return None, "disabled with --no-torch"
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken install (OSError from a .so)
        return None, f"not importable: {type(exc).__name__}: {exc}"
    return torch, None


def _pad_module(nn, pads, value):
    top, bottom, left, right = pads
    return nn.ConstantPad2d((left, right, top, bottom), value)


def _conv(e, nn):
    mods = []
    top, bottom, left, right = e["pads"]
    if top != bottom or left != right:
        mods.append(_pad_module(nn, e["pads"], 0.0))
        pad = 0
    else:
        pad = (top, left)
    conv = nn.Conv2d(e["in_channels"], e["filters"], tuple(e["kernel"]), stride=tuple(e["stride"]),
                     padding=pad, dilation=tuple(e.get("dilation", (1, 1))),
                     groups=e.get("groups", 1), bias=e["bias"])
    mods.append(conv)
    return mods, [conv.weight] + ([conv.bias] if conv.bias is not None else [])


def _avg_pool(e, nn, torch):
    """Average pooling that does not count padded cells, for any (top, bottom, left, right)
    pads: torch's own ``count_include_pad=False`` where its symmetric padding can express them,
    else the window sums of the zero-padded input over those of a padded ones mask."""
    size = tuple(e["size"])
    stride = tuple(e["stride"] or size)
    top, bottom, left, right = e["pads"]
    if top == bottom and left == right and 2 * top <= size[0] and 2 * left <= size[1]:
        return nn.AvgPool2d(size, stride=stride, padding=(top, left), count_include_pad=False)
    tf = torch.nn.functional

    class _PaddedAvgPool(nn.Module):
        def forward(self, x):
            pad = (left, right, top, bottom)
            ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype)
            sums = tf.avg_pool2d(tf.pad(x, pad), size, stride)
            counts = tf.avg_pool2d(tf.pad(ones, pad), size, stride)
            return sums / counts
    return _PaddedAvgPool()


def _batch_norm(e, nn, torch):
    """``BatchNorm1d/2d`` with torch's momentum ``1 - cnn's``; center/scale apart (torch's
    ``affine`` is both or neither) as a separate per-channel affine module. Returns
    ``(modules, params, buffers)``."""
    cls = nn.BatchNorm1d if e["rank"] == 1 else nn.BatchNorm2d
    both = e["center"] and e["scale"]
    bn = cls(e["features"], eps=e["eps"], momentum=1.0 - e["momentum"], affine=both)
    buffers = [bn.running_mean, bn.running_var]
    if both:
        return [bn], [bn.weight, bn.bias], buffers
    if not (e["center"] or e["scale"]):
        return [bn], [], buffers
    shape = (1, e["features"]) + ((1, 1) if e["rank"] == 3 else ())

    class _Affine(nn.Module):
        def __init__(self):
            super().__init__()
            name = "weight" if e["scale"] else "bias"
            setattr(self, name, nn.Parameter(torch.full((e["features"],), 1.0 if e["scale"] else 0.0)))

        def forward(self, x):
            if e["scale"]:
                return x * self.weight.reshape(shape)
            return x + self.bias.reshape(shape)
    affine = _Affine()
    return [bn, affine], list(affine.parameters()), buffers


def _group(e, torch):
    """``(nn.Sequential, params)`` of one spec entry, its weights and buffers copied in."""
    nn = torch.nn
    t = e["type"]
    mods, params, buffers = [], [], []
    if t == "Conv2D":
        mods, params = _conv(e, nn)
    elif t == "Dense":
        lin = nn.Linear(e["in_features"], e["units"], bias=e["bias"])
        mods, params = [lin], [lin.weight] + ([lin.bias] if lin.bias is not None else [])
    elif t == "MaxPool2D":
        size = tuple(e["size"])
        if tuple(e["pads"]) != (0, 0, 0, 0):
            mods.append(_pad_module(nn, e["pads"], float("-inf")))
        mods.append(nn.MaxPool2d(size, stride=tuple(e["stride"] or size)))
    elif t == "AvgPool2D":
        mods.append(_avg_pool(e, nn, torch))
    elif t == "GlobalAvgPool2D":
        mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    elif t == "BatchNormalization":
        mods, params, buffers = _batch_norm(e, nn, torch)
    elif t == "Dropout":
        mods.append(nn.Dropout(e["rate"]) if e["rate"] else nn.Identity())
    elif t == "Flatten":
        mods.append(nn.Flatten())
    elif t == "Activation":
        pass
    elif t in ("Add", "Concatenate"):
        mods.append(_merge(t, e.get("axis"), torch))
    else:
        raise Skip(f"layer {t} not mapped to torch by the bench")
    with torch.no_grad():
        for p, src in zip(params, e.get("params", [])):
            p.copy_(torch.from_numpy(src))
        for buf, src in zip(buffers, e.get("buffers", [])):
            buf.copy_(torch.from_numpy(src))
    act = e["activation"]
    if act == "relu":
        mods.append(nn.ReLU())
    elif act == "leaky_relu":
        mods.append(nn.LeakyReLU(e["alpha"]))
    elif act == "tanh":
        mods.append(nn.Tanh())
    elif act == "sigmoid":
        mods.append(nn.Sigmoid())
    # softmax (last layer only): left to the loss / the caller, which get the logits
    return nn.Sequential(*mods)


def _merge(kind, axis, torch):
    class _Merge(torch.nn.Module):
        def forward(self, *xs):
            if kind == "Add":
                out = xs[0]
                for x in xs[1:]:
                    out = out + x
                return out
            return torch.cat(xs, dim=axis + 1)

        def extra_repr(self):
            return kind if axis is None else f"{kind}(dim={axis + 1})"
    return _Merge()


def torch_net(spec, torch):
    """The spec's network in torch, with the spec's weights and buffers when it has them
    (torch's own initialisation otherwise); it returns the logits (a softmax output is left to
    the loss or the caller). A chain is an ``nn.Sequential`` of one group per spec entry; a
    graph spec (entries with ``inputs``/``output``) a module whose ``groups`` (in layer order:
    the parameter order of the cnn model) run in call order. Set ``.eval()`` for inference
    (BatchNormalization's running statistics, Dropout off) and ``.train()`` for training."""
    nn = torch.nn
    groups = [_group(e, torch) for e in spec]
    if not spec or "inputs" not in spec[0]:
        return nn.Sequential(*groups)
    order = sorted(range(len(spec)), key=lambda i: spec[i]["output"])
    wiring = [(i, list(spec[i]["inputs"]), spec[i]["output"]) for i in order]

    class GraphNet(nn.Module):
        """The calls of a cnn graph model; tensor 0 is the input."""

        def __init__(self):
            super().__init__()
            self.groups = nn.ModuleList(groups)

        def forward(self, x):
            tensors = {0: x}
            for i, ins, out in wiring:
                g = self.groups[i]
                if spec[i]["type"] in ("Add", "Concatenate"):
                    merged = g[0](*(tensors[t] for t in ins))
                    tensors[out] = g[1:](merged) if len(g) > 1 else merged
                else:
                    tensors[out] = g(tensors[ins[0]])
            return tensors[wiring[-1][2]]
    return GraphNet()


def torch_optimizer(net, opt, torch):
    """``torch.optim.SGD`` with the settings of :func:`cnn.bench.nets.optimizer_spec`."""
    return torch.optim.SGD(net.parameters(), lr=opt["lr"], momentum=opt["momentum"],
                           nesterov=opt["nesterov"], weight_decay=opt["weight_decay"])


def torch_breakdown(net, optim, batches, training, reps, torch, warmups=2):
    """The same manual pass through the torch groups (one group per cnn layer). Each group's
    backward is its own ``autograd.grad`` call, so the sum exceeds a fused step's time."""
    if not isinstance(net, torch.nn.Sequential):
        raise Skip("the torch breakdown runs chains only (not graph models)")
    net.train(training)
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
