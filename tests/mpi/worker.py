"""Run under ``mpiexec -n N`` by tests/test_distributed.py: ``worker.py SCENARIO OUTDIR``.

equivalence  every case of cases.CASES, float64 and float32, both summing algorithms; each
             rank writes its final weights and History to OUTDIR/eq-<rank>.npz
resume       3 epochs straight; 2 epochs + checkpoint, load, 1 more; and 1 more epoch from
             OUTDIR/single.npz (a one-process checkpoint); each rank writes OUTDIR/resume-<rank>.npz
fault        epochs with a checkpoint each; rank 1 raises in epoch 2 (the job must abort)
desync       the ranks shuffle with different seeds (the first step must fail on every rank)
outside      rank 1 raises outside fit while rank 0 waits in a barrier (init's hook aborts)
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases

import cnn
from cnn import distributed
from cnn.callbacks import Callback, ModelCheckpoint
from cnn.serialization import load_model


def flat(net):
    return np.concatenate([p.astype(np.float64).ravel() for p in net.params])


class Recording(distributed.DataParallel):
    """Keeps every global batch it is given and the slice it returns."""

    def shard(self, indices):
        mine = super().shard(indices)
        self.calls.append((indices.copy(), mine.copy()))
        return mine


def equivalence(out, rank):
    result = {}
    for algorithm in ("reduce_scatter", "allreduce"):
        strategy = Recording(algorithm=algorithm)
        for dtype in ("float64", "float32"):
            for name, rows, batch, drop_last in cases.CASES:
                # seed=rank: the ranks start from different weights; begin() must broadcast rank 0's
                net = cases.model(dtype, seed=rank)
                if rank == 0:
                    net = cases.model(dtype, seed=0)
                strategy.calls = []
                history = cases.fit(net, rows, batch, drop_last, strategy=strategy)
                key = f"{algorithm}-{dtype}-{name}"
                if algorithm == "reduce_scatter" and dtype == "float64":
                    # every shard call: the global indices, then this rank's slice
                    for j, (whole, mine) in enumerate(strategy.calls):
                        result[f"shard-{name}-{j}-global"] = whole
                        result[f"shard-{name}-{j}-local"] = mine
                result[key] = np.concatenate([p.ravel() for p in net.params])
                result[key + "-loss"] = np.array(history.history["loss"])
                result[key + "-val_loss"] = np.array(history.history["val_loss"])
    # dropout and augmentation draw per rank: the weights must still agree on every rank,
    # and a second run must repeat the first
    for run in range(2):
        draws = []

        def augment(xb, rng, draws=draws):
            noise = rng.normal(0.0, 0.01, xb.shape).astype(xb.dtype)
            draws.append(float(noise.flat[0]) if noise.size else np.nan)
            return xb + noise

        net = cases.model("float64", seed=0, dropout=0.3)
        cases.fit(net, 23, 6, False, strategy=strategy, augment=augment)
        result[f"random-{run}"] = np.concatenate([p.ravel() for p in net.params])
        result[f"random-{run}-draws-local"] = np.array(draws)
    result["threads"] = np.array(cnn.get_num_threads())
    result["world_size"] = np.array(strategy.world_size)
    np.savez(os.path.join(out, f"eq-{rank}.npz"), **result)


def resume(out, rank):
    strategy = distributed.DataParallel()
    _, rows, batch, drop_last = cases.CASES[0]
    result = {}
    straight = cases.model("float64")
    cases.fit(straight, rows, batch, drop_last, epochs=3, strategy=strategy)
    result["straight"] = flat(straight)
    ckpt = os.path.join(out, "dist-{epoch}.npz")
    first = cases.model("float64")
    cases.fit(first, rows, batch, drop_last, epochs=2, strategy=strategy, callbacks=[ModelCheckpoint(ckpt)])
    strategy.comm.Barrier()  # rank 0 has written the file
    again = load_model(os.path.join(out, "dist-2.npz"))
    cases.fit(again, rows, batch, drop_last, epochs=3, strategy=strategy, initial_epoch=2)
    result["resumed"] = flat(again)
    single = load_model(os.path.join(out, "single.npz"))
    cases.fit(single, rows, batch, drop_last, epochs=3, strategy=strategy, initial_epoch=2)
    result["from_single"] = flat(single)
    np.savez(os.path.join(out, f"resume-{rank}.npz"), **result)


class Fault(Callback):
    def on_batch_end(self, step, logs=None):
        if self.params["rank"] == 1 and self.model.optimizer.epoch == 1 and step == 1:
            raise RuntimeError("injected fault on rank 1")


def fault(out, rank):
    strategy = distributed.DataParallel()
    _, rows, batch, drop_last = cases.CASES[0]
    net = cases.model("float64")
    cases.fit(net, rows, batch, drop_last, epochs=3, strategy=strategy,
              callbacks=[ModelCheckpoint(os.path.join(out, "fault.npz")), Fault()])
    with open(os.path.join(out, f"fault-survived-{rank}.json"), "w") as f:
        json.dump({"rank": rank}, f)


def desync(out, rank):
    strategy = distributed.DataParallel()
    _, rows, batch, _ = cases.CASES[0]
    x, y = cases.data(rows, "float64")
    cases.model("float64").fit(x, y, epochs=1, batch_size=batch, seed=rank, verbose=0, strategy=strategy)


def outside(out, rank):
    if rank == 1:
        raise RuntimeError("injected error outside fit on rank 1")
    distributed._world().Barrier()


def main():
    scenario, out = sys.argv[1], sys.argv[2]
    distributed.init()
    {"equivalence": equivalence, "resume": resume, "fault": fault, "desync": desync,
     "outside": outside}[scenario](out, distributed.rank())


if __name__ == "__main__":
    main()
