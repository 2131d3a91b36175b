"""Science metrics of the reference tasks, in plain NumPy.

Flare forecasting (binary) uses the skill scores of Bloomfield et al. 2012 and Barnes et al.
2016: TSS, HSS (the "HSS2" of the flare literature), recall, false-alarm rate and the Brier
skill score. Transient classification (multi-class) uses the PLAsTiCC class-weighted log loss
(Malz et al. 2019), macro F1, per-class recall and the SN Ia vs rest ROC AUC.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "BinaryCounts",
    "binary_counts",
    "true_skill_statistic",
    "heidke_skill_score",
    "brier_skill_score",
    "binary_scores",
    "best_tss_threshold",
    "weighted_log_loss",
    "macro_f1",
    "per_class_recall",
    "roc_auc",
]

PROBABILITY_FLOOR = 1e-15


def _check_labels_and_scores(labels: np.ndarray, scores: np.ndarray, name: str) -> None:
    if len(labels) != len(scores):
        raise ValueError(
            f"{name}: {len(labels)} labels but {len(scores)} predictions; pass one prediction "
            "per labelled example."
        )
    if len(labels) == 0:
        raise ValueError(f"{name}: no examples to score.")
    if not np.all(np.isfinite(scores)):
        raise ValueError(
            f"{name}: predictions contain NaN or infinity; the model or its input is broken, "
            "and a metric computed on them would be meaningless."
        )


class BinaryCounts(NamedTuple):
    """Confusion-matrix counts of a binary forecast."""

    tp: int
    fp: int
    fn: int
    tn: int


def binary_counts(labels: np.ndarray, predicted: np.ndarray) -> BinaryCounts:
    """Count true/false positives/negatives; both arrays hold 0/1 (or booleans)."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(predicted).astype(bool)
    _check_labels_and_scores(labels, predicted, "binary_counts")
    return BinaryCounts(
        int(np.sum(labels & predicted)),
        int(np.sum(~labels & predicted)),
        int(np.sum(labels & ~predicted)),
        int(np.sum(~labels & ~predicted)),
    )


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def true_skill_statistic(counts: BinaryCounts) -> float:
    """TSS = recall - false-alarm rate = TP/(TP+FN) - FP/(FP+TN); in [-1, 1], 0 = no skill."""
    return _ratio(counts.tp, counts.tp + counts.fn) - _ratio(counts.fp, counts.fp + counts.tn)


def heidke_skill_score(counts: BinaryCounts) -> float:
    """HSS2 = 2(TP*TN - FN*FP) / ((TP+FN)(FN+TN) + (TP+FP)(FP+TN)): skill over random chance."""
    tp, fp, fn, tn = (float(c) for c in counts)
    return _ratio(2 * (tp * tn - fn * fp), (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def brier_skill_score(labels: np.ndarray, probability: np.ndarray) -> float:
    """BSS = 1 - BS / BS_climatology, the climatology being the event rate of ``labels``.

    1 is a perfect probabilistic forecast, 0 is no better than always forecasting the base
    rate, negative is worse.
    """
    labels = np.asarray(labels, dtype=np.float64)
    probability = np.asarray(probability, dtype=np.float64)
    _check_labels_and_scores(labels, probability, "brier_skill_score")
    brier = np.mean((probability - labels) ** 2)
    climatology = np.mean((labels.mean() - labels) ** 2)
    return float(1.0 - brier / climatology) if climatology > 0 else 0.0


def binary_scores(labels: np.ndarray, probability: np.ndarray, threshold: float) -> dict[str, float]:
    """All flare-forecast scores of probabilities ``probability`` at decision ``threshold``.

    Returns ``tss``, ``hss``, ``recall``, ``false_alarm_rate`` (FP/(FP+TN), the rate that TSS
    subtracts), ``precision``, ``bss`` and the ``threshold`` itself.
    """
    probability = np.asarray(probability, dtype=np.float64)
    _check_labels_and_scores(labels, probability, "binary_scores")
    counts = binary_counts(labels, probability >= threshold)
    return {
        "tss": true_skill_statistic(counts),
        "hss": heidke_skill_score(counts),
        "recall": _ratio(counts.tp, counts.tp + counts.fn),
        "false_alarm_rate": _ratio(counts.fp, counts.fp + counts.tn),
        "precision": _ratio(counts.tp, counts.tp + counts.fp),
        "bss": brier_skill_score(labels, probability),
        "threshold": float(threshold),
    }


def best_tss_threshold(labels: np.ndarray, probability: np.ndarray) -> float:
    """Decision threshold that maximises TSS on (validation) data.

    Every distinct predicted probability is a candidate; the returned threshold is the
    midpoint between the chosen candidate and the next lower score, so it generalises a
    little better than sitting exactly on a training point.
    """
    labels = np.asarray(labels).astype(bool)
    probability = np.asarray(probability, dtype=np.float64)
    _check_labels_and_scores(labels, probability, "best_tss_threshold")
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            "best_tss_threshold needs both classes in the data; the validation split has "
            f"{n_pos} positives and {n_neg} negatives."
        )
    order = np.argsort(-probability, kind="stable")
    sorted_scores = probability[order]
    true_pos = np.cumsum(labels[order])
    false_pos = np.cumsum(~labels[order])
    # Only the last index of each run of equal scores is a reachable cut.
    last_of_run = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    tss = np.where(last_of_run, true_pos / n_pos - false_pos / n_neg, -np.inf)
    best = int(np.argmax(tss))
    lower = sorted_scores[best + 1] if best + 1 < len(sorted_scores) else 0.0
    return float((sorted_scores[best] + lower) / 2)


def _check_probabilities(labels: np.ndarray, probabilities: np.ndarray, name: str) -> None:
    if probabilities.ndim != 2:
        raise ValueError(f"{name}: expected probabilities of shape (n, classes), got {probabilities.shape}.")
    _check_labels_and_scores(labels, probabilities, name)
    if labels.min() < 0 or labels.max() >= probabilities.shape[1]:
        raise ValueError(
            f"{name}: labels range over [{labels.min()}, {labels.max()}] but there are only "
            f"{probabilities.shape[1]} classes of probabilities."
        )


def weighted_log_loss(
    labels: np.ndarray, probabilities: np.ndarray, class_weights: np.ndarray | None = None
) -> float:
    """PLAsTiCC class-weighted log loss (Malz et al. 2019); lower is better.

    ``-sum_c w_c * mean_{i in c} ln p_ic / sum_c w_c`` over the classes present in ``labels``,
    with probabilities renormalised per row and floored at 1e-15. With the default equal
    weights every class counts the same however rare it is.
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    _check_probabilities(labels, probabilities, "weighted_log_loss")
    n_classes = probabilities.shape[1]
    weights = np.ones(n_classes) if class_weights is None else np.asarray(class_weights, float)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    log_p = np.log(np.clip(probabilities[np.arange(len(labels)), labels], PROBABILITY_FLOOR, 1.0))
    total, weight_sum = 0.0, 0.0
    for cls in np.unique(labels):
        total += weights[cls] * log_p[labels == cls].mean()
        weight_sum += weights[cls]
    return float(-total / weight_sum)


def per_class_recall(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Recall of each class (NaN for a class absent from ``labels``)."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    recall = np.full(n_classes, np.nan)
    for cls in range(n_classes):
        members = labels == cls
        if members.any():
            recall[cls] = np.mean(predicted[members] == cls)
    return recall


def macro_f1(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of the per-class F1 over the classes present in ``labels``."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    scores = []
    for cls in np.unique(labels):
        tp = np.sum((predicted == cls) & (labels == cls))
        precision = _ratio(tp, np.sum(predicted == cls))
        recall = _ratio(tp, np.sum(labels == cls))
        scores.append(_ratio(2 * precision * recall, precision + recall))
    if not len(scores):
        raise ValueError("macro_f1: no examples to score.")
    return float(np.mean(scores))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the probability a random positive outscores a random negative.

    Computed from the Mann-Whitney U statistic with average ranks for ties.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    _check_labels_and_scores(labels, scores, "roc_auc")
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc needs both classes; got {n_pos} positives, {n_neg} negatives.")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average rank over ties.
    starts = np.r_[0, np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2
    u_statistic = ranks[labels].sum() - n_pos * (n_pos + 1) / 2
    return float(u_statistic / (n_pos * n_neg))
