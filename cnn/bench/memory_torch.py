"""Memory probe of PyTorch: ``python PATH/cnn/bench/memory_torch.py --spec JSON --batch B
--steps S --threads T``.

Builds the network of a layer spec (:func:`cnn.bench.nets.layer_spec` without weights; torch
initialises it from ``torch.manual_seed(0)``), trains it for S steps at batch B on random data
(``zero_grad``, forward, ``cross_entropy``, ``backward``, ``SGD(0.05, momentum 0.9).step``,
``loss.item()``), and prints one JSON line as :mod:`cnn.bench.memory_cnn` does.

The bench runs it by its file path, so that cnn is not imported (its memory would count as
torch's); then only this folder's :mod:`common` and :mod:`torch_backend` are imported from it,
and the folder leaves ``sys.path`` before torch is imported. ``python -m
cnn.bench.memory_torch`` works too, with cnn imported.
"""

import json
import sys
import time

if __package__:
    from .common import peak_rss_bytes
    from .memory_cnn import _parser, check_counts
    from .torch_backend import torch_net
else:  # run by file path: sys.path[0] is this folder
    from common import peak_rss_bytes
    from memory_cnn import _parser, check_counts
    from torch_backend import torch_net
    del sys.path[0]  # none of the bench's module names may shadow what torch imports

__all__ = ["main"]


def main(argv=None):
    parser = _parser("memory_torch.py")
    parser.add_argument("--spec", required=True, help="the network: a bench layer spec as JSON")
    args = parser.parse_args(argv)
    check_counts(parser, args)
    try:
        spec = json.loads(args.spec)
    except ValueError as exc:
        parser.error(f"--spec must be JSON: {exc}")
    if not isinstance(spec, list) or not spec or not all(isinstance(e, dict) for e in spec):
        parser.error("--spec must be a non-empty JSON list of layer objects")
    import torch

    torch.set_num_threads(args.threads)
    base = peak_rss_bytes()
    torch.manual_seed(0)
    try:
        net = torch_net(spec, torch)
    except (KeyError, TypeError, ValueError) as exc:
        parser.error(f"--spec: a layer entry lacks or has a bad field: {type(exc).__name__}: {exc}")
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    xs = torch.rand(8, args.batch, 1, 28, 28)
    ys = torch.randint(0, 10, (8, args.batch))
    times = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(xs[i % 8]), ys[i % 8])
        loss.backward()
        opt.step()
        loss.item()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"import_rss": base, "peak_rss": peak_rss_bytes(), "times": times}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
