"""The ``pyrogen`` command: train, evaluate, compare, sample, report, and run (all of them).

Errors in the user's input print one or two lines and exit with status 2; ``--debug`` shows the
traceback. An interrupted training run exits 130 (SIGINT) or 143 (SIGTERM) after a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import tomllib
import torch

from pyrogen import distributed
from pyrogen.errors import ConfigError, PyrogenError, RunDirError

__all__ = ["main", "run_model_file"]

TRAIN_KEYS = {
    "data",
    "epochs",
    "batch_size",
    "lr",
    "objective",
    "particles",
    "latent_dim",
    "hidden_dims",
    "likelihood",
    "seed",
    "out",
    "binarize",
    "val_fraction",
    "lr_schedule",
    "kl_warmup",
    "clip_norm",
    "patience",
    "on_nan",
    "device",
    "quiet",
    "ks",
    "eval_particles",
    "split",
    "limit",
}


DEFAULT_EPOCHS = 30


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got '{text}'"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got '{text}'")
    return values


def _add_eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ks",
        default="1,10,100,1000",
        help="k of the IWAE bounds, comma-separated; 1 is the ELBO (default %(default)s)",
    )
    p.add_argument(
        "--eval-particles",
        type=int,
        default=None,
        help="pool size K per data point (default: the largest k)",
    )
    p.add_argument(
        "--split",
        default="test",
        choices=["test", "val", "train"],
        help="data split to evaluate (default %(default)s)",
    )
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N points")


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        nargs="?",
        default=None,
        help="models/vae.py, models/vae.py:ClassName, or a zoo name (vae); "
        "with --resume, read from the run's config.json",
    )
    p.add_argument(
        "--data",
        default="digits",
        help="digits, fashion-mnist, mnist, or a .npy/.npz/.csv/.pt file",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"default {DEFAULT_EPOCHS}; with --resume, the run's own",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--objective", default="elbo", help="elbo (Trace_ELBO), mean-field, iwae or iwae-dreg"
    )
    p.add_argument("--particles", type=int, default=1, help="ELBO particles, or k for IWAE")
    p.add_argument("--latent-dim", type=int, default=None)
    p.add_argument("--hidden-dims", type=_int_list, default=None, help="e.g. 400 or 200,200")
    p.add_argument("--likelihood", default=None, help="bernoulli or gaussian (models that take it)")
    p.add_argument(
        "--binarize",
        default=None,
        choices=["dynamic", "static", "none"],
        help="default: dynamic for digits/mnist/fashion-mnist, none for files",
    )
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--lr-schedule", default="constant", help="constant, cosine or step")
    p.add_argument("--kl-warmup", type=int, default=0, help="epochs of KL warm-up")
    p.add_argument("--clip-norm", type=float, default=None)
    p.add_argument("--patience", type=int, default=None, help="early stopping on validation ELBO")
    p.add_argument("--on-nan", default="stop", choices=["stop", "skip"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run directory (default runs/MODEL-DATA-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="N > 1: data parallel in N processes on this machine (through torchrun)",
    )
    p.add_argument("--config", default=None, help="a TOML file of these options")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyrogen",
        description="Deep latent-variable generative models on Pyro with honest likelihoods.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model/guide pair by SVI into a run directory")
    _add_train_options(p)

    p = sub.add_parser("run", help="the main job: train, evaluate the bounds, report")
    _add_train_options(p)
    _add_eval_options(p)

    p = sub.add_parser("evaluate", help="ELBO, IWAE_k and log p(x) per data point for a run")
    p.add_argument("run")
    _add_eval_options(p)
    p.add_argument("--batch-size", type=int, default=None, help="data points per pool")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="N > 1: shard the points over N processes (through torchrun)",
    )

    p = sub.add_parser("compare", help="put evaluated runs side by side")
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default=None, help="folder for comparison.csv and comparison.md")

    p = sub.add_parser("sample", help="draw new x from a trained model")
    p.add_argument("run")
    p.add_argument("-n", "--num", type=int, default=64)
    p.add_argument("--out", default=None, help="PNG for image data, else .npy/.csv")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", type=int, default=None, help="class to draw (conditional models)")

    p = sub.add_parser("report", help="write the HTML/Markdown report of one or more runs")
    p.add_argument("runs", nargs="+")
    p.add_argument(
        "--out",
        default=None,
        help="HTML file (default RUN/report.html for one run, else report.html)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the model samples")
    p.add_argument(
        "--mmd-samples",
        type=int,
        default=1000,
        help="model samples and test points compared by MMD² (default %(default)s)",
    )
    for a in (parser, *sub.choices.values()):
        if a is not parser:
            a.add_argument(
                "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
            )  # keeps `pyrogen --debug CMD` in effect
    return parser


def _apply_config(
    args: argparse.Namespace, parser: argparse.ArgumentParser, argv: list[str]
) -> argparse.Namespace:
    """Options from --config FILE.toml, overridden by those given on the command line."""
    path = Path(args.config)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    values = {k.replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - TRAIN_KEYS)
    if unknown:
        import difflib

        close = [m for k in unknown for m in difflib.get_close_matches(k, TRAIN_KEYS, 1, 0.5)]
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(
            f"config file {path} has unknown keys: {', '.join(unknown)} "
            f"({hint}known: {', '.join(sorted(TRAIN_KEYS))})"
        )
    given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in argv if a.startswith("--")}
    for key, value in values.items():
        if key not in given:
            if key == "hidden_dims" and isinstance(value, list):
                value = tuple(int(v) for v in value)
            setattr(args, key, value)
    return args


def _default_binarize(data: str) -> str:
    return "dynamic" if data in ("digits", "mnist", "fashion-mnist") else "none"


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available here (use cpu or auto)")
    try:
        return distributed.local_device(torch.device(name))
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}': use cpu, cuda or auto") from None


def _check_train_options(args: argparse.Namespace) -> None:
    for name in ("epochs", "batch_size", "particles"):
        value = getattr(args, name)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if not args.lr > 0:
        raise ConfigError(f"--lr must be positive, got {args.lr}")
    from pyrogen.train import OBJECTIVES

    if args.objective not in OBJECTIVES:
        raise ConfigError(
            f"unknown objective '{args.objective}': choose one of {', '.join(OBJECTIVES)}"
        )
    if not 0 < args.val_fraction < 1:
        raise ConfigError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")


def _load_splits(name: str, binarize: str, val_fraction: float, seed: int) -> dict:
    from pyrogen.data import load_dataset

    b = None if binarize == "none" else binarize
    return {
        split: load_dataset(name, split, binarize=b, val_fraction=val_fraction, seed=seed)
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
        saved = read_config(args.out)
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
    binarize = args.binarize or _default_binarize(args.data)
    data = _load_splits(args.data, binarize, args.val_fraction, args.seed)
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

    out = (
        Path(args.out)
        if args.out
        else Path("runs")
        / (f"{model_file.stem}-{Path(args.data).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    )
    out = Path(distributed.from_main(str(out)))  # ranks may read the clock a second apart
    replaced = None  # the run that --overwrite replaces: kept until the new one has a checkpoint
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise RunDirError(
                f"{out} already exists; use --resume to continue it or --overwrite to replace it"
            )
        distributed.barrier()  # every rank has looked before rank 0 removes it
        if distributed.is_main():
            replaced = out.with_name(f".{out.name}.replaced-{os.getpid()}")
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
    from pyrogen.model import wants_labels
    from pyrogen.runs import build_model, load_model_class
    from pyrogen.train import fit

    cls, _ = load_model_class(f"{saved['model_file']}:{saved['model_class']}")
    model = build_model(cls, saved["data_dim"], **saved.get("model_options", {}))
    device = _resolve_device(saved.get("device", "cpu"))
    model.to(device)
    data = _load_splits(
        saved["data"], saved.get("binarize") or "none", saved["val_fraction"], saved["seed"]
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
        **{k: saved[k] for k in keys},
    )
    return out


def cmd_evaluate(args: argparse.Namespace, run_dir: str | Path | None = None) -> Any:
    from pyrogen.bounds import evaluate, parse_ks
    from pyrogen.data import load_dataset
    from pyrogen.model import check_model, wants_labels
    from pyrogen.runs import load_run
    from pyrogen.train import seed_everything

    ks = parse_ks(args.ks)
    if args.eval_particles is not None and args.eval_particles < ks[-1]:
        raise ConfigError(f"--eval-particles {args.eval_particles} is below the largest k {ks[-1]}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be a positive integer, got {args.limit}")
    run = load_run(run_dir or args.run)
    cfg = run.config
    data = load_dataset(
        cfg["data"],
        args.split,
        binarize=cfg.get("binarize"),
        val_fraction=cfg.get("val_fraction", 0.1),
        seed=cfg.get("seed", 0),
    )
    x, y = data.x, data.y
    if args.limit is not None:
        x, y = x[: args.limit], (y[: args.limit] if y is not None else None)
    if data.binarize == "dynamic":  # a train split evaluated: fix one draw
        x = torch.bernoulli(x, generator=torch.Generator().manual_seed(cfg.get("seed", 0)))
    labelled = wants_labels(run.model.model)
    extra = (y,) if labelled else ()
    device = _resolve_device(getattr(args, "device", "cpu"))
    run.model.to(device)
    x, extra = x.to(device), tuple(e.to(device) for e in extra)
    check_model(run.model, x[:8], *(e[:8] for e in extra), per_datapoint=True, all_rows=x)
    seed_everything(getattr(args, "seed", 0))
    quiet = getattr(args, "quiet", False)
    ev = evaluate(
        run.model.model,
        run.model.guide,
        x,
        *extra,
        ks=ks,
        num_particles=args.eval_particles,
        batch_size=getattr(args, "eval_batch", None),
        progress=not quiet and sys.stderr.isatty(),
        seed=getattr(args, "seed", 0),
    )
    summary = ev.summary.copy()
    summary.insert(0, "split", args.split)
    points = ev.points.copy()
    if y is not None:
        points.insert(0, "label", y.numpy())
    exact_fn = getattr(run.model, "exact_log_likelihood", None)
    if callable(exact_fn):  # ground truth, where the model has it (PPCA)
        points["exact_log_px"] = exact_fn(x).double().cpu().numpy()
        summary["exact"] = points["exact_log_px"].mean()
    if distributed.is_main():
        _write_csv(summary, run.path / "bounds.csv")
        _write_csv(points, run.path / "points.csv", index=True)
    print(
        f"bounds on {len(x)} {args.split} points of {cfg['data']} "
        f"(K={args.eval_particles or ks[-1]} draws per point; nats, higher is better):"
    )
    print(format_summary(summary))
    if "exact" in summary:
        top = summary.iloc[-1]
        print(
            f"exact log p(x) (closed form): {top['exact']:.4f}; log p^(x) - exact = "
            f"{top['estimate'] - top['exact']:+.4f} nats (Monte Carlo se {top['stderr']:.4f}); "
            f"ELBO - exact = {summary.iloc[0]['estimate'] - top['exact']:+.4f} nats"
        )
    return summary


def _write_csv(df: Any, path: Path, index: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_csv(tmp, index=index)
    tmp.replace(path)


def format_summary(summary: Any) -> str:
    cols = [
        "bound",
        "estimate",
        "stderr",
        "nll",
        "bits_per_dim",
        "gap",
        "ess",
        "khat",
        "khat_gt_0.7",
    ]
    return summary[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")


def markdown_table(df: Any, float_format: str = "{:.3f}") -> str:
    """A pipe table (GitHub Markdown) of a DataFrame."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if v != v else float_format.format(v)
        return str(v)

    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


def cmd_compare(args: argparse.Namespace) -> Any:
    import pandas as pd

    from pyrogen.runs import read_config

    rows = []
    for run in args.runs:
        cfg = read_config(run)
        bounds_path = Path(run) / "bounds.csv"
        if not bounds_path.is_file():
            raise RunDirError(f"{run} has no bounds.csv: run `pyrogen evaluate {run}` first")
        b = pd.read_csv(bounds_path)
        top = b.iloc[-1]
        row = {
            "run": Path(run).name,
            "model": cfg.get("model_class"),
            "objective": cfg.get("objective"),
            "epochs": cfg.get("epochs"),
            "points": int(top["num_points"]),
        }
        for _, r in b.iterrows():
            row[r["bound"]] = r["estimate"]
        row.update(
            {
                "log_px": top["estimate"],
                "stderr": top["stderr"],
                "nll": top["nll"],
                "bits_per_dim": top["bits_per_dim"],
                "gap": top["gap"],
                "khat_gt_0.7": top["khat_gt_0.7"],
            }
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep=""))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "comparison.csv", index=False)
        (out / "comparison.md").write_text(markdown_table(table))
        print(f"wrote {out / 'comparison.csv'} and {out / 'comparison.md'}")
    return table


def cmd_sample(args: argparse.Namespace) -> Path:
    from pyrogen.model import wants_labels
    from pyrogen.runs import load_run
    from pyrogen.train import seed_everything

    if args.num < 1:
        raise ConfigError(f"-n must be a positive integer, got {args.num}")
    run = load_run(args.run)
    seed_everything(args.seed)
    y = None
    if wants_labels(run.model.model):
        classes = run.config.get("num_classes") or 10
        y = (
            torch.full((args.num,), args.label)
            if args.label is not None
            else torch.arange(args.num) % classes
        )
    x = run.model.sample(args.num, y=y) if y is not None else run.model.sample(args.num)
    shape = run.config.get("image_shape")
    out = Path(args.out) if args.out else run.path / ("samples.png" if shape else "samples.npy")
    if out.suffix == ".png":
        if not shape:
            raise ConfigError(f"{run.config['data']} is not image data; write .npy or .csv")
        save_image_grid(x.cpu(), tuple(shape), out)
    elif out.suffix == ".csv":
        import numpy as np

        np.savetxt(out, x.cpu().numpy(), delimiter=",")
    else:
        import numpy as np

        np.save(out, x.cpu().numpy())
    print(f"wrote {args.num} samples to {out}")
    return out


def save_image_grid(
    x: torch.Tensor, image_shape: tuple[int, int], path: Path, ncol: int | None = None
) -> None:
    """Saves rows of x as a grid of grey images (PNG)."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = x.shape[0]
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    h, w = image_shape
    grid = torch.ones(nrow * (h + 1) + 1, ncol * (w + 1) + 1)
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = x[
            i
        ].reshape(h, w)
    fig, ax = plt.subplots(
        figsize=(min(10, 0.4 * ncol * w / 8 + 1), min(10, 0.4 * nrow * h / 8 + 1))
    )
    ax.imshow(grid.clamp(0, 1).numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


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
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    cmd_report(
        argparse.Namespace(runs=[out], out=out / "report.html", seed=args.seed, mmd_samples=1000)
    )
    print(f"run directory: {out}")
    return out


def cmd_report(args: argparse.Namespace) -> Path:
    from pyrogen.report import write_report

    out = write_report(args.runs, args.out, seed=args.seed, mmd_samples=args.mmd_samples)
    print(f"report: {out} (Markdown: {out.with_suffix('.md')})")
    return out


COMMANDS = {
    "train": cmd_train,
    "run": cmd_run,
    "evaluate": cmd_evaluate,
    "compare": cmd_compare,
    "sample": cmd_sample,
}
COMMANDS["report"] = cmd_report


def run_model_file(
    path: str, class_name: str, args: list[str] | None = None, defaults: tuple[str, ...] = ()
) -> int:
    """``pyrogen run PATH:CLASS`` with a model file's ``defaults`` before the user's ``args``.

    The ``main`` of every zoo file: ``python models/vae.py --data digits --epochs 5`` takes the
    options of ``pyrogen run`` (later options win, so the user's override the defaults).
    """
    argv = list(sys.argv[1:] if args is None else args)
    return main(["run", f"{path}:{class_name}", *defaults, *argv])


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pyrogen`` command; returns the exit status."""
    from pyrogen.train import Interrupted, TrainingError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if (getattr(args, "nproc", None) or 1) > 1 and not distributed.launched():
        return distributed.launch(args.nproc, distributed.strip_option(argv, "--nproc"))
    cleanup = distributed.setup_from_env()  # under torchrun: join the group; rank 0 prints
    try:
        if getattr(args, "config", None):
            args = _apply_config(args, parser, argv)
        result = COMMANDS[args.command](args)
        if args.command == "train":
            print(f"run directory: {result}")
        return 0
    except Interrupted as e:
        print(f"pyrogen: {e}; checkpoint written, continue with --resume", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"pyrogen {args.command}: interrupted", file=sys.stderr)
        return 130
    except (PyrogenError, TrainingError) as e:
        if args.debug:
            raise
        print(f"pyrogen {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
