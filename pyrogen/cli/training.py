"""``pyrogen train`` (new, --resume, --overwrite) and ``pyrogen run`` (train, evaluate, report):
the command line's settings to a :class:`~pyrogen.train.config.TrainConfig`, then :func:`fit`."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from pyrogen import distributed
from pyrogen.cli.evaluation import cmd_evaluate, cmd_report
from pyrogen.cli.outputs import check_run_out, recover_run, replaced_name
from pyrogen.cli.parser import _default_binarize, train_settings
from pyrogen.errors import ConfigError, RunDirError

__all__ = ["cmd_run", "cmd_train"]


def _splits(config: dict, out: Path | None) -> dict:
    from pyrogen.runs import load_run_data

    return {split: load_run_data(config, split, out) for split in ("train", "val")}


def _normalise(options: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def cmd_train(args: argparse.Namespace) -> Path:
    """Trains; returns the run directory."""
    from pyrogen.train import TrainConfig

    given = train_settings(args)
    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs --out RUN, the run directory to continue")
        return _resume(args, given)
    if args.model is None:
        raise ConfigError(
            "give the MODEL to train (a .py file or a zoo name such as vae); "
            "only --resume reads it from the run directory"
        )
    given.setdefault("data", "digits")
    given.setdefault("device", "cpu")
    given.setdefault("binarize", _default_binarize(given["data"]))
    options = given.pop("model_options", {})
    cfg = TrainConfig.from_dict(given, "the options")  # every bad value named before any work
    return _train_new(args, cfg, options)


def _train_new(args: argparse.Namespace, cfg: object, options: dict) -> Path:
    from pyrogen.runs import RunDir, build_model, coerce_options, load_model_class
    from pyrogen.train import fit, seed_everything
    from pyrogen.train.step import check_optimizer
    from pyrogen.train.tensorboard import tensorboard_callbacks

    check_optimizer(cfg.optimizer)
    cls, model_file = load_model_class(args.model)
    options = coerce_options(cls, options)  # an unknown key: named, with the constructor's
    out = (
        Path(args.out)
        if args.out
        else Path("runs")
        / (f"{model_file.stem}-{Path(cfg.data).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    )
    out = Path(distributed.from_main(str(out)))  # ranks may read the clock a second apart
    if distributed.is_main():
        recover_run(out)
        check_run_out(out)  # a read-only disk or a file in the way fails now, not after an epoch
    if out.exists() and any(p.name != ".lock" for p in out.iterdir()) and not args.overwrite:
        raise RunDirError(
            f"{out} already exists; use --resume to continue it or --overwrite to replace it"
        )
    data = _splits({**cfg.to_dict()}, None)
    train = data["train"]
    if train.num_classes is not None:
        options.setdefault("num_classes", train.num_classes)
    seed_everything(cfg.seed)  # the initial weights depend on the seed alone
    model = build_model(cls, train.data_dim, **options)
    from pyrogen.model import wants_labels

    labelled = wants_labels(model.model)
    if labelled and train.y is None:
        raise ConfigError(
            f"{cls.__name__} is conditional (model(x, y)) but {cfg.data} has no labels"
        )
    callbacks = tensorboard_callbacks(cfg.tensorboard)
    replaced = None  # the run that --overwrite replaces: kept until the new one has a checkpoint
    if out.exists() and any(out.iterdir()):
        distributed.barrier()  # every rank has looked before rank 0 moves it
        if distributed.is_main():
            # not while another process writes it (create: a run killed before its config.json
            # is still locked and replaced)
            with RunDir(out).lock("train --overwrite", create=True):
                pass
            replaced = replaced_name(out)
            out.rename(replaced)
    distributed.barrier()
    run_info = {
        "command": " ".join(["pyrogen", *sys.argv[1:]]) if sys.argv else "",
        "model_spec": args.model,
        "model_file": str(model_file),
        "data_dim": train.data_dim,
        "image_shape": train.image_shape,
        "num_classes": train.num_classes,
        "scale": train.scale,  # how the user's file was rescaled (None: values as stored)
    }
    try:
        fit(
            model,
            train.x,
            data["val"].x,
            out=RunDir(out),
            config=cfg.replace(model_options=_normalise(options)),
            run_info=run_info,
            train_y=train.y if labelled else None,
            val_y=data["val"].y if labelled else None,
            progress=None if not args.quiet else False,
            callbacks=callbacks,
        )
    except BaseException:
        if not (out / "checkpoint.pt").exists() and distributed.is_main():
            shutil.rmtree(out, ignore_errors=True)
            if replaced is not None:  # nothing new to keep: the old run comes back untouched
                replaced.rename(out)
        raise
    finally:
        if replaced is not None and replaced.exists():
            shutil.rmtree(replaced, ignore_errors=True)
    return out


def _resume(args: argparse.Namespace, given: dict) -> Path:
    from pyrogen.model import wants_labels
    from pyrogen.runs import RunDir, coerce_options
    from pyrogen.runs.api import rebuild_model
    from pyrogen.train import fit
    from pyrogen.train.tensorboard import tensorboard_callbacks

    recover_run(args.out)
    run = RunDir(args.out)
    saved = run.read_config()
    check_run_out(args.out)
    if not run.has_checkpoint():
        raise RunDirError(
            f"{args.out} has no checkpoint.pt to resume from (it stopped "
            "before its first one): start it again with --overwrite"
        )
    model = rebuild_model(run, saved)
    if "model_options" in given:
        given["model_options"] = _normalise(
            {
                **saved.get("model_options", {}),
                **coerce_options(type(model), given["model_options"]),
            }
        )
        if given["model_options"] == saved.get("model_options", {}):
            del given["model_options"]
        else:
            raise ConfigError(
                f"--resume cannot change the model's options ({saved.get('model_options')} -> "
                f"{given['model_options']}): the checkpoint belongs to the model as built; train "
                "a new run instead"
            )
    if not saved.get("data_file"):  # the split of a named data set depends on these
        saved["val_fraction"], saved["seed"]  # noqa: B018 - a MissingSetting names a lost one
    data = _splits(saved, run.path)
    labelled = wants_labels(model.model)
    fit(
        model,
        data["train"].x,
        data["val"].x,
        out=run,
        resume=True,
        override=args.override,
        train_y=data["train"].y if labelled else None,
        val_y=data["val"].y if labelled else None,
        progress=None if not args.quiet else False,
        callbacks=tensorboard_callbacks(given.get("tensorboard", saved.get("tensorboard"))),
        **given,
    )
    return run.path


def cmd_run(args: argparse.Namespace) -> Path:
    from pyrogen.bounds import parse_ks
    from pyrogen.runs import RunDir

    ks = parse_ks(args.ks)  # bad evaluation options fail before training, not after
    if args.eval_particles is not None and args.eval_particles < ks[-1]:
        raise ConfigError(f"--eval-particles {args.eval_particles} is below the largest k {ks[-1]}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be a positive integer, got {args.limit}")
    started = time.perf_counter()
    out = cmd_train(args)
    print(f"trained in {time.perf_counter() - started:.1f} s; run directory: {out}")
    args.run = str(out)
    args.batch_size = None  # the training batch is not the evaluation's
    cmd_evaluate(args, out)
    if not distributed.is_main():
        return out  # rank 0 writes the report
    run = RunDir(out)
    with run.lock("run"):
        run.update_config(seconds_total=round(time.perf_counter() - started, 2))
    cmd_report(
        argparse.Namespace(
            runs=[out], out=out / "report.html", seed=args.seed or 0, mmd_samples=1000
        )
    )
    print(f"run directory: {out}")
    return out
