"""The shared training loop: learns, never mutates its input, repeatable with a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from satcompress.training import TrainConfig, fit, predict_proba


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def accuracy(model: nn.Module, split) -> float:
    return float(np.mean(predict_proba(model, split.x).argmax(axis=1) == split.y))


def test_fit_learns_a_separable_problem_and_leaves_the_input_model_untouched(blobs):
    model = tiny_model()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    trained = fit(model, blobs, TrainConfig(max_epochs=30, batch_size=32, learning_rate=1e-2))
    assert accuracy(trained, blobs.test) > 0.9 > accuracy(model, blobs.test)
    assert trained is not model
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_fit_is_repeatable_with_the_same_seed(blobs):
    config = TrainConfig(max_epochs=3, batch_size=32, seed=7)
    first, second = fit(tiny_model(), blobs, config), fit(tiny_model(), blobs, config)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_predict_proba_returns_probabilities_and_restores_training_mode(blobs):
    model = tiny_model().train()
    probabilities = predict_proba(model, blobs.test.x)
    assert probabilities.shape == (len(blobs.test), 3)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert model.training


@pytest.mark.parametrize("setting", [{"max_epochs": 0}, {"learning_rate": 0.0}, {"weight_decay": -1.0}])
def test_impossible_settings_are_refused(setting):
    with pytest.raises(ValueError, match="TrainConfig"):
        TrainConfig(**setting)


def test_after_step_runs_after_every_optimiser_step_and_custom_losses_see_the_inputs(blobs):
    steps, seen_batches = [], []

    def loss(model, inputs, labels):
        seen_batches.append(len(inputs))
        return torch.nn.functional.cross_entropy(model(inputs), labels)

    def zero_first_row(model):
        steps.append(1)
        with torch.no_grad():
            model[0].weight[0].zero_()

    trained = fit(tiny_model(), blobs, TrainConfig(max_epochs=2, batch_size=64, patience_epochs=5),
                  loss_fn=loss, after_step=zero_first_row)
    assert len(steps) == len(seen_batches) == 2 * 3  # 180 examples / 64 per batch, 2 epochs
    assert torch.count_nonzero(trained[0].weight[0]) == 0


@pytest.mark.parametrize("epochs, batch_size", [(5, 90), (1, 64), (1, 180)])  # 10, 3 and 1 steps
def test_short_runs_of_any_length_train_without_a_schedule_error(blobs, epochs, batch_size):
    fit(tiny_model(), blobs, TrainConfig(max_epochs=epochs, batch_size=batch_size))


def test_fine_tuning_never_returns_a_model_worse_on_validation_than_its_input(blobs):
    from satcompress.training import class_weighted_loss

    good = fit(tiny_model(), blobs, TrainConfig(max_epochs=30, batch_size=32, learning_rate=1e-2))
    # A learning rate this large wrecks the model; the input must come back instead.
    worse = fit(good, blobs, TrainConfig(max_epochs=2, batch_size=32, learning_rate=50.0))
    loss = class_weighted_loss(blobs)
    with torch.no_grad():
        x, y = torch.from_numpy(blobs.val.x), torch.from_numpy(blobs.val.y)
        assert loss(worse(x), y) <= loss(good(x), y) + 1e-6


def test_predict_proba_accepts_read_only_arrays(blobs):
    x = blobs.test.x.copy()
    x.flags.writeable = False
    assert predict_proba(tiny_model(), x).shape == (len(x), 3)
