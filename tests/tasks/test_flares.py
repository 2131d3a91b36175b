"""The flare task: validated records, SHARP scaling, region/time splits, threshold on validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from satcompress.tasks import flares


@pytest.fixture(scope="module")
def records(real_data_dir):
    return flares.read_records()


@pytest.fixture(scope="module")
def data(records):
    return flares.load(seed=0, records=records)


def test_real_records_are_read_and_rows_with_nan_features_counted(records):
    assert len(records.frame) + records.skipped_rows == 8874
    assert records.skipped_rows > 0  # the published file has a few NaN keys
    assert np.isfinite(records.frame[list(flares.SHARP_KEYS)].to_numpy(float)).all()


def test_missing_column_is_a_clear_error(tmp_path):
    path = tmp_path / "sharp.csv"
    pd.DataFrame({"FlareNumber": [0, 1], "NOAA_AR": [1, 2], "T_REC": ["2011-01-01", "2011-01-02"]}).to_csv(
        path, sep=";", index=False
    )
    with pytest.raises(ValueError, match="lacks the column") as error:
        flares.read_records(path)
    assert "TOTUSJH" in str(error.value)


@pytest.mark.parametrize("split", ["region", "time"])
def test_no_active_region_is_in_two_splits_and_every_split_has_flares(records, split):
    data = flares.load(seed=0, split=split, records=records)
    train, val, test = (set(part.groups) for part in (data.train, data.val, data.test))
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(data.train) + len(data.val) + len(data.test) == len(records.frame)
    assert all(part.y.sum() > 20 for part in (data.train, data.val, data.test))


def test_time_split_never_tests_on_regions_older_than_training(records):
    frame = records.frame
    train_rows, _, test_rows = flares.split_by_time(frame)
    first_seen = frame.groupby("NOAA_AR")["T_REC"].min()
    train_regions = frame.iloc[train_rows]["NOAA_AR"].unique()
    test_regions = frame.iloc[test_rows]["NOAA_AR"].unique()
    assert first_seen[train_regions].max() <= first_seen[test_regions].min()


def test_region_split_is_fixed_by_the_seed(records):
    first, again = flares.split_by_region(records.frame, 0), flares.split_by_region(records.frame, 0)
    other = flares.split_by_region(records.frame, 1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[2], other[2])


def test_scaler_logs_wide_positive_keys_and_standardises_on_train_only(records, data):
    scaler = flares.SharpScaler.from_dict(data.preprocessing["sharp_scaler"])
    transforms = dict(zip(flares.SHARP_KEYS, scaler.transform_))
    assert transforms["TOTPOT"] == "log10" and transforms["USFLUX"] == "log10"
    assert transforms["MEANGAM"] == "identity"  # an angle: bounded, left linear
    # Standardised with training statistics (a few 10-sigma outliers are clipped) ...
    assert np.abs(data.train.x).max() <= scaler.clip_sigma
    assert np.abs(data.train.x.mean(axis=0)).max() < 0.01
    assert np.all((data.train.x.std(axis=0) > 0.8) & (data.train.x.std(axis=0) < 1 + 1e-4))
    # ... which the test split does not share exactly.
    assert np.abs(data.test.x.mean(axis=0)).max() > 0.02


def test_scaler_round_trips_and_refuses_bad_features():
    rng = np.random.default_rng(0)
    features = np.c_[10 ** rng.uniform(17, 24, 50), rng.normal(0, 1, 50), rng.choice([-1, 1], 50) * 10 ** rng.uniform(0, 5, 50)]
    scaler = flares.SharpScaler().fit(features)
    assert list(scaler.transform_) == ["log10", "identity", "asinh"]
    again = flares.SharpScaler.from_dict(scaler.to_dict())
    assert np.array_equal(scaler.transform(features), again.transform(features))
    with pytest.raises(ValueError, match="NaN or infinity"):
        scaler.transform(np.where(np.eye(50, 3) > 0, np.nan, features))
    with pytest.raises(ValueError, match="rows of 3 keys"):
        scaler.transform(features[:, :2])
    with pytest.raises(ValueError, match="not fitted"):
        flares.SharpScaler().transform(features)


def test_score_picks_the_threshold_on_validation_and_reports_on_test():
    val_labels = np.array([0, 0, 0, 1, 1])
    val_probability = np.array([0.1, 0.2, 0.3, 0.6, 0.7])
    test_labels = np.array([0, 1, 1, 0])
    test_probability = np.array([0.35, 0.5, 0.9, 0.55])
    result = flares.score(val_probability, val_labels, test_probability, test_labels)
    assert 0.3 < result["threshold"] < 0.6
    threshold = result["threshold"]
    predicted = test_probability >= threshold
    recall = predicted[test_labels == 1].mean()
    false_alarm = predicted[test_labels == 0].mean()
    assert result["tss"] == pytest.approx(recall - false_alarm)


def test_logistic_baseline_reaches_the_published_figure(data):
    result = flares.baseline(data, seed=0)
    # Region-grouped 70/30 splits, threshold 0.5: about 0.78 for this dataset.
    assert result["logreg_tss_at_0.5_5x70/30_mean"] == pytest.approx(0.78, abs=0.04)
    assert 0.4 < result["logreg_tss"] < 0.95
