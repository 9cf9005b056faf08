"""Where the Fashion-MNIST and MNIST IDX files come from: search on disk, mirrors, download.

:func:`find_idx_files` looks in a fixed order of directories and never downloads;
``_download_idx`` fetches missing files into ``~/.cache/pyrogen/<name>``, verifying each file's
MD5 before it is renamed into place.
"""

__all__ = ["find_idx_files"]

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from pyrogen.errors import DataError

_DOWNLOAD_TIMEOUT_S = 10.0

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


def _normalise_name(name: str) -> str:
    return name.strip().lower().replace("_", "-")


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
