"""The registry of reference tasks: each binds its data, base model, training settings and metrics.

Everything above the tasks (training, compression stages, the pipeline, the CLI) reaches a task
through :func:`get_task`, so a new task plugs in by adding one entry here. Model builders
import torch lazily, so looking a task up stays torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

import numpy as np

from satcompress.tasks.base import TaskData

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ReferenceTask", "TASKS", "get_task", "task_names"]


@dataclass(frozen=True)
class ReferenceTask:
    """One reference task.

    Attributes
    ----------
    name : str
        Registry key, used on the command line (``--task flares``).
    description : str
        One line for help texts and reports.
    module : str
        The NumPy-only task module with ``load``, ``score``, ``baseline``,
        ``PRIMARY_METRIC`` and ``HIGHER_IS_BETTER``.
    model_builder : str
        ``"package.module:function"`` building the base model from
        ``(input_shape, n_classes, width_multiplier, depth_multiplier)``.
    train_settings : dict
        Keyword arguments of :class:`satcompress.training.TrainConfig` for the base model.
    """

    name: str
    description: str
    module: str
    model_builder: str
    train_settings: dict

    @property
    def _module(self) -> Any:
        return import_module(self.module)

    @property
    def primary_metric(self) -> str:
        return self._module.PRIMARY_METRIC

    @property
    def higher_is_better(self) -> bool:
        return self._module.HIGHER_IS_BETTER

    @property
    def preprocessing_version(self) -> int:
        """Version of the task's preprocessing; cached models trained on another are stale."""
        return getattr(self._module, "PREPROCESSING_VERSION", 0)

    def load(self, seed: int = 0, **options: Any) -> TaskData:
        """The task's train/val/test splits (see the task module's ``load``)."""
        return self._module.load(seed=seed, **options)

    def build_model(
        self, data: TaskData, width_multiplier: float = 1.0, depth_multiplier: float = 1.0
    ) -> "nn.Module":
        """A freshly initialised base model (or a scaled student) for ``data``."""
        module_name, function_name = self.model_builder.split(":")
        builder: Callable = getattr(import_module(module_name), function_name)
        return builder(data.input_shape, data.n_classes, width_multiplier, depth_multiplier)

    def score(
        self,
        val_probabilities: np.ndarray,
        val_labels: np.ndarray,
        test_probabilities: np.ndarray,
        test_labels: np.ndarray,
    ) -> dict[str, float]:
        """Test metrics; validation outputs are used where the task tunes a threshold."""
        return self._module.score(val_probabilities, val_labels, test_probabilities, test_labels)

    def evaluate(self, model: "nn.Module", data: TaskData) -> dict[str, float]:
        """The model's test metrics (threshold or other tuning on validation)."""
        from satcompress.training import predict_proba

        return self.score(
            predict_proba(model, data.val.x), data.val.y,
            predict_proba(model, data.test.x), data.test.y,
        )

    def baseline(
        self, data: TaskData, seed: int = 0, model: "nn.Module | None" = None
    ) -> dict[str, float]:
        """The classical baseline the base model must at least match.

        Given ``model``, the baseline also scores it on exactly the baseline's test examples
        (keys starting ``model_``), so the two are compared like for like.
        """
        test_probabilities = None
        if model is not None:
            from satcompress.training import predict_proba

            test_probabilities = predict_proba(model, data.test.x)
        return self._module.baseline(data, seed=seed, test_probabilities=test_probabilities)


TASKS: dict[str, ReferenceTask] = {
    task.name: task
    for task in (
        ReferenceTask(
            name="flares",
            description=">=M-class solar flare within 24-48 h, from SDO/HMI SHARP parameters",
            module="satcompress.tasks.flares",
            model_builder="satcompress.networks.residual_mlp:build_residual_mlp",
            train_settings={"max_epochs": 40, "batch_size": 128, "learning_rate": 1e-3,
                            "weight_decay": 1e-2, "patience_epochs": 10},
        ),
        ReferenceTask(
            name="transients",
            description="ZTF transient class (SN Ia/II/Ibc/SLSN/other) from g,r light curves",
            module="satcompress.tasks.transients",
            model_builder="satcompress.networks.t2:build_t2",
            train_settings={"max_epochs": 40, "batch_size": 64, "learning_rate": 1e-3,
                            "weight_decay": 1e-4, "patience_epochs": 8},
        ),
    )
}


def task_names() -> list[str]:
    return sorted(TASKS)


def get_task(name: str) -> ReferenceTask:
    """The registered task called ``name``; a clear error lists the known names."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(
            f"Unknown task {name!r}. Known tasks: {', '.join(task_names())}."
        ) from None
