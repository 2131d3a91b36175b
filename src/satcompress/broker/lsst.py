"""Reading Rubin Observatory (LSST) alerts and their selection cuts.

Ingestion
---------
A Rubin alert packet (schema ``lsst.vM_m.alert`` of Rubin's ``lsst-alert-packet``) holds the
new detection in ``diaSource``, the earlier detections of the same object (up to 12 months)
in ``prvDiaSources``, forced photometry at its position in ``prvDiaForcedSources`` and the
object's summary in ``diaObject``. The simulated alerts of the DESC ELAsTiCC challenge
(``transients/elasticc_sim/``, Fink's Parquet export) have the same layout with the field
names of the schemas before 5.0; both spellings are read (time ``midpointMjdTai`` or
``midPointTai``, passband ``band`` or ``filterName``, flux ``psfFlux`` or ``psFlux`` and
``psfFluxErr`` or ``psFluxErr``, in nJy; ELAsTiCC writes the y band ``Y``).
:func:`flatten_lsst_alert` makes each packet one row of :data:`LSST_ALERT_COLUMNS`: the ids
(``objectId`` is the ``diaObjectId`` as a string, ``ss<ssObjectId>`` for a solar-system
source without a DIA object; ``candid`` is the ``diaSourceId``), the fields the cuts use and
the arrays ``cmidpointMjdTai, cband, cpsfFlux, cpsfFluxErr`` (history first, then the alert's
own detection), as :func:`satcompress.broker.alerts.read_alerts` returns them (``survey="lsst"``
or recognised by the ``diaSource`` field).

The light curve is the detections (``diaSource`` and ``prvDiaSources``) in all six passbands:
the transient task's ELAsTiCC training curves are detections too
(:func:`satcompress.tasks.transients.read_elasticc_light_curves`, with the same fluxes, times
and g and r wavelengths), so forced photometry, whose points before and after the transient
are non-detections the model never saw, is not read. Every band informs the 2-D GP, which is
evaluated at g and r as for ZTF (source ``"lsst"`` of
:data:`satcompress.tasks.lightcurves.SURVEY_WAVELENGTHS_ANGSTROM`).

Selection cuts
--------------
The ZTF cuts (:mod:`satcompress.broker.alerts`) on the LSST fields, in this order:

1. ``solar_system_object``: Rubin associated the source with a known solar-system object
   (``diaSource.ssObjectId`` set; Rubin matches them itself, so
   ``SelectionCuts.sso_max_distance_arcsec`` only switches the cut on or off). None in ELAsTiCC.
2. ``older_than_90_days``: ``midpointMjdTai - diaObject.firstDiaSourceMjdTai > 90`` days (the
   earliest detection in the alert when ``firstDiaSourceMjdTai`` is absent: schemas before
   8.0 and ELAsTiCC).
3. ``fewer_than_2_points_in_g`` (``_in_r``, ...): checked by the task's preprocessing, as for
   ZTF: the model reads g and r, so each must be constrained by its own detections.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from satcompress.broker.alerts import (
    SOLAR_SYSTEM_OBJECT,
    SelectionCuts,
    _AlertError,
    cut_reasons,
    _integer,
    _number,
)
from satcompress.tasks.lightcurves import CURVE_COLUMNS, LSST_PASSBAND_WAVELENGTHS_ANGSTROM
from satcompress.tasks.transients import deduplicate_points

__all__ = [
    "LSST_ALERT_COLUMNS",
    "LSST_PASSBANDS",
    "LSST_SOURCE",
    "flatten_lsst_alert",
    "lsst_cut_reasons",
    "lsst_light_curves",
    "parquet_columns",
    "survey_cut_reasons",
    "table_survey",
]

LSST_ALERT_COLUMNS = ("objectId", "candid", "midpointMjdTai", "firstDiaSourceMjdTai", "ssObjectId",
                      "cmidpointMjdTai", "cband", "cpsfFlux", "cpsfFluxErr")  # fmt: skip
"""One row per LSST alert: ids, the alert's time, the cut fields (``firstDiaSourceMjdTai`` NaN
when unknown, ``ssObjectId`` 0 when none), then the history+alert arrays."""
LSST_PASSBANDS = tuple(LSST_PASSBAND_WAVELENGTHS_ANGSTROM)
LSST_SOURCE = "lsst"
"""The light-curve source (wavelength table) of LSST alerts."""
_NAMES = {"time": ("midpointMjdTai", "midPointTai"), "band": ("band", "filterName"),
          "flux": ("psfFlux", "psFlux"), "error": ("psfFluxErr", "psFluxErr")}  # fmt: skip
_PARQUET_COLUMNS = ("diaSource", "prvDiaSources")
_FIRST_DETECTION = "firstDiaSourceMjdTai"


def _spelling(record: Mapping[str, Any], kind: str) -> str:
    """The first name of ``kind`` the record has (the newest name when it has none)."""
    return next((name for name in _NAMES[kind] if name in record), _NAMES[kind][0])


def _point(point: Any, where: str) -> tuple[float, str, float, float]:
    """(time, band, flux, error) of a diaSource; a null flux or error is NaN (not measured)."""
    if not isinstance(point, Mapping):
        raise _AlertError(f"{where} is a {type(point).__name__}, not a record")
    time = _number(point, _spelling(point, "time"), where, True)
    name = _spelling(point, "band")
    band = point.get(name)
    if band is None:
        raise _AlertError(f"{where}.{name} is missing")
    if not isinstance(band, str) or band.lower() not in LSST_PASSBANDS:
        raise _AlertError(f"{where}.{name} is {band!r}, not one of {' '.join(LSST_PASSBANDS)}")
    flux = _number(point, _spelling(point, "flux"), where, False)
    return time, band.lower(), flux, _number(point, _spelling(point, "error"), where, False)


def _optional_id(record: Mapping[str, Any], key: str, where: str) -> int | None:
    return None if record.get(key) is None else _integer(record, key, where)


def flatten_lsst_alert(record: Mapping[str, Any]) -> dict[str, Any]:
    """One LSST alert packet (a dict, as fastavro or pyarrow return it) as a row of
    :data:`LSST_ALERT_COLUMNS`.

    Raises
    ------
    ValueError
        If the packet lacks ``diaSource`` (with ``diaSourceId``, a time and a passband, and a
        ``diaObjectId`` or ``ssObjectId``), a history entry lacks its time or passband, a
        passband is not one of u g r i z y, or a field has the wrong type.
        ``prvDiaSources`` and ``diaObject`` may be null.
    """
    if not isinstance(record, Mapping):
        raise _AlertError(f"the alert is a {type(record).__name__}, not a record")
    source = record.get("diaSource")
    if not isinstance(source, Mapping):
        raise _AlertError("diaSource is missing")
    candid = _integer(source, "diaSourceId", "diaSource")
    dia_object = _optional_id(source, "diaObjectId", "diaSource")
    ss_object = _optional_id(source, "ssObjectId", "diaSource")
    if dia_object is None and not ss_object:
        raise _AlertError("diaSource has neither a diaObjectId nor an ssObjectId")
    history = record.get("prvDiaSources")
    if history is None:
        history = []
    elif isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Iterable):
        raise _AlertError(f"prvDiaSources is a {type(history).__name__}, not a list")
    points = [_point(point, f"prvDiaSources[{position}]")
              for position, point in enumerate(history)]  # fmt: skip
    points.append(_point(source, "diaSource"))
    summary = record.get("diaObject")
    first_seen = (_number(summary, _FIRST_DETECTION, "diaObject", False)
                  if isinstance(summary, Mapping) else math.nan)  # fmt: skip
    times, bands, flux, errors = zip(*points)
    return {
        "objectId": str(dia_object) if dia_object is not None else f"ss{ss_object}",
        "candid": candid,
        "midpointMjdTai": points[-1][0],
        "firstDiaSourceMjdTai": first_seen,
        "ssObjectId": ss_object or 0,
        "cmidpointMjdTai": np.array(times, dtype=np.float64),
        "cband": np.array(bands, dtype=object),
        "cpsfFlux": np.array(flux, dtype=np.float64),
        "cpsfFluxErr": np.array(errors, dtype=np.float64),
    }


def parquet_columns(schema: Any) -> list[str]:
    """The columns of an LSST alert table (a ``pyarrow.Schema``) that the reader needs:
    ``diaSource``, ``prvDiaSources`` and ``diaObject`` when it has ``firstDiaSourceMjdTai``.

    Raises
    ------
    ValueError
        If the table lacks ``diaSource`` or ``prvDiaSources``.
    """
    missing = [name for name in _PARQUET_COLUMNS if name not in schema.names]
    if missing:
        raise _AlertError(f"it has no column(s) {missing}; an LSST alert table has "
                          f"{list(_PARQUET_COLUMNS)} (it has {schema.names[:12]}...)")
    columns = list(_PARQUET_COLUMNS)
    if "diaObject" in schema.names:
        kind = schema.field("diaObject").type
        if getattr(kind, "num_fields", 0) and kind.get_field_index(_FIRST_DETECTION) >= 0:
            columns.append("diaObject")
    return columns


def table_survey(table: pd.DataFrame) -> str:
    """``"lsst"`` for a table of :data:`LSST_ALERT_COLUMNS`, ``"ztf"`` for one of
    :data:`~satcompress.broker.alerts.ALERT_COLUMNS` (recognised by its passband column)."""
    return LSST_SOURCE if "cband" in table.columns else "ztf"


def lsst_cut_reasons(table: pd.DataFrame, cuts: SelectionCuts) -> np.ndarray:
    """The solar-system and age cut per LSST alert: None (passes) or the reason (object array).

    The per-band point counts are checked later, by the task's preprocessing.
    """
    reasons = np.full(len(table), None, dtype=object)
    if not len(table):
        return reasons
    if cuts.max_age_days is not None:
        first_seen = table["firstDiaSourceMjdTai"].to_numpy(np.float64).copy()
        unknown = ~np.isfinite(first_seen)
        times = table["cmidpointMjdTai"].to_numpy()[unknown]
        first_seen[unknown] = [float(np.min(values)) for values in times]
        too_old = table["midpointMjdTai"].to_numpy(np.float64) - first_seen > cuts.max_age_days
        reasons[too_old] = cuts.age_reason
    if cuts.sso_max_distance_arcsec is not None:
        reasons[table["ssObjectId"].to_numpy(np.int64) != 0] = SOLAR_SYSTEM_OBJECT
    return reasons


def lsst_light_curves(table: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The long light-curve table of the task (:data:`CURVE_COLUMNS`) for LSST alert rows.

    ``keys`` names each row's curve (one per row). Detections in all six passbands with a
    measured flux, fluxes in nJy as the alert gives them, MJD times, repeated points removed,
    label empty, source ``"lsst"``.
    """
    if len(keys) != len(table):
        raise ValueError(f"{len(keys)} keys for {len(table)} alert rows; give one per row.")
    names = ("cmidpointMjdTai", "cband", "cpsfFlux", "cpsfFluxErr")
    arrays = {name: table[name].to_numpy() for name in names}
    lengths = np.array([len(values) for values in arrays["cband"]], dtype=np.int64)
    flat = {name: (np.concatenate([np.asarray(v) for v in values]) if len(values)
                   else np.zeros(0)) for name, values in arrays.items()}  # fmt: skip
    flux = flat["cpsfFlux"].astype(np.float64)
    measured = np.isfinite(flux)
    curves = pd.DataFrame({
        "object_id": np.repeat(np.asarray(keys, dtype=str), lengths)[measured],
        "mjd": flat["cmidpointMjdTai"].astype(np.float64)[measured],
        "band": flat["cband"].astype(str)[measured],
        "flux": flux[measured],
        "flux_err": flat["cpsfFluxErr"].astype(np.float64)[measured],
        "label": "",
        "source": LSST_SOURCE,
    }, columns=list(CURVE_COLUMNS))  # fmt: skip
    return deduplicate_points(curves)


def survey_cut_reasons(table: pd.DataFrame, cuts: SelectionCuts) -> np.ndarray:
    """The solar-system and age cuts of the table's survey (:func:`table_survey`):
    :func:`lsst_cut_reasons` or :func:`satcompress.broker.alerts.cut_reasons`."""
    return (lsst_cut_reasons if table_survey(table) == LSST_SOURCE else cut_reasons)(table, cuts)
