"""Starting or resuming a run directory for :func:`pyrogen.fit`: config.json, the copy of the
model's source, the data of a run trained from tensors, and the checks of ``--resume``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import torch

from pyrogen import distributed
from pyrogen.atomic import write_atomically
from pyrogen.errors import ConfigError, RunDirError
from pyrogen.model import GenerativeModel
from pyrogen.runs.models import model_options_of, source_file_of
from pyrogen.runs.rundir import RunDir, describe_versions, now

__all__ = ["DATA_FILE", "describe_run", "open_for_training"]

DATA_FILE = "data.pt"
"""The tensors a run was trained on, when fit was not told the data set's name (``data=``)."""

#: settings that change where or how a run is logged, not what it computes: free on resume
FREE_ON_RESUME = ("device", "tensorboard")


def _command() -> str:
    argv = sys.argv or [""]
    if argv[0].endswith(("pyrogen", "__main__.py")) or "pyrogen" in argv[0]:
        return " ".join(["pyrogen", *argv[1:]])
    return f"pyrogen.fit (from {argv[0] or 'Python'})"


def _plain_options(model: GenerativeModel) -> dict[str, Any]:
    options = model_options_of(model)
    for key, value in options.items():
        try:
            json.dumps(value)
        except TypeError:
            raise ConfigError(
                f"{type(model).__name__} was built with {key}={value!r}, which config.json cannot "
                "hold (numbers, text, lists only): a run directory could not rebuild the model; "
                "pass plain values, or train without out="
            ) from None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def _plain_first(model: GenerativeModel) -> dict[str, Any] | None:
    """The constructor's first argument by name, where config.json can hold it."""
    first = dict(getattr(model, "_pyrogen_first_argument", {}) or {})
    try:
        json.dumps(first)
    except TypeError:
        return None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in first.items()} or None


def describe_run(
    run: RunDir,
    model: GenerativeModel,
    cfg: Any,
    train_x: torch.Tensor,
    val_x: torch.Tensor | None,
    train_y: torch.Tensor | None,
    val_y: torch.Tensor | None,
    run_info: dict | None,
) -> dict[str, Any]:
    """What config.json records beside the settings: the model (class, file, options, a copy of
    its source), the data (name or the saved tensors, shape, classes), versions, the command."""
    cls = type(model)
    info: dict[str, Any] = {
        "model_class": cls.__name__,
        "model_options": _plain_options(model),
        "model_first_argument": _plain_first(model),
        "data_dim": int(train_x[0].numel()),
        "image_shape": None,
        "num_classes": int(train_y.max()) + 1 if train_y is not None and len(train_y) else None,
        "command": _command(),
        "date": now(),
        "world_size": distributed.world_size(),
        "versions": describe_versions(),
    }
    info.update(run_info or {})
    file = source_file_of(cls)
    info.setdefault("model_file", str(file) if file else None)
    info.setdefault("model_spec", f"{file}:{cls.__name__}" if file else cls.__name__)
    if file is not None:
        info.update(run.save_source(file))
    if cfg.data is None:  # tensors from Python: kept, so that every command can load them
        splits = {"train": {"x": train_x.cpu()}}
        if train_y is not None:
            splits["train"]["y"] = train_y.cpu()
        if val_x is not None:
            splits["val"] = {"x": val_x.cpu(), **({"y": val_y.cpu()} if val_y is not None else {})}
        write_atomically(run.path / DATA_FILE, lambda f: torch.save(splits, f))
        info["data_file"] = DATA_FILE
    elif "image_shape" not in (run_info or {}):
        info.update(_describe_data(cfg))
    return info


def _describe_data(cfg: Any) -> dict[str, Any]:
    from pyrogen.data import load_dataset

    try:
        data = load_dataset(
            cfg.data,
            "val",
            binarize=None,
            val_fraction=cfg.val_fraction,
            seed=cfg.seed,
            scale=cfg.scale,
        )
    except Exception as e:
        raise ConfigError(f"data={cfg.data!r} names data that do not load: {e}") from None
    return {"image_shape": data.image_shape, "num_classes": data.num_classes, "scale": data.scale}


def open_for_training(
    run: RunDir,
    model: GenerativeModel,
    cfg: Any,
    train_x: torch.Tensor,
    val_x: torch.Tensor | None,
    train_y: torch.Tensor | None,
    val_y: torch.Tensor | None,
    resume: bool,
    override: bool,
    given: set[str],
    run_info: dict | None,
) -> tuple[Any, dict | None, Callable[[], None]]:
    """Checks a new run's directory, or a resumed run's settings against those given.

    Returns:
        (the settings to train with, the checkpoint to resume from or None, and ``commit``,
        which writes config.json (and the source, and the data of a run from tensors): fit
        calls it once the pair has passed its checks and the checkpoint has loaded, so a run
        that fails before changes nothing).

    Raises:
        RunDirError: a new run over an existing one, or a resume without a checkpoint.
        ConfigError: on resume, a given setting that differs from the run's (without
            ``override``), or fewer epochs than the run has done.
    """
    main = distributed.is_main()
    if not resume:
        if run.has_checkpoint():
            raise RunDirError(
                f"{run.path} already holds a run; resume it or choose another directory"
            )

        def commit_new() -> None:
            if main:
                info = describe_run(run, model, cfg, train_x, val_x, train_y, val_y, run_info)
                run.write_config({**cfg.to_dict(), **info, "commands": [info["command"]]})

        return cfg, None, commit_new

    if not run.has_checkpoint():
        raise RunDirError(
            f"{run.path} has no checkpoint.pt to resume from (it stopped before its first one): "
            "start it again with --overwrite"
        )
    saved_config = run.read_config()
    saved = run.train_config()
    checkpoint = run.read_checkpoint()
    done = int(checkpoint.get("epoch", 0))
    changes = {
        name: (getattr(saved, name), getattr(cfg, name))
        for name in sorted(given)
        if name != "epochs" and name in saved.names() and getattr(saved, name) != getattr(cfg, name)
    }
    refused = {k: v for k, v in changes.items() if k not in FREE_ON_RESUME}
    if refused and not override:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise ConfigError(
            f"--resume continues the run with its own settings, but these differ: {listed}; "
            "pass --override to change them (recorded in config.json)"
        )
    epochs = cfg.epochs if "epochs" in given else saved.epochs
    if epochs < done:
        raise ConfigError(
            f"{run.path} has done {done} epochs; --epochs {epochs} is below that (give the total "
            f"to reach, at least {done})"
        )
    resumed = saved.replace(epochs=epochs, **{k: new for k, (_, new) in changes.items()})

    def commit_resumed() -> None:
        if not main:
            return
        run.remove_stale_temporaries()
        entry: dict[str, Any] = {"date": now(), "command": _command()}
        if changes:
            entry["changes"] = {k: [old, new] for k, (old, new) in changes.items()}
        saved_config.pop("format", None)
        run.write_config(
            {
                **saved_config,
                **resumed.to_dict(),
                "commands": [*saved_config.get("commands", []), entry["command"]],
                "overrides": [*saved_config.get("overrides", []), entry]
                if changes
                else saved_config.get("overrides", []),
            }
        )
        from pyrogen.train.hooks import HISTORY_COLUMNS

        # a kill between checkpoint.pt and history.csv: the latter catches up
        run.write_history([dict(r) for r in checkpoint["history"]], HISTORY_COLUMNS)

    return resumed, checkpoint, commit_resumed
