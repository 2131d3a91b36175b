"""The search space is derived from the model, and a trial's decisions are a runnable recipe."""

from __future__ import annotations

import pytest
import torch

from conftest import make_blobs, make_sequences, tiny_mlp, tiny_t2
from satcompress.pipeline.budget import Budget
from satcompress.pipeline.recipe import Recipe
from satcompress.pipeline.runner import run_recipe
from satcompress.search import SearchSettings, derive_space, parse_codec
from satcompress.tasks.registry import get_task
from blob_task import trained_blobs


def _kinds(space):
    return [(d.kind, d.target, d.block) for d in space.decisions]


def test_mlp_space_has_a_student_then_a_prune_rank_and_codec_decision_per_group_and_layer():
    space = derive_space(tiny_mlp(), make_blobs())
    assert space.output_layer == "head"
    assert _kinds(space) == [
        ("student", "model", "student"),
        ("prune", "stem", "stem"), ("prune", "blocks.0.fc1", "blocks.0"),
        ("prune", "blocks.1.fc1", "blocks.1+head"),
        ("rank", "stem", "stem"), ("rank", "blocks.0.fc1", "blocks.0"),
        ("rank", "blocks.0.fc2", "blocks.0"), ("rank", "blocks.1.fc1", "blocks.1+head"),
        ("rank", "blocks.1.fc2", "blocks.1+head"), ("rank", "head", "blocks.1+head"),
        ("sparsity", "model", "sparsity"),
        *[("codec", layer, block) for layer, block in (
            ("stem", "stem"), ("blocks.0.fc1", "blocks.0"), ("blocks.0.fc2", "blocks.0"),
            ("blocks.1.fc1", "blocks.1+head"), ("blocks.1.fc2", "blocks.1+head"),
            ("head", "blocks.1+head"))]]
    # the head joins block 1; the model-wide sparsity is a block of its own
    assert space.blocks == ("student", "stem", "blocks.0", "blocks.1+head", "sparsity")
    assert all(d.choices[0] in (0.0, 1.0, "float") for d in space.decisions)


def test_t2_space_prunes_heads_and_feed_forward_width_and_merges_small_blocks():
    space = derive_space(tiny_t2(), make_sequences())
    prune = {d.target: d.choices for d in space.decisions if d.kind == "prune"}
    assert prune == {"blocks.0.attention": (0.0, 0.5), "blocks.0.ff1": (0.0, 0.25, 0.5, 0.75, 0.9)}
    codecs = [d.target for d in space.decisions if d.kind == "codec"]
    assert codecs[0] == "embedding" and codecs[-1] == "head" and len(codecs) == 8
    assert space.blocks == ("student", "embedding+blocks.0+head", "sparsity")


def test_choices_that_save_nothing_are_not_offered():
    settings = SearchSettings(rank_fractions=(1.0, 0.9), prune_ratios=(0.0, 0.01))
    space = derive_space(tiny_mlp(), make_blobs(), settings)
    # no rank saves weights, no ratio removes a unit
    assert {d.kind for d in space.decisions} == {"student", "sparsity", "codec"}
    unpruned = derive_space(tiny_mlp(), make_blobs(), SearchSettings(sparsities=(0.0,)))
    assert "sparsity" not in {d.kind for d in unpruned.decisions}


def test_a_student_is_offered_wherever_distillation_can_shrink_the_model():
    data = make_blobs()
    plain = torch.nn.Sequential(torch.nn.Linear(data.train.x.shape[1], 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, data.n_classes))  # a user's own model
    assert "student" in {d.kind for d in derive_space(plain, data).decisions}
    one_layer = torch.nn.Sequential(torch.nn.Linear(data.train.x.shape[1], data.n_classes))
    assert "student" not in {d.kind for d in derive_space(one_layer, data).decisions}
    no_students = derive_space(tiny_mlp(), make_blobs(), SearchSettings(student_fractions=(1.0,)))
    assert "student" not in no_students.blocks
    # fractions that land on the same width are one choice
    space = derive_space(tiny_mlp(), make_blobs(),
                         SearchSettings(student_fractions=(1.0, 0.25, 0.24, 0.05)))
    assert space.by_name()["student:model"].choices == (1.0, 0.25, 0.05)


def test_a_student_trial_distils_once_and_its_recipe_starts_with_the_distillation(tmp_path):
    trained = trained_blobs()
    settings = SearchSettings(distill_stage="hinton_kd", distill_epochs=3)
    space = derive_space(trained.model, trained.data, settings)
    students = {}
    assignment = {"student:model": 0.25, "codec:blocks.0.fc1": "k4"}
    recipe, model = space.compress(assignment, trained.model, trained.data, fine_tune=False,
                                   students=students)
    assert [c.stage_name for c in recipe.stages] == ["hinton_kd", "weight_cluster"]
    assert recipe.stages[0].target_parameter_fraction == 0.25 and recipe.stages[0].epochs == 3
    (student,) = students.values()
    assert sum(p.numel() for p in student.parameters()) < 0.5 * sum(
        p.numel() for p in trained.model.parameters())
    kept = {name: value.clone() for name, value in student.state_dict().items()}
    again, _ = space.compress({**assignment, "codec:head": "int4"}, trained.model, trained.data,
                              fine_tune=True, students=students)
    assert len(students) == 1 and again.stages[0] == recipe.stages[0]  # distilled once
    assert all(torch.equal(kept[name], value) for name, value in student.state_dict().items())
    result = run_recipe(trained, recipe, Budget(), tmp_path / "run", latency_repeats=2)
    x = torch.from_numpy(trained.data.test.x)
    with torch.no_grad():  # the recipe alone reproduces the trial's model
        assert torch.equal(result.model(x), model(x))


def test_a_trials_recipe_reproduces_its_model_through_the_pipeline(tmp_path):
    trained = trained_blobs()
    space = derive_space(trained.model, trained.data)
    assignment = {"prune:blocks.0.fc1": 0.5, "rank:blocks.1.fc2": 0.25, "codec:blocks.0.fc2": "int4",
                  "codec:head": "k4", "codec:stem": "int8"}
    recipe, model = space.compress(assignment, trained.model, trained.data, fine_tune=True)
    assert [c.stage_name for c in recipe.stages] == [
        "structured_prune", "low_rank", "weight_cluster", "post_training_quantize"]
    recipe.save(tmp_path / "recipe.toml")
    loaded = Recipe.load(tmp_path / "recipe.toml")
    assert loaded == recipe
    result = run_recipe(trained, loaded, Budget(), tmp_path / "run", latency_repeats=2)
    x = torch.from_numpy(trained.data.test.x)
    with torch.no_grad():
        assert torch.equal(result.model(x), model(x))


def test_sparsity_prunes_by_magnitude_before_the_codec_and_no_training_regrows_the_zeros():
    trained = trained_blobs()
    space = derive_space(trained.model, trained.data)
    recipe, model = space.compress({"sparsity:model": 0.75, "codec:stem": "int8",
                                    "codec:head": "k4"}, trained.model, trained.data,
                                   fine_tune=True)
    assert [c.stage_name for c in recipe.stages] == [
        "magnitude_prune", "weight_cluster", "post_training_quantize"]  # not QAT
    assert recipe.stages[0].sparsity == 0.75 and recipe.stages[0].pruning_steps == 3
    weights = [module.weight for module in model.modules() if isinstance(module, torch.nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros >= 0.75 * sum(w.numel() for w in weights) - 1
    proxy, _ = space.compress({"sparsity:model": 0.75}, trained.model, trained.data,
                              fine_tune=False)
    assert proxy.stages[0].pruning_steps == 1 and proxy.stages[0].finetune_epochs == 0


def test_integer_codecs_train_with_qat_in_a_full_evaluation_and_nothing_is_a_no_op_recipe():
    trained = trained_blobs()
    space = derive_space(trained.model, trained.data)
    recipe, _ = space.compress(space.uniform(codec="int4"), trained.model, trained.data,
                               fine_tune=True)
    assert [c.stage_name for c in recipe.stages] == ["quantization_aware_train"]
    proxy, _ = space.compress(space.uniform(codec="int4"), trained.model, trained.data,
                              fine_tune=False)
    assert [c.stage_name for c in proxy.stages] == ["post_training_quantize"]
    nothing, model = space.compress({}, trained.model, trained.data, fine_tune=True)
    assert nothing.stages[0].exclude == ("stem", "blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1",
                                         "blocks.1.fc2", "head")
    x = torch.from_numpy(trained.data.test.x)
    with torch.no_grad():
        assert torch.equal(model(x), trained.model(x))


def test_bad_settings_and_assignments_are_refused_with_the_fix():
    space = derive_space(tiny_mlp(), make_blobs())
    with pytest.raises(ValueError, match="Unknown decision"):
        space.check({"prune:nowhere": 0.5})
    with pytest.raises(ValueError, match="choices are"):
        space.check({"codec:head": "int1"})
    assert parse_codec("k16") == ("cluster", 16) and parse_codec("int3") == ("int", 3)
    with pytest.raises(ValueError, match="Unknown weight codec"):
        parse_codec("fp16")
    with pytest.raises(ValueError, match="starting with 0.0"):
        SearchSettings(prune_ratios=(0.5,))
    with pytest.raises(ValueError, match="integer weights take 2 to 8"):
        SearchSettings(codecs=("float", "int9"))
    with pytest.raises(ValueError, match="student_fractions must be a non-empty tuple starting with 1.0"):
        SearchSettings(student_fractions=(0.25,))
    with pytest.raises(ValueError, match="distill_stage must be one of"):
        SearchSettings(distill_stage="fitnets")


def test_a_task_sets_how_its_searches_distil_students_and_overrides_win():
    t2 = SearchSettings.for_task(get_task("transients"), seed=3)
    assert (t2.distill_stage, t2.distill_epochs, t2.student_fractions, t2.seed) == (
        "hinton_kd", 40, (1.0, 0.2, 0.1), 3)  # as assembled-t2 distils
    assert SearchSettings.for_task(get_task("flares")) == SearchSettings()


def test_the_search_starts_from_the_shape_of_the_tasks_hand_recipe():
    space = derive_space(tiny_mlp(), make_blobs())
    anchor = space.anchors(30)[2]  # after int8 and the smallest student with k16
    assert anchor["student:model"] == 0.1 and anchor["sparsity:model"] == 0.85
    assert anchor["prune:stem"] == 0.5 and anchor["codec:head"] == "k16"
    t2 = SearchSettings.for_task(get_task("transients"))
    assert dict(t2.recipe_anchor) == {"student": 0.2, "sparsity": 0.4, "codec": "k16"}
    assert 0.4 in t2.sparsities  # the anchor's sparsity is one the space offers
    with pytest.raises(ValueError, match="recipe_anchor sets \\['depth'\\]"):
        SearchSettings(recipe_anchor=(("depth", 0.5),))
