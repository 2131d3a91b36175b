"""Folding BatchNorm into the preceding convolution: same function, and only certain pairs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from satcompress.cluster import conv_batchnorm_pairs, fold_batchnorm


def _with_statistics(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, in eval mode."""
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.2, 3)
            if module.affine:
                module.weight.data.uniform_(0.5, 2)
                module.bias.data.uniform_(-1, 1)
    return model.eval()


class Residual(nn.Module):
    """conv -> bn -> relu -> conv2 -> bn2, plus conv2's output added back (read twice)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv1d(2, 4, 3, padding=1), nn.BatchNorm1d(4)
        self.conv2, self.bn2 = nn.Conv1d(4, 4, 3, padding=1, bias=False), nn.BatchNorm1d(4)
        self.relu_bn = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        z = self.conv2(h)
        return self.relu_bn(torch.relu(self.bn2(z) + z))


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # torch.fx cannot trace this
            x = -x
        return self.bn(self.conv(x))


@pytest.mark.parametrize("conv, norm, shape", [
    (nn.Conv1d(3, 5, 3, padding=1), nn.BatchNorm1d(5), (4, 3, 9)),
    (nn.Conv2d(3, 5, 3, stride=2, bias=False), nn.BatchNorm2d(5), (4, 3, 9, 9)),
    (nn.Conv2d(3, 6, 3, groups=3), nn.BatchNorm2d(6, affine=False), (4, 3, 7, 7)),
])
def test_folding_keeps_the_function_and_replaces_the_batchnorm(conv, norm, shape):
    model = _with_statistics(nn.Sequential(conv, norm, nn.ReLU()))
    x = torch.randn(shape)
    expected = model(x)
    folded, kept = fold_batchnorm(model)
    assert folded == {"1": "0"} and kept == {}
    assert isinstance(model[1], nn.Identity) and model[0].bias is not None
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_only_certain_pairs_are_folded_and_the_others_say_why():
    model = _with_statistics(Residual())
    pairs, refused = conv_batchnorm_pairs(model)
    assert pairs == {"bn": "conv"}
    assert "also read elsewhere" in refused["bn2"]
    assert "not the output of a convolution" in refused["relu_bn"]
    no_statistics = nn.Sequential(nn.Conv1d(2, 3, 1), nn.BatchNorm1d(3, track_running_stats=False))
    assert "no running statistics" in conv_batchnorm_pairs(no_statistics)[1]["1"]
    shared = nn.Sequential(nn.Conv1d(3, 3, 1), nn.BatchNorm1d(3))
    shared.append(shared[0])
    assert "called more than once" in conv_batchnorm_pairs(shared)[1]["1"]
    untraceable = conv_batchnorm_pairs(DataDependent())
    assert untraceable[0] == {} and "cannot trace the DataDependent" in untraceable[1]["bn"]
    assert conv_batchnorm_pairs(nn.Sequential(nn.Linear(2, 2))) == ({}, {})


def test_skipped_convolutions_keep_their_batchnorm():
    model = _with_statistics(Residual())
    x = torch.randn(2, 2, 6)
    expected = model(x)
    folded, kept = fold_batchnorm(model, skip_layers=("conv",))
    assert folded == {} and "skip_layers" in kept["bn"]
    assert isinstance(model.bn, nn.BatchNorm1d)
    torch.testing.assert_close(model(x), expected)
