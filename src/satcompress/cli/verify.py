"""``satcompress verify``: the flight artifact against the in-framework model, on the test set."""

from __future__ import annotations

from pathlib import Path

import typer

from satcompress.cli.common import TASK_HELP, check_task, console, fail

__all__ = ["verify"]


def _reference_model(artifact: Path, model: Path | None, data, checksum: str):
    """The in-framework model: ``model`` (weights-only file or runner checkpoint), or the
    checkpoint the compress run that wrote ``artifact`` recorded for it."""
    from satcompress.pipeline.base_model import ModelFileError, load_model
    from satcompress.pipeline.runner import artifact_checkpoint, load_checkpoint

    if model is None:
        folder = artifact.parent.parent if artifact.parent.name == "rejected" else artifact.parent
        return load_checkpoint(artifact_checkpoint(folder, checksum))
    if not model.is_file():
        fail(f"Model file {model} does not exist.")
    try:
        return load_model(model, data)[0]  # weights-only: never runs code from the file
    except ModelFileError:
        return load_checkpoint(model)  # tensors and plain data: never runs code either


def verify(
    artifact: Path = typer.Argument(..., help="The flight artifact (.sca) to check."),
    task: str = typer.Option(..., help=TASK_HELP),
    model: Path = typer.Option(
        None, help="In-framework model: a checkpoint written by `satcompress compress` or a "
                   "weights-only model file; default: the checkpoint the compress run that "
                   "wrote ARTIFACT recorded for it."),
    seed: int = typer.Option(0, help="Seed of the data split (as given to compress)."),
) -> None:
    """Run ARTIFACT with the NumPy runtime and the in-framework model on the test set: the
    largest logit difference, differing predictions, the runtime's own metrics, the checksum,
    and the bytes forward error correction repaired.

    Exits with status 1 when the two disagree beyond the documented tolerance.
    """
    check_task(task)
    from satcompress import runtime
    from satcompress.artifact import ArtifactError
    from satcompress.data import DataFileError
    from satcompress.pipeline.flight import verify_artifact
    from satcompress.report import rich_table
    from satcompress.tasks.registry import get_task

    if not artifact.is_file():
        fail(f"Artifact {artifact} does not exist; `satcompress compress` writes OUT/model.sca.")
    try:
        flight = runtime.load(artifact)
        if flight.metadata.get("task") != task:
            fail(f"{artifact} was built for task {flight.metadata.get('task')!r}, not {task!r}; "
                 f"pass --task {flight.metadata.get('task')}.")
        with console.status(f"loading {task} data"):
            data = get_task(task).load(seed=seed)
        reference = _reference_model(artifact, model, data, flight.checksum)
        with console.status("running the artifact and the in-framework model"):
            report = verify_artifact(artifact, reference, data)
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
