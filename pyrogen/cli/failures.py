"""What the ``pyrogen`` command says about an exception the user can cause (and fix).

``user_message`` turns an OSError (by errno), a malformed run file (KeyError/TypeError/ValueError
raised while reading one), a MemoryError or torch's allocation failure into one or two lines that
name the thing and what to do; it returns None for anything else, which the command reports as an
internal error.
"""

from __future__ import annotations

import errno
import os

__all__ = ["user_message"]

_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space (or write elsewhere) and run it again",
    errno.EDQUOT: "the disk quota is exceeded: free some space (or write elsewhere)",
    errno.EROFS: "the file system is read-only: choose a writable place (e.g. --out)",
    errno.EACCES: "permission denied: choose a place you may write, or fix its permissions",
    errno.EPERM: "operation not permitted: choose a place you may write, or fix its permissions",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EEXIST: "it already exists and is in the way: remove it or choose another path",
    errno.EISDIR: "it is a folder where a file is expected: choose a file path",
    errno.ENOENT: "it does not exist: check the path (or create the folder)",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
    errno.ELOOP: "too many symlinks (a symlink loop?): check the path",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) or close other programs",
    errno.ENOTEMPTY: "the folder is not empty: remove it or choose another path",
    errno.EIO: "an input/output error from the disk: check the device",
}


def _oserror(e: OSError) -> str:
    where = " and ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    what = e.strerror or type(e).__name__
    advice = _ADVICE.get(e.errno or -1)
    if advice is None:
        advice = f"{what} (errno {e.errno})" if e.errno else str(e) or type(e).__name__
    elif e.errno == errno.ENOENT and e.filename and os.path.islink(e.filename):
        advice = "it is a dangling symlink (its target does not exist): fix or remove it"
    return f"{where}: {advice}" if where else f"{what}: {advice}"


def _out_of_memory(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and (
        "not enough memory" in text
        or "DefaultCPUAllocator" in text
        or "out of memory" in text.lower()
        or type(e).__name__ == "OutOfMemoryError"
    )


_RUN_READERS = {"read_config", "load_run", "_train_from_config", "scale_of_run", "read_run_tables"}


def _from_run_file(e: BaseException) -> bool:
    """True when ``e`` was raised while a run's config.json was read (a malformed value)."""
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name in _RUN_READERS:
            return True
        tb = tb.tb_next
    return False


def user_message(e: BaseException) -> str | None:
    """One or two lines for an exception the user caused, or None for an internal error."""
    import json

    if _out_of_memory(e):
        return (
            "out of memory: "
            + (str(e).splitlines()[0][:160] if str(e) else type(e).__name__)
            + "\n(use fewer points per batch, a smaller K/-n/--batch-size, or a larger machine)"
        )
    if isinstance(e, OSError):
        return _oserror(e)
    if isinstance(e, json.JSONDecodeError):
        return (
            f"a JSON file is malformed ({e})\nrestore it, or train the run again with --overwrite"
        )
    if isinstance(e, (KeyError, TypeError, ValueError)) and _from_run_file(e):
        detail = f"missing key {e}" if isinstance(e, KeyError) else str(e).splitlines()[0][:160]
        return (
            f"the run's config.json is malformed ({detail})\n"
            "restore it, or train the run again with --overwrite"
        )
    return None
