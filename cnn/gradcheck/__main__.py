"""``python -m cnn.gradcheck --model NAME``: audit a zoo model's gradients on random items.

Prints the :func:`cnn.gradcheck` table; exit status 0 when every row passes, 1 when one fails,
2 for bad arguments.
"""

import argparse
import sys

import numpy as np

from .. import models
from ._audit import gradcheck


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m cnn.gradcheck",
        description="Check a zoo model's backward pass against float64 central differences "
                    "on a few random items (uniform in [0, 1), random labels).")
    parser.add_argument("--model", required=True, choices=sorted(models.MODELS),
                        help="the zoo model (cnn.models)")
    parser.add_argument("--items", type=int, default=2, help="batch size (default 2)")
    parser.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    parser.add_argument("--input-shape", type=int, nargs=3, default=(1, 28, 28),
                        metavar=("C", "H", "W"), help="item shape (default 1 28 28)")
    parser.add_argument("--max-entries", type=int, default=20,
                        help="entries checked per tensor, drawn at random (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="weights, data and sample (default 0)")
    parser.add_argument("--eps", type=float, default=1e-6)
    parser.add_argument("--atol", type=float, default=1e-6)
    parser.add_argument("--rtol", type=float, default=1e-4)
    return parser


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.items < 1:
        parser.error(f"--items must be >= 1, got {args.items}")
    try:
        model = models.build(args.model, input_shape=tuple(args.input_shape),
                             classes=args.classes, seed=args.seed)
        rng = np.random.default_rng(args.seed)
        x = rng.random((args.items,) + tuple(model.input_shape))
        y = rng.integers(0, args.classes, args.items)
        report = gradcheck(model, x, y, eps=args.eps, atol=args.atol, rtol=args.rtol,
                           max_entries=args.max_entries, seed=args.seed)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    print(report.table())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
