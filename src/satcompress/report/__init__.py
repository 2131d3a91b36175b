"""Human-readable results: tables for the terminal and Markdown summaries."""

from satcompress.report.tables import markdown_table, rich_table

__all__ = ["markdown_table", "rich_table"]
