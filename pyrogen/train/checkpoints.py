"""Checkpoints: tensors-only state written atomically (temporary file, fsync, rename) and loaded
with ``weights_only=True``, so that a killed run never leaves a half-written file and a loaded
checkpoint never unpickles code."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from pyrogen.atomic import write_atomically
from pyrogen.errors import RunDirError

__all__ = ["load_checkpoint", "save_checkpoint"]


def _first_reason(e: BaseException) -> str:
    """The informative line of an error: torch's load_state_dict puts it after a heading."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("size mismatch", "Missing key", "Unexpected key")):
            return line
    return lines[0] if lines else type(e).__name__


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Writes a tensors-only checkpoint atomically (temporary file, fsync, rename)."""
    write_atomically(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Loads a checkpoint with ``weights_only=True``; refuses anything that is not tensors-only."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        text = str(e).strip()
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if unsafe:  # never unpickled: weights_only=True stops at the first Python object
            raise RunDirError(
                f"refusing checkpoint {path}: it is not tensors-only (it holds the pickled "
                f"Python object {unsafe.group(1)}), and pyrogen never unpickles code"
            ) from None
        first = text.splitlines()[0].split(". ")[0] if text else type(e).__name__
        raise RunDirError(
            f"cannot load checkpoint {path}: it is corrupt or truncated ({first[:160]})"
        ) from None
