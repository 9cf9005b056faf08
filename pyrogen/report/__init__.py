"""Reports of trained runs: a summary table, figures and a sample-based divergence, written as one
self-contained HTML page and its Markdown twin.

``write_report(["runs/a", "runs/b"], "report.html")`` reads each run directory (config.json,
history.csv, bounds.csv, points.csv, and the model through :func:`pyrogen.runs.load_run`) and
writes ``report.html``, ``report.md`` and the PNG figures in ``report_files/``.
"""

from pyrogen.report.build import write_report
from pyrogen.report.mmd import MMD, mmd2
from pyrogen.report.tables import read_run_tables, summary_table

__all__ = ["MMD", "mmd2", "read_run_tables", "summary_table", "write_report"]
