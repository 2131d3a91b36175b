"""Run a recipe on a task's base model, stage by stage, under a budget; resume if interrupted.

After every stage the model is measured (the same :class:`~satcompress.measure.Measurement`
for every stage) and checkpointed into ``out_dir/checkpoints/``. A checkpoint is a pickled
model, so it is only ever loaded when its SHA-256 matches the one this runner recorded in
``out_dir/run.json`` when it wrote it: a file the runner did not write is never unpickled.
Everything is written atomically; the input model is never modified.

The budget decides the outcome: the final model must meet every limit, otherwise the run
fails with :class:`BudgetNotMet`, naming the closest stage and the limits it missed.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from satcompress import stages
from satcompress.fileio import atomic_write_bytes, atomic_write_text
from satcompress.measure import Measurement, measure
from satcompress.pipeline.base_model import TrainedModel
from satcompress.pipeline.budget import Budget, Violation, shortfall
from satcompress.pipeline.recipe import Recipe
from satcompress.report import markdown_table

__all__ = ["BudgetNotMet", "RunResult", "run_recipe"]

RUN_FORMAT = "satcompress-run/1"


class BudgetNotMet(RuntimeError):
    """The recipe's result breaks the budget; ``result`` holds every stage's measurement."""

    def __init__(self, message: str, result: "RunResult") -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class RunResult:
    """Measurements of the base model and of the model after each stage."""

    task: str
    recipe: Recipe
    budget: Budget
    measurements: tuple[Measurement, ...]
    violations: tuple[tuple[Violation, ...], ...]
    model: nn.Module

    @property
    def final(self) -> Measurement:
        return self.measurements[-1]

    def rows(self) -> list[dict]:
        """One table row per stage, with the limits each breaks."""
        return [
            {**measurement.summary_row(),
             "fits_budget": "yes" if not broken else "; ".join(str(v) for v in broken)}
            for measurement, broken in zip(self.measurements, self.violations)
        ]


def _checkpoint_bytes(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue()


def _stage_key(recipe: Recipe, position: int, task: str, seed: int) -> str:
    """Identity of the model after ``position`` stages: same key, same model."""
    prefix = [stages.config_to_dict(config) for config in recipe.stages[: position + 1]]
    text = json.dumps({"task": task, "seed": seed, "stages": prefix}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _load_run(out_dir: Path) -> dict:
    path = out_dir / "run.json"
    if not path.is_file():
        return {"format": RUN_FORMAT, "checkpoints": {}}
    content = json.loads(path.read_text())
    if content.get("format") != RUN_FORMAT:
        raise ValueError(f"{path} was not written by this version of satcompress; use a new --out.")
    return content


def _resume(out_dir: Path, run: dict, key: str) -> nn.Module | None:
    entry = run["checkpoints"].get(key)
    if entry is None:
        return None
    path = out_dir / entry["file"]
    if not path.is_file():
        return None
    content = path.read_bytes()
    if hashlib.sha256(content).hexdigest() != entry["sha256"]:
        return None  # not the file this runner wrote: recompute rather than unpickle it
    return torch.load(io.BytesIO(content), weights_only=False)


def run_recipe(
    trained: TrainedModel,
    recipe: Recipe,
    budget: Budget,
    out_dir: str | Path,
    *,
    seed: int = 0,
    latency_repeats: int = 200,
    on_stage=None,
) -> RunResult:
    """Apply ``recipe`` to ``trained.model`` stage by stage, measuring and checkpointing each.

    Writes ``run.json`` (checkpoint index), ``stages.json`` (every measurement and the budget
    verdict), ``summary.md`` and ``recipe.toml`` into ``out_dir``. ``on_stage(name)`` is called
    before each stage (for progress display). Raises :class:`BudgetNotMet` when the final model
    breaks a limit.
    """
    out_dir = Path(out_dir)
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    recipe.save(out_dir / "recipe.toml")
    run = _load_run(out_dir)
    example_input = torch.tensor(trained.data.test.x[:1])

    def measured(model: nn.Module, stage: str) -> Measurement:
        return measure(model, example_input, metrics=trained.task.evaluate(model, trained.data),
                       stage=stage, repeats=latency_repeats)

    base = measured(trained.model, "base")
    measurements, model = [base], trained.model
    for position, config in enumerate(recipe.stages):
        name = f"{position + 1}:{config.stage_name}"
        if on_stage is not None:
            on_stage(name)
        key = _stage_key(recipe, position, trained.task.name, seed)
        resumed = _resume(out_dir, run, key)
        if resumed is None:
            started = time.perf_counter()
            model = stages.apply(model, config, trained.data)
            content = _checkpoint_bytes(model)
            file = f"checkpoints/stage{position + 1}-{config.stage_name}.pt"
            atomic_write_bytes(out_dir / file, content)
            run["checkpoints"][key] = {"file": file, "sha256": hashlib.sha256(content).hexdigest(),
                                       "seconds": time.perf_counter() - started}
            atomic_write_text(out_dir / "run.json", json.dumps(run, indent=2) + "\n")
        else:
            model = resumed
        measurements.append(measured(model, name))

    violations = tuple(tuple(budget.violations(m, base)) for m in measurements)
    result = RunResult(trained.task.name, recipe, budget, tuple(measurements), violations, model)
    report = {
        "task": trained.task.name,
        "recipe": recipe.to_dict(),
        "budget": budget.to_dict(),
        "stages": [m.to_dict() for m in measurements],
        "violations": [[str(v) for v in broken] for broken in violations],
        "fits_budget": not violations[-1],
    }
    atomic_write_text(out_dir / "stages.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out_dir / "summary.md", (
        f"# satcompress compress — {trained.task.name}, recipe `{recipe.name}`\n\n"
        f"{recipe.description}\n\nBudget: `{json.dumps(budget.to_dict())}`\n\n"
        + markdown_table(result.rows())
    ))
    if violations[-1]:
        closest = min(range(1, len(measurements)), key=lambda i: shortfall(violations[i]))
        missed = "; ".join(str(v) for v in violations[closest])
        raise BudgetNotMet(
            f"The recipe {recipe.name!r} does not meet the budget. Closest candidate: stage "
            f"{measurements[closest].stage} ({missed}). Loosen the budget or use a stronger "
            f"recipe; every stage's numbers are in {out_dir / 'stages.json'}.",
            result,
        )
    return result
