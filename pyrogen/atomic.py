"""Atomic file writes: a temporary file beside the target, fsync, rename, fsync of the folder.

A process killed at any moment leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["check_writable", "write_atomically", "write_bytes", "write_text"]


class _Writes:
    """A binary file whose first failed write is remembered: torch.save, for one, reports a full
    disk as a RuntimeError ("unexpected pos") that no longer says why."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self._f.flush()

    def tell(self) -> int:
        return self._f.tell()


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Calls ``write`` on a temporary file next to ``path``, then renames it onto ``path``.

    On any error (a full disk, an error in ``write``, Ctrl-C) the temporary file is removed and
    ``path`` keeps its old content; a failed write to the file is raised as its OSError (with
    ``path`` as its file name) even where ``write`` turned it into another exception.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            writes = _Writes(f)
            try:
                write(writes)  # type: ignore[arg-type]
                f.flush()
                os.fsync(f.fileno())
            except Exception as e:
                failed = writes.error
                if failed is not None and e is not failed:
                    raise type(failed)(failed.errno, failed.strerror, str(path)) from e
                raise
        os.replace(tmp, path)
    except BaseException:  # leave nothing behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists: the owner of a ``.NAME.tmpPID`` file may still write it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    write_atomically(path, lambda f: f.write(text.encode("utf-8")))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically."""
    write_atomically(path, lambda f: f.write(data))


def check_writable(folder: str | os.PathLike, create: bool = False) -> None:
    """Raises the OSError that writing a file into ``folder`` would raise, before any work.

    Creates ``folder`` (and its parents) when ``create``; otherwise it must exist. Probes with a
    temporary file that it removes, so a read-only file system, a missing permission, a full
    disk's refusal of new files, or a path through a regular file is found up front.
    """
    folder = Path(folder)
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    elif not folder.is_dir():
        if folder.exists() or folder.is_symlink():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
        raise FileNotFoundError(errno.ENOENT, "the folder does not exist", str(folder))
    probe = folder / f".pyrogen-probe{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:  # named by the folder, not by the probe's made-up name
        raise type(e)(e.errno, e.strerror, str(folder)) from None
    os.close(fd)
    os.unlink(probe)
