"""Zero run lengths (Deep Compression's relative indices with filler entries)."""

from __future__ import annotations

import numpy as np
import pytest

from satcompress.entropy import (
    decode_zero_runs,
    encode_zero_runs,
    huffman_encode,
    run_length_decode_zeros,
    run_length_encode_zeros,
)


def test_long_gaps_are_bridged_by_filler_entries():
    values = np.zeros(15, dtype=np.int64)
    values[3], values[12] = 5, 7
    runs = run_length_encode_zeros(values, max_run=7)
    assert runs.runs.tolist() == [3, 7, 0]  # the gap of 8 zeros: a filler (7, 0), then (0, 7)
    assert runs.values.tolist() == [5, 0, 7]
    assert np.array_equal(run_length_decode_zeros(runs), values)


@pytest.mark.parametrize("density", [0.0, 0.01, 0.3, 1.0])
@pytest.mark.parametrize("max_run", [1, 3, 255])
def test_round_trip_is_exact(density, max_run):
    rng = np.random.default_rng(0)
    values = np.where(rng.random((20, 37)) < density, rng.integers(1, 9, (20, 37)), 0)
    runs = run_length_encode_zeros(values, max_run=max_run)
    assert (runs.runs <= max_run).all()
    assert np.array_equal(run_length_decode_zeros(runs), values.ravel())
    encoded = encode_zero_runs(values, max_run=max_run)
    assert np.array_equal(decode_zero_runs(encoded), values.ravel())


def test_any_symbol_can_play_zero():
    values = np.array([2, 2, 0, 2, 1, 2, 2, 2], dtype=np.uint8)
    runs = run_length_encode_zeros(values, zero=2)
    assert runs.runs.tolist() == [2, 1] and runs.values.tolist() == [0, 1]
    assert np.array_equal(run_length_decode_zeros(runs), values)


def test_run_lengths_beat_plain_huffman_on_very_sparse_symbols():
    rng = np.random.default_rng(1)
    values = np.where(rng.random(20000) < 0.03, rng.integers(1, 16, 20000), 0)
    assert encode_zero_runs(values).nbytes < huffman_encode(values).nbytes


def test_bad_max_run_is_refused():
    with pytest.raises(ValueError, match="max_run"):
        run_length_encode_zeros(np.zeros(3, dtype=np.int64), max_run=0)
