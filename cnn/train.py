"""``python -m cnn.train``: train a CNN on MNIST and report its accuracy on the test set.

With no arguments it trains the default CNN on the MNIST images shipped with the package
(5,000 training images, the official 10,000 test images), shows a progress bar, prints the
confusion matrix, and ends with the line ``test accuracy: 0.XXXX``.

Examples::

    python -m cnn.train
    python -m cnn.train --epochs 5 --threads 2 --save mnist.npz --json run.json --plot run.png
    python -m cnn.train --resume mnist.npz --epochs 20      # continue the same run
    python -m cnn.train --model seed-mlp                    # the seed project's MLP
    python -m cnn.train --model lenet5                      # any name of cnn.models.MODELS
    python -m cnn.train --data-dir ~/data/fashion-mnist     # any MNIST-layout IDX directory
    python -m cnn.train --data-dir ~/data/cifar-10-batches-bin   # or the CIFAR-10 binary files
"""

import argparse
import importlib.util
import json
import math
import os
import sys
import time

import numpy as np

from . import _atomic
from .augment import make_augment
from .models import MODELS

__all__ = ["main", "DEFAULTS"]

# Per-model defaults, one entry per zoo model (cnn.models.MODELS; a test checks that); every
# one can be overridden on the command line.
# The network `python -m cnn.train` trains when --model is not given: the BatchNorm net that
# passed 99 % on the official test set from the 5,000 bundled images (99.09 % / 99.21 % for
# seeds 0 / 1 in docs/experiments/batchnorm-mnist.md; 99.13 % in 93 s on 2 threads when it
# became the default), chosen over the DESIGN CNN on 500 held-out training images
# (99.4 % vs 99.2 %).
DEFAULT_MODEL = "bn4"

DEFAULTS = {
    # Conv-pool-conv-pool-dense as in DESIGN.md, with dropout, trained with Adam on a cosine
    # schedule and random affine augmentation (+-2 px, +-10 degrees, +-10 % zoom). On the
    # bundled 5,000 images: 98.70 % / 98.77 % test accuracy for seeds 0 / 1 in 1:46-2:13 min
    # wall clock on 2 (shared) cores; without augmentation or with whole-pixel shifts only,
    # 98.2-98.5 %.
    "cnn": {"epochs": 12, "batch_size": 64, "lr": 2e-3, "optimizer": "adam", "momentum": 0.9,
            "schedule": "cosine", "shift": 2, "rotate": 10, "scale": 0.1, "loss": "cross_entropy"},
    # The seed project's network and settings: Dense-512 leaky ReLU + Dense-10 softmax,
    # MSE loss, plain SGD, lr 0.03, batch 64. The seed's MSE (1/2, mean over the 10 outputs)
    # behind a softmax gives small gradients: on 5,000 images this reaches about 36 % in 10
    # epochs; --lr 1.0 about 90 %.
    "seed-mlp": {"epochs": 10, "batch_size": 64, "lr": 0.03, "optimizer": "sgd", "momentum": 0.0,
                 "schedule": "constant", "shift": 0, "rotate": 0, "scale": 0, "loss": "mse"},
    # LeNet-5 (ReLU, max-pooling) with the recipe of the DESIGN CNN.
    "lenet5": {"epochs": 12, "batch_size": 64, "lr": 2e-3, "optimizer": "adam", "momentum": 0.9,
               "schedule": "cosine", "shift": 2, "rotate": 10, "scale": 0.1, "loss": "cross_entropy"},
    # The BatchNorm variants and the residual network, with the same recipe; bn4 with the 15
    # epochs of docs/experiments/batchnorm-mnist.md (99.09 % / 99.21 % for seeds 0 / 1).
    "cnn-bn": {"epochs": 12, "batch_size": 64, "lr": 5e-3, "optimizer": "adam", "momentum": 0.9,
               "schedule": "cosine", "shift": 2, "rotate": 10, "scale": 0.1, "loss": "cross_entropy"},
    "bn4": {"epochs": 15, "batch_size": 64, "lr": 2e-3, "optimizer": "adam", "momentum": 0.9,
            "schedule": "cosine", "shift": 2, "rotate": 10, "scale": 0.1, "loss": "cross_entropy"},
    "resnet8": {"epochs": 12, "batch_size": 64, "lr": 2e-3, "optimizer": "adam", "momentum": 0.9,
                "schedule": "cosine", "shift": 2, "rotate": 10, "scale": 0.1, "loss": "cross_entropy"},
}


def _make_optimizer(kind, lr, momentum, schedule, epochs):
    from . import optimizers, schedules
    rate = schedules.CosineLR(lr, max(epochs, 1)) if schedule == "cosine" else lr
    if kind == "adam":
        return optimizers.Adam(lr=rate)
    return optimizers.SGD(lr=rate, momentum=momentum)


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"wanted a positive {kind.__name__}, got {text!r}") from None
        if not value > 0 or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"wanted a positive {kind.__name__}, got {text!r}")
        return value
    return parse


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wanted an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"wanted an integer >= 0, got {text!r}")
    return value


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wanted a number >= 0, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"wanted a number >= 0, got {text!r}")
    return value


# Options that define the model or the optimizer: with --resume the checkpoint's values win.
_FROM_CHECKPOINT = ("--model", "--optimizer", "--lr", "--momentum", "--schedule", "--seed")


def _checkpoint_settings(model):
    """What a loaded checkpoint holds for each option of ``_FROM_CHECKPOINT`` (keyed by dest);
    an option the checkpoint has no value for (``--momentum`` of Adam) is left out."""
    opt = model.optimizer
    held = {"model": model.name, "optimizer": opt.name, "schedule": opt.schedule.name,
            "seed": model.seed}
    if getattr(opt.schedule, "lr", None) is not None:
        held["lr"] = opt.schedule.lr
    if hasattr(opt, "momentum"):
        held["momentum"] = opt.momentum
    return held


def _ignored_on_resume(args, held):
    """``--option value (...)`` for each option of ``_FROM_CHECKPOINT`` given on the command line
    whose value differs from the checkpoint's ``held`` one or cannot take effect."""
    ignored = []
    for option in _FROM_CHECKPOINT:
        key = option[2:]
        given = getattr(args, key)
        if given is None:  # not on the command line
            continue
        if key not in held:
            ignored.append(f"{option} {given} (the checkpoint's {held['optimizer']} optimizer has no {key})")
        elif given != held[key]:
            ignored.append(f"{option} {given} (the checkpoint has {held[key]})")
    return ignored


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m cnn.train",
        description="Train a CNN on MNIST (the bundled 5,000-image subset by default) and report "
                    "its accuracy on the 10,000-image test set.")
    p.add_argument("--data-dir", metavar="DIR",
                   help="an MNIST-layout IDX directory (train-images-idx3-ubyte[.gz], ...) or "
                        "the CIFAR-10 binary files (data_batch_1.bin ... test_batch.bin); "
                        "default: the data shipped with cnn")
    p.add_argument("--download", action="store_true",
                   help="download the full MNIST into --data-dir (or the default data folder) first")
    p.add_argument("--model", choices=list(MODELS),  # None: not given (see --resume)
                   help="a network of the zoo (cnn.models): bn4 (default: the BatchNorm net, "
                        "99.1-99.2 %% on MNIST from the 5,000 bundled images), cnn (the DESIGN "
                        "CNN), seed-mlp (the seed project's Dense-512 network with its MSE loss "
                        "and lr 0.03, which learns slowly on 5,000 images: try --lr 1.0), lenet5 "
                        "(LeNet-5 with ReLU and max-pooling), cnn-bn (the DESIGN CNN with "
                        "BatchNorm), resnet8 (a residual graph model)")
    p.add_argument("--epochs", type=_non_negative_int,
                   help="default: 15 (bn4), 12 (cnn, lenet5, cnn-bn, resnet8), 10 (seed-mlp)")
    p.add_argument("--batch-size", type=_positive(int), help="default: 64")
    p.add_argument("--lr", type=_positive(float),
                   help="learning rate; default: 2e-3 (cnn, lenet5), 0.03 (seed-mlp)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), help="default: adam (cnn, lenet5), sgd (seed-mlp)")
    p.add_argument("--momentum", type=float, help="SGD momentum; default 0.9 (cnn, lenet5), 0 (seed-mlp)")
    p.add_argument("--schedule", choices=("cosine", "constant"),
                   help="learning-rate schedule; default cosine (cnn, lenet5), constant (seed-mlp)")
    p.add_argument("--shift", type=_non_negative_float,
                   help="augmentation: random shifts up to this many pixels; default 2 (cnn, lenet5), "
                        "0 (seed-mlp)")
    p.add_argument("--rotate", type=_non_negative_float,
                   help="augmentation: random rotations up to this many degrees; default 10 (cnn, lenet5), 0")
    p.add_argument("--scale", type=_non_negative_float,
                   help="augmentation: random zoom by up to this fraction; default 0.1 (cnn, lenet5), 0")
    p.add_argument("--threads", type=_positive(int),
                   help="threads for the kernels and BLAS (per rank when distributed; default: "
                        "OMP_NUM_THREADS, else the cores / the ranks on the node)")
    p.add_argument("--distributed", action="store_true",
                   help="train data-parallel over MPI (cnn.distributed; automatic when started by "
                        "mpiexec, mpirun or srun). --batch-size is then the global batch; only "
                        "rank 0 prints and writes files")
    p.add_argument("--seed", type=_non_negative_int,  # None: not given (see --resume)
                   help="seed for weights, dropout, shuffling and the --limit pick (0)")
    p.add_argument("--limit", type=_positive(int), metavar="N",
                   help="use a random N training images and the first N test images (quick runs)")
    p.add_argument("--max-classes", type=_positive(int), default=1000, metavar="N",
                   help="refuse labels files with a class id >= N (the last layer is sized from "
                        "the labels); default 1000")
    p.add_argument("--save", metavar="PATH", help="save the model (and everything to resume) after every epoch")
    p.add_argument("--resume", metavar="PATH",
                   help="continue a run saved with --save, up to --epochs in total. The model, "
                        "the optimizer and the seed are the checkpoint's: "
                        + ", ".join(_FROM_CHECKPOINT[:-1]) + " and " + _FROM_CHECKPOINT[-1]
                        + " are not applied, and a warning on stderr names any given with a value "
                          "the checkpoint does not hold. --epochs, --batch-size and the augmentation "
                          "options apply (their defaults: those of the checkpoint's model)")
    p.add_argument("--export-onnx", metavar="PATH",
                   help="export the trained model to ONNX (needs the onnx extra: pip install cnn[onnx])")
    p.add_argument("--plot", metavar="PATH", help="write training curves and the confusion matrix as a PNG")
    p.add_argument("--json", metavar="PATH",
                   help="write the history, test accuracy, training time and speed as JSON")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                   help="0 quiet, 1 progress bar (default), 2 one line per epoch")
    return p


def _is_cifar10_dir(path):
    import pathlib
    p = pathlib.Path(path)
    return any((d / name).exists() for d in (p, p / "cifar-10-batches-bin")
               for name in ("data_batch_1.bin", "data_batch_1"))


def _load_data(args, seed):
    from .datasets import load_cifar10, load_mnist
    if args.data_dir is not None and not args.download and _is_cifar10_dir(args.data_dir):
        (x_train, y_train), (x_test, y_test) = load_cifar10(args.data_dir)
    else:
        (x_train, y_train), (x_test, y_test) = load_mnist(args.data_dir, download=args.download,
                                                          max_classes=args.max_classes)
    if args.limit is not None:
        pick = np.random.default_rng(seed).permutation(len(x_train))[:args.limit]
        x_train, y_train = x_train[np.sort(pick)], y_train[np.sort(pick)]
        x_test, y_test = x_test[:args.limit], y_test[:args.limit]
    return (x_train, y_train), (x_test, y_test)


def main(argv=None):
    """Run the command line; returns the exit status (0 on success)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib, which is not installed (pip install matplotlib)")
    if args.export_onnx and importlib.util.find_spec("onnx") is None:
        parser.error("--export-onnx needs onnx, which is not installed (pip install cnn[onnx])")
    for option in ("save", "json", "plot", "export_onnx"):  # before training, not after the first epoch
        path = getattr(args, option)
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if path and (os.path.isdir(path) or not os.path.isdir(folder)):
            flag = "--" + option.replace("_", "-")
            parser.error(f"{flag} {path}: " + ("is a directory; wanted a file path" if os.path.isdir(path)
                                               else f"the folder {folder} does not exist"))
        if path:
            try:  # a FIFO, a device, a socket: refused now, not after the first epoch
                _atomic.resolve_target(path)
            except (ValueError, OSError) as exc:
                parser.error(f"--{option.replace('_', '-')} {path}: {exc}")
    try:
        return _run(args)
    except (ValueError, TypeError, OSError, FloatingPointError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        from . import distributed
        distributed.abort(1)  # under MPI: the other ranks must not wait for this one
        return 1


def _run(args):
    import cnn

    # cnn.distributed imports no MPI until DataParallel() asks for it
    from . import distributed, metrics
    from .callbacks import ModelCheckpoint
    from .models import build
    from .plotting import plot_history
    from .serialization import load_model

    strategy = None
    if args.distributed or distributed.launched_by_mpi():
        strategy = distributed.DataParallel(threads=args.threads)
        if not strategy.is_chief:  # only rank 0 prints; this process ends with the run
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (kept open until exit)
    elif args.threads is not None:
        cnn.set_num_threads(args.threads)
    world_size = strategy.world_size if strategy is not None else 1
    if args.resume:
        model = load_model(args.resume)
        if not model.compiled:
            raise ValueError(f"{args.resume} holds no optimizer state: it cannot be resumed")
        held = _checkpoint_settings(model)
        ignored = _ignored_on_resume(args, held)
        if ignored:
            print(f"warning: --resume {args.resume}: the checkpoint's model, optimizer and seed are "
                  f"used, so {'this option is' if len(ignored) == 1 else 'these options are'} "
                  f"ignored: {', '.join(ignored)}", file=sys.stderr, flush=True)
        # The defaults of the options that do apply (batch size, augmentation, epochs) are
        # those of the checkpoint's model.
        name = model.name if model.name in DEFAULTS else (args.model or DEFAULT_MODEL)
        seed = model.seed
    else:
        name = args.model or DEFAULT_MODEL
        seed = args.seed if args.seed is not None else 0
    defaults = DEFAULTS[name]
    settings = {k: (getattr(args, k) if getattr(args, k, None) is not None else v)
                for k, v in defaults.items() if k != "loss"}
    if args.resume:  # report what the run really uses
        settings.update({k: held[k] for k in ("optimizer", "lr", "momentum", "schedule") if k in held})

    (x_train, y_train), (x_test, y_test) = _load_data(args, seed)
    classes = int(max(y_train.max(), y_test.max())) + 1
    print(f"data: {len(x_train)} training and {len(x_test)} test images of shape "
          f"{tuple(x_train.shape[1:])}, {classes} classes", flush=True)
    if strategy is not None:
        print(f"distributed: world size {world_size} (MPI), {cnn.get_num_threads()} thread(s) "
              f"per rank, global batch {settings['batch_size']}", flush=True)

    if args.resume:
        if model.input_shape != tuple(x_train.shape[1:]) or len(model.output_shape) != 1 \
                or model.output_shape[0] < classes:
            raise ValueError(f"{args.resume} holds a model for images of shape {model.input_shape} "
                             f"and {model.output_shape[0]} classes, but the data has images of shape "
                             f"{tuple(x_train.shape[1:])} and {classes} classes")
        initial_epoch = model.train_state["epoch"] if model.train_state else 0
        print(f"resuming {args.resume} at epoch {initial_epoch}", flush=True)
        total = getattr(model.optimizer.schedule, "total_epochs", None)
        if total is not None and settings["epochs"] > total:
            print(f"warning: the saved learning-rate schedule ends at epoch {total}; epochs after "
                  f"it train at its final rate", file=sys.stderr)
    else:
        model = build(name, input_shape=tuple(x_train.shape[1:]), classes=classes, seed=seed)
        model.compile(loss=defaults["loss"],
                      optimizer=_make_optimizer(settings["optimizer"], settings["lr"],
                                                settings["momentum"], settings["schedule"],
                                                settings["epochs"]))
        initial_epoch = 0
    if args.verbose:
        model.summary()
        print(f"optimizer: {model.optimizer!r}, loss: {model.loss!r}, batch size "
              f"{settings['batch_size']}, augmentation: shift {settings['shift']:g} px, rotate "
              f"{settings['rotate']:g} deg, scale {settings['scale']:g}; threads "
              f"{cnn.get_num_threads()}, world size {world_size}", flush=True)

    callbacks = [ModelCheckpoint(args.save)] if args.save else []
    augment = make_augment(settings["shift"], settings["rotate"], settings["scale"])
    epochs = max(settings["epochs"], initial_epoch)
    history = model.fit(x_train, y_train, epochs=epochs, batch_size=settings["batch_size"],
                        verbose=args.verbose, callbacks=callbacks, initial_epoch=initial_epoch,
                        augment=augment, strategy=strategy)
    if strategy is not None and not strategy.is_chief:
        return 0  # the weights are rank 0's: it tests, reports and saves

    start = time.perf_counter()
    probs = model.predict(x_test)
    predict_seconds = time.perf_counter() - start
    test_loss = model.evaluate(x_test, y_test)["loss"]
    test_accuracy = metrics.accuracy(y_test, probs)
    cm = metrics.confusion_matrix(y_test, probs, num_classes=classes)
    train_seconds = float(sum(history.history.get("seconds", [])))
    trained = sum(history.params.get("steps", 0) * settings["batch_size"] for _ in history.epoch)

    if args.json:
        report = {
            "model": model.name, "settings": settings, "seed": seed,
            "threads": cnn.get_num_threads(), "world_size": world_size, "train_images": int(len(x_train)),
            "test_images": int(len(x_test)), "epochs": history.epoch,
            "history": history.history, "interrupted": history.interrupted,
            "test_loss": test_loss, "test_accuracy": test_accuracy,
            "train_seconds": train_seconds,
            "images_per_second": trained / train_seconds if train_seconds > 0 else None,
            "predict_images_per_second": len(x_test) / predict_seconds if predict_seconds > 0 else None,
            "confusion_matrix": cm.tolist(),
        }
        text = json.dumps(report, indent=2).encode("utf-8")
        _atomic.atomic_write(args.json, lambda f: f.write(text))
    if args.plot:
        plot_history(args.plot, history, cm)
    if args.save and not history.epoch and not os.path.exists(args.save):
        model.save(args.save)
    if args.export_onnx:
        from .onnx import export
        export(model, args.export_onnx)
        print(f"exported the model to ONNX: {args.export_onnx}")

    print(f"trained {len(history.epoch)} epoch(s) in {train_seconds:.1f} s"
          + (f" ({trained / train_seconds:,.0f} images/s)" if train_seconds > 0 else ""))
    print("confusion matrix (rows: true class, columns: predicted):")
    print(metrics.format_confusion_matrix(cm))
    print(f"test loss: {test_loss:.4f}")
    print(f"test accuracy: {test_accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
