"""``run_search``: search a task's compression space under a budget and deliver the result.

Writes into the output folder (atomically): ``trials.json`` (every trial's measurements),
``front.md`` and ``front.png`` (the Pareto front, validation metric against artifact bytes),
``search.json`` (summary), ``recipe.toml`` (the chosen trial's recipe), ``students/`` (the
distilled students, shared by worker processes and reused by a re-run:
:class:`~satcompress.search.students.StudentStore`) and ``model/`` (the
chosen recipe run through :func:`satcompress.pipeline.runner.run_recipe`, which measures it
on the test split and verifies the budget). The study itself stays in its storage
(``study.db`` by default), so running the same command again resumes it.

The chosen model is the feasible trial with the fewest bytes among those whose validation
metric is within one standard error of the best one's -- the one-standard-error rule
(:func:`satcompress.search.front.one_standard_error_choice`), the error being that of the
difference between the two, paired over the same bootstrap resamples of the validation
groups: the search neither pays bytes for differences within the noise of one small
validation split nor gives up skill for the luck both candidates share.
Only the chosen model's final run touches the test split. If it breaks the budget after all
(the test split, or a latency measured with more repeats), the next candidates (best
validation metric first) are tried, up to ``verify_candidates``. A budget's
``max_sdc_probability`` is judged there alone (a trial is not: 1,000 seeded bit flips per
artifact), on each candidate's artifact, with the protections of ``settings.protect``, once it
meets every other limit (:func:`~satcompress.pipeline.runner.run_recipe`); a candidate over it
sends the search to the next.

On a reference task the best ``rank_candidates`` candidates in that order are then ranked
again over ``rank_folds`` grouped folds of the base model's training and validation examples,
each fold with a base model of its own (:mod:`satcompress.search.rank`, into ``ranking/``):
the smallest within one standard error of the best mean over those folds goes first. A user's
model cannot be retrained per fold; its candidates keep the validation split's order.

With ``folds`` (``search --folds K``) the delivered recipe is then judged over K grouped
folds exactly as ``compress --folds K`` judges a hand recipe
(:func:`satcompress.pipeline.folds.run_folds`: the recipe re-run on every fold and seed with a
base model trained for it, the metric-drop limit on the mean drop) into ``folds/``, so a
search result and a hand recipe compare on the same folds. Only the delivered model is run on
them: a fold verdict against it does not send the search to its next candidate (that would
choose on the test folds).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from satcompress.fileio import atomic_write_text
from satcompress.firmware.targets import Target
from satcompress.measure import Measurement
from satcompress.pipeline.base_model import TrainedModel, cached_base_model
from satcompress.pipeline.budget import Budget
from satcompress.pipeline.firmware import target_budget
from satcompress.pipeline.folds import (
    FOLDS_FILE,
    FoldsBudgetNotMet,
    FoldsResult,
    check_folds,
    run_folds,
)
from satcompress.pipeline.recipe import Recipe
from satcompress.pipeline.result import BudgetNotMet, RunResult
from satcompress.pipeline.runner import run_recipe
from satcompress.report import markdown_table
from satcompress.search.divide import divide_and_conquer
from satcompress.search.evaluate import Evaluator
from satcompress.search.front import (
    EmptyFront,
    TrialRecord,
    empty_front_message,
    one_standard_error_choice,
    front_rows,
    pareto_front,
    plot_front,
    trial_records,
)
from satcompress.search.rank import RANKING_DIR, Ranking, rank_over_folds
from satcompress.search.settings import SearchSettings
from satcompress.search.space import derive_space
from satcompress.search.students import StudentStore
from satcompress.search.study import StudyJob, check_storage, open_storage, run_study

__all__ = ["FOLDS_DIR", "STRATEGIES", "SearchResult", "run_search", "default_storage"]

FOLDS_DIR = "folds"
"""The folder, in the search's output folder, of the delivered recipe's runs over folds."""

STRATEGIES = ("whole", "divide")
"""``whole``: one NSGA-II study over every decision; ``divide``: per-block sub-problems
whose fronts are combined (:mod:`satcompress.search.divide`)."""


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """A finished search: every trial, the front, the chosen trial and its verified run, with
    ``folds`` the chosen recipe judged over grouped folds, and the candidates' ranking over
    folds of the training data (None where there was none)."""

    task: str
    strategy: str
    storage: str
    studies: tuple[str, ...]
    base: Measurement
    records: tuple[TrialRecord, ...]
    front: tuple[TrialRecord, ...]
    chosen: TrialRecord
    run: RunResult
    out_dir: Path
    seconds: float
    folds: FoldsResult | None = None
    ranking: Ranking | None = None


def default_storage(out_dir: str | Path) -> str:
    """The SQLite storage URL of a search writing into ``out_dir``."""
    return f"sqlite:///{(Path(out_dir) / 'study.db').resolve()}"


def _load_records(storage: str, names: list[str], metric: str) -> dict[str, list[TrialRecord]]:
    import optuna

    opened = open_storage(storage)
    return {name: trial_records(optuna.load_study(study_name=name, storage=opened), metric)
            for name in names}


def run_search(
    task: str | TrainedModel,
    budget: Budget | str,
    trials: int,
    out_dir: str | Path,
    *,
    workers: int = 1,
    storage: str | None = None,
    study_name: str | None = None,
    strategy: str = "whole",
    settings: SearchSettings | None = None,
    seed: int = 0,
    latency_repeats: int = 200,
    verify_candidates: int = 3,
    target: Target | None = None,
    folds: int | None = None,
    seeds: Sequence[int] | None = None,
    rank_candidates: int = 4,
    rank_folds: int = 4,
) -> SearchResult:
    """Search per-layer compression decisions of a task's base model under ``budget``.

    Parameters
    ----------
    task : str or TrainedModel
        A reference task name (its cached base model, split ``seed``) or a trained model
        with its task and data.
    budget : Budget or str
        Hard limits (``"max_bytes=300kB,max_metric_drop=tss:0.02"``); metric drops are
        judged on the validation split during the search and on the test split at the end.
    trials : int
        Finished trials the study (or, for ``divide``, all its studies) should hold.
    out_dir : path
        Output folder (see the module docstring).
    workers : int
        Worker processes sharing the study.
    storage : str, optional
        ``sqlite:///...`` (default ``out_dir/study.db``) or ``postgresql://...``.
    study_name : str, optional
        Default ``"<task>-<strategy>"``; the same name in the same storage resumes.
    strategy : {"whole", "divide"}
        See :data:`STRATEGIES`.
    settings : SearchSettings, optional
        Choices offered and how trials are judged (default: the task's,
        ``SearchSettings.for_task(task, seed=seed)``).
    latency_repeats : int
        Timed runs of the final verification.
    verify_candidates : int
        Candidates tried, best validation metric first, until one passes verification.
    target : Target, optional
        A target profile (:mod:`satcompress.firmware.targets`): its flash and RAM become
        ``max_bytes`` / ``max_ram_bytes`` where the budget sets none; trials are judged on
        their artifacts, the final run on the built firmware
        (:func:`satcompress.pipeline.runner.run_recipe`).
    folds : int, optional
        Judge the delivered recipe over this many grouped folds too (a reference task only;
        see the module docstring), into ``out_dir/folds``.
    seeds : sequence of int, optional
        With ``folds``: the seeds of the runs over folds (default ``(seed,)``).
    rank_candidates : int
        A reference task's candidates ranked again over grouped folds of the training data
        before the final run (see the module docstring); 0 or 1: the validation split's order.
    rank_folds : int
        The folds of that ranking (at least 3).

    Raises
    ------
    ValueError
        For impossible settings, before any trial (``folds`` for a trained model of your own).
    EmptyFront
        No trial meets the budget; the message names the closest one and what it missed.
    BudgetNotMet
        The best candidates met the budget on validation but not in the final run.
    FoldsBudgetNotMet
        With ``folds``: the delivered recipe breaks the budget over the folds (the mean
        metric drop, or the worst run's resources); the search's files are written.
    """
    started = time.perf_counter()
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be an integer >= 1, got {trials!r}.")
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}.")
    if folds is not None:
        if isinstance(task, TrainedModel):
            raise ValueError("--folds retrains the base model on every fold, which only a "
                             "reference task can (--task); a model of your own is judged on "
                             "its one test split.")
        seeds = check_folds(folds, (seed,) if seeds is None else seeds)
    if isinstance(rank_candidates, bool) or not isinstance(rank_candidates, int) \
            or rank_candidates < 0:
        raise ValueError(f"rank_candidates must be an integer >= 0, got {rank_candidates!r}.")
    check_folds(rank_folds, (seed,), "rank_folds")
    budget = Budget.parse(budget) if isinstance(budget, str) else budget
    if target is not None:
        budget = target_budget(budget, target)
    out = Path(out_dir)
    storage = check_storage(storage or default_storage(out))
    trained = task if isinstance(task, TrainedModel) else cached_base_model(task, seed)
    settings = settings or SearchSettings.for_task(trained.task, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    study_name = study_name or f"{trained.task.name}-{strategy}"
    space = derive_space(trained.model, trained.data, settings)
    base = Evaluator(trained, space, budget).base
    job = StudyJob(storage, study_name, trained, space, budget, base, total=trials,
                   students=StudentStore(trained.model, out / "students"))
    if strategy == "whole":
        names = [run_study(job, workers, enqueue=space.anchors(trials)).study_name]
    else:
        names = divide_and_conquer(job, trials, workers)
    metric = trained.task.primary_metric
    by_study = _load_records(storage, names, metric)
    records = [record for name in names for record in by_study[name]]
    answers = by_study[names[-1]] if strategy == "whole" or names[-1].endswith(":combine") else []
    front = pareto_front(answers, trained.task.higher_is_better)
    report = _Report(trained, budget, base, space.rows(), strategy, storage, names, records,
                     front, out)
    report.write_trials()
    candidates = one_standard_error_choice(
        [r for r in answers if r.candidate and r.duplicate_of is None],
        trained.task.higher_is_better)
    if not candidates:
        message = empty_front_message(answers or records, metric)
        report.write_summary(None, None, message, time.perf_counter() - started)
        raise EmptyFront(message)
    if isinstance(task, str) and rank_candidates > 1 and len(candidates) > 1:
        report.ranking = rank_over_folds(trained, candidates[:rank_candidates], budget,
                                         out / RANKING_DIR, n_folds=rank_folds, seed=seed)
        candidates = [c.record for c in report.ranking.order] + candidates[rank_candidates:]
    failure: BudgetNotMet | None = None
    for chosen in candidates[:verify_candidates]:
        recipe = Recipe.from_dict(chosen.recipe)
        recipe.save(out / "recipe.toml")
        try:
            result = run_recipe(trained, recipe, budget, out / "model", seed=seed,
                                latency_repeats=latency_repeats, target=target)
        except BudgetNotMet as error:
            failure = error
            report.rejected.append({"trial": chosen.label, "why": str(error)})
            continue
        over_folds, failure_over_folds = None, None
        if folds is not None:
            try:
                over_folds = run_folds(trained.task.name, recipe, budget, out / FOLDS_DIR,
                                       folds=folds, seeds=seeds,
                                       latency_repeats=latency_repeats, target=target)
            except FoldsBudgetNotMet as error:
                over_folds, failure_over_folds = error.result, error
        seconds = time.perf_counter() - started
        report.write_summary(chosen, result, None, seconds, over_folds)
        if failure_over_folds is not None:
            raise failure_over_folds
        return SearchResult(trained.task.name, strategy, storage, tuple(names), base,
                            tuple(records), tuple(front), chosen, result, out, seconds,
                            over_folds, report.ranking)
    report.write_summary(None, None, str(failure), time.perf_counter() - started)
    raise BudgetNotMet(
        f"The {len(report.rejected)} best candidates of the search met the budget on the "
        f"validation split but not in their final run: {failure}", failure.result)


@dataclasses.dataclass
class _Report:
    """Writes the search's files (see the module docstring)."""

    trained: TrainedModel
    budget: Budget
    base: Measurement
    space_rows: list[dict[str, Any]]
    strategy: str
    storage: str
    studies: list[str]
    records: list[TrialRecord]
    front: list[TrialRecord]
    out: Path
    rejected: list[dict[str, str]] = dataclasses.field(default_factory=list)
    ranking: Ranking | None = None

    @property
    def metric(self) -> str:
        return self.trained.task.primary_metric

    def write_trials(self) -> None:
        rows = [{**{k: v for k, v in dataclasses.asdict(r).items() if k != "usage"},
                 "violations": [str(v) for v in r.usage if v.broken]} for r in self.records]
        atomic_write_text(self.out / "trials.json", json.dumps(rows, indent=1) + "\n")
        plot_front(self.records, self.front, self.out / "front.png", self.metric,
                   self.base.metrics[self.metric], self.base.theoretical_bytes,
                   self.budget.max_bytes)

    def write_summary(self, chosen: TrialRecord | None, result: RunResult | None,
                      failure: str | None, seconds: float,
                      folds: FoldsResult | None = None) -> None:
        base_bytes = self.base.theoretical_bytes
        delivered = None if result is None else (result.flight or result.final)  # the artifact
        counts = Counter(f"{r.state.lower()} ({r.evaluation})" for r in self.records)
        summary = {
            "task": self.trained.task.name, "strategy": self.strategy, "storage": self.storage,
            "studies": self.studies, "budget": self.budget.to_dict(),
            "base": {"bytes": base_bytes, "validation": self.base.metrics},
            "trials": dict(counts), "front": front_rows(self.front, self.metric, base_bytes),
            "chosen": None if chosen is None else {
                "trial": chosen.label, f"validation_{self.metric}": chosen.metric,
                "bytes": chosen.bytes, "recipe": chosen.recipe["name"]},
            "final": None if result is None else {
                "bytes": delivered.theoretical_bytes,
                "test": delivered.metrics,
                "latency_ms_p50": delivered.latency_ms_p50,
                "base_test": result.measurements[0].metrics},
            "folds": None if folds is None else {
                "folder": FOLDS_DIR, "evaluation": folds.mode,
                "artifact": folds.to_dict()["summary"]["artifact"],
                "drop_interval": folds.interval.to_dict(), "fits_budget": folds.fits_budget,
                "violations": [str(v) for v in folds.violations]},
            "ranking": None if self.ranking is None else self.ranking.to_dict(),
            "rejected": self.rejected, "failure": failure, "seconds": round(seconds, 1),
        }
        atomic_write_text(self.out / "search.json", json.dumps(summary, indent=2) + "\n")
        lines = [f"# satcompress search — {self.trained.task.name} ({self.strategy})", "",
                 f"Budget: `{json.dumps(self.budget.to_dict())}`; base model "
                 f"{base_bytes:,} bytes, validation {self.metric} "
                 f"{self.base.metrics[self.metric]:.4f}. Trials: "
                 + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
                 + f"; {seconds:.0f} s.", "",
                 "## Pareto front (validation metric, artifact bytes, MACs; within budget)", "",
                 markdown_table(front_rows(self.front, self.metric, base_bytes))
                 if self.front else "(empty)", "", "![front](front.png)", ""]
        if self.ranking is not None:
            lines += ["## Candidates ranked over folds", "",
                      f"The best {len(self.ranking.order)} candidates re-run on "
                      f"{self.ranking.n_folds} grouped folds of the training and validation "
                      "examples, each fold with its own base model (the test split unused), "
                      "in the order tried: the fewest bytes within one standard error of the "
                      "best mean first.", "", markdown_table(self.ranking.rows()), ""]
        if chosen is not None and result is not None:
            lines += ["## Chosen model", "",
                      f"Trial {chosen.label}: validation {self.metric} {chosen.metric:.4f}, "
                      f"{chosen.bytes:,} bytes, within the budget. Test split: "
                      + ", ".join(f"{k} {v:.4f}" for k, v in delivered.metrics.items()
                                  if k == self.metric)
                      + f" (base {result.measurements[0].metrics[self.metric]:.4f}). "
                      f"Reproduce with `satcompress compress --task {self.trained.task.name} "
                      f"--recipe {self.out / 'recipe.toml'}`.", ""]
        if folds is not None:
            verdict = ("all limits met" if folds.fits_budget else "budget NOT met: "
                       + "; ".join(str(v) for v in folds.violations))
            lines += ["## Chosen recipe over folds", "",
                      f"The chosen recipe re-run on every fold with a base model per fold "
                      f"({folds.mode}), as `compress --folds` judges a recipe: {verdict}; "
                      f"{folds.interval.describe()}. The search chose it on the validation "
                      "part of its base model's default split, whose groups the runs over "
                      f"folds also train or test on. Every run: [{FOLDS_DIR}/{FOLDS_FILE}]"
                      f"({FOLDS_DIR}/{FOLDS_FILE}), [{FOLDS_DIR}/report.html]"
                      f"({FOLDS_DIR}/report.html).", "",
                      markdown_table(folds.rows()), ""]
        if failure:
            lines += ["## No model delivered", "", failure, ""]
        lines += ["## Search space", "", markdown_table(self.space_rows), ""]
        atomic_write_text(self.out / "front.md", "\n".join(lines))
