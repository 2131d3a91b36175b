"""``satcompress predict``: class probabilities for new data from a flight artifact."""

from __future__ import annotations

from pathlib import Path

import typer

from satcompress.cli.common import console, fail

__all__ = ["predict"]


def predict(
    artifact: Path = typer.Argument(..., help="The flight artifact (.sca)."),
    data: Path = typer.Option(..., help="New data in the form the artifact was compressed "
                              "with (the same feature columns; light curves; .npz with x)."),
    out: Path = typer.Option(Path("predictions.parquet"), help="Predictions (Parquet, one row "
                             "per example), written atomically."),
    backend: str = typer.Option("numpy", help="numpy (the reference runtime) or c (the "
                                "artifact's C code compiled for this machine)."),
) -> None:
    """Score DATA with ARTIFACT (no PyTorch): p_<class> per class, the predicted class and the
    artifact's SHA-256 for every row."""
    from satcompress.artifact import ArtifactError
    from satcompress.predict import predict_file
    from satcompress.tasks.user import UserDataError

    if not artifact.is_file():
        fail(f"Artifact {artifact} does not exist; `satcompress compress` writes OUT/model.sca.")
    try:
        table = predict_file(artifact, data, out, backend=backend)
    except (ArtifactError, UserDataError, ValueError) as error:
        fail(str(error))
    counts = table["predicted"].value_counts().to_dict()
    console.print(f"wrote {out}: {len(table)} predictions ("
                  + ", ".join(f"{name}: {count}" for name, count in counts.items()) + ")")
