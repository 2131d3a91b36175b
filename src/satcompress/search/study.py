"""Optuna studies of a search: storage, the constrained NSGA-II sampler, the trial objective,
and worker processes sharing one study.

Storage
    A study lives in an Optuna RDB storage: SQLite by default (``sqlite:///out/study.db``,
    embedded, nothing to set up) or PostgreSQL (``postgresql://user@host:port/db``) when
    several processes or machines share it. Reopening a study of the same name continues it
    (resume): finished trials are kept and only the missing ones run.
Sampler
    NSGA-II (Deb et al. 2002) over the categorical per-layer decisions, with Optuna's
    constrained domination (Deb's rules: a feasible trial beats an infeasible one, and
    infeasible ones are ranked by their total violation) taking the budget limits as
    constraints, ``<= 0`` meaning feasible.
Objective
    A proxy first (no fine-tuning, a validation subset); a proxy that breaks a resource
    limit, or misses a metric limit by more than fine-tuning could recover, is recorded as
    an infeasible trial without a full evaluation; a proxy that a fully evaluated feasible
    trial clearly beats is pruned (``TrialPruned``); the rest get the full evaluation.
    Everything measured is kept in the trial's user attributes. A trial repeating an
    earlier trial's decisions reuses its results.
Workers
    ``workers`` processes (``spawn``) each run ``study.optimize`` on the same study with a
    share of the remaining trials, and stop early through
    :class:`optuna.study.MaxTrialsCallback` once the study holds the target number of
    finished (complete or pruned) trials -- so machines joining the same study with the same
    target stop together. A trial left RUNNING by a killed process is not counted.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import warnings
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from satcompress.measure import Measurement
from satcompress.pipeline.base_model import TrainedModel
from satcompress.pipeline.budget import Budget
from satcompress.search.evaluate import OBJECTIVES, Evaluation, Evaluator, objective_directions
from satcompress.search.settings import SearchSettings
from satcompress.search.space import SearchSpace, Students

__all__ = [
    "FINISHED",
    "StudyJob",
    "check_storage",
    "open_storage",
    "open_study",
    "finished_trials",
    "run_study",
    "run_worker",
]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
"""Trial states that count toward a study's trial budget."""

_STORAGE_SCHEMES = ("sqlite:///", "postgresql://", "postgresql+psycopg2://")


def check_storage(url: str) -> str:
    """Return ``url`` if it names a supported storage, else say which ones are."""
    if not isinstance(url, str) or not url.startswith(_STORAGE_SCHEMES):
        raise ValueError(
            f"Storage {url!r} is not supported: use sqlite:///path/to/study.db (one machine) "
            "or postgresql://user@host:port/database (several machines)."
        )
    return url


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The Optuna storage at ``url``: ``sqlite:///path/study.db`` or ``postgresql://...``.

    The SQLite file's folder is created; SQLite waits up to a minute for a lock so that a
    few local workers can share one file.
    """
    check_storage(url)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    if url.startswith("postgresql://"):  # SQLAlchemy 2.1 defaults to psycopg 3; we ship psycopg2
        url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except Exception as error:  # SQLAlchemy's OperationalError and friends
        raise ValueError(
            f"Cannot open the study storage {url}: {type(error).__name__}: "
            f"{str(error).splitlines()[0][:300]}. Check that the server runs and the database "
            "exists (createdb), or use the default SQLite storage."
        ) from None


def _sampler(settings: SearchSettings, trials: int, worker: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        # Optuna marks constraints_func experimental (an ExperimentalWarning on every
        # construction); it is the documented way to give NSGA-II hard constraints.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.NSGAIISampler(
            population_size=settings.population(trials),
            seed=settings.seed + worker,
            constraints_func=_constraints,
        )


def _constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
    return list(trial.user_attrs["constraints"])


def open_study(storage: str, name: str, directions: list[str], metadata: dict[str, Any]
               ) -> optuna.Study:
    """Create the study, or reopen it to resume; refuse one created for another search.

    ``metadata`` (task, budget, space, settings) is stored with a new study and must match
    when an existing one is reopened.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=open_storage(storage), study_name=name,
                                directions=directions, load_if_exists=True)
    stored = study.user_attrs.get("search")
    wanted = json.loads(json.dumps(metadata))
    if stored is None:
        study.set_user_attr("search", wanted)
    elif stored != wanted:
        different = sorted(key for key in set(stored) | set(wanted)
                           if stored.get(key) != wanted.get(key))
        raise ValueError(
            f"Study {name!r} in {storage} belongs to another search (its {', '.join(different)} "
            "differ); resume it with the same settings, or pass a new --study-name."
        )
    return study


def finished_trials(study: optuna.Study) -> int:
    """Trials that count toward the study's budget (complete or pruned)."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


@dataclasses.dataclass(frozen=True)
class StudyJob:
    """Everything a worker process needs to run trials of one study (picklable).

    Attributes
    ----------
    storage, study_name : str
        Where the study lives.
    trained : TrainedModel
        Base model, task and data.
    space : SearchSpace
        The decisions; those in ``fixed`` are not searched.
    budget : Budget
        Limits of this study (a divide-and-conquer block keeps only the metric limits).
    base : Measurement
        The base model's measurement (validation metrics), shared by all workers.
    total : int
        Finished trials the study should hold at the end.
    fixed : dict
        Decision name -> value held fixed in this study.
    phase : str
        Label stored on every trial ("whole", "block:<name>", "combine").
    n_trials, worker : int
        This worker's share of the trials and its index (seeds its sampler).
    students : dict
        Distilled students shared by the studies of one search (a
        :class:`~satcompress.search.students.StudentStore` shares them with worker
        processes through its folder).
    """

    storage: str
    study_name: str
    trained: TrainedModel
    space: SearchSpace
    budget: Budget
    base: Measurement
    total: int
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)
    phase: str = "whole"
    n_trials: int = 0
    worker: int = 0
    students: Students = dataclasses.field(default_factory=dict, compare=False, repr=False)


def _finish(trial: optuna.Trial, evaluation: Evaluation) -> None:
    trial.set_user_attr(evaluation.kind, evaluation.attrs())
    trial.set_user_attr("evaluation", evaluation.kind)
    trial.set_user_attr("constraints", evaluation.attrs()["constraints"])
    trial.set_user_attr("feasible", evaluation.feasible)
    trial.set_user_attr("usage", [[u.limit, u.allowed, u.actual] for u in evaluation.usage])
    trial.set_user_attr("recipe", evaluation.recipe.to_dict())


_COPIED = ("proxy", "full", "evaluation", "constraints", "feasible", "usage", "recipe",
           "pruned_because")


def _objective(trial: optuna.Trial, evaluator: Evaluator, job: StudyJob) -> tuple[float, ...]:
    assignment = dict(job.fixed)
    for decision in evaluator.space.decisions:
        if decision.name not in job.fixed:
            assignment[decision.name] = trial.suggest_categorical(decision.name, decision.choices)
    trial.set_user_attr("phase", job.phase)
    trial.set_user_attr("worker", job.worker)
    study = trial.study
    for earlier in study.get_trials(deepcopy=False, states=FINISHED):
        if earlier.params == trial.params:  # NSGA-II revisits points of a discrete space
            for key in _COPIED:
                if key in earlier.user_attrs:
                    trial.set_user_attr(key, earlier.user_attrs[key])
            trial.set_user_attr("duplicate_of", earlier.number)
            if earlier.state == TrialState.PRUNED:
                raise optuna.TrialPruned(f"same decisions as pruned trial {earlier.number}")
            return tuple(earlier.values)
    name = f"{job.study_name}-trial{trial.number}"
    proxy = evaluator.evaluate(assignment, full=False, name=name)
    trial.set_user_attr("proxy", proxy.attrs())
    finished = [dict(t.user_attrs, number=t.number)
                for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    margin = evaluator.recovery_margin(finished)
    trial.set_user_attr("recovery_margin", margin)
    if evaluator.hopeless(proxy, margin):
        _finish(trial, proxy)
        return evaluator.objectives(proxy)
    winner = evaluator.dominated(proxy, finished, margin)
    if winner is not None:
        _finish(trial, proxy)
        trial.set_user_attr("pruned_because", f"proxy clearly dominated by trial {winner}")
        raise optuna.TrialPruned(f"proxy clearly dominated by trial {winner}")
    full = evaluator.evaluate(assignment, full=True, name=name)
    _finish(trial, full)
    return evaluator.objectives(full)


def run_worker(job: StudyJob) -> None:
    """Run ``job.n_trials`` trials of the study (the body of one worker process)."""
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    evaluator = Evaluator(job.trained, job.space, job.budget, base=job.base,
                          students=job.students)
    study = optuna.load_study(study_name=job.study_name, storage=open_storage(job.storage),
                              sampler=_sampler(job.space.settings, job.total, job.worker))
    stop = optuna.study.MaxTrialsCallback(job.total, states=FINISHED)
    study.optimize(lambda trial: _objective(trial, evaluator, job), n_trials=job.n_trials,
                   callbacks=[stop], catch=(ValueError,), gc_after_trial=False)


def run_study(job: StudyJob, workers: int = 1, enqueue: tuple[dict[str, Any], ...] = ()
              ) -> optuna.Study:
    """Run the study of ``job`` until it holds ``job.total`` finished trials.

    A fresh study first gets the ``enqueue``d assignments (anchors, or the combinations of
    divide and conquer) as its first trials. With ``workers > 1`` that many ``spawn``-ed
    processes share the remaining trials; a failed worker raises ``RuntimeError``.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}.")
    metadata = {"task": job.trained.task.name, "budget": job.budget.to_dict(),
                "space": job.space.to_dict(), "settings": job.space.settings.to_dict(),
                "fixed": job.fixed, "phase": job.phase, "objectives": list(OBJECTIVES)}
    directions = objective_directions(job.trained.task.higher_is_better)
    study = open_study(job.storage, job.study_name, directions, metadata)
    if not study.trials:
        for assignment in enqueue:
            study.enqueue_trial({k: v for k, v in assignment.items() if k not in job.fixed},
                                skip_if_exists=True)
    remaining = job.total - finished_trials(study)
    if remaining <= 0:
        return study
    workers = min(workers, remaining)
    jobs = [dataclasses.replace(job, n_trials=remaining // workers + (index < remaining % workers),
                                worker=index) for index in range(workers)]
    if workers == 1:
        run_worker(jobs[0])
        return study
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=run_worker, args=(worker_job,),
                                 name=f"satcompress-search-{worker_job.worker}")
                 for worker_job in jobs]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
    failed = [process.name for process in processes if process.exitcode != 0]
    if failed:
        raise RuntimeError(
            f"Search worker(s) {', '.join(failed)} failed (exit codes "
            f"{[process.exitcode for process in processes]}); their error is printed above. "
            f"Finished trials are kept in {job.storage}: rerun the same command to resume."
        )
    return study
