"""Datasets: IDX files, the bundled MNIST subset, any MNIST-layout directory, downloads.

The IDX format (LeCun et al.) is a big-endian header followed by the raw array:

    bytes 0-1   zero
    byte  2     element type: 0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int, 0x0D float, 0x0E double
    byte  3     number of dimensions, ndim >= 1
    4 * ndim    the dimensions, unsigned 32-bit big-endian
    ...         the elements, big-endian, C order

Files may be gzip-compressed; compression is detected from the content (the gzip magic
bytes), not from the file name.

Public functions
----------------
read_idx, write_idx
    One IDX file to and from a NumPy array.
load_mnist
    The bundled data (5,000 MNIST training images, 500 per class, and the official 10,000 test
    images), or any MNIST-layout directory, optionally downloading the full MNIST set into it.
load_idx_dir
    Any directory laid out like MNIST (MNIST, Fashion-MNIST, EMNIST, ...).
download_mnist
    Fetch the four official MNIST files from a list of mirrors, verifying MD5 and content.
load_cifar10
    The CIFAR-10 binary version (``data_batch_1.bin`` ... ``test_batch.bin``); never a pickle.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import importlib.resources
import os
import pathlib
import shutil
import stat
import struct
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from cnn import _cifar

from . import _atomic

__all__ = [
    "read_idx",
    "write_idx",
    "load_mnist",
    "load_idx_dir",
    "load_cifar10",
    "download_mnist",
    "default_data_dir",
    "DataNotFoundError",
    "DownloadError",
    "MNIST_MIRRORS",
    "MNIST_MD5",
]

# --------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------

# IDX type code -> big-endian NumPy dtype of the stored elements.
_IDX_CODE_TO_DTYPE = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# NumPy dtype (native byte order) -> IDX type code.
_DTYPE_TO_IDX_CODE = {d.newbyteorder("="): c for c, d in _IDX_CODE_TO_DTYPE.items()}
_IDX_TYPE_NAMES = {0x08: "ubyte", 0x09: "byte", 0x0B: "short", 0x0C: "int", 0x0D: "float",
                   0x0E: "double"}

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 22          # 4 MiB per read: memory use follows the data actually present
_MAX_DIM = (1 << 32) - 1  # dimensions are unsigned 32-bit
_MAX_NDIM = 64            # NumPy's limit (IDX's own is 255)


def _as_path(path, name: str = "path") -> pathlib.Path:
    if isinstance(path, (str, os.PathLike)):
        return pathlib.Path(path)
    raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")


def _is_gzip(path: pathlib.Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _read_exact(f, n: int, path: pathlib.Path, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError(
            f"{path}: truncated IDX file: expected {n} bytes of {what}, found {len(data)}")
    return data


def _read_idx_stream(f, path: pathlib.Path) -> np.ndarray:
    magic = f.read(4)
    if len(magic) < 4:
        raise ValueError(
            f"{path}: not an IDX file: {len(magic)} bytes, shorter than the 4-byte magic number")
    zero0, zero1, code, ndim = magic
    if zero0 != 0 or zero1 != 0:
        raise ValueError(
            f"{path}: not an IDX file: magic number {magic.hex()} must start with two zero "
            f"bytes (e.g. 00000803 for 3-D ubyte)")
    if code not in _IDX_CODE_TO_DTYPE:
        known = ", ".join(f"0x{c:02X} {n}" for c, n in _IDX_TYPE_NAMES.items())
        raise ValueError(
            f"{path}: unknown IDX element type code 0x{code:02X} in magic number "
            f"{magic.hex()}; wanted one of {known}")
    if ndim == 0 or ndim > _MAX_NDIM:
        raise ValueError(f"{path}: IDX header declares {ndim} dimensions; wanted 1 to {_MAX_NDIM} "
                         f"(NumPy's limit)")
    shape = struct.unpack(f">{ndim}I", _read_exact(f, 4 * ndim, path, "dimensions"))
    dtype = _IDX_CODE_TO_DTYPE[code]
    # Python ints: no overflow, and nothing is allocated from the header's promise.
    count = 1
    for d in shape:
        count *= d
    expected = count * dtype.itemsize

    # Read in chunks until the promised size plus one byte (to detect trailing data): a
    # hostile header costs at most the bytes really present, never a giant allocation.
    buf = bytearray()
    while len(buf) <= expected:
        chunk = f.read(min(_CHUNK, expected + 1 - len(buf)))
        if not chunk:
            break
        buf += chunk
    if len(buf) < expected:
        raise ValueError(
            f"{path}: truncated IDX file: header promises shape {shape} of {_IDX_TYPE_NAMES[code]}"
            f" ({expected} data bytes), but only {len(buf)} data bytes follow")
    if len(buf) > expected or f.read(1):
        raise ValueError(
            f"{path}: trailing garbage: header promises shape {shape} of "
            f"{_IDX_TYPE_NAMES[code]} ({expected} data bytes), but more data follows")
    arr = np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)
    if dtype.itemsize == 1:
        return arr  # a writable view of the bytearray: no copy
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path) -> np.ndarray:
    """Read one IDX file, gzip-compressed or raw.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Gzip compression is detected from its first two bytes, whatever its name.

    Returns
    -------
    ndarray
        The array, in native byte order, with the shape of the header and the dtype of its
        type code: uint8 (0x08), int8 (0x09), int16 (0x0B), int32 (0x0C), float32 (0x0D),
        float64 (0x0E).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Naming the file, if the magic number is wrong (non-zero first bytes, unknown type code,
        zero dimensions), the data is shorter than the header promises, more data follows it,
        or the gzip stream is truncated or corrupt. The size promised by the header is checked
        against the data actually present before anything of that size is allocated.
    """
    path = _as_path(path)
    mode = os.stat(path).st_mode  # FileNotFoundError / PermissionError: the OS's refusals
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{path}: is a directory, not an IDX file")
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path}: not a regular file (a FIFO, device or socket); wanted an IDX file")
    try:
        if _is_gzip(path):
            with gzip.open(path, "rb") as f:
                return _read_idx_stream(f, path)
        with open(path, "rb") as f:
            return _read_idx_stream(f, path)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ValueError(f"{path}: truncated or corrupt gzip data ({exc})") from exc


def write_idx(path, array, compress: bool | None = None) -> pathlib.Path:
    """Write an array as one IDX file.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, written atomically by :func:`cnn._atomic.atomic_write` (a temporary file
        beside it, fsync'ed, then renamed over it; a symlink is followed to its target; a
        directory, FIFO, device or socket is refused).
    array : array_like
        Any shape with ``ndim >= 1`` and every dimension ``< 2**32``; dtype uint8, int8,
        int16, int32, float32 or float64 (the IDX types). Other dtypes are refused rather than
        silently converted.
    compress : bool, optional
        Gzip the file. Default: if and only if the name ends in ``.gz``.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = _as_path(path)
    arr = np.asarray(array)
    if arr.ndim == 0:
        raise ValueError(f"array must have at least 1 dimension for IDX file {path}, got a 0-d "
                         f"array")
    key = arr.dtype.newbyteorder("=")
    if key not in _DTYPE_TO_IDX_CODE:
        raise TypeError(
            f"array dtype {arr.dtype} cannot be stored in IDX file {path}; wanted one of "
            f"uint8, int8, int16, int32, float32, float64")
    if any(d > _MAX_DIM for d in arr.shape):
        raise ValueError(f"array shape {arr.shape} has a dimension >= 2**32; IDX file {path} "
                         f"stores dimensions as unsigned 32-bit")
    if compress is None:
        compress = path.name.endswith(".gz")
    code = _DTYPE_TO_IDX_CODE[key]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = np.ascontiguousarray(arr, dtype=_IDX_CODE_TO_DTYPE[code]).reshape(-1).view(np.uint8)

    def write(raw):
        if compress:
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
                f.write(header)
                f.write(data)
        else:
            raw.write(header)
            raw.write(data)

    _atomic.atomic_write(path, write)
    return path


def _unlink_quietly(p) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


# --------------------------------------------------------------------------------------------
# MNIST-layout directories
# --------------------------------------------------------------------------------------------

class DataNotFoundError(FileNotFoundError, ValueError):
    """A data directory or file is missing (both a FileNotFoundError and a ValueError)."""


# stem -> stems tried in order (the full set first, then the bundled subset's name)
_SPLIT_STEMS = {"train": ("train", "train-5k"), "t10k": ("t10k",)}


def _candidates(prefix: str, stem: str, kind: str) -> list[str]:
    ndim = 3 if kind == "images" else 1
    names = []
    for base in (f"{prefix}{stem}-{kind}-idx{ndim}-ubyte",   # the official names
                 f"{prefix}{stem}-{kind}.idx{ndim}-ubyte"):  # a common re-packaging
        names += [base, base + ".gz"]
    return names


def _find(directory: pathlib.Path, names: Sequence[str]) -> pathlib.Path | None:
    for n in names:
        p = directory / n
        if p.is_file():
            return p
    return None


def _locate_split(directory: pathlib.Path, split: str, prefix: str):
    tried_images = []
    for stem in _SPLIT_STEMS[split]:
        img_names = _candidates(prefix, stem, "images")
        tried_images += img_names
        images = _find(directory, img_names)
        if images is None:
            continue
        lab_names = _candidates(prefix, stem, "labels")
        labels = _find(directory, lab_names)
        if labels is None:
            raise DataNotFoundError(
                f"{directory}: found images {images.name} but no labels file; looked for "
                f"{', '.join(lab_names)}")
        return images, labels
    raise DataNotFoundError(
        f"{directory}: no {split} images file; looked for {', '.join(tried_images)}")


def _images_to_float(images: np.ndarray, path: pathlib.Path) -> np.ndarray:
    if images.ndim != 3:
        raise ValueError(f"{path}: images must be 3-D (N, H, W), got shape {images.shape}")
    if images.dtype == np.uint8:
        x = images.astype(np.float32)
        x /= np.float32(255)  # division, not a reciprocal multiply: 255 maps to exactly 1
    elif images.dtype.kind == "f":
        x = images.astype(np.float32)
    else:
        raise ValueError(f"{path}: images must be ubyte (scaled to [0, 1]) or float, got "
                         f"{images.dtype}")
    return x.reshape(images.shape[0], 1, images.shape[1], images.shape[2])


def _labels_to_int(labels: np.ndarray, path: pathlib.Path, max_classes: int | None = None) -> np.ndarray:
    if labels.ndim != 1:
        raise ValueError(f"{path}: labels must be 1-D (N,), got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: labels must be integers, got {labels.dtype}")
    y = labels.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"{path}: labels must be non-negative class ids, found {y.min()}")
    if max_classes is not None and y.size and y.max() >= max_classes:
        i = int(np.argmax(y >= max_classes))
        raise ValueError(f"{path}: label {int(y[i])} (item {i}) asks for {int(y.max()) + 1} classes, "
                         f"more than max_classes={max_classes}; raise max_classes (the CLI's "
                         f"--max-classes) if the data really has that many")
    return y


def _load_pair(images_path: pathlib.Path, labels_path: pathlib.Path, max_classes=None):
    y = _labels_to_int(read_idx(labels_path), labels_path, max_classes)  # small: checked first
    images = read_idx(images_path)
    x = _images_to_float(images, images_path)
    del images
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{images_path} holds {x.shape[0]} images but {labels_path} holds "
                         f"{y.shape[0]} labels; wanted equal counts")
    return x, y


def _check_max_classes(max_classes):
    if max_classes is None:
        return None
    if isinstance(max_classes, bool) or not isinstance(max_classes, (int, np.integer)):
        raise TypeError(f"max_classes must be None or an int >= 1, got {max_classes!r}")
    if max_classes < 1:
        raise ValueError(f"max_classes must be None or an int >= 1, got {max_classes}")
    return int(max_classes)


def load_idx_dir(path, prefix: str = "", max_classes: int | None = None):
    """Load an MNIST-layout directory of IDX files.

    The directory must hold, raw or gzipped (``.gz``), ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``
    (also accepted: the bundled subset's ``train-5k-...`` names and ``...-images.idx3-ubyte``).
    MNIST, Fashion-MNIST and KMNIST unpack to exactly this; EMNIST prefixes its names, e.g.
    ``prefix="emnist-digits-"`` (EMNIST images are stored transposed: use
    ``x.transpose(0, 1, 3, 2)`` to see them upright).

    Parameters
    ----------
    path : str or os.PathLike
        The directory.
    prefix : str, optional
        Put in front of every file name looked for.
    max_classes : int >= 1, optional
        Refuse a labels file with a class id ``>= max_classes`` (a model sized from the labels
        would otherwise be as large as one hostile label asks). Default: no bound.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        ``x``: float32 of shape (N, 1, H, W); ubyte images are scaled to [0, 1], float images
        are kept as they are. ``y``: int64 of shape (N,), class ids >= 0. Order as in the files.

    Raises
    ------
    DataNotFoundError
        (a FileNotFoundError and a ValueError) if the directory or a file is missing; the
        message names the names looked for.
    ValueError
        Naming the file, if it is not valid IDX, images are not 3-D, labels are not 1-D
        integers (or reach ``max_classes``), or images and labels differ in count.
    """
    directory = _as_path(path)
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    max_classes = _check_max_classes(max_classes)
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise DataNotFoundError(f"data directory {directory} {what}")
    train = _locate_split(directory, "train", prefix)
    test = _locate_split(directory, "t10k", prefix)
    return _load_pair(*train, max_classes), _load_pair(*test, max_classes)


def load_cifar10(path):
    """Load the CIFAR-10 binary version from a directory.

    Parameters
    ----------
    path : str or os.PathLike
        A directory holding ``data_batch_1.bin`` ... ``data_batch_5.bin`` and
        ``test_batch.bin`` (the archive's ``cifar-10-batches-bin``, or its parent). Each file
        is checked by size before it is read: whole records of 1 label byte + 3,072 pixel
        bytes (CHW order), at most 10,000 of them.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        ``x``: float32 of shape (N, 3, 32, 32) in [0, 1]; ``y``: int64 of shape (N,), 0-9.

    Raises
    ------
    DataNotFoundError
        If the directory or a file is missing.
    ValueError
        For the Python version of CIFAR-10 (``data_batch_1`` without ``.bin``): it is a
        pickle, and loading a pickle can run arbitrary code, so cnn refuses it. Also for a
        file whose size or labels are not CIFAR-10's.
    """
    try:
        return _cifar.read_cifar10_dir(_as_path(path))
    except FileNotFoundError as exc:
        raise DataNotFoundError(str(exc)) from None


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",  # the original host: often down or 403, so last
)
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

_MAX_DOWNLOAD_BYTES = 1 << 30  # a server streaming without end must not fill the disk
_RETRY_BACKOFF = 0.5           # seconds, doubled per retry of one mirror
_USER_AGENT = "cnn-datasets/0.1 (Python urllib)"


class DownloadError(OSError):
    """No mirror delivered a file with the expected checksum and content."""


def _offline() -> bool:
    return os.environ.get("CNN_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def default_data_dir() -> pathlib.Path:
    """Where ``load_mnist(download=True)`` keeps full MNIST without a ``data_dir``.

    ``$CNN_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/cnn/mnist`` (``~/.cache/cnn/mnist``).
    """
    env = os.environ.get("CNN_DATA_DIR")
    if env:
        return pathlib.Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(cache) / "cnn" / "mnist"


def _md5(path: pathlib.Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_mirrors(mirrors) -> list[str]:
    if isinstance(mirrors, (str, bytes)) or not isinstance(mirrors, Sequence):
        raise TypeError(f"mirrors must be a sequence of base URLs, got {type(mirrors).__name__}")
    out = []
    for m in mirrors:
        if not isinstance(m, str):
            raise TypeError(f"mirrors must hold str URLs, got {type(m).__name__}")
        scheme = urllib.parse.urlsplit(m).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"mirror {m!r} must be an http:// or https:// URL")
        out.append(m if m.endswith("/") else m + "/")
    if not out:
        raise ValueError("mirrors is empty; wanted at least one base URL")
    return out


def _check_checksums(checksums) -> dict[str, str]:
    if not isinstance(checksums, Mapping):
        raise TypeError(f"checksums must be a mapping file name -> MD5 hex digest, got "
                        f"{type(checksums).__name__}")
    out = {}
    for name, md5 in checksums.items():
        if (not isinstance(name, str) or not name or name in (".", "..")
                or "/" in name or "\\" in name):
            raise ValueError(f"checksums key {name!r} must be a plain file name")
        if (not isinstance(md5, str) or len(md5) != 32
                or any(c not in "0123456789abcdef" for c in md5.lower())):
            raise ValueError(f"checksums[{name!r}] must be a 32-digit MD5 hex digest, got {md5!r}")
        out[name] = md5.lower()
    if not out:
        raise ValueError("checksums is empty; wanted at least one file name")
    return out


def _valid_file(path: pathlib.Path, md5: str) -> bool:
    return path.is_file() and _md5(path) == md5


def _fetch_once(url: str, dest_dir: pathlib.Path, name: str, timeout: float) -> tuple[str, str]:
    """Stream url into a temp file in dest_dir; return (temp path, md5 hex digest)."""
    req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{name}.", suffix=".part")
    try:
        h = hashlib.md5(usedforsecurity=False)
        size = 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=timeout) as resp:
            while True:
                block = resp.read(1 << 16)
                if not block:
                    break
                size += len(block)
                if size > _MAX_DOWNLOAD_BYTES:
                    raise DownloadError(f"{url}: more than {_MAX_DOWNLOAD_BYTES} bytes, gave up")
                h.update(block)
                out.write(block)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return tmp, h.hexdigest()


def _retriable(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429
    return isinstance(exc, (urllib.error.URLError, TimeoutError, ConnectionError,
                            http.client.HTTPException))


def _download_one(name: str, md5: str, dest: pathlib.Path, mirrors: list[str], timeout: float,
                  retries: int, verbose: bool) -> None:
    failures = []
    for base in mirrors:
        url = base + name
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(_RETRY_BACKOFF * 2 ** (attempt - 1))
            if verbose:
                print(f"cnn.datasets: downloading {url}", file=sys.stderr, flush=True)
            try:
                tmp, got = _fetch_once(url, dest, name, timeout)
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{url}: {exc}")
                if _retriable(exc) and attempt < retries:
                    continue
                break  # next mirror
            try:
                if got != md5:
                    failures.append(f"{url}: MD5 {got}, wanted {md5}")
                    break  # this mirror serves something else: next mirror
                try:
                    read_idx(tmp)  # gzip readable, IDX header consistent with the data
                except ValueError as exc:
                    failures.append(f"{url}: MD5 matches but not a valid IDX file ({exc})")
                    break
                # the verified download becomes the file by the one atomic writer (symlinks
                # followed, FIFOs and devices refused, fsync'ed)
                with open(tmp, "rb") as src:
                    _atomic.atomic_write(dest / name, lambda f: shutil.copyfileobj(src, f, 1 << 20))
                return
            finally:
                if tmp is not None:
                    _unlink_quietly(tmp)
    raise DownloadError(f"could not download {name} into {dest}:\n  " + "\n  ".join(failures))


def download_mnist(dest, mirrors=None, timeout: float = 30, retries: int = 2,
                   checksums: Mapping[str, str] | None = None,
                   verbose: bool = False) -> pathlib.Path:
    """Fetch the four official MNIST files into ``dest``, verified.

    Each file is downloaded to a temporary file in ``dest``, its MD5 and IDX content checked,
    then renamed into place; a file that fails either check is deleted and the next mirror is
    tried. Files already in ``dest`` with the right MD5 are not fetched again, so once complete
    this works offline. HTTPS certificates are always verified.

    Parameters
    ----------
    dest : str or os.PathLike
        Directory to fill; created if missing.
    mirrors : sequence of str, optional
        Base URLs tried in order (file name appended). Default :data:`MNIST_MIRRORS`: the
        PyTorch S3 copy, the CVDF Google Cloud copy, then yann.lecun.com.
    timeout : float
        Seconds allowed per network operation.
    retries : int
        Further attempts on the same mirror after a network error or HTTP 5xx/429 (a 404/403 or
        a wrong checksum moves to the next mirror at once).
    checksums : mapping of str to str, optional
        File name -> MD5 hex digest; replaces :data:`MNIST_MD5` (the torchvision digests) and
        so chooses the files fetched (e.g. Fashion-MNIST, with its own mirrors).
    verbose : bool
        Print one line per file fetched to stderr.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    DataNotFoundError
        If ``CNN_OFFLINE=1`` is set and a file is missing or invalid; the message names the
        files and the URLs to get them from.
    DownloadError
        If no mirror delivers a valid file; the message lists every URL tried and why it failed.
    """
    dest = _as_path(dest, "dest")
    mirrors = _check_mirrors(MNIST_MIRRORS if mirrors is None else mirrors)
    checksums = _check_checksums(MNIST_MD5 if checksums is None else checksums)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, got {retries!r}")

    missing = [n for n, md5 in checksums.items() if not _valid_file(dest / n, md5)]
    if not missing:
        return dest
    if _offline():
        raise DataNotFoundError(
            _missing_message(dest, missing, mirrors) + "\nCNN_OFFLINE is set, so nothing was "
            "downloaded; unset it, or place the files there by hand.")
    dest.mkdir(parents=True, exist_ok=True)
    for name in missing:
        _download_one(name, checksums[name], dest, mirrors, timeout, retries, verbose)
    return dest


def _missing_message(dest: pathlib.Path, names: Sequence[str], mirrors: Sequence[str]) -> str:
    lines = [f"{dest}: missing or invalid (wrong MD5) MNIST file(s): {', '.join(names)}",
             "get them from any of:"]
    lines += [f"  {m}{n}" for m in mirrors for n in names]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# MNIST
# --------------------------------------------------------------------------------------------

_BUNDLED = {
    "train": ("train-5k-images-idx3-ubyte.gz", "train-5k-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _load_bundled(max_classes=None):
    root = importlib.resources.files("cnn.data")
    out = []
    for split in ("train", "test"):
        img_name, lab_name = _BUNDLED[split]
        with importlib.resources.as_file(root / img_name) as img, \
                importlib.resources.as_file(root / lab_name) as lab:
            out.append(_load_pair(pathlib.Path(img), pathlib.Path(lab), max_classes))
    return tuple(out)


def load_mnist(data_dir=None, download: bool = False, max_classes: int | None = None):
    """Load MNIST: the bundled subset, or a directory, optionally downloading full MNIST.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        None (default, with ``download=False``): the data shipped with the package, i.e. 5,000
        MNIST training images (500 per class, **sorted by class**: shuffle before batching)
        and the official 10,000 test images. Otherwise an MNIST-layout directory, read with
        :func:`load_idx_dir`.
    download : bool
        Fetch the missing official MNIST files into ``data_dir`` first (see
        :func:`download_mnist`; ``data_dir=None`` means :func:`default_data_dir`). Files present
        with the right MD5 are not fetched again. With False, a missing file is an error that
        names the files and where to download them.
    max_classes : int >= 1, optional
        As in :func:`load_idx_dir`: refuse class ids ``>= max_classes``.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        ``x``: float32 of shape (N, 1, 28, 28) in [0, 1]; ``y``: int64 class ids of shape (N,),
        in file order.

    Examples
    --------
    The bundled set needs no download:

    >>> import numpy as np, cnn
    >>> (x, y), (x_test, y_test) = cnn.datasets.load_mnist()
    >>> x.shape, x.dtype, y.shape, y.dtype
    ((5000, 1, 28, 28), dtype('float32'), (5000,), dtype('int64'))
    >>> x_test.shape, float(x.min()), float(x.max())
    ((10000, 1, 28, 28), 0.0, 1.0)
    >>> np.bincount(y)                                   # 500 training images per digit
    array([500, 500, 500, 500, 500, 500, 500, 500, 500, 500])
    """
    if not isinstance(download, bool):
        raise TypeError(f"download must be a bool, got {type(download).__name__}")
    max_classes = _check_max_classes(max_classes)
    if data_dir is None and not download:
        return _load_bundled(max_classes)
    directory = default_data_dir() if data_dir is None else _as_path(data_dir, "data_dir")
    if download:
        try:
            return load_idx_dir(directory, max_classes=max_classes)  # complete already: no network
        except ValueError:  # missing or damaged (DataNotFoundError is a ValueError too)
            download_mnist(directory, verbose=True)  # replaces files with a wrong MD5
        return load_idx_dir(directory, max_classes=max_classes)
    try:
        return load_idx_dir(directory, max_classes=max_classes)
    except DataNotFoundError as exc:
        raise DataNotFoundError(
            f"{exc}\n{_missing_message(directory, list(MNIST_MD5), MNIST_MIRRORS)}\n"
            f"or call load_mnist(data_dir=..., download=True).") from exc
