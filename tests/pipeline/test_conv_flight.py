"""Convolutional models through the flight artifact: a quantized Conv2d is stored as integers
and run by the runtime; a clustered Conv + BatchNorm keeps its shared values in the artifact.
Both must agree with PyTorch on every test prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from satcompress import stages
from satcompress.artifact import read_artifact
from satcompress.cluster import cluster_report
from satcompress.pipeline.flight import build_artifact, task_metadata, verify_artifact
from satcompress.quantize import quantize_report
from satcompress.tasks import Split, TaskData, registry

REGISTERED = stages.load_builtin_stages()


def _split(n: int, dims: int, seed: int) -> Split:
    """Class 0: noise; 1 and 2: a wave along the last axis or (2-D) the other one."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    wave = np.sin(np.arange(8) * 1.6)
    shape = (n, 1, 8, 8) if dims == 2 else (n, 2, 8)
    x = rng.normal(0, 0.3, shape)
    x[y == 1] += wave
    x[y == 2] += wave[:, None] if dims == 2 else wave[::-1]
    return Split(x=x.astype(np.float32), y=y.astype(np.int64), groups=np.arange(n) + 1000 * seed)


def _case(dims: int) -> tuple[nn.Module, TaskData, registry.Task]:
    """A CNN (Conv + BatchNorm + ReLU, twice; pooling; Linear head) trained for 30 steps."""
    data = TaskData(train=_split(120, dims, 0), val=_split(60, dims, 1),
                    test=_split(60, dims, 2), class_names=("noise", "wave", "other"))
    conv, norm, pool = ((nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d) if dims == 2
                        else (nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d))
    torch.manual_seed(0)
    model = nn.Sequential(conv(data.train.x.shape[1], 16, 3, padding=1), norm(16), nn.ReLU(),
                          conv(16, 32, 3, padding=1, bias=False), norm(32), nn.ReLU(),
                          pool(1), nn.Flatten(), nn.Linear(32, 3))
    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    x, y = torch.from_numpy(data.train.x), torch.from_numpy(data.train.y)
    for _ in range(30):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    task = registry.Task("waves", "tiny", "satcompress.tasks.user", metric="accuracy", data=data)
    return model.eval(), data, task


def _artifact(model: nn.Module, data: TaskData, task: registry.Task, tmp_path):
    path = tmp_path / "model.sca"
    build_artifact(model, torch.from_numpy(data.test.x[:1]), task_metadata(task, data), path)
    return read_artifact(path), verify_artifact(path, model, data, task)


@pytest.mark.parametrize("activations", [True, False], ids=["w8a8", "weight-only-int8"])
def test_an_int8_conv2d_model_ships_integer_convolutions_at_a_fraction_of_its_bytes(
        activations, tmp_path):
    model, data, task = _case(dims=2)
    config = REGISTERED["post_training_quantize"](quantize_activations=activations)
    quantized = stages.apply(model, config, data)
    artifact, report = _artifact(quantized, data, task, tmp_path)
    convolutions = [node for node in artifact.graph["nodes"] if node["op"] == "QuantConv"]
    assert len(convolutions) == 2 and not any(
        node["op"] == "Conv" for node in artifact.graph["nodes"])
    assert all(artifact.tensors[node["in"][3]].dtype == np.int8 for node in convolutions)
    float_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert artifact.size_bytes < 0.4 * float_bytes
    assert report.differing_predictions == 0
    assert report.max_abs_logit_difference <= report.tolerance
    assert report.metrics["accuracy"] > 0.9
    assert quantize_report(quantized)["float_layers"] == {
        "1": "no quantized BatchNorm2d: only Linear, Conv1d, Conv2d are quantized",
        "4": "no quantized BatchNorm2d: only Linear, Conv1d, Conv2d are quantized"}


@pytest.mark.parametrize("dims", [1, 2])
def test_a_clustered_conv_with_batchnorm_keeps_its_16_values_in_the_artifact(dims, tmp_path):
    model, data, task = _case(dims)
    config = REGISTERED["weight_cluster"](n_clusters=16, finetune_epochs=1, batch_size=32)
    clustered = stages.apply(model, config, data)
    assert cluster_report(clustered)["batchnorm_folded"] == {"1": "0", "4": "3"}
    artifact, report = _artifact(clustered, data, task, tmp_path)
    assert "BatchNormalization" not in {node["op"] for node in artifact.graph["nodes"]}
    conv_weights = [artifact.tensors[node["in"][1]] for node in artifact.graph["nodes"]
                    if node["op"] == "Conv"]
    assert len(conv_weights) == 2
    for weight, layer in zip(conv_weights, (clustered[0], clustered[3])):
        assert len(np.unique(weight)) <= 16
        np.testing.assert_array_equal(weight, layer.weight.detach().numpy())
    assert report.differing_predictions == 0 and not report.quantized_activations
    assert report.max_abs_logit_difference <= report.tolerance  # LOGIT_TOLERANCE x logit scale
    assert report.metrics["accuracy"] > 0.9
