"""Judging one candidate: a cheap proxy first, the full evaluation only when it is promising.

Every candidate is measured with the same :func:`satcompress.measure.measure` as the
pipeline (peak RAM, batch-1 latency) and by the size of the flight artifact it would be
(:func:`~satcompress.pipeline.flight.artifact_size_bytes`: what ``max_bytes`` counts, header,
encodings and, with ``settings.fec``, Reed-Solomon parity included), and scored with the
task's own ``score`` on the VALIDATION split (thresholds tuned on that same split), so the search
never looks at the test split. The budget's metric-drop limits are checked on these
validation metrics against the base model's.

Proxy
    The trial's stages without any fine-tuning, integer codecs post-training quantized,
    scored on a fixed random subset of ``proxy_examples`` validation examples. Bytes, RAM
    and MACs do not change with fine-tuning, so the proxy already decides the resource
    limits exactly; its metric is a pessimistic estimate.
Full evaluation
    The same decisions with a short fine-tuning after each stage and quantization-aware
    training with early stopping, scored on the whole validation split.

The full evaluation also records the primary metric's standard error on the validation split,
``<metric>_se``: the standard deviation of the metric over :data:`BOOTSTRAP_RESAMPLES`
bootstrap resamples of the validation GROUPS (regions, objects; Efron & Tibshirani 1993),
and the metric on each resample (``resampled``). The resamples are the same for every
candidate of a search, so the final choice can tell whether one candidate is better than
another or within the noise of one small split by the paired standard error of their
difference (:func:`satcompress.search.front.one_standard_error_choice`).

Constraint values follow Optuna's convention, one per budget limit, ``<= 0`` meaning
feasible: ``(value - limit) / limit`` (the relative excess; absolute for a zero limit).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from satcompress.measure import Measurement, measure
from satcompress.measure.uncertainty import group_resamples
from satcompress.pipeline.base_model import TrainedModel
from satcompress.pipeline.budget import Budget, Violation
from satcompress.pipeline.flight import artifact_size_bytes, task_metadata
from satcompress.pipeline.recipe import Recipe
from satcompress.search.settings import SearchSettings
from satcompress.search.space import SearchSpace, Students
from satcompress.training import predict_proba

__all__ = ["BOOTSTRAP_RESAMPLES", "OBJECTIVES", "Evaluation", "Evaluator", "constraint_values",
           "objective_directions", "RESOURCE_LIMITS"]

RESOURCE_LIMITS = ("max_bytes", "max_ram_bytes", "max_latency_ms")
"""Limits that fine-tuning cannot change: the proxy decides them."""

_MIN_RECOVERIES = 5
"""Trials evaluated both ways before the search trusts its own estimate of recovery."""


OBJECTIVES = ("metric", "bytes", "macs")
"""The search's objectives: validation metric, artifact bytes, and MACs per inference as the
measure of speed -- deterministic, where a measured latency would make the evolution (and so
the delivered model) depend on the machine's load. A latency limit is still judged on the
measured latency."""


def objective_directions(higher_is_better: bool) -> list[str]:
    """Optuna directions of :data:`OBJECTIVES`."""
    return ["maximize" if higher_is_better else "minimize", "minimize", "minimize"]


def constraint_values(usage: Sequence[Violation]) -> list[float]:
    """One Optuna constraint value per limit, ``<= 0`` when the limit holds."""
    return [float(item.relative_excess) for item in usage]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One measured candidate.

    Attributes
    ----------
    kind : {"proxy", "full"}
        Which evaluation produced it.
    measurement : Measurement
        Costs of the compressed model; ``metrics`` are VALIDATION metrics.
    usage : tuple of Violation
        Its value for every budget limit (broken or not).
    recipe : Recipe
        The stages that produced the model.
    seconds : float
        Wall time of compressing and measuring.
    resampled : tuple of float
        A full evaluation's primary metric on the search's fixed validation-group resamples
        (see :meth:`Evaluator.validation_metrics`); ``()`` for a proxy.
    """

    kind: str
    measurement: Measurement
    usage: tuple[Violation, ...]
    recipe: Recipe
    seconds: float
    resampled: tuple[float, ...] = ()

    @property
    def feasible(self) -> bool:
        return not any(item.broken for item in self.usage)

    @property
    def broken(self) -> list[Violation]:
        return [item for item in self.usage if item.broken]

    def attrs(self) -> dict[str, Any]:
        """JSON-able record for an Optuna trial's user attributes."""
        m = self.measurement
        return {"bytes": m.theoretical_bytes, "ram_bytes": m.peak_ram_bytes,
                "latency_ms": m.latency_ms_p50, "macs": m.macs, "parameters": m.parameters,
                "metrics": dict(m.metrics), "violations": [str(v) for v in self.broken],
                "constraints": constraint_values(self.usage), "feasible": self.feasible,
                "seconds": round(self.seconds, 3),
                **({"resampled": [value if math.isfinite(value) else None
                                  for value in self.resampled]} if self.resampled else {})}


BOOTSTRAP_RESAMPLES = 200
"""Group-bootstrap resamples behind a full evaluation's ``<metric>_se``."""


class Evaluator:
    """Compresses and measures candidates of one search (see the module docstring).

    Parameters
    ----------
    trained : TrainedModel
        The base model, its task and data (never modified).
    space : SearchSpace
        Decisions -> recipe.
    budget : Budget
        The hard limits; metric drops are checked on validation metrics.
    base : Measurement, optional
        The base model's measurement with validation metrics (computed if not given; pass
        it to share one base between worker processes).
    students : dict, optional
        Distilled students kept between trials (and, passed on, between the studies of one
        search); filled as trials distil them.
    """

    def __init__(self, trained: TrainedModel, space: SearchSpace, budget: Budget,
                 base: Measurement | None = None, students: Students | None = None) -> None:
        self.trained, self.space, self.budget = trained, space, budget
        self.students: Students = {} if students is None else students
        self.settings: SearchSettings = space.settings
        self.metric = trained.task.primary_metric
        self.higher_is_better = trained.task.higher_is_better
        val = trained.data.val
        rng = np.random.default_rng(self.settings.seed)
        self.proxy_rows = np.sort(rng.permutation(len(val))[: self.settings.proxy_examples])
        self.example = torch.from_numpy(trained.data.train.x[:1])
        self.artifact_metadata = task_metadata(trained.task, trained.data)
        self.base = base or self._measure(trained.model, "base", full=True)[0]
        self.base_proxy = dataclasses.replace(
            self.base, metrics=self.validation_metrics(trained.model, full=False)[0])
        for metric, _ in budget.max_metric_drop:
            if metric not in self.base.metrics:
                raise ValueError(
                    f"The budget limits {metric!r}, which task {trained.task.name!r} does not "
                    f"score; it scores {', '.join(sorted(self.base.metrics))}."
                )

    # ---------------------------------------------------------------------------------------

    def validation_metrics(self, model: nn.Module, full: bool
                           ) -> tuple[dict[str, float], tuple[float, ...]]:
        """The task's metrics on the validation split (or the proxy subset), finite only, and
        on the whole split also the primary metric's group-bootstrap standard error
        (``<metric>_se``) and its value on each of the search's fixed group resamples (NaN
        where undefined; every candidate is scored on the same resamples, so two candidates'
        difference has a paired standard error). A proxy has no resamples: ``()``."""
        val = self.trained.data.val
        x, y = (val.x, val.y) if full else (val.x[self.proxy_rows], val.y[self.proxy_rows])
        probabilities = predict_proba(model, x)
        scores = self.trained.task.score(probabilities, y, probabilities, y)
        finite = {name: float(value) for name, value in scores.items()
                  if isinstance(value, (int, float)) and math.isfinite(value)}
        if not full:
            return finite, ()
        resampled = self._resampled(probabilities, y, val.groups)
        defined = resampled[np.isfinite(resampled)]
        finite[f"{self.metric}_se"] = float(np.std(defined)) if len(defined) > 1 else 0.0
        return finite, tuple(float(value) for value in resampled)

    def _resampled(self, probabilities: np.ndarray, labels: np.ndarray, groups: np.ndarray
                   ) -> np.ndarray:
        """The primary metric on each of the search's group-bootstrap resamples (NaN for a
        resample lacking a class, where TSS/F1 are undefined)."""
        if len(np.unique(groups)) < 2:
            return np.empty(0)
        values = []
        for rows in group_resamples(groups, BOOTSTRAP_RESAMPLES, self.settings.seed):
            value = math.nan
            if len(np.unique(labels[rows])) > 1:
                p, y = probabilities[rows], labels[rows]
                value = self.trained.task.score(p, y, p, y).get(self.metric, math.nan)
            values.append(value)
        return np.asarray(values, dtype=np.float64)

    def _measure(self, model: nn.Module, stage: str, full: bool
                 ) -> tuple[Measurement, tuple[float, ...]]:
        metrics, resampled = self.validation_metrics(model, full)
        measurement = measure(model, self.example, metrics=metrics,
                              stage=stage, repeats=self.settings.latency_repeats, warmup=5)
        return dataclasses.replace(measurement, theoretical_bytes=artifact_size_bytes(
            model, self.example, self.artifact_metadata, fec=self.settings.fec)), resampled

    def evaluate(self, assignment: Mapping[str, Any], full: bool, name: str = "search"
                 ) -> Evaluation:
        """Compress the base model as ``assignment`` says and measure it."""
        started = time.perf_counter()
        recipe, model = self.space.compress(assignment, self.trained.model, self.trained.data,
                                            fine_tune=full, name=name, students=self.students)
        measurement, resampled = self._measure(model, "full" if full else "proxy", full)
        usage = tuple(self.budget.usage(measurement, self.base if full else self.base_proxy))
        return Evaluation("full" if full else "proxy", measurement, usage, recipe,
                          time.perf_counter() - started, resampled)

    # ---------------------------------------------------------------------------------------
    # Screening a proxy
    # ---------------------------------------------------------------------------------------

    def drop(self, attrs: Mapping[str, Any], kind: str) -> float:
        """Primary-metric drop of a trial's ``kind`` evaluation (its user attributes)."""
        base = (self.base if kind == "full" else self.base_proxy).metrics[self.metric]
        value = attrs[kind]["metrics"][self.metric]
        return base - value if self.higher_is_better else value - base

    def recovery_margin(self, finished: Sequence[Mapping[str, Any]]) -> float | None:
        """How much fine-tuning may lower a proxy's metric drop.

        ``settings.recovery_margin`` if set; otherwise learnt from the search itself: 1.25 x
        the largest recovery (proxy drop - full drop) among the trials evaluated both ways,
        once there are at least five of them (None before: no metric-based screening).
        """
        if self.settings.recovery_margin is not None:
            return self.settings.recovery_margin
        recoveries = [self.drop(attrs, "proxy") - self.drop(attrs, "full") for attrs in finished
                      if "proxy" in attrs and "full" in attrs and "duplicate_of" not in attrs]
        if len(recoveries) < _MIN_RECOVERIES:
            return None
        return 1.25 * max(0.0, *recoveries)

    def hopeless(self, proxy: Evaluation, margin: float | None) -> bool:
        """Whether no fine-tuning can make the proxy feasible: a resource limit is broken,
        or the primary metric's drop exceeds its limit by more than ``margin``."""
        for item in proxy.broken:
            if item.limit in RESOURCE_LIMITS:
                return True
            if (margin is not None and item.limit == f"max_metric_drop[{self.metric}]"
                    and item.actual - margin > item.allowed):
                return True
        return False

    def dominated(self, proxy: Evaluation, finished: Sequence[Mapping[str, Any]],
                  margin: float | None) -> int | None:
        """Number of a fully evaluated feasible trial that clearly beats ``proxy``: no more
        bytes, no more MACs (latency is too noisy to compare), and a metric drop smaller than
        the proxy's by more than ``margin``; None if there is none (or no margin yet).
        ``finished`` are trials' user attributes with their ``number``."""
        if margin is None:
            return None
        attrs = {"proxy": proxy.attrs()}
        proxy_drop = self.drop(attrs, "proxy")
        for other in finished:
            full = other.get("full")
            if (full and full["feasible"] and full["bytes"] <= attrs["proxy"]["bytes"]
                    and full["macs"] <= attrs["proxy"]["macs"]
                    and self.drop(other, "full") < proxy_drop - margin):
                return other["number"]
        return None

    def objectives(self, evaluation: Evaluation) -> tuple[float, float, float]:
        """The values of :data:`OBJECTIVES` (validation metric, artifact bytes, MACs)."""
        m = evaluation.measurement
        return m.metrics[self.metric], float(m.theoretical_bytes), float(m.macs)
