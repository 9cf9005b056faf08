r"""Which model is better: comparisons of evaluated runs that respect what was measured.

Two runs scored on the same points differ point by point far less than their bounds vary over the
test set, so their difference is judged by the *paired* standard error

.. math:: \mathrm{se}(\bar d) = \mathrm{sd}(b^A_n - b^B_n) / \sqrt{N},

over the N shared points, not by the two unpaired errors. A difference within two paired
standard errors is marked not significant. Bounds are ranked (bold) only among runs that share
the data, binarization, split, points and estimator; and a Monte Carlo standard error is flagged
unreliable where the Pareto k-hat of too many points is above 0.7 (Yao et al., 2018).

Everything here is a pure function of DataFrames (config dicts, bounds.csv, points.csv); the
command line and the report call it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

__all__ = [
    "KHAT_UNRELIABLE_SHARE",
    "PairedDifference",
    "bound_columns",
    "comparable_key",
    "comparison_table",
    "evaluation_identity",
    "paired_difference",
    "paired_differences",
    "ranked_groups",
    "significant_marks",
    "stderr_reliability",
]

#: above this share of points with k-hat > 0.7 the Monte Carlo standard error is not trusted
KHAT_UNRELIABLE_SHARE = 0.1


class PairedDifference(NamedTuple):
    """mean(other - reference) over shared points, its paired and unpaired standard errors."""

    diff: float
    stderr: float
    unpaired_stderr: float
    shared: int

    @property
    def significant(self) -> bool:
        """More than two paired standard errors from zero."""
        return bool(abs(self.diff) > 2 * self.stderr)


def bound_columns(bounds: pd.DataFrame) -> dict[str, str]:
    """Maps each bound of bounds.csv (ELBO, IWAE_k) to its points.csv column (elbo, iwae_k)."""
    out = {}
    for k in bounds["k"]:
        k = int(k)
        out["ELBO" if k == 1 else f"IWAE_{k}"] = "elbo" if k == 1 else f"iwae_{k}"
    return out


def evaluation_identity(config: dict, bounds: pd.DataFrame | None) -> dict[str, Any]:
    """What an evaluation measured: ``data``, ``binarize``, ``split``, ``points``,
    ``estimator`` and ``K`` (the draws behind log p^(x))."""
    has = bounds is not None and len(bounds) > 0
    return {
        "data": config.get("data"),
        "binarize": config.get("binarize") or "none",
        "split": str(bounds["split"].iloc[0]) if has and "split" in bounds else "",
        "points": int(bounds["num_points"].iloc[-1]) if has else 0,
        "estimator": "IS (guide)" if has else "",
        "K": int(bounds["k"].max()) if has else 0,
    }


def comparable_key(identity: dict[str, Any]) -> tuple:
    """Runs whose bounds may be ranked together: same data, binarization, split, points and
    estimator (K may differ: a larger K is a better estimate of the same quantity)."""
    return tuple(identity[c] for c in ("data", "binarize", "split", "points", "estimator"))


def paired_difference(reference: pd.Series, other: pd.Series) -> PairedDifference:
    """Paired difference other - reference over the points both hold (aligned on the index)."""
    ref, oth = reference.dropna(), other.dropna()
    shared = ref.index.intersection(oth.index)
    n = len(shared)
    if n < 2:
        return PairedDifference(math.nan, math.nan, math.nan, n)
    d = oth.loc[shared].to_numpy(float) - ref.loc[shared].to_numpy(float)
    unpaired = math.hypot(
        float(np.std(ref.loc[shared], ddof=1)), float(np.std(oth.loc[shared], ddof=1))
    )
    return PairedDifference(
        float(d.mean()), float(d.std(ddof=1)) / math.sqrt(n), unpaired / math.sqrt(n), n
    )


def _indexed(points: pd.DataFrame) -> pd.DataFrame:
    return points.set_index("point") if "point" in points.columns else points


def paired_differences(
    names: Sequence[str],
    identities: Sequence[dict[str, Any]],
    bounds: Sequence[pd.DataFrame | None],
    points: Sequence[pd.DataFrame | None],
) -> pd.DataFrame:
    """One row per (run, bound) against the first run: ``paired_diff``, ``paired_stderr``,
    ``unpaired_stderr``, ``shared_points`` and ``significant`` ("yes", "no", or "" where the
    runs are not comparable or lack points.csv)."""
    rows = []
    if not names:
        return pd.DataFrame(rows)
    ref_pts = points[0]
    ref_key = comparable_key(identities[0])
    ref_cols = bound_columns(bounds[0]) if bounds[0] is not None else {}
    ref_cols["log p^(x)"] = "log_px"
    for name, ident, b, pts in zip(names, identities, bounds, points):
        cols = bound_columns(b) if b is not None else {}
        cols["log p^(x)"] = "log_px"
        for bound, col in cols.items():
            row = {"run": name, "bound": bound, "reference": names[0]}
            ok = (
                bound in ref_cols
                and pts is not None
                and ref_pts is not None
                and comparable_key(ident) == ref_key
                and col in pts
                and ref_cols[bound] in ref_pts
            )
            if ok:
                pd_ = paired_difference(_indexed(ref_pts)[ref_cols[bound]], _indexed(pts)[col])
                row.update(
                    paired_diff=pd_.diff,
                    paired_stderr=pd_.stderr,
                    unpaired_stderr=pd_.unpaired_stderr,
                    shared_points=pd_.shared,
                    significant="yes" if pd_.significant else "no",
                )
            else:
                row.update(
                    paired_diff=math.nan,
                    paired_stderr=math.nan,
                    unpaired_stderr=math.nan,
                    shared_points=0,
                    significant="",
                )
            rows.append(row)
    return pd.DataFrame(rows)


def stderr_reliability(khat_share: float) -> str:
    """ "yes", "no" (k-hat > 0.7 on more than :data:`KHAT_UNRELIABLE_SHARE` of the points) or
    "unknown" (k-hat not computed)."""
    if khat_share is None or (isinstance(khat_share, float) and math.isnan(khat_share)):
        return "unknown"
    return "no" if khat_share > KHAT_UNRELIABLE_SHARE else "yes"


def comparison_table(
    names: Sequence[str],
    configs: Sequence[dict],
    bounds: Sequence[pd.DataFrame],
    points: Sequence[pd.DataFrame | None],
) -> pd.DataFrame:
    """One row per run: what was measured, every bound, log p^(x) with its Monte Carlo and
    test-set standard errors, whether the Monte Carlo error is reliable, and the paired
    difference of log p^(x) against the first run (``paired_diff``, ``paired_stderr``,
    ``significant``: "yes", "no" (within two paired standard errors), "reference", or why
    there is none)."""
    identities = [evaluation_identity(c, b) for c, b in zip(configs, bounds)]
    rows = []
    for i, (name, cfg, ident, b) in enumerate(zip(names, configs, identities, bounds)):
        top = b.iloc[-1]
        row: dict[str, Any] = {
            "run": name,
            "model": cfg.get("model_class"),
            "objective": cfg.get("objective"),
            "epochs": cfg.get("epochs"),
            **ident,
        }
        for _, r in b.iterrows():
            row[r["bound"]] = r["estimate"]
        khat_share = float(top["khat_gt_0.7"]) if "khat_gt_0.7" in b else math.nan
        row.update(
            {
                "log_px": top["estimate"],
                "stderr": top["stderr"],
                "data_stderr": top["data_stderr"] if "data_stderr" in b else math.nan,
                "stderr_reliable": stderr_reliability(khat_share),
                "nll": top["nll"],
                "bits_per_dim": top["bits_per_dim"],
                "gap": top["gap"],
                "khat_gt_0.7": khat_share,
            }
        )
        comparable = comparable_key(ident) == comparable_key(identities[0])
        if i == 0:
            row.update(paired_diff=0.0, paired_stderr=0.0, significant="reference")
        elif comparable and points[0] is not None and points[i] is not None:
            d = paired_difference(_indexed(points[0])["log_px"], _indexed(points[i])["log_px"])
            row.update(
                paired_diff=d.diff,
                paired_stderr=d.stderr,
                significant="yes" if d.significant else "no",
            )
        else:
            why = "not comparable" if not comparable else "no points.csv"
            row.update(paired_diff=math.nan, paired_stderr=math.nan, significant=why)
        rows.append(row)
    return pd.DataFrame(rows)


def ranked_groups(identities: Sequence[dict[str, Any]]) -> list[tuple]:
    """The group of each run for ranking (bold) only among comparable runs."""
    return [comparable_key(i) for i in identities]


def significant_marks(
    marks: dict[str, set[int]],
    table: pd.DataFrame,
    points: Sequence[pd.DataFrame | None],
    groups: Sequence,
) -> dict[str, set[int]]:
    """Keeps a bound's best mark (bold) only where the best run beats every other run of its
    group by more than two paired standard errors over their shared points; a best run with a
    rival within noise, or without points.csv to pair, loses its mark. The same holds for the
    columns derived from a bound (NLL, bits/dim: log p̂(x); the gap). Columns that are not
    bounds (time, ESS, k-hat share, MMD², ...) keep their marks."""
    # summary column -> (points.csv column, +1 where higher is better there, -1 where lower)
    paired_by = {
        "ELBO": ("elbo", 1),
        "log p̂(x)": ("log_px", 1),
        "NLL (nats)": ("log_px", 1),
        "bits/dim": ("log_px", 1),
        "gap (nats)": ("gap", -1),
    }
    out = {}
    for col, rows in marks.items():
        if col.startswith("IWAE_"):
            pcol, sign = "iwae_" + col.split("_", 1)[1], 1
        elif col in paired_by:
            pcol, sign = paired_by[col]
        else:
            out[col] = rows
            continue
        keep = set()
        for b in rows:
            rivals = [
                i
                for i in range(len(table))
                if i != b and groups[i] == groups[b] and pd.notna(table[col].iloc[i])
            ]
            pts_b = points[b]
            ok = pts_b is not None and pcol in pts_b
            for i in rivals:
                if not ok or points[i] is None or pcol not in points[i]:
                    ok = False
                    break
                d = paired_difference(_indexed(points[i])[pcol], _indexed(pts_b)[pcol])
                ok = ok and d.significant and sign * d.diff > 0
            if ok:
                keep.add(b)
        if keep:
            out[col] = keep
    return out


def compare(runs: Sequence[Any], out: Any = None, evaluation: str | None = None) -> pd.DataFrame:
    """Evaluated runs side by side (what ``pyrogen compare`` prints): :func:`comparison_table`
    over each run's evaluation (the latest, or the one named ``evaluation``), with the
    evaluation's name in the ``evaluation`` column. With ``out``, also writes comparison.csv,
    paired.csv and comparison.md there (each atomically).

    Raises:
        RunDirError: a run without an evaluation, or one whose files disagree with its meta.json.
    """
    from pathlib import Path

    from pyrogen.atomic import write_text
    from pyrogen.errors import RunDirError
    from pyrogen.runs.rundir import RunDir

    names, configs, bounds, points, evaluations = [], [], [], [], []
    for run in runs:
        rundir = RunDir(run)
        config = rundir.read_config()
        ev = rundir.read_evaluation(evaluation)
        if ev is None:
            raise RunDirError(f"{run} has no evaluation: run `pyrogen evaluate {run}` first")
        names.append(rundir.name)
        configs.append(config)
        bounds.append(ev.bounds.sort_values("k", kind="stable"))
        points.append(ev.points)
        evaluations.append(ev.name)
    table = comparison_table(names, configs, bounds, points)
    table.insert(1, "evaluation", evaluations)
    idents = [evaluation_identity(c, b) for c, b in zip(configs, bounds)]
    paired = paired_differences(names, idents, bounds, points)
    if out is not None:
        from pyrogen.cli.evaluation import markdown_table

        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "comparison.csv", table.to_csv(index=False))
        write_text(folder / "paired.csv", paired.to_csv(index=False))
        write_text(folder / "comparison.md", markdown_table(table))
    return table
