"""IDX files (the MNIST format): reading, writing and an in-process cache.

An IDX file is a 4-byte magic number ``00 00 <type code> <ndim>``, ``ndim`` big-endian uint32
sizes and the array in big-endian C order. Files may be gzip-compressed; compression is detected
from the gzip magic bytes, not from the file name.
"""

__all__ = ["read_idx", "write_idx"]

import functools
import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from pyrogen.errors import DataError

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
