"""Verdicts over folds (issue 16): the flare recipe over 5 region-grouped folds, timed.

    export SATCOMPRESS_DATA_DIR=/work/shared/data
    .venv/bin/python benchmarks/folds.py [FOLDS [SEEDS]]       # default 5 folds, 1 seed

Runs :func:`satcompress.pipeline.folds.run_folds` exactly as ``satcompress compress --task
flares --recipe assembled --folds 5 --budget max_bytes=85kB,max_metric_drop=tss:0.01`` does,
in two timed phases: first the per-fold base models (trained where the cache lacks them:
point ``SATCOMPRESS_CACHE_DIR`` at an empty folder to time a run from scratch), then the
recipe on every fold. Writes the run's ``folds.json`` plus the timings into
``benchmarks/results/folds.json`` (under ``"5 folds x 1 seeds"``) and prints Markdown.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from satcompress.fileio import atomic_write_text
from satcompress.pipeline.base_model import cached_base_model
from satcompress.pipeline.budget import Budget
from satcompress.pipeline.folds import FOLDS_FILE, FoldsBudgetNotMet, run_folds
from satcompress.pipeline.recipe import Recipe
from satcompress.report import markdown_table

RESULTS = Path(__file__).parent / "results" / "folds.json"
TASK, RECIPE, BUDGET = "flares", "assembled", "max_bytes=85kB,max_metric_drop=tss:0.01"


def main(folds: int = 5, n_seeds: int = 1) -> None:
    torch.set_num_threads(1)
    seeds = tuple(range(n_seeds))
    started = time.perf_counter()
    for seed in seeds:
        for fold in range(folds):
            cached_base_model(TASK, seed, fold=fold, n_folds=folds)
    base_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        try:
            result = run_folds(TASK, Recipe.load(RECIPE), Budget.parse(BUDGET), folder,
                               folds=folds, seeds=seeds)
        except FoldsBudgetNotMet as failure:
            result = failure.result
        recipe_seconds = time.perf_counter() - started - base_seconds
        written = json.loads((Path(folder) / FOLDS_FILE).read_text())
    written.update({"machine": platform.machine(), "torch": torch.__version__,
                    "base_model_seconds": base_seconds, "recipe_seconds": recipe_seconds,
                    "total_seconds": base_seconds + recipe_seconds})
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[f"{folds} folds x {n_seeds} seeds"] = written
    atomic_write_text(RESULTS, json.dumps(results, indent=2) + "\n")
    print(markdown_table(result.rows()))
    print(markdown_table(result.limits()))
    print(f"\n{result.interval.describe()}\n\nbase models {base_seconds:.0f} s, recipe runs "
          f"{recipe_seconds:.0f} s, total {base_seconds + recipe_seconds:.0f} s")


if __name__ == "__main__":
    main(*(int(argument) for argument in sys.argv[1:3]))
