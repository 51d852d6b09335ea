"""One library alone in its own process: ``python PATH/cnn/bench/alone_child.py --dir DIR
--backend cnn|torch|onnxruntime --warmups W --min-reps R --budget S``.

The child of the bench's alone mode (:mod:`cnn.bench.alone`). The parent wrote the case into
``DIR`` (see :func:`cnn.bench.alone.prepare`):

* ``case.json``: ``{"model": bench key, "kind": "train_step" | "predict", "batch", "threads",
  "spec": the layer spec without weights, "optimizer": its SGD settings}``;
* ``data.npz``: the batches, ``x0, y0, x1, y1, ...`` (float32 ``(B, C, H, W)``, int64 ``(B,)``),
  the very ones the interleaved run cycles through;
* ``weights.npz``: the cnn model's ``get_weights()`` as ``w0, w1, ...``, and the spec's
  parameters and buffers as ``p{layer}_{k}`` and ``b{layer}_{k}``;
* ``model.onnx`` (predict cases the exporter can write): the same model for ONNX Runtime.

The child imports only its own library (cnn's child imports cnn; torch's and ONNX Runtime's
never do: this file runs by its path, and only this folder's :mod:`common` and
:mod:`torch_backend` are imported from it), builds the network with those weights, makes one
call whose result is the fingerprint (the probabilities, or the first loss), ``W`` warm-up calls,
then timed calls until ``R`` are done and ``S`` seconds are spent (at most 5,000). It prints one
JSON line: ``{"backend", "times": [s, ...], "fingerprint": {"p": [[...]]} or {"loss1": x},
"import_rss": peak RSS in bytes after the imports, "peak_rss": at the end, "wall_s", "cpu_s":
the wall and CPU seconds (user + system, all threads) of the timed calls}``.
"""

import argparse
import json
import os
import sys
import time

if __package__:
    from .common import peak_rss_bytes
    from .torch_backend import torch_net, torch_optimizer
else:  # run by file path: sys.path[0] is this folder
    from common import peak_rss_bytes
    from torch_backend import torch_net, torch_optimizer
    del sys.path[0]  # none of the bench's module names may shadow what the libraries import

__all__ = ["BACKENDS", "main", "parse_args"]

BACKENDS = ("cnn", "torch", "onnxruntime")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="alone_child.py",
                                description="Time one bench case with one library, alone in this process.")
    p.add_argument("--dir", required=True, help="the folder the bench prepared the case in")
    p.add_argument("--backend", required=True, choices=BACKENDS)
    p.add_argument("--warmups", type=int, default=2, help="untimed calls after the first (>= 0)")
    p.add_argument("--min-reps", type=int, default=3, help="at least this many timed calls (>= 1)")
    p.add_argument("--budget", type=float, default=0.5, help="seconds of timed calls (>= 0)")
    args = p.parse_args(argv)
    if args.warmups < 0:
        p.error(f"--warmups must be >= 0, got {args.warmups}")
    if args.min_reps < 1:
        p.error(f"--min-reps must be >= 1, got {args.min_reps}")
    if not args.budget >= 0:
        p.error(f"--budget must be >= 0, got {args.budget}")
    if not os.path.isfile(os.path.join(args.dir, "case.json")):
        p.error(f"--dir must hold the case.json the bench writes, got {args.dir!r}")
    return args


def _batches(np, directory):
    with np.load(os.path.join(directory, "data.npz")) as z:
        n = len(z.files) // 2
        return [(z[f"x{i}"], z[f"y{i}"]) for i in range(n)]


def _cnn(case, directory, np):
    import cnn
    from cnn.bench import nets
    cnn.set_num_threads(case["threads"])
    base = peak_rss_bytes()
    model = nets.build(case["model"], 0)
    with np.load(os.path.join(directory, "weights.npz")) as z:
        model.set_weights([z[f"w{i}"] for i in range(len([k for k in z.files if k[0] == "w"]))])
    batches = _batches(np, directory)
    if case["kind"] == "train_step":
        def call(i):
            x, y = batches[i % len(batches)]
            return model.train_step(x, y)
        return base, call, lambda out: {"loss1": float(out)}
    x0 = batches[0][0]
    return base, lambda i: model.predict(x0, batch_size=len(x0)), lambda p: {"p": np.asarray(p).tolist()}


def _torch(case, directory, np):
    import torch
    torch.set_num_threads(case["threads"])
    base = peak_rss_bytes()
    spec = case["spec"]
    with np.load(os.path.join(directory, "weights.npz")) as z:
        for i, e in enumerate(spec):
            e["params"] = [z[f"p{i}_{k}"] for k in range(e.get("n_params", 0))]
            e["buffers"] = [z[f"b{i}_{k}"] for k in range(e.get("n_buffers", 0))]
    training = case["kind"] == "train_step"
    net = torch_net(spec, torch).train(training)
    batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in _batches(np, directory)]
    tf = torch.nn.functional
    if training:
        optim = torch_optimizer(net, case["optimizer"], torch)

        def step(i):
            x, y = batches[i % len(batches)]
            optim.zero_grad(set_to_none=True)
            loss = tf.cross_entropy(net(x), y)
            loss.backward()
            optim.step()
            return loss.item()
        return base, step, lambda out: {"loss1": float(out)}
    x0 = batches[0][0]

    def predict(i):
        with torch.inference_mode():
            return torch.softmax(net(x0), dim=1)
    return base, predict, lambda p: {"p": p.numpy().tolist()}


def _onnxruntime(case, directory, np):
    import onnxruntime as ort
    base = peak_rss_bytes()
    # the settings of cnn.onnx.inference_session (this child does not import cnn)
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(case["threads"])
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = ort.InferenceSession(os.path.join(directory, "model.onnx"), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x0 = _batches(np, directory)[0][0]
    return base, lambda i: session.run(None, {name: x0})[0], lambda p: {"p": p.tolist()}


def main(argv=None):
    args = parse_args(argv)
    with open(os.path.join(args.dir, "case.json")) as fh:
        case = json.load(fh)
    import numpy as np
    if args.backend == "onnxruntime" and case["kind"] != "predict":
        print("alone_child.py: ONNX Runtime runs the predict cases only", file=sys.stderr)
        return 2
    setup = {"cnn": _cnn, "torch": _torch, "onnxruntime": _onnxruntime}[args.backend]
    base, call, fingerprint = setup(case, args.dir, np)
    clock = time.perf_counter
    first = fingerprint(call(0))
    for i in range(args.warmups):
        call(i + 1)
    times, i, cpu0, start = [], args.warmups + 1, os.times(), clock()
    while len(times) < args.min_reps or (clock() - start < args.budget and len(times) < 5000):
        t0 = clock()
        call(i)
        times.append(clock() - t0)
        i += 1
    wall, cpu1 = clock() - start, os.times()
    print(json.dumps({"backend": args.backend, "times": times, "fingerprint": first,
                      "import_rss": base, "peak_rss": peak_rss_bytes(), "wall_s": wall,
                      "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
