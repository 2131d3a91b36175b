"""Students derived from the teacher: scaled architectures and parameter-fraction targets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny_mlp, tiny_t2
from satcompress.distill import (
    build_student,
    parameter_count,
    width_candidates,
    width_multiplier_for_fraction,
)
from satcompress.networks import ResidualMLP, T2Transformer


def mlp_teacher() -> ResidualMLP:
    """About 7k parameters: fine-grained enough to hit 1/4 and 1/10 closely."""
    torch.manual_seed(0)
    return ResidualMLP(n_features=6, n_classes=3, width=40, depth=2, hidden=48, dropout=0.1)


def t2_teacher(d_model: int = 24, n_heads: int = 4, n_blocks: int = 2) -> T2Transformer:
    """About 9k parameters with the defaults."""
    torch.manual_seed(0)
    return T2Transformer(n_timesteps=12, n_channels=2, n_classes=3, d_model=d_model,
                         n_heads=n_heads, ff_dim=2 * d_model, n_blocks=n_blocks, dropout=0.1)


def fine_t2_teacher() -> T2Transformer:
    """About 9k parameters in 16 possible widths (2 heads of up to 16 features)."""
    return t2_teacher(d_model=32, n_heads=2, n_blocks=1)


def test_residual_mlp_student_scales_width_hidden_and_depth():
    teacher = ResidualMLP(n_features=6, n_classes=3, width=40, depth=4, hidden=48, dropout=0.1)
    student = build_student(teacher, width_multiplier=0.5, depth_multiplier=0.5)
    assert type(student) is ResidualMLP
    assert student.stem.in_features == 6 and student.head.out_features == 3
    assert student.stem.out_features == 20 and len(student.blocks) == 2
    assert all(block.fc1.out_features == 24 and block.drop.p == 0.1 for block in student.blocks)
    assert student(torch.zeros(5, 6)).shape == (5, 3)


def test_t2_student_keeps_heads_dividing_d_model():
    teacher = t2_teacher()
    student = build_student(teacher, width_multiplier=0.4, depth_multiplier=0.5)
    attention = student.blocks[0].attention
    assert type(student) is T2Transformer
    assert attention.n_heads == 4 and attention.d_model % 4 == 0
    assert attention.d_model == 4 * round(6 * 0.4)  # 4 heads of round(2.4) = 2 features
    assert student.blocks[0].ff1.out_features == round(48 * 0.4)
    assert len(student.blocks) == 1 and student.blocks[0].dropout1.p == 0.1
    assert (student.n_timesteps, student.n_channels) == (12, 2)
    assert student(torch.zeros(3, 12, 2)).shape == (3, 3)


def test_t2_student_with_fewer_heads_keeps_its_width():
    teacher = t2_teacher()  # d_model 24 in 4 heads of 6
    student = build_student(teacher, width_multiplier=0.5, heads_multiplier=0.5)
    attention = student.blocks[0].attention
    assert attention.n_heads == 2 and attention.d_model == 12  # 2 heads of round(12 * 0.5)
    assert student(torch.zeros(3, 12, 2)).shape == (3, 3)
    fraction = width_multiplier_for_fraction(teacher, 0.5, heads_multiplier=0.25)
    one_head = build_student(teacher, fraction, heads_multiplier=0.25)
    assert one_head.blocks[0].attention.n_heads == 1
    assert 0.5 / 1.5 <= parameter_count(one_head) / parameter_count(teacher) <= 0.5 * 1.5
    mlp = tiny_mlp()  # no heads: the multiplier changes nothing
    assert parameter_count(build_student(mlp, 0.5, heads_multiplier=0.5)) == parameter_count(
        build_student(mlp, 0.5))


def test_narrowest_t2_student_has_one_feature_per_head():
    student = build_student(t2_teacher(), width_multiplier=0.01)
    assert student.blocks[0].attention.head_dim == 1


def test_build_student_leaves_teacher_untouched_and_returns_new_weights():
    teacher = tiny_mlp()
    before = {key: value.clone() for key, value in teacher.state_dict().items()}
    student = build_student(teacher, 1.0, 1.0)
    assert all(torch.equal(value, before[key]) for key, value in teacher.state_dict().items())
    assert not torch.equal(student.stem.weight, teacher.stem.weight)  # fresh initialisation


@pytest.mark.parametrize("multipliers", [(0.0, 1.0), (0.5, -1.0)])
def test_build_student_rejects_non_positive_multipliers(multipliers):
    with pytest.raises(ValueError, match="must be a number > 0"):
        build_student(tiny_mlp(), *multipliers)


def test_build_student_needs_an_example_input_to_trace_other_teachers():
    with pytest.raises(ValueError, match="pass example_input"):
        build_student(nn.Sequential(nn.Linear(4, 2)), 0.5, 1.0)


@pytest.mark.parametrize("make_teacher", [mlp_teacher, fine_t2_teacher])
@pytest.mark.parametrize("fraction", [0.25, 0.1])
def test_width_for_fraction_picks_the_closest_student(make_teacher, fraction):
    teacher = make_teacher()
    target = fraction * parameter_count(teacher)
    chosen = width_multiplier_for_fraction(teacher, fraction)
    counts = {width: parameter_count(build_student(teacher, width))
              for width in width_candidates(teacher)}
    best = min(abs(count - target) for count in counts.values())
    assert abs(counts[chosen] - target) == best  # brute-force oracle over every width
    assert abs(counts[chosen] / target - 1) < 0.15


def test_width_for_fraction_honours_depth():
    teacher = mlp_teacher()
    width = width_multiplier_for_fraction(teacher, 0.25, depth_multiplier=0.5)
    student = build_student(teacher, width, 0.5)
    assert len(student.blocks) == 1
    assert abs(parameter_count(student) / parameter_count(teacher) - 0.25) < 0.05


def test_width_for_fraction_rejects_unreachable_or_invalid_targets():
    with pytest.raises(ValueError, match="change depth_multiplier"):
        width_multiplier_for_fraction(tiny_t2(), 0.001)
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        width_multiplier_for_fraction(tiny_mlp(), 1.5)
