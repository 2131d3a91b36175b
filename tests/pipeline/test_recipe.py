"""Recipes: one schema for TOML files and dataclasses, order checked, registry names only."""

from __future__ import annotations

import pytest
from conftest import make_blobs

from satcompress import stages
from satcompress.pipeline.recipe import DEFAULT_FEC, Recipe, named_recipes
from satcompress.tasks.registry import GENERAL_RECIPE, TASKS
from satcompress.tasks.user import user_task

REGISTERED = stages.load_builtin_stages()
prune_config = REGISTERED["magnitude_prune"]
cluster_config = REGISTERED["weight_cluster"]
quantize_config = REGISTERED["post_training_quantize"]


def test_a_recipe_round_trips_through_toml(tmp_path):
    recipe = Recipe("deep-compression", (prune_config(sparsity=0.8), cluster_config(n_clusters=16)),
                    description="prune then cluster")
    path = recipe.save(tmp_path / "recipe.toml")
    assert Recipe.load(path) == recipe
    assert 'stage = "magnitude_prune"' in path.read_text()


@pytest.mark.parametrize("fec", [True, False])
def test_the_fec_setting_round_trips_through_toml_and_dict(fec, tmp_path):
    recipe = Recipe("p", (prune_config(sparsity=0.5),), fec=fec)
    path = recipe.save(tmp_path / "recipe.toml")
    assert f"fec = {str(fec).lower()}" in path.read_text()
    assert Recipe.load(path) == recipe and Recipe.load(path).fec is fec
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_a_recipe_without_the_fec_setting_gets_the_flight_default():
    recipe = Recipe.from_toml('name = "x"\n[[stage]]\nstage = "magnitude_prune"\n')
    assert recipe.fec is DEFAULT_FEC is True


def test_fec_is_on_for_the_flight_recipes_and_off_for_the_ground_broker():
    assert {name: Recipe.load(name).fec for name in named_recipes()} == {
        "assembled": True, "assembled-t2": True, "broker-t2": False, "deep-compression": True,
        "general": True, "int8": True, "tinho": True}


def test_clustering_before_pruning_is_refused_with_a_way_out():
    with pytest.raises(ValueError, match="Prune must run before cluster.*Reorder"):
        Recipe("backwards", (cluster_config(), prune_config()))


def test_same_rank_families_may_come_in_either_order():
    Recipe("tinho-like", (prune_config(), cluster_config(), quantize_config()))


@pytest.mark.parametrize("toml, message", [
    ('name = "x"\n[[stage]]\nstage = "os.system"\n', "Unknown stage 'os.system'"),
    ('name = "x"\n[[stage]]\nstage = "magnitude_prune"\nsparsity = 1.5\n', "sparsity"),
    ('name = "x"\n', "has no stages"),
    ('name = "x"\nowner = "me"\n[[stage]]\nstage = "magnitude_prune"\n', "Unknown recipe key"),
    ('name = "x"\n[[stage]\n', "not valid TOML"),
    ('name = "x"\nfec = "yes"\n[[stage]]\nstage = "magnitude_prune"\n', "fec must be true or"),
])
def test_bad_recipe_files_get_clear_errors(toml, message):
    with pytest.raises(ValueError, match=message):
        Recipe.from_toml(toml)


@pytest.mark.parametrize("name", sorted(named_recipes()))
def test_shipped_recipes_load_and_validate(name):
    recipe = Recipe.load(name)
    assert recipe.name == name and recipe.description and recipe.stages


def test_the_tinho_recipe_is_the_published_one():
    stages_ = Recipe.load("tinho").stages
    assert [config.stage_name for config in stages_] == [
        "magnitude_prune", "weight_cluster", "post_training_quantize"]
    assert stages_[0].sparsity == 0.5 and stages_[1].n_clusters == 16
    assert stages_[2].weight_bits == 8 and not stages_[2].quantize_activations


def test_an_unknown_recipe_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="neither a shipped recipe.*assembled"):
        Recipe.load("no-such-recipe")


@pytest.mark.parametrize("name", sorted(named_recipes()))
def test_shipped_recipes_run_stage_by_stage_and_shrink_a_tiny_model(name):
    import torch
    from conftest import make_blobs, tiny_mlp

    from satcompress.measure import theoretical_bytes

    model, data = tiny_mlp(), make_blobs()
    result = model
    for config in Recipe.load(name).stages:
        result = stages.apply(result, config, data)
    assert theoretical_bytes(result) < theoretical_bytes(model)
    assert torch.isfinite(result(torch.from_numpy(data.test.x))).all()


def test_settings_left_at_a_none_default_round_trip_through_toml():
    config = REGISTERED["structured_prune"](mac_reduction=4.0)
    assert config.channel_ratio is None
    recipe = Recipe("structured", (config,))
    assert Recipe.from_toml(recipe.to_toml()) == recipe


def test_the_classic_recipes_are_shipped():
    assert {"assembled", "assembled-t2", "broker-t2", "deep-compression", "tinho", "int8"} <= set(
        named_recipes())


def test_each_reference_task_defaults_to_the_recipe_tuned_on_it_and_yours_to_general():
    assert {name: task.recipe for name, task in TASKS.items()} == {
        "flares": "assembled", "transients": "assembled-t2", "transients-lsst": "assembled-t2"}
    assert GENERAL_RECIPE == "general" in named_recipes()
    assert user_task(make_blobs()).recipe == GENERAL_RECIPE


def test_a_huge_or_binary_recipe_file_is_refused_before_it_is_parsed(tmp_path):
    huge = tmp_path / "huge.toml"
    huge.write_bytes(b"#" * ((1 << 20) + 1))
    with pytest.raises(ValueError, match="over 1048576 bytes: not a recipe"):
        Recipe.load(huge)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00 name")
    with pytest.raises(ValueError, match="not UTF-8 text"):
        Recipe.load(binary)
