"""Quantization-aware training recovers what 4-bit post-training quantization loses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import make_blobs, tiny_mlp
from satcompress.networks import ResidualMLP
from satcompress.quantize import (
    PostTrainingQuantizeConfig,
    QuantizationAwareTrainConfig,
    fine_tune_quantized,
    post_training_quantize,
    quantization_aware_train,
    quantized_layers,
)
from satcompress.tasks import Split, TaskData
from satcompress.training import TrainConfig, fit


def linear_boundaries(n_examples: int = 400, n_features: int = 16, seed: int = 3) -> TaskData:
    """Three classes split by random hyperplanes through the origin: no margin, so the
    decision boundaries need precise weights and 4-bit rounding moves them."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n_features, 3))

    def part(offset: int) -> Split:
        x = rng.normal(size=(n_examples, n_features)).astype(np.float32)
        return Split(x=x, y=(x @ directions).argmax(axis=1).astype(np.int64),
                     groups=np.arange(n_examples) + offset * n_examples)

    return TaskData(train=part(0), val=part(1), test=part(2), class_names=("a", "b", "c"))


def _test_loss(model: torch.nn.Module, data: TaskData) -> float:
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(data.test.x))
    return F.cross_entropy(logits, torch.from_numpy(data.test.y)).item()


def test_qat_at_4_bits_recovers_what_ptq_at_4_bits_loses():
    data = linear_boundaries()
    torch.manual_seed(3)
    model = ResidualMLP(n_features=16, n_classes=3, width=16, depth=1, dropout=0.0)
    model = fit(model, data, TrainConfig(max_epochs=60, learning_rate=3e-3, patience_epochs=10))
    ptq = post_training_quantize(
        model, PostTrainingQuantizeConfig(weight_bits=4, quantize_activations=False), None)
    qat = quantization_aware_train(
        model, QuantizationAwareTrainConfig(weight_bits=4, max_epochs=20, learning_rate=2e-3,
                                            patience_epochs=20), data)
    float_loss, ptq_loss, qat_loss = (_test_loss(m, data) for m in (model, ptq, qat))
    assert ptq_loss > float_loss + 0.01  # 4-bit rounding visibly hurts ...
    assert qat_loss < float_loss + 0.25 * (ptq_loss - float_loss)  # ... QAT wins back >= 75 %
    assert all(layer.weight_bits == 4 for layer in quantized_layers(qat).values())


def test_qat_returns_weights_on_their_grid_with_fresh_scales():
    model, data = tiny_mlp(), make_blobs()
    for split in (data.train, data.val, data.test):  # as the real tasks' cached arrays are
        split.x.setflags(write=False)
        split.y.setflags(write=False)
    result = quantization_aware_train(model, QuantizationAwareTrainConfig(max_epochs=3), data)
    for layer in quantized_layers(result).values():
        expected_scale = layer.weight.detach().abs().amax(dim=1) / 7
        assert torch.allclose(layer.weight_scale, expected_scale, rtol=1e-6)
        assert torch.equal(layer._fake_quantized_weight(), layer.weight.detach())
    assert not torch.equal(result.stem.weight, post_training_quantize(
        model, PostTrainingQuantizeConfig(weight_bits=4, quantize_activations=False), None
    ).stem.weight)  # training moved some weight to another grid point


def test_qat_with_quantized_activations_keeps_their_calibrated_grid():
    model, data = tiny_mlp(), make_blobs()
    config = QuantizationAwareTrainConfig(weight_bits=8, quantize_activations=True, max_epochs=2)
    start = post_training_quantize(model, PostTrainingQuantizeConfig(), data)
    result = quantization_aware_train(model, config, data)
    assert torch.equal(result.stem.input_scale, start.stem.input_scale)
    assert all(layer.quantize_input for layer in quantized_layers(result).values())


def test_qat_needs_data_and_a_quantized_model_to_fine_tune():
    with pytest.raises(ValueError, match="pass its data"):
        quantization_aware_train(tiny_mlp(), QuantizationAwareTrainConfig(), None)
    with pytest.raises(ValueError, match="quantize it first"):
        fine_tune_quantized(tiny_mlp(), make_blobs(), TrainConfig(max_epochs=1))
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        QuantizationAwareTrainConfig(learning_rate=0.0)
