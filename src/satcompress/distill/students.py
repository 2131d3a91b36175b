"""Students for distillation: narrower and shallower copies of a teacher's own architecture.

A distillation stage receives only the teacher (``apply(model, config, data)``), so the student
is derived from the teacher itself: the same architecture with every width scaled by
``width_multiplier`` and the number of blocks by ``depth_multiplier`` (the width/depth
multipliers of MobileNets, Howard et al. 2017); a transformer's number of attention heads is
scaled by ``heads_multiplier`` (attention over every pair of time steps is what dominates a
small transformer's time). :func:`width_multiplier_for_fraction` picks the width that brings
the student closest to a target fraction of the teacher's parameters (e.g. 1/4 or 1/10).

:class:`~satcompress.networks.ResidualMLP` (the flare model) and
:class:`~satcompress.networks.T2Transformer` (the transient model) have exact builders that
read the hyper-parameters off their layers. Any other classifier is traced on an example
input and cut down from a copy of itself (:mod:`satcompress.distill.generic`): fewer repeated
blocks, fewer channels in every group Torch-Pruning can resize, fresh weights.
"""

from __future__ import annotations

import torch
from torch import nn

from satcompress.distill.generic import StudentTemplate
from satcompress.networks import ResidualMLP, T2Transformer

__all__ = [
    "parameter_count",
    "build_student",
    "width_candidates",
    "width_multiplier_for_fraction",
]

_MAX_FRACTION_ERROR = 1.5
""":func:`width_multiplier_for_fraction` refuses a best student more than this factor away
from the target parameter count (the target cannot be reached at that depth)."""

_MAX_GENERIC_WIDTHS = 64
"""Most width candidates offered for a traced (non-reference) teacher."""


def parameter_count(model: nn.Module) -> int:
    """Number of parameters of ``model`` (a shared parameter once); works on the meta device."""
    return sum(parameter.numel() for parameter in model.parameters())


def _scaled(value: int, multiplier: float) -> int:
    return max(1, round(value * multiplier))


def _check_multipliers(width_multiplier: float, depth_multiplier: float,
                       heads_multiplier: float) -> None:
    for name, value in (("width_multiplier", width_multiplier),
                        ("depth_multiplier", depth_multiplier),
                        ("heads_multiplier", heads_multiplier)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(
                f"build_student: {name} must be a number > 0 (e.g. 0.5 halves it), got {value!r}."
            )


def _residual_mlp_student(
    teacher: ResidualMLP, width_multiplier: float, depth_multiplier: float
) -> ResidualMLP:
    first = teacher.blocks[0]
    return ResidualMLP(
        n_features=teacher.stem.in_features,
        n_classes=teacher.head.out_features,
        width=_scaled(teacher.stem.out_features, width_multiplier),
        depth=_scaled(len(teacher.blocks), depth_multiplier),
        hidden=_scaled(first.fc1.out_features, width_multiplier),
        dropout=first.drop.p,
    )


def _t2_student(
    teacher: T2Transformer, width_multiplier: float, depth_multiplier: float,
    heads_multiplier: float,
) -> T2Transformer:
    first = teacher.blocks[0]
    n_heads = _scaled(first.attention.n_heads, heads_multiplier)
    d_model = teacher.embedding.out_channels
    return T2Transformer(
        n_timesteps=teacher.n_timesteps,
        n_channels=teacher.n_channels,
        n_classes=teacher.head.out_features,
        d_model=n_heads * _scaled(d_model / n_heads, width_multiplier),
        n_heads=n_heads,
        ff_dim=_scaled(first.ff1.out_features, width_multiplier),
        n_blocks=_scaled(len(teacher.blocks), depth_multiplier),
        dropout=first.dropout1.p,
    )


def _template(
    teacher: nn.Module, example_input: torch.Tensor | None, width_multiplier: float,
    depth_multiplier: float,
) -> StudentTemplate:
    """The traced template of a non-reference teacher (after checking its arguments)."""
    what = type(teacher).__name__
    if example_input is None:
        raise ValueError(
            f"build_student: a student of a {what} is derived by tracing the teacher (only "
            "ResidualMLP and T2Transformer have exact builders); pass example_input, one input "
            "batch such as torch.from_numpy(data.train.x[:1])."
        )
    for name, value in (("width_multiplier", width_multiplier),
                        ("depth_multiplier", depth_multiplier)):
        if value > 1:
            raise ValueError(
                f"build_student: {name} must be <= 1 for a {what}: its student is cut down "
                f"from a copy of the teacher, which cannot grow; got {value!r}."
            )
    return StudentTemplate(teacher, depth_multiplier, example_input)


def _narrowing(template: StudentTemplate, teacher: nn.Module) -> str:
    """What a traced student cannot narrow, and why ("" if nothing), for error messages."""
    reasons = "; ".join(f"{name}: {why}" for name, why in template.full_width.items())
    if not template.groups:
        return (f"no channel group of the {type(teacher).__name__} can be narrowed "
                f"({reasons or 'it has none'})")
    return f"left at full width: {reasons}" if reasons else ""


def _widths(units: int) -> list[float]:
    return [k / units for k in range(1, units + 1)]


def build_student(
    teacher: nn.Module, width_multiplier: float = 0.5, depth_multiplier: float = 1.0,
    heads_multiplier: float = 1.0, example_input: torch.Tensor | None = None,
) -> nn.Module:
    """A freshly initialised, scaled copy of the teacher's architecture.

    Parameters
    ----------
    teacher : nn.Module
        The classifier to shrink; never modified, and its weights are never reused.
    width_multiplier : float
        ResidualMLP: scales the residual width and the blocks' hidden width. T2Transformer:
        scales ``d_model`` (rounded to a multiple of the student's number of heads, at least
        one feature per head) and the feed-forward width. Any other model: scales every
        channel group Torch-Pruning can resize (per attention head where the group holds
        ``nn.MultiheadAttention`` channels), at most 1. Every width is rounded and at
        least 1.
    depth_multiplier : float
        Scales the number of residual / transformer blocks, or of any other model's runs of
        repeated blocks (rounded, at least 1; at most 1 for another model).
    heads_multiplier : float
        Scales the number of attention heads (rounded, at least 1; a traced student keeps at
        most the teacher's). A model without heads ignores it (so one recipe serves every
        task).
    example_input : Tensor, optional
        One input batch (e.g. ``x[:1]``); needed to trace any model but the two reference
        architectures, which ignore it.

    Returns
    -------
    nn.Module
        A new model of the teacher's class in training mode; input and output shapes,
        class count and dropout rates are the teacher's. Initialised from torch's global
        random state (seed it for a repeatable student). A traced student keeps the
        teacher's module names (see :mod:`satcompress.distill.generic` for the exceptions).

    Raises
    ------
    ValueError
        If a multiplier is not > 0, or (for a traced teacher) ``example_input`` is missing,
        the width or depth multiplier is above 1, or no channel group can be narrowed.
    """
    _check_multipliers(width_multiplier, depth_multiplier, heads_multiplier)
    if isinstance(teacher, ResidualMLP):  # no attention heads to scale
        return _residual_mlp_student(teacher, width_multiplier, depth_multiplier)
    if isinstance(teacher, T2Transformer):
        return _t2_student(teacher, width_multiplier, depth_multiplier, heads_multiplier)
    template = _template(teacher, example_input, width_multiplier, depth_multiplier)
    if width_multiplier < 1 and not template.groups:
        raise ValueError(
            f"build_student: {_narrowing(template, teacher)}; distil into a student you build "
            "yourself with the losses in satcompress.distill.losses."
        )
    return template.build(width_multiplier, heads_multiplier)


def width_candidates(
    teacher: nn.Module, example_input: torch.Tensor | None = None
) -> list[float]:
    """Width multipliers in (0, 1] giving distinct students of ``teacher``, ascending.

    ``k / n`` for ``k = 1 .. n``, where ``n`` is the teacher's residual width (ResidualMLP),
    per-head width (T2Transformer) or, for a traced teacher (``example_input`` needed), the
    channels of its widest resizable group (per head for attention), at most 64.
    """
    if isinstance(teacher, ResidualMLP):
        return _widths(teacher.stem.out_features)
    if isinstance(teacher, T2Transformer):
        return _widths(teacher.embedding.out_channels // teacher.blocks[0].attention.n_heads)
    template = _template(teacher, example_input, 1.0, 1.0)
    return _widths(min(template.width_units, _MAX_GENERIC_WIDTHS))


def width_multiplier_for_fraction(
    teacher: nn.Module, target_parameter_fraction: float, depth_multiplier: float = 1.0,
    heads_multiplier: float = 1.0, example_input: torch.Tensor | None = None,
) -> float:
    """The width multiplier whose student has the parameter count closest to the target.

    The target is ``target_parameter_fraction x parameters(teacher)`` at the given depth.
    A student's parameter count grows monotonically with its width, so a bisection over
    :func:`width_candidates` finds the two candidates around the target and the closer one
    (in absolute parameter count) is returned. Reference students are counted on the meta
    device; a traced teacher's are cut down on the CPU (without initialising them).

    Parameters
    ----------
    teacher : nn.Module
    target_parameter_fraction : float
        In (0, 1], e.g. 0.25 or 0.1.
    depth_multiplier, heads_multiplier : float
        Depth (and number of heads) of the student, fixed while the width is searched.
    example_input : Tensor, optional
        Needed for a teacher other than ResidualMLP and T2Transformer (see
        :func:`build_student`).

    Raises
    ------
    ValueError
        If the fraction is outside (0, 1], a traced teacher cannot be narrowed (see
        :func:`build_student`), or the closest student is more than a factor 1.5 away from
        the target (too few parameters left for even the narrowest student at this depth,
        or too many for the widest): lower or raise ``depth_multiplier``.
    """
    if isinstance(target_parameter_fraction, bool) or not isinstance(
        target_parameter_fraction, (int, float)
    ) or not 0 < target_parameter_fraction <= 1:
        raise ValueError(
            "target_parameter_fraction must be in (0, 1] (e.g. 0.25 for a quarter of the "
            f"teacher's parameters), got {target_parameter_fraction!r}."
        )
    _check_multipliers(1.0, depth_multiplier, heads_multiplier)
    notes = ""
    if isinstance(teacher, (ResidualMLP, T2Transformer)):
        candidates = width_candidates(teacher)

        def student_parameters(width: float) -> int:
            with torch.device("meta"):  # shapes only: no memory, no initialisation cost
                return parameter_count(
                    build_student(teacher, width, depth_multiplier, heads_multiplier))
    else:
        template = _template(teacher, example_input, 1.0, depth_multiplier)
        candidates = _widths(min(template.width_units, _MAX_GENERIC_WIDTHS))
        notes = _narrowing(template, teacher)

        def student_parameters(width: float) -> int:
            return parameter_count(template.build(width, heads_multiplier, initialise=False))

    target = target_parameter_fraction * parameter_count(teacher)
    low, high = 0, len(candidates) - 1
    while low < high:  # first candidate with at least `target` parameters (or the widest)
        middle = (low + high) // 2
        if student_parameters(candidates[middle]) >= target:
            high = middle
        else:
            low = middle + 1
    nearby = candidates[max(0, low - 1) : low + 1]
    counts = {width: student_parameters(width) for width in nearby}
    best = min(nearby, key=lambda width: abs(counts[width] - target))
    if not target / _MAX_FRACTION_ERROR <= counts[best] <= target * _MAX_FRACTION_ERROR:
        raise ValueError(
            f"No student of this {type(teacher).__name__} at depth_multiplier={depth_multiplier}, "
            f"heads_multiplier={heads_multiplier} "
            f"comes near {target_parameter_fraction} of its {parameter_count(teacher)} parameters "
            f"(closest: {counts[best]} parameters at width_multiplier={best:.4g}"
            f"{'; ' + notes if notes else ''}); "
            "change depth_multiplier, heads_multiplier or the target fraction."
        )
    return best
