"""``satcompress classify-alerts``: results for every alert, unreadable ones listed, both engines."""

from __future__ import annotations

import json

import pandas as pd
import pandas.testing as pdt
import pytest
from typer.testing import CliRunner

from satcompress.broker import bundled_alert_paths
from satcompress.cli import app


# PySpark 4.0's toPandas passes pandas 3 a deprecated ``copy`` argument (a DeprecationWarning,
# an error under filterwarnings=error); the converted values are checked exactly below.
pytestmark = pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")

cli = CliRunner()


def _inputs(raw_records, write_avro, tmp_path):
    broken = dict(raw_records[1], candidate=dict(raw_records[1]["candidate"], magpsf=None))
    avro = write_avro(tmp_path / "three.avro", [raw_records[0], broken, raw_records[2]])
    return [str(bundled_alert_paths()[0]), str(avro)]


def test_every_alert_gets_a_row_and_unreadable_ones_are_listed(raw_records, write_avro,
                                                                tiny_artifact, tmp_path):
    out = tmp_path / "scores.parquet"
    arguments = ["classify-alerts", *_inputs(raw_records, write_avro, tmp_path),
                 "--artifact", str(tiny_artifact), "--out", str(out), "--no-spark"]
    result = cli.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "not read:" in output and "candidate.magpsf is missing" in output
    scores = pd.read_parquet(out)
    assert len(scores) == 51 + 3 and (scores["reason"] == "unparseable").sum() == 1
    summary = json.loads((tmp_path / "scores.json").read_text())
    assert summary["alerts_read"] == 53 and summary["counts"]["unparseable"] == 1
    assert summary["problems"][0]["candid"] == raw_records[1]["candid"]


def test_spark_and_pandas_engines_write_the_same_results(spark, raw_records, write_avro,
                                                          tiny_artifact, tmp_path):
    inputs = _inputs(raw_records, write_avro, tmp_path)
    for name, engine in (("pandas", ["--no-spark"]), ("spark", ["--master", "local[2]"])):
        result = cli.invoke(app, ["classify-alerts", *inputs, "--artifact", str(tiny_artifact),
                                  "--out", str(tmp_path / f"{name}.parquet"),
                                  "--max-age-days", "0", *engine])
        assert result.exit_code == 0, result.output
    pdt.assert_frame_equal(pd.read_parquet(tmp_path / "spark.parquet"),
                           pd.read_parquet(tmp_path / "pandas.parquet"), check_exact=True)


def test_a_missing_artifact_or_no_readable_alert_is_one_clear_line(tiny_artifact, tmp_path):
    (tmp_path / "junk.avro").write_bytes(b"not avro")
    result = cli.invoke(app, ["classify-alerts", str(tmp_path / "junk.avro"),
                              "--artifact", str(tmp_path / "none.sca")])
    assert result.exit_code == 2 and "does not exist" in " ".join(result.output.split())
    result = cli.invoke(app, ["classify-alerts", str(tmp_path / "junk.avro"),
                              "--artifact", str(tiny_artifact), "--no-spark"])
    assert result.exit_code == 2 and "No alert could be read" in " ".join(result.output.split())
    assert "Traceback" not in result.output
