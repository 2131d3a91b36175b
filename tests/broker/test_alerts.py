"""Reading raw ZTF alerts, their light curves and the selection cuts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from satcompress.broker import (
    ALERT_COLUMNS,
    SelectionCuts,
    alert_files,
    cut_reasons,
    flatten_alert,
    light_curves,
    read_alerts,
)
from satcompress.tasks.transients import JD_MINUS_MJD_DAYS, magnitude_to_flux_njy


def test_bundled_alerts_flatten_to_history_then_the_alert(bundled, raw_records):
    table = bundled.table
    assert len(table) == 175 and bundled.problems == () and tuple(table.columns) == ALERT_COLUMNS
    first, record = table.iloc[0], raw_records[0]
    assert first["candid"] == record["candid"]  # 19 digits, exact (never through a float)
    assert len(first["cjd"]) == len(record["prv_candidates"]) + 1
    assert first["cjd"][-1] == first["jd"] == record["candidate"]["jd"]
    assert first["cmagpsf"][-1] == np.float64(record["candidate"]["magpsf"])
    non_detections = [p["magpsf"] is None for p in record["prv_candidates"]]
    assert np.array_equal(np.isnan(first["cmagpsf"][:-1]), non_detections)


def test_avro_and_parquet_alerts_give_identical_light_curves(raw_records, write_avro, tmp_path):
    avro = write_avro(tmp_path / "alerts.avro", raw_records[:10])
    from_avro = read_alerts([avro]).table
    from_parquet = pd.DataFrame([flatten_alert(record) for record in raw_records[:10]])
    keys = [str(k) for k in range(10)]
    pdt.assert_frame_equal(light_curves(from_avro, keys), light_curves(from_parquet, keys),
                           check_exact=True)
    assert from_avro["candid"].tolist() == [record["candid"] for record in raw_records[:10]]


def test_light_curves_keep_g_and_r_detections_as_nanojansky_fluxes():
    table = pd.DataFrame([{
        "objectId": "ZTF0", "candid": 1, "jd": 2458800.7, "jdstarthist": np.nan,
        "ssdistnr": np.nan, "ssmagnr": np.nan,
        "cjd": np.array([2458800.5, 2458800.6, 2458800.6, 2458800.65, 2458800.7]),
        "cfid": np.array([1, 2, 2, 3, 1]),
        "cmagpsf": np.array([18.0, np.nan, 19.0, 17.0, 18.5]),  # NaN: a non-detection
        "csigmapsf": np.array([0.1, np.nan, 0.2, 0.1, 0.1]),
    }])  # fmt: skip
    curves = light_curves(table, ["a"])
    assert curves["band"].tolist() == ["g", "r", "g"]  # the non-detection and i band dropped
    assert np.allclose(curves["mjd"], np.array([2458800.5, 2458800.6, 2458800.7]) - JD_MINUS_MJD_DAYS)
    flux, flux_err = magnitude_to_flux_njy(np.array([18.0, 19.0, 18.5]), np.array([0.1, 0.2, 0.1]))
    assert np.array_equal(curves["flux"], flux) and np.array_equal(curves["flux_err"], flux_err)
    assert set(curves["source"]) == {"ztf"} and set(curves["object_id"]) == {"a"}


def _alert(**fields) -> dict:
    row = {"objectId": "ZTF0", "candid": 1, "jd": 2459000.0, "jdstarthist": 2458990.0,
           "ssdistnr": -999.0, "ssmagnr": -999.0, "cjd": np.array([2458950.0, 2459000.0]),
           "cfid": np.array([1, 1]), "cmagpsf": np.array([18.0, 18.0]),
           "csigmapsf": np.array([0.1, 0.1])}  # fmt: skip
    return {**row, **fields}


def test_cuts_give_the_first_failing_reason_in_the_documented_order():
    table = pd.DataFrame([
        _alert(),
        _alert(jdstarthist=2458900.0),  # 100 days old
        _alert(jdstarthist=2458900.0, ssdistnr=2.0, ssmagnr=19.5),  # old and an asteroid
        _alert(ssdistnr=2.0, ssmagnr=-999.0),  # no known asteroid magnitude: not a match
        _alert(jdstarthist=np.nan),  # first seen = first cjd, 50 days before
        _alert(jdstarthist=np.nan, cjd=np.array([2458800.0, 2459000.0])),
    ])  # fmt: skip
    reasons = cut_reasons(table, SelectionCuts())
    assert reasons.tolist() == [None, "older_than_90_days", "solar_system_object", None, None,
                                "older_than_90_days"]
    assert cut_reasons(table, SelectionCuts(max_age_days=None, sso_max_distance_arcsec=None)).tolist() == [None] * 6


@pytest.mark.parametrize("bad", [0, -1.0, "90"])
def test_cut_settings_are_validated(bad):
    with pytest.raises(ValueError, match="must be a number > 0 or None"):
        SelectionCuts(max_age_days=bad)


def test_an_unreadable_alert_is_listed_with_its_ids_and_the_rest_are_kept(raw_records, write_avro, tmp_path):
    broken = dict(raw_records[1], candidate=dict(raw_records[1]["candidate"], magpsf=None))
    path = write_avro(tmp_path / "three.avro", [raw_records[0], broken, raw_records[2]])
    alerts = read_alerts([path])
    assert alerts.table["candid"].tolist() == [raw_records[0]["candid"], raw_records[2]["candid"]]
    (problem,) = alerts.problems
    assert (problem.index, problem.object_id, problem.candid) == (1, broken["objectId"], broken["candid"])
    assert problem.message == "candidate.magpsf is missing" and problem.source == str(path)


def test_a_truncated_file_keeps_the_alerts_before_the_damage(raw_records, write_avro, tmp_path):
    whole = write_avro(tmp_path / "whole.avro", raw_records[:20]).read_bytes()
    (tmp_path / "cut.avro").write_bytes(whole[: len(whole) * 2 // 3])
    alerts = read_alerts([tmp_path / "cut.avro"])
    (problem,) = alerts.problems
    assert problem.index is None and "cannot read the file" in problem.message
    assert len(alerts.table) < 20  # Avro blocks before the cut may still be read


def test_alert_paths_are_checked_and_folders_expanded(raw_records, write_avro, tmp_path):
    write_avro(tmp_path / "b.avro", raw_records[:2])
    write_avro(tmp_path / "a.avro", raw_records[2:3])
    assert [p.name for p in alert_files([tmp_path])] == ["a.avro", "b.avro"]
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"must end in \.avro .* or \.parquet"):
        alert_files([tmp_path / "notes.txt"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        alert_files([tmp_path / "missing.avro"])
