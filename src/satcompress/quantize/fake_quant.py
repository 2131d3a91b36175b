"""Integer quantization arithmetic, range observers and fake-quantized layers.

Quantization follows Jacob et al. 2018 ("Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference", CVPR): a real value ``r`` is represented by an
integer ``q`` through ``r = scale * (q - zero_point)``, with ``q = clamp(round(r / scale) +
zero_point, q_min, q_max)`` and ``round`` rounding half to even (as ONNX ``QuantizeLinear``
does). Two schemes are used:

Weights
    Symmetric, per output channel (Krishnamoorthi 2018, "Quantizing deep convolutional
    networks for efficient inference"): zero point 0, ``scale_c = max|w_c| / q_max`` with the
    narrow range ``q_max = 2**(bits-1) - 1`` (so ``[-127, 127]`` at 8 bits, ``[-7, 7]`` at 4,
    ``{-1, 0, 1}`` at 2). Every width from 2 to 8 bits is held in an int8 container: the
    scale alone guarantees ``|q| <= q_max``, so ONNX sees ordinary int8
    ``QuantizeLinear``/``DequantizeLinear`` pairs whose values use ``bits`` bits.
Activations
    Per-tensor affine uint8 (``[0, 255]`` with a zero point), the range calibrated by a
    :class:`MinMaxObserver` or a :class:`PercentileObserver` and widened to contain 0 so that
    zero (ReLU outputs, padding) is exact. Only 8-bit activations are offered: PyTorch's
    ONNX exporter maps fake quantization to QDQ for the 8-bit ranges only.

:class:`QuantLinear`, :class:`QuantConv1d` and :class:`QuantConv2d` replace a float
``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` (zero padding):
they keep the float weight (the latent weight QAT trains) snapped to its integer grid, a
per-channel ``weight_scale`` buffer, and, when the input is quantized, ``input_scale`` and
``input_zero_point`` buffers. Their forward pass uses ``torch.fake_quantize_per_channel_affine``
and ``torch.fake_quantize_per_tensor_affine``, whose gradient is the straight-through
estimator (Bengio et al. 2013) and which the ONNX exporter turns into
``QuantizeLinear``/``DequantizeLinear`` pairs. Each layer declares ``stored_bits`` so that
:func:`satcompress.measure.theoretical_bytes` counts the weight at its bit width, the
activation zero point at 8 bits and everything else (scales, bias) at 32.

ONNX export route
    ``torch.export`` (behind the dynamo ONNX exporter) needs a "fake" kernel for every
    operator; PyTorch registers none for
    ``aten::_fake_quantize_per_tensor_affine_cachemask_tensor_qparams``, the kernel behind
    per-tensor fake quantization with tensor-valued scale and zero point. Importing this module
    registers one (a shape-only function, see :func:`_register_export_support`); the exporter
    then emits the QDQ pair through onnxscript's ``aten::fake_quantize_per_tensor_affine``.
    The per-channel operator needs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "MIN_BITS",
    "MAX_BITS",
    "ACTIVATION_BITS",
    "check_bits",
    "weight_qmax",
    "quantize",
    "dequantize",
    "symmetric_weight_scale",
    "affine_qparams",
    "MinMaxObserver",
    "PercentileObserver",
    "OBSERVERS",
    "make_observer",
    "QuantizedLayer",
    "QuantLinear",
    "QuantConv1d",
    "QuantConv2d",
    "QUANTIZED_TYPES",
    "unquantizable_reason",
    "quantized_layer_from_float",
]

MIN_BITS = 2
"""Narrowest weight width: a symmetric 2-bit grid is ternary, ``{-1, 0, 1}``."""
MAX_BITS = 8
"""Widest weight width; wider weights gain nothing on int8 kernels."""
ACTIVATION_BITS = 8
"""Activations are uint8 (``[0, 255]``): the only affine range the ONNX exporter maps to QDQ."""

_ACTIVATION_QMIN, _ACTIVATION_QMAX = 0, 2**ACTIVATION_BITS - 1
_CONTAINER_QMIN, _CONTAINER_QMAX = -128, 127  # int8 container of every weight width
_SCALE_FLOOR = float(torch.finfo(torch.float32).tiny)  # an all-zero channel keeps scale > 0


def check_bits(bits: int, what: str) -> int:
    """Return ``bits`` if it is an integer weight width in ``[MIN_BITS, MAX_BITS]``.

    Raises
    ------
    ValueError
        Naming ``what`` and the allowed range.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(
            f"{what} must be an integer number of bits from {MIN_BITS} to {MAX_BITS}, "
            f"got {bits!r}."
        )
    return bits


def weight_qmax(bits: int) -> int:
    """Largest integer of the narrow symmetric ``bits``-bit grid: ``2**(bits-1) - 1``."""
    return 2 ** (check_bits(bits, "bits") - 1) - 1


def _along(values: torch.Tensor, like: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Reshape a per-channel vector to broadcast along ``axis`` of ``like`` (as is if None)."""
    if axis is None:
        return values
    shape = [1] * like.dim()
    shape[axis] = -1
    return values.reshape(shape)


def quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | int,
    quant_min: int,
    quant_max: int,
    axis: int | None = None,
) -> torch.Tensor:
    """Integers ``clamp(round(x / scale) + zero_point, quant_min, quant_max)`` (int32).

    Parameters
    ----------
    x : Tensor
        Real values.
    scale, zero_point : Tensor or int
        One value (per-tensor, ``axis=None``) or one per channel along ``axis``.
    quant_min, quant_max : int
        The integer range; values outside it saturate.
    axis : int, optional
        Channel axis of per-channel parameters.

    Notes
    -----
    ``torch.round`` rounds half to even, as ONNX ``QuantizeLinear`` does.
    """
    zero_point = torch.as_tensor(zero_point)
    q = torch.round(x / _along(scale, x, axis)) + _along(zero_point, x, axis)
    return torch.clamp(q, quant_min, quant_max).to(torch.int32)


def dequantize(
    q: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | int,
    axis: int | None = None,
) -> torch.Tensor:
    """Real values ``scale * (q - zero_point)`` (float32) of integers ``q``."""
    zero_point = torch.as_tensor(zero_point)
    return (q - _along(zero_point, q, axis)).to(torch.float32) * _along(scale, q, axis)


def symmetric_weight_scale(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel scales ``max|w_c| / q_max`` (axis 0), floored above zero.

    With these scales every weight lands on an integer in ``[-q_max, q_max]``: no weight is
    clipped, and the largest of each channel is represented exactly.
    """
    magnitude = weight.detach().abs().reshape(weight.shape[0], -1).amax(dim=1)
    return (magnitude / weight_qmax(bits)).clamp_min(_SCALE_FLOOR).to(torch.float32)


def affine_qparams(lower: float, upper: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of the uint8 grid covering ``[min(lower, 0), max(upper, 0)]``.

    Returns
    -------
    scale : Tensor
        float32 scalar, ``(upper - lower) / 255`` (1 for an empty range).
    zero_point : Tensor
        int32 scalar in ``[0, 255]``, the integer that represents real 0 exactly.
    """
    if not (math.isfinite(lower) and math.isfinite(upper)) or lower > upper:
        raise ValueError(
            f"affine_qparams needs finite bounds with lower <= upper, got [{lower}, {upper}]; "
            "calibrate on inputs without NaN or infinity."
        )
    lower, upper = min(lower, 0.0), max(upper, 0.0)
    scale = (upper - lower) / (_ACTIVATION_QMAX - _ACTIVATION_QMIN)
    scale = torch.tensor(scale if scale > 0 else 1.0, dtype=torch.float32)
    zero_point = torch.clamp(
        _ACTIVATION_QMIN - torch.round(torch.tensor(lower, dtype=torch.float32) / scale),
        _ACTIVATION_QMIN, _ACTIVATION_QMAX,
    )
    return scale, zero_point.to(torch.int32)


class MinMaxObserver:
    """Records the smallest and largest value seen: the range that clips nothing.

    Attributes
    ----------
    lower_, upper_ : float
        The extremes seen so far (set by the first :meth:`update`).
    """

    def update(self, x: torch.Tensor) -> None:
        """Widen the recorded range to include every value of ``x``."""
        lower, upper = float(x.min()), float(x.max())
        self.lower_ = min(getattr(self, "lower_", lower), lower)
        self.upper_ = max(getattr(self, "upper_", upper), upper)

    def bounds(self) -> tuple[float, float]:
        """``(lower, upper)`` of everything observed."""
        if not hasattr(self, "lower_"):
            raise ValueError("The observer has seen no values; call update() before bounds().")
        return self.lower_, self.upper_


class PercentileObserver:
    """The central ``percentile`` % range of all values seen: outliers are clipped.

    Clipping the rare extremes of an activation distribution spends the 256 levels on the
    values that occur (McKinstry et al. 2019; Wu et al. 2020, "Integer quantization for deep
    learning inference", which calibrates with percentiles of 99.9 to 99.999).

    Parameters
    ----------
    percentile : float
        Upper bound = this percentile of the observed values, lower bound = the
        ``100 - percentile`` one (linear interpolation, ``numpy.percentile``). 100 is min/max.

    Attributes
    ----------
    values_ : list of ndarray
        Every observed value (float32), kept until :meth:`bounds` is called.
    """

    def __init__(self, percentile: float = 99.99) -> None:
        self.percentile = percentile

    def update(self, x: torch.Tensor) -> None:
        """Record every value of ``x``."""
        if not hasattr(self, "values_"):
            self.values_ = []
        self.values_.append(x.detach().reshape(-1).to(torch.float32).numpy().copy())

    def bounds(self) -> tuple[float, float]:
        """``(P_{100-p}, P_p)`` of everything observed."""
        if not hasattr(self, "values_"):
            raise ValueError("The observer has seen no values; call update() before bounds().")
        values = np.concatenate(self.values_)
        lower, upper = np.percentile(values, [100.0 - self.percentile, self.percentile])
        return float(lower), float(upper)


OBSERVERS: dict[str, Callable[[float], MinMaxObserver | PercentileObserver]] = {
    "minmax": lambda percentile: MinMaxObserver(),
    "percentile": lambda percentile: PercentileObserver(percentile),
}
"""Observer name -> factory taking the percentile (ignored by ``minmax``)."""


def make_observer(name: str, percentile: float) -> MinMaxObserver | PercentileObserver:
    """A fresh observer of the kind named (see :data:`OBSERVERS`)."""
    try:
        return OBSERVERS[name](percentile)
    except KeyError:
        raise ValueError(
            f"Unknown observer {name!r}; choose one of {sorted(OBSERVERS)}."
        ) from None


class QuantizedLayer(nn.Module):
    """A layer whose weight is fake-quantized per output channel, and optionally its input.

    Subclasses (:class:`QuantLinear`, :class:`QuantConv1d`, :class:`QuantConv2d`) supply
    the float operation.

    Parameters
    ----------
    weight : Tensor
        Float weight, output channels on axis 0. It is copied and snapped to its integer grid.
    bias : Tensor or None
        Float bias (copied). When the input is quantized it is snapped to the int32 grid of
        scale ``input_scale * weight_scale`` (Jacob et al. 2018, section 2.4), which is also
        what ONNX Runtime folds it to.
    weight_bits : int
        Stored weight width, 2 to 8.
    input_bounds : tuple of float, optional
        Calibrated ``(lower, upper)`` of the input; quantize it to uint8 when given.

    Attributes
    ----------
    stored_bits : dict of str to int
        Stored widths for :func:`satcompress.measure.theoretical_bytes`.
    """

    transient_attributes = {"_verified_on_grid": None}
    """Caches a checkpoint never stores (the weight's address), with their initial values."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        weight_bits: int,
        input_bounds: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        self.weight_bits = check_bits(weight_bits, "weight_bits")
        self.weight = nn.Parameter(weight.detach().clone().to(torch.float32))
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone().to(torch.float32))
        self.register_buffer("weight_scale", symmetric_weight_scale(self.weight, weight_bits))
        self.stored_bits = {"weight": weight_bits, "weight_scale": 32}
        self.quantize_input = input_bounds is not None
        self._verified_on_grid: tuple[int, int] | None = None
        if input_bounds is not None:
            scale, zero_point = affine_qparams(*input_bounds)
            self.register_buffer("input_scale", scale)
            self.register_buffer("input_zero_point", zero_point)
            self.stored_bits["input_zero_point"] = ACTIVATION_BITS
        self.snap_to_grid()

    @torch.no_grad()
    def refresh_weight_scale(self) -> None:
        """Recompute ``weight_scale`` from the current weight (after each QAT step)."""
        self.weight_scale.copy_(symmetric_weight_scale(self.weight, self.weight_bits))

    def integer_weight(self) -> torch.Tensor:
        """The stored integers of the weight (int8, within ``[-q_max, q_max]``)."""
        qmax = weight_qmax(self.weight_bits)
        return quantize(self.weight.detach(), self.weight_scale, 0, -qmax, qmax, 0).to(torch.int8)

    @torch.no_grad()
    def snap_to_grid(self) -> None:
        """Refresh the scale and replace the weight (and bias) by their dequantized integers.

        Afterwards the float tensors equal exactly what the integers represent, so the
        declared ``stored_bits`` describe the model truthfully and fake quantization of the
        weight is the identity.
        """
        self.refresh_weight_scale()
        self.weight.copy_(dequantize(self.integer_weight(), self.weight_scale, 0, 0))
        if self.bias is not None and self.quantize_input:
            bias_scale = self.input_scale * self.weight_scale
            self.bias.copy_(torch.round(self.bias / bias_scale) * bias_scale)

    def _fake_quantized_weight(self) -> torch.Tensor:
        """The weight as its integers represent it.

        In eval mode outside export, a weight already verified to lie on its grid (and not
        modified in place since: same storage, same version counter) is returned as is,
        because fake quantization would return it unchanged; this keeps PyTorch inference as
        fast as the float layer's instead of re-quantizing every weight on every call.
        Training and export always go through the fake-quantization operator (the STE
        gradient, the QDQ nodes).
        """
        fast = not (self.training or torch.compiler.is_exporting())
        state = (self.weight.data_ptr(), self.weight._version)
        if fast and state == self._verified_on_grid:
            return self.weight
        zero_points = torch.zeros_like(self.weight_scale, dtype=torch.int32)
        quantized = torch.fake_quantize_per_channel_affine(
            self.weight, self.weight_scale, zero_points, 0, _CONTAINER_QMIN, _CONTAINER_QMAX
        )
        if fast and torch.equal(quantized, self.weight):
            self._verified_on_grid = state
        return quantized

    def _float_forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantize_input:
            x = torch.fake_quantize_per_tensor_affine(
                x, self.input_scale, self.input_zero_point, _ACTIVATION_QMIN, _ACTIVATION_QMAX
            )
        return self._float_forward(x, self._fake_quantized_weight())

    def extra_repr(self) -> str:
        activation = f"uint{ACTIVATION_BITS}" if self.quantize_input else "float"
        return (f"weight_shape={tuple(self.weight.shape)}, weight_bits={self.weight_bits}, "
                f"input={activation}, bias={self.bias is not None}")


class QuantLinear(QuantizedLayer):
    """Fake-quantized ``nn.Linear``; build one with :meth:`from_float`."""

    @classmethod
    def from_float(
        cls,
        layer: nn.Linear,
        weight_bits: int,
        input_bounds: tuple[float, float] | None = None,
    ) -> QuantLinear:
        """Quantized copy of ``layer`` (which is not modified)."""
        return cls(layer.weight, layer.bias, weight_bits, input_bounds)

    def _float_forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if x.dim() <= 2 or self.quantize_input:
            return F.linear(x, weight, self.bias)
        # Weight-only layers on sequences are exported as Reshape + Gemm rather than MatMul:
        # ONNX Runtime (1.32) rewrites DequantizeLinear(weight) -> MatMul with a float input
        # into MatMulNBits, whose default accuracy level 4 quantizes the activations to int8
        # on the fly and so changes the model's outputs (by about 1e-3 on the tiny test
        # models); it leaves Gemm alone. With a quantized input the MatMul is kept: ONNX
        # Runtime then fuses the exact integer kernel MatMulIntegerToFloat.
        flat = F.linear(x.reshape(-1, x.shape[-1]), weight, self.bias)
        return flat.reshape(*x.shape[:-1], flat.shape[-1])


class _QuantConv(QuantizedLayer):
    """Fake-quantized zero-padded convolution; subclasses name the float layer and operator.

    The weight's output channels are on axis 0 for every dimensionality, so the per-channel
    scales, the QDQ export and the runtime's ``QuantConv`` are the same in 1-D and 2-D.
    """

    _convolution: Callable[..., torch.Tensor]

    @classmethod
    def from_float(
        cls,
        layer: nn.Module,
        weight_bits: int,
        input_bounds: tuple[float, float] | None = None,
    ) -> _QuantConv:
        """Quantized copy of ``layer`` (which is not modified)."""
        if layer.padding_mode != "zeros":
            raise ValueError(
                f"{cls.__name__} supports padding_mode='zeros' only, got "
                f"{layer.padding_mode!r}; exclude this layer from quantization."
            )
        quantized = cls(layer.weight, layer.bias, weight_bits, input_bounds)
        quantized.stride = layer.stride
        quantized.padding = layer.padding
        quantized.dilation = layer.dilation
        quantized.groups = layer.groups
        return quantized

    def _float_forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self._convolution(x, weight, self.bias, self.stride, self.padding, self.dilation,
                                 self.groups)


class QuantConv1d(_QuantConv):
    """Fake-quantized ``nn.Conv1d`` (zero padding); build one with :meth:`from_float`."""

    _convolution = staticmethod(F.conv1d)


class QuantConv2d(_QuantConv):
    """Fake-quantized ``nn.Conv2d`` (zero padding); build one with :meth:`from_float`."""

    _convolution = staticmethod(F.conv2d)


QUANTIZED_TYPES: dict[type, type[QuantizedLayer]] = {
    nn.Linear: QuantLinear,
    nn.Conv1d: QuantConv1d,
    nn.Conv2d: QuantConv2d,
}
"""Float layer type -> its fake-quantized counterpart (exact types: subclasses such as
``nn.MultiheadAttention``'s ``out_proj`` may compute something else and stay float)."""


def unquantizable_reason(layer: nn.Module) -> str | None:
    """Why ``layer`` has no fake-quantized counterpart, or None when it has one."""
    if type(layer) not in QUANTIZED_TYPES:
        return (f"no quantized {type(layer).__name__}: only "
                f"{', '.join(t.__name__ for t in QUANTIZED_TYPES)} are quantized")
    padding_mode = getattr(layer, "padding_mode", "zeros")
    if padding_mode != "zeros":
        return f"padding_mode={padding_mode!r}: quantized convolutions pad with zeros only"
    return None


def quantized_layer_from_float(
    layer: nn.Module, weight_bits: int, input_bounds: tuple[float, float] | None = None
) -> QuantizedLayer:
    """The fake-quantized counterpart of a float ``nn.Linear``, ``nn.Conv1d`` or ``nn.Conv2d``."""
    reason = unquantizable_reason(layer)
    if reason is not None:
        raise ValueError(f"Cannot quantize this {type(layer).__name__}: {reason}.")
    return QUANTIZED_TYPES[type(layer)].from_float(layer, weight_bits, input_bounds)


def _register_export_support() -> None:
    """Give ``torch.export`` a shape function for per-tensor fake quantization.

    PyTorch ships no fake (meta) kernel for this operator, so exporting a model that uses
    ``torch.fake_quantize_per_tensor_affine`` with tensor scale/zero point fails at tracing.
    The function only states the output shapes (the values are computed by the real kernel).
    Nothing is registered where PyTorch has a meta kernel of its own.
    """
    name = "aten::_fake_quantize_per_tensor_affine_cachemask_tensor_qparams"
    if torch._C._dispatch_has_kernel_for_dispatch_key(name, "Meta"):
        return

    def shapes(x, scale, zero_point, fake_quant_enabled, quant_min, quant_max):
        return torch.empty_like(x), torch.empty_like(x, dtype=torch.bool)

    torch.library.register_fake(name, shapes)


_register_export_support()
