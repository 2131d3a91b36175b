"""``search --folds K``: the delivered recipe re-run on every fold with a base model per fold,
as ``compress --folds`` judges a hand recipe, so both compare on the same folds (issue 16)."""

from __future__ import annotations

import json

import pytest
from fold_task import PRIMARY_METRIC, tiny_task
from test_search_run import FAST
from typer.testing import CliRunner

from satcompress.cli.app import app
from satcompress.pipeline import base_model
from satcompress.pipeline.recipe import Recipe
from satcompress.search import run_search

BUDGET = "max_bytes=4kB,max_metric_drop=accuracy:0.5"


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A 2-trial search of the tiny task whose delivered recipe is judged on three folds."""
    out = tmp_path_factory.mktemp("search-folds")
    with tiny_task():
        yield run_search("tiny", BUDGET, 2, out, settings=FAST, latency_repeats=2, folds=3,
                         rank_candidates=0), out  # ranking: test_search_rank.py


def test_the_delivered_recipe_runs_on_every_fold_with_that_folds_base_model(searched):
    result, out = searched
    delivered = Recipe.load(out / "recipe.toml")
    assert delivered == result.run.recipe == result.folds.recipe
    assert [(run.fold, run.seed) for run in result.folds.runs] == [(0, 0), (1, 0), (2, 0)]
    for run in result.folds.runs:
        folder = out / "folds" / f"fold{run.fold}of3-seed0"
        assert run.result.out_dir == folder
        assert Recipe.load(folder / "recipe.toml") == delivered
        own = json.loads((folder / "stages.json").read_text())
        assert own["stages"][-1]["metrics"][PRIMARY_METRIC] == run.result.final.metrics[
            PRIMARY_METRIC]
    with tiny_task():  # each run's base is that fold's cached base model, on that fold's test
        bases = [base_model.cached_base_model("tiny", 0, fold=fold, n_folds=3)
                 for fold in range(3)]
    for run, base in zip(result.folds.runs, bases):
        assert run.result.measurements[0].metrics == base.metrics
        assert run.test_examples == len(base.data.test)
    assert len({base.path for base in bases}) == 3
    summary = json.loads((out / "search.json").read_text())["folds"]
    assert summary["evaluation"] == "mean over 3 folds × 1 seed"
    assert summary["drop_interval"] == json.loads((out / "folds" / "folds.json").read_text())[
        "drop_interval"]
    assert "## Chosen recipe over folds" in (out / "front.md").read_text()


def test_folds_are_refused_before_any_trial_where_they_cannot_run(tmp_path):
    from blob_task import trained_blobs

    with pytest.raises(ValueError, match="only a reference task can"):
        run_search(trained_blobs(), BUDGET, 4, tmp_path, folds=3)
    with pytest.raises(ValueError, match="integer >= 3"):
        run_search("flares", BUDGET, 4, tmp_path, folds=2)
    assert not (tmp_path / "study.db").exists()
    refused = CliRunner().invoke(app, ["search", "--task", "flares", "--budget", BUDGET,
                                       "--seeds", "2", "--out", str(tmp_path)])
    assert refused.exit_code == 2 and "give --folds K too" in " ".join(refused.output.split())


def test_search_with_folds_prints_the_runs_over_folds(searched, monkeypatch):
    import satcompress.search

    result, out = searched
    asked = {}

    def search(subject, budget, trials, out_dir, **options):
        asked.update(options, subject=subject)
        return result

    monkeypatch.setattr(satcompress.search, "run_search", search)
    with tiny_task():
        printed = CliRunner().invoke(app, ["search", "--task", "tiny", "--budget", BUDGET,
                                           "--folds", "3", "--seeds", "2", "--out", str(out)])
    output = " ".join(printed.output.split())
    assert printed.exit_code == 0, output
    assert asked["subject"] == "tiny" and asked["folds"] == 3 and list(asked["seeds"]) == [0, 1]
    assert "chosen recipe, mean over 3 folds × 1 seed" in output
    assert f"over folds: all limits met; {result.folds.interval.describe()}" in output
