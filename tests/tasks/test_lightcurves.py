"""Light-curve preprocessing: the batched GP against scikit-learn, the grid search, workers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from satcompress.tasks import lightcurves
from satcompress.tasks.lightcurves import ObjectCurve, PreprocessingConfig, interpolate_objects

WAVELENGTHS = lightcurves.ZTF_WAVELENGTHS_ANGSTROM


def _bazin(times: np.ndarray, peak: float = 1.0, rise: float = 4.0, fall: float = 25.0) -> np.ndarray:
    return peak * np.exp(-(times - 20) / fall) / (1 + np.exp(-(times - 20) / rise))


def _object(seed: int, n_points: int, object_id: str = "a", fall: float = 25.0) -> ObjectCurve:
    rng = np.random.default_rng(seed)
    times = np.sort(rng.uniform(0, 80, n_points)) + 58000.0
    bands = np.array(["g", "r"] * (n_points // 2) + ["g"] * (n_points % 2))
    truth = 1e4 * _bazin(times - 58000.0, fall=fall) * np.where(bands == "g", 1.0, 0.8)
    error = np.full(n_points, 200.0)
    return ObjectCurve(object_id, "ztf", times, bands, truth + rng.normal(0, 200.0, n_points), error)


def _batch(curves: list[ObjectCurve]):
    """The curves checked, normalised and padded as the grid search gets them."""
    reasons, fitted, points = lightcurves._prepare(curves, PreprocessingConfig())
    assert reasons == [None] * len(curves)
    return lightcurves._pad(points, fitted, 6000.0)


def _regressor(curve: ObjectCurve, time_scale: float, variance: float):
    """scikit-learn's GP with fixed hyperparameters (no optimiser): the oracle."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern

    points = lightcurves._prepare([curve], PreprocessingConfig())[2]
    times, wavelengths, flux, error = points.curve(0)
    kernel = ConstantKernel(variance, (1e-12, 1e12)) * Matern(
        [time_scale, 6000.0], [(1e-3, 1e5), (6000.0, 6000.0)], nu=1.5
    )
    regressor = GaussianProcessRegressor(kernel, alpha=error**2, optimizer=None)
    return regressor.fit(np.column_stack([times, wavelengths]), flux)


def test_batched_log_likelihood_equals_scikit_learn_and_ignores_padding():
    curves = [_object(0, 9), _object(1, 17), _object(2, 30)]
    config = PreprocessingConfig()
    batch = _batch(curves)
    assert batch.times.shape == (3, 32)  # padded to the ladder size of the largest
    log_scales = np.log([[3.0, 20.0], [3.0, 20.0], [3.0, 20.0]])
    log_variances = np.log(batch.initial_variance)[:, None] + np.array([[-1.0, 0.0, 2.0]])
    ours = lightcurves._grid_likelihoods(batch, log_scales, log_variances)
    for i, curve in enumerate(curves):
        for g in range(2):
            for h in range(3):
                theta = np.array([log_variances[i, h], log_scales[i, g], math.log(6000.0)])
                expected = _regressor(curve, 1.0, 1.0).log_marginal_likelihood(theta)
                assert ours[i, g, h] == pytest.approx(expected, rel=1e-9, abs=1e-8)
    del config


def test_batched_prediction_equals_scikit_learn():
    curves = [_object(3, 12), _object(4, 25)]
    config = PreprocessingConfig()
    batch = _batch(curves)
    log_scale, log_variance = np.log([8.0, 30.0]), np.log([0.5, 2.0])
    bands = np.array([[WAVELENGTHS["g"], WAVELENGTHS["r"]]] * 2)
    x = lightcurves._predict(batch, log_scale, log_variance, bands, config)
    for i, curve in enumerate(curves):
        regressor = _regressor(curve, math.exp(log_scale[i]), math.exp(log_variance[i]))
        span = float(batch.spans[i])
        search = np.linspace(0.0, span, max(2, math.ceil(span / 0.5) + 1))
        summed = sum(regressor.predict(np.column_stack([search, np.full(len(search), w)]))
                     for w in bands[i])  # fmt: skip
        grid = search[np.argmax(summed)] + lightcurves.grid_offsets_days(config)
        for band, wavelength in enumerate(bands[i]):
            mean, std = regressor.predict(np.column_stack([grid, np.full(len(grid), wavelength)]),
                                          return_std=True)  # fmt: skip
            np.testing.assert_allclose(x[i, :, band], mean, rtol=1e-7, atol=1e-9)
            np.testing.assert_allclose(x[i, :, 2 + band], std, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_grid_search_reaches_the_lbfgs_likelihood(seed):
    curve = _object(10 + seed, 10 + 4 * seed, fall=15.0 + 10 * seed)
    config = PreprocessingConfig()
    times, wavelengths, flux, error = lightcurves._prepare([curve], config)[2].curve(0)
    reference = lightcurves.fit_gp_light_curve(times, wavelengths, flux, error, config).regressor
    log_scale, log_variance = lightcurves._search_hyperparameters([_batch([curve])], config)
    theta = np.array([log_variance[0], log_scale[0], math.log(6000.0)])
    # Within 0.05 nats of L-BFGS-B's optimum (the final grid step is 5 % in l_t), or above it.
    assert reference.log_marginal_likelihood(theta) >= reference.log_marginal_likelihood_value_ - 0.05


def test_grid_and_lbfgs_inputs_agree_on_smooth_curves():
    curves = [_object(20 + i, 24, object_id=f"o{i}", fall=20.0 + 5 * i) for i in range(4)]
    grid = interpolate_objects(curves, PreprocessingConfig())
    lbfgs = interpolate_objects(curves, PreprocessingConfig(hyperparameter_search="lbfgs"))
    for ours, reference in zip(grid, lbfgs):
        assert np.max(np.abs(ours.x - reference.x)) < 0.02  # peak-normalised flux units


def test_an_object_gives_the_same_input_alone_and_in_any_batch():
    curves = [_object(30 + i, n, object_id=f"o{i}") for i, n in enumerate((5, 9, 14, 14, 23, 40))]
    together = interpolate_objects(curves, PreprocessingConfig())
    for curve, result in zip(curves, together):
        alone = interpolate_objects([curve], PreprocessingConfig())[0]
        assert np.array_equal(alone.x, result.x)  # bit for bit: sizes padded to a fixed ladder


def test_skips_keep_their_reasons_in_order():
    good = _object(40, 12, "good")
    flat = ObjectCurve("flat", "ztf", good.times_days, good.bands, -np.abs(good.flux), good.flux_error)
    results = interpolate_objects([flat, good], PreprocessingConfig())
    assert results[0].x is None and results[0].skip_reason == "no_positive_flux"
    assert results[1].x is not None and results[1].x.shape == (100, 4)


def test_worker_processes_give_the_same_inputs_as_one_process():
    import pandas as pd

    rng = np.random.default_rng(0)
    tables = []
    for i in range(520):  # above the 512 objects from which preprocess uses workers
        times = np.sort(rng.uniform(0, 60, 6))
        flux = 1000 * np.exp(-(((times - 20) / 10) ** 2)) + rng.normal(0, 30, 6)
        tables.append(pd.DataFrame({"object_id": f"o{i:04d}", "mjd": times, "band": ["g", "r"] * 3,
                                    "flux": flux, "flux_err": 30.0, "label": "SN Ia",
                                    "source": "ztf"}))  # fmt: skip
    curves = pd.concat(tables)
    serial = lightcurves.preprocess(curves, n_jobs=1)
    parallel = lightcurves.preprocess(curves, n_jobs=2)
    assert np.array_equal(serial.x, parallel.x) and serial.skipped_counts == parallel.skipped_counts
    np.testing.assert_array_equal(serial.object_ids, parallel.object_ids)
