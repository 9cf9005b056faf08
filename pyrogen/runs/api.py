"""The Python peers of ``pyrogen evaluate`` and the loading of runs: :func:`load_run`,
:func:`load_run_data` and :func:`evaluate_run` (which writes the same files as the command)."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from pyrogen import distributed
from pyrogen.errors import ConfigError, RunDirError
from pyrogen.model import GenerativeModel
from pyrogen.runs.models import build_model, load_model_class
from pyrogen.runs.rundir import RunDir, now
from pyrogen.runs.writing import DATA_FILE
from pyrogen.trace import as_pair

__all__ = ["Run", "RunEvaluation", "evaluate_run", "load_run", "load_run_data", "read_config"]


@dataclass
class Run:
    """A trained run loaded from its directory.

    Attributes:
        path: the run directory; ``rundir`` its :class:`~pyrogen.runs.RunDir`.
        config: config.json as a dict.
        model: the model with the checkpoint's parameters (eval mode).
        history: history.csv, or None.
        epoch, step: the checkpoint's position (epochs done, steps into the next epoch).
        pyro_params: the names of the ``pyro.param`` sites restored into Pyro's param store.
    """

    path: Path
    config: dict
    model: GenerativeModel
    history: pd.DataFrame | None
    epoch: int = 0
    step: int = 0
    pyro_params: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def rundir(self) -> RunDir:
        return RunDir(self.path)


def read_config(run_dir: str | os.PathLike) -> dict:
    """A run's config.json as a dict."""
    return RunDir(run_dir).read_config()


def rebuild_model(rundir: RunDir, config: dict) -> GenerativeModel:
    """The run's model class from its saved source (or, for older runs, its model file), built
    with the run's options."""
    for key in ("model_class", "data_dim"):
        if key not in config:
            raise RunDirError(f"{rundir.path / 'config.json'} lacks the setting '{key}'")
    dim = config["data_dim"]
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise RunDirError(
            f"{rundir.path / 'config.json'} has data_dim {dim!r}: a positive integer is needed"
        )
    source = rundir.source(config)
    file = config.get("model_file") or (str(source) if source else None)
    if file is None:
        raise RunDirError(
            f"{rundir.path / 'config.json'} names neither a model_file nor a model_source: "
            f"{config['model_class']} was defined outside a file (a notebook or a script's "
            "__main__), or the file lost them; pass the model, load_run(DIR, model=...)"
        )
    cls, _ = load_model_class(f"{file}:{config['model_class']}", source=source)
    # the constructor's first argument as the model was built (recorded by name), else, for
    # older runs, the data dimension
    first = config.get("model_first_argument") or {"data_dim": config["data_dim"]}
    return build_model(cls, next(iter(first.values())), **config.get("model_options", {}))


def load_run(run_dir: str | os.PathLike, model: GenerativeModel | None = None) -> Run:
    """Rebuilds the model of a run directory and loads its checkpoint (tensors only).

    The model class comes from the source saved in the run (``model_source/``, checked against
    its sha256), so editing the model file later changes nothing about the run; the file's
    folder is importable for its sibling modules. ``pyro.param`` values go back into Pyro's
    param store.

    Arguments:
        run_dir: the run directory, or ``"pretrained:NAME"`` (:mod:`pyrogen.pretrained`).
        model: an instance to load the parameters into instead (a class defined in a notebook).
    """
    from pyrogen.pretrained import resolve
    from pyrogen.train.state import load_parameters

    rundir = RunDir(resolve(run_dir))
    config = rundir.read_config()
    if not rundir.has_checkpoint():
        raise RunDirError(f"{rundir.path} has no checkpoint.pt: train it first (pyrogen train ...)")
    if model is None:
        model = rebuild_model(rundir, config)
    checkpoint = rundir.read_checkpoint()
    load_parameters(model, checkpoint, str(rundir.checkpoint_path), as_pair(model).scope)
    model.eval()
    return Run(
        rundir.path,
        config,
        model,
        rundir.read_history(),
        int(checkpoint.get("epoch", 0)),
        int(checkpoint.get("step", 0)),
        tuple(checkpoint.get("pyro_params", {})),
    )


def load_run_data(config: dict, split: str, run_dir: str | os.PathLike | None = None) -> Any:
    """A split of the data a run was trained on, as a :class:`~pyrogen.data.Dataset`: the named
    data set, or the tensors that ``fit`` saved in the run (which have no test split)."""
    from pyrogen.data import Dataset, load_dataset
    from pyrogen.data.scaling import scale_of_run

    if config.get("protocol_settings"):  # a published protocol's split and binarization
        from pyrogen.data.protocols import protocol_splits

        settings = config["protocol_settings"]
        if split not in ("train", "val", "test"):
            raise ConfigError(f"split must be train, val or test, got {split!r}")
        return Dataset(
            x=protocol_splits(settings)[split],
            y=None,
            name=f"{settings['data']} ({settings.get('name', 'protocol')} protocol)",
            split=split,
            binarize="dynamic" if split == "train" else "static",
            image_shape=tuple(config["image_shape"]) if config.get("image_shape") else None,
            num_classes=None,
            scale=None,
        )
    if config.get("data_file"):
        if run_dir is None:
            raise RunDirError("the run's data are saved in its directory: pass run_dir")
        from pyrogen.train.checkpoints import load_checkpoint

        splits = load_checkpoint(Path(run_dir) / config["data_file"])
        if split not in splits:
            raise RunDirError(
                f"{run_dir} was trained from tensors given to fit, which kept the splits "
                f"{', '.join(splits)} but no {split} split: evaluate --split val, or pass "
                "fit the data set's name (data=...)"
            )
        part = splits[split]
        binarize = config.get("binarize")
        return Dataset(
            x=part["x"],
            y=part.get("y"),
            name=str(Path(run_dir) / DATA_FILE),
            split=split,
            binarize="static" if binarize == "dynamic" and split != "train" else binarize,
            image_shape=tuple(config["image_shape"]) if config.get("image_shape") else None,
            num_classes=config.get("num_classes"),
            scale=None,
        )
    if "data" not in config or config["data"] is None:
        where = Path(run_dir) / "config.json" if run_dir is not None else "the run's config.json"
        raise RunDirError(
            f"{where} lacks the setting 'data' (the data set the run was trained on): restore "
            "it, or train the run again with --overwrite"
        )
    return load_dataset(
        config["data"],
        split,
        binarize=config.get("binarize"),
        val_fraction=config.get("val_fraction", 0.1),
        seed=config.get("seed", 0),
        scale=scale_of_run(config),
    )


@dataclass
class RunEvaluation:
    """What :func:`evaluate_run` computed and where it committed it."""

    name: str
    path: Path | None
    summary: pd.DataFrame
    points: pd.DataFrame
    extra: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def evaluation_name(num_particles: int, split: str, limit: int | None) -> str:
    """``is-K<K>`` (importance sampling with K draws per point), with the split when it is not
    the test split and ``-n<N>`` for the first N points only."""
    name = f"is-K{num_particles}"
    if split != "test":
        name += f"-{split}"
    if limit is not None:
        name += f"-n{limit}"
    return name


def evaluate_run(
    run: str | os.PathLike | Run,
    *,
    ks: Sequence[int] | str = (1, 10, 100, 1000),
    num_particles: int | None = None,
    split: str = "test",
    limit: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
    ais_steps: Sequence[int] = (),
    chains: int = 16,
    leapfrog_steps: int = 10,
    gaps: bool = False,
    gap_steps: int = 300,
    bdmc_points: int = 0,
    tensorboard: str | None = None,
    write: bool = True,
) -> RunEvaluation:
    """ELBO, IWAE_k and the log p(x) estimate per point of a run's data (what ``pyrogen evaluate``
    does), committed as one unit into ``evaluations/<name>/`` of the run.

    Arguments:
        run: the run directory (or a loaded :class:`Run`).
        ks: the k of the IWAE bounds (1 is the ELBO), a list or ``"1,10,100"``.
        num_particles: K draws per point (default: the largest k).
        split, limit: the data split, and only its first ``limit`` points.
        batch_size: data points per pool (peak memory is proportional to it).
        seed, device, progress: as for :func:`pyrogen.evaluate`.
        ais_steps, chains, leapfrog_steps, gaps, gap_steps, bdmc_points: beyond importance
            sampling (:func:`pyrogen.bounds.extra.beyond_is`).
        tensorboard: also log the bounds table there (default: the run's own folder, if any).
        write: commit the evaluation to the run directory (default).

    Raises:
        RunDirError: the run is being written by another process, or its checkpoint holds
            non-finite parameters, or the estimates are not finite.
    """
    from pyrogen.bounds import evaluate, parse_ks
    from pyrogen.cli.parser import _resolve_device
    from pyrogen.model import check_model, wants_labels
    from pyrogen.train import seed_everything
    from pyrogen.train.state import non_finite_parameters

    ks = parse_ks(ks)
    if num_particles is not None and num_particles < ks[-1]:
        raise ConfigError(f"--eval-particles {num_particles} is below the largest k {ks[-1]}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be a positive integer, got {limit}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size}")
    path = run.path if isinstance(run, Run) else Path(run)
    rundir = RunDir(path)
    lock = rundir.lock("evaluate") if write and distributed.is_main() else contextlib.nullcontext()
    with lock:
        loaded = run if isinstance(run, Run) else load_run(path)
        bad = non_finite_parameters(loaded.model, loaded.pyro_params, as_pair(loaded.model).scope)
        if bad:
            raise RunDirError(
                f"the checkpoint of {path} holds non-finite parameters ({', '.join(bad[:5])}): "
                "there is nothing sound to evaluate; resume from an earlier run or retrain"
            )
        cfg = loaded.config
        data = load_run_data(cfg, split, path)
        x, y = data.x, data.y
        if limit is not None:
            x, y = x[:limit], (y[:limit] if y is not None else None)
        if data.binarize == "dynamic":  # a train split evaluated: fix one draw
            x = torch.bernoulli(x, generator=torch.Generator().manual_seed(cfg.get("seed", 0)))
        extra = (y,) if wants_labels(loaded.model.model) else ()
        dev = _resolve_device(device)
        loaded.model.to(dev)
        x, extra = x.to(dev), tuple(e.to(dev) for e in extra)
        rows = min(x.shape[0], batch_size or 256)  # a real batch of the evaluation's size
        info = check_model(
            loaded.model, x[:rows], *(e[:rows] for e in extra), per_datapoint=True, all_rows=x
        )
        seed_everything(seed)
        ev = evaluate(
            loaded.model.model,
            loaded.model.guide,
            x,
            *extra,
            ks=ks,
            num_particles=num_particles,
            batch_size=batch_size,
            progress=progress,
            seed=seed,
            layout=info.layout,  # the check's probe: not run a second time
        )
        summary = ev.summary.copy()
        summary.insert(0, "split", split)
        points = ev.points.copy()
        if y is not None:
            points.insert(0, "label", y.cpu().numpy())
        exact_fn = getattr(loaded.model, "exact_log_likelihood", None)
        if callable(exact_fn):  # ground truth, where the model has it (PPCA)
            points["exact_log_px"] = exact_fn(x).double().cpu().numpy()
            summary["exact"] = points["exact_log_px"].mean()
        _check_finite(summary, path)
        tables: dict[str, pd.DataFrame] = {}
        if ais_steps or gaps or bdmc_points:
            from pyrogen.bounds.extra import beyond_is

            tables = beyond_is(
                loaded.model,
                x,
                *extra,
                ais_steps=ais_steps,
                chains=chains,
                leapfrog_steps=leapfrog_steps,
                gaps=gaps,
                gap_steps=gap_steps,
                eval_particles=num_particles or ks[-1],
                bdmc_points=bdmc_points,
                seed=seed,
            )
        name = evaluation_name(num_particles or ks[-1], split, limit)
        meta = {
            "name": name,
            "estimator": "is",
            "K": int(num_particles or ks[-1]),
            "ks": [int(k) for k in ks],
            "split": split,
            "points": len(x),
            "limit": limit,
            "seed": seed,
            "batch_size": batch_size,
            "checkpoint": {"epoch": loaded.epoch, "step": loaded.step},
            "date": now(),
        }
        target = None
        if write and distributed.is_main():
            target = rundir.commit_evaluation(
                name, {"bounds": summary, "points": points, **tables}, meta
            )
            tb_dir = tensorboard or cfg.get("tensorboard")
            if tb_dir:
                from pyrogen.train.tensorboard import log_run_bounds

                log_run_bounds(tb_dir, path, summary)
    return RunEvaluation(name, target, summary, points, tables, meta)


def _check_finite(summary: pd.DataFrame, path: Path) -> None:
    for column in ("estimate", "stderr"):
        values = summary[column].tolist()
        if any(not math.isfinite(v) for v in values):
            raise RunDirError(
                f"the evaluation of {path} gave non-finite {column}s ({values}): nothing was "
                "written; the model's log-weights are not finite on these data"
            )
