"""The stage registry: one verb for every family, configs that validate and round-trip."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from satcompress import stages


@dataclasses.dataclass(frozen=True)
class ScaleConfig(stages.StageConfig):
    factor: float = 0.5
    layers: tuple[str, ...] = ("0",)

    def __post_init__(self) -> None:
        if self.factor <= 0:
            raise ValueError(f"factor must be > 0, got {self.factor}.")


@stages.register_stage("test_scale")
def scale(model: nn.Module, config: ScaleConfig, data) -> nn.Module:
    with torch.no_grad():
        for name in config.layers:
            model.get_submodule(name).weight.mul_(config.factor)
    return model


def test_apply_returns_a_new_model_and_never_touches_the_input():
    model = nn.Sequential(nn.Linear(3, 2))
    before = model[0].weight.detach().clone()
    result = stages.apply(model, ScaleConfig(factor=2.0))
    assert result is not model
    assert torch.equal(model[0].weight, before)
    assert torch.equal(result[0].weight, 2 * before)


def test_configs_round_trip_through_dicts_and_json():
    config = ScaleConfig(factor=3.0, layers=("0", "1"))
    as_dict = stages.config_to_dict(config)
    assert as_dict == {"stage": "test_scale", "factor": 3.0, "layers": ["0", "1"]}
    assert stages.config_from_dict(as_dict) == config
    assert stages.config_from_json(stages.config_to_json(config)) == config


def test_bad_configs_and_unknown_stages_get_clear_errors():
    with pytest.raises(ValueError, match="factor must be > 0"):
        stages.config_from_dict({"stage": "test_scale", "factor": -1.0})
    with pytest.raises(ValueError, match="has no setting"):
        stages.config_from_dict({"stage": "test_scale", "facter": 1.0})
    with pytest.raises(ValueError, match="Unknown stage 'no_such_stage'"):
        stages.config_from_dict({"stage": "no_such_stage"})
    with pytest.raises(ValueError, match="needs a 'stage' key"):
        stages.config_from_dict({"factor": 1.0})


def test_a_handler_without_a_config_annotation_is_refused():
    with pytest.raises(TypeError, match="StageConfig subclass"):
        @stages.register_stage("test_unannotated")
        def unannotated(model, config, data):
            return model


def test_shared_config_checks_name_the_config_field_and_value():
    config = ScaleConfig()
    object.__setattr__(config, "layers", ["0"])  # a list, not a tuple
    with pytest.raises(ValueError, match=r"ScaleConfig.layers must be a tuple of module names, got \['0'\]"):
        stages.check_module_names(config, "layers")
    for bad in (True, 0.5, 0):
        object.__setattr__(config, "factor", bad)
        with pytest.raises(ValueError, match=r"ScaleConfig.factor must be an integer >= 1 \(e.g. 3\), got"):
            stages.check_integer(config, "factor", 1, hint=" (e.g. 3)")
    object.__setattr__(config, "factor", -4)
    stages.check_integer(config, "factor")  # no minimum: any integer


def test_stage_reports_are_copies_and_a_missing_one_is_a_clear_error():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="carries no test report .* only models returned by stage 'x'"):
        stages.stage_report(model, "test_report_", "test", "stage 'x'")
    model.test_report_ = {"ratio": [0.5]}
    copy_ = stages.stage_report(model, "test_report_", "test", "stage 'x'")
    copy_["ratio"].append(1.0)
    assert model.test_report_ == {"ratio": [0.5]}
