"""Score new data with a flight artifact: class probabilities per row, torch-free.

``satcompress predict ARTIFACT --data FILE --out predictions.parquet`` reads ``FILE`` the way
the artifact's user data was read (recorded in its metadata: the feature columns in order, or
the light-curve survey), runs the artifact (the NumPy runtime, or its compiled C with
``backend="c"``) and writes one row per example: its identity (``row``, and the group column
when the file has it; ``object_id`` for light curves), ``p_<class>`` per class, ``predicted``
and ``artifact_sha256``. A row whose logits are not all finite (a fault, e.g. an upset in
memory) is never given a class: its ``predicted`` is :data:`FAULT_LABEL` and its
probabilities NaN (:func:`satcompress.runtime.protect.classify_logits`). The label column,
when present, is ignored. NumPy/pandas only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from satcompress import runtime
from satcompress.fileio import atomic_path
from satcompress.runtime.protect import classify_logits
from satcompress.tasks import user

__all__ = ["FAULT_LABEL", "PredictionError", "artifact_inputs", "predict_file"]

FAULT_LABEL = "fault"
"""The ``predicted`` value of a row whose logits are not all finite."""


class PredictionError(ValueError):
    """New data cannot be scored by this artifact (wrong form, missing columns)."""


def _tabular_inputs(frame: pd.DataFrame, preprocessing: dict, path: Path
                    ) -> tuple[np.ndarray, pd.DataFrame]:
    features = preprocessing["features"]
    missing = [column for column in features if column not in frame.columns]
    if missing:
        raise PredictionError(f"{path} lacks the feature column(s) {missing[:8]} the artifact "
                              f"takes (in this order: {features[:8]}...).")
    not_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
    if not_numeric:
        raise PredictionError(f"{path}: feature column(s) {not_numeric[:8]} are not numeric.")
    x = frame[features].to_numpy(np.float64, na_value=np.nan)
    bad = ~np.isfinite(x) | (np.abs(x) > np.finfo(np.float32).max)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise PredictionError(f"{path}: column {features[column]!r}, row {row} is "
                              f"{x[row, column]:.6g}: missing, infinite or beyond float32; "
                              "impute or drop such rows first.")
    identity = pd.DataFrame({"row": np.arange(len(frame))})
    group = preprocessing.get("group_column")
    if group in frame.columns:
        identity[group] = frame[group].to_numpy()
    return x.astype(np.float32), identity


def _curve_inputs(frame: pd.DataFrame, preprocessing: dict, path: Path
                  ) -> tuple[np.ndarray, pd.DataFrame]:
    from satcompress.tasks.lightcurves import preprocess

    survey = str(preprocessing.get("survey", "ztf"))
    curves = frame[list(user.LIGHT_CURVE_COLUMNS)].assign(label="?",
                                                          source=user.SURVEYS[survey])
    try:
        result = preprocess(curves, n_jobs=1)
    except ValueError as error:
        raise PredictionError(f"{path}: {error}") from None
    return result.x, pd.DataFrame({"object_id": result.object_ids})


def artifact_inputs(metadata: dict, path: str | Path) -> tuple[np.ndarray, pd.DataFrame]:
    """The artifact's inputs from the data file at ``path`` (read as its metadata records),
    and a table identifying each example."""
    path = Path(path)
    preprocessing = metadata.get("preprocessing", {})
    form = preprocessing.get("format")
    if form not in ("tabular", "light_curves", "arrays"):
        raise PredictionError("This artifact records no user data form (it was built for the "
                              f"reference task {str(metadata.get('task'))[:40]!r}); score "
                              "transient alerts with `satcompress classify-alerts`.")
    if not path.is_file():
        raise PredictionError(f"Data file {path} does not exist.")
    if form == "arrays":
        if path.suffix.lower() != ".npz":
            raise PredictionError(f"The artifact takes arrays: give an .npz holding x; got {path}.")
        declared = user.npz_headers(path)
        if "x" not in declared:
            raise PredictionError(f"{path} holds no array 'x'.")
        with np.load(path, allow_pickle=False) as arrays:
            x = arrays["x"].astype(np.float32)
        return x, pd.DataFrame({"row": np.arange(len(x))})
    frame = user.read_table(path)
    if form == "light_curves":
        return _curve_inputs(frame, preprocessing, path)
    return _tabular_inputs(frame, preprocessing, path)


def predict_file(artifact: str | Path, data: str | Path, out: str | Path,
                 backend: str = "numpy") -> pd.DataFrame:
    """Score ``data`` with ``artifact`` and write the predictions to ``out`` (Parquet,
    atomically); returns the table, whose ``attrs["faults"]`` counts the rows predicted
    :data:`FAULT_LABEL`."""
    flight = runtime.load(artifact, backend=backend)
    x, table = artifact_inputs(flight.metadata, data)
    expected = tuple(flight.metadata.get("input_shape", x.shape[1:]))
    if tuple(x.shape[1:]) != expected:
        raise PredictionError(f"{data} gives examples of shape {tuple(x.shape[1:])}; the "
                              f"artifact takes {expected}.")
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, row by row
        result = classify_logits(flight.run(x))
    names = [str(name) for name in flight.metadata.get("class_names", [])]
    for column, name in enumerate(names):
        table[f"p_{name}"] = result.probabilities[:, column]
    labels = np.asarray([*names, FAULT_LABEL], dtype=object)  # FAULT (-1): the last
    table["predicted"] = labels[result.predicted]
    table["artifact_sha256"] = flight.checksum
    table.attrs["faults"] = result.fault_count
    with atomic_path(out) as temporary:
        table.to_parquet(temporary, index=False)
    return table
