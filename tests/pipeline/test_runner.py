"""The recipe runner: measures every stage, resumes from verified checkpoints, enforces budgets."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from conftest import make_blobs, tiny_mlp

from satcompress import stages
from satcompress.pipeline.base_model import TrainedModel
from satcompress.pipeline.budget import Budget
from satcompress.pipeline.recipe import Recipe
from satcompress.pipeline.runner import BudgetNotMet, run_recipe, skill_warnings
from satcompress.tasks.registry import Task
from satcompress.tasks.user import user_task

REGISTERED = stages.load_builtin_stages()


class BlobTask(Task):
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


# --- hostile run folders and committed outputs --------------------------------------------------


class _Payload:
    """Unpickling this runs ``open(path, "w")``: what a forged checkpoint would do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _forge(checkpoint, marker):
    """Replace ``checkpoint`` by a code-running pickle and make run.json vouch for it."""
    import hashlib
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({"format": "satcompress-checkpoint/1", "payload": _Payload(marker)}, buffer)
    checkpoint.write_bytes(buffer.getvalue())
    run_json = checkpoint.parent.parent / "run.json"
    run = json.loads(run_json.read_text())
    for entry in run["checkpoints"].values():
        if checkpoint.name in entry["file"]:
            entry["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    run_json.write_text(json.dumps(run))


def test_a_forged_checkpoint_that_run_json_vouches_for_never_runs(trained, tmp_path, monkeypatch):
    from satcompress.pipeline.runner import load_checkpoint

    run_recipe(trained, RECIPE, Budget(), tmp_path, latency_repeats=3)
    checkpoint = next((tmp_path / "checkpoints").glob("stage2-*.pt"))
    marker = tmp_path / "code-ran"
    _forge(checkpoint, marker)
    with pytest.raises(ValueError, match="not a satcompress stage checkpoint"):
        load_checkpoint(checkpoint)
    calls = []
    original = stages.apply
    monkeypatch.setattr(stages, "apply", lambda *a: calls.append(1) or original(*a))
    run_recipe(trained, RECIPE, Budget(), tmp_path, latency_repeats=3)  # resumes
    assert calls == [1]  # the forged stage is recomputed, not loaded
    assert not marker.exists()


def test_a_checkpoint_naming_a_class_outside_torch_nn_and_satcompress_is_refused():
    import io

    import torch

    from satcompress.pipeline.checkpoint import (
        CheckpointError,
        checkpoint_bytes,
        model_from_checkpoint,
    )

    stored = torch.load(io.BytesIO(checkpoint_bytes(tiny_mlp())), weights_only=True)
    stored["structure"]["class"] = "os:system"
    buffer = io.BytesIO()
    torch.save(stored, buffer)
    with pytest.raises(CheckpointError, match="not a torch.nn or satcompress layer"):
        model_from_checkpoint(buffer.getvalue())


def test_a_run_json_pointing_outside_its_folder_is_refused(trained, tmp_path):
    run_recipe(trained, RECIPE, Budget(), tmp_path, latency_repeats=3)
    run = json.loads((tmp_path / "run.json").read_text())
    next(iter(run["checkpoints"].values()))["file"] = "../../etc/passwd"
    (tmp_path / "run.json").write_text(json.dumps(run))
    with pytest.raises(ValueError, match="not a run index written by this version"):
        run_recipe(trained, RECIPE, Budget(), tmp_path, latency_repeats=3)


def test_run_json_is_written_last_and_lists_every_output_with_its_checksum(trained, tmp_path):
    from satcompress.fileio import file_sha256

    run_recipe(trained, RECIPE, Budget(), tmp_path, latency_repeats=3)
    outputs = json.loads((tmp_path / "run.json").read_text())["outputs"]
    assert {"model.sca", "stages.json", "summary.md", "recipe.toml", "report.html"} <= set(outputs)
    assert all(file_sha256(tmp_path / name) == digest for name, digest in outputs.items())
    assert not (tmp_path / ".staging").exists()


def test_an_interrupted_run_leaves_no_artifact_and_no_commit_record(trained, tmp_path, monkeypatch):
    from satcompress.pipeline import runner

    run_recipe(trained, RECIPE, Budget(), tmp_path, latency_repeats=3)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "write_report", killed)  # after stages.json, before the commit
    with pytest.raises(KeyboardInterrupt):
        run_recipe(trained, RECIPE, Budget(), tmp_path, latency_repeats=3)
    assert not (tmp_path / "model.sca").exists()
    assert "outputs" not in json.loads((tmp_path / "run.json").read_text())


def test_an_artifact_over_budget_is_written_as_rejected_never_as_model_sca(trained, tmp_path):
    run_recipe(trained, RECIPE, Budget(), tmp_path, latency_repeats=3)
    assert (tmp_path / "model.sca").is_file()
    with pytest.raises(BudgetNotMet, match="kept as .*rejected/model.sca"):
        run_recipe(trained, RECIPE, Budget(max_bytes=10), tmp_path, latency_repeats=3)
    assert not (tmp_path / "model.sca").exists()  # the earlier run's artifact is not left
    assert (tmp_path / "rejected" / "model.sca").is_file()
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["artifact"]["file"] == "rejected/model.sca" and not run["artifact"]["fits_budget"]


def _stage(name, value, metric="accuracy"):
    return SimpleNamespace(stage=name, metrics={metric: value})


def _on_blobs(metric):
    data = make_blobs()  # three balanced classes
    return TrainedModel(task=user_task(data, metric), model=tiny_mlp(), data=data, metrics={})


def test_a_model_that_learnt_nothing_scores_the_training_classes_frequencies():
    data = make_blobs()
    assert user_task(data, "accuracy").chance(data)["accuracy"] == pytest.approx(1 / 3)
    assert user_task(data, "weighted_log_loss").chance(data)["weighted_log_loss"] == pytest.approx(
        math.log(3), rel=1e-5)


def test_the_first_stage_that_falls_towards_chance_is_warned_about_with_the_fix():
    trained = _on_blobs("accuracy")
    warned = skill_warnings(trained, RECIPE, [_stage("base", 0.95), _stage("1:a", 0.90),
                                              _stage("2:b", 0.60), _stage("3:c", 0.34)])
    # skill over chance (1/3): base 0.617; stage 2 keeps 0.267 of it, under half
    assert len(warned) == 1 and warned[0].startswith("Stage 2:b lost most")
    assert "0.3333" in warned[0] and "general" in warned[0] and "max_metric_drop" in warned[0]


def test_a_mild_loss_or_a_base_no_better_than_chance_is_not_warned_about():
    trained = _on_blobs("accuracy")
    assert skill_warnings(trained, RECIPE, [_stage("base", 0.95), _stage("1:a", 0.70)]) == ()
    assert skill_warnings(trained, RECIPE, [_stage("base", 0.30), _stage("1:a", 0.10)]) == ()


def test_a_lower_is_better_metric_loses_skill_when_it_rises_towards_chance():
    trained = _on_blobs("weighted_log_loss")  # chance: ln 3 = 1.099

    def warned(value):
        return skill_warnings(trained, RECIPE, [_stage("base", 0.2, "weighted_log_loss"),
                                                _stage("1:a", value, "weighted_log_loss")])
    assert warned(0.9) and not warned(0.5)
