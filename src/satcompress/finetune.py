"""What compression stages share to recover and to judge a model: fine-tuning and validation.

Most stages fine-tune briefly after they change a model (the "prune -> retrain" loop of Han
et al. 2015, the centroid training of Deep Compression, fine-tuning after factorisation), and
data-driven stages judge candidates by the task's own metric on the VALIDATION split. Both
live here, below the method families, so every family uses the same settings and scores.
Metrics are named in configs (``metric="tss"``) so configs stay plain data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
from torch import nn

from satcompress.measure.metrics import (
    best_tss_threshold,
    binary_counts,
    true_skill_statistic,
    weighted_log_loss,
)
from satcompress.stages import StageConfig, check_integer
from satcompress.tasks.base import TaskData
from satcompress.training import TrainConfig, TrainingLoss, fit, predict_proba

__all__ = [
    "FinetuneSettings",
    "ValidationMetric",
    "register_validation_metric",
    "validation_metrics",
    "validation_score",
]


@dataclasses.dataclass(frozen=True)
class FinetuneSettings(StageConfig):
    """Fine-tuning settings shared by stage configs (a base class, not a stage itself).

    Attributes
    ----------
    finetune_epochs : int
        Epochs of fine-tuning after the stage changes the model (0: no fine-tuning, and then
        the stage needs no training data unless its criterion does).
    learning_rate : float
        Peak AdamW learning rate of the fine-tuning (one-cycle schedule, see
        :func:`satcompress.training.fit`).
    batch_size : int
        Examples per fine-tuning step.
    seed : int
        Seeds fine-tuning shuffles and any random choice the stage makes.
    """

    finetune_epochs: int = 1
    learning_rate: float = 5e-4
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_integer(self, "finetune_epochs", 0, hint=" (0 switches fine-tuning off)")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0
                and math.isfinite(self.learning_rate)):
            raise ValueError(
                f"{name}.learning_rate must be a finite number > 0 (e.g. 5e-4), "
                f"got {self.learning_rate!r}."
            )
        check_integer(self, "batch_size", 1)
        check_integer(self, "seed")

    def finetune(
        self,
        model: nn.Module,
        data: TaskData | None,
        *,
        loss_fn: TrainingLoss | None = None,
        after_step: Callable[[nn.Module], None] | None = None,
    ) -> nn.Module:
        """Fine-tune ``model`` in place for ``finetune_epochs`` (no-op when that is 0).

        Early stopping is off (patience = epochs) but :func:`~satcompress.training.fit` still
        returns the weights of the best validation loss among the epochs. Weights that are
        exactly zero when fine-tuning starts (an earlier stage pruned them) stay zero, as in
        Deep Compression's retraining of a pruned network: a later stage never regrows them.
        """
        if self.finetune_epochs == 0:
            return model
        if data is None:
            raise ValueError(
                f"{type(self).__name__} fine-tunes for {self.finetune_epochs} epoch(s) and needs "
                "the task's data; pass data, or set finetune_epochs=0."
            )
        config = TrainConfig(
            max_epochs=self.finetune_epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            patience_epochs=self.finetune_epochs,
            seed=self.seed,
        )
        kept = [(weight, weight.detach() != 0) for weight in model.parameters()
                if weight.ndim >= 2 and not bool(weight.detach().all())]

        def step(trained: nn.Module) -> None:
            for weight, nonzero in kept:
                weight.detach().mul_(nonzero)
            if after_step is not None:
                after_step(trained)

        return fit(model, data, config, loss_fn=loss_fn, after_step=step if kept else after_step,
                   copy_model=False, description=f"{type(self).__name__} fine-tune")


@dataclasses.dataclass(frozen=True)
class ValidationMetric:
    """A metric the drop bound is measured in.

    Attributes
    ----------
    function : callable
        ``function(labels, probabilities) -> float`` on the validation split; probabilities
        have shape ``(n, classes)``.
    higher_is_better : bool
        Direction of the metric: the "drop" is ``before - after`` if True, else
        ``after - before``.
    """

    function: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool

    def drop(self, before: float, after: float) -> float:
        """How much worse ``after`` is than ``before`` (negative: better)."""
        return before - after if self.higher_is_better else after - before


def _validation_tss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """TSS at the threshold that maximises it on these same (validation) examples."""
    if probabilities.shape[1] != 2:
        raise ValueError(f"The 'tss' metric is for binary tasks; the model predicts "
                         f"{probabilities.shape[1]} classes. Use 'accuracy' or "
                         "'weighted_log_loss'.")
    flare = probabilities[:, 1]
    return true_skill_statistic(binary_counts(labels, flare >= best_tss_threshold(labels, flare)))


def _accuracy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    return float(np.mean(probabilities.argmax(axis=1) == labels))


_VALIDATION_METRICS: dict[str, ValidationMetric] = {
    "tss": ValidationMetric(_validation_tss, higher_is_better=True),
    "weighted_log_loss": ValidationMetric(weighted_log_loss, higher_is_better=False),
    "accuracy": ValidationMetric(_accuracy, higher_is_better=True),
}


def register_validation_metric(
    name: str, function: Callable[[np.ndarray, np.ndarray], float], higher_is_better: bool
) -> None:
    """Make ``function(labels, probabilities) -> float`` usable as ``metric=name``."""
    if name in _VALIDATION_METRICS:
        raise ValueError(f"A validation metric called {name!r} is already registered.")
    _VALIDATION_METRICS[name] = ValidationMetric(function, higher_is_better)


def validation_metrics() -> dict[str, ValidationMetric]:
    """Name -> metric, for every registered validation metric."""
    return dict(_VALIDATION_METRICS)


def validation_score(model: nn.Module, data: TaskData, metric: str) -> float:
    """``model``'s score in the registered ``metric`` on ``data.val``."""
    if metric not in _VALIDATION_METRICS:
        raise ValueError(f"Unknown validation metric {metric!r}; registered: "
                         f"{sorted(_VALIDATION_METRICS)} (add one with "
                         "register_validation_metric).")
    probabilities = predict_proba(model, data.val.x)
    return float(_VALIDATION_METRICS[metric].function(data.val.y, probabilities))
