"""A recipe judged over K grouped folds x S seeds, with a paired interval of the metric drop.

One split's test metric moves with the draw of the test set and with the seed, so a verdict
on the metric drop from one split is noisy (issue 16). :func:`run_folds` runs the recipe once
per fold ``k`` and seed ``s``: the task's data with fold ``k`` of ``K`` label-stratified,
grouped folds as test and the next fold as validation (by active region for flares, by
object for transients: the task's ``load(seed=s, fold=k, n_folds=K)``), a base model trained
and cached for that fold and seed (:func:`~satcompress.pipeline.base_model.cached_base_model`),
and :func:`~satcompress.pipeline.runner.run_recipe` into ``OUT/fold{k}of{K}-seed{s}/`` (its
own artifact, checkpoints, report and bootstrap interval; a re-run resumes it).

The budget is judged over all runs: a metric-drop limit on the *mean* drop, bytes, RAM and
latency on every run's artifact (the worst run). Each run therefore checks its resource limits
only. The base model and every stage are evaluated on every run: each stage's primary metric
and bytes per run, their mean and sd, and the paired interval of each stage's drop from the
base (:func:`~satcompress.measure.uncertainty.paired_t_interval`, corrected for the training
data the folds share) go, with the verdict, to ``OUT/folds.json``, ``OUT/summary.md`` and
``OUT/report.html`` (:mod:`satcompress.report.folds`). The runs judge the recipe: no
``OUT/model.sca`` is written.

A user's model cannot be retrained per fold: its one-split run reports a paired bootstrap
interval over test groups instead (``stages.json``, ``drop_interval``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from satcompress.fileio import atomic_write_text
from satcompress.firmware.targets import Target
from satcompress.measure import Measurement
from satcompress.measure.uncertainty import DropInterval, paired_t_interval
from satcompress.pipeline.base_model import TrainedModel, cached_base_model
from satcompress.pipeline.budget import Budget, Violation
from satcompress.pipeline.recipe import Recipe
from satcompress.pipeline.result import BudgetNotMet, RunResult
from satcompress.pipeline.runner import run_recipe
from satcompress.report.folds import write_folds_report, write_folds_summary
from satcompress.tasks.registry import get_task

__all__ = ["ARTIFACT_STAGE", "FOLDS_FILE", "FoldRun", "FoldsResult", "FoldsBudgetNotMet",
           "check_folds", "run_folds"]

FOLDS_FILE = "folds.json"
ARTIFACT_STAGE = "artifact"
"""The name the flight artifact's measurement goes by among a fold run's stages."""


def _on_the_mean(limit: str) -> bool:
    """Whether ``limit`` is judged on the mean over runs (a metric drop), not the worst run."""
    return limit.startswith("max_metric_drop")


def _mean_sd(values: Sequence[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1))}


@dataclass(frozen=True)
class FoldRun:
    """One run of the recipe: fold ``fold`` as test, with seed ``seed``.

    Attributes
    ----------
    result : RunResult
        The run (its folder is ``result.out_dir``); its budget holds the resource limits only.
    train_examples, test_examples : int
        Sizes of the run's training and test splits.
    bootstrap : dict, optional
        The run's own paired bootstrap interval over its test groups (its ``stages.json``).
    """

    fold: int
    seed: int
    result: RunResult
    train_examples: int
    test_examples: int
    bootstrap: dict | None

    def measured(self) -> tuple[Measurement, ...]:
        """The base model, every stage and the artifact, each measured on this run's test split."""
        return (*self.result.measurements, self.result.flight)

    def values(self, metric: str) -> tuple[float, float]:
        """The base model's and the artifact's ``metric`` on this run's test split."""
        return self.result.measurements[0].metrics[metric], self.result.flight.metrics[metric]

    def stage_rows(self, metric: str) -> list[dict]:
        """One row per stage (the base first, the artifact last): its ``metric`` and bytes."""
        names = (*(m.stage for m in self.result.measurements), ARTIFACT_STAGE)
        return [{"stage": name, metric: measurement.metrics[metric],
                 "bytes": measurement.theoretical_bytes}
                for name, measurement in zip(names, self.measured())]

    def usage(self, budget: Budget) -> list[Violation]:
        """The artifact's value for every limit of ``budget`` (metric drops included)."""
        return budget.usage(self.result.flight, self.result.measurements[0])


@dataclass(frozen=True)
class FoldsResult:
    """Every run over the folds and seeds, the intervals of the drops and the budget verdict.

    ``stage_intervals`` holds the paired interval of every stage's drop from the base, in the
    recipe's order, the artifact's last (:attr:`interval`). ``usage`` holds one entry per
    limit of ``budget``: the mean over runs for a metric drop, the worst run for the others;
    the verdict is ``violations``.
    """

    task: str
    recipe: Recipe
    budget: Budget
    n_folds: int
    seeds: tuple[int, ...]
    runs: tuple[FoldRun, ...]
    metric: str
    stage_intervals: tuple[DropInterval, ...]
    usage: tuple[Violation, ...]
    out_dir: Path

    @property
    def interval(self) -> DropInterval:
        """The paired interval of the artifact's drop from the base (the budget's)."""
        return self.stage_intervals[-1]

    @property
    def stages(self) -> tuple[str, ...]:
        """The base model, the recipe's stages and the artifact, in order."""
        return tuple(row["stage"] for row in self.runs[0].stage_rows(self.metric))

    @property
    def mode(self) -> str:
        """How the metric drop was judged, in words."""
        plural = "s" if len(self.seeds) > 1 else ""
        return f"mean over {self.n_folds} folds × {len(self.seeds)} seed{plural}"

    @property
    def violations(self) -> tuple[Violation, ...]:
        return tuple(usage for usage in self.usage if usage.broken)

    @property
    def fits_budget(self) -> bool:
        return not self.violations

    def drops(self) -> list[float]:
        """Each run's drop of the primary metric, base to artifact (in its worsening direction)."""
        sign = 1.0 if self.interval.higher_is_better else -1.0
        return [sign * (base - artifact)
                for base, artifact in (run.values(self.metric) for run in self.runs)]

    def rows(self) -> list[dict]:
        """One table row per run, then the mean and the sd over runs."""
        columns = (f"base {self.metric}", f"artifact {self.metric}", f"{self.metric} drop")
        per_run = [(*run.values(self.metric), drop) for run, drop in zip(self.runs, self.drops())]
        rows = [
            {"run": f"fold {run.fold}, seed {run.seed}", **dict(zip(columns, values)),
             "bootstrap 95% of drop": "" if run.bootstrap is None
             else f"{run.bootstrap['low']:+.4f} to {run.bootstrap['high']:+.4f}",
             "artifact bytes": run.result.flight.theoretical_bytes,
             "resources": "; ".join(str(v) for v in run.result.flight_violations) or "fit"}
            for run, values in zip(self.runs, per_run)
        ]
        summaries = [_mean_sd(values) for values in zip(*per_run)]
        sizes = _mean_sd([run.result.flight.theoretical_bytes for run in self.runs])
        for name in ("mean", "sd"):
            rows.append({"run": name, **{column: summary[name]
                                         for column, summary in zip(columns, summaries)},
                         "artifact bytes": round(sizes[name])})
        return rows

    def stage_table(self, quantity: str) -> list[dict]:
        """One row per stage, one column per run, then the mean and sd: ``quantity`` is the
        primary metric or ``"bytes"``."""
        values = [[row[quantity] for row in run.stage_rows(self.metric)] for run in self.runs]
        return [{"stage": stage,
                 **{f"fold {run.fold}, seed {run.seed}": per_run[position]
                    for run, per_run in zip(self.runs, values)},
                 **_mean_sd([per_run[position] for per_run in values])}
                for position, stage in enumerate(self.stages)]

    def stage_summary(self) -> list[dict]:
        """One row per stage: mean and sd of the metric and bytes over the runs, and the mean
        drop from the base with its paired 95 % interval (none for the base itself)."""
        metrics, sizes = self.stage_table(self.metric), self.stage_table("bytes")
        rows = []
        for metric, size, interval in zip(metrics, sizes, (None, *self.stage_intervals)):
            row = {"stage": metric["stage"], f"mean {self.metric}": metric["mean"],
                   f"sd {self.metric}": metric["sd"], "mean bytes": round(size["mean"]),
                   "sd bytes": round(size["sd"])}
            if interval is not None:
                row.update({"mean drop": interval.drop, "95% low": interval.low,
                            "95% high": interval.high,
                            "excludes 0": "yes" if interval.distinguishable else "no"})
            rows.append(row)
        return rows

    def limits(self) -> list[dict]:
        """One row per limit: allowed, the value over the runs, how it is judged, broken."""
        return [{"limit": usage.limit, "allowed": usage.allowed, "value": usage.actual,
                 "judged_on": "mean over runs" if _on_the_mean(usage.limit) else "worst run",
                 "broken": usage.broken}
                for usage in self.usage]

    def to_dict(self) -> dict:
        """Everything ``folds.json`` holds."""
        per_run = [run.values(self.metric) for run in self.runs]
        return {
            "task": self.task,
            "recipe": self.recipe.to_dict(),
            "budget": self.budget.to_dict(),
            "evaluation": self.mode,
            "n_folds": self.n_folds,
            "seeds": list(self.seeds),
            "metric": self.metric,
            "runs": [
                {"fold": run.fold, "seed": run.seed, "folder": run.result.out_dir.name,
                 "train_examples": run.train_examples, "test_examples": run.test_examples,
                 "base": base, "artifact": artifact, "drop": drop,
                 "artifact_bytes": run.result.flight.theoretical_bytes,
                 "resource_violations": [str(v) for v in run.result.flight_violations],
                 "bootstrap": run.bootstrap, "stages": run.stage_rows(self.metric)}
                for run, (base, artifact), drop in zip(self.runs, per_run, self.drops())
            ],
            "summary": {"base": _mean_sd([base for base, _ in per_run]),
                        "artifact": _mean_sd([artifact for _, artifact in per_run]),
                        "drop": _mean_sd(self.drops())},
            "stages": [{"stage": metric["stage"],
                        self.metric: {key: metric[key] for key in ("mean", "sd")},
                        "bytes": {key: size[key] for key in ("mean", "sd")},
                        "drop_interval": None if interval is None else interval.to_dict()}
                       for metric, size, interval in zip(
                           self.stage_table(self.metric), self.stage_table("bytes"),
                           (None, *self.stage_intervals))],
            "drop_interval": self.interval.to_dict(),
            "budget_usage": self.limits(),
            "fits_budget": self.fits_budget,
        }


class FoldsBudgetNotMet(RuntimeError):
    """The recipe breaks the budget over the folds; ``result`` holds every run."""

    def __init__(self, message: str, result: FoldsResult) -> None:
        super().__init__(message)
        self.result = result


def _aggregate_usage(budget: Budget, runs: Sequence[FoldRun]) -> tuple[Violation, ...]:
    """Every limit's value over the runs: the mean for a metric drop, else the worst run."""
    aggregated = []
    for usages in zip(*(run.usage(budget) for run in runs)):  # same limits, same order per run
        values = [usage.actual for usage in usages]
        value = float(np.mean(values)) if _on_the_mean(usages[0].limit) else max(values)
        aggregated.append(Violation(usages[0].limit, usages[0].allowed, value))
    return tuple(aggregated)


def check_folds(folds: int, seeds: Sequence[int], name: str = "--folds") -> tuple[int, ...]:
    """``seeds`` as a tuple, once ``folds`` (the option ``name``) and ``seeds`` are known to
    be possible.

    Raises
    ------
    ValueError
        For fewer than 3 folds, no seed or a repeated one.
    """
    seeds = tuple(seeds)
    if isinstance(folds, bool) or not (isinstance(folds, int) and folds >= 3):
        raise ValueError(f"{name} must be an integer >= 3 (test, validation and training "
                         f"folds), got {folds!r}.")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"Give one or more distinct seeds, got {list(seeds)}.")
    return seeds


def run_folds(
    task: str,
    recipe: Recipe,
    budget: Budget,
    out_dir: str | Path,
    *,
    folds: int = 5,
    seeds: Sequence[int] = (0,),
    latency_repeats: int = 200,
    on_stage: Callable[[str], None] | None = None,
    target: Target | None = None,
    progress: bool = False,
    base_model: Callable[[int, int], TrainedModel] | None = None,
) -> FoldsResult:
    """Run ``recipe`` on the reference ``task`` for every fold of ``folds`` and every seed.

    ``on_stage(text)`` is called before each stage, the text naming the run. ``progress``
    shows the base models' training. ``base_model(fold, seed)`` gives a run's trained base
    model with its data (default: the task's fold ``fold`` of ``folds`` for ``seed``,
    :func:`~satcompress.pipeline.base_model.cached_base_model`). Returns the
    :class:`FoldsResult` (also written as ``OUT/folds.json``, ``OUT/summary.md`` and
    ``OUT/report.html``).

    Raises
    ------
    ValueError
        For an unknown task, fewer than 3 folds, no seed or a repeated one (before any
        training).
    FoldsBudgetNotMet
        When the mean metric drop or the worst run's resources break the budget.
    """
    reference = get_task(task)
    seeds = check_folds(folds, seeds)
    out_dir = Path(out_dir)
    resources = dataclasses.replace(budget, max_metric_drop=())
    runs = []
    for seed in seeds:
        for fold in range(folds):
            folder = out_dir / f"fold{fold}of{folds}-seed{seed}"
            trained = (cached_base_model(task, seed, progress, fold=fold, n_folds=folds)
                       if base_model is None else base_model(fold, seed))
            report = None if on_stage is None else (
                lambda stage, name=folder.name: on_stage(f"{name}: stage {stage}"))
            try:
                result = run_recipe(trained, recipe, resources, folder, seed=seed,
                                    latency_repeats=latency_repeats, on_stage=report,
                                    target=target)
            except BudgetNotMet as failure:  # over a resource limit: judged below, over all
                result = failure.result
            bootstrap = json.loads((folder / "stages.json").read_text())["drop_interval"]
            runs.append(FoldRun(fold, seed, result, len(trained.data.train),
                                len(trained.data.test), bootstrap))
    metric = reference.primary_metric
    ratio = float(np.mean([run.test_examples for run in runs])
                  / np.mean([run.train_examples for run in runs]))
    measured = [[m.metrics[metric] for m in run.measured()] for run in runs]
    intervals = tuple(
        paired_t_interval([values[0] for values in measured],
                          [values[position] for values in measured], metric=metric,
                          higher_is_better=reference.higher_is_better, test_train_ratio=ratio)
        for position in range(1, len(measured[0])))
    result = FoldsResult(reference.name, recipe, budget, folds, seeds, tuple(runs), metric,
                         intervals, _aggregate_usage(budget, runs), out_dir)
    write_folds_summary(out_dir, result)
    write_folds_report(out_dir, result)
    atomic_write_text(out_dir / FOLDS_FILE, json.dumps(result.to_dict(), indent=2) + "\n")
    if not result.fits_budget:
        raise FoldsBudgetNotMet(
            f"The recipe {recipe.name!r} does not meet the budget ({result.mode} for metric "
            f"drops, the worst run for resources): "
            f"{'; '.join(str(v) for v in result.violations)}. Every run's values are in "
            f"{out_dir / FOLDS_FILE}; loosen the budget or use a stronger recipe.", result)
    return result
