"""``satcompress inject`` on a compressed reference-task artifact: a table and a JSON record,
from the runtime and from the generated C."""

from __future__ import annotations

import json
import shutil

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
    if not shutil.which("cc"):
        return
    from satcompress.radiation import protect_artifact

    plain = CliRunner().invoke(app, ["inject", str(tmp_path / "run" / "model.sca"), "--task",
                                     "blobs", "--backend", "c", "--trials", "2"])
    assert plain.exit_code == 2 and "nothing in RAM" in plain.output
    protected = tmp_path / "protected.sca"
    protected.write_bytes((tmp_path / "run" / "model.sca").read_bytes())
    protect_artifact(protected, ("tables",), make_blobs().train.x)
    c_out = tmp_path / "inject-c.json"
    result = CliRunner().invoke(app, [
        "inject", str(protected), "--task", "blobs", "--backend", "c", "--flips", "1",
        "--trials", "20", "--bits", "exponent_top", "--out", str(c_out)])
    assert result.exit_code == 0, result.output
    assert "out of scope" in " ".join(result.output.split())
    record = json.loads(c_out.read_text())
    assert record["backend"] == "c" and record["campaign"]["backend"] == "c"
    # every flip lands in one copy of the triplicated tables: outvoted, the metric unmoved
    assert record["summary"][0]["trials"] == 20 and record["summary"][0]["mean_drop"] == 0
    assert {row["tensor"] for row in record["layers"]} <= {"tables#0", "tables#1", "tables#2"}
