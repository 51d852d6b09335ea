"""cnn: a convolutional-network training library for the CPU.

Every gradient is written out from the equations (and checked against finite
differences); the hot loops are typed Cython with OpenMP.

>>> import cnn
>>> from cnn import layers, optimizers
>>> model = cnn.Sequential([layers.Flatten(), layers.Dense(10, activation="softmax")],
...                        input_shape=(1, 28, 28), seed=0)
>>> model.compile(loss="cross_entropy", optimizer=optimizers.SGD(lr=0.1))  # returns the model
Sequential([
  Flatten(),
  Dense(10, activation='softmax')
], input_shape=(1, 28, 28), seed=0)
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

from cnn import (
    activations,
    callbacks,
    datasets,
    distributed,
    functional,
    initializers,
    layers,
    losses,
    metrics,
    models,
    optimizers,
    schedules,
    strategy,
)
from cnn._config import show_config
from cnn._register import register
from cnn._threads import get_num_threads, set_num_threads
from cnn.callbacks import Callback, EarlyStopping, History, ModelCheckpoint
from cnn.gradcheck import gradcheck
from cnn.graph import Input
from cnn.model import Model
from cnn.sequential import Sequential
from cnn.serialization import load_model, save_model
from cnn.trainer import Trainer

__all__ = [
    "Sequential", "Model", "Input", "Trainer", "load_model", "save_model", "register", "strategy",
    "Callback", "EarlyStopping", "History", "ModelCheckpoint", "layers", "activations", "losses", "optimizers", "schedules",
    "initializers", "callbacks", "datasets", "metrics", "functional", "distributed", "models",
    "set_num_threads", "get_num_threads", "show_config", "gradcheck", "__version__",
]
