"""Saving and loading models as ``.npz`` files: no pickle, atomic writes, strict loads.

One file holds everything a resumed run needs to continue bit for bit:

==========================  ===============================================================
key                         content
==========================  ===============================================================
``format``                  JSON ``{"format": kind, "version": 1}``, the kind registered for
                            the model class: ``"cnn.Sequential"`` or ``"cnn.Model"``
``architecture``            JSON of the model's ``get_config()`` (layers, for a graph model
                            also its calls, input shape, seed, dtype, name)
``layers.<i>.<name>``       parameter or buffer ``<name>`` (``weight``, ``bias``,
                            ``running_mean``...) of layer ``i``
``compile``                 JSON ``{"loss": ..., "optimizer": ...}`` configs (if compiled)
``optimizer.<key>``         :meth:`cnn.optimizers.Optimizer.state_dict` (momentum, Adam
                            moments, step count, epoch)
``training``                JSON: the model generator's state (dropout), and where the last
                            ``fit`` stopped: epoch, seed and the shuffling generator's state
==========================  ===============================================================

JSON documents are stored as 1-D ``uint8`` arrays of UTF-8 bytes; every entry is stored
uncompressed. Files are read with ``allow_pickle=False``; anything that does not match the
architecture (compressed or oversized entries, missing or unexpected arrays, wrong shapes or
dtypes, object arrays, bad JSON, non-finite weights) is a ValueError that names the file and
the problem, found before the data of any array is read. Writes go through
:func:`cnn._atomic.atomic_write` (a temporary file in the target's folder, fsync'ed, renamed
over the target; symlinks followed, FIFOs and devices refused): a crash mid-save leaves the old
file whole. Nothing that :func:`load_model` would refuse is ever written
(:class:`UnsavableModelError`).
"""

import json
import os
import re
import reprlib
import stat
import zipfile

import numpy as np

from . import _atomic, _registry, losses, optimizers
from . import _validation as V

__all__ = ["save_model", "load_model", "atomic_savez", "UnsavableModelError"]

FORMAT = {"format": "cnn.Sequential", "version": 1}
_MAX_JSON_BYTES = 16 << 20  # a compressed entry could otherwise inflate to gigabytes
_JSON_KEYS = ("format", "architecture", "compile", "training")


# ----------------------------------------------------------------------------- writing


def _json_array(obj):
    return np.frombuffer(json.dumps(obj, allow_nan=False).encode("utf-8"), dtype=np.uint8).copy()


def atomic_savez(path, arrays):
    """``np.savez`` (uncompressed) into ``path`` atomically, by :func:`cnn._atomic.atomic_write`.

    The file is written exactly at ``path`` (no ``.npz`` is appended); a symlink is followed to
    its target, which is replaced atomically in its own folder; a directory, FIFO, device or
    socket at ``path`` is refused before anything is written. The temporary file is
    ``.<name>.<pid>.<random>.tmp`` beside the target, ``pid`` being this process's id. A failed
    save removes its own temporary file; a process killed mid-save cannot, so each save first
    removes the temporary files of the target whose writer process no longer exists. Those of
    live processes (which may be saving right now) are never touched. Pids are checked on this
    machine only, so do not save to one target from several machines sharing a folder.
    """
    _atomic.atomic_write(path, lambda f: np.savez(f, **arrays), verb="save")


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

    Raises
    ------
    UnsavableModelError
        (a ValueError) A parameter or the optimizer state is not finite (see
        :func:`unsavable_reason`): nothing is written, the file at ``path`` stays as it was.

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
    problem = unsavable_reason(model, include_optimizer)
    if problem:
        shown = V.path(path)
        raise UnsavableModelError(f"cannot save {shown}: {problem}; cnn never writes a file that "
                                  f"load_model would refuse (the file at {shown}, if any, is unchanged)")
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


class UnsavableModelError(ValueError):
    """:func:`save_model` refused a model that :func:`load_model` could not read back
    (non-finite parameters or optimizer state); nothing was written."""


def unsavable_reason(model, include_optimizer=True):
    """Why :func:`save_model` would refuse ``model`` (a message naming what), or None.

    The rule is :func:`load_model`'s: parameters must be finite, and so must the optimizer
    state (Adam's ``v`` also non-negative, counters within int64), so every file written loads.
    """
    for key, p in model.named_params() + model.named_buffers():
        if not np.isfinite(p).all():
            return f"parameter {key} holds {int(np.count_nonzero(~np.isfinite(p)))} NaN/inf value(s)"
    if include_optimizer and model.loss is not None and model.optimizer is not None:
        return model.optimizer.state_problem()
    return None


# ----------------------------------------------------------------------------- reading


_MAX_MESSAGE = 2000      # characters of a load error; what is quoted is cut shorter still
_MAX_JSON_DEPTH = 32     # cnn's own documents nest 5 deep
_MAX_COUNTER = 2 ** 62   # epochs, steps and seeds in a file: far beyond any run, far within int64
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 80
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist = 3, 8, 8


def short(obj):
    """``repr(obj)``, cut to about 100 characters (values quoted in error messages)."""
    try:
        return _SHORT.repr(obj)
    except (ValueError, RecursionError):  # e.g. an int too long for str()
        return f"<{type(obj).__name__}>"


def cap(message, limit=_MAX_MESSAGE):
    """``message`` cut to ``limit`` characters, saying how much was cut."""
    if len(message) <= limit:
        return message
    return message[:limit] + f"... [{len(message) - limit} more characters]"


class _Reader:
    """Reads arrays out of an open npz, turning every failure into a ValueError naming ``path``."""

    def __init__(self, npz, path):
        self.npz, self.path = npz, path

    def error(self, message):
        return ValueError(cap(f"{self.path}: {message}"))

    def check_entries(self, file_size):
        """Every archive entry is stored (never compressed: cnn never writes that), declares
        the same size stored and inflated, and lies within the file: so no entry can make a
        read allocate more than the file holds. Checked before any entry is read."""
        for info in self.npz.zip.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise self.error(f"archive entry {short(info.filename)} is compressed (method "
                                 f"{info.compress_type}); cnn model files hold only uncompressed "
                                 f"entries, so this file was not written by cnn")
            if info.compress_size != info.file_size or info.header_offset + info.compress_size > file_size:
                raise self.error(f"archive entry {short(info.filename)} declares {info.file_size} "
                                 f"bytes ({info.compress_size} stored at offset {info.header_offset}) "
                                 f"in a file of {file_size} bytes (truncated or tampered)")

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
                TypeError, SyntaxError, MemoryError, RecursionError) as exc:
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
        if not (a.dtype == np.uint8 and a.ndim == 1) and not (a.dtype.kind == "U" and a.ndim in (0, 1)
                                                              and a.size == 1):
            raise self.error(f"{key!r} must be JSON as a 1-D uint8 array, got dtype {a.dtype}, shape {a.shape}")
        try:
            text = a.tobytes().decode("utf-8") if a.dtype == np.uint8 else str(a.reshape(()))
            doc = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, a NaN, a 5,000-digit int
            raise self.error(f"{key!r} does not hold valid JSON: {type(exc).__name__}: {exc}") from None
        if _json_depth(doc) > _MAX_JSON_DEPTH:
            raise self.error(f"{key!r} nests more than {_MAX_JSON_DEPTH} levels deep; a cnn model "
                             f"file never does")
        return doc


def _json_depth(doc):
    """The nesting depth of a parsed JSON document (without recursion)."""
    depth, stack = 0, [(doc, 1)]
    while stack:
        obj, d = stack.pop()
        if isinstance(obj, (dict, list)):
            depth = max(depth, d)
            if depth > _MAX_JSON_DEPTH:
                return depth
            stack.extend((v, d + 1) for v in (obj.values() if isinstance(obj, dict) else obj))
    return depth


class _BadConstant(ValueError):
    pass


def _reject_constant(name):
    raise _BadConstant(f"non-standard JSON constant {name}")


def _open(path):
    """``(npz, file size)``; only regular files are opened (a FIFO would block the load)."""
    st = os.stat(path)  # the OS's own refusals (no such file, permissions) stay OSErrors
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"{path}: is a directory, not a cnn model file")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: not a regular file (a FIFO, device or socket); cnn model "
                         f"files are regular .npz files")
    try:
        npz = np.load(path, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError, MemoryError) as exc:
        raise ValueError(cap(f"{path}: not a readable cnn model file (.npz): {exc}")) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not a cnn model file: it holds a single array, wanted an .npz archive")
    return npz, st.st_size


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
    OSError
        The OS's own refusals: no such file (FileNotFoundError), permissions, a directory.
    ValueError
        Naming the file (the message capped at about 2,000 characters): not a regular file,
        not an npz, compressed entries (cnn never writes them), truncated or tampered file,
        missing or unexpected arrays (all listed), shapes or dtypes that do not match the
        architecture (checked before any array is read), object arrays, bad or too deeply
        nested JSON, non-finite weights, tampered optimizer or RNG state.

    Examples
    --------
    Run in a scratch folder: this writes ``tiny.npz``.

    >>> import numpy as np, cnn
    >>> from cnn import layers
    >>> model = cnn.Sequential([layers.Flatten(), layers.Dense(3, activation="softmax")],
    ...                        input_shape=(1, 4, 4), seed=0)
    >>> model.save("tiny.npz")                       # weights (npz) + architecture (JSON), no pickle
    >>> again = cnn.load_model("tiny.npz")
    >>> x = np.random.default_rng(0).random((2, 1, 4, 4), dtype=np.float32)
    >>> bool(np.array_equal(again.predict(x), model.predict(x)))
    True
    """
    path = V.path(path)
    V.boolean(compile, "compile")
    npz, size = _open(path)
    with npz:
        r = _Reader(npz, path)
        r.check_entries(size)
        keys = set(npz.files)
        for required in ("format", "architecture"):
            if required not in keys:
                raise r.error(f"missing array {required!r}: not a cnn model file "
                              f"(arrays present: {sorted(keys)[:10]})")
        fmt = r.json("format")
        if not isinstance(fmt, dict) or fmt.get("format") not in _registry.MODELS:
            raise r.error(f"'format' must be a model kind ({_registry.MODELS.names()}) and "
                          f"version {FORMAT['version']}, got {V.short_repr(fmt)}")
        if fmt.get("version") != FORMAT["version"]:
            raise r.error(f"file format version {short(fmt.get('version'))} is not supported "
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
        except (TypeError, ValueError) as exc:
            raise r.error(f"bad 'architecture': {exc}") from None
        named = model.named_params()
        model.set_weights(weights)

        if has_compile and compile:
            config = r.json("compile")
            if not isinstance(config, dict) or set(config) != {"loss", "optimizer"}:
                raise r.error(f"'compile' must be a dict with keys 'loss' and 'optimizer', got {short(config)}")
            try:  # as saved, even when the output cannot feed the loss (train_step says so)
                model.compile(losses.get(config["loss"]), optimizers.get(config["optimizer"]),
                              check_output=False)
            except (TypeError, ValueError) as exc:
                raise r.error(f"bad 'compile': {exc}") from None
            allowed = {f"optimizer.{b}.{i}" for b in model.optimizer._buffers for i in range(len(named))}
            allowed |= {"optimizer.iterations", "optimizer.epoch"}
            for key in sorted(opt_keys - allowed):  # refused from the names alone, before any is read
                m = _BUFFER_KEY.match(key[len("optimizer."):])
                if m and m.group(1) in model.optimizer._buffers:
                    raise r.error(f"optimizer state {short(key)} refers to parameter {m.group(2)}, "
                                  f"the model has {len(named)}")
            if opt_keys - allowed:
                raise r.error(f"unexpected optimizer state for {type(model.optimizer).__name__}: "
                              f"{short(sorted(opt_keys - allowed))}")
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
        raise r.error(f"bad 'training': {what} must be a {type(rng.bit_generator).__name__} state, "
                      f"got {short(state)}")
    try:
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
        raise r.error(f"bad 'training': {what}: {exc}") from None


def _restore_training(r, model, training):
    if not isinstance(training, dict) or set(training) != {"model_rng", "fit"}:
        raise r.error(f"'training' must be a dict with keys 'model_rng' and 'fit', got {short(training)}")
    _set_rng_state(r, model.rng, training["model_rng"], "model_rng")
    fit = training["fit"]
    if fit is None:
        return
    if not isinstance(fit, dict) or set(fit) != {"epoch", "seed", "shuffle_rng"}:
        raise r.error(f"bad 'training': 'fit' must have keys epoch, seed, shuffle_rng, got {short(fit)}")
    epoch, seed = fit["epoch"], fit["seed"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= _MAX_COUNTER:
        raise r.error(f"bad 'training': epoch must be an int in [0, 2**62], got {short(epoch)}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed <= _MAX_COUNTER):
        raise r.error(f"bad 'training': seed must be null or an int in [0, 2**62], got {short(seed)}")
    _set_rng_state(r, np.random.default_rng(), fit["shuffle_rng"], "shuffle_rng")
    model.train_state = {"epoch": epoch, "seed": seed, "shuffle_rng": fit["shuffle_rng"]}
