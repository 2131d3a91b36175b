"""Pruning benchmark: every pruning stage at several strengths on both reference tasks, in one run.

    SATCOMPRESS_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/prune.py [flares] [transients]

For each task's (cached) base model: unstructured global magnitude pruning to 50/70/90%
sparsity (one-shot, and gradual along Zhu & Gupta's cubic schedule at 90%), structured pruning
to a 2x and 4x MAC reduction, and one drop-bound run (flares: validation TSS may fall by at
most 0.01; transients: validation weighted log loss may rise by at most 0.02), each followed
by short fine-tuning; a "fine-tune only" row (nothing pruned, same fine-tuning) is the
control. Every model is measured like the base model (parameters, non-zero parameters, bytes,
MACs, batch-1 latency on one thread) and scored on the test split.

Unstructured sparsity does NOT shrink the dense file: the zeros are stored as float32 like
any other weight, so ``dense_kB`` stays put and the MACs of a dense kernel do not fall.
``csr_kB`` (values + int16 column indices + int32 row pointers) and ``bitmask_kB`` (one bit
per weight + the non-zero values) are what a sparse encoding of the Linear/conv weights would
take. Writes ``benchmarks/results/prune.json`` and prints Markdown tables.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

from satcompress import stages
from satcompress.fileio import atomic_write_text
from satcompress.finetune import validation_score
from satcompress.measure import measure
from satcompress.pipeline.base_model import TrainedModel, cached_base_model
from satcompress.prune import (
    DropBoundPruneConfig,
    MagnitudePruneConfig,
    StructuredPruneConfig,
    prune_report,
    sparse_storage_bytes,
)
from satcompress.report import markdown_table

RESULTS = Path(__file__).parent / "results" / "prune.json"
FINETUNE_EPOCHS = {"flares": 3, "transients": 2}
"""Fine-tuning epochs after pruning (short: the base models trained for up to 40; a t2 epoch
costs several times a flare epoch, hence fewer)."""
DROP_BOUNDS = {"flares": ("tss", 0.01), "transients": ("weighted_log_loss", 0.02)}
SHOWN_METRICS = {"flares": ("tss", "hss"), "transients": ("weighted_log_loss", "macro_f1")}


def variants(task_name: str) -> list[tuple[str, stages.StageConfig]]:
    """(label, config) of every pruned model the benchmark builds for a task."""
    metric, max_drop = DROP_BOUNDS[task_name]
    epochs = FINETUNE_EPOCHS[task_name]
    return [
        # control: the same fine-tuning with nothing pruned, to separate its effect from pruning's
        ("fine-tune only", MagnitudePruneConfig(sparsity=0.0, finetune_epochs=epochs)),
        *((f"magnitude {sparsity:.0%}", MagnitudePruneConfig(
            sparsity=sparsity, finetune_epochs=epochs)) for sparsity in (0.5, 0.7, 0.9)),
        ("magnitude 90% gradual", MagnitudePruneConfig(
            sparsity=0.9, pruning_steps=epochs, finetune_epochs=1)),
        *((f"structured {reduction:g}x MACs", StructuredPruneConfig(
            mac_reduction=reduction, finetune_epochs=epochs)) for reduction in (2.0, 4.0)),
        (f"drop bound {metric} {max_drop:g}", DropBoundPruneConfig(
            metric=metric, max_drop=max_drop, ratio_grid=(0.9, 0.75, 0.5, 0.25),
            finetune_epochs=1)),
    ]


def row(label: str, model: torch.nn.Module, trained: TrainedModel, seconds: float) -> dict:
    """One table row: size, sparse-encoding bytes, MACs, latency and test metrics."""
    example = torch.from_numpy(trained.data.test.x[:1])
    metrics = trained.task.evaluate(model, trained.data)
    summary = measure(model, example, metrics=metrics, stage=label).summary_row()
    sparse = sparse_storage_bytes(model)
    return {
        "stage": label,
        "params": summary["params"],
        "nonzero": summary["nonzero"],
        "dense_kB": summary["theoretical_kB"],
        "csr_kB": round(sparse["csr_bytes"] / 1000, 1),
        "bitmask_kB": round(sparse["bitmask_bytes"] / 1000, 1),
        "MACs": summary["MACs"],
        "p50_ms": summary["p50_ms"],
        **{name: round(metrics[name], 4) for name in SHOWN_METRICS[trained.task.name]},
        "stage_s": round(seconds, 1),
    }


def main(task_names: list[str]) -> None:
    results = {"machine": platform.processor() or platform.machine(),
               "torch": torch.__version__, "finetune_epochs": FINETUNE_EPOCHS, "tasks": {}}
    for name in task_names:
        trained = cached_base_model(name, seed=0, progress=True)
        rows = [row("base", trained.model, trained, 0.0)]
        runs = {}
        for label, config in variants(name):
            started = time.perf_counter()
            model = stages.apply(trained.model, config, trained.data)
            rows.append(row(label, model, trained, time.perf_counter() - started))
            runs[label] = {"config": stages.config_to_dict(config), "report": prune_report(model)}
            print(f"{name}: {label} done", file=sys.stderr, flush=True)
        base_macs = rows[0]["MACs"]
        for entry in rows:
            entry["MAC_reduction"] = round(base_macs / entry["MACs"], 2)
        metric, _ = DROP_BOUNDS[name]
        results["tasks"][name] = {
            "rows": rows, "runs": runs,
            "base_val_score": {metric: validation_score(trained.model, trained.data, metric)},
        }
        drop_bound = next(run["report"] for label, run in runs.items() if label.startswith("drop"))
        print(f"\n## {name}\n")
        print(markdown_table(rows))
        print(f"Drop bound: validation {metric} {drop_bound['base_val_score']:.4f} -> "
              f"{drop_bound['final_val_score']:.4f} (allowed drop {drop_bound['max_drop']}); "
              "ratios found: " + ", ".join(f"{group} {ratio:.2f}"
                                           for group, ratio in drop_bound["ratios"].items()))
    atomic_write_text(RESULTS, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or ["flares", "transients"])
