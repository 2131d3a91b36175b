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

Each buffer is compared only with the buffers alive at a common step (found from the
lifetimes sorted by first step), so planning costs O(n log n + p log p) for n buffers and p
such pairs: linear in a graph's length, where a value lives a few steps. Past
:data:`MAX_OVERLAPS` pairs (thousands of values alive at once, which no flight model has:
a crafted graph) every buffer gets memory of its own instead, stacked in the same order: a
valid plan, in linear time, whose arena is the total size.

The plan's peak is ``resident_bytes + arena_bytes``: the decoded weights the runtime keeps plus
the arena. ``peak_live_bytes`` (the largest total of buffers alive at one step) is the lower
bound any offset assignment must reach.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

__all__ = ["ALIGNMENT", "MAX_OVERLAPS", "Lifetime", "PlannedBuffer", "BufferPlan", "plan_buffers"]

ALIGNMENT = 16
"""Every buffer starts at a multiple of this many bytes (SIMD loads need aligned data)."""

MAX_OVERLAPS = 2**20
"""Pairs of buffers alive at a common step up to which buffers are placed greedy by size."""


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


def _overlapping(lifetimes: Sequence[Lifetime]) -> list[list[int]] | None:
    """For every buffer, the indices of the others alive at a common step; None when there
    are more than :data:`MAX_OVERLAPS` such pairs.

    Two lifetimes overlap when the later-starting one starts at or before the other's last
    step, so in the order of first steps a buffer's later partners are a contiguous run,
    found by bisection.
    """
    order = sorted(range(len(lifetimes)), key=lambda index: lifetimes[index].first)
    firsts = [lifetimes[index].first for index in order]
    ends = [bisect_right(firsts, lifetimes[index].last) for index in order]
    if sum(max(0, end - rank - 1) for rank, end in enumerate(ends)) > MAX_OVERLAPS:
        return None
    partners: list[list[int]] = [[] for _ in lifetimes]
    for rank, end in enumerate(ends):
        index = order[rank]
        for other in order[rank + 1:end]:
            partners[index].append(other)
            partners[other].append(index)
    return partners


def _peak_live(placed: Sequence[PlannedBuffer]) -> tuple[int, int]:
    """(largest total size alive at one step, the first step reaching it), by one sweep."""
    change: dict[int, int] = {}
    for buffer in placed:
        change[buffer.first] = change.get(buffer.first, 0) + buffer.size
        change[buffer.last + 1] = change.get(buffer.last + 1, 0) - buffer.size
    steps = sorted(change)
    live = dict(zip(steps, accumulate(change[step] for step in steps)))
    starts = sorted({buffer.first for buffer in placed})
    return max(((live[step], step) for step in starts), default=(0, 0),
               key=lambda pair: (pair[0], -pair[1]))


def plan_buffers(lifetimes: Sequence[Lifetime], resident_bytes: int = 0) -> BufferPlan:
    """Place buffers in one arena, greedy by size (see the module docstring).

    Ties between equal sizes are broken by first step, then name, so the plan is reproducible.
    """
    order = sorted(range(len(lifetimes)),
                   key=lambda index: (-lifetimes[index].nbytes, lifetimes[index].first,
                                      lifetimes[index].name))
    sizes = [_aligned(lifetime.nbytes) for lifetime in lifetimes]
    offsets: list[int | None] = [None] * len(lifetimes)
    partners = _overlapping(lifetimes)
    stacked = 0
    for index in order:
        if partners is None:  # too many overlaps to search: memory of its own
            offsets[index], stacked = stacked, stacked + sizes[index]
            continue
        offset, size = 0, sizes[index]
        for other_offset, other_size in sorted(
                (offsets[other], sizes[other]) for other in partners[index]
                if offsets[other] is not None):
            if offset + size <= other_offset:
                break
            offset = max(offset, other_offset + other_size)
        offsets[index] = offset
    placed = [PlannedBuffer(lifetimes[index].name, lifetimes[index].nbytes,
                            lifetimes[index].first, lifetimes[index].last, offsets[index],
                            sizes[index]) for index in order]
    peak_live, peak_step = _peak_live(placed)
    arena = max((b.offset + b.size for b in placed), default=0)
    return BufferPlan(tuple(placed), int(resident_bytes), arena, peak_live, peak_step)
