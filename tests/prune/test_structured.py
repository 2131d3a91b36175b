"""Structured pruning: groups, exact removal of dead units, MAC targets, heads, ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_blobs, make_sequences, tiny_mlp, tiny_t2
from satcompress import stages
from satcompress.measure import count_macs, count_parameters
from satcompress.networks import T2Transformer
from satcompress.onnx_export import export_onnx, run_onnx
from satcompress.prune import StructuredPruneConfig, StructuredPruner, prune_report


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x).numpy()


def test_groups_of_both_architectures():
    mlp, t2 = tiny_mlp(), tiny_t2()
    mlp_groups = StructuredPruner(torch.zeros(1, 6)).groups(mlp)
    assert [(g.name, g.kind, g.size) for g in mlp_groups] == [
        ("stem", "residual_stream", 16), ("blocks.0.fc1", "width", 16),
        ("blocks.1.fc1", "width", 16)]
    assert mlp_groups[0].layers == ("stem", "blocks.0.fc2", "blocks.1.fc2")
    no_stream = StructuredPruner(torch.zeros(1, 6), prune_residual_stream=False).groups(mlp)
    assert [g.kind for g in no_stream] == ["width", "width"]
    # t2's stream carries the positional-encoding buffer, which cannot be resized: left out.
    t2_groups = StructuredPruner(torch.zeros(1, 12, 2)).groups(t2)
    assert [(g.name, g.kind, g.size) for g in t2_groups] == [
        ("blocks.0.attention", "heads", 2), ("blocks.0.ff1", "width", 32)]


def test_mac_target_removes_parameters_and_macs(tiny_case):
    model, data = tiny_case
    x = torch.from_numpy(data.test.x[:1])
    result = stages.apply(model, StructuredPruneConfig(mac_reduction=2.0, finetune_epochs=0), data)
    macs_before, macs_after = count_macs(model, x), count_macs(result, x)
    assert macs_after <= macs_before / 2
    assert count_parameters(result)[0] < count_parameters(model)[0]
    report = prune_report(result)
    assert (report["macs_before"], report["macs_after"]) == (macs_before, macs_after)
    # the smallest ratio that reaches the target (to the bisection's resolution of half a
    # unit of the largest group): pruning a little less misses it
    pruner = StructuredPruner(x)
    resolution = 0.5 / max(group.size for group in pruner.groups(model))
    less = pruner.prune(model, report["channel_ratio"] - resolution)
    assert count_macs(less, x) > macs_before / 2


@pytest.mark.parametrize("importance", ["l1", "l2", "taylor"])
def test_dead_hidden_channels_are_removed_without_changing_outputs(importance):
    model, data = tiny_mlp(), make_blobs()
    dead = [1, 5, 7, 12]
    with torch.no_grad():
        block = model.blocks[0]
        block.fc1.weight[dead] = 0
        block.fc1.bias[dead] = 0
        block.fc2.weight[:, dead] = 0
    x = torch.from_numpy(data.test.x)
    pruned = StructuredPruner(x[:1], importance=importance).prune(
        model, {"blocks.0.fc1": len(dead) / 16}, data)
    assert pruned.blocks[0].fc1.out_features == 12
    kept = [c for c in range(16) if c not in dead]
    assert torch.equal(pruned.blocks[0].fc1.weight, model.blocks[0].fc1.weight[kept])
    assert np.allclose(_outputs(pruned, x), _outputs(model, x), atol=1e-6)


def test_dead_heads_and_feed_forward_channels_are_removed_without_changing_outputs():
    torch.manual_seed(0)
    model = T2Transformer(n_timesteps=12, n_channels=2, n_classes=3, d_model=16, n_heads=4,
                          ff_dim=32, n_blocks=2, dropout=0.0).eval()
    data = make_sequences()
    attention, head_dim = model.blocks[1].attention, 4
    dead_heads, dead_ff = [0, 2], [3, 4, 20]
    dead_channels = [h * head_dim + i for h in dead_heads for i in range(head_dim)]
    with torch.no_grad():
        for projection in (attention.query, attention.key, attention.value):
            projection.weight[dead_channels] = 0
            projection.bias[dead_channels] = 0
        attention.out.weight[:, dead_channels] = 0
        model.blocks[0].ff1.weight[dead_ff] = 0
        model.blocks[0].ff1.bias[dead_ff] = 0
        model.blocks[0].ff2.weight[:, dead_ff] = 0
    x = torch.from_numpy(data.test.x)
    pruned = StructuredPruner(x[:1]).prune(
        model, {"blocks.1.attention": 0.5, "blocks.0.ff1": 3 / 32})
    assert pruned.blocks[1].attention.n_heads == 2
    assert pruned.blocks[1].attention.query.out_features == 8
    assert pruned.blocks[1].attention.out.in_features == 8
    assert pruned.blocks[0].attention.n_heads == 4  # untouched
    assert pruned.blocks[0].ff1.out_features == 29
    assert np.allclose(_outputs(pruned, x), _outputs(model, x), atol=1e-5)


def test_pruned_t2_runs_with_fewer_heads_and_exports_to_onnx():
    torch.manual_seed(0)
    model = T2Transformer(n_timesteps=12, n_channels=2, n_classes=3, d_model=16, n_heads=4,
                          ff_dim=32, n_blocks=1, dropout=0.0).eval()
    data = make_sequences()
    result = stages.apply(model, StructuredPruneConfig(
        mac_reduction=None, channel_ratio=0.75, importance="taylor", finetune_epochs=1), data)
    attention = result.blocks[0].attention
    assert attention.n_heads == 1
    assert attention.query.out_features == attention.head_dim == 4
    x = torch.from_numpy(data.test.x[:6])
    assert count_macs(result, x[:1]) < count_macs(model, x[:1]) / 3
    assert np.allclose(run_onnx(export_onnx(result, x[:1]), x.numpy()), _outputs(result, x),
                       atol=1e-4)


def test_channel_ratio_prunes_every_group_by_that_fraction():
    model, data = tiny_mlp(), make_blobs()
    result = stages.apply(model, StructuredPruneConfig(mac_reduction=None, channel_ratio=0.5,
                                                       finetune_epochs=0), data)
    assert result.stem.out_features == result.blocks[0].fc1.out_features == 8
    assert result.head.out_features == 3  # the output head keeps its classes
    assert [g["size_after"] for g in prune_report(result)["groups"]] == [8, 8, 8]


def test_random_control_is_seeded():
    model, data = tiny_mlp(), make_blobs()
    x = torch.from_numpy(data.test.x[:1])
    first = StructuredPruner(x, importance="random", seed=3).rank(model)
    again = StructuredPruner(x, importance="random", seed=3).rank(model)
    other = StructuredPruner(x, importance="random", seed=4).rank(model)
    assert all(np.array_equal(first[name], again[name]) for name in first)
    assert any(not np.array_equal(first[name], other[name]) for name in first)


def test_unreachable_targets_and_bad_settings_are_refused():
    model, data = tiny_mlp(), make_blobs()
    with pytest.raises(ValueError, match="out of reach"):
        stages.apply(model, StructuredPruneConfig(mac_reduction=1000.0, finetune_epochs=0), data)
    with pytest.raises(ValueError, match="exactly one target"):
        StructuredPruneConfig(mac_reduction=2.0, channel_ratio=0.5)
    with pytest.raises(ValueError, match="importance must be one of"):
        StructuredPruneConfig(importance="l3")
    with pytest.raises(ValueError, match="needs the task's data"):
        stages.apply(model, StructuredPruneConfig(), None)
    with pytest.raises(ValueError, match="does not have"):
        stages.apply(model, StructuredPruneConfig(ignored_layers=("classifier",)), data)
    with pytest.raises(ValueError, match="needs training data"):
        StructuredPruner(torch.zeros(1, 6), importance="taylor").rank(model)


def test_group_ratios_prune_only_the_named_groups_and_round_trip_through_a_recipe():
    from satcompress.pipeline.recipe import Recipe

    model, data = tiny_mlp(), make_blobs()
    config = StructuredPruneConfig(group_ratios=(("blocks.0.fc1", 0.75), ("stem", 0.25)),
                                   finetune_epochs=0)
    assert config.mac_reduction is None and config.channel_ratio is None
    result = stages.apply(model, config, data)
    assert result.blocks[0].fc1.out_features == 4
    assert result.blocks[1].fc1.out_features == 16  # not named: untouched
    assert result.stem.out_features == 12
    assert [g["size_after"] for g in prune_report(result)["groups"]] == [12, 4, 16]
    recipe = Recipe("per-group", (config,))
    assert Recipe.from_toml(recipe.to_toml()) == recipe
    assert StructuredPruneConfig().mac_reduction == 2.0  # no target: half the MACs
    with pytest.raises(ValueError, match="exactly one target"):
        StructuredPruneConfig(channel_ratio=0.5, group_ratios=(("stem", 0.5),))
    with pytest.raises(ValueError, match="fractions in"):
        StructuredPruneConfig(group_ratios=(("stem", 1.0),))
    with pytest.raises(ValueError, match="No prunable group"):
        stages.apply(model, StructuredPruneConfig(group_ratios=(("head", 0.5),)), data)
