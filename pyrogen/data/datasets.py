"""Data set splits, binarization and the public loader :func:`load_dataset`."""

__all__ = [
    "DATASETS",
    "Dataset",
    "load_dataset",
    "binarize_static",
    "binarize_dynamic",
]

import functools
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pyrogen.data.files import (
    USER_SUFFIXES,
    _read_user_file,
    _to_labels,
    _to_rows,
    _to_unit_interval,
)
from pyrogen.data.idx import _load_idx_pair
from pyrogen.data.scaling import check_scale, rescale
from pyrogen.data.sources import _PRETTY_NAMES, _download_idx, _normalise_name, find_idx_files
from pyrogen.errors import DataError

DATASETS: tuple[str, ...] = ("digits", "fashion-mnist", "mnist")
"""Names of the built-in data sets accepted by :func:`load_dataset`."""

SPLITS: tuple[str, ...] = ("train", "val", "test", "all")
BINARIZE_OPTIONS: tuple[str | None, ...] = (None, "static", "dynamic")

# Seed of the permutation that carves the fixed test split out of data sets without an
# official one (digits, user files). Independent of the user's seed on purpose.
_HOLDOUT_SEED = 0
_DIGITS_TEST_FRACTION = 0.2
_USER_TEST_FRACTION = 0.1


@dataclass(eq=False, repr=False)
class Dataset:
    """A loaded data set split.

    Attributes:
        x: Float32 tensor of shape ``[N, D]``: in ``[0, 1]`` for the built-in image sets, as
            stored (or as ``scale`` rescaled them) for a user's file.
        y: Int64 labels of shape ``[N]``, or ``None`` when the data has no labels.
        name: ``"digits"``, ``"fashion-mnist"``, ``"mnist"`` or the path of the user's file.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        binarize: How ``x`` should be treated: ``"static"`` (already 0/1), ``"dynamic"``
            (grey levels; draw fresh Bernoulli samples every epoch) or ``None`` (grey levels).
        image_shape: ``(H, W)`` when each row is an image, else ``None``.
        num_classes: Number of label classes, or ``None`` without labels.
        scale: How a user's file was rescaled (see :mod:`pyrogen.data.scaling`), or ``None``.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    name: str
    split: str
    binarize: str | None
    image_shape: tuple[int, int] | None
    num_classes: int | None
    scale: str | None = None

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
            f"scale={self.scale!r}, "
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
# Splits and the public loader
# --------------------------------------------------------------------------------------------


def _permutation(n: int, seed: int) -> np.ndarray:
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randperm(n, generator=generator).numpy()


def _smallest_fraction(n: int) -> float:
    """The smallest two-decimal fraction f whose ``round(n * f)`` is at least 1 (n >= 2)."""
    return math.ceil(100 / n) / 100


def _largest_fraction(n: int) -> float:
    """The largest two-decimal fraction f whose ``round(n * f)`` leaves a training row (n >= 2)."""
    return math.floor(100 * (n - 1) / n) / 100


def _train_val_indices(
    n: int, split: str, val_fraction: float, seed: int, source: str
) -> np.ndarray:
    """Sorted indices into ``range(n)`` for split ``"train"``, ``"val"`` or ``"all"``."""
    if split == "all":
        return np.arange(n)
    n_val = int(round(n * val_fraction))
    if split == "val" and n < 2 and n_val in (0, n):  # no val_fraction leaves a row each side
        raise DataError(
            f"{source} has {n} row{'s' if n != 1 else ''} for training and validation: at least "
            "2 are needed (one each), and many more for a useful model"
        )
    if split == "val" and n_val == 0:
        raise DataError(
            f"{source}: the validation split is empty ({n} training rows, "
            f"val_fraction={val_fraction}); use --val-fraction {_smallest_fraction(n)} or more"
        )
    if split == "train" and n_val >= n:
        raise DataError(
            f"{source}: the training split is empty ({n} rows, val_fraction={val_fraction}); "
            f"use --val-fraction {_largest_fraction(n)} or less"
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
    scale: str | None = None,
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
        scale: Rescaling of a user's file: ``None`` or ``"none"`` (the default: values as
            stored), ``"255"``, ``"minmax"`` or ``"standardize"`` (see
            :mod:`pyrogen.data.scaling`; statistics from the rows outside the test split).

    Returns:
        The requested split as a :class:`Dataset`.

    Raises:
        DataError: For an unknown name or option, missing or invalid files, or an empty split.
    """
    _check_options(split, binarize, val_fraction)
    scale = check_scale(scale)
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
        _no_scale(scale, _PRETTY_NAMES[key])
    else:
        if key == "digits":
            pool_x, pool_y = _digits_arrays()
            test_fraction, dataset_name, num_classes = _DIGITS_TEST_FRACTION, "digits", 10
            pool_image_shape: tuple[int, int] | None = (8, 8)
            _no_scale(scale, "digits")
        else:
            path = Path(name_str).expanduser()
            suffix = path.suffix.lower()
            if path.is_dir():
                raise DataError(f"data file {name_str} is a folder: give the file inside it")
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
            pool_x, pool_image_shape = _to_rows(raw_x, f"data file {name_str}")
            pool_y = None if raw_y is None else _to_labels(raw_y, len(pool_x), name_str)
            num_classes = None if pool_y is None else int(pool_y.max()) + 1
            test_fraction, dataset_name = _USER_TEST_FRACTION, name_str
        test_idx, rest_idx = _holdout_indices(len(pool_x), test_fraction, dataset_name)
        if scale is not None:  # statistics of the train and val rows, applied to every split
            pool_x = rescale(pool_x, scale, pool_x[rest_idx])
        if split == "test":
            if test_idx.size == 0:
                raise DataError(f"{dataset_name} has too few rows to hold out a test split")
            idx = test_idx
        else:
            idx = rest_idx[_train_val_indices(len(rest_idx), split, val_fraction, seed, name_str)]
        x = pool_x[idx]  # fancy indexing copies, so the result is writable and unshared
        labels = None if pool_y is None else pool_y[idx]
        image_shape = pool_image_shape

    if binarize is not None:
        _check_grey_levels(x, dataset_name, scale)
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
        scale=scale,
    )


def _no_scale(scale: str | None, name: str) -> None:
    if scale is not None:
        raise DataError(
            f"{name} is already scaled to [0, 1]; scale={scale!r} is for your own files"
        )


def _check_grey_levels(x: np.ndarray, source: str, scale: str | None) -> None:
    """Binarization draws Bernoulli(x): x must be grey levels in [0, 1]."""
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
    if lo >= 0 and hi <= 1:
        return
    integers = bool(np.all(x == np.round(x)))
    if integers and lo >= 0 and hi <= 255 and scale is None:
        fix = "these look like 8-bit pixel values: divide them by 255 with --scale 255"
    else:
        fix = (
            "binarizing is for grey levels (images); rescale with --scale minmax, or keep the "
            "values (--binarize none) and pick a likelihood for them (--likelihood gaussian or "
            "studentt for real values, poisson for counts)"
        )
    raise DataError(
        f"{source}: --binarize draws each value as a probability, so it needs values in [0, 1], "
        f"but they range over [{lo:g}, {hi:g}]; {fix}"
    )
