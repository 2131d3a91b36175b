"""Rank selection: energy, fixed ranks, and parameter / MAC budgets checked by counting."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import tiny_mlp, tiny_t2
from satcompress.lowrank import factorizable_layers, factorize_model, select_ranks
from satcompress.measure import count_macs


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(),
        nn.Conv2d(12, 16, 3, stride=2), nn.ReLU(),
        nn.Conv2d(16, 16, 1), nn.Flatten(), nn.Linear(16 * 3 * 3, 10),
    ).eval()


CASES = {
    "mlp": (tiny_mlp, lambda: torch.randn(1, 6)),
    "t2": (tiny_t2, lambda: torch.randn(1, 12, 2)),
    "conv-tucker2": (_conv_net, lambda: torch.randn(1, 3, 8, 8)),
    "conv-cp": (_conv_net, lambda: torch.randn(1, 3, 8, 8)),
}


def _parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _factorize(model: nn.Module, plan: dict, conv_method: str) -> nn.Module:
    model = copy.deepcopy(model)
    factorize_model(model, plan, conv_method, n_iter_max=10)
    return model


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("ratio", [0.4, 0.7])
def test_parameter_and_mac_budgets_are_met_by_the_factored_model(case, ratio):
    build, example = CASES[case]
    model, x = build(), example()
    conv_method = "cp" if case.endswith("cp") else "tucker2"
    plan = select_ranks(model, "parameters", budget_ratio=ratio, conv_method=conv_method)
    assert plan and _parameters(_factorize(model, plan, conv_method)) <= ratio * _parameters(model)
    plan = select_ranks(model, "macs", budget_ratio=ratio, conv_method=conv_method,
                        example_input=x)
    factored = _factorize(model, plan, conv_method)
    assert count_macs(factored, x) <= ratio * count_macs(model, x)


@pytest.mark.parametrize("case", sorted(CASES))
def test_predicted_costs_match_counted_costs(case):
    build, example = CASES[case]
    model, x = build(), example()
    conv_method = "cp" if case.endswith("cp") else "tucker2"
    layers = {layer.name: layer
              for layer in factorizable_layers(model, conv_method, example_input=x)}
    plan = select_ranks(model, "rank", rank=2, conv_method=conv_method)
    factored = _factorize(model, plan, conv_method)
    saved_parameters = sum(layers[n].original_parameters - layers[n].parameters(r)
                           for n, r in plan.items())
    saved_macs = sum(layers[n].original_macs - layers[n].macs(r) for n, r in plan.items())
    assert _parameters(factored) == _parameters(model) - saved_parameters
    assert count_macs(factored, x) == count_macs(model, x) - saved_macs


def test_layers_are_factored_only_where_that_saves_parameters():
    model = tiny_mlp()
    assert select_ranks(model, "rank", rank=16) == {}  # full rank never saves
    plan = select_ranks(model, "rank", rank=4)
    assert plan["blocks.0.fc1"] == (4,)  # 4 x (16 + 16) < 16 x 16
    assert "stem" in plan and plan["stem"] == (4,)  # 4 x (6 + 16) = 88 < 96


def test_energy_ranks_follow_each_layers_spectrum():
    model = nn.Sequential(nn.Linear(20, 20))
    with torch.no_grad():
        u, _, vh = torch.linalg.svd(torch.randn(20, 20))
        spectrum = torch.tensor([10.0, 5.0] + [0.01] * 18)
        model[0].weight.copy_(u @ torch.diag(spectrum) @ vh)
    assert select_ranks(model, "energy", energy=0.79) == {"0": (1,)}
    assert select_ranks(model, "energy", energy=0.99) == {"0": (2,)}


def test_impossible_budgets_and_missing_inputs_are_refused():
    with pytest.raises(ValueError, match="budget"):
        select_ranks(tiny_mlp(), "parameters", budget_ratio=0.01)
    with pytest.raises(ValueError, match="example_input"):
        select_ranks(tiny_mlp(), "macs")
    with pytest.raises(ValueError, match="skip_layers"):
        select_ranks(tiny_mlp(), skip_layers=("nope",))
