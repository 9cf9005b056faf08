"""Tests for pyrogen.data: IDX files, built-in data sets, splits, binarization, user files.

No test touches the network: an autouse fixture replaces the URL opener with one that fails the
test, and HOME / PYROGEN_DATA point at empty temporary directories.
"""

import gzip
import hashlib
import io
import math
import tempfile
import urllib.error
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pyrogen.data import (
    DATASETS,
    Dataset,
    binarize_dynamic,
    binarize_static,
    datasets,
    find_idx_files,
    idx,
    load_dataset,
    read_idx,
    sources,
    write_idx,
)
from pyrogen.errors import DataError, PyrogenError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No network, an empty HOME and no PYROGEN_DATA for every test."""

    def no_network(url, timeout):
        raise AssertionError(f"test tried to open {url}")

    monkeypatch.setattr(sources, "_open_url", no_network)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PYROGEN_DATA", raising=False)
    return home


def _rows(x: torch.Tensor, y: torch.Tensor | None = None) -> Counter:
    """Multiset of rows (with their labels), to compare splits with the full data."""
    arr = x.numpy()
    labels = [None] * len(arr) if y is None else y.tolist()
    return Counter((row.tobytes(), label) for row, label in zip(arr, labels))


def _write_fake_idx_set(directory: Path, n_train=30, n_test=12, side=4, gz=True, seed=0):
    """Writes the four IDX files of a tiny MNIST-like data set; returns the arrays."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, array in arrays.items():
        write_idx(directory / f"{stem}{suffix}", array)
    return arrays


# --------------------------------------------------------------------------------------------
# IDX reading and writing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("dtype", IDX_DTYPES, ids=lambda d: np.dtype(d).name)
def test_idx_round_trip(tmp_path, dtype, gz):
    rng = np.random.default_rng(1)
    if np.issubdtype(dtype, np.floating):
        array = rng.normal(size=(3, 4, 5)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=(3, 4, 5), dtype=dtype, endpoint=True)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == gz
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)


@settings(max_examples=60, deadline=None, database=None)
@given(
    array=st.sampled_from(IDX_DTYPES).flatmap(
        lambda dtype: hnp.arrays(
            dtype, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=4)
        )
    ),
    gz=st.booleans(),
)
def test_idx_round_trip_property(array, gz):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("x.gz" if gz else "x")
        write_idx(path, array)
        back = read_idx(path)
    assert back.dtype == array.dtype.newbyteorder("=")
    assert back.shape == array.shape
    assert back.tobytes() == np.ascontiguousarray(array, dtype=back.dtype).tobytes()


def test_idx_header_is_big_endian(tmp_path):
    path = tmp_path / "labels"
    write_idx(path, np.array([1, 258], dtype=np.int32))
    raw = path.read_bytes()
    assert raw[:4] == bytes([0, 0, 0x0C, 1])
    assert raw[4:8] == (2).to_bytes(4, "big")
    assert raw[8:] == (1).to_bytes(4, "big") + (258).to_bytes(4, "big")


def test_gzip_is_detected_by_magic_bytes_not_suffix(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "source.gz", array)
    write_idx(tmp_path / "source", array)
    gz_without_suffix = tmp_path / "compressed-idx"
    gz_without_suffix.write_bytes((tmp_path / "source.gz").read_bytes())
    raw_with_gz_suffix = tmp_path / "raw-idx.gz"
    raw_with_gz_suffix.write_bytes((tmp_path / "source").read_bytes())
    np.testing.assert_array_equal(read_idx(gz_without_suffix), array)
    np.testing.assert_array_equal(read_idx(raw_with_gz_suffix), array)


def _valid_idx_bytes() -> bytes:
    buffer = io.BytesIO()
    header = bytes([0, 0, 0x08, 2]) + (3).to_bytes(4, "big") + (5).to_bytes(4, "big")
    buffer.write(header + bytes(range(15)))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda b: b"\x12\x34" + b[2:], "magic number"),
        (lambda b: b[:2] + b"\x07" + b[3:], "type code 0x07"),
        (lambda b: b[:3] + b"\x00" + b[4:], "0 dimensions"),
        (lambda b: b[:3] + b"\x05" + b[4:], "5 dimensions"),
        (lambda b: b[:-1], "needs 15 data bytes, found 14"),
        (lambda b: b + b"\x00\x00", "needs 15 data bytes, found 17"),
        (lambda b: b[:6], "truncated inside its header"),
        (lambda b: b[:3], "too short"),
        (lambda b: gzip.compress(b)[:-12], "corrupt or truncated gzip"),
        (lambda b: _flip_middle(gzip.compress(b * 50)), "corrupt or truncated gzip"),
    ],
    ids=[
        "bad-magic",
        "type-code",
        "ndim-0",
        "ndim-5",
        "truncated",
        "extra-bytes",
        "truncated-header",
        "too-short",
        "truncated-gzip",
        "corrupt-gzip",
    ],
)
def test_read_idx_rejects_bad_files(tmp_path, mutate, expected):
    path = tmp_path / "bad-idx"
    path.write_bytes(mutate(_valid_idx_bytes()))
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def _flip_middle(blob: bytes) -> bytes:
    middle = len(blob) // 2
    return blob[:middle] + bytes(b ^ 0xFF for b in blob[middle : middle + 8]) + blob[middle + 8 :]


def test_read_idx_missing_file(tmp_path):
    path = tmp_path / "nope"
    with pytest.raises(DataError, match="does not exist") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_write_idx_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(DataError, match="int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))


def test_data_error_is_a_pyrogen_error():
    assert issubclass(DataError, PyrogenError)


# --------------------------------------------------------------------------------------------
# IDX data sets from disk (synthetic files) and the search order
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_idx_dataset_from_root(tmp_path, gz):
    arrays = _write_fake_idx_set(tmp_path / "files", gz=gz)
    test = load_dataset("mnist", "test", root=tmp_path / "files", download=False)
    assert test.x.shape == (12, 16) and test.x.dtype == torch.float32
    assert test.image_shape == (4, 4) and test.num_classes == 10 and test.name == "mnist"
    expected = arrays["t10k-images-idx3-ubyte"].reshape(12, 16).astype(np.float32) / 255
    np.testing.assert_array_equal(test.x.numpy(), expected)
    np.testing.assert_array_equal(test.y.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert test.y.dtype == torch.int64

    splits = {s: load_dataset("mnist", s, root=tmp_path / "files") for s in ("train", "val", "all")}
    assert (len(splits["train"]), len(splits["val"]), len(splits["all"])) == (27, 3, 30)
    assert _rows(splits["train"].x, splits["train"].y) + _rows(
        splits["val"].x, splits["val"].y
    ) == _rows(splits["all"].x, splits["all"].y)


def test_idx_search_order(tmp_path, monkeypatch):
    _write_fake_idx_set(tmp_path / "root", n_train=10)
    _write_fake_idx_set(tmp_path / "env" / "mnist", n_train=20)
    _write_fake_idx_set(tmp_path / "env", n_train=25)
    _write_fake_idx_set(tmp_path / "home" / ".cache" / "pyrogen" / "mnist", n_train=40)
    monkeypatch.setenv("PYROGEN_DATA", str(tmp_path / "env"))
    assert len(load_dataset("mnist", "all", root=tmp_path / "root")) == 10
    assert len(load_dataset("mnist", "all")) == 20
    (tmp_path / "env" / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()  # now incomplete
    assert len(load_dataset("mnist", "all")) == 25
    monkeypatch.delenv("PYROGEN_DATA")
    assert len(load_dataset("mnist", "all")) == 40
    found = find_idx_files("mnist")
    assert set(found) == {"train_images", "train_labels", "test_images", "test_labels"}
    assert found["train_images"].parent == tmp_path / "home" / ".cache" / "pyrogen" / "mnist"


def test_idx_images_and_labels_must_agree(tmp_path):
    arrays = _write_fake_idx_set(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", arrays["train-labels-idx1-ubyte"][:-1])
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "train", root=tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in message
    assert str(tmp_path / "train-labels-idx1-ubyte.gz") in message
    assert "30" in message and "29" in message


def test_idx_arrays_are_cached_in_process(tmp_path, monkeypatch):
    _write_fake_idx_set(tmp_path)
    calls = []
    real_read_idx = idx.read_idx

    def counting_read_idx(path):
        calls.append(Path(path).name)
        return real_read_idx(path)

    monkeypatch.setattr(idx, "read_idx", counting_read_idx)
    load_dataset("mnist", "train", root=tmp_path)
    assert len(calls) == 2
    load_dataset("mnist", "val", root=tmp_path)
    load_dataset("mnist", "all", root=tmp_path)
    assert len(calls) == 2  # train and val come from the cached training arrays
    load_dataset("mnist", "test", root=tmp_path)
    assert len(calls) == 4
    # An edited file is read again (the cache key includes size and modification time).
    _write_fake_idx_set(tmp_path, n_train=33, seed=1)
    assert len(load_dataset("mnist", "all", root=tmp_path)) == 33


def test_missing_mnist_says_how_to_get_it(tmp_path, _isolated):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as info:
        load_dataset("mnist", root=empty, download=False)
    message = str(info.value)
    assert "MNIST not found" in message
    assert str(empty) in message
    assert str(_isolated / ".cache" / "pyrogen" / "mnist") in message
    assert "$PYROGEN_DATA/mnist" in message and "~/.cache/pyrogen/mnist" in message
    assert "train-images-idx3-ubyte.gz" in message
    with pytest.raises(DataError):
        find_idx_files("mnist", root=empty)


def test_missing_fashion_mnist_suggests_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sources._SYSTEM_DIRS, "fashion-mnist", (tmp_path / "not-installed",))
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", download=False)
    message = str(info.value)
    assert "Fashion-MNIST not found" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "$PYROGEN_DATA/fashion-mnist" in message
    assert str(tmp_path / "not-installed") in message


def test_failed_download_raises_instructions_and_leaves_nothing(monkeypatch, _isolated):
    opened = []

    def offline(url, timeout):
        opened.append((url, timeout))
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(sources, "_open_url", offline)
    with pytest.raises(DataError) as info:
        load_dataset("mnist", download=True)
    message = str(info.value)
    assert "$PYROGEN_DATA/mnist" in message and "Name or service not known" in message
    assert opened and opened[0][0].startswith("https://ossci-datasets.s3.amazonaws.com/mnist/")
    assert opened[0][1] <= 30
    cache = _isolated / ".cache" / "pyrogen" / "mnist"
    assert not cache.exists() or list(cache.iterdir()) == []


def _fake_download_source(tmp_path: Path) -> dict[str, bytes]:
    _write_fake_idx_set(tmp_path / "source", n_train=20, n_test=5)
    return {p.name: p.read_bytes() for p in (tmp_path / "source").iterdir()}


def test_download_verifies_md5_and_renames(monkeypatch, tmp_path, _isolated):
    blobs = _fake_download_source(tmp_path)
    checksums = {name: hashlib.md5(blob).hexdigest() for name, blob in blobs.items()}
    monkeypatch.setitem(sources._MD5, "mnist", checksums)
    monkeypatch.setattr(
        sources, "_open_url", lambda url, timeout: io.BytesIO(blobs[url.split("/")[-1]])
    )
    dataset = load_dataset("mnist", "all", download=True)
    assert len(dataset) == 20
    cache = _isolated / ".cache" / "pyrogen" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(blobs)


def test_download_with_wrong_md5_is_deleted(monkeypatch, tmp_path, _isolated):
    blobs = _fake_download_source(tmp_path)
    checksums = {name: "0" * 32 for name in blobs}
    monkeypatch.setitem(sources._MD5, "mnist", checksums)
    monkeypatch.setattr(
        sources, "_open_url", lambda url, timeout: io.BytesIO(blobs[url.split("/")[-1]])
    )
    with pytest.raises(DataError) as info:
        load_dataset("mnist", download=True)
    message = str(info.value)
    first = next(iter(checksums))
    assert first in message and "0" * 32 in message
    assert hashlib.md5(blobs[first]).hexdigest() in message
    cache = _isolated / ".cache" / "pyrogen" / "mnist"
    assert list(cache.iterdir()) == []


def test_known_checksums_cover_all_files():
    for name in ("fashion-mnist", "mnist"):
        assert sorted(sources._MD5[name]) == sorted(f"{s}.gz" for s in sources._IDX_NAMES.values())
        assert all(len(md5) == 32 for md5 in sources._MD5[name].values())


# --------------------------------------------------------------------------------------------
# Fashion-MNIST from the Debian package
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason=f"{FASHION_DIR} is missing")
def test_fashion_mnist_from_system_directory():
    found = find_idx_files("fashion-mnist")
    assert found["train_images"].parent == FASHION_DIR
    splits = {s: load_dataset("fashion-mnist", s) for s in ("train", "val", "test", "all")}
    sizes = {s: tuple(d.x.shape) for s, d in splits.items()}
    assert sizes == {
        "train": (54000, 784),
        "val": (6000, 784),
        "test": (10000, 784),
        "all": (60000, 784),
    }
    for d in splits.values():
        assert d.x.dtype == torch.float32 and d.y.dtype == torch.int64
        assert 0 <= d.x.min().item() and d.x.max().item() <= 1
        assert set(d.y.unique().tolist()) <= set(range(10))
        assert d.image_shape == (28, 28) and d.num_classes == 10 and d.binarize is None
    assert splits["all"].y.bincount().tolist() == [6000] * 10
    assert splits["test"].y.bincount().tolist() == [1000] * 10
    pixels = splits["all"].x * 255
    assert torch.equal(pixels, pixels.round())

    def as_bytes(d: Dataset) -> Counter:
        return _rows((d.x * 255).round().to(torch.uint8), d.y)

    assert as_bytes(splits["train"]) + as_bytes(splits["val"]) == as_bytes(splits["all"])
    again = load_dataset("fashion-mnist", "val")
    assert torch.equal(again.x, splits["val"].x)
    other = load_dataset("fashion-mnist", "val", seed=1)
    assert not torch.equal(other.x, splits["val"].x)


# --------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------


def test_digits_splits():
    from sklearn.datasets import load_digits

    splits = {s: load_dataset("digits", s) for s in ("train", "val", "test", "all")}
    assert {s: tuple(d.x.shape) for s, d in splits.items()} == {
        "train": (1294, 64),
        "val": (144, 64),
        "test": (359, 64),
        "all": (1438, 64),
    }
    assert len(splits["train"]) + len(splits["val"]) + len(splits["test"]) == 1797
    for d in splits.values():
        assert d.image_shape == (8, 8) and d.num_classes == 10 and d.data_dim == 64
        assert 0 <= d.x.min().item() and d.x.max().item() <= 1
        assert torch.equal(d.x * 16, (d.x * 16).round())
    full = load_digits()
    full_x = torch.from_numpy((full.data / 16).astype(np.float32))
    union = sum((_rows(splits[s].x, splits[s].y) for s in ("train", "val", "test")), Counter())
    assert union == _rows(full_x, torch.from_numpy(full.target))
    assert _rows(splits["train"].x) + _rows(splits["val"].x) == _rows(splits["all"].x)


def test_digits_splits_are_deterministic_and_test_ignores_seed():
    first = load_dataset("digits", "val", seed=3)
    assert torch.equal(first.x, load_dataset("digits", "val", seed=3).x)
    assert not torch.equal(first.x, load_dataset("digits", "val", seed=4).x)
    assert torch.equal(load_dataset("digits", "test", seed=3).x, load_dataset("digits", "test").x)
    assert len(load_dataset("digits", "val", val_fraction=0.25)) == round(1438 * 0.25)


@pytest.mark.parametrize("n", [0, 1, 7, 100, 1797])
@pytest.mark.parametrize("seed", [0, 5])
def test_split_indices_partition(n, seed):
    train = datasets._train_val_indices(n, "train", 0.1, seed, "x") if n else np.arange(0)
    parts = [train]
    if round(n * 0.1):
        parts.append(datasets._train_val_indices(n, "val", 0.1, seed, "x"))
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(n))
    if n:
        test, rest = datasets._holdout_indices(n, 0.2, "x")
        assert sorted(np.concatenate([test, rest]).tolist()) == list(range(n))


def test_empty_validation_split_is_an_error():
    with pytest.raises(DataError, match="validation split is empty"):
        load_dataset("digits", "val", val_fraction=0.0)
    assert len(load_dataset("digits", "train", val_fraction=0.0)) == 1438


# --------------------------------------------------------------------------------------------
# Binarization
# --------------------------------------------------------------------------------------------


def _within_standard_errors(mean: torch.Tensor, p: torch.Tensor, n: int, k: float = 5.0):
    tolerance = k * torch.sqrt(p * (1 - p) / n) + 1e-6
    return bool(((mean - p).abs() <= tolerance).all())


def test_dynamic_binarization_converges_to_grey_levels():
    p = torch.linspace(0, 1, 101)
    n = 4000
    generator = torch.Generator().manual_seed(123)
    draws = binarize_dynamic(p.expand(n, -1), generator=generator)
    assert draws.shape == (n, 101) and draws.dtype == torch.float32
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    assert _within_standard_errors(draws.mean(0), p, n)
    assert draws[:, 0].sum() == 0 and draws[:, -1].sum() == n
    # Fresh draws: two calls differ, and the global RNG is used without a generator.
    assert not torch.equal(binarize_dynamic(p), binarize_dynamic(p))
    torch.manual_seed(7)
    a = binarize_dynamic(p)
    torch.manual_seed(7)
    assert torch.equal(a, binarize_dynamic(p))


def test_static_binarization_is_seeded_and_unbiased():
    p = torch.rand(500, 64, generator=torch.Generator().manual_seed(0))
    a = binarize_static(p, seed=11)
    assert set(a.unique().tolist()) <= {0.0, 1.0} and a.dtype == p.dtype
    assert torch.equal(a, binarize_static(p, seed=11))
    assert not torch.equal(a, binarize_static(p, seed=12))
    grey = torch.full((3000, 16), 0.3)
    draws = binarize_static(grey, seed=5)
    assert _within_standard_errors(draws.mean(0), grey[0], 3000)
    many_seeds = torch.stack([binarize_static(p[0], seed=s) for s in range(400)])
    assert _within_standard_errors(many_seeds.mean(0), p[0], 400)


def test_static_binarization_rejects_non_probabilities():
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        binarize_static(torch.tensor([0.5, 1.5]), seed=0)


def test_load_dataset_binarization_modes():
    grey = load_dataset("digits", "train")
    assert grey.binarize is None and len(set(grey.x.unique().tolist())) > 2
    spelled = load_dataset("digits", "train", "none")
    assert spelled.binarize is None and torch.equal(spelled.x, grey.x)

    static = load_dataset("digits", "train", "static", seed=1)
    assert static.binarize == "static"
    assert set(static.x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(static.x, load_dataset("digits", "train", "static", seed=1).x)
    assert not torch.equal(static.x, load_dataset("digits", "train", "static", seed=2).x)
    # Static draws have the grey levels as mean: 5 standard errors of the overall mean.
    p = grey.x
    n = p.numel()
    tolerance = 5 * math.sqrt(float((p * (1 - p)).sum())) / n + 1e-6
    assert abs(float(load_dataset("digits", "train", "static", seed=0).x.mean() - p.mean())) < (
        tolerance
    )

    dynamic = load_dataset("digits", "train", "dynamic", seed=1)
    assert dynamic.binarize == "dynamic"
    assert torch.equal(dynamic.x, load_dataset("digits", "train", seed=1).x)
    assert load_dataset("digits", "all", "dynamic").binarize == "dynamic"

    for split in ("val", "test"):
        first = load_dataset("digits", split, "dynamic", seed=1)
        assert first.binarize == "static"
        assert set(first.x.unique().tolist()) == {0.0, 1.0}
        assert torch.equal(first.x, load_dataset("digits", split, "dynamic", seed=1).x)
        assert torch.equal(first.x, load_dataset("digits", split, "static", seed=1).x)


@pytest.mark.parametrize("bad", ["Static", "bernoulli", "", True])
def test_invalid_binarize_option(bad):
    with pytest.raises(DataError) as info:
        load_dataset("digits", binarize=bad)
    message = str(info.value)
    assert "binarize" in message and "'static'" in message and "'dynamic'" in message
    assert "None" in message and repr(bad) in message


def test_invalid_split_and_val_fraction():
    with pytest.raises(DataError, match="unknown split 'validation'.*train, val, test, all"):
        load_dataset("digits", "validation")
    for bad in (-0.1, 1.0, 2):
        with pytest.raises(DataError, match="val_fraction"):
            load_dataset("digits", val_fraction=bad)


# --------------------------------------------------------------------------------------------
# User files
# --------------------------------------------------------------------------------------------


def _check_user_split_sizes(path: Path, n: int) -> dict[str, Dataset]:
    splits = {s: load_dataset(str(path), s) for s in ("train", "val", "test", "all")}
    assert len(splits["test"]) == round(0.1 * n)
    assert (
        len(splits["train"]) + len(splits["val"]) == len(splits["all"]) == n - len(splits["test"])
    )
    return splits


def test_npy_round_trip(tmp_path):
    x = np.random.default_rng(0).random((50, 6))
    path = tmp_path / "x.npy"
    np.save(path, x)
    splits = _check_user_split_sizes(path, 50)
    union = _rows(splits["all"].x) + _rows(splits["test"].x)
    assert union == _rows(torch.from_numpy(x.astype(np.float32)))
    d = splits["train"]
    assert d.name == str(path) and d.y is None and d.num_classes is None
    assert d.image_shape is None and d.data_dim == 6 and d.x.dtype == torch.float32


def test_npy_uint8_images_are_kept_as_stored_unless_scaled(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (40, 5, 7), dtype=np.uint8)
    path = tmp_path / "images.npy"
    np.save(path, x)
    d = load_dataset(str(path), "all")
    assert d.image_shape == (5, 7) and d.data_dim == 35 and d.scale is None
    stored = torch.from_numpy(x.reshape(40, 35).astype(np.float32))
    assert _rows(d.x) + _rows(load_dataset(str(path), "test").x) == _rows(stored)
    scaled = load_dataset(str(path), "all", scale="255")
    assert scaled.scale == "255" and torch.equal(scaled.x * 255, (scaled.x * 255).round())
    test = load_dataset(str(path), "test", scale="255")
    assert _rows(scaled.x) + _rows(test.x) == _rows(stored / 255)


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.random((30, 4)).astype(np.float32), rng.integers(0, 4, 30)
    y[0] = 6
    path = tmp_path / "xy.npz"
    np.savez(path, x=x, y=y)
    all_ = load_dataset(str(path), "all")
    test = load_dataset(str(path), "test")
    assert all_.num_classes == 7 and all_.y.dtype == torch.int64
    assert _rows(all_.x, all_.y) + _rows(test.x, test.y) == _rows(
        torch.from_numpy(x), torch.from_numpy(y)
    )
    single = tmp_path / "single.npz"
    np.savez(single, x)  # stored as arr_0
    assert len(load_dataset(str(single), "all")) == 27
    ambiguous = tmp_path / "ambiguous.npz"
    np.savez(ambiguous, a=x, b=x)
    with pytest.raises(DataError, match="'x'") as info:
        load_dataset(str(ambiguous))
    assert str(ambiguous) in str(info.value)


def test_csv_with_header_and_label_column(tmp_path):
    rng = np.random.default_rng(2)
    x, y = np.round(rng.random((20, 3)), 3), rng.integers(0, 3, 20)
    path = tmp_path / "table.csv"
    lines = ["a,label,b,c"] + [f"{r[0]},{lab},{r[1]},{r[2]}" for r, lab in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    all_, test = load_dataset(str(path), "all"), load_dataset(str(path), "test")
    assert all_.data_dim == 3 and all_.num_classes == int(y.max()) + 1
    expected = _rows(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y))
    assert _rows(all_.x, all_.y) + _rows(test.x, test.y) == expected


def test_csv_without_header(tmp_path):
    x = np.round(np.random.default_rng(3).random((20, 4)), 4)
    path = tmp_path / "plain.csv"
    np.savetxt(path, x, delimiter=",", fmt="%.4f")
    splits = _check_user_split_sizes(path, 20)
    assert splits["all"].y is None and splits["all"].data_dim == 4
    union = _rows(splits["all"].x) + _rows(splits["test"].x)
    assert union == _rows(torch.from_numpy(x.astype(np.float32)))


def test_csv_with_non_numeric_cells(tmp_path):
    path = tmp_path / "words.csv"
    path.write_text("a,b\n0.1,0.2\n0.3,oops\n")
    with pytest.raises(DataError, match=r"column 'b' is not numeric.*row 1") as info:
        load_dataset(str(path))
    assert str(path) in str(info.value)


def test_pt_round_trip(tmp_path):
    x = torch.rand(30, 2, 3)
    y = torch.arange(30) % 5
    tensor_path, dict_path = tmp_path / "t.pt", tmp_path / "d.pt"
    torch.save(x, tensor_path)
    torch.save({"x": x, "y": y}, dict_path)
    plain = load_dataset(str(tensor_path), "all")
    assert plain.image_shape == (2, 3) and plain.y is None
    labelled_all = load_dataset(str(dict_path), "all")
    labelled_test = load_dataset(str(dict_path), "test")
    assert labelled_all.num_classes == 5
    assert _rows(labelled_all.x, labelled_all.y) + _rows(labelled_test.x, labelled_test.y) == _rows(
        x.reshape(30, 6), y
    )
    odd = tmp_path / "list.pt"
    torch.save([x], odd)
    with pytest.raises(DataError, match="expected a tensor or a dict") as info:
        load_dataset(str(odd))
    assert str(odd) in str(info.value)


def test_nan_rows_are_named(tmp_path):
    x = np.random.default_rng(4).random((100, 3))
    bad_rows = [3, 17, 42, 50, 60, 70, 80, 99]
    x[bad_rows, 1] = np.nan
    x[60, 0] = np.inf
    path = tmp_path / "nan.npy"
    np.save(path, x)
    with pytest.raises(DataError) as info:
        load_dataset(str(path))
    message = str(info.value)
    assert str(path) in message and "rows 3, 17, 42 (and 5 more)" in message

    csv_path = tmp_path / "gap.csv"
    csv_path.write_text("0.1,0.2\n0.3,\n0.5,0.6\n")
    with pytest.raises(DataError, match="row 1") as info:
        load_dataset(str(csv_path))
    assert str(csv_path) in str(info.value)


@pytest.mark.parametrize(
    ("filename", "content"),
    [("empty.npy", None), ("empty.csv", ""), ("header-only.csv", "a,b,c\n")],
)
def test_empty_files(tmp_path, filename, content):
    path = tmp_path / filename
    if content is None:
        np.save(path, np.zeros((0, 5)))
    else:
        path.write_text(content)
    with pytest.raises(DataError, match="contains no rows") as info:
        load_dataset(str(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize("shape", [(10,), (2, 3, 4, 5)])
def test_wrong_shape(tmp_path, shape):
    path = tmp_path / "shape.npy"
    np.save(path, np.zeros(shape))
    with pytest.raises(DataError) as info:
        load_dataset(str(path))
    message = str(info.value)
    assert "expected an array of shape [N, D] or [N, H, W]" in message
    assert f"got shape {shape}" in message and str(path) in message


def test_out_of_range_values_load_as_stored_but_cannot_be_binarized(tmp_path):
    path = tmp_path / "pixels.npy"
    x = np.zeros((10, 4))
    x[2, 1], x[5, 3] = 255.0, -0.5
    np.save(path, x)
    assert load_dataset(str(path), "all").x.max() == 255  # never rescaled unless asked
    with pytest.raises(DataError) as info:
        load_dataset(str(path), binarize="static")
    message = str(info.value)
    assert str(path) in message and "[-0.5, 255]" in message and "--scale minmax" in message
    pixels = tmp_path / "uint8.npy"
    np.save(pixels, np.arange(40, dtype=np.uint8).reshape(10, 4) * 6)
    with pytest.raises(DataError, match="8-bit pixel values.*--scale 255"):
        load_dataset(str(pixels), binarize="dynamic")
    assert load_dataset(str(pixels), binarize="dynamic", scale="255").x.max() <= 1


def test_bad_labels(tmp_path):
    x = np.random.default_rng(5).random((10, 2))
    negative = tmp_path / "neg.npz"
    np.savez(negative, x=x, y=np.array([0, 1, -1] + [0] * 7))
    with pytest.raises(DataError, match="negative in row 2"):
        load_dataset(str(negative))
    fractional = tmp_path / "frac.npz"
    np.savez(fractional, x=x, y=np.array([0.5] + [1.0] * 9))
    with pytest.raises(DataError, match="not integers in row 0"):
        load_dataset(str(fractional))
    short = tmp_path / "short.npz"
    np.savez(short, x=x, y=np.zeros(9, dtype=int))
    with pytest.raises(DataError, match=r"expected \[10\]"):
        load_dataset(str(short))


def test_unknown_names(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("foo")
    assert str(info.value) == (
        "unknown dataset 'foo': choose one of digits, fashion-mnist, mnist, or give a path to a "
        ".npy/.npz/.csv/.pt file"
    )
    missing = tmp_path / "missing.npy"
    with pytest.raises(DataError, match="does not exist") as info:
        load_dataset(str(missing))
    assert str(missing) in str(info.value)
    text = tmp_path / "data.txt"
    text.write_text("0.1\n")
    with pytest.raises(DataError, match="unsupported data file type '.txt'"):
        load_dataset(str(text))


def test_dataset_names_and_repr():
    assert DATASETS == ("digits", "fashion-mnist", "mnist")
    d = load_dataset("digits", "val")
    assert "digits" in repr(d) and "n=144" in repr(d) and len(repr(d)) < 300
