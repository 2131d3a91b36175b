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

Every problem is a :class:`UserDataError` saying what is wrong and what to do: a column name
given twice in the header (pandas would read a second ``label`` as a feature ``label.1``), a
feature named like a renamed copy of the label or group column, an empty table, a value that is
missing or not finite after any conversion (named by column and row, rows counted from 0 after
the header, or by its index in ``x``), and a file declaring more than :data:`MAX_DATA_BYTES`
(checked from the Parquet metadata or the ``.npy`` headers before any array is allocated).
"""

from __future__ import annotations

import math
import re
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from satcompress.fileio import file_sha256
from satcompress.measure.metrics import (
    best_tss_threshold,
    binary_scores,
    macro_f1,
    weighted_log_loss,
)
from satcompress.tasks.base import Split, TaskData, stratified_group_split

__all__ = [
    "MAX_DATA_BYTES",
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
MAX_DATA_BYTES = 4 * 1024**3
"""Largest data a file may declare: the arrays of an ``.npz`` (from their headers) or a Parquet
table at 8 bytes a value (from its metadata); larger files are refused before reading."""
NPZ_ARRAYS = ("x", "y", "groups", "class_names")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class UserDataError(ValueError):
    """A user's data file cannot be read as a classification dataset."""


class _Loaded(NamedTuple):
    """Examples read from a file, before the split; ``cell`` names a position of ``x``."""

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    groups: np.ndarray
    preprocessing: dict
    cell: Callable[[tuple[int, ...]], str]


def _unreadable(path: Path, error: Exception, what: str, fix: str) -> UserDataError:
    """The error for a file the reader (pandas, pyarrow, numpy, zipfile) could not parse."""
    return UserDataError(f"Cannot read {path} as {what} ({type(error).__name__}: "
                         f"{str(error)[:200]}); {fix}")


def _header(path: Path) -> tuple[list[str], int]:
    """Column names as the file spells them, and (Parquet) the number of values it declares."""
    if path.suffix.lower() == ".parquet":
        metadata = pq.read_metadata(path)
        return metadata.schema.to_arrow_schema().names, metadata.num_rows * metadata.num_columns
    first = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
    return [str(name) for name in first.iloc[0]], 0


def _read_table(path: Path) -> pd.DataFrame:
    """The table at ``path``, its header checked for repeated names and its size for
    :data:`MAX_DATA_BYTES` before the values are read."""
    fix = "give a CSV with a header row or a Parquet file."
    try:
        names, values = _header(path)
    except (OSError, ValueError) as error:
        raise _unreadable(path, error, "a table", fix) from None
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise UserDataError(
            f"{path}: column(s) {repeated} appear more than once in the header; pandas would "
            f"read the copies as extra features ({repeated[0]!r} as '{repeated[0]}.1'), "
            "leaking a label or group column into the features. Remove or rename the copies."
        )
    if 8 * values > MAX_DATA_BYTES:
        raise UserDataError(f"{path} declares {values} values, over {MAX_DATA_BYTES} bytes; "
                            "give a smaller table (fewer rows or columns).")
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        with warnings.catch_warnings():  # a row longer than the header: an error, not a warning
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, index_col=False)  # never the first field as an index
    except pd.errors.ParserWarning:
        raise UserDataError(f"{path}: a row has more fields than the header names, so its values "
                            "would shift into the wrong columns; fix the file's rows.") from None
    except (OSError, ValueError) as error:
        raise _unreadable(path, error, "a table", fix) from None


def _encode_labels(labels: pd.Series | np.ndarray, path: Path
                   ) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer labels ``0..K-1`` (classes in sorted order) and the class names."""
    values = np.asarray(labels)
    missing = pd.isna(values)
    if missing.any():
        raise UserDataError(f"{path}: {int(missing.sum())} labels are missing (the first in row "
                            f"{int(np.argmax(missing))}); remove those rows or label them.")
    classes, y = np.unique(values.astype(str), return_inverse=True)
    return y.astype(np.int64), tuple(str(name) for name in classes)


def _check_classes(y: np.ndarray, class_names: tuple[str, ...], path: Path) -> None:
    """Refuse fewer than two classes, or a class too rare to split."""
    counts = np.bincount(y, minlength=len(class_names))
    if len(class_names) < 2:
        raise UserDataError(f"{path} holds a single class ({class_names}); a classifier needs "
                            "at least two.")
    rare = [f"{name} ({count})" for name, count in zip(class_names, counts)
            if count < MIN_EXAMPLES_PER_CLASS]
    if rare:
        shown = ", ".join(rare[:10]) + (f" and {len(rare) - 10} more" if len(rare) > 10 else "")
        raise UserDataError(
            f"{path}: class(es) {shown} have fewer than {MIN_EXAMPLES_PER_CLASS} "
            "examples, too few to appear in train, validation and test; add examples or merge "
            "the classes."
        )


def _check_finite(x: np.ndarray, path: Path, cell: Callable[[tuple[int, ...]], str],
                  problem: str, source: np.ndarray | None = None) -> None:
    """Refuse ``x`` if a value is not finite, naming the first (in row order), its value in
    ``source`` (what ``x`` was converted from; ``x`` itself by default) and ``problem``."""
    bad = ~np.isfinite(x)
    if bad.any():
        index = tuple(int(i) for i in np.unravel_index(np.argmax(bad), x.shape))
        value = (x if source is None else source)[index]
        raise UserDataError(f"{path}: {cell(index)} is {value:.6g}: {problem}.")


def _check_columns(frame: pd.DataFrame, label_column: str, group_column: str | None,
                   path: Path) -> None:
    """Refuse a missing label/group column, both being one column, renamed copies of either
    and an empty table."""
    missing = [c for c in (label_column, group_column) if c and c not in frame.columns]
    if missing:
        raise UserDataError(f"{path} has no column(s) {missing}; its columns are "
                            f"{list(frame.columns)[:20]}. Name the label column with "
                            "--label-column.")
    if group_column == label_column:
        raise UserDataError(f"{path}: {label_column!r} cannot be both the label and the group "
                            "column; name a different --group-column, or none.")
    named = [c for c in (label_column, group_column) if c]
    copies = [str(c) for c in frame.columns
              if any(re.fullmatch(re.escape(name) + r"\.[0-9]+", str(c)) for name in named)]
    if copies:
        raise UserDataError(f"{path}: column(s) {copies} look like renamed copies of "
                            f"{named}; a copy of the label or group leaks it into the "
                            "features. Drop them, or rename them if they truly are features.")
    if frame.empty:
        raise UserDataError(f"{path} holds no rows; give a table with a header and examples.")


def _tabular(frame: pd.DataFrame, label_column: str, group_column: str | None, path: Path
             ) -> _Loaded:
    features = [c for c in frame.columns if c not in (label_column, group_column)]
    not_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])
                   or pd.api.types.is_complex_dtype(frame[c])]
    if not features or not_numeric:
        raise UserDataError(
            f"{path}: feature columns must be numeric (real); {not_numeric or 'there are none'}"
            f"{' are not' if not_numeric else ''}. Encode them as numbers, or name the label "
            "and group columns with --label-column / --group-column."
        )

    def cell(index: tuple[int, ...]) -> str:
        return f"column {features[index[1]]!r}, row {index[0]}"

    x = frame[features].to_numpy(np.float64, na_value=np.nan)
    _check_finite(x, path, cell, "missing, infinite or beyond the range of float64; impute "
                  "or drop such values first")
    y, class_names = _encode_labels(frame[label_column], path)
    if group_column:
        missing = frame[group_column].isna().to_numpy()
        if missing.any():
            raise UserDataError(f"{path}: group column {group_column!r} is missing in row "
                                f"{int(np.argmax(missing))}; give every row a group.")
        groups = frame[group_column].astype(str).to_numpy()
    else:
        groups = np.arange(len(frame)).astype(str)
    return _Loaded(x, y, class_names, groups, {"format": "tabular", "features": features}, cell)


def _light_curves(frame: pd.DataFrame, label_column: str, path: Path) -> _Loaded:
    from satcompress.tasks.transients import preprocess

    if label_column != "label" and "label" in frame.columns:
        raise UserDataError(f"{path} has a column 'label' besides the label column "
                            f"{label_column!r}; drop or rename one of them.")
    curves = frame.rename(columns={label_column: "label"}).assign(source="user")
    result = preprocess(curves, n_jobs=1)
    if len(result.x) == 0:
        raise UserDataError(f"{path}: no light curve survived preprocessing "
                            f"(skipped: {result.skipped_counts}).")
    y, class_names = _encode_labels(result.labels, path)
    groups = result.object_ids.astype(str)
    return _Loaded(result.x, y, class_names, groups,
                   {"format": "light_curves", "skipped": dict(result.skipped_counts)},
                   lambda index: f"object {groups[index[0]]!r}")


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each of :data:`NPZ_ARRAYS` present, read from its ``.npy`` header
    and checked against the bytes the archive holds for it, without loading any array."""
    declared = {}
    with zipfile.ZipFile(path) as archive:
        members = set(archive.namelist())
        for name in NPZ_ARRAYS:
            # numpy.load looks the name up as given first, then with ".npy".
            member = next((m for m in (name, f"{name}.npy") if m in members), None)
            if member is None:
                continue
            info = archive.getinfo(member)
            with archive.open(info) as stream:
                version = np.lib.format.read_magic(stream)
                if version not in ((1, 0), (2, 0)):
                    raise ValueError(f"array {name!r} is in .npy format {version}")
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(stream)
                stored = info.file_size - stream.tell()
            if dtype.hasobject:
                raise UserDataError(f"{path}: array {name!r} holds Python objects, which are "
                                    "never unpickled; save numbers or strings instead.")
            size = math.prod(shape) * dtype.itemsize
            if size != stored:
                raise UserDataError(
                    f"{path}: array {name!r} declares shape {shape} of {dtype} ({size} bytes) "
                    f"but holds {stored} bytes; the file is damaged: save it again with "
                    "numpy.savez(path, x=..., y=...)."
                )
            declared[name] = (shape, dtype)
    total = sum(math.prod(shape) * dtype.itemsize for shape, dtype in declared.values())
    if total > MAX_DATA_BYTES:
        raise UserDataError(f"{path} declares {total} bytes of arrays, over {MAX_DATA_BYTES}; "
                            "give fewer or smaller examples.")
    return declared


def _check_array_shapes(declared: dict[str, tuple[tuple[int, ...], np.dtype]], path: Path
                        ) -> None:
    """Refuse missing arrays and wrong shapes or dtypes, from the headers alone."""
    if "x" not in declared or "y" not in declared:
        raise UserDataError(f"{path} must hold arrays 'x' and 'y'; it holds {sorted(declared)} "
                            f"of {list(NPZ_ARRAYS)}.")
    (x_shape, x_dtype), (y_shape, y_dtype) = declared["x"], declared["y"]
    if len(x_shape) < 2 or x_dtype.kind not in "fiu":
        raise UserDataError(f"{path}: 'x' must be real numbers, examples first, each at least "
                            f"1-D (e.g. shape (n, features)); got shape {x_shape}, dtype "
                            f"{x_dtype}.")
    if x_shape[0] == 0:
        raise UserDataError(f"{path} holds no examples ('x' has shape {x_shape}).")
    if y_shape != x_shape[:1] or y_dtype.kind not in "iu":
        raise UserDataError(f"{path}: 'y' must be one integer label per row of 'x' "
                            f"({x_shape[0]} rows); got shape {y_shape}, dtype {y_dtype}. Save "
                            "labels as integers 0..K-1.")
    for name in ("groups", "class_names"):
        if name in declared and len(declared[name][0]) != 1:
            raise UserDataError(f"{path}: {name!r} must be 1-D; got shape {declared[name][0]}.")
    if "groups" in declared and declared["groups"][0] != y_shape:
        raise UserDataError(f"{path}: 'groups' must give one group per row of 'x' "
                            f"({x_shape[0]} rows); got shape {declared['groups'][0]}.")


def _arrays(path: Path) -> _Loaded:
    """The examples of an ``.npz``, its headers checked before any array is loaded."""
    fix = "save it with numpy.savez(path, x=..., y=...)."
    try:
        declared = _npz_headers(path)
        _check_array_shapes(declared, path)
        with np.load(path, allow_pickle=False) as arrays:
            content = {name: arrays[name] for name in declared}
    except UserDataError:
        raise
    except (OSError, ValueError, EOFError, NotImplementedError, zipfile.BadZipFile,
            zlib.error) as error:
        raise _unreadable(path, error, ".npz arrays", fix) from None
    x, y = content["x"], content["y"]
    if y.min() < 0 or int(y.max()) >= len(y) // MIN_EXAMPLES_PER_CLASS:
        low, high = int(y.min()), int(y.max())
        raise UserDataError(
            f"{path}: 'y' holds labels from {low} to {high}; labels must be 0..K-1 with at "
            f"least {MIN_EXAMPLES_PER_CLASS} examples per class, so {len(y)} examples allow at "
            f"most {len(y) // MIN_EXAMPLES_PER_CLASS} classes. Renumber the labels."
        )
    n_classes = int(y.max()) + 1
    names = content.get("class_names")
    class_names = (tuple(str(n) for n in names) if names is not None
                   else tuple(f"class {c}" for c in range(n_classes)))
    if len(class_names) < n_classes:
        raise UserDataError(f"{path}: 'y' has labels up to {n_classes - 1} but 'class_names' "
                            f"names {len(class_names)} classes.")
    if len(set(class_names)) < len(class_names):
        raise UserDataError(f"{path}: 'class_names' repeats a name; give each class its own.")

    def cell(index: tuple[int, ...]) -> str:
        return f"x[{', '.join(map(str, index))}]"

    x = x.astype(np.float64)
    _check_finite(x, path, cell, "missing or infinite; impute or drop such examples first")
    groups = content.get("groups", np.arange(len(y))).astype(str)
    return _Loaded(x, y.astype(np.int64), class_names, groups, {"format": "arrays"}, cell)


def _standardise(loaded: _Loaded, train: np.ndarray, path: Path) -> np.ndarray:
    """``x`` standardised with the training rows' mean and standard deviation (recorded in
    ``preprocessing``), refusing a column too large to standardise."""
    x = loaded.x
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
        mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    overflowed = ~(np.isfinite(mean) & np.isfinite(std))
    if overflowed.any():
        column = int(np.argmax(overflowed))
        row = int(train[np.argmax(np.abs(x[train, column]))])
        raise UserDataError(
            f"{path}: {loaded.cell((row, column))} is {x[row, column]:.6g}, too large to "
            "standardise its column (the mean or standard deviation overflows float64); "
            "rescale the column, e.g. to other units or a logarithm."
        )
    std[std == 0] = 1.0
    loaded.preprocessing.update(mean=mean.tolist(), std=std.tolist())
    with np.errstate(over="ignore"):  # beyond float32 is refused by the caller
        return (x - mean) / std


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
        If the file is missing, unreadable or too large, a column is missing, repeated or not
        numeric, values are missing or not finite (after any conversion), labels are not
        usable, or a class has too few examples to split.
    """
    path = Path(path)
    if not path.is_file():
        raise UserDataError(f"Data file {path} does not exist.")
    if path.suffix.lower() == ".npz":
        loaded = _arrays(path)
    else:
        frame = _read_table(path)
        _check_columns(frame, label_column, group_column, path)
        if set(LIGHT_CURVE_COLUMNS) <= set(frame.columns):
            loaded = _light_curves(frame, label_column, path)
        else:
            loaded = _tabular(frame, label_column, group_column, path)
    y, groups = loaded.y, loaded.groups
    _check_classes(y, loaded.class_names, path)
    train, val, test = stratified_group_split(y, groups, seed)
    tabular = loaded.preprocessing["format"] == "tabular"
    wide = _standardise(loaded, train, path) if tabular else loaded.x
    with np.errstate(over="ignore"):  # an overflow is refused just below
        x = wide.astype(np.float32)
    _check_finite(x, path, loaded.cell, f"{'once standardised, ' if tabular else ''}beyond the "
                  f"range of float32 (+-{_FLOAT32_MAX:.3g}), the type the model runs in; "
                  "rescale the data", source=wide)
    preprocessing = {**loaded.preprocessing, "source": path.name,
                     "sha256": file_sha256(path), "seed": seed}
    return TaskData(
        *(Split(x=x[rows], y=y[rows], groups=groups[rows]) for rows in (train, val, test)),
        class_names=loaded.class_names,
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
