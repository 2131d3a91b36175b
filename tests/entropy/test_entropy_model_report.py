"""Per-layer coding report of a clustered (and pruned) model against the symbols' entropy."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from conftest import tiny_mlp
from satcompress import stages
from satcompress.cluster import WeightClusterConfig, cluster_indices
from satcompress.entropy import huffman_encode, shannon_entropy_bits
from satcompress.entropy.model_report import entropy_report, report_totals
from satcompress.prune import prunable_weights


def test_report_of_a_pruned_clustered_model_matches_its_indices():
    model = tiny_mlp()
    with torch.no_grad():
        for weight in prunable_weights(model).values():
            weight.mul_(weight.abs() > weight.abs().quantile(0.7))
    clustered = stages.apply(model, WeightClusterConfig(n_clusters=8, finetune_epochs=0), None)
    report = entropy_report(clustered)
    assert [layer.layer for layer in report] == ["stem", "blocks.0.fc1", "blocks.0.fc2",
                                                 "blocks.1.fc1", "blocks.1.fc2", "head"]
    for layer in report:
        indices = cluster_indices(clustered.get_submodule(layer.layer)).ravel()
        entropy = shannon_entropy_bits(indices)
        assert layer.source == "cluster indices" and layer.n_symbols == indices.size
        assert math.isclose(layer.entropy_bits_per_symbol, entropy)
        assert layer.huffman_bytes == huffman_encode(indices).nbytes
        assert layer.n_symbols * entropy <= layer.huffman_bits_per_symbol * layer.n_symbols \
            <= layer.n_symbols * (entropy + 1)
        assert layer.zero_run_bytes is not None  # 70 % zeros: the run-length coding applies
        codebook_bytes = 4 * len(clustered.get_submodule(layer.layer).weight_codebook)
        assert layer.codebook_bytes == codebook_bytes and layer.raw_bytes == 4 * layer.n_symbols
        assert layer.coded_bytes == min(layer.huffman_bytes, layer.zero_run_bytes) + codebook_bytes
    totals = report_totals(report)
    assert totals["raw_bytes"] == 4 * sum(w.numel() for w in prunable_weights(model).values())
    assert totals["entropy_bytes"] < totals["fixed_width_bytes"] < totals["raw_bytes"]


def test_dense_float_layers_are_not_reported_and_few_distinct_values_are():
    model = nn.Sequential(nn.Linear(30, 30), nn.Linear(30, 4))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([-0.5, 0.0, 0.25]).repeat(40)[:120].reshape(4, 30))
    report = entropy_report(model)
    assert [layer.layer for layer in report] == ["1"]
    assert report[0].source == "distinct values" and report[0].alphabet == 3
    assert np.isclose(report[0].entropy_bits_per_symbol, math.log2(3))
