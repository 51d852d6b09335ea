"""``cnn.register``: put a user class (or initializer) into the registry of its kind."""

import inspect

from . import _registry, activations, layers, losses, optimizers, schedules

__all__ = ["register"]


def _registry_for(obj):
    """The registry of the kind ``obj`` belongs to, found from its base class."""
    if inspect.isclass(obj):
        for base, registry in ((layers.Layer, _registry.LAYERS),
                               (activations.Activation, _registry.ACTIVATIONS),
                               (losses.Loss, _registry.LOSSES),
                               (optimizers.Optimizer, _registry.OPTIMIZERS),
                               (schedules.LRSchedule, _registry.SCHEDULES)):
            if issubclass(obj, base):
                return registry
        raise TypeError(f"cnn.register takes a subclass of Layer, Activation, Loss, Optimizer or "
                        f"LRSchedule, or an initializer function; got class {obj.__name__}")
    if callable(obj):
        return _registry.INITIALIZERS
    raise TypeError(f"cnn.register takes a class or an initializer function, got "
                    f"{type(obj).__name__}")


def register(obj=None, *, package="Custom", name=None):
    """Register a user class (or initializer function) so that models using it save and load.

    Use as ``@cnn.register`` or ``@cnn.register(package="mylab", name="Swish")``.

    Parameters
    ----------
    obj : class or function
        A subclass of :class:`cnn.layers.Layer`, :class:`cnn.activations.Activation`,
        :class:`cnn.losses.Loss`, :class:`cnn.optimizers.Optimizer` or
        :class:`cnn.schedules.LRSchedule`, or an initializer function
        ``f(shape, fan_in, fan_out, rng, dtype)``.
    package : str, default "Custom"
    name : str, optional
        Default: the class's ``__name__`` for layers and initializers, its ``name`` attribute
        for the kinds whose configs carry ``"name"`` (activations, losses, optimizers,
        schedules), whose ``name`` is then set to the registered key.

    Returns
    -------
    obj, registered under ``"<package>>name"``. A layer needs ``get_config()`` returning its
    constructor's arguments as JSON-able values.

    Raises
    ------
    ValueError
        The key is taken by another object.
    """
    if obj is None:
        return lambda o: register(o, package=package, name=name)
    for value, label in ((package, "package"), (name, "name")):
        if value is not None and (not isinstance(value, str) or not value or ">" in value):
            raise ValueError(f"{label} must be a non-empty str without '>', got {value!r}")
    registry = _registry_for(obj)
    named_kind = registry not in (_registry.LAYERS, _registry.INITIALIZERS)
    base = name or (obj.__dict__.get("name") if named_kind else None) or obj.__name__
    key = f"{package}>{base}"
    registry.add(obj, key)
    if named_kind:
        obj.name = key
    return obj
