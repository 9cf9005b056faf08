"""Assembling the report: one self-contained HTML page and its Markdown twin.

The page is a list of blocks (headings, paragraphs, tables, figures) rendered twice: to HTML with
every figure embedded as a base64 PNG data URI (no external file, script or style sheet; it opens
from disk in any browser), and to Markdown with the same PNGs in a folder beside it.
"""

from __future__ import annotations

import base64
import html
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pyrogen.atomic import write_bytes, write_text
from pyrogen.report.tables import BEST, best_rows

__all__ = ["Block", "Page", "format_value"]

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1180px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc;
     padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.75em; margin: 0.8em 0; display: block;
        overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.35em; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
td.best { background: #e6f4ea !important; }
td.num { white-space: nowrap; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; }
figcaption, .caption { color: #555; font-size: 0.9em; }
.note { color: #666; font-style: italic; }
code { background: #f4f4f4; padding: 0 0.2em; font-size: 0.9em; }
nav a { margin-right: 1em; }
"""


def format_value(column: str, value: Any) -> str:
    """The text a summary cell shows (the HTML keeps the full value in ``data-value``)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if column == "parameters" else str(int(value))
    if not isinstance(value, (float, np.floating)):
        return str(value)
    v = float(value)
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if column == "time (s)":
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
    if column == "k̂ > 0.7":
        return f"{v:.1%}"
    if column in ("± s.e.", "MMD² s.e."):
        return f"{v:.2g}"
    if column == "bits/dim":
        return f"{v:.4f}"
    if column.startswith("MMD²"):
        return f"{v:.3g}"
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"


@dataclass
class Block:
    """One element of the page: ``kind`` is h2, p, note, table, figure or code."""

    kind: str
    text: str = ""
    anchor: str = ""
    table: pd.DataFrame | None = None
    marks: dict | None = None
    image: bytes = b""
    filename: str = ""


class Page:
    """A report under construction; :meth:`write` renders it to HTML and Markdown."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.blocks: list[Block] = []

    def section(self, title: str, anchor: str) -> None:
        self.blocks.append(Block("h2", title, anchor))

    def paragraph(self, text: str) -> None:
        self.blocks.append(Block("p", text))

    def note(self, text: str) -> None:
        self.blocks.append(Block("note", text))

    def code(self, text: str) -> None:
        self.blocks.append(Block("code", text))

    def add_table(
        self,
        table: pd.DataFrame,
        caption: str = "",
        ranked: bool = False,
        table_id: str = "",
        groups: Sequence | None = None,
        marks: dict | None = None,
    ) -> None:
        """Adds a table; ``ranked`` marks the best values (within ``groups`` of rows), or the
        given ``marks`` (column -> rows to bold)."""
        if marks is None:
            marks = best_rows(table, groups) if ranked else {}
        self.blocks.append(Block("table", caption, table_id, table=table, marks=marks))

    def figure(self, image: bytes, filename: str, caption: str) -> None:
        self.blocks.append(Block("figure", caption, image=image, filename=filename))

    # -- HTML -----------------------------------------------------------------------------------

    def _html_table(self, b: Block) -> str:
        t, marks = b.table, b.marks or {}
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in t.columns)
        rows = []
        for i, row in enumerate(t.itertuples(index=False)):
            cells = []
            for col, v in zip(t.columns, row):
                text = html.escape(format_value(col, v))
                numeric = isinstance(v, (int, float, np.integer, np.floating)) and v is not pd.NA
                cls = ["num"] if numeric else []
                if i in marks.get(col, ()):
                    cls.append("best")
                    text = f"<strong>{text}</strong>"
                attrs = f' class="{" ".join(cls)}"' if cls else ""
                if numeric and not (isinstance(v, float) and math.isnan(v)):
                    attrs += f' data-column="{html.escape(col)}" data-value="{float(v)!r}"'
                cells.append(f"<td{attrs}>{text}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        caption = f'<p class="caption">{html.escape(b.text)}</p>\n' if b.text else ""
        table_id = f' id="{b.anchor}"' if b.anchor else ""
        return (
            f"<table{table_id}>\n"
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n"
            + "\n".join(rows)
            + "\n</tbody>\n</table>\n"
            + caption
        )

    def html(self, generated: str) -> str:
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(self.title)}</title>",
            f"<style>{CSS}</style>",
            "</head>",
            "<body>",
            f"<h1>{html.escape(self.title)}</h1>",
            f'<p class="caption">{html.escape(generated)}</p>',
        ]
        links = [
            f'<a href="#{b.anchor}">{html.escape(b.text)}</a>'
            for b in self.blocks
            if b.kind == "h2"
        ]
        parts.append("<nav>" + " ".join(links) + "</nav>")
        for b in self.blocks:
            if b.kind == "h2":
                parts.append(f'<h2 id="{b.anchor}">{html.escape(b.text)}</h2>')
            elif b.kind == "p":
                parts.append(f"<p>{html.escape(b.text)}</p>")
            elif b.kind == "note":
                parts.append(f'<p class="note">{html.escape(b.text)}</p>')
            elif b.kind == "code":
                parts.append(f"<p><code>{html.escape(b.text)}</code></p>")
            elif b.kind == "table":
                parts.append(self._html_table(b))
            elif b.kind == "figure":
                data = base64.b64encode(b.image).decode("ascii")
                parts.append(
                    f'<figure><img src="data:image/png;base64,{data}" '
                    f'alt="{html.escape(b.text)}">'
                    f"<figcaption>{html.escape(b.text)}</figcaption></figure>"
                )
        parts += ["</body>", "</html>", ""]
        return "\n".join(parts)

    # -- Markdown -------------------------------------------------------------------------------

    @staticmethod
    def _md_escape(text: str) -> str:
        return text.replace("|", "\\|")

    def _md_table(self, b: Block) -> str:
        t, marks = b.table, b.marks or {}
        lines = [
            "| " + " | ".join(self._md_escape(str(c)) for c in t.columns) + " |",
            "|" + "|".join("---" for _ in t.columns) + "|",
        ]
        for i, row in enumerate(t.itertuples(index=False)):
            cells = []
            for col, v in zip(t.columns, row):
                text = self._md_escape(format_value(col, v))
                cells.append(f"**{text}**" if i in marks.get(col, ()) else text)
            lines.append("| " + " | ".join(cells) + " |")
        text = "\n".join(lines) + "\n"
        return text + (f"\n_{b.text}_\n" if b.text else "")

    def markdown(self, generated: str, folder: str) -> str:
        parts = [f"# {self.title}", "", f"_{generated}_", ""]
        for b in self.blocks:
            if b.kind == "h2":
                parts += [f"## {b.text}", ""]
            elif b.kind == "p":
                parts += [b.text, ""]
            elif b.kind == "note":
                parts += [f"_{b.text}_", ""]
            elif b.kind == "code":
                parts += [f"`{b.text}`", ""]
            elif b.kind == "table":
                parts += [self._md_table(b)]
            elif b.kind == "figure":
                alt = b.text.replace("[", "(").replace("]", ")")
                parts += [f"![{alt}]({folder}/{b.filename})", "", f"_{b.text}_", ""]
        return "\n".join(parts)

    def write(self, out: Path) -> tuple[Path, Path, Path]:
        """Writes ``out`` (HTML), ``out.md`` and the PNGs into ``<stem>_files/``."""
        out.parent.mkdir(parents=True, exist_ok=True)
        folder = out.parent / f"{out.stem}_files"
        folder.mkdir(exist_ok=True)
        for b in self.blocks:
            if b.kind == "figure":
                write_bytes(folder / b.filename, b.image)
        generated = f"Written {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by pyrogen report."
        md = out.with_suffix(".md")
        for path, text in (
            (out, self.html(generated)),
            (md, self.markdown(generated, folder.name)),
        ):
            write_text(path, text)
        return out, md, folder


def ranked_caption(columns: Sequence[str]) -> str:
    """Says how the best values of a ranked table are chosen."""
    high = [c for c in columns if BEST.get(c) == "max" or c.startswith("IWAE_")]
    low = [c for c in columns if BEST.get(c) == "min"]
    if not high and not low:
        return ""
    high = (
        [c for c in high if not c.startswith("IWAE_")][:1]
        + (["IWAE_k"] if any(c.startswith("IWAE_") for c in high) else [])
        + [c for c in high if not c.startswith("IWAE_")][1:]
    )
    return (
        "Bold: the best among runs on the same data (highest "
        + ", ".join(high)
        + "; lowest "
        + ", ".join(low)
        + "); a bound only where the best run beats every other of its group by more than two "
        "paired standard errors over their shared points."
    )
