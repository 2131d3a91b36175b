"""The README's "your own model" path, as a new user follows it: a model written in plain
PyTorch, trained on a CSV of raw features, compressed, verified and used to predict."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import satcompress
from satcompress import runtime, stages
from satcompress.cli import app
from satcompress.pipeline.recipe import Recipe
from satcompress.pipeline.result import RunResult

FEATURES = [f"sharp_{i}" for i in range(6)]
USER_CODE = """
from torch import nn


class FlareNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.head = nn.Linear(32, 2)

    def forward(self, x):
        return self.head(self.body(x))


def build():
    return FlareNet()
"""


def raw_table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Raw features on very different scales (as SHARP keys are), a region per 4 rows and the
    user's own split by region."""
    rng = np.random.default_rng(seed)
    scales = np.array([1.0, 10.0, 1e3, 0.1, 5.0, 1e5])
    x = rng.normal(size=(n, 6)) * scales + scales
    y = (x[:, 0] + x[:, 1] / 10 + rng.normal(0, 0.5, n) > 2.5).astype(int)
    region = np.arange(n) // 4
    split = np.array(["train", "train", "train", "val", "test"])[region % 5]
    return pd.DataFrame(x, columns=FEATURES).assign(
        label=np.where(y, "flare", "quiet"), region=region, split=split)


def train_as_a_user_would(model: nn.Module, table: pd.DataFrame) -> nn.Module:
    """Standardise with the training rows' statistics, fit a few hundred full-batch steps."""
    train = table[table.split == "train"]
    x = train[FEATURES].to_numpy()
    x = torch.tensor((x - x.mean(axis=0)) / x.std(axis=0), dtype=torch.float32)
    y = torch.tensor(np.array(train.label == "quiet", dtype=np.int64))  # classes sort: flare, quiet
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(150):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    return model.eval()


@pytest.fixture
def users_project(tmp_path, monkeypatch):
    """The user's folder: their model code (mymodels.py), trained weights and data."""
    (tmp_path / "mymodels.py").write_text(textwrap.dedent(USER_CODE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import mymodels

    table = raw_table()
    table.to_csv(tmp_path / "regions.csv", index=False)
    model = train_as_a_user_would(mymodels.build(), table)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    yield tmp_path, model, table
    sys.modules.pop("mymodels", None)


def standardised_logits(model: nn.Module, table: pd.DataFrame, raw: np.ndarray) -> np.ndarray:
    train = table[table.split == "train"][FEATURES].to_numpy()
    x = (raw - train.mean(axis=0)) / train.std(axis=0)
    with torch.inference_mode():
        return model(torch.tensor(x, dtype=torch.float32)).numpy()


def test_cli_compress_verify_predict_on_the_users_code_weights_and_split(users_project):
    folder, model, table = users_project
    runner = CliRunner()
    compressed = runner.invoke(app, [
        "compress", "--model", "mymodels:build", "--weights", "weights.pt", "--data",
        "regions.csv", "--split-column", "split", "--group-column", "region", "--standardize",
        "--metric", "tss", "--recipe", "int8", "--budget", "max_bytes=20kB", "--out", "out"])
    assert compressed.exit_code == 0, compressed.output
    verified = runner.invoke(app, ["verify", "out/model.sca", "--data", "regions.csv",
                                   "--model", "mymodels:build"])
    assert verified.exit_code == 0, verified.output
    assert "verified" in verified.output

    new = raw_table(n=60, seed=1).drop(columns=["label", "split"])
    new.to_csv(folder / "tonight.csv", index=False)
    predicted = runner.invoke(app, ["predict", "out/model.sca", "--data", "tonight.csv",
                                    "--out", "scores.parquet"])
    assert predicted.exit_code == 0, predicted.output
    scores = pd.read_parquet(folder / "scores.parquet")
    assert list(scores.columns) == ["row", "region", "p_flare", "p_quiet", "predicted",
                                    "artifact_sha256"]
    assert scores.artifact_sha256.iloc[0] == runtime.load(folder / "out/model.sca").checksum
    # The artifact takes the raw features: it predicts what the user's own model predicts on
    # the features standardised by hand.
    expected = standardised_logits(model, table, new[FEATURES].to_numpy()).argmax(axis=1)
    assert (scores.predicted == np.array(["flare", "quiet"])[expected]).mean() >= 0.95


def test_the_python_api_takes_any_module_and_the_users_own_split(tmp_path):
    class TinyCNN(nn.Module):  # a user's class, defined where they work (not importable)
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(1, 4, 3, padding=1)
            self.head = nn.Linear(24, 2)

        def forward(self, x):
            return self.head(torch.relu(self.conv(x.unsqueeze(1))).flatten(1))

    table = raw_table()
    x = ((table[FEATURES] - table[FEATURES].mean()) / table[FEATURES].std()).to_numpy()
    y = (table.label == "quiet").to_numpy().astype(np.int64)
    parts = [(x[table.split == name], y[table.split == name]) for name in ("train", "val", "test")]
    model = TinyCNN().eval()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    result = satcompress.compress(model, tuple(parts), metric="accuracy", recipe="int8",
                                  out=tmp_path / "out", class_names=("flare", "quiet"))
    assert isinstance(result, RunResult) and result.artifact_path == tmp_path / "out/model.sca"
    assert result.report_path.is_file() and result.verification.differing_predictions == 0
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    flight = runtime.load(result.artifact_path)
    assert flight.metadata["metric"] == "accuracy" and flight.metadata["class_names"] == [
        "flare", "quiet"]
    assert flight.metadata["preprocessing"]["split"] == "given"
    # Re-running resumes from the checkpoints, rebuilt from the user's class held in memory.
    again = satcompress.compress(model, tuple(parts), metric="accuracy", recipe="int8",
                                 out=tmp_path / "out", class_names=("flare", "quiet"))
    assert again.verification.sha256 == result.verification.sha256


def test_a_torch_dataset_is_read_as_arrays(tmp_path):
    table = raw_table()
    x = torch.tensor(np.array((table[FEATURES] - table[FEATURES].mean()) / table[FEATURES].std()),
                     dtype=torch.float32)
    y = torch.tensor(np.array(table.label == "quiet", dtype=np.int64))
    datasets = [torch.utils.data.TensorDataset(x[np.array(table.split == name)],
                                               y[np.array(table.split == name)])
                for name in ("train", "val", "test")]
    trained = satcompress.prepare(nn.Sequential(nn.Linear(6, 2)), tuple(datasets))
    assert (len(trained.data.train), len(trained.data.val), len(trained.data.test)) == (240, 80, 80)
    assert trained.task.primary_metric == "accuracy"


def test_a_model_returning_the_wrong_shape_is_refused_up_front(tmp_path):
    from satcompress.pipeline.base_model import ModelFileError

    table = raw_table()
    with pytest.raises(ModelFileError, match="one logit per class"):
        satcompress.prepare(nn.Linear(6, 3), table, split_column="split", group_column="region")


def test_a_metric_of_the_users_own_is_scored_and_can_be_budgeted(tmp_path):
    def recall_of_flares(labels, probabilities):
        return float((probabilities.argmax(axis=1)[labels == 0] == 0).mean())

    table = raw_table()
    trained = satcompress.prepare(nn.Sequential(nn.Linear(6, 2)), table, split_column="split",
                                  group_column="region", metric=recall_of_flares,
                                  standardize=True)
    assert trained.task.primary_metric == "recall_of_flares"
    assert 0 <= trained.metrics["recall_of_flares"] <= 1
    from satcompress.pipeline.budget import Budget

    assert Budget.parse("max_metric_drop=recall_of_flares:0.05").max_metric_drop


def test_an_operator_the_flight_runtime_lacks_is_refused_before_compression(tmp_path):
    class Cumulative(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(6, 2)

        def forward(self, x):
            return self.head(torch.cumsum(x, dim=1))

    from satcompress.runtime import UnsupportedOperatorError

    with pytest.raises(UnsupportedOperatorError, match="CumSum"):
        satcompress.prepare(Cumulative(), raw_table(), split_column="split",
                            group_column="region", standardize=True)


def test_a_stage_that_cannot_run_on_the_model_refuses_the_recipe_before_any_training(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "r"\ndescription = "prune weights, then channels"\n'
                      '[[stage]]\nstage = "magnitude_prune"\nsparsity = 0.5\n'
                      '[[stage]]\nstage = "structured_prune"\nmac_reduction = 2.0\n')
    with pytest.raises(ValueError, match=r"stage 2 \(structured_prune: .*no channel group"):
        satcompress.compress(nn.Sequential(nn.Linear(6, 2)), raw_table(), recipe=recipe,
                             split_column="split", group_column="region", standardize=True,
                             out=tmp_path / "out")
    assert not (tmp_path / "out" / "checkpoints").exists() or not any(
        (tmp_path / "out" / "checkpoints").iterdir())


def test_your_model_gets_the_mild_general_recipe_by_default(users_project, tmp_path):
    _, model, table = users_project
    result = satcompress.compress(model, table, metric="tss", split_column="split",
                                  group_column="region", standardize=True, out=tmp_path / "out")
    assert result.recipe.name == "general" and result.warnings == ()
    assert result.flight.metrics["tss"] >= result.measurements[0].metrics["tss"] - 0.1


def test_a_stage_that_loses_the_models_skill_is_warned_about_not_passed_silently(
        users_project, tmp_path):
    _, model, table = users_project
    too_strong = Recipe("too-strong", (stages.load_builtin_stages()["magnitude_prune"](
        sparsity=0.99, finetune_epochs=0),))
    with pytest.warns(UserWarning, match="1:magnitude_prune lost most of the base model's skill"):
        result = satcompress.compress(model, table, metric="tss", split_column="split",
                                      group_column="region", standardize=True,
                                      recipe=too_strong, out=tmp_path / "out")
    assert len(result.warnings) == 1 and "general" in result.warnings[0]
    assert json.loads((tmp_path / "out/stages.json").read_text())["warnings"] == list(
        result.warnings)
    assert "lost most of the base model's skill" in (tmp_path / "out/report.md").read_text()
