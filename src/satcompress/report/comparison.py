"""What the report compares between the base and the compressed model beyond the stage table.

Test-set class probabilities of both (for the confusion matrices and reliability diagrams) and
their raw batch-1 latency samples (for the latency distribution), gathered once by the runner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from satcompress.measure import latency_samples_ms
from satcompress.tasks.base import TaskData
from satcompress.training import predict_proba

__all__ = ["ModelComparison", "compare_models"]


@dataclass(frozen=True)
class ModelComparison:
    """The base and the compressed model side by side on the test split.

    Attributes
    ----------
    labels : np.ndarray
        Test labels, int64, shape ``(n,)``.
    class_names : tuple of str
        Name of each class index.
    base_probabilities, final_probabilities : np.ndarray
        Class probabilities, shape ``(n, classes)``.
    base_latency_ms, final_latency_ms : np.ndarray
        Batch-1 latency samples in milliseconds (:func:`satcompress.measure.latency_samples_ms`).
    """

    labels: np.ndarray
    class_names: tuple[str, ...]
    base_probabilities: np.ndarray
    final_probabilities: np.ndarray
    base_latency_ms: np.ndarray
    final_latency_ms: np.ndarray


def compare_models(
    base: nn.Module, final: nn.Module, data: TaskData, repeats: int = 200
) -> ModelComparison:
    """Test probabilities and ``repeats`` latency samples (first test example) of both models."""
    example = torch.from_numpy(np.ascontiguousarray(data.test.x[:1]))
    warmup = min(20, repeats)
    return ModelComparison(
        labels=np.asarray(data.test.y),
        class_names=tuple(data.class_names),
        base_probabilities=predict_proba(base, data.test.x),
        final_probabilities=predict_proba(final, data.test.x),
        base_latency_ms=latency_samples_ms(base, example, repeats, warmup),
        final_latency_ms=latency_samples_ms(final, example, repeats, warmup),
    )
