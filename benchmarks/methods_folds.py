"""Every method family over grouped folds (issue 16): one setting per family, mean +- sd.

    export SATCOMPRESS_DATA_DIR=/work/shared/data
    .venv/bin/python benchmarks/methods_folds.py [--task flares] [--folds 5] [--seeds 1]

The single-split method benchmarks (``quantize.py``, ``prune.py``, ``distill.py``,
``cluster_lowrank.py``) compare many settings of each family on the task's default split.
This one runs each family's representative setting as a one-stage recipe through
:func:`satcompress.pipeline.folds.run_folds`, exactly as ``satcompress compress --folds K
--seeds S --recipe FILE`` would (each run with the fold's own cached base model), plus the
shipped multi-stage recipes, and reports per method the test metric (mean +- sd over the
runs), its drop from the base with the paired 95 % interval (Nadeau & Bengio's corrected
t-interval over runs), whether the interval excludes 0, and the artifact bytes (mean, worst).
Writes ``benchmarks/results/methods_folds.json`` (under ``TASK K folds x S seeds``) and prints
Markdown.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from satcompress import stages
from satcompress.fileio import atomic_write_text
from satcompress.pipeline.budget import Budget
from satcompress.pipeline.folds import run_folds
from satcompress.pipeline.recipe import Recipe
from satcompress.report import markdown_table
from satcompress.tasks.registry import get_task

RESULTS = Path(__file__).parent / "results" / "methods_folds.json"
STAGES = stages.load_builtin_stages()
METHODS: dict[str, tuple[tuple[str, dict], ...]] = {
    "PTQ int8 (weights per channel, activations uint8)": (
        ("post_training_quantize", {"weight_bits": 8, "quantize_activations": True}),),
    "QAT int4 weights": (
        ("quantization_aware_train", {"weight_bits": 4, "quantize_activations": False}),),
    "magnitude pruning 90 %, gradual (3 steps)": (
        ("magnitude_prune", {"sparsity": 0.9, "pruning_steps": 3}),),
    "structured pruning 2x MACs (Taylor)": (
        ("structured_prune", {"mac_reduction": 2.0, "importance": "taylor"}),),
    "Hinton KD to 1/10 of the parameters": (
        ("hinton_kd", {"target_parameter_fraction": 0.1}),),
    "DynamicKD to 1/10 of the parameters": (
        ("dynamic_kd", {"target_parameter_fraction": 0.1}),),
    "weight clustering, 16 values per matrix": (("weight_cluster", {"n_clusters": 16}),),
    "low rank, 90 % of each layer's spectral energy": (
        ("low_rank", {"rank_by": "energy", "energy": 0.9}),),
}
"""Method -> its stages (registered name, settings): one family's representative setting."""
SHIPPED = ("general", "deep-compression")
"""Shipped recipes run beside the single methods (the task's own tuned one is added)."""


def _summary(result, metric: str) -> dict:
    values = np.array([run.values(metric) for run in result.runs])
    sizes = [run.result.flight.theoretical_bytes for run in result.runs]
    interval = result.interval
    return {
        f"base {metric}": float(values[:, 0].mean()),
        f"{metric} mean": float(values[:, 1].mean()), f"{metric} sd": float(values[:, 1].std(ddof=1)),
        "drop mean": float(np.mean(result.drops())),
        "drop 95% low": interval.low, "drop 95% high": interval.high,
        "excludes 0": "yes" if interval.distinguishable else "no",
        "bytes mean": round(float(np.mean(sizes))), "bytes worst": int(max(sizes)),
    }


def main(task_name: str, folds: int, n_seeds: int) -> None:
    torch.set_num_threads(1)
    task = get_task(task_name)
    recipes = [Recipe(name, tuple(STAGES[stage](**settings) for stage, settings in stage_list),
                      description=name) for name, stage_list in METHODS.items()]
    recipes += [Recipe.load(name) for name in (*SHIPPED, task.recipe)]
    rows, seeds = [], tuple(range(n_seeds))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        for position, recipe in enumerate(recipes):
            begun = time.perf_counter()
            result = run_folds(task_name, recipe, Budget(), Path(scratch) / f"method{position}",
                               folds=folds, seeds=seeds, latency_repeats=20)
            rows.append({"method": recipe.name, **_summary(result, task.primary_metric),
                         "seconds": round(time.perf_counter() - begun)})
            print(f"{recipe.name}: {rows[-1]}", flush=True)
    key = f"{task_name} {folds} folds x {n_seeds} seeds"
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    previous[key] = {"rows": rows, "seconds": round(time.perf_counter() - started),
                     "machine": platform.processor() or platform.machine(),
                     "torch": torch.__version__}
    RESULTS.parent.mkdir(exist_ok=True)
    atomic_write_text(RESULTS, json.dumps(previous, indent=2) + "\n")
    print(f"\n### {key}\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="flares")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=1)
    arguments = parser.parse_args()
    main(arguments.task, arguments.folds, arguments.seeds)
