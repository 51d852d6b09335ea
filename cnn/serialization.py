"""Saving and loading models as ``.npz`` files: no pickle, atomic writes, strict loads.

One file holds everything a resumed run needs to continue bit for bit:

==========================  ===============================================================
key                         content
==========================  ===============================================================
``format``                  JSON ``{"format": "cnn.Sequential", "version": 1}``
``architecture``            JSON of :meth:`cnn.Sequential.get_config` (layers, input shape,
                            seed, dtype, name)
``layers.<i>.<name>``       parameter ``<name>`` (``weight``/``bias``) of layer ``i``
``compile``                 JSON ``{"loss": ..., "optimizer": ...}`` configs (if compiled)
``optimizer.<key>``         :meth:`cnn.optimizers.Optimizer.state_dict` (momentum, Adam
                            moments, step count, epoch)
``training``                JSON: the model generator's state (dropout), and where the last
                            ``fit`` stopped: epoch, seed and the shuffling generator's state
==========================  ===============================================================

JSON documents are stored as 1-D ``uint8`` arrays of UTF-8 bytes. Files are read with
``allow_pickle=False``; anything that does not match the architecture (missing or unexpected
arrays, wrong shapes or dtypes, object arrays, bad JSON, non-finite weights) is a ValueError
that names the file and the problem. Writes go to a temporary file in the target folder, are
flushed and fsync'ed, then renamed over the target: a crash mid-save leaves the old file whole.
The temporary file is ``.<name>.<pid>.<random>.tmp``; one left behind by a killed process is
removed by the next save to the same target (see :func:`atomic_savez`).
"""

import json
import os
import re
import tempfile
import zipfile

import numpy as np

from . import _registry, layers, losses, optimizers
from . import _validation as V

__all__ = ["save_model", "load_model", "atomic_savez"]

FORMAT = {"format": "cnn.Sequential", "version": 1}
_MAX_JSON_BYTES = 16 << 20  # a compressed entry could otherwise inflate to gigabytes
_JSON_KEYS = ("format", "architecture", "compile", "training")


# ----------------------------------------------------------------------------- writing


def _json_array(obj):
    return np.frombuffer(json.dumps(obj, allow_nan=False).encode("utf-8"), dtype=np.uint8).copy()


def _file_mode(path):
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fspath(path, name="path"):
    try:
        return os.fspath(path)
    except TypeError:
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}") from None


def _pid_alive(pid):
    """Whether process ``pid`` exists on this machine. Anything uncertain counts as alive
    (so its file is kept): no way to probe (not POSIX), or a process of another user."""
    if os.name != "posix" or pid <= 0:
        return True  # on Windows os.kill(pid, 0) would terminate the process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, OSError):  # e.g. PermissionError: another user's process
        return True
    return True


def _remove_stale_temp_files(folder, name):
    """Delete ``.<name>.<pid>.<random>.tmp`` files in ``folder`` whose writer ``pid`` no longer
    exists (saves to ``name`` killed midway). Files of live processes, which may be mid-save,
    and anything else are left alone; failures are ignored (cleaning never fails a save)."""
    pattern = re.compile(r"\." + re.escape(name) + r"\.(\d{1,10})\.[^.]+\.tmp")
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
        except OSError:
            pass  # already removed by another process, or not ours to remove


def atomic_savez(path, arrays):
    """``np.savez`` into ``path`` atomically (temp file in the same folder, fsync, rename).

    The file is written exactly at ``path`` (no ``.npz`` is appended). The temporary file is
    ``.<name>.<pid>.<random>.tmp`` beside ``path``, ``pid`` being this process's id. A failed
    save removes its own temporary file; a process killed mid-save cannot, so each save first
    removes the temporary files of ``path`` whose writer process no longer exists. Those of live
    processes (which may be saving to ``path`` right now) are never touched; a stale file whose
    pid a new process has taken stays until that process ends. Pids are checked on this machine
    only, so do not save to one target from several machines sharing a folder.
    """
    path = _fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save {path}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot save {path}: it is a directory")
    mode = _file_mode(path)
    name = os.path.basename(path)
    _remove_stale_temp_files(folder, name)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (POSIX; not possible on Windows)
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def save_model(model, path, include_optimizer=True):
    """Write ``model`` (architecture, weights and, if compiled, loss/optimizer config and
    optimizer state, plus the generators' states) to ``path``.

    Parameters
    ----------
    model : cnn.Sequential
        Must be built.
    path : str or os.PathLike
        Written as given (conventionally ending in ``.npz``).
    include_optimizer : bool, default True
        Also store the loss, the optimizer and its state (needed to resume training).

    Notes
    -----
    The write is atomic (:func:`atomic_savez`): a temporary ``.<name>.<pid>.<random>.tmp``
    beside ``path``, fsync'ed, then ``os.replace``'d over it, so ``path`` is always either the
    old file or the new one. A save killed midway leaves its temporary file behind; the next
    save to ``path`` deletes it once its process is gone (never one of a live process).
    """
    if not callable(getattr(model, "get_config", None)) or not hasattr(model, "named_buffers"):
        raise TypeError(f"model must be a cnn model (cnn.Sequential), got {type(model).__name__}")
    if not model.built:
        raise ValueError("save needs a built model: pass input_shape= to Sequential or call "
                         "model.build(input_shape)")
    V.boolean(include_optimizer, "include_optimizer")
    kind = _registry.MODELS.key_of(type(model))
    if kind is None:
        raise ValueError(f"model class {type(model).__qualname__} is not a registered model "
                         f"format; save a cnn.Model or cnn.Sequential")
    arrays = {"format": _json_array({"format": kind, "version": FORMAT["version"]}),
              "architecture": _json_array(model.get_config())}
    for key, a in model.named_params() + model.named_buffers():
        arrays[f"layers.{key}"] = a
    if include_optimizer and model.loss is not None and model.optimizer is not None:
        arrays["compile"] = _json_array({"loss": model.loss.get_config(),
                                         "optimizer": model.optimizer.get_config()})
        for key, value in model.optimizer.state_dict().items():
            arrays[f"optimizer.{key}"] = np.asarray(value)
    arrays["training"] = _json_array({"model_rng": model.rng.bit_generator.state,
                                      "fit": model.train_state})
    atomic_savez(path, arrays)


# ----------------------------------------------------------------------------- reading


class _Reader:
    """Reads arrays out of an open npz, turning every failure into a ValueError naming ``path``."""

    def __init__(self, npz, path):
        self.npz, self.path = npz, path

    def error(self, message):
        return ValueError(f"{self.path}: {message}")

    def header(self, key):
        """``(shape, dtype)`` from the ``.npy`` header of ``key``, read without its data.

        The header must describe exactly the bytes the archive entry holds, so a tampered
        header cannot make ``np.load`` allocate what the file does not contain.
        """
        name = key + ".npy"
        fmt = np.lib.format
        try:
            info = self.npz.zip.getinfo(name)
            with self.npz.zip.open(info) as f:
                version = fmt.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = fmt.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = fmt.read_array_header_2_0(f)
                else:
                    raise ValueError(f".npy format version {version} is not supported")
                offset = f.tell()
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError,
                TypeError, SyntaxError) as exc:
            raise self.error(f"cannot read array {key!r}: {exc}") from None
        if dtype.hasobject:
            raise self.error(f"array {key!r} has dtype object; refusing it")
        count = 1
        for d in shape:
            count *= int(d)
        if count * dtype.itemsize != info.file_size - offset:
            raise self.error(f"array {key!r}: its header promises shape {tuple(shape)} of {dtype} "
                             f"({count * dtype.itemsize} bytes) but the archive entry holds "
                             f"{info.file_size - offset} data bytes (truncated or tampered)")
        return tuple(int(d) for d in shape), dtype

    def array(self, key, shape=None, dtype=None):
        """The array ``key``; with ``shape``/``dtype`` given, these are checked from the
        header before any data is read."""
        got_shape, got_dtype = self.header(key)
        if shape is not None and got_shape != tuple(shape):
            raise self.error(f"array {key!r} has shape {got_shape}, the architecture wants {tuple(shape)}")
        if dtype is not None and got_dtype != dtype:
            raise self.error(f"array {key!r} has dtype {got_dtype}, the architecture wants {dtype}")
        try:
            a = self.npz[key]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError,
                MemoryError) as exc:
            raise self.error(f"cannot read array {key!r}: {exc}") from None
        if a.dtype.hasobject:
            raise self.error(f"array {key!r} has dtype object; refusing it")
        return a

    def json(self, key):
        shape, dtype = self.header(key)
        if int(np.prod(shape, dtype=object)) * dtype.itemsize > _MAX_JSON_BYTES:
            raise self.error(f"{key!r} is a JSON document of {int(np.prod(shape, dtype=object)) * dtype.itemsize} "
                             f"bytes, more than the {_MAX_JSON_BYTES} a cnn model file ever needs")
        a = self.array(key)
        try:
            if a.dtype == np.uint8 and a.ndim == 1:
                text = a.tobytes().decode("utf-8")
            elif a.dtype.kind == "U" and a.ndim in (0, 1) and a.size == 1:
                text = str(a.reshape(()))
            else:
                raise self.error(f"{key!r} must be JSON as a 1-D uint8 array, got dtype {a.dtype}, shape {a.shape}")
            return json.loads(text, parse_constant=_reject_constant)
        except (UnicodeDecodeError, json.JSONDecodeError, _BadConstant) as exc:
            raise self.error(f"{key!r} does not hold valid JSON: {exc}") from None


class _BadConstant(ValueError):
    pass


def _reject_constant(name):
    raise _BadConstant(f"non-standard JSON constant {name}")


def _open(path):
    try:
        npz = np.load(path, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable cnn model file (.npz): {exc}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not a cnn model file: it holds a single array, wanted an .npz archive")
    return npz


def load_model(path, compile=True):
    """Read a model written by :func:`save_model` / :meth:`cnn.Sequential.save`.

    Parameters
    ----------
    path : str or os.PathLike
    compile : bool, default True
        Restore the loss, the optimizer and its state when the file has them.

    Returns
    -------
    cnn.Sequential
        Built, with the saved weights (and compiled, with the optimizer state, when saved so);
        ``model.rng`` and ``model.train_state`` as they were, so ``fit(...,
        initial_epoch=...)`` continues the saved run exactly.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not an npz, truncated or tampered file, missing or unexpected arrays (all listed),
        shapes or dtypes that do not match the architecture, object arrays, bad JSON.
    """
    path = _fspath(path)
    V.boolean(compile, "compile")
    with _open(path) as npz:
        r = _Reader(npz, path)
        keys = set(npz.files)
        for required in ("format", "architecture"):
            if required not in keys:
                raise r.error(f"missing array {required!r}: not a cnn model file "
                              f"(arrays present: {sorted(keys)[:10]})")
        fmt = r.json("format")
        if not isinstance(fmt, dict) or fmt.get("format") not in _registry.MODELS:
            raise r.error(f"'format' must name a model kind ({_registry.MODELS.names()}) and "
                          f"version {FORMAT['version']}, got {V.short_repr(fmt)}")
        if fmt.get("version") != FORMAT["version"]:
            raise r.error(f"file format version {fmt.get('version')!r} is not supported "
                          f"(this library reads version {FORMAT['version']})")
        architecture = r.json("architecture")
        model_cls = _registry.MODELS.lookup(fmt["format"], "model format")
        expected = _expected_params(r, model_cls, architecture)
        has_compile = "compile" in keys
        opt_keys = {k for k in keys if k.startswith("optimizer.")}
        known = set(_JSON_KEYS) | set(expected) | (opt_keys if has_compile else set())
        missing = sorted(set(expected) - keys)
        unexpected = sorted(keys - known)
        if missing or unexpected:
            raise r.error(f"arrays do not match the architecture: missing {missing}, unexpected {unexpected}")

        # Everything is checked against the architecture before the model allocates anything,
        # so a tampered architecture cannot ask for more memory than the file's own arrays.
        dtype = np.dtype(architecture["dtype"])
        weights = []
        for key, shape in expected.items():
            a = r.array(key, shape, dtype)
            if not np.isfinite(a).all():
                raise r.error(f"array {key!r} holds NaN/inf values")
            weights.append(a)
        try:
            model = model_cls.from_config(architecture)
        except ValueError as exc:
            raise r.error(f"bad 'architecture': {exc}") from None
        named = model.named_params()
        model.set_weights(weights)

        if has_compile and compile:
            config = r.json("compile")
            if not isinstance(config, dict) or set(config) != {"loss", "optimizer"}:
                raise r.error(f"'compile' must be a dict with keys 'loss' and 'optimizer', got {config!r}")
            try:  # as saved, even when the output cannot feed the loss (train_step says so)
                model.compile(losses.get(config["loss"]), optimizers.get(config["optimizer"]),
                              check_output=False)
            except (TypeError, ValueError) as exc:
                raise r.error(f"bad 'compile': {exc}") from None
            state = {k[len("optimizer."):]: r.array(k, *_optimizer_entry(r, k, named))
                     for k in sorted(opt_keys)}
            _check_optimizer_state(r, state, [p for _, p in named])
            try:
                model.optimizer.load_state_dict(state)
            except (TypeError, ValueError) as exc:
                raise r.error(f"bad optimizer state: {exc}") from None

        if "training" in keys:
            _restore_training(r, model, r.json("training"))
    return model


def _expected_params(r, model_cls, architecture):
    """``{"layers.<i>.<name>": shape}`` of the parameters and buffers the architecture needs,
    layer by layer (parameters, then buffers), computed from shapes alone."""
    if not isinstance(architecture, dict):
        raise r.error(f"bad 'architecture': wanted a dict, got {type(architecture).__name__}")
    try:
        if np.dtype(architecture.get("dtype")) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {architecture['dtype']!r}")
        shapes = model_cls.state_shapes(architecture)
    except (TypeError, ValueError, KeyError) as exc:
        raise r.error(f"bad 'architecture': {exc}") from None
    return {f"layers.{key}": shape for key, shape in shapes}


_BUFFER_KEY = re.compile(r"^([A-Za-z_]\w*)\.(\d+)$")


def _optimizer_entry(r, key, named):
    """The (shape, dtype) an ``optimizer.<key>`` array must have, or (None, None) when only
    its size can be bounded (by its header, against the archive entry)."""
    m = _BUFFER_KEY.match(key[len("optimizer."):])
    if m and int(m.group(2)) < len(named):
        p = named[int(m.group(2))][1]
        return p.shape, p.dtype
    if key in ("optimizer.iterations", "optimizer.epoch"):
        shape, _ = r.header(key)
        if shape != ():
            raise r.error(f"array {key!r} must be a scalar, got shape {shape}")
    return None, None


def _check_optimizer_state(r, state, params):
    """Every per-parameter buffer must fit the parameter it belongs to."""
    for key, a in state.items():
        m = _BUFFER_KEY.match(key)
        if not m:
            continue
        i = int(m.group(2))
        if i >= len(params):
            raise r.error(f"optimizer state 'optimizer.{key}' refers to parameter {i}, "
                          f"the model has {len(params)}")
        if a.shape != params[i].shape or a.dtype != params[i].dtype:
            raise r.error(f"optimizer state 'optimizer.{key}' has shape {a.shape} and dtype {a.dtype}, "
                          f"parameter {i} has shape {params[i].shape} and dtype {params[i].dtype}")
        if not np.isfinite(a).all():
            raise r.error(f"optimizer state 'optimizer.{key}' holds NaN/inf values")


def _set_rng_state(r, rng, state, what):
    if not isinstance(state, dict) or state.get("bit_generator") != type(rng.bit_generator).__name__:
        raise r.error(f"bad 'training': {what} must be a {type(rng.bit_generator).__name__} state, got {state!r}")
    try:
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise r.error(f"bad 'training': {what}: {exc}") from None


def _restore_training(r, model, training):
    if not isinstance(training, dict) or set(training) != {"model_rng", "fit"}:
        raise r.error(f"'training' must be a dict with keys 'model_rng' and 'fit', got {training!r}")
    _set_rng_state(r, model.rng, training["model_rng"], "model_rng")
    fit = training["fit"]
    if fit is None:
        return
    if not isinstance(fit, dict) or set(fit) != {"epoch", "seed", "shuffle_rng"}:
        raise r.error(f"bad 'training': 'fit' must have keys epoch, seed, shuffle_rng, got {fit!r}")
    epoch, seed = fit["epoch"], fit["seed"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise r.error(f"bad 'training': epoch must be an int >= 0, got {epoch!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise r.error(f"bad 'training': seed must be null or an int >= 0, got {seed!r}")
    _set_rng_state(r, np.random.default_rng(), fit["shuffle_rng"], "shuffle_rng")
    model.train_state = {"epoch": epoch, "seed": seed, "shuffle_rng": fit["shuffle_rng"]}
