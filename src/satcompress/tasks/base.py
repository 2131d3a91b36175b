"""Data containers shared by the reference tasks (NumPy only: part of the flight path)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

__all__ = [
    "Split",
    "TaskData",
    "balanced_class_weights",
    "grouped_folds",
    "grouped_fold_split",
    "refolded",
    "stratified_group_split",
]


@dataclass(frozen=True)
class Split:
    """One part (train, validation or test) of a task's data.

    Attributes
    ----------
    x : np.ndarray
        Model inputs, float32, first axis = examples.
    y : np.ndarray
        Integer class labels, int64.
    groups : np.ndarray
        The unit that must never straddle two splits (active region, object id).
    """

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray

    def __post_init__(self) -> None:
        if not (len(self.x) == len(self.y) == len(self.groups)):
            raise ValueError(
                f"Split arrays differ in length: x {len(self.x)}, y {len(self.y)}, "
                f"groups {len(self.groups)}; they must describe the same examples."
            )

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class TaskData:
    """Train/validation/test splits of a reference task, preprocessed and ready for a model."""

    train: Split
    val: Split
    test: Split
    class_names: tuple[str, ...]
    preprocessing: dict = field(default_factory=dict)
    """Fitted preprocessing constants (JSON-able) and counts of skipped inputs."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example (without the batch axis)."""
        return tuple(self.train.x.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def class_weights(self) -> np.ndarray:
        """Balanced class weights from the training labels (see :func:`balanced_class_weights`)."""
        return balanced_class_weights(self.train.y, self.n_classes)


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Weights ``n / (n_classes * count_c)``, so each class contributes equally to a loss.

    A class absent from ``labels`` gets weight 0 rather than infinity.
    """
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.zeros(n_classes)
    present = counts > 0
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights.astype(np.float32)


def grouped_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int = 5, seed: int = 0
                  ) -> np.ndarray:
    """The fold (``0 .. n_folds - 1``) of every row, with every group in exactly one fold.

    Groups are dealt into ``n_folds`` folds stratified by label (scikit-learn's
    ``StratifiedGroupKFold``, shuffled with ``seed``), so each fold gets its share of the rare
    classes.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if not (isinstance(n_folds, int) and n_folds >= 3):
        raise ValueError(f"n_folds must be an integer >= 3 (a test, a validation and at least one "
                         f"training fold), got {n_folds!r}.")
    distinct = len(np.unique(groups))
    if distinct < n_folds:
        raise ValueError(f"{n_folds} folds need at least {n_folds} groups; the data hold "
                         f"{distinct}. Use fewer folds.")
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold_of_row = np.empty(len(labels), dtype=int)
    for fold, (_, members) in enumerate(folds.split(np.zeros(len(labels)), labels, groups)):
        fold_of_row[members] = fold
    return fold_of_row


def grouped_fold_split(
    labels: np.ndarray, groups: np.ndarray, fold: int, n_folds: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train/validation/test for one fold of :func:`grouped_folds`.

    Fold ``fold`` is test, the next one (``(fold + 1) % n_folds``) validation, the rest train:
    over ``fold = 0 .. n_folds - 1`` every group is tested exactly once.
    """
    if not (isinstance(fold, int) and 0 <= fold < n_folds):
        raise ValueError(f"fold must be an integer in 0..{n_folds - 1} (one of the {n_folds} "
                         f"folds), got {fold!r}.")
    fold_of_row = grouped_folds(labels, groups, n_folds, seed)
    validation = (fold + 1) % n_folds
    return (
        np.flatnonzero((fold_of_row != fold) & (fold_of_row != validation)),
        np.flatnonzero(fold_of_row == validation),
        np.flatnonzero(fold_of_row == fold),
    )


def stratified_group_split(
    labels: np.ndarray, groups: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train/validation/test (60/20/20) with every group in exactly one split:
    fold 0 of five :func:`grouped_folds` is test, fold 1 validation and the rest train."""
    return grouped_fold_split(labels, groups, fold=0, n_folds=5, seed=seed)


def refolded(data: TaskData, fold: int, n_folds: int, seed: int = 0) -> TaskData:
    """``data``'s training and validation examples dealt again into ``n_folds`` grouped folds
    (:func:`grouped_fold_split` with ``seed``): fold ``fold`` as test, the next as validation,
    the rest as training. ``data.test`` is left out, so cross-validation on these folds never
    sees the split's test examples. The preprocessing constants stay ``data``'s (fitted on its
    training part, which the new test fold partly is)."""
    x = np.concatenate([data.train.x, data.val.x])
    y = np.concatenate([data.train.y, data.val.y])
    groups = np.concatenate([data.train.groups, data.val.groups])
    train, val, test = (Split(x[rows], y[rows], groups[rows])
                        for rows in grouped_fold_split(y, groups, fold, n_folds, seed))
    return replace(data, train=train, val=val, test=test)
