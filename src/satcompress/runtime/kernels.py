"""One NumPy kernel per operator of the flight graph, in a registry (operator name -> kernel).

Operators follow the ONNX operator specifications (opset 18) unless noted; the fused
operators ``QuantGemm`` and ``QuantConv`` are satcompress's own (the graph builder,
:mod:`satcompress.pipeline.flight`, writes them for QDQ patterns), as are ``MatMulAdd`` and
``MatMulScaleSoftmax`` (the runtime's load-time fusion, :mod:`satcompress.runtime.fuse`,
writes them; they compute the same values as the operators they replace, in fewer passes). Every kernel is a function
``(inputs, attributes) -> outputs`` on NumPy arrays; an absent optional input is ``None``.
Every kernel also states, from its inputs' shapes and its attributes alone, how large an
array it may allocate (:attr:`Kernel.allocates`), so that the runtime can refuse a node that
would exceed its memory limits before running it.

Arithmetic (the fixed, documented order of operations)
------------------------------------------------------
Float tensors are float32 throughout. Where a kernel reduces (means, variances, softmax
normalisers, pooling) it accumulates in float64 and rounds the result to float32;
matrix products and convolutions of float tensors are float32 BLAS calls (``numpy.matmul``),
whose summation order is the BLAS library's (and may depend on the batch size): that, not
this code, is why float results agree with PyTorch to a tolerance rather than bit for bit.

Elementwise operators are exactly rounded float32 operations in a fixed order where the
definition is arithmetic (``LeakyRelu``, ``HardSigmoid``, ``HardSwish``, ``Reciprocal``,
``Clip``, ``Min``, ``Max``, ``Sign``, ``Where`` and the comparisons: the generated C gives the
same bits); ``Sigmoid``, ``Erf``, ``Log``, ``Softplus`` and ``Elu`` evaluate their function in
float64 and round once to float32; ``Tanh``, ``Exp`` and ``Sqrt`` are NumPy's float32
functions. Comparisons and ``Not``/``And``/``Or``/``Xor`` give bool tensors.

Quantized layers (Jacob et al. 2018, "Quantization and training of neural networks for
efficient integer-arithmetic-only inference", CVPR, section 2.3):

``QuantizeLinear``
    ``q = clamp(rint(x * fl32(1 / scale)) + zero_point, qmin, qmax)``, rounding half to even.
    It multiplies by the float32 reciprocal of the scale, as PyTorch's fake-quantization
    kernel (which the in-framework model runs) does, where ONNX specifies ``x / scale``: the
    two can differ by one step at an exact tie.
``DequantizeLinear``
    ``fl32(q - zero_point) * scale``: the integer difference, then one float32 product.
``QuantGemm`` / ``QuantConv`` with a quantized activation
    ``y = fl32(s_x * s_w[n] * acc[n] + b[n])`` with the integer accumulator
    ``acc[n] = sum_k (q_x[k] - zp_x) * (q_w[n, k] - zp_w[n])``. Every term and partial sum is an
    integer of magnitude below 2**31 (checked when the model loads), so the sum is exact in
    any order and equals an int32 accumulator's value. It is computed by BLAS on
    integer-valued floats: float32 where ``K * max|q_x - zp_x| * max|q_w - zp_w| <= 2**24``
    (every partial sum is then an exactly representable integer; K <= 513 for uint8
    activations and symmetric int8 weights), float64 (exact below 2**53) otherwise. The
    rescale is one float64 expression rounded once to float32 (``s_x * s_w[n]`` of two float32
    scales is exact in float64).
``QuantGemm`` / ``QuantConv`` with a float activation (weight-only quantization)
    ``y = s_w[n] * sum_k x[k] * (q_w[n, k] - zp_w[n]) + b[n]`` in float32: the sum by float32
    BLAS over the integer weights (converted per call, so only the integers stay resident).
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "Kernel",
    "KERNELS",
    "ACCUMULATOR_LIMIT",
    "integer_accumulator_bound",
    "pad_widths",
    "supported_operators",
]

Arrays = Sequence[np.ndarray | None]
Attributes = dict[str, Any]

ACCUMULATOR_LIMIT = 2**31 - 1
"""Largest magnitude an integer accumulator of a quantized layer may reach (int32)."""

_FLOAT = np.float32
_FLOAT32_EXACT = 2**24  # every integer up to this magnitude is a float32
_INTEGER_RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}
_MAX_RANK = 64
"""Most dimensions a NumPy array has: a shape or axes input longer than this is refused."""
_PART_ELEMENTS = 16
"""What one output array of a Split costs beyond its data (its header, about 100 bytes), in
8-byte elements: bounds a split into many parts before it runs."""


@dataclass(frozen=True)
class Kernel:
    """A kernel, the largest array it allocates, and the scratch memory it needs.

    Attributes
    ----------
    run : callable
        ``run(inputs, attributes) -> list of output arrays``.
    allocates : callable
        ``allocates(inputs, attributes) -> elements`` of the largest array ``run`` allocates
        (an output or a temporary), computed from the inputs' shapes and the attributes
        without allocating anything; it raises, as ``run`` would, where they do not fit.
    workspace : callable
        ``workspace(inputs, attributes, outputs) -> bytes`` of the scratch buffer the
        operator's arithmetic defines (e.g. a quantized layer's int32 accumulator, a
        convolution's unfolded input); 0 for most operators.
    """

    run: Callable[[Arrays, Attributes], list[np.ndarray]]
    allocates: Callable[[Arrays, Attributes], int]
    workspace: Callable[[Arrays, Attributes, list[np.ndarray]], int] = lambda i, a, o: 0


KERNELS: dict[str, Kernel] = {}
"""Operator name -> kernel; :func:`supported_operators` lists the keys."""


def _register(name: str, allocates: Callable[[Arrays, Attributes], int],
              workspace: Callable | None = None) -> Callable:
    def decorate(function: Callable[[Arrays, Attributes], list[np.ndarray]]) -> Callable:
        KERNELS[name] = (Kernel(function, allocates) if workspace is None
                         else Kernel(function, allocates, workspace))
        return function

    return decorate


def _count(shape: Sequence[int]) -> int:
    """Elements of an array of ``shape``, exactly (Python integers: no int64 overflow)."""
    return math.prod(int(size) for size in shape)


def _broadcast(*shapes: Sequence[int]) -> int:
    """Elements of the array broadcasting arrays of ``shapes`` gives (ValueError if none)."""
    return _count(np.broadcast_shapes(*shapes))


def _size_of_first(inputs: Arrays, attributes: Attributes) -> int:
    """``allocates`` of a kernel whose arrays are no larger than its first input."""
    return inputs[0].size


def _short(values: np.ndarray, what: str) -> np.ndarray:
    """``values`` flattened, refused when longer than any shape can be."""
    if values.size > _MAX_RANK:
        raise ValueError(f"{what}: {values.size} entries, but an array has at most {_MAX_RANK} "
                         "dimensions")
    return values.reshape(-1)


def supported_operators() -> list[str]:
    """Names of every operator the runtime executes, sorted."""
    return sorted(KERNELS)


# --- elementwise ------------------------------------------------------------------------------


def _elementwise(name: str, function: Callable[..., np.ndarray], arity: int) -> None:
    def run(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
        if len(inputs) != arity:
            raise ValueError(f"{name} takes {arity} input(s), got {len(inputs)}")
        return [np.asarray(function(*inputs))]

    KERNELS[name] = Kernel(run, lambda inputs, attributes: _broadcast(*(x.shape for x in inputs)))


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer):
        return np.trunc(a / b).astype(a.dtype)  # ONNX integer division truncates
    return a / b


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # 0.5 (1 + tanh(x / 2)): the logistic function without overflow for large |x|
    return (0.5 * (1.0 + np.tanh(0.5 * x.astype(np.float64)))).astype(x.dtype)


# Eigen's rational approximation of erf on [-4, 4] (erf = +-1 to float32 precision outside),
# also used by XLA and TensorFlow; NumPy has no erf and the runtime depends on NumPy only.
_ERF_NUMERATOR = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
                  -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
                  -1.60960333262415e-02)  # fmt: skip
_ERF_DENOMINATOR = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
                    -7.37332916720468e-03, -1.42647390514189e-02)  # fmt: skip


def _erf(x: np.ndarray) -> np.ndarray:
    clipped = np.clip(x.astype(np.float64), -4.0, 4.0)
    square = clipped * clipped
    numerator = np.polyval(_ERF_NUMERATOR, square) * clipped
    return (numerator / np.polyval(_ERF_DENOMINATOR, square)).astype(x.dtype)


def _in_float64(function: Callable[[np.ndarray], np.ndarray]
                ) -> Callable[[np.ndarray], np.ndarray]:
    """``function`` evaluated in float64 and rounded once to the input's dtype."""
    return lambda x: function(x.astype(np.float64)).astype(x.dtype)


def _softplus(x: np.ndarray) -> np.ndarray:
    # max(x, 0) + log1p(exp(-|x|)): log(exp(x) + 1) without overflow for large x
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


for _name, _function in {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": _divide, "Pow": np.power,
}.items():
    _elementwise(_name, _function, 2)
for _name, _function in {
    "Relu": lambda x: np.maximum(x, x.dtype.type(0)), "Sigmoid": _sigmoid, "Tanh": np.tanh,
    "Erf": _erf, "Sqrt": np.sqrt, "Exp": np.exp, "Neg": np.negative, "Abs": np.abs,
    "Identity": np.asarray, "Sign": np.sign, "Reciprocal": np.reciprocal,
    "Log": _in_float64(np.log), "Softplus": _in_float64(_softplus), "Not": np.logical_not,
}.items():
    _elementwise(_name, _function, 1)
for _name, _function in {
    "Equal": np.equal, "Greater": np.greater, "GreaterOrEqual": np.greater_equal,
    "Less": np.less, "LessOrEqual": np.less_equal, "And": np.logical_and,
    "Or": np.logical_or, "Xor": np.logical_xor,
}.items():
    _elementwise(_name, _function, 2)
_elementwise("Where", np.where, 3)


def _variadic(name: str, function: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    """Register ``function`` folded over one or more broadcast inputs, left to right."""
    def run(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
        if not inputs:
            raise ValueError(f"{name} takes at least one input")
        return [np.asarray(functools.reduce(function, inputs[1:], inputs[0]))]

    KERNELS[name] = Kernel(run, lambda inputs, attributes: _broadcast(*(x.shape for x in inputs)))


_variadic("Min", np.minimum)  # NaN in any input gives NaN
_variadic("Max", np.maximum)


def _single(inputs: Arrays, name: str) -> np.ndarray:
    if len(inputs) != 1:
        raise ValueError(f"{name} takes 1 input, got {len(inputs)}")
    return inputs[0]


def _float_attribute(attributes: Attributes, name: str, default: float) -> float:
    return float(attributes.get(name, default))


def _hard_sigmoid_of(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """``min(max(fl32(alpha) * x + fl32(beta), 0), 1)``: a product, a sum, then the clamp."""
    kind = x.dtype.type
    return np.minimum(np.maximum(x * kind(alpha) + kind(beta), kind(0)), kind(1))


@_register("LeakyRelu", _size_of_first)
def _leaky_relu(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """``x < 0 ? fl32(alpha) * x : x`` (``alpha`` 0.01 by default)."""
    x = _single(inputs, "LeakyRelu")
    return [np.where(x < 0, x * x.dtype.type(_float_attribute(attributes, "alpha", 0.01)), x)]


@_register("HardSigmoid", _size_of_first)
def _hard_sigmoid(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """See :func:`_hard_sigmoid_of` (``alpha`` 0.2 and ``beta`` 0.5 by default)."""
    x = _single(inputs, "HardSigmoid")
    return [_hard_sigmoid_of(x, _float_attribute(attributes, "alpha", 0.2),
                             _float_attribute(attributes, "beta", 0.5))]


@_register("HardSwish", _size_of_first)
def _hard_swish(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """``x * HardSigmoid(x)`` with ``alpha = fl32(1 / 6)``, ``beta = 0.5`` (the ONNX
    definition; PyTorch's ``x * relu6(x + 3) / 6`` differs by a rounding)."""
    x = _single(inputs, "HardSwish")
    return [x * _hard_sigmoid_of(x, 1.0 / 6.0, 0.5)]


@_register("Elu", _size_of_first)
def _elu(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """``x > 0 ? x : alpha * expm1(x)``, the product in float64 rounded once (``alpha`` 1)."""
    x = _single(inputs, "Elu")
    alpha = np.float64(_FLOAT(_float_attribute(attributes, "alpha", 1.0)))
    negative = alpha * np.expm1(np.minimum(x.astype(np.float64), 0.0))
    return [np.where(x > 0, x, negative.astype(x.dtype))]


def _clip_size(inputs: Arrays, attributes: Attributes) -> int:
    return _broadcast(*(x.shape for x in inputs if x is not None))


@_register("Clip", _clip_size)
def _clip(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """``min(max(x, low), high)`` with the optional scalar bounds ``low`` and ``high``
    (inputs 2 and 3); NaN stays NaN, and ``low > high`` gives ``high``."""
    x = y = inputs[0]
    for bound, function in zip(inputs[1:3], (np.maximum, np.minimum)):
        if bound is not None:
            y = function(y, bound.reshape(()).astype(x.dtype))
    return [np.asarray(y)]


# --- reductions and normalisation -------------------------------------------------------------


def _reduce_axes(x: np.ndarray, axes: np.ndarray | None, attributes: Attributes) -> tuple | None:
    """Axes of an opset-18 Reduce* node (``axes`` input); None means all of them or none."""
    if axes is None or axes.size == 0:
        return () if attributes.get("noop_with_empty_axes", 0) else None
    return tuple(int(axis) % x.ndim for axis in _short(axes, "axes"))


def _reduction(function: Callable[..., np.ndarray]) -> Callable[[Arrays, Attributes], list]:
    def run(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
        x = inputs[0]
        axes = _reduce_axes(x, inputs[1] if len(inputs) > 1 else None, attributes)
        if axes == ():
            return [x]
        keep = bool(attributes.get("keepdims", 1))
        reduced = function(x.astype(np.float64), axis=axes, keepdims=keep)
        return [np.asarray(reduced).astype(x.dtype)]

    return run


def _mean(values: np.ndarray, axis: int | tuple | None = None, keepdims: bool = False
          ) -> np.ndarray:
    """``np.mean`` (the same sum, then one division) without its warning for an empty slice:
    the mean of no values is NaN."""
    total = np.sum(values, axis=axis, keepdims=keepdims)
    return np.true_divide(total, values.size // total.size if total.size else 1)


KERNELS["ReduceMean"] = Kernel(_reduction(_mean), _size_of_first)
KERNELS["ReduceSum"] = Kernel(_reduction(np.sum), _size_of_first)
KERNELS["ReduceMax"] = Kernel(_reduction(np.max), _size_of_first)


def _softmax_in_place(x: np.ndarray, axis: int) -> np.ndarray:
    """Softmax of ``x`` along ``axis``, written into ``x`` (see ``Softmax``)."""
    x -= x.max(axis=axis, keepdims=True)
    np.exp(x, out=x)
    total = x.sum(axis=axis, keepdims=True, dtype=np.float64)
    x *= (1.0 / total).astype(x.dtype)
    return x


@_register("Softmax", _size_of_first)
def _softmax(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """``exp(x - max) * fl32(1 / sum(exp(x - max)))``: exponentials in float32, their sum in
    float64, then one float32 product by the rounded reciprocal (within one float32 rounding
    of the quotient, and about twice as fast on the attention maps that dominate a
    transformer's time: 3.1 M values per batch of 78 light curves)."""
    return [_softmax_in_place(inputs[0].copy(), attributes.get("axis", -1))]


@_register("LayerNormalization", _size_of_first)
def _layer_norm(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """``(x - mean) / sqrt(var + eps) * scale + bias`` over the axes from ``axis`` on."""
    x, scale = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    axis = attributes.get("axis", -1) % x.ndim
    rows = x.reshape(*x.shape[:axis], -1)  # the normalised axes as one
    count = rows.shape[-1]
    mean = (np.einsum("...i->...", rows, dtype=np.float64) / count).astype(x.dtype)
    mean = mean.reshape(*x.shape[:axis], *(1,) * (x.ndim - axis))
    y = x - mean
    centred = y.reshape(rows.shape)
    variance = np.einsum("...i,...i->...", centred, centred, dtype=np.float64) / count
    variance = variance.reshape(mean.shape)
    epsilon = np.float64(_FLOAT(attributes.get("epsilon", 1e-5)))
    inverse_std = (1.0 / np.sqrt(variance + epsilon)).astype(x.dtype)
    y *= inverse_std  # in place: (x - mean) * inverse_std * scale + bias, in that order
    y *= scale
    if bias is not None:
        y += bias
    return [y, mean, inverse_std]


def _batch_norm_size(inputs: Arrays, attributes: Attributes) -> int:
    x, scale, bias, mean, variance = inputs[:5]
    factor = _broadcast(scale.shape, variance.shape)  # scale * inverse_std

    def per_channel(size: int) -> tuple[int, ...]:
        return (1, size) + (1,) * (x.ndim - 2)

    return _broadcast(x.shape, per_channel(mean.size), per_channel(factor),
                      per_channel(bias.size))


@_register("BatchNormalization", _batch_norm_size)
def _batch_norm(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """Inference-mode batch normalisation over axis 1 with the stored running statistics."""
    x, scale, bias, mean, variance = inputs[:5]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    epsilon = np.float64(_FLOAT(attributes.get("epsilon", 1e-5)))
    inverse_std = 1.0 / np.sqrt(variance.astype(np.float64) + epsilon)
    y = (x - mean.reshape(shape)) * (scale * inverse_std).reshape(shape) + bias.reshape(shape)
    return [y.astype(x.dtype)]


# --- matrix products and convolution ----------------------------------------------------------


def _matmul_shape(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    """Shape of ``np.matmul`` of arrays of shapes ``a`` and ``b`` (their inner sizes are
    NumPy's to check: it does so before allocating)."""
    if not a or not b:
        raise ValueError("a matrix product takes no scalar operand")
    batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return (*batch, *a[-2:-1], *(b[-1:] if len(b) > 1 else ()))


def _matmul_size(inputs: Arrays, attributes: Attributes) -> int:
    return _count(_matmul_shape(inputs[0].shape, inputs[1].shape))


@_register("MatMul", _matmul_size)
def _matmul(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    return [np.matmul(inputs[0], inputs[1])]


@_register("MatMulAdd", _matmul_size)
def _matmul_add(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """``MatMul`` then ``Add`` of a bias (then ``Relu`` if ``activation`` says so), each
    written into the product (a load-time fusion, :mod:`satcompress.runtime.fuse`; the same
    values as the separate operators)."""
    y = np.matmul(inputs[0], inputs[1])
    y += inputs[2]
    if attributes.get("activation") == "Relu":
        np.maximum(y, y.dtype.type(0), out=y)
    return [y]


@_register("MatMulScaleSoftmax", _matmul_size)
def _matmul_scale_softmax(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """``Softmax(MatMul(a, b) / c)`` in the product's own buffer: a transformer's attention
    weights (a load-time fusion, :mod:`satcompress.runtime.fuse`; the same values as the
    three operators)."""
    y = np.matmul(inputs[0], inputs[1])
    y /= inputs[2]
    return [_softmax_in_place(y, attributes.get("axis", -1))]


def _gemm_size(inputs: Arrays, attributes: Attributes) -> int:
    a, b = inputs[0].shape, inputs[1].shape
    product = _matmul_shape(a[::-1] if attributes.get("transA", 0) else a,
                            b[::-1] if attributes.get("transB", 0) else b)
    c = inputs[2] if len(inputs) > 2 else None
    return _broadcast(product, () if c is None else c.shape)


@_register("Gemm", _gemm_size)
def _gemm(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """``alpha * A' @ B' + beta * C`` with ``A'``/``B'`` transposed as ``transA``/``transB`` say."""
    a = inputs[0].T if attributes.get("transA", 0) else inputs[0]
    b = inputs[1].T if attributes.get("transB", 0) else inputs[1]
    y = np.matmul(a, b)
    alpha = attributes.get("alpha", 1.0)
    if alpha != 1.0:
        y = y * _FLOAT(alpha)
    c = inputs[2] if len(inputs) > 2 else None
    if c is not None:
        beta = attributes.get("beta", 1.0)
        y = y + (c if beta == 1.0 else c * _FLOAT(beta))
    return [y.astype(inputs[0].dtype)]


def _integers(values: Any, length: int, what: str) -> tuple[int, ...]:
    """``values`` as ``length`` integers (TypeError / ValueError otherwise)."""
    integers = tuple(operator.index(value) for value in values)
    if len(integers) != length:
        raise ValueError(f"{what} has {len(integers)} entries, not {length}")
    return integers


def _spatial(attributes: Attributes, name: str, rank: int, default: int) -> tuple[int, ...]:
    return _integers(attributes.get(name, (default,) * rank), rank, name)


class _Geometry(NamedTuple):
    """Where a window slides: (begin, end) padding, stride, dilation and output positions of
    every spatial axis."""

    widths: tuple[tuple[int, int], ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    positions: tuple[int, ...]


def _geometry(spatial: Sequence[int], kernel: Sequence[int], attributes: Attributes
              ) -> _Geometry:
    """The geometry of a ``kernel`` window over ``spatial`` axes (ONNX ``pads``: begins...,
    ends...; ``strides`` and ``dilations`` default to 1), checked without allocating."""
    rank = len(kernel)
    if len(spatial) != rank:
        raise ValueError(f"a {rank}-d window cannot slide over {len(spatial)} spatial axes")
    pads = _spatial(attributes, "pads", 2 * rank, 0)
    strides = _spatial(attributes, "strides", rank, 1)
    dilations = _spatial(attributes, "dilations", rank, 1)
    if min(pads, default=0) < 0 or min((*kernel, *strides, *dilations), default=1) < 1:
        raise ValueError("pads must be >= 0, and kernel sizes, strides and dilations >= 1")
    widths = tuple((pads[i], pads[i + rank]) for i in range(rank))
    positions = []
    for size, (begin, end), k, stride, dilation in zip(spatial, widths, kernel, strides,
                                                       dilations):
        starts = size + begin + end - (k - 1) * dilation
        if starts < 1:
            raise ValueError("the window is larger than the padded input")
        positions.append(-(-starts // stride))
    return _Geometry(widths, strides, dilations, tuple(positions))


def _padded_size(shape: Sequence[int], geometry: _Geometry) -> int:
    """Elements of an (N, C, *spatial) array of ``shape`` once padded."""
    padded = (size + begin + end for size, (begin, end) in zip(shape[2:], geometry.widths))
    return _count(shape[:2]) * _count(padded)


def _windows(x: np.ndarray, kernel: Sequence[int], attributes: Attributes,
             pad_value: float) -> np.ndarray:
    """``x`` (N, C, *spatial) padded and unfolded to (N, C, *out, *kernel) windows (a view)."""
    rank = len(kernel)
    geometry = _geometry(x.shape[2:], kernel, attributes)
    if any(begin or end for begin, end in geometry.widths):
        x = np.pad(x, [(0, 0), (0, 0), *geometry.widths], constant_values=pad_value)
    extents = [(k - 1) * d + 1 for k, d in zip(kernel, geometry.dilations)]
    spatial_axes = tuple(range(2, 2 + rank))
    windows = sliding_window_view(x, extents, axis=spatial_axes)
    output_slices = tuple(slice(None, None, s) for s in geometry.strides)
    kernel_slices = tuple(slice(None, None, d) for d in geometry.dilations)
    return windows[(slice(None), slice(None)) + output_slices + kernel_slices]


def _convolve(x: np.ndarray, weight: np.ndarray, attributes: Attributes,
              dtype: np.dtype) -> np.ndarray:
    """Grouped N-d cross-correlation as one matrix product per group (im2col), in ``dtype``.

    ``x`` (N, C, *spatial), ``weight`` (M, C / group, *kernel) -> (N, M, *out).
    """
    kernel = weight.shape[2:]
    rank = len(kernel)
    group = attributes.get("group", 1)
    windows = _windows(x, kernel, attributes, 0.0)
    batch, channels = x.shape[:2]
    out_shape = windows.shape[2 : 2 + rank]
    # (N, group, C/group, *out, *kernel) -> (N, group, *out, C/group * prod(kernel))
    grouped = windows.reshape(batch, group, channels // group, *out_shape, *kernel)
    order = (0, 1) + tuple(range(3, 3 + rank)) + (2,) + tuple(range(3 + rank, 3 + 2 * rank))
    depth = (channels // group) * int(np.prod(kernel))
    columns = grouped.transpose(order).reshape(batch, group, -1, depth)
    filters = weight.reshape(group, weight.shape[0] // group, -1).astype(dtype, copy=False)
    y = np.matmul(columns.astype(dtype, copy=False), filters.transpose(0, 2, 1))  # (N, g, L, M/g)
    y = y.transpose(0, 1, 3, 2).reshape(batch, weight.shape[0], *out_shape)
    return y


def _unfolded_bytes(x: np.ndarray, weight: np.ndarray, output: np.ndarray, itemsize: int) -> int:
    """Bytes of the unfolded input of a convolution (its im2col matrix); 0 when 1x1 stride 1."""
    kernel = weight.shape[2:]
    out_positions = int(np.prod(output.shape[2:]))
    if int(np.prod(kernel)) == 1 and out_positions == int(np.prod(x.shape[2:])):
        return 0
    return x.shape[0] * x.shape[1] * int(np.prod(kernel)) * out_positions * itemsize


def _convolution_size(x: np.ndarray, weight: np.ndarray, attributes: Attributes) -> int:
    """Largest array :func:`_convolve` allocates: the padded input, the unfolded input or
    the output."""
    geometry = _geometry(x.shape[2:], weight.shape[2:], attributes)
    positions = x.shape[0] * _count(geometry.positions)
    return max(_padded_size(x.shape, geometry), positions * x.shape[1] * _count(weight.shape[2:]),
               positions * weight.shape[0])


def _conv_size(inputs: Arrays, attributes: Attributes) -> int:
    return _convolution_size(inputs[0], inputs[1], attributes)


@_register("Conv", _conv_size, workspace=lambda i, a, o: _unfolded_bytes(i[0], i[1], o[0], 4))
def _conv(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    x, weight = inputs[0], inputs[1]
    y = _convolve(x, weight, attributes, x.dtype)  # a new array: the bias is added in place
    bias = inputs[2] if len(inputs) > 2 else None
    if bias is not None:
        y += bias.reshape((1, -1) + (1,) * (y.ndim - 2))
    return [y.astype(x.dtype, copy=False)]


# --- quantization -----------------------------------------------------------------------------


def _per_axis_shape(values: np.ndarray, like_ndim: int, axis: int) -> tuple[int, ...]:
    """The shape :func:`_per_axis` gives ``values``."""
    if values.ndim == 0 or values.size == 1:
        return ()
    shape = [1] * like_ndim
    shape[axis % like_ndim] = values.size
    return tuple(shape)


def _per_axis(values: np.ndarray, like_ndim: int, axis: int) -> np.ndarray:
    """Broadcast a per-axis (1-D) parameter along ``axis``; a scalar stays as it is."""
    return values.reshape(_per_axis_shape(values, like_ndim, axis))


def _linear_quantization_size(inputs: Arrays, attributes: Attributes) -> int:
    """``allocates`` of (De)QuantizeLinear: the input broadcast with its scale and zero point."""
    x, axis = inputs[0], attributes.get("axis", 1)
    parameters = [value for value in inputs[1:3] if value is not None]
    return _broadcast(x.shape, *(_per_axis_shape(value, x.ndim, axis) for value in parameters))


@_register("QuantizeLinear", _linear_quantization_size)
def _quantize_linear(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    x, scale = inputs[0], inputs[1]
    zero_point = inputs[2] if len(inputs) > 2 and inputs[2] is not None else np.uint8(0)
    zero_point = np.asarray(zero_point)
    axis = attributes.get("axis", 1)
    low, high = _INTEGER_RANGES[zero_point.dtype]
    inverse = (_FLOAT(1.0) / _per_axis(scale, x.ndim, axis)).astype(_FLOAT)
    steps = np.rint(x * inverse) + _per_axis(zero_point, x.ndim, axis).astype(_FLOAT)
    return [np.clip(steps, low, high).astype(zero_point.dtype)]


@_register("DequantizeLinear", _linear_quantization_size)
def _dequantize_linear(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    q, scale = inputs[0], inputs[1]
    zero_point = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
    axis = attributes.get("axis", 1)
    centred = q.astype(np.int32)
    if zero_point is not None:
        centred = centred - _per_axis(zero_point, q.ndim, axis).astype(np.int32)
    return [centred.astype(_FLOAT) * _per_axis(scale, q.ndim, axis)]


def _largest_integer(dtype: np.dtype, zero_point: np.ndarray | None) -> int:
    """Largest ``|q - zero_point|`` over the integer range of ``dtype``."""
    low, high = _INTEGER_RANGES[np.dtype(dtype)]
    if zero_point is None:
        return max(-low, high)
    points = zero_point.astype(np.int64)
    return int(max(np.abs(low - points).max(), np.abs(high - points).max()))


def _quantized_operands(inputs: Arrays) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The operands of a fused quantized layer and its per-channel float64 multiplier.

    Inputs: ``x, x_scale, x_zero_point, w, w_scale, w_zero_point[, bias]``; ``x_scale`` is
    None for a float activation. Returns ``(x - zp_x, w - zp_w, multiplier)`` with the
    multiplier ``s_x * s_w[n]`` (or ``s_w[n]``), exact in float64. With a quantized activation
    the operands are float32 when every partial sum of the accumulator is an integer below
    2**24 for any input (then float32 BLAS sums exactly; ``K * max|x - zp_x| * max|w - zp_w|``
    bounds it from the dtypes and zero points), float64 otherwise; with a float activation
    they are float32.
    """
    x, x_scale, x_zero_point, weight, w_scale, w_zero_point = inputs[:6]
    multiplier = w_scale.astype(np.float64).reshape(-1)
    dtype = np.dtype(_FLOAT)
    if x_scale is not None:
        multiplier = multiplier * np.float64(x_scale.reshape(()))
        depth = weight[0].size
        bound = (depth * _largest_integer(x.dtype, x_zero_point)
                 * _largest_integer(weight.dtype, w_zero_point))
        dtype = np.dtype(_FLOAT if bound <= _FLOAT32_EXACT else np.float64)
    activation = x.astype(dtype, copy=False)  # a copy unless x is a float activation
    if x_scale is not None and x_zero_point is not None:
        activation -= dtype.type(x_zero_point.reshape(()))
    integers = weight.astype(dtype)
    if w_zero_point is not None and np.any(w_zero_point):
        integers -= _per_axis(w_zero_point, weight.ndim, 0).astype(dtype)
    return activation, integers, multiplier


def _rescaled(accumulator: np.ndarray, multiplier: np.ndarray, bias: np.ndarray | None,
              channel_axis: int, exact: bool) -> np.ndarray:
    """``accumulator * multiplier + bias``: for an ``exact`` (integer) accumulator evaluated
    in float64 and rounded to float32 once, otherwise in float32 like a float layer."""
    shape = [1] * accumulator.ndim
    shape[channel_axis] = -1
    wide = np.float64 if exact else _FLOAT
    y = accumulator.astype(wide, copy=False) * multiplier.astype(wide).reshape(shape)
    if bias is not None:
        y += bias.astype(wide, copy=False).reshape(shape)
    return y.astype(_FLOAT, copy=False)


def _optional(inputs: Arrays, index: int) -> np.ndarray | None:
    return inputs[index] if len(inputs) > index else None


def _quantized_size(inputs: Arrays, accumulator: tuple[int, ...], channel_axis: int) -> int:
    """Largest array a quantized layer allocates: its float operands, or its ``accumulator``
    (of that shape) rescaled by the per-channel multiplier."""
    x, weight, weight_scale = inputs[0], inputs[3], inputs[4]
    multiplier = [1] * len(accumulator)
    multiplier[channel_axis] = weight_scale.size
    return max(x.size, weight.size, _broadcast(accumulator, multiplier))


def _quant_gemm_size(inputs: Arrays, attributes: Attributes) -> int:
    accumulator = _matmul_shape(inputs[0].shape, inputs[3].shape[::-1])
    return _quantized_size(inputs, accumulator, -1)


def _quant_conv_size(inputs: Arrays, attributes: Attributes) -> int:
    x, weight = inputs[0], inputs[3]
    geometry = _geometry(x.shape[2:], weight.shape[2:], attributes)
    accumulator = (x.shape[0], weight.shape[0], *geometry.positions)
    return max(_convolution_size(x, weight, attributes),
               _quantized_size(inputs, accumulator, 1))


@_register("QuantGemm", _quant_gemm_size, workspace=lambda i, a, o: o[0].size * 4)
def _quant_gemm(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """Fused quantized linear layer: ``x`` (..., K), ``w`` (N, K) integers -> (..., N) float32.

    See the module docstring for the arithmetic; the workspace is the int32 accumulator.
    """
    activation, integers, multiplier = _quantized_operands(inputs)
    accumulator = np.matmul(activation, integers.T)
    return [_rescaled(accumulator, multiplier, _optional(inputs, 6), -1, inputs[1] is not None)]


@_register("QuantConv", _quant_conv_size,
           workspace=lambda i, a, o: o[0].size * 4 + _unfolded_bytes(i[0], i[3], o[0], 4))
def _quant_conv(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """Fused quantized convolution: ``x`` (N, C, *spatial), ``w`` (M, C / group, *kernel)."""
    activation, integers, multiplier = _quantized_operands(inputs)
    accumulator = _convolve(activation, integers, attributes, activation.dtype)
    return [_rescaled(accumulator, multiplier, _optional(inputs, 6), 1, inputs[1] is not None)]


def integer_accumulator_bound(weight: np.ndarray, weight_zero_point: np.ndarray | None,
                              activation_dtype: np.dtype, activation_zero_point: int) -> int:
    """Largest ``|acc|`` a quantized layer can reach: ``max_n sum_k max|x - zp_x| |w - zp_w|``.

    The runtime refuses a model whose bound exceeds :data:`ACCUMULATOR_LIMIT`, so every
    accumulator fits an int32 and the float64 sum that computes it is exact.
    """
    low, high = _INTEGER_RANGES[np.dtype(activation_dtype)]
    largest_activation = max(abs(low - activation_zero_point), abs(high - activation_zero_point))
    integers = weight.astype(np.int64).reshape(weight.shape[0], -1)
    if weight_zero_point is not None and weight_zero_point.size not in (1, len(integers)):
        raise ValueError(f"{weight_zero_point.size} weight zero points for {len(integers)} "
                         "output channels")
    if weight_zero_point is not None:
        integers = integers - weight_zero_point.astype(np.int64).reshape(-1, 1)
    return int(np.abs(integers).sum(axis=1).max(initial=0)) * largest_activation


# --- pooling ----------------------------------------------------------------------------------


def _pooling_size(inputs: Arrays, attributes: Attributes) -> int:
    """The input (AveragePool's float64 copy), the padded input or the output."""
    x = inputs[0]
    kernel = attributes["kernel_shape"]
    geometry = _geometry(x.shape[2:], _integers(kernel, len(kernel), "kernel_shape"), attributes)
    return max(x.size, _padded_size(x.shape, geometry),
               _count(x.shape[:2]) * _count(geometry.positions))


@_register("MaxPool", _pooling_size)
def _max_pool(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    x = inputs[0]
    kernel = tuple(attributes["kernel_shape"])
    windows = _windows(x, kernel, attributes, -np.inf)
    axes = tuple(range(x.ndim, x.ndim + len(kernel)))
    return [windows.max(axis=axes).astype(x.dtype)]


@_register("AveragePool", _pooling_size)
def _average_pool(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """Mean over each window; padding counts only with ``count_include_pad=1``."""
    x = inputs[0]
    kernel = tuple(attributes["kernel_shape"])
    axes = tuple(range(x.ndim, x.ndim + len(kernel)))
    sums = _windows(x.astype(np.float64), kernel, attributes, 0.0).sum(axis=axes)
    if attributes.get("count_include_pad", 0) or not any(attributes.get("pads", ())):
        counts = np.float64(np.prod(kernel))
    else:
        ones = np.ones((1, 1) + x.shape[2:])
        counts = _windows(ones, kernel, attributes, 0.0).sum(axis=axes)
    return [(sums / counts).astype(x.dtype)]


@_register("GlobalAveragePool", _size_of_first)
def _global_average_pool(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    x = inputs[0]
    mean = _mean(x.astype(np.float64), axis=tuple(range(2, x.ndim)), keepdims=True)
    return [mean.astype(x.dtype)]


# --- shapes and data movement -----------------------------------------------------------------


@_register("Transpose", _size_of_first)
def _transpose(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """A view (no copy): matrix products take transposed operands as they are, and no
    kernel writes into its inputs."""
    return [np.transpose(inputs[0], attributes.get("perm"))]


@_register("Reshape", _size_of_first)
def _reshape(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """ONNX Reshape: ``-1`` infers a dimension; ``0`` copies the input's (unless allowzero)."""
    x, shape = inputs[0], [int(d) for d in _short(inputs[1], "shape")]
    if not attributes.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return [x.reshape(shape)]


@_register("Flatten", _size_of_first)
def _flatten(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    x = inputs[0]
    axis = attributes.get("axis", 1) % (x.ndim + 1)
    return [x.reshape(int(np.prod(x.shape[:axis])), -1)]


def _axes_input(inputs: Arrays, attributes: Attributes) -> list[int]:
    axes = inputs[1] if len(inputs) > 1 and inputs[1] is not None else attributes.get("axes", [])
    return [int(axis) for axis in _short(np.asarray(axes), "axes")]


@_register("Unsqueeze", _size_of_first)
def _unsqueeze(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    x = inputs[0]
    rank = x.ndim + len(_axes_input(inputs, attributes))
    axes = sorted(axis % rank for axis in _axes_input(inputs, attributes))
    return [x.reshape(x.shape) if not axes else np.expand_dims(x, tuple(axes))]


@_register("Squeeze", _size_of_first)
def _squeeze(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    x = inputs[0]
    axes = _axes_input(inputs, attributes)
    return [np.squeeze(x, axis=tuple(a % x.ndim for a in axes)) if axes else np.squeeze(x)]


@_register("Concat", lambda inputs, attributes: sum(x.size for x in inputs))
def _concat(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    return [np.concatenate(inputs, axis=attributes["axis"])]


def _gather_size(inputs: Arrays, attributes: Attributes) -> int:
    data, indices = inputs[0], inputs[1]
    axis = operator.index(attributes.get("axis", 0))
    if not -data.ndim <= axis < data.ndim:
        raise IndexError(f"axis {axis} of a {data.ndim}-d array")
    axis %= data.ndim
    return max(indices.size, _count((*data.shape[:axis], *indices.shape, *data.shape[axis + 1:])))


@_register("Gather", _gather_size)
def _gather(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    data, indices = inputs[0], inputs[1].astype(np.int64)
    axis = attributes.get("axis", 0)
    indices = np.where(indices < 0, indices + data.shape[axis], indices)
    return [np.take(data, indices, axis=axis)]


@_register("Shape", lambda inputs, attributes: inputs[0].ndim)
def _shape(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    shape = np.array(inputs[0].shape, dtype=np.int64)
    return [shape[attributes.get("start", 0) : attributes.get("end", None)]]


@_register("Slice", _size_of_first)
def _slice(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    x, starts, ends = inputs[0], _short(inputs[1], "starts"), inputs[2].reshape(-1)
    axes = _optional(inputs, 3)
    steps = _optional(inputs, 4)
    axes = range(len(starts)) if axes is None else axes.reshape(-1)
    steps = np.ones(len(starts), np.int64) if steps is None else steps.reshape(-1)
    index = [slice(None)] * x.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps):
        index[int(axis) % x.ndim] = slice(int(start), int(end), int(step))
    return [np.ascontiguousarray(x[tuple(index)])]


def _split_size(inputs: Arrays, attributes: Attributes) -> int:
    """The input, or the parts' own arrays (each costs as much as :data:`_PART_ELEMENTS`)."""
    split = _optional(inputs, 1)
    parts = split.size if split is not None else operator.index(attributes.get("num_outputs", 1))
    return max(inputs[0].size, _PART_ELEMENTS * parts)


def _split_sizes(x: np.ndarray, split: np.ndarray | None, axis: int,
                 attributes: Attributes) -> list[int]:
    length = x.shape[axis]
    if split is not None:
        sizes = [int(size) for size in split.reshape(-1)]
    elif "num_outputs" in attributes:
        parts = operator.index(attributes["num_outputs"])
        if parts < 1:
            raise ValueError(f"num_outputs is {parts}; a Split has at least one output")
        chunk = -(-length // parts)  # ceil: the last part is the smaller one
        sizes = [min(chunk, max(0, length - part * chunk)) for part in range(parts)]
    else:
        raise ValueError("Split needs its 'split' input (the part sizes) or the num_outputs "
                         "attribute")
    if min(sizes, default=0) < 0 or sum(sizes) != length:
        raise ValueError(f"split sizes {sizes[:8]} must be >= 0 and add up to the axis "
                         f"length {length}")
    return sizes


@_register("Split", _split_size)
def _split(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """ONNX Split (opset 18): part sizes from the optional ``split`` input, or ``num_outputs``
    parts of ``ceil(length / num_outputs)`` (the last one smaller)."""
    x = inputs[0]
    axis = operator.index(attributes.get("axis", 0))
    if not -x.ndim <= axis < x.ndim:
        raise IndexError(f"axis {axis} of a {x.ndim}-d array")
    axis %= x.ndim
    bounds = np.cumsum(_split_sizes(x, _optional(inputs, 1), axis, attributes))[:-1]
    return [np.ascontiguousarray(part) for part in np.split(x, bounds, axis=axis)]


_PAD_MODES = ("constant", "reflect", "edge")
"""The ONNX Pad modes (opset 18), each also a ``numpy.pad`` mode of the same meaning."""


def pad_widths(shape: Sequence[int], pads: np.ndarray, axes: np.ndarray | None,
               mode: Any) -> list[tuple[int, int]]:
    """(begin, end) of every axis of a Pad node's input of ``shape``, checked (``pads``,
    ``axes`` and ``mode`` as the node has them); a negative width crops."""
    rank, pads = len(shape), pads.reshape(-1)
    if mode not in _PAD_MODES:
        raise ValueError(f"Pad mode {str(mode)[:20]!r} is not one of {', '.join(_PAD_MODES)}")
    axes = range(rank) if axes is None else [int(a) for a in _short(axes, "axes")]
    if pads.size != 2 * len(axes):
        raise ValueError(f"pads has {pads.size} entries for {len(axes)} axes (begins, ends)")
    widths = [(0, 0)] * rank
    for k, axis in enumerate(axes):
        if not -rank <= axis < rank:
            raise IndexError(f"axis {axis} of a {rank}-d array")
        widths[axis % rank] = (int(pads[k]), int(pads[k + len(axes)]))
    for size, (begin, end) in zip(shape, widths):
        kept = size - max(-begin, 0) - max(-end, 0)
        if kept < 0:
            raise ValueError(f"pads ({begin}, {end}) crop more than the {size} elements")
        grown = max(begin, end)
        if grown > 0 and (mode == "reflect" and grown >= kept or mode == "edge" and not kept):
            raise ValueError(f"{mode} padding by ({begin}, {end}) of an axis of {kept} elements: "
                             "reflect needs more elements than the padding, edge at least one")
    return widths


def _widths(inputs: Arrays, attributes: Attributes) -> list[tuple[int, int]]:
    return pad_widths(inputs[0].shape, inputs[1], _optional(inputs, 3),
                      attributes.get("mode", "constant"))


def _pad_size(inputs: Arrays, attributes: Attributes) -> int:
    widths = _widths(inputs, attributes)
    return max(inputs[0].size, _count(size + begin + end
                                      for size, (begin, end) in zip(inputs[0].shape, widths)))


@_register("Pad", _pad_size)
def _pad(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """ONNX Pad (opset 18): ``pads`` (begins, then ends) of every axis or of the optional
    ``axes``; negative widths crop first. Modes: ``constant`` (the optional scalar
    ``constant_value``, 0 by default), ``reflect`` (mirrored about the edge element) and
    ``edge`` (the edge element repeated)."""
    x = inputs[0]
    mode = attributes.get("mode", "constant")
    widths = _widths(inputs, attributes)
    x = x[tuple(slice(max(-begin, 0), size - max(-end, 0))
                for size, (begin, end) in zip(x.shape, widths))]
    widths = [(max(begin, 0), max(end, 0)) for begin, end in widths]
    if mode != "constant":
        return [np.pad(x, widths, mode=mode)]
    value = _optional(inputs, 2)
    fill = x.dtype.type(0 if value is None else value.reshape(()))
    return [np.pad(x, widths, constant_values=fill)]


def _expanded_shape(inputs: Arrays) -> tuple[int, ...]:
    shape = tuple(int(size) for size in _short(inputs[1], "shape"))
    if min(shape, default=0) < 0:
        raise ValueError(f"Expand to shape {shape}: dimensions must be >= 0")
    return np.broadcast_shapes(inputs[0].shape, shape)


@_register("Expand", lambda inputs, attributes: _count(_expanded_shape(inputs)))
def _expand(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """``x`` broadcast with ``shape`` (both ways, as NumPy broadcasts), copied."""
    return [np.ascontiguousarray(np.broadcast_to(inputs[0], _expanded_shape(inputs)))]


_ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 9: np.bool_,
                10: np.float16, 11: np.float64}  # fmt: skip


@_register("Cast", _size_of_first)
def _cast(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    return [inputs[0].astype(_ONNX_DTYPES[attributes["to"]])]


# --- generated constants ----------------------------------------------------------------------


def sinusoidal_positional_encoding(n_positions: int, d_model: int) -> np.ndarray:
    """``PE[t, 2i] = sin(t / 10000^(2i/d))``, ``PE[t, 2i+1] = cos(...)`` as float32 (n, d).

    The transformer's fixed positional encoding (Vaswani et al. 2017), computed in float64 and
    rounded once to float32, the same expression :mod:`satcompress.networks.t2` evaluates; the
    graph builder only replaces a stored tensor by this operator when the two are bit for bit
    equal, so an artifact never depends on the two libraries' sin/cos agreeing.
    """
    positions = np.arange(n_positions, dtype=np.float64)[:, None]
    frequencies = np.exp(np.arange(0, d_model, 2, dtype=np.float64)
                         * (-math.log(10000.0) / d_model))
    encoding = np.zeros((n_positions, d_model), dtype=np.float64)
    encoding[:, 0::2] = np.sin(positions * frequencies)
    encoding[:, 1::2] = np.cos(positions * frequencies[: d_model // 2])
    return encoding.astype(np.float32)


def _encoding_shape(attributes: Attributes) -> tuple[int, ...]:
    shape = tuple(operator.index(size) for size in attributes["shape"])
    if not 2 <= len(shape) <= _MAX_RANK or min(shape) < 1:
        raise ValueError(f"shape {shape} needs 2 to {_MAX_RANK} positive dimensions (..., n, d)")
    return shape


@_register("SinusoidalPositionalEncoding",
           lambda inputs, attributes: _count(_encoding_shape(attributes)))
def _positional_encoding(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """satcompress's own constant generator: no inputs, attribute ``shape`` (..., n, d).

    Regenerating the encoding at load instead of storing it saves ``4 n d`` bytes of flash
    (17,600 for the compressed transient model); it is evaluated once, as a constant.
    """
    shape = _encoding_shape(attributes)
    return [sinusoidal_positional_encoding(shape[-2], shape[-1]).reshape(shape)]
