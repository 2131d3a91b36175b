"""FitNets hints: train a student's middle layer to predict the teacher's middle layer.

"FitNets: Hints for Thin Deep Nets" (Romero, Ballas, Kahou, Chassang, Gatta & Bengio 2015):
the output of a teacher layer (the *hint*) supervises a student layer (the *guided* layer)
through a small *regressor* that maps the student's features to the teacher's width. Stage 1
trains the student up to the guided layer, together with the regressor, on the hint loss
``mean((regressor(student feature) - teacher feature)^2)``; stage 2 trains the whole student
with knowledge distillation (:mod:`satcompress.distill.stages`). The regressor exists only
for stage 1 and is never part of the student.

Features are read with forward hooks, removed as soon as each forward pass is done. The
regressor is a ``Linear`` on the last axis: for a ResidualMLP's ``(batch, width)`` features
it is Romero et al.'s fully connected regressor, for a transformer's ``(batch, steps,
d_model)`` features the same ``Linear`` applied at every time step (the sequence analogue of
their convolutional regressor).
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

from satcompress.networks import ResidualMLP, T2Transformer
from satcompress.tasks.base import TaskData
from satcompress.training import TrainConfig, fit

__all__ = [
    "default_hint_layer",
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


def hint_regressor(
    student: nn.Module,
    teacher: nn.Module,
    student_layer: str,
    teacher_layer: str,
    example_input: torch.Tensor,
) -> nn.Linear:
    """A freshly initialised ``Linear(student width, teacher width)`` for the two layers.

    The widths are read from the layers' outputs on ``example_input``; every axis but the
    last must agree (e.g. the same number of time steps).
    """
    with torch.no_grad():
        student_feature = layer_output(student, student_layer, example_input)
        teacher_feature = layer_output(teacher, teacher_layer, example_input)
    if student_feature.shape[:-1] != teacher_feature.shape[:-1]:
        raise ValueError(
            f"Hint layers do not line up: student {student_layer!r} gives "
            f"{tuple(student_feature.shape)}, teacher {teacher_layer!r} "
            f"{tuple(teacher_feature.shape)}; all axes but the last must agree."
        )
    return nn.Linear(student_feature.shape[-1], teacher_feature.shape[-1])


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
