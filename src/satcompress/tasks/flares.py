"""Reference task: forecasting >=M-class solar flares from SDO/HMI SHARP parameters.

Data: ``flares/sharp_geM_24h/dataset.csv`` (8,874 daily SHARP records of 1,289 NOAA active
regions, 2010-2019; label 1 when a >=M GOES flare followed 24-48 h later). The features are
the 25 SHARP and CGEM Lorentz-force keys, scaled per key as suited to their dynamic range
(:class:`SharpScaler`). Rows of one active region are strongly correlated, so splits are made
by region (or by time), never by row (Bobra & Couvidat 2015; Ahmadzadeh et al. 2021).

Metrics follow Bloomfield et al. 2012: TSS is primary; the decision threshold is chosen on
validation and the scores are reported on test. This module is NumPy/pandas only: the scaler
is part of the flight path and must run where there is no PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from satcompress.data import fetch
from satcompress.measure.metrics import best_tss_threshold, binary_scores
from satcompress.tasks.base import Split, TaskData, grouped_fold_split, stratified_group_split

__all__ = [
    "DATA_FILE",
    "SHARP_KEYS",
    "CLASS_NAMES",
    "PRIMARY_METRIC",
    "HIGHER_IS_BETTER",
    "FlareRecords",
    "read_records",
    "SharpScaler",
    "split_by_region",
    "split_by_time",
    "load",
    "score",
    "baseline",
]

DATA_FILE = "flares/sharp_geM_24h/dataset.csv"
SHARP_KEYS = (
    "TOTUSJH", "TOTBSQ", "TOTPOT", "TOTUSJZ", "ABSNJZH", "SAVNCPP", "USFLUX", "AREA_ACR",
    "TOTFZ", "MEANPOT", "R_VALUE", "EPSZ", "SHRGT45", "MEANSHR", "MEANGAM", "MEANGBT",
    "MEANGBZ", "MEANGBH", "MEANJZH", "TOTFY", "MEANJZD", "MEANALP", "TOTFX", "EPSY", "EPSX",
)  # fmt: skip
LABEL_COLUMN, REGION_COLUMN, TIME_COLUMN = "FlareNumber", "NOAA_AR", "T_REC"
CLASS_NAMES = ("no flare", ">=M flare")
PRIMARY_METRIC = "tss"
HIGHER_IS_BETTER = True
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)  # train, validation, test


@dataclass(frozen=True)
class FlareRecords:
    """The raw SHARP records after validation.

    Attributes
    ----------
    frame : pd.DataFrame
        Rows with finite features only, with columns ``SHARP_KEYS``, label, region and time.
    skipped_rows : int
        Rows dropped because a feature was NaN or infinite (reported, never silent).
    """

    frame: pd.DataFrame
    skipped_rows: int


def read_records(path: Path | None = None) -> FlareRecords:
    """Read and validate the SHARP flare dataset (``;``-separated CSV).

    Rows with a NaN or infinite feature are dropped and counted; a missing column or a label
    outside {0, 1} is an error.
    """
    path = fetch(DATA_FILE) if path is None else Path(path)
    frame = pd.read_csv(path, sep=";")
    required = (LABEL_COLUMN, REGION_COLUMN, TIME_COLUMN, *SHARP_KEYS)
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{path} lacks the column(s) {missing}; the flare task needs {list(required)} "
            "(the SHARP dataset's header, ';'-separated)."
        )
    labels = frame[LABEL_COLUMN]
    if not labels.isin([0, 1]).all():
        bad = sorted(set(labels.unique()) - {0, 1})[:5]
        raise ValueError(f"{path}: column {LABEL_COLUMN} must hold 0 or 1, found {bad}.")
    features = frame[list(SHARP_KEYS)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    finite = np.isfinite(features).all(axis=1)
    frame = frame.loc[finite, list(required)].reset_index(drop=True)
    frame[TIME_COLUMN] = pd.to_datetime(frame[TIME_COLUMN])
    return FlareRecords(frame=frame, skipped_rows=int((~finite).sum()))


class SharpScaler:
    """Per-key scaling of SHARP parameters, chosen on the training data.

    Many SHARP keys span up to ten orders of magnitude (``TOTPOT`` from 1e17 to 1e24), so
    each key is first mapped to a log-like scale, then standardised:

    * ``log10(x)`` for keys strictly positive in training with a range over two decades;
    * ``asinh(x / s)`` for signed or zero-touching keys with such a range, ``s`` = median
      ``|x|``, which is log-like in both tails and linear near zero;
    * ``x`` unchanged otherwise (already on a bounded scale, e.g. angles, ``R_VALUE``).

    Then ``(t - mean) / std`` with training statistics, clipped to +-``clip_sigma``.
    Learned state ends in ``_``; :meth:`to_dict` gives the constants the flight artifact stores.
    """

    def __init__(self, clip_sigma: float = 10.0) -> None:
        self.clip_sigma = clip_sigma

    def fit(self, features: np.ndarray) -> "SharpScaler":
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or not np.isfinite(features).all():
            raise ValueError("SharpScaler.fit needs a finite 2-D array (rows x keys).")
        low, high = features.min(axis=0), features.max(axis=0)
        scale = np.median(np.abs(features), axis=0)
        scale[scale == 0] = 1.0
        positive = low > 0
        log_range = positive & (high > 100 * np.where(positive, low, 1.0))
        signed_range = ~positive & (np.abs(features).max(axis=0) > 100 * scale)
        self.transform_ = np.where(log_range, "log10", np.where(signed_range, "asinh", "identity"))
        self.asinh_scale_ = scale
        shaped = self._shape(features)
        self.mean_ = shaped.mean(axis=0)
        self.std_ = shaped.std(axis=0)
        self.std_[self.std_ == 0] = 1.0
        return self

    def _shape(self, features: np.ndarray) -> np.ndarray:
        log_keys = self.transform_ == "log10"
        asinh_keys = self.transform_ == "asinh"
        shaped = features.copy()
        shaped[:, log_keys] = np.log10(np.maximum(features[:, log_keys], 1e-300))
        shaped[:, asinh_keys] = np.arcsinh(features[:, asinh_keys] / self.asinh_scale_[asinh_keys])
        return shaped

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Scale raw SHARP features (rows x keys) into float32 model inputs."""
        if not hasattr(self, "mean_"):
            raise ValueError("SharpScaler is not fitted: call fit(train_features) first.")
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != len(self.mean_):
            raise ValueError(
                f"SharpScaler expects rows of {len(self.mean_)} keys, got shape {features.shape}."
            )
        if not np.isfinite(features).all():
            raise ValueError("SharpScaler.transform: features contain NaN or infinity.")
        standard = (self._shape(features) - self.mean_) / self.std_
        return np.clip(standard, -self.clip_sigma, self.clip_sigma).astype(np.float32)

    def to_dict(self) -> dict:
        """Fitted constants as plain lists (for JSON and the flight artifact)."""
        return {
            "clip_sigma": self.clip_sigma,
            "transform": self.transform_.tolist(),
            "asinh_scale": self.asinh_scale_.tolist(),
            "mean": self.mean_.tolist(),
            "std": self.std_.tolist(),
        }

    @classmethod
    def from_dict(cls, state: dict) -> "SharpScaler":
        scaler = cls(clip_sigma=state["clip_sigma"])
        scaler.transform_ = np.array(state["transform"])
        scaler.asinh_scale_ = np.array(state["asinh_scale"], dtype=np.float64)
        scaler.mean_ = np.array(state["mean"], dtype=np.float64)
        scaler.std_ = np.array(state["std"], dtype=np.float64)
        return scaler


def split_by_region(frame: pd.DataFrame, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Row indices of train/val/test (60/20/20) with every active region in exactly one split,
    stratified by label (:func:`~satcompress.tasks.base.stratified_group_split`), so each
    split gets its share of the rare flaring regions."""
    return stratified_group_split(
        frame[LABEL_COLUMN].to_numpy(), frame[REGION_COLUMN].to_numpy(), seed
    )


def split_by_time(frame: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """Row indices of train/val/test in time order of each region's first record.

    Whole regions go, earliest first, to train until it holds 60% of the rows, then to
    validation (20%), then test: no region in two splits and no test region older than a
    training one. Harder than :func:`split_by_region` (the solar cycle changes the flare rate).
    """
    first_seen = frame.groupby(REGION_COLUMN)[TIME_COLUMN].min().sort_values(kind="stable")
    rows_per_region = frame.groupby(REGION_COLUMN).size().loc[first_seen.index]
    cumulative = rows_per_region.cumsum().to_numpy() / len(frame)
    part = np.searchsorted(np.cumsum(SPLIT_FRACTIONS[:2]), cumulative, side="left")
    part_of_region = dict(zip(first_seen.index, np.minimum(part, 2)))
    row_part = frame[REGION_COLUMN].map(part_of_region).to_numpy()
    return tuple(np.flatnonzero(row_part == p) for p in range(3))


def _split(frame: pd.DataFrame, rows: np.ndarray, scaler: SharpScaler) -> Split:
    part = frame.iloc[rows]
    return Split(
        x=scaler.transform(part[list(SHARP_KEYS)].to_numpy(float)),
        y=part[LABEL_COLUMN].to_numpy(np.int64),
        groups=part[REGION_COLUMN].to_numpy(),
    )


def load(
    seed: int = 0,
    split: Literal["region", "time"] = "region",
    records: FlareRecords | None = None,
    fold: int | None = None,
    n_folds: int = 5,
) -> TaskData:
    """The flare task's splits, scaled with a :class:`SharpScaler` fitted on train only.

    With ``fold`` (region split only), fold ``fold`` of ``n_folds`` region-grouped folds is
    test and the next one validation (:func:`~satcompress.tasks.base.grouped_fold_split`,
    shuffled with ``seed``); the default region split is fold 0 of 5.
    """
    records = read_records() if records is None else records
    frame = records.frame
    if split not in ("region", "time"):
        raise ValueError(f"Unknown flare split {split!r}; choose 'region' or 'time'.")
    if split == "time" and fold is not None:
        raise ValueError("The time split has one test period, not folds; use split='region' "
                         "with a fold, or the time split without one.")
    if fold is not None:
        train_rows, val_rows, test_rows = grouped_fold_split(
            frame[LABEL_COLUMN].to_numpy(), frame[REGION_COLUMN].to_numpy(), fold, n_folds, seed)
    elif split == "region":
        train_rows, val_rows, test_rows = split_by_region(frame, seed)
    else:
        train_rows, val_rows, test_rows = split_by_time(frame)
    scaler = SharpScaler().fit(frame.iloc[train_rows][list(SHARP_KEYS)].to_numpy(float))
    return TaskData(
        train=_split(frame, train_rows, scaler),
        val=_split(frame, val_rows, scaler),
        test=_split(frame, test_rows, scaler),
        class_names=CLASS_NAMES,
        preprocessing={"sharp_scaler": scaler.to_dict(), "skipped_rows": records.skipped_rows},
    )


def _flare_probability(probabilities: np.ndarray) -> np.ndarray:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return probabilities[:, 1] if probabilities.ndim == 2 else probabilities


def score(
    val_probabilities: np.ndarray,
    val_labels: np.ndarray,
    test_probabilities: np.ndarray,
    test_labels: np.ndarray,
) -> dict[str, float]:
    """Test-set flare scores at the TSS-maximising threshold found on validation.

    Probabilities may be class probabilities ``(n, 2)`` or the flare probability ``(n,)``.
    """
    threshold = best_tss_threshold(val_labels, _flare_probability(val_probabilities))
    return binary_scores(test_labels, _flare_probability(test_probabilities), threshold)


def baseline(
    data: TaskData, seed: int = 0, test_probabilities: np.ndarray | None = None
) -> dict[str, float]:
    """Logistic regression on the same scaled features and split: the bar the base must clear.

    Class-balanced L2 logistic regression fitted on train. Reports test TSS at the
    validation-chosen threshold (comparable with the deep model's ``tss``) and at 0.5, plus
    the mean TSS at 0.5 over five region-grouped 70/30 splits of the whole dataset (the
    reference figure quoted for this dataset, about 0.78). Given a model's
    ``test_probabilities`` for ``data.test``, also ``model_tss_at_0.5``, its TSS at the same
    fixed threshold as ``logreg_tss_at_0.5``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupShuffleSplit

    def fitted(x: np.ndarray, y: np.ndarray) -> LogisticRegression:
        return LogisticRegression(class_weight="balanced", max_iter=2000).fit(x, y)

    model = fitted(data.train.x, data.train.y)
    test_probability = model.predict_proba(data.test.x)[:, 1]
    results = {
        f"logreg_{key}": value
        for key, value in score(
            model.predict_proba(data.val.x)[:, 1], data.val.y, test_probability, data.test.y
        ).items()
    }
    results["logreg_tss_at_0.5"] = binary_scores(data.test.y, test_probability, 0.5)["tss"]
    if test_probabilities is not None:
        model_probability = _flare_probability(test_probabilities)
        results["model_tss_at_0.5"] = binary_scores(data.test.y, model_probability, 0.5)["tss"]

    frame = read_records().frame
    features, labels = frame[list(SHARP_KEYS)].to_numpy(float), frame[LABEL_COLUMN].to_numpy()
    grouped = GroupShuffleSplit(n_splits=5, test_size=0.3, random_state=seed)
    tss_values = []
    for train_rows, test_rows in grouped.split(features, labels, frame[REGION_COLUMN]):
        scaler = SharpScaler().fit(features[train_rows])
        split_model = fitted(scaler.transform(features[train_rows]), labels[train_rows])
        probability = split_model.predict_proba(scaler.transform(features[test_rows]))[:, 1]
        tss_values.append(binary_scores(labels[test_rows], probability, 0.5)["tss"])
    results["logreg_tss_at_0.5_5x70/30_mean"] = float(np.mean(tss_values))
    results["logreg_tss_at_0.5_5x70/30_std"] = float(np.std(tss_values))
    return results
