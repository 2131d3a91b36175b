"""Transient task: labels, flux conversion, reading, GP interpolation, caching, splits, scores."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from satcompress.tasks import lightcurves, transients
from satcompress.tasks.transients import (
    CLASS_NAMES,
    N_TIMESTEPS,
    PreprocessingConfig,
    fit_gp_light_curve,
    label_to_class,
    magnitude_to_flux_njy,
    preprocess,
    score,
)

N_SUBSET_OBJECTS = 30

# --- no data needed -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("SN Ia", 0), ("Ia", 0), ("(TNS) SN Ia-91T-like", 0), ("SN Iax[02cx-like]", 0),
        ("SN Ia-CSM", 0), ("SN II", 1), ("(TNS) SN IIn", 1), ("SN IIP", 1), ("SN IIb", 1),
        ("SN II-pec", 1), ("SN Ib", 2), ("SN Ic-BL", 2), ("SN Ib/c", 2), ("SN Ibn", 2),
        ("SN Icn", 2), ("SLSN-I", 3), ("(TNS) SLSN-II", 3), ("SLSN-R", 3), ("CV", 4),
        ("Varstar", 4), ("AGN", 4), ("TDE", 4), ("M dwarf", 4), ("Other", 4), ("SN", None),
        ("SN I", None), ("FRB", None), ("SN II | SN Ib", None), ("Unheard-of type", None),
        ("", None),
    ],
)  # fmt: skip
def test_label_to_class(label, expected):
    assert label_to_class(label) == expected


def test_magnitude_to_flux_matches_hand_computation():
    flux, error = magnitude_to_flux_njy(np.array([31.4, 20.0, 0.0]), np.array([0.0, 0.1, 0.0]))
    assert flux[0] == pytest.approx(1.0)  # the zero point: m = 31.4 is 1 nJy
    assert flux[1] == pytest.approx(36307.8054770101)  # 10 ** 4.56
    assert error[1] == pytest.approx(36307.8054770101 * 0.4 * math.log(10) * 0.1)  # 3344.07
    assert flux[2] == pytest.approx(3631e9, rel=1e-4)  # AB zero magnitude = 3631 Jy


def _curve(object_id: str, times: np.ndarray, bands: list[str], flux: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {"object_id": object_id, "mjd": times, "band": bands, "flux": flux,
         "flux_err": 0.05 * np.max(flux) + 0 * flux, "label": "SN Ia", "source": "ztf"}
    )  # fmt: skip


def _bazin(times: np.ndarray, peak: float) -> np.ndarray:
    return peak * np.exp(-(times - 20) / 25) / (1 + np.exp(-(times - 20) / 4))


def test_object_with_fewer_than_two_points_in_a_band_is_skipped_and_counted():
    times = np.linspace(0, 60, 12)
    good = _curve("good", times, ["g", "r"] * 6, _bazin(times, 1000.0))
    lonely_g = _curve("lonely", times[:6], ["g"] + ["r"] * 5, _bazin(times[:6], 500.0))
    result = preprocess(pd.concat([good, lonely_g]), n_jobs=1)
    assert result.object_ids.tolist() == ["good"]
    assert result.x.shape == (1, N_TIMESTEPS, 4) and result.x.dtype == np.float32
    assert result.skipped_counts == {"ztf/fewer_than_2_points_in_g": 1}


def test_gp_passes_near_observed_normalised_fluxes():
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0, 80, 40))
    bands = np.array(["g", "r"] * 20)
    truth = _bazin(times, 1.0) * np.where(bands == "g", 1.0, 0.8)
    error = np.full(len(times), 0.02)
    observed = truth + rng.normal(0, 0.02, len(times))
    wavelengths = np.where(bands == "g", 4804.79, 6436.92)
    fit = fit_gp_light_curve(times, wavelengths, observed, error)
    mean, std = fit.predict(times, [4804.79, 6436.92])
    at_observations = np.where(bands == "g", mean[:, 0], mean[:, 1])
    assert np.all(np.isfinite(mean))
    # Within a few noise sigmas of the data, and closer to the truth than the data are.
    assert np.max(np.abs(at_observations - observed)) < 4 * 0.02
    assert np.sqrt(np.mean((at_observations - truth) ** 2)) < 0.02
    assert 1.0 < fit.time_length_scale_days < 1000.0
    # The predictive spread is below the noise where the data are and grows far from them.
    far_mean, far_std = fit.predict(np.array([80.0 + 1000.0]), [4804.79, 6436.92])
    assert np.median(std) < 0.02 and np.all(far_std > 5 * std.max())
    assert np.all(np.abs(far_mean) < 0.05)  # zero-mean GP: reverts to no flux
    # The true Bazin peak is at 20 + 4 ln(25/4 - 1) = 26.6 days.
    assert fit.peak_time(0.0, 80.0, [4804.79, 6436.92]) == pytest.approx(26.6, abs=3.0)


def test_preprocess_rejects_bad_table():
    with pytest.raises(ValueError, match="lacks the column"):
        preprocess(pd.DataFrame({"object_id": ["a"], "mjd": [0.0]}))
    bad_band = _curve("a", np.arange(4.0), ["g", "r", "i", "g"], np.ones(4))
    with pytest.raises(ValueError, match=r"bands \['i'\]"):
        preprocess(bad_band)


def _write_elasticc_alerts(folder: Path) -> Path:
    def point(source_id: int, band: str, mjd: float, flux: float) -> dict:
        return {"diaObjectId": 7, "diaSourceId": source_id, "filterName": band,
                "midPointTai": mjd, "psFlux": flux, "psFluxErr": 10.0}  # fmt: skip

    short = {
        "diaSource": point(2, "r", 60001.0, 200.0),
        "prvDiaSources": [point(1, "g", 60000.0, 100.0)],
    }
    long = {
        "diaSource": point(5, "g", 60004.0, 500.0),
        "prvDiaSources": [point(1, "g", 60000.0, 100.0), point(2, "r", 60001.0, 200.0),
                          point(3, "i", 60002.0, 300.0), point(4, "r", 60003.0, 400.0)],
    }  # fmt: skip
    path = folder / "classId=113" / "part-0.parquet"
    path.parent.mkdir(parents=True)
    pd.DataFrame([short, long]).to_parquet(path)
    return path


def test_elasticc_keeps_the_alert_with_the_longest_history(tmp_path):
    path = _write_elasticc_alerts(tmp_path)
    curves = transients.read_elasticc_light_curves([path])
    assert curves["object_id"].unique().tolist() == ["7"]
    assert curves["flux"].tolist() == [100.0, 200.0, 400.0, 500.0]  # i band dropped
    assert curves["band"].tolist() == ["g", "r", "r", "g"]
    assert set(curves["label"]) == {"SN II"} and set(curves["source"]) == {"elasticc"}


def test_elasticc_file_without_alert_columns_is_a_clear_error(tmp_path):
    path = tmp_path / "classId=111" / "part-0.parquet"
    path.parent.mkdir()
    pd.DataFrame({"alertId": [1]}).to_parquet(path)
    expected = r"part-0.parquet lacks the column\(s\) \['diaSource', 'prvDiaSources'\]"
    with pytest.raises(ValueError, match=expected):
        transients.read_elasticc_light_curves([path])


def test_score_on_hand_made_case():
    labels = np.array([0, 0, 1, 4])
    probabilities = np.array(
        [
            [0.50, 0.20, 0.10, 0.10, 0.10],  # Ia, predicted Ia
            [0.25, 0.45, 0.10, 0.10, 0.10],  # Ia, predicted II
            [0.10, 0.80, 0.05, 0.03, 0.02],  # II, predicted II
            [0.30, 0.20, 0.20, 0.20, 0.10],  # other, predicted Ia
        ]
    )
    scores = score(probabilities, labels, probabilities, labels)
    expected_loss = -((math.log(0.5) + math.log(0.25)) / 2 + math.log(0.8) + math.log(0.1)) / 3
    assert scores["weighted_log_loss"] == pytest.approx(expected_loss)
    assert scores["accuracy"] == pytest.approx(0.5)
    assert scores["recall_sn_ia"] == pytest.approx(0.5)
    assert scores["recall_sn_ii"] == pytest.approx(1.0)
    assert scores["recall_other"] == pytest.approx(0.0)
    assert math.isnan(scores["recall_slsn"]) and math.isnan(scores["recall_sn_ibc"])
    # F1: Ia (P 1/2, R 1/2) = 0.5; II (P 1/2, R 1) = 2/3; other = 0 -> mean 7/18.
    assert scores["macro_f1"] == pytest.approx(7 / 18)
    # Ia scores 0.50, 0.25 vs rest 0.10, 0.30: pairs won 2 + 1 of 4.
    assert scores["ia_vs_rest_auc"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="shape"):
        score(probabilities, labels, probabilities[:, :4], labels)


def test_split_objects_is_stratified_disjoint_and_deterministic():
    classes = np.repeat(np.arange(5), [50, 30, 10, 5, 1])
    train, val, test = transients.split_objects(classes, seed=3)
    for first, second in ((train, val), (train, test), (val, test)):
        assert len(np.intersect1d(first, second)) == 0
    assert len(train) + len(val) + len(test) == len(classes)
    assert np.bincount(classes[test], minlength=5).tolist() == [10, 6, 2, 1, 0]
    again = transients.split_objects(classes, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))


# --- real data (a small subset) --------------------------------------------------------------


@pytest.fixture(scope="module")
def real_curves(real_data_dir) -> pd.DataFrame:
    return transients.read_light_curves()


@pytest.fixture(scope="module")
def subset_task(real_curves, tmp_path_factory):
    """The task on ~30 real objects, with its own empty cache folder."""
    cache = tmp_path_factory.mktemp("transients-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SATCOMPRESS_CACHE_DIR", str(cache))
        patch.setattr(transients, "read_light_curves", lambda: real_curves)
        data = transients.load(seed=0, max_objects=N_SUBSET_OBJECTS, include_simulated=True)
        yield data, cache


def test_ztf_reading_merges_files_and_converts_magnitudes(real_curves):
    ztf = real_curves[real_curves["source"] == "ztf"]
    assert ztf["object_id"].nunique() == 2146
    assert set(ztf["band"]) == {"g", "r"}
    assert not ztf[["mjd", "flux", "flux_err"]].isna().any().any()
    assert not ztf["label"].str.startswith("(TNS)").any()
    assert not ztf.duplicated(["object_id", "band", "mjd"]).any()
    # ZTF19aahkvpi (an AGN) at JD 2459316.8495 in g: 18.757772 +- 0.094382 mag in all_nonIa.csv.gz.
    point = ztf[(ztf["object_id"] == "ZTF19aahkvpi") & (np.abs(ztf["mjd"] - 59316.3495) < 1e-3)]
    assert len(point) == 1 and point["label"].item() == "AGN"
    assert point["flux"].item() == pytest.approx(10 ** (-0.4 * (18.757772 - 31.4)), rel=1e-6)
    elasticc = real_curves[real_curves["source"] == "elasticc"]
    assert set(elasticc["label"]) == {"SN Ia", "SN II"}
    # Objects with no g/r detection have no rows, but are counted (6,676 ELAsTiCC objects).
    assert real_curves.attrs["objects_without_detections"] == {"ztf": 0, "elasticc": 1728}
    assert elasticc["object_id"].nunique() + 1728 == 6676


def test_subset_task_shapes_and_splits(subset_task):
    data, _ = subset_task
    for split in (data.train, data.val, data.test):
        assert split.x.shape[1:] == (N_TIMESTEPS, 4) and split.x.dtype == np.float32
        assert split.y.dtype == np.int64 and np.all(np.isfinite(split.x))
    n_objects = len(data.train) + len(data.val) + len(data.test)
    assert n_objects == N_SUBSET_OBJECTS
    assert data.class_names == CLASS_NAMES
    # No object in two splits; the simulated ELAsTiCC objects only in train.
    groups = [set(split.groups.tolist()) for split in (data.train, data.val, data.test)]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert all(group.startswith("ZTF") for group in groups[1] | groups[2])
    n_simulated = sum(not group.startswith("ZTF") for group in groups[0])
    assert n_simulated == data.preprocessing["split_sizes"]["train_simulated"] > 0
    assert len(data.test) > 0 and len(data.val) > 0
    counts = data.preprocessing["objects_per_class"]
    assert sum(sum(per_class.values()) for per_class in counts.values()) == N_SUBSET_OBJECTS
    real_only = transients.load(seed=0, max_objects=N_SUBSET_OBJECTS, include_simulated=False)
    assert all(group.startswith("ZTF") for group in real_only.train.groups)
    assert len(real_only.train) == len(data.train) - n_simulated
    np.testing.assert_array_equal(real_only.test.groups, data.test.groups)


def test_subset_gp_grid_is_anchored_at_the_normalised_peak(subset_task):
    data, _ = subset_task
    x = np.concatenate([data.train.x, data.val.x, data.test.x])
    mean, std = x[:, :, :2], x[:, :, 2:]
    anchor = np.flatnonzero(transients.grid_offsets_days(PreprocessingConfig()) == 0.0)
    assert anchor.tolist() == [25]  # -50 days + 25 steps of 2 days
    # Fluxes are divided by each object's maximum and the grid is centred on the GP peak, so
    # the summed g + r mean there is near the curve's maximum (a zero-mean GP can overshoot a
    # little beyond the last point of a rising curve, hence not exactly the maximum).
    summed = mean.sum(axis=2)
    assert np.all(summed[:, 25] >= 0.3 * summed.max(axis=1))
    assert np.all(mean[:, 25].max(axis=1) > 0.2) and np.median(mean.max(axis=(1, 2))) < 1.5
    assert np.all(std > 0)


def test_cache_hit_does_not_refit(subset_task, monkeypatch):
    data, cache = subset_task
    files = sorted(cache.rglob("*"))
    assert [path.suffix for path in files if path.is_file()] == [".npz"]  # no temporary left

    def refuse(*args, **kwargs):
        raise RuntimeError("interpolate_objects called: the cache was not used")

    monkeypatch.setattr(lightcurves, "interpolate_objects", refuse)
    result, info = transients.load_preprocessed(max_objects=N_SUBSET_OBJECTS)
    assert info["cache_hit"]
    again = transients.load(seed=0, max_objects=N_SUBSET_OBJECTS, include_simulated=True)
    np.testing.assert_array_equal(again.test.x, data.test.x)
    np.testing.assert_array_equal(again.train.groups, data.train.groups)
    with pytest.raises(RuntimeError, match="cache was not used"):  # the patch does bite
        transients.load_preprocessed(max_objects=N_SUBSET_OBJECTS, refresh=True)


def test_baseline_on_bazin_features(subset_task):
    data, _ = subset_task
    perfect = np.eye(len(CLASS_NAMES))[data.test.y]  # a model that is always right
    result = transients.baseline(data, seed=0, n_trees=50, test_probabilities=perfect)
    assert 0.7 < result["cv_auc_ia_vs_rest"] < 0.95
    assert result["cv_n_objects"] == 848  # 860 rows less 12 with an unused label (SN, SN I)
    features = pd.read_csv(transients.fetch(transients.FEATURES_FILE))
    covered = np.isin(data.test.groups, features["id"]).sum()
    assert result["split_n_test_objects"] == covered
    if math.isnan(result["split_auc_ia_vs_rest"]):  # the covered test objects are one class
        assert math.isnan(result["model_split_auc_ia_vs_rest"])
    else:
        assert result["model_split_auc_ia_vs_rest"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="test_probabilities has 1 rows"):
        transients.baseline(data, n_trees=5, test_probabilities=perfect[:1])
