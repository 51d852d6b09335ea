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
  input is a 28x28 image padded by 2); 61,706 parameters on 28x28 images and 10 classes;
* ``"cnn-bn"``: the DESIGN CNN with BatchNormalization after every convolution and the hidden
  dense layer (their biases dropped: BN's shift replaces them);
* ``"bn4"``: the best MNIST recipe of docs/experiments/batchnorm-mnist.md: two blocks of two
  3x3 conv-BN-ReLU layers (32, then 64 channels) each followed by max-pooling, dropout, a
  BN'ed dense layer of 128;
* ``"resnet8"``: a ResNet-8 (He et al., 2016, the CIFAR family with one basic block per
  stage) for 3x32x32 images, a graph model (:class:`cnn.Model`): conv-BN-ReLU stem of 16
  channels, three stages of 16, 32 and 64 channels (the last two halve the plane with stride 2
  and a 1x1 conv + BN shortcut), global average pooling, dense softmax.

The first three are :class:`cnn.Sequential`; ``"resnet8"`` is a graph :class:`cnn.Model`.

>>> from cnn import models
>>> model = models.build("lenet5", input_shape=(1, 28, 28), classes=10, seed=0)
>>> model.count_params()
61706
"""


from . import _validation as V
from . import layers
from .graph import Input
from .model import Model
from .sequential import Sequential

__all__ = ["MODELS", "build", "design_cnn", "seed_mlp", "lenet5", "design_cnn_bn", "bn4", "resnet8"]


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


def _conv_bn_relu(filters, stride=1, relu=True):
    stack = [layers.Conv2D(filters, 3, stride=stride, padding="same", use_bias=False),
             layers.BatchNormalization()]
    return stack + ([layers.Activation("relu")] if relu else [])


def design_cnn_bn(input_shape=(1, 28, 28), classes=10, seed=0, dropout=0.25):
    """The DESIGN CNN with BatchNormalization (conv -> BN -> ReLU), dropout before and after
    the BN'ed Dense(128) (``dropout=0`` leaves the two Dropout layers out, as the bench does;
    the weights are the same either way). Returns a built, uncompiled :class:`cnn.Sequential`
    named ``"cnn-bn"``."""
    dropout = _rate(dropout)
    def drop():
        return [layers.Dropout(dropout)] if dropout else []

    stack = (_conv_bn_relu(32) + [layers.MaxPool2D(2)] + _conv_bn_relu(64) + [layers.MaxPool2D(2)]
             + [layers.Flatten(), *drop(), layers.Dense(128, use_bias=False),
                layers.BatchNormalization(), layers.Activation("relu"), *drop(),
                layers.Dense(classes, activation="softmax")])
    return _finish(stack, "cnn-bn", input_shape, seed)


def bn4(input_shape=(1, 28, 28), classes=10, seed=0):
    """Conv-BN-ReLU x2 (32), max-pool, conv-BN-ReLU x2 (64), max-pool, dropout, Dense(128)-BN-ReLU,
    dropout, Dense(classes, softmax): the MNIST recipe that passed 99 % on the 5,000 bundled
    images (see docs/experiments/batchnorm-mnist.md). A built, uncompiled Sequential ``"bn4"``."""
    stack = (_conv_bn_relu(32) + _conv_bn_relu(32) + [layers.MaxPool2D(2)]
             + _conv_bn_relu(64) + _conv_bn_relu(64) + [layers.MaxPool2D(2)]
             + [layers.Flatten(), layers.Dropout(0.25), layers.Dense(128, use_bias=False),
                layers.BatchNormalization(), layers.Activation("relu"), layers.Dropout(0.25),
                layers.Dense(classes, activation="softmax")])
    return _finish(stack, "bn4", input_shape, seed)


def _basic_block(x, filters, stride):
    """conv-BN-ReLU-conv-BN plus the shortcut (identity, or 1x1 conv + BN when the shape
    changes), then ReLU."""
    h = x
    for layer in _conv_bn_relu(filters, stride) + _conv_bn_relu(filters, relu=False):
        h = layer(h)
    shortcut = x
    if stride != 1 or x.shape[0] != filters:
        shortcut = layers.BatchNormalization()(
            layers.Conv2D(filters, 1, stride=stride, use_bias=False)(x))
    return layers.Activation("relu")(layers.Add()([h, shortcut]))


def resnet8(input_shape=(3, 32, 32), classes=10, seed=0):
    """ResNet-8: stem conv-BN-ReLU (16), basic blocks of 16, 32 (stride 2) and 64 (stride 2)
    channels, global average pooling, Dense(classes, softmax). A built, uncompiled graph
    :class:`cnn.Model` named ``"resnet8"``; 78,042 parameters for 3x32x32 images, 10 classes."""
    try:
        inputs = Input(input_shape)
        h = inputs
        for layer in _conv_bn_relu(16):
            h = layer(h)
        for filters, stride in ((16, 1), (32, 2), (64, 2)):
            h = _basic_block(h, filters, stride)
        outputs = layers.Dense(classes, activation="softmax")(layers.GlobalAvgPool2D()(h))
        return Model(inputs, outputs, seed=seed, name="resnet8")
    except ValueError as exc:
        raise ValueError(f"model 'resnet8' cannot be built for input_shape={input_shape}: {exc}") from None


MODELS = {"cnn": design_cnn, "seed-mlp": seed_mlp, "lenet5": lenet5, "cnn-bn": design_cnn_bn,
          "bn4": bn4, "resnet8": resnet8}


def _rate(value):
    return V.real(value, "dropout", low=0.0, high=1.0, high_open=True)


def _input_shape(value):
    return V.image_shape(value, "input_shape")


def build(name, input_shape=(1, 28, 28), classes=10, seed=0, **options):
    """Build the zoo model ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS`: ``"cnn"``, ``"seed-mlp"``, ``"lenet5"``, ``"cnn-bn"``,
        ``"bn4"`` or ``"resnet8"``.
    input_shape : tuple of 3 int, default (1, 28, 28)
        ``(C, H, W)`` of one image.
    classes : int >= 1, default 10
    seed : int >= 0, default 0
        Seeds the weights (and the model's dropout generator).
    **options
        Options of that model's builder (``dropout`` for ``"cnn"`` and ``"cnn-bn"``).

    Returns
    -------
    cnn.Sequential or cnn.Model
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
    return builder(_input_shape(input_shape), V.integer(classes, "classes", 1),
                   seed=seed, **options)
