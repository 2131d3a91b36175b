"""Distillation stages: the input model is the TEACHER, the result a trained, smaller STUDENT.

Every stage builds its student from the teacher's own architecture
(:func:`~satcompress.distill.students.build_student`, at a target fraction of the teacher's
parameters or at explicit width/depth multipliers; a teacher of any architecture is traced on
the first training example), trains it on the task's training split
with :func:`satcompress.training.fit` (AdamW, one-cycle schedule, early stopping on the
class-weighted validation cross-entropy) and returns it in eval mode. The teacher is a frozen
copy (eval mode, no gradients), so the caller's model is never touched.

Stages
------
``hinton_kd``
    Hinton, Vinyals & Dean (2015): soft targets at temperature ``T`` mixed with the
    class-weighted hard-label loss (:func:`~satcompress.distill.losses.hinton_loss`).
    ``alpha = 0`` trains the same student on the labels alone: the no-teacher baseline.
``fitnets``
    Romero et al. (2015): ``hint_epochs`` of hint training of the student's middle block
    against the teacher's (:mod:`satcompress.distill.hints`; for a traced teacher the middle
    layer matched by name and shape), then ``epochs`` of Hinton KD.
``dynamic_kd``
    Zhu et al. (2023): Hinton KD whose soft term sees the student's logits scaled by an
    entropy controller updated every step by the distillation loss
    (:class:`~satcompress.distill.losses.EntropyController`). The controller is a training
    device: the returned student outputs its own, unscaled logits.

Each returned student carries a JSON-able report in ``distill_report_`` (read it with
:func:`distill_report`): method, parameter counts, multipliers, settings and the method's own
diagnostics (hint losses, controller scale).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
from torch import nn

from satcompress.distill.hints import fit_hints, hint_layers, hint_regressor, mean_hint_loss
from satcompress.distill.losses import EntropyController, hinton_loss
from satcompress.distill.students import (
    build_student,
    parameter_count,
    width_multiplier_for_fraction,
)
from satcompress.stages import StageConfig, register_stage, stage_report
from satcompress.tasks.base import TaskData
from satcompress.training import TrainConfig, TrainingLoss, class_weighted_loss, fit

__all__ = [
    "DISTILL_REPORT_ATTRIBUTE",
    "DistillSettings",
    "HintonKDConfig",
    "FitNetsConfig",
    "DynamicKDConfig",
    "hinton_kd",
    "fitnets",
    "dynamic_kd",
    "distill_report",
]

DISTILL_REPORT_ATTRIBUTE = "distill_report_"
"""Name of the student attribute where a distillation stage leaves its report."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class DistillSettings(StageConfig):
    """Student size, distillation and training settings shared by the distillation stages
    (not a stage itself).

    Attributes
    ----------
    target_parameter_fraction : float
        Student size as a fraction in (0, 1] of the teacher's parameters; the width is
        chosen to come closest (:func:`~satcompress.distill.students.width_multiplier_for_fraction`)
        at ``depth_multiplier``. Set it to 0 to give ``width_multiplier`` instead.
    width_multiplier : float
        Explicit width multiplier (> 0), used only when ``target_parameter_fraction`` is 0;
        0 (the default) means "derived from the fraction".
    depth_multiplier : float
        Scales the teacher's number of blocks (> 0).
    heads_multiplier : float
        Scales a transformer teacher's number of attention heads (> 0; a model without
        heads ignores it).
    temperature : float
        Softmax temperature ``T`` of the soft targets (> 0).
    alpha : float
        Weight in [0, 1] of the soft-target term; ``1 - alpha`` weighs the class-weighted
        cross-entropy with the labels. 0 = no teacher signal.
    epochs : int
        Maximum epochs of (distillation) training.
    learning_rate, weight_decay : float
        AdamW peak learning rate (one-cycle schedule) and decoupled weight decay.
    batch_size : int
        Examples per step.
    patience_epochs : int
        Early stopping: epochs without a better validation cross-entropy.
    seed : int
        Seeds the student's initial weights and the training shuffles.
    """

    target_parameter_fraction: float = 0.25
    width_multiplier: float = 0.0
    depth_multiplier: float = 1.0
    heads_multiplier: float = 1.0
    temperature: float = 4.0
    alpha: float = 0.9
    epochs: int = 6
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    patience_epochs: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        name = type(self).__name__
        fraction, width = self.target_parameter_fraction, self.width_multiplier
        if not (_is_number(fraction) and 0 <= fraction <= 1):
            raise ValueError(
                f"{name}.target_parameter_fraction must be in [0, 1] (e.g. 0.25; 0 to use "
                f"width_multiplier instead), got {fraction!r}."
            )
        if not (_is_number(width) and width >= 0):
            raise ValueError(f"{name}.width_multiplier must be a number >= 0, got {width!r}.")
        if (fraction > 0) == (width > 0):
            raise ValueError(
                f"{name}: set exactly one of target_parameter_fraction (> 0) and "
                f"width_multiplier (> 0), got {fraction!r} and {width!r}; e.g. "
                "width_multiplier=0.5 needs target_parameter_fraction=0."
            )
        for field in ("depth_multiplier", "heads_multiplier", "temperature", "learning_rate"):
            value = getattr(self, field)
            if not (_is_number(value) and value > 0):
                raise ValueError(f"{name}.{field} must be a finite number > 0, got {value!r}.")
        if not (_is_number(self.alpha) and 0 <= self.alpha <= 1):
            raise ValueError(
                f"{name}.alpha must be in [0, 1] (weight of the soft targets; 0.9 is typical), "
                f"got {self.alpha!r}."
            )
        if not (_is_number(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(
                f"{name}.weight_decay must be a number >= 0, got {self.weight_decay!r}."
            )
        for field in ("epochs", "batch_size", "patience_epochs"):
            value = getattr(self, field)
            if not (_is_int(value) and value >= 1):
                raise ValueError(f"{name}.{field} must be an integer >= 1, got {value!r}.")
        if not _is_int(self.seed):
            raise ValueError(f"{name}.seed must be an integer, got {self.seed!r}.")

    def train_config(self, epochs: int) -> TrainConfig:
        """The :class:`~satcompress.training.TrainConfig` of ``epochs`` epochs of training."""
        return TrainConfig(
            max_epochs=epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
            weight_decay=self.weight_decay, patience_epochs=self.patience_epochs, seed=self.seed,
        )


@dataclasses.dataclass(frozen=True)
class HintonKDConfig(DistillSettings):
    """Hinton et al.'s (2015) knowledge distillation (stage ``hinton_kd``); ``alpha=0`` is
    the no-teacher baseline. All settings: :class:`DistillSettings`."""


@dataclasses.dataclass(frozen=True)
class FitNetsConfig(DistillSettings):
    """FitNets (Romero et al. 2015): hint training, then Hinton KD (stage ``fitnets``).

    Attributes
    ----------
    hint_epochs : int
        Epochs of stage 1 (hint loss only), before ``epochs`` of KD.
    student_hint_layer, teacher_hint_layer : str
        Module names (as in ``named_modules()``) of the guided and hint layers; "" picks the
        middle block (:func:`~satcompress.distill.hints.default_hint_layer`).
    """

    hint_epochs: int = 2
    student_hint_layer: str = ""
    teacher_hint_layer: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (_is_int(self.hint_epochs) and self.hint_epochs >= 1):
            raise ValueError(
                f"FitNetsConfig.hint_epochs must be an integer >= 1, got {self.hint_epochs!r}."
            )
        for field in ("student_hint_layer", "teacher_hint_layer"):
            if not isinstance(getattr(self, field), str):
                raise ValueError(
                    f"FitNetsConfig.{field} must be a module name (str; '' for the middle "
                    f"block), got {getattr(self, field)!r}."
                )


@dataclasses.dataclass(frozen=True)
class DynamicKDConfig(DistillSettings):
    """DynamicKD (Zhu et al. 2023): KD with an entropy controller (stage ``dynamic_kd``).

    Attributes
    ----------
    controller_learning_rate : float
        Step size of the controller's gradient step on ``log s`` (> 0), see
        :class:`~satcompress.distill.losses.EntropyController`.
    """

    controller_learning_rate: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha == 0:
            raise ValueError(
                "DynamicKDConfig.alpha must be > 0: the entropy controller acts on the "
                "soft-target term, which alpha=0 switches off."
            )
        if not (_is_number(self.controller_learning_rate) and self.controller_learning_rate > 0):
            raise ValueError(
                "DynamicKDConfig.controller_learning_rate must be a finite number > 0 (e.g. "
                f"0.05), got {self.controller_learning_rate!r}."
            )


def _start(
    model: nn.Module, config: DistillSettings, data: TaskData | None
) -> tuple[nn.Module, nn.Module, TaskData, dict[str, Any]]:
    """The frozen teacher, the seeded untrained student, the data and the report so far."""
    if data is None:
        raise ValueError(
            f"Stage {config.stage_name!r} trains a student and needs the task's data; "
            "pass data to apply()."
        )
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    depth, heads = config.depth_multiplier, config.heads_multiplier
    example = torch.from_numpy(data.train.x[:1])
    width = config.width_multiplier or width_multiplier_for_fraction(
        teacher, config.target_parameter_fraction, depth, heads, example
    )
    torch.manual_seed(config.seed)
    student = build_student(teacher, width, depth, heads, example)
    teacher_parameters, student_parameters = parameter_count(teacher), parameter_count(student)
    report = {
        "method": config.stage_name,
        "teacher_parameters": teacher_parameters,
        "student_parameters": student_parameters,
        "parameter_fraction": student_parameters / teacher_parameters,
        "width_multiplier": width,
        "depth_multiplier": depth,
        "heads_multiplier": heads,
        "temperature": config.temperature,
        "alpha": config.alpha,
    }
    return teacher, student, data, report


def _distillation_loss(
    teacher: nn.Module,
    data: TaskData,
    config: DistillSettings,
    controller: EntropyController | None = None,
) -> TrainingLoss | None:
    """The KD training loss (None, i.e. fit's class-weighted cross-entropy, when alpha = 0).

    With a controller, the soft term uses its current scale and the controller then takes
    its step on the batch.
    """
    if config.alpha == 0:
        return None
    hard_loss = class_weighted_loss(data)

    def loss(student: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        student_logits = student(inputs)
        with torch.no_grad():
            teacher_logits = teacher(inputs)
        scale = 1.0 if controller is None else controller.scale_
        value = hinton_loss(student_logits, teacher_logits, labels, hard_loss,
                            config.temperature, config.alpha, student_scale=scale)
        if controller is not None:
            controller.update(student_logits, teacher_logits)
        return value

    return loss


def _finish(
    student: nn.Module,
    teacher: nn.Module,
    data: TaskData,
    config: DistillSettings,
    report: dict[str, Any],
    controller: EntropyController | None = None,
) -> nn.Module:
    """Distillation training of ``student`` (in place); the report goes onto the result."""
    student = fit(student, data, config.train_config(config.epochs),
                  loss_fn=_distillation_loss(teacher, data, config, controller),
                  copy_model=False, description=f"{config.stage_name} student")
    report["epochs"] = config.epochs
    setattr(student, DISTILL_REPORT_ATTRIBUTE, report)
    return student.eval()


def _hint_layers(
    student: nn.Module, teacher: nn.Module, data: TaskData, config: FitNetsConfig
) -> tuple[str, str, dict[str, str]]:
    return hint_layers(student, teacher, torch.from_numpy(data.train.x[:2]),
                       config.student_hint_layer, config.teacher_hint_layer)


def _refusal(model: nn.Module, config: DistillSettings, data: TaskData | None) -> str | None:
    """Why no student (or, for FitNets, no hint layer pair) can be derived from ``model``.

    Builds the student as the stage would (global random state untouched); None without
    data, which the stage itself asks for.
    """
    if data is None:
        return None
    try:
        with torch.random.fork_rng(devices=[]):
            teacher, student, data, _ = _start(model, config, data)
            if isinstance(config, FitNetsConfig):
                student_layer, teacher_layer, _ = _hint_layers(student, teacher, data, config)
                hint_regressor(student, teacher, student_layer, teacher_layer,
                               torch.from_numpy(data.train.x[:2]))
    except ValueError as error:
        return str(error)
    return None


@register_stage("hinton_kd", check=_refusal)
def hinton_kd(model: nn.Module, config: HintonKDConfig, data: TaskData | None) -> nn.Module:
    """Train a student of ``model`` (the teacher) with Hinton et al.'s soft targets.

    Returns the trained student in eval mode; its ``distill_report_`` holds ``method``,
    ``teacher_parameters``, ``student_parameters``, ``parameter_fraction``,
    ``width_multiplier``, ``depth_multiplier``, ``heads_multiplier``, ``temperature``,
    ``alpha`` and ``epochs``.
    """
    teacher, student, data, report = _start(model, config, data)
    return _finish(student, teacher, data, config, report)


@register_stage("fitnets", check=_refusal)
def fitnets(model: nn.Module, config: FitNetsConfig, data: TaskData | None) -> nn.Module:
    """FitNets: hint training of the student's guided layer, then Hinton KD.

    The regressor is discarded after stage 1. The report adds ``student_hint_layer``,
    ``teacher_hint_layer``, ``hint_layers_skipped`` (candidate layers of a traced teacher
    passed over, with the reason; see :func:`~satcompress.distill.hints.hint_layers`),
    ``hint_epochs`` and the validation hint loss before and after stage 1
    (``hint_loss_before``, ``hint_loss_after``).
    """
    teacher, student, data, report = _start(model, config, data)
    student_layer, teacher_layer, skipped = _hint_layers(student, teacher, data, config)
    regressor = hint_regressor(student, teacher, student_layer, teacher_layer,
                               torch.from_numpy(data.train.x[:2]))
    layers = (student_layer, teacher_layer)
    report.update(
        student_hint_layer=student_layer,
        teacher_hint_layer=teacher_layer,
        hint_layers_skipped=skipped,
        hint_epochs=config.hint_epochs,
        hint_loss_before=mean_hint_loss(student, teacher, regressor, data.val.x, *layers),
    )
    fit_hints(student, teacher, regressor, data, config.train_config(config.hint_epochs), *layers)
    report["hint_loss_after"] = mean_hint_loss(student, teacher, regressor, data.val.x, *layers)
    return _finish(student, teacher, data, config, report)


@register_stage("dynamic_kd", check=_refusal)
def dynamic_kd(model: nn.Module, config: DynamicKDConfig, data: TaskData | None) -> nn.Module:
    """Hinton KD with DynamicKD's entropy controller on the student's logits.

    The report adds ``controller_scale`` (the scale ``s`` after the last training step; the
    student's weights are those of its best validation epoch) and ``controller_scale_range``
    (the minimum and maximum of ``s`` over the steps).
    """
    teacher, student, data, report = _start(model, config, data)
    controller = EntropyController(config.temperature, config.controller_learning_rate)
    student = _finish(student, teacher, data, config, report, controller)
    report.update(
        controller_scale=controller.scale_,
        controller_scale_range=[min(controller.history_), max(controller.history_)],
    )
    return student


def distill_report(model: nn.Module) -> dict[str, Any]:
    """A copy of the report a distillation stage stored on the student ``model``.

    Raises
    ------
    ValueError
        If ``model`` was not returned by a satcompress distillation stage.
    """
    return stage_report(model, DISTILL_REPORT_ATTRIBUTE, "distillation", "a satcompress.distill stage")
