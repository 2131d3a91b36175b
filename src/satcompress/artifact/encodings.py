"""Lossless tensor encodings of the flight artifact; the writer keeps the smallest.

Every tensor block is one of these encodings, named by the ``"e"`` key of its JSON spec (stored
in the artifact's block table; every other key is a parameter). Decoding returns the original
array bit for bit (floats are compared as bit patterns, so NaN payloads, infinities and -0.0
survive). Bits are packed most significant first, multi-byte values are little-endian.

``raw`` ``{"e": "raw"}``
    The array's little-endian bytes. Any dtype.
``pack`` ``{"e": "pack", "b": bits, "o": offset}``
    Integers (and bools) as ``value - offset`` in ``bits`` (0 to 32) bits each. An int8 tensor
    quantized to 4 bits (values in [-7, 7]: offset -7, 15 levels) takes 4 bits per value; a
    constant tensor takes 0.
``huffman`` ``{"e": "huffman", "o": low, "s": span, "lb": bits, "c": code bits}``
    Integers coded with a canonical Huffman code (:mod:`satcompress.entropy`, Deep Compression's
    last stage): the code length of every value ``low .. low + span - 1`` packed at ``lb`` bits
    each (the whole code table), then the ``c`` bits of codes, zero-padded to a byte.
``codebook`` ``{"e": "codebook", "k": size, "i": index spec}``
    ``k`` distinct values (raw, sorted by bit pattern), then the index of every element among
    them, itself encoded by ``pack`` or ``huffman`` (spec ``"i"``): clustered weights (Han, Mao
    & Dally 2016), or any tensor with few distinct values.
``sparse`` ``{"e": "sparse", "r": max run, "m": entries, "rl": run bytes, "R": runs spec,
"V": values spec}``
    Zero run lengths (Deep Compression's relative indices, :func:`satcompress.entropy.
    run_length_encode_zeros`; "zero" is the all-zero bit pattern, so -0.0 is a value): the
    ``m`` runs (``rl`` bytes, ``pack`` or ``huffman``), then the ``m`` values, encoded by any of
    the encodings above.

The writer (:func:`encode_tensor`) tries every encoding that applies and keeps the smallest,
counting the spec's JSON bytes too. The reader (:func:`decode_tensor`) checks every size and
count against the bytes present before allocating, so a corrupted or crafted spec raises
:class:`~satcompress.artifact.errors.ArtifactError` instead of allocating or indexing wildly;
it unpacks bits and decodes Huffman codes a bounded chunk at a time, so decoding takes a few
MiB beyond the decoded tensor, whatever the block's size.

Pure NumPy: part of the torch-free flight path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from satcompress.artifact.errors import ArtifactError, shown
from satcompress.entropy import (
    MAX_CODE_BITS,
    EncodedStream,
    ZeroRuns,
    huffman_decode,
    huffman_encode,
    run_length_decode_zeros,
    run_length_encode_zeros,
)

__all__ = [
    "ENCODINGS",
    "SUPPORTED_DTYPES",
    "EncodedTensor",
    "encode_tensor",
    "decode_tensor",
    "describe_spec",
]

ENCODINGS = ("raw", "pack", "huffman", "codebook", "sparse")
"""Names of the encodings, as recorded in the block table."""

SUPPORTED_DTYPES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
                    "float16", "float32", "float64")
"""Dtypes a tensor block may have."""

_MAX_PACK_BITS = 32
_UNPACK_CHUNK = 2**16
"""Values unpacked per pass (a multiple of 8: every chunk starts on a byte); bounds the bit
array the unpacking needs to 32 x this many bytes, whatever the tensor's size."""
_MAX_HUFFMAN_SPAN = 2**16
_HUFFMAN_CHUNK_BITS = 2**18
"""Bits of codes handed to the Huffman decoder at a time: its temporaries take tens of bytes
per bit, so a block of any size is decoded in a few MiB."""
_MAX_CODEBOOK = 2**16
_MIN_SPARSE_ZEROS = 0.25
_SPARSE_RUN_BITS = range(1, 9)


@dataclass(frozen=True)
class EncodedTensor:
    """A tensor's stored bytes and the JSON spec (encoding name and parameters) decoding them."""

    data: bytes
    spec: dict[str, Any]

    @property
    def cost(self) -> int:
        """Bytes this encoding adds to the artifact: the data plus its spec's JSON."""
        return len(self.data) + len(json.dumps(self.spec, separators=(",", ":")))


def _bit_patterns(values: np.ndarray) -> np.ndarray:
    """Integers with the same bits as ``values`` (floats compared bit-exactly, bools as 0/1)."""
    if values.dtype.kind == "f":
        return values.view(f"u{values.dtype.itemsize}")
    return values.view(np.uint8) if values.dtype == np.bool_ else values


def _index_dtype(count: int) -> np.dtype:
    """Smallest unsigned dtype holding ``0 .. count - 1``."""
    return np.dtype(np.uint8 if count <= 2**8 else np.uint16 if count <= 2**16 else np.uint32)


# ----------------------------------------------------------------------------- writers


def _raw(values: np.ndarray) -> EncodedTensor:
    return EncodedTensor(values.astype(values.dtype.newbyteorder("<")).tobytes(), {"e": "raw"})


def _pack_bits(offsets: np.ndarray, bits: int) -> bytes:
    """``offsets`` (non-negative integers below ``2**bits``) as ``bits``-bit fields, MSB first."""
    if bits == 0:
        return b""
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)
    fields = (offsets.astype(np.uint64)[:, None] >> shifts) & np.uint64(1)
    return np.packbits(fields.astype(np.uint8)).tobytes()


def _pack(values: np.ndarray) -> list[EncodedTensor]:
    if values.size == 0:
        return []
    low, high = int(values.min()), int(values.max())
    bits = (high - low).bit_length()
    if bits > _MAX_PACK_BITS:
        return []
    offsets = values.astype(np.int64) - low
    return [EncodedTensor(_pack_bits(offsets, bits), {"e": "pack", "b": bits, "o": low})]


def _huffman(values: np.ndarray) -> list[EncodedTensor]:
    if values.size == 0 or int(values.max()) - int(values.min()) >= _MAX_HUFFMAN_SPAN:
        return []
    stream = huffman_encode(values.astype(np.int64))
    length_bits = int(stream.code_lengths.max()).bit_length()
    table = _pack_bits(stream.code_lengths, length_bits)
    spec = {"e": "huffman", "o": stream.low_symbol, "s": len(stream.code_lengths),
            "lb": length_bits, "c": stream.bit_count}
    return [EncodedTensor(table + stream.bitstream, spec)]


def _integer_candidates(values: np.ndarray, entropy_coding: bool) -> list[EncodedTensor]:
    """``pack`` and (when allowed) ``huffman`` encodings of an integer array."""
    return _pack(values) + (_huffman(values) if entropy_coding else [])


def _codebook(values: np.ndarray, entropy_coding: bool) -> list[EncodedTensor]:
    patterns = _bit_patterns(values)
    codebook, indices = np.unique(patterns, return_inverse=True)
    if len(codebook) > _MAX_CODEBOOK or len(codebook) >= values.size:
        return []
    book = _raw(codebook.view(values.dtype)).data
    return [EncodedTensor(book + index.data, {"e": "codebook", "k": len(codebook),
                                              "i": index.spec})
            for index in _integer_candidates(indices.reshape(-1), entropy_coding)]


def _dense_candidates(values: np.ndarray, entropy_coding: bool) -> list[EncodedTensor]:
    """Every encoding but ``sparse`` that applies to the 1-D array ``values``."""
    candidates = [_raw(values)]
    if values.dtype.kind in "iub":
        candidates += _integer_candidates(_bit_patterns(values), entropy_coding)
    return candidates + _codebook(values, entropy_coding)


def _smallest(candidates: list[EncodedTensor]) -> EncodedTensor:
    return min(candidates, key=lambda candidate: candidate.cost)


def _sparse_run_bits(patterns: np.ndarray) -> int:
    """Run width minimising (entries x (run bits + value bits)), value bits estimated."""
    nonzero = np.flatnonzero(patterns)
    gaps = np.diff(nonzero, prepend=-1) - 1
    value_bits = max(1, int(len(np.unique(patterns[nonzero]))).bit_length())

    def cost(bits: int) -> int:
        entries = len(nonzero) + int((gaps // 2**bits).sum())
        return entries * (bits + value_bits)

    return min(_SPARSE_RUN_BITS, key=cost)


def _sparse(values: np.ndarray, entropy_coding: bool) -> list[EncodedTensor]:
    patterns = _bit_patterns(values)
    if values.size == 0 or np.count_nonzero(patterns) > (1 - _MIN_SPARSE_ZEROS) * values.size:
        return []
    max_run = 2 ** _sparse_run_bits(patterns) - 1
    runs = run_length_encode_zeros(patterns, zero=0, max_run=max_run)
    entries = runs.values.view(values.dtype)
    run_part = _smallest([_raw(runs.runs)] + _integer_candidates(runs.runs, entropy_coding))
    value_part = _smallest(_dense_candidates(entries, entropy_coding))
    spec = {"e": "sparse", "r": max_run, "m": len(entries), "rl": len(run_part.data),
            "R": run_part.spec, "V": value_part.spec}
    return [EncodedTensor(run_part.data + value_part.data, spec)]


def encode_tensor(array: np.ndarray, *, entropy_coding: bool = True) -> EncodedTensor:
    """Encode ``array`` losslessly with the smallest applicable encoding.

    Parameters
    ----------
    array : np.ndarray
        Any shape, one of :data:`SUPPORTED_DTYPES` (the shape and dtype are stored beside the
        spec, not in it).
    entropy_coding : bool
        Consider Huffman-coded encodings (off: only fixed-width ones).

    Returns
    -------
    EncodedTensor
        The bytes and spec with the smallest :attr:`EncodedTensor.cost`; ties keep the
        simpler encoding (order of :data:`ENCODINGS`).
    """
    values = np.ascontiguousarray(array).reshape(-1)
    return _smallest(_dense_candidates(values, entropy_coding)
                     + _sparse(values, entropy_coding))


# ----------------------------------------------------------------------------- readers


def _fail(message: str) -> ArtifactError:
    return ArtifactError(message)


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _param(spec: dict[str, Any], key: str, low: int, high: int) -> int:
    value = spec.get(key)
    if not _is_int(value, low, high):
        raise _fail(f"has an invalid {spec.get('e')} parameter {key}={shown(value)}")
    return value


def _expect_bytes(data: bytes, expected: int, what: str) -> None:
    if len(data) != expected:
        raise _fail(f"holds {len(data)} bytes where its {what} takes {expected}")


def _unpack_bits(data: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`_pack_bits`: ``count`` unsigned fields (dtype fitting ``bits``)."""
    dtype = _index_dtype(2**bits) if bits <= 32 else np.dtype(np.uint64)
    packed = np.frombuffer(data, dtype=np.uint8)
    out = np.zeros(count, dtype=dtype)
    for start in range(0, count, _UNPACK_CHUNK):
        stop = min(count, start + _UNPACK_CHUNK)
        fields = np.unpackbits(packed[start * bits // 8:], count=(stop - start) * bits)
        fields = fields.reshape(stop - start, bits)
        chunk = out[start:stop]
        for column in range(bits):
            chunk <<= dtype.type(1)
            chunk |= fields[:, column]
    return out


def _shift_into(offsets: np.ndarray, low: int, dtype: np.dtype, what: str) -> np.ndarray:
    """``low + offsets`` in ``dtype``, refusing values the dtype cannot hold."""
    info = np.iinfo(np.uint8 if dtype == np.bool_ else dtype)
    high_bound = 1 if dtype == np.bool_ else info.max
    top = low + (int(offsets.max()) if offsets.size else 0)
    if low < info.min or top > high_bound:
        raise _fail(f"decodes {what} in [{low}, {top}], outside its dtype {dtype}")
    if dtype == np.bool_:
        return (offsets + low).astype(np.bool_)
    # Modular arithmetic in the target dtype is exact: the true result is in range.
    return offsets.astype(dtype) + np.asarray(low).astype(dtype)


def _decode_raw(data: bytes, spec: dict, dtype: np.dtype, count: int) -> np.ndarray:
    little = dtype.newbyteorder("<")
    _expect_bytes(data, count * little.itemsize, f"{count} raw values")
    values = np.frombuffer(data, dtype=np.uint8 if dtype == np.bool_ else little, count=count)
    if dtype == np.bool_:
        return _shift_into(values, 0, dtype, "booleans")
    return values.astype(dtype)


def _decode_pack(data: bytes, spec: dict, dtype: np.dtype, count: int) -> np.ndarray:
    bits = _param(spec, "b", 0, min(_MAX_PACK_BITS, 8 * dtype.itemsize))
    low = _param(spec, "o", -(2**63), 2**64 - 1)
    _expect_bytes(data, (count * bits + 7) // 8, f"{count} values of {bits} bits")
    if bits == 0:
        return _shift_into(np.zeros(1, dtype=np.uint8), low, dtype, "values").repeat(count)
    return _shift_into(_unpack_bits(data, count, bits), low, dtype, "values")


def _check_code_lengths(lengths: np.ndarray) -> None:
    """A Huffman table must be complete (Kraft sum 1), or a single 1-bit code."""
    if lengths.max(initial=0) > MAX_CODE_BITS:
        raise _fail(f"has a Huffman code longer than {MAX_CODE_BITS} bits")
    present = lengths[lengths > 0].astype(np.int64)
    kraft = sum(2 ** (MAX_CODE_BITS - int(n)) for n in present)
    if not (kraft == 2**MAX_CODE_BITS or (len(present) == 1 and present[0] == 1)):
        raise _fail("has an invalid Huffman code table")


def _decode_huffman(data: bytes, spec: dict, dtype: np.dtype, count: int) -> np.ndarray:
    low = _param(spec, "o", -(2**63), 2**63 - 1)
    span = _param(spec, "s", 1, _MAX_HUFFMAN_SPAN)
    length_bits = _param(spec, "lb", 1, MAX_CODE_BITS.bit_length())
    code_bits = _param(spec, "c", count, 8 * len(data))
    table_bytes = (span * length_bits + 7) // 8
    _expect_bytes(data, table_bytes + (code_bits + 7) // 8, "Huffman table and codes")
    lengths = _unpack_bits(data[:table_bytes], span, length_bits).astype(np.uint8)
    _check_code_lengths(lengths)
    longest = int(lengths.max())
    if code_bits > count * longest:
        raise _fail(f"has {code_bits} bits of Huffman codes, more than its {count} values "
                    "can take")
    offsets = np.empty(count, dtype=np.int64)
    codes, position = np.frombuffer(data[table_bytes:], np.uint8), 0
    per_call = max(1, _HUFFMAN_CHUNK_BITS // longest)
    for start in range(0, count, per_call):
        symbols = min(per_call, count - start)
        width = min(symbols * longest, code_bits - position)
        # The next ``width`` bits, realigned to start a byte.
        bits = np.unpackbits(codes[position // 8:(position + width + 7) // 8])
        aligned = np.packbits(bits[position % 8:position % 8 + width]).tobytes()
        try:
            decoded = huffman_decode(EncodedStream(aligned, lengths, low, symbols, "<i8", width))
        except ValueError as error:
            raise _fail(f"has a broken Huffman stream ({error})") from None
        offsets[start:start + symbols] = decoded - low
        position += int(lengths[offsets[start:start + symbols]].sum(dtype=np.int64))
        if position > code_bits:
            break
    if position != code_bits:
        raise _fail("has a Huffman stream whose codes do not fill its recorded length")
    return _shift_into(offsets, low, dtype, "values")


def _decode_indices(data: bytes, spec: Any, count: int, size: int) -> np.ndarray:
    """Codebook indices (``pack`` or ``huffman``), each checked to be below ``size``."""
    if not isinstance(spec, dict) or spec.get("e") not in ("pack", "huffman"):
        raise _fail("has an invalid index encoding")
    indices = _READERS[spec["e"]](data, spec, _index_dtype(size), count)
    if indices.size and int(indices.max()) >= size:
        raise _fail(f"has a codebook index beyond its {size} entries")
    return indices


def _decode_codebook(data: bytes, spec: dict, dtype: np.dtype, count: int) -> np.ndarray:
    size = _param(spec, "k", 1, max(1, min(count, _MAX_CODEBOOK)))
    book_bytes = size * dtype.itemsize
    if len(data) < book_bytes:
        raise _fail(f"holds {len(data)} bytes, fewer than its {size}-value codebook")
    codebook = _decode_raw(data[:book_bytes], {}, dtype, size)
    return codebook[_decode_indices(data[book_bytes:], spec.get("i"), count, size)]


def _decode_sparse(data: bytes, spec: dict, dtype: np.dtype, count: int) -> np.ndarray:
    max_run = _param(spec, "r", 1, 2**32)
    entries = _param(spec, "m", 0, count)
    run_bytes = _param(spec, "rl", 0, len(data))
    runs_spec, values_spec = spec.get("R"), spec.get("V")
    if not (isinstance(runs_spec, dict) and runs_spec.get("e") in ("pack", "huffman")
            and isinstance(values_spec, dict) and values_spec.get("e") in _DENSE):
        raise _fail("has an invalid run or value encoding")
    runs = _READERS[runs_spec["e"]](data[:run_bytes], runs_spec, np.dtype(np.int64), entries)
    if runs.size and (int(runs.min()) < 0 or int(runs.max()) > max_run):
        raise _fail(f"has a zero run outside [0, {max_run}]")
    values = _READERS[values_spec["e"]](data[run_bytes:], values_spec, dtype, entries)
    # The zero is the all-zero bit pattern: +0.0 for floats, False for bools.
    try:
        return run_length_decode_zeros(ZeroRuns(runs, values, count, 0))
    except ValueError as error:
        raise _fail(f"has zero runs that do not fit the tensor ({error})") from None


_Reader = Callable[[bytes, dict, np.dtype, int], np.ndarray]
_READERS: dict[str, _Reader] = {
    "raw": _decode_raw,
    "pack": _decode_pack,
    "huffman": _decode_huffman,
    "codebook": _decode_codebook,
    "sparse": _decode_sparse,
}
_DENSE = ("raw", "pack", "huffman", "codebook")


def decode_tensor(data: bytes, spec: dict[str, Any], dtype: np.dtype,
                  shape: tuple[int, ...]) -> np.ndarray:
    """Decode one block back to the exact array :func:`encode_tensor` encoded.

    Raises
    ------
    ArtifactError
        When the spec is unknown or inconsistent with the bytes; the message completes the
        sentence "Block NAME ..." (the caller names the block).
    """
    encoding = spec.get("e") if isinstance(spec, dict) else None
    if not isinstance(encoding, str) or encoding not in _READERS:
        raise _fail(f"uses an unknown encoding {shown(encoding)} (written by a newer satcompress?)")
    dtype = np.dtype(dtype)
    if encoding in ("pack", "huffman") and dtype.kind not in "iub":
        raise _fail(f"uses the integer encoding {encoding!r} for dtype {dtype}")
    count = math.prod(shape)
    values = _READERS[encoding](data, spec, dtype, count)
    return values.astype(dtype, copy=False).reshape(shape)


def describe_spec(spec: dict[str, Any]) -> str:
    """Short label of a spec, e.g. ``"pack4"`` or ``"sparse(runs pack3, codebook16/pack4)"``."""
    encoding = spec.get("e")
    if encoding == "pack":
        return f"pack{spec.get('b')}"
    if encoding == "codebook":
        return f"codebook{spec.get('k')}/{describe_spec(spec.get('i', {}))}"
    if encoding == "sparse":
        return f"sparse(runs {describe_spec(spec.get('R', {}))}, " \
               f"{describe_spec(spec.get('V', {}))})"
    return str(encoding)
