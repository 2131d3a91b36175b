"""Reference task: classifying astronomical transients from their g and r light curves.

Data
----
Real ZTF alert light curves with spectroscopic TNS classes, as processed by the Fink broker
(``transients/ztf_tns_labelled/``: six monthly ``fink_cross_tns_*.parquet`` files and the long
``all_nonIa.csv.gz``; 2,146 distinct objects), plus SIMULATED LSST alerts of SN Ia and SN II
from the DESC ELAsTiCC challenge (``transients/elasticc_sim/``; 6,676 objects), which can be
added as extra training data (``load(include_simulated=True)``; off by default because they
were measured to hurt, see :func:`load`). Validation and test are real ZTF objects, split by
object.

The LSST variant (``load(survey="lsst")``, registered as the task ``transients-lsst``) is
trained and judged on the ELAsTiCC objects alone, as an LSST broker sees them: each object's
detections in all six passbands (:func:`read_elasticc_light_curves` with ``all_passbands``,
the light curves the broker builds from the same alert,
:func:`satcompress.broker.lsst.lsst_light_curves`), split 60/20/20 by object and stratified
by class, so no alert of a test object is seen in training. Its classes are those ELAsTiCC
holds here, SN Ia and SN II (:data:`LSST_CLASS_NAMES`).

Classes (:data:`CLASS_NAMES`): SN Ia, SN II, SN Ibc, SLSN and "other" (non-supernova
transients and variables), mapped from the TNS types by :func:`label_to_class`. With the
default settings the real ZTF sample is (after label mapping and skips, see
:func:`load_preprocessed`) 1,749 objects: SN Ia 754, SN II 601, SN Ibc 138, SLSN 56,
other 200 (26 objects have an unusable label and 371 fewer than 2 detections in g or r);
ELAsTiCC adds 1,237 SN Ia and 1,344 SN II training objects (of 6,676: 1,728 have no g or r
detection and 2,367 fewer than 2 in g or r). The GP preprocessing of the 4,330 kept objects
is cached (:func:`load_preprocessed`).

Preprocessing
-------------
As the t2 time-series transformer (Allam & McEwen 2022, "Paying attention to astronomical
transients", RASTI 2, 209), which follows Avocado (Boone 2019, AJ 158, 257): each object's g
and r fluxes are fitted with a 2-D Gaussian process over (time, wavelength), a constant times
an anisotropic Matern (nu = 3/2) kernel whose wavelength length scale is fixed at 6000 A and
whose time length scale and amplitude are fitted by maximum likelihood (a batched grid
search, :mod:`satcompress.tasks.lightcurves`, the module that holds the whole light-curve
preprocessing and is shared with the alert broker), with the flux errors as the
observation noise. Fluxes are divided by the object's maximum observed flux (one
factor for both bands, so the g - r colour is kept) before the fit, so every input lies on a
common scale (peak ~ 1) and no dataset-level scaling constants are needed.

Deviation from t2, measured: t2 samples the GP at 100 times spread evenly over each object's
observed span. The ZTF spans run from under a day to 560 days (median 47; SN Ia 28, "other"
224), so that grid throws the timescale away, and t2 trained on it here lost to the
Bazin-feature random forest (weighted log loss 1.33, SN Ia vs rest AUC 0.76, ZTF-only
training). Instead the GP is sampled on a FIXED grid of :data:`N_TIMESTEPS` steps of 2 days
from 50 days before to 148 days after the GP peak (:class:`PreprocessingConfig`), where the
zero-mean GP reverts to no flux away from the data, and its predictive standard deviation in
g and r is given alongside the mean, so the model can tell "no flux" from "no data". Each
object is one float32 ``(N_TIMESTEPS, 4)`` array: GP mean in g and r, GP std in g and r
(same units). On seed 0 this gave weighted log loss 0.97 and AUC 0.90 (mean channels only:
1.00 and 0.88; preprocessing version 3).

This module holds the task's data (reading, labels, selection, the cache, the splits), its
scores and the baseline; the names of :mod:`satcompress.tasks.lightcurves` it re-exports
(``PreprocessingConfig``, ``preprocess``, ...) are that module's.

Metrics: the PLAsTiCC class-weighted log loss (Malz et al. 2019, primary), macro F1,
per-class recall and the SN Ia vs rest ROC AUC, on the real ZTF test split.

This module is NumPy/pandas/scikit-learn only (scikit-learn imported lazily): it is part of
the torch-free flight path.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from satcompress.data import CACHE_DIR_VARIABLE, fetch, fetch_all, registry
from satcompress.measure.metrics import macro_f1, per_class_recall, roc_auc, weighted_log_loss
from satcompress.progress import default_jobs
from satcompress.tasks import lightcurves
from satcompress.tasks.base import Split, TaskData, grouped_fold_split
from satcompress.tasks.lightcurves import (
    BANDS,
    CURVE_COLUMNS,
    LSST_PASSBAND_WAVELENGTHS_ANGSTROM,
    LSST_WAVELENGTHS_ANGSTROM,
    N_GP_CHANNELS,
    N_TIMESTEPS,
    PREPROCESSING_VERSION,
    ZTF_WAVELENGTHS_ANGSTROM,
    GPFit,
    ObjectCurve,
    ObjectResult,
    PreprocessedCurves,
    PreprocessingConfig,
    fit_gp_light_curve,
    grid_offsets_days,
    interpolate_objects,
    object_curves,
    preprocess,
)
from satcompress.tasks.lightcurves import require_columns as _require_columns

__all__ = [
    "CLASS_NAMES",
    "LSST_CLASS_NAMES",
    "TRAINING_SURVEYS",
    "PRIMARY_METRIC",
    "HIGHER_IS_BETTER",
    "N_TIMESTEPS",
    "BANDS",
    "N_GP_CHANNELS",
    "PREPROCESSING_VERSION",
    "AB_ZERO_POINT_NJY",
    "ZTF_WAVELENGTHS_ANGSTROM",
    "LSST_WAVELENGTHS_ANGSTROM",
    "ZTF_FILES",
    "ZTF_FILTER_IDS",
    "JD_MINUS_MJD_DAYS",
    "CURVE_COLUMNS",
    "ELASTICC_PREFIX",
    "FEATURES_FILE",
    "SPLIT_FRACTIONS",
    "PreprocessingConfig",
    "PreprocessedCurves",
    "ObjectCurve",
    "ObjectResult",
    "object_curves",
    "interpolate_objects",
    "GPFit",
    "magnitude_to_flux_njy",
    "read_ztf_light_curves",
    "deduplicate_points",
    "read_elasticc_light_curves",
    "read_light_curves",
    "label_to_class",
    "fit_gp_light_curve",
    "grid_offsets_days",
    "preprocess",
    "select_objects",
    "load_preprocessed",
    "cache_path",
    "split_objects",
    "load",
    "score",
    "baseline",
]

CLASS_NAMES = ("SN Ia", "SN II", "SN Ibc", "SLSN", "other")
LSST_CLASS_NAMES = CLASS_NAMES[:2]
"""The classes of the LSST variant: the two ELAsTiCC holds here (same indices as in
:data:`CLASS_NAMES`)."""
TRAINING_SURVEYS = ("ztf", "lsst")
"""``load(survey=...)``: real ZTF objects (the task), or simulated LSST (ELAsTiCC) objects in
six passbands (the LSST variant)."""
PRIMARY_METRIC = "weighted_log_loss"
HIGHER_IS_BETTER = False
SURVEY_WAVELENGTHS_ANGSTROM = lightcurves.SURVEY_WAVELENGTHS_ANGSTROM

AB_ZERO_POINT_NJY = 31.4
"""AB magnitude of 1 nJy: m = -2.5 log10(f / 3631 Jy), so f[nJy] = 10**(-0.4 (m - 31.4))."""
JD_MINUS_MJD_DAYS = 2400000.5

_ZTF_FOLDER = "transients/ztf_tns_labelled/"
ZTF_FILES = tuple(
    _ZTF_FOLDER + name
    for name in (
        "fink_cross_tns_202001.parquet",
        "fink_cross_tns_202002.parquet",
        "fink_cross_tns_202003.parquet",
        "fink_cross_tns_202004.parquet",
        "fink_cross_tns_nov2019.parquet",
        "fink_cross_tns_sept2020.parquet",
        "all_nonIa.csv.gz",
    )
)
ELASTICC_PREFIX = "transients/elasticc_sim/"
FEATURES_FILE = _ZTF_FOLDER + "features_matrix.csv"
ELASTICC_CLASS_LABELS = {111: "SN Ia", 113: "SN II"}
"""ELAsTiCC ``classId`` (from the folder name) -> TNS-style label."""

SPLIT_FRACTIONS = (0.6, 0.2, 0.2)  # train, validation, test (real ZTF objects)
TNS_PREFIX = "(TNS) "
CONFLICT_SEPARATOR = " | "
ZTF_FILTER_IDS = {1: "g", 2: "r"}
"""ZTF filter id (``fid``/``cfid`` of the alerts) -> band; other filters (3 = i) are dropped."""
_ZTF_ARRAY_COLUMNS = ("cjd", "cmagpsf", "csigmapsf", "cfid")
_ELASTICC_SOURCE_FIELDS = ("diaObjectId", "diaSourceId", "filterName", "midPointTai", "psFlux",
                           "psFluxErr")  # fmt: skip
OBJECTS_WITHOUT_DETECTIONS = "objects_without_detections"
_DUPLICATE_TIME_RESOLUTION_DAYS = 1e-5  # points closer than ~1 s in one band are one point

# --- labels ---------------------------------------------------------------------------------

_UNUSED_LABELS = frozenset({"SN", "SN I", "FRB"})
"""TNS types that cannot be placed in one class: generic "SN" and "SN I" (Ia or Ibc), and
"FRB" (a radio burst; the class says nothing about the optical light curve)."""
_OTHER_LABELS = frozenset(
    {
        "AGN", "QSO", "Blazar", "Galaxy", "CV", "Nova", "Varstar", "M dwarf", "LBV", "LRN",
        "ILRT", "TDE", "Kilonova", "Afterglow", "Impostor-SN", "Light-Echo", "Other",
    }
)  # fmt: skip


def label_to_class(tns_label: str) -> int | None:
    """Map a TNS classification to an index into :data:`CLASS_NAMES`, or None to drop it.

    Rules (the "(TNS) " prefix of ``all_nonIa.csv.gz`` is ignored):

    * ``SN Ia`` and every subtype (Ia-91T-like, Ia-91bg-like, Ia-pec, Ia-CSM, Iax[02cx-like],
      ...) and Fink's bare ``Ia`` -> SN Ia;
    * ``SN II``, IIP, IIL, IIn, IIb, II-pec, ... -> SN II;
    * ``SN Ib``, Ic, Ic-BL, Ib/c, Ibn, Icn, Ib-pec, ... -> SN Ibc;
    * ``SLSN-I``, SLSN-II, SLSN-R -> SLSN;
    * non-supernova transients and variables (CV, Varstar, AGN, QSO, TDE, Nova, M dwarf, LBV,
      LRN, Galaxy, ...) and TNS's own ``Other`` -> other;
    * None (dropped): the ambiguous ``SN`` and ``SN I``, ``FRB``, labels that disagree between
      files (joined with " | " by :func:`read_ztf_light_curves`) and any unrecognised type.

    In the ZTF data this keeps 2,120 of 2,146 objects (SN Ia 964, SN II 691, SN Ibc 166,
    SLSN 64, other 235) and drops 26: SN I 16, SN 7, FRB 2 and one object labelled both
    SN Ib and SN II.
    """
    label = tns_label.strip()
    if label.startswith(TNS_PREFIX.strip()):
        label = label[len(TNS_PREFIX.strip()) :].strip()
    if not label or CONFLICT_SEPARATOR.strip() in label or label in _UNUSED_LABELS:
        return None
    if label == "Ia" or label.startswith("SN Ia"):
        return 0
    if label.startswith(("SN Ib", "SN Ic")):
        return 2
    if label.startswith("SN II"):
        return 1
    if label.startswith("SLSN"):
        return 3
    if label in _OTHER_LABELS:
        return 4
    return None


# --- reading --------------------------------------------------------------------------------


def magnitude_to_flux_njy(
    magnitude: np.ndarray, magnitude_error: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AB magnitudes and their errors to fluxes in nJy (the unit of LSST/ELAsTiCC ``psFlux``).

    ``f = 10**(-0.4 (m - 31.4))`` and, to first order, ``sigma_f = f * 0.4 ln(10) sigma_m``.
    """
    magnitude = np.asarray(magnitude, dtype=np.float64)
    flux = 10.0 ** (-0.4 * (magnitude - AB_ZERO_POINT_NJY))
    return flux, flux * 0.4 * math.log(10.0) * np.asarray(magnitude_error, dtype=np.float64)


def _ztf_parquet_rows(path: Path) -> pd.DataFrame:
    """One row per point of the per-object arrays of a ``fink_cross_tns_*.parquet`` file."""
    frame = pd.read_parquet(path, columns=None)
    _require_columns(frame, ("objectId", "TNS", *_ZTF_ARRAY_COLUMNS), path)
    lengths = frame["cjd"].map(len).to_numpy()
    for name in _ZTF_ARRAY_COLUMNS[1:]:
        if not np.array_equal(frame[name].map(len).to_numpy(), lengths):
            raise ValueError(
                f"{path}: the arrays 'cjd' and {name!r} differ in length for some objects; "
                "every per-object array must hold one value per alert."
            )
    columns = {name: np.concatenate(frame[name].to_numpy()) for name in _ZTF_ARRAY_COLUMNS}
    columns["objectId"] = np.repeat(frame["objectId"].to_numpy(), lengths)
    columns["TNS"] = np.repeat(frame["TNS"].to_numpy(), lengths)
    return pd.DataFrame(columns)


def _resolve_labels(labels: pd.Series) -> str:
    """One label per object: the distinct labels, less generic ones, must agree on a class."""
    distinct = sorted(set(labels))
    if len(distinct) == 1:
        return distinct[0]
    specific = [label for label in distinct if label_to_class(label) is not None]
    if specific and len({label_to_class(label) for label in specific}) == 1:
        return specific[0]
    return CONFLICT_SEPARATOR.join(distinct)


def read_ztf_light_curves() -> pd.DataFrame:
    """Detections of the TNS-labelled ZTF objects in long format (see :func:`read_light_curves`).

    The six monthly parquet files hold overlapping 30-day alert histories, and
    ``all_nonIa.csv.gz`` repeats part of them, so the points of an object are merged across
    files and de-duplicated by (object, band, time). NaN magnitudes (non-detections) and
    filters other than g (``cfid`` 1) and r (``cfid`` 2) are dropped. An object whose files
    disagree on its type keeps the specific label when the others are generic ("SN II" over
    "SN"); a real conflict ("SN Ib" vs "SN II") gives a " | "-joined label that
    :func:`label_to_class` drops.
    """
    parts = []
    for name in ZTF_FILES:
        path = fetch(name)
        if name.endswith(".parquet"):
            part = _ztf_parquet_rows(path)
        else:
            part = pd.read_csv(path)
            _require_columns(part, ("objectId", "TNS", *_ZTF_ARRAY_COLUMNS), path)
        parts.append(part[["objectId", "TNS", *_ZTF_ARRAY_COLUMNS]])
    rows = pd.concat(parts, ignore_index=True)
    rows["TNS"] = rows["TNS"].astype(str).str.strip()
    rows["TNS"] = rows["TNS"].str.removeprefix(TNS_PREFIX)
    labels = rows.groupby("objectId", sort=True)["TNS"].agg(_resolve_labels)

    detected = rows["cmagpsf"].notna() & rows["cfid"].isin(list(ZTF_FILTER_IDS))
    rows = rows[detected]
    flux, flux_err = magnitude_to_flux_njy(rows["cmagpsf"].to_numpy(), rows["csigmapsf"].to_numpy())
    curves = pd.DataFrame(
        {
            "object_id": rows["objectId"].astype(str).to_numpy(),
            "mjd": rows["cjd"].to_numpy(np.float64) - JD_MINUS_MJD_DAYS,
            "band": rows["cfid"].astype(int).map(ZTF_FILTER_IDS).to_numpy(),
            "flux": flux,
            "flux_err": flux_err,
        }
    )
    curves["label"] = curves["object_id"].map(labels)
    curves["source"] = "ztf"
    curves = deduplicate_points(curves)
    curves.attrs[OBJECTS_WITHOUT_DETECTIONS] = int(len(labels) - curves["object_id"].nunique())
    return curves


def deduplicate_points(curves: pd.DataFrame) -> pd.DataFrame:
    """Keep one point per (object, band, time within ~1 s), sorted by object, time and band.

    Overlapping alert histories repeat the same measurement; the first occurrence is kept.
    """
    time_key = np.round(curves["mjd"].to_numpy() / _DUPLICATE_TIME_RESOLUTION_DAYS)
    duplicated = curves.assign(_time_key=time_key).duplicated(["object_id", "band", "_time_key"])
    curves = curves[~duplicated.to_numpy()]
    return curves.sort_values(["object_id", "mjd", "band"], kind="stable").reset_index(drop=True)


def _elasticc_class_id(path: Path) -> int:
    folder = path.parent.name
    if not folder.startswith("classId="):
        raise ValueError(
            f"{path}: ELAsTiCC files must lie in a 'classId=<id>' folder (the class is read "
            "from the folder name, as Fink's ftransfer export writes it)."
        )
    class_id = int(folder.split("=", 1)[1])
    if class_id not in ELASTICC_CLASS_LABELS:
        raise ValueError(
            f"{path}: ELAsTiCC classId {class_id} is not one of {sorted(ELASTICC_CLASS_LABELS)} "
            "(SN Ia, SN II); add its TNS-style label to ELASTICC_CLASS_LABELS to use it."
        )
    return class_id


def read_elasticc_light_curves(
    paths: Sequence[Path] | None = None, all_passbands: bool = False
) -> pd.DataFrame:
    """g and r detections of the SIMULATED ELAsTiCC alerts, in long format (source
    ``elasticc``); with ``all_passbands``, the detections with a measured flux in all six
    passbands (lower-case u g r i z y, source ``lsst``): the light curve the broker builds
    from the same alert (:func:`satcompress.broker.lsst.lsst_light_curves`).

    Each object appears in several alerts, each with the history known at that time; the
    alert with the longest history (``prvDiaSources`` plus its own ``diaSource``) is kept.
    ``psFlux`` and ``psFluxErr`` are already in nJy and ``midPointTai`` is an MJD.
    The label is "SN Ia" (``classId=111``) or "SN II" (``classId=113``).
    """
    passbands = LSST_PASSBAND_WAVELENGTHS_ANGSTROM if all_passbands else BANDS
    if paths is None:
        paths = fetch_all(ELASTICC_PREFIX)
    best: dict[int, tuple[int, list[dict], str]] = {}
    for path in paths:
        path = Path(path)
        label = ELASTICC_CLASS_LABELS[_elasticc_class_id(path)]
        frame = pd.read_parquet(path, columns=None)
        _require_columns(frame, ("diaSource", "prvDiaSources"), path)
        for source, history in zip(frame["diaSource"], frame["prvDiaSources"]):
            fields_missing = not isinstance(source, dict) or any(
                name not in source for name in _ELASTICC_SOURCE_FIELDS
            )
            if fields_missing:
                raise ValueError(
                    f"{path}: a 'diaSource' lacks one of the fields {_ELASTICC_SOURCE_FIELDS}; "
                    "the file is not an ELAsTiCC alert export of the registered version."
                )
            points = [*(() if history is None else history), source]
            object_id = int(source["diaObjectId"])
            if object_id not in best or len(points) > best[object_id][0]:
                best[object_id] = (len(points), points, label)
    rows = []
    for object_id, (_, points, label) in best.items():
        seen = set()
        for point in points:
            band = point["filterName"].lower() if all_passbands else point["filterName"]
            if band not in passbands or point["diaSourceId"] in seen:
                continue
            seen.add(point["diaSourceId"])
            rows.append((str(object_id), point["midPointTai"], band, point["psFlux"],
                         point["psFluxErr"], label))  # fmt: skip
    curves = pd.DataFrame(rows, columns=list(CURVE_COLUMNS[:-1]))
    curves["source"] = "lsst" if all_passbands else "elasticc"
    if all_passbands:  # as the broker reads alerts: a point without a flux is not a detection
        curves = curves[np.isfinite(curves["flux"].to_numpy(np.float64))]
    curves = deduplicate_points(curves)
    curves.attrs[OBJECTS_WITHOUT_DETECTIONS] = int(len(best) - curves["object_id"].nunique())
    return curves


def read_light_curves(sources: Sequence[str] = ("ztf", "elasticc")) -> pd.DataFrame:
    """All light curves of the task in long format, one row per detection.

    Columns: ``object_id`` (str), ``mjd`` (days), ``band`` ('g' or 'r'), ``flux`` and
    ``flux_err`` (nJy; ZTF magnitudes converted by :func:`magnitude_to_flux_njy`), ``label``
    (the TNS type as a string, "(TNS) " prefix removed), ``source`` ('ztf' or 'elasticc').
    Sorted by object, time and band. Objects are not yet filtered by label.

    Objects without a single g or r detection have no row; how many there are per source is
    in ``curves.attrs["objects_without_detections"]`` (ELAsTiCC: 1,728 of 6,676, detected in
    u, i, z or y only; ZTF: 0), so that they can be counted.
    """
    readers = {"ztf": read_ztf_light_curves, "elasticc": read_elasticc_light_curves}
    unknown = [name for name in sources if name not in readers]
    if unknown:
        raise ValueError(f"Unknown light-curve source(s) {unknown}; choose from {list(readers)}.")
    parts = {name: readers[name]() for name in sources}
    curves = pd.concat(list(parts.values()), ignore_index=True)
    curves.attrs = {
        OBJECTS_WITHOUT_DETECTIONS: {
            name: part.attrs[OBJECTS_WITHOUT_DETECTIONS] for name, part in parts.items()
        }
    }
    return curves


# --- selection and caching --------------------------------------------------------------------


def _seeded_order(object_ids: Sequence[str], seed: int) -> list[str]:
    """A fixed pseudo-random order of ids that does not depend on their input order."""
    return sorted(object_ids, key=lambda oid: hashlib.sha256(f"{seed}:{oid}".encode()).hexdigest())


def select_objects(
    curves: pd.DataFrame, max_objects: int, seed: int = 0, min_points_per_band: int = 2
) -> pd.DataFrame:
    """A small, deterministic, class-balanced subset of a light-curve table (for tests).

    Objects are drawn round-robin from the (source, class) groups in a seeded order, among
    those with at least ``min_points_per_band`` detections in both bands, so a handful of
    objects still covers every class and both sources instead of being mostly skips.
    """
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1 (or None for all objects), got {max_objects}.")
    band_counts = curves.groupby(["object_id", "band"]).size().unstack(fill_value=0)
    band_counts = band_counts.reindex(columns=list(BANDS), fill_value=0)
    enough = band_counts.min(axis=1) >= min_points_per_band
    per_object = curves.drop_duplicates("object_id").set_index("object_id")
    per_object = per_object[enough.reindex(per_object.index, fill_value=False)]
    groups: dict[tuple[str, int | None], list[str]] = {}
    for object_id, source, label in zip(
        per_object.index, per_object["source"], per_object["label"]
    ):
        groups.setdefault((source, label_to_class(label)), []).append(object_id)
    queues = [_seeded_order(groups[key], seed) for key in sorted(groups, key=str)]
    chosen: list[str] = []
    while len(chosen) < max_objects and any(queues):
        for queue in queues:
            if queue and len(chosen) < max_objects:
                chosen.append(queue.pop(0))
    return curves[curves["object_id"].isin(chosen)].reset_index(drop=True)


def _cache_dir() -> Path:
    configured = os.environ.get(CACHE_DIR_VARIABLE)
    if configured:
        return Path(configured)
    import pooch  # noqa: PLC0415

    return Path(pooch.os_cache("satcompress"))


def _input_file_names() -> list[str]:
    return [*ZTF_FILES, *sorted(name for name in registry() if name.startswith(ELASTICC_PREFIX))]


def _cache_key(config: PreprocessingConfig, max_objects: int | None, survey: str) -> str:
    files = registry()
    payload = {
        "task": "transients",
        "version": PREPROCESSING_VERSION,
        "files": {name: files[name].sha256 for name in _input_file_names()},
        "config": asdict(config),
        "max_objects": max_objects,
        **({} if survey == "ztf" else {"survey": survey}),  # the ZTF task's keys stay as they were
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _save_atomically(path: Path, result: PreprocessedCurves, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            np.savez(
                stream,
                x=result.x,
                labels=result.labels,
                object_ids=result.object_ids,
                sources=result.sources,
                skipped_keys=np.array(list(result.skipped_counts), dtype=str),
                skipped_values=np.array(list(result.skipped_counts.values()), dtype=np.int64),
                fit_keys=np.array(list(result.fit_counts), dtype=str),
                fit_values=np.array(list(result.fit_counts.values()), dtype=np.int64),
                preprocessing_seconds=np.float64(seconds),
            )
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; the cache is an ordinary file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _counts(keys: np.ndarray, values: np.ndarray) -> dict[str, int]:
    return dict(zip(keys.tolist(), values.tolist()))


def _load_cached(path: Path) -> tuple[PreprocessedCurves, float] | None:
    import zipfile  # noqa: PLC0415

    try:
        with np.load(path, allow_pickle=False) as stored:
            result = PreprocessedCurves(
                x=stored["x"],
                labels=stored["labels"],
                object_ids=stored["object_ids"],
                sources=stored["sources"],
                skipped_counts=_counts(stored["skipped_keys"], stored["skipped_values"]),
                fit_counts=_counts(stored["fit_keys"], stored["fit_values"]),
            )
            return result, float(stored["preprocessing_seconds"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # absent or unreadable: recompute and overwrite


def cache_path(
    config: PreprocessingConfig = PreprocessingConfig(),  # noqa: B008 (frozen, immutable)
    max_objects: int | None = None,
    survey: str = "ztf",
) -> Path:
    """Where :func:`load_preprocessed` stores its result for these settings."""
    key = _cache_key(config, max_objects, survey)
    return _cache_dir() / "preprocessed" / f"transients_gp_{key[:24]}.npz"


def _label_filter(curves: pd.DataFrame) -> tuple[pd.DataFrame, Counter[str]]:
    per_object = curves.drop_duplicates("object_id")
    classes = per_object["label"].map(label_to_class)
    unused = per_object[classes.isna()]
    skipped = Counter(f"{source}/label_not_used" for source in unused["source"])
    return curves[~curves["object_id"].isin(set(unused["object_id"]))], skipped


def _cap_elasticc(
    curves: pd.DataFrame, max_objects: int, source: str, seed: int = 0
) -> tuple[pd.DataFrame, int]:
    """Keep at most ``max_objects`` ELAsTiCC objects (of ``source``), balanced over labels."""
    elasticc = curves[curves["source"] == source].drop_duplicates("object_id")
    queues = [
        _seeded_order(list(group["object_id"]), seed) for _, group in elasticc.groupby("label")
    ]
    chosen: set[str] = set()
    while len(chosen) < max_objects and any(queues):
        for queue in queues:
            if queue and len(chosen) < max_objects:
                chosen.add(queue.pop(0))
    dropped = len(elasticc) - len(chosen)
    keep = (curves["source"] != source) | curves["object_id"].isin(chosen)
    return curves[keep], dropped


def load_preprocessed(
    max_objects: int | None = None,
    config: PreprocessingConfig = PreprocessingConfig(),  # noqa: B008 (frozen, immutable)
    n_jobs: int | None = None,
    refresh: bool = False,
    progress: bool = True,
    survey: str = "ztf",
) -> tuple[PreprocessedCurves, dict]:
    """Read, label-filter and GP-interpolate the task's light curves (``survey`` ``"ztf"``: the
    ZTF and g/r ELAsTiCC curves; ``"lsst"``: the six-band ELAsTiCC curves), with an on-disk
    cache.

    The result is stored as ``.npz`` under ``$SATCOMPRESS_CACHE_DIR/preprocessed/`` (default:
    the user cache of pooch), keyed by a sha256 of the registered checksums of every input
    file, ``config``, ``max_objects``, ``survey`` and :data:`PREPROCESSING_VERSION`; it is
    written to a temporary file and renamed, so a crash never leaves a half-written cache.

    Parameters
    ----------
    max_objects : int | None
        Use only this many objects (a class-balanced draw, :func:`select_objects`): for tests.
    config : PreprocessingConfig
        GP settings.
    n_jobs : int | None
        Worker processes for the GP fits (None: :func:`satcompress.progress.default_jobs`,
        which ``--jobs`` sets; not part of the key: the output does not depend on it).
    refresh : bool
        Recompute even when a cached result exists.
    progress : bool
        Report the GP fits on stderr (:class:`satcompress.progress.Progress`).
    survey : str
        One of :data:`TRAINING_SURVEYS`: which light curves (see :func:`load`).

    Returns
    -------
    PreprocessedCurves
        Kept objects only; ``skipped_counts`` also counts ``label_not_used`` objects (see
        :func:`label_to_class`) and ELAsTiCC objects left out by ``max_elasticc_objects``.
    dict
        ``cache_path``, ``cache_hit`` and ``preprocessing_seconds`` (of the run that filled it).
    """
    if survey not in TRAINING_SURVEYS:
        raise ValueError(f"Unknown survey {survey!r}; choose one of {list(TRAINING_SURVEYS)}.")
    path = cache_path(config, max_objects, survey)
    if not refresh:
        cached = _load_cached(path)
        if cached is not None:
            result, seconds = cached
            info = {"cache_path": str(path), "cache_hit": True, "preprocessing_seconds": seconds}
            return result, info
    started = time.perf_counter()
    if survey == "ztf":
        curves = read_light_curves()
        without_detections = curves.attrs.get(OBJECTS_WITHOUT_DETECTIONS, {})
    else:
        curves = read_elasticc_light_curves(all_passbands=True)
        without_detections = {"lsst": curves.attrs[OBJECTS_WITHOUT_DETECTIONS]}
    curves, skipped = _label_filter(curves)
    for source, count in without_detections.items():
        if count:  # six-band curves: no detection in any band
            skipped[f"{source}/no_{'' if source == 'lsst' else 'g_or_r_'}detection"] += count
    if config.max_elasticc_objects is not None:
        simulated = "elasticc" if survey == "ztf" else "lsst"
        curves, dropped = _cap_elasticc(curves, config.max_elasticc_objects, simulated)
        if dropped:
            skipped[f"{simulated}/over_max_elasticc_objects"] += dropped
    if max_objects is not None:
        curves = select_objects(curves, max_objects, min_points_per_band=config.min_points_per_band)
        skipped = Counter()  # a deliberate subset: the counts describe the objects fitted
    n_jobs = default_jobs() if n_jobs is None else n_jobs
    result = preprocess(curves, config, n_jobs=n_jobs, progress=progress)
    skipped.update(result.skipped_counts)
    result = result._replace(skipped_counts=dict(sorted(skipped.items())))
    seconds = time.perf_counter() - started
    _save_atomically(path, result, seconds)
    return result, {"cache_path": str(path), "cache_hit": False, "preprocessing_seconds": seconds}


# --- splits and task data -----------------------------------------------------------------------


def split_objects(
    classes: np.ndarray, seed: int = 0, fractions: tuple[float, float, float] = SPLIT_FRACTIONS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified train/validation/test indices of objects (one entry per object).

    Within each class the objects are shuffled with ``seed`` and the first
    ``n - round(f_val n) - round(f_test n)`` go to train, then validation, then test; a class
    with very few members therefore lands in train first.
    """
    if len(fractions) != 3 or not math.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise ValueError(
            f"fractions must be three non-negative numbers summing to 1, got {fractions}."
        )
    classes = np.asarray(classes)
    rng = np.random.default_rng(seed)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for cls in np.unique(classes):
        members = rng.permutation(np.flatnonzero(classes == cls))
        n_val = round(fractions[1] * len(members))
        n_test = round(fractions[2] * len(members))
        n_train = len(members) - n_val - n_test
        parts[0].extend(members[:n_train])
        parts[1].extend(members[n_train : n_train + n_val])
        parts[2].extend(members[n_train + n_val :])
    train, val, test = (np.sort(np.array(part, dtype=np.int64)) for part in parts)
    return train, val, test


def load(
    seed: int = 0,
    max_objects: int | None = None,
    config: PreprocessingConfig = PreprocessingConfig(),  # noqa: B008 (frozen, immutable)
    include_simulated: bool = False,
    fold: int | None = None,
    n_folds: int = 5,
    survey: str = "ztf",
) -> TaskData:
    """The transient task: GP-interpolated light curves split by object.

    ``survey="lsst"`` is the LSST variant: the ELAsTiCC objects alone, each the six-band
    light curve of its longest alert (source ``lsst``, as the broker reads LSST alerts), split
    by object exactly as the ZTF objects are below (60/20/20 or folds, stratified by class;
    an object is one row, so none of its alerts reaches another split), with the classes of
    :data:`LSST_CLASS_NAMES`; ``include_simulated`` does not apply.

    Real ZTF objects are split 60/20/20 by object, stratified by class (:func:`split_objects`
    with ``seed``), or, with ``fold``, into ``n_folds`` class-stratified folds of objects
    (:func:`~satcompress.tasks.base.grouped_fold_split` with ``seed``: fold ``fold`` is test,
    the next one validation); the simulated ELAsTiCC objects are added to the training split
    only when ``include_simulated`` is True, so validation and test are real data. ``x`` has
    shape ``(n, N_TIMESTEPS, 4)`` (float32: GP mean in g and r, then GP standard deviation in
    g and r, of the peak-normalised flux on the fixed grid around the GP peak), ``y`` the
    class index (int64), ``groups`` the object id. The per-object normalisation needs no
    dataset constants, so nothing is fitted on any split.

    ``preprocessing`` records the settings, counts per class and source, every skip count and
    the GP fit diagnostics.

    ``include_simulated`` defaults to False because the simulated data hurt, measured on
    seed 0 with the base model's training settings (test: real ZTF objects):

    ====================  ===================  ========  ===================
    training set          weighted log loss    macro F1  SN Ia vs rest AUC
    ====================  ===================  ========  ===================
    ZTF (1,049 objects)   0.97                 0.52      0.90
    + ELAsTiCC (2,581)    1.27                 0.42      0.82
    ====================  ===================  ========  ===================

    The ELAsTiCC alerts are early detections of simulated LSST curves (median 8 g/r points
    over 11 days, against 22 over 47 days for ZTF), so they teach the model short curves
    that look little like the real test objects.
    """
    if survey == "lsst" and include_simulated:
        raise ValueError("include_simulated adds ELAsTiCC objects to the ZTF training split; the "
                         "LSST variant (survey='lsst') is all ELAsTiCC already: drop one.")
    result, cache_info = load_preprocessed(max_objects=max_objects, config=config, survey=survey)
    class_names = CLASS_NAMES if survey == "ztf" else LSST_CLASS_NAMES
    classes = np.array([label_to_class(label) for label in result.labels], dtype=object)
    if any(cls is None or cls >= len(class_names) for cls in classes):
        raise ValueError("Preprocessed objects include unused labels; delete the cache and rerun.")
    y = classes.astype(np.int64)
    real = np.flatnonzero(result.sources == ("ztf" if survey == "ztf" else "lsst"))
    simulated = np.flatnonzero(result.sources == "elasticc")
    if len(real) == 0:
        raise ValueError(f"No {'real ZTF' if survey == 'ztf' else 'ELAsTiCC'} object survived "
                         "preprocessing; there is nothing to evaluate on.")
    parts = (split_objects(y[real], seed) if fold is None else
             grouped_fold_split(y[real], result.object_ids[real], fold, n_folds, seed))
    train, val, test = (real[part] for part in parts)
    if not include_simulated:
        simulated = simulated[:0]
    train = np.concatenate([train, simulated])

    def subset(index: np.ndarray) -> Split:
        return Split(x=result.x[index], y=y[index], groups=result.object_ids[index])

    counts = {
        source: {
            name: int(np.sum((result.sources == source) & (y == cls)))
            for cls, name in enumerate(class_names)
        }
        for source in (("ztf", "elasticc") if survey == "ztf" else ("lsst",))
    }
    preprocessing = {
        "method": "2-D GP (constant x Matern 3/2 over time and wavelength), maximum-likelihood "
        f"hyperparameters by {config.hyperparameter_search} search; Boone 2019, "
        "Allam & McEwen 2022",
        "preprocessing_version": PREPROCESSING_VERSION,
        "config": json.loads(json.dumps(asdict(config))),  # tuples -> lists
        "flux_normalisation": "divided by each object's maximum observed flux (both bands)",
        "time_grid_days_from_peak": [float(grid_offsets_days(config)[0]),
                                     float(grid_offsets_days(config)[-1])],
        "channels": [f"{kind}_{band}" for kind in ("gp_mean", "gp_std") for band in BANDS],
        "wavelengths_angstrom": {
            source: dict(values) for source, values in SURVEY_WAVELENGTHS_ANGSTROM.items()
        },
        "objects_per_class": counts,
        "skipped_counts": dict(result.skipped_counts),
        "fit_counts": dict(result.fit_counts),
        "split_seed": seed,
        "survey": survey,  # what the model is trained and tested on (in the artifact)
        "include_simulated": include_simulated,
        "split_sizes": {
            "train": len(train),
            "train_simulated": len(simulated),
            "val": len(val),
            "test": len(test),
        },
        "max_objects": max_objects,
        **cache_info,
    }
    return TaskData(subset(train), subset(val), subset(test), class_names, preprocessing)


# --- metrics and baseline ------------------------------------------------------------------------


def _metric_name(class_name: str) -> str:
    return class_name.lower().replace(" ", "_")


def score(
    val_probabilities: np.ndarray,
    val_labels: np.ndarray,
    test_probabilities: np.ndarray,
    test_labels: np.ndarray,
) -> dict[str, float]:
    """Science scores on the test split (the validation split is not needed for this task).

    Returns ``weighted_log_loss`` (PLAsTiCC metric, Malz et al. 2019, equal class weights;
    primary, lower is better), ``macro_f1``, ``accuracy``, ``recall_<class>`` for each class
    (``recall_sn_ia``, ``recall_sn_ii``, ``recall_sn_ibc``, ``recall_slsn``, ``recall_other``;
    NaN when the class is absent from the test labels) and ``ia_vs_rest_auc`` (ROC AUC of the
    SN Ia probability for SN Ia vs all others; NaN if only one side is present). Predicted
    class = highest probability. Probabilities of the LSST variant's two classes
    (:data:`LSST_CLASS_NAMES`) give the same metrics over those two (``recall_sn_ia`` and
    ``recall_sn_ii``; the AUC is SN Ia vs SN II).
    """
    del val_probabilities, val_labels
    probabilities = np.asarray(test_probabilities, dtype=np.float64)
    labels = np.asarray(test_labels)
    widths = (len(CLASS_NAMES), len(LSST_CLASS_NAMES))
    if probabilities.ndim != 2 or probabilities.shape[1] not in widths:
        raise ValueError(
            f"test_probabilities must have shape (n, {len(CLASS_NAMES)}) for the classes "
            f"{CLASS_NAMES} (or (n, {len(LSST_CLASS_NAMES)}) for the LSST variant's "
            f"{LSST_CLASS_NAMES}); got {probabilities.shape}."
        )
    class_names = CLASS_NAMES[: probabilities.shape[1]]
    if len(labels) != len(probabilities):
        raise ValueError(
            f"{len(labels)} test labels but {len(probabilities)} rows of probabilities."
        )
    predicted = probabilities.argmax(axis=1)
    scores = {
        "weighted_log_loss": weighted_log_loss(labels, probabilities),
        "macro_f1": macro_f1(labels, predicted, len(class_names)),
        "accuracy": float(np.mean(predicted == labels)),
    }
    recall = per_class_recall(labels, predicted, len(class_names))
    for name, value in zip(class_names, recall):
        scores[f"recall_{_metric_name(name)}"] = float(value)
    is_ia = labels == 0
    both_sides = 0 < is_ia.sum() < len(labels)
    scores["ia_vs_rest_auc"] = roc_auc(is_ia, probabilities[:, 0]) if both_sides else float("nan")
    return scores


BAZIN_FEATURES = ("a_g", "b_g", "c_g", "snratio_g", "chisq_g", "nrise_g",
                  "a_r", "b_r", "c_r", "snratio_r", "chisq_r", "nrise_r")  # fmt: skip


def baseline(
    data: TaskData,
    seed: int = 0,
    n_trees: int = 1000,
    test_probabilities: np.ndarray | None = None,
) -> dict[str, float]:
    """The classical baseline: a random forest on Fink's Bazin-fit features, SN Ia vs rest.

    ``features_matrix.csv`` holds 12 features (sigmoid/Bazin fit parameters, S/N, chi2 and
    number of rising points in g and r) of 860 ZTF objects (Leoni et al. 2022, Fink's early SN
    Ia classifier; Ishida et al. 2019 for the active-learning setup). The forest has
    ``n_trees`` trees (1000 as in ``actsnclass``) and a fixed ``seed``. SN Ia = the
    :func:`label_to_class` SN Ia class (the bare "Ia" type and all Ia subtypes).

    Returns
    -------
    dict
        ``cv_auc_ia_vs_rest`` (mean) and ``cv_auc_ia_vs_rest_std`` of 5-fold stratified CV
        over all objects with a usable label, ``cv_n_objects``; ``split_auc_ia_vs_rest`` of the
        forest trained on the feature rows of ``data.train``'s objects and scored on those of
        ``data.test`` (NaN if the covered test objects hold one class only), with
        ``split_n_train_objects`` and ``split_n_test_objects`` (how many it covered). Given
        ``test_probabilities`` (a model's class probabilities for ``data.test``, rows in its
        order), also ``model_split_auc_ia_vs_rest``: that model's SN Ia vs rest AUC on the
        same covered test objects, so the two are compared on identical objects. The features
        cover ZTF objects only: for the LSST variant the split entries are NaN (0 objects).
    """
    if test_probabilities is not None and len(test_probabilities) != len(data.test):
        raise ValueError(
            f"test_probabilities has {len(test_probabilities)} rows but data.test holds "
            f"{len(data.test)} objects; pass the model's probabilities for data.test."
        )
    from sklearn.ensemble import RandomForestClassifier  # noqa: PLC0415
    from sklearn.model_selection import StratifiedKFold  # noqa: PLC0415

    path = fetch(FEATURES_FILE)
    table = pd.read_csv(path)
    _require_columns(table, ("id", "type", *BAZIN_FEATURES), path)
    classes = table["type"].astype(str).map(label_to_class)
    table = table[classes.notna().to_numpy()]
    is_ia = (classes[classes.notna()] == 0).to_numpy()
    features = table[list(BAZIN_FEATURES)].to_numpy(np.float64)

    def forest() -> RandomForestClassifier:
        return RandomForestClassifier(n_estimators=n_trees, random_state=seed,
                                      n_jobs=default_jobs())

    fold_aucs = []
    folds = StratifiedKFold(5, shuffle=True, random_state=seed).split(features, is_ia)
    for train_index, test_index in folds:
        model = forest().fit(features[train_index], is_ia[train_index])
        probability = model.predict_proba(features[test_index])[:, 1]
        fold_aucs.append(roc_auc(is_ia[test_index], probability))

    ids = table["id"].astype(str).to_numpy()
    in_train = np.isin(ids, data.train.groups.astype(str))
    in_test = np.isin(ids, data.test.groups.astype(str))
    split_auc = model_auc = float("nan")
    if len(np.unique(is_ia[in_train])) == 2 and len(np.unique(is_ia[in_test])) == 2:
        model = forest().fit(features[in_train], is_ia[in_train])
        split_auc = roc_auc(is_ia[in_test], model.predict_proba(features[in_test])[:, 1])
        if test_probabilities is not None:
            covered = np.isin(data.test.groups.astype(str), ids[in_test])
            model_auc = roc_auc(data.test.y[covered] == 0, test_probabilities[covered, 0])
    results = {
        "cv_auc_ia_vs_rest": float(np.mean(fold_aucs)),
        "cv_auc_ia_vs_rest_std": float(np.std(fold_aucs)),
        "cv_n_objects": float(len(table)),
        "split_auc_ia_vs_rest": float(split_auc),
        "split_n_train_objects": float(in_train.sum()),
        "split_n_test_objects": float(in_test.sum()),
    }
    if test_probabilities is not None:
        results["model_split_auc_ia_vs_rest"] = float(model_auc)
    return results
