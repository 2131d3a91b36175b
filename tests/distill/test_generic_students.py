"""Students of models written the way users write them: traced, cut down, freshly initialised."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from satcompress import stages
from satcompress.distill import (
    DynamicKDConfig,
    FitNetsConfig,
    HintonKDConfig,
    build_student,
    distill_report,
    hint_layers,
    parameter_count,
    width_candidates,
    width_multiplier_for_fraction,
)
from satcompress.pipeline.checkpoint import checkpoint_bytes, model_from_checkpoint
from satcompress.tasks import Split, TaskData


class BasicBlock(nn.Module):
    """ResNet's basic block (He et al. 2016) in 1-D."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm1d(channels)
        self.conv2 = nn.Conv1d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(channels)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv1d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm1d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet1d(nn.Module):
    """ResNet-18's layout (stages of [2, 2, 2, 2] blocks) at widths 4-8-16-32."""

    def __init__(self, in_channels: int = 2, n_classes: int = 3,
                 widths: tuple[int, ...] = (4, 8, 16, 32)) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm1d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool1d(3, 2, 1)
        layers, channels = [], widths[0]
        for index, width in enumerate(widths):
            first = BasicBlock(channels, width, stride=1 if index == 0 else 2)
            layers.append(nn.Sequential(first, BasicBlock(width, width)))
            channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class GRUClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(2, 16, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        return self.head(out[:, -1])


class FinalStateGRU(GRUClassifier):
    """Reads the GRU's final hidden state, which Torch-Pruning's trace does not follow."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, hidden = self.gru(x)
        return self.head(hidden[-1])


class TransformerClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(2, 16)
        layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(1))


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 3))


def cnn2d() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(64, 3),
    )


MODELS = {
    "mlp": (mlp, (6,)),
    "resnet": (ResNet1d, (2, 16)),
    "cnn2d": (cnn2d, (1, 8, 8)),
    "gru": (GRUClassifier, (12, 2)),
    "transformer": (TransformerClassifier, (12, 2)),
}
"""Name -> (constructor, shape of one example)."""


def teacher_of(name: str) -> nn.Module:
    """A model whose weights are away from their initial values (as a trained one's are)."""
    torch.manual_seed(0)
    model = MODELS[name][0]()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


def inputs(name: str, n: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *MODELS[name][1], generator=torch.Generator().manual_seed(seed))


def task_data(name: str, n: int = 24) -> TaskData:
    """A tiny random 3-class problem with inputs of the model's shape."""
    rng = np.random.default_rng(0)

    def split(offset: int) -> Split:
        return Split(x=inputs(name, n, offset).numpy(), y=rng.integers(0, 3, n).astype(np.int64),
                     groups=np.arange(n) + offset * n)

    return TaskData(train=split(0), val=split(1), test=split(2),
                    class_names=("a", "b", "c"))


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_half_width_student_runs_with_the_teachers_shapes_and_fewer_parameters(name):
    teacher, x = teacher_of(name), inputs(name, 5)
    before = state(teacher)
    student = build_student(teacher, 0.5, example_input=x[:1])
    assert type(student) is type(teacher) and student.training
    with torch.no_grad():
        assert student.eval()(x).shape == teacher(x).shape == (5, 3)
    fraction = parameter_count(student) / parameter_count(teacher)
    assert 0.2 < fraction < 0.35  # about 0.5 ** 2, plus the full-width input and output layers
    assert {name for name, _ in student.named_modules()} <= {n for n, _ in teacher.named_modules()}
    assert all(torch.equal(value, before[key]) for key, value in teacher.state_dict().items())
    assert not teacher.training


@pytest.mark.parametrize("name", sorted(MODELS))
def test_student_is_freshly_initialised(name):
    teacher = teacher_of(name)
    student = build_student(teacher, 1.0, example_input=inputs(name))
    assert student.state_dict().keys() == teacher.state_dict().keys()
    teacher_parameters = dict(teacher.named_parameters())
    assert all(not torch.equal(parameter, teacher_parameters[key])
               for key, parameter in student.named_parameters())


def test_resnet_depth_keeps_each_stages_downsampling_block():
    teacher, x = teacher_of("resnet"), inputs("resnet", 4)
    student = build_student(teacher, 0.5, 0.5, example_input=x[:1])
    for stage, width in zip((student.layer1, student.layer2, student.layer3, student.layer4),
                            (2, 4, 8, 16)):
        assert len(stage) == 1 and stage[0].conv2.out_channels == width
    assert student.layer1[0].downsample is None and student.layer2[0].downsample is not None
    assert student.conv1.in_channels == 2 and student.fc.out_features == 3
    assert student.eval()(x).shape == (4, 3)
    assert parameter_count(student) < 0.6 * parameter_count(build_student(teacher, 0.5,
                                                                          example_input=x[:1]))


def test_transformer_keeps_whole_heads():
    teacher, x = teacher_of("transformer"), inputs("transformer", 3)
    student = build_student(teacher, 0.5, 0.5, 0.5, example_input=x[:1])
    assert len(student.encoder.layers) == 1
    attention = student.encoder.layers[0].self_attn
    assert (attention.num_heads, attention.head_dim, attention.embed_dim) == (2, 2, 4)
    assert student.encoder.layers[0].linear1.out_features == 16
    with torch.no_grad():
        assert student.eval()(x).shape == (3, 3)


def test_gru_hidden_units_are_scaled():
    student = build_student(teacher_of("gru"), 0.25, example_input=inputs("gru"))
    assert (student.gru.hidden_size, tuple(student.gru.weight_hh_l0.shape)) == (4, (12, 4))
    assert student.head.in_features == 4


def test_model_that_cannot_be_narrowed_is_refused_with_the_reason():
    torch.manual_seed(0)
    teacher, data = FinalStateGRU().eval(), task_data("gru")
    with pytest.raises(ValueError, match="no channel group of the FinalStateGRU can be narrowed"):
        build_student(teacher, 0.5, example_input=inputs("gru"))
    reason = stages.check(teacher, HintonKDConfig(epochs=1), data)
    assert reason.startswith("hinton_kd: ") and "final hidden state" in reason
    with pytest.raises(ValueError, match="^hinton_kd: "):
        stages.apply(teacher, HintonKDConfig(epochs=1), data)


def test_multipliers_above_one_are_refused_for_traced_teachers():
    with pytest.raises(ValueError, match="width_multiplier must be <= 1"):
        build_student(teacher_of("mlp"), 1.5, example_input=inputs("mlp"))


def test_uncovered_parameters_keep_the_teachers_values_with_a_warning():
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = mlp()
            self.scale = nn.Parameter(torch.full((3,), 2.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x) * self.scale

    with pytest.warns(UserWarning, match=r"no reset_parameters\(\) covers \['scale'\]"):
        student = build_student(Scaled(), 0.5, example_input=inputs("mlp"))
    assert torch.equal(student.scale, torch.full((3,), 2.0))


@pytest.mark.parametrize("name", ["mlp", "cnn2d"])
def test_sequential_student_round_trips_through_a_checkpoint(name):
    student = build_student(teacher_of(name), 0.5, example_input=inputs(name)).eval()
    rebuilt = model_from_checkpoint(checkpoint_bytes(student)).eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(inputs(name, 3)), student(inputs(name, 3)))


def test_dropped_sequential_blocks_leave_the_other_names_unchanged():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(6, 32),
                            *[nn.Sequential(nn.Linear(32, 32), nn.ReLU()) for _ in range(4)],
                            nn.Linear(32, 3))
    student = build_student(teacher, 0.5, 0.5, example_input=inputs("mlp"))
    assert [key for key, _ in student.named_children()] == ["0", "1", "2", "5"]
    assert student[-1].in_features == 16
    rebuilt = model_from_checkpoint(checkpoint_bytes(student.eval()))
    assert [key for key, _ in rebuilt.named_children()] == ["0", "1", "2", "5"]


@pytest.mark.parametrize("name", ["mlp", "resnet"])
def test_width_for_fraction_picks_the_closest_student(name):
    teacher, x = teacher_of(name), inputs(name)
    candidates = width_candidates(teacher, x)
    assert candidates == [k / 32 for k in range(1, 33)]
    chosen = width_multiplier_for_fraction(teacher, 0.25, example_input=x)
    target = 0.25 * parameter_count(teacher)
    counts = {width: parameter_count(build_student(teacher, width, example_input=x))
              for width in candidates[::4] + [chosen]}
    assert abs(counts[chosen] - target) == min(abs(count - target) for count in counts.values())
    assert abs(counts[chosen] / target - 1) < 0.1


def test_hint_layers_pair_the_middle_block_kept_by_the_student():
    teacher, x = teacher_of("resnet"), inputs("resnet", 2)
    student = build_student(teacher, 0.5, 0.5, example_input=x[:1])
    student_layer, teacher_layer, skipped = hint_layers(student, teacher, x)
    assert student_layer == teacher_layer == "layer2.0"
    assert sorted(skipped) == ["layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    assert all("no such layer" in why for why in skipped.values())


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("config_class", [HintonKDConfig, DynamicKDConfig])
def test_distillation_stages_run_on_user_models(name, config_class):
    teacher, data = teacher_of(name), task_data(name)
    before = state(teacher)
    config = config_class(target_parameter_fraction=0.0, width_multiplier=0.5, epochs=1,
                          batch_size=8)
    student = stages.apply(teacher, config, data)
    report = distill_report(student)
    assert report["student_parameters"] == parameter_count(student) < parameter_count(teacher)
    assert not student.training and all(not m._forward_hooks for m in student.modules())
    with torch.no_grad():
        assert student(torch.from_numpy(data.test.x[:4])).shape == (4, 3)
    assert all(torch.equal(value, before[key]) for key, value in teacher.state_dict().items())


@pytest.mark.parametrize(("name", "layer"), [("resnet", "layer2.1"), ("cnn2d", "1"),
                                             ("transformer", "encoder.layers.0")])
def test_fitnets_matches_hint_layers_by_name(name, layer):
    config = FitNetsConfig(target_parameter_fraction=0.0, width_multiplier=0.5, epochs=1,
                           hint_epochs=1, batch_size=8)
    report = distill_report(stages.apply(teacher_of(name), config, task_data(name)))
    assert report["student_hint_layer"] == report["teacher_hint_layer"] == layer
    assert np.isfinite(report["hint_loss_after"])


def test_fitnets_refuses_a_model_without_a_matching_layer_before_training():
    reason = stages.check(teacher_of("gru"), FitNetsConfig(epochs=1), task_data("gru"))
    assert reason.startswith("fitnets: No layer of the GRUClassifier student lines up")
    assert "gru: its output in the teacher is not a single tensor" in reason
