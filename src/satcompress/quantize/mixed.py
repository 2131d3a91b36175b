"""Mixed-precision weight quantization: each layer gets the bits its sensitivity deserves.

Layers differ in how much quantization noise they tolerate (Dong et al. 2019, HAWQ; Wang et
al. 2019, HAQ). The sensitivity analysis here is the direct, empirical one: quantize ONE layer
at a time to each candidate width (the rest stay float) and record the drop of a validation
metric. Assuming drops add up across layers, the widths are then chosen to minimise the total
drop subject to a budget on the parameter-weighted average width,
``sum_l bits_l * n_l / sum_l n_l <= target_average_bits`` (``n_l`` = weights of layer ``l``),
a multiple-choice knapsack solved greedily: starting with every layer at its widest candidate,
repeatedly narrow the layer whose next narrower width costs the least metric drop per stored
bit saved, until the budget holds. Drops are first made monotone in the width (fewer bits
never counts as better), so each step's cost is non-negative.

Deviations: HAWQ ranks layers by Hessian traces and solves an integer program; the measured
drop is used here instead (exact for the validation metric, one evaluation per layer and
width) and the knapsack is solved greedily, which is optimal only when each layer's drop is
convex in the bits saved. Activations stay in float.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from satcompress.quantize._threads import torch_threads
from satcompress.quantize.fake_quant import check_bits, quantized_layer_from_float
from satcompress.quantize.ptq import (
    attach_quantize_report,
    no_quantizable_layer,
    quantizable_layers,
    quantize_layers,
    quantized_layers,
)
from satcompress.quantize.qat import fine_tune_quantized
from satcompress.finetune import validation_metrics, validation_score
from satcompress.stages import StageConfig, register_stage
from satcompress.tasks.base import TaskData
from satcompress.training import TrainConfig

__all__ = [
    "MixedPrecisionQuantizeConfig",
    "mixed_precision_quantize",
    "layer_sensitivity",
    "assign_bits",
    "average_bits",
    "bits_report_rows",
]


@dataclasses.dataclass(frozen=True)
class MixedPrecisionQuantizeConfig(StageConfig):
    """Per-layer weight widths from a sensitivity analysis under an average-width budget.

    Attributes
    ----------
    candidate_bits : tuple of int
        Widths a layer may get, each 2 to 8.
    target_average_bits : float
        Budget: parameter-weighted average weight width over the quantized layers, between
        the smallest and largest candidate (4.0 stores like uniform int4).
    metric : str
        Validation metric whose drop measures sensitivity, from the registry shared with
        the drop-bound pruning stage (:func:`satcompress.finetune.validation_metrics`:
        ``"weighted_log_loss"``, ``"accuracy"``, ``"tss"``, or one registered there). The
        default is continuous, so it ranks even changes too small to flip a prediction.
    exclude : tuple of str
        Module names to keep in float.
    fine_tune_epochs : int
        Epochs of quantization-aware fine-tuning after the widths are set (0: none).
    learning_rate : float
        Peak learning rate of that fine-tuning.
    batch_size : int
        Batch size of that fine-tuning.
    seed : int
        Seeds the fine-tuning.
    """

    candidate_bits: tuple[int, ...] = (2, 3, 4, 6, 8)
    target_average_bits: float = 4.0
    metric: str = "weighted_log_loss"
    exclude: tuple[str, ...] = ()
    fine_tune_epochs: int = 0
    learning_rate: float = 1e-3
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        name = type(self).__name__
        if not self.candidate_bits:
            raise ValueError(f"{name}.candidate_bits must list at least one width, e.g. (4, 8).")
        for bits in self.candidate_bits:
            check_bits(bits, f"each of {name}.candidate_bits")
        if len(set(self.candidate_bits)) != len(self.candidate_bits):
            raise ValueError(f"{name}.candidate_bits has repeats: {self.candidate_bits}.")
        low, high = min(self.candidate_bits), max(self.candidate_bits)
        if not low <= self.target_average_bits <= high:
            raise ValueError(
                f"{name}.target_average_bits must lie between the smallest and largest "
                f"candidate ({low} to {high}), got {self.target_average_bits}."
            )
        if self.metric not in validation_metrics():
            raise ValueError(
                f"{name}.metric must be a registered validation metric, one of "
                f"{sorted(validation_metrics())}; got {self.metric!r}."
            )
        if not all(isinstance(layer, str) for layer in self.exclude):
            raise ValueError(
                f"{name}.exclude must be a tuple of module names, got {self.exclude!r}."
            )
        if self.fine_tune_epochs < 0:
            raise ValueError(
                f"{name}.fine_tune_epochs must be >= 0 (0 skips fine-tuning), got "
                f"{self.fine_tune_epochs}."
            )
        self.fine_tune_config()  # TrainConfig validates learning_rate and batch_size

    def fine_tune_config(self) -> TrainConfig:
        """The :class:`~satcompress.training.TrainConfig` of the optional fine-tuning."""
        epochs = max(1, self.fine_tune_epochs)
        return TrainConfig(max_epochs=epochs, batch_size=self.batch_size,
                           learning_rate=self.learning_rate, weight_decay=0.0,
                           patience_epochs=epochs, seed=self.seed)


def layer_sensitivity(
    model: nn.Module,
    data: TaskData,
    layer_names: Sequence[str],
    candidate_bits: Sequence[int],
    metric: str,
) -> dict[str, dict[int, float]]:
    """Validation-metric drop when ONE layer's weights are quantized, per layer and width.

    Scores on ``data.val`` with :func:`satcompress.finetune.validation_score`, on one
    thread; ``model`` is not modified.

    Returns
    -------
    dict
        ``{layer: {bits: drop}}``: how much worse the score is with only ``layer`` quantized
        at ``bits`` than with the float model (negative: it improved).
    """
    if metric not in validation_metrics():
        raise ValueError(
            f"Unknown validation metric {metric!r}; registered: {sorted(validation_metrics())}."
        )
    drop = validation_metrics()[metric].drop
    work = copy.deepcopy(model).eval()
    drops: dict[str, dict[int, float]] = {}
    with torch_threads(1):
        reference = validation_score(work, data, metric)
        for name in layer_names:
            original = work.get_submodule(name)
            drops[name] = {}
            for bits in candidate_bits:
                work.set_submodule(name, quantized_layer_from_float(original, bits))
                drops[name][bits] = drop(reference, validation_score(work, data, metric))
            work.set_submodule(name, original)
    return drops


def average_bits(bits: Mapping[str, int], sizes: Mapping[str, int]) -> float:
    """Parameter-weighted average width ``sum(bits_l * n_l) / sum(n_l)``."""
    return sum(bits[name] * sizes[name] for name in bits) / sum(sizes[name] for name in bits)


def assign_bits(
    sensitivity: Mapping[str, Mapping[int, float]],
    sizes: Mapping[str, int],
    target_average_bits: float,
) -> dict[str, int]:
    """Greedy multiple-choice knapsack: the widths of least total drop within the budget.

    Parameters
    ----------
    sensitivity : mapping
        ``{layer: {bits: drop}}`` as from :func:`layer_sensitivity` (every layer the same
        candidate widths).
    sizes : mapping of str to int
        Weights per layer.
    target_average_bits : float
        Budget on :func:`average_bits`.

    Returns
    -------
    dict of str to int
        Layer -> width; the average is at most the target unless the target is below the
        narrowest candidate (then every layer gets the narrowest).
    """
    options: dict[str, list[int]] = {}
    cost: dict[str, dict[int, float]] = {}
    for name, drops in sensitivity.items():
        options[name] = sorted(drops, reverse=True)
        running = float("-inf")
        cost[name] = {}
        for bits in options[name]:  # widest first: fewer bits never count as better
            running = max(running, drops[bits])
            cost[name][bits] = running
    chosen = {name: widths[0] for name, widths in options.items()}
    while average_bits(chosen, sizes) > target_average_bits:
        steps = []
        for name, widths in options.items():
            position = widths.index(chosen[name])
            if position + 1 < len(widths):
                narrower = widths[position + 1]
                saved = (chosen[name] - narrower) * sizes[name]
                extra = cost[name][narrower] - cost[name][chosen[name]]
                steps.append((extra / saved, -saved, name, narrower))
        if not steps:
            break
        _, _, name, narrower = min(steps)
        chosen[name] = narrower
    return chosen


def bits_report_rows(model: nn.Module) -> list[dict[str, Any]]:
    """One row per quantized layer: its weights, stored bits and, after mixed precision, the
    validation drop measured at each candidate width (``drop@<bits>b``).

    Works on any model holding quantized layers; the drop columns come from the
    ``sensitivity_`` attribute that :func:`mixed_precision_quantize` sets.
    """
    sensitivity = getattr(model, "sensitivity_", {})
    rows = []
    for name, layer in quantized_layers(model).items():
        row: dict[str, Any] = {"layer": name, "type": type(layer).__name__,
                               "weights": layer.weight.numel(), "bits": layer.weight_bits}
        for bits, drop in sorted(sensitivity.get(name, {}).items()):
            row[f"drop@{bits}b"] = round(drop, 5)
        rows.append(row)
    return rows


@register_stage("mixed_precision_quantize", check=no_quantizable_layer)
def mixed_precision_quantize(
    model: nn.Module, config: MixedPrecisionQuantizeConfig, data: TaskData | None
) -> nn.Module:
    """Quantize each layer's weights at the width its sensitivity allows; see :mod:`.mixed`.

    The returned model carries ``bits_report_`` (layer -> bits), ``sensitivity_`` (layer ->
    bits -> validation drop) and ``sensitivity_metric_``; render them with
    :func:`bits_report_rows`; :func:`~satcompress.quantize.ptq.quantize_report` names the
    layers left in float and why.
    """
    if data is None:
        raise ValueError(
            "mixed_precision_quantize measures each layer's sensitivity on the validation "
            "split: pass the task's data."
        )
    model = copy.deepcopy(model).eval()
    names = quantizable_layers(model, config.exclude)
    sensitivity = layer_sensitivity(model, data, names, config.candidate_bits, config.metric)
    sizes = {name: model.get_submodule(name).weight.numel() for name in names}
    bits = assign_bits(sensitivity, sizes, config.target_average_bits)
    quantize_layers(model, bits)
    if config.fine_tune_epochs:
        fine_tune_quantized(model, data, config.fine_tune_config())
    model.bits_report_ = bits
    model.sensitivity_ = sensitivity
    model.sensitivity_metric_ = config.metric
    return attach_quantize_report(model, config.exclude)
