"""run_search end to end: the front, the chosen model verified through the pipeline, the
recipe that reproduces it; divide and conquer; the CLI's errors; the front helpers."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from satcompress.cli.app import app
from satcompress.pipeline.budget import Violation
from satcompress.pipeline.recipe import Recipe
from satcompress.search import (
    BlockOption,
    SearchSettings,
    TrialRecord,
    combine,
    derive_space,
    difference_standard_error,
    hypervolume,
    one_standard_error_choice,
    pareto_front,
    run_search,
)
from satcompress.training import predict_proba
from blob_task import trained_blobs

FAST = SearchSettings(latency_repeats=2, qat_epochs=1, proxy_examples=60,
                      student_fractions=(1.0,))  # students: test_divide_and_conquer_*, test_search_space
BUDGET = "max_bytes=3.1kB,max_metric_drop=accuracy:0.1"


@pytest.fixture(scope="module")
def whole_search(tmp_path_factory):
    """One 10-trial whole-network search under a budget some trials break (shared: a search
    costs seconds per trial)."""
    out = tmp_path_factory.mktemp("whole")
    trained = trained_blobs()
    result = run_search(trained, "max_bytes=2.5kB,max_metric_drop=accuracy:0.05", 10, out,
                        settings=FAST, latency_repeats=2)
    return trained, result, out


def test_the_same_search_again_finds_the_same_trials_and_delivers_the_same_model(
        whole_search, tmp_path):
    """Its objectives are deterministic (MACs, not a measured latency), so the evolution does
    not depend on the machine's load."""
    trained, result, _ = whole_search
    again = run_search(trained, "max_bytes=2.5kB,max_metric_drop=accuracy:0.05", 10, tmp_path,
                       settings=FAST, latency_repeats=2)
    first, second = ([(r.params, r.metric, r.bytes, r.macs) for r in run.records]
                     for run in (result, again))
    assert first == second and len(first) == 10
    assert again.chosen.label == result.chosen.label
    study = optuna.load_study(study_name=result.studies[0], storage=result.storage)
    assert all(trial.values[2] == trial.user_attrs[trial.user_attrs["evaluation"]]["macs"]
               for trial in study.trials if trial.values is not None)


def test_the_chosen_trial_is_the_best_feasible_one_and_its_recipe_reproduces_it(whole_search):
    trained, result, tmp_path = whole_search
    feasible = [r for r in result.records if r.candidate]
    assert result.chosen.metric == max(r.metric for r in feasible)
    assert result.chosen in result.front and all(r.bytes <= 2500 for r in result.front)
    for name in ("front.md", "front.png", "trials.json", "search.json", "recipe.toml",
                 "model/stages.json"):
        assert (tmp_path / name).is_file(), name
    recipe = Recipe.load(tmp_path / "recipe.toml")
    assert recipe == result.run.recipe
    probabilities = predict_proba(result.run.model, trained.data.val.x)
    assert trained.task.score(probabilities, trained.data.val.y, probabilities,
                              trained.data.val.y)["accuracy"] == result.chosen.metric
    summary = json.loads((tmp_path / "search.json").read_text())
    assert summary["chosen"]["trial"] == result.chosen.label
    assert summary["final"]["bytes"] == result.chosen.bytes
    assert "| trial |" in (tmp_path / "front.md").read_text()


def test_infeasible_trials_are_recorded_as_such(whole_search):
    _, result, out = whole_search
    trials = json.loads((out / "trials.json").read_text())
    assert len(trials) == 10
    assert any(trial["bytes"] > 2500 for trial in trials)  # the budget bites
    for trial in trials:
        if trial["bytes"] > 2500:
            assert not trial["feasible"] and trial["evaluation"] == "proxy"
            assert any(v.startswith("max_bytes") for v in trial["violations"])
        assert trial["feasible"] == (not trial["violations"])
    study = optuna.load_study(study_name="blobs-whole", storage=result.storage)
    for trial in study.trials:  # the sampler sees the same verdicts as constraint values
        assert (max(trial.system_attrs["constraints"]) <= 0) == trial.user_attrs["feasible"]
    assert result.chosen.feasible and result.chosen.bytes <= 2500
    assert all(r.candidate for r in result.front)


def test_divide_and_conquer_picks_a_student_then_searches_each_block_on_it_and_combines(tmp_path):
    trained = trained_blobs()
    settings = dataclasses.replace(FAST, student_fractions=(1.0, 0.25), distill_epochs=4)
    result = run_search(trained, BUDGET, 12, tmp_path, strategy="divide", settings=settings,
                        latency_repeats=2)
    assert result.studies == ("blobs-divide:block:student", "blobs-divide:block:stem",
                              "blobs-divide:block:blocks.0", "blobs-divide:block:blocks.1+head",
                              "blobs-divide:block:sparsity", "blobs-divide:combine")
    phases = {r.phase for r in result.records}
    assert phases == {"block:student", "block:stem", "block:blocks.0", "block:blocks.1+head",
                      "block:sparsity", "combine"}
    assert len(result.records) <= 12
    space = derive_space(trained.model, trained.data, settings)
    for record in result.records:
        if record.phase.startswith("block:"):  # only that block's decisions were searched
            block = record.phase.removeprefix("block:")
            assert set(record.params) == {d.name for d in space.in_block(block)}
        else:  # the student is held fixed, the rest combined or searched
            assert set(record.params) | {"student:model"} == {d.name for d in space.decisions}
    students = [r for r in result.records if r.phase == "block:student" and r.candidate]
    smallest = min(students, key=lambda r: r.bytes).params["student:model"]
    later = [r for r in result.records if r.phase not in ("block:student",)]
    # the layer blocks and every combination work on the smallest student within the drop limit
    assert all((r.recipe["stage"][0]["stage"] == "dynamic_kd") == (smallest < 1) for r in later)
    assert result.chosen.phase == "combine" and result.chosen.bytes <= 3100


def test_combinations_keep_to_the_byte_limit_and_rank_by_estimated_drop():
    def option(block, drop, saved):
        return BlockOption(block, {f"codec:{block}": saved}, drop, saved, f"{block}#{saved}")

    a = [option("a", 0.0, 0), option("a", 0.01, 400), option("a", 0.05, 600)]
    b = [option("b", 0.0, 0), option("b", 0.02, 300)]
    chosen = combine([a, b], base_bytes=1000, max_bytes=700, count=2)
    estimated = [(sum(o.drop for o in c), 1000 - sum(o.saved_bytes for o in c)) for c in chosen]
    assert all(size <= 700 for _, size in estimated)
    assert estimated[0] == (0.01, 600)  # the least drop within the limit comes first
    assert len(combine([a, b], 1000, None, count=10)) == 6  # room for all: every combination


def _record(number, metric, size, feasible=True, se=0.0, resampled=()):
    return TrialRecord("s", number, "COMPLETE", "whole", "full", feasible, metric, size, 1.0, 0, 0,
                       (Violation("max_bytes", 10_000, size),), {}, {}, 1.0, float(number),
                       metric_se=se, resampled=tuple(resampled))


def test_the_smallest_candidate_within_one_standard_error_of_the_best_is_delivered():
    best, close_small, far_smaller = _record(0, 0.80, 900, se=0.03), _record(1, 0.78, 300), \
        _record(2, 0.70, 100)
    order = one_standard_error_choice([best, close_small, far_smaller], higher_is_better=True)
    assert [r.number for r in order] == [1, 0, 2]
    # lower is better (a loss): within 0.05 of the best loss 1.00 means up to 1.05
    losses = [_record(0, 1.00, 900, se=0.05), _record(1, 1.04, 500), _record(2, 1.06, 100)]
    assert [r.number for r in one_standard_error_choice(losses, False)] == [1, 0, 2]
    # without noise estimates it is the best metric, as before
    plain = [_record(0, 0.8, 900), _record(1, 0.78, 300)]
    assert [r.number for r in one_standard_error_choice(plain, True)] == [0, 1]


def test_the_rule_judges_two_candidates_by_the_noise_of_their_difference_not_of_the_split():
    rng = np.random.default_rng(0)
    luck = rng.normal(0, 0.04, 200)  # which groups the resamples hold: shared by both
    best = _record(0, 0.80, 900, se=0.04, resampled=0.80 + luck)
    consistently_worse = _record(1, 0.76, 300, resampled=0.76 + luck + rng.normal(0, 0.005, 200))
    assert difference_standard_error(best, consistently_worse) == pytest.approx(0.005, rel=0.2)
    # 0.04 worse on every resample: not noise, so the best is delivered despite its bytes
    assert [r.number for r in one_standard_error_choice([best, consistently_worse], True)] == [
        0, 1]
    noisy = _record(2, 0.78, 300, resampled=0.78 + rng.normal(0, 0.04, 200))
    assert one_standard_error_choice([best, noisy], True)[0].number == 2
    # a resample where a class is missing (NaN) is left out of the pair
    with_gap = _record(3, 0.76, 300, resampled=[math.nan, *(0.76 + luck[1:])])
    assert difference_standard_error(best, with_gap) == pytest.approx(0.0, abs=1e-12)
    # records without resamples fall back to the best one's own standard error
    assert difference_standard_error(_record(4, 0.8, 900, se=0.03), _record(5, 0.7, 1)) == 0.03


def test_pareto_front_and_hypervolume():
    records = [_record(0, 0.9, 1000), _record(1, 0.8, 100), _record(2, 0.7, 500),
               _record(3, 0.95, 50, feasible=False)]
    front = pareto_front(records, higher_is_better=True, objectives=("metric", "bytes"))
    assert [r.number for r in front] == [1, 0]
    volume = hypervolume(records, base_metric=0.9, base_bytes=10_000, higher_is_better=True,
                         reference_drop=0.2)
    # points (drop, log10 ratio): (0.0, -1) and (0.1, -2): 0.2 * 1 + 0.1 * 1
    assert volume == pytest.approx(0.3)


def test_cli_refuses_bad_input_with_one_clear_line(tmp_path):
    runner = CliRunner()
    unknown = runner.invoke(app, ["search", "--task", "nope", "--budget", "max_bytes=1kB"])
    assert unknown.exit_code == 2 and "Unknown task" in unknown.output
    storage = runner.invoke(app, ["search", "--task", "flares", "--budget", "max_bytes=1kB",
                                  "--storage", "mysql://x/y", "--out", str(tmp_path)])
    assert storage.exit_code == 2 and "postgresql://" in storage.output
    budget = runner.invoke(app, ["search", "--task", "flares", "--budget", "max_flash=1kB",
                                 "--out", str(tmp_path)])
    assert budget.exit_code == 2 and "Unknown budget limit" in budget.output
    strategy = runner.invoke(app, ["search", "--task", "flares", "--budget", "max_bytes=1kB",
                                   "--strategy", "random", "--out", str(tmp_path)])
    assert strategy.exit_code == 2 and "Unknown strategy" in strategy.output
