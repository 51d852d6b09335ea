"""cnn.datasets.load_cifar10 on binary files the tests write: layout (label byte, CHW
pixels), scaling, size checks before reading, the pickle version refused, --data-dir."""
import pickle

import numpy as np
import pytest

from cnn import datasets
from cnn._cifar import RECORD_BYTES, TEST_FILE, TRAIN_FILES, write_cifar10_file


def _write_set(directory, rng, n=7):
    parts = []
    for name in TRAIN_FILES + (TEST_FILE,):
        x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, size=n)
        write_cifar10_file(directory / name, x, y)
        parts.append((x, y))
    return parts


def test_loads_records_in_order_and_scales(tmp_path, rng):
    parts = _write_set(tmp_path, rng)
    (x, y), (xt, yt) = datasets.load_cifar10(tmp_path)
    assert x.shape == (35, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    assert xt.shape == (7, 3, 32, 32)
    np.testing.assert_array_equal(x, np.concatenate([p[0] for p in parts[:5]]) / np.float32(255))
    np.testing.assert_array_equal(y, np.concatenate([p[1] for p in parts[:5]]))
    np.testing.assert_array_equal(yt, parts[5][1])
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_record_layout_by_hand(tmp_path):
    # one record: label 7, red plane 1s, green 2s, blue 3s except the last blue pixel = 255
    record = bytes([7]) + bytes([1]) * 1024 + bytes([2]) * 1024 + bytes([3]) * 1023 + bytes([255])
    assert len(record) == RECORD_BYTES == 3073
    for name in TRAIN_FILES + (TEST_FILE,):
        (tmp_path / name).write_bytes(record)
    (x, y), _ = datasets.load_cifar10(tmp_path)
    assert y.tolist() == [7] * 5
    assert x[0, 0].max() == x[0, 0].min() == np.float32(1 / 255)
    assert x[0, 1, 5, 5] == np.float32(2 / 255)
    assert x[0, 2, 31, 31] == 1.0 and x[0, 2, 31, 30] == np.float32(3 / 255)


def test_refuses_the_pickle_version(tmp_path):
    for name in TRAIN_FILES + (TEST_FILE,):
        (tmp_path / name[:-4]).write_bytes(pickle.dumps({"data": [1, 2, 3]}))
    with pytest.raises(ValueError, match="pickle.*never unpickles.*arbitrary code"):
        datasets.load_cifar10(tmp_path)


def test_refuses_a_pickle_named_bin(tmp_path, rng):
    _write_set(tmp_path, rng, n=1)
    data = pickle.dumps({"x": bytes(RECORD_BYTES * 2)}, protocol=2)
    data += bytes(-len(data) % RECORD_BYTES)
    (tmp_path / TEST_FILE).write_bytes(data)
    with pytest.raises(ValueError, match="starts like a Python pickle"):
        datasets.load_cifar10(tmp_path)


def test_sizes_are_checked_before_reading(tmp_path, rng):
    _write_set(tmp_path, rng, n=2)
    (tmp_path / TRAIN_FILES[2]).write_bytes(bytes(RECORD_BYTES * 2 - 1))
    with pytest.raises(ValueError, match=r"6145 bytes is not a CIFAR-10 binary batch.*multiple of 3073"):
        datasets.load_cifar10(tmp_path)
    with open(tmp_path / TRAIN_FILES[2], "wb") as f:  # a sparse 10,001-record file
        f.truncate(RECORD_BYTES * 10_001)
    with pytest.raises(ValueError, match="up to 10,000 records"):
        datasets.load_cifar10(tmp_path)


def test_bad_labels_and_missing_files(tmp_path, rng):
    with pytest.raises(datasets.DataNotFoundError, match="does not exist"):
        datasets.load_cifar10(tmp_path / "nope")
    with pytest.raises(datasets.DataNotFoundError, match="does not hold the CIFAR-10 binary files"):
        datasets.load_cifar10(tmp_path)
    _write_set(tmp_path, rng, n=2)
    (tmp_path / TRAIN_FILES[4]).unlink()
    with pytest.raises(datasets.DataNotFoundError, match="missing: data_batch_5.bin"):
        datasets.load_cifar10(tmp_path)
    write_cifar10_file(tmp_path / TRAIN_FILES[4], np.zeros((2, 3, 32, 32), np.uint8), [1, 2])
    raw = bytearray((tmp_path / TEST_FILE).read_bytes())
    raw[RECORD_BYTES] = 10
    (tmp_path / TEST_FILE).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="record 1 has label 10"):
        datasets.load_cifar10(tmp_path)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        datasets.load_cifar10(3)


def test_train_cli_data_dir_accepts_cifar(tmp_path, rng):
    from cnn import train
    sub = tmp_path / "cifar-10-batches-bin"
    sub.mkdir()
    _write_set(sub, rng, n=3)
    assert train._is_cifar10_dir(tmp_path) and train._is_cifar10_dir(sub)
    args = train._parser().parse_args(["--data-dir", str(tmp_path)])
    (x, _), (xt, _) = train._load_data(args, 0)
    assert x.shape == (15, 3, 32, 32) and xt.shape == (3, 3, 32, 32)
