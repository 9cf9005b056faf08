"""Reports of trained runs: a summary table, figures and a sample-based divergence, written as one
self-contained HTML page and its Markdown twin.

``write_report(["runs/a", "runs/b"], "report.html")`` (or ``pyrogen.report([...], ...)``) reads
each run directory (config.json, history.csv, its evaluation, and the model through
:func:`pyrogen.runs.load_run`) and writes ``report.html``, ``report.md`` and the PNG figures
in ``report_files/``.
"""

import sys
import types

from pyrogen.report.build import write_report
from pyrogen.report.mmd import MMD, mmd2
from pyrogen.report.tables import read_run_tables, summary_table

__all__ = ["MMD", "mmd2", "read_run_tables", "summary_table", "write_report"]


class _CallableModule(types.ModuleType):
    """``pyrogen.report(runs, out)``: the package called is :func:`write_report`, the Python
    peer of ``pyrogen report``."""

    def __call__(self, runs: list, out: str | None = None, **options: object) -> object:
        return write_report(runs, out, **options)


sys.modules[__name__].__class__ = _CallableModule
