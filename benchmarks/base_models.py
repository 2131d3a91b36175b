"""Measure both reference tasks' base models beside their classical baselines, in one run.

    SATCOMPRESS_DATA_DIR=../shared/data .venv/bin/python benchmarks/base_models.py

Trains (or reuses the cached) base model of each task, measures it (parameters, bytes, MACs,
peak RAM, batch-1 latency with one thread) and scores it on the test split, then fits the
classical baseline on the same split. Writes ``benchmarks/results/base_models.json`` and
prints a Markdown table for ``benchmarks/README.md``.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch

from satcompress.fileio import atomic_write_text
from satcompress.measure import measure
from satcompress.pipeline.base_model import cached_base_model
from satcompress.report import markdown_table

RESULTS = Path(__file__).parent / "results" / "base_models.json"


def main(task_names: list[str]) -> None:
    results = {"machine": platform.processor() or platform.machine(),
               "torch": torch.__version__, "tasks": {}}
    for name in task_names:
        trained = cached_base_model(name, seed=0, progress=True)
        example = torch.from_numpy(trained.data.test.x[:1])
        measurement = measure(trained.model, example, metrics=trained.metrics, stage="base")
        results["tasks"][name] = {
            "measurement": measurement.to_dict(),
            "baseline": trained.task.baseline(trained.data, seed=0, model=trained.model),
            "split_sizes": {part: len(getattr(trained.data, part)) for part in ("train", "val", "test")},
            "preprocessing_skips": {k: v for k, v in trained.data.preprocessing.items()
                                    if "skip" in k},
        }
        print(f"\n## {name}\n")
        print(markdown_table([measurement.summary_row()]))
        print(markdown_table([{"baseline": k, "value": v}
                              for k, v in results["tasks"][name]["baseline"].items()]))
    atomic_write_text(RESULTS, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or ["flares", "transients"])
