"""Stage low_rank: factored models fine-tune, export to ONNX and match; settings validated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import make_blobs, make_sequences, tiny_mlp, tiny_t2
from satcompress import stages
from satcompress.lowrank import LowRankConfig, lowrank_report
from satcompress.onnx_export import export_onnx, run_onnx


@pytest.mark.parametrize("build,data", [(tiny_mlp, make_blobs), (tiny_t2, make_sequences)])
def test_factored_model_exports_to_onnx_and_matches(build, data):
    model, task_data = build(), data()
    result = stages.apply(model, LowRankConfig(rank_by="rank", rank=3, finetune_epochs=0),
                          task_data)
    layers = lowrank_report(result)["layers"]
    assert layers and all(entry["parameters_after"] < entry["parameters_before"]
                          for entry in layers.values())
    for name in layers:
        chain = result.get_submodule(name)
        assert isinstance(chain, nn.Sequential) and all(
            type(m) in (nn.Linear, nn.Conv1d) for m in chain
        )
    x = torch.from_numpy(task_data.test.x[:6])
    with torch.no_grad():
        expected = result.eval()(x).numpy()
    assert np.allclose(run_onnx(export_onnx(result, x[:1]), x.numpy()), expected, atol=1e-4)


def test_full_rank_factorization_changes_no_output():
    model, data = tiny_t2(), make_sequences()
    result = stages.apply(model, LowRankConfig(rank_by="energy", energy=1.0, finetune_epochs=0),
                          data)
    x = torch.from_numpy(data.test.x[:4])
    with torch.no_grad():
        assert torch.allclose(result(x), model(x), atol=1e-5)


def test_fine_tuning_trains_the_factors():
    model, data = tiny_mlp(), make_blobs()
    untuned = stages.apply(model, LowRankConfig(rank_by="rank", rank=3, finetune_epochs=0), data)
    tuned = stages.apply(model, LowRankConfig(rank_by="rank", rank=3, finetune_epochs=2), data)
    assert lowrank_report(tuned) == lowrank_report(untuned)
    assert not torch.equal(tuned.blocks[0].fc1[0].weight, untuned.blocks[0].fc1[0].weight)


def test_mac_budget_without_data_is_refused():
    with pytest.raises(ValueError, match="data"):
        stages.apply(tiny_mlp(), LowRankConfig(rank_by="macs", finetune_epochs=0), None)


@pytest.mark.parametrize("kwargs", [{"rank_by": "size"}, {"energy": 0.0}, {"energy": 1.5},
                                    {"budget_ratio": -1.0}, {"rank": 0},
                                    {"conv_method": "svd"}, {"decomposition_iterations": 0},
                                    {"skip_layers": ["head"]}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        LowRankConfig(**kwargs)


def test_layer_ranks_factor_exactly_the_named_layers():
    model, data = tiny_mlp(), make_blobs()
    config = LowRankConfig(rank_by="layer_ranks", layer_ranks=(("blocks.0.fc1", 2), ("stem", 99)),
                           finetune_epochs=0)
    layers = lowrank_report(stages.apply(model, config, data))["layers"]
    assert {name: entry["ranks"] for name, entry in layers.items()} == {
        "blocks.0.fc1": [2], "stem": [6]}  # capped at the layer's largest rank
    assert stages.config_from_dict(stages.config_to_dict(config)) == config
    with pytest.raises(ValueError, match="exactly when rank_by='layer_ranks'"):
        LowRankConfig(layer_ranks=(("stem", 2),))
    with pytest.raises(ValueError, match="not factorizable"):
        stages.apply(model, LowRankConfig(rank_by="layer_ranks", layer_ranks=(("norm", 2),),
                                          finetune_epochs=0), data)
