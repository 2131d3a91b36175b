"""Reed-Solomon protection of a byte stream: reedsolo-compatible codewords, repair of up to
parity / 2 wrong bytes per codeword, and damage beyond that reported, never hidden."""

from __future__ import annotations

import numpy as np
import pytest
import reedsolo

from satcompress.artifact import ArtifactError
from satcompress.artifact.fec import (
    CODEWORD_BYTES,
    FEC_PARITY_BYTES,
    protect,
    protected_size,
    repair,
)

PARITY = FEC_PARITY_BYTES
WIDTH = CODEWORD_BYTES - PARITY


def data_of(size: int) -> bytes:
    return np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("size", [0, 1, WIDTH - 1, WIDTH, WIDTH + 1, 5 * WIDTH + 17])
def test_protect_adds_parity_per_codeword_and_repair_strips_it(size):
    data = data_of(size)
    stream = protect(data, PARITY)
    assert len(stream) == protected_size(size, PARITY) == size + PARITY * -(-size // WIDTH)
    assert stream == bytes(reedsolo.RSCodec(PARITY).encode(data))  # the package's own codewords
    intact = repair(stream, PARITY)
    assert (intact.data, intact.corrected, intact.failed) == (data, 0, ())


def test_overhead_is_parity_over_data_bytes_per_codeword():
    assert protected_size(WIDTH * 100, PARITY) / (WIDTH * 100) - 1 == pytest.approx(8 / 247)


def test_up_to_half_the_parity_wrong_bytes_per_codeword_are_corrected():
    data = data_of(3 * WIDTH + 40)
    stream = bytearray(protect(data, PARITY))
    rng = np.random.default_rng(0)
    for start in range(0, len(stream), CODEWORD_BYTES):  # 4 wrong bytes in every codeword
        length = min(CODEWORD_BYTES, len(stream) - start)
        for position in rng.choice(length, PARITY // 2, replace=False):
            stream[start + position] ^= int(rng.integers(1, 256))
    repaired = repair(bytes(stream), PARITY)
    assert repaired.data == data and repaired.failed == ()
    assert repaired.corrected == 4 * PARITY // 2


def test_a_codeword_beyond_repair_is_reported_and_left_as_read():
    data = data_of(2 * WIDTH + 10)
    stream = bytearray(protect(data, PARITY))
    for position in range(CODEWORD_BYTES + 3, CODEWORD_BYTES + 3 + PARITY):  # 8-byte burst
        stream[position] ^= 0xFF
    stream[5] ^= 0x01  # one upset in the first codeword, still corrected
    repaired = repair(bytes(stream), PARITY)
    assert repaired.failed == ((WIDTH, 2 * WIDTH),)
    assert repaired.data[:WIDTH] == data[:WIDTH] and repaired.data[2 * WIDTH:] == data[2 * WIDTH:]
    assert repaired.data[WIDTH:2 * WIDTH] != data[WIDTH:2 * WIDTH]
    assert repaired.corrected == 1


def test_a_stream_whose_last_codeword_holds_no_data_is_refused():
    stream = protect(data_of(WIDTH + 5), PARITY)
    with pytest.raises(ArtifactError, match="no longer than its 8 parity bytes"):
        repair(stream[:CODEWORD_BYTES + PARITY], PARITY)


@pytest.mark.parametrize("parity", [0, CODEWORD_BYTES])
def test_parity_must_leave_room_for_data(parity):
    with pytest.raises(ValueError, match="1 to 254 bytes"):
        protect(b"x", parity)
