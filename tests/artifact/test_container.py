"""The flight artifact container: exact round trips, the byte layout, CRC32 / SHA-256 integrity,
Reed-Solomon forward error correction, and a loader that only ever raises ArtifactError."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from satcompress.artifact import (
    ARTIFACT_SUFFIX,
    FORMAT_VERSION,
    MAGIC,
    ArtifactError,
    LoadLimits,
    decode_artifact,
    encode_artifact,
    read_artifact,
    write_artifact,
)
from satcompress.artifact.fec import CODEWORD_BYTES, FEC_PARITY_BYTES, protect, protected_size

PREAMBLE = struct.Struct("<4sHBIII")
DIGEST = 32
FEC_START = PREAMBLE.size + 8  # the preamble's own 8 parity bytes follow it
FUZZ = settings(derandomize=True, max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
GRAPH = {"format": "test", "nodes": [{"op": "Gemm", "in": ["x", "w"], "out": ["y"]}]}
METADATA = {"task": "tiny", "class_names": ["a", "b"], "input_shape": (6,)}


def every_encoding() -> dict[str, np.ndarray]:
    """Tensors whose smallest encodings are, in order, each encoding, plus awkward shapes."""
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=16).astype(np.float32)
    return {
        "raw": rng.normal(size=(5, 4)).astype(np.float32),
        "pack": np.tile(np.arange(-7, 8, dtype=np.int8), 20),
        "huffman": np.minimum(rng.geometric(0.5, size=500), 30).astype(np.int16),
        "codebook": centroids[rng.integers(0, 16, size=(32, 16))],
        "sparse": np.where(rng.random(1000) < 0.1, rng.normal(size=1000), 0).astype(np.float32),
        "mask": rng.random(30) < 0.5,
        "scalar": np.array(-0.0, dtype=np.float16),
        "empty": np.zeros((0, 4), dtype=np.int64),
        "extremes": np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max], dtype=np.int64),
        "bytes": np.arange(256, dtype=np.uint8).reshape(16, 16),
        "counts": np.arange(12, dtype=np.int32).reshape(3, 4) * 1000,
    }


def small() -> dict[str, np.ndarray]:
    """A tiny model: two small blocks (for exhaustive bit flipping)."""
    return {"w": np.arange(-3, 4, dtype=np.int8), "b": np.array([0.5, -1.25], dtype=np.float32)}


def assert_same_tensors(loaded: dict[str, np.ndarray], original: dict[str, np.ndarray]) -> None:
    assert list(loaded) == list(original)
    for name, array in original.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape, name
        assert loaded[name].tobytes() == array.tobytes(), name


@pytest.fixture(scope="module")
def plain() -> bytes:
    return encode_artifact({"op": "tiny"}, small(), {"task": "tiny"})


@pytest.fixture(scope="module")
def protected() -> bytes:
    return encode_artifact({"op": "tiny"}, small(), {"task": "tiny"}, fec=True)


def regions(content: bytes) -> list[tuple[int, int, str]]:
    """``(start, stop, part)`` of the preamble, header, every block and the digest of a file
    without FEC; ``part`` is what a load error about that range must name."""
    header_bytes = PREAMBLE.unpack_from(content)[3]
    parts = [(0, PREAMBLE.size, ""), (PREAMBLE.size, PREAMBLE.size + header_bytes, "header")]
    offset = PREAMBLE.size + header_bytes
    for block in decode_artifact(content).blocks:
        parts.append((offset, offset + block.stored_bytes, f"Block {block.name!r}"))
        offset += block.stored_bytes
    return parts + [(offset, len(content), "SHA-256")]


def physical(logical: int) -> int:
    """Where byte ``logical`` (>= 19) of an FEC file's content lies in the file."""
    chunk, within = divmod(logical - PREAMBLE.size, CODEWORD_BYTES - FEC_PARITY_BYTES)
    return FEC_START + chunk * CODEWORD_BYTES + within


def seal(graph: dict, metadata: dict, table: list, blocks: list[bytes], *,
         parity: int = 0) -> bytes:
    """An artifact built from the layout the container documents (independently of it)."""
    header = zlib.compress(json.dumps({"g": graph, "m": metadata, "b": table},
                                      separators=(",", ":"), ensure_ascii=False).encode(), 9)
    after = len(header) + sum(map(len, blocks)) + DIGEST
    size = PREAMBLE.size + (8 + protected_size(after, parity) if parity else after)
    preamble = PREAMBLE.pack(MAGIC, FORMAT_VERSION, parity, len(header), zlib.crc32(header), size)
    body = preamble + header + b"".join(blocks)
    content = body + hashlib.sha256(body).digest()
    if not parity:
        return content
    return protect(preamble, 8) + protect(content[PREAMBLE.size:], parity)


def unseal(content: bytes) -> tuple[dict, dict, list, list[bytes]]:
    """The graph, metadata, block table and blocks of a file without FEC."""
    header_bytes = PREAMBLE.unpack_from(content)[3]
    parsed = json.loads(zlib.decompress(content[PREAMBLE.size:PREAMBLE.size + header_bytes]))
    blocks, offset = [], PREAMBLE.size + header_bytes
    for row in parsed["b"]:
        blocks.append(content[offset:offset + row[3]])
        offset += row[3]
    return parsed["g"], parsed["m"], parsed["b"], blocks


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fec", [False, True])
def test_every_block_type_round_trips_exactly(fec):
    tensors = every_encoding()
    content = encode_artifact(GRAPH, tensors, METADATA, fec=fec)
    artifact = decode_artifact(content)
    assert_same_tensors(artifact.tensors, tensors)
    assert artifact.graph == GRAPH
    assert artifact.metadata == {**METADATA, "input_shape": [6]}  # JSON: tuples come back lists
    assert artifact.format_version == FORMAT_VERSION and artifact.size_bytes == len(content)
    assert artifact.corrected_bytes == 0 and artifact.fec_parity == (FEC_PARITY_BYTES if fec else 0)
    chosen = {block.name: block.encoding for block in artifact.blocks}
    for encoding in ("raw", "pack", "huffman", "codebook", "sparse"):
        assert chosen[encoding] == encoding
    for block, (name, array) in zip(artifact.blocks, tensors.items()):
        assert (block.name, block.dtype, block.shape, block.raw_bytes) \
            == (name, array.dtype.name, array.shape, array.nbytes)
    assert artifact.overhead_bytes == len(content) - sum(b.stored_bytes for b in artifact.blocks)
    assert [row["name"] for row in artifact.describe()] == list(tensors)


def test_without_entropy_coding_no_block_is_huffman_coded():
    artifact = decode_artifact(encode_artifact(GRAPH, every_encoding(), METADATA,
                                               entropy_coding=False))
    assert_same_tensors(artifact.tensors, every_encoding())
    assert "huffman" not in {block.encoding for block in artifact.blocks}


def test_the_file_without_fec_has_exactly_the_documented_layout():
    tensors = every_encoding()
    content = encode_artifact(GRAPH, tensors, METADATA)
    magic, version, parity, header_bytes, header_crc, size = PREAMBLE.unpack_from(content)
    assert (magic, version, parity, size) == (b"SCAF", 1, 0, len(content))
    header = content[PREAMBLE.size:PREAMBLE.size + header_bytes]
    assert zlib.crc32(header) == header_crc
    assert content[-DIGEST:] == hashlib.sha256(content[:-DIGEST]).digest()
    assert decode_artifact(content).sha256 == content[-DIGEST:].hex()
    graph, metadata, table, blocks = unseal(content)
    for row, block in zip(table, blocks):
        assert zlib.crc32(block) == row[4]
    assert seal(graph, metadata, table, blocks) == content


def test_the_fec_file_is_the_same_content_as_reed_solomon_codewords():
    tensors = every_encoding()
    plain_content = encode_artifact(GRAPH, tensors, METADATA)
    content = encode_artifact(GRAPH, tensors, METADATA, fec=True)
    assert len(content) == FEC_START + protected_size(len(plain_content) - PREAMBLE.size,
                                                      FEC_PARITY_BYTES)
    assert PREAMBLE.unpack_from(content)[2:] == (
        FEC_PARITY_BYTES, *PREAMBLE.unpack_from(plain_content)[3:5], len(content))
    assert seal(*unseal(plain_content), parity=FEC_PARITY_BYTES) == content
    overhead = len(content) / len(plain_content) - 1
    assert 0.03 < overhead < 0.045  # 8 / 247 per codeword, plus the preamble's 8 bytes


def test_write_then_read_gives_the_same_artifact(tmp_path):
    path = tmp_path / f"model{ARTIFACT_SUFFIX}"
    written = write_artifact(path, GRAPH, every_encoding(), METADATA, fec=True)
    loaded = read_artifact(path)
    assert path.stat().st_size == written.size_bytes == loaded.size_bytes
    assert loaded.sha256 == written.sha256 and loaded.blocks == written.blocks
    assert_same_tensors(loaded.tensors, every_encoding())
    assert list(tmp_path.iterdir()) == [path]  # atomic: no temporary left behind


@pytest.mark.parametrize("tensors, graph, metadata, message", [
    ({"z": np.zeros(2, np.complex64)}, {}, {}, r"dtype complex64.*astype"),
    ({"": np.zeros(2, np.float32)}, {}, {}, "non-empty strings"),
    ({"w": np.zeros(2, np.float32)}, {}, {"scale": np.float32(1)}, r"JSON-serialisable.*tolist"),
    ({"w": np.zeros(2, np.float32)}, {}, {"scale": float("nan")}, "JSON-serialisable"),
    ({"w": np.zeros(2, np.float32)}, [], {}, "must be dicts"),
])
def test_the_writer_refuses_what_it_cannot_store(tensors, graph, metadata, message):
    with pytest.raises(ValueError, match=message):
        encode_artifact(graph, tensors, metadata)


# --------------------------------------------------------------------------- integrity


def test_crc_catches_every_single_bit_flip_naming_the_bad_part(plain):
    for start, stop, part in regions(plain):
        for bit in range(8 * start, 8 * stop):
            damaged = bytearray(plain)
            damaged[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(ArtifactError) as error:
                decode_artifact(bytes(damaged))
            assert part in str(error.value), (bit, str(error.value))
            assert "re-export" in str(error.value).lower() or "version" in str(error.value)


def test_fec_corrects_every_single_bit_flip_anywhere_in_the_file(protected):
    intact = decode_artifact(protected)
    for bit in range(8 * len(protected)):
        damaged = bytearray(protected)
        damaged[bit // 8] ^= 1 << (bit % 8)
        loaded = decode_artifact(bytes(damaged))
        assert loaded.corrected_bytes == 1, bit
        assert loaded.sha256 == intact.sha256 and loaded.blocks == intact.blocks, bit
        assert_same_tensors(loaded.tensors, small())


def test_fec_corrects_four_wrong_bytes_in_every_codeword():
    tensors = every_encoding()
    content = bytearray(encode_artifact(GRAPH, tensors, METADATA, fec=True))
    rng = np.random.default_rng(1)
    hits = [int(p) for p in rng.choice(FEC_START, 4, replace=False)]
    for start in range(FEC_START, len(content), CODEWORD_BYTES):
        length = min(CODEWORD_BYTES, len(content) - start)
        hits += [start + int(p) for p in rng.choice(length, 4, replace=False)]
    for position in hits:
        content[position] ^= int(rng.integers(1, 256))
    loaded = decode_artifact(bytes(content))
    assert loaded.corrected_bytes == len(hits)
    assert_same_tensors(loaded.tensors, tensors)


def test_a_burst_beyond_fec_capacity_fails_naming_the_block():
    tensors = {"first": np.arange(10, dtype=np.int32),
               "weights": np.random.default_rng(2).normal(size=400).astype(np.float32)}
    plain_content = encode_artifact(GRAPH, tensors, METADATA)
    content = bytearray(encode_artifact(GRAPH, tensors, METADATA, fec=True))
    start, stop, _ = regions(plain_content)[-2]  # the "weights" block
    middle = physical((start + stop) // 2)
    content[middle:middle + 12] = bytes(12)  # 12 bytes wiped: more than 4 per codeword
    with pytest.raises(ArtifactError, match=r"Block 'weights' fails its CRC32 check: the block is "
                                            r"corrupted beyond what its Reed-Solomon codes"):
        decode_artifact(bytes(content))


def test_an_fec_preamble_damaged_beyond_repair_is_an_error(protected):
    damaged = bytearray(protected)
    damaged[4:14] = bytes(10)  # version, parity, lengths: 10 bytes of 27 wiped
    with pytest.raises(ArtifactError):
        decode_artifact(bytes(damaged))


@pytest.mark.parametrize("fec", [False, True])
def test_a_newer_format_version_is_refused_saying_what_to_do(fec):
    graph, metadata, table, blocks = unseal(encode_artifact(GRAPH, small(), METADATA))
    content = bytearray(seal(graph, metadata, table, blocks, parity=8 if fec else 0))
    content[4:6] = struct.pack("<H", 2)
    if fec:  # a genuine version-2 preamble, with its parity
        content[:FEC_START] = protect(bytes(content[:PREAMBLE.size]), 8)
    with pytest.raises(ArtifactError, match=r"format version 2; this satcompress reads version "
                                            r"1\. Re-export it with this satcompress version"):
        decode_artifact(bytes(content))


@pytest.mark.parametrize("content, message", [
    (b"", "0 bytes, fewer than the 51 of an empty artifact: it is truncated or not an artifact"),
    (b"SCAF\x01\x00", "fewer than the 51"),
    (b"\x89PNG\r\n\x1a\n" + bytes(100), r"starts with b'\\x89PNG', not the artifact magic "
                                        r"b'SCAF': it is not a satcompress flight artifact"),
    (b"PK\x03\x04" + bytes(60), "not a satcompress flight artifact"),
])
def test_foreign_or_empty_files_are_refused(content, message):
    with pytest.raises(ArtifactError, match=message):
        decode_artifact(content)


@pytest.mark.parametrize("fixture", ["plain", "protected"])
def test_every_truncation_and_trailing_bytes_are_refused(fixture, request):
    content = request.getfixturevalue(fixture)
    for length in range(len(content)):
        with pytest.raises(ArtifactError):
            decode_artifact(content[:length])
    with pytest.raises(ArtifactError, match="is truncated"):
        decode_artifact(content[:-1])
    with pytest.raises(ArtifactError, match="has 3 trailing bytes after the artifact"):
        decode_artifact(content + b"abc")


def test_reading_a_missing_file_says_what_to_check(tmp_path):
    with pytest.raises(ArtifactError, match=r"Cannot read the artifact .*Check the path"):
        read_artifact(tmp_path / "missing.sca")


def test_tensors_decoding_to_more_than_the_limit_are_refused_before_allocation():
    content = encode_artifact(GRAPH, {"w": np.zeros(1000, np.float32)}, METADATA)
    with pytest.raises(ArtifactError, match=r"Block 'w': the tensors up to it decode to 4000 "
                                            r"bytes, beyond the loader's limit "
                                            r"max_decoded_bytes=1000"):
        decode_artifact(content, limits=LoadLimits(max_decoded_bytes=1000))
    graph, metadata, table, blocks = unseal(content)
    table[0][2] = [2**40, 2**40]  # a crafted shape, CRC and SHA-256 valid
    with pytest.raises(ArtifactError, match="max_tensor_elements"):
        decode_artifact(seal(graph, metadata, table, blocks))


# --------------------------------------------------------------------------- property tests


@FUZZ
@given(content=st.binary(max_size=300), prefix=st.sampled_from([b"", b"SCAF", b"SCAF\x01\x00",
                                                                 b"SCAF\x01\x00\x08"]))
def test_random_bytes_only_ever_raise_artifact_error(content, prefix):
    with pytest.raises(ArtifactError):
        decode_artifact(prefix + content)


MUTATION = st.tuples(st.sampled_from(["flip", "insert", "delete", "overwrite"]),
                     st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=6))


def mutate(content: bytes, mutations: list[tuple[str, float, bytes]]) -> bytes:
    data = bytearray(content)
    for kind, where, payload in mutations:
        position = int(where * len(data)) if data else 0
        if kind == "flip" and data:
            data[position] ^= payload[0] or 1
        elif kind == "insert":
            data[position:position] = payload
        elif kind == "delete":
            del data[position:position + len(payload)]
        else:
            data[position:position + len(payload)] = payload
    return bytes(data)


@FUZZ
@given(fec=st.booleans(), mutations=st.lists(MUTATION, min_size=1, max_size=4))
def test_mutated_files_load_exactly_or_raise_artifact_error(fec, mutations):
    tensors = every_encoding()
    content = mutate(encode_artifact(GRAPH, tensors, METADATA, fec=fec), mutations)
    try:
        loaded = decode_artifact(content)
    except ArtifactError:
        return
    # Never silently wrong: what loads is exactly what was written (FEC repaired it).
    assert_same_tensors(loaded.tensors, tensors)
    assert (loaded.graph, loaded.metadata) == (GRAPH, {**METADATA, "input_shape": [6]})


JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                    | st.integers(-2, 300) | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=4),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=3), inner, max_size=4), max_leaves=8)


def replace_somewhere(value, draw):
    """``value`` with one nested element (possibly itself) replaced by drawn JSON."""
    children = (list(range(len(value))) if isinstance(value, list)
                else list(value) if isinstance(value, dict) else [])
    if not children or draw(st.integers(0, 3)) == 0:
        return draw(JSON)
    key = draw(st.sampled_from(children))
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[key] = replace_somewhere(value[key], draw)
    return copy


@FUZZ
@given(draw=st.data(), fec=st.booleans())
def test_crafted_files_with_valid_checksums_load_or_raise_artifact_error(draw, fec):
    """Mutations a CRC cannot see: the block table, the specs and the blocks are rewritten,
    and every CRC32, length and the SHA-256 recomputed (a buggy or hostile writer)."""
    graph, metadata, table, blocks = unseal(encode_artifact(GRAPH, every_encoding(), METADATA))
    row = draw.draw(st.integers(0, len(table) - 1))
    if draw.draw(st.booleans()):
        table[row] = replace_somewhere(table[row], draw.draw)
    else:
        blocks[row] = mutate(blocks[row], draw.draw(st.lists(MUTATION, min_size=1, max_size=3)))
        if isinstance(table[row], list) and len(table[row]) == 6:
            table[row][3], table[row][4] = len(blocks[row]), zlib.crc32(blocks[row])
    if draw.draw(st.booleans()):
        table = replace_somewhere(table, draw.draw) if draw.draw(st.booleans()) else table[::-1]
    content = seal(graph, metadata, table, blocks, parity=8 if fec else 0)
    try:
        loaded = decode_artifact(content, limits=LoadLimits(max_decoded_bytes=2**16))
    except ArtifactError:
        return
    assert loaded.size_bytes == len(content)
