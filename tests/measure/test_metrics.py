"""Science metrics against hand-computed cases and scikit-learn as an oracle."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from satcompress.measure import metrics


def test_tss_and_hss_match_a_hand_computed_contingency_table():
    # tp=8, fp=10, fn=2, tn=80
    labels = np.r_[np.ones(10), np.zeros(90)]
    predicted = np.r_[np.ones(8), np.zeros(2), np.ones(10), np.zeros(80)]
    counts = metrics.binary_counts(labels, predicted)
    assert counts == (8, 10, 2, 80)
    assert metrics.true_skill_statistic(counts) == pytest.approx(8 / 10 - 10 / 90)
    expected_hss = 2 * (8 * 80 - 2 * 10) / ((8 + 2) * (2 + 80) + (8 + 10) * (10 + 80))
    assert metrics.heidke_skill_score(counts) == pytest.approx(expected_hss)


def test_perfect_and_no_skill_forecasts():
    labels = np.array([0, 0, 1, 1])
    assert metrics.binary_scores(labels, np.array([0.1, 0.2, 0.8, 0.9]), 0.5)["tss"] == 1.0
    always_yes = metrics.binary_scores(labels, np.ones(4), 0.5)
    assert always_yes["tss"] == 0.0 and always_yes["false_alarm_rate"] == 1.0


def test_brier_skill_score_against_climatology():
    labels = np.array([0, 0, 0, 1])
    assert metrics.brier_skill_score(labels, np.full(4, 0.25)) == pytest.approx(0.0)
    assert metrics.brier_skill_score(labels, labels.astype(float)) == pytest.approx(1.0)
    # BS = (0.04*3 + 0.25)/4 ; climatology BS = 0.1875
    assert metrics.brier_skill_score(labels, np.array([0.2, 0.2, 0.2, 0.5])) == pytest.approx(
        1 - (0.04 * 3 + 0.25) / 4 / 0.1875
    )


def test_best_threshold_maximises_tss_over_all_cuts():
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.1
    scores = np.clip(labels * 0.3 + rng.random(300) * 0.8, 0, 1)
    threshold = metrics.best_tss_threshold(labels, scores)
    best = metrics.binary_scores(labels, scores, threshold)["tss"]
    every_cut = [metrics.binary_scores(labels, scores, cut)["tss"] for cut in np.unique(scores)]
    assert best == pytest.approx(max(every_cut))


def test_weighted_log_loss_by_hand():
    labels = np.array([0, 0, 1])
    probabilities = np.array([[0.5, 0.5], [0.25, 0.75], [0.2, 0.8]])
    # class 0: mean(ln .5, ln .25); class 1: ln .8; equal weights
    expected = -(np.mean(np.log([0.5, 0.25])) + np.log(0.8)) / 2
    assert metrics.weighted_log_loss(labels, probabilities) == pytest.approx(expected)
    weighted = metrics.weighted_log_loss(labels, probabilities, class_weights=np.array([1.0, 3.0]))
    assert weighted == pytest.approx(-(np.mean(np.log([0.5, 0.25])) + 3 * np.log(0.8)) / 4)


def test_macro_f1_and_auc_agree_with_scikit_learn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 200)
    predicted = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 4, 200))
    assert metrics.macro_f1(labels, predicted, 4) == pytest.approx(f1_score(labels, predicted, average="macro"))
    binary = labels == 0
    scores = np.round(rng.random(200) + binary * 0.5, 1)  # rounded: many ties
    assert metrics.roc_auc(binary, scores) == pytest.approx(roc_auc_score(binary, scores))
    recall = metrics.per_class_recall(labels, predicted, 5)
    assert np.isnan(recall[4]) and recall[0] == pytest.approx(np.mean(predicted[labels == 0] == 0))


def test_nan_predictions_and_length_mismatch_are_errors_not_numbers():
    with pytest.raises(ValueError, match="NaN or infinity"):
        metrics.binary_scores(np.array([0, 1]), np.array([0.1, np.nan]), 0.5)
    with pytest.raises(ValueError, match="2 labels but 3 predictions"):
        metrics.roc_auc(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="both classes"):
        metrics.best_tss_threshold(np.zeros(5), np.linspace(0, 1, 5))
