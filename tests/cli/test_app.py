"""The command line: the demo and train jobs end to end, and one-line errors for bad input."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from typer.testing import CliRunner

from satcompress.cli import app
from satcompress.tasks import registry

runner = CliRunner()


@pytest.fixture
def quick_flares(monkeypatch, real_data_dir):
    task = registry.TASKS["flares"]
    quick = dataclasses.replace(task, train_settings=dict(task.train_settings, max_epochs=2))
    monkeypatch.setitem(registry.TASKS, "flares", quick)


def test_unknown_task_is_one_clear_line_and_exit_status_2(tmp_path):
    result = runner.invoke(app, ["demo", "--task", "sunspots", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "Unknown task 'sunspots'" in result.output and "flares" in result.output
    assert "Traceback" not in result.output


def test_demo_writes_measurement_and_summary(quick_flares, tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "flares" / "measurement.json").read_text())
    base = report["stages"][0]
    assert base["stage"] == "base" and base["parameters"] > 1_000_000
    assert base["macs"] > 1_000_000 and base["latency_ms_p95"] >= base["latency_ms_p50"] > 0
    assert {"tss", "hss", "recall", "false_alarm_rate", "bss"} <= set(base["metrics"])
    assert "logreg_tss" in report["baseline"] and "model_tss_at_0.5" in report["baseline"]
    summary = (tmp_path / "flares" / "summary.md").read_text()
    assert "| base |" in summary and "logreg_tss" in summary
    assert not list((tmp_path / "flares").glob(".*"))  # no temporary files left behind


def test_train_saves_a_weights_only_model_with_its_metrics(quick_flares, tmp_path):
    result = runner.invoke(app, ["train", "--task", "flares", "--out", str(tmp_path), "--max-epochs", "1"])
    assert result.exit_code == 0, result.output
    metadata = json.loads((tmp_path / "flares.json").read_text())
    assert metadata["train_settings"]["max_epochs"] == 1 and "tss" in metadata["metrics"]
    assert (tmp_path / "flares.pt").is_file()


def test_missing_data_is_one_clear_line(monkeypatch, tmp_path):
    from satcompress.data import DataFile

    monkeypatch.setattr(DataFile, "url", property(lambda self: f"http://127.0.0.1:9/{self.name}"))
    monkeypatch.setenv("SATCOMPRESS_DATA_DIR", str(tmp_path / "nothing-here"))
    result = runner.invoke(app, ["train", "--task", "flares", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "SATCOMPRESS_DATA_DIR" in result.output and "Traceback" not in result.output


def test_compress_meets_a_budget_and_writes_every_stage(quick_flares, tmp_path):
    result = runner.invoke(app, ["compress", "--task", "flares", "--recipe", "int8",
                                 "--budget", "max_bytes=3MB,max_metric_drop=tss:0.2",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "stages.json").read_text())
    assert report["fits_budget"] and [s["stage"] for s in report["stages"]] == [
        "base", "1:post_training_quantize"]
    assert report["stages"][1]["theoretical_bytes"] < report["stages"][0]["theoretical_bytes"] / 3


def test_compress_under_an_impossible_budget_names_the_closest_candidate(quick_flares, tmp_path):
    result = runner.invoke(app, ["compress", "--task", "flares", "--recipe", "int8",
                                 "--budget", "max_bytes=1kB", "--out", str(tmp_path)])
    assert result.exit_code == 2
    message = " ".join(result.output.split())  # rich wraps long lines
    assert re.search(r"Closest candidate: stage (1:post_training_quantize|artifact model\.sca) "
                     r"\(max_bytes: \d{7} > allowed 1000\)", message)
    assert "Traceback" not in result.output
