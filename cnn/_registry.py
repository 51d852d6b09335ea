"""One registry mechanism for everything a saved file may name (``cnn.register`` fills it).

A model file stores names, never code: ``{"class_name": "Dense", "config": {...}}`` for a layer,
``{"name": "adam", "lr": 0.001, ...}`` for an optimizer, a loss, an activation or a schedule, a
plain name for an initializer. Loading looks each name up in the registry of its kind and
refuses a name that is not there, with a message that says how to register it: nothing named
by a file is ever imported or executed.

Built-in classes are registered under their plain names (``"Dense"``, ``"relu"``, ``"sgd"``).
:func:`cnn.register` adds user classes under ``"<package>>Name"`` (Keras' convention), so they
cannot shadow a built-in. Registration happens when the decorated class is defined, i.e. when
its module is imported: a fresh process must import that module before it loads a file that
names the class (the error says so).
"""

import inspect

__all__ = ["Registry", "construct", "LAYERS", "ACTIVATIONS", "LOSSES", "OPTIMIZERS", "SCHEDULES",
           "INITIALIZERS", "MODELS"]

_UNREGISTERED_HINT = ("; a custom class must be decorated with @cnn.register, and the module "
                      "that defines it imported before loading (registration happens at import)")


class Registry:
    """Names -> classes (or functions) of one kind.

    Parameters
    ----------
    kind : str
        What the entries are, for messages ("layer", "activation", ...).
    """

    def __init__(self, kind):
        self.kind = kind
        self._entries = {}
        self._keys = {}

    def add(self, obj, *names):
        """Register ``obj`` under ``names`` (the first is the key a config stores)."""
        if not names:
            raise ValueError(f"{self.kind} {obj!r} needs at least one name to be registered")
        for name in names:
            if not isinstance(name, str) or not name:
                raise TypeError(f"a registered {self.kind} name must be a non-empty str, got {name!r}")
            known = self._entries.get(name)
            if known is not None and known is not obj:
                raise ValueError(f"the {self.kind} name {name!r} is already registered for "
                                 f"{known!r}; pick another name or package")
        for name in names:
            self._entries[name] = obj
        self._keys.setdefault(obj, names[0])
        return obj

    def names(self):
        """Sorted registered names."""
        return sorted(self._entries)

    def __contains__(self, name):
        return isinstance(name, str) and name in self._entries

    def lookup(self, name, what):
        """The entry registered as ``name``; ValueError naming ``what`` otherwise."""
        if isinstance(name, str) and name in self._entries:
            return self._entries[name]
        hint = _UNREGISTERED_HINT if isinstance(name, str) and ">" in name else ""
        raise ValueError(f"{what} must be one of {self.names()}, got {_short_repr(name)}{hint}")

    def key_of(self, obj):
        """The name a config stores for ``obj`` (a class or function), or None."""
        return self._keys.get(obj)

    def get(self, identifier, base, what, forms):
        """Resolve ``identifier``: an instance of ``base`` as is, a registered name (default
        arguments), or a ``{"name": ..., ...}`` config dict; TypeError listing ``forms``
        otherwise."""
        if isinstance(identifier, base):
            return identifier
        if isinstance(identifier, str):
            return self.lookup(identifier, what)()
        if isinstance(identifier, dict):
            return self.from_name_config(identifier, what)
        raise TypeError(f"{what} must be {forms}, got {_short_repr(identifier)} of type "
                        f"{type(identifier).__name__}")

    def from_name_config(self, config, what):
        """An instance from a ``{"name": key, **constructor arguments}`` config dict."""
        config = dict(config)
        cls = self.lookup(config.pop("name", None), f"{what} config 'name'")
        return construct(cls, config, f"{what} config {_short_repr(config)}")


def construct(cls, kwargs, what):
    """``cls(**kwargs)`` after checking ``kwargs`` against its signature (ValueError naming
    ``what`` and every key the constructor does not take)."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        unknown = [] if takes_any else sorted(set(kwargs) - set(signature.parameters))
        if unknown:
            raise ValueError(f"{what} does not fit {cls.__name__}: it has keys {unknown} that "
                             f"{cls.__name__} does not take")
        try:
            signature.bind(**kwargs)
        except TypeError as exc:
            raise ValueError(f"{what} does not fit {cls.__name__}: {exc}") from None
    return cls(**kwargs)


def _short_repr(value, limit=200):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


LAYERS = Registry("layer")
ACTIVATIONS = Registry("activation")
LOSSES = Registry("loss")
OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("schedule")
INITIALIZERS = Registry("initializer")
MODELS = Registry("model")
