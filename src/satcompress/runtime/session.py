"""Load a flight artifact and run it: :func:`load` and :class:`Runtime`.

At load the artifact is verified (CRC32 of every block and SHA-256 of the file, by
:mod:`satcompress.artifact`), the graph is checked, nodes whose inputs are all stored tensors
are evaluated once (e.g. ``DequantizeLinear`` of a weight-only quantized weight: the float32
weight it yields is what the runtime keeps), and one batch-1 dry run on zeros fixes every
buffer's size, checks every quantized layer's accumulator bound and produces the
:class:`~satcompress.runtime.plan.BufferPlan`. Inference then executes the nodes in their
stored order (after the load-time fusions of :mod:`satcompress.runtime.fuse`), freeing each
value after its last reader (or at once if nothing reads it), in chunks of at most
:data:`CHUNK_EXAMPLES` examples (every example is computed independently of the others).

Loading is bounded by :class:`~satcompress.artifact.LoadLimits`: before a node runs at load
(folded or in the dry run), the largest array its kernel may allocate
(:attr:`~satcompress.runtime.kernels.Kernel.allocates`, at :data:`_ITEM_BYTES` bytes per
element) is checked against what is left of ``max_folded_bytes`` or ``max_activation_bytes``,
and the planned arena against ``max_activation_bytes``. Every reason an artifact does not
load raises :class:`~satcompress.artifact.ArtifactError` (a :class:`GraphError` for graphs
that do not run).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from satcompress.artifact import Artifact, ArtifactError, LoadLimits, decode_artifact, read_artifact
from satcompress.artifact.errors import shown
from satcompress.runtime.fuse import fuse_program
from satcompress.runtime.graph import GraphError, Node, check_graph, check_input
from satcompress.runtime.kernels import ACCUMULATOR_LIMIT, KERNELS, integer_accumulator_bound
from satcompress.runtime.plan import BufferPlan, Lifetime, plan_buffers

__all__ = ["CHUNK_EXAMPLES", "InputError", "Runtime", "load"]

CHUNK_EXAMPLES = 128
"""Examples per execution of the graph: bounds the memory of large batches."""

_QUANTIZED_LAYERS = ("QuantGemm", "QuantConv")
_ITEM_BYTES = 8
"""Bytes per element of the widest array a kernel allocates (float64 and int64 temporaries)."""
_KERNEL_ERRORS = (ArithmeticError, AttributeError, LookupError, TypeError, ValueError)
"""What a kernel raises on inputs or attributes that do not fit it (not MemoryError: the
limits are checked before allocating, so running out of memory is the machine's state)."""
_SHOWN_ERROR = 300
"""Characters of a kernel's own error message quoted in a GraphError."""
_T = TypeVar("_T")


class InputError(ValueError):
    """An input array does not fit the model (shape, dtype or non-finite values)."""


def _inputs_of(node: Node, values: Mapping[str, np.ndarray]) -> list[np.ndarray | None]:
    return [values[name] if name else None for name in node.inputs]


def _guarded(position: int, node: Node, arguments: list[np.ndarray | None],
             call: Callable[[], _T]) -> _T:
    """``call()``; a kernel's failure on inputs that do not fit it becomes a GraphError."""
    try:
        return call()
    except GraphError:
        raise
    except _KERNEL_ERRORS as error:
        shapes = [None if a is None else tuple(a.shape) for a in arguments]
        raise GraphError(
            f"Graph node {position} ({node.op}) failed on inputs of shapes {shown(shapes)}: "
            f"{type(error).__name__}: {' '.join(str(error).split())[:_SHOWN_ERROR]}. The "
            "artifact's graph does not fit its tensors; rebuild it with "
            "satcompress.pipeline.flight.build_artifact."
        ) from None


def _execute(position: int, node: Node, arguments: list[np.ndarray | None]) -> list[np.ndarray]:
    outputs = _guarded(position, node, arguments,
                       lambda: KERNELS[node.op].run(arguments, node.attributes))
    if len(outputs) < len(node.outputs):
        raise GraphError(f"Graph node {position} ({node.op}) names {len(node.outputs)} outputs "
                         f"but the operator produces {len(outputs)}.")
    return outputs


def _allocation(position: int, node: Node, arguments: list[np.ndarray | None]) -> int:
    """Bytes the largest array of ``node``'s kernel may take, known before it runs."""
    return _ITEM_BYTES * _guarded(position, node, arguments,
                                  lambda: KERNELS[node.op].allocates(arguments, node.attributes))


def _fold_constants(nodes: list[Node], tensors: Mapping[str, np.ndarray], kept_names: set[str],
                    limits: LoadLimits) -> tuple[dict[str, np.ndarray], list[Node]]:
    """Evaluate every node whose inputs are all constants, within ``limits.max_folded_bytes``;
    keep the constants still read."""
    constants = dict(tensors)
    program, folded = [], 0
    for position, node in enumerate(nodes):
        if all(not name or name in constants for name in node.inputs):
            arguments = _inputs_of(node, constants)
            need = _allocation(position, node, arguments)
            if folded + need > limits.max_folded_bytes:
                raise limits.exceeded("max_folded_bytes",
                                      f"Graph node {position} ({node.op}), evaluated at load, "
                                      f"may take {need} bytes after {folded} already folded")
            outputs = _execute(position, node, arguments)
            constants.update(zip(node.outputs, outputs))
            folded += sum(value.nbytes for _, value in zip(node.outputs, outputs))
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


def _class_names(metadata: Mapping[str, Any]) -> tuple[str, ...]:
    names = metadata.get("class_names", [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ArtifactError(f"The artifact's metadata has class_names {shown(names)}, not a list "
                            "of strings; rebuild it with satcompress.pipeline.flight."
                            "task_metadata.")
    return tuple(names)


class Runtime:
    """A loaded flight artifact, ready to run (NumPy only).

    Build one with :func:`load`. Attributes: ``metadata`` (task, class names, preprocessing
    constants...), ``operators`` (the graph's operator names), ``checksum`` (the file's
    SHA-256), ``size_bytes``, ``input_shape`` (of one example), ``plan`` (the batch-1
    :class:`~satcompress.runtime.plan.BufferPlan`) and ``peak_buffer_bytes`` (its peak: what
    a budget's ``max_ram_bytes`` counts). ``fuse=False`` runs the stored operators one by one
    instead of the load-time fusions of :mod:`satcompress.runtime.fuse` (same results; for
    checking them). ``limits`` bound what loading may allocate (see the module docstring).
    """

    def __init__(self, artifact: Artifact, fuse: bool = True,
                 limits: LoadLimits = LoadLimits()) -> None:
        graph = artifact.graph
        nodes = check_graph(graph, artifact.tensors, limits)
        self.operators: tuple[str, ...] = tuple(sorted({node.op for node in nodes}))
        self.metadata: dict[str, Any] = artifact.metadata
        self.class_names: tuple[str, ...] = _class_names(artifact.metadata)
        self.checksum: str = artifact.sha256
        self.size_bytes: int = artifact.size_bytes
        (source,), (target,) = graph["inputs"], graph["outputs"]
        self._input_name, self._output_name = source["name"], target["name"]
        self.input_shape, self.input_dtype = check_input(source, limits)
        with np.errstate(all="ignore"):
            self._constants, self._program = _fold_constants(nodes, artifact.tensors,
                                                             {self._output_name}, limits)
        if fuse:
            self._program = fuse_program(self._program, self._constants, {self._output_name})
        self._last_reader = {name: step for step, node in enumerate(self._program)
                             for name in node.inputs if name and name not in self._constants}
        written = {name: step for step, node in enumerate(self._program) for name in node.outputs}
        self._freed_after: list[list[str]] = [[] for _ in self._program]
        for name, step in {**written, **self._last_reader}.items():  # a value unread: at once
            if name != self._output_name:
                self._freed_after[step].append(name)
        self.plan: BufferPlan = self._dry_run(limits)
        self._bounds: dict[str, tuple[np.floating, np.floating]] = {}
        self.clipped_values = 0
        """Values clipped by :meth:`restrict_activations` since it was turned on."""

    @property
    def peak_buffer_bytes(self) -> int:
        """Planned peak RAM of one batch-1 inference: resident weights + the buffer arena."""
        return self.plan.peak_bytes

    @property
    def resident_tensors(self) -> dict[str, np.ndarray]:
        """The arrays kept in memory between inferences (weights after load-time folding),
        by name: what a single-event upset in RAM hits. The runtime's own mapping, read at
        every run (the fault injector, :mod:`satcompress.radiation`, flips bits in it)."""
        return self._constants

    @property
    def program(self) -> tuple[Node, ...]:
        """The nodes run at every inference, in order (after folding and fusion)."""
        return tuple(self._program)

    @property
    def input_name(self) -> str:
        """Name of the graph's input value."""
        return self._input_name

    @property
    def output_name(self) -> str:
        """Name of the graph's output value (the logits)."""
        return self._output_name

    def _dry_run(self, limits: LoadLimits) -> BufferPlan:
        """Run once on zeros of batch 1 within ``limits.max_activation_bytes``: buffer sizes,
        accumulator bounds, the memory plan."""
        cap = limits.max_activation_bytes
        held = math.prod(self.input_shape) * self.input_dtype.itemsize  # activations alive
        if held > cap:
            raise limits.exceeded("max_activation_bytes", f"One example of the graph input "
                                  f"takes {held} bytes")
        example = np.zeros((1, *self.input_shape), self.input_dtype)
        values = {**self._constants, self._input_name: example}
        lifetimes, sizes = [], {self._input_name: example.nbytes}
        born = {self._input_name: 0}
        end = max(0, len(self._program) - 1)
        with np.errstate(all="ignore"):
            for step, node in enumerate(self._program):
                arguments = _inputs_of(node, values)
                need = _allocation(step, node, arguments)
                if held + need > cap:
                    raise limits.exceeded("max_activation_bytes",
                                          f"Graph node {step} ({node.op}) may take {need} bytes "
                                          f"while {held} bytes of activations are alive")
                if node.op in _QUANTIZED_LAYERS:
                    _guarded(step, node, arguments,
                             lambda: _check_accumulator(step, node, arguments))
                outputs = _execute(step, node, arguments)
                workspace = _guarded(step, node, arguments, lambda: KERNELS[node.op].workspace(
                    arguments, node.attributes, outputs))
                if workspace:
                    lifetimes.append(Lifetime(f"workspace:{step}", int(workspace), step, step))
                for name, value in zip(node.outputs, outputs):
                    values[name], born[name], sizes[name] = value, step, int(value.nbytes)
                    held += value.nbytes
                for name in self._freed_after[step]:
                    held -= sizes[name]
                    del values[name]
        output = values.get(self._output_name)
        if output is None or output.ndim != 2 or output.shape[0] != 1:
            found = "no value" if output is None else f"shape {output.shape}"
            raise GraphError(f"The graph's output has {found} for one example; a classifier's "
                             "logits must have shape (1, n_classes).")
        for name, first in born.items():
            last = end if name == self._output_name else self._last_reader.get(name, first)
            lifetimes.append(Lifetime(name, sizes[name], first, last))
        resident = sum(int(value.nbytes) for value in self._constants.values())
        plan = plan_buffers(lifetimes, resident)
        if plan.arena_bytes > cap:
            raise limits.exceeded("max_activation_bytes",
                                  f"The planned activation arena takes {plan.arena_bytes} bytes")
        return plan

    def check_input(self, x: Any) -> np.ndarray:
        """``x`` as a contiguous array the model takes, or :class:`InputError` saying why not."""
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

    def restrict_activations(self, bounds: Mapping[str, tuple[float, float]] | None) -> None:
        """Clip each named float value to its ``(low, high)`` after the node that writes it
        (Ranger: Chen et al., DSN 2021), NaN becoming ``low``; ``None`` turns it off.

        Calibrate the bounds with :meth:`activation_ranges` on training inputs. A value in its
        bounds costs two reductions; one out of them is replaced by a clipped copy (never
        written in place: it may be a view of a resident tensor) and counted in
        :attr:`clipped_values`.
        """
        self._bounds = {name: (np.float32(low), np.float32(high))
                        for name, (low, high) in (bounds or {}).items()}
        self.clipped_values = 0

    def activation_ranges(self, x: np.ndarray) -> dict[str, tuple[float, float]]:
        """The smallest and largest value of every float value the program writes, over the
        inputs ``x`` (e.g. the training split): the bounds of :meth:`restrict_activations`."""
        ranges: dict[str, tuple[float, float]] = {}

        def observe(name: str, value: np.ndarray) -> np.ndarray:
            if value.size and value.dtype.kind == "f":
                low, high = ranges.get(name, (math.inf, -math.inf))
                ranges[name] = (min(low, float(value.min())), max(high, float(value.max())))
            return value

        x = self.check_input(x)
        for start in range(0, len(x), CHUNK_EXAMPLES):
            self._run_chunk(x[start : start + CHUNK_EXAMPLES], observe)
        return ranges

    def _restricted(self, name: str, value: np.ndarray) -> np.ndarray:
        bounds = self._bounds.get(name)
        if bounds is None or not value.size:
            return value
        low, high = bounds
        if low <= value.min() and value.max() <= high:  # NaN fails both comparisons
            return value
        self.clipped_values += int(np.count_nonzero(~((value >= low) & (value <= high))))
        return np.fmin(np.fmax(value, low), high)

    def _run_chunk(self, x: np.ndarray,
                   observe: Callable[[str, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        observe = observe or (self._restricted if self._bounds else None)
        values = {**self._constants, self._input_name: x}
        for step, node in enumerate(self._program):
            outputs = _execute(step, node, _inputs_of(node, values))
            if observe is not None:
                outputs = [observe(name, value) for name, value in zip(node.outputs, outputs)]
            values.update(zip(node.outputs, outputs))
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
        x = self.check_input(x)
        return np.concatenate([self._run_chunk(x[start : start + CHUNK_EXAMPLES])
                               for start in range(0, len(x), CHUNK_EXAMPLES)])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities: softmax of :meth:`run`'s logits, computed in float64."""
        logits = self.run(x).astype(np.float64)
        exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exponentials / exponentials.sum(axis=1, keepdims=True)


def load(source: str | os.PathLike | bytes, fuse: bool = True, *,
         limits: LoadLimits = LoadLimits(), backend: str = "numpy") -> Runtime:
    """Verify and load a flight artifact from a path or from its bytes (``fuse``: see
    :class:`Runtime`), allocating no more than ``limits`` allow.

    ``backend="c"`` runs the artifact's generated C code compiled for this machine
    (:mod:`satcompress.firmware.host`; the NumPy runtime stays the reference, and is returned,
    with a warning, when there is no C compiler).

    Raises
    ------
    satcompress.artifact.ArtifactError
        If the file is truncated, corrupted, of another format version (names the block) or
        beyond one of ``limits`` (names it); as its subclass
        :class:`satcompress.runtime.GraphError`, if the graph is malformed, does not fit its
        tensors or uses an operator this runtime does not support.
    ValueError
        If ``backend`` is neither ``"numpy"`` nor ``"c"``.
    """
    if backend not in ("numpy", "c"):
        raise ValueError(f"Unknown backend {backend!r}; use 'numpy' (the reference) or 'c' "
                         "(the generated C code, compiled for this machine).")
    if isinstance(source, (bytes, bytearray, memoryview)):
        flight = Runtime(decode_artifact(source, limits=limits), fuse, limits)
    else:
        flight = Runtime(read_artifact(Path(source), limits=limits), fuse, limits)
    if backend == "c":
        from satcompress.firmware.host import load_c  # the C backend builds on this runtime

        return load_c(flight)
    return flight
