"""``--breakdown``: per-layer forward and backward times of the whole-model cases.

cnn: the real step (:meth:`~cnn.Sequential.forward_backward`, then
:meth:`~cnn.Sequential.apply_gradients`; or :meth:`~cnn.Sequential.predict`) with a layer hook
(:meth:`~cnn.Sequential.register_layer_hook`) taking the clock at every layer's
``forward_begin``/``forward_end``/``backward_begin``/``backward_end``. The loss row is the time
between the last layer's forward end and its backward begin (on the fused softmax +
cross-entropy path, the logits gradient ``(s - y) / N`` is computed inside the last layer's
backward, so it counts there); the optimizer row is ``apply_gradients``. Per repetition the rows
are disjoint parts of the step, so they add up to no more than its wall time; the rest is input
validation and the hooks' own calls. A layer the backward pass never reaches (nothing before it
has parameters) shows a backward time of 0.

torch: a manual pass through the groups of :func:`cnn.bench.torch_backend.torch_net`, see
:func:`cnn.bench.torch_backend.torch_breakdown`.

Every layer row carries its FLOP counts (:func:`cnn.bench.flops.layer_flops`: conv and dense
forward, their backward ``dW`` + ``dx``, pooling's compares and routed adds, 0 for the layers
with no counted arithmetic), from which the report prints each layer's GFLOP/s and its fraction
of the SGEMM ceiling the bench measured.
"""

import time

import numpy as np

from . import data, nets, torch_backend
from .common import Skip
from .flops import layer_flops

__all__ = ["cnn_breakdown", "cnn_layer_samples", "layer_label", "layer_rates", "breakdown"]


def cnn_layer_samples(model, batches, training, reps, warmups=2):
    """Seconds of each part of ``reps`` timed steps (after ``warmups`` untimed ones).

    Parameters
    ----------
    model : cnn.Sequential
        Built and (for ``training``) compiled.
    batches : list of (x, y)
        Cycled through, one batch a step.
    training : bool
        A training step (forward_backward + apply_gradients), else ``predict``.
    reps, warmups : int

    Returns
    -------
    dict of ndarray, float64
        ``"forward"``, ``"backward"``: shape (reps, len(model.layers)); ``"loss"``,
        ``"optimizer"``, ``"step"`` (the wall time of the whole step): shape (reps,). The
        backward, loss and optimizer parts are 0 for ``predict``.
    """
    clock = time.perf_counter
    n = len(model.layers)
    fwd, bwd = np.zeros((reps, n)), np.zeros((reps, n))
    loss, opt, step = np.zeros(reps), np.zeros(reps), np.zeros(reps)
    marks = []
    handle = model.register_layer_hook(lambda event, index, layer: marks.append((clock(), event, index)))
    try:
        for r in range(warmups + reps):
            x, y = batches[r % len(batches)]
            marks.clear()
            t0 = clock()
            if training:
                model.forward_backward(x, y)
                t1 = clock()
                model.apply_gradients()
            else:
                model.predict(x, batch_size=len(x))
                t1 = None
            t2 = clock()
            if r < warmups:
                continue
            k = r - warmups
            begin = {}
            for t, event, index in marks:
                kind, _, edge = event.partition("_")
                if edge == "begin":
                    begin[kind, index] = t
                else:
                    (fwd if kind == "forward" else bwd)[k, index] += t - begin.pop((kind, index))
            if training:
                # The loss runs between the last layer's forward end and its backward begin.
                end = max(t for t, event, index in marks if event == "forward_end" and index == n - 1)
                start = min(t for t, event, index in marks if event == "backward_begin" and index == n - 1)
                loss[k] = start - end
                opt[k] = t2 - t1
            step[k] = t2 - t0
    finally:
        handle.remove()
    return {"forward": fwd, "backward": bwd, "loss": loss, "optimizer": opt, "step": step}


def layer_label(layer):
    """A short row label: ``Conv2D(32, 3x3, relu)``, ``Dense(10, softmax)``, ``MaxPool2D(2x2)``."""
    name = type(layer).__name__
    act = getattr(getattr(layer, "activation", None), "name", None)
    if name == "Conv2D":
        return f"Conv2D({layer.filters}, {layer.kernel_size[0]}x{layer.kernel_size[1]}, {act})"
    if name == "Dense":
        return f"Dense({layer.units}, {act})"
    if name == "MaxPool2D":
        return f"MaxPool2D({layer.size[0]}x{layer.size[1]})"
    return name


def cnn_breakdown(model, batches, training, reps, warmups=2):
    """Rows ``{"layer", "forward_s", "backward_s", "forward_flops", "backward_flops"}`` of
    median seconds per layer (``backward_flops`` None for ``predict``), then (for training) the
    loss and the optimizer rows; see :func:`cnn_layer_samples`."""
    s = cnn_layer_samples(model, batches, training, reps, warmups)
    batch = len(batches[0][0])
    # layers whose forward runs inside the call before them (cnn._train_fusion: a max-pool in
    # its conv's kernel, a ReLU in its BN/Add): "fused", their forward time is in that row
    fused = {id(step.layer) for step in model._steps if step.fused in ("pooled", "skip")}
    rows = []
    for i, layer in enumerate(model.layers):
        f, b = layer_flops(layer, batch)
        rows.append({"layer": layer_label(layer), "fused": id(layer) in fused,
                     "forward_s": float(np.median(s["forward"][:, i])),
                     "backward_s": float(np.median(s["backward"][:, i])) if training else None,
                     "forward_flops": int(f), "backward_flops": int(b) if training else None})
    if training:
        rows.append({"layer": "loss (softmax cross-entropy)", "forward_s": float(np.median(s["loss"])),
                     "backward_s": None})
        rows.append({"layer": "optimizer (SGD momentum)", "forward_s": None,
                     "backward_s": float(np.median(s["optimizer"]))})
    return rows


def breakdown(case, ctx, cfg):
    """``{"cnn": rows, "torch": rows}`` of a whole-model case (torch when importable)."""
    out = {}
    batches = data.image_batches(case.batch, case.shape["input"], limit=8)
    out["cnn"] = cnn_breakdown(nets.build(case.model, 0), batches, case.training, cfg["breakdown_reps"])
    torch = ctx["torch"]
    if torch is not None:
        try:
            model = nets.build(case.model, 0)
            net = torch_backend.torch_net(nets.layer_spec(model), torch)
            optim = torch_backend.torch_optimizer(net, nets.optimizer_spec(model), torch)
            rows = torch_backend.torch_breakdown(net, optim, batches, case.training,
                                                 cfg["breakdown_reps"], torch)
        except Skip:
            return out
        batch = len(batches[0][0])
        for row, layer in zip(rows, model.layers):  # one torch group per cnn layer
            f, b = layer_flops(layer, batch)
            row["forward_flops"], row["backward_flops"] = int(f), int(b) if case.training else None
        out["torch"] = rows
    return out


def layer_rates(row, ceiling=None):
    """``(forward GFLOP/s, backward GFLOP/s, forward fraction of ceiling, backward fraction)``
    of a breakdown row; None where the row counts no FLOPs, has no time, its forward is fused
    into the row before it (``"fused"``: no forward rate), or (fractions) no ``ceiling``
    (GFLOP/s) is given."""
    out = []
    for part in ("forward", "backward"):
        flops, secs = row.get(f"{part}_flops"), row.get(f"{part}_s")
        if part == "forward" and row.get("fused"):
            flops = None
        out.append(flops / secs / 1e9 if flops and secs else None)
    return (*out, *(r / ceiling if r is not None and ceiling else None for r in out))
