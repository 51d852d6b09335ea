"""``Sequential``: a linear stack of layers, the chain case of :class:`cnn.Model`.

It is the same engine: the stack becomes the graph ``input -> layer 0 -> layer 1 -> ...``
when the model is built (from ``input_shape=`` or the first data), and every method is
:class:`cnn.Model`'s. Only how it is made (a list, :meth:`Sequential.add`), its config (a
list of layers) and its summary table differ.
"""


from . import _registry
from . import _validation as V
from . import graph as _graph
from . import layers as _layers
from .model import Model

__all__ = ["Sequential"]


class Sequential(Model):
    """A linear stack of layers.

    Parameters
    ----------
    layers : iterable of cnn.layers.Layer, optional
    input_shape : tuple of int, optional
        Shape of one input item without the batch axis, e.g. ``(1, 28, 28)``. When given the
        model is built at once (so :meth:`summary` works); otherwise on the first data.
    seed : int >= 0, optional
        Seeds the model's generator, the one source of initial weights and dropout masks (and,
        through :meth:`fit`'s default, of the shuffling). None draws a seed from the OS and
        records it in ``model.seed``.
    dtype : {"float32", "float64"}, default "float32"
        Dtype of parameters and computations; inputs are cast to it.
    name : str, default "sequential"

    Attributes
    ----------
    layers : list of Layer
    rng : numpy.random.Generator
    loss, optimizer : set by :meth:`compile`
    history : cnn.callbacks.History of the last :meth:`fit`, or None
    stop_training : bool
        A callback sets it to end :meth:`fit` after the current epoch.

    Notes
    -----
    See :class:`cnn.Model` for thread safety and processes.

    Examples
    --------
    >>> import cnn
    >>> from cnn import layers
    >>> model = cnn.Sequential([
    ...     layers.Conv2D(4, 3, padding="same", activation="relu"),
    ...     layers.MaxPool2D(2),
    ...     layers.Flatten(),
    ...     layers.Dense(2, activation="softmax"),
    ... ], input_shape=(1, 8, 8), seed=0)
    >>> print(model.summary(print_fn=None))           # summary() prints it and returns it
    Model: "sequential"  input (None, 1, 8, 8), float32
    ===========================================================================
    #  Layer                                            Output shape     Params
    ===========================================================================
    0  Conv2D(4, 3, padding='same', activation='relu')  (None, 4, 8, 8)      40
    1  MaxPool2D()                                      (None, 4, 4, 4)       0
    2  Flatten()                                        (None, 64)            0
    3  Dense(2, activation='softmax')                   (None, 2)           130
    ===========================================================================
    Total params: 170

    The conv has ``4 * 1 * 3 * 3`` weights and 4 biases; the dense layer ``2 * 64 + 2``.
    """

    def __init__(self, layers=None, input_shape=None, seed=None, dtype="float32", name="sequential"):
        self._init_state(seed, dtype, name)
        self._stack = []
        if layers is not None:
            if isinstance(layers, _layers.Layer) or isinstance(layers, (str, bytes)):
                raise TypeError("layers must be an iterable of Layer objects, got a single "
                                f"{type(layers).__name__}")
            for layer in layers:
                self.add(layer)
        if input_shape is not None:
            self.build(input_shape)

    # -- structure ------------------------------------------------------------------------

    def add(self, layer):
        """Append ``layer`` (built at once if the model already is)."""
        if not isinstance(layer, _layers.Layer):
            raise TypeError(f"layer must be a cnn.layers.Layer, got {layer!r} of type {type(layer).__name__}")
        if layer.takes_multiple_inputs:
            raise TypeError(f"{type(layer).__name__} joins several tensors: use it in a graph "
                            f"model (cnn.Model), not in a Sequential")
        if any(layer is other for other in self._stack):
            raise ValueError(f"layer {layer!r} is already in this model; create a new instance")
        self._stack.append(layer)
        if not self.built:
            self.layers = list(self._stack)
            return self
        try:
            self._chain_graph(self.input_shape)
        except (TypeError, ValueError):
            self._stack.pop()
            layer._call_shapes = None
            self._chain_graph(self.input_shape)
            raise
        return self

    def build(self, input_shape):
        """Build every layer for items of shape ``input_shape`` (per item, no batch axis)."""
        shape = V.item_shape(input_shape, "input_shape")
        if not self._stack:
            raise ValueError("cannot build a Sequential without layers; add some first")
        self._chain_graph(shape)

    def _chain_graph(self, shape):
        inputs = _graph.Input(shape)
        x = inputs
        for i, layer in enumerate(self._stack):
            layer._call_shapes = None  # a Sequential calls each of its layers once
            try:
                x = _graph.symbolic_call(layer, x)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"layer {i} ({type(layer).__name__}): {exc}") from None
        self._set_graph(inputs, x, label=lambda i, layer: f"layer {i} ({type(layer).__name__})")

    # -- description ----------------------------------------------------------------------

    def _summary_rows(self):
        rows = []
        for i, layer in enumerate(self.layers):
            shape = "(None, " + ", ".join(map(str, layer.output_shape)) + ")"
            rows.append((str(i), repr(layer), shape, f"{layer.count_params():,}"))
        return ("#", "Layer", "Output shape", "Params"), rows

    def __repr__(self):
        inner = ",\n".join(f"  {layer!r}" for layer in self.layers)
        shape = f", input_shape={self.input_shape}" if self.input_shape else ""
        return f"Sequential([\n{inner}\n]{shape}, seed={self.seed})"

    # -- config ---------------------------------------------------------------------------

    def get_config(self):
        """JSON-able architecture: layers, input shape, seed, dtype, name."""
        return {"name": self.name, "input_shape": list(self.input_shape) if self.input_shape else None,
                "seed": self.seed, "dtype": self.dtype.name,
                "layers": [_layers.serialize(layer) for layer in self.layers]}

    @classmethod
    def _layers_from_config(cls, config):
        if not isinstance(config, dict):
            raise ValueError(f"model config must be a dict, got {type(config).__name__}")
        expected = {"name", "input_shape", "seed", "dtype", "layers"}
        if set(config) != expected:
            raise ValueError(f"model config: wanted a dict with keys {sorted(expected)}, got "
                             f"{V.short_repr(sorted(config))}")
        if not isinstance(config["layers"], list) or not config["layers"]:
            raise ValueError(f"model config 'layers' must be a non-empty list, got "
                             f"{V.short_repr(config['layers'])}")
        built_layers = []
        for i, spec in enumerate(config["layers"]):
            try:
                built_layers.append(_layers.deserialize(spec))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"model config layer {i}: {exc}") from None
        return built_layers

    @classmethod
    def from_config(cls, config):
        """A new model (built if ``input_shape`` is given, not compiled) from :meth:`get_config`."""
        built_layers = cls._layers_from_config(config)
        try:
            return cls(built_layers, input_shape=config["input_shape"], seed=config["seed"],
                       dtype=config["dtype"], name=config["name"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model config does not describe a valid model: {exc}") from None

    @classmethod
    def state_shapes(cls, config):
        """``[(key, shape), ...]`` of the parameters and buffers (layer by layer: parameters,
        then buffers) a model of ``config`` holds, from shapes alone (nothing allocated)."""
        built_layers = cls._layers_from_config(config)
        if config["input_shape"] is None:
            raise ValueError("it has no input_shape")
        shape = V.item_shape(config["input_shape"])
        shapes = []
        for i, layer in enumerate(built_layers):
            for name, pshape in layer.param_shapes(shape) + layer.buffer_shapes(shape):
                shapes.append((f"{i}.{name}", tuple(pshape)))
            shape = layer.compute_output_shape(shape)
        return shapes


_registry.MODELS.add(Sequential, "cnn.Sequential")
