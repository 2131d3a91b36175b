"""Quantization arithmetic, observers and fake-quantized layers against PyTorch as the oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from satcompress.quantize import (
    MinMaxObserver,
    PercentileObserver,
    QuantConv1d,
    QuantConv2d,
    QuantLinear,
    affine_qparams,
    dequantize,
    quantize,
    symmetric_weight_scale,
    weight_qmax,
)


def _weight(seed: int = 0, shape: tuple[int, ...] = (5, 7)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # channels of very different magnitudes, so per-channel scales matter
    return torch.randn(shape, generator=generator) * torch.logspace(-2, 1, shape[0])[:, None]


def test_rounding_is_half_to_even_and_saturates():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 300.0, -300.0])
    q = quantize(x, torch.tensor(1.0), 0, -128, 127)
    assert q.tolist() == [0, 2, 2, 0, -2, 127, -128]
    assert q.dtype == torch.int32


def test_quantize_dequantize_is_pytorchs_fake_quantization():
    x = torch.randn(4000, generator=torch.Generator().manual_seed(1)) * 3
    scale, zero_point = torch.tensor(0.037), torch.tensor(131, dtype=torch.int32)
    ours = dequantize(quantize(x, scale, zero_point, 0, 255), scale, zero_point)
    assert torch.equal(ours, torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255))
    weight = _weight()
    scales = symmetric_weight_scale(weight, 8)
    zeros = torch.zeros(weight.shape[0], dtype=torch.int32)
    ours = dequantize(quantize(weight, scales, 0, -128, 127, axis=0), scales, 0, axis=0)
    oracle = torch.fake_quantize_per_channel_affine(weight, scales, zeros, 0, -128, 127)
    assert torch.equal(ours, oracle)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_per_channel_scales_and_error_bound(bits):
    weight = _weight(seed=bits)
    scales = symmetric_weight_scale(weight, bits)
    qmax = 2 ** (bits - 1) - 1
    assert weight_qmax(bits) == qmax
    assert torch.allclose(scales, weight.abs().amax(dim=1) / qmax, rtol=1e-6, atol=0)
    q = quantize(weight, scales, 0, -qmax, qmax, axis=0)
    error = (weight - dequantize(q, scales, 0, axis=0)).abs()
    assert torch.all(error <= scales[:, None] / 2 * (1 + 1e-5))
    assert torch.equal(q.abs().amax(dim=1), torch.full((weight.shape[0],), qmax, dtype=torch.int32))


def test_int4_layer_stores_integers_in_the_int4_range():
    torch.manual_seed(0)
    layer = QuantLinear.from_float(nn.Linear(32, 8), weight_bits=4)
    integers = layer.integer_weight()
    assert integers.dtype == torch.int8
    assert integers.min() >= -8 and integers.max() <= 7
    assert set(integers.abs().amax(dim=1).tolist()) == {7}  # the narrow symmetric grid [-7, 7]
    two_bit = QuantLinear.from_float(nn.Linear(32, 8), weight_bits=2).integer_weight()
    assert set(two_bit.unique().tolist()) <= {-1, 0, 1}


def test_an_all_zero_channel_keeps_a_positive_scale():
    weight = _weight()
    weight[2] = 0
    scales = symmetric_weight_scale(weight, 4)
    assert torch.all(scales > 0)
    zero_channel = quantize(weight, scales, 0, -7, 7, axis=0)[2]
    assert torch.equal(zero_channel, torch.zeros(7, dtype=torch.int32))


def test_minmax_observer_and_affine_grid_represent_zero_and_the_range():
    observer = MinMaxObserver()
    observer.update(torch.tensor([0.5, 2.0]))
    observer.update(torch.tensor([-1.0, 1.0]))
    assert observer.bounds() == (-1.0, 2.0)
    scale, zero_point = affine_qparams(*observer.bounds())
    assert scale.item() == pytest.approx(3.0 / 255)
    zero = quantize(torch.tensor(0.0), scale, zero_point, 0, 255)
    assert dequantize(zero, scale, zero_point) == 0
    edges = dequantize(quantize(torch.tensor([-1.0, 2.0]), scale, zero_point, 0, 255), scale,
                       zero_point)
    assert torch.allclose(edges, torch.tensor([-1.0, 2.0]), atol=scale.item() / 2)
    positive_scale, positive_zero = affine_qparams(0.5, 4.0)  # widened to include 0
    assert positive_zero.item() == 0 and positive_scale.item() == pytest.approx(4.0 / 255)


def test_percentile_observer_clips_at_the_requested_percentiles():
    values = np.concatenate([np.linspace(-1.0, 1.0, 9998), [-500.0, 1000.0]]).astype(np.float32)
    observer = PercentileObserver(percentile=99.0)
    observer.update(torch.from_numpy(values[:5000]))
    observer.update(torch.from_numpy(values[5000:]))
    lower, upper = observer.bounds()
    expected = np.percentile(values, [1.0, 99.0])
    assert (lower, upper) == pytest.approx(tuple(expected), rel=1e-6)
    scale, zero_point = affine_qparams(lower, upper)
    clipped = dequantize(quantize(torch.tensor([-500.0, 1000.0]), scale, zero_point, 0, 255),
                         scale, zero_point)
    assert torch.allclose(clipped, torch.tensor([lower, upper]), atol=scale.item() / 2 + 1e-6)
    unclipped = MinMaxObserver()
    unclipped.update(torch.from_numpy(values))
    assert unclipped.bounds() == (-500.0, 1000.0)


def test_observers_refuse_to_report_before_seeing_data():
    with pytest.raises(ValueError, match="call update"):
        MinMaxObserver().bounds()
    with pytest.raises(ValueError, match="call update"):
        PercentileObserver().bounds()
    with pytest.raises(ValueError, match="lower <= upper"):
        affine_qparams(2.0, 1.0)


def test_weight_fake_quantization_is_the_identity_after_snapping_and_ste_passes_gradients():
    torch.manual_seed(0)
    layer = QuantLinear.from_float(nn.Linear(6, 4), weight_bits=3)
    x = torch.randn(10, 6)
    snapped = layer.weight.detach().clone()
    assert torch.equal(layer._fake_quantized_weight(), snapped)
    with torch.no_grad():  # move the latent weight, but by less than half a grid step
        layer.weight.add_(0.3 * layer.weight_scale[:, None] * torch.randn(4, 6).clamp(-1, 1))
    output = layer(x)
    assert torch.equal(output, F.linear(x, snapped, layer.bias))  # forward sees the grid
    output.pow(2).sum().backward()
    oracle = snapped.clone().requires_grad_()
    F.linear(x, oracle, layer.bias.detach()).pow(2).sum().backward()
    assert torch.allclose(layer.weight.grad, oracle.grad)  # straight-through to the latent weight


def test_input_quantization_gradient_is_masked_outside_the_calibrated_range():
    torch.manual_seed(0)
    layer = QuantLinear.from_float(nn.Linear(3, 2), weight_bits=8, input_bounds=(-1.0, 1.0))
    x = torch.tensor([[0.2, -0.5, 5.0]], requires_grad=True)
    layer(x).sum().backward()
    expected = layer.weight.detach().sum(dim=0)
    assert torch.allclose(x.grad[0, :2], expected[:2])
    assert x.grad[0, 2] == 0


def test_bias_lies_on_the_int32_grid_of_input_times_weight_scale():
    torch.manual_seed(0)
    layer = QuantLinear.from_float(nn.Linear(5, 4), weight_bits=8, input_bounds=(-2.0, 3.0))
    ratio = layer.bias.detach() / (layer.input_scale * layer.weight_scale)
    assert torch.allclose(ratio, ratio.round(), atol=1e-3)
    assert layer.stored_bits == {"weight": 8, "weight_scale": 32, "input_zero_point": 8}


def test_quantized_linear_on_sequences_matches_the_float_layer_on_grid_weights():
    torch.manual_seed(0)
    layer = QuantLinear.from_float(nn.Linear(4, 3), weight_bits=4)
    x = torch.randn(2, 5, 4)
    assert torch.allclose(layer(x), F.linear(x, layer.weight, layer.bias), atol=1e-6)


def test_quantized_conv1d_keeps_the_geometry_of_the_float_layer():
    torch.manual_seed(0)
    conv = nn.Conv1d(3, 6, kernel_size=3, stride=2, padding=1, dilation=1)
    layer = QuantConv1d.from_float(conv, weight_bits=8)
    x = torch.randn(2, 3, 11)
    dequantized = dequantize(layer.integer_weight().to(torch.int32), layer.weight_scale, 0, axis=0)
    assert torch.allclose(layer(x), F.conv1d(x, dequantized, conv.bias, 2, 1), atol=1e-6)
    assert torch.allclose(layer(x), conv(x), atol=0.02)
    with pytest.raises(ValueError, match="padding_mode='zeros'"):
        QuantConv1d.from_float(nn.Conv1d(3, 6, 3, padding=1, padding_mode="circular"), 8)


def test_quantized_conv2d_keeps_the_geometry_and_per_output_channel_scales():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, kernel_size=3, stride=(2, 1), padding=(1, 2), dilation=2, groups=2)
    layer = QuantConv2d.from_float(conv, weight_bits=8)
    assert layer.weight_scale.shape == (6,)
    assert torch.equal(layer.weight_scale, conv.weight.detach().abs().amax(dim=(1, 2, 3)) / 127)
    x = torch.randn(2, 4, 9, 8)
    dequantized = dequantize(layer.integer_weight().to(torch.int32), layer.weight_scale, 0, axis=0)
    expected = F.conv2d(x, dequantized, conv.bias, (2, 1), (1, 2), 2, 2)
    assert torch.allclose(layer(x), expected, atol=1e-6)
    assert torch.allclose(layer(x), conv(x), atol=0.02)
    with pytest.raises(ValueError, match="padding_mode='zeros'"):
        QuantConv2d.from_float(nn.Conv2d(3, 6, 3, padding=1, padding_mode="reflect"), 8)


@pytest.mark.parametrize("bits", [1, 9, 4.0, True])
def test_unsupported_widths_are_refused(bits):
    with pytest.raises(ValueError, match="from 2 to 8"):
        QuantLinear.from_float(nn.Linear(2, 2), weight_bits=bits)


def test_eval_forward_sees_the_grid_even_after_the_weight_is_edited_in_place():
    torch.manual_seed(0)
    layer = QuantLinear.from_float(nn.Linear(6, 4), weight_bits=3).eval()
    x = torch.randn(5, 6)
    with torch.no_grad():
        on_grid = layer(x)
        assert torch.equal(layer(x), on_grid)  # the verified weight is reused as is
        layer.weight.add_(0.3 * layer.weight_scale[:, None])  # off the grid, same storage
        edited = layer.weight.clone()
        snapped = torch.fake_quantize_per_channel_affine(
            edited, layer.weight_scale, torch.zeros(4, dtype=torch.int32), 0, -128, 127)
        assert not torch.equal(snapped, edited)
        assert torch.equal(layer(x), F.linear(x, snapped, layer.bias))
