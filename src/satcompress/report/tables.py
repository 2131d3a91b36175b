"""Render rows of results (dicts with the same keys) as a rich, Markdown or HTML table."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

from rich.table import Table

__all__ = ["format_value", "html_table", "markdown_table", "rich_table", "rich_table_by_column"]


def format_value(value: object) -> str:
    """Numbers with sensible precision, everything else as ``str``."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def _columns(rows: Sequence[dict]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    return columns


def rich_table(rows: Sequence[dict], title: str | None = None) -> Table:
    """A rich table with one column per key seen in ``rows`` (missing cells blank)."""
    table = Table(title=title)
    columns = _columns(rows)
    for column in columns:
        table.add_column(column, justify="left" if column == columns[0] else "right")
    for row in rows:
        table.add_row(*(format_value(row[c]) if c in row else "" for c in columns))
    return table


def rich_table_by_column(rows: Sequence[dict], title: str | None = None) -> Table:
    """Transposed table: one column per row (e.g. per stage), one line per quantity.

    Readable in a terminal when the rows have many fields, as stage measurements do; the first
    key of each row (e.g. ``stage``) heads its column.
    """
    columns = _columns(rows)
    table = Table(title=title)
    table.add_column(columns[0])
    for row in rows:
        table.add_column(format_value(row.get(columns[0], "")), justify="right")
    for column in columns[1:]:
        table.add_row(column, *(format_value(row[column]) if column in row else "" for row in rows))
    return table


def markdown_table(rows: Sequence[dict]) -> str:
    """The same table as GitHub-flavoured Markdown."""
    columns = _columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = (format_value(row[c]) if c in row else "" for c in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def html_table(rows: Sequence[dict], cell_classes: Mapping[str, str] | None = None) -> str:
    """The same table as an HTML ``<table>``, every cell escaped.

    ``cell_classes`` maps a cell's text to a CSS class for that cell (e.g. ``{"FAIL": "fail"}``).
    """
    cell_classes = cell_classes or {}
    columns = _columns(rows)

    def cell(text: str) -> str:
        css = cell_classes.get(text)
        opening = f'<td class="{html.escape(css)}">' if css else "<td>"
        return f"{opening}{html.escape(text)}</td>"

    head = "".join(f"<th>{html.escape(column)}</th>" for column in columns)
    body = "\n".join(
        "<tr>" + "".join(cell(format_value(row[c]) if c in row else "") for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"
