"""Canonical Huffman coding: exact round trips, the entropy bound, optimality, stored format."""

from __future__ import annotations

import heapq
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy

from satcompress.entropy import (
    EncodedStream,
    canonical_codes,
    huffman_code_lengths,
    huffman_decode,
    huffman_encode,
    shannon_entropy_bits,
)

RNG = np.random.default_rng(0)
CASES = {
    "uniform": RNG.integers(0, 16, 5000).astype(np.uint8),
    "skewed": np.minimum(RNG.geometric(0.35, 20000), 40).astype(np.int16),
    "very skewed": (RNG.random(3000) < 0.02).astype(np.int64),
    "dyadic": np.repeat(np.arange(4), [512, 256, 128, 128]).astype(np.int32),
    "signed": RNG.integers(-7, 8, 999).astype(np.int8),
    "one symbol": np.full(17, 5, dtype=np.uint16),
    "empty": np.zeros(0, dtype=np.uint8),
    "two-dimensional": RNG.integers(0, 5, (30, 40)),
}


def _huffman_cost_oracle(counts: np.ndarray) -> int:
    """Bits of an optimal prefix code: the sum of the merged weights of Huffman's algorithm."""
    heap = [int(c) for c in counts if c > 0]
    if len(heap) == 1:
        return heap[0]
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        total += merged
        heapq.heappush(heap, merged)
    return total


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip_is_exact_and_survives_serialisation(name):
    symbols = CASES[name]
    stream = huffman_encode(symbols)
    decoded = huffman_decode(stream)
    assert decoded.dtype == symbols.dtype and np.array_equal(decoded, symbols.ravel())
    content = stream.to_bytes()
    assert len(content) == stream.nbytes
    assert np.array_equal(huffman_decode(EncodedStream.from_bytes(content)), symbols.ravel())


@pytest.mark.parametrize("name", sorted(set(CASES) - {"empty", "one symbol"}))
def test_code_is_optimal_and_within_one_bit_per_symbol_of_the_entropy(name):
    symbols = CASES[name].ravel()
    stream = huffman_encode(symbols)
    entropy = shannon_entropy_bits(symbols)
    n = symbols.size
    assert n * entropy - 1e-6 <= stream.bit_count <= n * (entropy + 1)
    counts = np.unique(symbols, return_counts=True)[1]
    assert stream.bit_count == _huffman_cost_oracle(counts)
    assert len(stream.bitstream) == -(-stream.bit_count // 8)


def test_dyadic_frequencies_code_at_exactly_the_entropy():
    symbols = CASES["dyadic"]
    assert huffman_encode(symbols).bit_count == symbols.size * shannon_entropy_bits(symbols)


@pytest.mark.parametrize("name", ["uniform", "skewed", "signed"])
def test_entropy_matches_scipy(name):
    _, counts = np.unique(CASES[name], return_counts=True)
    assert np.isclose(shannon_entropy_bits(CASES[name]), scipy_entropy(counts, base=2))


def test_canonical_codes_are_prefix_free_and_follow_length_then_symbol_order():
    counts = np.array([10, 0, 3, 3, 1, 1, 40, 2])
    lengths = huffman_code_lengths(counts)
    assert lengths[1] == 0 and (lengths[counts > 0] > 0).all()
    assert np.sum(2.0 ** -lengths[lengths > 0].astype(float)) == 1.0  # Kraft equality: a full code
    codes = canonical_codes(lengths)
    words = {s: format(int(codes[s]), f"0{lengths[s]}b") for s in np.flatnonzero(lengths)}
    for a in words:
        for b in words:
            assert a == b or not words[b].startswith(words[a])
    ordered = sorted(words, key=lambda s: (lengths[s], s))
    values = [int(words[s].ljust(int(lengths.max()), "0"), 2) for s in ordered]
    assert values == sorted(values) and len(set(values)) == len(values)


def test_table_stores_one_length_per_value_of_the_range():
    stream = huffman_encode(np.array([3, 9, 9, 9], dtype=np.int64))
    assert stream.low_symbol == 3 and len(stream.code_lengths) == 7
    assert stream.nbytes == stream.table_nbytes + len(stream.bitstream)


def test_non_integer_and_sparse_alphabets_are_refused_with_a_hint():
    with pytest.raises(ValueError, match="np.unique"):
        huffman_encode(np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="np.unique"):
        huffman_encode(np.array([0, 2**40]))


def test_truncated_streams_are_detected():
    content = huffman_encode(CASES["uniform"]).to_bytes()
    with pytest.raises(ValueError, match="truncated"):
        EncodedStream.from_bytes(content[:-10])


def test_entropy_package_never_imports_torch():
    code = (
        "import sys, satcompress.entropy\n"
        "print(sum(m == 'torch' or m.startswith('torch.') for m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "0"
