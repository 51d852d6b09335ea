"""Run under ``mpiexec -n N`` by tests/test_distributed.py: ``worker.py SCENARIO OUTDIR``.

equivalence  every case of cases.CASES, float64 and float32, both summing algorithms; each
             rank writes its final weights and History to OUTDIR/eq-<rank>.npz
resume       3 epochs straight; 2 epochs + checkpoint, load, 1 more; and 1 more epoch from
             OUTDIR/single.npz (a one-process checkpoint); each rank writes OUTDIR/resume-<rank>.npz
fault        epochs with a checkpoint each; rank 1 raises in epoch 2 (the job must abort)
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases  # noqa: E402

import cnn  # noqa: E402
from cnn import distributed  # noqa: E402
from cnn.callbacks import Callback, ModelCheckpoint  # noqa: E402
from cnn.serialization import load_model  # noqa: E402


def flat(net):
    return np.concatenate([p.astype(np.float64).ravel() for p in net.params])


def equivalence(out, rank):
    result = {}
    for algorithm in ("reduce_scatter", "allreduce"):
        strategy = distributed.DataParallel(algorithm=algorithm)
        for dtype in ("float64", "float32"):
            for name, rows, batch, drop_last in cases.CASES:
                # seed=rank: the ranks start from different weights; begin() must broadcast rank 0's
                net = cases.model(dtype, seed=rank)
                if rank == 0:
                    net = cases.model(dtype, seed=0)
                history = cases.fit(net, rows, batch, drop_last, strategy=strategy)
                key = f"{algorithm}-{dtype}-{name}"
                result[key] = np.concatenate([p.ravel() for p in net.params])
                result[key + "-loss"] = np.array(history.history["loss"])
                result[key + "-val_loss"] = np.array(history.history["val_loss"])
    result["threads"] = np.array(cnn.get_num_threads())
    result["world_size"] = np.array(strategy.world_size)
    np.savez(os.path.join(out, f"eq-{rank}.npz"), **result)


def resume(out, rank):
    strategy = distributed.DataParallel()
    name, rows, batch, drop_last = cases.CASES[0]
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
    name, rows, batch, drop_last = cases.CASES[0]
    net = cases.model("float64")
    cases.fit(net, rows, batch, drop_last, epochs=3, strategy=strategy,
              callbacks=[ModelCheckpoint(os.path.join(out, "fault.npz")), Fault()])
    with open(os.path.join(out, f"fault-survived-{rank}.json"), "w") as f:
        json.dump({"rank": rank}, f)


def main():
    scenario, out = sys.argv[1], sys.argv[2]
    distributed.init()
    {"equivalence": equivalence, "resume": resume, "fault": fault}[scenario](out, distributed.rank())


if __name__ == "__main__":
    main()
