"""``max_sdc_probability`` as a search constraint: judged on the candidates the search
delivers (not on trials), measured only once every other limit is met, a candidate over it
sending the search to the next, with the protections the settings give the recipe."""

from __future__ import annotations

import json

import pytest

from satcompress import stages
from satcompress.artifact import read_artifact
from satcompress.pipeline import runner
from satcompress.pipeline.budget import SDC_METRIC, Budget
from satcompress.pipeline.recipe import Recipe
from satcompress.pipeline.result import BudgetNotMet
from satcompress.radiation import sdc_probability
from satcompress.search import SearchSettings, run_search
from blob_task import trained_blobs

FAST = SearchSettings(latency_repeats=2, qat_epochs=1, proxy_examples=60,
                      student_fractions=(1.0,), protect=("ranges", "tables"))


@pytest.fixture(scope="module")
def trained():
    return trained_blobs()


def test_a_vulnerable_candidate_sends_the_search_to_the_next(trained, tmp_path, monkeypatch):
    measured = []

    def first_one_vulnerable(content, task, data):
        """The real measurement, reported as 1.0 for the first candidate."""
        measured.append(sdc_probability(content, task, data))
        return 1.0 if len(measured) == 1 else measured[-1]

    monkeypatch.setattr(runner, "sdc_probability", first_one_vulnerable)
    result = run_search(trained, "max_bytes=6kB,max_metric_drop=accuracy:0.9,"
                        "max_sdc_probability=0.5", 4, tmp_path, settings=FAST,
                        latency_repeats=2)
    summary = json.loads((tmp_path / "search.json").read_text())
    assert len(measured) == 2 and len(summary["rejected"]) == 1
    assert "max_sdc_probability" in summary["rejected"][0]["why"]
    assert summary["rejected"][0]["trial"] != result.chosen.label
    # the delivered artifact: protected as the settings say, its vulnerability recorded
    artifact = tmp_path / "model" / "model.sca"
    assert read_artifact(artifact).metadata["protection"]["tables"] is True
    assert Recipe.load(tmp_path / "recipe.toml").protect == ("ranges", "tables")
    assert summary["final"]["test"][SDC_METRIC] == measured[1] <= 0.5
    assert measured[1] == sdc_probability(artifact.read_bytes(), trained.task, trained.data)


def test_the_vulnerability_is_not_measured_on_an_artifact_over_another_limit(
        trained, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "sdc_probability", lambda *args: calls.append(args) or 0.0)
    recipe = Recipe("ptq", (stages.config_type("post_training_quantize")(
        quantize_activations=False),))
    with pytest.raises(BudgetNotMet) as error:
        runner.run_recipe(trained, recipe, Budget(max_bytes=100, max_sdc_probability=0.01),
                          tmp_path / "small", latency_repeats=2)
    assert not calls and "max_sdc_probability" not in str(error.value)
    result = runner.run_recipe(trained, recipe, Budget(max_sdc_probability=0.01),
                               tmp_path / "fits", latency_repeats=2)
    assert len(calls) == 1 and result.flight.metrics[SDC_METRIC] == 0.0


def test_search_settings_check_the_protections():
    with pytest.raises(ValueError, match="unknown"):
        SearchSettings(protect=("armour",))
    assert "protect" not in SearchSettings().to_dict()  # studies stored before it resume
    assert SearchSettings(**FAST.to_dict()) == FAST


def test_the_cli_refuses_an_unknown_protection_before_searching(tmp_path):
    from typer.testing import CliRunner

    from satcompress.cli.app import app

    result = CliRunner().invoke(app, ["search", "--task", "flares", "--budget",
                                      "max_sdc_probability=0.001", "--protect", "ranges,armour",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown ['armour']" in result.output
    assert not (tmp_path / "study.db").exists()
