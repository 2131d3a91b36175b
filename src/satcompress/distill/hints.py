"""FitNets hints: train a student's middle layer to predict the teacher's middle layer.

"FitNets: Hints for Thin Deep Nets" (Romero, Ballas, Kahou, Chassang, Gatta & Bengio 2015):
the output of a teacher layer (the *hint*) supervises a student layer (the *guided* layer)
through a small *regressor* that maps the student's features to the teacher's width. Stage 1
trains the student up to the guided layer, together with the regressor, on the hint loss
``mean((regressor(student feature) - teacher feature)^2)``; stage 2 trains the whole student
with knowledge distillation (:mod:`satcompress.distill.stages`). The regressor exists only
for stage 1 and is never part of the student.

Features are read with forward hooks, removed as soon as each forward pass is done. The
regressor is a ``Linear`` on the one axis where the two features differ in size (the last
axis when they agree): for a ResidualMLP's ``(batch, width)`` features it is Romero et al.'s
fully connected regressor, for a transformer's ``(batch, steps, d_model)`` features the same
``Linear`` applied at every time step, and for a convolution's ``(batch, channels, ...)``
features a 1x1 convolution (their convolutional regressor, for features of equal extent).

Hint layers: ResidualMLP and T2Transformer guide their middle block
(:func:`default_hint_layer`). A student derived from any other model keeps the teacher's
module names, so :func:`hint_layers` pairs a teacher layer with the student layer of the same
name: the middle one of the repeated blocks (else of the layers with parameters, the last one
excepted) whose outputs line up; every candidate passed over is reported with the reason.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from satcompress.distill.generic import repeated_blocks
from satcompress.networks import ResidualMLP, T2Transformer
from satcompress.tasks.base import TaskData
from satcompress.training import TrainConfig, fit

__all__ = [
    "default_hint_layer",
    "hint_layers",
    "layer_output",
    "hint_regressor",
    "hint_loss",
    "mean_hint_loss",
    "fit_hints",
]


def default_hint_layer(model: nn.Module) -> str:
    """The name of the middle block, whose output is the default hint / guided layer.

    ``blocks.{(n - 1) // 2}`` for a ResidualMLP or T2Transformer with ``n`` blocks: the
    output of the 2nd of 4 residual blocks, or of the 1st of 2 transformer blocks (Romero et
    al. guide the student's middle layer with the teacher's middle layer).

    Raises
    ------
    ValueError
        For other models: name the layers in the stage's config instead.
    """
    if isinstance(model, (ResidualMLP, T2Transformer)):
        return f"blocks.{(len(model.blocks) - 1) // 2}"
    raise ValueError(
        f"No default hint layer for a {type(model).__name__}; name the student's and the "
        "teacher's hint layers (module names from model.named_modules()) in the config."
    )


@dataclasses.dataclass(frozen=True)
class _Seen:
    """What a module did on one forward pass: when it first ran, how often, its output shape
    (None if not one tensor)."""

    order: int
    calls: int
    shape: torch.Size | None


@torch.no_grad()
def _seen(model: nn.Module, example_input: torch.Tensor) -> dict[str, _Seen]:
    """Module name -> :class:`_Seen`, from one forward pass in eval mode (mode restored)."""
    seen: dict[str, _Seen] = {}
    names = {module: name for name, module in model.named_modules()}

    def record(module: nn.Module, _: tuple, output: object) -> None:
        name = names[module]
        previous = seen.get(name, _Seen(len(seen), 0, None))
        shape = output.shape if isinstance(output, torch.Tensor) else None
        seen[name] = _Seen(previous.order, previous.calls + 1, shape)

    was_training = model.training
    handles = [module.register_forward_hook(record) for module in model.modules()]
    try:
        model.eval()(example_input)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return seen


def _regression_axis(student: torch.Size, teacher: torch.Size) -> int | None:
    """The axis a hint regressor maps (the one whose size differs, else the last), or None
    if the shapes differ in rank or in more than one axis."""
    if len(student) != len(teacher) or not len(student):
        return None
    differing = [axis for axis, (a, b) in enumerate(zip(student, teacher)) if a != b]
    if len(differing) > 1:
        return None
    return differing[0] if differing else len(student) - 1


def _mismatch(name: str, student: dict[str, _Seen], teacher: dict[str, _Seen]) -> str | None:
    """Why the student's and the teacher's layer ``name`` cannot be paired (None if they can)."""
    if name not in student:
        return "the student has no such layer (or it does not run)"
    for model, seen in (("teacher", teacher[name]), ("student", student[name])):
        if seen.calls > 1:
            return f"it runs {seen.calls} times in the {model}, so its output is ambiguous"
        if seen.shape is None:
            return f"its output in the {model} is not a single tensor"
    if _regression_axis(student[name].shape, teacher[name].shape) is None:
        return (f"outputs {tuple(student[name].shape)} (student) and "
                f"{tuple(teacher[name].shape)} (teacher) differ in more than one axis")
    return None


def hint_layers(
    student: nn.Module,
    teacher: nn.Module,
    example_input: torch.Tensor,
    student_layer: str = "",
    teacher_layer: str = "",
) -> tuple[str, str, dict[str, str]]:
    """The guided (student) and hint (teacher) layers, and the candidates passed over (why).

    Names given are kept. ResidualMLP and T2Transformer default to :func:`default_hint_layer`.
    For any other model a name left empty is the other one's name, or, with both empty, the
    middle of the teacher's layers that line up with the student's layer of the same name
    (outputs of the same rank differing in at most one axis; one call each): its repeated
    blocks (:func:`~satcompress.distill.generic.repeated_blocks`), else its layers with
    parameters in the order they run, the last one (the classifier) excepted.

    Raises
    ------
    ValueError
        If no candidate lines up; the message gives each candidate's reason.
    """
    if isinstance(teacher, (ResidualMLP, T2Transformer)):
        return (student_layer or default_hint_layer(student),
                teacher_layer or default_hint_layer(teacher), {})
    if student_layer or teacher_layer:
        return student_layer or teacher_layer, teacher_layer or student_layer, {}
    teacher_seen, student_seen = _seen(teacher, example_input), _seen(student, example_input)
    candidates = [name for name in repeated_blocks(teacher) if name in teacher_seen]
    if not candidates:
        weighted = [name for name, module in teacher.named_modules()
                    if name in teacher_seen and next(module.parameters(recurse=False), None)
                    is not None]
        candidates = sorted(weighted, key=lambda name: teacher_seen[name].order)[:-1]
    skipped = {name: why for name in candidates
               if (why := _mismatch(name, student_seen, teacher_seen)) is not None}
    matched = [name for name in candidates if name not in skipped]
    if not matched:
        reasons = "; ".join(f"{name}: {why}" for name, why in skipped.items()) or (
            "it has no repeated block and no hidden layer with parameters")
        raise ValueError(
            f"No layer of the {type(student).__name__} student lines up with the teacher's "
            f"layer of the same name ({reasons}). Name the layers in student_hint_layer and "
            "teacher_hint_layer, or distil with hinton_kd instead of fitnets."
        )
    layer = matched[(len(matched) - 1) // 2]
    return layer, layer, skipped


def _submodule(model: nn.Module, layer: str) -> nn.Module:
    modules = dict(model.named_modules())
    if not layer or layer not in modules:
        raise ValueError(
            f"{type(model).__name__} has no layer {layer!r}; its layers are "
            f"{[name for name in modules if name][:40]}."
        )
    return modules[layer]


@contextlib.contextmanager
def _captured(module: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    store: dict[str, torch.Tensor] = {}

    def keep(_: nn.Module, __: tuple, output: torch.Tensor) -> None:
        store["output"] = output

    handle = module.register_forward_hook(keep)
    try:
        yield store
    finally:
        handle.remove()


def layer_output(model: nn.Module, layer: str, inputs: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on ``inputs`` and return the output of its submodule ``layer``.

    The hook that reads it is removed before returning. Gradient tracking and train/eval
    mode are the caller's.
    """
    with _captured(_submodule(model, layer)) as store:
        model(inputs)
    output = store.get("output")
    if not isinstance(output, torch.Tensor):
        raise ValueError(
            f"Layer {layer!r} of {type(model).__name__} "
            f"{'did not run' if output is None else 'does not return a single tensor'}; "
            "choose a layer whose output is one tensor (e.g. a block)."
        )
    return output


class _AxisLinear(nn.Linear):
    """A ``Linear`` applied along ``axis`` (e.g. the channel axis of a convolution's output:
    a 1x1 convolution)."""

    def __init__(self, in_features: int, out_features: int, axis: int) -> None:
        super().__init__(in_features, out_features)
        self.axis = axis

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features.movedim(self.axis, -1)).movedim(-1, self.axis)


def hint_regressor(
    student: nn.Module,
    teacher: nn.Module,
    student_layer: str,
    teacher_layer: str,
    example_input: torch.Tensor,
) -> nn.Linear:
    """A freshly initialised ``Linear(student width, teacher width)`` for the two layers.

    The widths are read from the layers' outputs on ``example_input``, which must have the
    same number of axes and differ in at most one: the regressor maps that axis (the last one
    if none differs), e.g. the features of an MLP, of every time step of a transformer, or
    the channels of a convolution.
    """
    with torch.no_grad():
        student_feature = layer_output(student, student_layer, example_input)
        teacher_feature = layer_output(teacher, teacher_layer, example_input)
    axis = _regression_axis(student_feature.shape, teacher_feature.shape)
    if axis is None:
        raise ValueError(
            f"Hint layers do not line up: student {student_layer!r} gives "
            f"{tuple(student_feature.shape)}, teacher {teacher_layer!r} "
            f"{tuple(teacher_feature.shape)}; they must have the same axes and differ in at "
            "most one (the features or channels)."
        )
    width, target = student_feature.shape[axis], teacher_feature.shape[axis]
    if axis == student_feature.dim() - 1:
        return nn.Linear(width, target)
    return _AxisLinear(width, target, axis)


def hint_loss(
    student: nn.Module,
    teacher: nn.Module,
    regressor: nn.Module,
    inputs: torch.Tensor,
    student_layer: str,
    teacher_layer: str,
) -> torch.Tensor:
    """FitNets' hint loss: mean squared error of ``regressor(student feature)`` against the
    teacher feature (Romero et al.'s L2 loss, averaged over every feature value).

    The teacher runs under ``torch.no_grad`` (in whatever mode it is in: pass it in eval).
    """
    with torch.no_grad():
        target = layer_output(teacher, teacher_layer, inputs)
    return F.mse_loss(regressor(layer_output(student, student_layer, inputs)), target)


@torch.no_grad()
def mean_hint_loss(
    student: nn.Module,
    teacher: nn.Module,
    regressor: nn.Module,
    x: np.ndarray,
    student_layer: str,
    teacher_layer: str,
    batch_size: int = 512,
) -> float:
    """:func:`hint_loss` over all of ``x``, with the student in eval mode (restored after)."""
    was_training = student.training
    student.eval()
    try:
        total = 0.0
        for start in range(0, len(x), batch_size):
            inputs = torch.from_numpy(x[start : start + batch_size])
            loss = hint_loss(student, teacher, regressor, inputs, student_layer, teacher_layer)
            total += loss.item() * len(inputs)
    finally:
        student.train(was_training)
    return total / len(x)


class _LastWeights:
    """``fit(after_step=...)`` callback keeping the model's weights after the final step."""

    def __init__(self, n_steps: int) -> None:
        self.n_steps = n_steps

    def __call__(self, model: nn.Module) -> None:
        self.steps_ = getattr(self, "steps_", 0) + 1
        if self.steps_ == self.n_steps:
            self.state_ = copy.deepcopy(model.state_dict())


def fit_hints(
    student: nn.Module,
    teacher: nn.Module,
    regressor: nn.Module,
    data: TaskData,
    train_config: TrainConfig,
    student_layer: str,
    teacher_layer: str,
) -> nn.Module:
    """FitNets stage 1: train ``student`` and ``regressor`` (both in place) on the hint loss.

    Runs :func:`satcompress.training.fit` for ``train_config.max_epochs`` epochs with the
    regressor's parameters as ``extra_parameters``. Only the student's layers up to the
    guided layer receive gradients, so the layers after it are left as they are. Early
    stopping and fit's restoring of the best validation cross-entropy are bypassed (that
    criterion means nothing while the head is untrained): the student keeps its weights
    after the last step, consistent with the regressor's.

    Returns
    -------
    nn.Module
        ``student`` itself, in eval mode.
    """
    config = dataclasses.replace(train_config, patience_epochs=train_config.max_epochs)
    keeper = _LastWeights(config.max_epochs * -(-len(data.train) // config.batch_size))
    fit(
        student, data, config,
        loss_fn=lambda net, inputs, _: hint_loss(
            net, teacher, regressor, inputs, student_layer, teacher_layer
        ),
        extra_parameters=regressor.parameters(),
        after_step=keeper,
        copy_model=False,
        description="FitNets hints",
    )
    student.load_state_dict(keeper.state_)
    return student.eval()
