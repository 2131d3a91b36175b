"""The container's load limits: file size, inflated header, declared shapes and decoded bytes
are checked before anything is allocated, and a file beyond one names the limit to raise."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from satcompress.artifact import (
    MAGIC,
    ArtifactError,
    LoadLimits,
    decode_artifact,
    encode_artifact,
    read_artifact,
)

PREAMBLE = struct.Struct("<4sHBIII")


def sealed(header: bytes, blocks: bytes = b"") -> bytes:
    """An artifact of a raw JSON ``header`` (zlib-compressed here), every checksum valid."""
    compressed = zlib.compress(header, 9)
    size = PREAMBLE.size + len(compressed) + len(blocks) + 32
    body = PREAMBLE.pack(MAGIC, 1, 0, len(compressed), zlib.crc32(compressed), size)
    body += compressed + blocks
    return body + hashlib.sha256(body).digest()


def with_shape(shape: object, dtype: str = "float32") -> bytes:
    """An artifact whose one (empty) block declares ``shape``, checksums valid."""
    row = ["w", dtype, shape, 0, zlib.crc32(b""), {"e": "raw"}]
    return sealed(json.dumps({"g": {}, "m": {}, "b": [row]}).encode())


def padded_header(json_bytes: int) -> bytes:
    """An artifact whose header is exactly ``json_bytes`` of JSON."""
    skeleton = b'{"g":{},"m":{"pad":""},"b":[]}'
    return sealed(skeleton.replace(b'""', b'"' + b"a" * (json_bytes - len(skeleton)) + b'"'))


def test_the_defaults_fit_a_flight_computer():
    assert dataclasses.asdict(LoadLimits()) == {
        "max_file_bytes": 32 * 2**20, "max_header_bytes": 256 * 2**10,
        "max_decoded_bytes": 32 * 2**20, "max_tensor_elements": 2**22, "max_dims": 8,
        "max_nodes": 4096, "max_folded_bytes": 32 * 2**20, "max_activation_bytes": 32 * 2**20}


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "8", None])
def test_a_limit_must_be_a_positive_integer(value):
    with pytest.raises(ValueError, match="LoadLimits.max_dims must be a positive integer"):
        LoadLimits(max_dims=value)


def test_a_header_of_exactly_the_limit_loads_and_one_byte_more_is_refused():
    limits = LoadLimits(max_header_bytes=5000)
    assert decode_artifact(padded_header(5000), limits=limits).metadata["pad"] == "a" * 4970
    with pytest.raises(ArtifactError, match=r"header inflates to more than 5000 bytes of JSON, "
                                            r"beyond the loader's limit max_header_bytes=5000"):
        decode_artifact(padded_header(5001), limits=limits)


def test_a_header_bomb_is_refused_before_it_is_inflated():
    content = padded_header(64 * 2**20)  # 64 MiB of JSON in 65 KB
    assert len(content) < 100_000
    tracemalloc.start()
    with pytest.raises(ArtifactError, match="max_header_bytes=262144"):
        decode_artifact(content)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 * 2**20


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_a_header_with_non_finite_numbers_is_refused(constant):
    with pytest.raises(ArtifactError, match=f"non-finite number {constant.decode()}"):
        decode_artifact(sealed(b'{"g":{},"m":{"scale":' + constant + b'},"b":[]}'))


def test_a_file_larger_than_the_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "large.sca"
    with path.open("wb") as file:
        file.truncate(64 * 2**20)  # sparse: no disk used
    tracemalloc.start()
    with pytest.raises(ArtifactError, match=r"has 67108864 bytes, beyond the loader's limit "
                                            r"max_file_bytes=33554432"):
        read_artifact(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2**20
    content = encode_artifact({}, {"w": np.arange(300, dtype=np.float32)}, {})
    with pytest.raises(ArtifactError, match="max_file_bytes=1000"):
        decode_artifact(content, limits=LoadLimits(max_file_bytes=1000))


def test_a_file_that_never_ends_is_read_only_up_to_the_limit():
    with pytest.raises(ArtifactError, match=r"has 4097 bytes, beyond .* max_file_bytes=4096"):
        read_artifact("/dev/zero", limits=LoadLimits(max_file_bytes=4096))


@pytest.mark.parametrize("shape, message", [
    ([0, 10**30], "declares a dimension of 10{30} elements, beyond the loader's limit "
                  "max_tensor_elements=4194304"),
    ([2**11, 2**11, 2], "declares 8388608 elements, beyond the loader's limit "
                        "max_tensor_elements"),
    ([1] * 9, "declares 9 dimensions, beyond the loader's limit max_dims=8"),
    ([2, -1], r"has shape \[2, -1\], not a list of non-negative integers"),
    ([True], "not a list of non-negative integers"),
    ([2.0], "not a list of non-negative integers"),
    ("2", "not a list of non-negative integers"),
])
def test_every_declared_shape_is_checked_before_allocation(shape, message):
    with pytest.raises(ArtifactError, match=f"Block 'w' .*{message}"):
        decode_artifact(with_shape(shape))


def test_a_block_larger_than_its_decoded_tensor_is_refused():
    content = encode_artifact({}, {"w": np.arange(4, dtype=np.float32)}, {})
    header_bytes = PREAMBLE.unpack_from(content)[3]
    parsed = json.loads(zlib.decompress(content[PREAMBLE.size:PREAMBLE.size + header_bytes]))
    parsed["b"][0][2] = [3]  # 16 stored bytes for 3 float32 values
    blocks = content[PREAMBLE.size + header_bytes:-32]
    with pytest.raises(ArtifactError, match="Block 'w' stores 16 bytes, more than the 12 its "
                                            "tensor decodes to"):
        decode_artifact(sealed(json.dumps(parsed).encode(), blocks))


def test_a_limit_is_named_with_the_way_to_raise_it():
    error = LoadLimits().exceeded("max_nodes", "The graph has 5000 nodes")
    assert str(error) == (
        "The graph has 5000 nodes, beyond the loader's limit max_nodes=4096: the file is "
        "corrupted or crafted. If it is genuine, load it with a larger limit "
        "(LoadLimits(max_nodes=...)).")
