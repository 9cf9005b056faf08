"""A run directory and its one owner, :class:`RunDir`.

A run directory holds::

    config.json        every setting (the fields of TrainConfig) and what the run is: the model
                       class and file, a copy of its source, the data, versions, the commands
    history.csv        one row per epoch
    checkpoint.pt      tensors only (TrainState.checkpoint), loaded with weights_only=True
    model_source/      the model file as it was trained, and its sha256 in config.json
    evaluations/NAME/  one evaluation (bounds.csv, points.csv, meta.json, extra tables), written
                       into a temporary folder and renamed into place: one unit
    evaluations/latest the evaluation shown by default (a symbolic link, swapped atomically);
                       bounds.csv and points.csv at the top level link through it
    report.html, ...   the report

Every write goes through :mod:`pyrogen.atomic`. A process that writes a run holds an OS lock on
``.lock`` (``fcntl.flock``), which dies with the process: a second writer fails at once, naming
the holder's process id. Runs written before format 2 (no ``format`` in config.json, bounds.csv
and points.csv as plain files) are read as they are.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pyrogen.atomic import process_alive, write_text
from pyrogen.errors import RunDirError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks (a second writer is not detected)
    fcntl = None

__all__ = ["CONFIG_FORMAT", "Evaluation", "RunDir", "RunLocked"]

CONFIG_FORMAT = 2
"""1: settings and run information flat in config.json (no ``format`` key); 2: adds
``format``, ``model_source``/``model_sha256``, ``commands`` and ``overrides``."""

LATEST = "latest"
LOCK = ".lock"
_HELD: dict[Path, tuple[int, int]] = {}  # run path -> (file descriptor, depth): reentrant


class MissingSetting(RunDirError, KeyError):
    """A setting that a run's config.json lacks (a KeyError, so ``except KeyError`` still works)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class RunConfig(dict):
    """The settings of a run's config.json; a missing one raises :class:`MissingSetting`."""

    def __init__(self, values: dict, path: Path) -> None:
        super().__init__(values)
        self.path = path

    def __missing__(self, key: str) -> Any:
        raise MissingSetting(
            f"{self.path} lacks the setting '{key}': restore the file, or train the run again "
            "with --overwrite"
        )


class RunLocked(RunDirError):
    """Another process holds the run directory's lock."""

    def __init__(self, path: Path, pid: str, what: str) -> None:
        super().__init__(
            f"{path} is being written by process {pid or '(unknown)'}{what}: wait for it to end, "
            "or use another directory"
        )
        self.pid = pid


@dataclass(frozen=True)
class Evaluation:
    """One committed evaluation of a run: its folder, tables and meta.json."""

    name: str
    path: Path
    meta: dict
    bounds: pd.DataFrame
    points: pd.DataFrame | None
    extra: dict


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path} is not a readable CSV table: {e}") from None


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class RunDir:
    """The one reader and writer of a run directory (see the module's docstring)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # ---- the lock ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, what: str = "", create: bool = False) -> Iterator[RunDir]:
        """Holds the run's OS lock for the block (reentrant within a process); ``create`` makes
        the directory first (a new run), otherwise it must hold a run.

        Raises:
            RunLocked: another process holds it; the message names its process id.
        """
        key = self.path.absolute()
        if key in _HELD:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth + 1)
            try:
                yield self
            finally:
                fd, depth = _HELD[key]
                _HELD[key] = (fd, depth - 1)
            return
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        else:
            self.read_config()  # a missing or foreign directory is named, not created
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").split()
                    pid = holder[0] if holder else ""
                    doing = f" (pyrogen {' '.join(holder[1:])})" if len(holder) > 1 else ""
                    raise RunLocked(self.path, pid, doing) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)
            _HELD[key] = (fd, 1)
            try:
                yield self
            finally:
                del _HELD[key]
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # releases the lock

    def holder(self) -> str | None:
        """The process id holding the run's lock, or None when nobody holds it."""
        if fcntl is None or not (self.path / LOCK).is_file():
            return None
        if self.path.absolute() in _HELD:
            return str(os.getpid())
        fd = os.open(self.path / LOCK, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 200, 0).decode(errors="replace").split()
                return text[0] if text else "(unknown)"
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    # ---- config.json ------------------------------------------------------------------------

    def exists(self) -> bool:
        return (self.path / "config.json").is_file()

    def read_config(self) -> dict:
        """config.json as a dict (any format)."""
        if not self.path.is_dir():
            raise RunDirError(f"run directory {self.path} does not exist (no config.json)")
        path = self.path / "config.json"
        if not path.is_file():
            raise RunDirError(f"{self.path} is not a pyrogen run: it has no config.json")
        try:
            values = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunDirError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(values, dict):
            raise RunDirError(
                f"{path} holds a JSON {type(values).__name__}, not an object of settings: "
                "restore it, or train the run again with --overwrite"
            )
        if int(values.get("format", 1)) > CONFIG_FORMAT:
            raise RunDirError(
                f"{path} has format {values['format']}, newer than this pyrogen reads "
                f"({CONFIG_FORMAT}): upgrade pyrogen"
            )
        return RunConfig(values, path)

    def train_config(self) -> Any:
        """The run's :class:`~pyrogen.train.config.TrainConfig` (format 1 runs included)."""
        from pyrogen.train.config import TrainConfig

        cfg = self.read_config()
        return TrainConfig.from_dict(
            {k: cfg[k] for k in TrainConfig.names() if k in cfg and k != "optimizer"}
            | {"optimizer": cfg.get("optimizer") or "adam"},
            f"{self.path / 'config.json'}",
        )

    def write_config(self, config: dict) -> None:
        write_text(
            self.path / "config.json",
            json.dumps({"format": CONFIG_FORMAT, **config}, indent=2, default=str) + "\n",
        )

    def update_config(self, **changes: Any) -> dict:
        config = self.read_config()
        config.update(changes)
        self.write_config(config)
        return config

    # ---- the model's source -----------------------------------------------------------------

    def save_source(self, file: Path) -> dict:
        """Copies the model file into ``model_source/``; returns the config entries."""
        folder = self.path / "model_source"
        folder.mkdir(exist_ok=True)
        data = file.read_bytes()
        write_text(folder / file.name, data.decode("utf-8"))
        return {
            "model_source": f"model_source/{file.name}",
            "model_sha256": hashlib.sha256(data).hexdigest(),
        }

    def source(self, config: dict) -> Path | None:
        """The saved copy of the model file, checked against its sha256 (None: not saved)."""
        name = config.get("model_source")
        if not name:
            return None
        path = self.path / name
        if not path.is_file():
            raise RunDirError(f"{self.path} lacks its saved model source {name}")
        if sha256_of(path) != config.get("model_sha256"):
            raise RunDirError(
                f"{path} was changed after training (its sha256 differs from config.json's): "
                "restore it; the run's parameters belong to the source it was trained with"
            )
        return path

    # ---- history and checkpoint -------------------------------------------------------------

    def read_history(self) -> pd.DataFrame | None:
        return _read_csv(self.path / "history.csv")

    def write_history(self, rows: list[dict], columns: list[str]) -> None:
        write_text(
            self.path / "history.csv", pd.DataFrame(rows, columns=columns).to_csv(index=False)
        )

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def read_checkpoint(self) -> dict:
        from pyrogen.train.checkpoints import load_checkpoint

        state = load_checkpoint(self.checkpoint_path)
        if not isinstance(state, dict) or "model" not in state:
            raise RunDirError(f"{self.checkpoint_path} is not a pyrogen checkpoint")
        return state

    def write_checkpoint(self, state: dict) -> None:
        from pyrogen.train.checkpoints import save_checkpoint

        save_checkpoint(self.checkpoint_path, state)

    def remove_stale_temporaries(self) -> None:
        """Removes temporary files that a killed writer left (never read)."""
        for stale in self.path.glob(".*.tmp*"):
            if stale.is_file():
                stale.unlink(missing_ok=True)

    # ---- evaluations ------------------------------------------------------------------------

    @property
    def evaluations_path(self) -> Path:
        return self.path / "evaluations"

    def commit_evaluation(self, name: str, tables: dict[str, pd.DataFrame], meta: dict) -> Path:
        """Writes an evaluation as one unit: ``evaluations/NAME/`` with each table as CSV and
        ``meta.json`` (written last, listing the files and their sha256), built in a temporary
        folder and renamed into place; then ``evaluations/latest`` points to it.

        The top-level ``bounds.csv`` and ``points.csv`` (and any extra table) become links
        through ``evaluations/latest``; an older run's plain files move into
        ``evaluations/legacy/`` first.
        """
        root = self.evaluations_path
        root.mkdir(exist_ok=True)
        self.recover_evaluations()
        self._adopt_legacy()
        tmp = root / f".{name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            files = {}
            for stem, table in tables.items():
                write_text(tmp / f"{stem}.csv", table.to_csv(index=stem == "points"))
                files[f"{stem}.csv"] = sha256_of(tmp / f"{stem}.csv")
            write_text(tmp / "meta.json", json.dumps({**meta, "files": files}, indent=2) + "\n")
            target = root / name
            old = root / f".{name}.old{os.getpid()}"
            if target.exists():
                target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._point_latest(name)
        for stem in tables:
            self._link_top(f"{stem}.csv")
        return target

    def _point_latest(self, name: str) -> None:
        link = self.evaluations_path / LATEST
        if link.is_dir() and not link.is_symlink():  # a copy that followed the link
            shutil.rmtree(link)
        tmp = self.evaluations_path / f".{LATEST}.tmp{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(name, tmp)
        os.replace(tmp, link)

    def _link_top(self, file: str) -> None:
        top = self.path / file
        target = f"evaluations/{LATEST}/{file}"
        if top.is_symlink() and os.readlink(top) == target:
            return
        tmp = self.path / f".{file}.tmp{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, top)

    def _adopt_legacy(self) -> None:
        """A format-1 run's top-level bounds.csv/points.csv become ``evaluations/legacy``."""
        top = self.path / "bounds.csv"
        if not top.is_file() or top.is_symlink() or self.evaluation_names():
            return  # (a plain file beside evaluations: a copy that followed the link)
        legacy = self.evaluations_path / "legacy"
        legacy.mkdir(exist_ok=True)
        files = {}
        for file in ("bounds.csv", "points.csv", *(f"{t}.csv" for t in _EXTRA)):
            src = self.path / file
            if src.is_file() and not src.is_symlink():
                shutil.copyfile(src, legacy / file)
                files[file] = sha256_of(legacy / file)
        write_text(
            legacy / "meta.json",
            json.dumps({"name": "legacy", "legacy": True, "files": files}, indent=2) + "\n",
        )
        for file in files:
            (self.path / file).unlink()

    def recover_evaluations(self) -> None:
        """A kill between the two renames of a replaced evaluation (``.NAME.oldPID``): the old
        one back into place when the new one never arrived, else removed. A folder of another
        process that is still alive is left to it."""
        root = self.evaluations_path
        if not root.is_dir():
            return
        for old in sorted(root.glob(".*.old*")):
            name, _, pid = old.name[1:].rpartition(".old")
            if pid.isdigit() and int(pid) != os.getpid() and process_alive(int(pid)):
                continue
            if not (root / name).exists():
                old.rename(root / name)
            else:
                shutil.rmtree(old, ignore_errors=True)

    def evaluation_names(self) -> list[str]:
        root = self.evaluations_path
        if not root.is_dir():
            return []
        return sorted(
            p.name
            for p in root.iterdir()
            if p.is_dir() and not p.is_symlink() and not p.name.startswith(".") and p.name != LATEST
        )

    def latest_evaluation_name(self) -> str | None:
        link = self.evaluations_path / LATEST
        if link.is_symlink():
            return os.readlink(link)
        if (link / "meta.json").is_file():  # the run was copied by a tool that followed links
            name = json.loads((link / "meta.json").read_text()).get("name")
            if name and (self.evaluations_path / name).is_dir():
                return name
        return None

    def read_evaluation(self, name: str | None = None) -> Evaluation | None:
        """The evaluation ``name`` (default: the latest), checked against its meta.json; an
        older run's top-level bounds.csv/points.csv when it has no evaluations folder. None when
        the run has no evaluation.

        Raises:
            RunDirError: a file of the evaluation is missing or differs from its meta.json.
        """
        name = name or self.latest_evaluation_name()
        if name is None:
            bounds = _read_csv(self.path / "bounds.csv")
            if bounds is None:
                return None
            extra = {t: _read_csv(self.path / f"{t}.csv") for t in _EXTRA}
            return Evaluation(
                "bounds.csv",
                self.path,
                {"legacy": True},
                bounds,
                _read_csv(self.path / "points.csv"),
                {k: v for k, v in extra.items() if v is not None},
            )
        folder = self.evaluations_path / name
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            known = ", ".join(self.evaluation_names()) or "none"
            raise RunDirError(
                f"{self.path} has no complete evaluation {name!r} (evaluations: {known})"
            )
        meta = json.loads(meta_path.read_text())
        for file, digest in meta.get("files", {}).items():
            if not (folder / file).is_file() or sha256_of(folder / file) != digest:
                raise RunDirError(
                    f"{folder / file} does not match its meta.json: the evaluation is torn; "
                    f"evaluate the run again"
                )
        tables = {p.stem: _read_csv(p) for p in sorted(folder.glob("*.csv"))}
        bounds = tables.pop("bounds", None)
        if bounds is None:
            raise RunDirError(f"{folder} has no bounds.csv")
        points = tables.pop("points", None)
        return Evaluation(name, folder, meta, bounds, points, tables)


_EXTRA = ("ais", "ais_summary", "gaps", "gaps_summary", "bdmc", "bdmc_summary")


def describe_versions() -> dict[str, str]:
    """Versions of Python and the packages a run's numbers depend on."""
    import arviz
    import numpy as np
    import pyro
    import sklearn
    import torch

    import pyrogen

    return {
        "pyrogen": pyrogen.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "arviz": arviz.__version__,
        "sklearn": sklearn.__version__,
    }


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
