"""``pyrogen evaluate``, ``compare`` and ``report``: the bounds of runs, side by side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pyrogen import distributed
from pyrogen.atomic import check_writable, write_text
from pyrogen.cli.outputs import recover_run

__all__ = ["cmd_compare", "cmd_evaluate", "cmd_report", "format_summary", "markdown_table"]


def cmd_evaluate(args: argparse.Namespace, run_dir: str | Path | None = None) -> Any:
    """``pyrogen evaluate``: :func:`pyrogen.evaluate_run`, then the table on stdout."""
    from pyrogen.bounds.extra import parse_steps
    from pyrogen.runs import evaluate_run, read_config

    quiet = getattr(args, "quiet", False)
    run = run_dir or args.run
    recover_run(run)
    if distributed.is_main():
        check_writable(Path(run))  # the evaluation goes here: a read-only disk fails first
    ais = getattr(args, "ais", False)
    seed = getattr(args, "seed", None)
    seed = int(read_config(run).get("seed", 0)) if seed is None else int(seed)
    ev = evaluate_run(
        run,
        ks=args.ks,
        num_particles=args.eval_particles,
        split=args.split,
        limit=args.limit,
        batch_size=getattr(args, "batch_size", None),
        seed=seed,
        device=getattr(args, "device", None) or "cpu",
        progress=not quiet and sys.stderr.isatty(),
        ais_steps=parse_steps(args.steps) if ais else (),
        chains=getattr(args, "chains", 16),
        leapfrog_steps=getattr(args, "leapfrog", 10),
        gaps=getattr(args, "gaps", False),
        gap_steps=getattr(args, "gap_steps", 300),
        bdmc_points=getattr(args, "bdmc", 0),
        tensorboard=getattr(args, "tensorboard", None),
    )
    summary = ev.summary
    cfg = read_config(run)
    ckpt = ev.meta["checkpoint"]
    data = cfg.get("data") or "the saved data"
    print(
        f"bounds on {ev.meta['points']} {args.split} points of {data}"
        f" (K={ev.meta['K']} draws per point; checkpoint after epoch {ckpt['epoch']}"
        f"{', step ' + str(ckpt['step']) + ' of the next' if ckpt['step'] else ''}; "
        "nats, higher is better):"
    )
    print(format_summary(summary))
    if "exact" in summary:
        top = summary.iloc[-1]
        print(
            f"exact log p(x) (closed form): {top['exact']:.4f}; log p^(x) - exact = "
            f"{top['estimate'] - top['exact']:+.4f} nats (Monte Carlo se {top['stderr']:.4f}); "
            f"ELBO - exact = {summary.iloc[0]['estimate'] - top['exact']:+.4f} nats"
        )
    if ev.path is not None:
        print(f"evaluation {ev.name}: {ev.path}")
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
    from pyrogen.report.compare import compare

    if args.out:  # a folder that cannot be written fails before the runs are read
        check_writable(Path(args.out), create=True)
    for run in args.runs:
        recover_run(run)
    table = compare(args.runs, args.out)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep=""))
    if args.out:
        out = Path(args.out)
        print(f"wrote {out / 'comparison.csv'}, {out / 'paired.csv'} and {out / 'comparison.md'}")
    return table


def cmd_report(args: argparse.Namespace) -> Path:
    from pyrogen.report import write_report

    for run in args.runs:
        recover_run(run)
    out = write_report(args.runs, args.out, seed=args.seed, mmd_samples=args.mmd_samples)
    print(f"report: {out} (Markdown: {out.with_suffix('.md')})")
    return out
