"""Students for distillation: narrower and shallower copies of a teacher's own architecture.

A distillation stage receives only the teacher (``apply(model, config, data)``), so the student
is derived from the teacher itself: :func:`build_student` reads the teacher's hyper-parameters
off its layers and builds the same architecture with every width scaled by
``width_multiplier`` and the number of blocks by ``depth_multiplier`` (the width/depth
multipliers of MobileNets, Howard et al. 2017, applied to the reference architectures); a
transformer's number of attention heads is scaled by ``heads_multiplier`` (attention over
every pair of time steps is what dominates a small transformer's time).
:func:`width_multiplier_for_fraction` picks the width that brings the student closest to a
target fraction of the teacher's parameters (e.g. 1/4 or 1/10).

Supported teachers: :class:`~satcompress.networks.ResidualMLP` (the flare model) and
:class:`~satcompress.networks.T2Transformer` (the transient model).
"""

from __future__ import annotations

import torch
from torch import nn

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


def _unsupported(teacher: nn.Module) -> ValueError:
    return ValueError(
        f"Cannot derive a student from a {type(teacher).__name__}: the teacher must be a "
        "ResidualMLP or T2Transformer. Build the student yourself and train it with the "
        "losses in satcompress.distill.losses."
    )


def _width_units(teacher: nn.Module) -> int:
    """How many distinct widths a student of ``teacher`` can have up to the teacher's width."""
    if isinstance(teacher, ResidualMLP):
        return teacher.stem.out_features
    if isinstance(teacher, T2Transformer):
        return teacher.embedding.out_channels // teacher.blocks[0].attention.n_heads
    raise _unsupported(teacher)


def build_student(
    teacher: nn.Module, width_multiplier: float = 0.5, depth_multiplier: float = 1.0,
    heads_multiplier: float = 1.0,
) -> nn.Module:
    """A freshly initialised, scaled copy of the teacher's architecture.

    Parameters
    ----------
    teacher : ResidualMLP or T2Transformer
        The model to shrink; only its hyper-parameters are read (never its weights).
    width_multiplier : float
        ResidualMLP: scales the residual width and the blocks' hidden width. T2Transformer:
        scales ``d_model`` (rounded to a multiple of the student's number of heads, at least
        one feature per head) and the feed-forward width. Every width is rounded and at
        least 1.
    depth_multiplier : float
        Scales the number of residual / transformer blocks (rounded, at least 1).
    heads_multiplier : float
        T2Transformer: scales the number of attention heads (rounded, at least 1).
        A ResidualMLP has no heads and ignores it (so one recipe serves both tasks).

    Returns
    -------
    nn.Module
        A new model of the teacher's class in training mode; input and output shapes,
        class count and dropout rates are the teacher's. Initialised from torch's global
        random state (seed it for a repeatable student).

    Raises
    ------
    ValueError
        If the teacher is of another class or a multiplier is not > 0.
    """
    _check_multipliers(width_multiplier, depth_multiplier, heads_multiplier)
    if isinstance(teacher, ResidualMLP):  # no attention heads to scale
        return _residual_mlp_student(teacher, width_multiplier, depth_multiplier)
    if isinstance(teacher, T2Transformer):
        return _t2_student(teacher, width_multiplier, depth_multiplier, heads_multiplier)
    raise _unsupported(teacher)


def width_candidates(teacher: nn.Module) -> list[float]:
    """Every width multiplier in (0, 1] giving a distinct student of ``teacher``, ascending.

    ``k / n`` for ``k = 1 .. n``, where ``n`` is the teacher's residual width (ResidualMLP)
    or per-head width (T2Transformer).
    """
    units = _width_units(teacher)
    return [k / units for k in range(1, units + 1)]


def _student_parameters(
    teacher: nn.Module, width_multiplier: float, depth_multiplier: float,
    heads_multiplier: float,
) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        return parameter_count(
            build_student(teacher, width_multiplier, depth_multiplier, heads_multiplier))


def width_multiplier_for_fraction(
    teacher: nn.Module, target_parameter_fraction: float, depth_multiplier: float = 1.0,
    heads_multiplier: float = 1.0,
) -> float:
    """The width multiplier whose student has the parameter count closest to the target.

    The target is ``target_parameter_fraction x parameters(teacher)`` at the given depth.
    A student's parameter count grows monotonically with its width, so a bisection over
    :func:`width_candidates` finds the two candidates around the target and the closer one
    (in absolute parameter count) is returned.

    Parameters
    ----------
    teacher : ResidualMLP or T2Transformer
    target_parameter_fraction : float
        In (0, 1], e.g. 0.25 or 0.1.
    depth_multiplier, heads_multiplier : float
        Depth (and number of heads) of the student, fixed while the width is searched.

    Raises
    ------
    ValueError
        If the fraction is outside (0, 1], or the closest student is more than a factor 1.5
        away from the target (too few parameters left for even the narrowest student at this
        depth, or too many for the widest): lower or raise ``depth_multiplier``.
    """
    if isinstance(target_parameter_fraction, bool) or not isinstance(
        target_parameter_fraction, (int, float)
    ) or not 0 < target_parameter_fraction <= 1:
        raise ValueError(
            "target_parameter_fraction must be in (0, 1] (e.g. 0.25 for a quarter of the "
            f"teacher's parameters), got {target_parameter_fraction!r}."
        )
    candidates = width_candidates(teacher)
    target = target_parameter_fraction * parameter_count(teacher)
    low, high = 0, len(candidates) - 1
    while low < high:  # first candidate with at least `target` parameters (or the widest)
        middle = (low + high) // 2
        if _student_parameters(teacher, candidates[middle], depth_multiplier,
                               heads_multiplier) >= target:
            high = middle
        else:
            low = middle + 1
    nearby = candidates[max(0, low - 1) : low + 1]
    counts = {width: _student_parameters(teacher, width, depth_multiplier, heads_multiplier)
              for width in nearby}
    best = min(nearby, key=lambda width: abs(counts[width] - target))
    if not target / _MAX_FRACTION_ERROR <= counts[best] <= target * _MAX_FRACTION_ERROR:
        raise ValueError(
            f"No student of this {type(teacher).__name__} at depth_multiplier={depth_multiplier}, "
            f"heads_multiplier={heads_multiplier} "
            f"comes near {target_parameter_fraction} of its {parameter_count(teacher)} parameters "
            f"(closest: {counts[best]} parameters at width_multiplier={best:.4g}); "
            "change depth_multiplier, heads_multiplier or the target fraction."
        )
    return best
