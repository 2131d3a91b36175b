"""Standardisation as a layer, so a flight artifact takes raw features."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["Standardize", "standardized"]


class Standardize(nn.Module):
    """``(x - mean) / std`` with fixed per-feature constants (buffers, never trained).

    Put in front of a model trained on standardised features, it makes the model -- and its
    flight artifact, where it exports to ``Sub`` and ``Div`` -- take the raw features.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def standardized(model: nn.Module, train_x: np.ndarray) -> nn.Sequential:
    """``model`` behind a :class:`Standardize` fitted on ``train_x`` (mean and population
    standard deviation per feature, as scikit-learn's ``StandardScaler``; a constant feature
    keeps scale 1). ``model`` itself is not modified (it becomes the second element)."""
    x = np.asarray(train_x, dtype=np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std == 0] = 1.0
    return nn.Sequential(Standardize(torch.from_numpy(mean), torch.from_numpy(std)), model)
