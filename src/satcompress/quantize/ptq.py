"""Post-training quantization: int8/int4 weights, optionally uint8 activations, no training.

Every ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` (except those excluded) becomes a
:class:`~satcompress.quantize.fake_quant.QuantizedLayer`: weights symmetric per output channel
at ``weight_bits``; with ``quantize_activations`` each such layer's input also gets a
per-tensor affine uint8 grid whose range is calibrated on a few hundred training examples
(Jacob et al. 2018; Krishnamoorthi 2018; the calibration observers of Wu et al. 2020). Other
operations (LayerNorm, softmax, the attention matrix products, residual additions) stay in
float, as in ONNX Runtime's QDQ format, where only the quantized operators' inputs carry
``QuantizeLinear``/``DequantizeLinear`` pairs. Every other layer holding parameters stays in
float, and the stages say so: the returned model's report (:func:`quantize_report`) lists
each such layer with the reason.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from satcompress.quantize._threads import torch_threads
from satcompress.quantize.fake_quant import (
    ACTIVATION_BITS,
    OBSERVERS,
    QUANTIZED_TYPES,
    QuantizedLayer,
    check_bits,
    make_observer,
    quantized_layer_from_float,
    unquantizable_reason,
)
from satcompress.stages import StageConfig, check_layer_settings, register_stage, stage_report
from satcompress.tasks.base import TaskData

__all__ = [
    "QUANTIZE_REPORT_ATTRIBUTE",
    "QuantizationSettings",
    "PostTrainingQuantizeConfig",
    "post_training_quantize",
    "quantizable_layers",
    "no_quantizable_layer",
    "quantized_layers",
    "float_layers",
    "attach_quantize_report",
    "quantize_report",
    "calibration_inputs",
    "calibrate",
    "quantize_layers",
    "convert",
]

QUANTIZE_REPORT_ATTRIBUTE = "quantize_report_"
"""Model attribute where the quantization stages leave their report (a JSON-able dict)."""

_CALIBRATION_BATCH = 256
_SATURATION_FREE_WEIGHT_BITS = 7  # 2 * 255 * 63 <= 32767: no int16 saturation in u8 x s8 pairs


@dataclasses.dataclass(frozen=True)
class QuantizationSettings(StageConfig):
    """Settings shared by uniform quantization stages (see :class:`PostTrainingQuantizeConfig`).

    Attributes
    ----------
    weight_bits : int
        Stored width of every quantized weight, 2 to 8 (symmetric, per output channel).
    quantize_activations : bool
        Also quantize each quantized layer's input to uint8 (per tensor, affine), calibrated on
        training examples; needs ``data``.
    observer : str
        Calibration range: ``"minmax"`` (clips nothing) or ``"percentile"``.
    percentile : float
        Percentile of the ``"percentile"`` observer, in (50, 100].
    calibration_samples : int
        Training examples run through the model to calibrate activation ranges.
    reduce_range : bool
        With ``quantize_activations``, store weights on at most 7 bits (``|q| <= 63``), as
        ONNX Runtime's quantization tool does with ``reduce_range``: its x86 uint8 x int8
        kernels without AVX512-VNNI (``VPMADDUBSW``) add pairs of products in int16, which
        saturates for 8-bit weights (``2 * 255 * 127 > 32767``) and silently corrupts the
        integer model's outputs. Turn it off for targets with VNNI, ARM dot-product or plain
        integer arithmetic.
    exclude : tuple of str
        Module names (as in ``model.named_modules()``) to keep in float.
    seed : int
        Picks the calibration examples.
    layer_bits : tuple of (str, int)
        Per-layer weight widths overriding ``weight_bits`` for the named layers, e.g.
        ``(("blocks.0.fc1", 4), ("head", 8))`` (what a search chooses); ``reduce_range``
        still caps them.
    """

    weight_bits: int = 8
    quantize_activations: bool = True
    observer: str = "minmax"
    percentile: float = 99.99
    calibration_samples: int = 256
    reduce_range: bool = True
    exclude: tuple[str, ...] = ()
    seed: int = 0
    layer_bits: tuple[tuple[str, int], ...] = ()

    def stored_weight_bits(self, layer: str | None = None) -> int:
        """The weight width actually stored for ``layer`` (its ``layer_bits`` entry, else
        ``weight_bits``), capped by ``reduce_range``."""
        bits = dict(self.layer_bits).get(layer, self.weight_bits)
        if self.quantize_activations and self.reduce_range:
            return min(bits, _SATURATION_FREE_WEIGHT_BITS)
        return bits

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_bits(self.weight_bits, f"{name}.weight_bits")
        per_layer = check_layer_settings(
            self, "layer_bits", lambda bits: check_bits(bits, f"each of {name}.layer_bits")
        )
        excluded = sorted(set(per_layer) & set(self.exclude))
        if excluded:
            raise ValueError(
                f"{name} gives layer_bits for {excluded}, which exclude keeps in float; "
                "remove them from one of the two."
            )
        if self.observer not in OBSERVERS:
            raise ValueError(
                f"{name}.observer must be one of {sorted(OBSERVERS)}, got {self.observer!r}."
            )
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(
                f"{name}.percentile must be in (50, 100] (e.g. 99.99), got {self.percentile}."
            )
        if self.calibration_samples < 1:
            raise ValueError(
                f"{name}.calibration_samples must be >= 1 (a few hundred is typical), got "
                f"{self.calibration_samples}."
            )
        if not all(isinstance(layer, str) for layer in self.exclude):
            raise ValueError(
                f"{name}.exclude must be a tuple of module names, got {self.exclude!r}."
            )


@dataclasses.dataclass(frozen=True)
class PostTrainingQuantizeConfig(QuantizationSettings):
    """Post-training quantization; the default is int8 weights and uint8 activations (W8A8).

    With the default ``reduce_range`` the weights of W8A8 are stored on 7 bits (see
    :class:`QuantizationSettings`). Weight-only int8 is ``quantize_activations=False``;
    weight-only int4 adds ``weight_bits=4``.
    """


def quantizable_layers(model: nn.Module, exclude: Sequence[str] = ()) -> list[str]:
    """Names of the float layers that have a quantized counterpart, minus ``exclude``.

    Those are ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` (zero padding); see
    :func:`float_layers` for the others.

    Raises
    ------
    ValueError
        If ``exclude`` names a module the model does not have.
    """
    names = [name for name, module in model.named_modules()
             if unquantizable_reason(module) is None]
    unknown = sorted(set(exclude) - {name for name, _ in model.named_modules()})
    if unknown:
        raise ValueError(
            f"exclude names modules the model does not have: {unknown}; quantizable layers "
            f"are {names}."
        )
    return [name for name in names if name not in set(exclude)]


def no_quantizable_layer(model: nn.Module, config: Any, data: TaskData | None) -> str | None:
    """The quantization stages' check (see :func:`satcompress.stages.check`): why ``model``
    has nothing to quantize, or None."""
    try:
        quantizable_layers(model, config.exclude)  # names in exclude must exist
    except ValueError as error:
        return str(error)
    if quantizable_layers(model, ()):  # every one excluded on purpose is a no-op, not an error
        return None
    *others, last = (f"nn.{layer_type.__name__}" for layer_type in QUANTIZED_TYPES)
    kinds = f"{', '.join(others)} or {last}"
    return f"the {type(model).__name__} has no {kinds} layer to quantize; leave this stage out."


def quantized_layers(model: nn.Module) -> dict[str, QuantizedLayer]:
    """Name -> every :class:`QuantizedLayer` of ``model``, in module order."""
    return {name: module for name, module in model.named_modules()
            if isinstance(module, QuantizedLayer)}


def float_layers(model: nn.Module, exclude: Sequence[str] = ()) -> dict[str, str]:
    """Name -> why, for every layer of ``model`` with parameters of its own left in float.

    Layers in ``exclude`` were kept in float on purpose; the others have no quantized
    counterpart (normalisation layers, recurrent and attention layers, other convolutions).
    """
    excluded = set(exclude)
    reasons = {}
    for name, module in model.named_modules():
        if isinstance(module, QuantizedLayer) or next(module.parameters(recurse=False),
                                                      None) is None:
            continue
        reason = unquantizable_reason(module)
        if name in excluded:
            reason = "excluded by the stage's settings (exclude)"
        if reason is not None:
            reasons[name] = reason
    return reasons


def attach_quantize_report(model: nn.Module, exclude: Sequence[str] = ()) -> nn.Module:
    """Leave the quantization report on ``model`` (in :data:`QUANTIZE_REPORT_ATTRIBUTE`).

    ``{"quantized": {layer: {"weight_bits", "input"}}, "float_layers": {layer: reason}}``,
    ``input`` being ``"uint8"`` or ``"float"``. Returns ``model``.
    """
    quantized = {
        name: {"weight_bits": layer.weight_bits,
               "input": f"uint{ACTIVATION_BITS}" if layer.quantize_input else "float"}
        for name, layer in quantized_layers(model).items()
    }
    setattr(model, QUANTIZE_REPORT_ATTRIBUTE,
            {"quantized": quantized, "float_layers": float_layers(model, exclude)})
    return model


def quantize_report(model: nn.Module) -> dict[str, Any]:
    """A copy of the report a quantization stage left on ``model``: the quantized layers and
    the layers left in float, each with the reason (see :func:`attach_quantize_report`)."""
    return stage_report(model, QUANTIZE_REPORT_ATTRIBUTE, "quantization",
                        "a satcompress.quantize stage")


def calibration_inputs(data: TaskData, n_samples: int, seed: int) -> torch.Tensor:
    """``n_samples`` training inputs drawn without replacement (all if fewer), in a fixed order."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.permutation(len(data.train))[:n_samples])
    return torch.from_numpy(data.train.x[chosen])


@torch.no_grad()
def calibrate(
    model: nn.Module,
    layer_names: Sequence[str],
    inputs: torch.Tensor,
    observer: str = "minmax",
    percentile: float = 99.99,
) -> dict[str, tuple[float, float]]:
    """Observed ``(lower, upper)`` range of the input of each named layer.

    Runs ``model`` (eval mode, restored afterwards; one thread) on ``inputs`` with a forward
    pre-hook on every named layer feeding an observer (see
    :data:`satcompress.quantize.fake_quant.OBSERVERS`).
    """
    observers = {name: make_observer(observer, percentile) for name in layer_names}
    was_training = model.training
    model.eval()
    try:
        with contextlib.ExitStack() as hooks, torch_threads(1):
            for name in layer_names:
                update = observers[name].update
                handle = model.get_submodule(name).register_forward_pre_hook(
                    lambda module, args, update=update: update(args[0])
                )
                hooks.callback(handle.remove)
            for start in range(0, len(inputs), _CALIBRATION_BATCH):
                model(inputs[start : start + _CALIBRATION_BATCH])
    finally:
        model.train(was_training)
    return {name: observers[name].bounds() for name in layer_names}


def quantize_layers(
    model: nn.Module,
    weight_bits: Mapping[str, int],
    input_bounds: Mapping[str, tuple[float, float]] | None = None,
) -> nn.Module:
    """Replace each named float layer of ``model`` IN PLACE by its quantized counterpart.

    Parameters
    ----------
    weight_bits : mapping of str to int
        Layer name -> stored weight width.
    input_bounds : mapping of str to (float, float), optional
        Layer name -> calibrated input range; layers listed get uint8 inputs.

    Returns
    -------
    nn.Module
        ``model`` itself.
    """
    for name, bits in weight_bits.items():
        bounds = None if input_bounds is None else input_bounds.get(name)
        layer = quantized_layer_from_float(model.get_submodule(name), bits, bounds)
        model.set_submodule(name, layer)
    return model


def convert(model: nn.Module, config: QuantizationSettings, data: TaskData | None) -> nn.Module:
    """A quantized copy of ``model`` as ``config`` describes (calibrated when it says so),
    carrying the report of :func:`attach_quantize_report`."""
    model = copy.deepcopy(model).eval()
    names = quantizable_layers(model, config.exclude)
    bounds = None
    if config.quantize_activations:
        if data is None:
            raise ValueError(
                f"{config.stage_name} with quantize_activations=True calibrates activation "
                "ranges on training examples: pass the task's data, or set "
                "quantize_activations=False for weight-only quantization."
            )
        inputs = calibration_inputs(data, config.calibration_samples, config.seed)
        bounds = calibrate(model, names, inputs, config.observer, config.percentile)
    unknown = sorted({layer for layer, _ in config.layer_bits} - set(names))
    if unknown:
        raise ValueError(
            f"{config.stage_name} layer_bits names {unknown}, which are not quantizable float "
            f"layers of {type(model).__name__}; they are {names}."
        )
    quantize_layers(model, {name: config.stored_weight_bits(name) for name in names}, bounds)
    return attach_quantize_report(model, config.exclude)


@register_stage("post_training_quantize", check=no_quantizable_layer)
def post_training_quantize(
    model: nn.Module, config: PostTrainingQuantizeConfig, data: TaskData | None
) -> nn.Module:
    """Quantize ``model`` after training (no weight updates); see :mod:`.ptq`.

    The returned model's :func:`quantize_report` names the layers left in float and why.
    """
    return convert(model, config, data)
