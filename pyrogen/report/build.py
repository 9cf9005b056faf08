"""``write_report``: read run directories, compute what the tables lack, draw, write the page.

The report only reads runs: config.json, history.csv, bounds.csv and points.csv, and the trained
model through :func:`pyrogen.runs.load_run` for samples, reconstructions and latent codes.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pyrogen.atomic import check_writable, write_text
from pyrogen.errors import ConfigError, RunDirError
from pyrogen.report import figures as F
from pyrogen.report.compare import (
    comparable_key,
    evaluation_identity,
    paired_differences,
    significant_marks,
)
from pyrogen.report.inline import ReportPath
from pyrogen.report.mmd import MMD
from pyrogen.report.page import Page, ranked_caption
from pyrogen.report.tables import (
    RunTables,
    best_rows,
    read_run_tables,
    summary_table,
    unique_names,
)
from pyrogen.report.views import (
    MODEL_ERRORS,
    RunView,
    images_figure,
    latent_map_inputs,
    traversal_panel,
)

__all__ = ["write_report"]


def _comparable(t: RunTables) -> tuple:
    """Runs whose bounds can be ranked together: same data, binarization, split, evaluated
    points and estimator (:func:`~pyrogen.report.compare.comparable_key`)."""
    return comparable_key(evaluation_identity(t.config, t.bounds))


def _evaluation_label(r: RunTables) -> str:
    """Which evaluation of the run the report shows: its name, split, points, K and the
    checkpoint it scored."""
    ev = r.evaluation
    if not ev:
        return "none"
    if ev.get("legacy"):
        return f"{ev.get('name', 'bounds.csv')} (written before evaluations were kept apart)"
    ckpt = ev.get("checkpoint", {})
    return (
        f"{ev['name']}: {ev.get('points')} {ev.get('split')} points, K={ev.get('K')}, checkpoint "
        f"after epoch {ckpt.get('epoch')}"
        + (f" (+{ckpt['step']} steps)" if ckpt.get("step") else "")
    )


def _provenance(page: Page, runs: Sequence[RunTables], command: str) -> None:
    page.section("What produced it", "provenance")
    rows = [
        {
            "run": r.name,
            "command": r.config.get("command", ""),
            "seed": r.config.get("seed"),
            "date": r.config.get("date", ""),
            "data": r.config.get("data", ""),
            "binarize": r.config.get("binarize") or "none",
            "model": f"{Path(str(r.config.get('model_file', ''))).name}:"
            f"{r.config.get('model_class', '')}",
            "options": ", ".join(f"{k}={v}" for k, v in r.config.get("model_options", {}).items()),
            "evaluation shown": _evaluation_label(r),
            "directory": str(r.path.resolve()),
        }
        for r in runs
    ]
    page.add_table(pd.DataFrame(rows))
    versions = pd.DataFrame({r.name: r.config.get("versions", {}) for r in runs})
    versions.index.name = "package"
    page.add_table(versions.reset_index().fillna("—"), "Package versions recorded by each run.")
    page.paragraph("This report was written by:")
    page.code(command)


def _paired_section(page: Page, tables: Sequence[RunTables]) -> None:
    """Paired differences of every bound against the first run, over the points both scored."""
    evaluated = [t for t in tables if t.bounds is not None]
    if len(evaluated) < 2 or evaluated[0] is not tables[0]:
        return
    paired = paired_differences(
        [t.name for t in evaluated],
        [evaluation_identity(t.config, t.bounds) for t in evaluated],
        [t.bounds for t in evaluated],
        [t.points for t in evaluated],
    )
    paired = paired[paired["run"] != evaluated[0].name]
    if not len(paired):
        return
    page.add_table(
        paired,
        f"Each bound minus that of the reference run {evaluated[0].name}, averaged over the "
        "points both runs scored; paired_stderr is the standard error of that mean difference "
        "(far smaller than the unpaired one when the runs share points); significant = no "
        "when the difference is within two paired standard errors. Empty where the runs did "
        "not evaluate the same data, points and estimator.",
    )


def _beyond_is_section(page: Page, tables: Sequence[RunTables], colours: Sequence) -> None:
    """AIS, the gap decomposition and BDMC, drawn when a run has their tables."""
    have = {name for t in tables for name in t.extra}
    if not have & {"ais_summary", "gaps_summary", "bdmc_summary"}:
        return
    page.section("Beyond importance sampling", "beyond")
    page.figure(
        F.png(F.bound_ladder, tables, colours),
        "bound_ladder.png",
        "Each estimate of log p(x), lowest first, ±1 Monte Carlo standard error: ELBO with the "
        "amortized guide q_φ, ELBO with the per-point optimum q* of its family, IWAE_K and IS "
        "with q* as proposal, and AIS (Neal 2001; Wu et al. 2017). Right: bidirectional Monte "
        "Carlo on data simulated from the model (Grosse et al. 2015): forward AIS is a lower "
        "bound, reverse AIS from the true latents an upper bound; their gap bounds AIS's error.",
    )
    if "gaps_summary" in have:
        page.figure(
            F.png(F.gap_decomposition, tables, colours),
            "gap_decomposition.png",
            "log p̂(x) − ELBO[q_φ] split into the approximation gap (log p̂(x) − ELBO[q*]: the "
            "family is too poor) and the amortization gap (ELBO[q*] − ELBO[q_φ]: the encoder "
            "misses the family's best member; Cremer et al. 2018); ±1 test-set standard error.",
        )
        rows = [
            t.extra["gaps_summary"].assign(run=t.name) for t in tables if "gaps_summary" in t.extra
        ]
        cols = [
            "run",
            "best",
            "num_points",
            "steps",
            "K",
            "elbo",
            "elbo_star",
            "log_px",
            "approximation_gap",
            "amortization_gap",
            "khat_gt_0.7",
            "khat_star_gt_0.7",
        ]
        table = pd.concat(rows, ignore_index=True)
        page.add_table(
            table[[c for c in cols if c in table]],
            "Means over points (nats); khat_gt_0.7 is the share of points whose importance "
            "weights have Pareto k̂ > 0.7 with the amortized guide as proposal, khat_star_gt_0.7 "
            "with q*.",
        )
    if "ais_summary" in have:
        page.figure(
            F.png(F.ais_vs_steps, tables, colours),
            "ais_vs_steps.png",
            "AIS's estimate of log p(x) against the number of intermediate distributions T, "
            "±1 Monte Carlo standard error; dotted: the run's IWAE_K.",
        )


def write_report(
    runs: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    mmd_samples: int = 1000,
    command: str | None = None,
) -> Path:
    """Writes the HTML report of one or more run directories, its Markdown twin and figures.

    Arguments:
        runs: run directories (trained; evaluated ones get the bounds columns and figures).
        out: the HTML path (default ``RUN/report.html`` for one run, else ``report.html``).
            ``out.md`` and the folder ``<stem>_files/`` of PNGs go beside it.
        seed: seed of the model samples.
        mmd_samples: model samples and test points compared by the MMD² (and drawn in the
            latent map).
        command: the command line recorded on the page (default: the equivalent
            ``pyrogen report`` command).

    Returns:
        The path of the HTML page (a :class:`~pyrogen.report.inline.ReportPath`: in a notebook
        it shows the page inline).
    """
    if not runs:
        raise ConfigError("report needs at least one run directory")
    if mmd_samples < 2:
        raise ConfigError(f"--mmd-samples must be at least 2, got {mmd_samples}")
    paths = [Path(r) for r in runs]
    out = (
        Path(out) if out else (paths[0] / "report.html" if len(paths) == 1 else Path("report.html"))
    )
    if out.is_dir():
        out = out / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):
        out = out.with_name(out.name + ".html")
    for p in paths:  # a missing run is named before anything is created
        if not (p / "config.json").is_file():
            raise RunDirError(f"{p} is not a pyrogen run: it has no config.json")
    check_writable(out.parent, create=True)  # before the figures are computed
    started = time.perf_counter()
    tables = [read_run_tables(p) for p in paths]
    for t, name in zip(tables, unique_names(paths)):
        t.name = name
    colours = F.run_colours(len(tables))
    cache: dict = {}
    views = [RunView(t, c, seed, mmd_samples, cache) for t, c in zip(tables, colours)]

    page = Page("pyrogen report: " + ", ".join(t.name for t in tables))
    page.section("Summary", "summary")
    summary = summary_table(
        tables,
        mmd=[(v.mmd.estimate, v.mmd.stderr) if v.mmd else (math.nan, math.nan) for v in views],
        parameters=[v.parameters for v in views],
    )
    groups = [_comparable(t) for t in tables]
    page.add_table(
        summary,
        table_id="summary-table",
        marks=significant_marks(
            best_rows(summary, groups), summary, [t.points for t in tables], groups
        ),
    )
    evaluated_on = sorted(
        {
            f"{len(t.points) if t.points is not None else '?'} {split} points"
            for t in tables
            if t.bounds is not None
            for split in t.bounds["split"].unique()
        }
    )
    page.paragraph(
        f"Bounds are means over the evaluated points ({', '.join(evaluated_on) or 'none'}), "
        "in nats per data point (higher is better); "
        "log p̂(x) is IWAE at the largest k with its Monte Carlo standard error; NLL = −log p̂(x); "
        "gap = log p̂(x) − ELBO; ESS and k̂ are those of all K importance weights per point. "
        "MMD² (unbiased, Gaussian kernel, median-heuristic bandwidth; Gretton et al. 2012) "
        "compares draws x ~ p(x) with test data; 0 means indistinguishable. "
        + ranked_caption(summary.columns)
    )
    keys = {_comparable(t) for t in tables}
    if len(keys) > 1:
        page.note(
            "The runs model different data or were evaluated on different points ("
            + "; ".join(
                f"{d}, binarize {b or 'none'}, {n} {split} points, {est or 'not evaluated'}"
                for d, b, split, n, est in sorted(keys, key=str)
            )
            + "): their bounds are compared (bold) only within each group."
        )
    for v in views:
        for note in v.notes:
            page.note(note)
    _paired_section(page, tables)

    page.section("Learning curves", "curves")
    if any(t.history is not None for t in tables):
        page.figure(
            F.png(F.learning_curves, tables, colours),
            "learning_curves.png",
            "Training ELBO (solid, mean over the epoch's minibatches) and validation "
            "ELBO (dashed) per epoch.",
        )
    else:
        page.note("No run has a history.csv.")

    evaluated = [t for t in tables if t.bounds is not None]
    page.section("Bounds against k", "bounds")
    if evaluated:
        page.figure(
            F.png(F.bounds_vs_k, tables, colours),
            "bounds_vs_k.png",
            "IWAE_k against k from bounds.csv; bands are ±1 Monte Carlo standard error "
            "(often thinner than the line); squares mark the ELBO (k = 1), dotted lines "
            "the log p̂(x) level.",
        )
    else:
        page.note("No run is evaluated: run `pyrogen evaluate RUN` for the bounds.")

    page.section("Gap and k̂ per data point", "points")
    if any(t.points is not None for t in tables):
        page.figure(
            F.png(F.gap_histogram, tables, colours),
            "gap.png",
            "Per-datapoint log p̂(x) − ELBO from points.csv: the KL from the guide to the "
            "posterior, up to Monte Carlo error.",
        )
        page.figure(
            F.png(F.khat_distribution, tables, colours),
            "khat.png",
            "Pareto k̂ of each point's importance weights (Yao et al. 2018): below 0.5 "
            "the estimate is reliable, above 0.7 it is not.",
        )
    else:
        page.note("No run has a points.csv.")

    _beyond_is_section(page, tables, colours)

    page.section("Samples and reconstructions", "samples")
    for i, v in enumerate(views, 1):
        if v.data is None:
            continue
        if v.shape is None:
            page.note(f"{v.name}: {v.t.config.get('data')} is not image data: no image grids.")
            continue
        try:
            image = images_figure(v, v.t.config.get("num_classes"), seed)
        except MODEL_ERRORS as e:
            page.note(f"{v.name}: no samples or reconstructions ({type(e).__name__}: {e})")
            continue
        page.figure(
            image,
            f"samples_{i}.png",
            f"{v.name}: decoder means of prior draws; test points above their reconstructions.",
        )
        if v.codes is None:
            page.note(f"{v.name}: the model has no latent site: no reconstructions.")

    page.section("Latent space", "latents")
    with_codes = [v for v in views if v.codes is not None]
    for v in views:
        if v.data is not None and v.codes is None:
            page.note(f"{v.name}: the model has no latent site: no latent map or traversal.")
    if with_codes:
        page.figure(
            F.png(
                F.latent_maps,
                latent_map_inputs(with_codes, seed),
                tables[0].config.get("num_classes"),
            ),
            "latent_map.png",
            "Guide means of the first latent site for test points, coloured by label "
            "(PCA to 2-D where the latent space has more dimensions).",
        )
    panels = []
    for v in with_codes:
        if v.shape is None:
            page.note(f"{v.name}: not image data: no latent traversal.")
            continue
        panel, why = traversal_panel(v)
        if panel is None:
            page.note(why)
        else:
            panels.append(panel)
    if panels:
        page.figure(
            F.png(F.traversals, panels),
            "traversals.png",
            "Decoder means over a grid of the two latent dimensions whose guide means vary "
            "most over the test points (the most active units), from the 2nd to the 98th "
            "percentile of guide draws; the other dimensions at 0.",
        )

    page.section("Sample-based divergence (MMD²)", "mmd")
    rows = [
        {
            "run": v.name,
            "MMD²": v.mmd.estimate,
            "MMD² s.e.": v.mmd.stderr,
            "estimate / s.e.": v.mmd.estimate / v.mmd.stderr if v.mmd.stderr > 0 else math.nan,
            "bandwidth": v.mmd.bandwidth,
            "samples": len(v.x),
        }
        for v in views
        if isinstance(v.mmd, MMD)
    ]
    if rows:
        page.add_table(
            pd.DataFrame(rows),
            "Unbiased MMD² between draws x ~ p(x) and as many test points; an estimate "
            "above 3 standard errors says the samples are distinguishable from data.",
        )
    else:
        page.note("No run could be sampled and compared with test data.")

    _provenance(
        page,
        tables,
        command
        or " ".join(
            [
                "pyrogen",
                "report",
                *map(str, paths),
                "--out",
                str(out),
                "--seed",
                str(seed),
                "--mmd-samples",
                str(mmd_samples),
            ]
        ),
    )
    page.paragraph(f"Report computed in {time.perf_counter() - started:.1f} s.")
    folder = out.parent / f"{out.stem}_files"
    new_folder = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        write_text(folder / "summary.csv", summary.to_csv(index=False))
        page.write(out)
    except BaseException:
        if new_folder and not out.exists():  # a failed first report leaves no folder behind
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return ReportPath(out)  # a Path that a notebook shows as the page
