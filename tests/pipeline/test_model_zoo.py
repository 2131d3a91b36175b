"""The model zoo of ``benchmarks/zoo.py`` in miniature: each architecture a user writes in
plain PyTorch (a ResNet-18 layout 1-D CNN, a RAPID-style GRU, an ``nn.TransformerEncoder``
classifier, an ``nn.Sequential`` MLP on raw tabular features, a 2-D CNN with BatchNorm and
pooling), a few thousand parameters each, trained for a few steps on synthetic data and
compressed end to end through the public API (the MLP through the CLI, ``--standardize``):
the artifact must agree with the compressed PyTorch model on every test prediction and be
smaller than the model's float32 weights. The full-size runs: benchmarks/your_own_model.py."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import satcompress
from satcompress import runtime
from satcompress.cli import app

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import zoo  # noqa: E402  (user code, not part of the satcompress package)

RECIPE = """
name = "zoo-test"
description = "Tiny: one epoch of Hinton KD to a half-width student, then 8 values per layer."

[[stage]]
stage = "hinton_kd"
target_parameter_fraction = 0
width_multiplier = 0.5
epochs = 1

[[stage]]
stage = "weight_cluster"
n_clusters = 8
"""
LENGTH, CHANNELS = 8, 4

# Known, reported limitations (not failures of these tests): a GRU's `_flat_weights` and a
# TransformerEncoderLayer's activation function cannot be checkpointed (the stage is recomputed
# on a re-run); Torch-Pruning warns while tracing a GRU; a user's nn.Parameter that no
# reset_parameters() covers is kept from the teacher by the generic student.
NOT_CHECKPOINTED = pytest.mark.filterwarnings("ignore:Stage .* is not checkpointed:UserWarning")
TRACING_GRU = pytest.mark.filterwarnings("ignore:Maximum recursive depth reached:UserWarning")
OWN_PARAMETER = pytest.mark.filterwarnings("ignore:build_student. no reset_parameters:UserWarning")


def sequences(n: int = 200, n_classes: int = 5, seed: int = 0):
    """Light-curve-like ``(n, 8, 4)`` inputs: class ``c`` brightens channel ``c % 4`` with a
    rise of class-dependent slope, under noise; split 60/20/20."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % n_classes)
    ramp = np.linspace(-1, 1, LENGTH)
    x = rng.normal(0, 0.5, (n, LENGTH, CHANNELS))
    x[np.arange(n), :, y % CHANNELS] += (1 + y // CHANNELS)[:, None] * ramp
    return split(x.astype(np.float32), y)


def images(n: int = 200, seed: int = 0):
    """``(n, 1, 16, 16)`` images: a blob, horizontal stripes or vertical stripes, with noise."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 3)
    grid = np.arange(16)
    rows, cols = np.meshgrid(grid, grid, indexing="ij")
    x = rng.normal(0, 0.3, (n, 1, 16, 16))
    for i, label in enumerate(y):
        if label == 0:
            centre = rng.uniform(4, 12, 2)
            x[i, 0] += np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / 8)
        else:
            x[i, 0] += np.sin(2 * np.pi * (rows if label == 1 else cols) / 4 + rng.uniform(0, 6))
    return split(x.astype(np.float32), y)


def split(x: np.ndarray, y: np.ndarray):
    cut = np.cumsum([int(0.6 * len(y)), int(0.2 * len(y))])
    return ((x[:cut[0]], y[:cut[0]]), (x[cut[0]:cut[1]], y[cut[0]:cut[1]]),
            (x[cut[1]:], y[cut[1]:]))


def fit(model: nn.Module, x: np.ndarray, y: np.ndarray, steps: int = 30) -> nn.Module:
    """A user's few full-batch steps of Adam on class-weighted cross-entropy."""
    torch.manual_seed(0)
    counts = np.bincount(y)
    loss = nn.CrossEntropyLoss(weight=torch.tensor(len(y) / (len(counts) * counts),
                                                   dtype=torch.float32))
    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    inputs, labels = torch.tensor(x), torch.tensor(y)
    model.train()
    for _ in range(steps):
        optimiser.zero_grad()
        loss(model(inputs), labels).backward()
        optimiser.step()
    return model.eval()


def float_bytes(model: nn.Module) -> int:
    return 4 * sum(p.numel() for p in model.parameters())


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "zoo-test.toml"
    path.write_text(RECIPE)
    return path


@pytest.mark.parametrize("name", [
    "resnet18_1d",
    pytest.param("rapid_gru", marks=[NOT_CHECKPOINTED, TRACING_GRU]),
    pytest.param("transformer", marks=[NOT_CHECKPOINTED, OWN_PARAMETER]),
    "blob_cnn",
])
# One epoch of distillation on tiny models: the mechanics are tested here, not the skill (a
# student at chance is warned about, as it should be).
@pytest.mark.filterwarnings("ignore:Stage .*hinton_kd lost most of the base model's skill")
def test_a_zoo_model_compresses_through_the_api_and_its_artifact_agrees(name, recipe, tmp_path):
    model, data = {
        "resnet18_1d": lambda: (zoo.resnet18_1d(widths=(4, 8, 8, 8)), sequences()),
        "rapid_gru": lambda: (zoo.rapid_gru(hidden=16), sequences()),
        "transformer": lambda: (zoo.transformer(d_model=16, heads=2, layers=1,
                                                feedforward=32, length=LENGTH), sequences()),
        "blob_cnn": lambda: (zoo.blob_cnn(channels=(8, 16)), images()),
    }[name]()
    assert 1_000 <= sum(p.numel() for p in model.parameters()) <= 5_000
    model = fit(model, *data[0])
    result = satcompress.compress(model, data, metric="accuracy", recipe=recipe,
                                  out=tmp_path / "out")
    assert result.verification.differing_predictions == 0
    assert result.verification.examples == len(data[2][1])
    assert result.artifact_path.stat().st_size < float_bytes(model)
    # the artifact's own scores are the compressed PyTorch model's
    flight = runtime.load(result.artifact_path)
    logits = flight.run(data[2][0])
    with torch.inference_mode():
        expected = result.model(torch.from_numpy(data[2][0])).numpy()
    assert (logits.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_a_zoo_mlp_compresses_from_raw_csv_features_through_the_cli(recipe, tmp_path,
                                                                      monkeypatch):
    """The flare MLP's route: raw features on very different scales in a CSV with the
    user's own split, a model trained on standardised features, ``--standardize``."""
    rng = np.random.default_rng(0)
    scales = np.array([1.0, 10.0, 1e3, 0.1, 5.0, 1e22])
    raw = rng.lognormal(0, 1, (400, 6)) * scales
    label = (np.log(raw[:, 0]) + np.log(raw[:, 5] / 1e22) + rng.normal(0, 0.5, 400) > 0.5)
    region = np.arange(400) // 4
    table = pd.DataFrame(raw, columns=[f"KEY{i}" for i in range(6)]).assign(
        label=label.astype(int), region=region,
        split=np.array(["train", "train", "train", "val", "test"])[region % 5])
    table.to_csv(tmp_path / "table.csv", index=False)
    (tmp_path / "mymodels.py").write_text(textwrap.dedent("""
        from benchmarks.zoo import flare_mlp

        def build():
            return flare_mlp(features=6, hidden=32)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    import mymodels

    train = table[table.split == "train"]
    mean, std = train.iloc[:, :6].mean().to_numpy(), train.iloc[:, :6].std(ddof=0).to_numpy()
    x = ((train.iloc[:, :6].to_numpy() - mean) / std).astype(np.float32)
    model = fit(mymodels.build(), x, train.label.to_numpy(np.int64), steps=60)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    try:
        outcome = CliRunner().invoke(app, [
            "compress", "--model", "mymodels:build", "--weights", "weights.pt", "--data",
            "table.csv", "--split-column", "split", "--group-column", "region",
            "--standardize", "--metric", "tss", "--recipe", str(recipe), "--out", "out"])
    finally:
        sys.modules.pop("mymodels", None)
    assert outcome.exit_code == 0, outcome.output
    stages = json.loads((tmp_path / "out/stages.json").read_text())
    assert stages["artifact"]["verification"]["differing_predictions"] == 0
    artifact = tmp_path / "out/model.sca"
    assert artifact.stat().st_size < float_bytes(model)
    # the artifact takes the raw CSV features
    test = table[table.split == "test"]
    scores = runtime.load(artifact).run(test.iloc[:, :6].to_numpy(np.float32))
    assert scores.shape == (len(test), 2) and np.isfinite(scores).all()
    assert "tss" in stages["artifact"]["verification"]["metrics"]
