"""The bench's whole-model networks (zoo models from :mod:`cnn.models`, and the CIFAR-shaped
VGG-style, stride-2 and 1x1-conv networks of issue 15's zoo built here, compiled as the bench
trains them) and a backend-neutral description of a cnn model's layers, from which the other
backends build the same network.

A spec is a list with one dict per cnn layer (in ``model.layers`` order). Every entry has ``type``
(the layer class name), ``activation`` (its name or None), ``need_dx`` and, with
``weights=True``, ``params`` (copies of the layer's parameters) and, for layers with buffers,
``buffers`` (copies, in the layer's ``buffer_names`` order). By type:

* ``Conv2D``: ``in_channels``, ``filters``, ``kernel`` (kh, kw), ``stride`` (sh, sw),
  ``dilation`` (dh, dw), ``groups``, ``padding`` (as the layer has it), ``pads`` (top, bottom,
  left, right), ``bias``;
* ``Dense``: ``in_features``, ``units``, ``bias``;
* ``MaxPool2D`` and ``AvgPool2D``: ``size``, ``stride`` (None: the size), ``padding``, ``pads``
  (padded cells are -inf for the max, and not counted in the mean);
* ``BatchNormalization``: ``features``, ``rank`` (1 for ``(N, F)``, 3 for ``(N, C, H, W)``),
  ``momentum`` (cnn's: the fraction kept), ``eps``, ``center``, ``scale``;
* ``Activation``: only ``activation``;
* ``Dropout``: ``rate`` (identity at inference);
* ``Concatenate``: ``axis`` (of the items, without the batch axis);
* ``Flatten``, ``GlobalAvgPool2D``, ``Add``: nothing more.

A graph model (:class:`cnn.Model` that is not a :class:`cnn.Sequential`) adds to every entry
``inputs`` (tensor numbers; tensor 0 is the model input, tensor k + 1 the output of call k of
``get_config()["calls"]``) and ``output`` (the number of the tensor the layer makes); the calls
run in increasing ``output`` order and the last one is the model's output. A chain has neither
key: each layer takes the previous one's output.

A leaky ReLU adds ``alpha``. Without weights the spec is JSON-able (the torch memory probe gets
it on its command line).
"""

import numpy as np

from cnn import functional as F
from cnn import layers, models, optimizers
from cnn.sequential import Sequential

from .common import Skip

__all__ = ["BENCH_MODELS", "ZOO", "build", "layer_spec", "optimizer_spec", "vgg_cifar", "stride2_net",
           "conv1x1_net", "separable_net"]

# bench key -> (zoo name or builder, builder options, case label, JSON "model" name, input
# shape). Dropout runs at rate 0: the backends could not agree on random masks.
BENCH_MODELS = {
    "cnn": ("cnn", {"dropout": 0.0}, "CNN", "design_cnn", (1, 28, 28)),
    "mlp": ("seed-mlp", {}, "MLP", "seed_mlp", (1, 28, 28)),
}


def vgg_cifar(input_shape=(3, 32, 32), classes=10, seed=0):
    """A VGG-style CIFAR stack: Conv2D(64, 3, same, relu) x2, MaxPool2D(2), Conv2D(128, 3,
    same, relu) x2, MaxPool2D(2), Flatten, Dense(classes, softmax); 342,090 parameters for
    3x32x32 images and 10 classes."""
    return Sequential([
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPool2D(2),
        layers.Conv2D(128, 3, padding="same", activation="relu"),
        layers.Conv2D(128, 3, padding="same", activation="relu"),
        layers.MaxPool2D(2),
        layers.Flatten(),
        layers.Dense(classes, activation="softmax"),
    ], input_shape=input_shape, seed=seed, name="vgg-cifar")


def stride2_net(input_shape=(3, 32, 32), classes=10, seed=0):
    """3x3 stride-2 convolutions in place of pooling: Conv2D(32), Conv2D(64), Conv2D(128), each
    3x3, stride 2, "same" (Keras' pads: (0, 1, 0, 1) on even planes), relu; Flatten,
    Dense(classes, softmax). 32x32 -> 16 -> 8 -> 4; 113,738 parameters for 3x32x32 and 10
    classes."""
    return Sequential([
        layers.Conv2D(32, 3, stride=2, padding="same", activation="relu"),
        layers.Conv2D(64, 3, stride=2, padding="same", activation="relu"),
        layers.Conv2D(128, 3, stride=2, padding="same", activation="relu"),
        layers.Flatten(),
        layers.Dense(classes, activation="softmax"),
    ], input_shape=input_shape, seed=seed, name="stride2")


def conv1x1_net(input_shape=(3, 32, 32), classes=10, seed=0):
    """A network of 3x3 convs each followed by a 1x1 conv (network-in-network style):
    Conv2D(32, 3, same), Conv2D(64, 1), MaxPool2D(2), Conv2D(64, 3, same), Conv2D(128, 1),
    MaxPool2D(2), Conv2D(32, 1), all relu; Flatten, Dense(classes, softmax). 72,874 parameters
    for 3x32x32 and 10 classes."""
    return Sequential([
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.Conv2D(64, 1, activation="relu"),
        layers.MaxPool2D(2),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.Conv2D(128, 1, activation="relu"),
        layers.MaxPool2D(2),
        layers.Conv2D(32, 1, activation="relu"),
        layers.Flatten(),
        layers.Dense(classes, activation="softmax"),
    ], input_shape=input_shape, seed=seed, name="conv1x1")


def separable_net(input_shape=(3, 32, 32), classes=10, seed=0):
    """Depthwise-separable blocks (MobileNet style) with a dilated depthwise conv and average
    pooling, the layers no other bench network uses: Conv2D(32, 3, same, relu), depthwise
    Conv2D(32, 3, same, groups=32, relu), Conv2D(64, 1, relu), AvgPool2D(2), dilated depthwise
    Conv2D(64, 3, same, dilation=2, groups=64, relu), Conv2D(128, 1, relu), AvgPool2D(2),
    GlobalAvgPool2D, Dense(classes, softmax). 13,578 parameters for 3x32x32 and 10 classes."""
    return Sequential([
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.Conv2D(32, 3, padding="same", groups=32, activation="relu"),
        layers.Conv2D(64, 1, activation="relu"),
        layers.AvgPool2D(2),
        layers.Conv2D(64, 3, padding="same", dilation=2, groups=64, activation="relu"),
        layers.Conv2D(128, 1, activation="relu"),
        layers.AvgPool2D(2),
        layers.GlobalAvgPool2D(),
        layers.Dense(classes, activation="softmax"),
    ], input_shape=input_shape, seed=seed, name="separable")


#: The zoo of issue 15, in run order: bench key -> (builder, options, label, JSON name, input).
ZOO = {
    "lenet5": ("lenet5", {}, "LeNet5", "lenet5", (1, 28, 28)),
    "vgg": (vgg_cifar, {}, "VGG-CIFAR", "vgg_cifar", (3, 32, 32)),
    "stride2": (stride2_net, {}, "stride2", "stride2", (3, 32, 32)),
    "conv1x1": (conv1x1_net, {}, "conv1x1", "conv1x1", (3, 32, 32)),
    "cnn-bn": ("cnn-bn", {"dropout": 0.0}, "CNN-BN", "design_cnn_bn", (1, 28, 28)),
    "resnet8": ("resnet8", {}, "ResNet8", "resnet8", (3, 32, 32)),
    "separable": (separable_net, {}, "separable", "separable", (3, 32, 32)),
}
BENCH_MODELS.update(ZOO)


_ACTIVATIONS = (None, "identity", "linear", "relu", "leaky_relu", "tanh", "sigmoid", "softmax")


def build(key, seed=0):
    """The bench network ``key`` (a key of :data:`BENCH_MODELS`) for its input shape and 10
    classes, compiled with cross-entropy and SGD(lr=0.05, momentum=0.9)."""
    if key not in BENCH_MODELS:
        raise ValueError(f"bench model must be one of {', '.join(map(repr, BENCH_MODELS))}, got {key!r}")
    name, options, _, _, shape = BENCH_MODELS[key]
    if callable(name):
        model = name(input_shape=shape, classes=10, seed=seed, **options)
    else:
        model = models.build(name, input_shape=shape, classes=10, seed=seed, **options)
    model.compile(loss="cross_entropy", optimizer=optimizers.SGD(lr=0.05, momentum=0.9))
    return model


def _graph_wiring(model):
    """``[(inputs, output)]`` per layer of a graph model (see the module doc), or None for a
    chain (a Sequential, whose config has no ``calls``)."""
    calls = model.get_config().get("calls")
    if calls is None:
        return None
    wiring = [None] * len(model.layers)
    for k, call in enumerate(calls):
        if wiring[call["layer"]] is not None:
            raise Skip("a layer called more than once (shared weights) is not mapped by the bench")
        wiring[call["layer"]] = (list(call["inputs"]), k + 1)
    return wiring


def _pool_fields(layer):
    # the pads as the layers resolve them (AvgPool2D keeps no ``pads`` attribute)
    stride = layer.size if layer.stride is None else layer.stride
    pads = F.maxpool2d_padding(layer.padding, layer.size, stride, layer.input_shape[1:])
    return {"size": tuple(layer.size),
            "stride": tuple(layer.stride) if layer.stride is not None else None,
            "padding": list(layer.padding) if isinstance(layer.padding, tuple) else layer.padding,
            "pads": tuple(int(p) for p in pads)}


def _layer_fields(layer, name):
    """The type-specific fields of one layer's spec entry (see the module doc)."""
    if name == "Conv2D":
        return dict(in_channels=int(layer.input_shape[0]), filters=int(layer.filters),
                    kernel=tuple(layer.kernel_size), stride=tuple(layer.stride),
                    dilation=tuple(layer.dilation), groups=int(layer.groups),
                    padding=layer.padding, bias=bool(layer.use_bias), pads=tuple(layer.pads))
    if name == "Dense":
        return dict(in_features=int(layer.input_shape[0]), units=int(layer.units),
                    bias=bool(layer.use_bias))
    if name in ("MaxPool2D", "AvgPool2D"):
        return _pool_fields(layer)
    if name == "BatchNormalization":
        return dict(features=int(layer.input_shape[0]), rank=len(layer.input_shape),
                    momentum=float(layer.momentum), eps=float(layer.eps),
                    center=bool(layer.center), scale=bool(layer.scale))
    if name == "Dropout":
        return {"rate": float(layer.rate)}
    if name == "Concatenate":
        return {"axis": int(layer.axis) % len(layer.output_shape)}
    if name in ("Flatten", "GlobalAvgPool2D", "Add", "Activation"):
        return {}
    raise Skip(f"layer {name} not supported by the bench's other backends")


def layer_spec(model, weights=True):
    """The spec (see the module doc) of a built cnn model; :class:`Skip` for a layer or an
    activation the other backends do not map."""
    spec = []
    wiring = _graph_wiring(model)
    last_call = len(model.layers) if wiring is None else max(out for _, out in wiring)
    for i, layer in enumerate(model.layers):
        name = type(layer).__name__
        act = getattr(getattr(layer, "activation", None), "name", None)
        entry = {"type": name, "activation": act, "need_dx": bool(layer.need_input_grad)}
        if wiring is not None:
            entry["inputs"], entry["output"] = wiring[i]
        if act == "leaky_relu":
            entry["alpha"] = float(layer.activation.alpha)
        position = i + 1 if wiring is None else entry["output"]
        if act == "softmax" and position != last_call:
            raise Skip("softmax is only supported on the last layer")
        if act not in _ACTIVATIONS:
            raise Skip(f"activation {act!r} not supported by the bench's other backends")
        entry.update(_layer_fields(layer, name))
        if weights and layer.params:
            entry["params"] = [p.copy() for p in layer.params]
        if weights and getattr(layer, "buffers", None):
            entry["buffers"] = [np.array(b, copy=True) for b in layer.buffers]
        spec.append(entry)
    last = spec[-1] if wiring is None else next(e for e in spec if e["output"] == last_call)
    if getattr(model.loss, "name", None) != "cross_entropy" or last["activation"] != "softmax":
        raise Skip("the bench's other backends need a softmax output and cross-entropy")
    return spec


def optimizer_spec(model):
    """``{"lr", "momentum", "nesterov", "weight_decay"}`` of the model's SGD optimizer."""
    opt = model.optimizer
    if type(opt).__name__ != "SGD":
        raise Skip(f"optimizer {type(opt).__name__} not supported by the bench's other backends")
    return {"lr": float(opt.lr), "momentum": float(getattr(opt, "momentum", 0.0)),
            "nesterov": bool(getattr(opt, "nesterov", False)),
            "weight_decay": float(getattr(opt, "weight_decay", 0.0))}
