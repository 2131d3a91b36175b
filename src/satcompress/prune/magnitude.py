"""Unstructured magnitude pruning: zero the smallest weights, keep them zero while fine-tuning.

Two ways of choosing which weights go, both from "Learning both Weights and Connections for
Efficient Neural Networks" (Han, Pool, Tran & Dally 2015) and its successors:

* per layer, every weight whose magnitude is below ``quality x std(layer weights)`` (Han et
  al.'s threshold rule; stage ``std_threshold_prune``);
* globally, the ``sparsity`` fraction of smallest-magnitude weights over all layers at once,
  exactly ``round(sparsity x n)`` of them (stage ``magnitude_prune``).

Pruning is interleaved with fine-tuning ("prune -> retrain", Han et al.), either in one shot or
gradually along the cubic schedule of "To prune, or not to prune" (Zhu & Gupta 2017), see
:func:`polynomial_sparsity`. During fine-tuning a :class:`WeightMasks` zeroes the gradients
of pruned weights and re-applies the masks after every optimiser step, so pruned weights stay
exactly zero.

The weights pruned are those of every ``nn.Linear`` and convolution (biases, norms and buffers
are left dense). Pruned weights are stored as zeros in ordinary dense tensors, so the model's
file does NOT shrink by itself: :func:`satcompress.measure.measure` counts the non-zero
parameters, and :func:`sparse_storage_bytes` gives what a sparse encoding (CSR, or bitmask +
values) of the same weights would take.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from satcompress.measure import theoretical_bytes
from satcompress.finetune import FinetuneSettings
from satcompress.prune._common import PRUNE_REPORT_ATTRIBUTE
from satcompress.stages import check_integer, check_module_names, register_stage
from satcompress.tasks.base import TaskData

__all__ = [
    "WeightMasks",
    "prunable_weights",
    "weights_check",
    "polynomial_sparsity",
    "layer_thresholds",
    "global_magnitude_masks",
    "threshold_masks",
    "finetune_with_masks",
    "sparse_storage_bytes",
    "MagnitudePruneConfig",
    "StdThresholdPruneConfig",
    "magnitude_prune",
    "std_threshold_prune",
]

_WEIGHTED_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)


def prunable_weights(model: nn.Module, skip_layers: tuple[str, ...] = ()) -> dict[str, nn.Parameter]:
    """The weight of every Linear and convolution layer, by full parameter name.

    Parameters
    ----------
    model : nn.Module
        The model.
    skip_layers : tuple of str
        Module names (as in ``model.named_modules()``) to leave dense, with everything inside
        them (``"blocks.0"`` skips the whole first block).

    Returns
    -------
    dict of str to Parameter
        ``{"blocks.0.fc1.weight": parameter, ...}`` in model order, a tied weight once.
    """
    modules = dict(model.named_modules())
    unknown = sorted(set(skip_layers) - set(modules))
    if unknown:
        raise ValueError(
            f"skip_layers names {unknown}, which {type(model).__name__} does not have; its "
            f"weighted layers are {[n for n, m in modules.items() if isinstance(m, _WEIGHTED_LAYERS)]}."
        )
    weights: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for name, module in modules.items():
        if not isinstance(module, _WEIGHTED_LAYERS) or id(module.weight) in seen:
            continue
        if any(name == skip or name.startswith(skip + ".") for skip in skip_layers):
            continue
        seen.add(id(module.weight))
        weights[f"{name}.weight" if name else "weight"] = module.weight
    return weights


class WeightMasks:
    """Boolean keep-masks over named parameters: ``False`` entries are pruned and held at zero.

    Parameters
    ----------
    masks : dict of str to Tensor
        Full parameter name -> boolean tensor of the parameter's shape (``True`` = kept).
    """

    def __init__(self, masks: dict[str, torch.Tensor]) -> None:
        self.masks = masks

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero the pruned entries of ``model``'s parameters (use as ``fit(after_step=...)``)."""
        for name, mask in self.masks.items():
            model.get_parameter(name).mul_(mask)

    @contextlib.contextmanager
    def gradients_masked(self, model: nn.Module) -> Iterator[None]:
        """While active, the gradients of pruned entries are zero, so the optimiser's moment
        estimates never push a pruned weight away from zero."""
        handles = [
            model.get_parameter(name).register_hook(
                lambda gradient, keep=mask: gradient * keep.to(gradient.dtype)
            )
            for name, mask in self.masks.items()
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def sparsity_by_layer(self) -> dict[str, float]:
        """Fraction of pruned entries of each masked parameter."""
        return {name: 1.0 - mask.float().mean().item() for name, mask in self.masks.items()}

    def sparsity(self) -> float:
        """Fraction of pruned entries over all masked parameters together."""
        total = sum(mask.numel() for mask in self.masks.values())
        kept = sum(int(mask.sum()) for mask in self.masks.values())
        return 1.0 - kept / total if total else 0.0


def polynomial_sparsity(
    step: int,
    n_steps: int,
    final_sparsity: float,
    initial_sparsity: float = 0.0,
    exponent: float = 3.0,
) -> float:
    """Zhu & Gupta's (2017) gradual pruning schedule.

    ``s_t = s_f + (s_i - s_f) * (1 - t / n) ** exponent`` for ``t = 0 .. n``: fast pruning
    early, while there are many redundant weights, and slower towards the final sparsity.
    With ``n_steps = 1`` the only step (t = 1) is one-shot pruning to ``final_sparsity``.
    """
    if n_steps < 1 or not 0 <= step <= n_steps:
        raise ValueError(f"need 0 <= step <= n_steps and n_steps >= 1, got step {step}, "
                         f"n_steps {n_steps}.")
    return final_sparsity + (initial_sparsity - final_sparsity) * (1 - step / n_steps) ** exponent


def layer_thresholds(weights: Mapping[str, torch.Tensor], quality: float) -> dict[str, float]:
    """Han et al.'s per-layer threshold: ``quality x std(weights of the layer)``.

    The standard deviation is the unbiased one (``torch.std``) over all entries of the
    weight tensor.
    """
    return {name: quality * weight.detach().std().item() for name, weight in weights.items()}


@torch.no_grad()
def threshold_masks(
    weights: Mapping[str, torch.Tensor],
    thresholds: Mapping[str, float],
    previous: WeightMasks | None = None,
) -> WeightMasks:
    """Keep the entries with ``|w| >= threshold`` of their layer (and not pruned before)."""
    masks = {}
    for name, weight in weights.items():
        keep = weight.abs() >= thresholds[name]
        masks[name] = keep if previous is None else keep & previous.masks[name]
    return WeightMasks(masks)


@torch.no_grad()
def global_magnitude_masks(
    weights: Mapping[str, torch.Tensor],
    sparsity: float,
    previous: WeightMasks | None = None,
) -> WeightMasks:
    """Prune exactly ``round(sparsity x n)`` of the ``n`` weights: the smallest in magnitude.

    One ranking over all layers together (global pruning). Entries pruned in ``previous`` are
    ranked first, so gradual pruning never revives a weight; ties keep model order.
    """
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}.")
    names = list(weights)
    scores = []
    for name in names:
        score = weights[name].detach().abs().flatten().clone()
        if previous is not None:
            score[~previous.masks[name].flatten()] = -1.0
        scores.append(score)
    flat = torch.cat(scores)
    n_pruned = round(sparsity * flat.numel())
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[torch.argsort(flat, stable=True)[:n_pruned]] = False
    masks, start = {}, 0
    for name in names:
        size = weights[name].numel()
        masks[name] = keep[start : start + size].reshape(weights[name].shape)
        start += size
    return WeightMasks(masks)


def finetune_with_masks(
    model: nn.Module, masks: WeightMasks, data: TaskData | None, settings: FinetuneSettings
) -> nn.Module:
    """Apply ``masks`` to ``model`` (in place) and fine-tune it with the pruned weights frozen
    at zero: masked gradients are zeroed and the masks re-applied after every step."""
    masks.apply(model)
    with masks.gradients_masked(model):
        return settings.finetune(model, data, after_step=masks.apply)


def sparse_storage_bytes(model: nn.Module, index_bits: int = 16) -> dict[str, int]:
    """Bytes the model would take with its Linear/conv weights in a sparse encoding.

    Unstructured sparsity alone does not shrink a dense file: zeros take as many bytes as
    any other value. This is what an encoder exploiting the zeros would store.

    Parameters
    ----------
    model : nn.Module
        The (pruned) model. Every other tensor of its state dict stays dense.
    index_bits : int
        Width of a column index (16: up to 65,536 columns per row).

    Returns
    -------
    dict of str to int
        ``dense_bytes``: :func:`~satcompress.measure.theoretical_bytes` (everything dense);
        ``csr_bytes``: each weight as a (out channels x rest) CSR matrix: the non-zero values
        at the tensor's dtype width, one ``index_bits`` column index per non-zero and
        ``rows + 1`` int32 row pointers; ``bitmask_bytes``: one bit per entry saying whether
        it is non-zero, plus the non-zero values. Weights with a ``stored_bits`` declaration
        are not special-cased: values are counted at the dtype's width.
    """
    if index_bits not in (8, 16, 32):
        raise ValueError(f"index_bits must be 8, 16 or 32, got {index_bits}.")
    dense = theoretical_bytes(model)
    csr = bitmask = dense
    for name, weight in prunable_weights(model).items():
        rows = weight.shape[0]
        columns = weight.numel() // rows
        if columns > 2**index_bits:
            raise ValueError(
                f"{name} has {columns} columns, more than {index_bits}-bit indices can address; "
                "use index_bits=32."
            )
        value_bytes = weight.element_size()
        nonzero = int(torch.count_nonzero(weight))
        dense_weight = weight.numel() * value_bytes
        csr += nonzero * (value_bytes + index_bits // 8) + (rows + 1) * 4 - dense_weight
        bitmask += math.ceil(weight.numel() / 8) + nonzero * value_bytes - dense_weight
    return {"dense_bytes": dense, "csr_bytes": csr, "bitmask_bytes": bitmask}


@dataclasses.dataclass(frozen=True)
class _MagnitudeSchedule(FinetuneSettings):
    """Settings shared by the two magnitude stages (see :class:`FinetuneSettings` for the
    fine-tuning fields).

    Attributes
    ----------
    pruning_steps : int
        1: one-shot pruning, then ``finetune_epochs`` of fine-tuning. n > 1: gradual pruning in
        n steps along Zhu & Gupta's cubic schedule (:func:`polynomial_sparsity`), each followed
        by ``finetune_epochs`` of fine-tuning (so n x finetune_epochs in all).
    skip_layers : tuple of str
        Module names whose weights stay dense.
    """

    pruning_steps: int = 1
    skip_layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_integer(self, "pruning_steps", 1,
                      hint=" (1 = one-shot, more = gradual cubic schedule)")
        check_module_names(self, "skip_layers")

    def ramp(self, final_value: float) -> list[float]:
        """The value (sparsity or quality) to prune to at each of the ``pruning_steps``."""
        return [polynomial_sparsity(step, self.pruning_steps, final_value)
                for step in range(1, self.pruning_steps + 1)]


@dataclasses.dataclass(frozen=True)
class MagnitudePruneConfig(_MagnitudeSchedule):
    """Global magnitude pruning to a target sparsity (stage ``magnitude_prune``).

    Attributes
    ----------
    sparsity : float
        Fraction in [0, 1) of the Linear/conv weights (outside ``skip_layers``) set to zero,
        ranked by magnitude over all layers together; hit exactly (``round(sparsity x n)``).
    """

    sparsity: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.sparsity, (int, float)) and 0 <= self.sparsity < 1):
            raise ValueError(
                f"MagnitudePruneConfig.sparsity must be a fraction in [0, 1) (e.g. 0.9 prunes "
                f"90% of the weights), got {self.sparsity!r}."
            )


@dataclasses.dataclass(frozen=True)
class StdThresholdPruneConfig(_MagnitudeSchedule):
    """Han et al.'s per-layer threshold pruning (stage ``std_threshold_prune``).

    Attributes
    ----------
    quality : float
        Each layer loses its weights with ``|w| < quality x std(w)``, the standard deviation
        taken over the layer's weights as they come into the stage. With gradual pruning the
        quality parameter itself ramps up along the cubic schedule (0 -> ``quality``).
    """

    quality: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.quality, (int, float)) and self.quality > 0
                and math.isfinite(self.quality)):
            raise ValueError(
                f"StdThresholdPruneConfig.quality must be a finite number > 0 (a weight is "
                f"pruned if |w| < quality x std of its layer; 1.0 prunes ~68% of a Gaussian "
                f"layer), got {self.quality!r}."
            )


MaskRule = Callable[[dict[str, nn.Parameter], float, WeightMasks | None], WeightMasks]
"""``rule(weights, step_value, previous_masks) -> masks`` for one pruning step."""


def _prune_and_finetune(
    model: nn.Module,
    settings: _MagnitudeSchedule,
    data: TaskData | None,
    targets: list[float],
    mask_rule: MaskRule,
    report: dict[str, Any],
) -> nn.Module:
    model = copy.deepcopy(model)
    masks: WeightMasks | None = None
    for target in targets:  # ramp() always has at least one step
        masks = mask_rule(prunable_weights(model, settings.skip_layers), target, masks)
        model = finetune_with_masks(model, masks, data, settings)
    report.update(
        schedule=targets,
        sparsity=masks.sparsity(),
        sparsity_by_layer=masks.sparsity_by_layer(),
        finetune_epochs=settings.finetune_epochs * len(targets),
    )
    setattr(model, PRUNE_REPORT_ATTRIBUTE, report)
    return model.eval()


def weights_check(verb: str) -> Callable[[nn.Module, Any, TaskData | None], str | None]:
    """A stage check (:func:`satcompress.stages.check`) saying why a model has no weight to
    ``verb`` outside the config's ``skip_layers`` (pruning and clustering share it), or None."""

    def no_weights(model: nn.Module, config: Any, data: TaskData | None) -> str | None:
        try:
            weights = prunable_weights(model, config.skip_layers)
        except ValueError as error:
            return str(error)
        if weights:
            return None
        return (f"the {type(model).__name__} has no Linear or convolution weight to {verb}"
                f"{' outside skip_layers' if config.skip_layers else ''}; leave this stage out.")

    return no_weights


_no_weights = weights_check("prune")


@register_stage("magnitude_prune", check=_no_weights)
def magnitude_prune(
    model: nn.Module, config: MagnitudePruneConfig, data: TaskData | None
) -> nn.Module:
    """Global magnitude pruning to ``config.sparsity`` with masked fine-tuning.

    Returns a new model whose pruned weights are exact zeros; ``model.prune_report_`` holds
    ``method``, ``schedule`` (sparsity after each step), ``sparsity`` (over the pruned
    layers), ``sparsity_by_layer`` and ``finetune_epochs``.
    """
    return _prune_and_finetune(
        model, config, data, config.ramp(config.sparsity), global_magnitude_masks,
        {"method": "global_magnitude"},
    )


@register_stage("std_threshold_prune", check=_no_weights)
def std_threshold_prune(
    model: nn.Module, config: StdThresholdPruneConfig, data: TaskData | None
) -> nn.Module:
    """Han et al. (2015) per-layer ``quality x std`` threshold pruning with masked fine-tuning.

    Returns a new model; ``model.prune_report_`` holds ``method``, ``schedule`` (quality at
    each step), ``std_by_layer`` (the standard deviations the thresholds multiply),
    ``sparsity``, ``sparsity_by_layer`` and ``finetune_epochs``.
    """
    unit_thresholds = layer_thresholds(prunable_weights(model, config.skip_layers), 1.0)
    return _prune_and_finetune(
        model, config, data, config.ramp(config.quality),
        lambda weights, quality, previous: threshold_masks(
            weights, {name: quality * std for name, std in unit_thresholds.items()}, previous
        ),
        {"method": "std_threshold", "std_by_layer": unit_thresholds},
    )
