"""Verdicts over grouped folds: every group tested once, a base model per fold and seed, the
metric drop judged on the mean over runs and resources on the worst run (issue 16). The tiny
task the runs use (120 groups of three rows of the blobs) is ``tests/fold_task.py``.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from fold_task import PRIMARY_METRIC, RECIPE, tiny_task as registered_tiny_task

from satcompress.measure.uncertainty import paired_t_interval
from satcompress.pipeline import base_model
from satcompress.pipeline.budget import Budget
from satcompress.pipeline.folds import FoldsBudgetNotMet, run_folds
from satcompress.report.tables import format_value
from satcompress.tasks.base import grouped_fold_split, grouped_folds, stratified_group_split


@pytest.fixture(scope="module")
def tiny_task():
    with registered_tiny_task() as task:
        yield task


@pytest.fixture(scope="module")
def three_folds(tiny_task, tmp_path_factory):
    """The recipe run on three folds of the tiny task, with no limits."""
    return run_folds("tiny", RECIPE, Budget(), tmp_path_factory.mktemp("folds"), folds=3,
                     seeds=(0,), latency_repeats=2)


@pytest.fixture(scope="module")
def labels_and_groups():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 60, 400)
    return (groups % 4 == 0).astype(int), groups  # a rare class, constant within a group


def test_every_group_lies_in_one_fold_and_is_tested_exactly_once(labels_and_groups):
    labels, groups = labels_and_groups
    fold_of_row = grouped_folds(labels, groups, n_folds=4, seed=1)
    assert all(len(set(fold_of_row[groups == g])) == 1 for g in np.unique(groups))
    tested = []
    for fold in range(4):
        train, val, test = grouped_fold_split(labels, groups, fold, n_folds=4, seed=1)
        assert sorted([*train, *val, *test]) == list(range(len(labels)))
        assert set(fold_of_row[val]) == {(fold + 1) % 4} and set(fold_of_row[test]) == {fold}
        assert labels[test].sum() > 0  # stratified: every fold gets its share of the rare class
        tested.extend(test)
    assert sorted(tested) == list(range(len(labels)))


def test_the_default_split_is_fold_zero_of_five(labels_and_groups):
    labels, groups = labels_and_groups
    for mine, default in zip(grouped_fold_split(labels, groups, 0, 5, seed=2),
                             stratified_group_split(labels, groups, seed=2)):
        assert np.array_equal(mine, default)


def test_impossible_folds_are_refused_with_the_fix(labels_and_groups):
    labels, groups = labels_and_groups
    with pytest.raises(ValueError, match="n_folds must be an integer >= 3"):
        grouped_folds(labels, groups, n_folds=2)
    with pytest.raises(ValueError, match=r"fold must be an integer in 0\.\.4"):
        grouped_fold_split(labels, groups, fold=5)
    with pytest.raises(ValueError, match="need at least 61 groups.*Use fewer folds"):
        grouped_folds(labels, groups, n_folds=61)


def test_the_default_flare_split_is_unchanged_and_folds_are_by_region(real_data_dir):
    from satcompress.tasks import flares

    records = flares.read_records()
    parts = flares.split_by_region(records.frame, 0)
    digest = hashlib.sha256(b"".join(np.asarray(p, np.int64).tobytes() for p in parts)).hexdigest()
    assert digest == "e87d84ef8f0bd063a76e8611f05adda45597a9e63249dfac980e452aca4052bf"
    fold = flares.load(records=records, fold=2, n_folds=5)
    assert not set(fold.test.groups) & (set(fold.train.groups) | set(fold.val.groups))
    with pytest.raises(ValueError, match="time split has one test period"):
        flares.load(records=records, split="time", fold=0)


def test_a_base_model_is_trained_and_cached_per_fold_and_seed(tiny_task):
    default = base_model.cached_base_model("tiny", seed=0)
    fold = base_model.cached_base_model("tiny", seed=0, fold=1, n_folds=3)
    assert "fold" not in default.path.name and "-seed0-fold1of3-" in fold.path.name
    assert not set(fold.data.test.groups) & set(fold.data.train.groups)
    again = base_model.cached_base_model("tiny", seed=0, fold=1, n_folds=3)
    assert again.path == fold.path and again.metrics == fold.metrics


def test_every_fold_runs_into_its_own_folder_and_the_drop_gets_a_paired_interval(three_folds):
    out = three_folds.out_dir
    assert [(run.fold, run.seed) for run in three_folds.runs] == [(0, 0), (1, 0), (2, 0)]
    assert all((out / f"fold{fold}of3-seed0" / "stages.json").is_file() for fold in range(3))
    drops = three_folds.drops()
    assert three_folds.interval.drop == pytest.approx(np.mean(drops))
    assert three_folds.interval.low <= np.mean(drops) <= three_folds.interval.high
    assert "Nadeau & Bengio" in three_folds.interval.method
    for run in three_folds.runs:  # each run's own interval, of the base and the artifact
        assert (run.bootstrap["base"], run.bootstrap["compressed"]) == run.values("accuracy")
        run_summary = (run.result.out_dir / "summary.md").read_text()
        assert "Evaluation: one split; accuracy drop" in run_summary
    written = json.loads((out / "folds.json").read_text())
    assert written["evaluation"] == "mean over 3 folds × 1 seed" == three_folds.mode
    assert [run["drop"] for run in written["runs"]] == pytest.approx(drops)
    summary = (out / "summary.md").read_text()
    assert "Evaluation: mean over 3 folds × 1 seed" in summary
    assert three_folds.interval.describe() in summary


def test_every_stage_is_recorded_on_every_run_as_in_the_runs_own_stages_json(three_folds):
    written = json.loads((three_folds.out_dir / "folds.json").read_text())
    assert [stage["stage"] for stage in written["stages"]] == [
        "base", "1:magnitude_prune", "artifact"] == list(three_folds.stages)
    for run in written["runs"]:
        own = json.loads((three_folds.out_dir / run["folder"] / "stages.json").read_text())
        measured = [*own["stages"], own["artifact"]["measurement"]]
        assert [(stage[PRIMARY_METRIC], stage["bytes"]) for stage in run["stages"]] == [
            (m["metrics"][PRIMARY_METRIC], m["theoretical_bytes"]) for m in measured]
        assert run["stages"][-1]["bytes"] == run["artifact_bytes"] == (
            own["artifact"]["verification"]["size_bytes"])
    for position, stage in enumerate(written["stages"]):
        values = [run["stages"][position][PRIMARY_METRIC] for run in written["runs"]]
        sizes = [run["stages"][position]["bytes"] for run in written["runs"]]
        assert stage[PRIMARY_METRIC]["mean"] == pytest.approx(np.mean(values))
        assert stage[PRIMARY_METRIC]["sd"] == pytest.approx(np.std(values, ddof=1))
        assert stage["bytes"]["mean"] == pytest.approx(np.mean(sizes))
        if position == 0:
            assert stage["drop_interval"] is None
            continue
        base = [run["stages"][0][PRIMARY_METRIC] for run in written["runs"]]
        oracle = paired_t_interval(base, values, metric=PRIMARY_METRIC, higher_is_better=True,
                                   test_train_ratio=_ratio(written))
        assert stage["drop_interval"] == pytest.approx(oracle.to_dict())
    assert written["stages"][-1]["drop_interval"] == written["drop_interval"]
    summary = (three_folds.out_dir / "summary.md").read_text()
    for row in three_folds.stage_table(PRIMARY_METRIC):  # per run, in the summary's table
        assert "| " + " | ".join(format_value(value) for value in row.values()) + " |" in summary


def _ratio(written: dict) -> float:
    """The mean test over the mean training examples of the runs (Nadeau & Bengio's ratio)."""
    return (np.mean([run["test_examples"] for run in written["runs"]])
            / np.mean([run["train_examples"] for run in written["runs"]]))


@pytest.fixture
def rejudged(three_folds, monkeypatch):
    """``run_folds`` with the three runs already made (the same results, judged again)."""
    from satcompress.pipeline import folds

    done = {run.result.out_dir.name: run.result for run in three_folds.runs}
    monkeypatch.setattr(folds, "run_recipe",
                        lambda trained, recipe, budget, out, **_: done[out.name])


def test_the_metric_drop_is_judged_on_the_mean_and_resources_on_the_worst_run(three_folds,
                                                                               rejudged):
    drops = three_folds.drops()
    sizes = [run.result.flight.theoretical_bytes for run in three_folds.runs]
    assert max(drops) > np.mean(drops)  # so a drop limit judged on the worst run would fail

    def judged(budget: Budget):
        return run_folds("tiny", RECIPE, budget, three_folds.out_dir, folds=3, latency_repeats=2)

    fits = judged(Budget(max_bytes=max(sizes), max_metric_drop={"accuracy": np.mean(drops) + 1e-9}))
    assert fits.fits_budget and [row["judged_on"] for row in fits.limits()] == [
        "worst run", "mean over runs"]
    with pytest.raises(FoldsBudgetNotMet, match=r"max_bytes: \d+ > allowed"):
        judged(Budget(max_bytes=max(sizes) - 1))
    with pytest.raises(FoldsBudgetNotMet, match=r"max_metric_drop\[accuracy\]"):
        judged(Budget(max_metric_drop={"accuracy": np.mean(drops) - 1e-3}))
    assert not json.loads((three_folds.out_dir / "folds.json").read_text())["fits_budget"]


def test_run_folds_refuses_impossible_settings_before_training(tiny_task, tmp_path):
    with pytest.raises(ValueError, match="integer >= 3"):
        run_folds("tiny", RECIPE, Budget(), tmp_path, folds=2)
    with pytest.raises(ValueError, match="distinct seeds"):
        run_folds("tiny", RECIPE, Budget(), tmp_path, seeds=(1, 1))


def test_compress_with_folds_prints_every_run_and_the_interval(three_folds, rejudged):
    from typer.testing import CliRunner

    from satcompress.cli.app import app

    result = CliRunner().invoke(app, ["compress", "--task", "tiny", "--folds", "3",
                                      "--out", str(three_folds.out_dir)])
    output = " ".join(result.output.split())
    assert result.exit_code == 0, output
    assert "mean over 3 folds × 1 seed" in output and "all limits met; accuracy drop" in output


def test_the_command_line_refuses_folds_for_your_own_model_and_seeds_without_folds(tmp_path):
    from typer.testing import CliRunner

    from satcompress.cli.app import app

    def refusal(*arguments: str) -> str:
        result = CliRunner().invoke(app, ["compress", *arguments, "--out", str(tmp_path)])
        assert result.exit_code == 2
        return " ".join(result.output.split())  # rich wraps long lines

    assert "only a reference task can" in refusal("--model", "mine:build", "--data", "rows.csv",
                                                  "--folds", "5")
    assert "give --folds K too" in refusal("--task", "flares", "--seeds", "3")
