"""The tiny blobs problem as a picklable task with a trained ~1.3k-parameter model.

Worker processes of a search are spawned and unpickle the task, so it lives in a module of
its own (importable in the children through the inherited ``sys.path``).
"""

from __future__ import annotations

import numpy as np

from conftest import make_blobs, tiny_mlp
from satcompress.pipeline.base_model import TrainedModel
from satcompress.tasks.registry import Task


class BlobTask(Task):
    """Accuracy (higher is better) on the blobs, scored like a reference task."""

    @property
    def primary_metric(self) -> str:
        return "accuracy"

    @property
    def higher_is_better(self) -> bool:
        return True

    def score(self, val_probabilities, val_labels, test_probabilities, test_labels):
        return {"accuracy": float(np.mean(test_probabilities.argmax(axis=1) == test_labels))}


def trained_blobs() -> TrainedModel:
    """A tiny ResidualMLP trained on the blobs (deterministic)."""
    from satcompress.training import TrainConfig, fit

    data = make_blobs()
    model = fit(tiny_mlp(), data, TrainConfig(max_epochs=20, seed=0)).eval()
    task = BlobTask("blobs", "tiny blobs", "satcompress.tasks.flares", "unused:unused", {})
    return TrainedModel(task=task, model=model, data=data, metrics=task.evaluate(model, data))
