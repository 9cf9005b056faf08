"""The tables of a report: what a run directory holds, read once, and the one-row-per-run summary.

Everything here only reads run directories, through :class:`~pyrogen.runs.RunDir`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pyrogen.errors import RunDirError
from pyrogen.report.compare import evaluation_identity, stderr_reliability

__all__ = [
    "BEST",
    "EXTRA_TABLES",
    "RunTables",
    "best_rows",
    "read_run_tables",
    "summary_table",
    "unique_names",
]

#: how the best value of a summary column is chosen: "max", "min", or absent (not ranked)
BEST: dict[str, str] = {
    "ELBO": "max",
    "log p̂(x)": "max",
    "NLL (nats)": "min",
    "bits/dim": "min",
    "gap (nats)": "min",
    "median ESS": "max",
    "k̂ > 0.7": "min",
    "MMD²": "min",
}


@dataclass
class RunTables:
    """The files of one run directory (absent ones are None)."""

    path: Path
    name: str
    config: dict
    history: pd.DataFrame | None
    bounds: pd.DataFrame | None
    points: pd.DataFrame | None
    extra: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)  # name and meta.json of the evaluation shown

    @property
    def ks(self) -> list[int]:
        return [] if self.bounds is None else [int(k) for k in self.bounds["k"]]

    def bound(self, k: int, column: str = "estimate") -> float:
        """A value of bounds.csv at ``k`` (nan when the run has no such row)."""
        if self.bounds is None:
            return math.nan
        rows = self.bounds[self.bounds["k"] == k]
        return float(rows[column].iloc[0]) if len(rows) else math.nan

    def top(self, column: str) -> float:
        """A value of bounds.csv at the largest k: the log p(x) estimate's row."""
        if self.bounds is None or not len(self.bounds) or column not in self.bounds:
            return math.nan
        return float(self.bounds[column].iloc[-1])


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path} is not a readable CSV table: {e}") from None


#: tables beyond importance sampling (``pyrogen evaluate --ais/--gaps/--bdmc``), by file stem
EXTRA_TABLES = ("ais", "ais_summary", "gaps", "gaps_summary", "bdmc", "bdmc_summary")


def read_run_tables(run_dir: str | os.PathLike, evaluation: str | None = None) -> RunTables:
    """Reads config.json, history.csv and the run's evaluation (the latest, or the one named
    ``evaluation``, checked against its meta.json; an older run's top-level bounds.csv and
    points.csv) through :class:`~pyrogen.runs.RunDir`; the :data:`EXTRA_TABLES` go into
    ``extra`` and the evaluation's name and meta into ``evaluation``."""
    from pyrogen.runs.rundir import RunDir

    run = RunDir(run_dir)
    config = run.read_config()
    ev = run.read_evaluation(evaluation)
    bounds = points = None
    extra: dict = {}
    if ev is not None:
        bounds = ev.bounds.sort_values("k", kind="stable").reset_index(drop=True)
        points = ev.points
        extra = {k: v for k, v in ev.extra.items() if k in EXTRA_TABLES}
    return RunTables(
        run.path,
        run.path.name,
        config,
        run.read_history(),
        bounds,
        points,
        extra,
        {"name": ev.name, **ev.meta} if ev is not None else {},
    )


def unique_names(paths: Sequence[Path]) -> list[str]:
    """Short run names: the folder name, with parents added where two runs share one."""
    names = [p.name for p in paths]
    for depth in range(2, 6):
        if len(set(names)) == len(names):
            break
        names = ["/".join(p.resolve().parts[-depth:]) for p in paths]
    return names


def summary_table(
    runs: Sequence[RunTables],
    mmd: Sequence[tuple[float, float]] | None = None,
    parameters: Sequence[int | None] | None = None,
) -> pd.DataFrame:
    """One row per run: settings, training time and every bound of bounds.csv at full precision.

    Columns: ``run``, ``model``, ``objective``, ``parameters``, ``epochs`` (trained, from
    history.csv), ``time (s)`` (sum of history seconds), what was evaluated (``data``, ``split``,
    ``points``, ``estimator``, ``K``), ``ELBO`` (k = 1; the mean of points.csv
    when k = 1 was not evaluated), ``IWAE_k`` for every evaluated k > 1, ``log p̂(x)`` and
    ``± s.e.`` (the estimate at the largest k and its Monte Carlo standard error),
    ``± data s.e.`` (the test set's), ``s.e. reliable`` (no when k̂ > 0.7 on too many points,
    see :func:`~pyrogen.report.compare.stderr_reliability`), ``NLL (nats)``,
    ``bits/dim``, ``gap (nats)`` (mean log p̂(x) - ELBO), ``median ESS``, ``k̂ > 0.7`` (share of
    points), ``MMD²`` and ``MMD² s.e.``. Missing values are nan.
    """
    ks = sorted({k for r in runs for k in r.ks if k > 1})
    rows = []
    for i, r in enumerate(runs):
        h = r.history
        elbo = r.bound(1)
        if math.isnan(elbo) and r.points is not None and "elbo" in r.points:
            elbo = float(r.points["elbo"].mean())
        ident = evaluation_identity(r.config, r.bounds)
        row = {
            "run": r.name,
            "model": r.config.get("model_class", ""),
            "objective": r.config.get("objective", ""),
            "parameters": parameters[i] if parameters else None,
            "epochs": int(h["epoch"].max()) if h is not None and len(h) else None,
            "time (s)": float(h["seconds"].sum()) if h is not None and len(h) else math.nan,
            **{c: ident[c] for c in ("data", "split", "points", "estimator", "K")},
            "ELBO": elbo,
        }
        for k in ks:
            row[f"IWAE_{k}"] = r.bound(k)
        row.update(
            {
                "log p̂(x)": r.top("estimate"),
                "± s.e.": r.top("stderr"),
                "± data s.e.": r.top("data_stderr"),
                "s.e. reliable": stderr_reliability(r.top("khat_gt_0.7")),
                "NLL (nats)": r.top("nll"),
                "bits/dim": r.top("bits_per_dim"),
                "gap (nats)": r.top("gap"),
                "median ESS": r.top("ess"),
                "k̂ > 0.7": r.top("khat_gt_0.7"),
                "MMD²": mmd[i][0] if mmd else math.nan,
                "MMD² s.e.": mmd[i][1] if mmd else math.nan,
            }
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    for col in ("parameters", "epochs"):
        table[col] = table[col].astype("Int64")
    return table


def best_rows(table: pd.DataFrame, groups: Sequence | None = None) -> dict[str, set[int]]:
    """For each ranked column (:data:`BEST`; IWAE_k: higher is better), the rows holding the best
    value, compared only within a group of rows (e.g. runs on the same data) of at least two rows
    with a value."""
    keys = list(groups) if groups is not None else [0] * len(table)
    marks: dict[str, set[int]] = {}
    for col in table.columns:
        how = "max" if col.startswith("IWAE_") else BEST.get(col)
        if how is None:
            continue
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float)
        for key in dict.fromkeys(keys):
            rows = [i for i, k in enumerate(keys) if k == key and np.isfinite(values[i])]
            if len(rows) < 2:
                continue
            best = max(values[rows]) if how == "max" else min(values[rows])
            marks.setdefault(col, set()).update(i for i in rows if values[i] == best)
    return marks
