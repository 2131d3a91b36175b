"""Recurrent layers of the flight graph: ONNX ``GRU`` and ``LSTM`` (operator versions 14, opset 18).

The torch exporter (:func:`satcompress.onnx_export.export_onnx`) writes every layer of an
``nn.GRU`` / ``nn.LSTM`` as one such node (both directions of a bidirectional layer in one),
with ``layout=0`` (``X`` is (seq, batch, input)), ``linear_before_reset=1`` for a GRU, zero
``initial_h`` (and ``initial_c``) and no ``sequence_lens``. The kernels implement the
specifications' equations with their default activations, for every ``direction`` and both
``linear_before_reset`` settings, ``B``, ``initial_h`` and ``initial_c`` optional; they refuse,
saying so, ``sequence_lens``, peepholes (``P``), ``layout=1``, ``clip``, other activations
and ``input_forget``. Outputs: ``Y`` (seq, directions, batch, hidden), ``Y_h`` (directions,
batch, hidden) and, for the LSTM, ``Y_c`` (like ``Y_h``).

Arithmetic (float32, in this order; the C generator, :mod:`satcompress.codegen.recurrent`,
follows it): per direction the input projection ``Xw = X @ W^T + Wb`` (BLAS), then per step
``Hr = H @ R^T + Rb`` and each gate's pre-activation ``Xw[t] + Hr``; ``s`` is the runtime's
``Sigmoid`` (``0.5 (1 + tanh(x / 2))`` in float64, rounded once to float32).

``GRU`` (gates z, r, h)
    ``z = s(.)``, ``r = s(.)``, ``n = tanh(Xw_h[t] + r * Hr_h)`` with ``linear_before_reset``
    (else ``tanh(Xw_h[t] + ((r * H) @ R_h^T + Rb_h))``), ``H = (1 - z) * n + z * H``.
``LSTM`` (gates i, o, f, c)
    ``i, o, f = s(.)``, ``g = tanh(.)``, ``C = f * C + i * g``, ``H = o * tanh(C)``.

Importing :mod:`satcompress.runtime` registers both in
:data:`~satcompress.runtime.kernels.KERNELS`. They need no workspace: the generated C keeps
every state in the node's ``Y`` output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from satcompress.runtime.kernels import Arrays, Attributes, _count, _optional, _register, _sigmoid

__all__ = ["DIRECTIONS", "GATES", "RecurrentShape", "recurrent_shape"]

DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
"""``direction`` attribute -> number of directions (the leading axis of ``W``, ``R``, ``B``)."""

GATES = {"GRU": 3, "LSTM": 4}
"""Gates per hidden unit: the rows of ``W`` and ``R`` are ``GATES[op] * hidden_size``."""

_ACTIVATIONS = {"GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
_REFUSED_INPUTS = {
    4: ("sequence_lens", "pad every sequence to one length instead of packing them"),
    7: ("peephole weights P", "use nn.LSTM, which has none"),
}
"""Optional inputs the kernels do not implement: position -> (what it is, what to do)."""


class RecurrentShape(NamedTuple):
    """Sizes of a ``GRU``/``LSTM`` node (sequence, batch, input, hidden, directions, gates
    per unit) and, per direction, whether it runs backwards in time."""

    steps: int
    batch: int
    inputs: int
    hidden: int
    directions: int
    gates: int
    reverse: tuple[bool, ...]


def _check(array: np.ndarray | None, expected: tuple[int, ...], what: str, op: str) -> None:
    if array is not None and tuple(array.shape) != expected:
        raise ValueError(f"{op} {what} has shape {tuple(array.shape)}, expected {expected}")


def recurrent_shape(op: str, inputs: Arrays, attributes: Attributes) -> RecurrentShape:
    """The sizes of a ``GRU``/``LSTM`` node, every input and setting checked without
    allocating (ValueError naming what does not fit, or what is not implemented)."""
    for position, (what, fix) in _REFUSED_INPUTS.items():
        if _optional(inputs, position) is not None:
            raise ValueError(f"{op} with {what} is not supported; {fix}")
    if attributes.get("layout", 0) != 0:
        raise ValueError(f"{op} with layout=1 (batch first) is not supported; the torch "
                         "exporter writes layout=0")
    for name in ("clip", "activation_alpha", "activation_beta", "input_forget"):
        if attributes.get(name):
            raise ValueError(f"{op} with {name}={attributes[name]!r} is not supported; use the "
                             "plain nn.GRU/nn.LSTM")
    direction = attributes.get("direction", "forward")
    if direction not in DIRECTIONS:
        raise ValueError(f"{op} direction {direction!r} is not one of {sorted(DIRECTIONS)}")
    directions, gates = DIRECTIONS[direction], GATES[op]
    activations = attributes.get("activations")
    if activations is not None and list(activations) != _ACTIVATIONS[op] * directions:
        raise ValueError(f"{op} with activations {activations!r} is not supported; only "
                         f"the default {_ACTIVATIONS[op]} (the plain nn.GRU/nn.LSTM)")
    if len(inputs) < 3 or any(value is None for value in inputs[:3]):
        raise ValueError(f"{op} takes X, W and R, got {len(inputs)} input(s)")
    x, w, r = inputs[:3]
    if x.ndim != 3 or w.ndim != 3 or r.ndim != 3:
        raise ValueError(f"{op} takes a 3-d X, W and R, got {x.ndim}-d, {w.ndim}-d, {r.ndim}-d")
    hidden = int(attributes.get("hidden_size", r.shape[-1]))
    steps, batch, size = x.shape
    _check(w, (directions, gates * hidden, size), "W", op)
    _check(r, (directions, gates * hidden, hidden), "R", op)
    _check(_optional(inputs, 3), (directions, 2 * gates * hidden), "B", op)
    for position, name in ((5, "initial_h"), (6, "initial_c")):
        _check(_optional(inputs, position), (directions, batch, hidden), name, op)
    reverse = (False, True) if directions == 2 else (direction == "reverse",)
    return RecurrentShape(steps, batch, size, hidden, directions, gates, reverse)


def _recurrent_size(op: str) -> Callable[[Arrays, Attributes], int]:
    def allocates(inputs: Arrays, attributes: Attributes) -> int:
        """The input projection of one direction, or ``Y``."""
        shape = recurrent_shape(op, inputs, attributes)
        projection = (shape.steps, shape.batch, shape.gates * shape.hidden)
        return max(_count(projection), _count((shape.steps, shape.directions, shape.batch,
                                               shape.hidden)))

    return allocates


def _biases(inputs: Arrays, shape: RecurrentShape, direction: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """(``Wb``, ``Rb``) of one direction; zeros without ``B``."""
    rows = shape.gates * shape.hidden
    b = _optional(inputs, 3)
    if b is None:
        return np.zeros(rows, np.float32), np.zeros(rows, np.float32)
    return b[direction, :rows], b[direction, rows:]


def _initial(inputs: Arrays, position: int, shape: RecurrentShape, direction: int
             ) -> np.ndarray:
    value = _optional(inputs, position)
    if value is None:
        return np.zeros((shape.batch, shape.hidden), np.float32)
    return value[direction].astype(np.float32)


def _time_order(shape: RecurrentShape, direction: int) -> range:
    return (range(shape.steps - 1, -1, -1) if shape.reverse[direction]
            else range(shape.steps))


@_register("GRU", _recurrent_size("GRU"))
def _gru(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """ONNX GRU: ``[Y, Y_h]`` (see the module docstring)."""
    shape = recurrent_shape("GRU", inputs, attributes)
    x, w, r = inputs[:3]
    hidden = shape.hidden
    before_reset = bool(attributes.get("linear_before_reset", 0))
    y = np.empty((shape.steps, shape.directions, shape.batch, hidden), np.float32)
    y_h = np.empty((shape.directions, shape.batch, hidden), np.float32)
    for direction in range(shape.directions):
        wb, rb = _biases(inputs, shape, direction)
        recurrence = r[direction].T
        projected = np.matmul(x, w[direction].T) + wb
        h = _initial(inputs, 5, shape, direction)
        for t in _time_order(shape, direction):
            if before_reset:
                hr = np.matmul(h, recurrence) + rb
            else:
                hr = np.matmul(h, recurrence[:, :2 * hidden]) + rb[:2 * hidden]
            gate = projected[t, :, :2 * hidden] + hr[:, :2 * hidden]
            z, reset = _sigmoid(gate[:, :hidden]), _sigmoid(gate[:, hidden:])
            if before_reset:
                candidate = projected[t, :, 2 * hidden:] + reset * hr[:, 2 * hidden:]
            else:
                candidate = projected[t, :, 2 * hidden:] + (
                    np.matmul(reset * h, recurrence[:, 2 * hidden:]) + rb[2 * hidden:])
            h = (np.float32(1.0) - z) * np.tanh(candidate) + z * h
            y[t, direction] = h
        y_h[direction] = h
    return [y, y_h]


@_register("LSTM", _recurrent_size("LSTM"))
def _lstm(inputs: Arrays, attributes: Attributes) -> list[np.ndarray]:
    """ONNX LSTM: ``[Y, Y_h, Y_c]`` (see the module docstring)."""
    shape = recurrent_shape("LSTM", inputs, attributes)
    x, w, r = inputs[:3]
    hidden = shape.hidden
    y = np.empty((shape.steps, shape.directions, shape.batch, hidden), np.float32)
    y_h = np.empty((shape.directions, shape.batch, hidden), np.float32)
    y_c = np.empty_like(y_h)
    for direction in range(shape.directions):
        wb, rb = _biases(inputs, shape, direction)
        recurrence = r[direction].T
        projected = np.matmul(x, w[direction].T) + wb
        h = _initial(inputs, 5, shape, direction)
        c = _initial(inputs, 6, shape, direction)
        for t in _time_order(shape, direction):
            gate = projected[t] + (np.matmul(h, recurrence) + rb)
            i, o, f = (_sigmoid(gate[:, k * hidden:(k + 1) * hidden]) for k in range(3))
            c = f * c + i * np.tanh(gate[:, 3 * hidden:])
            h = o * np.tanh(c)
            y[t, direction] = h
        y_h[direction], y_c[direction] = h, c
    return [y, y_h, y_c]
