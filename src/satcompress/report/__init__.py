"""Human-readable results: tables for the terminal and Markdown summaries."""

from satcompress.report.tables import markdown_table, rich_table, rich_table_by_column

__all__ = ["markdown_table", "rich_table", "rich_table_by_column"]
