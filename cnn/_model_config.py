"""A graph model's architecture: ``get_config``, ``from_config``, ``state_shapes``, ``summary``.

A mixin of :class:`cnn.Model`. The config lists the layers and every call of a layer
(``{"layer": index, "inputs": [tensor, ...]}``, tensor 0 being the model input and ``k + 1``
the output of call ``k``), so a file can only describe calls that read earlier tensors: no
cycle can be written down. Nothing in a config is executed; layer classes come from the
registry.
"""

from . import _validation as V
from . import graph as _graph
from . import layers as _layers

__all__ = ["GraphConfig"]


class GraphConfig:
    """Config round trip and summary table of a :class:`cnn.Model` (uses ``self.layers``,
    ``self._steps``, ``self._nodes``)."""

    # -- description ----------------------------------------------------------------------

    def _summary_rows(self):
        """``(header, rows)`` of :meth:`summary`'s table: one row per call of a layer."""
        names = {0: "input"}
        rows = []
        for k, step in enumerate(self._steps):
            layer = step.layer
            index = self.layers.index(layer)
            names[step.output] = f"#{k}"
            shape = "(None, " + ", ".join(map(str, self._nodes[k].output.shape)) + ")"
            params = f"{layer.count_params():,}" + (" (shared)" if step.shared else "")
            rows.append((f"{k}", f"{layer!r} [layer {index}]", shape, params,
                         ", ".join(names[t] for t in step.inputs)))
        return ("#", "Layer", "Output shape", "Params", "Inputs"), rows

    def summary(self, print_fn=print):
        """Print and return a table of the layer calls: layer, output shape, parameter count
        (and, for a graph model, which calls each one reads).

        Parameters
        ----------
        print_fn : callable or None
            Called with the table; None prints nothing.

        Returns
        -------
        str
        """
        self._require_built("summary")
        header, rows = self._summary_rows()
        rows = [header] + rows
        cols = len(header)
        widths = [max(len(r[c]) for r in rows) for c in range(cols)]
        right = {0, 3}

        def line(r):
            return "  ".join(f"{r[c]:>{widths[c]}}" if c in right else f"{r[c]:<{widths[c]}}"
                             for c in range(cols)).rstrip()

        rule = "=" * len(line(rows[0]).ljust(sum(widths) + 2 * (cols - 1)))
        text = "\n".join(
            [f'Model: "{self.name}"  input (None, {", ".join(map(str, self.input_shape))}), {self.dtype}',
             rule, line(rows[0]), rule]
            + [line(r) for r in rows[1:]]
            + [rule, f"Total params: {self.count_params():,}"])
        if print_fn is not None:
            print_fn(text)
        return text

    def __repr__(self):
        return (f"Model(name={self.name!r}, input_shape={self.input_shape}, "
                f"{len(self._steps)} calls of {len(self.layers)} layers, seed={self.seed})")

    # -- config / persistence -------------------------------------------------------------

    def get_config(self):
        """JSON-able architecture: the layers, every call (``{"layer": index, "inputs":
        [tensor, ...]}``, tensor 0 being the model input and ``k + 1`` the output of call
        ``k``), input shape, seed, dtype, name."""
        self._require_built("get_config")
        return {"name": self.name, "input_shape": list(self.input_shape), "seed": self.seed,
                "dtype": self.dtype.name,
                "layers": [_layers.serialize(layer) for layer in self.layers],
                "calls": [{"layer": self.layers.index(s.layer), "inputs": list(s.inputs)}
                          for s in self._steps]}

    @classmethod
    def _graph_from_config(cls, config):
        """``(inputs, outputs)`` symbolic tensors replayed from a config (no weights)."""
        if not isinstance(config, dict):
            raise ValueError(f"model config must be a dict, got {type(config).__name__}")
        expected = {"name", "input_shape", "seed", "dtype", "layers", "calls"}
        if set(config) != expected:
            raise ValueError(f"model config: wanted a dict with keys {sorted(expected)}, got "
                             f"{V.short_repr(sorted(config))}")
        specs, calls = config["layers"], config["calls"]
        if not isinstance(specs, list) or not isinstance(calls, list) or not calls:
            raise ValueError("model config 'layers' and 'calls' must be lists, 'calls' not empty")
        built = []
        for i, spec in enumerate(specs):
            try:
                built.append(_layers.deserialize(spec))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"model config layer {i}: {exc}") from None
        inputs = _graph.Input(config["input_shape"])
        tensors = [inputs]
        for k, call in enumerate(calls):
            if not isinstance(call, dict) or set(call) != {"layer", "inputs"}:
                raise ValueError(f"model config call {k} must be a dict with keys 'layer' and "
                                 f"'inputs', got {V.short_repr(call)}")
            li, refs = call["layer"], call["inputs"]
            if not V.is_int(li) or not 0 <= li < len(built):
                raise ValueError(f"model config call {k}: 'layer' must be an index into the "
                                 f"{len(built)} layers, got {V.short_repr(li)}")
            # a call reads earlier tensors only: no cycle can be written down
            if not isinstance(refs, list) or not refs or not all(
                    V.is_int(r) and 0 <= r <= k for r in refs):
                raise ValueError(f"model config call {k}: 'inputs' must list earlier tensors "
                                 f"(0 .. {k}), got {V.short_repr(refs)}")
            layer = built[li]
            args = [tensors[r] for r in refs]
            try:
                tensors.append(layer(args if layer.takes_multiple_inputs else args[0]))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"model config call {k}: {exc}") from None
        return inputs, tensors[-1]

    @classmethod
    def from_config(cls, config):
        """A new, built model (not compiled) from :meth:`get_config` output."""
        inputs, outputs = cls._graph_from_config(config)
        try:
            return cls(inputs, outputs, seed=config["seed"], dtype=config["dtype"],
                       name=config["name"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model config does not describe a valid model: {exc}") from None

    @classmethod
    def state_shapes(cls, config):
        """``[(key, shape), ...]`` of the parameters and buffers (layer by layer: parameters,
        then buffers) a model of ``config`` holds, computed from shapes alone: a loader checks a
        file against them before anything is allocated."""
        inputs, outputs = cls._graph_from_config(config)
        shapes, seen = [], set()
        for node in _graph.plan(inputs, outputs):
            layer = node.layer
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            i = len(seen) - 1
            for name, shape in layer.param_shapes(node.input_shapes) + layer.buffer_shapes(node.input_shapes):
                shapes.append((f"{i}.{name}", tuple(shape)))
        return shapes
