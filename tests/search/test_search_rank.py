"""The search's best candidates ranked again over grouped folds of its training data, each
fold with its own base model, never its test split; then the one-standard-error rule over
those folds (issue 16)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from fold_task import PRIMARY_METRIC, tiny_task
from test_search_run import FAST
from typer.testing import CliRunner

from satcompress.cli.app import app
from satcompress.pipeline import base_model
from satcompress.pipeline.budget import Budget
from satcompress.search import run_search
from satcompress.search.rank import (
    RANKING_DIR,
    RankedCandidate,
    delivery_order,
    fold_difference_error,
)
from satcompress.tasks.base import refolded

BUDGET = "max_bytes=4kB,max_metric_drop=accuracy:0.5"


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    """A 4-trial search of the tiny task whose best 2 candidates are ranked on 3 folds."""
    out = tmp_path_factory.mktemp("search-rank")
    with tiny_task():
        result = run_search("tiny", BUDGET, 4, out, settings=FAST, latency_repeats=2,
                            rank_candidates=2, rank_folds=3)
        default = base_model.cached_base_model("tiny", 0)
        yield result, out, default


def test_refolded_deals_the_training_and_validation_groups_and_leaves_the_test_split_out(
        ranked):
    _, _, default = ranked
    data = default.data
    seen = []
    for fold in range(3):
        inner = refolded(data, fold, 3, seed=0)
        parts = (inner.train, inner.val, inner.test)
        assert sum(len(part) for part in parts) == len(data.train) + len(data.val)
        assert not set(data.test.groups) & set(np.concatenate([p.groups for p in parts]))
        assert not set(inner.train.groups) & set(inner.test.groups)
        assert not set(inner.val.groups) & set(inner.test.groups)
        seen.extend(inner.test.groups.tolist())
    # every training or validation group is held out exactly once over the folds
    assert sorted(set(seen)) == sorted(set(data.train.groups) | set(data.val.groups))
    assert len(seen) == len(data.train) + len(data.val)


def test_each_candidate_runs_on_every_ranking_fold_with_that_folds_own_base_model(ranked):
    result, out, default = ranked
    ranking = result.ranking
    assert ranking is not None and ranking.n_folds == 3 and len(ranking.order) >= 2
    for candidate in ranking.order:
        # judged on the mean drop only: bytes are the delivered model's, on its own final run
        drop_limits = Budget.parse(BUDGET).max_metric_drop
        assert candidate.folds.budget == Budget(max_metric_drop=drop_limits)
        runs = candidate.folds.runs
        assert [run.fold for run in runs] == [0, 1, 2]
        assert candidate.folds.out_dir.parent == out / RANKING_DIR
        for run in runs:  # held out: a ranking fold of the training data, not the test split
            assert run.test_examples == len(refolded(default.data, run.fold, 3, 0).test)
            assert run.train_examples < len(default.data.train)
    bases = sorted(path.name for path in (out / RANKING_DIR / "bases").iterdir())
    assert bases == [f"base-fold{fold}of3-seed0.pt" for fold in range(3)]
    # the same base model per fold for every candidate
    firsts = {tuple(run.result.measurements[0].metrics[PRIMARY_METRIC]
                    for run in candidate.folds.runs) for candidate in ranking.order}
    assert len(firsts) == 1


def test_the_delivered_trial_is_the_rankings_first_and_search_json_records_it(ranked):
    result, out, _ = ranked
    assert result.chosen == result.ranking.order[0].record
    recorded = json.loads((out / "search.json").read_text())["ranking"]
    assert [c["trial"] for c in recorded["candidates"]] == [
        c.record.label for c in result.ranking.order]
    assert recorded["candidates"][0]["folds"] == result.ranking.order[0].values.tolist()
    assert "## Candidates ranked over folds" in (out / "front.md").read_text()


def _candidate(label, size, per_fold, fits=True):
    runs = [SimpleNamespace(values=lambda metric, value=value: (1.0, value)) for value in per_fold]
    return RankedCandidate(SimpleNamespace(label=label, bytes=size, metric=0.0),
                           SimpleNamespace(runs=runs, metric="accuracy", fits_budget=fits))


def test_the_smallest_within_one_paired_standard_error_of_the_best_mean_goes_first():
    best = _candidate("best", 900, [0.80, 0.84, 0.76, 0.80])
    # 0.01 lower on every fold: a consistent difference, not noise (SE of difference 0)
    consistently_worse = _candidate("worse", 300, [0.79, 0.83, 0.75, 0.79])
    assert fold_difference_error(best, consistently_worse) == pytest.approx(0.0, abs=1e-12)
    assert [c.record.label for c in delivery_order([best, consistently_worse], True)] == [
        "best", "worse"]
    # 0.01 lower on the mean, but the folds disagree: within one SE, so the smaller goes first
    noisy = _candidate("noisy", 300, [0.86, 0.74, 0.80, 0.76])
    assert fold_difference_error(best, noisy) == pytest.approx(
        np.std([-0.06, 0.10, -0.04, 0.04], ddof=1) / 2)
    assert [c.record.label for c in delivery_order([best, noisy], True)] == ["noisy", "best"]
    # a loss: lower is better
    losses = [_candidate("a", 900, [1.0, 1.1, 0.9]), _candidate("b", 100, [1.3, 1.4, 1.2])]
    assert [c.record.label for c in delivery_order(losses, False)] == ["a", "b"]


def test_candidates_over_the_budget_on_the_folds_come_last_best_mean_first():
    small_over = _candidate("small-over", 100, [0.9, 0.9, 0.9], fits=False)
    worse_over = _candidate("worse-over", 50, [0.5, 0.5, 0.5], fits=False)
    within = _candidate("within", 900, [0.6, 0.6, 0.6])
    assert [c.record.label for c in delivery_order([small_over, worse_over, within], True)] == [
        "within", "small-over", "worse-over"]


def test_impossible_ranking_settings_are_refused_before_any_trial(tmp_path):
    with pytest.raises(ValueError, match="rank_folds must be an integer >= 3"):
        run_search("flares", BUDGET, 2, tmp_path, rank_folds=2)
    with pytest.raises(ValueError, match="rank_candidates must be an integer >= 0"):
        run_search("flares", BUDGET, 2, tmp_path, rank_candidates=-1)
    assert not (tmp_path / "study.db").exists()


def test_search_prints_the_ranking_and_passes_its_options(ranked, monkeypatch):
    import satcompress.search

    result, out, _ = ranked
    asked = {}

    def search(subject, budget, trials, out_dir, **options):
        asked.update(options)
        return result

    monkeypatch.setattr(satcompress.search, "run_search", search)
    with tiny_task():
        printed = CliRunner().invoke(app, ["search", "--task", "tiny", "--budget", BUDGET,
                                           "--rank-candidates", "2", "--rank-folds", "3",
                                           "--out", str(out)], terminal_width=200)
    output = " ".join(printed.output.split())
    assert printed.exit_code == 0, output
    assert asked["rank_candidates"] == 2 and asked["rank_folds"] == 3
    assert "best candidates ranked over 3 folds of the training data" in output
    assert result.ranking.order[0].record.label in output
