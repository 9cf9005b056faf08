"""Tests of pyrogen.report: the MMD² estimator, the figures, and the page written for real runs."""

from __future__ import annotations

import base64
import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch

from pyrogen.cli import main
from pyrogen.report import figures as F
from pyrogen.report import mmd2, read_run_tables, write_report
from pyrogen.report.page import Page, format_value
from pyrogen.report.tables import RunTables

VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
}


class _Checker(HTMLParser):
    """Collects structure errors, images, links and the summary table's cells of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.doctype = False
        self.images: list[str] = []
        self.refs: list[tuple[str, str, str]] = []
        self.summary: list[list[dict]] = []
        self._in_summary = False
        self._cell: dict | None = None

    def handle_decl(self, decl: str) -> None:
        self.doctype = self.doctype or decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        for key in ("src", "href", "srcset", "action", "data"):
            if key in a and tag not in ("td",):
                self.refs.append((tag, key, a[key]))
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "table" and a.get("id") == "summary-table":
            self._in_summary = True
        if self._in_summary and tag == "tr":
            self.summary.append([])
        if self._in_summary and tag == "td":
            self._cell = {
                "column": a.get("data-column"),
                "value": a.get("data-value"),
                "class": a.get("class") or "",
                "text": "",
            }
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag == "td" and self._cell is not None:
            self.summary[-1].append(self._cell)
            self._cell = None
        if tag == "table":
            self._in_summary = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data


def check_page(path: Path) -> _Checker:
    """Parses a report and asserts it is balanced, self-contained HTML; returns the parser."""
    checker = _Checker()
    checker.feed(path.read_text(encoding="utf-8"))
    checker.close()
    assert checker.doctype, "no <!DOCTYPE html>"
    assert not checker.errors, checker.errors[:5]
    assert checker.stack == [], f"unclosed tags: {checker.stack}"
    for tag, key, value in checker.refs:
        ok = value.startswith("data:image/png;base64,") if key == "src" else value.startswith("#")
        assert ok, f"<{tag} {key}={value[:60]!r}> points outside the page"
    return checker


def _cells(checker: _Checker) -> list[dict[str, dict]]:
    rows = [r for r in checker.summary if r]
    return [{c["column"]: c for c in row if c["column"]} for row in rows]


# -- MMD² --------------------------------------------------------------------------------------


def _brute_mmd2(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    def k(a: np.ndarray, b: np.ndarray) -> float:
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * sigma**2))

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd2_matches_the_u_statistic_formula() -> None:
    g = np.random.default_rng(1)
    x, y = g.normal(size=(7, 3)), g.normal(size=(5, 3)) + 0.5
    est, se, sigma = mmd2(x, y, bandwidth=1.3)
    assert sigma == 1.3
    assert est == pytest.approx(_brute_mmd2(x, y, 1.3), rel=1e-10, abs=1e-12)
    assert se > 0
    # the median heuristic: the median distance between distinct pooled points
    z = np.concatenate([x, y])
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))[~np.eye(len(z), dtype=bool)]
    assert mmd2(x, y).bandwidth == pytest.approx(np.median(d), rel=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_mmd2_is_zero_within_error_for_one_distribution(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(300, 5, generator=g), torch.randn(300, 5, generator=g)
    est, se, _ = mmd2(x, y)
    assert abs(est) < 3 * se, f"MMD²={est:.3g} with s.e. {se:.3g} for equal distributions"
    bits = torch.rand(2, 300, 64, generator=g) < 0.3
    est, se, _ = mmd2(bits[0].double(), bits[1].double())
    assert abs(est) < 3 * se, f"binary: MMD²={est:.3g} with s.e. {se:.3g}"


def test_mmd2_is_positive_for_different_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 5, generator=g), torch.randn(300, 5, generator=g)
    y[:, 0] += 1.0
    est, se, _ = mmd2(x, y)
    assert est > 3 * se, f"MMD²={est:.3g} with s.e. {se:.3g} for a shift of 1"
    a = (torch.rand(300, 64, generator=g) < 0.3).double()
    b = (torch.rand(300, 64, generator=g) < 0.4).double()
    est, se, _ = mmd2(a, b)
    assert est > 3 * se, f"binary: MMD²={est:.3g} with s.e. {se:.3g}"


def test_mmd2_standard_error_matches_the_spread_of_replicates() -> None:
    g = torch.Generator().manual_seed(3)
    ests, ses = [], []
    for _ in range(40):
        x, y = torch.randn(120, 3, generator=g), torch.randn(120, 3, generator=g)
        y[:, 0] += 0.4
        est, se, _ = mmd2(x, y)
        ests.append(est)
        ses.append(se)
    ratio = float(np.mean(ses) / np.std(ests, ddof=1))
    assert 0.7 < ratio < 1.5, f"mean s.e. / sd of estimates = {ratio:.2f}, want about 1"


def test_mmd2_rejects_too_few_draws() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        mmd2(torch.zeros(1, 3), torch.zeros(5, 3))


# -- figures and page, from synthetic tables (fast) ---------------------------------------------


def _synthetic_run(name: str, seed: int, khat_special: bool = False) -> RunTables:
    g = np.random.default_rng(seed)
    hist = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_elbo": [-40.0, -35.0, -33.0],
            "train_objective": [-40.0, -35.0, -33.0],
            "val_elbo": [-38.0, -34.5, -33.5],
            "seconds": [0.5, 0.5, 0.4],
        }
    )
    ks = [1, 10, 100]
    est = np.array([-33.0, -32.4, -32.2]) - seed
    bounds = pd.DataFrame(
        {
            "split": "test",
            "k": ks,
            "bound": ["ELBO", "IWAE_10", "IWAE_100"],
            "estimate": est,
            "stderr": [0.02, 0.02, 0.02],
            "nll": -est,
            "bits_per_dim": -est / (64 * math.log(2)),
            "gap": est - est[0],
            "ess": [1.0, 6.0, 40.0],
            "khat": [np.nan, np.nan, 0.3],
            "khat_gt_0.7": [np.nan, np.nan, 0.1],
            "num_points": 40,
        }
    )
    khat = g.normal(0.3, 0.2, 40)
    if khat_special:
        khat[:3], khat[3:5], khat[5] = -np.inf, np.inf, np.nan
    points = pd.DataFrame(
        {"elbo": g.normal(-33, 3, 40), "gap": g.gamma(2.0, 0.4, 40), "khat": khat}
    )
    cfg = {"model_class": "VAE", "objective": "elbo", "data": "digits", "binarize": "dynamic"}
    return RunTables(Path(name), name, cfg, hist, bounds, points)


@pytest.mark.parametrize("num_runs", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_figures_render_with_agg(num_runs: int) -> None:
    runs = [_synthetic_run(f"run{i}", i, khat_special=i == 0) for i in range(num_runs)]
    colours = F.run_colours(num_runs)
    backend = matplotlib.get_backend()
    for draw in (F.learning_curves, F.bounds_vs_k, F.gap_histogram, F.khat_distribution):
        image = F.png(draw, runs, colours)
        assert image.startswith(b"\x89PNG\r\n\x1a\n"), draw.__name__
    images = np.random.default_rng(0).random((16, 64))
    panel = {
        "images": images,
        "image_shape": (8, 8),
        "ncol": 8,
        "title": "t",
        "row_labels": ["a", "b"],
    }
    assert F.png(F.image_panels, [panel, panel], "run0", colours[0]).startswith(b"\x89PNG")
    maps = [
        {
            "name": r.name,
            "colour": c,
            "codes": np.random.default_rng(1).normal(size=(40, 2)),
            "labels": np.arange(40) % 10,
            "axis": "z",
        }
        for r, c in zip(runs, colours)
    ]
    assert F.png(F.latent_maps, maps, 10).startswith(b"\x89PNG")
    grid = np.random.default_rng(2).random((64, 64))
    values = [np.linspace(-2, 2, 8), np.linspace(2, -2, 8)]
    panels = [
        {
            "images": grid,
            "image_shape": (8, 8),
            "values": values,
            "dims": [0, 1],
            "title": r.name,
            "colour": c,
            "axis": "z",
        }
        for r, c in zip(runs, colours)
    ]
    assert F.png(F.traversals, panels).startswith(b"\x89PNG")
    assert matplotlib.get_backend() == backend  # drawing never switches the global backend


def test_tile_places_each_image() -> None:
    images = np.arange(3 * 4, dtype=float).reshape(3, 4)
    grid = F.tile(images, (2, 2), ncol=2)
    assert grid.shape == (5, 5)
    np.testing.assert_array_equal(grid[3:5, 0:2], images[2].reshape(2, 2))
    assert np.isnan(grid[2]).all() and np.isnan(grid[3:5, 3:5]).all()


def test_page_is_valid_self_contained_html(tmp_path: Path) -> None:
    page = Page("a <title> & more")
    page.section("Summary", "summary")
    table = pd.DataFrame({"run": ["a|b", "c"], "ELBO": [-3.0, -2.0], "NLL (nats)": [3.0, 2.0]})
    page.add_table(table, "caption <b>", ranked=True, table_id="summary-table")
    page.note("a note with <angle> brackets")
    page.figure(
        F.png(F.khat_distribution, [_synthetic_run("r", 0)], F.run_colours(1)), "k.png", "k-hat"
    )
    html_path, md_path, folder = page.write(tmp_path / "r.html")
    checker = check_page(html_path)
    assert len(checker.images) == 1
    assert base64.b64decode(checker.images[0].split(",", 1)[1]) == (folder / "k.png").read_bytes()
    cells = _cells(checker)
    assert cells[1]["ELBO"]["text"] == "-2" and "best" in cells[1]["ELBO"]["class"]
    assert "best" in cells[1]["NLL (nats)"]["class"] and "best" not in cells[0]["ELBO"]["class"]
    assert float(cells[1]["ELBO"]["value"]) == -2.0
    md = md_path.read_text()
    assert "| a\\|b | -3 | 3 |" in md and "| c | **-2** | **2** |" in md
    assert "![k-hat](r_files/k.png)" in md


def test_format_value() -> None:
    assert format_value("ELBO", -27.3254788) == "-27.33"
    assert format_value("k̂ > 0.7", 0.125) == "12.5%"
    assert format_value("parameters", np.int64(12345)) == "12,345"
    assert format_value("ELBO", float("nan")) == "—"
    assert format_value("ELBO", -math.inf) == "−∞"


# -- real runs (module fixture: three tiny runs through the CLI) --------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    common = ["--data", "digits", "--epochs", "2", "--ks", "1,10", "--limit", "50", "--quiet"]
    specs = {
        "vae": ["vae", "--hidden-dims", "32"],
        "vae2d": ["vae", "--hidden-dims", "32", "--latent-dim", "2"],
        "ppca": ["ppca", "--binarize", "none", "--latent-dim", "2"],
    }
    out = []
    for name, spec in specs.items():
        assert main(["run", *spec, *common, "--out", str(root / name)]) == 0, name
        out.append(root / name)
    return out


@pytest.mark.slow
def test_run_writes_its_report(runs: list[Path], capsys: pytest.CaptureFixture) -> None:
    for run in runs:
        html_path = run / "report.html"
        assert html_path.is_file() and (run / "report.md").is_file()
        checker = check_page(html_path)
        pngs = sorted((run / "report_files").glob("*.png"))
        assert len(checker.images) == len(pngs) >= 6
        embedded = {base64.b64decode(src.split(",", 1)[1]) for src in checker.images}
        assert embedded == {p.read_bytes() for p in pngs}


@pytest.mark.slow
@pytest.mark.parametrize("num_runs", [1, 3])
def test_report_of_runs(
    runs: list[Path], tmp_path: Path, num_runs: int, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "rep.html"
    assert (
        main(["report", *map(str, runs[:num_runs]), "--out", str(out), "--mmd-samples", "200"]) == 0
    )
    assert str(out) in capsys.readouterr().out
    checker = check_page(out)
    md = (tmp_path / "rep.md").read_text()
    pngs = sorted((tmp_path / "rep_files").glob("*.png"))
    assert len(checker.images) == len(pngs)
    for p in pngs:
        assert f"(rep_files/{p.name})" in md
    rows = _cells(checker)
    assert len(rows) == num_runs
    for run, row in zip(runs, rows):
        b = pd.read_csv(run / "bounds.csv").sort_values("k")
        top = b.iloc[-1]
        expected = {
            "ELBO": b[b["k"] == 1]["estimate"].iloc[0],
            "IWAE_10": b[b["k"] == 10]["estimate"].iloc[0],
            "log p̂(x)": top["estimate"],
            "± s.e.": top["stderr"],
            "NLL (nats)": top["nll"],
            "bits/dim": top["bits_per_dim"],
            "gap (nats)": top["gap"],
            "median ESS": top["ess"],
            "k̂ > 0.7": top["khat_gt_0.7"],
        }
        for col, value in expected.items():
            if isinstance(value, float) and math.isnan(value):  # e.g. k-hat with K < 20 draws
                assert col not in row or "data-value" not in row[col], col
                continue
            cell = row[col]
            assert float(cell["value"]) == value, f"{run.name} {col}: {cell['value']} != {value}"
            assert cell["text"] == format_value(col, value)
            assert cell["text"] in md
        assert math.isfinite(float(row["MMD²"]["value"]))
        h = pd.read_csv(run / "history.csv")
        assert float(row["time (s)"]["value"]) == pytest.approx(h["seconds"].sum())
        assert float(row["epochs"]["value"]) == len(h) == 2
    if num_runs == 3:
        html = out.read_text()
        assert "compared (bold) only within each group" in html  # ppca models grey levels
        # the two VAEs share data and points: bold marks one of them; ppca stands alone
        assert any("best" in c["class"] for row in rows[:2] for c in row.values())
        assert not any("best" in c["class"] for c in rows[2].values())
        assert "<strong>" in html


@pytest.mark.slow
def test_report_of_a_trained_but_unevaluated_run(runs: list[Path], tmp_path: Path) -> None:
    run = tmp_path / "bare"
    shutil.copytree(
        runs[1],
        run,
        ignore=shutil.ignore_patterns("report*", "bounds.csv", "points.csv", "evaluations"),
    )
    out = write_report([run], mmd_samples=100)
    assert out == run / "report.html"
    check_page(out)
    assert "No run is evaluated" in out.read_text()
    assert read_run_tables(run).bounds is None


def test_report_of_a_missing_run_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no config.json" in err and len(err.splitlines()) == 1


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium")
def test_page_renders_in_headless_chromium(runs: list[Path], tmp_path: Path) -> None:
    page = runs[0] / "report.html"
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=3000",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    checker = _Checker()
    checker.feed(dom)
    assert len(checker.images) == len(list((runs[0] / "report_files").glob("*.png")))
    assert all(src.startswith("data:image/png;base64,") for src in checker.images)
    shot = tmp_path / "shot.png"
    subprocess.run(
        cmd[:-2] + [f"--screenshot={shot}", "--window-size=1100,2400", page.resolve().as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[1] == 1100 and pixels[..., :3].std() > 0.05, "a blank screenshot"
