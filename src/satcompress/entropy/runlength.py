"""Run lengths of zeros: the sparse storage of Deep Compression, ready for Huffman coding.

Han, Mao & Dally (2016, section 2 and figure 3) store a pruned layer as its non-zero entries,
each with the number of zeros since the previous one (the "relative index"), in a fixed
number of bits; a gap longer than the largest run that fits is bridged by filler entries
holding a zero. Both the runs and the values are then Huffman-coded (section 4). Here a
"zero" is any chosen symbol (for cluster indices: the index of the zero cluster), and the
largest run is a parameter (255 by default: one byte before entropy coding).

Pure NumPy: part of the torch-free flight path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from satcompress.entropy.huffman import EncodedStream, huffman_decode, huffman_encode

__all__ = [
    "ZeroRuns",
    "EncodedZeroRuns",
    "run_length_encode_zeros",
    "run_length_decode_zeros",
    "encode_zero_runs",
    "decode_zero_runs",
]


@dataclass(frozen=True)
class ZeroRuns:
    """A 1-D array stored as (zeros skipped, value) pairs.

    Attributes
    ----------
    runs : np.ndarray
        int64; ``runs[i]`` zeros precede ``values[i]`` (counted from the previous entry).
    values : np.ndarray
        The entries, in the original dtype; a filler entry holds ``zero``.
    length : int
        Length of the original array (zeros after the last entry are implied).
    zero : int
        The value treated as zero.
    """

    runs: np.ndarray
    values: np.ndarray
    length: int
    zero: int


def run_length_encode_zeros(symbols: np.ndarray, zero: int = 0, max_run: int = 255) -> ZeroRuns:
    """Run-length code the zeros of ``symbols`` (flattened), Deep Compression style.

    Parameters
    ----------
    symbols : np.ndarray
        Values to store (any shape, flattened in C order).
    zero : int
        The value whose runs are skipped.
    max_run : int
        Largest run one entry records; a longer gap is bridged with filler entries
        ``(max_run, zero)``, each standing for ``max_run + 1`` positions.

    Returns
    -------
    ZeroRuns
        :func:`run_length_decode_zeros` restores ``symbols.ravel()`` exactly.
    """
    if isinstance(max_run, bool) or not isinstance(max_run, (int, np.integer)) or max_run < 1:
        raise ValueError(
            f"run_length_encode_zeros: max_run must be an integer >= 1, got {max_run!r}."
        )
    flat = np.asarray(symbols).reshape(-1)
    positions = np.flatnonzero(flat != zero)
    gaps = np.diff(positions, prepend=-1) - 1
    fillers, remainders = np.divmod(gaps, max_run + 1)
    entries = fillers + 1
    last_of_each = np.cumsum(entries) - 1
    runs = np.full(int(entries.sum()), max_run, dtype=np.int64)
    runs[last_of_each] = remainders
    values = np.full(len(runs), zero, dtype=flat.dtype)
    values[last_of_each] = flat[positions]
    return ZeroRuns(runs=runs, values=values, length=int(flat.size), zero=int(zero))


def run_length_decode_zeros(encoded: ZeroRuns) -> np.ndarray:
    """The 1-D array :func:`run_length_encode_zeros` encoded, exactly."""
    out = np.full(encoded.length, encoded.zero, dtype=encoded.values.dtype)
    positions = np.cumsum(encoded.runs + 1) - 1
    if len(positions) and positions[-1] >= encoded.length:
        raise ValueError(
            f"run_length_decode_zeros: the runs reach position {positions[-1]} but the array "
            f"has {encoded.length} entries; the encoding is corrupt."
        )
    out[positions] = encoded.values
    return out


@dataclass(frozen=True)
class EncodedZeroRuns:
    """Huffman-coded zero runs: one stream of run lengths and one of values.

    Attributes
    ----------
    runs, values : EncodedStream
        The two Huffman streams.
    length : int
        Length of the original array.
    zero : int
        The value treated as zero.
    """

    runs: EncodedStream
    values: EncodedStream
    length: int
    zero: int

    @property
    def nbytes(self) -> int:
        """Stored bytes: both streams with their tables, plus 8 bytes each for length and zero."""
        return self.runs.nbytes + self.values.nbytes + 16


def encode_zero_runs(symbols: np.ndarray, zero: int = 0, max_run: int = 255) -> EncodedZeroRuns:
    """Run-length code the zeros of integer ``symbols``, then Huffman-code runs and values."""
    runs = run_length_encode_zeros(symbols, zero, max_run)
    return EncodedZeroRuns(huffman_encode(runs.runs), huffman_encode(runs.values), runs.length,
                           runs.zero)


def decode_zero_runs(encoded: EncodedZeroRuns) -> np.ndarray:
    """Invert :func:`encode_zero_runs` exactly (1-D, original dtype)."""
    return run_length_decode_zeros(
        ZeroRuns(huffman_decode(encoded.runs).astype(np.int64), huffman_decode(encoded.values),
                 encoded.length, encoded.zero)
    )
