"""Tasks: a dataset, its preprocessing, its metric and class names -- one type for all.

A :class:`Task` binds a NumPy-only task module (loading, scoring, baseline) with a base-model
builder and training settings. The reference tasks are registered here and reached through
:func:`get_task`; a user's own data is a :class:`Task` too (made by
:func:`satcompress.tasks.user.user_task`), carrying its splits and the metric it is judged by,
so everything above the tasks (training, stages, the pipeline, the artifact, the CLI) treats
both alike. Model builders import torch lazily, so looking a task up stays torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any

import numpy as np

from satcompress.tasks.base import TaskData
from satcompress.tasks.lightcurves import PreprocessingConfig

if TYPE_CHECKING:
    from torch import nn

__all__ = ["GENERAL_RECIPE", "Task", "TASKS", "get_task", "task_names"]

GENERAL_RECIPE = "general"
"""The recipe a task without one tuned for it is compressed with (a user's task): mild enough
for small models (Deep Compression at half sparsity)."""


@dataclass(frozen=True)
class Task:
    """A classification task: a reference task of the registry or a user's own.

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
    metric : str, optional
        The primary metric, when the module scores several (a user task: one of
        :data:`satcompress.tasks.user.METRICS`); default: the module's ``PRIMARY_METRIC``.
    data : TaskData, optional
        The task's splits when they are given rather than loaded (a user's data).
    load_options : dict
        Keyword arguments of the module's ``load`` that make this task a variant of another
        on the same module (``transients-lsst``: ``survey="lsst"``).
    recipe : str
        The shipped recipe ``compress`` uses when none is named: the one tuned on this task,
        else :data:`GENERAL_RECIPE`.
    search_settings : dict
        Keyword arguments of :class:`satcompress.search.SearchSettings` for this task's
        searches (their student decision distils as the task's tuned recipe does).
    """

    name: str
    description: str
    module: str
    model_builder: str = ""
    train_settings: dict = field(default_factory=dict)
    metric: str | None = None
    data: TaskData | None = field(default=None, repr=False, compare=False)
    load_options: dict = field(default_factory=dict)
    recipe: str = GENERAL_RECIPE
    search_settings: dict = field(default_factory=dict)

    @property
    def _module(self) -> Any:
        return import_module(self.module)

    @property
    def primary_metric(self) -> str:
        return self.metric or self._module.PRIMARY_METRIC

    @property
    def higher_is_better(self) -> bool:
        if self.metric is not None:
            return self._module.METRICS[self.metric]
        return self._module.HIGHER_IS_BETTER

    @property
    def preprocessing_version(self) -> int:
        """Version of the task's preprocessing; cached models trained on another are stale."""
        return getattr(self._module, "PREPROCESSING_VERSION", 0)

    def load(self, seed: int = 0, **options: Any) -> TaskData:
        """The task's train/val/test splits (the given ones, or the task module's ``load`` with
        :attr:`load_options` and ``options``)."""
        if self.data is not None:
            return self.data
        return self._module.load(seed=seed, **{**self.load_options, **options})

    def build_model(
        self, data: TaskData, width_multiplier: float = 1.0, depth_multiplier: float = 1.0
    ) -> "nn.Module":
        """A freshly initialised base model (or a scaled student) for ``data``."""
        if not self.model_builder:
            raise ValueError(f"The task {self.name!r} has no architecture of its own to build: "
                             "its base model is the one you gave.")
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
        chosen = {} if self.metric is None else {"metric": self.metric}
        return self._module.score(val_probabilities, val_labels, test_probabilities, test_labels,
                                  **chosen)

    def chance(self, data: TaskData) -> dict[str, float]:
        """The test metrics of a model that learnt nothing: every example given the training
        split's class frequencies."""
        prior = (np.bincount(data.train.y, minlength=data.n_classes)
                 / len(data.train.y)).astype(np.float32)
        return self.score(np.tile(prior, (len(data.val.y), 1)), data.val.y,
                          np.tile(prior, (len(data.test.y), 1)), data.test.y)

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


_T2_SEARCH = {"distill_stage": "hinton_kd", "distill_epochs": 40, "distill_patience": 8,
              "student_fractions": (1.0, 0.2, 0.1), "sparsities": (0.0, 0.25, 0.4, 0.6, 0.8),
              "recipe_anchor": (("student", 0.2), ("sparsity", 0.4), ("codec", "k16"))}
"""A t2 search: students distilled as `assembled-t2` does (Hinton KD, 40 epochs), the milder
sparsities a transformer keeps, and an anchor of `assembled-t2`'s shape."""

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            name="flares",
            description=">=M-class solar flare within 24-48 h, from SDO/HMI SHARP parameters",
            module="satcompress.tasks.flares",
            model_builder="satcompress.networks.residual_mlp:build_residual_mlp",
            train_settings={"max_epochs": 40, "batch_size": 128, "learning_rate": 1e-3,
                            "weight_decay": 1e-2, "patience_epochs": 10},
            recipe="assembled",
        ),
        Task(
            name="transients",
            description="ZTF transient class (SN Ia/II/Ibc/SLSN/other) from g,r light curves",
            module="satcompress.tasks.transients",
            model_builder="satcompress.networks.t2:build_t2",
            train_settings={"max_epochs": 40, "batch_size": 64, "learning_rate": 1e-3,
                            "weight_decay": 1e-4, "patience_epochs": 8},
            recipe="assembled-t2",
            search_settings=_T2_SEARCH,
        ),
        Task(
            name="transients-lsst",
            description="SN Ia/II from simulated LSST alerts (ELAsTiCC, six passbands), "
                        "test objects held out",
            module="satcompress.tasks.transients",
            model_builder="satcompress.networks.t2:build_t2",
            train_settings={"max_epochs": 40, "batch_size": 64, "learning_rate": 1e-3,
                            "weight_decay": 1e-4, "patience_epochs": 8},
            # the broker's batched grid search of the GP hyperparameters, as on alerts
            load_options={"survey": "lsst", "config": PreprocessingConfig(
                hyperparameter_search="grid")},
            recipe="assembled-t2",
            search_settings=_T2_SEARCH,
        ),
    )
}


def task_names() -> list[str]:
    return sorted(TASKS)


def get_task(name: str) -> Task:
    """The registered task called ``name``; a clear error lists the known names."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(
            f"Unknown task {name!r}. Known tasks: {', '.join(task_names())}."
        ) from None
