"""Protection of a loaded model against single-event upsets in its RAM (issue 17). NumPy only.

An artifact compressed with a recipe's ``protect = [...]`` records under its metadata's
``"protection"`` which of :data:`PROTECTIONS` the runtime applies at load (:class:`Protection`;
its bytes are part of the artifact's, hence of ``max_bytes``):

``ranges``
    Range restriction (Ranger: Chen et al., "A low-cost fault corrector for deep neural
    networks through range restriction", DSN 2021): the output of every layer (a
    :data:`LAYER_OPS` node with a stored weight) -- or, where a ``Relu`` alone reads it, the
    ``Relu``'s output, as Ranger clips after the activation -- is clipped in place to its
    ``[low, high]`` over the training split, stored in the artifact; NaN becomes ``low``;
    clipped values are counted.
``tables``
    Triple modular redundancy (Lyons & Vanderkulk, "The use of triple-modular redundancy to
    improve computer reliability", IBM J. Res. Dev. 1962) of the critical tables -- every
    stored tensor that is not a layer's weight (:func:`layer_weights`: biases, scales, zero
    points, normalisation parameters, positional encodings, shapes), every one of at most
    :data:`TABLE_MAX_ELEMENTS` elements, the codebooks of compact weights and the range
    bounds: three copies, voted bitwise (``a & (b | c) | b & c``) into the working copy the
    kernels read before every inference, so one corrupted copy is never used.
``compact``
    Weights with at most :data:`CODEBOOK_MAX` distinct values (clustered) resident as
    ``uint8`` indices into their codebook (a critical table), decoded into one scratch
    buffer before the node that reads them: no float exponent of a large weight stays in
    memory between inferences. An index beyond the codebook wraps around, so with 16
    clusters an upset in an index's upper four bits changes nothing.
``compact-vulnerable``
    ``compact`` for the weights a probe finds vulnerable only (selective hardening: Li et al.,
    "Understanding error propagation in deep learning neural network (DNN) accelerators and
    applications", SC'17): the record names them
    (:func:`satcompress.radiation.protect.vulnerable_weights` chooses them at compress time),
    so the others are not decoded per inference.
``scrub``
    Scrubbing (Saleh, Serrano & Patel, "Reliability of scrubbing recovery-techniques for
    memory systems", IEEE Trans. Reliability 1990) every :data:`DEFAULT_SCRUB_EVERY`
    examples: the copies of the tables are voted and rewritten, and the CRC32 of every other
    resident block is compared with its value at load; a block that fails is reloaded from
    the artifact's bytes, which Reed-Solomon FEC corrects (:mod:`satcompress.artifact.fec`).
    :meth:`satcompress.runtime.Runtime.scrub` does the same on demand, protected or not.

Independently of the artifact, a row of logits that is not finite is a fault, never a class:
:func:`classify_logits` (and :meth:`satcompress.runtime.Runtime.classify`) reports it as
:data:`FAULT`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from satcompress.artifact import ArtifactError
from satcompress.artifact.errors import shown
from satcompress.runtime.graph import Node

__all__ = ["CODEBOOK_MAX", "DEFAULT_SCRUB_EVERY", "FAULT", "LAYER_OPS", "PROTECTIONS",
           "TABLE_MAX_ELEMENTS", "Classification", "Protection", "RangeCheck",
           "ResidentMemory", "classify_logits", "compact_form", "layer_steps", "layer_weights",
           "widened"]

PROTECTIONS = ("ranges", "tables", "compact", "compact-vulnerable", "scrub")
"""What a recipe's ``protect`` list may name (see the module docstring)."""

DEFAULT_SCRUB_EVERY = 100
"""Examples between two scrubs of an artifact protected with ``scrub``."""

TABLE_MAX_ELEMENTS = 1024
"""A stored tensor of at most this many elements is a critical table (``tables``), even a
layer's weight."""

CODEBOOK_MAX = 256
"""Most distinct values of a weight held as ``uint8`` indices (``compact``)."""

LAYER_OPS = frozenset({"Gemm", "MatMul", "MatMulAdd", "Conv", "QuantGemm", "QuantConv"})
"""Operators whose output is a layer's (when one of their inputs is a stored weight): where
``ranges`` clips. Their kernels return new arrays, so clipping in place touches nothing else."""

FAULT = -1
"""The predicted class of a row whose logits are not all finite."""

_REBUILD = ("rebuild it with `satcompress compress` (a recipe's protect = [...]) or load it "
            "with protect=False")
_ALIGN = 8
"""Bytes each table starts on in the triplicated arena (its widest dtype)."""
_NAME_MAX = 256
"""Longest weight name a protection record may list."""


@dataclass(frozen=True)
class Protection:
    """What the runtime applies at load (see the module docstring): the ``ranges`` by layer
    output (``{value: (low, high)}``), ``tables``, ``compact`` (True: every weight it can
    hold so; a tuple: the weights it names, ``compact-vulnerable``), and ``scrub_every``
    examples between scrubs (0: on demand only)."""

    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    tables: bool = False
    compact: bool | tuple[str, ...] = False
    scrub_every: int = 0

    @property
    def names(self) -> tuple[str, ...]:
        """The :data:`PROTECTIONS` this applies, in their order."""
        on = {"ranges": bool(self.ranges), "tables": self.tables,
              "compact": self.compact is True,
              "compact-vulnerable": isinstance(self.compact, tuple) and bool(self.compact),
              "scrub": self.scrub_every > 0}
        return tuple(name for name in PROTECTIONS if on[name])

    def compacts(self, name: str) -> bool:
        """Whether weight ``name`` is to be held as codebook indices."""
        return self.compact is True or (isinstance(self.compact, tuple) and name in self.compact)

    def to_metadata(self) -> dict[str, Any]:
        """The artifact metadata entry ``"protection"`` that :meth:`from_metadata` reads."""
        return {"ranges": {name: [float(low), float(high)]
                           for name, (low, high) in self.ranges.items()},
                "tables": self.tables,
                "compact": list(self.compact) if isinstance(self.compact, tuple)
                else self.compact, "scrub_every": self.scrub_every}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> "Protection":
        """The protection an artifact's metadata records (none when it records none).

        Raises :class:`~satcompress.artifact.ArtifactError` for a malformed record.
        """
        entry = metadata.get("protection")
        if entry is None:
            return cls()
        if not (isinstance(entry, dict)
                and set(entry) == {"ranges", "tables", "compact", "scrub_every"}):
            raise ArtifactError(f"The artifact's protection record {shown(entry)} does not have "
                                f"exactly ranges, tables, compact and scrub_every; {_REBUILD}.")
        ranges, every = entry["ranges"], entry["scrub_every"]
        compact = entry["compact"]
        flags_ok = isinstance(entry["tables"], bool) and (
            isinstance(compact, bool) or (isinstance(compact, list) and all(
                isinstance(name, str) and len(name) <= _NAME_MAX for name in compact)))
        every_ok = isinstance(every, int) and not isinstance(every, bool) and every >= 0
        if not (isinstance(ranges, dict) and flags_ok and every_ok
                and all(_is_bound(bound) for bound in ranges.values())):
            raise ArtifactError(f"The artifact's protection record {shown(entry)} is malformed "
                                "(ranges must map values to [low, high] finite numbers with "
                                "low <= high, tables be true or false, compact true, false "
                                "or a list of weight names, scrub_every a whole number >= 0); "
                                f"{_REBUILD}.")
        return cls({name: (float(low), float(high)) for name, (low, high) in ranges.items()},
                   entry["tables"], tuple(compact) if isinstance(compact, list) else compact,
                   every)


def _is_bound(bound: Any) -> bool:
    return (isinstance(bound, list) and len(bound) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    for v in bound) and bound[0] <= bound[1])


@dataclass(frozen=True)
class Classification:
    """A batch classified: ``probabilities`` (batch, classes) float64, ``predicted`` class
    indices, and ``faults``: the rows whose logits were not all finite, whose prediction is
    :data:`FAULT` and whose probabilities are NaN -- a fault, never a class."""

    probabilities: np.ndarray
    predicted: np.ndarray
    faults: np.ndarray

    @property
    def fault_count(self) -> int:
        """Rows that are faults."""
        return int(np.count_nonzero(self.faults))


def classify_logits(logits: np.ndarray) -> Classification:
    """Softmax (in float64) and arg-max of ``logits`` (batch, classes), a row with a NaN or
    an infinity reported as a fault (:class:`Classification`). Any backend's logits."""
    logits = np.asarray(logits, dtype=np.float64)
    faults = ~np.isfinite(logits).all(axis=1)
    with np.errstate(all="ignore"):
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    probabilities[faults] = np.nan
    predicted = np.where(faults, FAULT, np.nan_to_num(probabilities).argmax(axis=1))
    return Classification(probabilities, predicted, faults)


def widened(low: float, high: float) -> tuple[np.float32, np.float32]:
    """A stored range ``[low, high]`` as the runtime and the generated C clip to it: float32,
    one step wider on each side, so a value at a bound after clipping is one that was out of
    range (or NaN)."""
    return (np.nextafter(np.float32(low), np.float32(-np.inf)),
            np.nextafter(np.float32(high), np.float32(np.inf)))


def layer_steps(program: Sequence[Node], constants: Mapping[str, np.ndarray],
                dtypes: Mapping[str, np.dtype]) -> dict[int, str]:
    """Step -> the float value range restriction bounds, for every layer of ``program`` (a
    :data:`LAYER_OPS` node that reads a stored weight, ``constants``): its output, or the
    output of the ``Relu`` that alone reads it."""
    readers: dict[str, list[int]] = {}
    for step, node in enumerate(program):
        for name in node.inputs:
            readers.setdefault(name, []).append(step)
    steps = {}
    for step, node in enumerate(program):
        if (node.op in LAYER_OPS and node.outputs and dtypes[node.outputs[0]].kind == "f"
                and any(name in constants for name in node.inputs[1:])):
            (reader, *others) = readers.get(node.outputs[0], [None])
            if reader is not None and not others and program[reader].op == "Relu":
                step, node = reader, program[reader]
            steps[step] = node.outputs[0]
    return steps


def layer_weights(program: Sequence[Node], constants: Mapping[str, np.ndarray]) -> set[str]:
    """The stored tensors of two or more dimensions that a :data:`LAYER_OPS` node reads (its
    weight matrix or kernel) or a ``Gather`` selects from (an embedding table)."""
    return {name for node in program
            for position, name in enumerate(node.inputs)
            if name in constants and constants[name].ndim >= 2
            and (node.op in LAYER_OPS or (node.op == "Gather" and position == 0))}


class RangeCheck:
    """The bounded values of one chunk gathered into one arena and checked in one pass.

    Built from ``points``: step -> (the value's shape for this chunk, low, high). ``slots``
    (by step; None for other steps) are where the runtime copies each value; :meth:`within`
    then says whether every value lies strictly between its (widened) bounds -- NaN does not
    -- in three NumPy calls, however many values there are. When it does not, the runtime
    runs the chunk again clipping each value where it is written.
    """

    def __init__(self, steps: int, points: Mapping[int, tuple[tuple[int, ...], float, float]]
                 ) -> None:
        sizes = {step: math.prod(shape) for step, (shape, _, _) in points.items()}
        total = sum(sizes.values())
        self.arena = np.empty(total, np.float32)
        self.slots: list[np.ndarray | None] = [None] * steps
        offset = 0
        for step, (shape, _, _) in points.items():
            self.slots[step] = self.arena[offset : offset + sizes[step]].reshape(shape)
            offset += sizes[step]
        counts = list(sizes.values())
        self._low = np.repeat(np.array([low for _, low, _ in points.values()], np.float32),
                              counts)
        self._high = np.repeat(np.array([high for _, _, high in points.values()], np.float32),
                               counts)
        self._flags = np.empty(2 * total, bool)
        self._above, self._below = self._flags[:total], self._flags[total:]

    @property
    def nbytes(self) -> int:
        """Bytes of the arena, its bounds and the comparison buffers."""
        return sum(array.nbytes for array in (self.arena, self._low, self._high, self._flags))

    def within(self) -> bool:
        """Whether every gathered value lies strictly between its bounds (the first False
        flag, by ``argmin``, is False)."""
        np.greater(self.arena, self._low, self._above)
        np.less(self.arena, self._high, self._below)
        return self._flags.item(self._flags.argmin())


class _Triplicated:
    """Small tables in three copies (``copies``, 8-byte words), voted into ``working``, whose
    typed ``views`` the kernels read."""

    def __init__(self, tables: Mapping[str, np.ndarray]) -> None:
        self._layout: dict[str, tuple[int, np.dtype, tuple[int, ...]]] = {}
        end = 0
        for name, value in tables.items():
            self._layout[name] = (end, value.dtype, value.shape)
            end += -(-value.nbytes // _ALIGN) * _ALIGN
        self.working = np.zeros(max(1, end // _ALIGN), np.uint64)
        self.views = self._views(self.working)
        for name, value in tables.items():
            self.views[name][...] = value
        self.copies = tuple(self.working.copy() for _ in range(3))
        self._scratch = np.empty_like(self.working)
        self.crc = zlib.crc32(self.working)

    def _views(self, words: np.ndarray) -> dict[str, np.ndarray]:
        raw = words.view(np.uint8)
        return {name: raw[offset : offset + dtype.itemsize * math.prod(shape)].view(dtype)
                .reshape(shape) for name, (offset, dtype, shape) in self._layout.items()}

    def copy_views(self) -> dict[str, np.ndarray]:
        """Every table in every copy, as ``name#copy``: the resident memory."""
        return {f"{name}#{k}": view for k, copy in enumerate(self.copies)
                for name, view in self._views(copy).items()}

    def vote(self) -> None:
        """Bitwise majority of the three copies into the working copy: the first copy when
        it equals the second, as it nearly always does (one byte comparison and one copy,
        a third of the four bitwise passes' time)."""
        a, b, c = self.copies
        if a.tobytes() == b.tobytes():
            np.copyto(self.working, a)
            return
        np.bitwise_or(b, c, out=self.working)
        np.bitwise_and(self.working, a, out=self.working)
        np.bitwise_and(b, c, out=self._scratch)
        np.bitwise_or(self.working, self._scratch, out=self.working)

    def write(self, name: str, value: np.ndarray) -> None:
        """Set table ``name`` in every copy (and the checksum)."""
        for words in (self.working, *self.copies):
            self._views(words)[name][...] = value
        self.crc = zlib.crc32(self.working)

    def scrub(self) -> tuple[int, bool]:
        """Vote, rewrite the copies that differ; (copies repaired, whether the voted tables
        still match their checksum: two copies wrong in the same bit do not)."""
        self.vote()
        repaired = 0
        for copy in self.copies:
            if not np.array_equal(copy, self.working):
                copy[...] = self.working
                repaired += 1
        return repaired, zlib.crc32(self.working) == self.crc


def compact_form(value: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(codebook, uint8 indices) of a layer weight ``compact`` holds as indices -- float32,
    over :data:`TABLE_MAX_ELEMENTS` elements (a smaller one is a table), at most
    :data:`CODEBOOK_MAX` distinct values -- bit for bit; None for any other."""
    if value.dtype != np.float32 or value.size <= TABLE_MAX_ELEMENTS:
        return None
    codes, indices = np.unique(value.view(np.uint32), return_inverse=True)
    if len(codes) > CODEBOOK_MAX:
        return None
    return codes.view(np.float32), indices.reshape(value.shape).astype(np.uint8)


class ResidentMemory:
    """What a loaded model keeps in RAM between inferences, laid out as ``protection`` says.

    ``constants`` are what the program reads by name (a table: its voted working copy; a
    compact weight: its indices, decoded per use by the steps ``decoders`` lists);
    ``arrays`` is the memory itself by name, each array owning its bytes (an upset hits
    these); ``low`` and ``high`` hold the bounds of the values ``ranges`` names, in its
    order (in the tables when they are triplicated); ``ranges`` is kept to rebuild them.
    """

    def __init__(self, constants: Mapping[str, np.ndarray], program: Sequence[Node],
                 ranges: Mapping[str, tuple[float, float]], protection: Protection) -> None:
        self.ranges = dict(ranges)
        owned = {name: np.array(value, order="C", copy=True) for name, value in constants.items()}
        bounds = {"bounds:low": np.array([low for low, _ in ranges.values()], np.float32),
                  "bounds:high": np.array([high for _, high in ranges.values()], np.float32)}
        bounds = bounds if ranges else {}
        weights = layer_weights(program, owned)
        compact = {}
        if protection.compact:
            for name in (name for name in owned if name in weights and protection.compacts(name)):
                form = compact_form(owned[name])
                if form is not None:
                    compact[name] = form
        codebooks = {f"{name}:codebook": codebook for name, (codebook, _) in compact.items()}
        if protection.tables:
            critical = {name: value for name, value in owned.items() if name not in compact
                        and (value.size <= TABLE_MAX_ELEMENTS or name not in weights)}
            self._tables = _Triplicated({**critical, **codebooks, **bounds})
            working = self._tables.views
        else:
            self._tables, working = None, {}
        candidates = {**{name: value for name, value in owned.items() if name not in compact},
                      **{f"{name}:indices": indices for name, (_, indices) in compact.items()},
                      **codebooks, **bounds}
        self._blocks = {name: value for name, value in candidates.items() if name not in working}
        self._crc = {name: zlib.crc32(block) for name, block in self._blocks.items()}
        resident = {**self._blocks, **working}
        self._codebooks = {name: resident[f"{name}:codebook"] for name in compact}
        empty = np.empty(0, np.float32)
        self.low = resident.get("bounds:low", empty)
        self.high = resident.get("bounds:high", empty)
        self.constants = {name: resident[name] for name in owned if name not in compact}
        self.constants.update({name: resident[f"{name}:indices"] for name in compact})
        self.decoders, self._scratch = self._decoders(program, compact)

    def _decoders(self, program: Sequence[Node], compact: Mapping[str, tuple]
                  ) -> tuple[list[list[tuple]], list[np.ndarray]]:
        """Per step, (input position, the codebook's ``take``, indices, output) of every
        compact weight it reads, decoded into scratch buffers shared by all steps (one per
        input position): ``take(indices, None, output, "wrap")`` decodes one. The codebook's
        own bound method, called positionally, skips ``np.take``'s dispatch, which costs
        more than decoding a small matrix (benchmarks/README.md, "Radiation: protection")."""
        sizes: dict[int, int] = {}
        for node in program:
            for position, name in enumerate(node.inputs):
                if name in compact:
                    sizes[position] = max(sizes.get(position, 0), compact[name][1].size)
        scratch = {position: np.empty(size, np.float32) for position, size in sizes.items()}
        decoders = [[(position, self._codebooks[name].take, self.constants[name],
                      scratch[position][: compact[name][1].size].reshape(compact[name][1].shape))
                     for position, name in enumerate(node.inputs) if name in compact]
                    for node in program]
        return decoders, list(scratch.values())

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The resident memory by name (a triplicated table as ``name#copy``)."""
        copies = self._tables.copy_views() if self._tables else {}
        return {**self._blocks, **copies}

    @property
    def nbytes(self) -> int:
        """Resident bytes: the blocks, the tables' three copies and working copy, and the
        compact weights' decoding scratch."""
        tables = 4 * self._tables.working.nbytes if self._tables else 0
        return (sum(block.nbytes for block in self._blocks.values()) + tables
                + sum(buffer.nbytes for buffer in self._scratch))

    def values(self) -> dict[str, np.ndarray]:
        """The constants as the program uses them, compact weights decoded (new arrays)."""
        return {**self.constants, **{name: codebook[self.constants[name]]
                                     for name, codebook in self._codebooks.items()}}

    def vote(self) -> None:
        """Before an inference: the tables' majority into their working copy."""
        if self._tables is not None:
            self._tables.vote()

    def _stored(self, name: str, fresh: Mapping[str, np.ndarray]) -> np.ndarray:
        """Block or table ``name`` as it was at load, from the constants ``fresh``."""
        if name.startswith("bounds:"):
            side = int(name == "bounds:high")
            return np.array([bound[side] for bound in self.ranges.values()], np.float32)
        base, _, part = name.rpartition(":")
        if part in ("indices", "codebook") and base in self._codebooks:
            codebook, indices = compact_form(fresh[base])
            return indices if part == "indices" else codebook
        return fresh[name]

    def scrub(self, reload: Callable[[], Mapping[str, np.ndarray]]) -> int:
        """Vote and repair the tables' copies, re-check every block's CRC32, and rewrite from
        ``reload()`` (the artifact's constants, decoded afresh) what fails; the repairs made."""
        repaired, intact = self._tables.scrub() if self._tables else (0, True)
        failed = [name for name, block in self._blocks.items()
                  if zlib.crc32(block) != self._crc[name]]
        if not failed and intact:
            return repaired
        fresh = reload()
        for name in failed:
            self._blocks[name][...] = self._stored(name, fresh)
        if not intact:
            for name in self._tables.views:
                self._tables.write(name, self._stored(name, fresh))
        return repaired + len(failed) + (not intact)
