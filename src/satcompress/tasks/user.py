"""A user's own classification dataset as a task: tabular rows, light curves or arrays.

``satcompress compress --model model.pt --data my.csv`` compresses a model the reference tasks
know nothing about; this module turns the data file into the same :class:`TaskData` the
reference tasks produce, so every stage, the budget, the artifact and the report work
unchanged. Formats, chosen by suffix and columns:

* **Tabular** (``.csv`` or ``.parquet``): one row per example, a label column and numeric
  feature columns (every other column except an optional group column). Features are
  standardised with the training split's mean and standard deviation; the constants are
  recorded in ``preprocessing`` (and so travel in the flight artifact).
* **Light curves** (``.csv`` or ``.parquet`` with the columns ``object_id, mjd, band, flux,
  flux_err`` and the label): one row per detection in ZTF g/r, preprocessed exactly as the
  transient task does (Gaussian-process interpolation to a fixed grid, see
  :func:`satcompress.tasks.transients.preprocess`); the object id is the group.
* **Arrays** (``.npz``): ``x`` (examples first, any shape), ``y`` (integer labels ``0..K-1``)
  and optionally ``groups`` and ``class_names``; used as they are.

Examples are split 60/20/20 into train/validation/test, stratified by label, never putting one
group (active region, object, ...) into two splits. NumPy/pandas only: part of the flight path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from satcompress.fileio import file_sha256
from satcompress.measure.metrics import (
    best_tss_threshold,
    binary_scores,
    macro_f1,
    weighted_log_loss,
)
from satcompress.tasks.base import Split, TaskData, stratified_group_split

__all__ = [
    "METRICS",
    "UserDataError",
    "read_user_data",
    "score",
]

METRICS: dict[str, bool] = {
    "accuracy": True,
    "macro_f1": True,
    "weighted_log_loss": False,
    "tss": True,
}
"""Metrics a user task can be judged by, and whether higher is better. ``tss`` (true skill
statistic at the validation-chosen threshold) needs exactly two classes."""

LIGHT_CURVE_COLUMNS = ("object_id", "mjd", "band", "flux", "flux_err")
MIN_EXAMPLES_PER_CLASS = 5
"""A class needs examples in all five folds of the split to appear in train, validation and test."""


class UserDataError(ValueError):
    """A user's data file cannot be read as a classification dataset."""


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (OSError, ValueError) as error:
        raise UserDataError(
            f"Cannot read {path} as a table ({type(error).__name__}: {str(error)[:200]}); give a "
            "CSV with a header row or a Parquet file."
        ) from None


def _encode_labels(labels: pd.Series | np.ndarray, path: Path
                   ) -> tuple[np.ndarray, tuple[str, ...]]:
    values = np.asarray(labels)
    if pd.isna(values).any():
        raise UserDataError(f"{path}: {int(pd.isna(values).sum())} labels are missing; "
                            "remove those rows or label them.")
    classes, y = np.unique(values.astype(str), return_inverse=True)
    return y.astype(np.int64), tuple(str(name) for name in classes)


def _check_classes(y: np.ndarray, class_names: tuple[str, ...], path: Path) -> None:
    counts = np.bincount(y, minlength=len(class_names))
    if len(class_names) < 2:
        raise UserDataError(f"{path} holds a single class ({class_names}); a classifier needs "
                            "at least two.")
    rare = [f"{name} ({count})" for name, count in zip(class_names, counts)
            if count < MIN_EXAMPLES_PER_CLASS]
    if rare:
        raise UserDataError(
            f"{path}: class(es) {', '.join(rare)} have fewer than {MIN_EXAMPLES_PER_CLASS} "
            "examples, too few to appear in train, validation and test; add examples or merge "
            "the classes."
        )


def _tabular(frame: pd.DataFrame, label_column: str, group_column: str | None, path: Path
             ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], np.ndarray, dict]:
    features = [c for c in frame.columns if c not in (label_column, group_column)]
    not_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
    if not features or not_numeric:
        raise UserDataError(
            f"{path}: feature columns must be numeric; {not_numeric or 'there are none'}"
            f"{' are not' if not_numeric else ''}. Encode them as numbers, or name the label "
            "and group columns with --label-column / --group-column."
        )
    x = frame[features].to_numpy(np.float64)
    bad_columns = [c for c, ok in zip(features, np.isfinite(x).all(axis=0)) if not ok]
    if bad_columns:
        raise UserDataError(f"{path}: columns {bad_columns} hold missing or infinite values; "
                            "impute or drop them first.")
    y, class_names = _encode_labels(frame[label_column], path)
    groups = (frame[group_column].astype(str).to_numpy() if group_column
              else np.arange(len(frame)).astype(str))
    return x, y, class_names, groups, {"format": "tabular", "features": features}


def _light_curves(frame: pd.DataFrame, label_column: str, path: Path
                  ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], np.ndarray, dict]:
    from satcompress.tasks.transients import preprocess

    curves = frame.rename(columns={label_column: "label"}).assign(source="user")
    result = preprocess(curves, n_jobs=1)
    if len(result.x) == 0:
        raise UserDataError(f"{path}: no light curve survived preprocessing "
                            f"(skipped: {result.skipped_counts}).")
    y, class_names = _encode_labels(result.labels, path)
    return (result.x, y, class_names, result.object_ids.astype(str),
            {"format": "light_curves", "skipped": dict(result.skipped_counts)})


def _arrays(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], np.ndarray, dict]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            content = {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError) as error:
        raise UserDataError(f"Cannot read {path} as .npz arrays ({str(error)[:200]}); save it "
                            "with numpy.savez(path, x=..., y=...).") from None
    if "x" not in content or "y" not in content:
        raise UserDataError(f"{path} must hold arrays 'x' and 'y'; it holds {sorted(content)}.")
    x, y = content["x"], content["y"]
    if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu" or (len(y) and y.min() < 0):
        raise UserDataError(f"{path}: 'y' must be one non-negative integer label per row of "
                            f"'x' ({len(x)} rows); got shape {y.shape}, dtype {y.dtype}.")
    if x.dtype.kind not in "fiu" or not np.isfinite(x).all():
        raise UserDataError(f"{path}: 'x' must be finite numbers.")
    n_classes = int(y.max()) + 1 if len(y) else 0
    names = content.get("class_names")
    class_names = (tuple(str(n) for n in names) if names is not None
                   else tuple(f"class {c}" for c in range(n_classes)))
    if len(class_names) < n_classes:
        raise UserDataError(f"{path}: 'y' has labels up to {n_classes - 1} but 'class_names' "
                            f"names {len(class_names)} classes.")
    groups = content.get("groups", np.arange(len(y))).astype(str)
    return x.astype(np.float64), y.astype(np.int64), class_names, groups, {"format": "arrays"}


def read_user_data(
    path: str | Path,
    *,
    label_column: str = "label",
    group_column: str | None = None,
    seed: int = 0,
) -> TaskData:
    """The train/validation/test splits of a user's classification data (see module notes).

    Parameters
    ----------
    path : path
        ``.csv`` / ``.parquet`` (tabular or light curves) or ``.npz`` (arrays).
    label_column : str
        Column holding the class of each row (tables only).
    group_column : str, optional
        Column whose rows must stay in one split (e.g. an active region). Light curves are
        always grouped by ``object_id``; arrays by their ``groups`` array when present.
    seed : int
        Seed of the split.

    Raises
    ------
    UserDataError
        If the file is missing or unreadable, a column is missing or not numeric, values are
        missing, or a class has too few examples to split.
    """
    path = Path(path)
    if not path.is_file():
        raise UserDataError(f"Data file {path} does not exist.")
    if path.suffix.lower() == ".npz":
        x, y, class_names, groups, preprocessing = _arrays(path)
    else:
        frame = _read_table(path)
        missing = [c for c in (label_column, group_column) if c and c not in frame.columns]
        if missing:
            raise UserDataError(f"{path} has no column(s) {missing}; its columns are "
                                f"{list(frame.columns)[:20]}. Name the label column with "
                                "--label-column.")
        if set(LIGHT_CURVE_COLUMNS) <= set(frame.columns):
            x, y, class_names, groups, preprocessing = _light_curves(frame, label_column, path)
        else:
            x, y, class_names, groups, preprocessing = _tabular(frame, label_column,
                                                                group_column, path)
    _check_classes(y, class_names, path)
    train, val, test = stratified_group_split(y, groups, seed)
    if preprocessing["format"] == "tabular":
        mean, std = x[train].mean(axis=0), x[train].std(axis=0)
        std[std == 0] = 1.0
        x = (x - mean) / std
        preprocessing.update(mean=mean.tolist(), std=std.tolist())
    x = x.astype(np.float32)
    preprocessing.update(source=path.name, sha256=file_sha256(path), seed=seed)
    return TaskData(
        *(Split(x=x[rows], y=y[rows], groups=groups[rows]) for rows in (train, val, test)),
        class_names=class_names,
        preprocessing=preprocessing,
    )


def score(
    metric: str,
    val_probabilities: np.ndarray,
    val_labels: np.ndarray,
    test_probabilities: np.ndarray,
    test_labels: np.ndarray,
) -> dict[str, float]:
    """Test ``accuracy``, ``macro_f1``, ``weighted_log_loss`` (and for two classes ``tss`` at
    the threshold chosen on validation), with ``metric`` among them."""
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; choose from {sorted(METRICS)}.")
    test_probabilities = np.asarray(test_probabilities, dtype=np.float64)
    n_classes = test_probabilities.shape[1]
    predicted = test_probabilities.argmax(axis=1)
    scores = {
        "accuracy": float(np.mean(predicted == test_labels)),
        "macro_f1": macro_f1(test_labels, predicted, n_classes),
        "weighted_log_loss": weighted_log_loss(test_labels, test_probabilities),
    }
    if n_classes == 2:
        threshold = best_tss_threshold(val_labels, np.asarray(val_probabilities)[:, 1])
        scores["tss"] = binary_scores(test_labels, test_probabilities[:, 1], threshold)["tss"]
    elif metric == "tss":
        raise ValueError(f"The metric tss needs two classes; the data has {n_classes}. Choose "
                         "accuracy, macro_f1 or weighted_log_loss.")
    return scores
