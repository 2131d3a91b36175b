"""Light-curve preprocessing on concatenated objects: checks, normalisation, ordering, and
results that do not depend on the objects processed together."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from satcompress.tasks import lightcurves
from satcompress.tasks.lightcurves import ObjectCurve, PreprocessingConfig

LSST = lightcurves.LSST_PASSBAND_WAVELENGTHS_ANGSTROM


def _curve(object_id: str, bands: list[str], flux: list[float], source: str = "ztf",
           times: list[float] | None = None, errors: list[float] | None = None) -> ObjectCurve:
    times = list(58000.0 + 3.0 * np.arange(len(bands))) if times is None else times
    errors = [10.0] * len(bands) if errors is None else errors
    return ObjectCurve(object_id, source, np.array(times, float), np.array(bands, dtype=str),
                       np.array(flux, float), np.array(errors, float))  # fmt: skip


def _oracle(curve: ObjectCurve, minimum: int):
    """One object checked and normalised plainly, as the per-object code did."""
    short = [band for band in ("g", "r") if np.sum(curve.bands == band) < minimum]
    if short:
        return f"fewer_than_{minimum}_points_in_{'_and_'.join(short)}", None
    if not (np.all(np.isfinite(curve.flux)) and np.all(np.isfinite(curve.flux_error))
            and np.all(curve.flux_error > 0)):  # fmt: skip
        return "non_finite_flux_or_non_positive_error", None
    if curve.times_days.max() - curve.times_days.min() <= 0:
        return "zero_time_span", None
    peak = curve.flux[np.isin(curve.bands, ["g", "r"])].max()
    if peak <= 0:
        return "no_positive_flux", None
    table = lightcurves.SURVEY_WAVELENGTHS_ANGSTROM[curve.source]
    return None, (curve.times_days - curve.times_days.min(),
                  np.array([table[band] for band in curve.bands]),
                  curve.flux / peak, curve.flux_error / peak)


CURVES = [
    _curve("good", ["g", "r", "g", "r"], [5.0, 8.0, 12.0, 3.0]),
    _curve("one_g", ["g", "r", "r"], [5.0, 8.0, 12.0]),
    _curve("empty", [], []),
    _curve("nan", ["g", "r", "g", "r"], [5.0, np.nan, 12.0, 3.0]),
    _curve("zero_error", ["g", "r", "g", "r"], [5.0, 8.0, 12.0, 3.0], errors=[10, 0, 10, 10]),
    _curve("no_span", ["g", "r", "g", "r"], [5.0, 8.0, 12.0, 3.0], times=[58000.0] * 4),
    _curve("negative", ["g", "r", "g", "r"], [-5.0, -8.0, -1.0, -3.0]),
    # six LSST bands: i brighter than g and r (normalised by the g/r peak), g and r all negative
    _curve("lsst", ["u", "g", "r", "i", "g", "r", "y"], [1, 4, 6, 40, 9, 2, 3], source="lsst"),
    _curve("lsst_dark", ["g", "r", "i", "g", "r"], [-4, -6, 40, -9, -2], source="lsst"),
]


@pytest.mark.parametrize("minimum", [1, 2])
def test_prepare_gives_the_checks_and_normalisation_of_each_object(minimum):
    config = PreprocessingConfig(min_points_per_band=minimum)
    reasons, fitted, points = lightcurves._prepare(CURVES, config)
    expected = [_oracle(curve, minimum) for curve in CURVES]
    assert reasons == [reason for reason, _ in expected]
    assert list(fitted) == [i for i, (reason, _) in enumerate(expected) if reason is None]
    for position, index in enumerate(fitted):
        for ours, theirs in zip(points.curve(position), expected[index][1]):
            assert np.array_equal(ours, theirs)  # bit for bit


def test_initial_variances_take_the_first_highest_signal_to_noise_point():
    flux = np.array([1.0, 4.0, 4.0, -2.0, 3.0, -6.0, 6.0])  # ties: the first one counts
    error = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    offsets = np.array([0, 3, 7])
    ours = lightcurves._initial_variances(flux, error, offsets)
    for i, (start, end) in enumerate(zip(offsets[:-1], offsets[1:])):
        f, e = flux[start:end], error[start:end]
        signal_to_noise = np.abs(f) / np.sqrt(e**2 + (1e-2 * np.max(f)) ** 2)
        assert ours[i] == (0.5 * abs(f[np.argmax(signal_to_noise)])) ** 2
    assert list(ours) == [4.0, 9.0]  # -6 before 6 in the second object


def test_unknown_band_or_source_is_one_clear_error():
    config = PreprocessingConfig(hyperparameter_search="grid")
    with pytest.raises(ValueError, match="band 'i'"):
        lightcurves.interpolate_objects([_curve("a", ["g", "r", "g", "i", "r"], [1, 2, 3, 4, 5])],
                                        config)  # fmt: skip
    with pytest.raises(ValueError, match="unknown source"):
        lightcurves.interpolate_objects([_curve("a", ["g", "r", "g", "r"], [1, 2, 3, 4],
                                                source="hubble")], config)  # fmt: skip


def test_object_curves_order_like_a_stable_pandas_sort():
    rng = np.random.default_rng(0)
    n = 200
    table = pd.DataFrame({
        "object_id": rng.choice(["b", "a", "c10", "c2"], n),
        "mjd": rng.integers(0, 20, n).astype(float),  # many equal times: ties keep table order
        "band": rng.choice(["g", "r"], n),
        "flux": np.arange(n, dtype=float),
        "flux_err": 1.0,
        "label": "SN Ia",
        "source": "ztf",
    })  # fmt: skip
    objects, labels = lightcurves.object_curves(table)
    expected = table.sort_values(["object_id", "mjd"], kind="stable")
    assert [o.object_id for o in objects] == sorted(table["object_id"].unique())
    assert labels == ["SN Ia"] * len(objects)
    for curve in objects:
        rows = expected[expected["object_id"] == curve.object_id]
        assert np.array_equal(curve.flux, rows["flux"].to_numpy())
        assert np.array_equal(curve.times_days, rows["mjd"].to_numpy())
        assert list(curve.bands) == list(rows["band"])


def _bazin_curve(seed: int, n_points: int, object_id: str) -> ObjectCurve:
    rng = np.random.default_rng(seed)
    times = np.sort(rng.uniform(0, 60, n_points))
    bands = np.array(["g", "r"] * (n_points // 2) + ["g"] * (n_points % 2))
    truth = 1e4 * np.exp(-(times - 20) / 25) / (1 + np.exp(-(times - 20) / 4))
    flux = truth * np.where(bands == "g", 1.0, 0.8) + rng.normal(0, 300.0, n_points)
    return ObjectCurve(object_id, "ztf", times + 58000.0, bands, flux, np.full(n_points, 300.0))


def test_hyperparameters_are_the_same_alone_and_with_any_objects():
    """Bit for bit in float64 (the model inputs are float32, which hides most last-bit
    differences): the search runs all objects in step, and its last least-squares fit of one
    object must not round otherwise with company (a one-row BLAS product did)."""
    config = PreprocessingConfig(hyperparameter_search="grid")
    curves = [_bazin_curve(seed, n, f"o{seed}") for seed, n in enumerate((9, 10, 10, 23, 30, 31))]
    reasons, fitted, points = lightcurves._prepare(curves, config)
    assert reasons == [None] * len(curves)
    groups = [np.array([0]), np.array([1, 2]), np.array([3]), np.array([4, 5])]  # by padded size
    batches = [lightcurves._pad(points, members, 6000.0) for members in groups]
    together = lightcurves._search_hyperparameters(batches, config)
    order = np.concatenate(groups)
    for i in range(len(curves)):
        alone = lightcurves._search_hyperparameters([lightcurves._pad(points, order[i:i + 1],
                                                                      6000.0)], config)
        assert alone[0][0] == together[0][i] and alone[1][0] == together[1][i]
