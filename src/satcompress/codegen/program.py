"""A loaded runtime as a static batch-1 program: every value's shape, dtype and home.

The C generator works on exactly what the NumPy runtime executes (:class:`~satcompress.
runtime.Runtime`: the folded constants, the load-time fusions, the batch-1 buffer plan), so
the two run the same operators on the same constants. At batch 1 every shape is known, so
the program is evaluated once on zeros with the runtime's own kernels to record each value's
shape and dtype; values that depend on shapes only (``Shape`` and what is computed from it
and constants) are *static* and become constants of the generated code.

Torch-free: part of the flight path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from satcompress.runtime import KERNELS, Node, Runtime

__all__ = ["CodegenError", "Value", "StaticProgram", "static_program"]


class CodegenError(ValueError):
    """A model cannot be turned into C (the message says why and what to do)."""


@dataclass(frozen=True)
class Value:
    """One value of the program.

    ``kind`` is ``"input"`` (the graph input, read from the caller's array), ``"arena"`` (an
    activation at ``offset`` bytes in the static arena) or ``"constant"`` (a stored, folded
    or static tensor, ``StaticProgram.data[name]``).
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    kind: str
    offset: int = 0

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class StaticProgram:
    """The nodes the generated code runs, their values, the constants and the arena size."""

    nodes: tuple[Node, ...]
    values: dict[str, Value]
    data: dict[str, np.ndarray]
    input_name: str
    output_name: str
    arena_bytes: int

    @property
    def input(self) -> Value:
        return self.values[self.input_name]

    @property
    def output(self) -> Value:
        return self.values[self.output_name]


def static_program(flight: Runtime) -> StaticProgram:
    """The batch-1 program of a loaded runtime (see the module docstring).

    Raises
    ------
    CodegenError
        If the model's input is not float32 (the generated ``predict`` takes floats).
    """
    if flight.input_dtype != np.float32:
        raise CodegenError(f"The model takes {flight.input_dtype} input; the C generator "
                           "writes a float32 predict function. Export a model with a float "
                           "input (quantize inside the graph).")
    constants: dict[str, np.ndarray] = dict(flight.resident_tensors)
    program: list[Node] = list(flight.program)
    input_name, output_name = flight.input_name, flight.output_name
    example = np.zeros((1, *flight.input_shape), np.float32)
    computed = {**constants, input_name: example}
    static = set(constants)
    nodes = []
    with np.errstate(all="ignore"):
        for node in program:
            arguments = [computed[name] if name else None for name in node.inputs]
            outputs = KERNELS[node.op].run(arguments, node.attributes)
            computed.update(zip(node.outputs, (np.asarray(value) for value in outputs)))
            if node.op == "Shape" or all(not name or name in static for name in node.inputs):
                static.update(node.outputs)
            else:
                nodes.append(node)
    offsets = {buffer.name: buffer.offset for buffer in flight.plan.buffers}
    values: dict[str, Value] = {}
    data: dict[str, np.ndarray] = {}
    for name, array in computed.items():
        if name == input_name:
            kind = "input"
        elif name in static and name != output_name:
            kind = "constant"
            data[name] = np.ascontiguousarray(array)
        else:
            kind = "arena"
        values[name] = Value(name, tuple(int(d) for d in array.shape), array.dtype, kind,
                             offsets.get(name, 0))
    if values[output_name].kind != "arena" or not nodes:
        raise CodegenError("The model's output does not depend on its input; there is nothing "
                           "to generate.")
    return StaticProgram(tuple(nodes), values, data, input_name, output_name,
                         flight.plan.arena_bytes)
