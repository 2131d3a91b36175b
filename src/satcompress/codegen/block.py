"""One node's C block: pointers to its values, nested loops, element reads and writes.

Torch-free: part of the flight path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import count

import numpy as np

from satcompress.codegen.emit import ConstantArray, TablePart, c_type, constant_array
from satcompress.codegen.program import StaticProgram, Value
from satcompress.codegen.protect import Tables
from satcompress.runtime.protect import TABLE_MAX_ELEMENTS

__all__ = ["Constants", "Block", "HELPERS"]

HELPERS = {
    "exp": """/* exp(x) for float x: Cephes' expf polynomial (error below 1 ulp on [-87, 88],
   clamped outside; 0.98 ulp at most, checked on every float), branch-free so that compilers
   vectorise it; fused multiply-adds (C99 fmaf, exact everywhere) in the range reduction and
   the Horner steps: the same bits on every target. Rounds x / ln 2 to the nearest integer by
   adding and subtracting 1.5 * 2^23. Inline: a call in a loop would stop it vectorising. */
static inline float {name}(float x)
{{
    float n, r, p, scale;
    int32_t bits;
    x = x > -87.0f ? x : -87.0f;
    x = x < 88.0f ? x : 88.0f;
    n = fmaf(x, 1.44269504088896341f, 12582912.0f) - 12582912.0f;
    r = fmaf(n, -0.693359375f, x);
    r = fmaf(n, 2.12194440e-4f, r);
    p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = p * (r * r) + r + 1.0f;
    bits = ((int32_t)n + 127) << 23;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}}
""",
}
"""Small functions the generated code may call: name -> C text (``{name}`` is the prefixed
function name); each is written once, only when used."""


class Constants:
    """The constant arrays the generated code reads, each declared once, named by prefix;
    the compressed arrays whose slots are in ``ram`` get a RAM table (decoded at init).

    With ``tables`` (:class:`~satcompress.codegen.protect.Tables`: an artifact protected
    with ``tables``), the critical tables are read from its triplicated RAM: every codebook
    and every dense array, except one of more than
    :data:`~satcompress.runtime.protect.TABLE_MAX_ELEMENTS` elements of a tensor in
    ``weights`` (a layer's weight), which stays in flash -- the runtime's choice.
    """

    def __init__(self, prefix: str, compressed: bool,
                 ram: frozenset[tuple[str, str]] = frozenset(), tables: Tables | None = None,
                 weights: frozenset[str] = frozenset()) -> None:
        self.prefix, self.compressed, self.ram = prefix, compressed, ram
        self.tables, self.weights = tables, weights
        self.arrays: dict[tuple[str, str], ConstantArray] = {}
        """(tensor, layout variant) -> its array."""
        self.helpers: dict[str, str] = {}

    def _table(self, tables: Tables, key: str) -> TablePart:
        """What of the array of ``key`` (a tensor, or ``tensor:layout``) ``tables`` hold."""
        tensor = key if key in self.weights else key.rsplit(":", 1)[0]

        def take(name: str, values: np.ndarray, codebook: bool) -> str | None:
            if codebook or values.size <= TABLE_MAX_ELEMENTS or tensor not in self.weights:
                return tables.add(name, values)
            return None

        return take

    def helper(self, key: str) -> str:
        """The prefixed name of the helper function ``key`` of :data:`HELPERS` (written once)."""
        if key not in self.helpers:
            self.helpers[key] = f"{self.prefix}{key}"
        return self.helpers[key]

    def get(self, key: str, values: np.ndarray, variant: str = "", dense: bool = False
            ) -> ConstantArray:
        """The C array of ``values`` (``key`` + ``variant`` name one layout of one tensor)."""
        slot = (key, variant + ("d" if dense else ""))
        if slot not in self.arrays:
            name = f"{self.prefix}k{len(self.arrays)}"
            table = (self._table(self.tables, key)
                     if self.tables is not None and slot not in self.ram else None)
            array = constant_array(name, values, self.compressed and not dense, table)
            self.arrays[slot] = array.in_ram() if slot in self.ram else array
        return self.arrays[slot]

    @property
    def flash_bytes(self) -> int:
        return sum(array.flash_bytes for array in self.arrays.values())

    @property
    def ram_bytes(self) -> int:
        """Bytes of the RAM tables."""
        return sum(array.ram_bytes for array in self.arrays.values() if array.ram)

    def init_text(self) -> str:
        """The statements of the init function: every RAM table decoded."""
        return "".join(f"    {array.init_text('i')}\n" for array in self.arrays.values()
                       if array.ram)

    def declarations(self) -> str:
        helpers = "".join(HELPERS[key].format(name=name) + "\n"
                          for key, name in self.helpers.items())
        return "".join(array.declarations for array in self.arrays.values()) + helpers


class Block:
    """The C statements of one node, in their own scope."""

    def __init__(self, program: StaticProgram, constants: Constants, arena: str) -> None:
        self.program, self.constants, self.arena = program, constants, arena
        self.lines: list[str] = []
        self.pointers: dict[str, str] = {}
        self.parameters: list[tuple[str, str, str]] = []
        """(value name, pointed-to type, pointer name) of every value the block reads or
        writes through a pointer."""
        self._depth = 1
        self._names = count()

    def value(self, name: str) -> Value:
        return self.program.values[name]

    def fresh(self, stem: str = "t") -> str:
        return f"{stem}{next(self._names)}"

    def _pointer(self, name: str, writable: bool) -> str:
        if name in self.pointers:
            return self.pointers[name]
        value = self.value(name)
        pointer = f"p{len(self.pointers)}"
        qualifier = "" if writable else "const "
        self.parameters.append((name, f"{qualifier}{c_type(value.dtype)}", pointer))
        self.pointers[name] = pointer
        return pointer

    def _span(self, name: str) -> tuple[int, int]:
        """The bytes of an arena value ([start, end); the input takes none of the arena's)."""
        value = self.value(name)
        if value.kind != "arena":
            return (-1, -1)
        return (value.offset, value.offset + value.size * np.dtype(value.dtype).itemsize)

    def reader(self, name: str, variant: str = "", values: np.ndarray | None = None,
               dense: bool = False) -> Callable[[str], str]:
        """``read(i)``: the C expression of element ``i`` of value ``name`` (a constant may be
        given in another layout, ``values``, named by ``variant``)."""
        value = self.value(name)
        if value.kind == "constant":
            array = self.constants.get(name, self.program.data[name] if values is None
                                       else values, variant, dense)
            return array.at
        pointer = self._pointer(name, writable=False)
        return lambda i: f"{pointer}[{i}]"

    def writer(self, name: str) -> str:
        """The name of a writable pointer to value ``name`` (an arena value)."""
        if self.value(name).kind != "arena":
            raise ValueError(f"value {name} is not computed by the generated code")
        return self._pointer(name, writable=True)

    def constant(self, name: str) -> np.ndarray | None:
        """The array of a constant value (None for an activation or an absent name)."""
        if not name or self.value(name).kind != "constant":
            return None
        return self.program.data[name]

    def line(self, text: str) -> None:
        self.lines.append("    " * self._depth + text)

    def open(self, text: str) -> None:
        self.line(text + " {")
        self._depth += 1

    def close(self) -> None:
        self._depth -= 1
        self.line("}")

    def loops(self, shape: Sequence[int], body: Callable[[list[str]], None]) -> None:
        """``body(variables)`` inside one loop per dimension of ``shape`` (none for size 1)."""
        variables = []
        opened = 0
        for size in shape:
            if size == 1:
                variables.append("0")
                continue
            variable = self.fresh("i")
            self.open(f"for (int {variable} = 0; {variable} < {size}; ++{variable})")
            variables.append(variable)
            opened += 1
        body(variables)
        for _ in range(opened):
            self.close()

    def function(self, name: str, title: str) -> tuple[str, str]:
        """(definition, call) of the block as the static function ``name``: its values'
        pointers are parameters, ``restrict`` where no other value of the block shares their
        bytes (the buffer plan gives the values one node reads and writes bytes of their own;
        an attention's two nodes may reuse them), which lets compilers vectorise loops that
        read one value and write another."""
        spans = {value: self._span(value) for value, _, _ in self.parameters}
        declarations, arguments = [], []
        for value, ctype, pointer in self.parameters:
            start, end = spans[value]
            shared = any(other != value and start < other_end and other_start < end
                         for other, (other_start, other_end) in spans.items())
            declarations.append(f"{ctype} *{'' if shared else 'restrict '}{pointer}")
            kind = self.value(value).kind
            arguments.append("input" if kind == "input" else
                             f"({ctype.removeprefix('const ')} *)(void *)({self.arena} + {start})")
        body = "\n".join(self.lines)
        return (f"/* {title} */\nstatic void {name}({', '.join(declarations) or 'void'})\n{{\n"
                f"{body}\n}}\n\n", f"    {name}({', '.join(arguments)});\n")
