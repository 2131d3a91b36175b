"""The budget as constraints: infeasible trials are marked so (see also
test_search_run.test_infeasible_trials_are_recorded_as_such), and an empty front says why."""

from __future__ import annotations

import dataclasses
import json

import pytest

from satcompress.pipeline.budget import Budget, Violation
from satcompress.search import (
    EmptyFront,
    Evaluator,
    SearchSettings,
    constraint_values,
    derive_space,
    run_search,
)
from blob_task import trained_blobs

FAST = SearchSettings(latency_repeats=2, qat_epochs=1, proxy_examples=60,
                      student_fractions=(1.0,))  # students: test_divide_and_conquer_*, test_search_space


def test_constraint_values_are_relative_excess_and_feasible_below_zero():
    usage = [Violation("max_bytes", 1000, 800), Violation("max_bytes", 1000, 1500),
             Violation("max_metric_drop[accuracy]", 0.0, 0.02)]
    assert constraint_values(usage) == pytest.approx([-0.2, 0.5, 0.02])


def test_a_proxy_over_the_byte_limit_is_infeasible_without_a_full_evaluation():
    trained = trained_blobs()
    space = derive_space(trained.model, trained.data, FAST)
    evaluator = Evaluator(trained, space, Budget(max_bytes=2300))
    big = evaluator.evaluate(space.uniform(codec="int8"), full=False)
    small = evaluator.evaluate(space.uniform(codec="int2"), full=False)
    assert big.measurement.theoretical_bytes > 2300 and evaluator.hopeless(big, margin=None)
    assert small.measurement.theoretical_bytes <= 2300 and not evaluator.hopeless(small, margin=None)
    assert big.attrs()["constraints"][0] > 0 >= small.attrs()["constraints"][0]


def test_candidates_are_measured_and_their_recipes_written_with_the_settings_fec():
    trained = trained_blobs()
    sizes = {}
    for fec in (True, False):
        space = derive_space(trained.model, trained.data, dataclasses.replace(FAST, fec=fec))
        evaluator = Evaluator(trained, space, Budget())
        proxy = evaluator.evaluate(space.uniform(codec="int8"), full=False)
        assert proxy.recipe.fec is fec  # the chosen recipe's run writes what was measured
        sizes[fec] = proxy.measurement.theoretical_bytes
    assert sizes[False] < sizes[True] <= 1.04 * sizes[False] + 8  # 8 parity bytes per 255


def test_an_unmeetable_budget_names_the_closest_trial_and_the_limit_it_missed(tmp_path):
    trained = trained_blobs()
    with pytest.raises(EmptyFront, match=r"No trial .* meets the budget.*Closest: trial "
                                         r"blobs-whole#\d+ .*missed max_bytes: \d+ > allowed 100"):
        run_search(trained, "max_bytes=100", 3, tmp_path, settings=FAST, latency_repeats=2)
    summary = json.loads((tmp_path / "search.json").read_text())
    assert summary["chosen"] is None and "Closest" in summary["failure"]
    assert (tmp_path / "front.png").stat().st_size > 0
