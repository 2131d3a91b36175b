"""The summary and the report of a recipe judged over folds: ``OUT/summary.md`` and
``OUT/report.html`` (with ``report.md``) of ``compress --folds``.

They say how the budget was judged (the metric drop on the mean over K folds x S seeds,
resources on the worst run), give the verdict per limit, the paired interval of the primary
metric's drop and whether it is distinguishable from zero, one row per run with the run's own
bootstrap interval, then the mean and sd (:meth:`FoldsResult.rows
<satcompress.pipeline.folds.FoldsResult.rows>`), and every stage's metric and bytes on every
run with the paired interval of each stage's drop from the base. The report adds a figure of
the base and the artifact per run and of each stage's mean drop. Each run's full report is in
its folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from satcompress.fileio import atomic_write_text
from satcompress.report import plots
from satcompress.report.document import (
    Code,
    Figure,
    Paragraph,
    Section,
    Table,
    interval_row,
    render_report,
)
from satcompress.report.tables import markdown_table

if TYPE_CHECKING:
    from satcompress.pipeline.folds import FoldsResult

__all__ = ["SUMMARY_FILE", "folds_sections", "folds_summary", "write_folds_report",
           "write_folds_summary"]

SUMMARY_FILE = "summary.md"


def _verdict(result: "FoldsResult") -> str:
    return ("All limits met." if result.fits_budget else "Budget not met: "
            + "; ".join(str(violation) for violation in result.violations) + ".")


def _explanation(result: "FoldsResult") -> str:
    return (f"Evaluation: {result.mode}. Each run tests one of {result.n_folds} grouped folds "
            "(no group in two folds; the next fold validates) with a base model trained for "
            "that fold and seed; metric-drop limits are judged on the mean drop over the runs, "
            "bytes, RAM and latency on the worst run's artifact.")


def _limit_rows(result: "FoldsResult") -> list[dict]:
    return [{"limit": row["limit"], "allowed": row["allowed"], "value": row["value"],
             "judged on": row["judged_on"], "verdict": "FAIL" if row["broken"] else "pass"}
            for row in result.limits()]


def _stage_heading(result: "FoldsResult") -> str:
    return (f"Every stage on every run: test {result.metric} and bytes (stored widths; the "
            "artifact: its file), and each stage's mean drop from the base with its paired "
            "95 % interval over the runs.")


def folds_summary(result: "FoldsResult") -> str:
    """The Markdown summary of ``result``."""
    limits = _limit_rows(result)
    links = ", ".join(f"[{run.result.out_dir.name}]({run.result.out_dir.name}/report.html)"
                      for run in result.runs)
    return (
        f"# satcompress compress — {result.task}, recipe `{result.recipe.name}`, "
        f"{result.mode}\n\n{result.recipe.description}\n\n"
        f"Budget: `{json.dumps(result.budget.to_dict())}`\n\n"
        f"{_explanation(result)}\n\n**{_verdict(result)}**\n\n{result.interval.describe()}.\n\n"
        + (markdown_table(limits) + "\n" if limits else "")
        + markdown_table(result.rows())
        + f"\n## Stages\n\n{_stage_heading(result)}\n\n"
        + markdown_table(result.stage_summary())
        + f"\n{result.metric} per stage and run:\n\n"
        + markdown_table(result.stage_table(result.metric))
        + "\nbytes per stage and run:\n\n" + markdown_table(result.stage_table("bytes"))
        + f"\nEach run's report: {links}.\n"
    )


def write_folds_summary(out_dir: str | Path, result: "FoldsResult") -> Path:
    """Write :func:`folds_summary` as ``out_dir/summary.md`` (atomically)."""
    return atomic_write_text(Path(out_dir) / SUMMARY_FILE, folds_summary(result))


def _figure(result: "FoldsResult") -> Figure:
    base, artifact = zip(*(run.values(result.metric) for run in result.runs))
    intervals = result.stage_intervals
    png = plots.folds_png(
        [f"fold {run.fold}, seed {run.seed}" for run in result.runs], base, artifact,
        result.stages[1:], [i.drop for i in intervals], [i.low for i in intervals],
        [i.high for i in intervals], result.metric,
        dict(result.budget.max_metric_drop).get(result.metric))
    return Figure("folds", png, (
        f"Left: test {result.metric} of the base model and of the artifact on each run's test "
        "fold (dotted: the means). Right: each stage's mean drop from the base over the runs "
        "with its paired 95 % interval; an interval that excludes 0 is a real drop (or gain); "
        "dashed red: the budget's limit, judged on the mean."))


def folds_sections(result: "FoldsResult") -> list[Section]:
    """The report's sections: evaluation, budget, runs, stages, recipe."""
    limits = _limit_rows(result)
    interval = result.interval
    return [
        ("Evaluation", [
            Paragraph(_explanation(result)),
            Paragraph(_verdict(result), "verdict-pass" if result.fits_budget else "verdict-fail"),
            Paragraph(f"Artifact against base: {interval.describe()}."),
            Table([interval_row(interval)]), _figure(result)]),
        ("Budget", [Table(limits) if limits else Paragraph("The budget sets no limit.")]),
        ("Runs", [Paragraph(
            f"One row per fold and seed: test {result.metric} of the base and the artifact, the "
            "drop, the run's own paired bootstrap interval over its test groups (one split), "
            "the artifact's bytes and its resource verdict; then the mean and sd over runs. "
            "Each run's full report is report.html in its folder: "
            + ", ".join(run.result.out_dir.name for run in result.runs) + "."),
            Table(result.rows())]),
        ("Stages", [Paragraph(_stage_heading(result)), Table(result.stage_summary()),
                    Paragraph(f"Test {result.metric} per stage and run:"),
                    Table(result.stage_table(result.metric)),
                    Paragraph("Bytes per stage and run:"), Table(result.stage_table("bytes"))]),
        ("Recipe", [Paragraph(result.recipe.description or result.recipe.name),
                    Code(result.recipe.to_toml(), "toml"), Paragraph("Budget:"),
                    Code(json.dumps(result.budget.to_dict()), "json")]),
    ]


def write_folds_report(out_dir: str | Path, result: "FoldsResult") -> tuple[Path, Path]:
    """Write the report of ``result`` (``report.html``, ``report.md``, ``figures/folds.png``)
    into ``out_dir`` atomically."""
    return render_report(out_dir, f"satcompress report: {result.task}, recipe "
                         f"{result.recipe.name}, {result.mode}", folds_sections(result))
