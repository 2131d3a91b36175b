"""Light-curve preprocessing shared by the transient task and the alert broker (torch-free).

As the t2 time-series transformer (Allam & McEwen 2022, RASTI 2, 209), which follows Avocado
(Boone 2019, AJ 158, 257): each object's fluxes are fitted with a 2-D Gaussian process over
(time, wavelength), ``A**2 * Matern_{3/2}(dt / l_t, dlambda / l_lambda)`` with ``l_lambda``
fixed at 6000 A, ``A`` and ``l_t`` chosen by maximum marginal likelihood, the flux errors as
the observation noise and a zero mean. Every detection in a passband of the source
(:data:`SURVEY_WAVELENGTHS_ANGSTROM`: g and r for ZTF, u g r i z y for LSST alerts) informs
the fit, which is evaluated at g and r. Fluxes are divided by the object's maximum observed g
or r flux (one factor for every band, so colours are kept). The GP is sampled on a FIXED grid of
:data:`N_TIMESTEPS` steps of 2 days from 50 days before to 148 days after the GP peak (a
measured deviation from t2's per-object span, see :mod:`satcompress.tasks.transients`); each
object gives one float32 ``(N_TIMESTEPS, 4)`` array: GP mean in g and r, GP std in g and r.

Hyperparameter search (:attr:`PreprocessingConfig.hyperparameter_search`)
---------------------------------------------------------------------------
``"grid"`` (what the broker runs on alerts): the exact log marginal likelihood (Rasmussen & Williams 2006,
Algorithm 2.1) is maximised over ``(log l_t, log A**2)`` by a coarse grid over the whole box
of bounds (8 x 7), refined from its best cell (and from a second, distant one when that is
close in likelihood) by :data:`GRID_LEVELS` levels of 3 x 3 points halving the step, then one
Newton step on a fitted quadratic. Many objects go at once: each is padded to a size of a
fixed ladder (a padded point has unit noise, no covariance and zero flux, which leaves the
likelihood and the predictions unchanged), objects of one size share batched Cholesky
factorisations of bordered matrices (whose last pivot gives ``y^T K^-1 y``), and the
predictions are batched solves. The search itself runs all objects in step (one set of
array operations per level for every size; the factorisations size by size), the checks and
normalisation run on the concatenated points of all objects, and where the last level did
not move, its 3 x 3 grid is the polishing stencil (not evaluated twice). An object's result
is the same, bit for bit, alone or with any others. No per-object Python optimiser runs,
which is what cost the time before: per classified alert the batched search is about 12x
faster than ``"lbfgs"`` (scikit-learn's GP regressor, L-BFGS-B from one start per object:
the default, what the task's training data and its published models use), the reference it
is measured against (``benchmarks/broker.py``, ``benchmarks/README.md``,
``tests/tasks/test_lightcurves.py``). The two give the same inputs within 0.01 (peak-normalised
flux) for 93 % of the ZTF objects; the rest are mostly objects with several likelihood maxima,
where the grid, searching the whole box, finds the higher one more often than L-BFGS-B from
its single start. A trained model scores the same on either (``benchmarks/README.md``);
retrained on grid inputs, single seeds moved the weighted log loss by +0.02 and +0.04, as much
as retraining on inputs with 0.1 % noise does, so training keeps ``"lbfgs"`` until a
multi-seed comparison settles it.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from satcompress.progress import Progress, default_jobs

__all__ = [
    "N_TIMESTEPS",
    "BANDS",
    "N_GP_CHANNELS",
    "PREPROCESSING_VERSION",
    "CURVE_COLUMNS",
    "ZTF_WAVELENGTHS_ANGSTROM",
    "LSST_WAVELENGTHS_ANGSTROM",
    "LSST_PASSBAND_WAVELENGTHS_ANGSTROM",
    "SURVEY_WAVELENGTHS_ANGSTROM",
    "HYPERPARAMETER_SEARCHES",
    "GRID_LEVELS",
    "SECOND_START_MARGIN",
    "PreprocessingConfig",
    "PreprocessedCurves",
    "ObjectCurve",
    "ObjectResult",
    "GPFit",
    "fit_gp_light_curve",
    "matern32",
    "log_marginal_likelihood",
    "grid_offsets_days",
    "object_curves",
    "interpolate_objects",
    "preprocess",
    "require_columns",
]

N_TIMESTEPS = 100
BANDS = ("g", "r")
N_GP_CHANNELS = 2 * len(BANDS)
"""Per time step: GP mean in g and r, then GP standard deviation in g and r."""
PREPROCESSING_VERSION = 4
"""Bump when the reading or GP code changes its output: it is part of the cache key and of
the artifact metadata (v4: batched grid search of the hyperparameters, was L-BFGS-B)."""
CURVE_COLUMNS = ("object_id", "mjd", "band", "flux", "flux_err", "label", "source")

ZTF_WAVELENGTHS_ANGSTROM = {"g": 4804.79, "r": 6436.92}
"""Mean wavelengths of the ZTF g and r filters (SVO filter service; astronet's ZTF values)."""
LSST_PASSBAND_WAVELENGTHS_ANGSTROM = {
    "u": 3685.0, "g": 4802.0, "r": 6231.0, "i": 7542.0, "z": 8690.0, "y": 9736.0,
}  # fmt: skip
"""Central wavelengths of the six LSST passbands used by t2 (astronet's ``LSST_PB_WAVELENGTHS``,
also Fink's t2 module for ELAsTiCC alerts). Avocado (Boone 2019) uses 3671, 4827, 6223, 7546,
8691, 9710 A: at most 26 A apart, 0.4 % of the 6000 A wavelength length scale."""
LSST_WAVELENGTHS_ANGSTROM = {band: LSST_PASSBAND_WAVELENGTHS_ANGSTROM[band] for band in BANDS}
"""The g and r entries of :data:`LSST_PASSBAND_WAVELENGTHS_ANGSTROM`: the task's ELAsTiCC
training curves (g and r detections)."""
SURVEY_WAVELENGTHS_ANGSTROM = {
    "ztf": ZTF_WAVELENGTHS_ANGSTROM,
    "elasticc": LSST_WAVELENGTHS_ANGSTROM,
    "lsst": LSST_PASSBAND_WAVELENGTHS_ANGSTROM,
}
"""The passbands each light-curve source may hold and their wavelengths: every detection in
one of them informs the 2-D GP, which is evaluated at the source's g and r (:data:`BANDS`).
``"lsst"`` (LSST alerts, all six bands) shares its g and r with ``"elasticc"``."""
HYPERPARAMETER_SEARCHES = ("grid", "lbfgs")
GRID_LEVELS = 4
"""Refinements of the coarse grid: the final steps are 1/16 of the coarse ones (6 % in l_t,
9 % in A**2)."""
SECOND_START_MARGIN = 5.0
"""A second start is refined only when the coarse grid puts it within this many nats of the
best cell (long, well-sampled curves have one sharp peak: their cost is the factorisations)."""
_COARSE_TIME_SCALES = 8  # log-spaced over the bounds of l_t
_COARSE_AMPLITUDE_STEPS = 7  # ln A**2 over the whole +-amplitude_log_range
_SQRT3 = math.sqrt(3.0)
_BATCH_ELEMENTS = 4_000_000  # kernel entries per batched factorisation (32 MB of float64)
_ROUND_ELEMENTS = 8 * _BATCH_ELEMENTS  # coarse-grid entries of the batches searched together


def require_columns(frame: pd.DataFrame, required: Sequence[str], path: Path) -> None:
    """Raise a ValueError naming the columns of ``required`` that ``frame`` lacks."""
    missing = [name for name in required if name not in frame.columns]
    if missing:
        raise ValueError(
            f"{path} lacks the column(s) {missing} (it has {list(frame.columns)}). The file is "
            "not the registered version: restore it from the data registry (satcompress.data)."
        )


@dataclass(frozen=True)
class PreprocessingConfig:
    """Settings of the GP interpolation (all of them are part of the cache key).

    Attributes
    ----------
    n_timesteps : int
        Samples of the GP per band, on a fixed grid of ``cadence_days`` anchored at the peak.
    cadence_days : float
        Spacing of the time grid (-50 to +148 days around the peak with the defaults).
    days_before_peak : float
        Where the grid starts, relative to the time of the GP peak.
    wavelength_length_scale_angstrom : float
        Fixed wavelength length scale of the Matern kernel (Avocado: 6000 A).
    initial_time_length_scale_days : float
        Starting point of the L-BFGS-B search of the time length scale (Avocado: 20 days).
    time_length_scale_bounds_days : tuple[float, float]
        Range of the time length scale (astronet: 1 to 1000 days).
    amplitude_log_range : float
        The squared amplitude may move ``exp(+-amplitude_log_range)`` from its initial guess
        (half the flux of the highest signal-to-noise point; astronet: 10).
    n_restarts_optimizer : int
        Extra L-BFGS-B starts from random hyperparameters (``"lbfgs"`` only).
    min_points_per_band : int
        Objects with fewer detections than this in g or in r are skipped (and counted).
    max_elasticc_objects : int | None
        Cap on the simulated ELAsTiCC objects used (a seeded, class-balanced draw); None = all.
    hyperparameter_search : str
        ``"lbfgs"`` (scikit-learn, per object: the task's training data, default) or
        ``"grid"`` (batched, about 12x faster: what the broker uses on alerts); see the module
        docstring.
    """

    n_timesteps: int = N_TIMESTEPS
    cadence_days: float = 2.0
    days_before_peak: float = 50.0
    wavelength_length_scale_angstrom: float = 6000.0
    initial_time_length_scale_days: float = 20.0
    time_length_scale_bounds_days: tuple[float, float] = (1.0, 1000.0)
    amplitude_log_range: float = 10.0
    n_restarts_optimizer: int = 0
    min_points_per_band: int = 2
    max_elasticc_objects: int | None = None
    hyperparameter_search: str = "lbfgs"

    def __post_init__(self) -> None:
        if self.n_timesteps < 2:
            raise ValueError(
                f"PreprocessingConfig.n_timesteps must be >= 2, got {self.n_timesteps}."
            )
        if not (self.cadence_days > 0 and self.days_before_peak >= 0):
            raise ValueError(
                "PreprocessingConfig needs cadence_days > 0 and days_before_peak >= 0; got "
                f"{self.cadence_days} and {self.days_before_peak}."
            )
        if self.min_points_per_band < 1:
            raise ValueError(
                "PreprocessingConfig.min_points_per_band must be >= 1, got "
                f"{self.min_points_per_band}."
            )
        low, high = self.time_length_scale_bounds_days
        if not 0 < low <= self.initial_time_length_scale_days <= high:
            raise ValueError(
                "PreprocessingConfig needs 0 < time_length_scale_bounds_days[0] <= "
                f"initial_time_length_scale_days <= bounds[1]; got bounds {(low, high)} and "
                f"initial {self.initial_time_length_scale_days}."
            )
        if self.wavelength_length_scale_angstrom <= 0 or self.amplitude_log_range <= 0:
            raise ValueError(
                "PreprocessingConfig.wavelength_length_scale_angstrom and amplitude_log_range "
                "must be > 0."
            )
        if self.n_restarts_optimizer < 0:
            raise ValueError("PreprocessingConfig.n_restarts_optimizer must be >= 0.")
        if self.max_elasticc_objects is not None and self.max_elasticc_objects < 0:
            raise ValueError("PreprocessingConfig.max_elasticc_objects must be >= 0 or None.")
        if self.hyperparameter_search not in HYPERPARAMETER_SEARCHES:
            raise ValueError(
                f"PreprocessingConfig.hyperparameter_search must be one of "
                f"{HYPERPARAMETER_SEARCHES}, got {self.hyperparameter_search!r}."
            )


class PreprocessedCurves(NamedTuple):
    """GP-interpolated light curves of many objects.

    Attributes
    ----------
    x : np.ndarray
        float32, ``(n_objects, n_timesteps, 4)``: GP mean of the max-normalised flux in g (0)
        and r (1), its standard deviation in g (2) and r (3), on :func:`grid_offsets_days`
        around the GP peak.
    labels, object_ids, sources : np.ndarray
        Raw label string, identifier and source ('ztf' or 'elasticc') of each object.
    skipped_counts : dict[str, int]
        Objects left out, by ``"<source>/<reason>"``; nothing is dropped without a count.
    fit_counts : dict[str, int]
        Diagnostics of the kept fits: ``time_length_scale_at_bound`` (in practice flat or
        slowly varying curves at the 1000-day bound) and, for ``"lbfgs"``,
        ``optimizer_not_converged``.
    """

    x: np.ndarray
    labels: np.ndarray
    object_ids: np.ndarray
    sources: np.ndarray
    skipped_counts: dict[str, int]
    fit_counts: dict[str, int]


@dataclass(frozen=True)
class ObjectCurve:
    """One object's detections as arrays (built by :func:`object_curves`)."""

    object_id: str
    source: str
    times_days: np.ndarray
    bands: np.ndarray
    flux: np.ndarray
    flux_error: np.ndarray


@dataclass(frozen=True)
class ObjectResult:
    """What :func:`interpolate_objects` made of one object: the ``(n_timesteps, 4)`` input, or
    None and the reason it was skipped, plus fit diagnostics."""

    x: np.ndarray | None
    skip_reason: str | None = None
    diagnostics: tuple[str, ...] = ()


def grid_offsets_days(config: PreprocessingConfig) -> np.ndarray:
    """The sampling times relative to the GP peak: ``-days_before_peak + cadence * k``."""
    return -config.days_before_peak + config.cadence_days * np.arange(config.n_timesteps)


def _initial_variances(flux: np.ndarray, flux_error: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Avocado's starting amplitude per object: (half the flux of its highest signal-to-noise
    point)**2, for objects of ``offsets`` (non-empty) on concatenated points."""
    lengths = np.diff(offsets)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    top = np.maximum.reduceat(flux, offsets[:-1])[owner]
    signal_to_noise = np.abs(flux) / np.sqrt(flux_error**2 + (1e-2 * top) ** 2)
    signal_to_noise[np.isnan(signal_to_noise)] = np.inf  # np.argmax's choice (non-finite fits fail)
    best = np.maximum.reduceat(signal_to_noise, offsets[:-1])
    hits = np.flatnonzero(signal_to_noise == best[owner])
    first = hits[np.r_[True, owner[hits][1:] != owner[hits][:-1]]]  # argmax: the first maximum
    return (0.5 * np.abs(flux[first])) ** 2


# --- the GP, batched (NumPy/SciPy) -------------------------------------------------------------


def matern32(
    times_a: np.ndarray,
    wavelengths_a: np.ndarray,
    times_b: np.ndarray,
    wavelengths_b: np.ndarray,
    time_scale: np.ndarray,
    wavelength_scale: float,
) -> np.ndarray:
    """Unit-amplitude anisotropic Matern 3/2 correlation between point sets, batched.

    ``times_a``/``wavelengths_a`` are ``(..., n)``, ``times_b``/``wavelengths_b`` ``(..., m)``,
    ``time_scale`` broadcasts against ``(...)``; returns ``(..., n, m)``:
    ``(1 + sqrt(3) r) exp(-sqrt(3) r)``, ``r**2 = (dt / l_t)**2 + (dlambda / l_lambda)**2``.
    """
    scale = np.asarray(time_scale, dtype=np.float64)[..., None, None]
    dt = (times_a[..., :, None] - times_b[..., None, :]) / scale
    dw = (wavelengths_a[..., :, None] - wavelengths_b[..., None, :]) / wavelength_scale
    return _matern32_of_squared_distance(dt * dt + dw * dw)


def _matern32_of_squared_distance(r: np.ndarray) -> np.ndarray:
    """``(1 + sqrt(3) r) exp(-sqrt(3) r)`` for ``r**2`` given; overwrites its argument."""
    np.sqrt(r, out=r)
    r *= _SQRT3
    correlation = np.negative(r)
    np.exp(correlation, out=correlation)
    r += 1.0
    correlation *= r
    return correlation


def log_marginal_likelihood(
    correlation: np.ndarray, variance: np.ndarray, noise: np.ndarray, flux: np.ndarray
) -> np.ndarray:
    """``log p(y)`` of zero-mean GPs ``K = variance * correlation + diag(noise)``, batched.

    ``correlation`` ``(..., n, n)``, or ``(..., n, n + 1)`` with a last column that is ignored
    (the layout the grid search uses: each product is then one contiguous run of memory),
    ``variance`` ``(...)``, ``noise`` and ``flux`` ``(..., n)`` (broadcast). Rasmussen &
    Williams (2006), Algorithm 2.1: ``-y^T K^-1 y / 2 - sum(log diag L) - n log(2 pi) / 2``
    with ``L = cholesky(K)``, from one Cholesky factorisation of the bordered matrix
    ``[[K, y], [y^T, c]]``, whose last pivot is ``c - y^T K^-1 y`` (``c = y^T diag(noise)^-1 y
    + 1`` keeps it positive, as ``K >= diag(noise)``), so no triangular solve is needed.
    Raises numpy.linalg.LinAlgError when a K is not positive definite.
    """
    n = correlation.shape[-2]
    variance = np.asarray(variance, dtype=np.float64)
    shape = np.broadcast_shapes(correlation.shape[:-2], variance.shape, noise.shape[:-1],
                                flux.shape[:-1])  # fmt: skip
    chi2 = (flux * flux / noise).sum(-1)  # before broadcasting
    bordered = np.empty((*shape, n + 1, n + 1))
    np.multiply(variance[..., None, None], correlation,
                out=bordered[..., :n, : correlation.shape[-1]])  # fmt: skip
    bordered[..., :n, n] = flux
    bordered[..., n, :n] = flux
    diagonal = np.einsum("...ii->...i", bordered)
    diagonal[..., :n] += noise
    diagonal[..., n] = chi2 + 1.0
    pivots = np.einsum("...ii->...i", np.linalg.cholesky(bordered))
    quadratic = chi2 + 1.0 - pivots[..., n] ** 2
    log_det = np.log(pivots[..., :n]).sum(-1)
    return -0.5 * quadratic - log_det - 0.5 * n * math.log(2 * math.pi)


class _Batch(NamedTuple):
    """Objects padded to one size ``n``: unit noise, zero flux and no covariance in padding.
    The pair arrays have an extra last column (zero mask) for :func:`log_marginal_likelihood`."""

    times: np.ndarray  # (B, n) days since the first point
    wavelengths: np.ndarray  # (B, n)
    flux: np.ndarray  # (B, n) max-normalised
    noise: np.ndarray  # (B, n) squared normalised errors; 1 in padding
    valid: np.ndarray  # (B, n) bool
    spans: np.ndarray  # (B,) days
    initial_variance: np.ndarray  # (B,)
    time_distance2: np.ndarray  # (B, n, n + 1) squared time differences
    wavelength_distance2: np.ndarray  # (B, n, n + 1) (dlambda / l_lambda)**2
    pair_mask: np.ndarray  # (B, n, n + 1) 1.0 where both points are real


_PADDED_SIZES = (4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128)


def _padded_size(n: int) -> int:
    """The size an object of ``n`` points is padded to: a step of a fixed ladder (about +20 %,
    then multiples of 32), so an object's arrays never depend on the batch it comes in."""
    for size in _PADDED_SIZES:
        if n <= size:
            return size
    return -(-n // 32) * 32


def _pad(points: _Points, members: np.ndarray, wavelength_scale: float) -> _Batch:
    """The objects ``members`` of ``points`` padded to the ladder size of the largest."""
    lengths = np.diff(points.offsets)[members]
    size = _padded_size(int(lengths.max()))
    batch = len(members)
    starts = np.cumsum(lengths) - lengths
    rows = np.repeat(np.arange(batch), lengths)
    columns = np.arange(len(rows)) - np.repeat(starts, lengths)
    source = np.repeat(points.offsets[members], lengths) + columns
    times = np.zeros((batch, size))
    wavelengths = np.zeros((batch, size))
    flux = np.zeros((batch, size))
    noise = np.ones((batch, size))
    valid = np.zeros((batch, size), dtype=bool)
    times[rows, columns] = points.times[source]
    wavelengths[rows, columns] = points.wavelengths[source]
    flux[rows, columns] = points.flux[source]
    error = points.error[source]
    noise[rows, columns] = error * error
    valid[rows, columns] = True
    initial = _initial_variances(points.flux[source], error, np.r_[starts, len(rows)])
    spans = np.maximum.reduceat(points.times[source], starts)
    widened = np.zeros((batch, size + 1))  # the extra column: mask 0
    widened[:, :size] = times
    dt = times[:, :, None] - widened[:, None, :]
    widened[:, :size] = wavelengths
    dw = (wavelengths[:, :, None] - widened[:, None, :]) / wavelength_scale
    mask = np.zeros((batch, size, size + 1))
    mask[:, :, :size] = valid[:, :, None] & valid[:, None, :]
    return _Batch(times, wavelengths, flux, noise, valid, spans, initial, dt * dt, dw * dw, mask)


def _correlations(batch: _Batch, time_scales: np.ndarray) -> np.ndarray:
    """``(B, G, n, n + 1)`` correlations (:func:`matern32`) for ``time_scales`` ``(B, G)``,
    zero at padded points and in the extra last column."""
    inverse2 = (1.0 / np.asarray(time_scales, dtype=np.float64) ** 2)[:, :, None, None]
    r = batch.time_distance2[:, None] * inverse2
    r += batch.wavelength_distance2[:, None]
    correlation = _matern32_of_squared_distance(r)
    correlation *= batch.pair_mask[:, None]
    return correlation


def _grid_likelihoods(
    batch: _Batch, log_scales: np.ndarray, log_variances: np.ndarray
) -> np.ndarray:
    """Log likelihoods ``(B, G, H)`` on the product of ``log_scales`` ``(B, G)`` and
    ``log_variances`` ``(B, H)``, factorised in slices of at most :data:`_BATCH_ELEMENTS`;
    NaN (a failed evaluation) becomes -inf."""
    n_objects, n_scales = log_scales.shape
    n_variances = log_variances.shape[1]
    size = batch.times.shape[1]
    per_scale = n_objects * n_variances * size * size
    step = max(1, _BATCH_ELEMENTS // max(per_scale, 1))
    variance = np.exp(log_variances)[:, None, :]
    noise, flux = batch.noise[:, None, None, :], batch.flux[:, None, None, :]
    parts = []
    for start in range(0, n_scales, step):
        correlation = _correlations(batch, np.exp(log_scales[:, start : start + step]))
        parts.append(log_marginal_likelihood(correlation[:, :, None], variance, noise, flux))
    padding = size - batch.valid.sum(1)  # each padded point added -log(2 pi) / 2
    likelihood = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    likelihood += (0.5 * math.log(2 * math.pi) * padding)[:, None, None]
    largest = np.finfo(np.float64).max  # as np.nan_to_num(nan=-inf), with fewer passes
    np.clip(likelihood, -largest, largest, out=likelihood)
    likelihood[np.isnan(likelihood)] = -np.inf
    return likelihood


class _Part(NamedTuple):
    """The rows of a search that belong to one batch, and the batch's arrays for those rows."""

    batch: _Batch
    rows: np.ndarray


def _parts(batches: Sequence[_Batch], owner: np.ndarray) -> list[_Part]:
    """Group search rows by batch; ``owner`` is each row's object, numbered through
    ``batches`` in order."""
    parts = []
    first = 0
    for batch in batches:
        rows = np.flatnonzero((owner >= first) & (owner < first + len(batch.times)))
        local = owner[rows] - first
        if len(rows) == len(batch.times) and np.array_equal(local, np.arange(len(rows))):
            parts.append(_Part(batch, rows))
        elif len(rows):
            parts.append(_Part(_Batch(*(field[local] for field in batch)), rows))
        first += len(batch.times)
    return parts


def _likelihoods(
    parts: Sequence[_Part], n_rows: int, log_scales: np.ndarray, log_variances: np.ndarray
) -> np.ndarray:
    """:func:`_grid_likelihoods` of every row, ``(n_rows, G, H)``, batch by batch."""
    likelihood = np.empty((n_rows, log_scales.shape[1], log_variances.shape[1]))
    for part in parts:
        likelihood[part.rows] = _grid_likelihoods(part.batch, log_scales[part.rows],
                                                  log_variances[part.rows])  # fmt: skip
    return likelihood


def _search_hyperparameters(
    batches: Sequence[_Batch], config: PreprocessingConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood ``(log l_t, log A**2)`` of every object of ``batches`` (in order) by
    the refined grid, all objects in step (batch by batch only for the factorisations).

    The coarse grid covers the whole box of bounds; the likelihood is often multi-modal
    (a smooth curve, or white noise at the shortest scale and a large amplitude), so two
    starts are refined: the best cell, and the best one at least two time-scale steps away
    when its likelihood is within :data:`SECOND_START_MARGIN` of the best.
    """
    low, high = np.log(config.time_length_scale_bounds_days)
    log_initial = np.log(np.concatenate([batch.initial_variance for batch in batches]))
    n_objects = len(log_initial)
    rows = np.arange(n_objects)
    objects = _parts(batches, rows)
    coarse_scales = np.linspace(low, high, _COARSE_TIME_SCALES)
    scales = np.broadcast_to(coarse_scales, (n_objects, _COARSE_TIME_SCALES))
    span = config.amplitude_log_range
    offsets = np.linspace(-span, span, _COARSE_AMPLITUDE_STEPS)
    variances = log_initial[:, None] + offsets
    likelihood = _likelihoods(objects, n_objects, scales, variances)
    coarse = likelihood.reshape(n_objects, -1)
    first = coarse.argmax(1)
    g1 = first // _COARSE_AMPLITUDE_STEPS
    far = np.abs(np.arange(_COARSE_TIME_SCALES)[None, :] - g1[:, None]) >= 2
    second = np.where(far[:, :, None], likelihood, -np.inf).reshape(n_objects, -1).argmax(1)
    close = coarse[rows, second] >= coarse[rows, first] - SECOND_START_MARGIN
    owner = np.concatenate([rows, rows[close]])  # object of each start: firsts, then seconds
    starts = np.concatenate([first, second[close]])
    best_scale = scales[0, starts // _COARSE_AMPLITUDE_STEPS]
    best_variance = log_initial[owner] + offsets[starts % _COARSE_AMPLITUDE_STEPS]
    best_likelihood = coarse[owner, starts]
    var_low = log_initial[owner][:, None] - config.amplitude_log_range
    var_high = log_initial[owner][:, None] + config.amplitude_log_range
    repeated = objects if len(owner) == n_objects else _parts(batches, owner)
    scale_step = (high - low) / (_COARSE_TIME_SCALES - 1)
    variance_step = float(offsets[1] - offsets[0])
    steps = np.arange(-1, 2)
    pairs = np.arange(len(owner))
    for _ in range(GRID_LEVELS):
        scale_step, variance_step = scale_step / 2, variance_step / 2
        scales = np.clip(best_scale[:, None] + scale_step * steps, low, high)
        variances = np.clip(best_variance[:, None] + variance_step * steps, var_low, var_high)
        likelihood = _likelihoods(repeated, len(owner), scales, variances).reshape(len(owner), -1)
        flat = likelihood.argmax(1)
        moved = likelihood[pairs, flat] > best_likelihood  # never step to a worse point
        best_scale = np.where(moved, scales[pairs, flat // 3], best_scale)
        best_variance = np.where(moved, variances[pairs, flat % 3], best_variance)
        best_likelihood = np.maximum(best_likelihood, likelihood[pairs, flat])
    chosen = rows.copy()  # the first start of each object, unless its second one did better
    seconds = np.arange(n_objects, len(owner))
    wins = best_likelihood[seconds] > best_likelihood[owner[seconds]]
    chosen[owner[seconds[wins]]] = seconds[wins]
    best = best_scale[chosen], best_variance[chosen], best_likelihood[chosen]
    # Where the last level did not move, the polishing stencil is that level's own grid.
    known = np.where(moved[chosen, None], np.nan, likelihood[chosen])
    bounds = (low, high), (log_initial - config.amplitude_log_range,
                           log_initial + config.amplitude_log_range)  # fmt: skip
    return _polish(batches, objects, best, known, (scale_step, variance_step), bounds)


def _polish(
    batches: Sequence[_Batch],
    objects: Sequence[_Part],
    best: tuple[np.ndarray, np.ndarray, np.ndarray],
    known: np.ndarray,
    steps: tuple[float, float],
    bounds: tuple[tuple[float, float], tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """One Newton step on a last 3 x 3 stencil around the grid's best point: the vertex of the
    quadratic fitted to it (within one step) where the likelihood there is higher, else the
    best point of the stencil. ``known``: the stencil's likelihoods where already evaluated
    (rows of NaN elsewhere)."""
    scale, variance, likelihood = best
    (low, high), (var_low, var_high) = bounds
    offsets = np.arange(-1, 2)
    scales = np.clip(scale[:, None] + steps[0] * offsets, low, high)
    variances = np.clip(variance[:, None] + steps[1] * offsets, var_low[:, None], var_high[:, None])
    stencil = known.copy()
    missing = np.flatnonzero(np.isnan(known[:, 0]))
    if len(missing):
        stencil[missing] = _likelihoods(_parts(batches, missing), len(missing), scales[missing],
                                        variances[missing]).reshape(len(missing), 9)  # fmt: skip

    # Least-squares quadratic a + b x + c y + d x^2 + e x y + f y^2 on the stencil (x: scale
    # steps, y: variance steps), then its vertex: the ridge of l_t and A**2 is often diagonal.
    x, y = (grid.reshape(-1) for grid in np.meshgrid(offsets, offsets, indexing="ij"))
    design = np.column_stack([np.ones(9), x, y, x * x, x * y, y * y])
    finite = np.all(np.isfinite(stencil), axis=1)
    values = np.where(finite[:, None], stencil, 0.0)
    # Never a one-row product: BLAS runs it as gemv, which rounds otherwise than gemm, and an
    # object's fit would then depend on the objects searched with it.
    stacked = np.concatenate([values, values[:1]]) if len(values) == 1 else values
    _, b, c, d, e, f = (stacked @ np.linalg.pinv(design).T)[: len(values)].T
    determinant = 4 * d * f - e * e
    concave = finite & (d < 0) & (determinant > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        shift_x = np.where(concave, (e * c - 2 * f * b) / determinant, 0.0)
        shift_y = np.where(concave, (e * b - 2 * d * c) / determinant, 0.0)
    new_scale = np.clip(scale + steps[0] * np.clip(shift_x, -1, 1), low, high)
    new_variance = np.clip(variance + steps[1] * np.clip(shift_y, -1, 1), var_low, var_high)
    polished = _likelihoods(objects, len(scale), new_scale[:, None],
                            new_variance[:, None])[:, 0, 0]  # fmt: skip
    rows = np.arange(len(scale))
    flat = stencil.argmax(1)  # its centre is the grid's best point
    scale, variance = scales[rows, flat // 3], variances[rows, flat % 3]
    better = polished > np.maximum(likelihood, stencil.max(1))
    return np.where(better, new_scale, scale), np.where(better, new_variance, variance)


def _predict(
    batch: _Batch,
    log_scale: np.ndarray,
    log_variance: np.ndarray,
    band_wavelengths: np.ndarray,
    config: PreprocessingConfig,
) -> np.ndarray:
    """``(B, n_timesteps, 4)``: GP mean and std in each band on the grid around the peak.

    The peak is the maximum of the mean summed over the bands on a 0.5-day grid over the
    observed span (as :meth:`GPFit.peak_time`); ``band_wavelengths`` is ``(B, n_bands)``.
    """
    scale, variance = np.exp(log_scale), np.exp(log_variance)
    wavelength_scale = config.wavelength_length_scale_angstrom
    size = batch.times.shape[1]
    correlation = _correlations(batch, scale[:, None])[:, 0, :, :size]
    kernel = variance[:, None, None] * correlation + batch.noise[:, None, :] * np.eye(size)
    lower = np.linalg.cholesky(kernel)
    z = np.linalg.solve(lower, batch.flux[..., None])
    alpha = np.linalg.solve(lower.transpose(0, 2, 1), z)[..., 0] * batch.valid

    n_bands = band_wavelengths.shape[1]

    def cross(times: np.ndarray, masked: bool = True) -> np.ndarray:
        """(B, m) -> (B, n, m * n_bands), band-major; zero at padded points if ``masked``."""
        query_t = np.repeat(times[:, None, :], n_bands, axis=1).reshape(len(times), -1)
        query_w = np.repeat(band_wavelengths[:, :, None], times.shape[1], axis=2)
        query_w = query_w.reshape(len(times), -1)
        k = matern32(batch.times, batch.wavelengths, query_t, query_w, scale, wavelength_scale)
        k *= variance[:, None, None]
        if masked:
            k *= batch.valid[..., None]
        return k

    # Peak search: per object max(2, ceil(span / 0.5) + 1) points over [0, span], padded.
    counts = np.maximum(2, np.ceil(batch.spans / 0.5).astype(np.int64) + 1)
    width = int(counts.max())
    steps = np.arange(width)
    last = counts[:, None] - 1
    search = batch.spans[:, None] * np.minimum(steps[None, :], last) / last
    total = np.einsum("bn,bnm->bm", alpha, cross(search, masked=False))  # alpha: 0 in padding
    total = total.reshape(len(search), n_bands, width).sum(1)
    total = np.where(steps[None, :] < counts[:, None], total, -np.inf)
    peak = search[np.arange(len(search)), total.argmax(1)]

    grid = peak[:, None] + grid_offsets_days(config)[None, :]
    k_grid = cross(grid)
    mean = np.einsum("bn,bnm->bm", alpha, k_grid)
    v = np.linalg.solve(lower, k_grid)
    std = np.sqrt(np.maximum(variance[:, None] - (v * v).sum(1), 0.0))
    shape = (len(grid), n_bands, config.n_timesteps)
    return np.concatenate([mean.reshape(shape), std.reshape(shape)], axis=1).transpose(0, 2, 1)


# --- the GP, per object (scikit-learn reference, "lbfgs") ---------------------------------------


class _LbfgsOptimizer:
    """L-BFGS-B for scikit-learn's GP that remembers whether it converged."""

    def __init__(self) -> None:
        self.converged = True

    def __call__(self, objective, initial_theta: np.ndarray, bounds: np.ndarray):
        from scipy.optimize import minimize  # noqa: PLC0415

        result = minimize(objective, initial_theta, method="L-BFGS-B", jac=True, bounds=bounds)
        self.converged = self.converged and bool(result.success)
        return result.x, float(result.fun)


@dataclass(frozen=True)
class GPFit:
    """Result of :func:`fit_gp_light_curve`: the fitted scikit-learn GP and its diagnostics."""

    regressor: object
    time_length_scale_days: float
    converged: bool
    time_length_scale_at_bound: bool

    def predict(
        self, times_days: np.ndarray, wavelengths_angstrom: Sequence[float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predictive mean and standard deviation, each ``(len(times), len(wavelengths))``."""
        times_days = np.asarray(times_days, dtype=np.float64)
        mean = np.empty((len(times_days), len(wavelengths_angstrom)))
        std = np.empty_like(mean)
        for column, wavelength in enumerate(wavelengths_angstrom):
            grid = np.column_stack([times_days, np.full(len(times_days), wavelength)])
            mean[:, column], std[:, column] = self.regressor.predict(grid, return_std=True)
        return mean, std

    def peak_time(
        self,
        start_days: float,
        end_days: float,
        wavelengths_angstrom: Sequence[float],
        resolution_days: float = 0.5,
    ) -> float:
        """Time of the maximum of the GP mean summed over the wavelengths in
        ``[start_days, end_days]`` (searched on a grid of ``resolution_days``)."""
        n_points = max(2, math.ceil((end_days - start_days) / resolution_days) + 1)
        times = np.linspace(start_days, end_days, n_points)
        mean = np.column_stack(
            [self.regressor.predict(np.column_stack([times, np.full(n_points, wavelength)]))
             for wavelength in wavelengths_angstrom]
        )  # fmt: skip
        return float(times[np.argmax(mean.sum(axis=1))])


def fit_gp_light_curve(
    times_days: np.ndarray,
    wavelengths_angstrom: np.ndarray,
    flux: np.ndarray,
    flux_error: np.ndarray,
    config: PreprocessingConfig = PreprocessingConfig(),  # noqa: B008 (frozen, immutable)
) -> GPFit:
    """Fit the Avocado/t2 2-D GP to one light curve with scikit-learn and L-BFGS-B (the
    ``"lbfgs"`` search; Boone 2019, sect. 3.2). ``A`` starts at half the flux of the highest
    signal-to-noise point, ``l_t`` at ``config.initial_time_length_scale_days``.

    Raises numpy.linalg.LinAlgError or ValueError if the kernel matrix cannot be factorised or
    the input is not finite.
    """
    from sklearn.exceptions import ConvergenceWarning  # noqa: PLC0415
    from sklearn.gaussian_process import GaussianProcessRegressor  # noqa: PLC0415
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern  # noqa: PLC0415

    flux = np.asarray(flux, dtype=np.float64)
    flux_error = np.asarray(flux_error, dtype=np.float64)
    if not len(flux):
        raise ValueError("fit_gp_light_curve needs at least one point.")
    initial_variance = float(_initial_variances(flux, flux_error, np.array([0, len(flux)]))[0])
    variance_factor = math.exp(config.amplitude_log_range)
    wavelength_scale = config.wavelength_length_scale_angstrom
    kernel = ConstantKernel(
        initial_variance, (initial_variance / variance_factor, initial_variance * variance_factor)
    ) * Matern(
        length_scale=[config.initial_time_length_scale_days, wavelength_scale],
        length_scale_bounds=[config.time_length_scale_bounds_days,
                             (wavelength_scale, wavelength_scale)],  # fixed
        nu=1.5,
    )  # fmt: skip
    optimizer = _LbfgsOptimizer()
    regressor = GaussianProcessRegressor(
        kernel, alpha=flux_error**2, optimizer=optimizer,
        n_restarts_optimizer=config.n_restarts_optimizer, random_state=0,
    )  # fmt: skip
    points = np.column_stack([times_days, wavelengths_angstrom]).astype(np.float64)
    with warnings.catch_warnings():
        # The only ConvergenceWarning left is scikit-learn's note that the fixed wavelength
        # length scale sits at its (equal) bounds; convergence is tracked by the optimizer.
        warnings.simplefilter("ignore", ConvergenceWarning)
        regressor.fit(points, flux)
    time_length_scale = float(regressor.kernel_.k2.length_scale[0])
    low, high = config.time_length_scale_bounds_days
    at_bound = bool(np.isclose(time_length_scale, low) or np.isclose(time_length_scale, high))
    return GPFit(regressor, time_length_scale, optimizer.converged, at_bound)


# --- objects ------------------------------------------------------------------------------------


class _Points(NamedTuple):
    """Normalised points of the objects to fit, concatenated: object ``i`` owns the points
    ``offsets[i]:offsets[i + 1]`` (made by :func:`_prepare`)."""

    offsets: np.ndarray  # (n_objects + 1,)
    times: np.ndarray  # days since the object's first point
    wavelengths: np.ndarray  # angstrom
    flux: np.ndarray  # over the object's largest g or r flux
    error: np.ndarray  # likewise

    def curve(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Times, wavelengths, flux and error of one object."""
        part = slice(self.offsets[index], self.offsets[index + 1])
        return self.times[part], self.wavelengths[part], self.flux[part], self.error[part]


def _joined(curves: Sequence[ObjectCurve], field: str, dtype: type) -> np.ndarray:
    """One field of every object, concatenated."""
    arrays = [np.asarray(getattr(curve, field), dtype=dtype) for curve in curves]
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype)


def _prepare(
    curves: Sequence[ObjectCurve], config: PreprocessingConfig
) -> tuple[list[str | None], np.ndarray, _Points]:
    """Check every object and normalise the points of those kept, on the concatenated points.

    Returns the skip reason of each object (None: kept; in the order of the checks: fewer than
    ``config.min_points_per_band`` detections in g or r, non-finite fluxes or non-positive
    errors, a zero time span, no positive g or r flux), the indices of the kept objects and
    their points: times since the first point, wavelengths, and flux and error over the largest
    g or r flux (the model sees g and r, so its inputs keep the scale of the g/r-only training
    curves when other bands are brighter). Raises ValueError for an unknown source or band.
    """
    lengths = np.array([len(curve.times_days) for curve in curves], dtype=np.int64)
    owner = np.repeat(np.arange(len(curves)), lengths)
    times = _joined(curves, "times_days", np.float64)
    bands = _joined(curves, "bands", str)
    flux = _joined(curves, "flux", np.float64)
    error = _joined(curves, "flux_error", np.float64)
    in_bands = {band: bands == band for band in BANDS}
    short = np.stack([np.bincount(owner[in_bands[band]], minlength=len(curves))
                      < config.min_points_per_band for band in BANDS], axis=1)  # fmt: skip
    bad = ~(np.isfinite(flux) & np.isfinite(error) & (error > 0))
    reasons: list[str | None] = [None] * len(curves)
    non_finite = np.bincount(owner[bad], minlength=len(curves)) > 0
    candidates = np.flatnonzero(~short.any(axis=1) & ~non_finite)  # each has points
    offsets = np.r_[0, np.cumsum(lengths[candidates])]
    keep = np.repeat(np.isin(np.arange(len(curves)), candidates), lengths)
    times, bands, flux, error = times[keep], bands[keep], flux[keep], error[keep]
    first = np.minimum.reduceat(times, offsets[:-1]) if len(times) else np.zeros(0)
    last = np.maximum.reduceat(times, offsets[:-1]) if len(times) else np.zeros(0)
    observed = np.where(np.logical_or.reduce([in_bands[band][keep] for band in BANDS]), flux,
                        -np.inf)  # the g and r fluxes
    peak = np.maximum.reduceat(observed, offsets[:-1]) if len(times) else np.zeros(0)
    zero_span = last - first <= 0
    for index in np.flatnonzero(short.any(axis=1)):
        missing = [band for band, lacking in zip(BANDS, short[index]) if lacking]
        reasons[index] = (f"fewer_than_{config.min_points_per_band}_points_in_"
                          f"{'_and_'.join(missing)}")  # fmt: skip
    for index in np.flatnonzero(non_finite & ~short.any(axis=1)):
        reasons[index] = "non_finite_flux_or_non_positive_error"
    for position, index in enumerate(candidates):
        if zero_span[position]:
            reasons[index] = "zero_time_span"
        elif peak[position] <= 0:
            reasons[index] = "no_positive_flux"
    kept = np.flatnonzero(~(zero_span | (peak <= 0)))
    fitted = candidates[kept]
    lengths = np.diff(offsets)[kept]
    chosen = np.repeat(np.isin(np.arange(len(candidates)), kept), np.diff(offsets))
    point_owner = np.repeat(np.arange(len(kept)), lengths)
    wavelengths = np.full(len(point_owner), np.nan)
    sources = np.array([curves[index].source for index in fitted], dtype=str)[point_owner]
    kept_bands = bands[chosen]
    for source in map(str, np.unique(sources)):
        if source not in SURVEY_WAVELENGTHS_ANGSTROM:
            raise ValueError(f"Light curves come from unknown source {source!r}; known: "
                             f"{sorted(SURVEY_WAVELENGTHS_ANGSTROM)}.")  # fmt: skip
        for band, wavelength in SURVEY_WAVELENGTHS_ANGSTROM[source].items():
            wavelengths[(sources == source) & (kept_bands == band)] = wavelength
    unknown = np.flatnonzero(np.isnan(wavelengths))
    if len(unknown):
        band, source = str(kept_bands[unknown[0]]), str(sources[unknown[0]])
        raise ValueError(f"Light curves hold band {band!r}, not one of the passbands "
                         f"{tuple(SURVEY_WAVELENGTHS_ANGSTROM[source])} of source {source!r}.")
    scale = peak[kept][point_owner]
    points = _Points(np.r_[0, np.cumsum(lengths)], times[chosen] - first[kept][point_owner],
                     wavelengths, flux[chosen] / scale, error[chosen] / scale)  # fmt: skip
    return reasons, fitted, points


def _finished(x: np.ndarray, diagnostics: tuple[str, ...]) -> ObjectResult:
    if not np.all(np.isfinite(x)):
        return ObjectResult(None, "gp_prediction_not_finite")
    return ObjectResult(x.astype(np.float32), None, diagnostics)


def _band_wavelengths(source: str) -> list[float]:
    """The wavelengths at which the GP of an object of ``source`` is evaluated (:data:`BANDS`)."""
    return [SURVEY_WAVELENGTHS_ANGSTROM[source][band] for band in BANDS]


def _interpolate_lbfgs(
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], source: str,
    config: PreprocessingConfig,
) -> ObjectResult:  # fmt: skip
    times, wavelengths, flux, error = arrays
    band_wavelengths = _band_wavelengths(source)
    try:
        fit = fit_gp_light_curve(times, wavelengths, flux, error, config)
        peak_time = fit.peak_time(0.0, float(times.max()), band_wavelengths)
        mean, std = fit.predict(peak_time + grid_offsets_days(config), band_wavelengths)
    except (np.linalg.LinAlgError, ValueError):
        return ObjectResult(None, "gp_fit_failed")
    diagnostics = (("optimizer_not_converged",) if not fit.converged else ()) + (
        ("time_length_scale_at_bound",) if fit.time_length_scale_at_bound else ()
    )
    return _finished(np.concatenate([mean, std], axis=1), diagnostics)


def _interpolate_grid(
    points: _Points, groups: Sequence[np.ndarray], sources: Sequence[str],
    config: PreprocessingConfig,
) -> list[ObjectResult]:  # fmt: skip
    """Batched grid search and prediction of the objects ``groups`` of ``points`` (one batch
    per group, searched in step; ``sources``: of each object of ``points``). Where a
    factorisation fails, the groups are redone one by one, then object by object, so one bad
    object fails alone."""
    try:
        batches = [_pad(points, members, config.wavelength_length_scale_angstrom)
                   for members in groups]  # fmt: skip
        log_scale, log_variance = _search_hyperparameters(batches, config)
        parts, first = [], 0
        for batch, members in zip(batches, groups):
            part = slice(first, first + len(members))
            bands = np.array([_band_wavelengths(sources[i]) for i in members])
            parts.append(_predict(batch, log_scale[part], log_variance[part], bands, config))
            first += len(members)
    except (np.linalg.LinAlgError, ValueError):
        if len(groups) > 1:
            return [result for members in groups
                    for result in _interpolate_grid(points, [members], sources, config)]
        if len(groups[0]) > 1:
            return [result for member in groups[0]
                    for result in _interpolate_grid(points, [member[None]], sources, config)]
        return [ObjectResult(None, "gp_fit_failed")]
    x = np.concatenate(parts)
    low, high = np.log(config.time_length_scale_bounds_days)
    at_bound = np.isclose(log_scale, low) | np.isclose(log_scale, high)
    finite = np.isfinite(x).all(axis=(1, 2))
    x = x.astype(np.float32)
    return [ObjectResult(x[i], None, ("time_length_scale_at_bound",) if at_bound[i] else ())
            if finite[i] else ObjectResult(None, "gp_prediction_not_finite")
            for i in range(len(x))]  # fmt: skip


@functools.cache
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, found once per process (finding them
    scans every loaded library: ~0.1 ms per call, 4 % of a broker batch's preprocessing)."""
    from threadpoolctl import ThreadpoolController  # noqa: PLC0415 (a scikit-learn dependency)

    import scipy.linalg  # noqa: F401, PLC0415 -- loads SciPy's own OpenBLAS first: a limit
    # only reaches libraries already loaded, and a first fit on many threads is slower and
    # rounds differently (the GP inputs were not bit-reproducible between runs)
    return ThreadpoolController()


def _single_threaded_blas():
    """Limit BLAS to one thread: the GP matrices are small, and multi-threaded OpenBLAS made
    the fits 3-8x slower on the 2-core machine (and oversubscribes it with worker processes)."""
    try:
        controller = _blas_controller()
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


def _size_batches(sizes: np.ndarray) -> list[list[np.ndarray]]:
    """Indices grouped by padded size (:func:`_padded_size`), each group cut into batches whose
    coarse-grid matrices hold at most :data:`_BATCH_ELEMENTS` entries (and 256 objects); the
    batches are dealt into rounds searched together, of at most :data:`_ROUND_ELEMENTS`
    coarse-grid entries (progress is reported per round)."""
    padded = np.array([_padded_size(int(n)) for n in sizes], dtype=np.int64)
    cells = _COARSE_TIME_SCALES * _COARSE_AMPLITUDE_STEPS
    rounds: list[list[np.ndarray]] = [[]]
    entries = 0
    for size in np.unique(padded):
        members = np.flatnonzero(padded == size)
        per_batch = min(256, max(1, _BATCH_ELEMENTS // (int(size + 1) ** 2 * cells)))
        for i in range(0, len(members), per_batch):
            batch = members[i : i + per_batch]
            cost = len(batch) * int(size + 1) ** 2 * cells
            if rounds[-1] and entries + cost > _ROUND_ELEMENTS:
                rounds.append([])
                entries = 0
            rounds[-1].append(batch)
            entries += cost
    return [batches for batches in rounds if batches]


def interpolate_objects(
    curves: Sequence[ObjectCurve], config: PreprocessingConfig, progress: Progress | None = None
) -> list[ObjectResult]:
    """GP-interpolate objects in this process (BLAS on one thread), one result per object in
    order, with its skip reason: the per-object form of :func:`preprocess`. An object's result
    is the same, bit for bit, whatever objects come with it (its padded size is its own).
    Raises ValueError for an unknown source or band."""
    reasons, fitted, points = _prepare(curves, config)
    results = [None if reason is None else ObjectResult(None, reason) for reason in reasons]
    sources = [curves[index].source for index in fitted]
    with _single_threaded_blas():
        if config.hyperparameter_search == "lbfgs":
            for position, index in enumerate(fitted):
                results[index] = _interpolate_lbfgs(points.curve(position), sources[position],
                                                    config)  # fmt: skip
                if progress is not None:
                    progress.advance()
        else:
            for groups in _size_batches(np.diff(points.offsets)):
                members = np.concatenate(groups)
                for member, result in zip(members, _interpolate_grid(points, groups, sources,
                                                                     config)):  # fmt: skip
                    results[fitted[member]] = result
                if progress is not None:
                    progress.advance(len(members))
    if progress is not None:
        progress.advance(len(curves) - len(fitted))
    return [result for result in results if result is not None]


def _interpolate_part(
    number: int, curves: Sequence[ObjectCurve], config: PreprocessingConfig
) -> tuple[int, list[ObjectResult]]:
    """:func:`interpolate_objects` in a worker, tagged with the part's number."""
    return number, interpolate_objects(curves, config)


def object_curves(curves: pd.DataFrame) -> tuple[list[ObjectCurve], list[str]]:
    """Split a long table into per-object arrays (object order = sorted object ids, points in
    time order, ties in table order)."""
    require_columns(curves, CURVE_COLUMNS, Path("<light-curve table>"))
    columns = {name: curves[name].to_numpy() for name in CURVE_COLUMNS}
    sources = pd.unique(columns["source"])
    bad_sources = sorted(set(sources) - set(SURVEY_WAVELENGTHS_ANGSTROM))
    if bad_sources:
        raise ValueError(
            f"Light curves come from unknown source(s) {bad_sources}; known: "
            f"{sorted(SURVEY_WAVELENGTHS_ANGSTROM)} (add the survey's wavelengths to use one)."
        )
    for source in sorted(sources):
        supported = tuple(SURVEY_WAVELENGTHS_ANGSTROM[source])
        bands = pd.unique(columns["band"][columns["source"] == source])
        bad_bands = sorted(set(bands) - set(supported))
        if bad_bands:
            raise ValueError(f"Light curves hold bands {bad_bands}; only {supported} are "
                             f"supported for source {source!r}.")
    codes, _ = pd.factorize(columns["object_id"], sort=True)
    codes[codes < 0] = codes.max() + 1  # missing ids last, as pandas sorts them
    order = np.lexsort((columns["mjd"], codes))  # stable, as a stable sort by (object, mjd)
    columns = {name: values[order] for name, values in columns.items()}
    codes = codes[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)]
    times = columns["mjd"].astype(np.float64)
    bands = columns["band"].astype(str)
    flux = columns["flux"].astype(np.float64)
    errors = columns["flux_err"].astype(np.float64)
    objects = [
        ObjectCurve(str(columns["object_id"][start]), str(columns["source"][start]),
                    times[start:end], bands[start:end], flux[start:end], errors[start:end])
        for start, end in zip(starts, ends)
    ]  # fmt: skip
    return objects, [str(columns["label"][start]) for start in starts]


def preprocess(
    curves: pd.DataFrame,
    config: PreprocessingConfig = PreprocessingConfig(),  # noqa: B008 (frozen, immutable)
    n_jobs: int | None = None,
    progress: bool = False,
) -> PreprocessedCurves:
    """GP-interpolate every object of a long light-curve table (no caching; see
    :func:`satcompress.tasks.transients.load_preprocessed`).

    Skips, each counted under ``"<source>/<reason>"``: fewer than
    ``config.min_points_per_band`` detections in g or r, non-finite fluxes or non-positive
    errors, a zero time span, no positive flux, a failed fit or a non-finite prediction.
    ``n_jobs`` worker processes (None: :func:`satcompress.progress.default_jobs`; fewer than
    512 objects are always done in this process); ``progress`` reports on stderr
    (:class:`satcompress.progress.Progress`).
    """
    n_jobs = default_jobs() if n_jobs is None else n_jobs
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}.")
    objects, labels = object_curves(curves)
    with Progress("GP preprocessing (objects)", len(objects), enabled=progress) as bar:
        if n_jobs == 1 or len(objects) < 512:
            results = interpolate_objects(objects, config, bar)
        else:
            # joblib's loky workers are fresh processes (no forked torch/OpenMP state); the
            # objects are dealt round-robin by size so the workers get similar work.
            from joblib import Parallel, delayed  # noqa: PLC0415

            order = np.argsort([len(o.times_days) for o in objects], kind="stable")
            n_parts = max(4 * n_jobs, len(objects) // 64)  # small parts: steady progress
            parts = [order[i::n_parts] for i in range(n_parts)]
            results = [None] * len(objects)
            pending = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
                delayed(_interpolate_part)(number, [objects[i] for i in part], config)
                for number, part in enumerate(parts)
            )
            for number, part_results in pending:  # as they finish: steady progress
                for index, result in zip(parts[number], part_results):
                    results[index] = result
                bar.advance(len(part_results))

    skipped: Counter[str] = Counter()
    diagnostics: Counter[str] = Counter()
    kept = []
    for index, (curve, result) in enumerate(zip(objects, results)):
        if result.x is None:
            skipped[f"{curve.source}/{result.skip_reason}"] += 1
            continue
        kept.append(index)
        diagnostics.update(f"{curve.source}/{name}" for name in result.diagnostics)
    x = (np.stack([results[i].x for i in kept]) if kept
         else np.zeros((0, config.n_timesteps, N_GP_CHANNELS), np.float32))  # fmt: skip
    return PreprocessedCurves(
        x=x.astype(np.float32),
        labels=np.array([labels[i] for i in kept], dtype=str),
        object_ids=np.array([objects[i].object_id for i in kept], dtype=str),
        sources=np.array([objects[i].source for i in kept], dtype=str),
        skipped_counts=dict(sorted(skipped.items())),
        fit_counts=dict(sorted(diagnostics.items())),
    )
