"""The Python API: compress or search any ``nn.Module`` on the user's own data.

>>> import satcompress
>>> result = satcompress.compress(model, (train_frame, val_frame, test_frame),
...                               metric="macro_f1", budget="max_bytes=40kB",
...                               out="out/mine")                      # doctest: +SKIP
>>> result.artifact_path, result.report_path                           # doctest: +SKIP

``model`` is any module the ONNX exporter (``torch.export``) can trace and whose operators the
flight runtime supports; it is never modified. ``data`` is a path (CSV/Parquet/``.npz``, as
for ``--data``), one table or ``(x, y[, groups])`` arrays (split by ``split_column``, or
60/20/20 by group), or a ``(train, val, test)`` tuple of tables, arrays or
``torch.utils.data.Dataset`` objects of ``(x, y)`` pairs -- the user's own split. ``metric``
is a name of :data:`satcompress.tasks.user.METRICS` or a function ``f(labels, probabilities)
-> float`` (higher is better unless ``higher_is_better=False``; registered under its name by
:func:`satcompress.tasks.user.register_metric`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from satcompress.firmware import get_target
from satcompress.pipeline.base_model import TrainedModel
from satcompress.pipeline.budget import Budget
from satcompress.pipeline.firmware import target_budget
from satcompress.pipeline.recipe import Recipe
from satcompress.pipeline.result import RunResult
from satcompress.pipeline.runner import run_recipe
from satcompress.pipeline.user_model import prepare_user_model
from satcompress.search import SearchResult, SearchSettings, run_search
from satcompress.tasks import user
from satcompress.tasks.base import TaskData

__all__ = ["compress", "search", "prepare"]

_MAX_DATASET_ITEMS = 10_000_000


def _dataset_arrays(dataset: torch.utils.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` arrays of a map-style dataset of ``(input, label)`` pairs."""
    try:
        length = len(dataset)
    except TypeError:
        raise user.UserDataError("A torch Dataset must have a length (a map-style dataset); "
                                 "give arrays or a DataFrame instead.") from None
    if length > _MAX_DATASET_ITEMS:
        raise user.UserDataError(f"The dataset holds {length} items, over {_MAX_DATASET_ITEMS}.")
    inputs, labels = [], []
    for index in range(length):
        item = dataset[index]
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise user.UserDataError(f"Item {index} of the dataset is not an (input, label) pair.")
        inputs.append(np.asarray(item[0], dtype=np.float32))
        labels.append(int(item[1]))
    return np.stack(inputs), np.asarray(labels, dtype=np.int64)


def _as_part(part: Any) -> Any:
    if isinstance(part, torch.utils.data.Dataset):
        return _dataset_arrays(part)
    if isinstance(part, (tuple, list)) and len(part) in (2, 3):
        return tuple(item.numpy() if isinstance(item, torch.Tensor) else item for item in part)
    return part


def _task_data(data: Any, **options: Any) -> TaskData:
    if isinstance(data, TaskData):
        return data
    if isinstance(data, (str, Path)):
        return user.read_user_data(data, **options)
    options.pop("val_path", None), options.pop("test_path", None)
    if isinstance(data, (tuple, list)) and len(data) == 3 and not any(
            isinstance(part, np.ndarray) for part in data):
        return user.user_data(*(_as_part(part) for part in data), **options)
    return user.user_data(_as_part(data), **options)


def _metric_name(metric: str | Callable[[np.ndarray, np.ndarray], float],
                 higher_is_better: bool) -> str:
    if callable(metric):
        return user.register_metric(getattr(metric, "__name__", "custom_metric"), metric,
                                    higher_is_better)
    return metric


def prepare(
    model: nn.Module,
    data: Any,
    *,
    metric: str | Callable[[np.ndarray, np.ndarray], float] = "accuracy",
    higher_is_better: bool = True,
    standardize: bool = False,
    label_column: str = "label",
    group_column: str | None = None,
    split_column: str | None = None,
    class_names: tuple[str, ...] | None = None,
    survey: str = "ztf",
    seed: int = 0,
) -> TrainedModel:
    """The model and data as the :class:`TrainedModel` recipes and the search run on.

    ``standardize=True`` puts the training split's per-feature standardisation in front of
    the model (for a model trained on standardised features): the artifact then takes the
    features exactly as ``data`` holds them. See the module notes for ``data``.
    """
    options: dict[str, Any] = {"label_column": label_column, "group_column": group_column,
                               "split_column": split_column, "survey": survey, "seed": seed}
    if not isinstance(data, (str, Path)):
        options["class_names"] = class_names
    return prepare_user_model(model, _task_data(data, **options),
                              metric=_metric_name(metric, higher_is_better),
                              standardize=standardize)


def compress(
    model: nn.Module,
    data: Any,
    *,
    metric: str | Callable[[np.ndarray, np.ndarray], float] = "accuracy",
    budget: str | Budget = "",
    recipe: str | Path | Recipe | None = None,
    out: str | Path = "out/compress",
    target: str | None = None,
    fec: bool | None = None,
    standardize: bool = False,
    seed: int = 0,
    **data_options: Any,
) -> RunResult:
    """Compress ``model`` with ``recipe`` under ``budget``; write the artifact and report.

    ``recipe``: a shipped recipe's name, a recipe TOML file or a ``Recipe``; by default the
    ``general`` recipe (mild Deep Compression). A stage that lost most of the model's skill
    over chance is warned about (``UserWarning``, and ``result.warnings``).

    Returns the :class:`~satcompress.pipeline.result.RunResult` (every stage's measurement,
    ``artifact_path``, ``report_path``, ``verification``). Raises
    :class:`~satcompress.pipeline.result.BudgetNotMet` (holding the result) when the artifact
    breaks the budget; it is then written as ``OUT/rejected/model.sca``. ``target`` names a
    firmware profile (``samv71``, ``cortex-m4``, ``host``) whose flash and RAM become the
    limits unless the budget gives them. ``data_options``: ``label_column``,
    ``group_column``, ``split_column``, ``class_names``, ``survey``, ``higher_is_better``
    (see :func:`prepare`).
    """
    trained = prepare(model, data, metric=metric, standardize=standardize, seed=seed,
                      **data_options)
    limits = budget if isinstance(budget, Budget) else Budget.parse(budget)
    chosen = recipe if isinstance(recipe, Recipe) else Recipe.load(
        str(trained.task.recipe if recipe is None else recipe))
    if fec is not None:
        chosen = dataclasses.replace(chosen, fec=fec)
    profile = None if target is None else get_target(target)
    if profile is not None:
        limits = target_budget(limits, profile)
    result = run_recipe(trained, chosen, limits, out, seed=seed, target=profile)
    for warning in result.warnings:
        warnings.warn(warning, UserWarning, stacklevel=2)
    return result


def search(
    model: nn.Module,
    data: Any,
    *,
    metric: str | Callable[[np.ndarray, np.ndarray], float] = "accuracy",
    budget: str,
    trials: int = 30,
    out: str | Path = "out/search",
    strategy: str = "whole",
    workers: int = 1,
    target: str | None = None,
    fec: bool = True,
    standardize: bool = False,
    seed: int = 0,
    **data_options: Any,
) -> SearchResult:
    """Search per-layer compression of ``model`` under ``budget`` (see
    :func:`satcompress.search.run_search`); the chosen model is run, verified and written to
    ``OUT/model``."""
    trained = prepare(model, data, metric=metric, standardize=standardize, seed=seed,
                      **data_options)
    profile = None if target is None else get_target(target)
    return run_search(trained, budget, trials, out, workers=workers, strategy=strategy,
                      seed=seed, settings=SearchSettings.for_task(trained.task, seed=seed, fec=fec),
                      target=profile)
