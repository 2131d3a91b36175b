"""Weight clustering: zeros stay zero, per-cluster gradients, honest stored bytes, the stage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from conftest import make_blobs, make_sequences, tiny_mlp, tiny_t2
from satcompress import stages
from satcompress.cluster import (
    CODEBOOK_BUFFER,
    WeightClusterConfig,
    bake_clusters,
    cluster_indices,
    cluster_layer,
    cluster_report,
)
from satcompress.measure import theoretical_bytes
from satcompress.prune import prunable_weights


def _prune_half(model: nn.Module) -> nn.Module:
    """Zero the smaller-magnitude half of every weight (a stand-in for a pruning stage)."""
    with torch.no_grad():
        for weight in prunable_weights(model).values():
            weight.mul_(weight.abs() > weight.abs().median())
    return model


@pytest.mark.parametrize("init", ["linear", "kmeans++"])
@pytest.mark.parametrize("build,data", [(tiny_mlp, make_blobs), (tiny_t2, make_sequences)])
def test_clustering_and_fine_tuning_never_revive_a_pruned_weight(init, build, data):
    pruned = _prune_half(build())
    config = WeightClusterConfig(n_clusters=8, init=init, finetune_epochs=2, learning_rate=1e-2)
    clustered = stages.apply(pruned, config, data())
    before = {name: w.detach() for name, w in prunable_weights(pruned).items()}
    for name, weight in prunable_weights(clustered).items():
        assert torch.equal(weight == 0, before[name] == 0), name  # zeros kept, none added
        assert len(torch.unique(weight)) <= 8
        layer = clustered.get_submodule(name.rpartition(".")[0])
        assert getattr(layer, CODEBOOK_BUFFER)[0] == 0  # the zero cluster is index 0


def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    torch.manual_seed(0)
    layer = nn.Linear(12, 7)
    with torch.no_grad():
        layer.weight[layer.weight.abs() < 0.1] = 0
    parametrisation = cluster_layer(layer, n_clusters=6)
    x = torch.randn(5, 12)
    (layer(x) ** 2).sum().backward()

    oracle = nn.Linear(12, 7)  # plain layer with the same weight, as a leaf
    with torch.no_grad():
        oracle.weight.copy_(layer.weight)
        oracle.bias.copy_(layer.bias)
    (oracle(x) ** 2).sum().backward()
    indices = parametrisation.indices.reshape(-1).numpy()
    per_cluster = np.bincount(indices, weights=oracle.weight.grad.reshape(-1).double().numpy(),
                              minlength=len(parametrisation.codebook()))
    assert parametrisation.zero_cluster
    assert np.allclose(parametrisation.centroids.grad.numpy(), per_cluster[1:], atol=1e-5)
    assert layer.parametrizations.weight.original.grad is None  # only the codebook trains


def test_fine_tuning_moves_the_centroids_but_keeps_the_assignment():
    model, data = tiny_mlp(), make_blobs()
    frozen = stages.apply(model, WeightClusterConfig(finetune_epochs=0), data)
    tuned = stages.apply(model, WeightClusterConfig(finetune_epochs=2, learning_rate=1e-2), data)
    moved = 0
    for name in cluster_report(frozen)["layers"]:
        layer_frozen, layer_tuned = frozen.get_submodule(name), tuned.get_submodule(name)
        assert np.array_equal(cluster_indices(layer_frozen), cluster_indices(layer_tuned))
        moved += not torch.equal(getattr(layer_frozen, CODEBOOK_BUFFER),
                                 getattr(layer_tuned, CODEBOOK_BUFFER))
    assert moved == len(cluster_report(frozen)["layers"])


def test_stored_bytes_count_indices_and_codebook_exactly():
    model = _prune_half(tiny_t2())
    clustered = stages.apply(model, WeightClusterConfig(n_clusters=16, finetune_epochs=0), None)
    expected = theoretical_bytes(model)
    for name, entry in cluster_report(clustered)["layers"].items():
        assert entry["clustered"]
        layer = clustered.get_submodule(name)
        k = len(getattr(layer, CODEBOOK_BUFFER))
        assert layer.stored_bits == {"weight": math.ceil(math.log2(k))}
        n = layer.weight.numel()
        expected += math.ceil(n * math.ceil(math.log2(k)) / 8) + 4 * k - 4 * n
    assert theoretical_bytes(clustered) == expected
    assert not any(parametrize.is_parametrized(m) for m in clustered.modules())


def test_layers_where_a_codebook_would_not_save_bytes_are_left_alone():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 300))
    clustered = stages.apply(model, WeightClusterConfig(n_clusters=256, finetune_epochs=0), None)
    report = cluster_report(clustered)["layers"]
    assert not report["0"]["clustered"] and report["1"]["clustered"]
    assert torch.equal(clustered[0].weight, model[0].weight)


def test_cluster_indices_refuse_weights_trained_off_the_codebook():
    layer = nn.Linear(8, 8)
    cluster_layer(layer, 4)
    bake_clusters(layer)
    codebook = getattr(layer, CODEBOOK_BUFFER)
    assert torch.equal(codebook[torch.from_numpy(cluster_indices(layer))], layer.weight)
    with torch.no_grad():
        layer.weight[0, 0] += 1e-3
    with pytest.raises(ValueError, match="not centroids"):
        cluster_indices(layer)


def test_fine_tuning_without_data_is_refused():
    with pytest.raises(ValueError, match="data"):
        stages.apply(tiny_mlp(), WeightClusterConfig(finetune_epochs=1), None)


@pytest.mark.parametrize("kwargs", [{"n_clusters": 1}, {"n_clusters": 257}, {"init": "random"},
                                    {"kmeans_iterations": 0}, {"skip_layers": "head"}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        WeightClusterConfig(**kwargs)


def test_layer_clusters_set_the_codebook_of_the_named_layers():
    model, data = tiny_mlp(), make_blobs()
    config = WeightClusterConfig(n_clusters=16, layer_clusters=(("blocks.0.fc1", 4),),
                                 skip_layers=("head",), finetune_epochs=0)
    result = stages.apply(model, config, data)
    layers = cluster_report(result)["layers"]
    assert layers["blocks.0.fc1"]["clusters"] == 4 and layers["blocks.1.fc1"]["clusters"] == 16
    assert "head" not in layers
    assert stages.config_from_dict(stages.config_to_dict(config)) == config
    with pytest.raises(ValueError, match="layer_clusters must be an integer from 2"):
        WeightClusterConfig(layer_clusters=(("stem", 1),))
    with pytest.raises(ValueError, match="not clusterable"):
        stages.apply(model, WeightClusterConfig(layer_clusters=(("head", 4),),
                                                skip_layers=("head",), finetune_epochs=0), data)
