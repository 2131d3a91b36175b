"""The main job on a reference task: base model, measurements, baseline, written to ``out/``.

Each entry of the stage list is measured the same way; later compression stages append to it,
so the report, the JSON and the table grow without changing this structure.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from satcompress.fileio import atomic_write_text
from satcompress.measure import Measurement, measure
from satcompress.pipeline.base_model import cached_base_model
from satcompress.report import markdown_table

__all__ = ["run_demo", "summary_markdown"]


def summary_markdown(result: dict) -> str:
    """A short Markdown report of a demo run."""
    stages = [Measurement.from_dict(stage).summary_row() for stage in result["stages"]]
    baseline = [{"baseline": key, "value": value} for key, value in result["baseline"].items()]
    return (
        f"# satcompress — {result['task']}\n\n"
        f"{result['description']}\n\n"
        f"Seed {result['seed']}; model file `{result['model_file']}`; "
        f"primary metric `{result['primary_metric']}` on the test split.\n\n"
        "## Stages\n\n" + markdown_table(stages) + "\n"
        "## Classical baseline (same split)\n\n" + markdown_table(baseline)
    )


def run_demo(out_dir: str | Path, task_name: str = "flares", seed: int = 0,
             progress: bool = True) -> dict:
    """Train (or reuse) the base model, measure it and write ``measurement.json`` and
    ``summary.md`` into ``out_dir/<task>/`` atomically."""
    trained = cached_base_model(task_name, seed=seed, progress=progress)
    example_input = torch.from_numpy(trained.data.test.x[:1])
    stages = [measure(trained.model, example_input, metrics=trained.metrics, stage="base")]
    result: dict = {
        "task": trained.task.name,
        "description": trained.task.description,
        "seed": seed,
        "primary_metric": trained.task.primary_metric,
        "model_file": str(trained.path),
        "preprocessing": trained.data.preprocessing,
        "baseline": trained.task.baseline(trained.data, seed=seed, model=trained.model),
        "stages": [stage.to_dict() for stage in stages],
    }
    task_dir = Path(out_dir) / trained.task.name
    atomic_write_text(task_dir / "measurement.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(task_dir / "summary.md", summary_markdown(result))
    return result
