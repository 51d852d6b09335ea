"""The bench's whole-model networks (zoo models from :mod:`cnn.models`, compiled as the bench
trains them) and a backend-neutral description of a cnn model's layers, from which the other
backends build the same network.

A spec is a list with one dict per cnn layer. Every entry has ``type`` (the layer class name),
``activation`` (its name or None), ``need_dx`` and, with ``weights=True``, ``params`` (copies
of the layer's parameters). By type:

* ``Conv2D``: ``in_channels``, ``filters``, ``kernel`` (kh, kw), ``stride`` (sh, sw),
  ``padding`` (as the layer has it), ``pads`` (top, bottom, left, right), ``bias``;
* ``Dense``: ``in_features``, ``units``, ``bias``;
* ``MaxPool2D``: ``size``, ``stride`` (None: the size), ``padding``, ``pads``;
* ``Flatten``: nothing more.

A leaky ReLU adds ``alpha``. Without weights the spec is JSON-able (the torch memory probe gets
it on its command line).
"""

from cnn import models, optimizers

from .common import Skip

__all__ = ["BENCH_MODELS", "build", "layer_spec", "optimizer_spec"]

# bench key -> (zoo name, builder options, case label, JSON "model" name). The DESIGN CNN runs
# without its dropout: the backends could not agree on random masks.
BENCH_MODELS = {
    "cnn": ("cnn", {"dropout": 0.0}, "CNN", "design_cnn"),
    "mlp": ("seed-mlp", {}, "MLP", "seed_mlp"),
}

_ACTIVATIONS = (None, "identity", "linear", "relu", "leaky_relu", "softmax")


def build(key, seed=0):
    """The bench network ``key`` (a key of :data:`BENCH_MODELS`) for (1, 28, 28) images and 10
    classes, compiled with cross-entropy and SGD(lr=0.05, momentum=0.9)."""
    if key not in BENCH_MODELS:
        raise ValueError(f"bench model must be one of {', '.join(map(repr, BENCH_MODELS))}, got {key!r}")
    name, options, _, _ = BENCH_MODELS[key]
    model = models.build(name, input_shape=(1, 28, 28), classes=10, seed=seed, **options)
    model.compile(loss="cross_entropy", optimizer=optimizers.SGD(lr=0.05, momentum=0.9))
    return model


def layer_spec(model, weights=True):
    """The spec (see the module doc) of a built cnn model; :class:`Skip` for a layer or an
    activation the other backends do not map."""
    spec = []
    last = len(model.layers) - 1
    for i, layer in enumerate(model.layers):
        name = type(layer).__name__
        act = getattr(getattr(layer, "activation", None), "name", None)
        entry = {"type": name, "activation": act, "need_dx": bool(layer.need_input_grad)}
        if act == "leaky_relu":
            entry["alpha"] = float(layer.activation.alpha)
        if act == "softmax" and i != last:
            raise Skip("softmax is only supported on the last layer")
        if act not in _ACTIVATIONS:
            raise Skip(f"activation {act!r} not supported by the bench's other backends")
        if name == "Conv2D":
            if tuple(layer.dilation) != (1, 1) or layer.groups != 1:
                raise Skip("dilated or grouped Conv2D not supported by the bench's other backends")
            entry.update(in_channels=int(layer.input_shape[0]), filters=int(layer.filters),
                         kernel=tuple(layer.kernel_size), stride=tuple(layer.stride),
                         padding=layer.padding, bias=bool(layer.use_bias),
                         pads=tuple(layer.pads))
        elif name == "Dense":
            entry.update(in_features=int(layer.input_shape[0]), units=int(layer.units),
                         bias=bool(layer.use_bias))
        elif name == "MaxPool2D":
            entry.update(size=tuple(layer.size),
                         stride=tuple(layer.stride) if layer.stride is not None else None,
                         padding=layer.padding,
                         pads=tuple(layer.pads))
        elif name != "Flatten":
            raise Skip(f"layer {name} not supported by the bench's other backends")
        if weights and layer.params:
            entry["params"] = [p.copy() for p in layer.params]
        spec.append(entry)
    if getattr(model.loss, "name", None) != "cross_entropy" or spec[-1]["activation"] != "softmax":
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
