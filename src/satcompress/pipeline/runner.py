"""Run a recipe on a task's base model, stage by stage, under a budget; resume if interrupted.

After every stage the model is measured (the same :class:`~satcompress.measure.Measurement`
for every stage) and checkpointed into ``out_dir/checkpoints/``. A checkpoint is a pickled
model, so it is only ever loaded when its SHA-256 matches the one this runner recorded in
``out_dir/run.json`` when it wrote it: a file the runner did not write is never unpickled.
Everything is written atomically; the input model is never modified.

The final model is then written as the flight artifact ``out_dir/model.sca`` and verified
against the in-framework model (:mod:`satcompress.pipeline.flight`); ``run.json`` records the
artifact's checksum and the checkpoint it was built from (what ``satcompress verify`` loads).

The budget decides the outcome: the artifact must meet every limit -- its size on disk for
``max_bytes``, the runtime's planned peak for ``max_ram_bytes``, the runtime's latency and
metrics -- otherwise the run fails with :class:`BudgetNotMet`, naming the closest candidate
and the limits it missed. Stage rows count theoretical bytes (stored widths) and profiled
PyTorch RAM; the table's ``counted`` column says which a row uses.
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
from satcompress.pipeline.flight import (
    ARTIFACT_FILE,
    VerifyReport,
    build_artifact,
    flight_measurement,
    task_metadata,
    verify_artifact,
)
from satcompress.pipeline.recipe import Recipe
from satcompress.report import markdown_table
from satcompress.report.comparison import ModelComparison, compare_models
from satcompress.report.document import write_report

__all__ = ["BudgetNotMet", "RunResult", "run_recipe", "load_checkpoint", "artifact_checkpoint"]

RUN_FORMAT = "satcompress-run/1"


class BudgetNotMet(RuntimeError):
    """The recipe's result breaks the budget; ``result`` holds every stage's measurement."""

    def __init__(self, message: str, result: "RunResult") -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class RunResult:
    """Measurements of the base model, of the model after each stage, and of its artifact.

    ``flight`` is the final model as its artifact delivers it (see
    :func:`satcompress.pipeline.flight.flight_measurement`): the budget's verdict is
    ``flight_violations``; ``verification`` compares the artifact with the final model.
    """

    task: str
    recipe: Recipe
    budget: Budget
    measurements: tuple[Measurement, ...]
    violations: tuple[tuple[Violation, ...], ...]
    model: nn.Module
    flight: Measurement | None = None
    flight_violations: tuple[Violation, ...] = ()
    verification: VerifyReport | None = None
    comparison: ModelComparison | None = None

    @property
    def final(self) -> Measurement:
        return self.measurements[-1]

    def rows(self) -> list[dict]:
        """One table row per stage and one for the artifact, with the limits each breaks."""
        counted = ["stored widths, torch"] * len(self.measurements)
        candidates = list(zip(self.measurements, self.violations, counted))
        if self.flight is not None:
            candidates.append((self.flight, self.flight_violations, "artifact file, runtime"))
        return [
            {**measurement.summary_row(), "counted": counted,
             "fits_budget": "yes" if not broken else "; ".join(str(v) for v in broken)}
            for measurement, broken, counted in candidates
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


def _verified_checkpoint(out_dir: Path, entry: dict) -> nn.Module | None:
    path = out_dir / entry["file"]
    if not path.is_file():
        return None
    content = path.read_bytes()
    if hashlib.sha256(content).hexdigest() != entry["sha256"]:
        return None  # not the file this runner wrote: recompute rather than unpickle it
    return torch.load(io.BytesIO(content), weights_only=False)


def _resume(out_dir: Path, run: dict, key: str) -> nn.Module | None:
    entry = run["checkpoints"].get(key)
    return None if entry is None else _verified_checkpoint(out_dir, entry)


def load_checkpoint(path: str | Path) -> nn.Module:
    """A stage checkpoint this runner wrote, e.g. ``out/checkpoints/stage3-....pt``.

    It is unpickled only if the ``run.json`` of its run folder (the checkpoint's grandparent)
    lists it with the SHA-256 of its current content; otherwise :class:`ValueError`.
    """
    path = Path(path).resolve()
    out_dir = path.parent.parent
    entries = [entry for entry in _load_run(out_dir)["checkpoints"].values()
               if (out_dir / entry["file"]).resolve() == path]
    model = _verified_checkpoint(out_dir, entries[0]) if entries else None
    if model is None:
        raise ValueError(
            f"{path} is not a checkpoint listed with its current SHA-256 in "
            f"{out_dir / 'run.json'}; satcompress unpickles only checkpoints its own runner "
            "wrote. Pass a weights-only model file (from `satcompress train`) or re-run "
            "`satcompress compress`."
        )
    return model


def artifact_checkpoint(out_dir: str | Path, checksum: str) -> Path:
    """The checkpoint the run in ``out_dir`` built its artifact (of SHA-256 ``checksum``) from.

    Raises :class:`ValueError` if the run recorded no such artifact (or no checkpoint: a
    recipe without stages ships the base model, pass that file instead).
    """
    out_dir = Path(out_dir)
    entry = _load_run(out_dir).get("artifact")
    if entry is None or entry.get("sha256") != checksum or not entry.get("checkpoint"):
        raise ValueError(
            f"{out_dir / 'run.json'} records no checkpoint for this artifact (it was not written "
            "by a `satcompress compress` run in that folder, or is not the file the run wrote); "
            "name the in-framework model with --model."
        )
    return out_dir / entry["checkpoint"]


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

    Writes ``run.json`` (checkpoint index), ``model.sca`` (the flight artifact of the final
    model), ``stages.json`` (every measurement, the artifact's measurement and verification,
    the budget verdict), ``summary.md``, ``recipe.toml`` and the report (``report.html``,
    ``report.md``, ``figures/``; :func:`satcompress.report.document.write_report`, also when
    the budget is not met) into ``out_dir``.
    ``on_stage(name)`` is called before each stage (for progress display). Raises
    :class:`BudgetNotMet` when the artifact breaks a limit.
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
    measurements, model, checkpoint = [base], trained.model, None
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
        checkpoint = run["checkpoints"][key]["file"]
        measurements.append(measured(model, name))

    artifact_path = out_dir / ARTIFACT_FILE
    build_artifact(model, example_input, task_metadata(trained.task, trained.data), artifact_path)
    verification = verify_artifact(artifact_path, model, trained.data, trained.task)
    run["artifact"] = {"file": ARTIFACT_FILE, "sha256": verification.sha256,
                       "checkpoint": checkpoint}
    atomic_write_text(out_dir / "run.json", json.dumps(run, indent=2) + "\n")
    flight = flight_measurement(measurements[-1], verification, trained.data.test.x,
                                latency_repeats)

    violations = tuple(tuple(budget.violations(m, base)) for m in measurements)
    flight_violations = tuple(budget.violations(flight, base))
    result = RunResult(trained.task.name, recipe, budget, tuple(measurements), violations, model,
                       flight, flight_violations, verification,
                       compare_models(trained.model, model, trained.data, latency_repeats))
    report = {
        "task": trained.task.name,
        "recipe": recipe.to_dict(),
        "budget": budget.to_dict(),
        "stages": [m.to_dict() for m in measurements],
        "violations": [[str(v) for v in broken] for broken in violations],
        "artifact": {"measurement": flight.to_dict(), "verification": verification.to_dict(),
                     "violations": [str(v) for v in flight_violations]},
        "fits_budget": not flight_violations,
        "data_preprocessing": trained.data.preprocessing,
    }
    atomic_write_text(out_dir / "stages.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out_dir / "summary.md", (
        f"# satcompress compress — {trained.task.name}, recipe `{recipe.name}`\n\n"
        f"{recipe.description}\n\nBudget: `{json.dumps(budget.to_dict())}`\n\n"
        + markdown_table(result.rows())
    ))
    failure = None
    if flight_violations:
        candidates = [*zip(measurements[1:], violations[1:]), (flight, flight_violations)]
        closest, broken = min(candidates, key=lambda candidate: shortfall(candidate[1]))
        missed = "; ".join(str(v) for v in broken) or (
            "within every limit by stored widths and PyTorch RAM; only the final model is "
            "written as an artifact")
        failure = (
            f"The recipe {recipe.name!r} does not meet the budget: the artifact breaks "
            f"{'; '.join(str(v) for v in flight_violations)}. Closest candidate: stage "
            f"{closest.stage} ({missed}). Loosen the budget or use a stronger "
            f"recipe; every stage's numbers are in {out_dir / 'stages.json'}."
        )
    write_report(out_dir, result, metric=trained.task.primary_metric, failure=failure)
    if failure is not None:
        raise BudgetNotMet(failure, result)
    return result
