"""Distillation losses against PyTorch oracles, and the DynamicKD controller's direction."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from satcompress.distill import EntropyController, hinton_loss, soft_target_loss, softmax_entropy


@pytest.fixture(autouse=True)
def _one_thread():
    """Many tiny tensor operations: one thread avoids contention on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def logits(seed: int, shape=(16, 5)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 2


def test_softmax_entropy_matches_definition():
    z = logits(0)
    p = torch.softmax(z / 3, dim=-1)
    assert torch.allclose(softmax_entropy(z, 3.0), -(p * p.log()).sum(-1), atol=1e-6)
    assert torch.allclose(softmax_entropy(torch.zeros(2, 5)), torch.full((2,), math.log(5)))


def test_soft_target_loss_is_t_squared_times_mean_kl():
    student, teacher, temperature = logits(1), logits(2), 4.0
    p = torch.softmax(teacher / temperature, -1)
    q = torch.softmax(student / temperature, -1)
    expected = temperature**2 * (p * (p.log() - q.log())).sum(-1).mean()
    assert torch.allclose(soft_target_loss(student, teacher, temperature), expected, atol=1e-5)
    assert soft_target_loss(teacher, teacher, temperature).abs() < 1e-6


def test_hinton_loss_mixes_soft_and_class_weighted_hard_terms():
    student, teacher = logits(3), logits(4)
    labels = torch.arange(16) % 5
    hard = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0]))
    value = hinton_loss(student, teacher, labels, hard, temperature=2.0, alpha=0.7)
    expected = 0.7 * soft_target_loss(student, teacher, 2.0) + 0.3 * hard(student, labels)
    assert torch.allclose(value, expected)
    unmixed = hinton_loss(student, teacher, labels, hard, 2.0, 0.0)
    assert torch.allclose(unmixed, hard(student, labels))
    scaled = hinton_loss(student, teacher, labels, hard, 2.0, 1.0, student_scale=0.5)
    assert torch.allclose(scaled, soft_target_loss(0.5 * student, teacher, 2.0))


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.5])
def test_controller_gradient_matches_autograd(scale):
    student, teacher, temperature = logits(5), logits(6), 4.0
    controller = EntropyController(temperature)
    controller.log_scale_ = math.log(scale)
    log_scale = torch.tensor(math.log(scale), dtype=torch.float64, requires_grad=True)
    loss = soft_target_loss(log_scale.exp() * student.double(), teacher.double(), temperature)
    (expected,) = torch.autograd.grad(loss, log_scale)
    gradient = controller.log_scale_gradient(student, teacher)
    assert gradient == pytest.approx(expected.item(), rel=1e-4)


@pytest.mark.parametrize("sharpness", [3.0, 0.3])
def test_controller_moves_student_entropy_toward_teacher(sharpness):
    """A student sharper (3x the teacher's logits) or flatter (0.3x) than the teacher: the
    controller's steps move the entropy of its corrected output toward the teacher's."""
    temperature = 2.0
    teacher = logits(7, (64, 5))
    student = sharpness * teacher + 0.1 * logits(8, (64, 5))
    target = softmax_entropy(teacher, temperature).mean().item()
    controller = EntropyController(temperature, learning_rate=0.2)
    gaps = []
    for _ in range(60):
        corrected = controller.scale_ * student
        gaps.append(softmax_entropy(corrected, temperature).mean().item() - target)
        controller.update(student, teacher)
    assert abs(gaps[0]) > 0.2  # a real gap to close: negative if sharper, positive if flatter
    assert (controller.scale_ < 1) == (sharpness > 1)  # sharper student: scale shrinks
    assert all(abs(gap) <= abs(gaps[0]) for gap in gaps)  # never further from the teacher
    assert abs(gaps[-1]) < 0.15 * abs(gaps[0])
    assert controller.scale_ * sharpness == pytest.approx(1.0, abs=0.15)
    assert len(controller.history_) == 60


def test_controller_scale_stays_within_bounds():
    controller = EntropyController(1.0, learning_rate=100.0, max_scale=4.0)
    teacher = logits(9)
    for _ in range(5):
        controller.update(20 * teacher, teacher)
    assert controller.scale_ == pytest.approx(0.25)

