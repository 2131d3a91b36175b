"""Paired intervals of a metric's drop: over test groups (bootstrap) and over runs (t)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from satcompress.measure.uncertainty import (
    DropInterval,
    group_resamples,
    paired_bootstrap,
    paired_t_interval,
    split_drop_interval,
)


def slow_paired_bootstrap(groups, base_metric, compressed_metric, resamples, seed, confidence):
    """The obvious reference: draw groups, collect their rows one by one, score both models."""
    names = np.unique(groups)
    draws = np.random.default_rng(seed).integers(len(names), size=(resamples, len(names)))
    drops = []
    for draw in draws:
        rows = np.array([row for group in draw for row in range(len(groups))
                         if groups[row] == names[group]])
        drops.append(base_metric(rows) - compressed_metric(rows))
    return np.quantile(drops, [(1 - confidence) / 2, (1 + confidence) / 2])


@pytest.fixture
def grouped_scores():
    """40 groups of 1-6 rows each; the base is right more often than the compressed model."""
    rng = np.random.default_rng(1)
    groups = np.repeat([f"region {g}" for g in range(40)], rng.integers(1, 7, 40))
    rng.shuffle(groups)
    base_right = rng.random(len(groups)) < 0.8
    compressed_right = rng.random(len(groups)) < 0.7
    return (groups, lambda rows: base_right[rows].mean(),
            lambda rows: compressed_right[rows].mean())


def test_the_bootstrap_equals_the_slow_obvious_reference(grouped_scores):
    groups, base, compressed = grouped_scores
    interval = paired_bootstrap(groups, base, compressed, metric="accuracy", higher_is_better=True,
                                resamples=200, seed=3)
    expected = slow_paired_bootstrap(groups, base, compressed, 200, 3, 0.95)
    assert (interval.low, interval.high) == pytest.approx(tuple(expected), abs=1e-12)
    every_row = np.arange(len(groups))
    assert interval.drop == pytest.approx(base(every_row) - compressed(every_row))
    assert interval.method == "paired bootstrap over 40 test groups, 200 resamples"


def test_a_resample_holds_whole_groups_each_as_often_as_drawn(grouped_scores):
    groups = grouped_scores[0]
    for rows in group_resamples(groups, resamples=5, seed=0):
        drawn, times = np.unique(groups[rows], return_counts=True)
        for group, count in zip(drawn, times):
            assert count % np.sum(groups == group) == 0


def test_identical_models_have_a_zero_drop_that_is_not_distinguishable(grouped_scores):
    groups, base, _ = grouped_scores
    interval = paired_bootstrap(groups, base, base, metric="accuracy", higher_is_better=True,
                                resamples=50)
    assert (interval.drop, interval.low, interval.high) == (0.0, 0.0, 0.0)
    assert not interval.distinguishable


def test_a_clear_loss_is_distinguishable_and_the_direction_follows_the_metric(grouped_scores):
    groups, base, _ = grouped_scores
    worse = paired_bootstrap(groups, base, lambda rows: base(rows) - 0.1, metric="accuracy",
                             higher_is_better=True, resamples=50)
    assert worse.distinguishable and worse.low == pytest.approx(0.1)
    loss = paired_bootstrap(groups, base, lambda rows: base(rows) + 0.1, metric="log_loss",
                            higher_is_better=False, resamples=50)
    assert loss.drop == pytest.approx(0.1) and loss.distinguishable


def test_one_group_or_a_non_finite_score_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="at least two groups"):
        paired_bootstrap(np.zeros(5), np.mean, np.mean, metric="m", higher_is_better=True)
    with pytest.raises(ValueError, match="not finite on some bootstrap resamples"):
        paired_bootstrap(np.arange(5), lambda rows: np.nan, np.mean, metric="m",
                         higher_is_better=True)


def test_the_t_interval_is_scipys_paired_interval_and_the_correction_widens_it():
    from scipy.stats import ttest_rel

    base = np.array([0.70, 0.66, 0.74, 0.69, 0.72])
    compressed = np.array([0.68, 0.67, 0.70, 0.66, 0.71])
    plain = paired_t_interval(base, compressed, metric="tss", higher_is_better=True)
    reference = ttest_rel(base, compressed).confidence_interval(0.95)
    assert (plain.low, plain.high) == pytest.approx((reference.low, reference.high))
    assert plain.drop == pytest.approx(np.mean(base - compressed))
    corrected = paired_t_interval(base, compressed, metric="tss", higher_is_better=True,
                                  test_train_ratio=1 / 3)
    assert corrected.drop == plain.drop and corrected.high - corrected.low > plain.high - plain.low
    assert "Nadeau & Bengio" in corrected.method


def test_the_t_interval_needs_two_pairs():
    with pytest.raises(ValueError, match="at least two runs"):
        paired_t_interval([0.7], [0.6], metric="tss", higher_is_better=True)


def test_an_interval_says_in_words_whether_it_excludes_zero():
    interval = DropInterval("tss", True, 0.70, 0.68, -0.01, 0.05, 0.95, "paired t over 5 runs")
    assert interval.describe() == ("tss drop +0.0200 (95% interval -0.0100 to +0.0500; paired t "
                                   "over 5 runs): not distinguishable from zero")
    assert interval.to_dict()["distinguishable_from_zero"] is False
    with pytest.raises(ValueError, match="above high"):
        DropInterval("tss", True, 0.7, 0.6, 0.2, 0.1, 0.95, "")


def test_the_split_interval_scores_resamples_with_the_tasks_own_metric(blobs):
    from satcompress.tasks.registry import Task

    task = Task("blobs", "tiny", "satcompress.tasks.user", metric="accuracy")
    truth = np.eye(blobs.n_classes)

    def base(x):  # right on the test rows it knows (x matches the test split's rows)
        return truth[blobs.test.y] if len(x) == len(blobs.test) else truth[blobs.val.y]

    interval = split_drop_interval(task, blobs, base, lambda x: np.full((len(x), 3), 1 / 3),
                                   resamples=30)
    assert (interval.base, interval.compressed) == (1.0, pytest.approx(1 / 3))  # argmax: class 0
    assert interval.metric == "accuracy" and interval.distinguishable
    assert interval.method.startswith(f"paired bootstrap over {len(blobs.test)} test groups")


def test_importing_the_intervals_does_not_import_torch():
    code = "import sys, satcompress.measure.uncertainty; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
