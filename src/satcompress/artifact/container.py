"""The flight artifact container: one versioned, checksummed file holding a model.

Byte layout of format version 1 (all integers little-endian, fixed widths)::

    offset  bytes  field
    0       4      magic b"SCAF"
    4       2      format version (uint16), currently 1
    6       1      Reed-Solomon parity bytes per codeword, p (uint8; 0: no forward error correction)
    7       4      header length H in bytes (uint32)
    11      4      CRC32 of the header (uint32, zlib.crc32)
    15      4      file length in bytes (uint32): the whole file, parity included
    19      H      header: zlib-compressed UTF-8 JSON
                   {"g": graph, "m": metadata,
                    "b": [[name, dtype, shape, stored bytes, CRC32, encoding spec], ...]}
    19+H    ...    one block per tensor, in table order: the tensor's encoded bytes
    end-32  32     SHA-256 of every byte before it

With forward error correction (``p > 0``, :mod:`satcompress.artifact.fec`) the same *content*
is stored as Reed-Solomon codewords, so that every byte of the file is protected::

    0       19     preamble, as above
    19      8      RS parity of the preamble (a fixed 8 bytes: found even when byte 6 is hit)
    27      ...    header, blocks and digest (bytes 19.. of the content above) cut into chunks
                   of 255 - p bytes, each followed by its p parity bytes (last chunk shorter)

It costs ``8 + p * ceil((size - 19) / (255 - p))`` bytes (3.2 % of the content for the writer's
p = 8) and corrects up to p / 2 wrong bytes per 255-byte codeword, hence every single-bit upset.
The CRC32s and the SHA-256 are those of the content (parity removed), and are checked *after*
correction, so a codeword damaged beyond repair (or miscorrected) is still caught by the CRC32
of the block it belongs to. A file without FEC is byte for byte what it was before FEC existed.

A loader checks, before decoding any tensor: the magic, the version, the length (truncation,
trailing bytes), then corrects the codewords (FEC files), then checks the SHA-256 and the CRC32
of the header and of every block; a mismatch raises :class:`ArtifactError` naming the bad part.
Before allocating, it also checks the file against its :class:`~satcompress.artifact.limits.
LoadLimits` (file size, inflated header, every declared shape, total decoded bytes) and that no
block stores more bytes than its tensor decodes to (the writer keeps the smallest encoding, so
never more than the raw bytes): a file beyond a limit raises :class:`ArtifactError` naming it.
Pure NumPy + stdlib + reedsolo: part of the flight path.
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
from typing import Any, NamedTuple

import numpy as np

from satcompress.artifact.encodings import SUPPORTED_DTYPES, decode_tensor, encode_tensor
from satcompress.artifact.errors import REEXPORT, ArtifactError, shown
from satcompress.artifact.fec import (
    CODEWORD_BYTES,
    FEC_PARITY_BYTES,
    protect,
    protected_size,
    repair,
)
from satcompress.artifact.limits import LoadLimits
from satcompress.fileio import atomic_write_bytes

__all__ = [
    "ARTIFACT_SUFFIX",
    "FORMAT_VERSION",
    "MAGIC",
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

_PREAMBLE = struct.Struct("<4sHBIII")
_DIGEST_BYTES = 32
_MAX_FILE_BYTES = 2**32 - 1
_PREAMBLE_PARITY = 8
"""Reed-Solomon parity bytes after an FEC file's preamble (fixed: read before the preamble)."""
_FEC_START = _PREAMBLE.size + _PREAMBLE_PARITY


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
        Bytes of the encoded block in the file (its share of the file size, FEC parity aside).
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
    fec_parity : int
        Reed-Solomon parity bytes per 255-byte codeword (0: the file has no forward error
        correction).
    """

    format_version: int
    graph: dict[str, Any]
    metadata: dict[str, Any]
    tensors: dict[str, np.ndarray] = field(repr=False)
    blocks: tuple[BlockInfo, ...]
    sha256: str
    size_bytes: int
    corrected_bytes: int = 0
    fec_parity: int = 0

    @property
    def overhead_bytes(self) -> int:
        """Bytes of the file that are not tensor blocks (preamble, header, digest, FEC parity)."""
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
        Store everything as Reed-Solomon codewords (8 parity bytes per 255-byte codeword,
        :data:`~satcompress.artifact.fec.FEC_PARITY_BYTES`; about 3.2 % larger) so that up to
        4 wrong bytes per codeword, hence any single-bit upset, are corrected on load.
    entropy_coding : bool
        Allow Huffman-coded encodings (off: only fixed-width ones).

    Returns
    -------
    bytes
        The file content; :func:`decode_artifact` restores everything exactly.
    """
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
    parity = FEC_PARITY_BYTES if fec else 0
    after_preamble = len(header) + sum(map(len, blocks)) + _DIGEST_BYTES
    size = _PREAMBLE.size + (_PREAMBLE_PARITY + protected_size(after_preamble, parity) if fec
                             else after_preamble)
    if size > _MAX_FILE_BYTES:
        raise ValueError(f"The artifact would take {size} bytes; the format holds at most "
                         f"{_MAX_FILE_BYTES}. Compress the model further.")
    preamble = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, parity, len(header), zlib.crc32(header),
                              size)
    body = b"".join([preamble, header, *blocks])
    content = body + hashlib.sha256(body).digest()
    if not fec:
        return content
    return protect(preamble, _PREAMBLE_PARITY) + protect(content[_PREAMBLE.size:], parity)


def write_artifact(path: str | os.PathLike, graph: dict[str, Any],
                   tensors: Mapping[str, np.ndarray], metadata: dict[str, Any], *,
                   fec: bool = False, entropy_coding: bool = True) -> Artifact:
    """Encode an artifact (see :func:`encode_artifact`), write it atomically, and return it."""
    content = encode_artifact(graph, tensors, metadata, fec=fec, entropy_coding=entropy_coding)
    atomic_write_bytes(path, content)
    return decode_artifact(content)


class _Preamble(NamedTuple):
    magic: bytes
    version: int
    parity: int
    header_bytes: int
    header_crc: int
    size: int


def _read_preamble(content: bytes) -> tuple[_Preamble, int]:
    """Check magic, version, FEC parity and length; return the preamble and bytes corrected.

    The preamble of an FEC file is one Reed-Solomon codeword with the next 8 bytes: when that
    codeword decodes to an artifact preamble announcing FEC, the repaired fields are used (so
    an upset in the magic, the parity byte or the length is corrected); otherwise the bytes as
    read, which must then announce no FEC.
    """
    if len(content) < _PREAMBLE.size + _DIGEST_BYTES:
        raise ArtifactError(
            f"The file has {len(content)} bytes, fewer than the {_PREAMBLE.size + _DIGEST_BYTES} "
            f"of an empty artifact: it is truncated or not an artifact; {REEXPORT}."
        )
    preamble, corrected, guarded = _Preamble._make(_PREAMBLE.unpack_from(content)), 0, False
    codeword = repair(content[:_FEC_START], _PREAMBLE_PARITY)
    if not codeword.failed:
        candidate = _Preamble._make(_PREAMBLE.unpack(codeword.data))
        if candidate.magic == MAGIC and candidate.parity:
            preamble, corrected, guarded = candidate, codeword.corrected, True
    if preamble.magic != MAGIC:
        raise ArtifactError(
            f"The file starts with {preamble.magic!r}, not the artifact magic {MAGIC!r}: it is "
            f"not a satcompress flight artifact (or its first bytes are corrupted); {REEXPORT}."
        )
    if preamble.version != FORMAT_VERSION:
        raise ArtifactError(
            f"The artifact has format version {preamble.version}; this satcompress reads version "
            f"{FORMAT_VERSION}. Re-export it with this satcompress version (or load it with the "
            "version that wrote it)."
        )
    if preamble.parity and not (guarded and preamble.parity < CODEWORD_BYTES):
        raise ArtifactError(
            f"The preamble announces {preamble.parity} Reed-Solomon parity bytes per codeword, "
            "but its own parity does not check (or the count is impossible): the preamble is "
            f"corrupted beyond repair; {REEXPORT}."
        )
    if preamble.size != len(content):
        problem = ("is truncated" if len(content) < preamble.size
                   else f"has {len(content) - preamble.size} trailing bytes after the artifact")
        raise ArtifactError(
            f"The preamble announces {preamble.size} bytes but the file has {len(content)}: the "
            f"file {problem} (or its preamble is corrupted); {REEXPORT}."
        )
    return preamble, corrected


def _refuse_constant(name: str) -> None:
    raise ValueError(f"non-finite number {name}")


def _parse_header(header: bytes, limits: LoadLimits) -> tuple[dict, dict, list]:
    """The graph, metadata and block table; inflated to at most ``limits.max_header_bytes``."""
    where = "The artifact header (its CRC32 matches, so it was written so)"
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(header, limits.max_header_bytes + 1)
    except zlib.error as error:
        raise ArtifactError(f"{where} cannot be inflated ({error}); {REEXPORT}.") from None
    if len(text) > limits.max_header_bytes:
        raise limits.exceeded("max_header_bytes", "The artifact header inflates to more than "
                              f"{limits.max_header_bytes} bytes of JSON")
    if inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
        raise ArtifactError(f"{where} is not one complete zlib stream; {REEXPORT}.")
    try:
        parsed = json.loads(text.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError, JSONDecodeError too
        raise ArtifactError(f"{where} cannot be decoded ({shown(str(error))}); "
                            f"{REEXPORT}.") from None
    if not (isinstance(parsed, dict) and isinstance(parsed.get("g"), dict)
            and isinstance(parsed.get("m"), dict) and isinstance(parsed.get("b"), list)):
        raise ArtifactError(f"{where} lacks the graph, metadata or block table; {REEXPORT}.")
    return parsed["g"], parsed["m"], parsed["b"]


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_entry(position: int, entry: Any, names: set[str], limits: LoadLimits) -> tuple:
    """Validate one block-table row; return (name, dtype, shape, element count, stored bytes,
    crc, spec)."""
    if not (isinstance(entry, list) and len(entry) == 6):
        raise ArtifactError(f"Block table row {position} is malformed; {REEXPORT}.")
    name, dtype, shape, stored, crc, spec = entry
    if not isinstance(name, str) or name in names:
        raise ArtifactError(f"Block table row {position} has a missing or repeated name "
                            f"{shown(name)}; {REEXPORT}.")
    if (not isinstance(dtype, str) or dtype not in SUPPORTED_DTYPES or not _is_count(stored)
            or not _is_count(crc) or not isinstance(spec, dict)):
        raise ArtifactError(f"Block {shown(name)}: its table row (dtype, shape, size, CRC or "
                            f"encoding) is malformed; {REEXPORT}.")
    count = limits.check_shape(shape, f"Block {shown(name)}")
    return name, np.dtype(dtype), tuple(shape), count, stored, crc, spec


def decode_artifact(content: bytes, *, limits: LoadLimits = LoadLimits()) -> Artifact:
    """Verify, correct (FEC files) and decode an artifact's bytes.

    Parameters
    ----------
    content : bytes
        The file content (:func:`encode_artifact` output).
    limits : LoadLimits
        What the file may cost to load (size, header, shapes, decoded bytes); checked before
        allocating.

    Returns
    -------
    Artifact
        Everything stored, tensors bit-exact; ``corrected_bytes`` counts the bytes forward
        error correction repaired.

    Raises
    ------
    ArtifactError
        For any truncated, corrupted (beyond what its FEC repairs), foreign or newer-format
        file, naming the bad part or block, and for a file beyond one of ``limits``.
    """
    if len(content) > limits.max_file_bytes:
        raise limits.exceeded("max_file_bytes", f"The file has {len(content)} bytes")
    content = bytes(content)
    size = len(content)
    preamble, corrected = _read_preamble(content)
    damage = "corrupted"
    if preamble.parity:
        repaired = repair(content[_FEC_START:], preamble.parity)
        content = _PREAMBLE.pack(*preamble) + repaired.data
        corrected += repaired.corrected
        if repaired.failed:
            damage = "corrupted beyond what its Reed-Solomon codes correct"
    header_end = _PREAMBLE.size + preamble.header_bytes
    if header_end > len(content) - _DIGEST_BYTES:
        raise ArtifactError(f"The preamble announces a {preamble.header_bytes}-byte header, longer "
                            f"than the file: the preamble is {damage}; {REEXPORT}.")
    header = content[_PREAMBLE.size:header_end]
    body, digest = content[:-_DIGEST_BYTES], content[-_DIGEST_BYTES:]
    digest_ok = hashlib.sha256(body).digest() == digest
    if zlib.crc32(header) != preamble.header_crc:
        raise ArtifactError(f"The artifact header fails its CRC32 check: the header (or the "
                            f"preamble's header length or CRC) is {damage}; {REEXPORT}.")
    graph, metadata, table = _parse_header(header, limits)
    entries, names, offset, decoded_total = [], set(), header_end, 0
    for position, row in enumerate(table):
        name, dtype, shape, count, stored, crc, spec = _check_entry(position, row, names, limits)
        names.add(name)
        decoded_total += count * dtype.itemsize
        if decoded_total > limits.max_decoded_bytes:
            raise limits.exceeded("max_decoded_bytes", f"Block {shown(name)}: the tensors "
                                  f"up to it decode to {decoded_total} bytes")
        if stored > count * dtype.itemsize:
            raise ArtifactError(f"Block {shown(name)} stores {stored} bytes, more than the "
                                f"{count * dtype.itemsize} its tensor decodes to (the writer "
                                f"never stores more than the raw bytes); {REEXPORT}.")
        if offset + stored > len(body):
            raise ArtifactError(f"Block {shown(name)} extends past the end of the file: the file "
                                f"is truncated or its block table corrupted; {REEXPORT}.")
        data = content[offset:offset + stored]
        if zlib.crc32(data) != crc:
            raise ArtifactError(f"Block {shown(name)} fails its CRC32 check: the block is "
                                f"{damage}; {REEXPORT}.")
        entries.append((name, dtype, shape, data, crc, spec))
        offset += stored
    if offset != len(body):
        raise ArtifactError(f"The blocks end at byte {offset} but the digest starts at "
                            f"{len(body)}: the block table is corrupted; {REEXPORT}.")
    if not digest_ok:
        raise ArtifactError(
            "The file's SHA-256 does not match its content although the header and every block "
            f"pass their CRC32: the preamble or the digest is {damage}; {REEXPORT}."
        )
    tensors, blocks = {}, []
    for name, dtype, shape, data, crc, spec in entries:
        try:
            tensors[name] = decode_tensor(data, spec, dtype, shape)
        except ArtifactError as error:
            raise ArtifactError(f"Block {shown(name)} cannot be decoded: it {error}; "
                                f"{REEXPORT}.") from None
        blocks.append(BlockInfo(name, str(spec.get("e")), len(data), tensors[name].nbytes, crc,
                                shape, dtype.name))
    return Artifact(FORMAT_VERSION, graph, metadata, tensors, tuple(blocks), digest.hex(), size,
                    corrected, preamble.parity)


def read_artifact(path: str | os.PathLike, *, limits: LoadLimits = LoadLimits()) -> Artifact:
    """Read, verify and decode the artifact file at ``path`` (see :func:`decode_artifact`);
    a file larger than ``limits.max_file_bytes`` is refused before it is read."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > limits.max_file_bytes:
                raise limits.exceeded("max_file_bytes", f"The file {path} has {size} bytes")
            content = file.read(limits.max_file_bytes + 1)
    except OSError as error:
        raise ArtifactError(f"Cannot read the artifact {path}: {error.strerror}. Check the "
                            "path (artifacts end in .sca).") from None
    return decode_artifact(content, limits=limits)
