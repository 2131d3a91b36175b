"""Stage ``low_rank``: factor layers into thinner chains, then fine-tune (``fit``).

Ranks come from :func:`satcompress.lowrank.select_ranks` (energy kept, a fixed rank, or a
parameter or MAC budget for the whole model) or are given per layer; the layers are replaced by
:func:`satcompress.lowrank.factorize_model` (SVD for Linear and pointwise convolutions,
Tucker-2 or CP for other convolutions) and the model is fine-tuned briefly with
:func:`satcompress.training.fit`, as Kim et al. (2016) and Lebedev et al. (2015) fine-tune
after decomposing. The result holds only plain ``nn.Linear``/``nn.Conv*d`` layers in
``nn.Sequential`` chains, so it trains, exports to ONNX and runs anywhere.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
from torch import nn

from satcompress.lowrank.plan import (
    CONV_METHODS,
    RANK_CRITERIA,
    RankPlan,
    factorizable_layers,
    factorize_model,
    select_ranks,
)
from satcompress.finetune import FinetuneSettings
from satcompress.stages import (
    check_integer,
    check_layer_settings,
    check_module_names,
    register_stage,
    stage_report,
)
from satcompress.tasks.base import TaskData

__all__ = ["LOWRANK_REPORT_ATTRIBUTE", "LowRankConfig", "low_rank", "lowrank_report"]

LOWRANK_REPORT_ATTRIBUTE = "lowrank_report_"
"""Model attribute where :func:`low_rank` leaves its report (a JSON-able dict)."""


@dataclasses.dataclass(frozen=True)
class LowRankConfig(FinetuneSettings):
    """Settings of stage ``low_rank`` (fine-tuning fields: see ``FinetuneSettings``).

    Attributes
    ----------
    rank_by : {"energy", "rank", "parameters", "macs", "layer_ranks"}
        How ranks are chosen (see :func:`satcompress.lowrank.select_ranks`); "layer_ranks":
        exactly the ranks ``layer_ranks`` gives.
    energy : float
        Fraction of the squared singular values each layer keeps (``rank_by="energy"``).
    rank : int
        Rank of every factored layer, capped per layer (``rank_by="rank"``).
    budget_ratio : float
        Largest fraction of the model's parameters or batch-1 MACs left
        (``rank_by="parameters"`` / ``"macs"``).
    conv_method : {"tucker2", "cp"}
        Decomposition of convolutions with a kernel larger than 1.
    decomposition_iterations : int
        Iteration limit of the Tucker (HOOI) or CP (ALS) solver.
    skip_layers : tuple of str
        Module names left unfactored.
    layer_ranks : tuple of (str, int)
        With ``rank_by="layer_ranks"``: the layers to factor and the rank of each (capped at
        the layer's largest rank; both Tucker-2 modes get it), e.g. ``(("blocks.0.fc1",
        32),)``, what a search chooses. Layers not named are left alone.
    """

    rank_by: str = "energy"
    energy: float = 0.9
    rank: int = 8
    budget_ratio: float = 0.5
    conv_method: str = "tucker2"
    decomposition_iterations: int = 100
    skip_layers: tuple[str, ...] = ()
    layer_ranks: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        if self.rank_by not in _STAGE_CRITERIA:
            raise ValueError(
                f"{name}.rank_by must be one of {_STAGE_CRITERIA}, got {self.rank_by!r}."
            )
        ranks = check_layer_settings(self, "layer_ranks", _check_rank)
        if bool(ranks) != (self.rank_by == "layer_ranks"):
            raise ValueError(
                f"{name}: give layer_ranks exactly when rank_by='layer_ranks' (got rank_by="
                f"{self.rank_by!r} and {len(ranks)} layer rank(s))."
            )
        for field_name in ("energy", "budget_ratio"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or not 0 < value <= 1:
                raise ValueError(
                    f"{name}.{field_name} must be a number in (0, 1] (a fraction), got {value!r}."
                )
        check_integer(self, "rank", 1)
        check_integer(self, "decomposition_iterations", 1)
        if self.conv_method not in CONV_METHODS:
            raise ValueError(
                f"{name}.conv_method must be one of {CONV_METHODS}, got {self.conv_method!r}."
            )
        check_module_names(self, "skip_layers")


_STAGE_CRITERIA = (*RANK_CRITERIA, "layer_ranks")


def _check_rank(rank: int) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LowRankConfig.layer_ranks values must be integers >= 1, got {rank!r}.")


def _explicit_plan(model: nn.Module, config: LowRankConfig) -> RankPlan:
    """The plan ``config.layer_ranks`` names, each rank capped per mode."""
    candidates = {candidate.name: candidate for candidate in
                  factorizable_layers(model, config.conv_method, config.skip_layers,
                                      spectra=False)}
    unknown = sorted(set(dict(config.layer_ranks)) - set(candidates))
    if unknown:
        raise ValueError(
            f"low_rank layer_ranks names {unknown}, which are not factorizable layers of "
            f"{type(model).__name__}; they are {sorted(candidates)}."
        )
    return {name: candidates[name].ranks_fixed(rank) for name, rank in config.layer_ranks}


def _nothing_to_factorise(
    model: nn.Module, config: LowRankConfig, data: TaskData | None
) -> str | None:
    """Stage ``low_rank``'s check: why ``model`` has no layer to factorise, or None."""
    try:
        layers = factorizable_layers(model, config.conv_method, config.skip_layers,
                                     spectra=False)
    except ValueError as error:
        return str(error)
    if layers:
        return None
    return (f"the {type(model).__name__} has no Linear or convolution (groups=1) layer to "
            f"factorise{' outside skip_layers' if config.skip_layers else ''}; leave this "
            "stage out.")


@register_stage("low_rank", check=_nothing_to_factorise)
def low_rank(model: nn.Module, config: LowRankConfig, data: TaskData | None) -> nn.Module:
    """Factor the layers of a copy of ``model`` as ``config`` says, then fine-tune it.

    Needs ``data`` for ``rank_by="macs"`` (an example input) and unless
    ``finetune_epochs == 0``. The report is left in :data:`LOWRANK_REPORT_ATTRIBUTE`.
    """
    if config.rank_by == "macs" and data is None:
        raise ValueError("low_rank with rank_by='macs' needs the task's data to count MACs.")
    model = copy.deepcopy(model)
    example = None if data is None else torch.from_numpy(data.train.x[:1])
    if config.rank_by == "layer_ranks":
        plan = _explicit_plan(model, config)
    else:
        plan = select_ranks(
            model, config.rank_by, energy=config.energy, rank=config.rank,
            budget_ratio=config.budget_ratio, conv_method=config.conv_method,
            skip_layers=config.skip_layers, example_input=example,
        )
    layers = factorize_model(model, plan, config.conv_method, config.decomposition_iterations,
                             config.seed)
    config.finetune(model, data)
    setattr(model, LOWRANK_REPORT_ATTRIBUTE, {"rank_by": config.rank_by, "layers": layers})
    return model


def lowrank_report(model: nn.Module) -> dict[str, Any]:
    """A copy of the report :func:`low_rank` left on ``model``."""
    return stage_report(model, LOWRANK_REPORT_ATTRIBUTE, "low-rank", "stage 'low_rank'")
