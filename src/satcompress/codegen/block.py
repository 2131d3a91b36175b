"""One node's C block: pointers to its values, nested loops, element reads and writes.

Torch-free: part of the flight path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import count

import numpy as np

from satcompress.codegen.emit import ConstantArray, c_type, constant_array
from satcompress.codegen.program import StaticProgram, Value

__all__ = ["Constants", "Block", "HELPERS"]

HELPERS = {
    "exp": """/* exp(x) for float x: Cephes' expf polynomial (error below 1 ulp on [-87, 88],
   clamped outside), branch-free so that compilers vectorise it; the same bits on every
   target. Rounds x / ln 2 to the nearest integer by adding and subtracting 1.5 * 2^23. */
static float {name}(float x)
{{
    float n, r, p, scale;
    int32_t bits;
    x = x > -87.0f ? x : -87.0f;
    x = x < 88.0f ? x : 88.0f;
    n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
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
    """The constant arrays the generated code reads, each declared once, named by prefix."""

    def __init__(self, prefix: str, compressed: bool) -> None:
        self.prefix, self.compressed = prefix, compressed
        self.arrays: dict[tuple[str, str], ConstantArray] = {}
        self.helpers: dict[str, str] = {}

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
            self.arrays[slot] = constant_array(name, values, self.compressed and not dense)
        return self.arrays[slot]

    @property
    def flash_bytes(self) -> int:
        return sum(array.flash_bytes for array in self.arrays.values())

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
        self.declared: list[str] = []
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
        ctype = c_type(value.dtype)
        pointer = f"p{len(self.pointers)}"
        if value.kind == "input":
            source = "input"
        else:
            source = f"({ctype} *)(void *)({self.arena} + {value.offset})"
        qualifier = "" if writable else "const "
        self.declared.append(f"{qualifier}{ctype} *const {pointer} = {source};")
        self.pointers[name] = pointer
        return pointer

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

    def text(self, title: str) -> str:
        inner = ["        " + declaration for declaration in self.declared]
        inner += ["    " + line for line in self.lines]
        return "    /* " + title + " */\n    {\n" + "\n".join(inner) + "\n    }\n"
