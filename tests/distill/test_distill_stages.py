"""The distillation stages: teacher signal beats labels alone, teacher frozen, student clean."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_blobs, make_sequences, tiny_mlp, tiny_t2
from satcompress import stages
from satcompress.distill import (
    DynamicKDConfig,
    FitNetsConfig,
    HintonKDConfig,
    build_student,
    distill_report,
    dynamic_kd,
    fitnets,
    hinton_kd,
    parameter_count,
    softmax_entropy,
)
from satcompress.tasks import Split, TaskData
from satcompress.training import TrainConfig, fit, predict_proba

HANDLERS = {HintonKDConfig: hinton_kd, FitNetsConfig: fitnets, DynamicKDConfig: dynamic_kd}
NOISY_TRAINING = {"epochs": 30, "batch_size": 16, "learning_rate": 5e-3, "patience_epochs": 30}


@pytest.fixture(scope="module")
def noisy_labels():
    """A teacher trained on 600 clean examples; a student's problem with 60 training
    examples of which 60% got a uniformly random label (a clean validation split, as a
    curated set would be); the clean test split of the teacher's problem. The teacher's
    soft targets carry the labels' missing information."""
    clean = make_blobs(n_per_class=200, seed=1)
    torch.manual_seed(0)
    teacher = fit(tiny_mlp(), clean, TrainConfig(max_epochs=20, batch_size=32, learning_rate=1e-2))
    rng = np.random.default_rng(0)
    chosen = np.concatenate([rng.choice(np.flatnonzero(clean.val.y == c), 40, replace=False)
                             for c in range(3)])
    train, val = chosen[::2], chosen[1::2]
    labels = clean.val.y[train].copy()
    relabel = rng.random(len(labels)) < 0.6
    labels[relabel] = rng.integers(0, 3, relabel.sum())
    data = TaskData(
        train=Split(clean.val.x[train], labels, clean.val.groups[train]),
        val=Split(clean.val.x[val], clean.val.y[val], clean.val.groups[val]),
        test=clean.test,
        class_names=clean.class_names,
    )
    return teacher, data


def accuracy(model: torch.nn.Module, split: Split) -> float:
    return float((predict_proba(model, split.x).argmax(axis=1) == split.y).mean())


@pytest.fixture(scope="module")
def student_alone(noisy_labels):
    """The student trained on the noisy labels only (``alpha=0``)."""
    teacher, data = noisy_labels
    return hinton_kd(teacher, HintonKDConfig(alpha=0.0, **NOISY_TRAINING), data)


@pytest.mark.parametrize("config_class", [HintonKDConfig, FitNetsConfig, DynamicKDConfig])
def test_distilled_student_beats_the_same_student_without_teacher(
    noisy_labels, student_alone, config_class
):
    teacher, data = noisy_labels
    alone = student_alone
    assert accuracy(teacher, data.test) > 0.95
    distilled = HANDLERS[config_class](teacher, config_class(**NOISY_TRAINING), data)
    assert parameter_count(distilled) == parameter_count(alone) < parameter_count(teacher) / 3
    assert accuracy(alone, data.test) < 0.85  # the noisy labels do hurt ...
    assert accuracy(distilled, data.test) > accuracy(alone, data.test) + 0.08  # the teacher helps


def test_dynamic_kd_controller_corrects_student_entropy_toward_teacher(noisy_labels):
    """The small student ends flatter than the teacher; the controller's final scale brings
    the entropy of its (scaled) outputs close to the teacher's."""
    teacher, data = noisy_labels
    config = DynamicKDConfig(**NOISY_TRAINING)
    student = dynamic_kd(teacher, config, data)
    scale = distill_report(student)["controller_scale"]
    x = torch.from_numpy(data.val.x)
    with torch.no_grad():
        teacher_entropy = softmax_entropy(teacher(x), config.temperature).mean()
        raw_gap = softmax_entropy(student(x), config.temperature).mean() - teacher_entropy
        corrected = softmax_entropy(scale * student(x), config.temperature).mean()
        corrected_gap = corrected - teacher_entropy
    assert raw_gap > 0.1 and scale > 1  # flatter student: the controller sharpens it
    assert abs(corrected_gap) < 0.5 * abs(raw_gap)


@pytest.mark.parametrize("config", [HintonKDConfig(), FitNetsConfig(), DynamicKDConfig()],
                         ids=["hinton_kd", "fitnets", "dynamic_kd"])
@pytest.mark.parametrize("architecture", ["mlp", "t2"])
def test_teacher_is_frozen_and_left_untouched(config, architecture):
    """Called directly (not through stages.apply): the caller's teacher keeps its weights,
    train mode and requires_grad, while every teacher forward pass inside the stage runs in
    eval mode without gradients."""
    if architecture == "mlp":
        teacher, data = tiny_mlp(), make_blobs()
    else:
        teacher, data = tiny_t2(), make_sequences()
    teacher.train()
    before = {key: value.clone() for key, value in teacher.state_dict().items()}
    calls = []
    teacher.register_forward_hook(
        lambda module, inputs, output: calls.append((module.training, torch.is_grad_enabled()))
    )
    student = HANDLERS[type(config)](teacher, config, data)
    assert calls and all(call == (False, False) for call in calls)
    assert all(torch.equal(value, before[key]) for key, value in teacher.state_dict().items())
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    assert student is not teacher and not student.training


@pytest.mark.parametrize("config", [HintonKDConfig(), FitNetsConfig(), DynamicKDConfig()],
                         ids=["hinton_kd", "fitnets", "dynamic_kd"])
def test_student_is_the_built_architecture_without_regressor_or_hooks(config):
    teacher, data = tiny_t2(), make_sequences()
    student = stages.apply(teacher, config, data)
    report = distill_report(student)
    reference = build_student(teacher, report["width_multiplier"], report["depth_multiplier"])
    assert student.state_dict().keys() == reference.state_dict().keys()
    assert all(value.shape == reference.state_dict()[key].shape
               for key, value in student.state_dict().items())
    assert report["student_parameters"] == parameter_count(student) == parameter_count(reference)
    assert report["parameter_fraction"] == pytest.approx(0.25, abs=0.05)
    assert all(not module._forward_hooks for module in student.modules())


def test_fitnets_report_shows_hint_loss_reduced():
    config = FitNetsConfig(hint_epochs=10, learning_rate=1e-2)
    report = distill_report(stages.apply(tiny_mlp(), config, make_blobs()))
    assert (report["student_hint_layer"], report["teacher_hint_layer"]) == ("blocks.0", "blocks.0")
    assert report["hint_loss_after"] < 0.7 * report["hint_loss_before"]


def test_stage_honours_explicit_multipliers_and_hint_layers():
    config = FitNetsConfig(target_parameter_fraction=0.0, width_multiplier=0.5,
                           depth_multiplier=0.5, student_hint_layer="stem",
                           teacher_hint_layer="blocks.1")
    student = stages.apply(tiny_mlp(), config, make_blobs())
    assert student.stem.out_features == 8 and len(student.blocks) == 1
    assert distill_report(student)["teacher_hint_layer"] == "blocks.1"


def test_same_config_gives_the_same_student():
    teacher, data = tiny_mlp(), make_blobs()
    first = stages.apply(teacher, DynamicKDConfig(), data)
    second = stages.apply(teacher, DynamicKDConfig(), data)
    pairs = zip(first.state_dict().values(), second.state_dict().values())
    assert all(torch.equal(a, b) for a, b in pairs)


def test_stages_need_data():
    with pytest.raises(ValueError, match="needs the task's data"):
        stages.apply(tiny_mlp(), HintonKDConfig(), None)


@pytest.mark.parametrize(
    ("config_class", "settings", "message"),
    [
        (HintonKDConfig, {"width_multiplier": 0.5}, "exactly one of"),
        (HintonKDConfig, {"target_parameter_fraction": 0.0}, "exactly one of"),
        (HintonKDConfig, {"target_parameter_fraction": 1.5}, r"in \[0, 1\]"),
        (HintonKDConfig, {"alpha": 1.2}, r"alpha must be in \[0, 1\]"),
        (HintonKDConfig, {"temperature": 0.0}, "temperature must be"),
        (HintonKDConfig, {"epochs": 0}, "epochs must be an integer >= 1"),
        (HintonKDConfig, {"batch_size": 8.0}, "batch_size must be an integer"),
        (FitNetsConfig, {"hint_epochs": 0}, "hint_epochs must be"),
        (FitNetsConfig, {"student_hint_layer": None}, "must be a module name"),
        (DynamicKDConfig, {"alpha": 0.0}, "alpha must be > 0"),
        (DynamicKDConfig, {"controller_learning_rate": -1.0}, "controller_learning_rate"),
    ],
)
def test_invalid_settings_are_rejected(config_class, settings, message):
    with pytest.raises(ValueError, match=message):
        config_class(**settings)


def test_unknown_hint_layer_is_reported():
    with pytest.raises(ValueError, match="has no layer 'blocks.7'"):
        stages.apply(tiny_mlp(), FitNetsConfig(teacher_hint_layer="blocks.7"), make_blobs())


def test_distill_report_requires_a_distilled_model():
    with pytest.raises(ValueError, match="carries no distillation report"):
        distill_report(tiny_mlp())
