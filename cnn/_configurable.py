"""``Configurable``: value semantics for small objects described by their ``get_config()``.

Activations, losses and learning-rate schedules are equal when they are of one type with
one config, hash by it, and print as ``Name(arg=value, ...)``.
"""


class Configurable:
    """Mixin: ``get_config()`` (a JSON-able dict with ``"name"``) defines ==, hash and repr."""

    name = "configurable"

    def get_config(self):
        """JSON-able dict with ``"name"`` (and parameters, if any)."""
        return {"name": self.name}

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(tuple(sorted(self.get_config().items())))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"
