"""Where commands write: checked before any work; what a killed command left, recovered.

``check_run_out`` raises the OSError that creating or writing a run directory would raise (a
regular file or a dangling symlink in the way, a read-only file system, no permission), so that a
run fails in a second rather than after an epoch. ``recover_run`` finishes what a killed
command left: temporary files of dead processes are removed, and the old run that ``--overwrite``
renamed aside to ``.NAME.replaced-PID`` is removed when the new run has a checkpoint, and
otherwise renamed back into place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path

from pyrogen.atomic import check_writable, process_alive
from pyrogen.runs.rundir import RunDir

__all__ = ["check_run_out", "recover_run", "replaced_name"]


def replaced_name(out: Path) -> Path:
    """Where ``--overwrite`` keeps the run it replaces until the new one has a checkpoint."""
    return out.with_name(f".{out.name}.replaced-{os.getpid()}")


_LEFTOVER = re.compile(r"^\..+\.tmp(\d+)$|^\.pyrogen-probe(\d+)$")


def recover_run(out: str | os.PathLike) -> None:
    """Finishes what a killed command left in and beside the run directory ``out``.

    Temporary files of the atomic writer (and write probes) whose process is dead are removed;
    the old run that a killed ``--overwrite`` moved aside is removed or restored.
    """
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        return
    if out.is_dir():
        for path in sorted(out.rglob(".*")):
            match = _LEFTOVER.match(path.name)
            if match and path.exists():  # a file, or an evaluation's folder being built
                pid = int(match.group(1) or match.group(2))
                if pid != os.getpid() and not process_alive(pid):
                    _remove(path)
        RunDir(out).recover_evaluations()
    prefix = f".{out.name}.replaced-"
    for aside in sorted(parent.glob(f"{prefix}*")):
        pid = aside.name[len(prefix) :]
        if not pid.isdigit() or (int(pid) != os.getpid() and process_alive(int(pid))):
            continue  # another process is overwriting it now
        new_is_complete = (out / "checkpoint.pt").is_file() and (out / "config.json").is_file()
        if new_is_complete:
            _remove(aside)
        else:  # the new run never got a checkpoint: the old one comes back
            if out.is_symlink() or out.is_file():
                out.unlink()
            elif out.exists():
                shutil.rmtree(out)
            aside.rename(out)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def check_run_out(out: str | os.PathLike) -> None:
    """Raises the OSError that making and writing the run directory ``out`` would raise."""
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise FileNotFoundError(errno.ENOENT, "a dangling symlink", str(out))
    if out.exists():
        if not out.is_dir():
            raise NotADirectoryError(
                errno.ENOTDIR, "exists and is a file, not a run directory", str(out)
            )
        check_writable(out)
        check_writable(out.parent if str(out.parent) else ".")  # --overwrite renames it aside
        return
    ancestor = out.parent
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder", str(ancestor))
    check_writable(ancestor)
