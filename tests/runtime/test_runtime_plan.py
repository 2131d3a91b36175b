"""The memory plan: lifetimes from the graph, greedy-by-size offsets, peak = weights + arena,
planned in time linear in a graph's length."""

from __future__ import annotations

import time

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from satcompress import runtime
from satcompress.pipeline.flight import build_artifact
from satcompress.runtime.plan import MAX_OVERLAPS, Lifetime, plan_buffers


def test_peak_buffer_bytes_of_a_two_layer_model_equals_the_hand_computed_plan(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    build_artifact(model, torch.zeros(1, 4), {"task": "tiny"}, tmp_path / "m.sca")
    flight = runtime.load(tmp_path / "m.sca")
    # Steps: 0 Gemm x -> h (x 16 B, h 32 B), 1 Relu h -> r (32 B), 2 Gemm r -> logits (12 -> 16 B).
    # Alive at step 0: x + h = 48; step 1: h + r = 64; step 2: r + logits = 48.
    # Greedy by size: h at 0, r at 32 (overlaps h), x at 32 (overlaps h, not r), logits at 0.
    weights = (8 * 4 + 8 + 3 * 8 + 3) * 4
    assert flight.plan.resident_bytes == weights == 268
    assert flight.plan.peak_live_bytes == 64 and flight.plan.peak_step == 1
    assert flight.plan.arena_bytes == 64
    assert flight.peak_buffer_bytes == 268 + 64
    offsets = {buffer.nbytes: buffer.offset for buffer in flight.plan.buffers if buffer.nbytes != 32}
    assert offsets == {16: 32, 12: 0}


def test_buffers_alive_at_the_same_step_never_share_memory():
    lifetimes = [Lifetime("a", 100, 0, 2), Lifetime("b", 40, 1, 3), Lifetime("c", 60, 3, 4),
                 Lifetime("d", 10, 2, 2), Lifetime("e", 200, 4, 5)]
    plan = plan_buffers(lifetimes)
    for first in plan.buffers:
        for second in plan.buffers:
            if first is not second and first.overlaps_in_time(second):
                assert (first.offset + first.size <= second.offset
                        or second.offset + second.size <= first.offset)
    assert plan.peak_live_bytes <= plan.arena_bytes
    assert all(buffer.offset % 16 == 0 and buffer.size % 16 == 0 for buffer in plan.buffers)


def test_time_disjoint_buffers_reuse_the_same_memory():
    plan = plan_buffers([Lifetime("a", 64, 0, 1), Lifetime("b", 64, 2, 3)], resident_bytes=10)
    assert plan.arena_bytes == 64 and plan.peak_bytes == 74


def test_a_quantized_layer_plans_its_int32_accumulator_and_uint8_activation(tmp_path):
    from conftest import make_blobs

    from satcompress import stages

    torch.manual_seed(0)
    float_model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    config = stages.load_builtin_stages()["post_training_quantize"](quantize_activations=True)
    model = stages.apply(float_model, config, make_blobs())
    build_artifact(model, torch.zeros(1, 6), {"task": "tiny"}, tmp_path / "m.sca")
    plan = runtime.load(tmp_path / "m.sca").plan
    sizes = sorted(buffer.nbytes for buffer in plan.buffers)
    # x 24, q(x) 6 (uint8), int32 accumulators 32 and 12, h 32, relu 32, q(relu) 8 (uint8), logits 12
    assert sizes == [6, 8, 12, 12, 24, 32, 32, 32]


def greedy_by_size_reference(lifetimes: list[Lifetime]) -> list[tuple[str, int]]:
    """The placement, written the obvious quadratic way: (name, offset) in placement order."""
    placed: list[tuple[Lifetime, int, int]] = []
    for lifetime in sorted(lifetimes, key=lambda b: (-b.nbytes, b.first, b.name)):
        size, offset = -(-lifetime.nbytes // 16) * 16, 0
        alive = [(o, s) for other, o, s in placed
                 if other.first <= lifetime.last and lifetime.first <= other.last]
        for other_offset, other_size in sorted(alive):
            if offset + size <= other_offset:
                break
            offset = max(offset, other_offset + other_size)
        placed.append((lifetime, offset, size))
    return [(lifetime.name, offset) for lifetime, offset, _ in placed]


LIFETIME = st.tuples(st.integers(0, 200), st.integers(0, 12), st.integers(0, 4))


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.lists(LIFETIME, max_size=40))
def test_the_plan_is_greedy_by_size_exactly(drawn):
    lifetimes = [Lifetime(f"b{i}", nbytes, first, first + length)
                 for i, (nbytes, first, length) in enumerate(drawn)]
    plan = plan_buffers(lifetimes)
    assert [(b.name, b.offset) for b in plan.buffers] == greedy_by_size_reference(lifetimes)
    live = [sum(b.size for b in plan.buffers if b.first <= step <= b.last)
            for step in sorted({b.first for b in plan.buffers})]
    assert plan.peak_live_bytes == max(live, default=0)
    assert plan.peak_live_bytes <= plan.arena_bytes


def test_planning_is_linear_in_a_long_chain():
    # 200,000 values, each alive for two steps: placed against its 2 neighbours only (the
    # quadratic placement took 24 s for 16,000). The bound is generous: about 2 s here.
    lifetimes = [Lifetime(f"v{step}", 64, step, step + 1) for step in range(200_000)]
    started = time.perf_counter()
    plan = plan_buffers(lifetimes)
    assert time.perf_counter() - started < 30
    assert plan.arena_bytes == plan.peak_live_bytes == 128 and plan.peak_step == 1
    assert {b.offset for b in plan.buffers} == {0, 64}


def test_too_many_overlapping_buffers_are_stacked_in_linear_time():
    # 2,000 buffers alive together: 2 million pairs, beyond MAX_OVERLAPS.
    lifetimes = [Lifetime(f"b{i}", 16 + i % 5, 0, 1) for i in range(2000)]
    assert len(lifetimes) * (len(lifetimes) - 1) // 2 > MAX_OVERLAPS
    plan = plan_buffers(lifetimes)
    ends = sorted((b.offset, b.offset + b.size) for b in plan.buffers)
    assert all(end <= start for (_, end), (start, _) in zip(ends, ends[1:]))
    assert plan.arena_bytes == plan.peak_live_bytes == sum(b.size for b in plan.buffers)
