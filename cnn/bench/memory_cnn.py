"""Memory probe of cnn: ``python -m cnn.bench.memory_cnn --batch B --steps S --threads T``.

Trains the bench network (``--model``: ``cnn``, the DESIGN CNN, or ``mlp``) for S
``train_step`` calls at batch B on random data, and prints one JSON line: ``{"import_rss":
peak RSS in bytes after the imports, "peak_rss": at the end, "times": seconds of each step}``.
The bench runs it in a fresh interpreter for its ``peak RSS`` case.
"""

import argparse
import json
import sys
import time

__all__ = ["main"]


def _parser(prog):
    p = argparse.ArgumentParser(prog=prog, description="Peak RSS of S training steps.")
    p.add_argument("--batch", type=int, required=True, help="batch size (>= 1)")
    p.add_argument("--steps", type=int, required=True, help="training steps (>= 1)")
    p.add_argument("--threads", type=int, required=True, help="threads (>= 1)")
    return p


def check_counts(parser, args):
    """argparse error (exit status 2) for a count below 1."""
    for key in ("batch", "steps", "threads"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be >= 1, got {getattr(args, key)}")


def main(argv=None):
    parser = _parser("python -m cnn.bench.memory_cnn")
    parser.add_argument("--model", default="cnn", choices=("cnn", "mlp"), help="bench network (cnn)")
    args = parser.parse_args(argv)
    check_counts(parser, args)
    import numpy as np

    import cnn

    from .common import peak_rss_bytes
    from .nets import build

    cnn.set_num_threads(args.threads)
    base = peak_rss_bytes()
    model = build(args.model, 0)
    rng = np.random.default_rng(0)
    xs = rng.random((8, args.batch, 1, 28, 28), dtype=np.float32)
    ys = rng.integers(0, 10, (8, args.batch))
    times = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        model.train_step(xs[i % 8], ys[i % 8])
        times.append(time.perf_counter() - t0)
    print(json.dumps({"import_rss": base, "peak_rss": peak_rss_bytes(), "times": times}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
