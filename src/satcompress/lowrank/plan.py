"""Choosing the rank of every layer (by energy, a fixed rank, or a parameter or MAC budget)
and replacing the layers by their factorizations.

Every ``nn.Linear`` and every ``nn.Conv1d/2d/3d`` with ``groups == 1`` is a candidate: a
Linear or a pointwise (kernel size 1) convolution by truncated SVD, any other convolution by
Tucker-2 or CP (:mod:`satcompress.lowrank.conv`). A layer is factored only when its
factorization has fewer weights than it (and, for a MAC budget, fewer MACs).

Ranks by energy keep, per layer, the fraction ``energy`` of the squared singular values of the
weight (for Tucker-2: of each channel-mode unfolding of the kernel, giving ``(R_out, R_in)``;
for CP, whose rank has no such spectrum, ``max(R_out, R_in)`` of Tucker-2, a lower bound on the
CP rank of a kernel that is exact at that multilinear rank -- a heuristic; Lebedev et al. 2015
chose CP ranks by hand). A parameter or MAC budget is met by the largest single energy
fraction, shared by all layers, whose ranks fit the budget: each layer's cost can only grow
with the energy kept, so a binary search over the energies at which some rank changes finds
it exactly (one global threshold, as in the "energy" criterion of Alvarez & Salzmann 2017 and
of Zhang et al. 2016's rank selection, rather than a per-layer search).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from satcompress.lowrank.conv import cp_conv, cp_parameters, tucker2_conv, tucker2_parameters
from satcompress.lowrank.svd import (
    cumulative_energy,
    factorize_linear,
    factorize_pointwise_conv,
)
from satcompress.measure import count_macs

__all__ = [
    "RANK_CRITERIA",
    "CONV_METHODS",
    "RankPlan",
    "FactorizableLayer",
    "factorizable_layers",
    "select_ranks",
    "factorize_model",
]

RANK_CRITERIA = ("energy", "rank", "parameters", "macs")
"""How :func:`select_ranks` chooses ranks."""

CONV_METHODS = ("tucker2", "cp")
"""Decompositions of convolutions with a kernel larger than 1."""

RankPlan = dict[str, tuple[int, ...]]
"""Layer name -> ranks: ``(r,)`` for SVD and CP, ``(R_out, R_in)`` for Tucker-2."""

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _conv_output_length(length: int, kernel: int, stride: int, padding: int | str,
                        dilation: int) -> int:
    if padding == "same":
        return length
    padding = 0 if padding == "valid" else padding
    return (length + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@dataclass
class FactorizableLayer:
    """A candidate layer: its decomposition, channel-mode spectra and per-inference positions.

    Attributes
    ----------
    name : str
        Module name.
    layer : nn.Module
        The Linear or convolution.
    kind : {"svd", "tucker2", "cp"}
        How it would be factored.
    spectra : tuple of np.ndarray
        Cumulative energy fractions: of the weight's singular values (SVD), or of the output-
        and input-channel unfoldings of the kernel (Tucker-2, CP); empty when not computed
        (``factorizable_layers(..., spectra=False)``).
    input_shape : tuple of int
        Positions the layer sees per inference: ``(rows,)`` for a Linear, the input's spatial
        shape for a convolution (from one batch-1 forward pass; ones when not measured).
    """

    name: str
    layer: nn.Module
    kind: str
    spectra: tuple[np.ndarray, ...]
    input_shape: tuple[int, ...] = field(default=(1,))

    @property
    def max_ranks(self) -> tuple[int, ...]:
        if self.kind == "tucker2":
            return (self.layer.out_channels, self.layer.in_channels)
        if self.kind == "cp":
            return (max(self.layer.out_channels, self.layer.in_channels),)
        n_in, n_out = self._in_out()
        return (min(n_in, n_out),)

    def ranks_for_energy(self, energy: float) -> tuple[int, ...]:
        """Per-mode smallest ranks keeping ``energy`` of the squared singular values."""
        ranks = tuple(int(min(np.searchsorted(c, energy - 1e-12) + 1, len(c)))
                      for c in self.spectra)
        return (max(ranks),) if self.kind == "cp" else ranks

    def ranks_fixed(self, rank: int) -> tuple[int, ...]:
        """``rank`` in every mode, capped at the mode's size."""
        return tuple(min(rank, limit) for limit in self.max_ranks)

    def _in_out(self) -> tuple[int, int]:
        if isinstance(self.layer, nn.Linear):
            return self.layer.in_features, self.layer.out_features
        return self.layer.in_channels, self.layer.out_channels

    def _output_shape(self, axes: int) -> tuple[int, ...]:
        """Spatial shape after applying the convolution along the first ``axes`` axes only."""
        conv = self.layer
        shape = list(self.input_shape)
        for axis in range(axes):
            padding = conv.padding if isinstance(conv.padding, str) else conv.padding[axis]
            shape[axis] = _conv_output_length(shape[axis], conv.kernel_size[axis],
                                              conv.stride[axis], padding, conv.dilation[axis])
        return tuple(shape)

    @property
    def original_parameters(self) -> int:
        return self.layer.weight.numel()

    @property
    def original_macs(self) -> int:
        if isinstance(self.layer, nn.Linear):
            return self.input_shape[0] * self.layer.weight.numel()
        return math.prod(self._output_shape(len(self.input_shape))) * self.layer.weight.numel()

    def parameters(self, ranks: tuple[int, ...]) -> int:
        """Weights of the factorization at ``ranks`` (the bias, unchanged, excluded)."""
        n_in, n_out = self._in_out()
        if self.kind == "tucker2":
            return tucker2_parameters(self.layer, ranks)
        if self.kind == "cp":
            return cp_parameters(self.layer, ranks[0])
        return ranks[0] * (n_in + n_out)

    def macs(self, ranks: tuple[int, ...]) -> int:
        """MACs of one inference through the factorization at ``ranks``."""
        n_in, n_out = self._in_out()
        if isinstance(self.layer, nn.Linear):
            return self.input_shape[0] * ranks[0] * (n_in + n_out)
        positions_in = math.prod(self.input_shape)
        spatial = len(self.input_shape)
        positions_out = math.prod(self._output_shape(spatial))
        if self.kind == "svd":
            return positions_out * ranks[0] * (n_in + n_out)
        if self.kind == "tucker2":
            rank_out, rank_in = ranks
            kernel = math.prod(self.layer.kernel_size)
            return (positions_in * n_in * rank_in
                    + positions_out * rank_out * (rank_in * kernel + n_out))
        rank = ranks[0]
        depthwise = sum(
            rank * self.layer.kernel_size[axis] * math.prod(self._output_shape(axis + 1))
            for axis in range(spatial)
        )
        return positions_in * n_in * rank + depthwise + positions_out * rank * n_out

    def cost(self, ranks: tuple[int, ...], metric: str) -> tuple[int, bool]:
        """``(cost in metric, factored?)``: factored only where that saves weights (and MACs
        when the metric is MACs); otherwise the original layer's cost."""
        factored = self.parameters(ranks) < self.original_parameters and (
            metric != "macs" or self.macs(ranks) < self.original_macs
        )
        if metric == "macs":
            return (self.macs(ranks) if factored else self.original_macs), factored
        return (self.parameters(ranks) if factored else self.original_parameters), factored


def factorizable_layers(
    model: nn.Module,
    conv_method: str = "tucker2",
    skip_layers: tuple[str, ...] = (),
    example_input: torch.Tensor | None = None,
    spectra: bool = True,
) -> list[FactorizableLayer]:
    """Every Linear and ``groups == 1`` convolution inside ``model`` with its spectra.

    The model itself is never a candidate (a layer is replaced in its parent). With
    ``spectra=False`` no SVD is computed (for callers that need only shapes and costs).

    With ``example_input`` (batch 1), one forward pass records the positions each layer sees,
    which MAC costs need.
    """
    if conv_method not in CONV_METHODS:
        raise ValueError(f"conv_method must be one of {CONV_METHODS}, got {conv_method!r}.")
    modules = dict(model.named_modules())
    unknown = sorted(set(skip_layers) - set(modules))
    if unknown:
        raise ValueError(
            f"skip_layers names {unknown}, which {type(model).__name__} does not have."
        )
    candidates = []
    for name, layer in modules.items():
        if not name or any(name == skip or name.startswith(skip + ".") for skip in skip_layers):
            continue
        if isinstance(layer, nn.Linear):
            kind, matrices = "svd", [layer.weight]
        elif isinstance(layer, _CONVS) and layer.groups == 1:
            weight = layer.weight
            if math.prod(layer.kernel_size) == 1:
                kind, matrices = "svd", [weight.reshape(weight.shape[0], -1)]
            else:
                kind = conv_method
                matrices = [weight.reshape(weight.shape[0], -1),
                            weight.transpose(0, 1).reshape(weight.shape[1], -1)]
        else:
            continue
        energies = tuple(
            cumulative_energy(torch.linalg.svdvals(matrix.detach().double()).numpy())
            for matrix in matrices
        ) if spectra else ()
        candidates.append(FactorizableLayer(name, layer, kind, energies))
    if example_input is not None:
        _record_input_shapes(model, candidates, example_input)
    return candidates


def _record_input_shapes(model: nn.Module, candidates: list[FactorizableLayer],
                         example_input: torch.Tensor) -> None:
    if example_input.shape[0] != 1:
        raise ValueError(
            f"example_input must hold one example (batch axis 1), got shape "
            f"{tuple(example_input.shape)}; pass x[:1]."
        )

    def hook(candidate: FactorizableLayer):
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            if isinstance(module, nn.Linear):
                candidate.input_shape = (inputs[0].numel() // module.in_features,)
            else:
                candidate.input_shape = tuple(inputs[0].shape[2:])
        return record

    handles = [c.layer.register_forward_pre_hook(hook(c)) for c in candidates]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()


def _plan_at(candidates: list[FactorizableLayer], ranks_of, metric: str) -> tuple[RankPlan, int]:
    """Ranks of the layers worth factoring, and the candidates' total cost in ``metric``."""
    plan: RankPlan = {}
    total = 0
    for candidate in candidates:
        ranks = ranks_of(candidate)
        cost, factored = candidate.cost(ranks, metric)
        total += cost
        if factored:
            plan[candidate.name] = ranks
    return plan, total


def select_ranks(
    model: nn.Module,
    rank_by: str = "energy",
    *,
    energy: float = 0.9,
    rank: int = 8,
    budget_ratio: float = 0.5,
    conv_method: str = "tucker2",
    skip_layers: tuple[str, ...] = (),
    example_input: torch.Tensor | None = None,
) -> RankPlan:
    """Ranks of every layer worth factoring.

    Parameters
    ----------
    model : nn.Module
        The model (not modified).
    rank_by : {"energy", "rank", "parameters", "macs"}
        "energy": per layer, keep ``energy`` of the squared singular values; "rank": ``rank``
        in every mode; "parameters" / "macs": the whole model must end with at most
        ``budget_ratio`` of its parameters / of its batch-1 MACs (see the module docstring).
    energy, rank, budget_ratio
        The setting of the chosen criterion.
    conv_method : {"tucker2", "cp"}
        Decomposition of convolutions with a kernel larger than 1.
    skip_layers : tuple of str
        Module names left alone (with everything inside them).
    example_input : Tensor, optional
        One batch-1 input; required for ``rank_by="macs"``.

    Returns
    -------
    RankPlan
        Only layers whose factorization saves weights.

    Raises
    ------
    ValueError
        On a bad setting, or when even rank 1 everywhere cannot meet the budget.
    """
    if rank_by not in RANK_CRITERIA:
        raise ValueError(f"rank_by must be one of {RANK_CRITERIA}, got {rank_by!r}.")
    if rank_by == "macs" and example_input is None:
        raise ValueError("rank_by='macs' needs example_input (one batch-1 input) to count MACs.")
    candidates = factorizable_layers(model, conv_method, skip_layers, example_input)
    if rank_by == "energy":
        return _plan_at(candidates, lambda c: c.ranks_for_energy(energy), "parameters")[0]
    if rank_by == "rank":
        return _plan_at(candidates, lambda c: c.ranks_fixed(rank), "parameters")[0]
    if rank_by == "parameters":
        model_total = sum(p.numel() for p in model.parameters())
        fixed = model_total - sum(c.original_parameters for c in candidates)
    else:
        model_total = count_macs(model, example_input)
        fixed = model_total - sum(c.original_macs for c in candidates)
    budget = budget_ratio * model_total - fixed
    levels = np.unique(np.concatenate([np.ravel(s) for c in candidates for s in c.spectra]
                                      + [np.ones(1)]))
    lowest = _plan_at(candidates, lambda c: c.ranks_for_energy(levels[0]), rank_by)[1]
    if lowest > budget:
        raise ValueError(
            f"Even the lowest ranks leave {fixed + lowest:,} {rank_by}, above the budget of "
            f"{budget_ratio} x {model_total:,} = {budget_ratio * model_total:,.0f}; raise "
            "budget_ratio or combine factorization with another stage."
        )
    low, high = 0, len(levels) - 1  # invariant: levels[low] meets the budget
    while low < high:
        middle = (low + high + 1) // 2
        if _plan_at(candidates, lambda c: c.ranks_for_energy(levels[middle]), rank_by)[1] <= budget:
            low = middle
        else:
            high = middle - 1
    return _plan_at(candidates, lambda c: c.ranks_for_energy(levels[low]), rank_by)[0]


def factorize_model(
    model: nn.Module,
    plan: RankPlan,
    conv_method: str = "tucker2",
    n_iter_max: int = 100,
    seed: int = 0,
) -> dict[str, dict]:
    """Replace every layer named in ``plan`` by its factorization, in place.

    Linear layers become ``Sequential(Linear(in, r, bias=False), Linear(r, out))``; pointwise
    convolutions two pointwise convolutions; other convolutions a Tucker-2 or CP chain.
    Returns ``{layer: {"kind", "ranks", "parameters_before", "parameters_after"}}``.
    """
    report = {}
    for name, ranks in plan.items():
        layer = model.get_submodule(name)
        if isinstance(layer, nn.Linear):
            kind, factored = "svd", factorize_linear(layer, ranks[0])
        elif math.prod(layer.kernel_size) == 1:
            kind, factored = "svd", factorize_pointwise_conv(layer, ranks[0])
        elif conv_method == "tucker2":
            kind, factored = "tucker2", tucker2_conv(layer, ranks, n_iter_max)
        else:
            kind, factored = "cp", cp_conv(layer, ranks[0], n_iter_max, seed)
        parent_name, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attribute, factored)
        report[name] = {
            "kind": kind,
            "ranks": list(ranks),
            "parameters_before": sum(p.numel() for p in layer.parameters()),
            "parameters_after": sum(p.numel() for p in factored.parameters()),
        }
    return report
