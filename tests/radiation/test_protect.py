"""Protection chosen by a recipe, written at compress time, judged by the budget's
``max_sdc_probability``, measured by campaigns, and faults reported by ``predict``."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from satcompress.artifact import encode_artifact
from satcompress.pipeline.budget import SDC_METRIC, Budget
from satcompress.pipeline.recipe import Recipe
from satcompress.predict import FAULT_LABEL, predict_file
from satcompress.radiation import (
    Campaign,
    protect_artifact,
    protection_overhead,
    run_campaign,
    sdc_probability,
)
from satcompress.radiation import protect as radiation_protect
from satcompress.runtime import load
from satcompress.runtime.graph import GRAPH_FORMAT
from tiny_mlp_graph import MLP_GRAPH

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 40)).astype(np.float32)
TENSORS = {"w1": np.array([-0.3, -0.1, 0.1, 0.3], np.float32)[RNG.integers(0, 4, (40, 64))],
           "b1": RNG.normal(size=64).astype(np.float32),
           "w2": RNG.normal(size=(64, 3)).astype(np.float32)}


def mlp() -> bytes:
    """x (40) -> Gemm(w1, b1) -> Relu -> Gemm(w2) -> logits (3), with FEC."""
    return encode_artifact(MLP_GRAPH, TENSORS, {"task": "tiny", "class_names": ["a", "b", "c"]},
                           fec=True)


def test_a_recipe_names_its_protections_and_keeps_them_through_toml():
    recipe = dataclasses.replace(Recipe.load("int8"), protect=["ranges", "tables", "scrub"])
    assert recipe.protect == ("ranges", "tables", "scrub")
    assert 'protect = ["ranges", "tables", "scrub"]' in recipe.to_toml()
    assert Recipe.from_toml(recipe.to_toml()) == recipe
    assert Recipe.load("int8").protect == () and "protect" not in Recipe.load("int8").to_toml()


@pytest.mark.parametrize("protect, problem", [
    (["ranges", "shielding"], "unknown \\['shielding'\\]"),
    (["tables", "tables"], "repeated \\['tables'\\]"),
    ("ranges", "must be a list of names"),
])
def test_a_recipe_with_an_unknown_or_repeated_protection_is_refused(protect, problem):
    with pytest.raises(ValueError, match=problem):
        dataclasses.replace(Recipe.load("int8"), protect=protect)


def test_the_budget_reads_max_sdc_probability_and_judges_it_where_measured():
    budget = Budget.parse("max_bytes=40kB,max_sdc_probability=0.001")
    assert budget.max_sdc_probability == 0.001 and Budget(**budget.to_dict()) == budget

    class Measured:
        theoretical_bytes, peak_ram_bytes, latency_ms_p50 = 30_000, 0, 0.0

        def __init__(self, metrics):
            self.metrics = metrics

    (limit,) = [v for v in budget.usage(Measured({SDC_METRIC: 0.004}), Measured({}))
                if v.limit == "max_sdc_probability"]
    assert limit.broken and str(limit) == "max_sdc_probability: 0.004 > allowed 0.001"
    assert [v.limit for v in budget.usage(Measured({}), Measured({}))] == ["max_bytes"]


@pytest.mark.parametrize("text, problem", [
    ("max_sdc_probability=1.5", "between 0 and 1"),
    ("max_sdc_probability=often", "Cannot read a probability"),
    ("max_sdc_probability=0.1,max_sdc_probability=0.2", "given twice"),
])
def test_a_bad_sdc_limit_is_refused_naming_it(text, problem):
    with pytest.raises(ValueError, match=problem):
        Budget.parse(text)


def test_protect_artifact_refuses_an_unknown_protection(tmp_path):
    path = tmp_path / "model.sca"
    path.write_bytes(mlp())
    with pytest.raises(ValueError, match="unknown \\['armour'\\]"):
        protect_artifact(path, ["armour"], X)


def test_protect_artifact_with_no_protection_removes_the_record(tmp_path):
    path = tmp_path / "model.sca"
    path.write_bytes(mlp())
    protect_artifact(path, ["ranges", "tables"], X)
    protect_artifact(path, [], X)
    assert path.read_bytes() == mlp()


def accuracy_drop(labels):
    def score(probabilities):
        return float(np.mean(probabilities.argmax(1) != labels))
    return score


def test_stored_protection_lowers_what_top_exponent_flips_do_and_compact_weights_end_it(
        tmp_path):
    """Clipped ranges and voted tables leave a flip in the large float weight able to
    saturate a hidden unit; held as codebook indices, that weight has no exponent to hit."""
    score = accuracy_drop(load(mlp()).run(X).argmax(1))
    campaign = Campaign(flips=(1,), bits="exponent_top", trials=200)
    rows = {"bare": run_campaign(mlp(), X, score, campaign).summary_rows()[0]}
    for protect in (("ranges", "tables"), ("ranges", "tables", "compact")):
        path = tmp_path / f"{len(protect)}.sca"
        path.write_bytes(mlp())
        protect_artifact(path, protect, X)
        rows[protect] = run_campaign(path.read_bytes(), X, score, campaign).summary_rows()[0]
    p = {name: row["p_drop_over_threshold"] for name, row in rows.items()}
    assert p["bare"] > 0.9 and rows["bare"]["non_finite_rate"] > 0.1
    assert p[("ranges", "tables")] < 0.6 and rows[("ranges", "tables")]["non_finite_rate"] == 0
    assert p[("ranges", "tables", "compact")] == 0


def test_compact_vulnerable_holds_as_indices_only_the_weights_the_probe_finds_vulnerable(
        tmp_path, monkeypatch):
    """Selective hardening: the one clustered weight over the table size, where a top-exponent
    flip gets past ranges and tables (above), is probed vulnerable and held as indices, which
    ends those faults as ``compact`` does; a probe no flip can fail leaves every weight float."""
    path = tmp_path / "model.sca"
    path.write_bytes(mlp())
    protect = ("ranges", "tables", "scrub", "compact-vulnerable")
    artifact = protect_artifact(path, protect, X)
    assert artifact.metadata["protection"]["compact"] == ["w1"]
    runtime = load(path)
    assert runtime.protection.names == protect[:2] + ("compact-vulnerable", "scrub")
    assert runtime.resident_memory["w1:indices"].dtype == np.uint8
    np.testing.assert_array_equal(runtime.run(X), load(mlp()).run(X))
    score = accuracy_drop(load(mlp()).run(X).argmax(1))
    campaign = Campaign(flips=(1,), bits="exponent_top", trials=200)
    assert run_campaign(path.read_bytes(), X, score, campaign).summary_rows()[0][
        "p_drop_over_threshold"] == 0
    assert protect_artifact(path, protect, X).sha256 == artifact.sha256  # the probe is seeded
    monkeypatch.setattr(radiation_protect, "PROBE_NATS", math.inf)
    untouched = protect_artifact(path, protect, X)
    assert untouched.metadata["protection"]["compact"] == []
    assert "w1" in load(path).resident_memory and load(path).protection.names == (
        "ranges", "tables", "scrub")
    with pytest.raises(ValueError, match="choose one"):
        protect_artifact(path, ("compact", "compact-vulnerable"), X)


def test_protection_overhead_is_a_positive_ratio(tmp_path):
    path = tmp_path / "model.sca"
    path.write_bytes(mlp())
    protect_artifact(path, ["ranges", "tables"], X)
    ratio = protection_overhead(path.read_bytes(), X[:1], repeats=4, block=20)
    assert 0.2 < ratio < 5


class Task:
    """Just enough of a Task for sdc_probability: accuracy on the test split."""

    primary_metric, higher_is_better = "accuracy", True

    def score(self, val_probabilities, val_y, test_probabilities, test_y):
        return {"accuracy": float(np.mean(test_probabilities.argmax(1) == test_y))}


class Data:
    def __init__(self, labels):
        split = type("Split", (), {"x": X, "y": labels})
        self.val = self.test = split


def test_sdc_probability_is_seeded_and_lower_with_protection(tmp_path):
    data = Data(load(mlp()).run(X).argmax(1))
    bare = sdc_probability(mlp(), Task(), data, trials=300)
    assert bare == sdc_probability(mlp(), Task(), data, trials=300)
    path = tmp_path / "model.sca"
    path.write_bytes(mlp())
    protect_artifact(path, ["ranges", "tables"], X)
    assert 0 < bare and sdc_probability(path.read_bytes(), Task(), data, trials=300) < bare


def run_blobs(tmp_path, monkeypatch, recipe, budget):
    from conftest import make_blobs, register_blob_task, tiny_mlp

    from satcompress.pipeline.base_model import TrainedModel
    from satcompress.pipeline.runner import run_recipe

    blobs = register_blob_task(monkeypatch)
    trained = TrainedModel(blobs, tiny_mlp(), make_blobs(), {})
    return run_recipe(trained, recipe, budget, tmp_path / "run", latency_repeats=3)


def test_compress_writes_the_recipes_protection_and_judges_the_sdc_probability(
        tmp_path, monkeypatch):
    from satcompress import stages

    recipe = Recipe("ptq", (stages.config_type("post_training_quantize")(
        quantize_activations=False),), protect=("ranges", "tables", "scrub"))
    result = run_blobs(tmp_path, monkeypatch, recipe, Budget(max_sdc_probability=0.5))
    flight = load(tmp_path / "run" / "model.sca")
    assert flight.protection.names == ("ranges", "tables", "scrub")
    assert set(flight.protection.ranges) == set(flight.layer_outputs)
    assert 0 <= result.flight.metrics[SDC_METRIC] <= 0.5 and not result.flight_violations
    record = json.loads((tmp_path / "run" / "stages.json").read_text())
    assert record["recipe"]["protect"] == ["ranges", "tables", "scrub"]
    assert record["artifact"]["measurement"]["theoretical_bytes"] == flight.size_bytes


def test_an_artifact_over_its_sdc_limit_is_rejected(tmp_path, monkeypatch):
    from satcompress import stages
    from satcompress.pipeline.result import BudgetNotMet

    recipe = Recipe("ptq", (stages.config_type("post_training_quantize")(
        quantize_activations=False),))
    with pytest.raises(BudgetNotMet, match="max_sdc_probability: 0.0[0-9]+ > allowed 0"):
        run_blobs(tmp_path, monkeypatch, recipe, Budget(max_sdc_probability=0))
    assert (tmp_path / "run" / "rejected" / "model.sca").is_file()


def test_predict_writes_fault_for_a_row_whose_logits_are_not_finite(tmp_path):
    """logits = x @ [[10, 0], [0, 1]]: 3e38 in the first feature overflows to infinity."""
    graph = {"format": GRAPH_FORMAT,
             "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 2]}],
             "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 2]}],
             "nodes": [{"op": "Gemm", "in": ["x", "w"], "out": ["logits"]}]}
    metadata = {"task": "user-tiny", "class_names": ["quiet", "flare"],
                "preprocessing": {"format": "arrays"}}
    artifact = tmp_path / "model.sca"
    artifact.write_bytes(encode_artifact(graph, {"w": np.diag([10.0, 1.0]).astype(np.float32)},
                                         metadata))
    np.savez(tmp_path / "new.npz", x=np.array([[1, 0], [3e38, 0], [0, 1]], np.float32))
    table = predict_file(artifact, tmp_path / "new.npz", tmp_path / "out.parquet")
    assert table["predicted"].tolist() == ["quiet", FAULT_LABEL, "flare"]
    assert table.attrs["faults"] == 1 and np.isnan(table.loc[1, ["p_quiet", "p_flare"]]).all()
    assert pd.read_parquet(tmp_path / "out.parquet")["predicted"].tolist()[1] == "fault"
