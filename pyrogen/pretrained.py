"""Converged reference runs shipped with pyrogen, loadable by name.

Each lives in ``benchmarks/pretrained/NAME/`` of the source tree (installed from a wheel:
``pyrogen/_pretrained/NAME/``, the copy it carries; or ``$PYROGEN_PRETRAINED/NAME/``) as a run
directory like any other: config.json (how it was trained, under which protocol, and its
``pretrained`` description), checkpoint.pt (tensors only: the weights of the best validation
epoch, no optimizer state) and history.csv (the whole learning curve). ``"pretrained:NAME"``
names one wherever a run directory is expected::

    run = pyrogen.load_run("pretrained:vae-fashion-mnist")
    pyrogen evaluate pretrained:vae-fashion-mnist --ks 1,5000 --limit 500

The command line evaluates (and samples, compares, reports) a copy in ``runs/pretrained-NAME/``
of the current folder, so that the shipped files stay as they are.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from pyrogen._shipped import shipped_dir
from pyrogen.errors import ConfigError

__all__ = ["PREFIX", "available", "describe", "local_copy", "path_of", "pretrained_dir", "resolve"]

PREFIX = "pretrained:"


def pretrained_dir() -> Path:
    """The folder of the shipped runs: ``$PYROGEN_PRETRAINED``; else, installed from a wheel, the
    copy it carries (``pyrogen/_pretrained``); else ``benchmarks/pretrained/`` of the source tree
    beside the package."""
    env = os.environ.get("PYROGEN_PRETRAINED")
    return Path(env) if env else shipped_dir("_pretrained", "benchmarks/pretrained")


def available() -> list[str]:
    """The names of the shipped runs."""
    folder = pretrained_dir()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "config.json").is_file())


def path_of(name: str) -> Path:
    """The run directory of the shipped run ``name``."""
    name = name.removeprefix(PREFIX)
    path = pretrained_dir() / name
    if not (path / "config.json").is_file():
        known = ", ".join(available()) or f"none in {pretrained_dir()}"
        raise ConfigError(f"no pretrained run {name!r} (available: {known})")
    return path


def describe(name: str) -> dict[str, Any]:
    """What the shipped run is: its ``pretrained`` entry of config.json (model, data, protocol,
    epochs, best validation ELBO, the published value it is measured against)."""
    config = json.loads((path_of(name) / "config.json").read_text())
    return {"name": name.removeprefix(PREFIX), **config.get("pretrained", {})}


def resolve(run: str | os.PathLike) -> Path:
    """``"pretrained:NAME"`` to its shipped directory; any other path as it is."""
    text = os.fspath(run)
    return path_of(text) if text.startswith(PREFIX) else Path(text)


def local_copy(run: str | os.PathLike, folder: str | os.PathLike = "runs") -> Path:
    """For the command line: ``"pretrained:NAME"`` to ``FOLDER/pretrained-NAME``, copied there
    from the shipped run the first time; any other path as it is."""
    text = os.fspath(run)
    if not text.startswith(PREFIX):
        return Path(text)
    source = path_of(text)
    target = Path(folder) / f"pretrained-{source.name}"
    if not (target / "checkpoint.pt").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(".*", "evaluations"))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        print(f"{text}: a copy of the shipped run in {target}")
    return target
