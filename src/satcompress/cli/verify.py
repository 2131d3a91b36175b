"""``satcompress verify``: the flight artifact against the in-framework model, on the test set."""

from __future__ import annotations

from pathlib import Path

import typer

from satcompress.cli.common import TASK_HELP, check_task, console, fail
from satcompress.tasks.registry import task_names

__all__ = ["verify"]

TASK_NAMES = task_names()


def _reference_model(artifact: Path, model: str | None, weights: Path | None, data, checksum: str):
    """The in-framework model: ``model`` (weights-only file, runner checkpoint, or your code
    ``package.module:function`` whose classes the run's checkpoint may then use), or the
    checkpoint the compress run that wrote ``artifact`` recorded for it."""
    from satcompress.pipeline.base_model import ModelFileError, load_model
    from satcompress.pipeline.checkpoint import foreign_classes
    from satcompress.pipeline.runner import artifact_checkpoint, load_checkpoint
    from satcompress.pipeline.user_model import factory_model, is_factory, load_user_model

    folder = artifact.parent.parent if artifact.parent.name == "rejected" else artifact.parent
    if model is not None and is_factory(model):
        if weights is None:  # the run's checkpoint, built of the classes your code defines
            trusted = foreign_classes(factory_model(model))
            return load_checkpoint(artifact_checkpoint(folder, checksum), trusted)
        return load_user_model(model, data, weights=weights)
    if model is None:
        return load_checkpoint(artifact_checkpoint(folder, checksum))
    if not Path(model).is_file():
        fail(f"Model file {model} does not exist.")
    try:
        return load_model(model, data)[0]  # weights-only: never runs code from the file
    except ModelFileError:
        return load_checkpoint(model)  # tensors and plain data: never runs code either


def verify(
    artifact: Path = typer.Argument(..., help="The flight artifact (.sca) to check."),
    task: str = typer.Option(None, help=TASK_HELP + " Or --data for an artifact of your own "
                             "model."),
    data: Path = typer.Option(None, help="The data your model was compressed with (the same "
                              "file, read as the artifact records: columns, split)."),
    val_data: Path = typer.Option(None, help="Your validation data, if given separately."),
    test_data: Path = typer.Option(None, help="Your test data, if given separately."),
    model: str = typer.Option(
        None, help="In-framework model: a checkpoint written by `satcompress compress`, a "
                   "weights-only model file, or your code package.module:function (whose "
                   "layers the run's checkpoint is built of; with --weights, that model); "
                   "default: the checkpoint the compress run that wrote ARTIFACT recorded."),
    weights: Path = typer.Option(None, help="Weights of a --model package.module:function."),
    seed: int = typer.Option(None, help="Seed of the data split (default: as given to "
                                        "compress)."),
) -> None:
    """Run ARTIFACT with the NumPy runtime and the in-framework model on the test set: the
    largest logit difference, differing predictions, the runtime's own metrics, the checksum,
    and the bytes forward error correction repaired.

    Exits with status 1 when the two disagree beyond the documented tolerance.
    """
    if task is not None:
        check_task(task)
    from satcompress import runtime
    from satcompress.artifact import ArtifactError
    from satcompress.data import DataFileError
    from satcompress.pipeline.flight import verify_artifact
    from satcompress.report import rich_table
    from satcompress.tasks.registry import get_task
    from satcompress.tasks.user import read_artifact_data, task_for_artifact

    if not artifact.is_file():
        fail(f"Artifact {artifact} does not exist; `satcompress compress` writes OUT/model.sca.")
    try:
        flight = runtime.load(artifact)
        built_for = flight.metadata.get("task")
        if data is not None:
            with console.status(f"reading {data}"):
                task_data = read_artifact_data(flight.metadata, data, val_path=val_data,
                                               test_path=test_data, seed=seed)
        elif task is None:
            fail(f"{artifact} was built for {built_for!r}: pass --task {built_for} (a reference "
                 "task) or --data FILE (your data)." if built_for in TASK_NAMES else
                 f"{artifact} was built from your own data: pass it with --data FILE.")
        elif built_for != task:
            fail(f"{artifact} was built for task {built_for!r}, not {task!r}; "
                 + (f"pass --task {built_for}." if built_for in TASK_NAMES
                    else "it was built from your own data: pass it with --data FILE."))
        else:
            with console.status(f"loading {task} data"):
                task_data = get_task(task).load(seed=seed or 0)
        reference = _reference_model(artifact, model, weights, task_data, flight.checksum)
        with console.status("running the artifact and the in-framework model"):
            report = verify_artifact(artifact, reference, task_data,
                                     task_for_artifact(flight.metadata, task_data))
    except (ArtifactError, DataFileError, ValueError) as error:
        fail(str(error))
    summary = report.to_dict()
    rows = [{"check": key, "value": summary[key]} for key in (
        "artifact", "sha256", "size_bytes", "peak_buffer_bytes", "examples",
        "max_abs_logit_difference", "tolerance", "differing_predictions",
        "examples_over_float_tolerance", "quantized_activations", "fec_parity", "fec_bytes",
        "corrected_bytes")]
    rows += [{"check": f"runtime {name}", "value": value} for name, value in report.metrics.items()]
    console.print(rich_table(rows, title=f"satcompress verify: {artifact.name}"))
    if report.corrected_bytes:
        console.print(f"[bold yellow]repaired:[/] forward error correction fixed "
                      f"{report.corrected_bytes} damaged byte(s) of {artifact} while loading it; "
                      "replace the file with a clean copy before more errors add up.")
    if not report.passed:
        console.print(f"[bold red]verification failed:[/] {report.differing_predictions} "
                      f"differing predictions, max logit difference "
                      f"{report.max_abs_logit_difference:.3g} (tolerance {report.tolerance:.3g}).")
        raise typer.Exit(code=1)
    console.print("[bold green]verified:[/] the artifact predicts what the model predicts.")
