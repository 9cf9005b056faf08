"""Atomic file writes: a temporary file beside the target, fsync, rename, fsync of the folder.

A process killed at any moment leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_atomically", "write_text"]


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Calls ``write`` on a temporary file next to ``path``, then renames it onto ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, an error in ``write``, Ctrl-C: leave nothing behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    write_atomically(path, lambda f: f.write(text.encode("utf-8")))
