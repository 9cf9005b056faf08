"""``pyrogen train`` (new, --resume, --overwrite) and ``pyrogen run`` (train, evaluate, report)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from pyrogen import distributed
from pyrogen.atomic import write_text
from pyrogen.cli.evaluation import cmd_evaluate, cmd_report
from pyrogen.cli.outputs import check_run_out, recover_run, replaced_name
from pyrogen.cli.parser import (
    DEFAULT_EPOCHS,
    _check_train_options,
    _default_binarize,
    _resolve_device,
)
from pyrogen.errors import ConfigError, RunDirError

__all__ = ["cmd_run", "cmd_train"]


def _load_splits(
    name: str, binarize: str, val_fraction: float, seed: int, scale: str | None = None
) -> dict:
    from pyrogen.data import load_dataset

    b = None if binarize == "none" else binarize
    return {
        split: load_dataset(
            name, split, binarize=b, val_fraction=val_fraction, seed=seed, scale=scale
        )
        for split in ("train", "val")
    }


def cmd_train(args: argparse.Namespace) -> Path:
    """Trains; returns the run directory."""
    from pyrogen.model import check_model, wants_labels
    from pyrogen.runs import build_model, load_model_class, read_config
    from pyrogen.train import fit, seed_everything

    explicit_epochs = args.epochs
    if args.epochs is None:
        args.epochs = DEFAULT_EPOCHS
    _check_train_options(args)
    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs --out RUN, the run directory to continue")
        recover_run(args.out)
        saved = read_config(args.out)
        check_run_out(args.out)
        if not (Path(args.out) / "checkpoint.pt").is_file():
            raise RunDirError(
                f"{args.out} has no checkpoint.pt to resume from (it stopped "
                "before its first one): start it again with --overwrite"
            )
        return _train_from_config(
            saved, Path(args.out), resume=True, epochs=explicit_epochs, quiet=args.quiet
        )
    if args.model is None:
        raise ConfigError(
            "give the MODEL to train (a .py file or a zoo name such as vae); "
            "only --resume reads it from the run directory"
        )

    cls, model_file = load_model_class(args.model)
    out = (
        Path(args.out)
        if args.out
        else Path("runs")
        / (f"{model_file.stem}-{Path(args.data).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    )
    if distributed.is_main():
        recover_run(out)
        check_run_out(out)  # a read-only disk or a file in the way fails now, not after an epoch
        if out.exists() and any(out.iterdir()) and not args.overwrite:
            raise RunDirError(
                f"{out} already exists; use --resume to continue it or --overwrite to replace it"
            )
    binarize = args.binarize or _default_binarize(args.data)
    data = _load_splits(args.data, binarize, args.val_fraction, args.seed, args.scale)
    train = data["train"]
    options = {
        "latent_dim": args.latent_dim,
        "hidden_dims": args.hidden_dims,
        "likelihood": args.likelihood,
    }
    if train.num_classes is not None:
        options["num_classes"] = train.num_classes
    seed_everything(args.seed)  # the initial weights depend on the seed alone
    model = build_model(cls, train.data_dim, **options)
    device = _resolve_device(args.device)
    model.to(device)
    labelled = wants_labels(model.model)
    if labelled and train.y is None:
        raise ConfigError(
            f"{cls.__name__} is conditional (model(x, y)) but {args.data} has no labels"
        )
    probe = train.x[:8].to(device)
    if binarize == "dynamic":
        probe = torch.bernoulli(probe, generator=torch.Generator(device).manual_seed(args.seed))
    check_model(
        model,
        probe,
        *((train.y[:8].to(device),) if labelled else ()),
        per_datapoint=True,  # validation and evaluation weigh each point
        all_rows=train.x.to(device) if binarize != "dynamic" else None,
    )
    from pyrogen.train.tensorboard import tensorboard_callbacks  # (--tensorboard, #14)

    callbacks = tensorboard_callbacks(getattr(args, "tensorboard", None))

    out = Path(distributed.from_main(str(out)))  # ranks may read the clock a second apart
    replaced = None  # the run that --overwrite replaces: kept until the new one has a checkpoint
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise RunDirError(
                f"{out} already exists; use --resume to continue it or --overwrite to replace it"
            )
        distributed.barrier()  # every rank has looked before rank 0 removes it
        if distributed.is_main():
            replaced = replaced_name(out)
            out.rename(replaced)
    distributed.barrier()
    config = {
        "command": " ".join(["pyrogen", *sys.argv[1:]]) if sys.argv else "",
        "model_spec": args.model,
        "model_file": str(model_file),
        "model_class": cls.__name__,
        "model_options": {k: v for k, v in options.items() if v is not None},
        "data": args.data,
        "data_dim": train.data_dim,
        "image_shape": train.image_shape,
        "num_classes": train.num_classes,
        "val_fraction": args.val_fraction,
        "scale": train.scale,  # how the user's file was rescaled (None: values as stored)
        "tensorboard": getattr(args, "tensorboard", None),
        "device": str(device),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "world_size": distributed.world_size(),
    }
    settings = dict(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        objective=args.objective,
        num_particles=args.particles,
        seed=args.seed,
        binarize=None if binarize == "none" else binarize,
        lr_schedule=args.lr_schedule,
        kl_warmup=args.kl_warmup,
        clip_norm=args.clip_norm,
        patience=args.patience,
        on_nan=args.on_nan,
    )
    try:
        fit(
            model,
            train.x,
            data["val"].x,
            out=out,
            config=config,
            train_y=train.y if labelled else None,
            val_y=data["val"].y if labelled else None,
            progress=None if not args.quiet else False,
            device=device,
            callbacks=callbacks,
            **settings,
        )
    except BaseException:
        if not (out / "checkpoint.pt").exists():
            shutil.rmtree(out, ignore_errors=True)
            if replaced is not None:  # nothing new to keep: the old run comes back untouched
                replaced.rename(out)
        raise
    finally:
        if replaced is not None and replaced.exists():
            shutil.rmtree(replaced, ignore_errors=True)
    return out


def _train_from_config(
    saved: dict, out: Path, resume: bool, epochs: int | None, quiet: bool
) -> Path:
    from pyrogen.data.scaling import scale_of_run
    from pyrogen.model import wants_labels
    from pyrogen.runs import build_model, load_model_class
    from pyrogen.train import fit
    from pyrogen.train.tensorboard import tensorboard_callbacks

    cls, _ = load_model_class(f"{saved['model_file']}:{saved['model_class']}")
    model = build_model(cls, saved["data_dim"], **saved.get("model_options", {}))
    device = _resolve_device(saved.get("device", "cpu"))
    model.to(device)
    data = _load_splits(
        saved["data"],
        saved.get("binarize") or "none",
        saved["val_fraction"],
        saved["seed"],
        scale_of_run(saved),
    )
    labelled = wants_labels(model.model)
    keys = (
        "batch_size",
        "lr",
        "objective",
        "num_particles",
        "seed",
        "binarize",
        "lr_schedule",
        "kl_warmup",
        "clip_norm",
        "patience",
        "on_nan",
    )
    fit(
        model,
        data["train"].x,
        data["val"].x,
        epochs=max(epochs or 0, saved["epochs"]),
        out=out,
        resume=resume,
        train_y=data["train"].y if labelled else None,
        val_y=data["val"].y if labelled else None,
        progress=None if not quiet else False,
        device=device,
        callbacks=tensorboard_callbacks(saved.get("tensorboard")),
        **{k: saved[k] for k in keys},
    )
    return out


def cmd_run(args: argparse.Namespace) -> Path:
    from pyrogen.bounds import parse_ks

    ks = parse_ks(args.ks)  # bad evaluation options fail before training, not after
    if args.eval_particles is not None and args.eval_particles < ks[-1]:
        raise ConfigError(f"--eval-particles {args.eval_particles} is below the largest k {ks[-1]}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be a positive integer, got {args.limit}")
    started = time.perf_counter()
    out = cmd_train(args)
    print(f"trained in {time.perf_counter() - started:.1f} s; run directory: {out}")
    args.run = str(out)
    cmd_evaluate(args, out)
    if not distributed.is_main():
        return out  # rank 0 writes the report
    with open(out / "config.json") as f:
        cfg = json.load(f)
    cfg["seconds_total"] = round(time.perf_counter() - started, 2)
    write_text(out / "config.json", json.dumps(cfg, indent=2) + "\n")
    cmd_report(
        argparse.Namespace(runs=[out], out=out / "report.html", seed=args.seed, mmd_samples=1000)
    )
    print(f"run directory: {out}")
    return out
