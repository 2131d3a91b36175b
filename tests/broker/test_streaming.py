"""The Structured Streaming job: files landing in two rounds, a crash between a batch's write
and its commit, and the command line; every alert is written exactly once."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pandas.testing as pdt
import pytest
from typer.testing import CliRunner

from satcompress.broker import (
    SelectionCuts,
    batch_path,
    bundled_alert_paths,
    classify_alerts,
    classify_stream,
    default_checkpoint,
    read_alerts,
)
from satcompress.cli import app

# PySpark 4.0's toPandas passes pandas 3 a deprecated ``copy`` argument (a DeprecationWarning,
# an error under filterwarnings=error); the converted values are checked exactly below.
pytestmark = pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")

CUTS = SelectionCuts(max_age_days=None)  # 78 of the 175 bundled alerts classified
IDS = ["objectId", "candid"]


def _land(source, folder, name):
    """Move a whole file into the watched folder, as a producer must (copy, then rename)."""
    shutil.copyfile(source, folder.parent / name)
    (folder.parent / name).rename(folder / name)


def _run(spark, inbox, out, artifact, **options) -> list[int]:
    """One run of the stream until the files there are done; the batch ids it wrote."""
    summaries = classify_stream(spark, inbox, out, artifact, cuts=CUTS, once=True, **options)
    return [summary["batch_id"] for summary in summaries]


def test_every_alert_is_written_once_across_rounds_and_a_crash(spark, bundled, tiny_artifact,
                                                               tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    first, second, third = bundled_alert_paths()
    _land(first, inbox, "a.parquet")
    _land(second, inbox, "b.parquet")
    (inbox / "notes.txt").write_text("not an alert file")
    assert _run(spark, inbox, out, tiny_artifact, max_files_per_batch=1) == [0, 1]
    _land(third, inbox, "c.parquet")
    (inbox / "junk.avro").write_bytes(b"not avro")
    assert _run(spark, inbox, out, tiny_artifact) == [2]
    written = pd.read_parquet(batch_path(out, 2))
    # a crash after batch 2's results were written but before Spark marked it done
    for name in ("2", ".2.crc"):  # the commit log entry and its checksum
        (default_checkpoint(out) / "commits" / name).unlink()
    assert _run(spark, inbox, out, tiny_artifact) == [2]  # the same batch, the same files
    pdt.assert_frame_equal(pd.read_parquet(batch_path(out, 2)), written, check_exact=True)
    assert _run(spark, inbox, out, tiny_artifact) == []  # nothing new

    results = pd.read_parquet(out).sort_values(IDS).reset_index(drop=True)
    expected = classify_alerts(bundled, tiny_artifact, CUTS).sort_values(IDS)
    assert not results.duplicated(IDS).any()
    pdt.assert_frame_equal(results, expected.reset_index(drop=True), check_exact=True,
                           check_dtype=False)  # nullable ints and strings from Parquet
    summary = json.loads((out / "_batches" / "batch-00000002.json").read_text())
    assert summary["unreadable_files"] == 1 and summary["alerts_read"] == 57


def test_lsst_alert_files_stream_as_they_classify_in_process(spark, elasticc, tiny_artifact,
                                                             tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    _land(elasticc[0], inbox, "elasticc.parquet")
    assert _run(spark, inbox, out, tiny_artifact, survey="auto") == [0]
    results = pd.read_parquet(out).sort_values(IDS).reset_index(drop=True)
    expected = classify_alerts(read_alerts([elasticc[0]]), tiny_artifact, CUTS)
    pdt.assert_frame_equal(results, expected.sort_values(IDS).reset_index(drop=True),
                           check_exact=True, check_dtype=False)
    summary = json.loads((out / "_batches" / "batch-00000000.json").read_text())
    assert summary["survey"] == "lsst" and summary["counts"].get("classified", 0) > 0


def test_the_stream_command_and_its_refusal_to_write_alerts_twice(spark, real_data_dir,
                                                                   tiny_artifact, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    _land(bundled_alert_paths()[0], inbox, "a.parquet")
    arguments = ["classify-alerts", "--stream", str(inbox), "--artifact", str(tiny_artifact),
                 "--out", str(out), "--master", "local[2]", "--once"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "batch 0: 1 file(s), 51 alerts" in " ".join(result.output.split())
    assert len(pd.read_parquet(out)) == 51
    result = CliRunner().invoke(app, [*arguments, "--checkpoint", str(tmp_path / "fresh")])
    assert result.exit_code == 2 and "its checkpoint" in " ".join(result.output.split())
    result = CliRunner().invoke(app, [*arguments[:2], str(inbox / "a.parquet"), *arguments[2:]])
    assert result.exit_code == 2 and "not both" in result.output
