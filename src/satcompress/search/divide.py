"""Divide and conquer: search each block of layers alone, then combine the sub-fronts.

EMO-DIR-style decomposition (evolutionary multi-objective pruning that splits a network into
sub-networks, searches each, and merges their Pareto fronts by ranking the global
performance impairment of each choice):

1. The network's decisions are split into blocks (:attr:`SearchSpace.blocks`). Each block
   is a sub-problem searched by the same constrained NSGA-II with every other block left
   uncompressed; only the metric-drop limits apply there (a byte limit cannot be met by one
   block). Each sub-trial therefore measures the GLOBAL metric drop its block choice causes.
   The ``student`` block (distil into a smaller copy first, when the space offers it) is
   searched first, and the smallest student within the drop limits is then held fixed
   while the layer blocks are searched on it: the layer blocks' drops and savings are
   measured against that student, and every combination keeps it.
2. Each block's sub-front (fully evaluated, within the drop limits; Pareto in metric drop
   and artifact bytes), plus "leave the block alone", gives its options.
3. Combinations are scored by the estimates "drop adds up, bytes saved add up" (the
   additivity the mixed-precision knapsack also assumes); the estimated Pareto front within
   the byte limit is thinned evenly in log bytes to the trials left (or, if smaller, topped
   up with the next combinations by least estimated drop; if no combination fits, the
   smallest ones are measured to show how far off they are), and those combinations are
   evaluated for real as trials of a final study, where they are ranked by their MEASURED
   global drop, bytes and latency.

The sub-problems get ``block_trial_fraction`` of the trial budget, split evenly; the
combinations the rest, so the whole costs the same number of trials as a whole-network
search.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any

from satcompress.pipeline.budget import Budget
from satcompress.search.front import TrialRecord, pareto_front, trial_records
from satcompress.search.space import STUDENT
from satcompress.search.study import StudyJob, run_study

__all__ = ["BlockOption", "block_options", "combine", "divide_and_conquer"]

_MAX_OPTIONS = 8
"""Options kept per block (spread over its sub-front), so combinations stay enumerable."""


@dataclasses.dataclass(frozen=True)
class BlockOption:
    """One choice for one block: its decisions and its measured global cost."""

    block: str
    assignment: dict[str, Any]
    drop: float
    saved_bytes: int
    trial: str


def block_options(records: Sequence[TrialRecord], block: str, names: Sequence[str],
                  base_metric: float, base_bytes: int, higher_is_better: bool) -> list[BlockOption]:
    """A block's options: its sub-front (up to a few, spread in bytes) and "no change"."""
    front = pareto_front(records, higher_is_better, objectives=("metric", "bytes"))
    if len(front) > _MAX_OPTIONS - 1:
        step = (len(front) - 1) / (_MAX_OPTIONS - 2)
        front = [front[round(index * step)] for index in range(_MAX_OPTIONS - 1)]
    options = [BlockOption(block, {}, 0.0, 0, "uncompressed")]
    for record in front:
        drop = base_metric - record.metric if higher_is_better else record.metric - base_metric
        options.append(BlockOption(block, {name: record.params[name] for name in names},
                                   drop, base_bytes - record.bytes, record.label))
    return options


def combine(options: Sequence[Sequence[BlockOption]], base_bytes: int, max_bytes: int | None,
            count: int) -> list[tuple[BlockOption, ...]]:
    """Up to ``count`` combinations (one option per block) to evaluate, see the module docs."""
    every = [(sum(option.drop for option in combination),
              max(base_bytes - sum(option.saved_bytes for option in combination), 1), combination)
             for combination in itertools.product(*options)]
    estimated = [item for item in every if max_bytes is None or item[1] <= max_bytes]
    if not estimated:  # none fits by estimate: measure the smallest, to see how far off they are
        return [item[2] for item in sorted(every, key=lambda item: (item[1], item[0]))[:count]]
    front = [item for item in estimated
             if not any(other[0] <= item[0] and other[1] <= item[1]
                        and (other[0] < item[0] or other[1] < item[1]) for other in estimated)]
    front.sort(key=lambda item: (item[0], item[1]))  # least estimated drop first
    if len(front) <= count:  # room left: the next combinations by least estimated drop
        rest = sorted((item for item in estimated if all(item is not f for f in front)),
                      key=lambda item: (item[0], item[1]))
        return [item[2] for item in (front + rest)[:count]]
    by_size = sorted(front, key=lambda item: item[1])
    sizes = [math.log10(item[1]) for item in by_size]
    chosen = {id(front[0])}  # the least-drop combination within the byte limit always runs
    for target in (sizes[0] + (sizes[-1] - sizes[0]) * index / max(count - 1, 1)
                   for index in range(count)):
        if len(chosen) >= count:
            break
        nearest = min((item for item in by_size if id(item) not in chosen),
                      key=lambda item: abs(math.log10(item[1]) - target))
        chosen.add(id(nearest))
    return [item[2] for item in front if id(item) in chosen]


def divide_and_conquer(job: StudyJob, trials: int, workers: int = 1) -> list[str]:
    """Run the block sub-studies and the combination study of ``job``'s search.

    Returns the names of the studies, the combination study last (its trials are the
    answer; the sub-studies' trials are partial models).
    """
    space, settings = job.space, job.space.settings
    blocks = space.blocks
    per_block = math.floor(trials * settings.block_trial_fraction / len(blocks))
    combinations = trials - per_block * len(blocks)
    if per_block < 1 or combinations < 1:
        raise ValueError(
            f"{trials} trials are too few to divide {len(blocks)} blocks ({', '.join(blocks)}) "
            f"and combine them; give at least {math.ceil(len(blocks) / settings.block_trial_fraction) + 1}."
        )
    metric = job.trained.task.primary_metric
    higher = job.trained.task.higher_is_better
    base_metric, base_bytes = job.base.metrics[metric], job.base.theoretical_bytes
    block_budget = Budget(max_metric_drop=job.budget.max_metric_drop)
    names, options, student = [], [], {}
    for block in blocks:
        searched = {decision.name for decision in space.in_block(block)}
        fixed = {**{name: value for name, value in space.defaults().items()
                    if name not in searched}, **student}
        block_job = dataclasses.replace(job, study_name=f"{job.study_name}:block:{block}",
                                        budget=block_budget, total=per_block, fixed=fixed,
                                        phase=f"block:{block}")
        anchors = tuple({name: value for name, value in anchor.items() if name in searched}
                        for anchor in space.anchors(per_block))
        study = run_study(block_job, workers, enqueue=anchors)
        names.append(study.study_name)
        records = trial_records(study, metric)
        if STUDENT in searched:
            smallest = min((r for r in records if r.candidate), key=lambda r: r.bytes,
                           default=None)
            if smallest is not None:  # the layer blocks are searched on (and against) it
                student = {STUDENT: smallest.params[STUDENT]}
                base_metric, base_bytes = smallest.metric, smallest.bytes
            continue
        options.append(block_options(records, block, sorted(searched), base_metric, base_bytes,
                                     higher))
    chosen = combine(options, base_bytes, job.budget.max_bytes, combinations)
    enqueued = tuple({**space.defaults(), **student, **_merge(combination)}
                     for combination in chosen)
    combine_job = dataclasses.replace(job, study_name=f"{job.study_name}:combine",
                                      total=len(enqueued), fixed=dict(student),
                                      phase="combine")
    if enqueued:
        names.append(run_study(combine_job, workers, enqueue=enqueued).study_name)
    return names


def _merge(combination: Sequence[BlockOption]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for option in combination:
        merged.update(option.assignment)
    return merged

