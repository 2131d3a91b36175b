"""Reading raw ZTF alerts and the selection cuts applied before classification (LSST alerts:
:mod:`satcompress.broker.lsst`; :func:`read_alerts` reads either).

Ingestion
---------
A ZTF alert packet (schema ``ztf.alert``, versions 3.3 and later; Patterson et al. 2019, PASP
131, 018001) holds the new detection in ``candidate`` and up to 30 days of earlier
measurements of the same position in ``prv_candidates``: detections (``magpsf`` set) and
non-detections (``magpsf`` null, only an upper limit ``diffmaglim``). :func:`read_alerts`
reads alerts from Avro files (one or many packets per file, decoded with ``fastavro``; the
schema is embedded in the file) and from the Parquet form Fink stores them in, and flattens
each packet into one row of :data:`ALERT_COLUMNS`: the alert's ids, the fields the cuts use,
and Fink's ``concat_col`` arrays ``cjd, cfid, cmagpsf, csigmapsf`` (history first, then the
alert's own detection; NaN magnitude = non-detection), the same arrays the transient task's
training light curves were built from (:func:`satcompress.tasks.transients.read_ztf_light_curves`).

A packet that cannot be read (a required field missing or of the wrong type) is not
dropped: it becomes an :class:`AlertProblem` (file, position, ids when known, what is wrong),
and so does a file that cannot be opened or decoded.

Light curves
------------
:func:`light_curves` turns the rows into the task's long light-curve table
(:data:`satcompress.tasks.transients.CURVE_COLUMNS`): g (``fid`` 1) and r (``fid`` 2)
detections only (non-detections and i-band points dropped), magnitudes to fluxes in nJy
(:func:`~satcompress.tasks.transients.magnitude_to_flux_njy`), JD to MJD, and repeated
measurements removed (:func:`~satcompress.tasks.transients.deduplicate_points`), exactly as
the task reads its training data. As there, ``isdiffpos`` is ignored (Fink's ``cmagpsf``
arrays do not carry it, so neither did the training curves).

Selection cuts
--------------
Applied in this order; an alert gets the first reason that applies (:func:`cut_reasons`):

1. ``solar_system_object``: ZTF's own cross-match puts a known asteroid within
   ``ssdistnr`` <= 5 arcsec (``0 <= ssdistnr <= 5`` and ``ssmagnr`` known; ZTF writes -999
   when there is none), the radius at which Fink's ``roid`` module confirms a solar-system
   object (``roid == 3``), which Fink's t2 module rejects. In the 175 bundled alerts: 1.
2. ``older_than_90_days``: ``jd - jdstarthist > 90`` days, i.e. the source has been varying
   for more than 90 days, the limit of Fink's t2 selection (``apply_selection_cuts_ztf``,
   ``maxndethist=90`` in fink-science ``t2/utilities.py``): the classifier is for young
   transients. When ``jdstarthist`` is missing the first ``cjd`` of the alert is used. In the
   bundled alerts: 152 of 175 (most are years-old variables and AGN).
3. ``fewer_than_2_points_in_g`` (``_in_r``, ``_in_g_and_r``): fewer detections in a band than
   the artifact's ``min_points_per_band`` (the task's :class:`PreprocessingConfig`, 2): the 2-D
   GP needs each band constrained. Checked by the task's own preprocessing, as are its other
   skip reasons (``zero_time_span``, ``no_positive_flux``, ``gp_fit_failed``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from satcompress.data import fetch
from satcompress.tasks.transients import (
    CURVE_COLUMNS,
    JD_MINUS_MJD_DAYS,
    ZTF_FILTER_IDS,
    deduplicate_points,
    magnitude_to_flux_njy,
)

__all__ = [
    "ALERT_COLUMNS",
    "ALERT_SUFFIXES",
    "AUTO",
    "BUNDLED_ALERTS",
    "SOLAR_SYSTEM_OBJECT",
    "SURVEYS",
    "ZTF_MISSING_VALUE",
    "AlertProblem",
    "Alerts",
    "SelectionCuts",
    "alert_files",
    "bundled_alert_paths",
    "cut_reasons",
    "flatten_alert",
    "light_curves",
    "read_alerts",
    "record_survey",
]

ALERT_COLUMNS = ("objectId", "candid", "jd", "jdstarthist", "ssdistnr", "ssmagnr",
                 "cjd", "cfid", "cmagpsf", "csigmapsf")  # fmt: skip
"""One row per alert: ids, the alert's time, the cut fields, then the history+alert arrays."""
ALERT_SUFFIXES = (".avro", ".parquet")
BUNDLED_ALERTS = (
    "transients/ztf_alerts/alerts_20191209_51.parquet",
    "transients/ztf_alerts/datatest_20211122_part2.parquet",
    "transients/ztf_alerts/datatest_20211122_part3.parquet",
)
"""The registered raw ZTF alerts (175, from fink-science's test data)."""
SOLAR_SYSTEM_OBJECT = "solar_system_object"
SURVEYS = ("ztf", "lsst")
AUTO = "auto"
"""``read_alerts(survey=AUTO)`` recognises the survey from the alerts' fields."""
ZTF_MISSING_VALUE = -999.0
"""ZTF's placeholder for "no counterpart" in the ``ss*`` and ``*nr`` fields."""
_PARQUET_COLUMNS = ("objectId", "candid", "candidate", "prv_candidates")


@dataclass(frozen=True)
class SelectionCuts:
    """Which alerts are classified (see the module docstring for the reasons and numbers).

    Attributes
    ----------
    max_age_days : float | None
        Largest ``jd - jdstarthist`` (days since the source first varied); None: no age cut.
    sso_max_distance_arcsec : float | None
        Alerts with a known solar-system object this close (``ssdistnr``) are rejected;
        None: no solar-system cut.
    """

    max_age_days: float | None = 90.0
    sso_max_distance_arcsec: float | None = 5.0

    def __post_init__(self) -> None:
        for name in ("max_age_days", "sso_max_distance_arcsec"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"SelectionCuts.{name} must be a number > 0 or None (no cut), "
                                 f"got {value!r}.")

    @property
    def age_reason(self) -> str:
        """The reason given to alerts older than ``max_age_days``."""
        return f"older_than_{self.max_age_days:g}_days"


class AlertProblem(NamedTuple):
    """An alert (``index`` >= 0, its position in the file) or a whole file (``index`` None)
    that could not be read, and why."""

    source: str
    index: int | None
    object_id: str | None
    candid: int | None
    message: str


class Alerts(NamedTuple):
    """Alerts read by :func:`read_alerts`: a table of :data:`ALERT_COLUMNS` (ZTF) or
    :data:`~satcompress.broker.lsst.LSST_ALERT_COLUMNS` (LSST), one row per readable alert in
    file order, every problem met, and the survey."""

    table: pd.DataFrame
    problems: tuple[AlertProblem, ...]
    survey: str = "ztf"


class _AlertError(ValueError):
    pass


def _number(record: Mapping[str, Any], key: str, where: str, required: bool) -> float:
    value = record.get(key)
    if value is None:
        if required:
            raise _AlertError(f"{where}.{key} is missing")
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise _AlertError(f"{where}.{key} is {type(value).__name__} {value!r}, not a number")
    return float(value)


def _integer(record: Mapping[str, Any], key: str, where: str) -> int:
    value = record.get(key)
    if value is None:
        raise _AlertError(f"{where}.{key} is missing")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise _AlertError(f"{where}.{key} is {type(value).__name__} {value!r}, not an integer")
    return int(value)  # not through float: a candid has 19 digits


def flatten_alert(record: Mapping[str, Any]) -> dict[str, Any]:
    """One ZTF alert packet (a dict, as fastavro or pyarrow return it) as a row of
    :data:`ALERT_COLUMNS`.

    Raises
    ------
    ValueError
        If the packet lacks ``objectId``, ``candid``, ``candidate`` (with ``jd``, ``fid``,
        ``magpsf``, ``sigmapsf``) or a history entry lacks ``jd`` or ``fid``, or a field has the
        wrong type. ``prv_candidates`` may be null (no history).
    """
    if not isinstance(record, Mapping):
        raise _AlertError(f"the alert is a {type(record).__name__}, not a record")
    object_id = record.get("objectId")
    if not isinstance(object_id, str) or not object_id:
        raise _AlertError(f"objectId is {object_id!r}, not a non-empty string")
    candid = _integer(record, "candid", "alert")
    candidate = record.get("candidate")
    if not isinstance(candidate, Mapping):
        raise _AlertError("candidate is missing")
    history = record.get("prv_candidates")
    if history is None:
        history = []
    elif isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Iterable):
        raise _AlertError(f"prv_candidates is a {type(history).__name__}, not a list")
    points = []
    for position, point in enumerate(history):
        where = f"prv_candidates[{position}]"
        if not isinstance(point, Mapping):
            raise _AlertError(f"{where} is a {type(point).__name__}, not a record")
        points.append((_number(point, "jd", where, True), _integer(point, "fid", where),
                       _number(point, "magpsf", where, False),
                       _number(point, "sigmapsf", where, False)))  # fmt: skip
    points.append((_number(candidate, "jd", "candidate", True),
                   _integer(candidate, "fid", "candidate"),
                   _number(candidate, "magpsf", "candidate", True),
                   _number(candidate, "sigmapsf", "candidate", True)))  # fmt: skip
    cjd, cfid, cmagpsf, csigmapsf = (np.array(column) for column in zip(*points))
    return {
        "objectId": object_id,
        "candid": candid,
        "jd": points[-1][0],
        "jdstarthist": _number(candidate, "jdstarthist", "candidate", False),
        "ssdistnr": _number(candidate, "ssdistnr", "candidate", False),
        "ssmagnr": _number(candidate, "ssmagnr", "candidate", False),
        "cjd": cjd.astype(np.float64),
        "cfid": cfid.astype(np.int64),
        "cmagpsf": cmagpsf.astype(np.float64),
        "csigmapsf": csigmapsf.astype(np.float64),
    }


def _avro_records(path: Path) -> Iterator[Any]:
    import fastavro  # noqa: PLC0415

    with path.open("rb") as stream:
        yield from fastavro.reader(stream)


def _parquet_records(path: Path) -> Iterator[Any]:
    """The alerts of a ZTF or (with a ``diaSource`` column) an LSST alert table."""
    import pyarrow.parquet as pq  # noqa: PLC0415

    from satcompress.broker.lsst import parquet_columns  # noqa: PLC0415 (lsst imports this module)

    schema = pq.read_schema(path)
    if "diaSource" in schema.names:
        columns = parquet_columns(schema)
    else:
        missing = [name for name in _PARQUET_COLUMNS if name not in schema.names]
        if missing:
            raise _AlertError(f"it has no column(s) {missing}; a ZTF alert table has "
                              f"{list(_PARQUET_COLUMNS)}, an LSST one diaSource and "
                              f"prvDiaSources (it has {schema.names[:12]}...)")
        columns = list(_PARQUET_COLUMNS)
    yield from pq.read_table(path, columns=columns).to_pylist()


def alert_files(paths: Iterable[str | Path]) -> list[Path]:
    """The alert files named by ``paths``: files as given, folders expanded to the ``.avro`` and
    ``.parquet`` files inside them (recursively, sorted).

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    ValueError
        If a file is neither ``.avro`` nor ``.parquet``, or a folder holds no alert file.
    """
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in ALERT_SUFFIXES and p.is_file())
            if not found:
                raise ValueError(f"{path} holds no .avro or .parquet alert file.")
            files.extend(found)
        elif not path.exists():
            raise FileNotFoundError(f"{path} does not exist; give ZTF alert files (.avro or "
                                    ".parquet) or folders holding them.")
        elif path.suffix not in ALERT_SUFFIXES:
            raise ValueError(f"{path}: alert files must end in .avro (ZTF packets) or .parquet "
                             "(Fink's table form); rename it or convert it.")
        else:
            files.append(path)
    return files


def record_survey(record: Any) -> str | None:
    """The survey of an alert packet from its fields: ``"ztf"`` (``candidate``), ``"lsst"``
    (``diaSource``) or None (neither)."""
    if isinstance(record, Mapping):
        if "candidate" in record:
            return "ztf"
        if "diaSource" in record:
            return "lsst"
    return None


def _problem(path: Path, index: int, record: Any, message: str) -> AlertProblem:
    """An unreadable alert, with the ids it has (ZTF ``objectId``/``candid``, LSST
    ``diaObjectId``/``diaSourceId``)."""
    ids = record if isinstance(record, Mapping) else {}
    source = ids.get("diaSource")
    if isinstance(source, Mapping):
        object_id = source.get("diaObjectId")
        ids = {"objectId": None if object_id is None else str(object_id),
               "candid": source.get("diaSourceId")}  # fmt: skip
    candid = ids.get("candid")
    return AlertProblem(str(path), index, ids.get("objectId"),
                        candid if isinstance(candid, int) else None, message)  # fmt: skip


def read_alerts(paths: Iterable[str | Path], survey: str = AUTO) -> Alerts:
    """Read and flatten ZTF or LSST alerts from Avro and Parquet files (or folders of them).

    ``survey`` is ``"ztf"``, ``"lsst"`` or ``"auto"``: the survey of the first alert read
    (:func:`record_survey`). A run reads one survey: a file whose first alert is of the other
    one is a problem. Every alert read becomes a row of the table (:data:`ALERT_COLUMNS` or
    :data:`~satcompress.broker.lsst.LSST_ALERT_COLUMNS`); every alert or file that cannot be
    read becomes an :class:`AlertProblem` (the alerts of a file read before a decoding error
    are kept). Nothing is dropped without a trace.

    Raises
    ------
    ValueError
        If ``survey`` is not one of :data:`SURVEYS` or ``"auto"``; see also
        :func:`alert_files`.
    """
    from satcompress.broker import lsst  # noqa: PLC0415 (lsst imports this module)

    if survey not in (*SURVEYS, AUTO):
        raise ValueError(f"Unknown survey {survey!r}; choose one of {[*SURVEYS, AUTO]}.")
    readers = {"ztf": (flatten_alert, ALERT_COLUMNS),
               "lsst": (lsst.flatten_lsst_alert, lsst.LSST_ALERT_COLUMNS)}  # fmt: skip
    chosen = None if survey == AUTO else survey
    rows, problems = [], []
    for path in alert_files(paths):
        records = _avro_records(path) if path.suffix == ".avro" else _parquet_records(path)
        index = -1
        try:
            for index, record in enumerate(records):
                found = record_survey(record)
                chosen = chosen or found
                if index == 0 and found not in (None, chosen):
                    fix = (f"pass --survey {found} (or auto)" if survey != AUTO else
                           "classify each survey in its own run")  # fmt: skip
                    problems.append(AlertProblem(str(path), None, None, None,
                                                 f"it holds {found.upper()} alerts, not "
                                                 f"{chosen.upper()} ones: {fix}"))  # fmt: skip
                    break
                try:
                    rows.append(readers[chosen or "ztf"][0](record))
                except _AlertError as error:
                    problems.append(_problem(path, index, record, str(error)))
        except Exception as error:  # noqa: BLE001 (any decoder failure is reported, not raised)
            read = f" after {index + 1} alert(s)" if index >= 0 else ""
            problems.append(AlertProblem(str(path), None, None, None,
                                         f"cannot read the file{read}: {error}"))
    chosen = chosen or "ztf"
    columns = readers[chosen][1]
    table = pd.DataFrame(rows, columns=list(columns)) if rows else pd.DataFrame(
        {name: pd.Series(dtype=object) for name in columns})
    for name in ("candid", "ssObjectId"):
        if rows and name in table:
            table[name] = table[name].astype(np.int64)
    return Alerts(table, tuple(problems), chosen)


def bundled_alert_paths() -> list[Path]:
    """Local, checksum-verified copies of :data:`BUNDLED_ALERTS` (via :mod:`satcompress.data`)."""
    return [fetch(name) for name in BUNDLED_ALERTS]


def cut_reasons(table: pd.DataFrame, cuts: SelectionCuts) -> np.ndarray:
    """The solar-system and age cut per alert: None (passes) or the reason (object array).

    The per-band point counts are checked later, by the task's preprocessing.
    """
    reasons = np.full(len(table), None, dtype=object)
    if not len(table):
        return reasons
    if cuts.max_age_days is not None:
        first_seen = table["jdstarthist"].to_numpy(np.float64).copy()
        unknown = ~np.isfinite(first_seen)
        first_seen[unknown] = [float(np.min(cjd)) for cjd in table["cjd"].to_numpy()[unknown]]
        too_old = table["jd"].to_numpy(np.float64) - first_seen > cuts.max_age_days
        reasons[too_old] = cuts.age_reason
    if cuts.sso_max_distance_arcsec is not None:
        distance = table["ssdistnr"].to_numpy(np.float64)
        magnitude = table["ssmagnr"].to_numpy(np.float64)
        known = np.isfinite(magnitude) & (magnitude != ZTF_MISSING_VALUE)
        close = (distance >= 0) & (distance <= cuts.sso_max_distance_arcsec)
        reasons[known & close] = SOLAR_SYSTEM_OBJECT
    return reasons


def light_curves(table: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The long light-curve table of the task (:data:`CURVE_COLUMNS`) for the alert rows.

    ``keys`` names each row's curve (its ``object_id``; one per row, so that an object seen in
    several alerts gives several curves). g and r detections only, fluxes in nJy, MJD times,
    repeated points removed, label empty, source "ztf".
    """
    if len(keys) != len(table):
        raise ValueError(f"{len(keys)} keys for {len(table)} alert rows; give one per row.")
    arrays = {name: table[name].to_numpy() for name in ("cjd", "cfid", "cmagpsf", "csigmapsf")}
    lengths = np.array([len(values) for values in arrays["cjd"]], dtype=np.int64)
    flat = {name: (np.concatenate([np.asarray(v, np.float64) for v in values])
                   if len(values) else np.zeros(0)) for name, values in arrays.items()}  # fmt: skip
    object_ids = np.repeat(np.asarray(keys, dtype=str), lengths)
    fid = flat["cfid"]
    detected = np.isfinite(flat["cmagpsf"]) & np.isin(fid, list(ZTF_FILTER_IDS))
    flux, flux_err = magnitude_to_flux_njy(flat["cmagpsf"][detected], flat["csigmapsf"][detected])
    bands = pd.Series(fid[detected].astype(np.int64)).map(ZTF_FILTER_IDS).to_numpy()
    curves = pd.DataFrame({
        "object_id": object_ids[detected],
        "mjd": flat["cjd"][detected] - JD_MINUS_MJD_DAYS,
        "band": bands,
        "flux": flux,
        "flux_err": flux_err,
        "label": "",
        "source": "ztf",
    }, columns=list(CURVE_COLUMNS))  # fmt: skip
    return deduplicate_points(curves)
