"""cnn: a convolutional-network training library for the CPU.

Every gradient is written out from the equations (and checked against finite
differences); the hot loops are typed Cython with OpenMP.

>>> import cnn
>>> from cnn import layers, optimizers
>>> model = cnn.Sequential([layers.Flatten(), layers.Dense(10, activation="softmax")],
...                        input_shape=(1, 28, 28), seed=0)
>>> model.compile(loss="cross_entropy", optimizer=optimizers.SGD(lr=0.1))
"""
from cnn._version import __version__

try:
    from cnn._ext import _conv as _conv_probe  # noqa: F401
except ImportError as _exc:  # the source tree without its compiled kernels
    import os as _os
    raise ImportError(
        f"cnn's compiled kernels are missing in {_os.path.dirname(__file__)} ({_exc}). "
        "You are probably importing the source folder: install in place with "
        "`pip install -e .`, or run from another folder after `pip install .`."
    ) from None

from cnn import (activations, callbacks, datasets, functional, initializers, layers, losses,
                 metrics, normalization, optimizers, pooling, schedules, strategy)
from cnn._register import register
from cnn._config import show_config
from cnn._threads import get_num_threads, set_num_threads
from cnn.callbacks import Callback, EarlyStopping, History, ModelCheckpoint
from cnn.model import Sequential
from cnn.serialization import load_model, save_model
from cnn.trainer import Trainer

# BatchNormalization and the average pools live in their own modules, which build on
# cnn.layers (so cnn.layers cannot import them back); they join its namespace here.
for _module in (normalization, pooling):
    for _name in _module.__all__:
        setattr(layers, _name, getattr(_module, _name))
    layers.__all__ = layers.__all__ + [n for n in _module.__all__ if n not in layers.__all__]
del _module, _name

__all__ = [
    "Sequential", "Trainer", "load_model", "save_model", "register", "strategy",
    "Callback", "EarlyStopping", "History", "ModelCheckpoint", "layers", "activations", "losses", "optimizers", "schedules",
    "initializers", "callbacks", "datasets", "metrics", "functional",
    "set_num_threads", "get_num_threads", "show_config", "__version__",
]
