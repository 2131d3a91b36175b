"""The summary of a recipe judged over folds: ``OUT/summary.md`` of ``compress --folds``.

It says how the budget was judged (the metric drop on the mean over K folds x S seeds,
resources on the worst run), gives the verdict per limit, the paired interval of the primary
metric's drop and whether it is distinguishable from zero, and one row per run with the
run's own bootstrap interval, then the mean and sd (:meth:`FoldsResult.rows
<satcompress.pipeline.folds.FoldsResult.rows>`). Each run's full report is in its folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from satcompress.fileio import atomic_write_text
from satcompress.report.tables import markdown_table

if TYPE_CHECKING:
    from satcompress.pipeline.folds import FoldsResult

__all__ = ["SUMMARY_FILE", "folds_summary", "write_folds_summary"]

SUMMARY_FILE = "summary.md"


def folds_summary(result: "FoldsResult") -> str:
    """The Markdown summary of ``result``."""
    verdict = ("**All limits met.**" if result.fits_budget else "**Budget not met:** "
               + "; ".join(str(violation) for violation in result.violations) + ".")
    limits = [{"limit": row["limit"], "allowed": row["allowed"], "value": row["value"],
               "judged on": row["judged_on"], "verdict": "FAIL" if row["broken"] else "pass"}
              for row in result.limits()]
    links = ", ".join(f"[{run.result.out_dir.name}]({run.result.out_dir.name}/report.html)"
                      for run in result.runs)
    return (
        f"# satcompress compress — {result.task}, recipe `{result.recipe.name}`, "
        f"{result.mode}\n\n{result.recipe.description}\n\n"
        f"Budget: `{json.dumps(result.budget.to_dict())}`\n\n"
        f"Evaluation: {result.mode}. Each run tests one of {result.n_folds} grouped folds "
        "(no group in two folds; the next fold validates) with a base model trained for that "
        "fold and seed; metric-drop limits are judged on the mean drop over the runs, bytes, "
        "RAM and latency on the worst run's artifact.\n\n"
        f"{verdict}\n\n{result.interval.describe()}.\n\n"
        + (markdown_table(limits) + "\n" if limits else "")
        + markdown_table(result.rows())
        + f"\nEach run's report: {links}.\n"
    )


def write_folds_summary(out_dir: str | Path, result: "FoldsResult") -> Path:
    """Write :func:`folds_summary` as ``out_dir/summary.md`` (atomically)."""
    return atomic_write_text(Path(out_dir) / SUMMARY_FILE, folds_summary(result))
