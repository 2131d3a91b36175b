"""Tucker-2 and CP chains of plain convolutions reproduce low-rank kernels exactly."""

from __future__ import annotations

import numpy as np
import pytest
import tensorly
import torch
from torch import nn

from satcompress.lowrank import cp_conv, cp_parameters, tucker2_conv, tucker2_parameters
from satcompress.onnx_export import export_onnx, run_onnx

def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _conv2d() -> nn.Conv2d:
    return nn.Conv2d(6, 8, (3, 3), stride=(2, 1), padding=(1, 2), dilation=(1, 2))


def _set_weight(conv: nn.Module, weight: torch.Tensor) -> nn.Module:
    with torch.no_grad():
        conv.weight.copy_(weight)
    return conv


def _assert_same_outputs(chain: nn.Module, conv: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected = conv(x)
        assert torch.allclose(chain(x), expected, atol=1e-4 * expected.abs().max().item())


def test_tucker2_reproduces_a_kernel_of_that_multilinear_rank():
    core = _randn(3, 2, 3, 3, seed=1)
    weight = torch.einsum("rsxy,or,is->oixy", core, _randn(8, 3, seed=2), _randn(6, 2, seed=3))
    conv = _set_weight(_conv2d(), weight)
    chain = tucker2_conv(conv, (3, 2))
    assert [tuple(m.weight.shape) for m in chain] == [(2, 6, 1, 1), (3, 2, 3, 3), (8, 3, 1, 1)]
    assert chain[1].stride == (2, 1) and chain[1].padding == (1, 2) and chain[1].dilation == (1, 2)
    assert sum(m.weight.numel() for m in chain) == tucker2_parameters(conv, (3, 2))
    _assert_same_outputs(chain, conv, _randn(2, 6, 9, 10, seed=4))


def test_tucker2_at_full_rank_is_exact_for_any_kernel():
    conv = nn.Conv1d(4, 5, 3, padding="same")
    _assert_same_outputs(tucker2_conv(conv, (5, 4)), conv, _randn(2, 4, 11, seed=5))


def test_cp_reproduces_a_kernel_of_that_cp_rank():
    factors = [_randn(n, 3, seed=10 + i) for i, n in enumerate((8, 6, 3, 3))]
    conv = _set_weight(_conv2d(), torch.einsum("or,ir,xr,yr->oixy", *factors))
    chain = cp_conv(conv, 3, n_iter_max=500)
    assert [tuple(m.weight.shape) for m in chain] == [(3, 6, 1, 1), (3, 1, 3, 1), (3, 1, 1, 3),
                                                      (8, 3, 1, 1)]
    assert chain[1].stride == (2, 1) and chain[2].padding == (0, 2) and chain[2].dilation == (1, 2)
    assert sum(m.weight.numel() for m in chain) == cp_parameters(conv, 3)
    _assert_same_outputs(chain, conv, _randn(2, 6, 9, 10, seed=4))


@pytest.mark.parametrize("method", ["tucker2", "cp"])
def test_conv1d_chains_and_their_onnx_exports_match(method):
    factors = [_randn(n, 2, seed=20 + i) for i, n in enumerate((5, 4, 3))]
    conv = _set_weight(nn.Conv1d(4, 5, 3, stride=2, padding=1),
                       torch.einsum("or,ir,xr->oix", *factors))
    chain = cp_conv(conv, 2) if method == "cp" else tucker2_conv(conv, (2, 2))
    x = _randn(3, 4, 12, seed=6)
    _assert_same_outputs(chain, conv, x)
    with torch.no_grad():
        expected = chain(x).numpy()
    assert np.allclose(run_onnx(export_onnx(chain, x[:1]), x.numpy()), expected, atol=1e-5)


def test_tensorly_warnings_stay_inside_and_its_backend_is_restored():
    before = tensorly.get_backend()
    conv = nn.Conv2d(3, 4, 3)  # rank 6 exceeds the 3x3 modes: tensorly warns while initialising
    cp_conv(conv, 6, n_iter_max=5)  # filterwarnings = error: a leaked warning fails the test
    assert tensorly.get_backend() == before


def test_grouped_convolutions_are_refused():
    with pytest.raises(ValueError, match="groups"):
        tucker2_conv(nn.Conv2d(4, 4, 3, groups=2), (2, 2))
