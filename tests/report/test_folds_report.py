"""The report of a recipe judged over folds (``OUT/report.html`` of ``compress --folds``) and
the evaluation section of a one-split run's report: the mode, the numbers of ``folds.json``
or ``stages.json``, the paired interval and whether it excludes zero."""

from __future__ import annotations

import base64
import json

import pytest
from fold_task import PRIMARY_METRIC, RECIPE, tiny_task
from test_document import _parse

from satcompress.pipeline.budget import Budget
from satcompress.pipeline.folds import run_folds
from satcompress.report.tables import format_value

FOLD_SECTIONS = ["Evaluation", "Budget", "Runs", "Stages", "Recipe"]


@pytest.fixture(scope="module")
def folds_out(tmp_path_factory):
    """Three folds of the tiny task under a budget the drop meets (on the mean)."""
    out = tmp_path_factory.mktemp("folds-report")
    with tiny_task():
        run_folds("tiny", RECIPE, Budget.parse("max_metric_drop=accuracy:1"), out, folds=3,
                  latency_repeats=2)
    return out


def _cells(values) -> list[str]:
    return [format_value(value) for value in values]


def test_the_folds_report_says_the_mode_and_shows_the_interval_of_folds_json(folds_out):
    written = json.loads((folds_out / "folds.json").read_text())
    page = _parse(folds_out / "report.html")
    assert page.headings[0] == "satcompress report: tiny, recipe prune, mean over 3 folds × 1 seed"
    assert page.headings[1:] == FOLD_SECTIONS
    assert page.external == []  # self-contained, as a run's report
    assert len(page.images) == 1
    assert base64.b64decode(page.images[0].split(",", 1)[1]).startswith(b"\x89PNG")
    text = (folds_out / "report.html").read_text()
    assert "Evaluation: mean over 3 folds × 1 seed." in text and "All limits met." in text
    interval = written["drop_interval"]
    header = next(row for row in page.rows if row and row[0] == "metric")
    row = dict(zip(header, next(row for row in page.rows if row and row[0] == PRIMARY_METRIC)))
    assert [row["base"], row["compressed"], row["drop"], row["95% low"], row["95% high"]] == \
        _cells([interval[key] for key in ("base", "compressed", "drop", "low", "high")])
    assert row["excludes 0"] == ("yes" if interval["distinguishable_from_zero"] else "no")
    assert [r[-1] for r in page.rows if r and r[0] == "max_metric_drop[accuracy]"] == ["pass"]
    assert (folds_out / "report.md").read_text().count("## ") == len(FOLD_SECTIONS)
    assert (folds_out / "figures" / "folds.png").read_bytes().startswith(b"\x89PNG")


def test_the_folds_report_shows_every_run_and_every_stage_of_folds_json(folds_out):
    written = json.loads((folds_out / "folds.json").read_text())
    rows = [row for row in _parse(folds_out / "report.html").rows if row]
    by_run = {row[0]: row[1:] for row in rows if row[0].startswith("fold ")}
    for run in written["runs"]:  # the run table: base, artifact, drop, bootstrap, bytes
        cells = by_run[f"fold {run['fold']}, seed {run['seed']}"]
        assert cells[:3] == _cells([run["base"], run["artifact"], run["drop"]])
        assert cells[4] == format_value(run["artifact_bytes"])
    names = [stage["stage"] for stage in written["stages"]]
    stage_rows = [row for row in rows if row[0] in names]  # three tables, a row per stage
    assert len(stage_rows) == 3 * len(names)
    summary, metrics, sizes = (stage_rows[i:i + len(names)] for i in range(0, 3 * len(names),
                                                                            len(names)))
    assert [row[0] for row in summary] == [row[0] for row in metrics] == names
    for row, stage in zip(summary, written["stages"]):  # mean, sd, mean drop and interval
        assert row[1:3] == _cells([stage[PRIMARY_METRIC]["mean"], stage[PRIMARY_METRIC]["sd"]])
        interval = stage["drop_interval"]
        assert row[5:] == (["", "", "", ""] if interval is None else [
            *_cells([interval["drop"], interval["low"], interval["high"]]),
            "yes" if interval["distinguishable_from_zero"] else "no"])
    for table, quantity in ((metrics, PRIMARY_METRIC), (sizes, "bytes")):  # per stage and run
        assert [row[1:1 + len(written["runs"])] for row in table] == [
            _cells([run["stages"][position][quantity] for run in written["runs"]])
            for position in range(len(names))]


def test_a_one_split_report_says_so_and_shows_the_bootstrap_interval_of_stages_json(tmp_path):
    from conftest import make_blobs, tiny_mlp

    from satcompress.pipeline.base_model import TrainedModel
    from satcompress.pipeline.runner import run_recipe
    from satcompress.tasks.registry import Task

    task = Task("blobs", "tiny", "satcompress.tasks.user", metric="accuracy")
    data = make_blobs()
    trained = TrainedModel(task, tiny_mlp(), data, {})
    run_recipe(trained, RECIPE, Budget(), tmp_path, latency_repeats=2)
    interval = json.loads((tmp_path / "stages.json").read_text())["drop_interval"]
    page = _parse(tmp_path / "report.html")
    assert "Evaluation" in page.headings
    assert "Evaluation: one split." in (tmp_path / "report.html").read_text()
    header = next(row for row in page.rows if row and row[0] == "metric")
    row = dict(zip(header, next(row for row in page.rows if row and row[0] == "accuracy")))
    assert [row["drop"], row["95% low"], row["95% high"], row["method"]] == [
        *_cells([interval["drop"], interval["low"], interval["high"]]), interval["method"]]
    assert "paired bootstrap over 180 test groups" in row["method"]
