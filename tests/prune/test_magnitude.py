"""Unstructured magnitude pruning: thresholds, exact global sparsity, schedules, masks, bytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import make_blobs, tiny_mlp, tiny_t2
from satcompress import stages
from satcompress.prune import (
    MagnitudePruneConfig,
    StdThresholdPruneConfig,
    WeightMasks,
    polynomial_sparsity,
    prunable_weights,
    prune_report,
    sparse_storage_bytes,
)


def _weights(model: nn.Module) -> dict[str, np.ndarray]:
    return {name: weight.detach().numpy().copy() for name, weight in prunable_weights(model).items()}


def test_polynomial_schedule_matches_zhu_and_gupta_formula():
    final, initial, n = 0.8, 0.1, 5
    expected = [final + (initial - final) * (1 - t / n) ** 3 for t in range(n + 1)]
    values = [polynomial_sparsity(t, n, final, initial) for t in range(n + 1)]
    assert values == pytest.approx(expected, abs=1e-12)
    assert values[0] == pytest.approx(initial) and values[-1] == pytest.approx(final)
    config = MagnitudePruneConfig(sparsity=0.9, pruning_steps=4)
    assert config.ramp(0.9) == pytest.approx([0.9 - 0.9 * (1 - t / 4) ** 3 for t in (1, 2, 3, 4)])


def test_gradual_pruning_follows_the_schedule_and_ends_at_the_exact_sparsity():
    model = tiny_mlp()
    result = stages.apply(model, MagnitudePruneConfig(sparsity=0.7, pruning_steps=3,
                                                      finetune_epochs=1), make_blobs())
    report = prune_report(result)
    assert report["schedule"] == pytest.approx([0.7 - 0.7 * (1 - t / 3) ** 3 for t in (1, 2, 3)])
    zeros = sum(int((weight == 0).sum()) for weight in prunable_weights(result).values())
    total = sum(weight.numel() for weight in prunable_weights(result).values())
    assert abs(zeros - round(0.7 * total)) <= 1
    assert report["finetune_epochs"] == 3


def test_std_threshold_is_quality_times_the_layer_std():
    model = tiny_t2()
    before = _weights(model)
    result = stages.apply(model, StdThresholdPruneConfig(quality=0.8, finetune_epochs=0))
    after = _weights(result)
    for name, weight in before.items():
        threshold = 0.8 * np.std(weight, ddof=1)  # the manual oracle
        pruned = np.abs(weight) < threshold
        assert np.all(after[name][pruned] == 0), name
        assert np.array_equal(after[name][~pruned], weight[~pruned]), name
        assert prune_report(result)["std_by_layer"][name] == pytest.approx(np.std(weight, ddof=1))


@pytest.mark.parametrize("sparsity", [0.37, 0.9])
@pytest.mark.parametrize("build", [tiny_mlp, tiny_t2])
def test_global_sparsity_is_exact_and_prunes_the_smallest_weights(build, sparsity):
    model = build()
    before = np.concatenate([w.ravel() for w in _weights(model).values()])
    result = stages.apply(model, MagnitudePruneConfig(sparsity=sparsity, finetune_epochs=0))
    after = np.concatenate([w.ravel() for w in _weights(result).values()])
    pruned = after == 0
    assert abs(int(pruned.sum()) - round(sparsity * before.size)) <= 1
    assert np.abs(before[pruned]).max() <= np.abs(before[~pruned]).min()
    assert np.array_equal(after[~pruned], before[~pruned])
    assert prune_report(result)["sparsity"] == pytest.approx(sparsity, abs=1 / before.size)


def test_pruned_weights_stay_zero_through_fine_tuning():
    model, data = tiny_mlp(), make_blobs()
    one_shot = stages.apply(model, MagnitudePruneConfig(sparsity=0.6, finetune_epochs=0))
    masks = {name: weight == 0 for name, weight in _weights(one_shot).items()}
    tuned = stages.apply(model, MagnitudePruneConfig(sparsity=0.6, finetune_epochs=3,
                                                     learning_rate=1e-2), data)
    changed = 0
    for name, weight in _weights(tuned).items():
        assert np.all(weight[masks[name]] == 0), name
        changed += int(np.sum(weight[~masks[name]] != _weights(one_shot)[name][~masks[name]]))
    assert changed > 0  # fine-tuning really moved the surviving weights


def test_weight_masks_zero_gradients_only_while_active():
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    keep = torch.rand(3, 4) > 0.5
    masks = WeightMasks({"weight": keep})
    with masks.gradients_masked(layer):
        layer(torch.randn(5, 4)).pow(2).sum().backward()
    assert torch.all(layer.weight.grad[~keep] == 0)
    assert torch.all(layer.weight.grad[keep] != 0)
    layer.zero_grad()
    layer(torch.randn(5, 4)).pow(2).sum().backward()
    assert torch.all(layer.weight.grad != 0)  # hooks removed on exit


def test_skipped_layers_stay_dense_and_unknown_names_are_refused():
    model = tiny_mlp()
    result = stages.apply(model, MagnitudePruneConfig(sparsity=0.8, finetune_epochs=0,
                                                      skip_layers=("head",)))
    assert torch.equal(result.head.weight, model.head.weight)
    assert "head.weight" not in prune_report(result)["sparsity_by_layer"]
    with pytest.raises(ValueError, match="does not have"):
        stages.apply(model, MagnitudePruneConfig(finetune_epochs=0, skip_layers=("nope",)))


def test_sparse_storage_bytes_by_hand():
    layer = nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[0, 1] = layer.weight[1, 0] = layer.weight[1, 3] = 1.0
        layer.weight[2, 2] = layer.weight[2, 3] = 1.0
    sizes = sparse_storage_bytes(layer)
    dense = (12 + 3) * 4
    assert sizes["dense_bytes"] == dense
    # CSR: 5 float32 values + 5 int16 column indices + 4 int32 row pointers; bias dense.
    assert sizes["csr_bytes"] == 5 * 4 + 5 * 2 + 4 * 4 + 3 * 4
    # Bitmask: 12 bits -> 2 bytes, plus 5 float32 values; bias dense.
    assert sizes["bitmask_bytes"] == 2 + 5 * 4 + 3 * 4


def test_bad_settings_are_refused_with_a_fix():
    with pytest.raises(ValueError, match="sparsity must be a fraction"):
        MagnitudePruneConfig(sparsity=1.0)
    with pytest.raises(ValueError, match="quality must be"):
        StdThresholdPruneConfig(quality=0.0)
    with pytest.raises(ValueError, match="pruning_steps"):
        MagnitudePruneConfig(pruning_steps=0)
    with pytest.raises(ValueError, match="finetune_epochs"):
        MagnitudePruneConfig(finetune_epochs=-1)
    with pytest.raises(ValueError, match="pass data, or set finetune_epochs=0"):
        stages.apply(tiny_mlp(), MagnitudePruneConfig(finetune_epochs=1), None)
