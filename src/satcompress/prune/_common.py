"""Pieces every pruning stage shares: fine-tuning settings and the report a stage leaves behind.

Every pruning stage fine-tunes briefly after it removes weights (the "prune -> retrain" loop of
Han et al. 2015) and records what it did on the returned model as a plain, JSON-able dict in
the attribute ``prune_report_`` (read it with :func:`prune_report`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from typing import Any

from torch import nn

from satcompress.stages import StageConfig
from satcompress.tasks.base import TaskData
from satcompress.training import TrainConfig, TrainingLoss, fit

__all__ = [
    "PRUNE_REPORT_ATTRIBUTE",
    "FinetuneSettings",
    "prune_report",
]

PRUNE_REPORT_ATTRIBUTE = "prune_report_"
"""Name of the model attribute where a pruning stage leaves its report (a JSON-able dict)."""


@dataclasses.dataclass(frozen=True)
class FinetuneSettings(StageConfig):
    """Fine-tuning settings shared by the pruning stage configs (not a stage itself).

    Attributes
    ----------
    finetune_epochs : int
        Epochs of fine-tuning after each pruning step (0: no fine-tuning, and then the stage
        needs no training data unless its criterion does).
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
        if isinstance(self.finetune_epochs, bool) or not isinstance(self.finetune_epochs, int) \
                or self.finetune_epochs < 0:
            raise ValueError(
                f"{name}.finetune_epochs must be an integer >= 0 (0 switches fine-tuning off), "
                f"got {self.finetune_epochs!r}."
            )
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0
                and math.isfinite(self.learning_rate)):
            raise ValueError(
                f"{name}.learning_rate must be a finite number > 0 (e.g. 5e-4), "
                f"got {self.learning_rate!r}."
            )
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ValueError(f"{name}.batch_size must be an integer >= 1, got {self.batch_size!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"{name}.seed must be an integer, got {self.seed!r}.")

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
        returns the weights of the best validation loss among the epochs.
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
        return fit(model, data, config, loss_fn=loss_fn, after_step=after_step, copy_model=False,
                   description="pruning fine-tune")


def prune_report(model: nn.Module) -> dict[str, Any]:
    """A copy of the report the last pruning stage stored on ``model``.

    Raises
    ------
    ValueError
        If ``model`` was not produced by a satcompress pruning stage.
    """
    report = getattr(model, PRUNE_REPORT_ATTRIBUTE, None)
    if report is None:
        raise ValueError(
            f"{type(model).__name__} carries no pruning report (attribute "
            f"{PRUNE_REPORT_ATTRIBUTE!r}); only models returned by a satcompress.prune stage do."
        )
    return copy.deepcopy(report)

