"""A tiny reference-like task that folds: 120 groups of three rows of the blobs problem, so a
fold never splits a group. The module is the task (``load``, ``score``, ``build``), shared by
the fold-run tests of the pipeline, the report and the search."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import make_blobs, tiny_mlp

from satcompress import stages
from satcompress.pipeline.recipe import Recipe
from satcompress.tasks import registry
from satcompress.tasks.base import Split, TaskData, grouped_fold_split, stratified_group_split

PRIMARY_METRIC = "accuracy"
HIGHER_IS_BETTER = True
RECIPE = Recipe("prune", (stages.load_builtin_stages()["magnitude_prune"](sparsity=0.8,
                                                                          finetune_epochs=0),))


def load(seed: int = 0, fold: int | None = None, n_folds: int = 5) -> TaskData:
    """The tiny task's data: three rows per group, split by group."""
    blobs = make_blobs(n_per_class=40)
    x = np.concatenate([blobs.train.x, blobs.val.x, blobs.test.x])
    y = np.concatenate([blobs.train.y, blobs.val.y, blobs.test.y])
    groups = np.arange(len(y)) // 3  # three consecutive rows (one class) per group
    parts = (stratified_group_split(y, groups, seed) if fold is None
             else grouped_fold_split(y, groups, fold, n_folds, seed))
    return TaskData(*(Split(x[rows], y[rows], groups[rows]) for rows in parts),
                    class_names=blobs.class_names)


def score(val_probabilities, val_labels, test_probabilities, test_labels) -> dict[str, float]:
    return {"accuracy": float(np.mean(np.argmax(test_probabilities, 1) == test_labels))}


def build(input_shape, n_classes, width_multiplier, depth_multiplier):
    return tiny_mlp()


@contextlib.contextmanager
def tiny_task() -> Iterator[registry.Task]:
    """This module registered as the reference task ``tiny`` (undone on exit)."""
    task = registry.Task("tiny", "blobs in groups of three", __name__, f"{__name__}:build",
                         {"max_epochs": 2, "batch_size": 32, "patience_epochs": 2})
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry.TASKS, "tiny", task)
        yield task
