"""Tests of sparsetopo.data: the IDX format, the offline datasets, and the downloader against
a real HTTP server on 127.0.0.1 (no network needed)."""

from __future__ import annotations

import gzip
import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from sparsetopo.data import (
    FILES,
    Dataset,
    DownloadFailed,
    fetch,
    load_dataset,
    md5_of,
    read_idx,
    read_images,
    read_labels,
    write_idx,
)
from sparsetopo.data.mnist import read_split
from sparsetopo.errors import SparsetopoError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test reads the user's $SPARSETOPO_DATA or writes into the real ~/.cache."""
    monkeypatch.delenv("SPARSETOPO_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- IDX format

def small_arrays(n_train=30, n_test=12, side=4, seed=1):
    g = np.random.default_rng(seed)
    return {
        FILES[0]: g.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        FILES[1]: (np.arange(n_train) % 10).astype(np.uint8),
        FILES[2]: g.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        FILES[3]: (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }


def write_set(directory: Path, arrays, gz=True) -> dict[str, Path]:
    return {stem: write_idx(directory / (stem + (".gz" if gz else "")), a)
            for stem, a in arrays.items()}


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", "<i4", "f4", "f8"])
def test_idx_round_trip(tmp_path, suffix, dtype):
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    path = write_idx(tmp_path / f"a-idx3{suffix}", array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(path)
    assert back.shape == array.shape and back.dtype.kind == array.dtype.kind
    np.testing.assert_array_equal(back, array)


def test_idx_header_bytes_and_deterministic_gzip(tmp_path):
    labels = np.array([3, 1, 4], dtype=np.uint8)
    plain = write_idx(tmp_path / "labels", labels).read_bytes()
    assert plain == bytes.fromhex("00000801 00000003 030104".replace(" ", ""))
    images = np.zeros((2, 3, 4), np.uint8)
    assert write_idx(tmp_path / "img", images).read_bytes()[:16] == bytes.fromhex(
        "00000803" "00000002" "00000003" "00000004")
    first = md5_of(write_idx(tmp_path / "x.gz", labels))
    assert md5_of(write_idx(tmp_path / "y.gz", labels)) == first  # no timestamp in gzip


def test_read_images_and_labels_accept_real_layouts(tmp_path):
    arrays = small_arrays()
    paths = write_set(tmp_path, arrays, gz=False)
    images, labels = read_split(paths[FILES[0]], paths[FILES[1]])
    assert images.dtype == np.uint8 and images.shape == (30, 4, 4)
    np.testing.assert_array_equal(labels, arrays[FILES[1]])


def test_write_idx_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(SparsetopoError, match="uint16"):
        write_idx(tmp_path / "bad", np.zeros(3, np.uint16))


def _images_payload(n=3, side=4):
    return bytes.fromhex("00000803") + b"".join(v.to_bytes(4, "big") for v in (n, side, side)) \
        + bytes(range(n * side * side))


# name -> (file bytes, reader, words the message must contain)
CORRUPTIONS = {
    "truncated pixels": (_images_payload()[:-10], read_images,
                         "truncated: header declares 3x4x4 = 48 bytes of values but the file holds 38"),
    "truncated pixels gz": (gzip.compress(_images_payload()[:-10]), read_images, "truncated"),
    "truncated gzip stream": (gzip.compress(_images_payload() * 50)[:-30], read_images,
                              "truncated gzip"),
    "garbage gzip": (b"\x1f\x8b" + b"not really gzip data", read_images, "corrupt gzip"),
    "trailing garbage": (_images_payload() + b"xyz", read_images,
                         "trailing garbage: header declares 3x4x4 = 48 bytes"),
    "bad magic": (b"\x12\x34" + _images_payload()[2:], read_images, "bad magic number 0x12340803"),
    "unknown dtype code": (b"\x00\x00\x07\x03" + _images_payload()[4:], read_images, "bad magic"),
    "int32 images": (bytes.fromhex("00000c01 00000002".replace(" ", "")) + bytes(8), read_labels,
                     "dtype code 0x0c"),
    "labels read as images": (bytes.fromhex("00000801 00000002 0102".replace(" ", "")), read_images,
                              "declares 1 dimensions where 3 are expected"),
    "images read as labels": (_images_payload(), read_labels,
                              "declares 3 dimensions where 1 are expected"),
    "too short": (b"\x00\x00", read_images, "too short"),
    "header cut": (_images_payload()[:9], read_images, "truncated: header declares 3 dimensions"),
    "label out of range": (bytes.fromhex("00000801 00000003 010c02".replace(" ", "")), read_labels,
                           "label 12 at index 1 is outside 0..9"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_idx_raises_naming_the_file(tmp_path, case):
    payload, reader, words = CORRUPTIONS[case]
    path = tmp_path / f"corrupt-{case.replace(' ', '-')}.gz"
    path.write_bytes(payload)
    with pytest.raises(SparsetopoError) as info:
        reader(path)
    message = str(info.value)
    assert str(path) in message
    assert words in message


def test_missing_idx_file_names_it(tmp_path):
    with pytest.raises(SparsetopoError, match="nope-idx3-ubyte: no such file"):
        read_images(tmp_path / "nope-idx3-ubyte")


def test_image_label_count_mismatch_names_both_files(tmp_path):
    images = write_idx(tmp_path / "img.gz", np.zeros((5, 2, 2), np.uint8))
    labels = write_idx(tmp_path / "lab.gz", np.zeros(4, np.uint8))
    with pytest.raises(SparsetopoError) as info:
        read_split(images, labels)
    assert str(images) in str(info.value) and str(labels) in str(info.value)
    assert "5 images" in str(info.value) and "4 labels" in str(info.value)


# ------------------------------------------------------------------------ offline datasets

def test_digits_shapes_ranges_and_stratified_split():
    d = load_dataset("digits")
    assert (d.name, d.n_features, d.n_classes) == ("digits", 64, 10)
    assert d.x_train.shape == (1347, 64) and d.x_test.shape == (450, 64)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert 0.0 <= d.x_train.min() and d.x_train.max() == 1.0
    assert set(np.unique(d.y_test)) == set(range(10))
    counts_all = np.bincount(np.concatenate([d.y_train, d.y_test]))
    np.testing.assert_array_equal(np.bincount(d.y_test), np.round(counts_all * 0.25).astype(int))
    assert "load_digits" in d.source


def test_digits_table_is_what_load_digits_returns(monkeypatch):
    """The CSV read without importing scikit-learn, and the fallback when the file is elsewhere."""
    import importlib.util

    from sklearn.datasets import load_digits

    from sparsetopo.data import offline

    x, y = load_digits(return_X_y=True)
    table = offline._digits_table()
    np.testing.assert_array_equal(table[0], x)
    np.testing.assert_array_equal(table[1], y)
    assert table[0].dtype == x.dtype and table[1].dtype == np.int64
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    fallback = offline._digits_table()
    np.testing.assert_array_equal(fallback[0], x)
    np.testing.assert_array_equal(fallback[1], y)


def test_digits_split_is_seeded():
    a, b, c = load_dataset("digits", seed=3), load_dataset("digits", seed=3), load_dataset("digits", seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_test, c.x_test)
    # train and test partition the 1797 images whatever the seed
    rows = np.concatenate([c.x_train, c.x_test])
    assert len(np.unique(rows, axis=0)) == len(np.unique(np.concatenate([a.x_train, a.x_test]), axis=0))


def test_synthetic_is_deterministic_and_shaped():
    a = load_dataset("synthetic", seed=5, n_train=300, n_test=100)
    b = load_dataset("synthetic", seed=5, n_train=300, n_test=100)
    c = load_dataset("synthetic", seed=6, n_train=300, n_test=100)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.shape == (300, 784) and a.x_test.shape == (100, 784)
    assert a.x_train.dtype == np.float32 and 0 <= a.x_train.min() and a.x_train.max() <= 1
    assert a.y_train.min() >= 0 and a.y_train.max() <= 9
    more = load_dataset("synthetic", seed=5, n_train=600, n_test=100)
    np.testing.assert_array_equal(more.x_test, a.x_test)  # test set independent of n_train
    small = load_dataset("synthetic", n_train=50, n_test=20, n_features=30, n_classes=3)
    assert (small.n_features, small.n_classes) == (30, 3) and small.y_train.max() <= 2


def test_synthetic_is_learnable_by_nearest_centroid():
    d = load_dataset("synthetic", n_train=2000, n_test=500)
    centroids = np.stack([d.x_train[d.y_train == c].mean(0) for c in range(10)])
    predicted = np.argmin(((d.x_test[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (predicted == d.y_test).mean() > 0.6


def test_default_synthetic_size():
    d = load_dataset("synthetic")
    assert d.x_train.shape == (8000, 784) and d.x_test.shape == (2000, 784)


def test_unknown_name_and_option_are_named():
    with pytest.raises(SparsetopoError, match="unknown dataset 'mnits'.*mnist, fashion-mnist, digits, synthetic"):
        load_dataset("mnits")
    with pytest.raises(SparsetopoError, match="'n_train'.*test_fraction"):
        load_dataset("digits", n_train=10)
    with pytest.raises(SparsetopoError, match="n_train=0 is out of range"):
        load_dataset("synthetic", n_train=0)
    with pytest.raises(SparsetopoError, match="test_fraction=1.5"):
        load_dataset("digits", test_fraction=1.5)


def test_limits_first_and_random():
    full = load_dataset("digits")
    first = load_dataset("digits", limit_train=100, limit_test=20)
    np.testing.assert_array_equal(first.x_train, full.x_train[:100])
    assert len(first.x_test) == 20 and "limited to train first 100" in first.source
    r1 = load_dataset("digits", limit_train=100, subset="random", seed=2)
    r2 = load_dataset("digits", limit_train=100, subset="random", seed=2)
    np.testing.assert_array_equal(r1.x_train, r2.x_train)
    assert not np.array_equal(r1.x_train, first.x_train)
    assert len(r1.x_test) == len(full.x_test)
    with pytest.raises(SparsetopoError, match="limit_train=5000 is out of range"):
        load_dataset("digits", limit_train=5000)
    with pytest.raises(SparsetopoError, match="subset='some'"):
        load_dataset("digits", limit_train=10, subset="some")


def test_dataset_value_checks_and_converts():
    d = Dataset("mine", np.zeros((4, 2, 2)), [0, 1, 1, 0], np.ones((2, 4)), [1, 0], n_classes=2)
    assert d.x_train.shape == (4, 4) and d.x_train.dtype == np.float32 and d.y_test.dtype == np.int64
    with pytest.raises(SparsetopoError, match="y_train"):
        Dataset("mine", np.zeros((4, 4)), [0, 1, 2], np.zeros((2, 4)), [0, 1], n_classes=3)
    with pytest.raises(SparsetopoError, match="labels outside 0..1"):
        Dataset("mine", np.zeros((2, 4)), [0, 2], np.zeros((1, 4)), [0], n_classes=2)
    with pytest.raises(SparsetopoError, match="x_train has 4 features but x_test has 3"):
        Dataset("mine", np.zeros((2, 4)), [0, 1], np.zeros((1, 3)), [0], n_classes=2)


# ------------------------------------------------------------- local files and downloading

class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.routes[path]``; a value ``("short", bytes)`` declares the full length
    but sends only half and closes, like a dropped connection."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.server.hits[self.path] = self.server.hits.get(self.path, 0) + 1
        body = self.server.routes.get(self.path)
        if body is None:
            self.send_error(404, "not here")
            return
        short = isinstance(body, tuple)
        data = body[1] if short else body
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2] if short else data)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.routes, server.hits = {}, {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def mirror(http_server, tmp_path):
    """A fresh set of small MNIST-format files; helpers to serve them under mirror paths."""
    http_server.routes.clear()
    http_server.hits.clear()
    arrays = small_arrays()
    blobs = {f"{stem}.gz": write_idx(tmp_path / "src" / f"{stem}.gz", a).read_bytes()
             for stem, a in arrays.items()}
    base = f"http://127.0.0.1:{http_server.server_address[1]}"

    class Mirror:
        server = http_server
        md5 = {name: hashlib.md5(blob).hexdigest() for name, blob in blobs.items()}

        @staticmethod
        def serve(prefix, kind="good"):
            for name, blob in blobs.items():
                if kind == "good":
                    http_server.routes[f"/{prefix}/{name}"] = blob
                elif kind == "wrong":
                    http_server.routes[f"/{prefix}/{name}"] = blob[:-4] + b"oops"
                elif kind == "short":
                    http_server.routes[f"/{prefix}/{name}"] = ("short", blob)
            return f"{base}/{prefix}/"

        @staticmethod
        def hits(prefix):
            return sum(n for path, n in http_server.hits.items() if path.startswith(f"/{prefix}/"))

    Mirror.arrays = arrays
    Mirror.blobs = blobs
    return Mirror


def check_loaded(d: Dataset, arrays):
    assert d.x_train.shape == (30, 16) and d.x_test.shape == (12, 16)
    np.testing.assert_allclose(d.x_train, arrays[FILES[0]].reshape(30, 16) / 255, rtol=1e-6)
    np.testing.assert_array_equal(d.y_test, arrays[FILES[3]])


def test_download_success_then_cache_hit(mirror, tmp_path):
    cache = tmp_path / "cache"
    seen = []
    url = mirror.serve("good")
    d = load_dataset("mnist", cache_dir=cache, mirrors=[url], md5=mirror.md5,
                     progress=lambda name, done, total: seen.append((name, done, total)))
    check_loaded(d, mirror.arrays)
    assert "downloaded" in d.source and str(cache / "mnist") in d.source
    assert sorted(p.name for p in files_under(cache)) == sorted(mirror.blobs)
    assert (FILES[0] + ".gz", len(mirror.blobs[FILES[0] + ".gz"]),
            len(mirror.blobs[FILES[0] + ".gz"])) in seen
    assert mirror.hits("good") == 4
    again = load_dataset("mnist", cache_dir=cache, mirrors=[url], md5=mirror.md5)
    assert mirror.hits("good") == 4 and again.source.endswith("(cache)")
    check_loaded(again, mirror.arrays)


def test_default_cache_dir_is_xdg(mirror, tmp_path):
    d = load_dataset("mnist", mirrors=[mirror.serve("good")], md5=mirror.md5)
    assert str(tmp_path / "xdg-cache" / "sparsetopo" / "mnist") in d.source


def test_wrong_md5_on_first_mirror_falls_back_to_second(mirror, tmp_path):
    mirrors = [mirror.serve("bad", "wrong"), mirror.serve("good")]
    d = load_dataset("mnist", cache_dir=tmp_path / "c", mirrors=mirrors, md5=mirror.md5)
    check_loaded(d, mirror.arrays)
    assert mirror.hits("bad") == 4 and mirror.hits("good") == 4
    for path in files_under(tmp_path / "c"):
        assert md5_of(path) == mirror.md5[path.name]


def test_cut_connection_falls_back(mirror, tmp_path):
    mirrors = [mirror.serve("short", "short"), mirror.serve("good")]
    d = load_dataset("mnist", cache_dir=tmp_path / "c", mirrors=mirrors, md5=mirror.md5)
    check_loaded(d, mirror.arrays)
    assert mirror.hits("short") == 4


def test_all_mirrors_failing_explains_manual_setup_and_leaves_nothing(mirror, tmp_path):
    cache = tmp_path / "c"
    mirrors = [mirror.serve("bad", "wrong"), mirror.serve("gone", "none")]
    with pytest.raises(DownloadFailed) as info:
        load_dataset("mnist", cache_dir=cache, mirrors=mirrors, md5=mirror.md5)
    message = str(info.value)
    assert isinstance(info.value, SparsetopoError)
    assert "md5" in message and "HTTP 404" in message
    for stem in FILES:
        assert f"{stem}.gz" in message
    assert "--data-dir" in message and "$SPARSETOPO_DATA" in message
    assert str(cache / "mnist") in message
    assert len(info.value.attempts) == 2
    assert files_under(cache) == []  # no partial or temporary file


def test_interrupted_download_leaves_no_file(mirror, tmp_path):
    def kill(name, done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch(FILES[0] + ".gz", tmp_path / "c", [mirror.serve("good")], None, progress=kill)
    assert files_under(tmp_path / "c") == []


def test_truncated_cached_file_is_fetched_again(mirror, tmp_path):
    cache = tmp_path / "c"
    write_set(cache / "mnist", mirror.arrays)
    broken = cache / "mnist" / (FILES[0] + ".gz")
    broken.write_bytes(broken.read_bytes()[:40])
    url = mirror.serve("good")
    d = load_dataset("mnist", cache_dir=cache, mirrors=[url], md5=mirror.md5)
    check_loaded(d, mirror.arrays)
    assert mirror.server.hits == {f"/good/{FILES[0]}.gz": 1}
    assert md5_of(broken) == mirror.md5[broken.name]


def test_no_download_gives_manual_instructions(mirror, tmp_path):
    with pytest.raises(SparsetopoError, match="download=False.*--data-dir DIR"):
        load_dataset("mnist", cache_dir=tmp_path / "c", mirrors=[mirror.serve("good")],
                     md5=mirror.md5, download=False)
    assert mirror.hits("good") == 0


def test_search_order_data_dir_then_env(tmp_path, monkeypatch):
    arrays = small_arrays()
    other = small_arrays(seed=9)
    write_set(tmp_path / "mine" / "mnist", arrays, gz=False)  # per-dataset subfolder, plain
    write_set(tmp_path / "env", other)                          # the directory itself, gzipped
    monkeypatch.setenv("SPARSETOPO_DATA", str(tmp_path / "env"))
    d = load_dataset("mnist", data_dir=tmp_path / "mine", download=False)
    check_loaded(d, arrays)
    assert d.source == f"{tmp_path / 'mine' / 'mnist'} (data_dir)"
    e = load_dataset("mnist", download=False)
    check_loaded(e, other)
    assert e.source == f"{tmp_path / 'env'} ($SPARSETOPO_DATA)"
    limited = load_dataset("mnist", download=False, limit_train=7)
    assert limited.x_train.shape == (7, 16)


def test_user_dir_problems_are_errors(tmp_path):
    with pytest.raises(SparsetopoError, match="data_dir=.*missing-dir.*is not a directory"):
        load_dataset("mnist", data_dir=tmp_path / "missing-dir")
    partial = tmp_path / "partial"
    paths = write_set(partial, small_arrays())
    paths[FILES[3]].unlink()
    with pytest.raises(SparsetopoError, match="only part of mnist: t10k-labels-idx1-ubyte missing"):
        load_dataset("mnist", data_dir=partial)
    # a corrupt user file is reported, never replaced
    write_idx(partial / FILES[3], np.full(12, 11, np.uint8))
    with pytest.raises(SparsetopoError, match=f"{FILES[3]}: label 11 at index 0"):
        load_dataset("mnist", data_dir=partial)
    mismatch = tmp_path / "mismatch"
    arrays = small_arrays()
    arrays[FILES[1]] = arrays[FILES[1]][:-1]
    write_set(mismatch, arrays)
    with pytest.raises(SparsetopoError, match="30 images but .* 29 labels"):
        load_dataset("mnist", data_dir=mismatch)


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_debian_fashion_mnist(tmp_path):
    d = load_dataset("fashion-mnist", cache_dir=tmp_path / "empty", download=False)
    assert d.x_train.shape == (60000, 784) and d.x_test.shape == (10000, 784)
    assert d.y_train.min() == 0 and d.y_train.max() == 9 and d.y_test.max() == 9
    assert np.bincount(d.y_train).tolist() == [6000] * 10
    assert d.x_train.dtype == np.float32 and d.x_train.max() == 1.0 and d.x_train.min() == 0.0
    assert str(DEBIAN_FASHION) in d.source


def test_cut_connection_is_caught_even_without_md5(mirror, tmp_path):
    with pytest.raises(DownloadFailed, match="got .* of .* bytes|IncompleteRead"):
        fetch(FILES[0] + ".gz", tmp_path / "c", [mirror.serve("short", "short")], None)
    assert files_under(tmp_path / "c") == []
