"""``satcompress inject`` on a compressed reference-task artifact: a table and a JSON record."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from satcompress.cli import app


def test_cli_inject_reports_the_drop_per_flip_count(tmp_path, monkeypatch):
    from conftest import make_blobs, register_blob_task, tiny_mlp

    from satcompress import stages
    from satcompress.pipeline.base_model import TrainedModel
    from satcompress.pipeline.budget import Budget
    from satcompress.pipeline.recipe import Recipe
    from satcompress.pipeline.runner import run_recipe

    blobs = register_blob_task(monkeypatch)
    recipe = Recipe("ptq", (stages.config_type("post_training_quantize")(
        quantize_activations=False),))
    trained = TrainedModel(blobs, tiny_mlp(), make_blobs(), {})
    run_recipe(trained, recipe, Budget(), tmp_path / "run", latency_repeats=3)

    out = tmp_path / "inject.json"
    result = CliRunner().invoke(app, [
        "inject", str(tmp_path / "run" / "model.sca"), "--task", "blobs", "--flips", "1,20",
        "--trials", "5", "--bits", "exponent_top", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert [row["flips"] for row in record["summary"]] == [1, 20]
    assert record["campaign"]["bits"] == "exponent_top" and record["layers"]
    bad = CliRunner().invoke(app, ["inject", str(tmp_path / "run" / "model.sca"), "--task",
                                   "blobs", "--flips", "one"])
    assert bad.exit_code == 2 and "whole numbers" in bad.output
