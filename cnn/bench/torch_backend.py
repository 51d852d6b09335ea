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


def torch_net(spec, torch):
    """``nn.Sequential`` of one group per spec entry, with the spec's weights when it has them
    (torch's own initialisation otherwise)."""
    nn = torch.nn
    groups = []
    for e in spec:
        t = e["type"]
        mods = []
        if t == "Conv2D":
            kh, kw = e["kernel"]
            top, bottom, left, right = e["pads"]
            if top != bottom or left != right:
                mods.append(nn.ZeroPad2d((left, right, top, bottom)))
                pad = 0
            else:
                pad = (top, left)
            conv = nn.Conv2d(e["in_channels"], e["filters"], (kh, kw), stride=tuple(e["stride"]),
                             padding=pad, bias=e["bias"])
            mods.append(conv)
            params = [conv.weight] + ([conv.bias] if conv.bias is not None else [])
        elif t == "Dense":
            lin = nn.Linear(e["in_features"], e["units"], bias=e["bias"])
            mods.append(lin)
            params = [lin.weight] + ([lin.bias] if lin.bias is not None else [])
        elif t == "MaxPool2D":
            if tuple(e["pads"]) != (0, 0, 0, 0):
                raise Skip("padded max-pool not mapped to torch by the bench")
            size = tuple(e["size"])
            mods.append(nn.MaxPool2d(size, stride=tuple(e["stride"] or size)))
            params = []
        elif t == "Flatten":
            mods.append(nn.Flatten())
            params = []
        else:
            raise Skip(f"layer {t} not mapped to torch by the bench")
        if "params" in e:
            with torch.no_grad():
                for p, src in zip(params, e["params"]):
                    p.copy_(torch.from_numpy(src))
        if e["activation"] == "relu":
            mods.append(nn.ReLU())
        elif e["activation"] == "leaky_relu":
            mods.append(nn.LeakyReLU(e["alpha"]))
        groups.append(nn.Sequential(*mods))
    return nn.Sequential(*groups)


def torch_optimizer(net, opt, torch):
    """``torch.optim.SGD`` with the settings of :func:`cnn.bench.nets.optimizer_spec`."""
    return torch.optim.SGD(net.parameters(), lr=opt["lr"], momentum=opt["momentum"],
                           nesterov=opt["nesterov"], weight_decay=opt["weight_decay"])


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
