"""A user's own classification dataset as a task: tabular rows, light curves or arrays.

``satcompress compress --model ... --data my.csv`` (or :func:`satcompress.compress` in Python)
compresses a model the reference tasks know nothing about; this module turns the user's data
into the same :class:`TaskData` the reference tasks produce, and :func:`user_task` into the
same :class:`~satcompress.tasks.registry.Task`, so every stage, the budget, the artifact and the
report work unchanged. Formats, chosen by suffix and columns:

* **Tabular** (``.csv`` / ``.parquet`` or a DataFrame): one row per example, a label column and
  numeric feature columns (every other column except the group and split columns). The model
  gets the features exactly as the table holds them (in the recorded column order): the
  flight artifact takes the raw features too. (A model trained on standardised features gets
  its standardisation as a layer: ``standardize=True`` / ``--standardize``.)
* **Light curves** (a table with the columns ``object_id, mjd, band, flux, flux_err`` and the
  label): one row per detection in the g and r bands of a named survey (``ztf`` by default, or
  ``lsst``), preprocessed exactly as the transient task does (Gaussian-process interpolation
  to a fixed grid, :func:`satcompress.tasks.lightcurves.preprocess`); the object is the group.
* **Arrays** (``.npz``, or ``(x, y)`` / ``(x, y, groups)`` in Python): ``x`` (examples first,
  any shape), ``y`` (integer labels ``0..K-1``) and optionally ``groups`` and ``class_names``;
  used as they are.

The split is the user's when given: a split column (values ``train``, ``val`` or
``validation``, ``test``) or separate train/validation/test files or tables. Otherwise the
examples are split 60/20/20, stratified by label, never putting one group (active region,
object, ...) into two splits; without a group column every row is its own group, and a
warning says that rows from one source would leak between the splits. NumPy/pandas only:
part of the flight path.

Every problem is a :class:`UserDataError` saying what is wrong and what to do: a column name
given twice in the header (pandas would read a second ``label`` as a feature ``label.1``), a
feature named like a renamed copy of the label or group column, an empty table, a value that is
missing or not finite after any conversion (named by column and row, rows counted from 0 after
the header, or by its index in ``x``), and a file declaring more than :data:`MAX_DATA_BYTES`
(checked from the Parquet metadata or the ``.npy`` headers before any array is allocated).
"""

from __future__ import annotations

import hashlib
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
from satcompress.tasks.registry import Task

__all__ = [
    "LIGHT_CURVE_COLUMNS",
    "MAX_DATA_BYTES",
    "METRICS",
    "SPLIT_VALUES",
    "SURVEYS",
    "UserDataError",
    "read_table",
    "npz_headers",
    "read_user_data",
    "user_data",
    "user_task",
    "register_metric",
    "task_for_artifact",
    "read_artifact_data",
    "score",
]

METRICS: dict[str, bool] = {
    "accuracy": True,
    "macro_f1": True,
    "weighted_log_loss": False,
    "tss": True,
}
"""Metrics a user task can be judged by, and whether higher is better. ``tss`` (true skill
statistic at the validation-chosen threshold) needs exactly two classes. More are added by
:func:`register_metric`."""
_CUSTOM_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {}

LIGHT_CURVE_COLUMNS = ("object_id", "mjd", "band", "flux", "flux_err")
MIN_EXAMPLES_PER_CLASS = 5
"""A class needs examples in all five folds of the split to appear in train, validation and test."""
MAX_DATA_BYTES = 4 * 1024**3
"""Largest data a file may declare: the arrays of an ``.npz`` (from their headers) or a Parquet
table at 8 bytes a value (from its metadata); larger files are refused before reading."""
NPZ_ARRAYS = ("x", "y", "groups", "class_names")
SPLIT_VALUES = {"train": 0, "val": 1, "validation": 1, "test": 2}
"""Values of a split column, and the split (0 train, 1 validation, 2 test) each names."""
SURVEYS = {"ztf": "ztf", "lsst": "elasticc"}
"""Surveys whose g and r passbands light-curve tables may use, and the wavelength table
(:data:`satcompress.tasks.lightcurves.SURVEY_WAVELENGTHS_ANGSTROM`) each maps to."""
_GIVEN_SPLIT = "__satcompress_split__"
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
    split: np.ndarray | None = None
    """The user's split of each example (0 train, 1 validation, 2 test), if given."""


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


def read_table(path: Path) -> pd.DataFrame:
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
                   path: Path, split_column: str | None = None) -> None:
    """Refuse a missing label/group/split column, two of them being one column, renamed
    copies of the label or group and an empty table."""
    missing = [c for c in (label_column, group_column, split_column)
               if c and c not in frame.columns]
    if missing:
        raise UserDataError(f"{path} has no column(s) {missing}; its columns are "
                            f"{list(frame.columns)[:20]}. Name the label column with "
                            "--label-column.")
    if group_column == label_column:
        raise UserDataError(f"{path}: {label_column!r} cannot be both the label and the group "
                            "column; name a different --group-column, or none.")
    if split_column is not None and split_column in (label_column, group_column):
        raise UserDataError(f"{path}: {split_column!r} cannot be both the split column and the "
                            "label or group column; name a different --split-column.")
    named = [c for c in (label_column, group_column) if c]
    copies = [str(c) for c in frame.columns
              if any(re.fullmatch(re.escape(name) + r"\.[0-9]+", str(c)) for name in named)]
    if copies:
        raise UserDataError(f"{path}: column(s) {copies} look like renamed copies of "
                            f"{named}; a copy of the label or group leaks it into the "
                            "features. Drop them, or rename them if they truly are features.")
    if frame.empty:
        raise UserDataError(f"{path} holds no rows; give a table with a header and examples.")


def _split_codes(values: pd.Series, split_column: str, path: Path) -> np.ndarray:
    """0/1/2 (train/validation/test) from a split column's values, refusing any other."""
    text = values.astype(str).str.strip().str.lower()
    unknown = sorted(set(text) - set(SPLIT_VALUES))
    if unknown:
        raise UserDataError(f"{path}: split column {split_column!r} holds {unknown[:5]}; its "
                            f"values must be one of {sorted(SPLIT_VALUES)}.")
    return text.map(SPLIT_VALUES).to_numpy(np.int64)


def _tabular(frame: pd.DataFrame, label_column: str, group_column: str | None, path: Path,
             split_column: str | None = None) -> _Loaded:
    features = [c for c in frame.columns if c not in (label_column, group_column, split_column)]
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
    split = None if split_column is None else _split_codes(frame[split_column], split_column, path)
    return _Loaded(x, y, class_names, groups,
                   {"format": "tabular", "features": [str(c) for c in features],
                    "grouped": group_column is not None}, cell, split)


def _light_curves(frame: pd.DataFrame, label_column: str, path: Path, survey: str,
                  split_column: str | None = None) -> _Loaded:
    from satcompress.tasks.lightcurves import preprocess

    if survey not in SURVEYS:
        raise UserDataError(f"Unknown survey {survey!r} for the light curves of {path}; choose "
                            f"one of {sorted(SURVEYS)} (their g and r passbands are built in).")
    if label_column != "label" and "label" in frame.columns:
        raise UserDataError(f"{path} has a column 'label' besides the label column "
                            f"{label_column!r}; drop or rename one of them.")
    object_split = None
    if split_column is not None:
        codes = pd.Series(_split_codes(frame[split_column], split_column, path),
                          index=frame["object_id"].astype(str).to_numpy())
        per_object = codes.groupby(level=0).agg(["min", "max"])
        straddling = per_object.index[per_object["min"] != per_object["max"]]
        if len(straddling):
            raise UserDataError(f"{path}: object {straddling[0]!r} has detections in more than "
                                f"one split of {split_column!r}; give each object one split.")
        object_split = per_object["min"]
    curves = frame.rename(columns={label_column: "label"}).assign(source=SURVEYS[survey])
    try:
        result = preprocess(curves, n_jobs=1)
    except ValueError as error:
        raise UserDataError(f"{path}: {error}") from None
    if len(result.x) == 0:
        raise UserDataError(f"{path}: no light curve survived preprocessing "
                            f"(skipped: {result.skipped_counts}).")
    y, class_names = _encode_labels(result.labels, path)
    groups = result.object_ids.astype(str)
    split = None if object_split is None else object_split.loc[groups].to_numpy(np.int64)
    return _Loaded(result.x, y, class_names, groups,
                   {"format": "light_curves", "survey": survey,
                    "skipped": dict(result.skipped_counts)},
                   lambda index: f"object {groups[index[0]]!r}", split)


def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
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
        declared = npz_headers(path)
        _check_array_shapes(declared, path)
        with np.load(path, allow_pickle=False) as arrays:
            content = {name: arrays[name] for name in declared}
    except UserDataError:
        raise
    except (OSError, ValueError, EOFError, NotImplementedError, zipfile.BadZipFile,
            zlib.error) as error:
        raise _unreadable(path, error, ".npz arrays", fix) from None
    names = content.get("class_names")
    return _from_arrays(content["x"], content["y"], content.get("groups"),
                        None if names is None else tuple(str(n) for n in names), path)


def _from_file(path: Path, label_column: str, group_column: str | None,
               split_column: str | None, survey: str) -> _Loaded:
    if not path.is_file():
        raise UserDataError(f"Data file {path} does not exist.")
    if path.suffix.lower() == ".npz":
        return _arrays(path)
    return _from_frame(read_table(path), label_column, group_column, split_column, survey, path)


def _from_frame(frame: pd.DataFrame, label_column: str, group_column: str | None,
                split_column: str | None, survey: str, path: Path) -> _Loaded:
    _check_columns(frame, label_column, group_column, path, split_column)
    if set(LIGHT_CURVE_COLUMNS) <= set(frame.columns):
        return _light_curves(frame, label_column, path, survey, split_column)
    return _tabular(frame, label_column, group_column, path, split_column)


def _from_arrays(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None,
                 class_names: tuple[str, ...] | None, where: Path) -> _Loaded:
    """Examples given as arrays (in Python, or an ``.npz``'s content), checked."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2 or x.dtype.kind not in "fiub" or len(x) == 0:
        raise UserDataError(f"{where}: x must be real numbers, examples first, each at least "
                            f"1-D (e.g. shape (n, features)); got shape {x.shape}, dtype "
                            f"{x.dtype}.")
    if y.shape != x.shape[:1] or y.dtype.kind not in "iu":
        raise UserDataError(f"{where}: y must be one integer label per row of x "
                            f"({len(x)} rows); got shape {y.shape}, dtype {y.dtype}. Give "
                            "labels as integers 0..K-1.")
    if y.min() < 0 or int(y.max()) >= max(2, len(y) // MIN_EXAMPLES_PER_CLASS):
        low, high = int(y.min()), int(y.max())
        raise UserDataError(
            f"{where}: y holds labels from {low} to {high}; labels must be 0..K-1 with at "
            f"least {MIN_EXAMPLES_PER_CLASS} examples per class, so {len(y)} examples allow at "
            f"most {len(y) // MIN_EXAMPLES_PER_CLASS} classes. Renumber the labels."
        )
    n_classes = int(y.max()) + 1
    names = (tuple(str(n) for n in class_names) if class_names is not None
             else tuple(f"class {c}" for c in range(n_classes)))
    if len(names) < n_classes:
        raise UserDataError(f"{where}: y has labels up to {n_classes - 1} but the class names "
                            f"name {len(names)} classes.")
    if len(set(names)) < len(names):
        raise UserDataError(f"{where}: the class names repeat a name; give each class its own.")
    if groups is not None and np.shape(groups) != y.shape:
        raise UserDataError(f"{where}: groups must give one group per row of x ({len(x)} rows); "
                            f"got shape {np.shape(groups)}.")

    def cell(index: tuple[int, ...]) -> str:
        return f"x[{', '.join(map(str, index))}]"

    x = x.astype(np.float64)
    _check_finite(x, where, cell, "missing or infinite; impute or drop such examples first")
    kept = np.arange(len(y)) if groups is None else np.asarray(groups)
    preprocessing = {"format": "arrays", "grouped": groups is not None}
    return _Loaded(x, y.astype(np.int64), names, kept.astype(str), preprocessing, cell)


def _joined(parts: list[_Loaded], where: Path) -> _Loaded:
    """Train, validation and test parts given separately, as one set with its split."""
    first = parts[0]
    for part in parts[1:]:
        if part.preprocessing["format"] != first.preprocessing["format"] or \
                part.x.shape[1:] != first.x.shape[1:] or \
                part.preprocessing.get("features") != first.preprocessing.get("features"):
            raise UserDataError(f"{where}: the train, validation and test data differ in format, "
                                "columns or example shape; give them in one format.")
    names = sorted(set().union(*(part.class_names for part in parts)))
    if first.preprocessing["format"] == "arrays":
        names = list(max((part.class_names for part in parts), key=len))
    y = np.concatenate([np.searchsorted(names, np.asarray(part.class_names)[part.y])
                        if first.preprocessing["format"] != "arrays" else part.y
                        for part in parts])
    offsets = np.cumsum([0] + [len(part.y) for part in parts])

    def cell(index: tuple[int, ...]) -> str:
        number = int(np.searchsorted(offsets, index[0], side="right")) - 1
        inner = (index[0] - offsets[number], *index[1:])
        return f"{('train', 'validation', 'test')[number]} data: {parts[number].cell(inner)}"

    return _Loaded(np.concatenate([part.x for part in parts]), y.astype(np.int64), tuple(names),
                   np.concatenate([part.groups for part in parts]),
                   {**first.preprocessing}, cell,
                   np.repeat(np.arange(len(parts)), [len(part.y) for part in parts]))


def _check_given_split(loaded: _Loaded, where: Path) -> tuple[np.ndarray, ...]:
    """The user's train/validation/test rows, refusing an empty part or a class the training
    part lacks, warning of groups in two parts."""
    rows = tuple(np.flatnonzero(loaded.split == part) for part in range(3))
    for name, part in zip(("train", "validation", "test"), rows):
        if len(part) == 0:
            raise UserDataError(f"{where}: the {name} split is empty; give it examples (a split "
                                f"column's values: {sorted(SPLIT_VALUES)}).")
    if len(loaded.class_names) < 2:
        raise UserDataError(f"{where} holds a single class ({loaded.class_names}); a classifier "
                            "needs at least two.")
    absent = sorted(set(range(len(loaded.class_names))) - set(loaded.y[rows[0]].tolist()))
    if absent:
        raise UserDataError(f"{where}: class(es) {[loaded.class_names[c] for c in absent]} have "
                            "no example in the train split; move some there.")
    shared = set(loaded.groups[rows[0]]) & (set(loaded.groups[rows[1]]) |
                                           set(loaded.groups[rows[2]]))
    if shared and _grouped(loaded):
        warnings.warn(f"{where}: {len(shared)} group(s) have examples in train and in "
                      f"validation or test (e.g. {sorted(shared)[0]!r}): the held-out scores "
                      "are optimistic.", UserWarning, stacklevel=3)
    return rows


def _grouped(loaded: _Loaded) -> bool:
    return loaded.preprocessing["format"] == "light_curves" or bool(
        loaded.preprocessing.get("grouped"))


def _task_data(loaded: _Loaded, where: Path, seed: int, identity: dict) -> TaskData:
    """The splits of ``loaded``: the user's, or a 60/20/20 stratified group split."""
    if loaded.split is not None:
        train, val, test = _check_given_split(loaded, where)
    else:
        _check_classes(loaded.y, loaded.class_names, where)
        if not _grouped(loaded):
            warnings.warn(
                f"{where}: no group column, so the rows are split 60/20/20 independently; if "
                "several rows come from one source (an active region, an object, a star), "
                "test rows share it with training rows and the scores are optimistic. Give a "
                "group column (--group-column) or your own split (--split-column).",
                UserWarning, stacklevel=3)
        train, val, test = stratified_group_split(loaded.y, loaded.groups, seed)
    with np.errstate(over="ignore"):  # an overflow is refused just below
        x = loaded.x.astype(np.float32)
    _check_finite(x, where, loaded.cell, f"beyond the range of float32 (+-{_FLOAT32_MAX:.3g}), "
                  "the type the model runs in; rescale the data", source=loaded.x)
    preprocessing = {**loaded.preprocessing, **identity,
                     "split": "given" if loaded.split is not None else "automatic"}
    if loaded.split is None:
        preprocessing["seed"] = seed
    return TaskData(
        *(Split(x=x[rows], y=loaded.y[rows], groups=loaded.groups[rows])
          for rows in (train, val, test)),
        class_names=loaded.class_names,
        preprocessing=preprocessing,
    )


def read_user_data(
    path: str | Path,
    *,
    label_column: str = "label",
    group_column: str | None = None,
    split_column: str | None = None,
    val_path: str | Path | None = None,
    test_path: str | Path | None = None,
    survey: str = "ztf",
    seed: int = 0,
) -> TaskData:
    """The train/validation/test splits of a user's classification data (see module notes).

    Parameters
    ----------
    path : path
        ``.csv`` / ``.parquet`` (tabular or light curves) or ``.npz`` (arrays); the training
        data when ``val_path`` and ``test_path`` are given.
    label_column : str
        Column holding the class of each row (tables only).
    group_column : str, optional
        Column whose rows must stay in one split (e.g. an active region). Light curves are
        always grouped by ``object_id``; arrays by their ``groups`` array when present.
    split_column : str, optional
        Column naming each row's split (``train``, ``val``/``validation``, ``test``).
    val_path, test_path : path, optional
        The validation and test data in separate files (give both, or neither).
    survey : str
        Survey of light-curve tables (:data:`SURVEYS`: its g and r passbands).
    seed : int
        Seed of the automatic split (unused when the split is given).

    Raises
    ------
    UserDataError
        If a file is missing, unreadable or too large, a column is missing, repeated or not
        numeric, values are missing or not finite (after any conversion), labels are not
        usable, a split is empty, or a class has too few examples to split.
    """
    path = Path(path)
    if (val_path is None) != (test_path is None):
        raise UserDataError("Give both a validation and a test file (--val-data and "
                            "--test-data), or neither.")
    if val_path is not None and split_column is not None:
        raise UserDataError("Give the split either as separate files or as --split-column, "
                            "not both.")
    paths = [path] if val_path is None else [path, Path(val_path), Path(test_path)]
    parts = [_from_file(part, label_column, group_column, split_column, survey)
             for part in paths]
    loaded = parts[0] if len(parts) == 1 else _joined(parts, path)
    identity = {"source": ",".join(part.name for part in paths),
                "sha256": file_sha256(path) if len(paths) == 1 else hashlib.sha256(
                    "".join(file_sha256(part) for part in paths).encode()).hexdigest(),
                **_columns(label_column, group_column, split_column)}
    return _task_data(loaded, path, seed, identity)


def _columns(label_column: str, group_column: str | None, split_column: str | None) -> dict:
    """The columns named besides the features, as recorded in ``preprocessing``."""
    named = {"label_column": label_column, "group_column": group_column,
             "split_column": split_column}
    return {key: value for key, value in named.items() if value is not None}


def _frame_or_arrays(part: object, label_column: str, group_column: str | None,
                     split_column: str | None, class_names: tuple[str, ...] | None,
                     survey: str, where: Path) -> _Loaded:
    if isinstance(part, pd.DataFrame):
        return _from_frame(part.reset_index(drop=True), label_column, group_column,
                           split_column, survey, where)
    if isinstance(part, (tuple, list)) and len(part) in (2, 3):
        groups = part[2] if len(part) == 3 else None
        return _from_arrays(part[0], part[1], groups, class_names, where)
    raise UserDataError(f"{where}: give a pandas DataFrame or a tuple (x, y) or (x, y, groups) "
                        f"of arrays; got a {type(part).__name__}.")


def user_data(
    train: object,
    val: object = None,
    test: object = None,
    *,
    label_column: str = "label",
    group_column: str | None = None,
    split_column: str | None = None,
    class_names: tuple[str, ...] | None = None,
    survey: str = "ztf",
    seed: int = 0,
) -> TaskData:
    """A user's data given in Python: DataFrames or ``(x, y[, groups])`` arrays.

    ``train`` alone is the whole data set (split by ``split_column``, or automatically as
    :func:`read_user_data` does); with ``val`` and ``test`` the three are the user's split.
    ``class_names`` names the integer labels of arrays (default ``class 0``, ...).
    """
    where = Path("<data>")
    if (val is None) != (test is None):
        raise UserDataError("Give both val and test, or neither.")
    parts = [train] if val is None else [train, val, test]
    loaded = [_frame_or_arrays(part, label_column, group_column, split_column, class_names,
                               survey, where) for part in parts]
    joined = loaded[0] if len(loaded) == 1 else _joined(loaded, where)
    digest = hashlib.sha256()
    for array in (joined.x, joined.y, joined.split if joined.split is not None else ()):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update("\0".join(joined.class_names).encode())
    identity = {"source": "python", "sha256": digest.hexdigest(),
                **_columns(label_column, group_column, split_column)}
    return _task_data(joined, where, seed, identity)


def register_metric(name: str, function: Callable[[np.ndarray, np.ndarray], float],
                    higher_is_better: bool = True) -> str:
    """Judge user tasks by ``function(labels, probabilities) -> float`` under ``name`` too
    (this process only: search worker processes know the built-in metrics alone)."""
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"A metric's name must be an identifier, got {name!r}.")
    if name in METRICS and name not in _CUSTOM_METRICS:
        raise ValueError(f"{name!r} is a built-in metric; choose another name.")
    METRICS[name] = bool(higher_is_better)
    _CUSTOM_METRICS[name] = function
    return name


def user_task(data: TaskData, metric: str = "accuracy", name: str | None = None,
              description: str = "your model on your data") -> Task:
    """A user's data as a :class:`~satcompress.tasks.registry.Task` judged by ``metric``.

    The name defaults to ``user-`` and a hash of the data, so runs on other data never share
    checkpoints.
    """
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; choose from {', '.join(sorted(METRICS))}.")
    if metric == "tss" and data.n_classes != 2:
        raise ValueError(f"The metric tss needs two classes; the data has {data.n_classes}. "
                         "Choose accuracy, macro_f1 or weighted_log_loss.")
    name = name or f"user-{str(data.preprocessing.get('sha256', ''))[:16]}"
    return Task(name=name, description=description, module=__name__, metric=metric, data=data)


def task_for_artifact(metadata: dict, data: TaskData | None = None) -> Task:
    """The task an artifact was built for, from its metadata: a reference task by name, or a
    user's task (its metric and name as recorded) over ``data``."""
    from satcompress.tasks.registry import TASKS

    name = metadata.get("task")
    if name in TASKS:
        return TASKS[name]
    if metadata.get("metric") not in METRICS or data is None:
        raise UserDataError(f"The artifact was built for task {str(name)[:80]!r}, which is "
                            "neither a reference task nor a user's task with a known metric; "
                            "give its data (--data FILE).")
    return user_task(data, metadata["metric"], name=str(name))


def read_artifact_data(metadata: dict, path: str | Path, *, val_path: str | Path | None = None,
                       test_path: str | Path | None = None, split_column: str | None = None,
                       group_column: str | None = None, seed: int | None = None) -> TaskData:
    """A data file read the way the artifact's user data was (label column, survey, split
    seed), for :func:`~satcompress.pipeline.flight.verify_artifact`."""
    preprocessing = metadata.get("preprocessing", {})
    if preprocessing.get("format") not in ("tabular", "light_curves", "arrays"):
        raise UserDataError("This artifact was not built from a user's data file; verify it "
                            "with --task NAME.")
    path = Path(path)
    if path.suffix.lower() != ".npz" and path.is_file():
        try:
            present = set(_header(path)[0])
        except (OSError, ValueError) as error:
            raise _unreadable(path, error, "a table", "give a CSV or Parquet file.") from None
        recorded = preprocessing.get("group_column"), preprocessing.get("split_column")
        group_column = group_column or (recorded[0] if recorded[0] in present else None)
        if val_path is None:
            split_column = split_column or (recorded[1] if recorded[1] in present else None)
    data = read_user_data(path, label_column=str(preprocessing.get("label_column", "label")),
                          group_column=group_column, split_column=split_column,
                          val_path=val_path, test_path=test_path,
                          survey=str(preprocessing.get("survey", "ztf")),
                          seed=int(preprocessing.get("seed", 0)) if seed is None else seed)
    if preprocessing.get("features") not in (None, data.preprocessing.get("features")):
        raise UserDataError(f"{path} has the feature columns {data.preprocessing['features'][:8]}"
                            f"...; the artifact takes {preprocessing['features'][:8]}... in that "
                            "order. Give the data the model was compressed with.")
    if tuple(metadata.get("class_names", data.class_names)) != data.class_names:
        raise UserDataError(f"{path} has the classes {data.class_names}; the artifact predicts "
                            f"{tuple(metadata['class_names'])}.")
    return data


def score(
    val_probabilities: np.ndarray,
    val_labels: np.ndarray,
    test_probabilities: np.ndarray,
    test_labels: np.ndarray,
    metric: str = "accuracy",
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
    if metric in _CUSTOM_METRICS:
        scores[metric] = float(_CUSTOM_METRICS[metric](np.asarray(test_labels),
                                                       test_probabilities))
    if n_classes == 2:
        threshold = best_tss_threshold(val_labels, np.asarray(val_probabilities)[:, 1])
        scores["tss"] = binary_scores(test_labels, test_probabilities[:, 1], threshold)["tss"]
    elif metric == "tss":
        raise ValueError(f"The metric tss needs two classes; the data has {n_classes}. Choose "
                         "accuracy, macro_f1 or weighted_log_loss.")
    return scores
