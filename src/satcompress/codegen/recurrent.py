"""C for the recurrent operators ``GRU`` and ``LSTM``, with the NumPy kernels' arithmetic.

Follows :mod:`satcompress.runtime.recurrent` operation for operation: per direction and batch
row the steps run in time order (reversed for a reverse direction), and at each step every
hidden unit is computed from the previous hidden state alone: its gates' input terms
``x_t . W_j`` and recurrent terms ``h . R_j`` summed over k in increasing order in float (the
kernel's BLAS sums in its own order: results agree within the float tolerance), biases added
as ``(xw + Wb) + (hr + Rb)``, the sigmoid as the runtime's (``0.5 (1 + tanh(x / 2))`` in
double, rounded once to float), tanh by ``tanhf``.

No workspace: the hidden state of a step is read back from the node's ``Y`` output, where
the step wrote it, and an LSTM's cell state is kept in the part of ``Y`` that the next step
writes (each unit reads its cell state there before writing its hidden state over it; the
last step's goes to ``Y_c``). A GRU with ``linear_before_reset=0`` is not generated (its
candidate needs the whole reset vector before any unit; the torch exporter writes 1).

Importing :mod:`satcompress.codegen` registers the emitters in
:data:`~satcompress.codegen.operators.EMITTERS`. Torch-free: part of the flight path.
"""

from __future__ import annotations

import numpy as np

from satcompress.codegen.block import Block
from satcompress.codegen.emit import index
from satcompress.codegen.operators import _mac, _register
from satcompress.codegen.program import CodegenError
from satcompress.runtime import Node
from satcompress.runtime.recurrent import RecurrentShape, recurrent_shape

__all__: list[str] = []

_INPUTS = 7
"""Inputs of an LSTM (X, W, R, B, sequence_lens, initial_h, initial_c; P is refused)."""


def _sigmoid(expression: str) -> str:
    """The runtime's ``Sigmoid``, ``0.5 (1 + tanh(x / 2))`` in double, of a float."""
    return f"(float)(0.5 * (1.0 + tanh(0.5 * (double)({expression}))))"


def _shaped(block: Block, name: str) -> np.ndarray | None:
    """A zero-size-in-memory stand-in of value ``name`` (its shape), None when absent."""
    return np.broadcast_to(np.float32(0), block.value(name).shape) if name else None


@_register("GRU", "LSTM")
def _recurrent(block: Block, node: Node) -> None:
    """One GRU or LSTM node: every direction, every batch row (see the module docstring)."""
    if node.op == "GRU" and not node.attributes.get("linear_before_reset", 0):
        raise CodegenError("A GRU with linear_before_reset=0 is not generated; nn.GRU exports "
                           "linear_before_reset=1.")
    names = [*node.inputs, *[""] * (_INPUTS - len(node.inputs))]
    shape = recurrent_shape(node.op, [_shaped(block, name) for name in names], node.attributes)
    for direction in range(shape.directions):
        block.loops((shape.batch,), lambda variables, direction=direction: _Recurrence(
            block, node, names, shape, direction, variables[0]).emit())


class _Recurrence:
    """The C of one direction of a node for one batch row (``row``, a C expression)."""

    def __init__(self, block: Block, node: Node, names: list[str], shape: RecurrentShape,
                 direction: int, row: str) -> None:
        self.block, self.node, self.names, self.shape = block, node, names, shape
        self.direction, self.row = direction, row
        self.y = block.writer(node.outputs[0])
        self.s, self.t, self.j, self.k, self.state = (
            block.fresh(stem) for stem in ("s", "t", "j", "k", "hp"))
        self.own = index([row], [shape.hidden], direction * shape.batch * shape.hidden)
        """Start of this direction's and row's ``Y_h``, ``Y_c``, ``initial_h``, ``initial_c``."""

    def slot(self, step: str) -> str:
        """Start of ``Y[step, direction, row]`` (``step`` a C expression)."""
        shape = self.shape
        return index([step, self.row], [shape.directions * shape.batch * shape.hidden,
                                         shape.hidden], self.direction * shape.batch * shape.hidden)

    def emit(self) -> None:
        """The time loop, then ``Y_h`` (a copy of the last step's part of ``Y``)."""
        block, shape, s, t, j, k = self.block, self.shape, self.s, self.t, self.j, self.k
        reverse = shape.reverse[self.direction]
        initial = (block.reader(self.names[5], dense=True)(self.own) if self.names[5] else None)
        block.line(f"const float *{self.state} = " + (f"&{initial};" if initial else "NULL;"))
        block.open(f"for (int {s} = 0; {s} < {shape.steps}; ++{s})")
        block.line(f"const int {t} = {f'{shape.steps - 1} - {s}' if reverse else s};")
        block.open(f"for (int {j} = 0; {j} < {shape.hidden}; ++{j})")
        terms = self.gate_terms(with_state=initial is not None)
        if self.node.op == "GRU":
            self.gru_unit(terms, initial is not None)
        else:
            self.lstm_unit(terms, f"({t} - 1)" if reverse else f"({t} + 1)")
        block.close()
        block.line(f"{self.state} = {self.y} + {self.slot(t)};")
        block.close()
        if len(self.node.outputs) > 1:
            last = f"{self.y}[{self.slot('0' if reverse else str(shape.steps - 1))} + {k}]"
            block.line(f"for (int {k} = 0; {k} < {shape.hidden}; ++{k}) "
                       f"{block.writer(self.node.outputs[1])}[{self.own} + {k}] = {last};")

    def gate_terms(self, with_state: bool) -> list[tuple[str, str]]:
        """Declare and compute unit j's ``xw + Wb`` and ``hr + Rb`` of every gate; return
        their names, gate by gate."""
        block, shape, j, k = self.block, self.shape, self.j, self.k
        value = block.fresh("v")
        xs = [block.fresh("xg") for _ in range(shape.gates)]
        hs = [block.fresh("hg") for _ in range(shape.gates)]
        block.line(f"float {', '.join(f'{name} = 0.0f' for name in xs + hs)};")

        def rows(size: int, gate: int) -> str:
            return index([j, k], [size, 1],
                         (self.direction * shape.gates + gate) * shape.hidden * size)

        read_x, read_w, read_r = (block.reader(name) for name in self.names[:3])
        block.open(f"for (int {k} = 0; {k} < {shape.inputs}; ++{k})")
        x_at = index([self.t, self.row, k], [shape.batch * shape.inputs, shape.inputs, 1])
        block.line(f"const float {value} = {read_x(x_at)};")
        block.line(" ".join(_mac(xs[g], value, read_w(rows(shape.inputs, g)))
                            for g in range(shape.gates)))
        block.close()
        block.open(("" if with_state else f"if ({self.s} > 0) ")
                   + f"for (int {k} = 0; {k} < {shape.hidden}; ++{k})")
        block.line(f"const float {value} = {self.state}[{k}];")
        block.line(" ".join(_mac(hs[g], value, read_r(rows(shape.hidden, g)))
                            for g in range(shape.gates)))
        block.close()
        if self.names[3]:
            read_b = block.reader(self.names[3])
            for g in range(shape.gates):
                first = index([j], [1], (2 * self.direction * shape.gates + g) * shape.hidden)
                second = index([j], [1],
                               ((2 * self.direction + 1) * shape.gates + g) * shape.hidden)
                block.line(f"{xs[g]} = {xs[g]} + {read_b(first)}; {hs[g]} = {hs[g]} + "
                           f"{read_b(second)};")
        return list(zip(xs, hs))

    def gru_unit(self, terms: list[tuple[str, str]], with_state: bool) -> None:
        """z, r, the candidate (linear before reset) and unit j's hidden state, into Y."""
        block, s, j = self.block, self.s, self.j
        z, reset = block.fresh("z"), block.fresh("r")
        block.line(f"const float {z} = {_sigmoid(' + '.join(terms[0]))};")
        block.line(f"const float {reset} = {_sigmoid(' + '.join(terms[1]))};")
        x_part, h_part = terms[2]
        previous = f"{self.state}[{j}]"
        if not with_state:
            previous = f"({s} > 0 ? {previous} : 0.0f)"
        block.line(f"{self.y}[{self.slot(self.t)} + {j}] = (1.0f - {z}) * tanhf({x_part} + "
                   f"{reset} * {h_part}) + {z} * {previous};")

    def lstm_unit(self, terms: list[tuple[str, str]], after: str) -> None:
        """i, o, f, the cell input and unit j's cell and hidden states: the cell state read
        from unit j's slot of Y this step (where the previous step left it), left in its slot
        of the next step (or in Y_c after the last)."""
        block, shape, s, j = self.block, self.shape, self.s, self.j
        here = f"{self.y}[{self.slot(self.t)} + {j}]"
        i, o, f, c = (block.fresh(stem) for stem in ("ig", "og", "fg", "c"))
        for name, term in zip((i, o, f), terms):
            block.line(f"const float {name} = {_sigmoid(' + '.join(term))};")
        initial = (block.reader(self.names[6])(f"{self.own} + {j}") if self.names[6]
                   else "0.0f")
        block.line(f"const float {c} = {f} * ({s} > 0 ? {here} : {initial}) + "
                   f"{i} * tanhf({' + '.join(terms[3])});")
        block.line(f"{here} = {o} * tanhf({c});")
        if shape.steps > 1:
            block.line(f"if ({s} + 1 < {shape.steps}) {self.y}[{self.slot(after)} + {j}] = {c};")
        if len(self.node.outputs) > 2:
            block.line(f"if ({s} + 1 == {shape.steps}) {block.writer(self.node.outputs[2])}"
                       f"[{self.own} + {j}] = {c};")
