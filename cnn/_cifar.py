"""The CIFAR-10 binary version: ``data_batch_1.bin`` ... ``data_batch_5.bin``, ``test_batch.bin``.

Each file is a sequence of 10,000 records of 3,073 bytes: one label byte (0-9), then the
32x32 image as 1,024 red, 1,024 green and 1,024 blue bytes, each plane in row-major order
(so a record reshapes straight to CHW). Nothing here unpickles: the "Python version" of
CIFAR-10 (``data_batch_1`` without ``.bin``) is a pickle, which can run arbitrary code when
loaded, and is refused. :func:`cnn.datasets.load_cifar10` is the public door.
"""
import pathlib

import numpy as np

__all__ = ["RECORD_BYTES", "TEST_FILE", "TRAIN_FILES", "read_cifar10_dir", "write_cifar10_file"]

RECORD_BYTES = 1 + 3 * 32 * 32
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
# The official files hold 10,000 records each; smaller files (subsets, tests) are accepted,
# larger ones refused before anything is read.
MAX_RECORDS = 10_000
_PICKLE_PROTOCOL_2 = b"\x80\x02"


def _refuse_pickles(directory):
    pickles = [n for n in TRAIN_FILES + (TEST_FILE,) if (directory / n[:-4]).exists()]
    if pickles:
        raise ValueError(
            f"{directory} holds the Python (pickle) version of CIFAR-10 ({', '.join(pickles)}) "
            f"and not the binary one; cnn never unpickles data files, since loading a pickle can "
            f"run arbitrary code. Download the binary version (cifar-10-binary.tar.gz, files "
            f"data_batch_1.bin ... data_batch_5.bin and test_batch.bin) instead")
    raise FileNotFoundError(
        f"{directory} does not hold the CIFAR-10 binary files: wanted "
        f"{', '.join(TRAIN_FILES)} and {TEST_FILE} (from cifar-10-binary.tar.gz)")


def _read_file(path):
    """``(x uint8 (N, 3, 32, 32), y int64 (N,))`` of one .bin file, its size checked first."""
    size = path.stat().st_size
    if size == 0 or size % RECORD_BYTES or size // RECORD_BYTES > MAX_RECORDS:
        raise ValueError(
            f"{path}: {size} bytes is not a CIFAR-10 binary batch, which holds up to "
            f"{MAX_RECORDS:,} records of {RECORD_BYTES} bytes (1 label + 3,072 pixels): a "
            f"multiple of {RECORD_BYTES}, at most {MAX_RECORDS * RECORD_BYTES:,} bytes")
    with open(path, "rb") as f:
        head = f.read(2)
        if head == _PICKLE_PROTOCOL_2:
            raise ValueError(f"{path} starts like a Python pickle, not a CIFAR-10 binary batch; "
                             f"cnn never unpickles data files")
        raw = np.frombuffer(head + f.read(size - 2), dtype=np.uint8)
    if raw.size != size:
        raise ValueError(f"{path}: expected {size} bytes, read {raw.size} (file changed?)")
    records = raw.reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise ValueError(f"{path}: record {bad} has label {labels[bad]}; CIFAR-10 labels are 0-9")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def read_cifar10_dir(path):
    """``(x_train, y_train), (x_test, y_test)`` from a directory of the binary files (the
    folder ``cifar-10-batches-bin`` of the archive); x float32 (N, 3, 32, 32) in [0, 1],
    y int64 (N,). FileNotFoundError names what is missing, ValueError what is wrong."""
    directory = pathlib.Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"CIFAR-10 directory {directory} "
                                f"{'is not a directory' if directory.exists() else 'does not exist'}")
    if (directory / "cifar-10-batches-bin").is_dir():
        directory = directory / "cifar-10-batches-bin"
    names = TRAIN_FILES + (TEST_FILE,)
    if not all((directory / n).is_file() for n in names):
        missing = [n for n in names if not (directory / n).is_file()]
        if len(missing) < len(names):
            raise FileNotFoundError(f"{directory}: CIFAR-10 binary files missing: {', '.join(missing)}")
        _refuse_pickles(directory)
    parts = [_read_file(directory / n) for n in TRAIN_FILES]
    x_test, y_test = _read_file(directory / TEST_FILE)
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_train, x_test = x_train.astype(np.float32), x_test.astype(np.float32)
    x_train /= np.float32(255)  # division, as the MNIST loader: x / 255 rounded once
    x_test /= np.float32(255)
    return (x_train, y_train), (x_test, y_test)


def write_cifar10_file(path, x, y):
    """Write uint8 images (N, 3, 32, 32) and labels (N,) as one CIFAR-10 binary batch (for
    tests and subsets); atomic: a temporary file in the same folder, fsync, rename."""
    import os
    import tempfile
    x = np.asarray(x)
    y = np.asarray(y)
    if x.dtype != np.uint8 or x.shape[1:] != (3, 32, 32) or y.shape != x.shape[:1]:
        raise ValueError(f"x must be uint8 (N, 3, 32, 32) and y (N,), got {x.dtype} {x.shape} "
                         f"and {y.shape}")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise ValueError("labels must be in 0-9")
    records = np.concatenate([y.astype(np.uint8)[:, None], x.reshape(len(x), -1)], axis=1)
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(records.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
