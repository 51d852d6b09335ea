"""Models, data and runs shared by the MPI worker (run under ``mpiexec``) and by
``tests/test_distributed.py`` (which computes the one-process oracle). Imports no MPI."""

import numpy as np

from cnn import layers, optimizers
from cnn.sequential import Sequential

# (name, rows, global batch, drop_last): an uneven last batch (23 = 3 x 6 + 5), and a global
# batch smaller than the ranks (3 rows over 4 ranks; the last batch of 10 = 3 x 3 + 1 leaves
# empty shards at 2 ranks too).
CASES = (("uneven", 23, 6, False), ("small", 10, 3, False))
EPOCHS = 2


def data(n, dtype, seed=0):
    """``x`` (n, 1, 6, 6) of ``dtype`` and class ids ``y`` (n,) in [0, 4)."""
    r = np.random.default_rng(seed)
    y = r.integers(0, 4, n)
    x = (r.random((n, 1, 6, 6)) * 0.3).astype(dtype)
    x[np.arange(n), 0, y, y] += 1.0
    return x, y


def model(dtype, seed=0, dropout=None):
    """A compiled conv-pool-dense net (with a Dropout before the Dense layer when ``dropout``
    is a rate); SGD with momentum for float64, Adam for float32 (both optimizer states then
    take part in the steps)."""
    stack = [layers.Conv2D(3, 3, activation="relu"), layers.MaxPool2D(2), layers.Flatten()]
    if dropout:
        stack.append(layers.Dropout(dropout))
    stack.append(layers.Dense(4, activation="softmax"))
    net = Sequential(stack, input_shape=(1, 6, 6), seed=seed, dtype=dtype)
    opt = optimizers.SGD(lr=0.2, momentum=0.9) if np.dtype(dtype) == np.float64 else optimizers.Adam(lr=0.01)
    net.compile(loss="cross_entropy", optimizer=opt)
    return net


def fit(net, rows, batch, drop_last, epochs=EPOCHS, strategy=None, **kwargs):
    x, y = data(rows, net.dtype)
    xv, yv = data(7, net.dtype, seed=1)
    return net.fit(x, y, epochs=epochs, batch_size=batch, drop_last=drop_last, seed=5, verbose=0,
                   validation_data=(xv, yv), strategy=strategy, **kwargs)
