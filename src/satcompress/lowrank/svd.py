"""Truncated SVD of Linear (and pointwise convolution) layers into two thinner layers.

A weight ``W`` (out x in) of rank ``r`` factors as ``W = U_r S_r V_r^T``; the layer
``y = W x + b`` becomes ``Linear(in, r, bias=False)`` with weight ``S_r^(1/2) V_r^T`` followed by
``Linear(r, out)`` with weight ``U_r S_r^(1/2)`` and the bias (Denton et al. 2014, "Exploiting
Linear Structure Within Convolutional Networks for Efficient Evaluation"; Xue, Li & Gong 2013
for speech DNNs). By Eckart-Young it is the best rank-``r`` approximation in the Frobenius
norm, and it saves parameters only when ``r (in + out) < in out``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = [
    "cumulative_energy",
    "rank_for_energy",
    "truncated_svd",
    "factorize_linear",
    "factorize_pointwise_conv",
]


def cumulative_energy(singular_values: np.ndarray) -> np.ndarray:
    """``c[r-1]`` = fraction of ``sum(s**2)`` kept by the top ``r`` singular values.

    All ones for an all-zero matrix (any rank keeps all of nothing).
    """
    energy = np.asarray(singular_values, dtype=np.float64) ** 2
    total = energy.sum()
    if total == 0:
        return np.ones(len(energy))
    return np.cumsum(energy) / total


def rank_for_energy(singular_values: np.ndarray, energy: float) -> int:
    """Smallest rank whose singular values keep at least ``energy`` of ``sum(s**2)``."""
    if not 0 < energy <= 1:
        raise ValueError(f"rank_for_energy: energy must be in (0, 1], got {energy}.")
    cumulative = cumulative_energy(singular_values)
    return int(min(np.searchsorted(cumulative, energy - 1e-12) + 1, len(cumulative)))


def truncated_svd(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors ``(A, B)`` with ``B @ A`` the best rank-``rank`` approximation of ``matrix``.

    ``A`` (rank x in) is ``S^(1/2) V^T`` and ``B`` (out x rank) is ``U S^(1/2)``, balanced so
    neither factor's scale dominates fine-tuning. Computed in float64, returned in the
    matrix's dtype.
    """
    if not 1 <= rank <= min(matrix.shape):
        raise ValueError(
            f"truncated_svd: rank must be from 1 to min{tuple(matrix.shape)} = "
            f"{min(matrix.shape)}, got {rank}."
        )
    u, s, vh = torch.linalg.svd(matrix.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    first = root[:, None] * vh[:rank]
    second = u[:, :rank] * root[None, :]
    return first.to(matrix.dtype), second.to(matrix.dtype)


def factorize_linear(linear: nn.Linear, rank: int) -> nn.Sequential:
    """``Sequential(Linear(in, rank, bias=False), Linear(rank, out))`` approximating ``linear``.

    Exact (to float rounding) when ``rank`` is at least the rank of the weight.
    """
    first, second = truncated_svd(linear.weight, rank)
    reduce = nn.Linear(linear.in_features, rank, bias=False)
    expand = nn.Linear(rank, linear.out_features, bias=linear.bias is not None)
    with torch.no_grad():
        reduce.weight.copy_(first)
        expand.weight.copy_(second)
        if linear.bias is not None:
            expand.bias.copy_(linear.bias)
    return nn.Sequential(reduce, expand)


def factorize_pointwise_conv(conv: nn.modules.conv._ConvNd, rank: int) -> nn.Sequential:
    """SVD of a kernel-size-1 convolution: two kernel-size-1 convolutions through ``rank``.

    A pointwise convolution is a Linear layer applied at every position, so Tucker-2 reduces
    to this SVD. The first convolution keeps the stride and padding (it has no bias, so padded
    positions stay zero until the second adds the bias, as in the original).
    """
    weight = conv.weight.reshape(conv.out_channels, conv.in_channels)
    first, second = truncated_svd(weight, rank)
    ones = (1,) * (conv.weight.dim() - 2)
    conv_class = type(conv)
    reduce = conv_class(conv.in_channels, rank, ones, stride=conv.stride, padding=conv.padding,
                        bias=False, padding_mode=conv.padding_mode)
    expand = conv_class(rank, conv.out_channels, ones, bias=conv.bias is not None)
    with torch.no_grad():
        reduce.weight.copy_(first.reshape(reduce.weight.shape))
        expand.weight.copy_(second.reshape(expand.weight.shape))
        if conv.bias is not None:
            expand.bias.copy_(conv.bias)
    return nn.Sequential(reduce, expand)
