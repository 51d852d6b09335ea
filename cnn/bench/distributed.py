"""``python -m cnn.bench --distributed`` (or ``python -m cnn.bench.distributed``): data-parallel throughput of the DESIGN CNN over MPI.

Launches ``mpiexec -n R`` for 1, 2 and 4 ranks (4 oversubscribes a 2-core machine) of a fixed
number of training steps at one *global* batch (strong scaling: N ranks share the batch one
process would train on), and reports images/s, threads per rank, the time of the gradient
sum, and the scaling efficiency of 2 ranks x 1 thread against 1 rank x 1 thread:
``ips(2 x 1) / (2 ips(1 x 1))``. It ends with the on-paper model for N machines (bytes each
rank sends per step, their time at 10 and 25 Gbit/s, the global batch from which the
efficiency passes 90 %), fed with the measured compute time per image.

``--quick`` is a smoke test of the whole run (few steps, small batch): its figures mean
nothing, and neither do any taken on a shared machine.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

__all__ = ["main", "paper_model"]

# Open MPI refuses root and more ranks than cores without these; MPICH needs none.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1",
           "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe"}
# (ranks, threads per rank); None = cnn.distributed's default (cores / local ranks)
CONFIGS = ((1, 1), (2, 1), (4, None), (1, None))


def paper_model(params, ranks, bandwidth_gbit, seconds_per_image, latency_s=5e-6, efficiency=0.9,
                itemsize=4):
    """Cost of one data-parallel step on ``ranks`` machines, one rank each.

    The packed gradient buffer (``params`` numbers of ``itemsize`` bytes: 4 for a float32
    model) is summed by reduce-scatter + allgather: each rank sends (and receives) ``2 (N-1)/N``
    of it, in ``2 (N-1)`` messages of ``latency_s`` each; the float64 tail of 5 bookkeeping
    numbers is gathered from every rank (``(N-1) 40`` bytes). With compute ``(B/N) t`` per step
    (``t`` the seconds per image on one rank), the efficiency ``compute / (compute + comm)``
    passes ``efficiency`` from ``B >= N comm e / ((1 - e) t)``.

    Returns
    -------
    dict with ``bytes_per_step`` (sent by each rank), ``comm_seconds`` and ``batch_for_efficiency``
    """
    n = ranks
    sent = 2 * (n - 1) / n * itemsize * params + (n - 1) * 8 * 5
    comm = sent * 8 / (bandwidth_gbit * 1e9) + 2 * (n - 1) * latency_s
    batch = n * comm * efficiency / ((1 - efficiency) * seconds_per_image) if n > 1 else 0.0
    return {"bytes_per_step": sent, "comm_seconds": comm, "batch_for_efficiency": batch}


def _worker(args):
    """One rank: ``args.steps`` timed steps after 2 warm-ups; rank 0 prints one JSON line."""
    from cnn import distributed

    from .data import mnist_batches
    from .nets import build

    comm = distributed.init(threads=args.threads)
    import cnn
    model = build("cnn", seed=0)
    strategy = distributed.DataParallel(algorithm=args.algorithm)
    strategy.begin(model)
    batches = mnist_batches(args.batch)
    rows = strategy.shard(np.arange(args.batch))
    stats = np.zeros(2)
    times = np.zeros(2)  # whole steps, gradient sums

    def step(i):
        x, y = batches[i % len(batches)]
        strategy.shard(np.arange(args.batch))
        xb, yb = np.ascontiguousarray(x[rows]), np.ascontiguousarray(y[rows])
        if rows.size:
            stats[0] = model.forward_backward(xb, yb) * rows.size
        else:
            model.zero_grads()
        t = time.perf_counter()
        strategy.reduce_gradients(model, rows.size, stats)
        times[1] += time.perf_counter() - t
        model.apply_gradients()

    for i in range(2):
        step(i)
    comm.Barrier()
    times[:] = 0
    start = time.perf_counter()
    for i in range(args.steps):
        step(i)
    times[0] = time.perf_counter() - start
    slowest = np.empty(2)
    strategy.comm.Allreduce(times, slowest, op=distributed.mpi_module().MAX)
    if strategy.rank == 0:
        print(json.dumps({"ranks": strategy.world_size, "threads": cnn.get_num_threads(),
                          "batch": args.batch, "steps": args.steps,
                          "images_per_second": args.steps * args.batch / slowest[0],
                          "step_ms": 1e3 * slowest[0] / args.steps,
                          "reduce_ms": 1e3 * slowest[1] / args.steps,
                          "params": int(sum(p.size for p in model.params)),
                          "mpi": distributed.mpi_module().Get_library_version().splitlines()[0].strip()}),
              flush=True)


def _launch(mpiexec, ranks, threads, args):
    import cnn
    root = os.path.dirname(os.path.dirname(os.path.abspath(cnn.__file__)))
    env = dict(os.environ, **MPI_ENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", "cnn.bench.distributed", "--worker",
           "--steps", str(args.steps), "--batch", str(args.batch), "--algorithm", args.algorithm]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=args.timeout, env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return json.loads(lines[-1])


def _parser():
    p = argparse.ArgumentParser(prog="python -m cnn.bench.distributed", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke test: 3 steps at batch 32")
    p.add_argument("--steps", type=int, help="timed steps per run (default 30; 3 with --quick)")
    p.add_argument("--batch", type=int, help="global batch (default 128; 32 with --quick)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per mpiexec run")
    p.add_argument("--json", metavar="PATH", help="also write the rows and the model as JSON")
    p.add_argument("--algorithm", choices=("reduce_scatter", "allreduce"), default="reduce_scatter",
                   help="how DataParallel sums the gradients (default reduce_scatter: identical bits "
                        "on every rank by construction; allreduce: one in-place Allreduce)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    return p


def main(argv=None):
    """Run the bench (or, with the internal ``--worker``, one rank of it); returns 0."""
    args = _parser().parse_args(argv)
    args.steps = args.steps or (3 if args.quick else 30)
    args.batch = args.batch or (32 if args.quick else 128)
    if args.steps < 1 or args.batch < 1:
        raise SystemExit(f"--steps and --batch must be >= 1, got {args.steps} and {args.batch}")
    if args.worker:
        _worker(args)
        return 0
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if mpiexec is None:
        raise SystemExit("no mpiexec found: pip install 'cnn[mpi]' (mpi4py + mpich)")
    print(f"DESIGN CNN, {args.steps} steps at global batch {args.batch}, {os.cpu_count()} cores, "
          f"gradient sum by {args.algorithm}"
          + ("  (--quick: a smoke test, not figures)" if args.quick else ""), flush=True)
    rows = []
    print(f"{'ranks':>5} {'threads/rank':>12} {'images/s':>10} {'step ms':>9} {'sum ms':>8}")
    for ranks, threads in CONFIGS:
        r = _launch(mpiexec, ranks, threads, args)
        rows.append(r)
        print(f"{r['ranks']:>5} {r['threads']:>12} {r['images_per_second']:>10,.0f} "
              f"{r['step_ms']:>9.2f} {r['reduce_ms']:>8.2f}", flush=True)
    one = next(r for r in rows if r["ranks"] == 1 and r["threads"] == 1)
    two = next(r for r in rows if r["ranks"] == 2 and r["threads"] == 1)
    eff = two["images_per_second"] / (2 * one["images_per_second"])
    print(f"scaling efficiency, 2 ranks x 1 thread vs 1 rank x 1 thread: {100 * eff:.1f} % "
          f"(MPI: {one['mpi']})")
    t_img = 1e-3 * (one["step_ms"] - one["reduce_ms"]) / args.batch
    print(f"model for N machines (1 rank each, {one['params']:,} parameters, float32 gradients "
          f"+ a float64 tail, "
          f"{1e6 * t_img:.0f} us of compute per image as measured on 1 thread):")
    model = []
    for n in (2, 4, 8, 16, 64):
        for gbit in (10, 25):
            m = paper_model(one["params"], n, gbit, t_img)
            model.append({"ranks": n, "gbit": gbit, **m})
            print(f"  N={n:>3} {gbit:>2} Gbit/s: {m['bytes_per_step'] / 1e6:.2f} MB sent per rank "
                  f"and step, {1e3 * m['comm_seconds']:.2f} ms; 90 % from global batch "
                  f"{m['batch_for_efficiency']:,.0f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "efficiency_2x1": eff, "model": model}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
