"""Tutorial 4: data-parallel training over MPI with cnn.distributed.DataParallel.

Run: ``mpiexec -n 2 python docs/tutorials/04_data_parallel.py`` (a few seconds on 2 cores; MPICH's
``mpiexec`` comes with ``pip install mpich``, see the README's distributed section). Every rank
runs this whole script; only rank 0 prints. Started without ``mpiexec`` it runs as one rank.
"""

import hashlib

import numpy as np

import cnn
from cnn import layers, optimizers
from cnn.distributed import DataParallel


def build(seed):
    model = cnn.Sequential([
        layers.Conv2D(8, 3, padding="same", activation="relu"),
        layers.MaxPool2D(2),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ], input_shape=(1, 28, 28), seed=seed)
    return model.compile(loss="cross_entropy", optimizer=optimizers.SGD(lr=0.1, momentum=0.9))


def fingerprint(model):
    """A short hash of every weight's bytes: equal hashes mean bit-identical weights."""
    return hashlib.sha256(b"".join(p.tobytes() for p in model.params)).hexdigest()[:16]


# -- 1. the strategy: starts MPI, gives each rank its share of the cores as threads, and makes
# an uncaught error on any rank abort the whole job instead of leaving the others waiting
strategy = DataParallel()
comm, rank, size = strategy.comm, strategy.rank, strategy.world_size
say = print if rank == 0 else (lambda *args, **kwargs: None)
say(f"{strategy}: {size} ranks, {cnn.get_num_threads()} thread(s) each")

# -- 2. every rank loads the whole data set and builds the model. The seeds differ on purpose:
# begin() broadcasts rank 0's weights, so the ranks still start from one model.
(x, y), (xt, yt) = cnn.datasets.load_mnist()
x, y = x[::2], y[::2]  # 2,500 images, 250 per class (the subset is sorted by class)
model = build(seed=rank)

# -- 3. fit with the strategy: batch_size is the *global* batch (each rank takes its slice of
# every batch of 64), the gradients are averaged over the ranks, every rank applies the same step
history = model.fit(x, y, epochs=2, batch_size=64, seed=1, verbose=2 if rank == 0 else 0,
                    strategy=strategy)
result = model.evaluate(xt[:2000], yt[:2000])
say(f"rank 0: test accuracy {result['accuracy']:.4f}")
assert result["accuracy"] > 0.85, result  # reaches ~0.92

# -- 4. the weights are bit-identical on every rank
prints = comm.allgather(fingerprint(model))
say("weight fingerprint per rank: " + ", ".join(prints))
assert len(set(prints)) == 1, prints

# -- 5. and they are the weights one process makes at the same global batch, up to rounding
# (the gradient sums run in another order). Rank 0 trains that single-process twin here.
if rank == 0:
    twin = build(seed=0)
    twin.fit(x, y, epochs=2, batch_size=64, seed=1, verbose=0)
    diff = max(float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))
               for a, b in zip(model.params, twin.params))
    print(f"largest relative difference from one process at batch 64: {diff:.1e}")
    assert diff < 1e-4, diff
    if size > 1:
        model.save("tutorial-dp.npz")  # only rank 0 writes files
        print("rank 0 saved tutorial-dp.npz")
comm.Barrier()
