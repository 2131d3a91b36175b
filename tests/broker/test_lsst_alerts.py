"""LSST alerts: ELAsTiCC Parquet and Rubin Avro packets, survey detection, six-band GP, cuts."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
from typer.testing import CliRunner

from satcompress import broker
from satcompress.broker import SelectionCuts, classify_alerts, read_alerts, reason_counts
from satcompress.broker.classify import preprocess_alerts
from satcompress.broker.lsst import (
    LSST_ALERT_COLUMNS,
    flatten_lsst_alert,
    lsst_cut_reasons,
    lsst_light_curves,
    table_survey,
)
from satcompress.cli import app
from satcompress.tasks import lightcurves, transients


@pytest.fixture(scope="module")
def rubin_schema():
    packet = pytest.importorskip("lsst.alert.packet")
    return packet.Schema.from_uri()  # the latest Rubin alert schema the package holds


def _rubin_alert(schema, record: dict, first_seen: float | None = None) -> dict:
    """A Rubin alert (the package's schema) carrying an ELAsTiCC alert's detections."""
    from lsst.alert.packet import simulate_alert

    np.random.seed(0)
    alert = simulate_alert(copy.deepcopy(schema.definition))  # nullable fields are null
    template = alert["diaSource"]

    def source(point: dict) -> dict:
        return dict(template, diaSourceId=point["diaSourceId"], diaObjectId=point["diaObjectId"],
                    midpointMjdTai=point["midPointTai"], band=point["filterName"].lower(),
                    psfFlux=point["psFlux"], psfFluxErr=point["psFluxErr"])  # fmt: skip

    alert["diaSource"] = source(record["diaSource"])
    alert["prvDiaSources"] = [source(point) for point in record["prvDiaSources"] or []]
    alert["diaSourceId"] = record["diaSource"]["diaSourceId"]
    if first_seen is not None:
        field = next(f for f in schema.definition["fields"] if f["name"] == "diaObject")
        kind = copy.deepcopy(next(t for t in field["type"] if t != "null"))
        alert["diaObject"] = dict(simulate_alert({"name": "diaObject", "type": kind})["diaObject"],
                                  diaObjectId=record["diaSource"]["diaObjectId"],
                                  firstDiaSourceMjdTai=first_seen)  # fmt: skip
    assert schema.validate(alert)
    return alert


def _write_rubin(schema, path, alerts):
    with open(path, "wb") as stream:
        schema.store_alerts(stream, alerts)
    return path


def _curve(bands, times, flux, source="lsst") -> lightcurves.ObjectCurve:
    n = len(bands)
    return lightcurves.ObjectCurve("a", source, np.asarray(times, float), np.asarray(bands),
                                   np.asarray(flux, float), np.full(n, 0.05))  # fmt: skip


# --- reading ------------------------------------------------------------------------------------


def test_elasticc_alerts_flatten_to_history_then_the_alert(elasticc):
    path, records = elasticc
    alerts = read_alerts([path])
    table = alerts.table
    assert alerts.survey == "lsst" and alerts.problems == () and len(table) == len(records)
    assert tuple(table.columns) == LSST_ALERT_COLUMNS and table_survey(table) == "lsst"
    for row, record in zip(table.itertuples(), records):
        source, history = record["diaSource"], record["prvDiaSources"] or []
        assert (row.objectId, row.candid) == (str(source["diaObjectId"]), source["diaSourceId"])
        assert len(row.cband) == len(history) + 1 and row.cmidpointMjdTai[-1] == row.midpointMjdTai
        assert row.cpsfFlux[-1] == source["psFlux"] and row.ssObjectId == 0
        assert set(row.cband) <= set("ugrizy")  # ELAsTiCC's "Y" read as y
    assert np.isnan(table["firstDiaSourceMjdTai"]).all()  # not in the ELAsTiCC schema


def test_alert_light_curves_are_the_tasks_elasticc_curves_plus_the_other_bands(elasticc):
    path, _ = elasticc
    table = read_alerts([path]).table
    longest = table.assign(n=table["cband"].map(len)).sort_values("n", ascending=False,
                                                                   kind="stable")
    longest = longest.drop_duplicates("objectId").sort_index()  # the task keeps the longest
    ours = lsst_light_curves(longest, longest["objectId"].tolist())
    task = transients.read_elasticc_light_curves([path])
    gr = ours[ours["band"].isin(lightcurves.BANDS)].reset_index(drop=True)
    columns = ["object_id", "mjd", "band", "flux", "flux_err"]
    pdt.assert_frame_equal(gr[columns], task[columns], check_exact=True)
    assert set(ours["band"]) - set(lightcurves.BANDS)  # i, z, y detections are kept too
    wavelengths = lightcurves.SURVEY_WAVELENGTHS_ANGSTROM
    assert {b: wavelengths["lsst"][b] for b in lightcurves.BANDS} == wavelengths["elasticc"]


def test_rubin_avro_alerts_give_the_same_light_curves_as_the_parquet(elasticc, rubin_schema,
                                                                     tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, records = elasticc
    alerts = [_rubin_alert(rubin_schema, record, first_seen=60000.0) for record in records[:5]]
    avro = _write_rubin(rubin_schema, tmp_path / "rubin.avro", alerts)
    pq.write_table(pa.Table.from_pylist(alerts), tmp_path / "rubin.parquet")
    from_avro, from_parquet = read_alerts([avro]), read_alerts([path])
    assert from_avro.survey == "lsst" and from_avro.problems == ()
    assert (from_avro.table["firstDiaSourceMjdTai"] == 60000.0).all()
    pdt.assert_frame_equal(read_alerts([tmp_path / "rubin.parquet"]).table, from_avro.table,
                           check_exact=True)  # the Rubin alerts in Parquet form read the same
    keys = [str(k) for k in range(5)]
    expected = lsst_light_curves(from_parquet.table.iloc[:5], keys)
    pdt.assert_frame_equal(lsst_light_curves(from_avro.table, keys), expected, check_exact=True)
    assert from_avro.table["candid"].tolist() == from_parquet.table["candid"][:5].tolist()


def test_rubin_cut_fields_solar_system_and_first_detection(elasticc, rubin_schema, tmp_path):
    _, records = elasticc
    alert = _rubin_alert(rubin_schema, records[0])
    now = alert["diaSource"]["midpointMjdTai"]
    old = _rubin_alert(rubin_schema, records[0], first_seen=now - 200.0)
    young = _rubin_alert(rubin_schema, records[0], first_seen=now - 1.0)
    asteroid = copy.deepcopy(alert)
    asteroid["diaSource"].update(diaObjectId=None, ssObjectId=77)
    asteroid["prvDiaSources"] = None
    assert rubin_schema.validate(asteroid)
    table = read_alerts([_write_rubin(rubin_schema, tmp_path / "a.avro",
                                      [alert, old, young, asteroid])]).table  # fmt: skip
    assert table["objectId"].tolist()[3] == "ss77"
    assert lsst_cut_reasons(table, SelectionCuts()).tolist() == [
        None, "older_than_90_days", None, "solar_system_object"]
    assert lsst_cut_reasons(table, SelectionCuts(None, None)).tolist() == [None] * 4


# --- survey ---------------------------------------------------------------------------------------


def test_the_survey_is_recognised_from_the_fields_or_forced(elasticc, real_data_dir):
    path, _ = elasticc
    ztf = broker.bundled_alert_paths()[0]
    assert read_alerts([ztf]).survey == "ztf" and read_alerts([path], "lsst").survey == "lsst"
    forced = read_alerts([path], "ztf")
    (problem,) = forced.problems
    assert forced.table.empty and forced.survey == "ztf" and problem.index is None
    assert problem.message == "it holds LSST alerts, not ZTF ones: pass --survey lsst (or auto)"
    mixed = read_alerts([ztf, path])  # one survey per run: the first file's
    assert mixed.survey == "ztf" and len(mixed.table) == 51
    assert mixed.problems[0].message.endswith("classify each survey in its own run")
    with pytest.raises(ValueError, match="Unknown survey 'rubin'"):
        read_alerts([path], "rubin")


# --- the six-band GP ------------------------------------------------------------------------------


@pytest.mark.parametrize("search", ["grid", "lbfgs"])
def test_every_lsst_band_informs_the_gp_evaluated_at_g_and_r(search):
    config = lightcurves.PreprocessingConfig(hyperparameter_search=search)
    times, bands = [0.0, 4.0, 8.0, 2.0, 6.0, 10.0], ["g", "g", "g", "r", "r", "r"]
    flux = [0.4, 0.9, 0.5, 0.5, 1.0, 0.6]
    without, with_i = lightcurves.interpolate_objects(
        [_curve(bands, times, flux), _curve([*bands, "i"], [*times, 20.0], [*flux, 0.8])], config)
    r_without, r_with = without.x[:, 1], with_i.x[:, 1]
    assert without.x.shape == with_i.x.shape == (lightcurves.N_TIMESTEPS, 4)
    assert np.max(np.abs(r_with - r_without)) > 0.05  # the i point moved the r curve
    only_z = lightcurves.interpolate_objects(
        [_curve([*bands, "z"], [*times, 20.0], [*np.negative(flux), 5.0])], config)[0]
    assert only_z.skip_reason == "no_positive_flux"  # fluxes are scaled by the g/r peak


def test_only_the_sources_passbands_are_accepted():
    curves = pd.DataFrame({"object_id": "a", "mjd": [1.0, 2.0], "band": ["g", "i"],
                           "flux": 1.0, "flux_err": 0.1, "label": "", "source": "elasticc"})
    with pytest.raises(ValueError, match=r"bands \['i'\]; only \('g', 'r'\) .* 'elasticc'"):
        lightcurves.object_curves(curves)
    assert len(lightcurves.object_curves(curves.assign(source="lsst"))[0]) == 1


def test_an_alert_without_detections_leaves_the_others_their_own_inputs(elasticc):
    table = read_alerts([elasticc[0]]).table
    unmeasured = table.iloc[[0]].assign(cpsfFlux=[np.full(len(table["cband"][0]), np.nan)])
    config = lightcurves.PreprocessingConfig(hyperparameter_search="grid")
    alone = preprocess_alerts(table, config, SelectionCuts(None, None))
    mixed = preprocess_alerts(pd.concat([unmeasured, table], ignore_index=True), config,
                              SelectionCuts(None, None))  # fmt: skip
    assert mixed.reasons[0] == "fewer_than_2_points_in_g_and_r" and len(alone.rows) > 5
    assert np.array_equal(mixed.rows, alone.rows + 1) and np.array_equal(mixed.x, alone.x)


# --- bad alerts and classification ----------------------------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    (lambda a: a.pop("diaSource"), "diaSource is missing"),
    (lambda a: a["diaSource"].update(filterName="q"),
     "diaSource.filterName is 'q', not one of u g r i z y"),
    (lambda a: a["diaSource"].pop("midPointTai"), "diaSource.midpointMjdTai is missing"),
    (lambda a: a["diaSource"].update(diaObjectId=None),
     "diaSource has neither a diaObjectId nor an ssObjectId"),
    (lambda a: a.update(prvDiaSources=[{"midPointTai": 1.0}]), "prvDiaSources[0].band is missing"),
    (lambda a: a["diaSource"].update(psFlux="bright"),
     "diaSource.psFlux is str 'bright', not a number"),
])  # fmt: skip
def test_a_bad_alert_gets_one_clear_reason(elasticc, change, message):
    record = copy.deepcopy(elasticc[1][0])
    change(record)
    with pytest.raises(ValueError) as error:
        flatten_lsst_alert(record)
    assert str(error.value) == message


def test_lsst_alerts_are_classified_in_process_and_bad_ones_listed(elasticc, tiny_artifact,
                                                                   tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, records = elasticc
    table = pq.read_table(path)
    sources = table.column("diaSource").to_pylist()
    sources[1] = dict(sources[1], filterName="q")
    broken = table.set_column(table.schema.get_field_index("diaSource"), "diaSource",
                              pa.array(sources, type=table.schema.field("diaSource").type))
    pq.write_table(broken, tmp_path / "alerts.parquet")
    out = tmp_path / "scores.parquet"
    arguments = ["classify-alerts", str(tmp_path / "alerts.parquet"), "--artifact",
                 str(tiny_artifact), "--out", str(out)]
    result = CliRunner().invoke(app, [*arguments, "--no-spark", "--survey", "lsst"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "filterName is 'q'" in result.output
    assert "LSST alerts, but the artifact's model was trained on ZTF" in result.output
    scores = pd.read_parquet(out)
    assert len(scores) == len(records) and (scores["reason"] == "unparseable").sum() == 1
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["survey"] == "lsst" and summary["artifact_trained_on"] == "ztf"
    assert summary["problems"][0]["candid"] == records[1]["diaSource"]["diaSourceId"]
    results = classify_alerts(read_alerts([path]), tiny_artifact)
    counts = reason_counts(results)
    assert counts["classified"] > 0 and sum(counts.values()) == len(records)
    assert set(counts) <= {"classified", "older_than_90_days", "fewer_than_2_points_in_g",
                           "fewer_than_2_points_in_r", "fewer_than_2_points_in_g_and_r"}


@pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")  # PySpark 4.0's toPandas
def test_lsst_alerts_through_spark_give_exactly_the_in_process_results(
        spark, elasticc, rubin_schema, tiny_artifact, tmp_path):
    from satcompress.broker import classify_alerts_spark

    path, records = elasticc
    alerts = [_rubin_alert(rubin_schema, record, first_seen=60000.0) for record in records[:8]]
    rubin = read_alerts([_write_rubin(rubin_schema, tmp_path / "rubin.avro", alerts)])
    cuts = SelectionCuts(max_age_days=None)
    for table in (read_alerts([path]).table, rubin.table):  # ELAsTiCC Parquet, Rubin Avro
        in_process = classify_alerts(table, tiny_artifact, cuts)
        on_spark = classify_alerts_spark(spark, table, tiny_artifact, cuts,
                                         partitions=3)
        pdt.assert_frame_equal(on_spark, in_process, check_exact=True)
        assert reason_counts(on_spark).get("classified", 0) > 0
