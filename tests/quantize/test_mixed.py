"""Mixed precision: sensitivity per layer and width, greedy knapsack, per-layer bits report."""

from __future__ import annotations

import itertools

import pytest
import torch

from conftest import tiny_mlp
from satcompress.networks import ResidualMLP
from satcompress.quantize import (
    MixedPrecisionQuantizeConfig,
    assign_bits,
    average_bits,
    bits_report_rows,
    layer_sensitivity,
    mixed_precision_quantize,
    quantizable_layers,
    quantized_layers,
)
from satcompress.training import TrainConfig, fit
from test_qat import linear_boundaries

SENSITIVE = ("stem", "blocks.0.fc1", "blocks.0.fc2", "head")
INSENSITIVE = ("blocks.1.fc1", "blocks.1.fc2")


@pytest.fixture(scope="module")
def model_with_a_silent_block():
    """A trained tiny MLP whose second residual block adds almost nothing to the stream.

    The problem (margin-free linear boundaries) needs precise weights, so quantizing any
    other layer to 2 bits measurably hurts.
    """
    data = linear_boundaries()
    torch.manual_seed(0)
    model = ResidualMLP(n_features=16, n_classes=3, width=16, depth=2, dropout=0.0)
    model = fit(model, data, TrainConfig(max_epochs=40, learning_rate=3e-3))
    with torch.no_grad():
        model.blocks[1].fc2.weight.mul_(1e-3)
        model.blocks[1].fc2.bias.mul_(1e-3)
    return model, data


def test_sensitivity_is_measured_per_layer_and_width(model_with_a_silent_block):
    model, data = model_with_a_silent_block
    before = {key: value.clone() for key, value in model.state_dict().items()}
    drops = layer_sensitivity(model, data, quantizable_layers(model), (2, 8), "weighted_log_loss")
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
    assert set(drops) == set(SENSITIVE + INSENSITIVE)
    assert all(abs(drops[name][8]) < 1e-3 for name in drops)  # int8 is near lossless
    silent = max(abs(drops[name][2]) for name in INSENSITIVE)
    assert silent < min(drops[name][2] for name in SENSITIVE)


def test_mixed_precision_gives_insensitive_layers_fewer_bits(model_with_a_silent_block):
    model, data = model_with_a_silent_block
    sizes = {name: model.get_submodule(name).weight.numel() for name in quantizable_layers(model)}
    silent_at_2 = {name: 2 if name in INSENSITIVE else 8 for name in sizes}
    only_silent_at_2 = average_bits(silent_at_2, sizes)
    config = MixedPrecisionQuantizeConfig(candidate_bits=(2, 8),
                                          target_average_bits=only_silent_at_2)
    result = mixed_precision_quantize(model, config, data)
    assert result.bits_report_ == silent_at_2
    assert {name: layer.weight_bits for name, layer in quantized_layers(result).items()} == \
        result.bits_report_
    rows = bits_report_rows(result)
    assert [row["layer"] for row in rows] == list(sizes)
    assert rows[0]["bits"] == 8 and rows[0]["weights"] == sizes["stem"]
    assert set(rows[0]) == {"layer", "type", "weights", "bits", "drop@2b", "drop@8b"}


def _brute_force(sensitivity, sizes, target):
    names = list(sensitivity)
    best = None
    for widths in itertools.product(*(sorted(sensitivity[name]) for name in names)):
        chosen = dict(zip(names, widths))
        if average_bits(chosen, sizes) <= target:
            total = sum(sensitivity[name][chosen[name]] for name in names)
            best = total if best is None else min(best, total)
    return best


@pytest.mark.parametrize("target", [8.0, 6.5, 5.0, 4.0, 3.0, 2.0])
def test_greedy_assignment_meets_the_budget_and_matches_brute_force_on_a_convex_table(target):
    sizes = {"a": 100, "b": 300, "c": 50, "d": 300}
    base = {"a": 0.5, "b": 0.1, "c": 2.0, "d": 0.01}  # drop = base * 2**(8 - bits): convex
    sensitivity = {name: {bits: base[name] * (2.0 ** (8 - bits) - 1) for bits in (2, 4, 6, 8)}
                   for name in sizes}
    chosen = assign_bits(sensitivity, sizes, target)
    assert average_bits(chosen, sizes) <= target
    total = sum(sensitivity[name][chosen[name]] for name in sizes)
    assert total == pytest.approx(_brute_force(sensitivity, sizes, target))


def test_noisy_drops_never_make_fewer_bits_look_better():
    sizes = {"noisy": 10, "steady": 10}
    sensitivity = {"noisy": {8: 0.0, 4: 0.5, 2: -0.2},  # -0.2 at 2 bits is noise
                   "steady": {8: 0.0, 4: 0.1, 2: 0.3}}
    assert assign_bits(sensitivity, sizes, 6.0) == {"noisy": 8, "steady": 4}
    assert assign_bits(sensitivity, sizes, 3.0) == {"noisy": 4, "steady": 2}


@pytest.mark.parametrize("settings, message", [
    ({"candidate_bits": ()}, "at least one width"),
    ({"candidate_bits": (4, 4)}, "repeats"),
    ({"candidate_bits": (1, 4)}, "from 2 to 8"),
    ({"target_average_bits": 9.0}, "between the smallest and largest"),
    ({"metric": "f2"}, "registered validation metric"),
    ({"fine_tune_epochs": -1}, "fine_tune_epochs must be >= 0"),
])
def test_bad_settings_are_refused_with_a_clear_message(settings, message):
    with pytest.raises(ValueError, match=message):
        MixedPrecisionQuantizeConfig(**settings)


def test_mixed_precision_needs_data():
    with pytest.raises(ValueError, match="pass the task's data"):
        mixed_precision_quantize(tiny_mlp(), MixedPrecisionQuantizeConfig(), None)


def test_fine_tuning_after_assignment_keeps_the_chosen_widths(model_with_a_silent_block):
    model, data = model_with_a_silent_block
    config = MixedPrecisionQuantizeConfig(candidate_bits=(3, 6), target_average_bits=4.5,
                                          fine_tune_epochs=2)
    result = mixed_precision_quantize(model, config, data)
    widths = {name: layer.weight_bits for name, layer in quantized_layers(result).items()}
    assert widths == result.bits_report_ and set(widths.values()) == {3, 6}
    assert all(torch.equal(layer._fake_quantized_weight(), layer.weight.detach())
               for layer in quantized_layers(result).values())
