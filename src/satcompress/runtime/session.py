"""Load a flight artifact and run it: :func:`load` and :class:`Runtime`.

At load the artifact is verified (CRC32 of every block and SHA-256 of the file, by
:mod:`satcompress.artifact`), the graph is checked, nodes whose inputs are all stored tensors
are evaluated once (e.g. ``DequantizeLinear`` of a weight-only quantized weight: the float32
weight it yields is what the runtime keeps), and one batch-1 dry run on zeros fixes every
buffer's size, checks every quantized layer's accumulator bound and produces the
:class:`~satcompress.runtime.plan.BufferPlan`. Inference then executes the nodes in their
stored order (after the load-time fusions of :mod:`satcompress.runtime.fuse`), freeing each
value after its last reader, in chunks of at most
:data:`CHUNK_EXAMPLES` examples (every example is computed independently of the others).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from satcompress.artifact import Artifact, decode_artifact, read_artifact
from satcompress.runtime.fuse import fuse_program
from satcompress.runtime.graph import GraphError, Node, check_graph
from satcompress.runtime.kernels import ACCUMULATOR_LIMIT, KERNELS, integer_accumulator_bound
from satcompress.runtime.plan import BufferPlan, Lifetime, plan_buffers

__all__ = ["CHUNK_EXAMPLES", "InputError", "Runtime", "load"]

CHUNK_EXAMPLES = 128
"""Examples per execution of the graph: bounds the memory of large batches."""

_QUANTIZED_LAYERS = ("QuantGemm", "QuantConv")


class InputError(ValueError):
    """An input array does not fit the model (shape, dtype or non-finite values)."""


def _inputs_of(node: Node, values: Mapping[str, np.ndarray]) -> list[np.ndarray | None]:
    return [values[name] if name else None for name in node.inputs]


def _execute(position: int, node: Node, arguments: list[np.ndarray | None]) -> list[np.ndarray]:
    try:
        outputs = KERNELS[node.op].run(arguments, node.attributes)
    except (ValueError, TypeError, IndexError, KeyError) as error:
        shapes = [None if a is None else tuple(a.shape) for a in arguments]
        raise GraphError(
            f"Graph node {position} ({node.op}) failed on inputs of shapes {shapes}: "
            f"{type(error).__name__}: {error}. The artifact's graph does not fit its tensors; "
            "rebuild it with satcompress.pipeline.flight.build_artifact."
        ) from None
    if len(outputs) < len(node.outputs):
        raise GraphError(f"Graph node {position} ({node.op}) names {len(node.outputs)} outputs "
                         f"but the operator produces {len(outputs)}.")
    return outputs


def _fold_constants(nodes: list[Node], tensors: Mapping[str, np.ndarray],
                    kept_names: set[str]) -> tuple[dict[str, np.ndarray], list[Node]]:
    """Evaluate every node whose inputs are all constants; keep the constants still read."""
    constants = dict(tensors)
    program = []
    for position, node in enumerate(nodes):
        if all(not name or name in constants for name in node.inputs):
            outputs = _execute(position, node, _inputs_of(node, constants))
            constants.update(zip(node.outputs, outputs))
        else:
            program.append(node)
    read = {name for node in program for name in node.inputs} | kept_names
    return {name: value for name, value in constants.items() if name in read}, program


def _check_accumulator(position: int, node: Node, arguments: list[np.ndarray | None]) -> None:
    x, x_scale, x_zero_point, weight, _, weight_zero_point = arguments[:6]
    if x_scale is None:
        return
    zero_point = 0 if x_zero_point is None else int(x_zero_point.reshape(()))
    bound = integer_accumulator_bound(weight, weight_zero_point, x.dtype, zero_point)
    if bound > ACCUMULATOR_LIMIT:
        raise GraphError(
            f"Graph node {position} ({node.op}) can reach an integer accumulator of {bound}, "
            f"beyond int32 ({ACCUMULATOR_LIMIT}); split the layer or quantize it to fewer bits."
        )


class Runtime:
    """A loaded flight artifact, ready to run (NumPy only).

    Build one with :func:`load`. Attributes: ``metadata`` (task, class names, preprocessing
    constants...), ``operators`` (the graph's operator names), ``checksum`` (the file's
    SHA-256), ``size_bytes``, ``input_shape`` (of one example), ``plan`` (the batch-1 :class:`~satcompress.runtime.plan.BufferPlan`) and
    ``peak_buffer_bytes`` (its peak: what a budget's ``max_ram_bytes`` counts).
    ``fuse=False`` runs the stored operators one by one instead of the load-time fusions of
    :mod:`satcompress.runtime.fuse` (same results; for checking them).
    """

    def __init__(self, artifact: Artifact, fuse: bool = True) -> None:
        graph = artifact.graph
        nodes = check_graph(graph, artifact.tensors)
        self.operators: tuple[str, ...] = tuple(sorted({node.op for node in nodes}))
        self.metadata: dict[str, Any] = artifact.metadata
        self.checksum: str = artifact.sha256
        self.size_bytes: int = artifact.size_bytes
        (source,), (target,) = graph["inputs"], graph["outputs"]
        self._input_name, self._output_name = source["name"], target["name"]
        shape = source["shape"]
        if not shape or shape[0] is not None or not all(
                isinstance(d, int) and d > 0 for d in shape[1:]):
            raise GraphError(f"Graph input shape {shape} must be [null, d1, d2, ...] with d_i > 0.")
        self.input_shape: tuple[int, ...] = tuple(shape[1:])
        self.input_dtype = np.dtype(source["dtype"])
        self._constants, self._program = _fold_constants(nodes, artifact.tensors,
                                                         {self._output_name})
        if fuse:
            self._program = fuse_program(self._program, self._constants, {self._output_name})
        self._last_reader = {name: step for step, node in enumerate(self._program)
                             for name in node.inputs if name and name not in self._constants}
        self._freed_after: list[list[str]] = [[] for _ in self._program]
        for name, step in self._last_reader.items():
            if name != self._output_name:
                self._freed_after[step].append(name)
        self.plan: BufferPlan = self._dry_run()

    @property
    def peak_buffer_bytes(self) -> int:
        """Planned peak RAM of one batch-1 inference: resident weights + the buffer arena."""
        return self.plan.peak_bytes

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.metadata.get("class_names", ()))

    def _dry_run(self) -> BufferPlan:
        """Run once on zeros of batch 1: buffer sizes, accumulator bounds, the memory plan."""
        example = np.zeros((1, *self.input_shape), self.input_dtype)
        values = {**self._constants, self._input_name: example}
        lifetimes = []
        born = {self._input_name: 0}
        end = len(self._program) - 1
        with np.errstate(all="ignore"):
            for step, node in enumerate(self._program):
                arguments = _inputs_of(node, values)
                if node.op in _QUANTIZED_LAYERS:
                    _check_accumulator(step, node, arguments)
                outputs = _execute(step, node, arguments)
                workspace = KERNELS[node.op].workspace(arguments, node.attributes, outputs)
                if workspace:
                    lifetimes.append(Lifetime(f"workspace:{step}", int(workspace), step, step))
                for name, value in zip(node.outputs, outputs):
                    values[name] = value
                    born[name] = step
        for name, first in born.items():
            last = end if name == self._output_name else self._last_reader.get(name, first)
            lifetimes.append(Lifetime(name, int(values[name].nbytes), first, last))
        output = values[self._output_name]
        if output.ndim != 2 or output.shape[0] != 1:
            raise GraphError(f"The graph's output has shape {output.shape} for one example; "
                             "a classifier's logits must have shape (1, n_classes).")
        resident = sum(int(value.nbytes) for value in self._constants.values())
        return plan_buffers(lifetimes, resident)

    def _check_input(self, x: Any) -> np.ndarray:
        expected = f"(batch, {', '.join(map(str, self.input_shape))})"
        if not isinstance(x, np.ndarray):
            raise InputError(f"The input must be a NumPy array of shape {expected}, got "
                             f"{type(x).__name__}; convert it with "
                             f"np.asarray(x, np.{self.input_dtype}).")
        if x.ndim != len(self.input_shape) + 1 or x.shape[1:] != self.input_shape or not len(x):
            hint = " (add the batch axis: x[None])" if tuple(x.shape) == self.input_shape else ""
            raise InputError(f"The input has shape {tuple(x.shape)} but the model takes "
                             f"{expected} with batch >= 1{hint}.")
        if x.dtype != self.input_dtype:
            raise InputError(f"The input has dtype {x.dtype} but the model takes "
                             f"{self.input_dtype}; convert it with "
                             f"x.astype(np.{self.input_dtype}).")
        if not np.isfinite(x).all():
            bad = int(np.count_nonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1)))
            raise InputError(f"{bad} input example(s) contain NaN or infinity; the task's "
                             "preprocessing must replace or drop them before inference.")
        return np.ascontiguousarray(x)

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        values = {**self._constants, self._input_name: x}
        for step, node in enumerate(self._program):
            values.update(zip(node.outputs, _execute(step, node, _inputs_of(node, values))))
            for name in self._freed_after[step]:
                del values[name]
        return values[self._output_name]

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits (batch, n_classes), float32, for inputs ``x`` of shape (batch, *input_shape).

        Raises
        ------
        InputError
            If ``x`` is not an array of the model's input shape and dtype, or holds NaN/inf.
        """
        x = self._check_input(x)
        return np.concatenate([self._run_chunk(x[start : start + CHUNK_EXAMPLES])
                               for start in range(0, len(x), CHUNK_EXAMPLES)])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities: softmax of :meth:`run`'s logits, computed in float64."""
        logits = self.run(x).astype(np.float64)
        exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exponentials / exponentials.sum(axis=1, keepdims=True)


def load(source: str | os.PathLike | bytes, fuse: bool = True) -> Runtime:
    """Verify and load a flight artifact from a path or from its bytes (``fuse``: see
    :class:`Runtime`).

    Raises
    ------
    satcompress.artifact.ArtifactError
        If the file is truncated, corrupted or of another format version (names the block).
    satcompress.runtime.GraphError
        If the graph is malformed or uses an operator this runtime does not support.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return Runtime(decode_artifact(bytes(source)), fuse)
    return Runtime(read_artifact(Path(source)), fuse)
