"""Reed-Solomon forward error correction of the artifact's bytes.

A byte stream is cut into chunks of ``255 - p`` bytes, each followed by its ``p`` parity bytes:
systematic RS(255, 255 - p) codewords over GF(2^8) (the last one shortened), encoded and
corrected by the maintained ``reedsolo`` package (primitive polynomial 0x11d, generator 2,
first consecutive root 0, as in CCSDS-style byte-oriented codes). A codeword corrects up to
``p // 2`` wrong bytes anywhere in it (data or parity), hence any single-bit upset; the
overhead is ``p`` bytes per ``255 - p`` (3.2 % for ``p = 8``).

Reading checks every codeword's syndromes at once with NumPy (an intact stream costs a few
vectorised passes, not a pure-Python decode per codeword) and hands only the damaged
codewords to ``reedsolo``'s Berlekamp-Massey / Forney decoder. Torch-free (flight path).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import reedsolo

from satcompress.artifact.errors import REEXPORT, ArtifactError

__all__ = ["CODEWORD_BYTES", "FEC_PARITY_BYTES", "Repair", "protect", "protected_size", "repair"]

CODEWORD_BYTES = 255
"""Bytes of a full Reed-Solomon codeword (data + parity) over GF(2^8)."""

FEC_PARITY_BYTES = 8
"""Parity bytes per codeword the writer uses: corrects 4 wrong bytes per 255, 3.2 % overhead."""

_SCREEN_ROWS = 4096
"""Codewords whose syndromes are computed in one NumPy pass (bounds the temporary memory)."""


@functools.lru_cache(maxsize=None)
def _codec(parity: int) -> reedsolo.RSCodec:
    return reedsolo.RSCodec(parity, nsize=CODEWORD_BYTES)


def _check_parity(parity: int) -> None:
    if not 0 < parity < CODEWORD_BYTES:
        raise ValueError(f"Reed-Solomon parity must be 1 to {CODEWORD_BYTES - 1} bytes per "
                         f"codeword; got {parity}.")


def protected_size(data_bytes: int, parity: int) -> int:
    """Bytes :func:`protect` makes of ``data_bytes`` bytes: the data plus ``parity`` per chunk."""
    _check_parity(parity)
    return data_bytes + parity * -(-data_bytes // (CODEWORD_BYTES - parity))


def protect(data: bytes, parity: int) -> bytes:
    """``data`` as RS codewords: chunks of ``255 - parity`` bytes, each followed by its parity."""
    _check_parity(parity)
    return bytes(_codec(parity).encode(bytes(data)))


@dataclass(frozen=True)
class Repair:
    """A protected stream after correction.

    Attributes
    ----------
    data : bytes
        The data bytes (parity removed), corrected wherever the codeword could be.
    corrected : int
        Bytes (data or parity) the decoder changed.
    failed : tuple[tuple[int, int], ...]
        ``(start, stop)`` ranges of ``data`` in codewords beyond repair (left as read).
    """

    data: bytes
    corrected: int
    failed: tuple[tuple[int, int], ...]


def _damaged(codewords: np.ndarray, parity: int) -> np.ndarray:
    """Which rows of ``codewords`` (left zero-padded to 255 bytes) have a non-zero syndrome.

    Syndrome ``j`` is the codeword polynomial (first byte = highest degree) evaluated at
    ``alpha**j``, ``j = 0 .. parity - 1`` (``reedsolo.rs_calc_syndromes``); leading zero bytes
    do not change it, so shortened codewords are padded on the left.
    """
    codec = _codec(parity)
    log = np.frombuffer(bytes(codec.gf_log), dtype=np.uint8).astype(np.int32)
    exp = np.frombuffer(bytes(codec.gf_exp), dtype=np.uint8)
    degrees = np.arange(CODEWORD_BYTES - 1, -1, -1, dtype=np.int32)
    damaged = np.zeros(len(codewords), dtype=bool)
    for start in range(0, len(codewords), _SCREEN_ROWS):
        rows = codewords[start:start + _SCREEN_ROWS]
        logs, present = log[rows], rows != 0
        for j in range(parity):
            terms = np.where(present, exp[(logs + j * degrees) % CODEWORD_BYTES], 0)
            damaged[start:start + len(rows)] |= np.bitwise_xor.reduce(terms, axis=1) != 0
    return damaged


def repair(stream: bytes, parity: int) -> Repair:
    """Correct a :func:`protect` output and strip its parity.

    Raises
    ------
    ArtifactError
        If ``stream``'s length is not one of a protected stream (its last codeword would hold
        no data byte).
    """
    _check_parity(parity)
    full, last = divmod(len(stream), CODEWORD_BYTES)
    if 0 < last <= parity:
        raise ArtifactError(
            f"The error-corrected part of the file ends with a {last}-byte Reed-Solomon "
            f"codeword, no longer than its {parity} parity bytes: the file is truncated or "
            f"corrupted; {REEXPORT}."
        )
    stored = np.frombuffer(stream, dtype=np.uint8)
    codewords = np.zeros((full + (last > 0), CODEWORD_BYTES), dtype=np.uint8)
    codewords[:full] = stored[:full * CODEWORD_BYTES].reshape(full, CODEWORD_BYTES)
    if last:
        codewords[full, CODEWORD_BYTES - last:] = stored[full * CODEWORD_BYTES:]
    width = CODEWORD_BYTES - parity
    data = bytearray(codewords[:full, :width].tobytes())
    if last:
        data += codewords[full, CODEWORD_BYTES - last:width].tobytes()
    corrected, failed = 0, []
    for index in np.flatnonzero(_damaged(codewords, parity)).tolist():
        codeword = stream[index * CODEWORD_BYTES:(index + 1) * CODEWORD_BYTES]
        start, stop = index * width, index * width + len(codeword) - parity
        try:
            message, _, errata = _codec(parity).decode(codeword)
        except reedsolo.ReedSolomonError:
            failed.append((start, stop))
            continue
        data[start:stop] = message
        corrected += len(errata)
    return Repair(bytes(data), corrected, tuple(failed))
