"""The BatchNorm experiment on the bundled MNIST subset (docs/experiments/batchnorm-mnist.md).

Choice by the bundled 5,000 training images alone: the last 500 (a fixed seeded split) are
held out for validation; the official 10,000 test images are only reported at the end.

    python bench/batchnorm_mnist.py VARIANT [--epochs E] [--seed S] [--lr LR]

VARIANT: "cnn" (the DESIGN CNN of ``cnn.train``), "cnn-bn" (the same with BatchNorm after
each conv and the dense layer), "bn4" (4 conv BatchNorm net 32-32-pool-64-64-pool,
dropout, dense 128, as the PyTorch reference in issue 11). One JSON line per epoch
(validation accuracy) and a final line with the test accuracy.
"""
import argparse
import json
import time

import numpy as np

import cnn
from cnn import layers, metrics
from cnn.datasets import load_mnist
from cnn.train import _make_optimizer, build_model, make_augment


def bn_models(name, seed):
    L = layers
    if name == "cnn-bn":
        stack = [L.Conv2D(32, 3, padding="same", use_bias=False), L.BatchNormalization(),
                 L.Activation("relu"), L.MaxPool2D(2),
                 L.Conv2D(64, 3, padding="same", use_bias=False), L.BatchNormalization(),
                 L.Activation("relu"), L.MaxPool2D(2), L.Flatten(), L.Dropout(0.25),
                 L.Dense(128, use_bias=False), L.BatchNormalization(), L.Activation("relu"),
                 L.Dropout(0.25), L.Dense(10, activation="softmax")]
    elif name == "bn4":
        stack = [L.Conv2D(32, 3, padding="same", use_bias=False), L.BatchNormalization(),
                 L.Activation("relu"),
                 L.Conv2D(32, 3, padding="same", use_bias=False), L.BatchNormalization(),
                 L.Activation("relu"), L.MaxPool2D(2),
                 L.Conv2D(64, 3, padding="same", use_bias=False), L.BatchNormalization(),
                 L.Activation("relu"),
                 L.Conv2D(64, 3, padding="same", use_bias=False), L.BatchNormalization(),
                 L.Activation("relu"), L.MaxPool2D(2), L.Flatten(), L.Dropout(0.25),
                 L.Dense(128, use_bias=False), L.BatchNormalization(), L.Activation("relu"),
                 L.Dropout(0.25), L.Dense(10, activation="softmax")]
    else:
        return build_model(name, (1, 28, 28), 10, seed)
    return cnn.Sequential(stack, input_shape=(1, 28, 28), seed=seed, name=name)


class _Log(cnn.Callback):
    def __init__(self, xv, yv, start):
        super().__init__()
        self.xv, self.yv, self.start = xv, yv, start

    def on_epoch_end(self, epoch, logs=None):
        acc = metrics.accuracy(self.yv, self.model.predict(self.xv))
        print(json.dumps({"epoch": epoch + 1, "train_loss": round(float(logs["loss"]), 4),
                          "val_accuracy": round(float(acc), 4),
                          "elapsed_s": round(time.perf_counter() - self.start, 1)}), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("variant", choices=("cnn", "cnn-bn", "bn4"))
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--holdout", type=int, default=500, help="0: train on all 5,000")
    args = p.parse_args()
    (x, y), (xt, yt) = load_mnist()
    perm = np.random.default_rng(1234).permutation(len(x))
    val, train = perm[:args.holdout], perm[args.holdout:]
    model = bn_models(args.variant, args.seed)
    model.compile(loss="cross_entropy",
                  optimizer=_make_optimizer("adam", args.lr, 0.9, "cosine", args.epochs))
    start = time.perf_counter()
    callbacks = [_Log(x[val], y[val], start)] if args.holdout else []
    model.fit(x[train], y[train], epochs=args.epochs, batch_size=args.batch_size, verbose=0,
              seed=args.seed, callbacks=callbacks, augment=make_augment(2, 10, 0.1))
    acc = metrics.accuracy(yt, model.predict(xt))
    print(json.dumps({"variant": args.variant, "epochs": args.epochs, "seed": args.seed,
                      "lr": args.lr, "holdout": args.holdout, "test_accuracy": round(float(acc), 4),
                      "threads": cnn.get_num_threads(),
                      "elapsed_s": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
