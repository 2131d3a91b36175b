"""Classifying flattened alerts with a flight artifact: the code every path runs.

:func:`classify_table` is the whole per-batch computation: selection cuts
(:func:`~satcompress.broker.alerts.cut_reasons`), light curves
(:func:`~satcompress.broker.alerts.light_curves`), the transient task's GP preprocessing
(:mod:`satcompress.tasks.lightcurves`, batched over the alerts) with the settings stored in
the artifact (so the artifact sees exactly what the task's model saw in
training), and the NumPy runtime. The in-process path (:func:`classify_alerts`, pandas only)
calls it on all alerts at once and the Spark pandas UDF (:mod:`satcompress.broker.spark`) on
each Arrow batch, so both give the same probabilities bit for bit:

* every alert gets its own GP, independently of its batch: alerts are fitted together in
  batched linear algebra, but each is padded to a size of a fixed ladder that depends on it
  alone, so its arithmetic is the same in any batch;
* the runtime is never given a chunk of one example: NumPy computes a one-row matrix
  product with another BLAS routine (gemv instead of gemm) whose rounding differs in the last
  bits, which would make an alert's probabilities depend on how Spark split the stream.
  :func:`predict_probabilities` pads such a chunk with a row of zeros and drops its output.

An alert whose logits are not all finite (a fault: an upset in memory, a damaged weight) is
never given a class: the runtime's own ``classify`` (any backend; it counts the faults in
``Runtime.faults``) reports it, and such a row comes out
with null probabilities, predicted class :data:`FAULT` and reason :data:`FAULT_REASON`.

The artifact is loaded once per process (an executor's Python worker) and kept in a cache
keyed by the artifact's SHA-256 (:func:`load_classifier`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from satcompress import runtime
from satcompress.broker.alerts import AlertProblem, Alerts, SelectionCuts, cut_reasons, light_curves
from satcompress.broker.lsst import lsst_cut_reasons, lsst_light_curves, table_survey
from satcompress.predict import FAULT_LABEL
from satcompress.runtime.protect import Classification
from satcompress.tasks import transients
from satcompress.tasks.registry import TASKS
from satcompress.tasks.lightcurves import (
    N_GP_CHANNELS,
    PREPROCESSING_VERSION,
    ObjectCurve,
    PreprocessingConfig,
    interpolate_objects,
    object_curves,
)

__all__ = [
    "ALERT_HYPERPARAMETER_SEARCH",
    "FAULT",
    "FAULT_REASON",
    "ID_COLUMNS",
    "PREDICTED_CLASS",
    "REASON",
    "UNPARSEABLE",
    "Classifier",
    "PreprocessedAlerts",
    "classify_alerts",
    "classify_examples",
    "classify_table",
    "load_classifier",
    "predict_probabilities",
    "preprocess_alerts",
    "preprocessing_config",
    "probability_column",
    "problem_rows",
    "reason_counts",
    "result_columns",
]

ID_COLUMNS = ("objectId", "candid")
PREDICTED_CLASS = "predicted_class"
REASON = "reason"
"""Null for a classified alert; otherwise why it has no probabilities."""
UNPARSEABLE = "unparseable"
FAULT = FAULT_LABEL
"""The predicted class of an alert whose logits are not all finite (as ``satcompress
predict`` writes it): a fault, never a class."""
FAULT_REASON = "fault_non_finite_logits"
"""The reason of a faulted alert (its probabilities are null)."""
_SURVEY_READERS = {"ztf": (cut_reasons, light_curves),
                   "lsst": (lsst_cut_reasons, lsst_light_curves)}  # fmt: skip
"""Per survey (:func:`~satcompress.broker.lsst.table_survey`): its cuts and light curves."""


def probability_column(class_name: str) -> str:
    """The results column of a class: ``p_`` + the lower-case name, non-alphanumerics as ``_``
    (``"SN Ia"`` -> ``p_sn_ia``)."""
    return "p_" + re.sub(r"[^0-9a-z]+", "_", class_name.lower()).strip("_")


def result_columns(class_names: Sequence[str]) -> tuple[str, ...]:
    """Columns :func:`classify_table` returns: one probability per class, the predicted class
    and the reason."""
    return (*map(probability_column, class_names), PREDICTED_CLASS, REASON)


def preprocessing_config(metadata: Mapping[str, Any]) -> PreprocessingConfig:
    """The GP settings a transient artifact's model was trained with (from its metadata).

    Raises
    ------
    ValueError
        If the artifact is not one of the transient task (``transients`` or its LSST variant
        ``transients-lsst``), or its preprocessing version or settings do not match this
        version of the task's code.
    """
    task = metadata.get("task")
    transient_tasks = [name for name, registered in TASKS.items()
                       if registered.module == transients.__name__]  # fmt: skip
    if task not in transient_tasks:
        raise ValueError(f"The artifact was built for task {task!r}; alerts are classified by an "
                         f"artifact of {' or '.join(transient_tasks)} (satcompress compress "
                         "--task transients).")
    version = metadata.get("preprocessing_version")
    if version != PREPROCESSING_VERSION:
        raise ValueError(f"The artifact's model saw transient preprocessing version {version!r} "
                         f"but this satcompress computes version {PREPROCESSING_VERSION}; rebuild "
                         "the artifact with this version (satcompress compress --task transients).")
    stored = (metadata.get("preprocessing") or {}).get("config")
    known = {field.name for field in dataclasses.fields(PreprocessingConfig)}
    if not isinstance(stored, Mapping) or set(stored) - known:
        raise ValueError("The artifact's metadata lacks preprocessing.config with the fields of "
                         f"PreprocessingConfig ({sorted(known)}); rebuild it with "
                         "satcompress.pipeline.flight.task_metadata.")
    return PreprocessingConfig(**{name: tuple(value) if isinstance(value, list) else value
                                  for name, value in stored.items()})  # fmt: skip


class Classifier(NamedTuple):
    """A loaded transient artifact: the runtime, its GP settings, class names and SHA-256."""

    runtime: runtime.Runtime
    config: PreprocessingConfig
    class_names: tuple[str, ...]
    sha256: str


_CLASSIFIERS: dict[tuple[str, str], Classifier] = {}
ALERT_HYPERPARAMETER_SEARCH = "grid"
"""The GP hyperparameter search the broker runs on alerts, whatever the training data used:
the batched grid, about 12x faster per alert than L-BFGS-B. Inputs differ slightly (median largest
difference 0.002 of the peak flux on the bundled alerts) but a fixed compressed model's
weighted log loss on the test objects is the same within 0.0003 (benchmarks/README.md)."""


def load_classifier(source: str | os.PathLike | bytes, backend: str = "numpy") -> Classifier:
    """Load (once per process) and check a transient artifact from a path or its bytes, on the
    runtime ``backend`` (``numpy`` or ``c``, see :func:`satcompress.runtime.load`).

    Cached by the SHA-256 of the bytes (and the backend), so a Spark executor loads the
    artifact once however many batches it classifies, and a file replaced on disk is loaded
    again.

    Raises
    ------
    ValueError
        If the artifact is not a transient classifier of this preprocessing (see
        :func:`preprocessing_config`) or its input shape does not fit it, or ``backend`` is
        neither ``numpy`` nor ``c``.
    satcompress.artifact.ArtifactError, satcompress.runtime.GraphError
        If the file is corrupted or its graph cannot run.
    """
    content = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    sha256 = hashlib.sha256(content).hexdigest()
    if (sha256, backend) not in _CLASSIFIERS:
        loaded = runtime.load(bytes(content), backend=backend)
        config = dataclasses.replace(preprocessing_config(loaded.metadata),
                                     hyperparameter_search=ALERT_HYPERPARAMETER_SEARCH)
        expected = (config.n_timesteps, N_GP_CHANNELS)
        if loaded.input_shape != expected:
            raise ValueError(f"The artifact takes inputs of shape {loaded.input_shape} but its "
                             f"preprocessing produces {expected}; rebuild it from the task's "
                             "model.")
        if not loaded.class_names:
            raise ValueError("The artifact's metadata has no class_names; rebuild it with "
                             "satcompress.pipeline.flight.task_metadata.")
        _CLASSIFIERS[sha256, backend] = Classifier(loaded, config, loaded.class_names, sha256)
    return _CLASSIFIERS[sha256, backend]


def classify_examples(model: runtime.Runtime, x: np.ndarray) -> Classification:
    """``model.classify(x)`` (any backend: a row with a non-finite logit is a fault, never a
    class, and counted in ``model.faults``), never run on a one-example chunk (see the module
    docstring), so an example's result does not depend on the batch it came in. Overflows
    inside the model are not warned about: the rows they reach are reported as faults."""
    lone = len(x) % runtime.CHUNK_EXAMPLES == 1
    padded = np.concatenate([x, np.zeros_like(x[:1])]) if lone else x
    with np.errstate(over="ignore", invalid="ignore"):
        result = model.classify(padded)
    if not lone:
        return result
    return Classification(result.probabilities[:-1], result.predicted[:-1], result.faults[:-1])


def predict_probabilities(model: runtime.Runtime, x: np.ndarray) -> np.ndarray:
    """:func:`classify_examples`' probabilities (NaN in a faulted row)."""
    return classify_examples(model, x).probabilities


class PreprocessedAlerts(NamedTuple):
    """Model inputs of the alerts that pass every cut and the reason of those that do not.

    ``x`` (float32, ``(len(rows), n_timesteps, 4)``) belongs to the table rows ``rows``;
    ``reasons`` has one entry per table row, None where the alert was kept.
    """

    x: np.ndarray
    rows: np.ndarray
    reasons: np.ndarray


def preprocess_alerts(
    table: pd.DataFrame, config: PreprocessingConfig, cuts: SelectionCuts
) -> PreprocessedAlerts:
    """Cuts, light curves and the task's GP preprocessing of flattened ZTF or LSST alerts (one
    GP per alert; the survey is recognised from the table's columns)."""
    survey = table_survey(table)
    survey_cuts, survey_curves = _SURVEY_READERS[survey]
    reasons = survey_cuts(table, cuts)
    candidates = np.flatnonzero(pd.isna(reasons))
    keys = [f"{row:012d}" for row in candidates]  # object_curves sorts by key: row order
    curves = survey_curves(table.iloc[candidates], keys)
    found = object_curves(curves)[0] if len(curves) else []
    detected = {curve.object_id: curve for curve in found}  # by key: some rows have no point
    none = np.zeros(0)
    objects = [detected.get(key) or ObjectCurve(key, survey, none, none.astype(str), none, none)
               for key in keys]  # no detection: the preprocessing gives the reason
    results = interpolate_objects(objects, config)
    kept = []
    for row, result in zip(candidates, results):
        if result.x is None:
            reasons[row] = result.skip_reason
        else:
            kept.append(row)
    shape = (config.n_timesteps, N_GP_CHANNELS)
    x = np.stack([r.x for r in results if r.x is not None]) if kept else np.zeros((0, *shape))
    return PreprocessedAlerts(x.astype(np.float32), np.array(kept, dtype=np.int64), reasons)


def classify_table(
    table: pd.DataFrame, classifier: Classifier, cuts: SelectionCuts = SelectionCuts()  # noqa: B008
) -> pd.DataFrame:
    """Class probabilities of flattened alerts (rows of
    :data:`~satcompress.broker.alerts.ALERT_COLUMNS` or
    :data:`~satcompress.broker.lsst.LSST_ALERT_COLUMNS`; the ids are not needed).

    Returns one row per input row, in order, with :func:`result_columns`: the probabilities
    and predicted class of the alerts that pass every cut, and for the others null
    probabilities and the ``reason`` (a fault: predicted class :data:`FAULT`, reason
    :data:`FAULT_REASON`).
    """
    prepared = preprocess_alerts(table, classifier.config, cuts)
    probabilities = np.full((len(table), len(classifier.class_names)), np.nan)
    predicted = np.full(len(table), None, dtype=object)
    reasons = prepared.reasons
    if len(prepared.rows):
        result = classify_examples(classifier.runtime, prepared.x)
        names = np.asarray([*classifier.class_names, FAULT], dtype=object)  # FAULT (-1): last
        probabilities[prepared.rows] = result.probabilities
        predicted[prepared.rows] = names[result.predicted]
        reasons[prepared.rows[result.faults]] = FAULT_REASON
    columns = dict(zip(result_columns(classifier.class_names), probabilities.T))
    columns[PREDICTED_CLASS] = predicted
    columns[REASON] = reasons
    return pd.DataFrame(columns, columns=list(result_columns(classifier.class_names)))


def classify_alerts(
    alerts: Alerts | pd.DataFrame,
    artifact: str | os.PathLike | bytes | Classifier,
    cuts: SelectionCuts = SelectionCuts(),  # noqa: B008 (frozen, immutable)
) -> pd.DataFrame:
    """The in-process path (pandas, no Spark): ids and :func:`classify_table`'s columns for every
    alert of ``alerts`` (a :func:`~satcompress.broker.alerts.read_alerts` result or its table),
    in order. Unreadable alerts are not included: see :func:`problem_rows`."""
    table = alerts.table if isinstance(alerts, Alerts) else alerts
    classifier = artifact if isinstance(artifact, Classifier) else load_classifier(artifact)
    results = classify_table(table.reset_index(drop=True), classifier, cuts)
    ids = table[list(ID_COLUMNS)].reset_index(drop=True)
    return pd.concat([ids, results], axis=1)


def problem_rows(problems: Iterable[AlertProblem], class_names: Sequence[str]) -> pd.DataFrame:
    """Result rows (reason ``unparseable``, ids where known) for the unreadable alerts, so they
    stay visible in the output; whole unreadable files have no row (they are listed apart)."""
    alerts = [problem for problem in problems if problem.index is not None]
    columns = (*ID_COLUMNS, *result_columns(class_names))
    frame = pd.DataFrame({name: [None] * len(alerts) for name in columns}, columns=list(columns))
    frame["objectId"] = [problem.object_id for problem in alerts]
    frame["candid"] = pd.array([problem.candid for problem in alerts], dtype="Int64")
    for name in map(probability_column, class_names):
        frame[name] = np.nan
    frame[REASON] = UNPARSEABLE
    return frame


def reason_counts(results: pd.DataFrame) -> dict[str, int]:
    """How many alerts were classified (``"classified"``) and how many failed, per reason."""
    counts = Counter(results[REASON].fillna("classified"))
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
