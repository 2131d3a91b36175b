"""Run a recipe on a task's base model, stage by stage, under a budget; resume if interrupted.

After every stage the model is measured (the same :class:`~satcompress.measure.Measurement`
for every stage) and checkpointed into ``out_dir/checkpoints/`` as tensors and plain JSON
(:mod:`satcompress.pipeline.checkpoint`): reading a checkpoint never runs code, whoever wrote
it. ``out_dir/run.json`` indexes the checkpoints by the recipe prefix they result from; a
re-run resumes from them (one whose SHA-256 no longer matches, or that cannot be read, is
recomputed). The input model is never modified.

The final model is then written as the flight artifact and verified against the in-framework
model (:mod:`satcompress.pipeline.flight`). The budget decides where it goes: the artifact
must meet every limit -- its size on disk for ``max_bytes``, the runtime's planned peak for
``max_ram_bytes``, the runtime's latency and metrics -- to be written as ``out_dir/model.sca``;
otherwise it is written as ``out_dir/rejected/model.sca`` and the run fails with
:class:`BudgetNotMet`, naming the closest candidate and the limits it missed. Stage rows count
theoretical bytes (stored widths) and profiled PyTorch RAM; the table's ``counted`` column says
which a row uses.

A run's outputs are committed together: every file is written atomically, the artifact is
moved into place after ``stages.json`` and the report, and ``run.json`` is rewritten last with
the SHA-256 of every output (its ``outputs``): a run folder whose ``run.json`` has no
``outputs`` is an interrupted run, whatever files it holds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from satcompress import runtime, stages
from satcompress.fileio import atomic_write_bytes, atomic_write_text, file_sha256, move_into_place
from satcompress.firmware.targets import Target
from satcompress.measure import Measurement, measure
from satcompress.measure.uncertainty import DropInterval, split_drop_interval
from satcompress.pipeline.base_model import TrainedModel
from satcompress.pipeline.budget import SDC_METRIC, Budget, shortfall
from satcompress.pipeline.checkpoint import (
    CheckpointError,
    checkpoint_bytes,
    foreign_classes,
    model_from_checkpoint,
)
from satcompress.pipeline.flight import (
    ARTIFACT_FILE,
    NumpyModule,
    build_artifact,
    flight_measurement,
    task_metadata,
    verify_artifact,
)
from satcompress.pipeline.firmware import firmware_measurement
from satcompress.pipeline.recipe import Recipe
from satcompress.pipeline.result import BudgetNotMet, RunResult
from satcompress.radiation import protect_artifact, sdc_probability
from satcompress.report import markdown_table
from satcompress.report.comparison import compare_models
from satcompress.report.document import write_report
from satcompress.training import predict_proba

__all__ = ["REJECTED_ARTIFACT", "SKILL_KEPT_FRACTION", "BudgetNotMet", "RunResult",
           "artifact_checkpoint", "load_checkpoint", "run_recipe", "skill_warnings"]

RUN_FORMAT = "satcompress-run/2"
REJECTED_ARTIFACT = f"rejected/{ARTIFACT_FILE}"
"""Where an artifact that breaks the budget is written (never where a fitting one would be)."""
_STAGING_ARTIFACT = f".staging/{ARTIFACT_FILE}"
_MAX_RUN_JSON_BYTES = 16 << 20


def _stage_key(recipe: Recipe, position: int, task: str, seed: int) -> str:
    """Identity of the model after ``position`` stages: same key, same model."""
    prefix = [stages.config_to_dict(config) for config in recipe.stages[: position + 1]]
    text = json.dumps({"task": task, "seed": seed, "stages": prefix}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _load_run(out_dir: Path) -> dict:
    """``out_dir/run.json`` (checked: it is read from a folder anyone may have written)."""
    path = out_dir / "run.json"
    if not path.is_file():
        return {"format": RUN_FORMAT, "checkpoints": {}}
    problem = f"{path} is not a run index written by this version of satcompress"
    if path.stat().st_size > _MAX_RUN_JSON_BYTES:
        raise ValueError(f"{problem} (over {_MAX_RUN_JSON_BYTES >> 20} MiB); use a new --out.")
    try:
        content = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ValueError(f"{problem} (not JSON); use a new --out.") from None
    entries = content.get("checkpoints") if isinstance(content, dict) else None
    if (not isinstance(entries, dict) or content.get("format") != RUN_FORMAT
            or not all(_is_checkpoint_entry(entry) for entry in entries.values())):
        raise ValueError(f"{problem}; use a new --out.")
    return content


def _is_checkpoint_entry(entry: object) -> bool:
    """A ``{"file": "checkpoints/NAME.pt", "sha256": HEX, ...}`` entry inside the run folder."""
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        return False
    file = entry.get("file")
    return (isinstance(file, str) and file.startswith("checkpoints/") and file.endswith(".pt")
            and "/" not in file[len("checkpoints/"):] and ".." not in file)


def _resume(out_dir: Path, run: dict, key: str, trusted: tuple[type, ...]) -> nn.Module | None:
    """The checkpoint recorded for ``key``, or None where it is missing, changed or unreadable."""
    entry = run["checkpoints"].get(key)
    path = None if entry is None else out_dir / entry["file"]
    if path is None or not path.is_file():
        return None
    content = path.read_bytes()
    if hashlib.sha256(content).hexdigest() != entry["sha256"]:
        return None  # not the file this runner wrote: recompute it
    try:
        return model_from_checkpoint(content, trusted)
    except CheckpointError:
        return None


def load_checkpoint(path: str | Path, trusted_classes: tuple[type, ...] = ()) -> nn.Module:
    """A stage checkpoint written by :func:`run_recipe`, e.g. ``out/checkpoints/stage3-....pt``.

    The file is read as tensors and plain data and the model rebuilt from its recorded layers
    (:func:`~satcompress.pipeline.checkpoint.model_from_checkpoint`; a user's own layer classes
    only when given as ``trusted_classes``): nothing in it is run.

    Raises
    ------
    ValueError
        If the file is missing or not a satcompress checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Checkpoint {path} does not exist.")
    try:
        return model_from_checkpoint(path.read_bytes(), trusted_classes)
    except CheckpointError as error:
        raise ValueError(
            f"{path} is not a satcompress stage checkpoint ({error}). Pass a weights-only model "
            "file (from `satcompress train`) or a checkpoint `satcompress compress` wrote."
        ) from None


def artifact_checkpoint(out_dir: str | Path, checksum: str) -> Path:
    """The checkpoint the run in ``out_dir`` built its artifact (of SHA-256 ``checksum``) from.

    Raises :class:`ValueError` if the run recorded no such artifact (or no checkpoint: a
    recipe without stages ships the base model, pass that file instead), or if the checkpoint
    changed since the run wrote it.
    """
    out_dir = Path(out_dir)
    run = _load_run(out_dir)
    entry = run.get("artifact")
    file = entry.get("checkpoint") if isinstance(entry, dict) else None
    recorded = [checkpoint["sha256"] for checkpoint in run["checkpoints"].values()
                if checkpoint["file"] == file]
    if not recorded or entry.get("sha256") != checksum:
        raise ValueError(
            f"{out_dir / 'run.json'} records no checkpoint for this artifact (it was not written "
            "by a `satcompress compress` run in that folder, or is not the file the run wrote); "
            "name the in-framework model with --model."
        )
    path = out_dir / file
    if not path.is_file() or file_sha256(path) != recorded[0]:
        raise ValueError(f"{path} is missing or changed since the run wrote it; re-run "
                         "`satcompress compress` with the same --out to rebuild it.")
    return path


def _start_run(out_dir: Path) -> dict:
    """The run index with its commit record removed, and no artifact left from an earlier run.

    From here until :func:`_commit_run`, the folder holds an uncommitted run.
    """
    run = _load_run(out_dir)
    for key in ("artifact", "outputs"):
        run.pop(key, None)
    _write_run(out_dir, run)
    for stale in (ARTIFACT_FILE, REJECTED_ARTIFACT):
        (out_dir / stale).unlink(missing_ok=True)
    return run


def _commit_run(out_dir: Path, run: dict, artifact_file: str) -> None:
    """Move the verified artifact into place, then write ``run.json`` listing every output."""
    move_into_place(out_dir / _STAGING_ARTIFACT, out_dir / artifact_file)
    (out_dir / _STAGING_ARTIFACT).parent.rmdir()
    run["outputs"] = {
        path.relative_to(out_dir).as_posix(): file_sha256(path)
        for path in sorted(out_dir.rglob("*"))
        if path.is_file() and path.relative_to(out_dir).parts[0] != "checkpoints"
        and path.name != "run.json" and not path.name.startswith(".")
    }
    _write_run(out_dir, run)


def _write_run(out_dir: Path, run: dict) -> None:
    atomic_write_text(out_dir / "run.json", json.dumps(run, indent=2) + "\n")


def _names_layers(config: stages.StageConfig) -> bool:
    """Whether a stage's settings name layers (``exclude``, ``skip_layers``, ...)."""
    return any(isinstance(value, tuple) and value and all(isinstance(v, str) for v in value)
               for value in vars(config).values())


def _drop_interval(trained: TrainedModel, artifact: Path, base: Measurement, seed: int
                   ) -> DropInterval | None:
    """The primary metric's drop from the base model to the artifact on the test split, with
    its paired bootstrap interval over test groups (None where the base measurement lacks
    that metric: a task whose evaluation scores others)."""
    if trained.task.primary_metric not in base.metrics:
        return None
    flight = NumpyModule(runtime.load(artifact).run)
    return split_drop_interval(trained.task, trained.data,
                               lambda x: predict_proba(trained.model, x),
                               lambda x: predict_proba(flight, x), seed=seed)


SKILL_KEPT_FRACTION = 0.5
"""A stage keeping less than this fraction of the base model's skill over chance (its primary
metric's margin over :meth:`~satcompress.tasks.registry.Task.chance`) is warned about."""


def skill_warnings(trained: TrainedModel, recipe: Recipe,
                   measurements: list[Measurement]) -> tuple[str, ...]:
    """A warning for the first stage that lost most of the base model's skill over chance
    (kept less than :data:`SKILL_KEPT_FRACTION` of it); empty where none did, or where the
    base model itself is no better than chance."""
    metric, task = trained.task.primary_metric, trained.task
    try:
        chance = float(task.chance(trained.data)[metric])
    except (KeyError, ValueError, ZeroDivisionError):  # a metric undefined for one class
        return ()
    sign = 1.0 if task.higher_is_better else -1.0
    base = measurements[0].metrics.get(metric, float("nan"))
    skill = sign * (base - chance)
    if not skill > 0:
        return ()
    for measured in measurements[1:]:
        value = measured.metrics.get(metric, float("nan"))
        if sign * (value - chance) < SKILL_KEPT_FRACTION * skill:
            return (f"Stage {measured.stage} lost most of the base model's skill: {metric} "
                    f"{value:.4g} against the base's {base:.4g}, where a model that learnt "
                    f"nothing (the training classes' frequencies for every example) scores "
                    f"{chance:.4g}. The recipe {recipe.name!r} is too strong for this model: "
                    "use a milder one (the `general` recipe, or `int8`), or give a budget "
                    f"with max_metric_drop={metric}:... so that such a result is refused.",)
    return ()


def run_recipe(
    trained: TrainedModel,
    recipe: Recipe,
    budget: Budget,
    out_dir: str | Path,
    *,
    seed: int = 0,
    latency_repeats: int = 200,
    on_stage=None,
    target: Target | None = None,
) -> RunResult:
    """Apply ``recipe`` to ``trained.model`` stage by stage, measuring and checkpointing each.

    Writes ``run.json`` (checkpoint index, then the commit record), ``model.sca`` (the flight
    artifact of the final model; ``rejected/model.sca`` when it breaks the budget),
    ``stages.json`` (every measurement, the artifact's measurement and verification,
    the budget verdict, the primary metric's drop with its paired bootstrap interval over test
    groups, :func:`satcompress.measure.uncertainty.split_drop_interval`), ``summary.md``,
    ``recipe.toml`` and the report (``report.html``, ``report.md``, ``figures/``;
    :func:`satcompress.report.document.write_report`, also when the budget is not met) into
    ``out_dir``.
    With a ``target`` profile the artifact's C is exported to ``firmware/`` and the verdict
    on bytes and RAM uses the built firmware's flash and RAM
    (:func:`satcompress.pipeline.firmware.firmware_measurement`).
    ``on_stage(name)`` is called before each stage (for progress display). The stages' checks
    (:func:`satcompress.stages.check`) run on the base model first -- the first stage's, and
    every later one that names no layers (a later stage may name layers an earlier one makes)
    -- so a stage that cannot run on this kind of model refuses the recipe (``ValueError``)
    before any training. Raises
    :class:`BudgetNotMet` when the artifact breaks a limit.
    """
    out_dir = Path(out_dir)
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    run = _start_run(out_dir)
    recipe.save(out_dir / "recipe.toml")
    example_input = torch.tensor(trained.data.test.x[:1])

    def measured(model: nn.Module, stage: str) -> Measurement:
        return measure(model, example_input, metrics=trained.task.evaluate(model, trained.data),
                       stage=stage, repeats=latency_repeats)

    trusted = foreign_classes(trained.model)  # a user's own layers, held in this process
    for position, config in enumerate(recipe.stages):  # before any training time is spent
        if position and _names_layers(config):
            continue  # layers an earlier stage makes (e.g. a factorised pair): checked at apply
        reason = stages.check(trained.model, config, trained.data)
        if reason is not None:
            raise ValueError(f"The recipe {recipe.name!r} cannot run on this model: stage "
                             f"{position + 1} ({reason}). Choose a recipe without it.")
    base = measured(trained.model, "base")
    measurements, model, checkpoint = [base], trained.model, None
    for position, config in enumerate(recipe.stages):
        name = f"{position + 1}:{config.stage_name}"
        if on_stage is not None:
            on_stage(name)
        key = _stage_key(recipe, position, trained.task.name, seed)
        resumed = _resume(out_dir, run, key, trusted)
        if resumed is None:
            started = time.perf_counter()
            model = stages.apply(model, config, trained.data)
            try:
                content = checkpoint_bytes(model)
            except CheckpointError as error:  # e.g. a user's layer holding a function
                warnings.warn(f"Stage {name} is not checkpointed ({error}): a re-run recomputes "
                              "it, and `satcompress verify` needs the model given with --model.",
                              UserWarning, stacklevel=2)
                content = None
            if content is not None:
                file = f"checkpoints/stage{position + 1}-{config.stage_name}.pt"
                atomic_write_bytes(out_dir / file, content)
                run["checkpoints"][key] = {
                    "file": file, "sha256": hashlib.sha256(content).hexdigest(),
                    "seconds": time.perf_counter() - started}
                _write_run(out_dir, run)
        else:
            model = resumed
        checkpoint = run["checkpoints"].get(key, {}).get("file")
        measurements.append(measured(model, name))

    staging = out_dir / _STAGING_ARTIFACT
    build_artifact(model, example_input, task_metadata(trained.task, trained.data), staging,
                   fec=recipe.fec)
    if recipe.protect:
        protect_artifact(staging, recipe.protect, trained.data.train.x)
    verification = verify_artifact(staging, model, trained.data, trained.task)
    flight = flight_measurement(measurements[-1], verification, trained.data.test.x,
                                latency_repeats)
    interval = _drop_interval(trained, staging, base, seed)
    firmware = None
    if target is not None:
        flight, exported = firmware_measurement(staging, flight, target, out_dir,
                                                trained.data.test.x)
        firmware = exported.to_dict()
    if budget.max_sdc_probability is not None and not budget.violations(flight, base):
        # 1,000 seeded flips: measured only on an artifact that meets every other limit
        vulnerability = sdc_probability(staging.read_bytes(), trained.task, trained.data)
        flight = dataclasses.replace(flight, metrics={**flight.metrics, SDC_METRIC: vulnerability})
    flight_violations = tuple(budget.violations(flight, base))
    artifact_file = REJECTED_ARTIFACT if flight_violations else ARTIFACT_FILE
    verification = dataclasses.replace(verification, artifact=str(out_dir / artifact_file))
    run["artifact"] = {"file": artifact_file, "sha256": verification.sha256,
                       "checkpoint": checkpoint, "fits_budget": not flight_violations}

    violations = tuple(tuple(budget.violations(m, base)) for m in measurements)
    result = RunResult(trained.task.name, recipe, budget, tuple(measurements), violations, model,
                       flight, flight_violations, verification,
                       compare_models(trained.model, model, trained.data, latency_repeats),
                       firmware, out_dir, skill_warnings(trained, recipe, measurements))
    report = {
        "task": trained.task.name,
        "recipe": recipe.to_dict(),
        "budget": budget.to_dict(),
        "stages": [m.to_dict() for m in measurements],
        "violations": [[str(v) for v in broken] for broken in violations],
        "artifact": {"measurement": flight.to_dict(), "verification": verification.to_dict(),
                     "violations": [str(v) for v in flight_violations]},
        "fits_budget": not flight_violations,
        "evaluation": "one split",
        "drop_interval": None if interval is None else interval.to_dict(),
        "firmware": firmware,
        "data_preprocessing": trained.data.preprocessing,
        "warnings": list(result.warnings),
    }
    atomic_write_text(out_dir / "stages.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out_dir / "summary.md", (
        f"# satcompress compress — {trained.task.name}, recipe `{recipe.name}`\n\n"
        f"{recipe.description}\n\nBudget: `{json.dumps(budget.to_dict())}`\n\n"
        f"Evaluation: one split{'' if interval is None else '; ' + interval.describe()}\n\n"
        + "".join(f"**Warning.** {warning}\n\n" for warning in result.warnings)
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
            f"recipe; every stage's numbers are in {out_dir / 'stages.json'}; the artifact "
            f"that breaks the budget is kept as {out_dir / REJECTED_ARTIFACT}."
        )
    write_report(out_dir, result, metric=trained.task.primary_metric, failure=failure,
                 interval=interval)
    _commit_run(out_dir, run, artifact_file)
    if failure is not None:
        raise BudgetNotMet(failure, result)
    return result
