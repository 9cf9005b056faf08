"""Comparisons that say which model is better: paired errors, comparable groups, k-hat caveats."""

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pyrogen.cli import main
from pyrogen.report import write_report
from pyrogen.report.compare import (
    comparison_table,
    evaluation_identity,
    paired_difference,
    paired_differences,
    ranked_groups,
    significant_marks,
    stderr_reliability,
)
from pyrogen.report.page import format_value
from pyrogen.report.tables import best_rows, read_run_tables, summary_table


def fake_run(
    root, name, base, shift=0.0, noise=0.05, seed=0, data="digits", n=200, ks=(1, 100), khat=None
):
    """A run directory with config.json, bounds.csv and points.csv (no checkpoint)."""
    g = np.random.default_rng(seed)
    path = Path(root) / name
    path.mkdir(parents=True)
    cfg = {
        "model_class": "VAE",
        "objective": "elbo",
        "data": data,
        "binarize": "dynamic",
        "epochs": 3,
    }
    (path / "config.json").write_text(json.dumps(cfg))
    log_px = base[:n] + shift + g.normal(0, noise, n)
    elbo = log_px - 1.0 - g.gamma(2.0, 0.1, n)
    pts = pd.DataFrame(
        {
            "elbo": elbo,
            f"iwae_{ks[-1]}": log_px,
            "log_px": log_px,
            "khat": khat if khat is not None else np.full(n, 0.3),
        }
    )
    pts.index.name = "point"
    pts.to_csv(path / "points.csv")
    rows = []
    for k, col in ((ks[0], "elbo"), (ks[-1], "log_px")):
        est = pts[col].mean()
        kh = pts["khat"].to_numpy()
        kh = kh[~np.isnan(kh)]
        rows.append(
            {
                "split": "test",
                "k": k,
                "bound": "ELBO" if k == 1 else f"IWAE_{k}",
                "estimate": est,
                "stderr": 0.01,
                "data_stderr": pts[col].std() / math.sqrt(n),
                "nll": -est,
                "bits_per_dim": -est / (64 * math.log(2)),
                "gap": est - pts["elbo"].mean(),
                "ess": 5.0,
                "khat": np.median(kh) if len(kh) else np.nan,
                "khat_gt_0.7": (kh > 0.7).mean() if len(kh) else np.nan,
                "num_points": n,
            }
        )
    pd.DataFrame(rows).to_csv(path / "bounds.csv", index=False)
    return path


@pytest.fixture
def base():
    return np.random.default_rng(42).normal(-100, 10, 400)  # per-point difficulty, shared


def test_paired_error_is_far_smaller_than_the_unpaired_one(base):
    ref = pd.Series(base[:300] + np.random.default_rng(1).normal(0, 0.05, 300))
    other = pd.Series(base[:300] + 0.3 + np.random.default_rng(2).normal(0, 0.05, 300))
    d = paired_difference(ref, other)
    assert d.shared == 300 and abs(d.diff - 0.3) < 0.02
    assert d.stderr < d.unpaired_stderr / 50, d  # ~0.004 against ~0.8
    assert d.significant  # unpaired, 0.3 +- 0.8 would say nothing
    # within two paired standard errors: not significant
    same = paired_difference(ref, ref + np.random.default_rng(3).normal(0, 0.05, 300))
    assert not same.significant and abs(same.diff) < 2 * same.stderr


def test_only_shared_points_are_paired():
    ref = pd.Series([1.0, 2.0, 3.0, 4.0], index=[0, 1, 2, 3])
    other = pd.Series([2.0, 3.0, 5.0], index=[1, 2, 3])
    d = paired_difference(ref, other)
    assert d.shared == 3 and d.diff == pytest.approx((0 + 0 + 1) / 3)  # 2-2, 3-3, 5-4


def test_stderr_reliability_follows_the_khat_share():
    assert stderr_reliability(0.0) == "yes" and stderr_reliability(0.25) == "no"
    assert stderr_reliability(math.nan) == "unknown"


def test_compare_writes_paired_differences_and_what_was_evaluated(base, tmp_path, capsys):
    a = fake_run(tmp_path, "elbo-run", base, seed=1)
    b = fake_run(tmp_path, "iwae-run", base, shift=0.344, seed=2)
    c = fake_run(tmp_path, "twin", base, shift=0.002, seed=3)
    d = fake_run(tmp_path, "other-data", base, data="mnist", seed=4, ks=(1, 500))
    e = fake_run(tmp_path, "no-khat", base, seed=5, khat=np.full(200, np.nan))
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, (a, b, c, d, e)), "--out", str(out)]) == 0
    t = pd.read_csv(out / "comparison.csv").set_index("run")
    for col in (
        "data",
        "split",
        "points",
        "estimator",
        "K",
        "data_stderr",
        "paired_diff",
        "paired_stderr",
        "significant",
        "stderr_reliable",
    ):
        assert col in t.columns, col
    assert t.loc["elbo-run", "significant"] == "reference"
    assert t.loc["iwae-run", "significant"] == "yes"
    assert abs(t.loc["iwae-run", "paired_diff"] - 0.344) < 0.03
    assert t.loc["iwae-run", "paired_stderr"] < 0.01
    assert t.loc["twin", "significant"] == "no"
    assert t.loc["other-data", "significant"] == "not comparable"
    assert np.isnan(t.loc["other-data", "paired_diff"]) and t.loc["other-data", "K"] == 500
    # k-hat never computed: NaN and "unknown", never 0 %
    assert np.isnan(t.loc["no-khat", "khat_gt_0.7"])
    assert t.loc["no-khat", "stderr_reliable"] == "unknown"
    paired = pd.read_csv(out / "paired.csv")
    assert set(paired["bound"]) >= {"ELBO", "IWAE_100", "log p^(x)"}


def test_bold_only_among_runs_sharing_data_points_and_estimator(base, tmp_path):
    runs = [
        fake_run(tmp_path, "a", base, seed=1),
        fake_run(tmp_path, "b", base, shift=0.5, seed=2),
        fake_run(tmp_path, "c", base, shift=9.0, seed=3, n=150),  # fewer points: own group
        fake_run(tmp_path, "d", base, shift=9.0, seed=4, data="mnist"),
    ]
    tables = [read_run_tables(r) for r in runs]
    summary = summary_table(tables)
    groups = ranked_groups([evaluation_identity(t.config, t.bounds) for t in tables])
    marks = best_rows(summary, groups)
    assert marks["log p̂(x)"] == {1}  # b beats a; c and d stand alone and are never bold
    for col in ("data", "split", "points", "estimator", "K", "± data s.e.", "s.e. reliable"):
        assert col in summary.columns, col


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.values = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and "data-column" in a:
            self.values.setdefault(a["data-column"], []).append(float(a["data-value"]))


def test_the_reports_numbers_equal_the_csvs(base, tmp_path):
    runs = [fake_run(tmp_path, "a", base, seed=1), fake_run(tmp_path, "b", base, shift=0.3)]
    out = write_report(runs, tmp_path / "rep.html", mmd_samples=10)
    cells = _Cells()
    cells.feed(out.read_text())
    md = (tmp_path / "rep.md").read_text()
    for i, run in enumerate(runs):
        b = pd.read_csv(run / "bounds.csv").sort_values("k")
        top = b.iloc[-1]
        for col, value in {
            "ELBO": b["estimate"].iloc[0],
            "log p̂(x)": top["estimate"],
            "± s.e.": top["stderr"],
            "± data s.e.": top["data_stderr"],
            "k̂ > 0.7": top["khat_gt_0.7"],
        }.items():
            assert cells.values[col][i] == value, (run.name, col)
            assert format_value(col, value) in md
    paired = paired_differences(
        ["a", "b"],
        [
            evaluation_identity(
                {"data": "digits", "binarize": "dynamic"}, pd.read_csv(r / "bounds.csv")
            )
            for r in runs
        ],
        [pd.read_csv(r / "bounds.csv") for r in runs],
        [pd.read_csv(r / "points.csv") for r in runs],
    )
    top = paired[(paired["run"] == "b") & (paired["bound"] == "log p^(x)")].iloc[0]
    assert cells.values["paired_diff"][-1] == top["paired_diff"]
    assert top["significant"] == "yes"


def test_comparison_table_from_dataframes_alone(base, tmp_path):
    runs = [fake_run(tmp_path, "a", base, seed=1), fake_run(tmp_path, "b", base, shift=0.3)]
    t = comparison_table(
        ["a", "b"],
        [json.loads((r / "config.json").read_text()) for r in runs],
        [pd.read_csv(r / "bounds.csv") for r in runs],
        [None, None],
    )
    assert list(t["significant"]) == ["reference", "no points.csv"]


def test_bold_needs_a_significant_paired_difference(base, tmp_path):
    runs = [
        fake_run(tmp_path, "a", base, seed=1),
        fake_run(tmp_path, "b", base, shift=0.5, seed=2),
        fake_run(tmp_path, "b-twin", base, shift=0.501, seed=3),
    ]
    tables = [read_run_tables(r) for r in runs]
    summary = summary_table(tables)
    points = [t.points for t in tables]
    groups = ranked_groups([evaluation_identity(t.config, t.bounds) for t in tables])
    # b and its twin are within noise of each other: neither is bold for log p^(x)
    marks = significant_marks(best_rows(summary, groups), summary, points, groups)
    assert "log p̂(x)" not in marks and "NLL (nats)" not in marks and "bits/dim" not in marks
    # without the twin, b beats a by 0.5 nats with a paired s.e. of ~0.005: bold
    two = summary.iloc[:2].reset_index(drop=True)
    marks = significant_marks(best_rows(two, groups[:2]), two, points[:2], groups[:2])
    assert marks["log p̂(x)"] == marks["NLL (nats)"] == {1}
    # and without points.csv there is nothing to pair: no bold on a bound
    marks = significant_marks(best_rows(two, groups[:2]), two, [None, None], groups[:2])
    assert "log p̂(x)" not in marks and "ELBO" not in marks
