"""Reading a finished search: trial records, the Pareto front, hypervolume, table and plot.

The front is taken over fully evaluated, feasible trials and the search's three objectives
(validation metric in its direction, artifact bytes, MACs per inference). The hypervolume
used to compare search strategies is two-dimensional -- metric drop against ``log10`` of the stored-bytes ratio to
the base model, both to be minimised, reference point (allowed drop, 0 = base size) -- so
that a front reaching 100x smaller counts more than one stopping at 10x, and latency noise
does not blur the comparison.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import optuna

from satcompress.fileio import atomic_write_bytes
from satcompress.pipeline.budget import Violation, shortfall
from satcompress.search.evaluate import OBJECTIVES
from satcompress.search.study import FINISHED

__all__ = [
    "difference_standard_error",
    "best_first",
    "one_standard_error_choice",
    "EmptyFront",
    "TrialRecord",
    "trial_records",
    "pareto_front",
    "closest_trial",
    "empty_front_message",
    "hypervolume",
    "front_rows",
    "plot_front",
]


Ranked = TypeVar("Ranked")
"""Anything with a ``metric`` and ``bytes`` (a trial record, a candidate ranked over folds)."""


class EmptyFront(RuntimeError):
    """No trial meets the budget; the message names the closest trial and what it missed."""


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """One finished trial, flattened from its Optuna user attributes.

    ``metric`` is the primary VALIDATION metric of the evaluation that decided the trial
    (``evaluation``: "full", or "proxy" when the proxy alone settled it).
    """

    study: str
    number: int
    state: str
    phase: str
    evaluation: str
    feasible: bool
    metric: float
    bytes: int
    latency_ms: float
    macs: int
    ram_bytes: int
    usage: tuple[Violation, ...]
    params: dict[str, Any]
    recipe: dict[str, Any]
    seconds: float
    finished_at: float
    duplicate_of: int | None = None
    metric_se: float = 0.0
    """Group-bootstrap standard error of ``metric`` (full evaluations; 0 for a proxy)."""
    resampled: tuple[float, ...] = ()
    """``metric`` on the search's fixed validation-group resamples (NaN where undefined;
    full evaluations only)."""

    @property
    def label(self) -> str:
        return f"{self.study}#{self.number}"

    @property
    def candidate(self) -> bool:
        """Fully evaluated and within every limit: may be returned to the user."""
        return self.evaluation == "full" and self.feasible and self.state == "COMPLETE"


def trial_records(study: optuna.Study, metric: str) -> list[TrialRecord]:
    """Every finished trial of ``study`` that was evaluated, in trial order."""
    records = []
    for trial in study.get_trials(deepcopy=False, states=FINISHED):
        attrs = trial.user_attrs
        kind = attrs.get("evaluation")
        if kind is None:
            continue
        measured = attrs[kind]
        seconds = sum(attrs[key]["seconds"] for key in ("proxy", "full") if key in attrs)
        records.append(TrialRecord(
            study=study.study_name, number=trial.number, state=trial.state.name,
            phase=attrs.get("phase", ""), evaluation=kind, feasible=bool(attrs["feasible"]),
            metric=float(measured["metrics"][metric]), bytes=int(measured["bytes"]),
            latency_ms=float(measured["latency_ms"]), macs=int(measured["macs"]),
            ram_bytes=int(measured["ram_bytes"]),
            usage=tuple(Violation(*item) for item in attrs["usage"]), params=dict(trial.params),
            recipe=attrs["recipe"], seconds=0.0 if "duplicate_of" in attrs else seconds,
            finished_at=trial.datetime_complete.timestamp(),
            duplicate_of=attrs.get("duplicate_of"),
            metric_se=float(measured["metrics"].get(f"{metric}_se", 0.0)),
            resampled=tuple(math.nan if value is None else float(value)
                            for value in measured.get("resampled", ())),
        ))
    return records


def difference_standard_error(best: TrialRecord, other: TrialRecord) -> float:
    """Standard error of ``best.metric - other.metric``: the standard deviation of the
    difference over the validation-group resamples both were scored on (paired, so the part of
    the noise both share -- which groups are in the split -- cancels); ``best.metric_se``
    where either lacks the resamples (a study recorded before they were)."""
    if best.resampled and len(best.resampled) == len(other.resampled):
        difference = np.subtract(best.resampled, other.resampled)
        difference = difference[np.isfinite(difference)]
        if len(difference) > 1:
            return float(np.std(difference))
    return best.metric_se


def best_first(candidates: Iterable[Ranked], higher_is_better: bool) -> list[Ranked]:
    """``candidates`` by metric, best first, fewest bytes on a tie."""
    sign = 1.0 if higher_is_better else -1.0
    return sorted(candidates, key=lambda r: (-sign * r.metric, r.bytes))


def one_standard_error_choice(candidates: Sequence[Ranked], higher_is_better: bool,
                              standard_error: Callable[[Ranked, Ranked], float]
                              = difference_standard_error) -> list[Ranked]:
    """Candidates in the order the search delivers them: first the SMALLEST whose metric is
    within one standard error of the best one's (the one-standard-error rule of Breiman et
    al. 1984, as in Hastie et al., "Elements of Statistical Learning", 7.10: a difference
    smaller than the noise of the validation split is no reason for more bytes), then the
    rest, best metric first (fewest bytes on a tie). Each candidate has a ``metric`` and
    ``bytes``; ``standard_error(best, other)`` is that of the difference between the two
    (default :func:`difference_standard_error`: both are scored on the same examples, and one
    small split's luck, shared by both, is no reason to give up skill either)."""
    sign = 1.0 if higher_is_better else -1.0
    ranked = best_first(candidates, higher_is_better)
    if not ranked:
        return []
    best = ranked[0]
    close = [r for r in ranked if sign * (best.metric - r.metric) <= standard_error(best, r)]
    chosen = min(close, key=lambda r: (r.bytes, -sign * r.metric))
    return [chosen, *(r for r in ranked if r is not chosen)]


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_front(records: Sequence[TrialRecord], higher_is_better: bool,
                 objectives: tuple[str, ...] = OBJECTIVES
                 ) -> list[TrialRecord]:
    """The non-dominated candidates (fully evaluated, feasible), sorted by bytes.

    Trials repeating earlier decisions are left out (they are the same point).
    """
    sign = -1.0 if higher_is_better else 1.0

    def point(record: TrialRecord) -> list[float]:
        return [sign * record.metric if name == "metric" else float(getattr(record, name))
                for name in objectives]

    candidates = [r for r in records if r.candidate and r.duplicate_of is None]
    front = [r for r in candidates
             if not any(_dominates(point(other), point(r)) for other in candidates)]
    return sorted(front, key=lambda r: (r.bytes, sign * r.metric))


def closest_trial(records: Sequence[TrialRecord]) -> TrialRecord:
    """The trial missing the budget by least (fewest limits broken, then least excess)."""
    if not records:
        raise EmptyFront("The search finished no trial at all; run it with more trials.")
    return min(records, key=lambda r: (shortfall(r.usage), r.evaluation != "full"))


def empty_front_message(records: Sequence[TrialRecord], metric: str) -> str:
    """What to tell the user when no trial meets the budget."""
    closest = closest_trial(records)
    missed = "; ".join(str(v) for v in closest.usage if v.broken) or "nothing (not fully evaluated)"
    return (
        f"No trial of the search meets the budget ({len(records)} trials). Closest: trial "
        f"{closest.label} ({closest.evaluation} evaluation: {closest.bytes:,} bytes, "
        f"{closest.latency_ms:.3g} ms, validation {metric} {closest.metric:.4g}), which "
        f"missed {missed}. Loosen that limit, or run more trials."
    )


def hypervolume(records: Sequence[TrialRecord], base_metric: float, base_bytes: int,
                higher_is_better: bool, reference_drop: float) -> float:
    """2-D hypervolume of the candidates in (metric drop, log10 bytes ratio) -- see the
    module docstring; points beyond the reference (drop above ``reference_drop``, or larger
    than the base) add nothing."""
    points = []
    for record in records:
        if not record.candidate:
            continue
        drop = (base_metric - record.metric) if higher_is_better else (record.metric - base_metric)
        size = math.log10(record.bytes / base_bytes)
        if drop < reference_drop and size < 0:
            points.append((drop, size))
    volume, best_size = 0.0, 0.0
    for drop, size in sorted(points):
        if size < best_size:
            volume += (reference_drop - drop) * (best_size - size)
            best_size = size
    return volume


def front_rows(front: Sequence[TrialRecord], metric: str, base_bytes: int) -> list[dict[str, Any]]:
    """Table rows of a front: trial, metric, bytes and ratio, MACs, latency, RAM, the stages."""
    return [{"trial": r.label, f"val {metric}": round(r.metric, 4), "bytes": r.bytes,
             "ratio": round(base_bytes / r.bytes, 1), "MACs": r.macs,
             "p50 ms": round(r.latency_ms, 3),
             "RAM kB": round(r.ram_bytes / 1000, 1),
             "stages": " -> ".join(stage["stage"] for stage in r.recipe["stage"])}
            for r in front]


def plot_front(records: Sequence[TrialRecord], front: Sequence[TrialRecord], path: str | Path,
               metric: str, base_metric: float, base_bytes: int, max_bytes: int | None) -> Path:
    """PNG of every trial (validation metric vs artifact bytes, log scale) with the front."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    groups = (
        ("proxy only (settled without fine-tuning)", [r for r in records if r.evaluation == "proxy"], "x", "#bbbbbb"),
        ("full, breaks the budget", [r for r in records if r.evaluation == "full" and not r.candidate], "o", "#e6a0a0"),
        ("full, within budget", [r for r in records if r.candidate], "o", "#4c72b0"),
    )
    for label, group, marker, colour in groups:
        if group:
            axes.scatter([r.bytes for r in group], [r.metric for r in group], marker=marker,
                         color=colour, label=label, s=22)
    if front:
        axes.plot([r.bytes for r in front], [r.metric for r in front], "-", color="#dd8452",
                  marker="D", markersize=5, label="Pareto front")
    axes.axhline(base_metric, color="black", linestyle=":", linewidth=1, label="base model")
    axes.axvline(base_bytes, color="black", linestyle=":", linewidth=1)
    if max_bytes is not None:
        axes.axvline(max_bytes, color="#c44e52", linestyle="--", linewidth=1, label="max_bytes")
    axes.set_xscale("log")
    axes.set_xlabel("artifact bytes")
    axes.set_ylabel(f"validation {metric}")
    axes.legend(fontsize=7, loc="best")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return atomic_write_bytes(path, buffer.getvalue())
