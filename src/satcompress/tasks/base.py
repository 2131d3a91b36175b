"""Data containers shared by the reference tasks (NumPy only: part of the flight path)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Split", "TaskData", "balanced_class_weights", "stratified_group_split"]


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


def stratified_group_split(
    labels: np.ndarray, groups: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train/validation/test (60/20/20) with every group in exactly one split.

    Groups are dealt into five folds stratified by label (scikit-learn's
    ``StratifiedGroupKFold``, shuffled with ``seed``): fold 0 is test, fold 1 validation and
    the rest train, so each split gets its share of the rare classes.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    fold_of_row = np.empty(len(labels), dtype=int)
    for fold, (_, members) in enumerate(folds.split(np.zeros(len(labels)), labels, groups)):
        fold_of_row[members] = fold
    return (
        np.flatnonzero(fold_of_row >= 2),
        np.flatnonzero(fold_of_row == 1),
        np.flatnonzero(fold_of_row == 0),
    )
