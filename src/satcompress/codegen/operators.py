"""One C emitter per runtime operator, with the NumPy kernels' arithmetic.

Every emitter writes the statements of one node (:class:`~satcompress.codegen.block.Block`)
with all shapes resolved at generation time (batch 1). The arithmetic follows
:mod:`satcompress.runtime.kernels` operation for operation:

* float32 elementwise operations are the same IEEE operations (the code is compiled with
  ``-std=c99``, which turns off floating-point contraction, so no fused multiply-add changes a
  rounding); minimum, maximum and clamps select as NumPy's ``minimum``/``maximum`` do (NaN
  wins); ``Log``, ``Softplus`` and ``Elu`` call the C library's double functions where the
  kernels call NumPy's, rounded once to float (equal within a float rounding); reductions
  (means, variances, softmax normalisers, pooling sums) accumulate in double and round once
  to float, as the kernels do;
* matrix products, convolutions and recurrent gate sums of floats sum over the contraction
  index in increasing order from 0, each term added with one fused multiply-add (C99
  ``fmaf``: the product and the sum rounded once; exact in IEEE arithmetic, so the same bits
  on every target, one instruction on x86-64 with FMA, AArch64 and the Cortex-M4F/M7's FPU;
  NumPy's BLAS sums in its own order: float layers agree within the documented logit
  tolerance, not bit for bit). The host form (:data:`_ROWS` output rows at a time, the
  columns vectorised, each sum in a register) and the microcontroller form (a dot product per
  output, decoding compressed weights) add the same terms in the same order, so both builds
  give identical results;
* softmax rows are reduced in eight interleaved lanes (:func:`_lane_reduce`: the maximum;
  the float64 sum of the exponentials), as are a layer norm's float64 sums; a transformer's
  attention (:func:`_attention`) takes each query's maximum and float64 sum over the keys in
  increasing order;
* the softmax exponential is the generator's own branch-free ``expf`` (Cephes' polynomial
  with fused multiply-adds, within 1 ulp of the exact value; :data:`~satcompress.codegen.
  block.HELPERS`), which compilers vectorise and which gives the same bits on every target;
  NumPy's differs by an ulp or two (within the float tolerance);
* quantized layers accumulate ``(q_x - zp_x) * (q_w - zp_w)`` in an int32 and rescale with
  one double expression rounded once to float: bit for bit the NumPy runtime's values;
  ``QuantizeLinear`` is ``rintf(x * fl32(1 / scale)) + zp`` clamped, rounding half to even.

Torch-free: part of the flight path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from satcompress.codegen.block import Block
from satcompress.codegen.emit import (
    ConstantArray,
    broadcast_strides,
    c_type,
    index,
    literal,
    strides,
)
from satcompress.codegen.program import CodegenError
from satcompress.runtime import Node
from satcompress.runtime.kernels import _ERF_DENOMINATOR, _ERF_NUMERATOR, pad_widths

__all__ = ["EMITTERS", "Emitter", "emitted_operators"]

Emitter = Callable[[Block, Node], None]
EMITTERS: dict[str, Emitter] = {}
"""Operator name -> emitter; every operator of :data:`satcompress.runtime.KERNELS`."""

_F32 = np.dtype(np.float32)
_INTEGER_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


def emitted_operators() -> list[str]:
    """Names of every operator the generator writes C for, sorted."""
    return sorted(EMITTERS)


def _register(*names: str) -> Callable[[Emitter], Emitter]:
    def decorate(function: Emitter) -> Emitter:
        for name in names:
            EMITTERS[name] = function
        return function

    return decorate


def _f(value: float) -> str:
    return literal(value, _F32)


def _d(value: float) -> str:
    return literal(value, np.dtype(np.float64))


def _is_float(dtype: np.dtype) -> bool:
    return np.dtype(dtype).kind == "f"


# --- elementwise ------------------------------------------------------------------------------


def _horner(coefficients: Sequence[float], variable: str) -> str:
    text = _d(coefficients[0])
    for coefficient in coefficients[1:]:
        text = f"({text}) * {variable} + {_d(coefficient)}"
    return text


def _extremum(largest: bool, a: str, b: str, floating: bool) -> str:
    """NumPy's ``maximum`` (``largest``) or ``minimum`` of ``a`` and ``b``: ``a`` on a tie,
    NaN if either is NaN."""
    nan = f" || {a} != {a}" if floating else ""
    return f"(({a} {'>=' if largest else '<='} {b}{nan}) ? {a} : {b})"


def _unary(node: Node, a: str, dtype: np.dtype) -> str:
    op, ctype = node.op, c_type(dtype)
    single = np.dtype(dtype) == np.float32
    if op == "Relu":
        return f"({a} > 0 ? {a} : ({ctype})0)"
    if op == "Neg":
        return f"({ctype})(-{a})"
    if op == "Abs":
        return (f"fabs{'f' if single else ''}({a})" if _is_float(dtype)
                else f"({ctype})({a} < 0 ? -{a} : {a})")
    if op == "Identity":
        return a
    if op == "Not":
        return f"(uint8_t)!{a}"
    if op == "Sign":
        sign = f"({a} > 0 ? 1 : ({a} < 0 ? -1 : 0))"
        return f"({ctype})({a} != {a} ? {a} : {sign})" if _is_float(dtype) else f"({ctype}){sign}"
    if not _is_float(dtype):
        raise CodegenError(f"{op} of {dtype} values is not generated; only floats.")
    suffix = "f" if single else ""
    if op in ("Tanh", "Sqrt", "Exp"):
        return f"{op.lower()}{suffix}({a})"
    if op == "Sigmoid":
        return f"({ctype})(0.5 * (1.0 + tanh(0.5 * (double){a})))"
    if op == "Log":
        return f"({ctype})log((double){a})"
    if op == "Reciprocal":
        return f"({ctype})1 / {a}"
    if op == "Softplus":
        return f"({ctype})(fmax((double){a}, 0.0) + log1p(exp(-fabs((double){a}))))"
    if op == "LeakyRelu":
        alpha = np.dtype(dtype).type(float(node.attributes.get("alpha", 0.01)))
        return f"({a} < 0 ? {a} * {literal(alpha, dtype)} : {a})"
    if op == "Elu":
        alpha = _d(float(np.float32(float(node.attributes.get("alpha", 1.0)))))
        return f"({a} > 0 ? {a} : ({ctype})({alpha} * expm1((double){a})))"
    raise AssertionError(op)


def _erf_lines(block: Block, a: str, target: str, dtype: np.dtype) -> None:
    """The runtime's rational erf approximation in double (Horner, as ``np.polyval``)."""
    clipped, square = block.fresh("c"), block.fresh("s")
    block.line(f"const double {clipped} = fmin(fmax((double){a}, -4.0), 4.0);")
    block.line(f"const double {square} = {clipped} * {clipped};")
    numerator = _horner(_ERF_NUMERATOR, square)
    denominator = _horner(_ERF_DENOMINATOR, square)
    block.line(f"{target} = ({c_type(dtype)})((({numerator}) * {clipped}) / ({denominator}));")


def _hard_sigmoid_lines(block: Block, node: Node, a: str, target: str, dtype: np.dtype
                        ) -> None:
    """``min(max(a * alpha + beta, 0), 1)`` in ``dtype`` (times ``a`` for HardSwish)."""
    kind, ctype = np.dtype(dtype).type, c_type(dtype)
    swish = node.op == "HardSwish"
    alpha = kind(1.0 / 6.0 if swish else float(node.attributes.get("alpha", 0.2)))
    beta = kind(0.5 if swish else float(node.attributes.get("beta", 0.5)))
    t = block.fresh("h")
    block.line(f"{ctype} {t} = {a} * {literal(alpha, dtype)} + {literal(beta, dtype)};")
    block.line(f"{t} = {_extremum(True, t, f'({ctype})0', True)};")
    block.line(f"{t} = {_extremum(False, t, f'({ctype})1', True)};")
    block.line(f"{target} = {f'{a} * {t}' if swish else t};")


_BINARY = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/"}
_COMPARISONS = {"Equal": "==", "Greater": ">", "GreaterOrEqual": ">=", "Less": "<",
                "LessOrEqual": "<=", "And": "&&", "Or": "||"}


@_register("Relu", "Sigmoid", "Tanh", "Erf", "Sqrt", "Exp", "Neg", "Abs", "Identity",
           "Add", "Sub", "Mul", "Div", "Pow", "Sign", "Log", "Reciprocal", "Softplus",
           "LeakyRelu", "Elu", "HardSigmoid", "HardSwish", "Not", "Xor", "Where", "Min",
           "Max", "Clip", *_COMPARISONS)
def _elementwise(block: Block, node: Node) -> None:
    out = block.value(node.outputs[0])
    y = block.writer(out.name)
    readers = [(block.reader(name), broadcast_strides(block.value(name).shape, out.shape))
               if name else None for name in node.inputs]
    own = strides(out.shape)
    dtype, ctype = out.dtype, c_type(out.dtype)
    if node.op in ("HardSigmoid", "HardSwish") and not _is_float(dtype):
        raise CodegenError(f"{node.op} of {dtype} values is not generated; only floats.")

    def body(variables: list[str]) -> None:
        operands = [None if reader is None else reader[0](index(variables, reader[1]))
                    for reader in readers]
        target = f"{y}[{index(variables, own)}]"
        if node.op == "Erf":
            _erf_lines(block, operands[0], target, dtype)
        elif node.op in ("HardSigmoid", "HardSwish"):
            _hard_sigmoid_lines(block, node, operands[0], target, dtype)
        elif node.op in ("Min", "Max", "Clip"):
            # NumPy's minimum / maximum folded left to right; Clip: max with low, min with high
            largest = [True, False] if node.op == "Clip" else [node.op == "Max"] * len(operands)
            t = block.fresh("m")
            block.line(f"{ctype} {t} = {operands[0]};")
            for operand, high in zip(operands[1:], largest):
                if operand is not None:
                    bound = f"({ctype}){operand}"
                    block.line(f"{t} = {_extremum(high, t, bound, _is_float(dtype))};")
            block.line(f"{target} = {t};")
        elif node.op in _BINARY:
            block.line(f"{target} = ({ctype})({operands[0]} {_BINARY[node.op]} {operands[1]});")
        elif node.op in _COMPARISONS:
            block.line(f"{target} = (uint8_t)({operands[0]} {_COMPARISONS[node.op]} "
                       f"{operands[1]});")
        elif node.op == "Xor":
            block.line(f"{target} = (uint8_t)(!{operands[0]} != !{operands[1]});")
        elif node.op == "Where":
            block.line(f"{target} = {operands[0]} ? {operands[1]} : {operands[2]};")
        elif node.op == "Pow":
            function = "powf" if dtype == np.float32 else "pow"
            block.line(f"{target} = ({ctype}){function}({operands[0]}, {operands[1]});")
        else:
            block.line(f"{target} = {_unary(node, operands[0], dtype)};")

    block.loops(out.shape, body)


# --- reductions and normalisation -------------------------------------------------------------


def _reduced_axes(block: Block, node: Node) -> tuple[int, ...] | None:
    x = block.value(node.inputs[0])
    axes = block.constant(node.inputs[1]) if len(node.inputs) > 1 else None
    if len(node.inputs) > 1 and node.inputs[1] and axes is None:
        raise CodegenError(f"{node.op} with computed axes is not generated; store the axes.")
    if axes is None or axes.size == 0:
        return () if node.attributes.get("noop_with_empty_axes", 0) else tuple(range(len(x.shape)))
    return tuple(sorted({int(a) % len(x.shape) for a in axes.reshape(-1)}))


def _copy(block: Block, source: str, target: str) -> None:
    value = block.value(target)
    read, y = block.reader(source), block.writer(target)
    block.loops((value.size,), lambda v: block.line(f"{y}[{v[0]}] = {read(v[0])};"))


@_register("ReduceMean", "ReduceSum", "ReduceMax")
def _reduce(block: Block, node: Node) -> None:
    x, out = block.value(node.inputs[0]), block.value(node.outputs[0])
    axes = _reduced_axes(block, node)
    if not axes:
        _copy(block, x.name, out.name)
        return
    read, y = block.reader(x.name), block.writer(out.name)
    own = strides(x.shape)
    kept = [d for d in range(len(x.shape)) if d not in axes]
    count_ = math.prod(x.shape[d] for d in axes)
    kept_out = strides([x.shape[d] for d in kept])

    def outer(kept_vars: list[str]) -> None:
        total = block.fresh("acc")
        block.line(f"double {total} = {'-INFINITY' if node.op == 'ReduceMax' else '0.0'};")

        def inner(reduced_vars: list[str]) -> None:
            variables = ["0"] * len(x.shape)
            for d, v in zip(kept, kept_vars):
                variables[d] = v
            for d, v in zip(axes, reduced_vars):
                variables[d] = v
            element = f"(double){read(index(variables, own))}"
            if node.op == "ReduceMax":
                block.line(f"if ({element} > {total} || {element} != {element}) "
                           f"{total} = {element};")
            else:
                block.line(f"{total} += {element};")

        block.loops([x.shape[d] for d in axes], inner)
        result = f"{total} / {count_}.0" if node.op == "ReduceMean" else total
        block.line(f"{y}[{index(kept_vars, kept_out)}] = ({c_type(out.dtype)})({result});")

    block.loops([x.shape[d] for d in kept], outer)


_LANES = 8
"""Interleaved lanes of a row reduction (a softmax's maximum and sum, a layer norm's sums):
independent chains in a fixed order that compilers turn into one vector operation."""


def _lane_reduce(block: Block, length: int, element: Callable[[str], str], ctype: str,
                 start: str | None, update: Callable[[str, str], str],
                 combine: Callable[[str, str], str]) -> str:
    """The name of a reduction of ``element(k)`` over ``k < length`` in :data:`_LANES`
    interleaved lanes: lane t takes the k with ``k % LANES == t`` in increasing order, from
    ``start`` (None: from its first element); the lanes are combined pairwise,
    ``((l0 . l1) . (l2 . l3)) . ((l4 . l5) . (l6 . l7))``. ``update(lane, x)`` is the expression
    of ``lane`` with ``x`` added."""
    count = min(_LANES, length)
    chunks, tail = divmod(length, count)
    lanes, t, c, lane = block.fresh("l"), block.fresh("t"), block.fresh("c"), block.fresh("v")
    block.line(f"{ctype} {lanes}[{count}];")
    block.open(f"for (int {t} = 0; {t} < {count}; ++{t})")
    first = 0 if start is not None else 1
    block.line(f"{ctype} {lane} = {start if start is not None else element(t)};")
    if chunks > first:
        block.line(f"for (int {c} = {first}; {c} < {chunks}; ++{c}) {lane} = "
                   f"{update(lane, element(f'{c} * {count} + {t}'))};")
    block.line(f"{lanes}[{t}] = {lane};")
    block.close()
    if tail:
        block.line(f"for (int {t} = 0; {t} < {tail}; ++{t}) {lanes}[{t}] = "
                   f"{update(f'{lanes}[{t}]', element(f'{chunks * count} + {t}'))};")
    terms = [f"{lanes}[{n}]" for n in range(count)]
    while len(terms) > 1:
        terms = [combine(*terms[n:n + 2]) if n + 1 < len(terms) else terms[n]
                 for n in range(0, len(terms), 2)]
    result = block.fresh("r")
    block.line(f"const {ctype} {result} = {terms[0]};")
    return result


def _softmax_rows(block: Block, y: str, shape: Sequence[int], axis: int) -> None:
    """Softmax in place over ``axis`` of the float array ``y`` (see the Softmax kernel)."""
    axis %= len(shape)
    outer, length = math.prod(shape[:axis]), shape[axis]
    inner = math.prod(shape[axis + 1:])

    def body(variables: list[str]) -> None:
        base, k = block.fresh("b"), block.fresh("k")
        block.line(f"float *const {base} = {y} + {index(variables, (length * inner, 1))};")
        step = f" * {inner}" if inner != 1 else ""

        def element(position: str) -> str:
            return f"{base}[({position}){step}]"

        largest = _lane_reduce(block, length, element, "float", None,
                               lambda lane, x: f"{x} > {lane} ? {x} : {lane}",
                               lambda a, b: f"({a} > {b} ? {a} : {b})")
        exp = block.constants.helper("exp")
        block.line(f"for (int {k} = 0; {k} < {length}; ++{k}) {element(k)} = "
                   f"{exp}({element(k)} - {largest});")
        total = _lane_reduce(block, length, lambda position: f"(double){element(position)}",
                             "double", "0.0", lambda lane, x: f"{lane} + {x}",
                             lambda a, b: f"({a} + {b})")
        scale = block.fresh("r")
        block.line(f"const float {scale} = (float)(1.0 / {total});")
        block.line(f"for (int {k} = 0; {k} < {length}; ++{k}) {element(k)} *= {scale};")

    block.loops((outer, inner), body)


@_register("Softmax")
def _softmax(block: Block, node: Node) -> None:
    out = block.value(node.outputs[0])
    _copy(block, node.inputs[0], out.name)
    _softmax_rows(block, block.writer(out.name), out.shape, node.attributes.get("axis", -1))


def _per_row(block: Block, name: str, length: int, what: str) -> Callable[[str], str]:
    """Reader of a per-element parameter of a normalised row (one value, or one per element)."""
    size = block.value(name).size
    read = block.reader(name)
    if size == length:
        return read
    if size == 1:
        return lambda i: read("0")
    raise CodegenError(f"{what} with {size} parameters for rows of {length} is not generated.")


@_register("LayerNormalization")
def _layer_norm(block: Block, node: Node) -> None:
    x, out = block.value(node.inputs[0]), block.value(node.outputs[0])
    axis = node.attributes.get("axis", -1) % len(x.shape)
    rows, length = math.prod(x.shape[:axis]), math.prod(x.shape[axis:])
    read, y = block.reader(x.name), block.writer(out.name)
    scale = _per_row(block, node.inputs[1], length, "LayerNormalization")
    bias = (_per_row(block, node.inputs[2], length, "LayerNormalization")
            if len(node.inputs) > 2 and node.inputs[2] else None)
    extra = [block.writer(name) if name in block.program.values
             and block.value(name).kind == "arena" else None for name in node.outputs[1:3]]
    epsilon = _d(float(np.float32(node.attributes.get("epsilon", 1e-5))))

    def body(variables: list[str]) -> None:
        row = variables[0]
        base = f"{row} * {length}" if row != "0" else "0"
        k, mean, inverse = block.fresh("k"), block.fresh("m"), block.fresh("r")

        def at(position: str) -> str:
            return f"{base} + {position}" if base != "0" else position

        def plus(lane: str, x: str) -> str:
            return f"{lane} + {x}"

        def pair(a: str, b: str) -> str:
            return f"({a} + {b})"

        total = _lane_reduce(block, length, lambda p: f"(double){read(at(p))}", "double",
                             "0.0", plus, pair)
        block.line(f"const float {mean} = (float)({total} / {length}.0);")
        block.line(f"for (int {k} = 0; {k} < {length}; ++{k}) {y}[{at(k)}] = "
                   f"{read(at(k))} - {mean};")
        squares = _lane_reduce(block, length,
                               lambda p: f"(double){y}[{at(p)}] * (double){y}[{at(p)}]",
                               "double", "0.0", plus, pair)
        block.line(f"const float {inverse} = (float)(1.0 / sqrt({squares} / {length}.0 + "
                   f"{epsilon}));")
        block.open(f"for (int {k} = 0; {k} < {length}; ++{k})")
        block.line(f"float v = {y}[{at(k)}] * {inverse};")
        block.line(f"v = v * {scale(k)};")
        if bias is not None:
            block.line(f"v = v + {bias(k)};")
        block.line(f"{y}[{at(k)}] = v;")
        block.close()
        for pointer, result in zip(extra, (mean, inverse)):
            if pointer is not None:
                block.line(f"{pointer}[{row}] = {result};")

    block.loops((rows,), body)


@_register("BatchNormalization")
def _batch_norm(block: Block, node: Node) -> None:
    x, out = block.value(node.inputs[0]), block.value(node.outputs[0])
    read, y = block.reader(x.name), block.writer(out.name)
    scale, bias, mean, variance = (block.constant(name) for name in node.inputs[1:5])
    if any(v is None for v in (scale, bias, mean, variance)):
        raise CodegenError("BatchNormalization with computed statistics is not generated.")
    epsilon = np.float64(np.float32(node.attributes.get("epsilon", 1e-5)))
    channels = x.shape[1]
    factor = (np.broadcast_to(scale.reshape(-1), (channels,)).astype(np.float64)
              * (1.0 / np.sqrt(np.broadcast_to(variance.reshape(-1), (channels,))
                               .astype(np.float64) + epsilon)))
    key = f"{node.outputs[0]}:bn"
    factor_read = block.constants.get(key, factor, "factor", dense=True).at
    mean_read = block.constants.get(key, np.broadcast_to(mean.reshape(-1), (channels,))
                                    .astype(np.float32), "mean", dense=True).at
    bias_read = block.constants.get(key, np.broadcast_to(bias.reshape(-1), (channels,))
                                    .astype(np.float32), "bias", dense=True).at
    own = strides(x.shape)

    def body(variables: list[str]) -> None:
        channel = variables[1]
        element = index(variables, own)
        block.line(f"{y}[{element}] = (float)((double)({read(element)} - {mean_read(channel)})"
                   f" * {factor_read(channel)} + (double){bias_read(channel)});")

    block.loops(x.shape, body)


# --- matrix products --------------------------------------------------------------------------


_ROWS = 10
"""Most output rows a product accumulates together when its right operand is contiguous along
the columns: for each column, one sum per row in a register (independent fused multiply-add
chains), the column loop the one compilers vectorise; rows are split into groups as even as
possible. In a micro-benchmark of the ``assembled-t2`` model's 100 x 44 x 44 and 100 x 44 x 88
products (GCC 12, AVX2 host, fmaf) 10 rows took 0.71x and 0.53x the time of the former form
(1 row, 64 columns accumulated in a local array, which compilers keep in memory), 4 rows
1.07x and 0.74x, 20 rows 6.9x (the sums no longer fit in registers)."""

_VECTOR = 8
"""Floats in a host vector register (AVX2; two NEON registers): the host form of a product
runs its columns in two loops, the multiples of this many and the rest, so that compilers
give the rest a narrower vector loop instead of a scalar one (the 100 x 44 x 44 products of
``assembled-t2``: 0.71x the time)."""

_TILE = 64
"""Output columns a product of fewer than :data:`_ROWS` rows (a batch-1 MLP's) accumulates in
a local array over the whole sum."""

Finish = Callable[[str, str, list[str]], None]
"""``finish(target, total, variables)``: the statements storing the sum ``total`` of the output
element with index variables ``variables`` into the C lvalue ``target``."""

Sum = Callable[[str, str, str, str], None]
"""``sum(target, total, i, j)``: as :data:`Finish` for output row ``i``, column ``j``."""


def _mac(total: str, a: str, b: str) -> str:
    """``total += a * b`` rounded once (C99 ``fmaf``): see the module docstring."""
    return f"{total} = fmaf({a}, {b}, {total});"


def _store(block: Block) -> Finish:
    return lambda target, total, variables: block.line(f"{target} = {total};")


def _blocked_rows(block: Block, rows: int, depth: int, columns: int,
                  a_at: Callable[[str, str], str], b_at: Callable[[str, str], str],
                  target: Callable[[str, str], str], finish: Sum) -> None:
    """``finish(target(i, j), sum_k a_at(i, k) * b_at(k, j), i, j)`` for every output, k in
    increasing order from 0 with :func:`_mac`, up to :data:`_ROWS` rows at a time (see there)."""
    size = -(-rows // -(-rows // _ROWS))
    split = columns - columns % _VECTOR if not block.constants.compressed else 0

    def group(first: str, count: int) -> None:
        row_vars = [first] + [f"({first} + {r})" for r in range(1, count)]
        for start, end in ((0, split), (split, columns)) if split else ((0, columns),):
            if start == end:
                continue
            j, k, w = block.fresh("j"), block.fresh("k"), block.fresh("w")
            totals = [block.fresh("s") for _ in range(count)]
            block.open(f"for (int {j} = {start}; {j} < {end}; ++{j})")
            block.line(f"float {', '.join(f'{total} = 0.0f' for total in totals)};")
            block.open(f"for (int {k} = 0; {k} < {depth}; ++{k})")
            block.line(f"const float {w} = {b_at(k, j)};")
            for i, total in zip(row_vars, totals):
                block.line(_mac(total, a_at(i, k), w))
            block.close()
            for i, total in zip(row_vars, totals):
                finish(target(i, j), total, i, j)
            block.close()

    full = rows - rows % size
    if full > size:
        i = block.fresh("i")
        block.open(f"for (int {i} = 0; {i} < {full}; {i} += {size})")
        group(i, size)
        block.close()
    elif full:
        group("0", size)
    if rows % size:
        group(str(full), rows % size)


def _tiled_rows(block: Block, rows: int, depth: int, columns: int,
                a_at: Callable[[str, str], str], b_at: Callable[[str, str], str],
                target: Callable[[str, str], str], finish: Sum) -> None:
    """As :func:`_blocked_rows` for fewer rows: one row at a time, :data:`_TILE` columns
    accumulated in a local array."""
    def row(i: str) -> None:
        for start in range(0, columns, _TILE):
            width = min(_TILE, columns - start)
            acc, k, j, a = block.fresh("acc"), block.fresh("k"), block.fresh("j"), block.fresh("a")
            column = f"({start} + {j})" if start else j
            block.line(f"float {acc}[{width}] = {{0.0f}};")
            block.open(f"for (int {k} = 0; {k} < {depth}; ++{k})")
            block.line(f"const float {a} = {a_at(i, k)};")
            block.line(f"for (int {j} = 0; {j} < {width}; ++{j}) "
                       + _mac(f"{acc}[{j}]", a, b_at(k, column)))
            block.close()
            block.open(f"for (int {j} = 0; {j} < {width}; ++{j})")
            finish(target(i, column), f"{acc}[{j}]", i, column)
            block.close()

    block.loops((rows,), lambda variables: row(variables[0]))


@dataclass(frozen=True)
class _Operands:
    """``a @ b`` as read by the generated code: the broadcast batch shape, the matrix sizes and
    each operand's element strides (batch dimensions, then row and column)."""

    batch: tuple[int, ...]
    rows: int
    depth: int
    columns: int
    a_steps: tuple[int, ...]
    b_steps: tuple[int, ...]

    def a_at(self, read: Callable[[str], str], batch: list[str], i: str, k: str) -> str:
        return read(index([*batch, i, k], self.a_steps))

    def b_at(self, read: Callable[[str], str], batch: list[str], k: str, j: str) -> str:
        return read(index([*batch, k, j], self.b_steps))


def _operands(block: Block, a_name: str, b_name: str, trans_a: bool = False,
              trans_b: bool = False) -> _Operands:
    """The operands of ``a @ b`` (NumPy matmul semantics, 2-D operands optionally transposed)."""
    a_shape, b_shape = list(block.value(a_name).shape), list(block.value(b_name).shape)
    a_steps, b_steps = list(strides(a_shape)), list(strides(b_shape))
    if trans_a:
        a_shape, a_steps = a_shape[::-1], a_steps[::-1]
    if trans_b:
        b_shape, b_steps = b_shape[::-1], b_steps[::-1]
    if len(a_shape) == 1:
        a_shape, a_steps = [1, a_shape[0]], [0, a_steps[0]]
    if len(b_shape) == 1:
        b_shape, b_steps = [b_shape[0], 1], [b_steps[0], 0]
    batch = tuple(np.broadcast_shapes(tuple(a_shape[:-2]), tuple(b_shape[:-2])))

    def batch_steps(shape: list[int], steps: list[int]) -> tuple[int, ...]:
        # NumPy broadcasting (broadcast_strides) applied to the operand's actual strides
        own = broadcast_strides(shape[:-2], batch) if shape[:-2] else (0,) * len(batch)
        return tuple(0 if s == 0 else t for s, t in zip(own, [0] * (len(batch) - len(
            shape[:-2])) + steps[:-2]))

    return _Operands(batch, a_shape[-2], a_shape[-1], b_shape[-1],
                     (*batch_steps(a_shape, a_steps), *a_steps[-2:]),
                     (*batch_steps(b_shape, b_steps), *b_steps[-2:]))


def _product(block: Block, a_name: str, b_name: str, out_name: str, finish: Finish,
             trans_a: bool = False, trans_b: bool = False) -> None:
    """``out = a @ b`` in float (see :func:`_operands`): each output's sum over k in increasing
    order (:func:`_mac`), stored by ``finish``."""
    out = block.value(out_name)
    y = block.writer(out_name)
    operands = _operands(block, a_name, b_name, trans_a, trans_b)
    depth, columns = operands.depth, operands.columns
    read_a = block.reader(a_name)
    weight = block.constant(b_name)
    if weight is not None and weight.ndim <= 2:
        # a stored matrix: the rows of every batch of a at once (a is contiguous)
        matrix = np.ascontiguousarray((weight.T if trans_b else weight).reshape(depth, columns))
        rows = out.size // columns
        a_row, a_k = (operands.a_steps[-2] if rows > 1 else 0), operands.a_steps[-1]

        def a_at(i: str, k: str) -> str:
            return read_a(index([i, k], [a_row, a_k]))

        def target(i: str, j: str) -> str:
            return f"{y}[{index([i, j], [columns, 1])}]"

        def done(t: str, total: str, i: str, j: str) -> None:
            finish(t, total, [i, j])

        key = f"{b_name}:{int(trans_b)}"
        if block.constants.compressed:
            _dot_products(block, rows, depth, columns, a_at, a_k,
                          block.constants.get(key, np.ascontiguousarray(matrix.T), "nk"),
                          target, done)
            return
        w = block.constants.get(key, matrix, "kn", dense=True)
        rows_form = _blocked_rows if rows >= _ROWS else _tiled_rows
        rows_form(block, rows, depth, columns, a_at,
                  lambda k, j: f"{w.name}[{index([k, j], [columns, 1])}]", target, done)
        return
    read_b = block.reader(b_name, dense=True)
    rows = operands.rows
    out_steps = strides([*operands.batch, rows, columns])

    def matrices(batch: list[str]) -> None:
        def a_at(i: str, k: str) -> str:
            return operands.a_at(read_a, batch, i, k)

        def b_at(k: str, j: str) -> str:
            return operands.b_at(read_b, batch, k, j)

        def target(i: str, j: str) -> str:
            return f"{y}[{index([*batch, i, j], out_steps)}]"

        def done(t: str, total: str, i: str, j: str) -> None:
            finish(t, total, [*batch, i, j])

        if operands.b_steps[-1] == 1 and columns > 1:
            rows_form = _blocked_rows if rows >= _ROWS else _tiled_rows
            rows_form(block, rows, depth, columns, a_at, b_at, target, done)
            return

        def dot(variables: list[str]) -> None:
            i, j = variables
            total, k = block.fresh("acc"), block.fresh("k")
            block.line(f"float {total} = 0.0f;")
            block.line(f"for (int {k} = 0; {k} < {depth}; ++{k}) "
                       + _mac(total, a_at(i, k), b_at(k, j)))
            done(target(i, j), total, i, j)

        block.loops((rows, columns), dot)

    block.loops(operands.batch, matrices)


def _dot_products(block: Block, rows: int, depth: int, columns: int,
                  a_at: Callable[[str, str], str], a_step: int, w: ConstantArray,
                  target: Callable[[str, str], str], finish: Sum) -> None:
    """The microcontroller form of a product with a stored matrix: one dot product per output
    with the (compressed) matrix ``w`` stored N x K, each weight decoded where it is read; the
    same sums as the host form."""
    def dot(variables: list[str]) -> None:
        i, j = variables
        total, k = block.fresh("acc"), block.fresh("k")
        block.line(f"float {total} = 0.0f;")
        if w.form == "codebook4" and not w.ram and depth % 2 == 0 and a_step == 1:
            # two 4-bit indices per byte, in the same order of k
            row, byte = block.fresh("ix"), block.fresh("b")
            block.line(f"const uint8_t *const {row} = {w.name}_ix + {index([j], [depth // 2])};")
            block.open(f"for (int {k} = 0; {k} < {depth}; {k} += 2)")
            block.line(f"const unsigned {byte} = {row}[{k} >> 1];")
            block.line(_mac(total, a_at(i, k), f"{w.name}_cb[{byte} & 15u]"))
            block.line(_mac(total, a_at(i, f"({k} + 1)"), f"{w.name}_cb[{byte} >> 4]"))
            block.close()
        else:
            block.line(f"for (int {k} = 0; {k} < {depth}; ++{k}) "
                       + _mac(total, a_at(i, k), w.at(index([j, k], [depth, 1]))))
        finish(target(i, j), total, i, j)

    block.loops((rows, columns), dot)


def _attention_partner(block: Block, node: Node) -> Node | None:
    """The MatMul that runs right after the MatMulScaleSoftmax ``node`` and alone reads its
    (last-axis) softmax, with which it is generated (:func:`_attention`); None otherwise."""
    nodes = block.program.nodes
    step = next(n for n, other in enumerate(nodes) if other is node)
    weights = node.outputs[0]
    shape = block.value(weights).shape
    if (step + 1 == len(nodes) or weights == block.program.output_name
            or node.attributes.get("axis", -1) % len(shape) != len(shape) - 1):
        return None
    after = nodes[step + 1]
    readers = [other for other in nodes if weights in other.inputs]
    if (after.op != "MatMul" or readers != [after] or after.inputs[0] != weights
            or after.inputs[1] == weights or len(shape) < 2):
        return None
    return after


def _attention(block: Block, node: Node, after: Node) -> None:
    """A transformer's attention, ``P = softmax(Q K / c)`` (``node``) then ``O = P V``
    (``after``), with P stored transposed in its buffer (keys by queries: no other node reads
    it), so that every loop runs along the queries: the scores as a product (its columns
    stored as rows), the softmax over the keys elementwise across queries (each query's
    maximum and float64 sum taken over the keys in increasing order), and ``O`` as the product
    ``V^T P^T`` (each output's sum over the keys in increasing order, as :func:`_product`).
    The scores of every batch are computed before any output is written: the output may take
    the bytes of Q and K, which the plan frees after ``node``."""
    weights, out = block.value(node.outputs[0]), block.value(after.outputs[0])
    queries, keys = weights.shape[-2:]
    p, y = block.writer(weights.name), block.writer(out.name)
    scores = _operands(block, *node.inputs[:2])
    depth = scores.depth
    read_q, read_k = block.reader(node.inputs[0]), block.reader(node.inputs[1], dense=True)
    divisor = block.reader(node.inputs[2])("0")
    own = strides(weights.shape)[:-2]

    def transposed(batch: list[str], k: str, i: str) -> str:
        return f"{p}[{index([*batch, k, i], [*own, queries, 1])}]"

    def score(batch: list[str]) -> None:
        def scaled(t: str, total: str, row: str, column: str) -> None:
            block.line(f"{t} = {total} / {divisor};")

        if block.constants.compressed:  # a microcontroller: the scores' columns stored as rows
            _blocked_rows(block, queries, depth, keys,
                          lambda i, d: scores.a_at(read_q, batch, i, d),
                          lambda d, k: scores.b_at(read_k, batch, d, k),
                          lambda i, k: transposed(batch, k, i), scaled)
            return
        # the host: Q^T in a local array, then P^T = K Q^T, its rows stored in order
        qt, i, d = block.fresh("qt"), block.fresh("i"), block.fresh("d")
        block.line(f"float {qt}[{depth * queries}];")
        block.line(f"for (int {i} = 0; {i} < {queries}; ++{i}) for (int {d} = 0; {d} < {depth}; "
                   f"++{d}) {qt}[{d} * {queries} + {i}] = {scores.a_at(read_q, batch, i, d)};")
        _blocked_rows(block, keys, depth, queries,
                      lambda k, d: scores.b_at(read_k, batch, d, k),
                      lambda d, i: f"{qt}[{index([d, i], [queries, 1])}]",
                      lambda k, i: transposed(batch, k, i), scaled)

    def softmax(batch: list[str]) -> None:
        largest, total, i, k = (block.fresh("m"), block.fresh("s"), block.fresh("i"),
                                block.fresh("k"))
        exp = block.constants.helper("exp")
        at = transposed(batch, k, i)
        block.line(f"float {largest}[{queries}];")
        block.line(f"double {total}[{queries}];")
        block.line(f"for (int {i} = 0; {i} < {queries}; ++{i}) {{ {largest}[{i}] = "
                   f"{transposed(batch, '0', i)}; {total}[{i}] = 0.0; }}")
        block.open(f"for (int {k} = 1; {k} < {keys}; ++{k})")
        block.line(f"for (int {i} = 0; {i} < {queries}; ++{i}) {largest}[{i}] = {at} > "
                   f"{largest}[{i}] ? {at} : {largest}[{i}];")
        block.close()
        block.open(f"for (int {k} = 0; {k} < {keys}; ++{k})")
        block.line(f"for (int {i} = 0; {i} < {queries}; ++{i}) {at} = {exp}({at} - "
                   f"{largest}[{i}]);")
        block.line(f"for (int {i} = 0; {i} < {queries}; ++{i}) {total}[{i}] += (double){at};")
        block.close()
        block.line(f"for (int {i} = 0; {i} < {queries}; ++{i}) {largest}[{i}] = "
                   f"(float)(1.0 / {total}[{i}]);")
        block.line(f"for (int {k} = 0; {k} < {keys}; ++{k}) for (int {i} = 0; {i} < {queries}; "
                   f"++{i}) {at} *= {largest}[{i}];")

    values = _operands(block, *after.inputs[:2])
    read_v = block.reader(after.inputs[1], dense=True)
    out_steps = strides(out.shape)

    def output(batch: list[str]) -> None:
        # O^T = V^T P^T: rows are O's columns, the vectorised columns its rows (the queries)
        p_batch = index(batch, values.a_steps[:-2])
        _blocked_rows(block, values.columns, keys, queries,
                      lambda j, k: values.b_at(read_v, batch, k, j),
                      lambda k, i: f"{p}[{index([k, i], [queries, 1], p_batch)}]",
                      lambda j, i: f"{y}[{index([*batch, i, j], out_steps)}]",
                      lambda t, total, j, i: block.line(f"{t} = {total};"))

    block.loops(weights.shape[:-2], score)
    block.loops(weights.shape[:-2], softmax)
    block.loops(values.batch, output)


@_register("MatMul")
def _matmul(block: Block, node: Node) -> None:
    nodes = block.program.nodes
    step = next(n for n, other in enumerate(nodes) if other is node)
    if step and nodes[step - 1].op == "MatMulScaleSoftmax" and _attention_partner(
            block, nodes[step - 1]) is node:
        return  # written with the node before it (_attention)
    _product(block, node.inputs[0], node.inputs[1], node.outputs[0], _store(block))


@_register("MatMulAdd")
def _matmul_add(block: Block, node: Node) -> None:
    out = block.value(node.outputs[0])
    bias = block.reader(node.inputs[2])
    _product(block, node.inputs[0], node.inputs[1], out.name,
             lambda target, total, variables: block.line(
                 f"{target} = {total} + {bias(variables[-1])};"))
    if node.attributes.get("activation") == "Relu":
        # a pass of its own: a condition in the product's column loop stops it vectorising
        y = block.writer(out.name)
        block.loops((out.size,), lambda v: block.line(
            f"{y}[{v[0]}] = {y}[{v[0]}] > 0.0f ? {y}[{v[0]}] : 0.0f;"))


@_register("MatMulScaleSoftmax")
def _matmul_scale_softmax(block: Block, node: Node) -> None:
    after = _attention_partner(block, node)
    if after is not None:
        _attention(block, node, after)
        return
    out = block.value(node.outputs[0])
    divisor = block.reader(node.inputs[2])("0")
    _product(block, node.inputs[0], node.inputs[1], out.name,
             lambda target, total, variables: block.line(f"{target} = {total} / {divisor};"))
    _softmax_rows(block, block.writer(out.name), out.shape, node.attributes.get("axis", -1))


@_register("Gemm")
def _gemm(block: Block, node: Node) -> None:
    out = block.value(node.outputs[0])
    alpha = float(node.attributes.get("alpha", 1.0))
    beta = float(node.attributes.get("beta", 1.0))
    c_name = node.inputs[2] if len(node.inputs) > 2 else ""
    read_c = block.reader(c_name) if c_name else None
    c_steps = broadcast_strides(block.value(c_name).shape, out.shape) if c_name else ()

    def finish(target: str, total: str, variables: list[str]) -> None:
        if alpha != 1.0:
            block.line(f"{total} = {total} * {_f(alpha)};")
        if read_c is not None:
            term = read_c(index(variables, c_steps))
            block.line(f"{total} = {total} + {f'({term} * {_f(beta)})' if beta != 1.0 else term};")
        block.line(f"{target} = {total};")

    _product(block, node.inputs[0], node.inputs[1], out.name, finish,
             bool(node.attributes.get("transA", 0)), bool(node.attributes.get("transB", 0)))


# --- convolution and quantized layers ---------------------------------------------------------


def _window(attributes: dict, rank: int, kernel: Sequence[int]) -> tuple:
    pads = list(attributes.get("pads", [0] * 2 * rank))
    step = list(attributes.get("strides", [1] * rank))
    dilations = list(attributes.get("dilations", [1] * rank))
    return pads[:rank], step, dilations


def _window_loops(block: Block, kernel: Sequence[int], spatial: Sequence[str], step: Sequence[int],
            begins: Sequence[int], dilations: Sequence[int], extent: Sequence[int]
            ) -> tuple[list[str], list[str]]:
    """Open one loop per kernel axis and name each input position of the window, skipping
    those in the padding; return (kernel loop variables, input positions)."""
    kernel_vars = []
    for size in kernel:
        variable = block.fresh("q")
        block.open(f"for (int {variable} = 0; {variable} < {size}; ++{variable})")
        kernel_vars.append(variable)
    positions = []
    for d in range(len(kernel)):
        position = block.fresh("u")
        block.line(f"const int {position} = {spatial[d]} * {step[d]} - {begins[d]} + "
                   f"{kernel_vars[d]} * {dilations[d]};")
        block.line(f"if ({position} < 0 || {position} >= {extent[d]}) continue;")
        positions.append(position)
    return kernel_vars, positions


def _convolution(block: Block, node: Node, quantized: bool) -> None:
    x, out = block.value(node.inputs[0]), block.value(node.outputs[0])
    weight_name = node.inputs[3] if quantized else node.inputs[1]
    weight = block.constant(weight_name)
    if weight is None:
        raise CodegenError(f"{node.op} with a computed weight is not generated; store it.")
    kernel = weight.shape[2:]
    rank = len(kernel)
    group = int(node.attributes.get("group", 1))
    channels, filters = x.shape[1], weight.shape[0]
    per_group, filters_per_group = channels // group, filters // group
    begins, step, dilations = _window(node.attributes, rank, kernel)
    read_x, y = block.reader(x.name), block.writer(out.name)
    read_w = block.reader(weight_name)
    x_steps, out_steps = strides(x.shape), strides(out.shape)
    post = _quantized_post(block, node) if quantized else None
    integer = post is not None and post[0]
    bias_name = (node.inputs[6] if quantized and len(node.inputs) > 6
                 else node.inputs[2] if not quantized and len(node.inputs) > 2 else "")
    bias = block.reader(bias_name) if bias_name else None

    def body(variables: list[str]) -> None:
        m, spatial = variables[1], variables[2:]
        total = block.fresh("acc")
        block.line(f"{'int32_t' if integer else 'float'} {total} = 0;")
        g = f"({m} / {filters_per_group})" if group > 1 else "0"
        c = block.fresh("c")
        block.open(f"for (int {c} = 0; {c} < {per_group}; ++{c})")
        kernel_vars, inputs = _window_loops(block, kernel, spatial, step, begins,
                                            dilations, x.shape[2:])
        channel = f"{g} * {per_group} + {c}" if group > 1 else c
        x_index = index([f"({channel})", *inputs], x_steps[1:])
        w_index = index([m, c, *kernel_vars], strides(weight.shape))
        if integer:
            block.line(f"{total} += {post[1](read_x(x_index))} * {post[2](read_w(w_index), m)};")
        elif quantized:
            block.line(_mac(total, read_x(x_index), post[2](read_w(w_index), m)))
        else:
            block.line(_mac(total, read_x(x_index), read_w(w_index)))
        for _ in range(rank + 1):
            block.close()
        element = index(variables, out_steps)
        if quantized:
            block.line(f"{y}[{element}] = {post[3](total, m, bias)};")
        else:
            block.line(f"{y}[{element}] = {total}" + (f" + {bias(m)};" if bias else ";"))

    block.loops(out.shape, body)


@_register("Conv")
def _conv(block: Block, node: Node) -> None:
    _convolution(block, node, quantized=False)


@_register("QuantConv")
def _quant_conv(block: Block, node: Node) -> None:
    _convolution(block, node, quantized=True)


def _quantized_post(block: Block, node: Node) -> tuple:
    """``(integer, activation(x), weight(w, n), result(acc, n, bias))`` C builders of a
    quantized layer (see the module docstring)."""
    names = list(node.inputs) + [""] * (7 - len(node.inputs))
    x_scale = block.constant(names[1])
    x_zero = block.constant(names[2])
    w_scale = block.constant(names[4])
    w_zero = block.constant(names[5])
    if w_scale is None or (names[1] and x_scale is None):
        raise CodegenError(f"{node.op} with computed scales is not generated; store them.")
    channels = block.value(names[3]).shape[0]
    scales = np.broadcast_to(w_scale.reshape(-1), (channels,))
    integer = x_scale is not None
    w_zero_read = None
    if w_zero is not None and np.any(w_zero):
        w_zero_read = block.constants.get(f"{node.outputs[0]}:q", np.broadcast_to(
            w_zero.reshape(-1), (channels,)).astype(np.int32), "wzp", dense=True).at
    key = f"{node.outputs[0]}:q"
    if integer:
        multiplier = scales.astype(np.float64) * np.float64(x_scale.reshape(()))
        scale_read = block.constants.get(key, multiplier, "mult", dense=True).at
        zero = int(x_zero.reshape(())) if x_zero is not None else 0
    else:
        scale_read = block.constants.get(key, scales.astype(np.float32), "scale", dense=True).at
        zero = 0

    def activation(x: str) -> str:
        if not integer:
            return x
        return f"((int32_t){x} - {zero})" if zero else f"(int32_t){x}"

    def weight(w: str, n: str) -> str:
        kind = "int32_t" if integer else "float"
        centred = f"((int32_t){w} - {w_zero_read(n)})" if w_zero_read else w
        return f"({kind}){centred}"

    def result(total: str, n: str, bias: Callable[[str], str] | None) -> str:
        if integer:
            text = f"(double){total} * {scale_read(n)}"
            if bias is not None:
                text += f" + (double){bias(n)}"
            return f"(float)({text})"
        text = f"{total} * {scale_read(n)}"
        return f"({text}) + {bias(n)}" if bias is not None else text

    return integer, activation, weight, result


@_register("QuantGemm")
def _quant_gemm(block: Block, node: Node) -> None:
    x, out = block.value(node.inputs[0]), block.value(node.outputs[0])
    weight = block.constant(node.inputs[3])
    if weight is None:
        raise CodegenError("QuantGemm with a computed weight is not generated; store it.")
    integer, activation, weight_of, result = _quantized_post(block, node)
    columns, depth = weight.shape
    rows = out.size // columns
    read_x, read_w, y = block.reader(x.name), block.reader(node.inputs[3]), block.writer(out.name)
    bias = block.reader(node.inputs[6]) if len(node.inputs) > 6 and node.inputs[6] else None

    def body(variables: list[str]) -> None:
        i, j = variables
        total, k = block.fresh("acc"), block.fresh("k")
        block.line(f"{'int32_t' if integer else 'float'} {total} = 0;")
        x_at, w_at = read_x(index([i, k], [depth, 1])), read_w(index([j, k], [depth, 1]))
        step = (f"{total} += {activation(x_at)} * {weight_of(w_at, j)};" if integer
                else _mac(total, x_at, weight_of(w_at, j)))
        block.line(f"for (int {k} = 0; {k} < {depth}; ++{k}) {step}")
        block.line(f"{y}[{index([i, j], [columns, 1])}] = {result(total, j, bias)};")

    block.loops((rows, columns), body)


def _quantization_parameters(block: Block, node: Node, what: str
                             ) -> tuple[Callable[[list[str]], str], Callable[[list[str]], str],
                                        np.dtype]:
    x = block.value(node.inputs[0])
    scale = block.constant(node.inputs[1])
    zero = block.constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    if scale is None or (len(node.inputs) > 2 and node.inputs[2] and zero is None):
        raise CodegenError(f"{what} with computed scales is not generated; store them.")
    axis = node.attributes.get("axis", 1) % max(1, len(x.shape))
    zero_dtype = zero.dtype if zero is not None else np.dtype(np.uint8)

    def per_axis(values: np.ndarray, variant: str, dtype: np.dtype
                 ) -> Callable[[list[str]], str]:
        if values.size == 1:
            text = literal(values.reshape(-1)[0], dtype)
            return lambda variables: text
        read = block.constants.get(f"{node.outputs[0]}:{what}", values.reshape(-1).astype(dtype),
                                   variant, dense=True).at
        return lambda variables: read(variables[axis])

    return (per_axis(scale, "scale", _F32) if what == "dq" else
            per_axis((np.float32(1.0) / scale).astype(np.float32), "inverse", _F32),
            per_axis(zero if zero is not None else np.zeros(1, np.int32), "zero",
                     np.dtype(np.int32)), zero_dtype)


@_register("QuantizeLinear")
def _quantize_linear(block: Block, node: Node) -> None:
    x, out = block.value(node.inputs[0]), block.value(node.outputs[0])
    inverse, zero, zero_dtype = _quantization_parameters(block, node, "q")
    low, high = _INTEGER_RANGES[np.dtype(zero_dtype).name]
    read, y = block.reader(x.name), block.writer(out.name)
    own = strides(x.shape)

    def body(variables: list[str]) -> None:
        element = index(variables, own)
        q = block.fresh("q")
        block.line(f"float {q} = rintf({read(element)} * {inverse(variables)}) + "
                   f"(float)({zero(variables)});")
        block.line(f"{q} = {q} < {low}.0f ? {low}.0f : ({q} > {high}.0f ? {high}.0f : {q});")
        block.line(f"{y}[{element}] = ({c_type(out.dtype)}){q};")

    block.loops(x.shape, body)


@_register("DequantizeLinear")
def _dequantize_linear(block: Block, node: Node) -> None:
    x, out = block.value(node.inputs[0]), block.value(node.outputs[0])
    scale, zero, _ = _quantization_parameters(block, node, "dq")
    read, y = block.reader(x.name), block.writer(out.name)
    own = strides(x.shape)

    def body(variables: list[str]) -> None:
        element = index(variables, own)
        block.line(f"{y}[{element}] = (float)((int32_t){read(element)} - {zero(variables)}) * "
                   f"{scale(variables)};")

    block.loops(x.shape, body)


# --- pooling ----------------------------------------------------------------------------------


@_register("MaxPool", "AveragePool")
def _pool(block: Block, node: Node) -> None:
    x, out = block.value(node.inputs[0]), block.value(node.outputs[0])
    kernel = list(node.attributes["kernel_shape"])
    rank = len(kernel)
    begins, step, dilations = _window(node.attributes, rank, kernel)
    read, y = block.reader(x.name), block.writer(out.name)
    x_steps, out_steps = strides(x.shape), strides(out.shape)
    maximum = node.op == "MaxPool"
    padded = any(node.attributes.get("pads", ()))
    include_pad = node.attributes.get("count_include_pad", 0) or not padded
    ctype = c_type(out.dtype)

    def body(variables: list[str]) -> None:
        channel, spatial = variables[:2], variables[2:]
        total, counted = block.fresh("acc"), block.fresh("n")
        block.line(f"double {total} = {'-INFINITY' if maximum else '0.0'};")
        if not maximum and not include_pad:
            block.line(f"int {counted} = 0;")
        kernel_vars, positions = _window_loops(block, kernel, spatial, step, begins,
                                               dilations, x.shape[2:])
        element = f"(double){read(index([*channel, *positions], x_steps))}"
        if maximum:
            block.line(f"if ({element} > {total}) {total} = {element};")
        else:
            block.line(f"{total} += {element};")
            if not include_pad:
                block.line(f"++{counted};")
        for _ in range(rank):
            block.close()
        target = f"{y}[{index(variables, out_steps)}]"
        if maximum:
            block.line(f"{target} = ({ctype}){total};")
        else:
            divisor = f"{math.prod(kernel)}.0" if include_pad else f"(double){counted}"
            block.line(f"{target} = ({ctype})({total} / {divisor});")

    block.loops(out.shape, body)


@_register("GlobalAveragePool")
def _global_average_pool(block: Block, node: Node) -> None:
    x, out = block.value(node.inputs[0]), block.value(node.outputs[0])
    read, y = block.reader(x.name), block.writer(out.name)
    area = math.prod(x.shape[2:])

    def body(variables: list[str]) -> None:
        row = index(variables, (x.shape[1], 1))
        total, k = block.fresh("acc"), block.fresh("k")
        block.line(f"double {total} = 0.0;")
        block.line(f"for (int {k} = 0; {k} < {area}; ++{k}) {total} += (double)"
                   f"{read(f'({row}) * {area} + {k}')};")
        block.line(f"{y}[{row}] = ({c_type(out.dtype)})({total} / {area}.0);")

    block.loops(x.shape[:2], body)


# --- shapes and data movement -----------------------------------------------------------------


@_register("Reshape", "Flatten", "Unsqueeze", "Squeeze")
def _reshape(block: Block, node: Node) -> None:
    _copy(block, node.inputs[0], node.outputs[0])


@_register("Transpose")
def _transpose(block: Block, node: Node) -> None:
    x, out = block.value(node.inputs[0]), block.value(node.outputs[0])
    perm = node.attributes.get("perm") or list(range(len(x.shape)))[::-1]
    own = strides(x.shape)
    steps = [own[axis] for axis in perm]
    read, y = block.reader(x.name), block.writer(out.name)
    block.loops(out.shape, lambda v: block.line(
        f"{y}[{index(v, strides(out.shape))}] = {read(index(v, steps))};"))


@_register("Concat")
def _concat(block: Block, node: Node) -> None:
    out = block.value(node.outputs[0])
    axis = node.attributes["axis"] % len(out.shape)
    y, out_steps, offset = block.writer(out.name), strides(out.shape), 0
    for name in node.inputs:
        part = block.value(name)
        read, own = block.reader(name), strides(part.shape)
        base = offset * out_steps[axis]
        block.loops(part.shape, lambda v, read=read, own=own, base=base: block.line(
            f"{y}[{index(v, out_steps, base)}] = {read(index(v, own))};"))
        offset += part.shape[axis]


@_register("Split")
def _split(block: Block, node: Node) -> None:
    x = block.value(node.inputs[0])
    axis = node.attributes.get("axis", 0) % len(x.shape)
    read, own, offset = block.reader(x.name), strides(x.shape), 0
    for name in node.outputs:
        part = block.value(name)
        y, base = block.writer(name), offset * own[axis]
        block.loops(part.shape, lambda v, y=y, base=base, part=part: block.line(
            f"{y}[{index(v, strides(part.shape))}] = {read(index(v, own, base))};"))
        offset += part.shape[axis]


@_register("Pad")
def _pad(block: Block, node: Node) -> None:
    """Each output index mapped to the input's: outside it the constant (constant mode), the
    index clamped (edge) or mirrored about the edge element (reflect)."""
    x, out = block.value(node.inputs[0]), block.value(node.outputs[0])
    names = list(node.inputs) + [""] * (4 - len(node.inputs))
    pads, axes = block.constant(names[1]), block.constant(names[3])
    if pads is None or (names[3] and axes is None):
        raise CodegenError("Pad with computed pads or axes is not generated; store them.")
    mode = node.attributes.get("mode", "constant")
    widths = pad_widths(x.shape, pads, axes, mode)
    read, y, ctype = block.reader(x.name), block.writer(out.name), c_type(out.dtype)
    fill = f"({ctype}){block.reader(names[2])('0')}" if names[2] else f"({ctype})0"
    own, out_steps = strides(x.shape), strides(out.shape)

    def body(variables: list[str]) -> None:
        positions, inside = [], []
        for v, size, (begin, end), extent in zip(variables, x.shape, widths, out.shape):
            crop, lead = max(-begin, 0), max(begin, 0)
            kept = size - crop - max(-end, 0)
            if lead == 0 and kept == extent:
                positions.append(f"({v} + {crop})" if crop else v)
                continue
            u = block.fresh("u")
            block.line(f"int {u} = {v} - {lead};")
            if mode == "constant":
                inside.append(f"{u} >= 0 && {u} < {kept}")
            elif mode == "edge":
                block.line(f"{u} = {u} < 0 ? 0 : ({u} >= {kept} ? {kept - 1} : {u});")
            else:
                block.line(f"{u} = {u} < 0 ? -{u} : ({u} >= {kept} ? {2 * kept - 2} - {u} : {u});")
            positions.append(f"({u} + {crop})" if crop else u)
        value = read(index(positions, own))
        if inside:
            value = f"({' && '.join(inside)}) ? {value} : {fill}"
        block.line(f"{y}[{index(variables, out_steps)}] = {value};")

    block.loops(out.shape, body)


@_register("Expand")
def _expand(block: Block, node: Node) -> None:
    x, out = block.value(node.inputs[0]), block.value(node.outputs[0])
    read, y = block.reader(x.name), block.writer(out.name)
    steps, own = broadcast_strides(x.shape, out.shape), strides(out.shape)
    block.loops(out.shape, lambda v: block.line(f"{y}[{index(v, own)}] = {read(index(v, steps))};"))


@_register("Gather")
def _gather(block: Block, node: Node) -> None:
    data, indices, out = (block.value(name) for name in (*node.inputs[:2], node.outputs[0]))
    axis = node.attributes.get("axis", 0) % len(data.shape)
    read, read_index = block.reader(data.name), block.reader(indices.name)
    y = block.writer(out.name)
    outer = data.shape[:axis]
    data_steps, out_steps = strides(data.shape), strides(out.shape)
    index_steps = strides(indices.shape)
    length = data.shape[axis]

    def body(variables: list[str]) -> None:
        o = variables[:len(outer)]
        j = variables[len(outer):len(outer) + len(indices.shape)]
        r = variables[len(outer) + len(indices.shape):]
        position = block.fresh("g")
        block.line(f"int64_t {position} = (int64_t){read_index(index(j, index_steps))};")
        block.line(f"if ({position} < 0) {position} += {length};")
        source = index([*o, position, *r], data_steps)
        block.line(f"{y}[{index(variables, out_steps)}] = {read(source)};")

    block.loops(out.shape, body)


@_register("Slice")
def _slice(block: Block, node: Node) -> None:
    x, out = block.value(node.inputs[0]), block.value(node.outputs[0])
    parts = [block.constant(name) if name else None for name in node.inputs[1:5]]
    starts, ends = parts[0], parts[1]
    if starts is None or ends is None or any(name and part is None for name, part
                                              in zip(node.inputs[3:5], parts[2:])):
        raise CodegenError("Slice with computed bounds is not generated; store them.")
    axes = parts[2].reshape(-1) if len(parts) > 2 and parts[2] is not None else range(starts.size)
    steps = (parts[3].reshape(-1) if len(parts) > 3 and parts[3] is not None
             else np.ones(starts.size, np.int64))
    first = [0] * len(x.shape)
    stride = [1] * len(x.shape)
    for axis, start, end, step in zip(axes, starts.reshape(-1), ends.reshape(-1), steps):
        axis = int(axis) % len(x.shape)
        begin, _, jump = slice(int(start), int(end), int(step)).indices(x.shape[axis])
        first[axis], stride[axis] = begin, jump
    own = strides(x.shape)
    base = sum(f * s for f, s in zip(first, own))
    steps_in = [s * j for s, j in zip(own, stride)]
    read, y = block.reader(x.name), block.writer(out.name)
    block.loops(out.shape, lambda v: block.line(
        f"{y}[{index(v, strides(out.shape))}] = {read(index(v, steps_in, base))};"))


@_register("Cast")
def _cast(block: Block, node: Node) -> None:
    x, out = block.value(node.inputs[0]), block.value(node.outputs[0])
    read, y = block.reader(x.name), block.writer(out.name)
    boolean = out.dtype == np.bool_

    def body(variables: list[str]) -> None:
        element = variables[0]
        value = (f"({read(element)} != 0)" if boolean
                 else f"({c_type(out.dtype)}){read(element)}")
        block.line(f"{y}[{element}] = {value};")

    block.loops((x.size,), body)


@_register("Shape", "SinusoidalPositionalEncoding")
def _static_only(block: Block, node: Node) -> None:
    """Never emitted: their values depend on shapes only and are constants of the program."""
    raise CodegenError(f"{node.op} is computed while generating; it has no C code.")



