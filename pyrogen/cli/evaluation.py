"""``pyrogen evaluate``, ``compare`` and ``report``: the bounds of runs, side by side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from pyrogen import distributed
from pyrogen.atomic import check_writable, write_text
from pyrogen.cli.outputs import recover_run
from pyrogen.cli.parser import _resolve_device
from pyrogen.errors import ConfigError, RunDirError

__all__ = ["cmd_compare", "cmd_evaluate", "cmd_report", "format_summary", "markdown_table"]


def cmd_evaluate(args: argparse.Namespace, run_dir: str | Path | None = None) -> Any:
    from pyrogen.bounds import evaluate, parse_ks
    from pyrogen.data import load_dataset
    from pyrogen.data.scaling import scale_of_run
    from pyrogen.model import check_model, wants_labels
    from pyrogen.runs import load_run
    from pyrogen.train import seed_everything

    ks = parse_ks(args.ks)
    if args.eval_particles is not None and args.eval_particles < ks[-1]:
        raise ConfigError(f"--eval-particles {args.eval_particles} is below the largest k {ks[-1]}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be a positive integer, got {args.limit}")
    recover_run(run_dir or args.run)
    run = load_run(run_dir or args.run)
    if distributed.is_main():
        check_writable(run.path)  # bounds.csv goes here: a read-only disk fails before the work
    cfg = run.config
    data = load_dataset(
        cfg["data"],
        args.split,
        binarize=cfg.get("binarize"),
        val_fraction=cfg.get("val_fraction", 0.1),
        seed=cfg.get("seed", 0),
        scale=scale_of_run(cfg),
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
        tb_dir = getattr(args, "tensorboard", None) or cfg.get("tensorboard")  # (#14)
        if tb_dir:
            from pyrogen.train.tensorboard import log_run_bounds

            log_run_bounds(tb_dir, run.path, summary)
    if getattr(args, "ais", False) or getattr(args, "gaps", False) or getattr(args, "bdmc", 0):
        from pyrogen.bounds.extra import beyond_is, parse_steps

        tables = beyond_is(
            run.model,
            x,
            *extra,
            ais_steps=parse_steps(args.steps) if args.ais else (),
            chains=args.chains,
            leapfrog_steps=args.leapfrog,
            gaps=args.gaps,
            gap_steps=args.gap_steps,
            eval_particles=args.eval_particles or ks[-1],
            bdmc_points=args.bdmc,
            seed=getattr(args, "seed", 0),
        )
        for name, table in tables.items():
            if distributed.is_main():
                _write_csv(table, run.path / f"{name}.csv")
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
    write_text(path, df.to_csv(index=index))


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

    from pyrogen.report.compare import comparison_table, evaluation_identity, paired_differences
    from pyrogen.runs import read_config

    if args.out:  # a folder that cannot be written fails before the runs are read
        out = Path(args.out)
        check_writable(out, create=True)
    names, configs, bounds, points = [], [], [], []
    for run in args.runs:
        recover_run(run)
        bounds_path = Path(run) / "bounds.csv"
        if not bounds_path.is_file():
            raise RunDirError(f"{run} has no bounds.csv: run `pyrogen evaluate {run}` first")
        names.append(Path(run).name)
        configs.append(read_config(run))
        bounds.append(pd.read_csv(bounds_path).sort_values("k", kind="stable"))
        pts = Path(run) / "points.csv"
        points.append(pd.read_csv(pts) if pts.is_file() else None)
    table = comparison_table(names, configs, bounds, points)
    idents = [evaluation_identity(c, b) for c, b in zip(configs, bounds)]
    paired = paired_differences(names, idents, bounds, points)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep=""))
    if args.out:
        write_text(out / "comparison.csv", table.to_csv(index=False))
        write_text(out / "paired.csv", paired.to_csv(index=False))
        write_text(out / "comparison.md", markdown_table(table))
        print(f"wrote {out / 'comparison.csv'}, {out / 'paired.csv'} and {out / 'comparison.md'}")
    return table


def cmd_report(args: argparse.Namespace) -> Path:
    from pyrogen.report import write_report

    for run in args.runs:
        recover_run(run)
    out = write_report(args.runs, args.out, seed=args.seed, mmd_samples=args.mmd_samples)
    print(f"report: {out} (Markdown: {out.with_suffix('.md')})")
    return out
