"""The pipeline issue's targets: each task's tuned recipe under its budget, end to end, in one run.

    export SATCOMPRESS_DATA_DIR=/work/shared/data
    .venv/bin/python benchmarks/targets.py [flares] [transients]

For each task the shipped recipe (:data:`TARGETS`) runs through
:func:`satcompress.pipeline.runner.run_recipe` exactly as ``satcompress compress`` runs it: every
stage measured and checkpointed, the final model written as the flight artifact ``model.sca``,
verified against the in-framework model on the whole test split, and the budget checked on the
artifact (its size on disk counts for ``max_bytes``). The budget is the target itself:

* flares: at most 1% of the float32 base model's bytes, test TSS at most 0.01 below the base
  model's (and, checked here, not below the logistic-regression baseline's);
* transients: at least 30x fewer bytes than the float32 base, weighted log loss at most
  0.02 above the base model's.

Test metrics of single runs are noisy (the flare test split holds 74 flaring regions: one more
or one fewer caught moves TSS by 0.0135; the transient test split has 350 objects), so the
recipe is also re-run with :data:`REPEAT_SEEDS` as every stage's seed (same base model, same
split) and the spread reported. Writes ``benchmarks/results/targets.json`` and prints Markdown.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from satcompress.fileio import atomic_write_text
from satcompress.measure import theoretical_bytes
from satcompress.pipeline.base_model import cached_base_model
from satcompress.pipeline.budget import Budget
from satcompress.pipeline.recipe import Recipe
from satcompress.pipeline.runner import BudgetNotMet, run_recipe
from satcompress.report import markdown_table

RESULTS = Path(__file__).parent / "results" / "targets.json"
BASELINES = Path(__file__).parent / "results" / "base_models.json"
TARGETS = {
    "flares": {"recipe": "assembled", "max_bytes_fraction": 0.01, "metric": "tss",
               "max_drop": 0.01},
    "transients": {"recipe": "assembled-t2", "max_bytes_fraction": 1 / 30,
                   "metric": "weighted_log_loss", "max_drop": 0.02},
}
REPEAT_SEEDS = (1, 2)
"""Stage seeds of the repeat runs (seed 0 is the main run, the shipped recipe as it is)."""


def reseeded(recipe: Recipe, seed: int) -> Recipe:
    """``recipe`` with every stage's ``seed`` set to ``seed`` (stages without one unchanged)."""
    stages_ = tuple(
        dataclasses.replace(config, seed=seed) if hasattr(config, "seed") else config
        for config in recipe.stages
    )
    return dataclasses.replace(recipe, name=f"{recipe.name} (seed {seed})", stages=stages_)


def run_target(task_name: str, seed: int, out_root: Path) -> dict:
    """One run of the task's recipe under its target budget; the numbers that decide it."""
    target = TARGETS[task_name]
    trained = cached_base_model(task_name)
    base_bytes = theoretical_bytes(trained.model)
    # The targets are compression ratios, set and measured without Reed-Solomon parity (on by
    # default: 3.3 % more bytes, see the README); this reproduces them.
    recipe = dataclasses.replace(Recipe.load(target["recipe"]), fec=False)
    if seed:
        recipe = reseeded(recipe, seed)
    budget = Budget(max_bytes=int(base_bytes * target["max_bytes_fraction"]),
                    max_metric_drop=((target["metric"], target["max_drop"]),))
    started = time.perf_counter()
    try:
        result, missed = run_recipe(trained, recipe, budget, out_root / f"{task_name}-{seed}"), ""
    except BudgetNotMet as failure:
        result, missed = failure.result, "; ".join(str(v) for v in failure.result.flight_violations)
    seconds = time.perf_counter() - started
    flight, verification = result.flight, result.verification
    metric = target["metric"]
    return {
        "task": task_name,
        "recipe": target["recipe"],
        "seed": seed,
        "budget": budget.to_dict(),
        "base_bytes": base_bytes,
        "artifact_bytes": flight.theoretical_bytes,
        "percent_of_base": 100 * flight.theoretical_bytes / base_bytes,
        "ratio": base_bytes / flight.theoretical_bytes,
        "base_metric": result.measurements[0].metrics[metric],
        "metric": flight.metrics[metric],
        "differing_predictions": verification.differing_predictions,
        "max_logit_difference": verification.max_abs_logit_difference,
        "fits_budget": not missed,
        "missed": missed,
        "seconds": seconds,
        "stages": result.rows(),
    }


def main(task_names: list[str]) -> None:
    torch.set_num_threads(1)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results.update({"machine": platform.machine(), "torch": torch.__version__})
    baselines = json.loads(BASELINES.read_text())["tasks"]
    with tempfile.TemporaryDirectory() as folder:
        for task_name in task_names:
            runs = [run_target(task_name, seed, Path(folder)) for seed in (0, *REPEAT_SEEDS)]
            if task_name == "flares":
                for run in runs:
                    run["classical_baseline_tss"] = baselines["flares"]["baseline"]["logreg_tss"]
            results.setdefault("tasks", {})[task_name] = runs
            atomic_write_text(RESULTS, json.dumps(results, indent=2) + "\n")
            print(f"\n## {task_name}\n")
            print(markdown_table(runs[0]["stages"]))
            print(markdown_table([
                {key: run[key] for key in ("seed", "artifact_bytes", "percent_of_base", "ratio",
                                           "base_metric", "metric", "differing_predictions",
                                           "fits_budget", "missed", "seconds")}
                for run in runs
            ]))


if __name__ == "__main__":
    main(sys.argv[1:] or list(TARGETS))
