"""C text for the generator: literals, constant arrays (dense or compressed), index arithmetic.

Constants are ``static const`` arrays (flash on a microcontroller). With ``compressed=True`` a
float tensor with at most 16 distinct values is stored as its codebook and 4-bit indices
(two per byte), one with at most 256 as a codebook and byte indices, and an int8 tensor with
values in [-8, 7] as 4-bit values: each element is decoded where it is read (one table
look-up, a shift and a mask), so the weights never take RAM; or, for a compressed array
given a RAM table (:meth:`ConstantArray.in_ram`), decoded once into a static array by the
library's init function and read from there. Otherwise arrays are stored dense in their own
type.

Torch-free: part of the flight path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["C_TYPES", "c_type", "literal", "array_text", "ConstantArray", "TablePart",
           "constant_array", "strides", "index", "broadcast_strides"]

C_TYPES = {"float32": "float", "float64": "double", "int8": "int8_t", "uint8": "uint8_t",
           "int16": "int16_t", "uint16": "uint16_t", "int32": "int32_t", "uint32": "uint32_t",
           "int64": "int64_t", "bool": "uint8_t"}
"""NumPy dtype name -> C type of its elements (a bool is one byte, 0 or 1)."""

_C_SIZES = {"float": 4, "double": 8, "int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2,
            "int32_t": 4, "uint32_t": 4, "int64_t": 8}
"""Bytes of each C element type of :data:`C_TYPES`."""

_PER_LINE = 12
_MIN_COMPRESSED = 64
"""Tensors smaller than this stay dense: a codebook would not pay for itself."""


def c_type(dtype: np.dtype) -> str:
    """The C element type of ``dtype``."""
    try:
        return C_TYPES[np.dtype(dtype).name]
    except KeyError:
        raise ValueError(f"dtype {dtype} has no C type in the generator; supported: "
                         f"{', '.join(C_TYPES)}") from None


def literal(value: float | int, dtype: np.dtype) -> str:
    """A C literal that reads back as exactly ``value`` in ``dtype``."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iub":
        number = int(value)
        if dtype.name == "int64" and abs(number) >= 2**31:
            return f"INT64_C({number})"
        if dtype.name in ("uint32", "int64") and number >= 2**31:
            return f"{number}u"
        return str(number) if number != -(2**31) else "(-2147483647 - 1)"
    number = float(value)
    suffix = "f" if dtype == np.float32 else ""
    if math.isnan(number):
        return "NAN"
    if math.isinf(number):
        return "INFINITY" if number > 0 else "-INFINITY"
    if dtype == np.float32:
        text = np.format_float_scientific(np.float32(number), unique=True, trim="-")
    else:
        text = np.format_float_scientific(number, unique=True, trim="-")
    return text + suffix


def array_text(name: str, values: np.ndarray, dtype: np.dtype) -> str:
    """The declaration of the ``static const`` array ``name`` holding ``values`` as ``dtype``."""
    items = [literal(v, dtype) for v in values.reshape(-1).tolist()] or ["0"]
    rows = [", ".join(items[i : i + _PER_LINE]) for i in range(0, len(items), _PER_LINE)]
    body = ",\n    ".join(rows)
    return f"static const {c_type(dtype)} {name}[{max(1, values.size)}] = {{\n    {body}\n}};\n"


@dataclass(frozen=True)
class ConstantArray:
    """A constant as stored in C: its declarations, flash bytes and how to read element ``i``.

    ``form`` is ``dense``, ``codebook4``, ``codebook8`` or ``int4``; ``ctype`` the C type of
    an element, ``size`` the number of elements; ``ram``: decoded into the static array
    ``NAME_ram`` at init and read from there.
    """

    name: str
    form: str
    declarations: str
    flash_bytes: int
    ctype: str = "float"
    size: int = 0
    ram: bool = False

    def at(self, i: str) -> str:
        """C expression of element ``i`` (a C expression of the flat index)."""
        if self.ram:
            return f"{self.name}_ram[{i}]"
        return self.decoded(i)

    def decoded(self, i: str) -> str:
        """C expression of element ``i`` read from flash (decoded where compressed)."""
        if self.form == "dense":
            return f"{self.name}[{i}]"
        if self.form == "codebook8":
            return f"{self.name}_cb[{self.name}_ix[{i}]]"
        nibble = f"(({self.name}_ix[({i}) >> 1] >> ((({i}) & 1) << 2)) & 15)"
        if self.form == "codebook4":
            return f"{self.name}_cb[{nibble}]"
        return f"((int8_t)({nibble} - 8))"  # int4

    @property
    def ram_bytes(self) -> int:
        """Bytes of the decoded array (the RAM table it would take)."""
        return self.size * _C_SIZES[self.ctype]

    def in_ram(self) -> ConstantArray:
        """This compressed array with a RAM table: decoded once by :meth:`init_text`."""
        if self.form == "dense":
            raise ValueError(f"{self.name} is stored dense; only a compressed array gets a "
                             "RAM table.")
        table = f"static {self.ctype} {self.name}_ram[{self.size}];\n"
        return replace(self, declarations=self.declarations + table, ram=True)

    def init_text(self, i: str) -> str:
        """The statement decoding every element into the RAM table (loop variable ``i``)."""
        return (f"for (int {i} = 0; {i} < {self.size}; ++{i}) "
                f"{self.name}_ram[{i}] = {self.decoded(i)};")


def _nibbles(indices: np.ndarray) -> np.ndarray:
    """Pack 4-bit values two per byte, the even element in the low nibble."""
    flat = indices.reshape(-1).astype(np.uint8)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)


TablePart = Callable[[str, np.ndarray, bool], str | None]
"""``table(name, values, codebook)``: the declarations of the part ``name`` of a constant
(its ``values``; ``codebook``: a compressed array's codebook, else the whole dense array) held
in RAM as a protected table, or None to keep it in flash (:mod:`satcompress.codegen.protect`)."""


def constant_array(name: str, values: np.ndarray, compressed: bool,
                   table: TablePart | None = None) -> ConstantArray:
    """``values`` as a C constant named ``name`` (see the module docstring for the forms);
    ``table`` may take its dense values or codebook into protected RAM tables."""
    def part(part_name: str, part_values: np.ndarray, codebook: bool) -> str:
        taken = table(part_name, part_values, codebook) if table is not None else None
        return taken if taken is not None else array_text(part_name, part_values,
                                                          part_values.dtype)

    values = np.ascontiguousarray(values)
    dtype = values.dtype
    if compressed and values.size >= _MIN_COMPRESSED:
        if dtype.kind == "f":
            codebook, indices = np.unique(values.reshape(-1), return_inverse=True)
            exact = (len(codebook) <= 256
                     and np.array_equal(codebook[indices], values.reshape(-1)))
            form = "codebook4" if len(codebook) <= 16 else "codebook8"
            packed = (_nibbles(indices) if form == "codebook4" else indices.astype(np.uint8))
            if exact and codebook.nbytes + packed.nbytes < values.nbytes:
                text = (part(f"{name}_cb", codebook, True)
                        + array_text(f"{name}_ix", packed, np.dtype(np.uint8)))
                return ConstantArray(name, form, text, codebook.nbytes + packed.nbytes,
                                     c_type(dtype), values.size)
        elif dtype == np.int8 and values.min() >= -8 and values.max() <= 7:
            packed = _nibbles(values.astype(np.int16) + 8)
            return ConstantArray(name, "int4", array_text(f"{name}_ix", packed,
                                                           np.dtype(np.uint8)), packed.nbytes,
                                 "int8_t", values.size)
    return ConstantArray(name, "dense", part(name, values, False), values.nbytes,
                         c_type(dtype), values.size)


def strides(shape: Sequence[int]) -> tuple[int, ...]:
    """Row-major element strides of ``shape``."""
    result, step = [], 1
    for size in reversed(shape):
        result.append(step)
        step *= size
    return tuple(reversed(result))


def broadcast_strides(shape: Sequence[int], out_shape: Sequence[int]) -> tuple[int, ...]:
    """Strides of an array of ``shape`` read at every position of ``out_shape`` (NumPy
    broadcasting: right-aligned, stride 0 along a dimension of size 1 or a missing one)."""
    own = strides(shape)
    pad = len(out_shape) - len(shape)
    return tuple(0 if d < pad or shape[d - pad] == 1 else own[d - pad]
                 for d in range(len(out_shape)))


def index(variables: Sequence[str], steps: Sequence[int], base: int | str = 0) -> str:
    """``base + sum variables[d] * steps[d]`` as C, leaving out zero terms."""
    terms = [str(base)] if base not in (0, "0", "") else []
    for variable, step in zip(variables, steps):
        if variable == "0":
            continue
        if step == 1:
            terms.append(variable)
        elif step:
            terms.append(f"{variable} * {step}")
    return " + ".join(terms) or "0"
