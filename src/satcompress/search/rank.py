"""The search's best candidates ranked again over grouped folds of its own training data.

Every trial is scored on one validation split, and on a split this small two candidates'
order is often the split's luck: on transients the candidate the validation split put first
was 0.038 weighted log loss worse over five folds than the one it put second, a difference
no rule on that one split can see (issue 16). :func:`rank_over_folds` therefore runs the
best few candidates again, each as its recipe, on ``n_folds`` grouped folds of the base
model's training and validation examples (:func:`~satcompress.tasks.base.refolded`: grouped by
the task's groups, stratified by label; the test split is never used). Each fold in turn is
held out, the next one validates, the rest train a base model of the task's own
(:func:`~satcompress.pipeline.base_model.stored_base_model`, stored in the ranking's folder),
and every candidate's recipe runs on it from the start -- its own teacher, students and
fine-tuning -- and is scored on the held-out fold
(:func:`~satcompress.pipeline.folds.run_folds`, so each candidate's runs get the same
``folds.json`` and report as ``compress --folds``).

The candidates are then ordered by the one-standard-error rule over the folds
(:func:`~satcompress.search.front.one_standard_error_choice`): the one with the fewest bytes
(its trial's artifact on the search's base model) among those whose mean metric is within one
standard error of the best mean, the error being that of the paired difference over the folds
(sd of the per-fold differences / sqrt(K): Hastie et al., "Elements of Statistical Learning",
7.10). A candidate whose mean drop over the folds breaks the budget's metric-drop limit comes
after those that do not. Resource limits are left to the delivered model's own final run: a
fold's base model compresses to an artifact a few tens of bytes off the delivered one (on
transients the hand recipe's shape came to 19,518-19,567 B on the four folds, 19,474 B on the
search's base model). The search delivers the first that then passes its final run on the
test split.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from satcompress.pipeline.base_model import TrainedModel, stored_base_model
from satcompress.pipeline.budget import Budget
from satcompress.pipeline.folds import FoldsBudgetNotMet, FoldsResult, run_folds
from satcompress.pipeline.recipe import Recipe
from satcompress.search.front import TrialRecord, best_first, one_standard_error_choice
from satcompress.tasks.base import refolded

__all__ = ["RANKING_DIR", "RankedCandidate", "Ranking", "delivery_order", "fold_difference_error",
           "rank_over_folds"]

RANKING_DIR = "ranking"
"""The folder, in the search's output folder, of the candidates' runs over folds."""


@dataclasses.dataclass(frozen=True)
class RankedCandidate:
    """One candidate's recipe run on every ranking fold (``folds``; whether its mean drop keeps
    to the budget's metric-drop limits is ``folds.fits_budget``)."""

    record: TrialRecord
    folds: FoldsResult

    @property
    def values(self) -> np.ndarray:
        """The artifact's primary metric on each fold's held-out part, in fold order."""
        return np.array([run.values(self.folds.metric)[1] for run in self.folds.runs])

    @property
    def metric(self) -> float:
        """Mean of :attr:`values`: the metric the candidates are ranked by."""
        return float(np.mean(self.values))

    @property
    def bytes(self) -> int:
        """The trial's artifact bytes on the search's base model (what would be delivered)."""
        return self.record.bytes


def fold_difference_error(best: RankedCandidate, other: RankedCandidate) -> float:
    """Standard error of the difference of two candidates' mean metrics over the same folds:
    sd of the per-fold differences (ddof 1) / sqrt(K); 0 for a candidate with itself."""
    difference = best.values - other.values
    if len(difference) < 2:
        return 0.0
    return float(np.std(difference, ddof=1) / math.sqrt(len(difference)))


@dataclasses.dataclass(frozen=True)
class Ranking:
    """The candidates in the order the search tries them (:attr:`order`, best first)."""

    n_folds: int
    seed: int
    order: tuple[RankedCandidate, ...]
    higher_is_better: bool
    out_dir: Path

    def rows(self) -> list[dict[str, Any]]:
        """One table row per candidate, in delivery order."""
        best = max(self.order, key=lambda c: c.metric if self.higher_is_better else -c.metric)
        metric = self.order[0].folds.metric
        return [{"trial": c.record.label, "bytes": c.bytes,
                 f"validation {metric}": round(c.record.metric, 4),
                 f"mean {metric} over folds": round(c.metric, 4),
                 "sd over folds": round(float(np.std(c.values, ddof=1)), 4),
                 "SE of difference to best": round(fold_difference_error(best, c), 4),
                 "mean drop vs limit": "; ".join(
                     f"{v.actual:.4f} {'>' if v.broken else '<='} {v.allowed}"
                     for v in c.folds.usage),
                 "folder": str(c.folds.out_dir.relative_to(self.out_dir.parent))}
                for c in self.order]

    def to_dict(self) -> dict[str, Any]:
        """What ``search.json`` records of the ranking."""
        return {"folder": self.out_dir.name, "n_folds": self.n_folds, "seed": self.seed,
                "rule": "fewest bytes within one SE (paired over folds) of the best mean; "
                        "candidates whose mean drop breaks the limit last",
                "candidates": [{"trial": c.record.label, "bytes": c.bytes,
                                "validation": c.record.metric, "folds": c.values.tolist(),
                                "mean": c.metric, "meets_drop_limit": c.folds.fits_budget}
                               for c in self.order]}


def _base_models(trained: TrainedModel, folder: Path, n_folds: int
                 ) -> Callable[[int, int], TrainedModel]:
    """``base(fold, seed)``: the task's base model trained on ranking fold ``fold``, stored in
    ``folder`` (a re-run reads it back)."""

    def base(fold: int, seed: int) -> TrainedModel:
        data = refolded(trained.data, fold, n_folds, seed)
        return stored_base_model(folder / f"base-fold{fold}of{n_folds}-seed{seed}.pt",
                                 trained.task.name, seed, data, ranking_fold=fold,
                                 n_folds=n_folds)

    return base


def _folder_name(record: TrialRecord) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", record.label)


def rank_over_folds(trained: TrainedModel, candidates: Sequence[TrialRecord], budget: Budget,
                    out_dir: str | Path, *, n_folds: int = 4, seed: int = 0,
                    latency_repeats: int = 20,
                    on_candidate: Callable[[str], None] | None = None) -> Ranking:
    """Run every candidate's recipe on ``n_folds`` ranking folds and order them by the mean
    metric and ``budget``'s metric-drop limits (see the module docstring); each candidate's
    runs go to ``out_dir/<trial>/``, the fold base models to ``out_dir/bases/``. ``trained`` must be a reference task's base model (the folds
    retrain it). ``on_candidate(label)`` is called before each candidate."""
    out_dir = Path(out_dir)
    bases = _base_models(trained, out_dir / "bases", n_folds)
    judged = Budget(max_metric_drop=budget.max_metric_drop)  # resources: on the final run
    ranked = []
    for record in candidates:
        if on_candidate is not None:
            on_candidate(record.label)
        recipe = Recipe.from_dict(record.recipe)
        try:
            result = run_folds(trained.task.name, recipe, judged, out_dir / _folder_name(record),
                               folds=n_folds, seeds=(seed,), latency_repeats=latency_repeats,
                               base_model=bases)
        except FoldsBudgetNotMet as failure:
            result = failure.result
        ranked.append(RankedCandidate(record, result))
    higher = trained.task.higher_is_better
    return Ranking(n_folds, seed, delivery_order(ranked, higher), higher, out_dir)


def delivery_order(ranked: Sequence[RankedCandidate], higher_is_better: bool
                   ) -> tuple[RankedCandidate, ...]:
    """The one-standard-error order over the folds of the candidates within the budget on
    them, then the others, best mean first."""
    within = one_standard_error_choice([c for c in ranked if c.folds.fits_budget],
                                       higher_is_better, fold_difference_error)
    over = best_first((c for c in ranked if not c.folds.fits_budget), higher_is_better)
    return (*within, *over)
