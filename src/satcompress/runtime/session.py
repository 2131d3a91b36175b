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

What the artifact's metadata asks for against upsets in RAM (range restriction of layer
outputs, triplicated tables, compact weights, scrubbing: :mod:`satcompress.runtime.protect`)
is applied at load, without recalibration; :meth:`Runtime.classify` reports non-finite logits
as faults, never as a class.

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
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from satcompress.artifact import Artifact, ArtifactError, LoadLimits, decode_artifact, read_artifact
from satcompress.artifact.errors import shown
from satcompress.runtime.fuse import fuse_program
from satcompress.runtime.graph import GraphError, Node, check_graph, check_input
from satcompress.runtime.kernels import ACCUMULATOR_LIMIT, KERNELS, integer_accumulator_bound
from satcompress.runtime.plan import BufferPlan, Lifetime, plan_buffers
from satcompress.runtime.protect import (
    LAYER_OPS,
    Classification,
    Protection,
    RangeCheck,
    ResidentMemory,
    classify_logits,
    layer_steps,
    widened,
)

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
_FRESH_OUTPUTS = LAYER_OPS | {"Relu"}
"""Operators whose kernels return a new array: their output is clipped in place."""
_GATHERED_ELEMENTS = 1 << 16
"""Largest chunk x bounded values (plus their bounds) whose range check is gathered into one
arena (:class:`~satcompress.runtime.protect.RangeCheck`); a larger chunk checks each value
where it is written."""


_Check = Callable[[np.ndarray, list[float], list[float]], np.ndarray]
"""A value's range check: (value, voted low bounds, voted high bounds) -> the value to use."""


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
    :class:`~satcompress.runtime.plan.BufferPlan`, its resident bytes those of
    :attr:`resident_memory`) and ``peak_buffer_bytes`` (its peak: what a budget's
    ``max_ram_bytes`` counts). ``fuse=False`` runs the stored operators one by one instead of
    the load-time fusions of :mod:`satcompress.runtime.fuse` (same results; for checking
    them). ``limits`` bound what loading may allocate (see the module docstring).

    ``protection`` is what the artifact records (:class:`~satcompress.runtime.protect.
    Protection`), applied at load; ``protect=False`` loads without it (for comparison).
    ``source`` (the artifact's path or bytes) is where :meth:`scrub` reloads a corrupted
    block from. Counters since load: ``clipped_values``, ``faults`` (rows :meth:`classify`
    reported as faults), ``repairs`` (by :meth:`scrub`); ``scrub_every`` examples between
    scrubs (0: on demand only) may be changed. A protected runtime shares buffers between
    inferences (its range check arena, the compact weights' decoding scratch): run one
    inference at a time on it, a runtime per thread.
    """

    def __init__(self, artifact: Artifact, fuse: bool = True,
                 limits: LoadLimits = LoadLimits(), *, protect: bool = True,
                 source: bytes | str | os.PathLike | None = None) -> None:
        graph = artifact.graph
        nodes = check_graph(graph, artifact.tensors, limits)
        self.operators: tuple[str, ...] = tuple(sorted({node.op for node in nodes}))
        self.metadata: dict[str, Any] = artifact.metadata
        self.class_names: tuple[str, ...] = _class_names(artifact.metadata)
        self.checksum: str = artifact.sha256
        self.size_bytes: int = artifact.size_bytes
        (entry,), (exit_,) = graph["inputs"], graph["outputs"]
        self._input_name, self._output_name = entry["name"], exit_["name"]
        self.input_shape, self.input_dtype = check_input(entry, limits)
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
        self._dtypes: dict[str, np.dtype] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self.plan: BufferPlan = self._dry_run(limits)
        self._layers = layer_steps(self._program, self._constants, self._dtypes)
        self._written = written
        self._fuse, self._limits, self._source = fuse, limits, source
        self.protection: Protection = (Protection.from_metadata(artifact.metadata) if protect
                                       else Protection())
        try:
            self._lay_out(self._constants, self._bounded(self.protection.ranges))
        except ValueError as error:
            raise ArtifactError(f"The artifact's protection record does not fit its graph: "
                                f"{error}") from None
        self.scrub_every: int = self.protection.scrub_every
        self.clipped_values = self.faults = self.repairs = 0
        self._since_scrub = 0

    @property
    def peak_buffer_bytes(self) -> int:
        """Planned peak RAM of one batch-1 inference: resident weights + the buffer arena."""
        return self.plan.peak_bytes

    @property
    def resident_tensors(self) -> dict[str, np.ndarray]:
        """The stored tensors after load-time folding, by name, as the program reads them (a
        compact weight decoded into a new array): what the C generator emits."""
        return self._memory.values()

    @property
    def resident_memory(self) -> dict[str, np.ndarray]:
        """The arrays kept in RAM between inferences, in the protection's layout, by name
        (a triplicated table as ``name#copy``, a compact weight as ``name:indices`` and
        ``name:codebook``, range bounds as ``bounds:low``/``bounds:high``): what a single-event
        upset hits. Each owns its bytes and is read by the next inference (the fault
        injector, :mod:`satcompress.radiation`, flips bits in them in place)."""
        return self._memory.arrays

    @property
    def layer_outputs(self) -> tuple[str, ...]:
        """The values layers write (:data:`~satcompress.runtime.protect.LAYER_OPS` nodes with a
        stored weight), in program order: what :meth:`activation_ranges` calibrates."""
        return tuple(self._layers.values())

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
                    self._dtypes[name], self._shapes[name] = value.dtype, value.shape
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
        (Ranger: Chen et al., DSN 2021), NaN becoming ``low``; ``None`` or ``{}`` turns it
        off. The artifact's stored ranges are set so at load.

        Calibrate the bounds with :meth:`activation_ranges` on training inputs. The bounds
        are widened by one float32 step, so a value at a bound after clipping is one that was
        out of range (or NaN). A chunk small enough (a batch-1 inference) copies its bounded
        values into one arena checked once at the end (:class:`~satcompress.runtime.protect.
        RangeCheck`); a larger one, or one whose check fails, checks each value's minimum and
        maximum where it is written and clips one out of range (in place for a layer's
        output, whose kernel made it), counting the values clipped in
        :attr:`clipped_values`.

        Raises
        ------
        ValueError
            If a name is not a float value the program writes.
        """
        self._lay_out(self._memory.values(), self._bounded(bounds or {}))

    def _bounded(self, bounds: Mapping[str, tuple[float, float]]
                 ) -> dict[str, tuple[np.float32, np.float32]]:
        """``bounds`` checked, as float32 one step wider on each side."""
        ranges = {}
        for name, (low, high) in bounds.items():
            if name not in self._written or self._dtypes[name].kind != "f":
                raise ValueError(f"{shown(name)} is not a float value the program writes; "
                                 "range restriction clips the values activation_ranges "
                                 f"calibrates ({', '.join(self.layer_outputs[:12])}).")
            ranges[name] = widened(low, high)
        return ranges

    def _lay_out(self, constants: Mapping[str, np.ndarray],
                 ranges: Mapping[str, tuple[np.float32, np.float32]]) -> None:
        """Hold ``constants`` and the bounds ``ranges`` in resident memory as
        :attr:`protection` says, and clip the values ``ranges`` names."""
        self._memory = ResidentMemory(constants, self._program, ranges, self.protection)
        self._constants = self._memory.constants
        self._gathers: dict[int, RangeCheck | None] = {}
        gathered = self._gather(1)
        self.plan = replace(self.plan, resident_bytes=self._memory.nbytes
                            + (gathered.nbytes if gathered else 0))
        self._checks: list[_Check | None] = [None] * len(self._program)
        for index, (name, (low, _)) in enumerate(ranges.items()):
            node = self._program[self._written[name]]
            rectified = node.op == "Relu" or node.attributes.get("activation") == "Relu"
            self._checks[self._written[name]] = self._range_check(
                index, node.op in _FRESH_OUTPUTS, rectified and low < 0)
        self.clipped_values = 0

    def activation_ranges(self, x: np.ndarray) -> dict[str, tuple[float, float]]:
        """The smallest and largest value of every layer's output (:attr:`layer_outputs`)
        over the inputs ``x`` (e.g. the training split): the bounds of
        :meth:`restrict_activations`."""
        ranges: dict[str, tuple[float, float]] = {}

        def observe(step: int, value: np.ndarray) -> None:
            name = self._layers.get(step)
            if name is not None and value.size:
                low, high = ranges.get(name, (math.inf, -math.inf))
                ranges[name] = (min(low, float(value.min())), max(high, float(value.max())))

        x = self.check_input(x)
        for start in range(0, len(x), CHUNK_EXAMPLES):
            self._run_chunk(x[start : start + CHUNK_EXAMPLES], observe)
        return ranges

    def _gather(self, batch: int) -> RangeCheck | None:
        """The one-pass range check of a chunk of ``batch`` examples (built once per batch
        size), or None where the chunk is too large or a value's shape does not scale with
        the batch (then each value is checked where it is written)."""
        if batch not in self._gathers:
            ranges = self._memory.ranges
            shapes = {name: self._shapes[name] for name in ranges}
            elements = sum(math.prod(shape) for shape in shapes.values())
            fits = (0 < elements * (batch + 2) <= _GATHERED_ELEMENTS
                    and all(shape[:1] == (1,) and self._dtypes[name] == np.float32
                            for name, shape in shapes.items()))
            self._gathers[batch] = RangeCheck(len(self._program), {
                self._written[name]: ((batch, *shapes[name][1:]), low, high)
                for name, (low, high) in ranges.items()}) if fits else None
        return self._gathers[batch]

    def _range_check(self, index: int, in_place: bool, nonnegative: bool) -> _Check:
        """``check(value, lows, highs)``: ``value`` itself when it lies within bounds
        ``index`` (of ``lows`` and ``highs``, the voted bounds as Python floats), else clipped
        (in place when the kernel made it) and counted. A ``nonnegative`` value (a
        rectifier's, whose low bound is below 0) has only its maximum checked.

        The extremes are found by ``argmin``/``argmax`` (which return the first NaN, as
        the ufunc reductions propagate it: NaN fails the comparisons), at half the cost of
        ``np.minimum.reduce`` at a layer output's size, over the value in memory order (a
        view, where a kernel returns a transposed layout: no copy), and compared as Python
        floats, exact for every float dtype."""
        memory = self._memory

        def check(value: np.ndarray, lows: list[float], highs: list[float]) -> np.ndarray:
            flat = value.ravel("K")
            if ((nonnegative or lows[index] <= flat.item(flat.argmin()))
                    and flat.item(flat.argmax()) <= highs[index]):
                return value
            low, high = memory.low[index], memory.high[index]  # clipped to as float32
            value = value if in_place else value.copy()  # another op's output may be a view
            np.fmax(value, low, out=value)
            np.fmin(value, high, out=value)
            self.clipped_values += int(np.count_nonzero(value == low)
                                       + np.count_nonzero(value == high))
            return value

        return check

    def _run_chunk(self, x: np.ndarray,
                   observe: Callable[[int, np.ndarray], None] | None = None,
                   gathered: bool = True) -> np.ndarray:
        """The chunk's logits. With bounds, the values are first copied into the chunk's
        :class:`RangeCheck` and checked once at the end; only if one is out of range (or
        ``gathered`` is False, or there is no such check) is each checked, and clipped, where
        it is written: the same logits either way."""
        memory, checks, decoders = self._memory, self._checks, self._memory.decoders
        gather = (self._gather(len(x)) if gathered and observe is None and memory.ranges
                  else None)
        memory.vote()
        if gather is None and memory.ranges:  # the voted bounds, read once per chunk
            lows, highs = memory.low.tolist(), memory.high.tolist()
        slots = gather.slots if gather is not None else None
        values = {**self._constants, self._input_name: x}
        for step, node in enumerate(self._program):
            arguments = _inputs_of(node, values)
            for position, take, indices, decoded in decoders[step]:
                arguments[position] = take(indices, None, decoded, "wrap")
            outputs = _execute(step, node, arguments)
            if observe is not None:
                observe(step, outputs[0])
            elif slots is not None:
                slot = slots[step]
                if slot is not None:
                    try:  # every value of the output lands in the slot, broadcast or not
                        slot[...] = outputs[0]
                    except ValueError:  # larger than the slot: it does not scale with batch
                        self._gathers[len(x)] = None
                        return self._run_chunk(x, gathered=False)
            elif checks[step] is not None:
                outputs[0] = checks[step](outputs[0], lows, highs)
            values.update(zip(node.outputs, outputs))
            for name in self._freed_after[step]:
                del values[name]
        if gather is not None and not gather.within():
            return self._run_chunk(x, gathered=False)
        return values[self._output_name]

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits (batch, n_classes), float32, for inputs ``x`` of shape (batch, *input_shape),
        after a :meth:`scrub` when ``scrub_every`` examples have run since the last.

        Raises
        ------
        InputError
            If ``x`` is not an array of the model's input shape and dtype, or holds NaN/inf.
        """
        x = self.check_input(x)
        if self.scrub_every and self._since_scrub >= self.scrub_every:
            self.scrub()
        self._since_scrub += len(x)
        return np.concatenate([self._run_chunk(x[start : start + CHUNK_EXAMPLES])
                               for start in range(0, len(x), CHUNK_EXAMPLES)])

    def classify(self, x: np.ndarray) -> Classification:
        """:meth:`run` then :func:`~satcompress.runtime.protect.classify_logits`: a row whose
        logits are not all finite is a fault (predicted ``FAULT``), never a class; the faults
        are added to :attr:`faults`."""
        result = classify_logits(self.run(x))
        self.faults += result.fault_count
        return result

    def scrub(self) -> int:
        """Check the resident memory now: vote the triplicated tables and rewrite a copy that
        differs, compare every other block's CRC32 with its value at load, and reload what
        fails from ``source`` (FEC corrects the file as it is read). Returns the repairs made
        (also added to :attr:`repairs`).

        Raises
        ------
        ArtifactError
            If a block must be reloaded but the runtime has no ``source`` (or it no longer
            holds this artifact).
        """
        repaired = self._memory.scrub(self._reload)
        self.repairs += repaired
        self._since_scrub = 0
        return repaired

    def _reload(self) -> dict[str, np.ndarray]:
        """The artifact's constants after load-time folding, decoded afresh from ``source``."""
        if self._source is None:
            raise ArtifactError("A resident block fails its check but this runtime has no "
                                "source to reload it from; load the artifact with "
                                "satcompress.runtime.load(path or bytes).")
        if isinstance(self._source, (bytes, bytearray, memoryview)):
            artifact = decode_artifact(self._source, limits=self._limits)
        else:
            artifact = read_artifact(Path(self._source), limits=self._limits)
        if artifact.sha256 != self.checksum:
            raise ArtifactError(f"The source {shown(str(self._source))} no longer holds the "
                                "artifact this runtime loaded (its SHA-256 differs); load the "
                                "new artifact instead.")
        return Runtime(artifact, self._fuse, self._limits, protect=False).resident_tensors

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities: softmax of :meth:`run`'s logits, computed in float64; NaN in
        a row that is a fault (:meth:`classify` says which)."""
        return classify_logits(self.run(x)).probabilities


def load(source: str | os.PathLike | bytes, fuse: bool = True, *,
         limits: LoadLimits = LoadLimits(), backend: str = "numpy",
         protect: bool = True) -> Runtime:
    """Verify and load a flight artifact from a path or from its bytes (``fuse``, ``protect``:
    see :class:`Runtime`; the path or bytes are its ``source``), allocating no more than
    ``limits`` allow.

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
        source = bytes(source)
        flight = Runtime(decode_artifact(source, limits=limits), fuse, limits, protect=protect,
                         source=source)
    else:
        flight = Runtime(read_artifact(Path(source), limits=limits), fuse, limits,
                         protect=protect, source=Path(source))
    if backend == "c":
        from satcompress.firmware.host import load_c  # the C backend builds on this runtime

        return load_c(flight)
    return flight
