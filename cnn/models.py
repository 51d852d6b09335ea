"""The model zoo: the networks the CLI, the bench and the tests build by name.

``MODELS`` maps a name to its builder; :func:`build` checks the arguments and calls it. Every
builder returns a built, uncompiled :class:`cnn.Sequential` named after its zoo entry
(checkpoints keep that name, and ``python -m cnn.train --resume`` reads it back):

* ``"cnn"``: the CNN of DESIGN.md, conv-pool-conv-pool-dense, with the two Dropout(0.25)
  layers ``python -m cnn.train`` trains it with (``dropout=0`` leaves them out, as the bench
  does); 421,642 parameters on 28x28 grey images and 10 classes;
* ``"seed-mlp"``: the seed project's network, Dense(512, leaky ReLU) + Dense(classes, softmax);
  407,050 parameters on 28x28 images and 10 classes;
* ``"lenet5"``: LeNet-5 (LeCun et al., 1998) as it is written today: ReLU and max-pooling in
  place of tanh and trainable subsampling, the first convolution "same" (the paper's 32x32
  input is a 28x28 image padded by 2); 61,706 parameters on 28x28 images and 10 classes.

>>> from cnn import models
>>> model = models.build("lenet5", input_shape=(1, 28, 28), classes=10, seed=0)
>>> model.count_params()
61706
"""

import numpy as np

from . import layers
from .sequential import Sequential

__all__ = ["MODELS", "build", "design_cnn", "seed_mlp", "lenet5"]


def _finish(stack, name, input_shape, seed):
    try:
        return Sequential(stack, input_shape=input_shape, seed=seed, name=name)
    except ValueError as exc:
        raise ValueError(f"model {name!r} cannot be built for input_shape={input_shape}: {exc}") from None


def design_cnn(input_shape=(1, 28, 28), classes=10, seed=0, dropout=0.25):
    """The CNN of DESIGN.md, as ``python -m cnn.train`` builds it by default.

    Conv2D(32, 3, same, relu), MaxPool2D(2), Conv2D(64, 3, same, relu), MaxPool2D(2), Flatten,
    [Dropout], Dense(128, relu), [Dropout], Dense(classes, softmax).

    Parameters
    ----------
    input_shape : tuple of int
        ``(C, H, W)`` of one image, H and W >= 4.
    classes : int >= 1
    seed : int >= 0
    dropout : float in [0, 1), default 0.25
        Rate of the two Dropout layers; 0 leaves them out (the weights are the same either
        way: Dropout draws nothing at build time).

    Returns
    -------
    cnn.Sequential
        Built, uncompiled, named ``"cnn"``.
    """
    dropout = _rate(dropout)
    def drop():  # a fresh layer each time (a layer belongs to one model, once)
        return [layers.Dropout(dropout)] if dropout else []

    stack = [
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPool2D(2),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPool2D(2),
        layers.Flatten(),
        *drop(),
        layers.Dense(128, activation="relu"),
        *drop(),
        layers.Dense(classes, activation="softmax"),
    ]
    return _finish(stack, "cnn", input_shape, seed)


def seed_mlp(input_shape=(1, 28, 28), classes=10, seed=0):
    """The seed project's MLP: Flatten, Dense(512, leaky_relu), Dense(classes, softmax).

    Returns a built, uncompiled :class:`cnn.Sequential` named ``"seed-mlp"``.
    """
    stack = [
        layers.Flatten(),
        layers.Dense(512, activation="leaky_relu"),
        layers.Dense(classes, activation="softmax"),
    ]
    return _finish(stack, "seed-mlp", input_shape, seed)


def lenet5(input_shape=(1, 28, 28), classes=10, seed=0):
    """LeNet-5 with ReLU and max-pooling.

    Conv2D(6, 5, same, relu), MaxPool2D(2), Conv2D(16, 5, valid, relu), MaxPool2D(2), Flatten,
    Dense(120, relu), Dense(84, relu), Dense(classes, softmax). Needs H and W >= 12.

    Returns a built, uncompiled :class:`cnn.Sequential` named ``"lenet5"``.
    """
    stack = [
        layers.Conv2D(6, 5, padding="same", activation="relu"),
        layers.MaxPool2D(2),
        layers.Conv2D(16, 5, activation="relu"),
        layers.MaxPool2D(2),
        layers.Flatten(),
        layers.Dense(120, activation="relu"),
        layers.Dense(84, activation="relu"),
        layers.Dense(classes, activation="softmax"),
    ]
    return _finish(stack, "lenet5", input_shape, seed)


MODELS = {"cnn": design_cnn, "seed-mlp": seed_mlp, "lenet5": lenet5}


def _rate(value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"dropout must be a number in [0, 1), got {value!r} of type {type(value).__name__}")
    if not 0 <= value < 1:
        raise ValueError(f"dropout must be in [0, 1), got {value}")
    return float(value)


def _input_shape(value):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 3 or any(
            isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1 for v in value):
        raise ValueError(f"input_shape must be (C, H, W), three ints >= 1, got {value!r}")
    return tuple(int(v) for v in value)


def _positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= 1, got {value!r} of type {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def build(name, input_shape=(1, 28, 28), classes=10, seed=0, **options):
    """Build the zoo model ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS`: ``"cnn"``, ``"seed-mlp"`` or ``"lenet5"``.
    input_shape : tuple of 3 int, default (1, 28, 28)
        ``(C, H, W)`` of one image.
    classes : int >= 1, default 10
    seed : int >= 0, default 0
        Seeds the weights (and the model's dropout generator).
    **options
        Options of that model's builder (``dropout`` for ``"cnn"``).

    Returns
    -------
    cnn.Sequential
        Built and uncompiled; ``model.name == name``.

    Raises
    ------
    ValueError
        An unknown name, an input shape the model cannot take, a bad option value.
    TypeError
        An option that model does not have, or an argument of the wrong type.
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(map(repr, MODELS))}, got {name!r}")
    builder = MODELS[name]
    allowed = [p for p in builder.__code__.co_varnames[:builder.__code__.co_argcount]
               if p not in ("input_shape", "classes", "seed")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"model {name!r} has no option {', '.join(unknown)}; its options: "
                        f"{', '.join(allowed) or 'none'}")
    return builder(_input_shape(input_shape), _positive_int(classes, "classes"),
                   seed=seed, **options)
