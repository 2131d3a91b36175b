"""Distillation benchmark: students at 1/4 and 1/10 of each base model, four ways, in one run.

    export SATCOMPRESS_DATA_DIR=/work/shared/data
    .venv/bin/python benchmarks/distill.py [flares] [transients]

For each task's (cached) base model, the teacher, a student of the same architecture is built
at about 1/4 and 1/10 of its parameters (width scaled, depth kept:
:func:`satcompress.distill.width_multiplier_for_fraction`) and trained from the same seed
(a) on the labels alone (``hinton_kd`` with ``alpha=0``), (b) with Hinton KD, (c) with FitNets
hints then KD, (d) with DynamicKD. Every student is measured like the base model
(parameters, bytes, MACs, batch-1 latency on one thread) and scored on the test split.

Training is short so that the whole run takes about 13 minutes on 2 CPU cores with the base
models cached (plus about 4 minutes to train them on a first run): students train for at most
:data:`SETTINGS` epochs with early stopping (flares 20, patience 6: about 5-17 s per student;
transients 25, patience 8: about 45-90 s per student, their 100-step forward passes costing
far more per example). The base models trained for up to 40 epochs. Writes
``benchmarks/results/distill.json`` (after each task) and prints Markdown tables.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

from satcompress import stages
from satcompress.distill import DynamicKDConfig, FitNetsConfig, HintonKDConfig, distill_report
from satcompress.fileio import atomic_write_text
from satcompress.measure import measure
from satcompress.pipeline.base_model import TrainedModel, cached_base_model
from satcompress.report import markdown_table

RESULTS = Path(__file__).parent / "results" / "distill.json"
FRACTIONS = {"1/4": 0.25, "1/10": 0.1}
SETTINGS = {
    "flares": {"epochs": 20, "hint_epochs": 3, "batch_size": 128, "learning_rate": 2e-3,
               "weight_decay": 1e-2, "patience_epochs": 6},
    "transients": {"epochs": 25, "hint_epochs": 3, "batch_size": 64, "learning_rate": 2e-3,
                   "weight_decay": 1e-4, "patience_epochs": 8},
}
"""Training settings of the students (the rest are the stage defaults: T = 4, alpha = 0.9)."""
SHOWN_METRICS = {"flares": ("tss", "hss"), "transients": ("weighted_log_loss", "macro_f1")}


def variants(task_name: str) -> list[tuple[str, stages.StageConfig]]:
    """(label, config) of every student the benchmark trains for a task."""
    settings = SETTINGS[task_name]
    training = {key: value for key, value in settings.items() if key != "hint_epochs"}
    configs = []
    for label, fraction in FRACTIONS.items():
        common = {"target_parameter_fraction": fraction, **training}
        configs += [
            (f"{label} no teacher", HintonKDConfig(alpha=0.0, **common)),
            (f"{label} hinton_kd", HintonKDConfig(**common)),
            (f"{label} fitnets", FitNetsConfig(hint_epochs=settings["hint_epochs"], **common)),
            (f"{label} dynamic_kd", DynamicKDConfig(**common)),
        ]
    return configs


def row(label: str, model: torch.nn.Module, trained: TrainedModel, seconds: float) -> dict:
    """One table row: size, MACs, latency and test metrics."""
    example = torch.from_numpy(trained.data.test.x[:1])
    metrics = trained.task.evaluate(model, trained.data)
    summary = measure(model, example, metrics=metrics, stage=label).summary_row()
    return {
        "stage": label,
        "params": summary["params"],
        "serialized_kB": summary["serialized_kB"],
        "theoretical_kB": summary["theoretical_kB"],
        "MACs": summary["MACs"],
        "p50_ms": summary["p50_ms"],
        **{name: round(metrics[name], 4) for name in SHOWN_METRICS[trained.task.name]},
        "train_s": round(seconds, 1),
    }


def main(task_names: list[str]) -> None:
    results = {"machine": platform.processor() or platform.machine(),
               "torch": torch.__version__, "settings": SETTINGS, "tasks": {}}
    for name in task_names:
        trained = cached_base_model(name, seed=0, progress=True)
        rows = [row("base (teacher)", trained.model, trained, 0.0)]
        runs = {}
        for label, config in variants(name):
            started = time.perf_counter()
            student = stages.apply(trained.model, config, trained.data)
            rows.append(row(label, student, trained, time.perf_counter() - started))
            runs[label] = {"config": stages.config_to_dict(config),
                           "report": distill_report(student)}
            print(f"{name}: {label} done in {rows[-1]['train_s']} s", file=sys.stderr, flush=True)
        for entry in rows:
            entry["param_fraction"] = round(entry["params"] / rows[0]["params"], 3)
        results["tasks"][name] = {"rows": rows, "runs": runs}
        atomic_write_text(RESULTS, json.dumps(results, indent=2) + "\n")
        print(f"\n## {name}\n")
        print(markdown_table(rows))


if __name__ == "__main__":
    main(sys.argv[1:] or ["flares", "transients"])
