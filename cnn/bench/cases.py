"""The cases, in run order: conv and pool kernels through :mod:`cnn.functional`, whole models
through :class:`cnn.Sequential`, and the memory case; each knows how every backend runs it
(``onnxruntime``: the ``predict`` cases only)."""

import copy
import math

import numpy as np

from cnn import functional as F
from cnn import reference as R

from . import nets, ort_backend, torch_backend
from .common import Skip
from .data import cycle, image_batches
from .flops import conv_flops, model_flops, pool_backward_flops, pool_forward_flops
from .reference_backend import NumpyNet

__all__ = ["Case", "SIZES", "build_cases", "latency_case", "zoo_cases"]


class Case:
    """One benchmark case.

    ``setup(backend, ctx)`` returns ``(check, run)``: ``check()`` runs the operation once and
    returns ``{quantity: array}`` for the agreement check (it may also be the first warm-up);
    ``run()`` is one timed repetition. It raises :class:`Skip` when the backend cannot run.
    """

    def __init__(self, name, kind, shape, threads, flops, images, setup, rules,
                 reference_hint=None, model=None, batch=None, training=None, zoo=False,
                 alone=False):
        self.name, self.kind, self.shape, self.threads = name, kind, shape, threads
        self.flops, self.images, self.setup, self.rules = flops, images, setup, rules
        self.reference_hint = reference_hint  # (case name, factor): predicts the reference's time
        self.model, self.batch, self.training = model, batch, training
        self.zoo = zoo  # counted in the zoo's geometric mean of the ratios
        self.alone = alone  # also timed with each library alone in its process (cnn.bench.alone)


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
        if backend in ("cnn", "reference"):
            lib = F if backend == "cnn" else R  # the same calls, the package or the oracle
            if not backward:
                return (lambda: {"y": lib.conv2d(x, w, b, 1, "same")},
                        lambda: lib.conv2d(x, w, b, 1, "same"))

            def run():
                y = lib.conv2d(x, w, b, 1, "same")
                dx, dw, db = lib.conv2d_backward(dy, x, w, 1, "same")
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


def _model_case(model_key, batch, threads, training, base_batch=None, name=None, reference=True,
                zoo=False, alone=False):
    """A whole-model case of the bench network ``model_key``; ``reference=False``: the
    reference backend skips it (the zoo cases compare cnn with torch and ONNX Runtime);
    ``alone``: the alone mode times it too."""
    _, _, label, json_name, input_shape = nets.BENCH_MODELS[model_key]
    what = "train_step" if training else "predict"
    name = name or f"{label} {what} B{batch} T{threads}"
    probe = nets.build(model_key, 0)
    flops = model_flops(probe, batch, training)
    n_params = len(probe.params)
    hint = None
    if base_batch and batch != base_batch:
        hint = (f"{label} {what} B{base_batch} T{threads}", batch / base_batch)

    def setup(backend, ctx):
        model = nets.build(model_key, 0)
        if backend == "reference" and not reference:
            raise Skip("the zoo cases compare cnn with torch and ONNX Runtime")
        if backend == "onnxruntime":
            if training:
                raise Skip("ONNX Runtime runs the predict cases only")
            x0 = image_batches(batch, input_shape, limit=1)[0][0]
            try:
                return ort_backend.predict_setup(model, threads, x0)
            except (ValueError, TypeError, NotImplementedError) as exc:
                raise Skip(f"cnn's ONNX exporter: {exc}") from None
        if backend != "cnn":
            spec, opt = nets.layer_spec(model), nets.optimizer_spec(model)
        if training:
            batches = image_batches(batch, input_shape)
            nxt = cycle(batches)
            x0, y0 = batches[0]
        else:
            x0, y0 = image_batches(batch, input_shape, limit=1)[0]
        if backend == "cnn":
            if training:
                def check():
                    # Like the torch side, the agreement check runs a float64 copy (the same
                    # weights, loss and optimizer): two steps of a deep BatchNorm net at a small
                    # batch amplify float32 rounding beyond any useful tolerance (ResNet8 at B8:
                    # 1e-2 in BN shifts between float32 and float64 runs of either library),
                    # while its float64 gradients pass cnn.gradcheck. The timed model stays
                    # float32; this also serves as its first warm-up.
                    config = dict(model.get_config(), dtype="float64")
                    ref = type(model).from_config(config)
                    ref.set_weights(model.get_weights())
                    ref.compile(model.loss.get_config(), model.optimizer.get_config())
                    x64 = x0.astype(np.float64)
                    l1 = ref.train_step(x64, y0)
                    l2 = ref.train_step(x64, y0)
                    model.train_step(x0, y0)
                    out = {"loss1": np.float64(l1), "loss2": np.float64(l2)}
                    for i, p in enumerate(ref.params):
                        out[f"w{i}"] = p.astype(np.float32)
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
        net = torch_backend.torch_net(spec, torch).train(training)  # BatchNorm's mode
        tf = torch.nn.functional
        if training:
            optim = torch_backend.torch_optimizer(net, opt, torch)
            tbatches = [(torch.from_numpy(xb), torch.from_numpy(yb)) for xb, yb in batches]
            tnxt = cycle(tbatches)

            def step(xb, yb):
                optim.zero_grad(set_to_none=True)
                loss = tf.cross_entropy(net(xb), yb)
                loss.backward()
                optim.step()
                return loss.item()

            def check():
                # The agreement check runs a float64 copy of the torch net: torch's float32
                # BatchNorm backward lost up to ~3 % of some BN gradients of ResNet8 at small
                # batches (cnn agreed with the float64 copy to 1e-6), which is torch's rounding,
                # not a different network. The timed net stays float32.
                ref = copy.deepcopy(net).double()
                ropt = torch_backend.torch_optimizer(ref, opt, torch)
                xb, yb = tbatches[0]
                losses = []
                for _ in range(2):
                    ropt.zero_grad(set_to_none=True)
                    loss = tf.cross_entropy(ref(xb.double()), yb)
                    loss.backward()
                    ropt.step()
                    losses.append(loss.item())
                step(*tbatches[0])  # the first warm-up of the timed net
                out = {"loss1": np.float64(losses[0]), "loss2": np.float64(losses[1])}
                out.update({f"w{i}": p.detach().numpy().astype(np.float32)
                            for i, p in enumerate(ref.parameters())})
                return out
            return check, lambda: step(*tnxt())
        xt = torch.from_numpy(x0)

        def predict():
            with torch.inference_mode():
                return torch.softmax(net(xt), dim=1)
        return (lambda: {"p": predict()}, predict)

    rules = ({"loss1": "loss", "loss2": "loss"} if training else {"p": "probabilities"})
    if training:
        rules.update({f"w{i}": "weights" for i in range(n_params)})
    return Case(name, "train_step" if training else "predict",
                {"model": json_name, "batch": batch,
                 "input": list(input_shape)},
                threads, flops, batch, setup, rules, reference_hint=hint,
                model=model_key, batch=batch, training=training, zoo=zoo, alone=alone)


def _memory_case(batch, steps, threads):
    flops = model_flops(nets.build("cnn", 0), batch, True)
    return Case(f"peak RSS CNN train B{batch} x{steps} T{threads}", "memory",
                {"model": "design_cnn", "batch": batch, "steps": steps, "input": [1, 28, 28]},
                threads, flops, batch, None, {})


SIZES = {
    "full": {"conv": ((64, 1, 28, 32), (64, 32, 14, 64), (32, 64, 56, 64)), "pool": (64, 32, 28),
             "model_batches": (64, 256), "mlp_batch": 64, "memory_batch": 64, "zoo_batch": 64},
    # --quick: the same cases on smaller batches (a smoke test of the whole run, not figures)
    "quick": {"conv": ((16, 1, 28, 32), (16, 32, 14, 64), (4, 64, 56, 64)), "pool": (16, 32, 28),
              "model_batches": (16, 64), "mlp_batch": 16, "memory_batch": 16, "zoo_batch": 8},
}


def zoo_cases(threads, batch):
    """The zoo of issue 15 (:data:`cnn.bench.nets.ZOO`): a ``train_step`` and a ``predict``
    case of each network at ``threads`` threads (the DESIGN CNN's are the CNN cases)."""
    cases = []
    for key in nets.ZOO:
        for training in (True, False):
            cases.append(_model_case(key, batch, threads, training, reference=False, zoo=True,
                                     alone=True))
    return cases


def latency_case(threads):
    """``predict`` of one image by the DESIGN CNN: the batch-1 latency (against ONNX Runtime
    above all)."""
    return _model_case("cnn", 1, threads, False, name=f"CNN batch 1 latency T{threads}", alone=True)


def build_cases(threads, memory_steps, quick=False):
    """Every case, in run order. The DESIGN CNN's model cases run at 1 thread and at
    ``threads``; the zoo and the batch-1 latency at ``threads``. The alone mode times the zoo,
    the DESIGN CNN's ``predict`` at both batches (``threads``; against ONNX Runtime) and the
    batch-1 latency."""
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
                # the DESIGN CNN's zoo entry: its first batch at ``threads``
                zoo = t == threads and batch == base
                cases.append(_model_case("cnn", batch, t, training, base_batch=base, zoo=zoo,
                                         alone=zoo or (t == threads and not training)))
    cases.append(latency_case(threads))
    cases.append(_model_case("mlp", sizes["mlp_batch"], threads, True))
    cases.extend(zoo_cases(threads, sizes["zoo_batch"]))
    cases.append(_memory_case(sizes["memory_batch"], memory_steps, threads))
    return cases
