"""The report's figures, each rendered to PNG bytes with matplotlib's Agg canvas.

Figures are built on :class:`matplotlib.figure.Figure` with
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg` directly, never through ``pyplot``,
so no global figure state or interactive backend is touched. Calibration follows Guo et al.
(2017, "On Calibration of Modern Neural Networks", ICML): top-label confidence in equal-width
bins, and the expected calibration error (ECE) as the bin-size-weighted gap.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

__all__ = [
    "BASE_COLOUR",
    "FINAL_COLOUR",
    "confusion_counts",
    "reliability_bins",
    "expected_calibration_error",
    "waterfall_png",
    "confusion_png",
    "reliability_png",
    "latency_png",
    "folds_png",
]

BASE_COLOUR = "#7f7f7f"
FINAL_COLOUR = "#1f77b4"
_ARTIFACT_COLOUR = "#2ca02c"
_BUDGET_COLOUR = "#d62728"
_DPI = 100


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return buffer.getvalue()


def waterfall_png(
    stages: Sequence[str],
    stored_bytes: Sequence[int],
    metric_values: Sequence[float],
    metric: str,
    max_bytes: int | None = None,
    metric_limit: float | None = None,
    artifact_stages: int = 0,
) -> bytes:
    """Bytes (log axis) and the task metric after every stage, with base and budget lines.

    The last ``artifact_stages`` entries are drawn in the artifact's colour (the flight file
    as written, as opposed to a stage's stored-width count).
    """
    figure = Figure(figsize=(10, 6.5))
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    positions = np.arange(len(stages))
    colours = [BASE_COLOUR] + [FINAL_COLOUR] * (len(stages) - 1 - artifact_stages)
    colours += [_ARTIFACT_COLOUR] * artifact_stages
    top.bar(positions, stored_bytes, color=colours)
    top.set_yscale("log")
    top.axhline(stored_bytes[0], color=BASE_COLOUR, linestyle=":", label="base")
    if max_bytes is not None:
        top.axhline(max_bytes, color=_BUDGET_COLOUR, linestyle="--", label="budget max_bytes")
    for position, value in zip(positions, stored_bytes):
        top.annotate(f"{value / 1000:,.1f} kB\n{stored_bytes[0] / value:,.1f}x", (position, value),
                     ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                     textcoords="offset points")
    top.set_ylabel("stored bytes (log)")
    top.legend(loc="upper right", fontsize=8)
    top.margins(y=0.25)
    bottom.plot(positions, metric_values, marker="o", color=FINAL_COLOUR)
    bottom.axhline(metric_values[0], color=BASE_COLOUR, linestyle=":", label="base")
    if metric_limit is not None:
        bottom.axhline(metric_limit, color=_BUDGET_COLOUR, linestyle="--",
                       label="budget (base ± max drop)")
    bottom.set_ylabel(f"test {metric}")
    bottom.legend(loc="best", fontsize=8)
    bottom.set_xticks(positions, stages, rotation=20, ha="right", fontsize=8)
    figure.suptitle("Bytes and task metric per stage")
    return _png(figure)


def confusion_counts(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """``counts[true, predicted]`` of the argmax predictions."""
    classes = probabilities.shape[1]
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (labels, probabilities.argmax(axis=1)), 1)
    return counts


def _confusion_panel(axes, counts: np.ndarray, class_names: Sequence[str], title: str) -> None:
    rows = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    for (true, predicted), count in np.ndenumerate(counts):
        colour = "white" if fractions[true, predicted] > 0.5 else "black"
        axes.text(predicted, true, f"{count}\n{fractions[true, predicted]:.0%}", ha="center",
                  va="center", fontsize=8, color=colour)
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=30, ha="right", fontsize=8)
    axes.set_yticks(ticks, class_names, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)


def confusion_png(labels: np.ndarray, base_probabilities: np.ndarray,
                  final_probabilities: np.ndarray, class_names: Sequence[str]) -> bytes:
    """Row-normalised confusion matrices (counts and recall per cell) of base and compressed."""
    size = 4.5 + 0.4 * len(class_names)
    figure = Figure(figsize=(2 * size, size))
    for axes, probabilities, title in zip(figure.subplots(1, 2),
                                          (base_probabilities, final_probabilities),
                                          ("base", "compressed")):
        _confusion_panel(axes, confusion_counts(labels, probabilities), class_names, title)
    figure.suptitle("Confusion matrix on the test set (argmax predictions)")
    return _png(figure)


def reliability_bins(labels: np.ndarray, probabilities: np.ndarray,
                     bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width confidence bin: mean confidence, accuracy and example count.

    Confidence is the top-label probability; empty bins have NaN confidence and accuracy.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    which = np.clip((confidence * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(which, weights=correct.astype(float), minlength=bins) / counts
    return mean_confidence, accuracy, counts


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray,
                               bins: int = 10) -> float:
    """Bin-size-weighted mean ``|accuracy - confidence|`` (Guo et al. 2017, eq. 3)."""
    confidence, accuracy, counts = reliability_bins(labels, probabilities, bins)
    filled = counts > 0
    return float(np.sum(counts[filled] * np.abs(accuracy[filled] - confidence[filled]))
                 / counts.sum())


def reliability_png(labels: np.ndarray, base_probabilities: np.ndarray,
                    final_probabilities: np.ndarray, bins: int = 10) -> bytes:
    """Reliability diagram (accuracy against confidence) of base and compressed, with ECE."""
    figure = Figure(figsize=(6, 5.5))
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="black", linestyle=":", label="perfectly calibrated")
    for probabilities, name, colour, style in (
            (base_probabilities, "base", BASE_COLOUR, dict(marker="s", linestyle="--",
                                                           markersize=8)),
            (final_probabilities, "compressed", FINAL_COLOUR, dict(marker="o"))):
        confidence, accuracy, counts = reliability_bins(labels, probabilities, bins)
        filled = counts > 0
        ece = expected_calibration_error(labels, probabilities, bins)
        axes.plot(confidence[filled], accuracy[filled], color=colour,
                  label=f"{name} (ECE {ece:.3f})", **style)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("confidence (top-label probability)")
    axes.set_ylabel("accuracy")
    axes.legend(loc="upper left", fontsize=8)
    axes.set_title(f"Reliability diagram on the test set ({bins} bins)")
    return _png(figure)


def latency_png(base_ms: np.ndarray, final_ms: np.ndarray) -> bytes:
    """Histograms of batch-1 latency samples, with each median marked.

    Bins and axis are logarithmic where the samples span more than a factor of 10.
    """
    figure = Figure(figsize=(8, 4))
    axes = figure.subplots()
    everything = np.concatenate([base_ms, final_ms])
    low, high = max(float(everything.min()), 1e-6) * 0.95, float(everything.max()) * 1.05
    logarithmic = high / low > 10
    edges = np.geomspace(low, high, 60) if logarithmic else np.linspace(low, high, 60)
    for samples, name, colour in ((base_ms, "base", BASE_COLOUR),
                                  (final_ms, "compressed", FINAL_COLOUR)):
        median = float(np.median(samples))
        axes.hist(samples, bins=edges, color=colour, alpha=0.6,
                  label=f"{name} (p50 {median:.3g} ms)")
        axes.axvline(median, color=colour, linestyle="--")
    if logarithmic:
        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.set_xlabel("batch-1 latency (ms" + (", log scale)" if logarithmic else ")"))
    axes.set_ylabel("forward passes")
    axes.legend(fontsize=8)
    axes.set_title("Latency distribution (PyTorch, one thread)")
    return _png(figure)


def folds_png(
    runs: Sequence[str],
    base_values: Sequence[float],
    artifact_values: Sequence[float],
    stages: Sequence[str],
    drops: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    metric: str,
    max_drop: float | None = None,
) -> bytes:
    """A recipe over folds: the base and the artifact per run (left), and each stage's mean
    drop from the base with its paired interval (right), with the budget's drop limit."""
    figure = Figure(figsize=(11, 4.5))
    left, right = figure.subplots(1, 2, width_ratios=[3, 2])
    positions = np.arange(len(runs))
    left.vlines(positions, np.minimum(base_values, artifact_values),
                np.maximum(base_values, artifact_values), color="#bbbbbb")
    left.plot(positions, base_values, "s", color=BASE_COLOUR, label="base")
    left.plot(positions, artifact_values, "o", color=_ARTIFACT_COLOUR, label="artifact")
    for values, colour, name in ((base_values, BASE_COLOUR, "base"),
                                 (artifact_values, _ARTIFACT_COLOUR, "artifact")):
        left.axhline(float(np.mean(values)), color=colour, linestyle=":",
                     label=f"{name} mean {np.mean(values):.4g}")
    left.set_xticks(positions, runs, rotation=30, ha="right", fontsize=8)
    left.set_ylabel(f"test {metric}")
    left.legend(fontsize=8, loc="best")
    left.set_title("Base and artifact on each run's test fold")
    rows = np.arange(len(stages))[::-1]
    drops, lows, highs = (np.asarray(values, dtype=np.float64) for values in (drops, lows, highs))
    right.errorbar(drops, rows, xerr=[drops - lows, highs - drops], fmt="o", capsize=4,
                   color=FINAL_COLOUR)
    right.axvline(0.0, color=BASE_COLOUR, linestyle=":")
    if max_drop is not None:
        right.axvline(max_drop, color=_BUDGET_COLOUR, linestyle="--",
                      label="budget max drop (on the mean)")
        right.legend(fontsize=8, loc="best")
    right.set_yticks(rows, stages, fontsize=8)
    right.set_ylim(-0.6, len(stages) - 0.4)
    right.set_xlabel(f"{metric} drop from the base (positive: worse)")
    right.set_title("Mean drop per stage, paired 95 % interval")
    return _png(figure)
