"""Data-driven structured pruning under a bound on the validation-metric drop.

The user states how much the task's own metric may get worse, e.g. "TSS may fall by at most
0.01" or "the weighted log loss may rise by at most 0.02". The prunable groups (hidden widths,
attention heads, residual streams; see :mod:`satcompress.prune.structured`) are then pruned
one after the other, each as far as the bound allows on the VALIDATION split, with a short
fine-tuning after each group. This is the drop-bound idea of "Learning to Prune Filters in
Convolutional Neural Networks" (Huang, Zhou, You & Neumann 2018) with the reinforcement-learning
agent replaced by a search over a grid of pruning ratios (largest first, or bisection if the
metric is assumed to worsen monotonically with the ratio).

The bound is measured against the model's validation score before the stage and holds for
every state the stage keeps: after each group, the fine-tuned weights are kept only if they
are within the bound and score at least as well as the pruned-but-not-fine-tuned ones
(fine-tuning lowers the training loss, which need not help the metric). The validation metric is computed by a registered
:class:`ValidationMetric` named in the config, so configs stay plain data
(``metric="tss"``); :func:`register_validation_metric` adds more.

The per-group ratios found are reported in ``model.prune_report_`` (see
:func:`drop_bound_prune`; read it with :func:`satcompress.prune.prune_report`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from typing import Any

from torch import nn

from satcompress.finetune import validation_metrics, validation_score
from satcompress.prune._common import PRUNE_REPORT_ATTRIBUTE
from satcompress.prune.structured import (
    GroupPruneSettings,
    StructuredPruner,
    no_prunable_group,
    units_to_remove,
)
from satcompress.stages import register_stage
from satcompress.tasks.base import TaskData

__all__ = [
    "SEARCH_STRATEGIES",
    "DropBoundPruneConfig",
    "drop_bound_prune",
]

SEARCH_STRATEGIES = ("largest_first", "bisection")
"""How the ratio grid is searched for each group."""


@dataclasses.dataclass(frozen=True)
class DropBoundPruneConfig(GroupPruneSettings):
    """Prune each group as far as a validation-metric drop bound allows (stage
    ``drop_bound_prune``). Group and fine-tuning settings as in :class:`GroupPruneSettings`.

    Attributes
    ----------
    metric : str
        Registered validation metric (:func:`validation_metrics`): ``"tss"`` (binary; the
        threshold is chosen on the validation split itself), ``"weighted_log_loss"`` or
        ``"accuracy"``. Its direction comes with it.
    max_drop : float
        Largest allowed worsening of the validation metric relative to the model coming in,
        in the metric's own units (0.01 TSS; 0.02 log loss).
    ratio_grid : tuple of float
        Fractions of a group's units to try removing, each in (0, 1); ratios that remove the
        same number of units are tried once.
    search : str
        ``"largest_first"``: try ratios from the largest down, keep the first within the
        bound. ``"bisection"``: binary search for the largest passing ratio, assuming that
        removing more never helps (fewer evaluations).
    """

    metric: str = "accuracy"
    max_drop: float = 0.01
    ratio_grid: tuple[float, ...] = (0.75, 0.5, 0.25)
    search: str = "largest_first"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.metric not in validation_metrics():
            raise ValueError(f"DropBoundPruneConfig.metric must be a registered validation "
                             f"metric {sorted(validation_metrics())}, got {self.metric!r}.")
        if not (isinstance(self.max_drop, (int, float)) and 0 <= self.max_drop < math.inf):
            raise ValueError(f"DropBoundPruneConfig.max_drop must be a finite number >= 0 in "
                             f"the metric's units (e.g. 0.01), got {self.max_drop!r}.")
        if not (isinstance(self.ratio_grid, tuple) and self.ratio_grid and all(
            isinstance(ratio, (int, float)) and 0 < ratio < 1 for ratio in self.ratio_grid
        )):
            raise ValueError(f"DropBoundPruneConfig.ratio_grid must be a non-empty tuple of "
                             f"fractions in (0, 1), e.g. (0.75, 0.5, 0.25); got "
                             f"{self.ratio_grid!r}.")
        if self.search not in SEARCH_STRATEGIES:
            raise ValueError(f"DropBoundPruneConfig.search must be one of {SEARCH_STRATEGIES}, "
                             f"got {self.search!r}.")


class _GroupSearch:
    """Evaluate removing the ``k`` least important units of one group, memoised by ``k``."""

    def __init__(
        self,
        pruner: StructuredPruner,
        model: nn.Module,
        data: TaskData,
        name: str,
        metric: str,
        within_bound: Callable[[float], bool],
    ) -> None:
        self.pruner = pruner
        self.model = model
        self.data = data
        self.name = name
        self.metric = metric
        self.within_bound = within_bound
        self.ranking = pruner.rank(model, data)[name]
        self.tried: dict[int, tuple[nn.Module, float]] = {}

    def passes(self, count: int) -> bool:
        if count not in self.tried:
            candidate = self.pruner.remove(self.model, {self.name: self.ranking[:count].tolist()})
            self.tried[count] = candidate, validation_score(candidate, self.data, self.metric)
        return self.within_bound(self.tried[count][1])

    def largest_passing(self, counts: list[int], search: str) -> int | None:
        """The largest count in ``counts`` (ascending) that keeps within the bound."""
        if search == "largest_first":
            return next((count for count in reversed(counts) if self.passes(count)), None)
        low, high = -1, len(counts)  # counts[low] passes (or none), counts[high] fails (or none)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if self.passes(counts[middle]) else (low, middle)
        return counts[low] if low >= 0 else None


@register_stage("drop_bound_prune", check=no_prunable_group)
def drop_bound_prune(
    model: nn.Module, config: DropBoundPruneConfig, data: TaskData | None
) -> nn.Module:
    """Prune group after group as far as the validation drop bound allows, fine-tuning between.

    Returns a new model whose validation score (``config.metric`` on ``data.val``) is within
    ``config.max_drop`` of the incoming model's. ``model.prune_report_`` holds ``method``,
    ``metric``, ``higher_is_better``, ``max_drop``, ``base_val_score``, ``final_val_score``,
    ``ratios`` (group name -> fraction of its units removed) and ``groups`` (per group, in the
    order pruned: ``group``, ``kind``, ``size_before``, ``size_after``, ``ratio``,
    ``val_score`` after it, ``finetuned``: whether the fine-tuned weights were kept).
    """
    pruner = config.pruner(data)
    metric = validation_metrics()[config.metric]
    current = copy.deepcopy(model).eval()
    base_score = validation_score(current, data, config.metric)
    score = base_score

    def within_bound(candidate_score: float) -> bool:
        return metric.drop(base_score, candidate_score) <= config.max_drop

    entries: list[dict[str, Any]] = []
    for group in pruner.groups(current):
        counts = sorted({units_to_remove(ratio, group.size) for ratio in config.ratio_grid} - {0})
        count, finetuned = None, False
        if counts:
            search = _GroupSearch(pruner, current, data, group.name, config.metric, within_bound)
            count = search.largest_passing(counts, config.search)
        if count is not None:
            current, score = search.tried[count]
            if config.finetune_epochs:
                tuned = config.finetune(copy.deepcopy(current), data)
                tuned_score = validation_score(tuned, data, config.metric)
                if within_bound(tuned_score) and metric.drop(score, tuned_score) <= 0:
                    current, score, finetuned = tuned, tuned_score, True
        removed = count or 0
        entries.append({
            "group": group.name, "kind": group.kind, "size_before": group.size,
            "size_after": group.size - removed, "ratio": removed / group.size,
            "val_score": score, "finetuned": finetuned,
        })
    setattr(current, PRUNE_REPORT_ATTRIBUTE, {
        "method": "drop_bound",
        "importance": config.importance,
        "metric": config.metric,
        "higher_is_better": metric.higher_is_better,
        "max_drop": config.max_drop,
        "base_val_score": base_score,
        "final_val_score": score,
        "ratios": {entry["group"]: entry["ratio"] for entry in entries},
        "groups": entries,
    })
    return current.eval()
