"""The user's own data files (.npy, .npz, .csv, .pt) and the validation of data and labels."""

__all__ = ["USER_SUFFIXES"]

import csv
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyrogen.errors import DataError, format_rows

USER_SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".csv", ".pt")


# --------------------------------------------------------------------------------------------
# Validation of arrays
# --------------------------------------------------------------------------------------------


def _to_rows(array: np.ndarray, source: str) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Validates data and returns it as float32 ``[N, D]``, values as stored, plus the image shape.

    Checks the shape, the dtype and that every value is finite; whether the values suit a model
    is the model's to say (the support of its observation, see :func:`pyrogen.check_model`).
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
            raise DataError(f"{source} has NaN or infinite values in {format_rows(bad)} (from 0)")
    if flat.dtype.kind in "iu" and flat.dtype.itemsize > 2 and np.abs(flat).max() > 2**24:
        raise DataError(
            f"{source}: integers up to {np.abs(flat).max()} lose precision as float32 "
            "(exact up to 2**24 = 16777216)"
        )
    # torch converts in parallel; torch.tensor copies, so read-only input is fine
    return torch.tensor(flat, dtype=torch.float32).numpy(), image_shape


def _to_unit_interval(array: np.ndarray, source: str) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Image data as float32 ``[N, D]`` in ``[0, 1]``: uint8 pixels are divided by 255."""
    flat, image_shape = _to_rows(array, source)
    if np.asarray(array).dtype == np.uint8:
        flat /= 255
    lo, hi = float(flat.min()), float(flat.max())
    if lo < 0 or hi > 1:
        raise DataError(f"{source}: image values must lie in [0, 1], got [{lo:g}, {hi:g}]")
    return flat, image_shape


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
            raise DataError(f"{source}: labels y are not integers in {format_rows(bad)} (from 0)")
    negative = np.flatnonzero(labels < 0)
    if negative.size:
        raise DataError(f"{source}: labels y are negative in {format_rows(negative)} (from 0)")
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
                f"(see data {format_rows(bad)}, counting data rows from 0)"
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
    if value.layout != torch.strided:
        raise DataError(
            f"{path}: {what} is a sparse tensor ({value.layout}); store it dense "
            "(tensor.to_dense()) in the .pt file"
        )
    value = value.detach().cpu()
    if value.is_floating_point() and value.dtype not in (torch.float32, torch.float64):
        value = value.float()
    if value.is_complex():
        raise DataError(f"{path}: {what} is complex ({value.dtype}), expected real numbers")
    return value.numpy()


def _load_failure(err: Exception) -> str:
    """One line for torch.load's failure: the pickled object it refused, or its first sentence.

    torch's own multi-line text advises ``weights_only=False``, which would run the file's code;
    pyrogen never gives that advice.
    """
    text = str(err).strip()
    unsafe = re.search(r"unsupported global:? (?:GLOBAL )?([\w.]+)", text, re.IGNORECASE)
    if unsafe:
        return (
            f"it holds the pickled Python object {unsafe.group(1)}, and pyrogen loads tensors "
            "only; save a tensor, or a dict with tensors 'x' (and 'y')"
        )
    first = text.splitlines()[0].split(". ")[0] if text else type(err).__name__
    if "weights_only" in first:
        first = "it is not a tensors-only file"
    return f"it is corrupt, truncated or not tensors-only ({first[:160]})"


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
        raise DataError(f"cannot read .pt file {path}: {_load_failure(err)}") from None
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
