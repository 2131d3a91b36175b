"""Truncated SVD of Linear and pointwise-convolution layers against NumPy's SVD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from satcompress.lowrank import (
    factorize_linear,
    factorize_pointwise_conv,
    rank_for_energy,
    truncated_svd,
)


def _low_rank_matrix(rows: int, columns: int, rank: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    left = torch.randn(rows, rank, generator=generator)
    return left @ torch.randn(rank, columns, generator=generator)


@pytest.mark.parametrize("rank,true_rank", [(3, 3), (10, 10), (5, 3)])
def test_linear_at_or_above_the_weights_rank_is_reproduced_exactly(rank, true_rank):
    linear = nn.Linear(10, 12)
    with torch.no_grad():
        linear.weight.copy_(_low_rank_matrix(12, 10, true_rank))
    factored = factorize_linear(linear, rank)
    assert [type(m) for m in factored] == [nn.Linear, nn.Linear]
    assert factored[0].bias is None and factored[0].out_features == rank
    x = torch.randn(7, 4, 10)  # Linear layers also act on sequences
    with torch.no_grad():
        assert torch.allclose(factored(x), linear(x), atol=1e-4)


def test_truncation_error_is_the_energy_of_the_dropped_singular_values():
    matrix = torch.randn(9, 14, generator=torch.Generator().manual_seed(1))
    first, second = truncated_svd(matrix, 4)
    singular_values = np.linalg.svd(matrix.double().numpy(), compute_uv=False)
    error = torch.linalg.matrix_norm(matrix - second @ first).item() ** 2
    assert np.isclose(error, np.sum(singular_values[4:] ** 2), rtol=1e-4)


def test_rank_for_energy_is_the_smallest_rank_keeping_the_fraction():
    singular_values = np.array([4.0, 2.0, 1.0, 1.0])  # energies 16, 4, 1, 1 of 22
    assert rank_for_energy(singular_values, 16 / 22) == 1
    assert rank_for_energy(singular_values, 16.5 / 22) == 2
    assert rank_for_energy(singular_values, 21 / 22) == 3
    assert rank_for_energy(singular_values, 1.0) == 4
    with pytest.raises(ValueError):
        rank_for_energy(singular_values, 0.0)


def test_pointwise_conv_keeps_stride_and_padding():
    conv = nn.Conv2d(6, 9, 1, stride=2, padding=1)
    with torch.no_grad():
        conv.weight.copy_(_low_rank_matrix(9, 6, 2).reshape(9, 6, 1, 1))
    factored = factorize_pointwise_conv(conv, 2)
    x = torch.randn(2, 6, 7, 8)
    with torch.no_grad():
        assert torch.allclose(factored(x), conv(x), atol=1e-4)


def test_rank_out_of_range_is_refused():
    with pytest.raises(ValueError, match="rank"):
        truncated_svd(torch.zeros(3, 5), 4)
