"""How sure a metric's drop is: paired 95 % intervals over test groups or over folds.

A compressed model is judged by how much worse it scores than its base on the same test
examples. Both scores move with the draw of the test set -- the flare test split holds 74
flaring regions, so one region more or less caught moves TSS by about 0.0135 -- so a drop is
reported with a paired interval and whether it is distinguishable from zero (the interval
excludes 0):

* :func:`paired_bootstrap` -- one split: the test *groups* (active regions, objects) are
  resampled with replacement and the metric is recomputed for the base and the compressed
  model on the same resample; percentile interval (Efron & Tibshirani 1993, ch. 13). Groups,
  not rows, are resampled because the rows of one group are correlated (the cluster
  bootstrap, Field & Welsh 2007).
* :func:`paired_t_interval` -- several runs (K folds x S seeds): a t-interval over the paired
  drops, optionally with the variance correction of Nadeau & Bengio (2003) for the training
  sets the runs share (the corrected repeated K-fold test of Bouckaert & Frank 2004).

NumPy and SciPy only (no torch): the intervals are plain statistics of numbers and of
callables that score row subsets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from satcompress.tasks.base import TaskData
    from satcompress.tasks.registry import Task

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "CONFIDENCE",
    "DropInterval",
    "group_resamples",
    "paired_bootstrap",
    "paired_t_interval",
    "split_drop_interval",
]

BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95

RowMetric = Callable[[np.ndarray], float]
"""``metric(rows) -> value``: a model's metric on the test rows ``rows`` (repeats allowed)."""
Predict = Callable[[np.ndarray], np.ndarray]
"""``predict(x) -> probabilities``: a model's class probabilities ``(n, classes)``."""


@dataclass(frozen=True)
class DropInterval:
    """A metric's drop from a base to a compressed model, with its paired interval.

    The drop is measured in the metric's worsening direction (``base - compressed`` when
    higher is better, ``compressed - base`` otherwise), as the budget's ``max_metric_drop``.

    Attributes
    ----------
    metric : str
        The metric.
    higher_is_better : bool
        Its direction.
    base, compressed : float
        The two models' values (on the whole test split, or the means over runs).
    low, high : float
        The interval of the drop.
    confidence : float
        Its nominal coverage, in (0, 1).
    method : str
        How the interval was made, in words (for reports).
    """

    metric: str
    higher_is_better: bool
    base: float
    compressed: float
    low: float
    high: float
    confidence: float
    method: str

    def __post_init__(self) -> None:
        if not 0 < self.confidence < 1:
            raise ValueError(f"DropInterval confidence must lie in (0, 1), got {self.confidence}.")
        if not self.low <= self.high:
            raise ValueError(f"DropInterval low {self.low} is above high {self.high}; give the "
                             "interval's ends in order.")

    @property
    def drop(self) -> float:
        """How much worse the compressed model is (negative: better)."""
        change = self.compressed - self.base
        return -change if self.higher_is_better else change

    @property
    def distinguishable(self) -> bool:
        """Whether the interval excludes zero (a real drop, or a real gain)."""
        return self.low > 0 or self.high < 0

    def describe(self) -> str:
        """One line for summaries: the drop, the interval, and whether it excludes zero."""
        verdict = ("distinguishable from zero" if self.distinguishable
                   else "not distinguishable from zero")
        return (f"{self.metric} drop {self.drop + 0.0:+.4f} ({self.confidence:.0%} interval "
                f"{self.low + 0.0:+.4f} to {self.high + 0.0:+.4f}; {self.method}): {verdict}")

    def to_dict(self) -> dict:
        return {**asdict(self), "drop": self.drop,
                "distinguishable_from_zero": self.distinguishable}


def _direction(higher_is_better: bool) -> float:
    return 1.0 if higher_is_better else -1.0


def _ends(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def group_resamples(groups: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
                    ) -> Iterator[np.ndarray]:
    """Row indices of ``resamples`` cluster-bootstrap resamples of the groups of ``groups``.

    Resample ``i`` draws ``G`` of the ``G`` distinct groups (in :func:`numpy.unique` order) with
    replacement -- row ``i`` of ``default_rng(seed).integers(G, size=(resamples, G))`` -- and
    holds the rows of each drawn group, in row order, once per draw.
    """
    codes = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    n_groups = int(codes.max(initial=-1)) + 1
    if n_groups < 2:
        raise ValueError(f"A bootstrap over groups needs at least two groups; the test rows hold "
                         f"{n_groups}. Give a test split with more groups (regions, objects).")
    order = np.argsort(codes, kind="stable")  # rows grouped, in row order within a group
    counts = np.bincount(codes, minlength=n_groups)
    starts = np.cumsum(counts) - counts
    draws = np.random.default_rng(seed).integers(n_groups, size=(resamples, n_groups))
    for draw in draws:
        lengths = counts[draw]
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        yield order[np.repeat(starts[draw], lengths) + offsets]


def paired_bootstrap(
    groups: np.ndarray,
    base_metric: RowMetric,
    compressed_metric: RowMetric,
    *,
    metric: str,
    higher_is_better: bool,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> DropInterval:
    """The drop's paired percentile interval over test groups (:func:`group_resamples`).

    ``groups`` holds the group of every test row; ``base_metric(rows)`` and
    ``compressed_metric(rows)`` score the two models on the same rows, so each resample's drop
    is paired. The point values are the scores on all test rows.

    Raises
    ------
    ValueError
        With fewer than two groups, or when a resample's score is not finite.
    """
    if resamples < 2:
        raise ValueError(f"paired_bootstrap needs at least 2 resamples, got {resamples}.")
    direction = _direction(higher_is_better)
    drops = np.array([direction * (base_metric(rows) - compressed_metric(rows))
                      for rows in group_resamples(groups, resamples, seed)])
    if not np.isfinite(drops).all():
        raise ValueError(f"The metric {metric!r} is not finite on some bootstrap resamples of "
                         "the test groups; bootstrap a metric defined on any resample.")
    every_row = np.arange(len(groups))
    low, high = _ends(drops, confidence)
    return DropInterval(metric, higher_is_better, float(base_metric(every_row)),
                        float(compressed_metric(every_row)), low, high, confidence,
                        f"paired bootstrap over {len(np.unique(groups))} test groups, "
                        f"{resamples} resamples")


def paired_t_interval(
    base_values: Sequence[float],
    compressed_values: Sequence[float],
    *,
    metric: str,
    higher_is_better: bool,
    confidence: float = CONFIDENCE,
    test_train_ratio: float = 0.0,
) -> DropInterval:
    """The mean paired drop over runs, with a Student-t interval.

    The standard error is ``sd * sqrt(1 / n + test_train_ratio)`` over the ``n`` paired drops:
    ``test_train_ratio = 0`` is the plain paired t-interval; with runs that share training data
    (K-fold cross-validation) pass the ratio of test to training examples (Nadeau & Bengio
    2003), which widens the interval for the correlation the overlap causes.

    Raises
    ------
    ValueError
        With fewer than two pairs, unequal lengths, non-finite values or a negative ratio.
    """
    from scipy.stats import t

    base = np.asarray(base_values, dtype=np.float64)
    compressed = np.asarray(compressed_values, dtype=np.float64)
    if base.shape != compressed.shape or base.ndim != 1 or len(base) < 2:
        raise ValueError(f"paired_t_interval needs two equally long lists of at least two runs; "
                         f"got {len(base)} base and {len(compressed)} compressed values. Run more "
                         "folds or seeds.")
    if not (np.isfinite(base).all() and np.isfinite(compressed).all()):
        raise ValueError(f"paired_t_interval: a value of {metric!r} is not finite.")
    if not (test_train_ratio >= 0 and math.isfinite(test_train_ratio)):
        raise ValueError(f"test_train_ratio must be a finite number >= 0, got {test_train_ratio}.")
    drops = _direction(higher_is_better) * (base - compressed)
    half = (t.ppf((1 + confidence) / 2, len(drops) - 1) * drops.std(ddof=1)
            * math.sqrt(1 / len(drops) + test_train_ratio))
    correction = (", variance corrected for shared training data (Nadeau & Bengio 2003)"
                  if test_train_ratio else "")
    return DropInterval(metric, higher_is_better, float(base.mean()), float(compressed.mean()),
                        float(drops.mean() - half), float(drops.mean() + half), confidence,
                        f"paired t over {len(drops)} runs{correction}")


def split_drop_interval(
    task: "Task",
    data: "TaskData",
    base: Predict,
    compressed: Predict,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> DropInterval:
    """The task's primary-metric drop on ``data.test`` with its :func:`paired_bootstrap`.

    Each model predicts validation and test once; every resample is scored with
    :meth:`Task.score <satcompress.tasks.registry.Task.score>` (a threshold tuned on
    validation stays tuned on the whole validation split).
    """
    metric = task.primary_metric

    def scorer(predict: Predict) -> RowMetric:
        val, test = predict(data.val.x), predict(data.test.x)
        return lambda rows: task.score(val, data.val.y, test[rows], data.test.y[rows])[metric]

    return paired_bootstrap(data.test.groups, scorer(base), scorer(compressed), metric=metric,
                            higher_is_better=task.higher_is_better, resamples=resamples,
                            confidence=confidence, seed=seed)
