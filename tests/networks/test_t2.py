"""The t2 transformer: size, shapes, attention maths, gradients, scaling and ONNX export."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from satcompress.networks.t2 import (
    MultiHeadSelfAttention,
    T2Transformer,
    build_t2,
    sinusoidal_positional_encoding,
)


def _n_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def test_default_size_shape_and_finite_logits():
    torch.manual_seed(0)
    model = T2Transformer().eval()
    assert _n_parameters(model) == 150_533 >= 100_000
    logits = model(torch.randn(4, 100, 4))
    assert logits.shape == (4, 5)
    assert torch.all(torch.isfinite(logits))
    # Logits, not probabilities: rows do not sum to one.
    assert not torch.allclose(logits.sum(dim=1), torch.ones(4))


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    model = T2Transformer(dropout=0.0)
    loss = nn.functional.cross_entropy(model(torch.randn(8, 100, 4)), torch.arange(8) % 5)
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.any(parameter.grad != 0), name
    assert "positional_encoding" in dict(model.named_buffers())
    assert "positional_encoding" not in dict(model.named_parameters())


def test_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = MultiHeadSelfAttention(d_model=16, n_heads=4).eval()
    reference = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        weights = [ours.query.weight, ours.key.weight, ours.value.weight]
        reference.in_proj_weight.copy_(torch.cat(weights))
        reference.in_proj_bias.copy_(torch.cat([ours.query.bias, ours.key.bias, ours.value.bias]))
        reference.out_proj.weight.copy_(ours.out.weight)
        reference.out_proj.bias.copy_(ours.out.bias)
        x = torch.randn(3, 7, 16)
        expected, _ = reference(x, x, x, need_weights=False)
        torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-5)
    assert ours.n_heads == 4 and ours.head_dim == 4


def test_positional_encoding_values():
    encoding = sinusoidal_positional_encoding(100, 6)
    assert encoding.shape == (100, 6)
    position, pair = 7, 1  # columns 2 and 3 use frequency 10000 ** (-2/6)
    angle = position * 10000.0 ** (-2 * pair / 6)
    assert encoding[position, 2].item() == pytest.approx(np.sin(angle), abs=1e-6)
    assert encoding[position, 3].item() == pytest.approx(np.cos(angle), abs=1e-6)


def test_build_t2_scales_width_and_depth():
    base = build_t2((100, 4), 5)
    assert _n_parameters(base) == _n_parameters(T2Transformer())
    narrow = build_t2((100, 4), 5, width_multiplier=0.5)
    shallow = build_t2((100, 4), 5, depth_multiplier=0.5)
    assert narrow.head.in_features == 48 and len(narrow.blocks) == 2
    assert len(shallow.blocks) == 1
    assert _n_parameters(narrow) < _n_parameters(shallow) < _n_parameters(base)
    assert build_t2((50, 3), 2)(torch.zeros(1, 50, 3)).shape == (1, 2)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="divisible"):
        T2Transformer(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="n_timesteps, n_channels"):
        build_t2((100,), 5)
    with pytest.raises(ValueError, match=r"shape \(batch, 100, 4\)"):
        T2Transformer()(torch.zeros(2, 2, 100))


def test_onnx_export_matches_torch(tmp_path):
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = T2Transformer().eval()
    x = torch.randn(2, 100, 4)
    path = tmp_path / "t2.onnx"
    with warnings.catch_warnings():
        # torch's exporter raises deprecation warnings from its own internals (torch 2.13).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), str(path), input_names=["light_curve"], output_names=["logits"]
        )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"light_curve": x.numpy()})
    np.testing.assert_allclose(logits, model(x).detach().numpy(), rtol=1e-4, atol=1e-5)
