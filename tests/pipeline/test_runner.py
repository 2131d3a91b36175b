"""The recipe runner: measures every stage, resumes from verified checkpoints, enforces budgets."""

from __future__ import annotations

import json

import pytest
from conftest import make_blobs, tiny_mlp

from satcompress import stages
from satcompress.pipeline.base_model import TrainedModel
from satcompress.pipeline.budget import Budget
from satcompress.pipeline.recipe import Recipe
from satcompress.pipeline.runner import BudgetNotMet, run_recipe
from satcompress.tasks.registry import ReferenceTask

REGISTERED = stages.load_builtin_stages()


class BlobTask(ReferenceTask):
    """The tiny blobs problem dressed as a task: accuracy as its metric."""

    def evaluate(self, model, data):
        from satcompress.training import predict_proba

        return {"accuracy": float((predict_proba(model, data.test.x).argmax(1) == data.test.y).mean())}


@pytest.fixture
def trained():
    task = BlobTask("blobs", "tiny", "satcompress.tasks.flares", "unused:unused", {})
    return TrainedModel(task=task, model=tiny_mlp(), data=make_blobs(), metrics={})


RECIPE = Recipe("two-step", (REGISTERED["magnitude_prune"](sparsity=0.5, finetune_epochs=0),
                             REGISTERED["post_training_quantize"](quantize_activations=False)))


def test_every_stage_is_measured_and_written(trained, tmp_path):
    result = run_recipe(trained, RECIPE, Budget(), tmp_path, latency_repeats=3)
    assert [m.stage for m in result.measurements] == ["base", "1:magnitude_prune", "2:post_training_quantize"]
    assert result.final.theoretical_bytes < result.measurements[0].theoretical_bytes
    report = json.loads((tmp_path / "stages.json").read_text())
    assert report["fits_budget"] and len(report["stages"]) == 3
    assert Recipe.load(tmp_path / "recipe.toml") == RECIPE


def test_a_rerun_resumes_from_checkpoints_and_a_tampered_one_is_recomputed(trained, tmp_path, monkeypatch):
    run_recipe(trained, RECIPE, Budget(), tmp_path, latency_repeats=3)
    calls = []
    original = stages.apply
    monkeypatch.setattr(stages, "apply", lambda *a: calls.append(1) or original(*a))
    run_recipe(trained, RECIPE, Budget(), tmp_path, latency_repeats=3)
    assert calls == []  # both stages resumed
    checkpoint = next((tmp_path / "checkpoints").glob("stage2-*.pt"))
    checkpoint.write_bytes(checkpoint.read_bytes() + b"tampered")
    run_recipe(trained, RECIPE, Budget(), tmp_path, latency_repeats=3)
    assert calls == [1]  # only the stage whose file no longer matches its recorded hash


def test_a_budget_the_result_breaks_fails_naming_the_closest_stage(trained, tmp_path):
    with pytest.raises(BudgetNotMet, match=r"Closest candidate: stage 2:post_training_quantize \(max_bytes"):
        run_recipe(trained, RECIPE, Budget(max_bytes=10), tmp_path, latency_repeats=3)
    assert not json.loads((tmp_path / "stages.json").read_text())["fits_budget"]


def test_resuming_after_an_interrupted_stage_equals_an_uninterrupted_run(trained, tmp_path, monkeypatch):
    import torch

    uninterrupted = run_recipe(trained, RECIPE, Budget(), tmp_path / "straight", latency_repeats=3)

    original = stages.apply

    def interrupted(model, config, data):
        if config.stage_name == "post_training_quantize":
            raise KeyboardInterrupt
        return original(model, config, data)

    monkeypatch.setattr(stages, "apply", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(trained, RECIPE, Budget(), tmp_path / "resumed", latency_repeats=3)
    assert not list((tmp_path / "resumed" / "checkpoints").glob(".*"))  # no half-written files
    monkeypatch.setattr(stages, "apply", original)
    resumed = run_recipe(trained, RECIPE, Budget(), tmp_path / "resumed", latency_repeats=3)

    for (key, expected), (_, actual) in zip(uninterrupted.model.state_dict().items(),
                                            resumed.model.state_dict().items()):
        assert torch.equal(expected, actual), key
    assert resumed.final.metrics == uninterrupted.final.metrics
