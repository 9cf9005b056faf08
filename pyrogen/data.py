"""Data sets for pyrogen: built-in image sets, IDX files and the user's own array files.

:func:`load_dataset` returns a :class:`Dataset` whose ``x`` is a float32 tensor of shape
``[N, D]`` with values in ``[0, 1]``. Three built-in data sets are known (see :data:`DATASETS`):

* ``"digits"``: scikit-learn's 1797 8x8 hand-written digits (bundled, no download), grey
  levels 0..16 scaled to ``[0, 1]``. A fixed 20% of the images is held out as the test split.
* ``"fashion-mnist"`` and ``"mnist"``: the 28x28 IDX files, gzip-compressed or raw, found on
  disk (see :func:`find_idx_files`) or downloaded once into ``~/.cache/pyrogen/<name>``.

Any other name is treated as a path to a ``.npy``, ``.npz``, ``.csv`` or ``.pt`` file (a fixed
10% of its rows is held out as the test split).

Splits: ``"all"`` is the whole training set, ``"train"`` is ``"all"`` minus a validation subset
of ``val_fraction`` of its rows chosen by a permutation seeded with ``seed``, ``"val"`` is that
subset and ``"test"`` is the official (or fixed held-out) test set. Splits are deterministic.

Binarization: ``binarize=None`` keeps grey levels; ``"static"`` draws one Bernoulli sample per
pixel with a seed derived from ``seed`` and the split; ``"dynamic"`` keeps grey levels for the
training splits (the trainer draws fresh Bernoulli samples with :func:`binarize_dynamic` every
epoch) but returns ``"val"`` and ``"test"`` statically binarized so that evaluation numbers are
comparable between runs.
"""

__all__ = [
    "DATASETS",
    "Dataset",
    "load_dataset",
    "binarize_static",
    "binarize_dynamic",
    "read_idx",
    "write_idx",
    "find_idx_files",
]

import csv
import functools
import gzip
import hashlib
import http.client
import math
import os
import struct
import sys
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyrogen.errors import DataError

DATASETS: tuple[str, ...] = ("digits", "fashion-mnist", "mnist")
"""Names of the built-in data sets accepted by :func:`load_dataset`."""

SPLITS: tuple[str, ...] = ("train", "val", "test", "all")
BINARIZE_OPTIONS: tuple[str | None, ...] = (None, "static", "dynamic")
USER_SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".csv", ".pt")

# Seed of the permutation that carves the fixed test split out of data sets without an
# official one (digits, user files). Independent of the user's seed on purpose.
_HOLDOUT_SEED = 0
_DIGITS_TEST_FRACTION = 0.2
_USER_TEST_FRACTION = 0.1

_DOWNLOAD_TIMEOUT_S = 10.0

# IDX type codes (third magic byte) -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES: dict[np.dtype, int] = {
    dtype.newbyteorder("="): code for code, dtype in _IDX_DTYPES.items()
}

_IDX_NAMES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_IDX_NAMES_BY_DATASET = ("fashion-mnist", "mnist")
_PRETTY_NAMES = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST"}

_MIRRORS: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",),
}

# MD5 of the official gzip files (as listed by torchvision), checked after a download only.
_MD5: dict[str, dict[str, str]] = {
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
}

# System-wide locations searched last (Debian package dataset-fashion-mnist).
_SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
    "mnist": (),
}


@dataclass(eq=False, repr=False)
class Dataset:
    """A loaded data set split.

    Attributes:
        x: Float32 tensor of shape ``[N, D]`` with values in ``[0, 1]``.
        y: Int64 labels of shape ``[N]``, or ``None`` when the data has no labels.
        name: ``"digits"``, ``"fashion-mnist"``, ``"mnist"`` or the path of the user's file.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        binarize: How ``x`` should be treated: ``"static"`` (already 0/1), ``"dynamic"``
            (grey levels; draw fresh Bernoulli samples every epoch) or ``None`` (grey levels).
        image_shape: ``(H, W)`` when each row is an image, else ``None``.
        num_classes: Number of label classes, or ``None`` without labels.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    name: str
    split: str
    binarize: str | None
    image_shape: tuple[int, int] | None
    num_classes: int | None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def data_dim(self) -> int:
        """Number of features ``D`` per data point."""
        return int(self.x.shape[1])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"data_dim={self.data_dim}, binarize={self.binarize!r}, "
            f"image_shape={self.image_shape!r}, num_classes={self.num_classes!r}, "
            f"labels={'yes' if self.y is not None else 'no'})"
        )


# --------------------------------------------------------------------------------------------
# Binarization
# --------------------------------------------------------------------------------------------


def binarize_static(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Draws one Bernoulli sample per entry with a generator seeded by ``seed``.

    The draw happens on the CPU, so the result does not depend on the device of ``x``.

    Args:
        x: Probabilities in ``[0, 1]`` (any shape, floating point).
        seed: Seed of the :class:`torch.Generator`; the same seed gives the same result.

    Returns:
        A tensor of 0s and 1s with the shape, dtype and device of ``x``.

    Raises:
        DataError: If ``x`` has values outside ``[0, 1]`` or NaN.
    """
    probs = x.detach().to(device="cpu", dtype=torch.float32)
    if probs.numel() and not bool(((probs >= 0) & (probs <= 1)).all()):
        raise DataError(
            "binarize_static needs probabilities in [0, 1], got values in "
            f"[{probs.min().item():g}, {probs.max().item():g}] (or NaN)"
        )
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    out = torch.bernoulli(probs, generator=generator)
    dtype = x.dtype if x.is_floating_point() else torch.float32
    return out.to(device=x.device, dtype=dtype)


def binarize_dynamic(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draws a fresh Bernoulli sample per entry (dynamic binarization, once per epoch).

    Args:
        x: Probabilities in ``[0, 1]`` (floating point, any shape and device).
        generator: Optional generator on the device of ``x``; the global RNG otherwise.

    Returns:
        A tensor of 0s and 1s with the shape, dtype and device of ``x``.
    """
    return torch.bernoulli(x, generator=generator)


def _static_seed(seed: int, split: str) -> int:
    """Stable (process-independent) seed for the static binarization of one split."""
    digest = hashlib.sha256(f"pyrogen.data.binarize:{int(seed)}:{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# --------------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------------


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (as used by MNIST), gzip-compressed or raw.

    Compression is detected from the gzip magic bytes ``1f 8b``, not from the file name.

    Args:
        path: The file to read.

    Returns:
        The array, in native byte order, with the dtype and shape given by the header.

    Raises:
        DataError: If the file is missing, the gzip stream is corrupt or truncated, the magic
            number is invalid, or the payload size does not match the header.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file {path} does not exist")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from err
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"IDX file {path} is a corrupt or truncated gzip file: {err}") from err
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is too short ({len(raw)} bytes) to hold a header")
    zero1, zero2, code, ndim = raw[:4]
    if zero1 != 0 or zero2 != 0:
        raise DataError(
            f"{path} is not an IDX file: magic number starts with bytes "
            f"{zero1:#04x} {zero2:#04x}, expected 0x00 0x00"
        )
    if code not in _IDX_DTYPES:
        allowed = ", ".join(f"{c:#04x}" for c in _IDX_DTYPES)
        raise DataError(f"IDX file {path} has unknown type code {code:#04x} (allowed: {allowed})")
    if not 1 <= ndim <= 4:
        raise DataError(f"IDX file {path} declares {ndim} dimensions, expected 1 to 4")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(
            f"IDX file {path} is truncated inside its header: expected at least {header_size} "
            f"bytes, got {len(raw)}"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    dtype = _IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    actual = len(raw) - header_size
    if actual != expected:
        problem = "truncated" if actual < expected else "has extra bytes"
        raise DataError(
            f"IDX file {path} {problem}: header shape {tuple(shape)} needs {expected} data "
            f"bytes, found {actual}"
        )
    array = np.frombuffer(raw, dtype=dtype, count=math.prod(shape), offset=header_size)
    return array.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: Any) -> None:
    """Writes an array as an IDX file, gzip-compressed when ``path`` ends in ``.gz``.

    Args:
        path: Destination file.
        array: Array with 1 to 4 dimensions and dtype uint8, int8, int16, int32, float32 or
            float64.

    Raises:
        DataError: If the dtype or number of dimensions cannot be stored in IDX.
    """
    path = Path(path)
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(
            f"cannot write {path}: dtype {array.dtype} has no IDX type code "
            "(use uint8, int8, int16, int32, float32 or float64)"
        )
    if not 1 <= array.ndim <= 4:
        raise DataError(f"cannot write {path}: IDX stores 1 to 4 dimensions, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)


def _candidate_dirs(name: str, root: str | os.PathLike | None) -> list[Path]:
    """Directories searched for the IDX files of ``name``, in order, without duplicates."""
    dirs: list[Path] = []
    if root is not None:
        root_path = Path(root).expanduser()
        dirs += [root_path, root_path / name]
    env = os.environ.get("PYROGEN_DATA")
    if env:
        env_path = Path(env).expanduser()
        dirs += [env_path / name, env_path]
    dirs.append(_cache_dir(name))
    dirs += list(_SYSTEM_DIRS.get(name, ()))
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _cache_dir(name: str) -> Path:
    return Path.home() / ".cache" / "pyrogen" / name


def _files_in(directory: Path) -> dict[str, Path] | None:
    """The four IDX files in ``directory`` (raw preferred over .gz), or None if any is missing."""
    found: dict[str, Path] = {}
    for key, stem in _IDX_NAMES.items():
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def _check_idx_name(name: str) -> str:
    key = _normalise_name(name)
    if key not in _IDX_NAMES_BY_DATASET:
        raise DataError(
            f"{name!r} is not an IDX data set: choose one of {', '.join(_IDX_NAMES_BY_DATASET)}"
        )
    return key


def _missing_message(name: str, dirs: list[Path]) -> str:
    pretty = _PRETTY_NAMES[name]
    files = ", ".join(f"{stem}.gz" for stem in _IDX_NAMES.values())
    searched = ", ".join(str(d) for d in dirs)
    message = f"{pretty} not found in {searched}. "
    if name == "fashion-mnist":
        message += (
            "Install it with `apt-get install dataset-fashion-mnist`, or put the four IDX files "
            f"({files}; gzip or raw) in $PYROGEN_DATA/fashion-mnist or "
            "~/.cache/pyrogen/fashion-mnist."
        )
    else:
        message += (
            f"Put the four IDX files ({files}; gzip or raw) in $PYROGEN_DATA/{name} or "
            f"~/.cache/pyrogen/{name}; they can be downloaded from {_MIRRORS[name][0]}."
        )
    return message


def find_idx_files(name: str, root: str | os.PathLike | None = None) -> dict[str, Path]:
    """Locates the four IDX files of an IDX data set on disk (never downloads).

    Search order: ``root`` and ``root/<name>`` if given; ``$PYROGEN_DATA/<name>`` and
    ``$PYROGEN_DATA``; ``~/.cache/pyrogen/<name>``; for Fashion-MNIST also
    ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``). The first
    directory holding all four files wins; each file may be gzip-compressed (``.gz``) or raw.

    Args:
        name: ``"fashion-mnist"`` or ``"mnist"``.
        root: Optional directory searched first.

    Returns:
        Paths keyed by ``"train_images"``, ``"train_labels"``, ``"test_images"`` and
        ``"test_labels"``.

    Raises:
        DataError: If ``name`` is not an IDX data set or no directory holds all four files;
            the message lists the searched directories and how to get the files.
    """
    key = _check_idx_name(name)
    dirs = _candidate_dirs(key, root)
    for directory in dirs:
        found = _files_in(directory)
        if found is not None:
            return found
    raise DataError(_missing_message(key, dirs))


def _open_url(url: str, timeout: float) -> Any:
    """Opens ``url`` for reading (patched out in tests, which must never touch the network)."""
    return urllib.request.urlopen(url, timeout=timeout)


def _download_file(url: str, dest: Path, md5: str, timeout: float) -> None:
    """Downloads ``url`` to a temporary file next to ``dest``, checks its MD5, renames it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out, _open_url(url, timeout) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    actual = digest.hexdigest()
    if actual != md5:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"downloaded file {dest.name} from {url} is corrupt: expected MD5 {md5}, got "
            f"{actual}; the partial file was deleted, please try again"
        )
    os.replace(tmp, dest)


def _download_idx(name: str, missing: str) -> dict[str, Path]:
    """Downloads the missing IDX files of ``name`` into ``~/.cache/pyrogen/<name>``."""
    target = _cache_dir(name)
    for filename, md5 in _MD5[name].items():
        dest = target / filename
        if dest.is_file():
            continue
        failures: list[str] = []
        for mirror in _MIRRORS[name]:
            url = mirror + filename
            print(f"pyrogen: downloading {url} to {dest}", file=sys.stderr)
            try:
                _download_file(url, dest, md5, _DOWNLOAD_TIMEOUT_S)
                break
            except (OSError, http.client.HTTPException, ValueError) as err:
                failures.append(f"{url}: {err}")
        else:
            raise DataError(f"{missing} Downloading failed ({'; '.join(failures)}).")
    found = _files_in(target)
    if found is None:  # pragma: no cover - all four files were just written
        raise DataError(missing)
    return found


@functools.lru_cache(maxsize=8)
def _read_idx_cached(resolved: str, mtime_ns: int, size: int) -> np.ndarray:
    del mtime_ns, size  # only part of the cache key, so an edited file is read again
    array = read_idx(resolved)
    array.setflags(write=False)
    return array


def _read_idx_once(path: Path) -> np.ndarray:
    """:func:`read_idx` with an in-process cache keyed on the resolved path (read-only)."""
    resolved = path.resolve()
    try:
        stat = resolved.stat()
    except OSError as err:
        raise DataError(f"IDX file {path} does not exist") from err
    return _read_idx_cached(str(resolved), stat.st_mtime_ns, stat.st_size)


def _load_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads images ``[N, H, W]`` and labels ``[N]``, checking that they belong together."""
    images = _read_idx_once(images_path)
    labels = _read_idx_once(labels_path)
    if images.ndim != 3:
        raise DataError(
            f"IDX image file {images_path} has shape {images.shape}, expected [N, H, W]"
        )
    if labels.ndim != 1:
        raise DataError(f"IDX label file {labels_path} has shape {labels.shape}, expected [N]")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"IDX files disagree: {images_path} holds {images.shape[0]} images but "
            f"{labels_path} holds {labels.shape[0]} labels"
        )
    return images, labels


# --------------------------------------------------------------------------------------------
# Validation of arrays
# --------------------------------------------------------------------------------------------


def _format_rows(rows: np.ndarray, limit: int = 3) -> str:
    """``"rows 3, 17, 42 (and 5 more)"`` for the first few indices of ``rows``."""
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    more = f" (and {len(rows) - limit} more)" if len(rows) > limit else ""
    return f"{'row' if len(rows) == 1 else 'rows'} {shown}{more}"


def _to_unit_interval(array: np.ndarray, source: str) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Validates data and returns it as float32 ``[N, D]`` in ``[0, 1]`` plus the image shape.

    uint8 data is divided by 255; everything else must already lie in ``[0, 1]``.
    """
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise DataError(f"{source}: unsupported dtype {array.dtype}, expected numbers")
    if array.ndim >= 1 and array.shape[0] == 0:
        raise DataError(f"{source} contains no rows")
    if array.ndim not in (2, 3):
        raise DataError(
            f"{source}: expected an array of shape [N, D] or [N, H, W], got shape {array.shape}"
        )
    if array.size == 0:
        raise DataError(f"{source}: rows are empty (shape {array.shape})")
    n = array.shape[0]
    image_shape = (int(array.shape[1]), int(array.shape[2])) if array.ndim == 3 else None
    flat = array.reshape(n, -1)
    if flat.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
        if bad.size:
            raise DataError(f"{source} has NaN or infinite values in {_format_rows(bad)} (from 0)")
    if flat.dtype == np.uint8:
        # torch converts in parallel; torch.tensor copies, so read-only input is fine.
        out = torch.tensor(flat, dtype=torch.float32).div_(255).numpy()
    else:
        lo, hi = float(flat.min()), float(flat.max())
        if lo < 0 or hi > 1:
            raise DataError(
                f"{source}: values must lie in [0, 1] but range over [{lo:g}, {hi:g}]; "
                "rescale the data to [0, 1] (e.g. divide 8-bit pixel values by 255, or store "
                "them as uint8, which is divided by 255 automatically)"
            )
        out = flat.astype(np.float32)  # always a copy, so the caller's array is never shared
    return out, image_shape


def _to_labels(labels: Any, n: int, source: str) -> np.ndarray:
    """Validates labels and returns them as int64 ``[N]`` (non-negative integers)."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or labels.shape[0] != n:
        raise DataError(f"{source}: labels y have shape {labels.shape}, expected [{n}]")
    if labels.dtype.kind not in "biuf":
        raise DataError(f"{source}: labels y have dtype {labels.dtype}, expected integers")
    if labels.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
        if bad.size:
            raise DataError(f"{source}: labels y are not integers in {_format_rows(bad)} (from 0)")
    negative = np.flatnonzero(labels < 0)
    if negative.size:
        raise DataError(f"{source}: labels y are negative in {_format_rows(negative)} (from 0)")
    return labels.astype(np.int64)


# --------------------------------------------------------------------------------------------
# User files
# --------------------------------------------------------------------------------------------


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    import pandas as pd

    try:
        with path.open(newline="", encoding="utf-8") as handle:
            first = next((line for line in handle if line.strip()), None)
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read CSV file {path}: {err}") from err
    if first is None:
        raise DataError(f"CSV file {path} contains no rows")
    fields = [f.strip() for f in next(csv.reader([first]))]
    has_header = any(f and not _is_number(f) for f in fields)
    try:
        frame = pd.read_csv(path, header=0 if has_header else None, skipinitialspace=True)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"cannot parse CSV file {path}: {err}") from err
    if len(frame) == 0:
        raise DataError(f"CSV file {path} contains no rows")
    label_columns = [c for c in frame.columns if str(c).strip().lower() in ("y", "label")]
    if len(label_columns) > 1:
        raise DataError(f"CSV file {path} has more than one label column: {label_columns}")
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            values = frame[column]
            bad = np.flatnonzero(pd.to_numeric(values, errors="coerce").isna() & values.notna())
            raise DataError(
                f"CSV file {path}: column {column!r} is not numeric "
                f"(see data {_format_rows(bad)}, counting data rows from 0)"
            )
    labels = None
    if label_columns:
        labels = frame[label_columns[0]].to_numpy()
        frame = frame.drop(columns=label_columns)
    if frame.shape[1] == 0:
        raise DataError(f"CSV file {path} has a label column but no data columns")
    return frame.to_numpy(), labels


def _tensor_to_numpy(value: Any, path: Path, what: str) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{path}: {what} is a {type(value).__name__}, expected a tensor")
    value = value.detach().cpu()
    if value.is_floating_point() and value.dtype not in (torch.float32, torch.float64):
        value = value.float()
    if value.is_complex():
        raise DataError(f"{path}: {what} is complex ({value.dtype}), expected real numbers")
    return value.numpy()


def _read_user_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Reads ``x`` and optional labels ``y`` from a .npy/.npz/.csv/.pt file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False), None
        except (ValueError, OSError, EOFError) as err:
            raise DataError(f"cannot read .npy file {path}: {err}") from err
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.files)
                if "x" in keys:
                    x_key = "x"
                elif len(keys) == 1:
                    x_key = keys[0]
                else:
                    raise DataError(
                        f".npz file {path} needs an array named 'x' (and optionally 'y'); "
                        f"it holds {keys}"
                    )
                x = archive[x_key]
                y = archive["y"] if "y" in keys and x_key == "x" else None
            return x, y
        except DataError:
            raise
        except Exception as err:  # zipfile/pickle/value errors from a damaged archive
            raise DataError(f"cannot read .npz file {path}: {err}") from err
    # .pt
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for bad or unsafe files
        raise DataError(f"cannot read .pt file {path} (weights_only=True): {err}") from err
    if isinstance(obj, torch.Tensor):
        return _tensor_to_numpy(obj, path, "the stored tensor"), None
    if isinstance(obj, dict):
        if "x" not in obj:
            raise DataError(
                f".pt file {path} holds a dict without key 'x' (keys: {sorted(map(str, obj))})"
            )
        x = _tensor_to_numpy(obj["x"], path, "'x'")
        y = _tensor_to_numpy(obj["y"], path, "'y'") if obj.get("y") is not None else None
        return x, y
    raise DataError(
        f".pt file {path} holds a {type(obj).__name__}; expected a tensor or a dict with 'x' "
        "and optionally 'y'"
    )


# --------------------------------------------------------------------------------------------
# Splits and the public loader
# --------------------------------------------------------------------------------------------


def _permutation(n: int, seed: int) -> np.ndarray:
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randperm(n, generator=generator).numpy()


def _train_val_indices(
    n: int, split: str, val_fraction: float, seed: int, source: str
) -> np.ndarray:
    """Sorted indices into ``range(n)`` for split ``"train"``, ``"val"`` or ``"all"``."""
    if split == "all":
        return np.arange(n)
    n_val = int(round(n * val_fraction))
    if split == "val" and n_val == 0:
        raise DataError(
            f"{source}: the validation split is empty ({n} training rows, "
            f"val_fraction={val_fraction}); raise val_fraction"
        )
    if split == "train" and n_val >= n:
        raise DataError(
            f"{source}: the training split is empty ({n} rows, val_fraction={val_fraction})"
        )
    perm = _permutation(n, seed)
    chosen = perm[:n_val] if split == "val" else perm[n_val:]
    return np.sort(chosen)


def _holdout_indices(n: int, fraction: float, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (seed-independent) test indices and the remaining indices, both sorted."""
    n_test = int(round(n * fraction))
    perm = _permutation(n, _HOLDOUT_SEED)
    test, rest = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    if rest.size == 0:
        raise DataError(f"{source} has too few rows ({n}) to hold out a test split")
    return test, rest


def _normalise_name(name: str) -> str:
    return name.strip().lower().replace("_", "-")


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float64) / 16.0).astype(np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _check_options(split: str, binarize: str | None, val_fraction: float) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if binarize not in BINARIZE_OPTIONS and binarize != "none":
        raise DataError(
            f"invalid binarize option {binarize!r}: choose one of None (or 'none'), 'static', "
            "'dynamic'"
        )
    if not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction!r}")


def load_dataset(
    name: str,
    split: str = "train",
    binarize: str | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    download: bool = True,
) -> Dataset:
    """Loads one split of a built-in data set or of the user's own file.

    Args:
        name: ``"digits"``, ``"fashion-mnist"``, ``"mnist"`` or a path to a ``.npy``, ``.npz``
            (arrays ``x`` and optional ``y``), ``.csv`` (numeric; optional header; a column
            named ``y`` or ``label`` holds labels) or ``.pt`` (a tensor, or a dict with ``x``
            and optional ``y``) file. ``[N, H, W]`` arrays are flattened and keep ``(H, W)`` as
            ``image_shape``; uint8 data is divided by 255, other data must lie in ``[0, 1]``.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (train plus val).
        binarize: ``None`` or ``"none"`` (grey levels), ``"static"`` (one fixed Bernoulli draw) or
            ``"dynamic"`` (grey levels for train/all, to be re-binarized every epoch; val and
            test are returned statically binarized, with ``binarize="static"``).
        val_fraction: Fraction of the training set used for the validation split.
        seed: Seed of the train/val permutation and of static binarization.
        root: Directory searched first for IDX files.
        download: Download missing IDX files into ``~/.cache/pyrogen/<name>``.

    Returns:
        The requested split as a :class:`Dataset`.

    Raises:
        DataError: For an unknown name or option, missing or invalid files, or an empty split.
    """
    _check_options(split, binarize, val_fraction)
    if binarize == "none":  # the command line's spelling of None
        binarize = None
    name_str = os.fspath(name)
    key = _normalise_name(name_str)

    labels: np.ndarray | None
    if key in ("fashion-mnist", "mnist"):
        try:
            files = find_idx_files(key, root)
        except DataError as err:
            if not download:
                raise DataError(f"{err} (download=False, so nothing was downloaded)") from None
            files = _download_idx(key, str(err))
        part = "test" if split == "test" else "train"
        images, labels = _load_idx_pair(files[f"{part}_images"], files[f"{part}_labels"])
        if split != "test":
            idx = _train_val_indices(len(images), split, val_fraction, seed, _PRETTY_NAMES[key])
            images, labels = images[idx], labels[idx]
        x, image_shape = _to_unit_interval(images, str(files[f"{part}_images"]))
        dataset_name, num_classes = key, 10
    else:
        if key == "digits":
            pool_x, pool_y = _digits_arrays()
            test_fraction, dataset_name, num_classes = _DIGITS_TEST_FRACTION, "digits", 10
            pool_image_shape: tuple[int, int] | None = (8, 8)
        else:
            path = Path(name_str).expanduser()
            suffix = path.suffix.lower()
            if not path.is_file():
                if suffix in USER_SUFFIXES:
                    raise DataError(f"data file {name_str} does not exist")
                raise DataError(
                    f"unknown dataset {name_str!r}: choose one of {', '.join(DATASETS)}, or give "
                    "a path to a .npy/.npz/.csv/.pt file"
                )
            if suffix not in USER_SUFFIXES:
                raise DataError(
                    f"unsupported data file type {suffix or '(none)'!r} for {name_str}: "
                    "use a .npy, .npz, .csv or .pt file"
                )
            raw_x, raw_y = _read_user_file(path)
            pool_x, pool_image_shape = _to_unit_interval(raw_x, f"data file {name_str}")
            pool_y = None if raw_y is None else _to_labels(raw_y, len(pool_x), name_str)
            num_classes = None if pool_y is None else int(pool_y.max()) + 1
            test_fraction, dataset_name = _USER_TEST_FRACTION, name_str
        test_idx, rest_idx = _holdout_indices(len(pool_x), test_fraction, dataset_name)
        if split == "test":
            if test_idx.size == 0:
                raise DataError(f"{dataset_name} has too few rows to hold out a test split")
            idx = test_idx
        else:
            idx = rest_idx[_train_val_indices(len(rest_idx), split, val_fraction, seed, name_str)]
        x = pool_x[idx]  # fancy indexing copies, so the result is writable and unshared
        labels = None if pool_y is None else pool_y[idx]
        image_shape = pool_image_shape

    x_tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    y_tensor = None if labels is None else torch.from_numpy(labels.astype(np.int64))
    mode = binarize
    if binarize == "static" or (binarize == "dynamic" and split in ("val", "test")):
        # the test set's draw never depends on the run's seed, so every run scores the same data
        x_tensor = binarize_static(x_tensor, _static_seed(0 if split == "test" else seed, split))
        mode = "static"
    return Dataset(
        x=x_tensor,
        y=y_tensor,
        name=dataset_name,
        split=split,
        binarize=mode,
        image_shape=image_shape,
        num_classes=num_classes,
    )
