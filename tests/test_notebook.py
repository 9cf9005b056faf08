"""Notebooks: an Evaluation shows as its bounds table, a report's path as the page inline."""

import html
from pathlib import Path

import torch

import pyrogen
from pyrogen.bounds import estimate, summarize
from pyrogen.report.inline import ReportPath


def test_an_evaluation_shows_as_the_bounds_table():
    torch.manual_seed(0)
    lw = torch.randn(100, 7).double()
    points = estimate(lw, [1, 10, 100])
    ev = pyrogen.Evaluation(points, summarize(points, [1, 10, 100], data_dim=4))
    page = ev._repr_html_()
    assert page.count("<tr") == 4 and "<table" in page  # a header and one row per k
    for piece in ("ELBO", "IWAE_10", "IWAE_100", "khat", "7 points", "K=100"):
        assert piece in page, page


def test_a_report_path_is_a_path_shown_inline(tmp_path):
    page = tmp_path / "report.html"
    page.write_text('<!doctype html><html><body><h1>Runs & "bounds"</h1></body></html>')
    out = ReportPath(page)
    assert isinstance(out, Path) and out == page and out.read_text() == page.read_text()
    shown = out._repr_html_()
    assert shown.startswith("<iframe srcdoc=") and html.escape('"bounds"') in shown
    assert "<h1>" not in shown  # the page is escaped into the attribute, not mixed in
    assert ReportPath(tmp_path / "missing.html")._repr_html_() is None
    assert (out.parent / "x.md").name == "x.md"  # path arithmetic still works
