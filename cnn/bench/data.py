"""The data of the whole-model cases: shuffled batches of the bundled MNIST images, or seeded
random images of other shapes."""

import numpy as np

__all__ = ["mnist_batches", "image_batches", "cycle", "source"]

_DATA = {}


def mnist_batches(batch, limit=None):
    """Shuffled batches of the bundled MNIST training images (random images if unavailable):
    a list of ``(x float32 (B, 1, 28, 28) C-contiguous, y int64 (B,))``. Training cycles
    through them, as a real epoch would (one batch again and again would drive the loss and
    gradients to ~0, and then into denormals)."""
    if "mnist" not in _DATA:
        try:
            from cnn import datasets
            (x, y), _ = datasets.load_mnist()
            source = "bundled MNIST (5,000 training images)"
        except Exception as exc:  # pragma: no cover - the data ships with the package
            rng = np.random.default_rng(1)
            x = rng.random((5000, 1, 28, 28), dtype=np.float32)
            y = rng.integers(0, 10, 5000)
            source = f"random images (MNIST not loadable: {exc})"
        order = np.random.default_rng(0).permutation(len(x))
        _DATA["mnist"] = (np.ascontiguousarray(x[order], dtype=np.float32),
                          np.ascontiguousarray(y[order], dtype=np.int64), source)
    x, y, _ = _DATA["mnist"]
    count = len(x) // batch if limit is None else min(limit, len(x) // batch)
    return [(np.ascontiguousarray(x[i * batch:(i + 1) * batch]),
             np.ascontiguousarray(y[i * batch:(i + 1) * batch])) for i in range(count)]


def image_batches(batch, input_shape, limit=None):
    """:func:`mnist_batches` for ``(1, 28, 28)``; for any other ``(C, H, W)`` (the CIFAR-shaped
    zoo cases: no CIFAR-10 ships with cnn) seeded uniform [0, 1) images with labels 0..9, the
    same list of ``(x float32 (B, C, H, W), y int64 (B,))`` (32 batches unless ``limit``).
    Timings do not depend on the pixel values; the agreement check does not either."""
    if tuple(input_shape) == (1, 28, 28):
        return mnist_batches(batch, limit)
    rng = np.random.default_rng(2)
    count = 32 if limit is None else limit
    return [(rng.random((batch,) + tuple(input_shape), dtype=np.float32),
             rng.integers(0, 10, batch)) for _ in range(count)]


def cycle(items):
    """A function returning the next item of ``items`` on each call, round and round."""
    state = {"i": 0}

    def nxt():
        item = items[state["i"] % len(items)]
        state["i"] += 1
        return item
    return nxt


def source():
    """What :func:`mnist_batches` serves (None before its first call)."""
    return _DATA["mnist"][2] if "mnist" in _DATA else None
