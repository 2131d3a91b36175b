"""The run report: ``report.html`` (self-contained) and ``report.md`` from one list of sections.

The report is assembled once as sections of blocks (paragraphs, tables, figures, code) and
rendered twice: as one HTML file with inline CSS and the figures embedded as base64 PNG data
URIs (no script, no external asset: it opens offline and can be mailed as one file), and as
Markdown with the figures written to ``figures/``. Sections: the verdict, the budget with
pass/fail per limit, the evaluation (one split, with the paired bootstrap interval of the
metric drop over test groups), bytes and metric per stage, base vs compressed on the test set
(confusion matrices, reliability diagram), the final model's layers, the latency
distribution, the stage table and recipe, and the flight artifact's verification and forward
error correction. :func:`render_report` renders any such list of sections (the report of a
recipe judged over folds, :mod:`satcompress.report.folds`, is another).
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from satcompress.artifact.fec import CODEWORD_BYTES
from satcompress.fileio import atomic_write_bytes, atomic_write_text
from satcompress.measure import Measurement
from satcompress.pipeline.budget import Budget, Violation, metric_direction
from satcompress.report import plots
from satcompress.report.layers import layer_rows
from satcompress.report.tables import html_table, markdown_table

if TYPE_CHECKING:
    from satcompress.measure.uncertainty import DropInterval
    from satcompress.pipeline.flight import VerifyReport
    from satcompress.pipeline.result import RunResult

__all__ = ["HTML_FILE", "MARKDOWN_FILE", "FIGURES_DIR", "Block", "Code", "Figure",
           "Paragraph", "Section", "Table", "interval_row", "render_report", "write_report"]

HTML_FILE = "report.html"
MARKDOWN_FILE = "report.md"
FIGURES_DIR = "figures"

_STYLE = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #1f77b4; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; padding-bottom: .15em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f4f8; }
td:first-child, th:first-child { text-align: left; }
tbody tr:nth-child(even) { background: #fafafa; }
td.pass { background: #e3f4e1; color: #1b5e20; font-weight: bold; }
td.fail { background: #fde2e1; color: #b71c1c; font-weight: bold; }
.scroll { overflow-x: auto; }
p.verdict-pass { background: #e3f4e1; border-left: 6px solid #2e7d32; padding: .6em 1em; }
p.verdict-fail { background: #fde2e1; border-left: 6px solid #c62828; padding: .6em 1em; }
p.notice { background: #fff8e1; border-left: 6px solid #f9a825; padding: .6em 1em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #555; }
pre { background: #f6f8fa; padding: .8em; white-space: pre-wrap; overflow-wrap: anywhere; font-size: 13px; }
"""

_STATUS_CLASSES = {"pass": "pass", "FAIL": "fail"}


@dataclass(frozen=True)
class Paragraph:
    """A paragraph; ``css`` (e.g. ``verdict-pass``) styles it in HTML and bolds it in Markdown."""

    text: str
    css: str = ""


@dataclass(frozen=True)
class Table:
    """A table: one row per dict, one column per key seen."""

    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class Figure:
    """A PNG figure: embedded in HTML, written as ``figures/NAME.png`` beside the Markdown."""

    name: str
    png: bytes
    caption: str


@dataclass(frozen=True)
class Code:
    """A verbatim block (a recipe, a budget)."""

    text: str
    language: str = ""


Block = Paragraph | Table | Figure | Code
Section = tuple[str, list[Block]]
"""A heading and its blocks."""


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def _candidate(result: "RunResult") -> tuple[Measurement, tuple[Violation, ...], str]:
    """What the budget judges: the artifact where one was written, else the final model."""
    if result.flight is not None:
        return result.flight, result.flight_violations, (
            "the flight artifact (its size on disk, the runtime's planned RAM, latency and "
            "metrics)")
    return result.final, result.violations[-1], "the final model (stored widths, PyTorch)"


def _quantity(limit: str, value: float) -> str:
    if limit in ("max_bytes", "max_ram_bytes"):
        return f"{value:,.0f} B"
    if limit == "max_latency_ms":
        return f"{value:.4g} ms"
    return f"{value + 0.0:+.4g}"  # + 0.0: no "-0" for an unchanged metric


def _budget_section(result: "RunResult", failure: str | None) -> list[Block]:
    candidate, broken, what = _candidate(result)
    base = result.measurements[0]
    usage = result.budget.usage(candidate, base)
    if failure:
        verdict = Paragraph(f"Budget NOT met. {failure}", "verdict-fail")
    elif broken:
        verdict = Paragraph("Budget NOT met: " + "; ".join(map(str, broken)), "verdict-fail")
    else:
        verdict = Paragraph("Every limit met.", "verdict-pass")
    warned = [Paragraph(f"Warning. {warning}", "verdict-fail") for warning in result.warnings]
    if not usage:
        return [verdict, *warned, Paragraph("The budget sets no limit.")]
    rows = [{
        "limit": item.limit,
        "value": _quantity(item.limit, item.actual),
        "allowed": _quantity(item.limit, item.allowed),
        "margin": _quantity(item.limit, item.allowed - item.actual),
        "margin_%_of_limit": (round(100 * (item.allowed - item.actual) / item.allowed, 2)
                              if item.allowed else ""),
        "status": "FAIL" if item.broken else "pass",
    } for item in usage]
    explanation = Paragraph(
        f"Judged on {what}: {candidate.stage}. Metric drops are measured in the metric's own "
        "direction relative to the base model; a positive margin is headroom.")
    return [verdict, *warned, explanation, Table(rows)]


def interval_row(interval: "DropInterval") -> dict[str, Any]:
    """A table row of a metric drop's paired interval: the values, the ends, the verdict."""
    return {"metric": interval.metric, "base": interval.base, "compressed": interval.compressed,
            "drop": interval.drop + 0.0, f"{interval.confidence:.0%} low": interval.low,
            f"{interval.confidence:.0%} high": interval.high,
            "excludes 0": "yes" if interval.distinguishable else "no",
            "method": interval.method}


def _evaluation_section(interval: "DropInterval | None") -> list[Block]:
    """One split: the primary metric's drop to the artifact with its bootstrap interval."""
    mode = Paragraph("Evaluation: one split. The base model and every stage are measured on "
                     "one test split; the budget's metric-drop limit is judged on that split "
                     "alone (compress --folds K judges the mean over K grouped folds).")
    if interval is None:
        return [mode, Paragraph("No interval of the metric drop was computed (the task's "
                                "evaluation does not score its primary metric).", "notice")]
    return [mode, Paragraph(f"Artifact against base: {interval.describe()}."),
            Table([interval_row(interval)])]


def _metric_limit(budget: Budget, metric: str, base: float) -> float | None:
    drops = dict(budget.max_metric_drop)
    if metric not in drops:
        return None
    return base - drops[metric] if metric_direction(metric) else base + drops[metric]


def _waterfall_section(result: "RunResult", metric: str) -> list[Block]:
    candidates = list(result.measurements)
    if result.flight is not None:
        candidates.append(result.flight)
    base = result.measurements[0]
    png = plots.waterfall_png(
        [m.stage for m in candidates], [m.theoretical_bytes for m in candidates],
        [m.metrics[metric] for m in candidates], metric, result.budget.max_bytes,
        _metric_limit(result.budget, metric, base.metrics[metric]),
        artifact_stages=int(result.flight is not None),
    )
    return [Figure("waterfall", png, (
        "Top: bytes stored after each stage (stored bit widths; the green bar is the artifact "
        "file on disk), log scale, with the compression ratio against the base. Bottom: test "
        f"{metric} after each stage. Dotted: the base model; dashed red: the budget."))]


def _test_set_section(result: "RunResult") -> list[Block]:
    comparison = result.comparison
    if comparison is None:
        return [Paragraph("This run recorded no test-set outputs of the two models.", "notice")]
    rows = [{
        "model": name,
        "test_examples": len(comparison.labels),
        "accuracy_argmax": float(np.mean(probabilities.argmax(axis=1) == comparison.labels)),
        "ECE_10_bins": plots.expected_calibration_error(comparison.labels, probabilities),
        "mean_confidence": float(probabilities.max(axis=1).mean()),
    } for name, probabilities in (("base", comparison.base_probabilities),
                                  ("compressed", comparison.final_probabilities))]
    return [
        Table(rows),
        Figure("confusion", plots.confusion_png(
            comparison.labels, comparison.base_probabilities, comparison.final_probabilities,
            comparison.class_names),
            "Confusion matrices of the base and the compressed model on the test split "
            "(argmax predictions; each cell: count and fraction of its true class)."),
        Figure("reliability", plots.reliability_png(
            comparison.labels, comparison.base_probabilities, comparison.final_probabilities),
            "Reliability diagram: accuracy of the test examples in each top-label confidence "
            "bin against their mean confidence; ECE as in Guo et al. (2017)."),
    ]


def _latency_section(result: "RunResult") -> list[Block]:
    comparison = result.comparison
    if comparison is None:
        return [Paragraph("This run recorded no latency samples.", "notice")]
    rows = [{
        "model": name, "samples": len(samples),
        "p50_ms": float(np.percentile(samples, 50)), "p95_ms": float(np.percentile(samples, 95)),
        "mean_ms": float(samples.mean()), "min_ms": float(samples.min()),
        "max_ms": float(samples.max()),
    } for name, samples in (("base", comparison.base_latency_ms),
                            ("compressed", comparison.final_latency_ms))]
    return [Table(rows), Figure(
        "latency", plots.latency_png(comparison.base_latency_ms, comparison.final_latency_ms),
        "Batch-1 forward passes of the first test example, timed one by one after the stages "
        "ran (PyTorch, one thread, garbage collector paused); the stage table's percentiles "
        "are from each stage's own measurement.")]


def _artifact_section(result: "RunResult") -> list[Block]:
    verification = result.verification
    if verification is None:
        return [Paragraph("No flight artifact was written for this run: the sections above "
                           "describe the in-framework model only.", "notice")]
    report = verification.to_dict()
    scalars = [{"check": key, "value": value} for key, value in report.items()
               if not isinstance(value, dict)]
    metrics = [{"metric": name, "artifact_runtime": value,
                "pytorch": report["framework_metrics"].get(name, "")}
               for name, value in report["metrics"].items()]
    status = ("The artifact agrees with the in-framework model." if verification.passed else
              "The artifact does NOT agree with the in-framework model.")
    return [Paragraph(status, "verdict-pass" if verification.passed else "verdict-fail"),
            *_fec_blocks(verification), Table(scalars), Table(metrics)]


def _firmware_section(firmware: dict) -> list[Block]:
    """The artifact's C built for the run's target: flash, RAM, instructions (estimates)."""
    from satcompress.firmware.export import ExportReport

    report = ExportReport(**firmware)
    return [Paragraph(f"The artifact's C library for {report.target['name']} "
                       f"({report.target['description']}), in {report.folder}; with a target "
                       "the budget's bytes and RAM are the firmware's. Instructions are counted "
                       "by QEMU (-icount, SysTick): an estimate."), Table(report.rows())]


def _fec_blocks(verification: "VerifyReport") -> list[Block]:
    """Whether the artifact carries forward error correction, what it costs, what it fixed."""
    if not verification.fec_parity:
        return [Paragraph(
            "Forward error correction: OFF. A flipped bit anywhere in the file makes a loader "
            "refuse it (CRC32 and SHA-256): detected, not repaired. Set fec = true in the "
            "recipe (or compress --fec) for an artifact that travels to or is stored in "
            "flight.", "notice")]
    parity, size = verification.fec_parity, verification.size_bytes
    blocks = [Paragraph(
        f"Forward error correction: ON. Reed-Solomon RS({CODEWORD_BYTES}, "
        f"{CODEWORD_BYTES - parity}): "
        f"{verification.fec_bytes:,} of the file's {size:,} bytes are parity "
        f"({100 * verification.fec_bytes / size:.1f} %, counted in max_bytes); a loader "
        f"corrects up to {parity // 2} wrong bytes in every {CODEWORD_BYTES}-byte codeword.")]
    if verification.corrected_bytes:
        blocks.append(Paragraph(
            f"Loading corrected {verification.corrected_bytes} damaged byte(s) of the file: "
            "replace it with a clean copy before more errors add up.", "notice"))
    return blocks


def _by_stage(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Transpose stage rows: one row per quantity, one column per stage (they have many keys)."""
    quantities = [key for key in rows[0] if key != "stage"]
    quantities += [key for row in rows for key in row if key not in quantities and key != "stage"]
    return [{"quantity": key, **{row["stage"]: row.get(key, "") for row in rows}}
            for key in quantities]


def _sections(result: "RunResult", metric: str, failure: str | None,
              interval: "DropInterval | None") -> list[Section]:
    return [
        ("Budget", _budget_section(result, failure)),
        ("Evaluation", _evaluation_section(interval)),
        ("Bytes and metric per stage", _waterfall_section(result, metric)),
        ("Base vs compressed on the test set", _test_set_section(result)),
        ("Layers of the final model", [
            Paragraph("Every module owning parameters; bits are the stored width of its "
                       "weight, clusters its codebook size, rank that of its low-rank factors."),
            Table(layer_rows(result.model))]),
        ("Latency distribution", _latency_section(result)),
        ("Stages", [Paragraph("Every stage's measurement (one column per stage; the last is "
                               "the artifact where one was written)."),
                    Table(_by_stage(result.rows()))]),
        ("Recipe", [Paragraph(result.recipe.description or result.recipe.name),
                    Code(result.recipe.to_toml(), "toml"),
                    Paragraph("Budget:"), Code(json.dumps(result.budget.to_dict()), "json")]),
        ("Flight artifact", _artifact_section(result)),
        *([("Firmware", _firmware_section(result.firmware))] if result.firmware else []),
    ]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _html_block(block: Block) -> str:
    if isinstance(block, Paragraph):
        css = f' class="{block.css}"' if block.css else ""
        return f"<p{css}>{html.escape(block.text)}</p>"
    if isinstance(block, Table):
        return f'<div class="scroll">{html_table(block.rows, _STATUS_CLASSES)}</div>'
    if isinstance(block, Figure):
        data = base64.b64encode(block.png).decode("ascii")
        caption = html.escape(block.caption)
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
                f"<figcaption>{caption}</figcaption></figure>")
    return f"<pre><code>{html.escape(block.text)}</code></pre>"


def _markdown_block(block: Block) -> str:
    if isinstance(block, Paragraph):
        return f"**{block.text}**" if block.css else block.text
    if isinstance(block, Table):
        return markdown_table(block.rows).rstrip("\n")
    if isinstance(block, Figure):
        return f"![{block.caption}]({FIGURES_DIR}/{block.name}.png)\n\n*{block.caption}*"
    return f"```{block.language}\n{block.text.rstrip()}\n```"


def render_report(out_dir: str | Path, title: str, sections: list[Section]) -> tuple[Path, Path]:
    """Write ``sections`` as ``report.html``, ``report.md`` and ``figures/*.png`` into
    ``out_dir`` atomically; returns the HTML and the Markdown report."""
    out_dir = Path(out_dir)
    for _, blocks in sections:
        for block in blocks:
            if isinstance(block, Figure):
                atomic_write_bytes(out_dir / FIGURES_DIR / f"{block.name}.png", block.png)
    body = "\n".join(
        f'<section id="{_slug(heading)}"><h2>{html.escape(heading)}</h2>\n'
        + "\n".join(_html_block(block) for block in blocks) + "\n</section>"
        for heading, blocks in sections
    )
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n")
    markdown = f"# {title}\n\n" + "\n\n".join(
        f"## {heading}\n\n" + "\n\n".join(_markdown_block(block) for block in blocks)
        for heading, blocks in sections
    ) + "\n"
    return (atomic_write_text(out_dir / HTML_FILE, page),
            atomic_write_text(out_dir / MARKDOWN_FILE, markdown))


def write_report(
    out_dir: str | Path,
    result: "RunResult",
    *,
    metric: str | None = None,
    failure: str | None = None,
    interval: "DropInterval | None" = None,
) -> tuple[Path, Path]:
    """Write ``report.html``, ``report.md`` and ``figures/*.png`` into ``out_dir`` atomically.

    Parameters
    ----------
    out_dir : path
        The run's output folder.
    result : RunResult
        The run (a failed run's ``BudgetNotMet.result`` too).
    metric : str, optional
        The task metric plotted per stage; where not given or not measured, the first limited
        metric of the budget, else the first metric measured.
    failure : str, optional
        Why the run failed (the runner's message naming the closest candidate and the limits it
        missed); shown at the top of the budget section.
    interval : DropInterval, optional
        The primary metric's drop from the base to the artifact on the run's one test split,
        with its paired bootstrap interval (``stages.json``'s ``drop_interval``).

    Returns
    -------
    tuple of Path
        The HTML and the Markdown report.
    """
    base_metrics = result.measurements[0].metrics
    if metric not in base_metrics:
        metric = next(iter(dict(result.budget.max_metric_drop)), None) or next(iter(base_metrics))
    return render_report(out_dir, f"satcompress report: {result.task}, recipe {result.recipe.name}",
                         _sections(result, metric, failure, interval))
