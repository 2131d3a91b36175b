"""Canonical Huffman coding of integer symbols, and the Shannon entropy it is measured against.

The last stage of Deep Compression (Han, Mao & Dally 2016, "Deep Compression: Compressing Deep
Neural Networks with Pruning, Trained Quantization and Huffman Coding", ICLR) Huffman-codes
the cluster indices of every layer (and the run lengths of its sparse storage): symbols that
occur often get short codes. A Huffman code (Huffman 1952) is an optimal prefix code, so its
length ``L`` in bits over ``n`` symbols of empirical entropy ``H`` bits/symbol obeys
``n H <= L < n (H + 1)``.

The code is *canonical* (Schwartzkopf & Wiseman 1964; as in DEFLATE, RFC 1951, section
3.2.2): codes are assigned in order of (length, symbol), so the code lengths alone define the
code and the stored table is one byte per symbol of the alphabet's range.

Stored format of an :class:`EncodedStream` (:meth:`EncodedStream.to_bytes`)::

    dtype     3 bytes   NumPy dtype string of the symbols, e.g. b"|u1", b"<i8"
    low       8 bytes   smallest symbol (int64, little-endian)
    span      4 bytes   high - low + 1 (uint32)
    n         8 bytes   number of symbols (uint64)
    bits      8 bytes   bits of codes in the bitstream (uint64)
    lengths   span B    code length of symbols low .. high (0 = absent)
    bitstream           the codes, most significant bit first, zero-padded to a byte

Pure NumPy: part of the torch-free flight path.
"""

from __future__ import annotations

import heapq
import struct
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MAX_CODE_BITS",
    "EncodedStream",
    "huffman_code_lengths",
    "canonical_codes",
    "huffman_encode",
    "huffman_decode",
    "shannon_entropy_bits",
]

MAX_CODE_BITS = 57
"""Longest code the decoder handles (it peeks 64-bit windows at any bit offset). A Huffman
code this long needs more than Fibonacci(59) ~ 9.6e11 symbols, so it never limits practice."""

_HEADER = struct.Struct("<3sqIQQ")
_MAX_SPAN = 2**24
_DECODE_CHUNK_BITS = 2**20
_ENCODE_CHUNK_SYMBOLS = 2**18


def _check_symbols(symbols: np.ndarray, where: str) -> np.ndarray:
    symbols = np.asarray(symbols)
    if symbols.dtype.kind not in "iu":
        raise ValueError(
            f"{where}: symbols must be an integer array, got dtype {symbols.dtype}. Map other "
            "values to integers first, e.g. `values, symbols = np.unique(x, return_inverse=True)`."
        )
    if symbols.dtype == np.uint64 and symbols.size and symbols.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{where}: symbols must fit in int64; got a uint64 value above 2**63.")
    return symbols.reshape(-1)


def shannon_entropy_bits(symbols: np.ndarray) -> float:
    """Empirical Shannon entropy ``H = -sum_s p_s log2 p_s`` of ``symbols``, in bits per symbol.

    ``p_s`` is the frequency of symbol ``s`` in the array. No prefix code can average fewer
    than ``H`` bits per symbol on this data, so ``len(symbols) * H`` is the limit a coder is
    compared against. 0 for an empty or constant array.
    """
    symbols = _check_symbols(symbols, "shannon_entropy_bits")
    if symbols.size == 0:
        return 0.0
    _, counts = np.unique(symbols, return_counts=True)
    probabilities = counts / symbols.size
    return float(max(0.0, -np.sum(probabilities * np.log2(probabilities))))


def huffman_code_lengths(counts: np.ndarray) -> np.ndarray:
    """Code length in bits of every symbol of a Huffman code for the given counts.

    Parameters
    ----------
    counts : np.ndarray
        Occurrences of each symbol (non-negative integers); symbols with count 0 get length 0.

    Returns
    -------
    np.ndarray
        uint8 code lengths. A single present symbol gets length 1 (a code needs a bit).
        Ties are broken by symbol order, so the result is deterministic.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError("huffman_code_lengths: counts must be a 1-D array of integers >= 0.")
    lengths = np.zeros(len(counts), dtype=np.int64)
    present = np.flatnonzero(counts)
    if len(present) == 1:
        lengths[present] = 1
    # Each heap entry: (count, tie-break order, the symbols below that node).
    heap = [(int(counts[s]), order, [int(s)]) for order, s in enumerate(present)]
    heapq.heapify(heap)
    order = len(heap)
    while len(heap) > 1:
        count_a, _, leaves_a = heapq.heappop(heap)
        count_b, _, leaves_b = heapq.heappop(heap)
        merged = leaves_a + leaves_b
        lengths[merged] += 1
        heapq.heappush(heap, (count_a + count_b, order, merged))
        order += 1
    if lengths.max(initial=0) > MAX_CODE_BITS:
        raise ValueError(
            f"huffman_code_lengths: a code of {lengths.max()} bits exceeds the {MAX_CODE_BITS}-"
            "bit limit of the decoder; split the symbols into smaller streams."
        )
    return lengths.astype(np.uint8)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code values (uint64, read as ``lengths[i]`` bits MSB first) for code lengths.

    Symbols are ordered by (length, symbol index); each code is the previous one plus one,
    shifted left when the length grows (RFC 1951, section 3.2.2). Absent symbols (length 0)
    get code 0.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=np.uint64)
    code, previous_length = 0, 0
    for symbol in np.lexsort((np.arange(len(lengths)), lengths)):
        length = int(lengths[symbol])
        if length == 0:
            continue
        code <<= length - previous_length
        codes[symbol] = code
        code += 1
        previous_length = length
    return codes


@dataclass(frozen=True)
class EncodedStream:
    """Huffman-coded symbols: the bitstream plus the canonical code table that decodes it.

    Attributes
    ----------
    bitstream : bytes
        The codes of the symbols in order, most significant bit first, zero-padded.
    code_lengths : np.ndarray
        uint8 code length of every symbol value ``low_symbol + i`` (0: the value is absent).
    low_symbol : int
        The smallest symbol value.
    n_symbols : int
        Number of symbols coded.
    dtype : str
        NumPy dtype string of the symbols (restored by :func:`huffman_decode`).
    bit_count : int
        Bits of codes in ``bitstream`` (the rest of its last byte is padding).
    """

    bitstream: bytes
    code_lengths: np.ndarray
    low_symbol: int
    n_symbols: int
    dtype: str
    bit_count: int

    @property
    def table_nbytes(self) -> int:
        """Bytes of the header and code table (everything but the bitstream)."""
        return _HEADER.size + len(self.code_lengths)

    @property
    def nbytes(self) -> int:
        """Stored size in bytes, table included: ``len(self.to_bytes())``."""
        return self.table_nbytes + len(self.bitstream)

    @property
    def bits_per_symbol(self) -> float:
        """Average code length (bitstream only, no table or padding)."""
        return self.bit_count / self.n_symbols if self.n_symbols else 0.0

    def to_bytes(self) -> bytes:
        """The stored form (see the module docstring); :meth:`from_bytes` inverts it."""
        header = _HEADER.pack(self.dtype.encode("ascii"), self.low_symbol,
                              len(self.code_lengths), self.n_symbols, self.bit_count)
        return header + self.code_lengths.astype(np.uint8).tobytes() + self.bitstream

    @classmethod
    def from_bytes(cls, content: bytes) -> EncodedStream:
        """Rebuild a stream from :meth:`to_bytes` output."""
        if len(content) < _HEADER.size:
            raise ValueError(
                f"EncodedStream.from_bytes: {len(content)} bytes is shorter than the "
                f"{_HEADER.size}-byte header; this is not a satcompress Huffman stream."
            )
        dtype, low, span, n_symbols, bit_count = _HEADER.unpack_from(content)
        table_end = _HEADER.size + span
        if len(content) < table_end + (bit_count + 7) // 8:
            raise ValueError(
                f"EncodedStream.from_bytes: the header announces a {span}-byte code table and "
                f"{bit_count} bits of codes but only {len(content) - _HEADER.size} bytes "
                "follow it; the stream is truncated."
            )
        lengths = np.frombuffer(content, dtype=np.uint8, count=span, offset=_HEADER.size).copy()
        return cls(content[table_end:], lengths, low, n_symbols, dtype.decode("ascii"), bit_count)


def huffman_encode(symbols: np.ndarray) -> EncodedStream:
    """Huffman-code an integer array with a canonical code built from its own frequencies.

    Parameters
    ----------
    symbols : np.ndarray
        Integer symbols (any shape; coded flattened in C order). The alphabet is the range
        ``min .. max``; its span sets the table size, so map sparse alphabets to dense
        indices first (e.g. ``np.unique(..., return_inverse=True)``).

    Returns
    -------
    EncodedStream
        Decode with :func:`huffman_decode`; ``nbytes`` is the stored size, table included.
        The bitstream holds at most ``n * (H + 1)`` bits for entropy ``H``
        (:func:`shannon_entropy_bits`).
    """
    where = "huffman_encode"
    symbols = _check_symbols(symbols, where)
    dtype = symbols.dtype.str
    if symbols.size == 0:
        return EncodedStream(b"", np.zeros(0, dtype=np.uint8), 0, 0, dtype, 0)
    low = int(symbols.min())
    offsets = symbols.astype(np.int64) - low
    span = int(offsets.max()) + 1
    if span > _MAX_SPAN:
        raise ValueError(
            f"{where}: the symbols span {span} values (from {low}); the code table stores one "
            f"length per value, so spans above {_MAX_SPAN} are refused. Map the values to "
            "dense indices first: `values, symbols = np.unique(x, return_inverse=True)`."
        )
    lengths = huffman_code_lengths(np.bincount(offsets, minlength=span))
    codes = canonical_codes(lengths)
    symbol_lengths = lengths.astype(np.int64)[offsets]
    bit_chunks = []
    for start in range(0, symbols.size, _ENCODE_CHUNK_SYMBOLS):
        chunk = offsets[start : start + _ENCODE_CHUNK_SYMBOLS]
        chunk_lengths = symbol_lengths[start : start + _ENCODE_CHUNK_SYMBOLS]
        owner = np.repeat(np.arange(len(chunk)), chunk_lengths)
        first_bit = np.cumsum(chunk_lengths) - chunk_lengths
        shift = (chunk_lengths[owner] - 1 - (np.arange(len(owner)) - first_bit[owner]))
        bits = (codes[chunk][owner] >> shift.astype(np.uint64)) & np.uint64(1)
        bit_chunks.append(bits.astype(np.uint8))
    bits = np.concatenate(bit_chunks)
    return EncodedStream(np.packbits(bits).tobytes(), lengths, low, int(symbols.size), dtype,
                         int(bits.size))


def huffman_decode(stream: EncodedStream) -> np.ndarray:
    """Decode an :class:`EncodedStream` back to its symbols (1-D, original dtype), exactly.

    Every bit position's code is found at once: canonical codes, left-justified to the
    longest length ``W``, are sorted and partition ``[0, 2**W)``, so the ``W`` bits starting at
    a position give its symbol by binary search. The chain of code starts is then followed.
    """
    dtype = np.dtype(stream.dtype)
    if stream.n_symbols == 0:
        return np.zeros(0, dtype=dtype)
    lengths = stream.code_lengths.astype(np.int64)
    width = int(lengths.max(initial=0))
    if width == 0 or width > MAX_CODE_BITS:
        raise ValueError(
            f"huffman_decode: the code table's longest code is {width} bits; a valid table has "
            f"codes of 1 to {MAX_CODE_BITS} bits. The stream is corrupt."
        )
    present = np.lexsort((np.arange(len(lengths)), lengths))
    present = present[lengths[present] > 0]
    codes = canonical_codes(stream.code_lengths)
    starts = codes[present] << (width - lengths[present]).astype(np.uint64)
    sorted_lengths = lengths[present]

    buffer = np.frombuffer(stream.bitstream + bytes(8), dtype=np.uint8)
    n_bytes = len(stream.bitstream)
    windows = np.zeros(n_bytes, dtype=np.uint64)
    for offset in range(8):
        windows = (windows << np.uint64(8)) | buffer[offset : offset + n_bytes].astype(np.uint64)

    def peek(positions: np.ndarray) -> np.ndarray:
        """Index into ``present`` of the code starting at each bit position."""
        window = windows[positions >> 3] << (positions & 7).astype(np.uint64)
        return np.searchsorted(starts, window >> np.uint64(64 - width), side="right") - 1

    n_bits = 8 * n_bytes
    code_length_at = np.empty(n_bits, dtype=np.uint8)
    for start in range(0, n_bits, _DECODE_CHUNK_BITS):
        positions = np.arange(start, min(start + _DECODE_CHUNK_BITS, n_bits), dtype=np.int64)
        code_length_at[positions] = sorted_lengths[peek(positions)]
    steps = code_length_at.tolist()
    code_starts = []
    position = 0
    for _ in range(stream.n_symbols):
        if position >= n_bits:
            raise ValueError(
                f"huffman_decode: the bitstream ends after {len(code_starts)} of "
                f"{stream.n_symbols} symbols; the stream is truncated."
            )
        code_starts.append(position)
        position += steps[position]
    values = present[peek(np.asarray(code_starts, dtype=np.int64))] + stream.low_symbol
    return values.astype(dtype)
