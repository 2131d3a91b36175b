"""The flight artifact container: one versioned, checksummed file holding a model.

Byte layout (all integers little-endian, fixed widths)::

    offset  bytes  field
    0       4      magic b"SCAF"
    4       2      format version (uint16), currently 1
    6       1      Reed-Solomon parity bytes per codeword (uint8; 0: no forward error correction)
    7       4      header length H in bytes (uint32)
    11      4      CRC32 of the header (uint32, zlib.crc32)
    15      4      file length in bytes (uint32)
    19      H      header: zlib-compressed UTF-8 JSON
                   {"g": graph, "m": metadata,
                    "b": [[name, dtype, shape, stored bytes, CRC32, encoding spec], ...]}
    19+H    ...    one block per tensor, in table order: the tensor's encoded bytes
    end-32  32     SHA-256 of every byte before it

A loader checks, before decoding any tensor: the magic, the version, the length (truncation,
trailing bytes), the SHA-256 and the CRC32 of the header and of every block; a mismatch raises
:class:`ArtifactError` naming the bad part. Pure NumPy + stdlib: part of the flight path.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from satcompress.artifact.encodings import SUPPORTED_DTYPES, decode_tensor, encode_tensor
from satcompress.artifact.errors import ArtifactError
from satcompress.fileio import atomic_write_bytes

__all__ = [
    "ARTIFACT_SUFFIX",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_DECODED_BYTES",
    "Artifact",
    "BlockInfo",
    "encode_artifact",
    "write_artifact",
    "decode_artifact",
    "read_artifact",
]

ARTIFACT_SUFFIX = ".sca"
MAGIC = b"SCAF"
FORMAT_VERSION = 1
MAX_DECODED_BYTES = 2**28
"""Largest total size of the decoded tensors a loader accepts (guards against crafted sizes)."""

_PREAMBLE = struct.Struct("<4sHBIII")
_DIGEST_BYTES = 32
_MAX_FILE_BYTES = 2**32 - 1
_MAX_HEADER_JSON_BYTES = 2**26
_REEXPORT = "re-export the artifact (satcompress compress) or re-transmit the file"


@dataclass(frozen=True)
class BlockInfo:
    """One tensor block of an artifact, as stored.

    Attributes
    ----------
    name, dtype, shape
        The tensor's name, NumPy dtype name and shape.
    encoding : str
        Name of the lossless encoding chosen for it (e.g. ``"raw"``).
    stored_bytes : int
        Bytes of the block in the file (its share of the file size).
    raw_bytes : int
        Bytes of the decoded tensor (``array.nbytes``).
    crc32 : int
        CRC32 of the block's encoded bytes.
    """

    name: str
    encoding: str
    stored_bytes: int
    raw_bytes: int
    crc32: int
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Artifact:
    """A loaded (or just written) flight artifact.

    Attributes
    ----------
    format_version : int
        Container format version of the file.
    graph, metadata : dict
        The JSON graph description and task metadata stored in the header.
    tensors : dict[str, np.ndarray]
        Every tensor, decoded bit-exactly (same dtype and shape as written).
    blocks : tuple[BlockInfo, ...]
        The block table, in file order.
    sha256 : str
        Hex SHA-256 digest stored in (and verified against) the file.
    size_bytes : int
        File size in bytes: what a budget's ``max_bytes`` counts.
    corrected_bytes : int
        Bytes repaired by forward error correction while loading (0 for an intact file).
    """

    format_version: int
    graph: dict[str, Any]
    metadata: dict[str, Any]
    tensors: dict[str, np.ndarray] = field(repr=False)
    blocks: tuple[BlockInfo, ...]
    sha256: str
    size_bytes: int
    corrected_bytes: int = 0

    @property
    def overhead_bytes(self) -> int:
        """Bytes of the file that are not tensor blocks (preamble, header, digest)."""
        return self.size_bytes - sum(block.stored_bytes for block in self.blocks)

    def describe(self) -> list[dict[str, Any]]:
        """One row per block (name, encoding, dtype, shape, raw and stored bytes) for reports."""
        return [{"name": b.name, "encoding": b.encoding, "dtype": b.dtype, "shape": list(b.shape),
                 "raw_bytes": b.raw_bytes, "stored_bytes": b.stored_bytes} for b in self.blocks]


def _json_bytes(value: Any, what: str) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"The artifact's {what} must be JSON-serialisable (str, finite numbers, lists, dicts): "
            f"{error}. Convert NumPy values with .tolist() / float() first."
        ) from None


def _check_tensors(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    checked = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"Tensor names must be non-empty strings; got {name!r}.")
        array = np.asarray(value)
        if array.dtype.name not in SUPPORTED_DTYPES:
            raise ValueError(
                f"Tensor {name!r} has dtype {array.dtype}; an artifact stores "
                f"{', '.join(SUPPORTED_DTYPES)}. Convert it (e.g. .astype(np.float32))."
            )
        checked[name] = array
    return checked


def encode_artifact(graph: dict[str, Any], tensors: Mapping[str, np.ndarray],
                    metadata: dict[str, Any], *, fec: bool = False,
                    entropy_coding: bool = True) -> bytes:
    """The bytes of a flight artifact holding ``graph``, ``tensors`` and ``metadata``.

    Parameters
    ----------
    graph, metadata : dict
        JSON-serialisable descriptions stored in the header (tuples come back as lists).
    tensors : Mapping[str, np.ndarray]
        Tensors to store, each with the smallest lossless encoding found.
    fec : bool
        Add Reed-Solomon parity to every part so that bit upsets are corrected on load.
    entropy_coding : bool
        Allow Huffman-coded encodings (off: only fixed-width ones).

    Returns
    -------
    bytes
        The file content; :func:`decode_artifact` restores everything exactly.
    """
    del fec
    tensors = _check_tensors(tensors)
    if not isinstance(graph, dict) or not isinstance(metadata, dict):
        raise ValueError("The artifact's graph and metadata must be dicts.")
    table, blocks = [], []
    for name, array in tensors.items():
        encoded = encode_tensor(array, entropy_coding=entropy_coding)
        crc = zlib.crc32(encoded.data)
        table.append([name, array.dtype.name, list(array.shape), len(encoded.data), crc,
                      encoded.spec])
        blocks.append(encoded.data)
    header = zlib.compress(_json_bytes({"g": graph, "m": metadata, "b": table}, "header"), 9)
    size = _PREAMBLE.size + len(header) + sum(map(len, blocks)) + _DIGEST_BYTES
    if size > _MAX_FILE_BYTES:
        raise ValueError(f"The artifact would take {size} bytes; the format holds at most "
                         f"{_MAX_FILE_BYTES}. Compress the model further.")
    body = b"".join([_PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(header), zlib.crc32(header),
                                    size), header, *blocks])
    return body + hashlib.sha256(body).digest()


def write_artifact(path: str | os.PathLike, graph: dict[str, Any],
                   tensors: Mapping[str, np.ndarray], metadata: dict[str, Any], *,
                   fec: bool = False, entropy_coding: bool = True) -> Artifact:
    """Encode an artifact (see :func:`encode_artifact`), write it atomically, and return it."""
    content = encode_artifact(graph, tensors, metadata, fec=fec, entropy_coding=entropy_coding)
    atomic_write_bytes(path, content)
    return decode_artifact(content)


def _read_preamble(content: bytes) -> tuple[int, int, int]:
    """Check magic, version and length; return (parity, header length, header CRC)."""
    if len(content) < _PREAMBLE.size + _DIGEST_BYTES:
        raise ArtifactError(
            f"The file has {len(content)} bytes, fewer than the {_PREAMBLE.size + _DIGEST_BYTES} "
            f"of an empty artifact: it is truncated or not an artifact; {_REEXPORT}."
        )
    magic, version, parity, header_bytes, header_crc, size = _PREAMBLE.unpack_from(content)
    if magic != MAGIC:
        raise ArtifactError(
            f"The file starts with {magic!r}, not the artifact magic {MAGIC!r}: it is not a "
            f"satcompress flight artifact (or its first bytes are corrupted); {_REEXPORT}."
        )
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"The artifact has format version {version}; this satcompress reads version "
            f"{FORMAT_VERSION}. Re-export it with this satcompress version (or load it with the "
            "version that wrote it)."
        )
    if size != len(content):
        problem = ("is truncated" if len(content) < size
                   else f"has {len(content) - size} trailing bytes after the artifact")
        raise ArtifactError(
            f"The preamble announces {size} bytes but the file has {len(content)}: the file "
            f"{problem} (or its preamble is corrupted); {_REEXPORT}."
        )
    return parity, header_bytes, header_crc


def _parse_header(header: bytes) -> tuple[dict, dict, list]:
    where = "The artifact header (its CRC32 matches, so it was written so)"
    try:
        inflater = zlib.decompressobj()
        text = inflater.decompress(header, _MAX_HEADER_JSON_BYTES)
        if inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
            raise ArtifactError(f"{where} is not one complete zlib stream of at most "
                                f"{_MAX_HEADER_JSON_BYTES} bytes; {_REEXPORT}.")
        parsed = json.loads(text.decode("utf-8"))
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ArtifactError(f"{where} cannot be decoded ({error}); {_REEXPORT}.") from None
    if not (isinstance(parsed, dict) and isinstance(parsed.get("g"), dict)
            and isinstance(parsed.get("m"), dict) and isinstance(parsed.get("b"), list)):
        raise ArtifactError(f"{where} lacks the graph, metadata or block table; {_REEXPORT}.")
    return parsed["g"], parsed["m"], parsed["b"]


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_entry(position: int, entry: Any, names: set[str]) -> tuple:
    """Validate one block-table row; return (name, dtype, shape, stored bytes, crc, spec)."""
    if not (isinstance(entry, list) and len(entry) == 6):
        raise ArtifactError(f"Block table row {position} is malformed; {_REEXPORT}.")
    name, dtype, shape, stored, crc, spec = entry
    if not isinstance(name, str) or name in names:
        raise ArtifactError(f"Block table row {position} has a missing or repeated name "
                            f"{name!r}; {_REEXPORT}.")
    if (dtype not in SUPPORTED_DTYPES or not isinstance(shape, list)
            or not all(_is_count(n) for n in shape) or len(shape) > 32
            or not _is_count(stored) or not _is_count(crc) or not isinstance(spec, dict)):
        raise ArtifactError(f"Block {name!r}: its table row (dtype, shape, size, CRC or encoding) "
                            f"is malformed; {_REEXPORT}.")
    return name, np.dtype(dtype), tuple(shape), stored, crc, spec


def decode_artifact(content: bytes, *, max_decoded_bytes: int = MAX_DECODED_BYTES) -> Artifact:
    """Verify and decode an artifact's bytes.

    Parameters
    ----------
    content : bytes
        The file content (:func:`encode_artifact` output).
    max_decoded_bytes : int
        Refuse files whose tensors would take more memory than this once decoded.

    Returns
    -------
    Artifact
        Everything stored, tensors bit-exact.

    Raises
    ------
    ArtifactError
        For any truncated, corrupted, foreign or newer-format file, naming the bad part or block.
    """
    content = bytes(content)
    _, header_bytes, header_crc = _read_preamble(content)
    header_end = _PREAMBLE.size + header_bytes
    if header_end > len(content) - _DIGEST_BYTES:
        raise ArtifactError(f"The preamble announces a {header_bytes}-byte header, longer than "
                            f"the file: the preamble is corrupted; {_REEXPORT}.")
    header = content[_PREAMBLE.size:header_end]
    body, digest = content[:-_DIGEST_BYTES], content[-_DIGEST_BYTES:]
    digest_ok = hashlib.sha256(body).digest() == digest
    if zlib.crc32(header) != header_crc:
        raise ArtifactError(f"The artifact header fails its CRC32 check: the header is corrupted; "
                            f"{_REEXPORT}.")
    graph, metadata, table = _parse_header(header)
    entries, names, offset, decoded_total = [], set(), header_end, 0
    for position, row in enumerate(table):
        name, dtype, shape, stored, crc, spec = _check_entry(position, row, names)
        names.add(name)
        count = int(np.prod(shape, dtype=object))
        decoded_total += count * dtype.itemsize
        if decoded_total > max_decoded_bytes:
            raise ArtifactError(
                f"Block {name!r}: the tensors decode to more than {max_decoded_bytes} bytes; "
                "the file is corrupted or crafted. If it is genuine, pass a larger "
                "max_decoded_bytes."
            )
        if offset + stored > len(body):
            raise ArtifactError(f"Block {name!r} extends past the end of the file: the file is "
                                f"truncated or its block table corrupted; {_REEXPORT}.")
        data = content[offset:offset + stored]
        if zlib.crc32(data) != crc:
            raise ArtifactError(f"Block {name!r} fails its CRC32 check: the block is corrupted; "
                                f"{_REEXPORT}.")
        entries.append((name, dtype, shape, data, crc, spec))
        offset += stored
    if offset != len(body):
        raise ArtifactError(f"The blocks end at byte {offset} but the digest starts at "
                            f"{len(body)}: the block table is corrupted; {_REEXPORT}.")
    if not digest_ok:
        raise ArtifactError(
            "The file's SHA-256 does not match its content although the header and every block "
            f"pass their CRC32: the preamble or the digest is corrupted; {_REEXPORT}."
        )
    tensors, blocks = {}, []
    for name, dtype, shape, data, crc, spec in entries:
        try:
            tensors[name] = decode_tensor(data, spec, dtype, shape)
        except ArtifactError as error:
            raise ArtifactError(f"Block {name!r} cannot be decoded: it {error}; "
                                f"{_REEXPORT}.") from None
        blocks.append(BlockInfo(name, str(spec.get("e")), len(data), tensors[name].nbytes, crc,
                                shape, dtype.name))
    return Artifact(FORMAT_VERSION, graph, metadata, tensors, tuple(blocks),
                    digest.hex(), len(content))


def read_artifact(path: str | os.PathLike) -> Artifact:
    """Read, verify and decode the artifact file at ``path`` (see :func:`decode_artifact`)."""
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as error:
        raise ArtifactError(f"Cannot read the artifact {path}: {error.strerror}. Check the "
                            "path (artifacts end in .sca).") from None
    return decode_artifact(content)
