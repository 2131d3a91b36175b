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
* matrix products and convolutions of floats sum over the contraction index in increasing
  order in float (NumPy's BLAS sums in its own order: float layers agree within the
  documented logit tolerance, not bit for bit); the host form (64 output columns accumulated
  in registers, += a * weight row) and the microcontroller form (a dot product per output,
  decoding compressed weights) add the same terms in the same order, so both builds give
  identical results;
* softmax rows are scanned in four interleaved lanes (the maximum; the float64 sum of
  the exponentials, lane by lane, then ``(l0 + l1) + (l2 + l3)``);
* the softmax exponential is the generator's own branch-free ``expf`` (Cephes' polynomial,
  within 1 ulp of the exact value; :data:`~satcompress.codegen.block.HELPERS`), which
  compilers vectorise and which gives the same bits on every target; NumPy's differs by
  an ulp or two (within the float tolerance);
* quantized layers accumulate ``(q_x - zp_x) * (q_w - zp_w)`` in an int32 and rescale with
  one double expression rounded once to float: bit for bit the NumPy runtime's values;
  ``QuantizeLinear`` is ``rintf(x * fl32(1 / scale)) + zp`` clamped, rounding half to even.

Torch-free: part of the flight path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from satcompress.codegen.block import Block
from satcompress.codegen.emit import broadcast_strides, c_type, index, literal, strides
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


def _four_way(block: Block, length: int, k: str, ctype: str, result: str, start: str,
              update: Callable[[str, Callable[[str], str]], str],
              combine: Callable[[str, str], str]) -> None:
    """``result`` = a reduction over ``k < length`` in four interleaved lanes (lane ``k % 4``,
    each from ``start``; combined as ``(l0 . l1) . (l2 . l3)``): four independent chains
    instead of one, a fixed order. ``update(lane, at)`` is the statement adding element
    ``at(text with k)`` to ``lane``."""
    lanes = [block.fresh("l") for _ in range(4)]
    for lane in lanes:
        block.line(f"{ctype} {lane} = {start};")
    full = length - length % 4
    block.open(f"for (int {k} = 0; {k} < {full}; {k} += 4)")
    for offset, lane in enumerate(lanes):
        block.line(update(lane, lambda text, o=offset: text.replace(f"[{k}", f"[({k} + {o})")))
    block.close()
    block.open(f"for (int {k} = {full}; {k} < {length}; ++{k})")
    block.line(update(lanes[0], lambda text: text))
    block.close()
    block.line(f"const {ctype} {result} = "
               f"{combine(combine(lanes[0], lanes[1]), combine(lanes[2], lanes[3]))};")


def _softmax_rows(block: Block, y: str, shape: Sequence[int], axis: int) -> None:
    """Softmax in place over ``axis`` of the float array ``y`` (see the Softmax kernel)."""
    axis %= len(shape)
    outer, length = math.prod(shape[:axis]), shape[axis]
    inner = math.prod(shape[axis + 1:])

    def body(variables: list[str]) -> None:
        base = block.fresh("b")
        block.line(f"float *const {base} = {y} + {index(variables, (length * inner, 1))};")
        largest, total, k = block.fresh("m"), block.fresh("s"), block.fresh("k")
        step = f" * {inner}" if inner != 1 else ""
        element = f"{base}[{k}{step}]"
        _four_way(block, length, k, "float", largest, f"{base}[0]",
                  lambda lane, at: f"{lane} = {at(element)} > {lane} ? {at(element)} : {lane};",
                  lambda a, b: f"({a} > {b} ? {a} : {b})")
        exp = block.constants.helper("exp")
        block.line(f"for (int {k} = 0; {k} < {length}; ++{k}) {element} = "
                   f"{exp}({element} - {largest});")
        _four_way(block, length, k, "double", total, "0.0",
                  lambda lane, at: f"{lane} += (double){at(element)};",
                  lambda a, b: f"({a} + {b})")
        scale = block.fresh("r")
        block.line(f"const float {scale} = (float)(1.0 / {total});")
        block.line(f"for (int {k} = 0; {k} < {length}; ++{k}) {base}[{k}{step}] *= {scale};")

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
        k, total, mean, inverse = (block.fresh("k"), block.fresh("s"), block.fresh("m"),
                                   block.fresh("r"))
        element = f"{base} + {k}"
        block.line(f"double {total} = 0.0;")
        block.line(f"for (int {k} = 0; {k} < {length}; ++{k}) {total} += (double)"
                   f"{read(element)};")
        block.line(f"const float {mean} = (float)({total} / {length}.0);")
        block.line(f"{total} = 0.0;")
        block.open(f"for (int {k} = 0; {k} < {length}; ++{k})")
        block.line(f"const float d = {read(element)} - {mean};")
        block.line(f"{y}[{element}] = d;")
        block.line(f"{total} += (double)d * (double)d;")
        block.close()
        block.line(f"const float {inverse} = (float)(1.0 / sqrt({total} / {length}.0 + "
                   f"{epsilon}));")
        block.open(f"for (int {k} = 0; {k} < {length}; ++{k})")
        block.line(f"float v = {y}[{element}] * {inverse};")
        block.line(f"v = v * {scale(k)};")
        if bias is not None:
            block.line(f"v = v + {bias(k)};")
        block.line(f"{y}[{element}] = v;")
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


_TILE = 64
"""Output columns a row-times-matrix product keeps in registers over the whole sum: several
independent vector accumulators (the sum over k is a chain of dependent additions per column).
64 measured fastest on the t2 ``assembled-t2`` model (0.416 ms vs 0.475 ms at 32 and 0.427 ms
at 128, AVX-512 host)."""


_ROWS = 1
"""Rows of the output computed together (each weight row loaded once for all). 1: on the
``assembled-t2`` model 2 rows x 32 columns took 0.58 ms and 4 x 16 0.60 ms against 0.43 ms for
1 x 64 (GCC 12, AVX-512 host)."""


def _rows_times_matrix(block: Block, rows: int, depth: int, columns: int,
                       out_row: Callable[[str], str], a_at: Callable[[str, str], str],
                       b_row: Callable[[str], str]) -> None:
    """``out_row(i)[j] = sum_k a_at(i, k) * b[k][j]`` for ``i < rows``, ``j < columns``, k
    in increasing order, :data:`_ROWS` rows and :data:`_TILE` columns accumulated in local
    arrays (registers) at a time; ``b_row(k)`` is a pointer expression to row k of b."""
    def tile(row_indices: list[str], start: str, width: int) -> None:
        accs = [block.fresh("acc") for _ in row_indices]
        k, j = block.fresh("k"), block.fresh("j")
        for acc in accs:
            block.line(f"float {acc}[{width}] = {{0.0f}};")
        block.open(f"for (int {k} = 0; {k} < {depth}; ++{k})")
        block.line(f"const float *const w = {b_row(k)} + {start};")
        for r, i in enumerate(row_indices):
            block.line(f"const float a{r} = {a_at(i, k)};")
        updates = " ".join(f"{acc}[{j}] += a{r} * w[{j}];" for r, acc in enumerate(accs))
        block.line(f"for (int {j} = 0; {j} < {width}; ++{j}) {{ {updates} }}")
        block.close()
        for i, acc in zip(row_indices, accs):
            block.line(f"for (int {j} = 0; {j} < {width}; ++{j}) "
                       f"{out_row(i)}[{start} + {j}] = {acc}[{j}];")

    def row_group(row_indices: list[str]) -> None:
        full = columns - columns % _TILE
        if full:
            start = block.fresh("c")
            block.open(f"for (int {start} = 0; {start} < {full}; {start} += {_TILE})")
            tile(row_indices, start, _TILE)
            block.close()
        if columns % _TILE:
            block.open("")
            tile(row_indices, str(full), columns % _TILE)
            block.close()

    grouped = rows - rows % _ROWS
    if grouped:
        i = block.fresh("i")
        block.open(f"for (int {i} = 0; {i} < {grouped}; {i} += {_ROWS})")
        row_group([i] + [f"({i} + {r})" for r in range(1, _ROWS)])
        block.close()
    for r in range(grouped, rows):
        row_group([str(r)])


def _product(block: Block, a_name: str, b_name: str, out_name: str, trans_a: bool = False,
             trans_b: bool = False) -> str:
    """``out = a @ b`` (NumPy matmul semantics, 2-D operands optionally transposed) in float,
    summing over k in increasing order; returns the output pointer."""
    a, b, out = block.value(a_name), block.value(b_name), block.value(out_name)
    y = block.writer(out_name)
    a_shape, b_shape = list(a.shape), list(b.shape)
    a_steps, b_steps = list(strides(a_shape)), list(strides(b_shape))
    if trans_a:
        a_shape, a_steps = a_shape[::-1], a_steps[::-1]
    if trans_b:
        b_shape, b_steps = b_shape[::-1], b_steps[::-1]
    if len(a_shape) == 1:
        a_shape, a_steps = [1, a_shape[0]], [0, a_steps[0]]
    if len(b_shape) == 1:
        b_shape, b_steps = [b_shape[0], 1], [b_steps[0], 0]
    rows, depth, columns = a_shape[-2], a_shape[-1], b_shape[-1]
    weight = block.constant(b_name)
    if weight is not None and len(b_shape) == 2:
        matrix = weight.T if trans_b else weight
        if len(b.shape) == 1:
            matrix = matrix.reshape(-1, 1)
        _constant_product(block, a_name, a_shape, a_steps, matrix, y, out.size // columns,
                          f"{b_name}:{int(trans_b)}")
        return y
    batch = list(np.broadcast_shapes(tuple(a_shape[:-2]), tuple(b_shape[:-2])))
    read_a, read_b = block.reader(a_name), block.reader(b_name)
    a_batch = broadcast_strides(a_shape[:-2], batch) if a_shape[:-2] else ()
    b_batch = broadcast_strides(b_shape[:-2], batch) if b_shape[:-2] else ()
    # broadcast_strides works on contiguous strides; recompute with the actual ones
    a_batch = tuple(0 if s == 0 else t for s, t in zip(a_batch, a_steps[:-2]))
    b_batch = tuple(0 if s == 0 else t for s, t in zip(b_batch, b_steps[:-2]))
    out_steps = strides([*batch, rows, columns])
    if b_steps[-1] == 1 and columns > 1:
        # rows of b added into output rows (vectorisable; the same order of k per output)
        def rows_added(batch_vars: list[str]) -> None:
            pointer = block.fresh("bp")
            block.line(f"const float *const {pointer} = &{block.reader(b_name, dense=True)('0')};")
            _rows_times_matrix(
                block, rows, depth, columns,
                lambda i: f"({y} + {index([*batch_vars, i], out_steps[:-1])})",
                lambda i, k: read_a(index([*batch_vars, i, k], [*a_batch, *a_steps[-2:]])),
                lambda k: f"{pointer} + {index([*batch_vars, k], [*b_batch, b_steps[-2]])}")

        block.loops(batch, rows_added)
        return y

    def body(variables: list[str]) -> None:
        batch_vars, (i, j) = variables[:-2], variables[-2:]
        total, k = block.fresh("acc"), block.fresh("k")
        a_index = index([*batch_vars, i, k], [*a_batch, *a_steps[-2:]])
        b_index = index([*batch_vars, k, j], [*b_batch, *b_steps[-2:]])
        block.line(f"float {total} = 0.0f;")
        block.line(f"for (int {k} = 0; {k} < {depth}; ++{k}) {total} += {read_a(a_index)} * "
                   f"{read_b(b_index)};")
        block.line(f"{y}[{index(variables, out_steps)}] = {total};")

    block.loops([*batch, rows, columns], body)
    return y


def _constant_product(block: Block, a_name: str, a_shape: Sequence[int],
                      a_steps: Sequence[int], matrix: np.ndarray, y: str, rows: int,
                      key: str) -> None:
    """``y (rows, N) = a (rows, K) @ matrix (K, N)`` with a stored matrix (see the module
    docstring: dense K x N rows added on the host; compressed N x K dot products on a
    microcontroller; the same sums either way)."""
    depth, columns = matrix.shape
    read_a = block.reader(a_name)
    a_row, a_k = (a_steps[-2] if rows > 1 else 0), a_steps[-1]
    if not block.constants.compressed:
        w = block.constants.get(key, np.ascontiguousarray(matrix), "kn", dense=True)

        _rows_times_matrix(block, rows, depth, columns,
                           lambda i: f"({y} + {index([i], [columns])})",
                           lambda i, k: read_a(index([i, k], [a_row, a_k])),
                           lambda k: f"{w.name} + {k} * {columns}")
        return
    w = block.constants.get(key, np.ascontiguousarray(matrix.T), "nk")

    def dot(variables: list[str]) -> None:
        i, j = variables
        total, k = block.fresh("acc"), block.fresh("k")
        block.line(f"float {total} = 0.0f;")
        if w.form == "codebook4" and depth % 2 == 0 and a_k == 1:
            # two 4-bit indices per byte, in the same order of k
            row, byte = block.fresh("ix"), block.fresh("b")
            block.line(f"const uint8_t *const {row} = {w.name}_ix + {index([j], [depth // 2])};")
            block.open(f"for (int {k} = 0; {k} < {depth}; {k} += 2)")
            block.line(f"const unsigned {byte} = {row}[{k} >> 1];")
            a_index = index([i, k], [a_row, 1])
            block.line(f"{total} += {read_a(a_index)} * {w.name}_cb[{byte} & 15u];")
            block.line(f"{total} += {read_a(a_index + ' + 1')} * {w.name}_cb[{byte} >> 4];")
            block.close()
            block.line(f"{y}[{index([i, j], [columns, 1])}] = {total};")
            return
        weight_index = f"{j} * {depth} + {k}" if j != "0" else k
        block.line(f"for (int {k} = 0; {k} < {depth}; ++{k}) {total} += "
                   f"{read_a(index([i, k], [a_row, a_k]))} * {w.at(weight_index)};")
        block.line(f"{y}[{index([i, j], [columns, 1])}] = {total};")

    block.loops((rows, columns), dot)


def _add_rows(block: Block, y: str, size: int, columns: int, bias: Callable[[str], str],
              relu: bool) -> None:
    def body(variables: list[str]) -> None:
        i, j = variables
        element = index([i, j], [columns, 1])
        block.line(f"{y}[{element}] = {y}[{element}] + {bias(j)};")
        if relu:
            block.line(f"if (!({y}[{element}] > 0.0f)) {y}[{element}] = 0.0f;")

    block.loops((size // columns, columns), body)


@_register("MatMul")
def _matmul(block: Block, node: Node) -> None:
    _product(block, node.inputs[0], node.inputs[1], node.outputs[0])


@_register("MatMulAdd")
def _matmul_add(block: Block, node: Node) -> None:
    out = block.value(node.outputs[0])
    y = _product(block, node.inputs[0], node.inputs[1], out.name)
    columns = out.shape[-1]
    _add_rows(block, y, out.size, columns, block.reader(node.inputs[2]),
              node.attributes.get("activation") == "Relu")


@_register("MatMulScaleSoftmax")
def _matmul_scale_softmax(block: Block, node: Node) -> None:
    out = block.value(node.outputs[0])
    y = _product(block, node.inputs[0], node.inputs[1], out.name)
    divisor = block.reader(node.inputs[2])("0")
    block.loops((out.size,), lambda v: block.line(f"{y}[{v[0]}] = {y}[{v[0]}] / {divisor};"))
    _softmax_rows(block, y, out.shape, node.attributes.get("axis", -1))


@_register("Gemm")
def _gemm(block: Block, node: Node) -> None:
    out = block.value(node.outputs[0])
    y = _product(block, node.inputs[0], node.inputs[1], out.name,
                 bool(node.attributes.get("transA", 0)), bool(node.attributes.get("transB", 0)))
    alpha = float(node.attributes.get("alpha", 1.0))
    if alpha != 1.0:
        block.loops((out.size,), lambda v: block.line(f"{y}[{v[0]}] = {y}[{v[0]}] * "
                                                      f"{_f(alpha)};"))
    if len(node.inputs) > 2 and node.inputs[2]:
        c = block.value(node.inputs[2])
        read = block.reader(c.name)
        beta = float(node.attributes.get("beta", 1.0))
        steps, own = broadcast_strides(c.shape, out.shape), strides(out.shape)

        def body(variables: list[str]) -> None:
            term = read(index(variables, steps))
            if beta != 1.0:
                term = f"({term} * {_f(beta)})"
            element = index(variables, own)
            block.line(f"{y}[{element}] = {y}[{element}] + {term};")

        block.loops(out.shape, body)


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
        if quantized:
            block.line(f"{total} += {post[1](read_x(x_index))} * {post[2](read_w(w_index), m)};")
        else:
            block.line(f"{total} += {read_x(x_index)} * {read_w(w_index)};")
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
        x_index = index([i, k], [depth, 1])
        w_index = index([j, k], [depth, 1])
        block.line(f"for (int {k} = 0; {k} < {depth}; ++{k}) {total} += "
                   f"{activation(read_x(x_index))} * {weight_of(read_w(w_index), j)};")
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
    outer, inner = data.shape[:axis], data.shape[axis + 1:]
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
