"""The report in a notebook: the path :func:`~pyrogen.report.write_report` returns shows the page.

:class:`ReportPath` is the path of the HTML page (a :class:`pathlib.Path`, so every caller that
opens, copies or prints it works as before) with ``_repr_html_``: Jupyter shows the
self-contained page inline, in an ``<iframe srcdoc=...>`` so its styles stay its own.
"""

from __future__ import annotations

import html
from pathlib import Path

__all__ = ["ReportPath"]

#: the height of the inline page in a notebook, in CSS pixels
INLINE_HEIGHT = 800


class ReportPath(type(Path())):  # PosixPath or WindowsPath: subclassable on Python 3.10+
    """The path of a written report, shown inline in a notebook."""

    def _repr_html_(self) -> str | None:
        if self.suffix.lower() not in (".html", ".htm") or not self.is_file():
            return None  # not a page: Jupyter falls back to the plain repr
        page = self.read_text(encoding="utf-8")
        return (
            f'<iframe srcdoc="{html.escape(page, quote=True)}" title="{html.escape(str(self))}" '
            f'style="width: 100%; height: {INLINE_HEIGHT}px; border: 0"></iframe>'
        )
