"""FitNets hints: feature capture, regressor shapes, and that hint training reduces the loss."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import make_blobs, make_sequences, tiny_mlp, tiny_t2
from satcompress.distill import (
    build_student,
    default_hint_layer,
    fit_hints,
    hint_regressor,
    layer_output,
    mean_hint_loss,
)
from satcompress.networks import ResidualMLP
from satcompress.training import TrainConfig


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one thread avoids contention on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def mlp_features(model: ResidualMLP, x: torch.Tensor, block: int) -> torch.Tensor:
    """Oracle: the residual stream after block ``block``, computed without hooks."""
    return model.blocks[: block + 1](model.stem(x))


def no_hooks(model: nn.Module) -> bool:
    return all(not module._forward_hooks for module in model.modules())


@pytest.mark.parametrize(
    ("depth", "expected"), [(1, "blocks.0"), (2, "blocks.0"), (3, "blocks.1"), (4, "blocks.1")]
)
def test_default_hint_layer_is_the_middle_block(depth, expected):
    assert default_hint_layer(ResidualMLP(6, 3, width=8, depth=depth)) == expected


def test_default_hint_layer_needs_a_known_architecture():
    with pytest.raises(ValueError, match="name the student's and the teacher's hint layers"):
        default_hint_layer(nn.Sequential(nn.Linear(3, 3)))


def test_layer_output_matches_explicit_forward_and_removes_its_hook():
    model, x = tiny_mlp(), torch.from_numpy(make_blobs().test.x[:7])
    with torch.no_grad():
        assert torch.allclose(layer_output(model, "blocks.1", x), mlp_features(model, x, 1))
    assert no_hooks(model)
    with pytest.raises(ValueError, match="has no layer 'blocks.9'"):
        layer_output(model, "blocks.9", x)


def test_regressor_maps_student_width_to_teacher_width_per_timestep():
    teacher, x = tiny_t2(), torch.from_numpy(make_sequences().test.x[:2])
    student = build_student(teacher, 0.5)
    regressor = hint_regressor(student, teacher, "blocks.0", "blocks.0", x)
    assert (regressor.in_features, regressor.out_features) == (8, 16)
    with torch.no_grad():
        mapped = regressor(layer_output(student, "blocks.0", x))
    assert mapped.shape == layer_output(teacher, "blocks.0", x).shape == (2, 12, 16)


def test_regressor_rejects_layers_that_do_not_line_up():
    teacher, x = tiny_t2(), torch.from_numpy(make_sequences().test.x[:2])
    with pytest.raises(ValueError, match="differ in at most one"):
        hint_regressor(build_student(teacher, 0.5), teacher, "blocks.0", "head", x)


def test_fit_hints_reduces_hint_loss_and_trains_only_up_to_the_guided_layer():
    data = make_blobs()
    teacher = tiny_mlp().requires_grad_(False)
    torch.manual_seed(1)
    student = ResidualMLP(6, 3, width=8, depth=2, dropout=0.0)
    example = torch.from_numpy(data.val.x[:2])
    regressor = hint_regressor(student, teacher, "blocks.0", "blocks.1", example)
    before_student, before_regressor = copy.deepcopy(student), copy.deepcopy(regressor)
    x = torch.from_numpy(data.val.x)

    def oracle(s: ResidualMLP, r: nn.Linear) -> float:
        with torch.no_grad():
            return F.mse_loss(r(mlp_features(s, x, 0)), mlp_features(teacher, x, 1)).item()

    loss_before = mean_hint_loss(student, teacher, regressor, data.val.x, "blocks.0", "blocks.1")
    assert loss_before == pytest.approx(oracle(before_student, before_regressor), rel=1e-5)
    fit_hints(student, teacher, regressor, data,
              TrainConfig(max_epochs=15, batch_size=32, learning_rate=1e-2), "blocks.0", "blocks.1")
    loss_after = mean_hint_loss(student, teacher, regressor, data.val.x, "blocks.0", "blocks.1")
    assert loss_after == pytest.approx(oracle(student, regressor), rel=1e-5)
    assert loss_after < 0.5 * loss_before
    assert not torch.equal(student.stem.weight, before_student.stem.weight)
    for name in ("blocks.1", "norm", "head"):  # after the guided layer: no gradient, unchanged
        after, before = student.get_submodule(name), before_student.get_submodule(name)
        assert all(torch.equal(a, b) for a, b in zip(after.parameters(), before.parameters()))
    assert no_hooks(student) and no_hooks(teacher)
