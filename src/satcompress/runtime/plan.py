"""Memory planned ahead: buffer lifetimes, and offsets in one arena, for a batch-1 inference.

Every value the graph computes (and the input, and each operator's scratch workspace) gets
its own buffer, alive from the step that writes it to the last step that reads it (graph
outputs to the end). Buffers whose lifetimes do not overlap share memory: each is assigned an
offset in one arena by the "greedy by size" strategy (Pisarchyk & Lee 2020, "Efficient memory
management for deep neural net inference", section 4.2; also TensorFlow Lite Micro's
``GreedyMemoryPlanner``): largest buffer first, each at the lowest offset where it overlaps no
already placed buffer that is alive at the same time. Sizes are rounded up to
:data:`ALIGNMENT` bytes. Views (e.g. of a Reshape) are not aliased, so the plan is an upper
bound of what in-place execution needs.

The plan's peak is ``resident_bytes + arena_bytes``: the decoded weights the runtime keeps plus
the arena. ``peak_live_bytes`` (the largest total of buffers alive at one step) is the lower
bound any offset assignment must reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ALIGNMENT", "Lifetime", "PlannedBuffer", "BufferPlan", "plan_buffers"]

ALIGNMENT = 16
"""Every buffer starts at a multiple of this many bytes (SIMD loads need aligned data)."""


@dataclass(frozen=True)
class Lifetime:
    """A buffer of ``nbytes`` alive from step ``first`` to step ``last`` (inclusive)."""

    name: str
    nbytes: int
    first: int
    last: int


@dataclass(frozen=True)
class PlannedBuffer:
    """A buffer's lifetime and its place in the arena (``offset``, aligned ``size``)."""

    name: str
    nbytes: int
    first: int
    last: int
    offset: int
    size: int

    def overlaps_in_time(self, other: "PlannedBuffer | Lifetime") -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class BufferPlan:
    """Where every buffer of one batch-1 inference lives, and the memory that takes.

    Attributes
    ----------
    buffers : tuple of PlannedBuffer
        In placement order (largest first).
    resident_bytes : int
        Decoded weights and other constants, resident for the whole inference.
    arena_bytes : int
        Size of the arena all buffers are placed in.
    peak_live_bytes : int
        Largest total (aligned) size of buffers alive at one step.
    peak_step : int
        The step at which that total is reached.
    """

    buffers: tuple[PlannedBuffer, ...]
    resident_bytes: int
    arena_bytes: int
    peak_live_bytes: int
    peak_step: int

    @property
    def peak_bytes(self) -> int:
        """Resident constants + the arena: the RAM one batch-1 inference needs."""
        return self.resident_bytes + self.arena_bytes

    def to_dict(self) -> dict:
        """JSON-able summary (without the per-buffer list)."""
        return {"peak_bytes": self.peak_bytes, "resident_bytes": self.resident_bytes,
                "arena_bytes": self.arena_bytes, "peak_live_bytes": self.peak_live_bytes,
                "peak_step": self.peak_step, "buffers": len(self.buffers)}


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGNMENT) * ALIGNMENT


def plan_buffers(lifetimes: Sequence[Lifetime], resident_bytes: int = 0) -> BufferPlan:
    """Place buffers in one arena, greedy by size (see the module docstring).

    Ties between equal sizes are broken by first step, then name, so the plan is reproducible.
    """
    placed: list[PlannedBuffer] = []
    for lifetime in sorted(lifetimes, key=lambda b: (-b.nbytes, b.first, b.name)):
        size = _aligned(lifetime.nbytes)
        offset = 0
        for other in sorted((b for b in placed if b.overlaps_in_time(lifetime)),
                            key=lambda b: b.offset):
            if offset + size <= other.offset:
                break
            offset = max(offset, other.offset + other.size)
        placed.append(PlannedBuffer(lifetime.name, lifetime.nbytes, lifetime.first,
                                    lifetime.last, offset, size))
    steps = sorted({b.first for b in placed})
    live = [(sum(b.size for b in placed if b.first <= step <= b.last), step) for step in steps]
    peak_live, peak_step = max(live, default=(0, 0), key=lambda pair: (pair[0], -pair[1]))
    arena = max((b.offset + b.size for b in placed), default=0)
    return BufferPlan(tuple(placed), int(resident_bytes), arena, peak_live, peak_step)
