"""Tensor encodings: every encoding and dtype round-trips bit for bit, the writer keeps the
smallest, and the reader turns any inconsistent spec or data into an ArtifactError."""

from __future__ import annotations

import json
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from satcompress.artifact import ArtifactError, encodings
from satcompress.artifact.encodings import (
    ENCODINGS,
    SUPPORTED_DTYPES,
    decode_tensor,
    describe_spec,
    encode_tensor,
)

FUZZ = settings(derandomize=True, max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def assert_bit_exact(decoded: np.ndarray, original: np.ndarray) -> None:
    assert decoded.dtype == original.dtype and decoded.shape == original.shape
    assert decoded.tobytes() == np.ascontiguousarray(original).tobytes()


def round_trip(array: np.ndarray, **options) -> dict:
    """Encode and decode ``array``; check the result is bit-exact; return the chosen spec."""
    encoded = encode_tensor(array, **options)
    assert_bit_exact(decode_tensor(encoded.data, encoded.spec, array.dtype, array.shape), array)
    return encoded.spec


def encodings_in(spec: dict) -> set[str]:
    """Every encoding a (possibly nested) spec uses."""
    nested = [value for key, value in spec.items() if key in ("i", "R", "V")]
    return {spec["e"]}.union(*(encodings_in(inner) for inner in nested))


def example(dtype: str, case: str) -> np.ndarray:
    """A tensor of ``dtype`` for each edge case (deterministic)."""
    rng = np.random.default_rng(zlib.crc32(f"{dtype}/{case}".encode()))
    dt = np.dtype(dtype)
    if case == "empty":
        return np.zeros((0, 3), dtype=dt)
    if case == "scalar":
        return np.array(1, dtype=dt)
    if case == "zeros":
        return np.zeros((4, 5), dtype=dt)
    if case == "constant":
        return np.full(37, True if dt == np.bool_ else 3, dtype=dt)
    if dt == np.bool_:
        return rng.random(size=(7, 9)) < {"random": 0.5, "sparse": 0.05, "few": 0.5,
                                           "extremes": 0.99}[case]
    if dt.kind == "f":
        values = {"random": rng.normal(size=(7, 9)),
                  "sparse": rng.normal(size=(7, 9)) * (rng.random((7, 9)) < 0.1),
                  "few": rng.choice([-1.5, 0.25, 2.0, 7.0], size=(7, 9)),
                  "extremes": rng.choice([np.inf, -np.inf, np.finfo(dt).max, np.finfo(dt).min,
                                          np.finfo(dt).tiny, 0.0], size=(7, 9))}[case]
        return values.astype(dt)
    info = np.iinfo(dt)
    values = {"random": rng.integers(info.min, info.max, size=(7, 9), endpoint=True, dtype=dt),
              "sparse": rng.integers(-3 if info.min else 1, 4, size=(7, 9), dtype=dt)
              * (rng.random((7, 9)) < 0.1),
              "few": rng.choice(np.array([info.min, 0, 5, info.max], dtype=dt), size=(7, 9)),
              "extremes": rng.choice(np.array([info.min, info.max], dtype=dt), size=(7, 9))}
    return values[case].astype(dt)


CASES = ["empty", "scalar", "zeros", "constant", "random", "sparse", "few", "extremes"]


@pytest.mark.parametrize("entropy_coding", [True, False])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", SUPPORTED_DTYPES)
def test_every_dtype_and_edge_case_round_trips_bit_exactly(dtype, case, entropy_coding):
    spec = round_trip(example(dtype, case), entropy_coding=entropy_coding)
    assert encodings_in(spec) <= set(ENCODINGS)
    if not entropy_coding:
        assert "huffman" not in encodings_in(spec)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_float_bit_patterns_survive_nan_payloads_negative_zero_and_subnormals(dtype):
    unsigned = f"u{np.dtype(dtype).itemsize}"
    nan_payloads = (np.array([np.nan, -np.nan], dtype=dtype).view(unsigned)
                    | np.array(1, dtype=unsigned)).view(dtype)
    special = np.concatenate([nan_payloads, np.array(
        [-0.0, np.inf, -np.inf, np.finfo(dtype).smallest_subnormal, 1.0], dtype=dtype)])
    dense = np.resize(special, 64)
    mostly_zero = np.zeros(200, dtype=dtype)
    mostly_zero[::20] = np.resize(special, 10)
    for array in (dense, mostly_zero, special):
        round_trip(array)
    # -0.0 is a value, not the zero a sparse encoding skips.
    pruned = np.zeros(2000, dtype=dtype)
    pruned[::10] = np.random.default_rng(5).normal(size=200)
    pruned[5::40] = -0.0
    assert round_trip(pruned)["e"] == "sparse"


def test_int64_extremes_round_trip():
    info = np.iinfo(np.int64)
    for array in (np.array([info.min, info.max] * 10, dtype=np.int64),
                  np.array([info.min, info.min + 1, info.min + 2] * 7, dtype=np.int64),
                  np.array([info.max - 1, info.max] * 9, dtype=np.int64),
                  np.arange(info.max - 40, info.max, dtype=np.int64)):
        round_trip(array)
    assert round_trip(np.array([info.min, info.min + 1, info.min + 2] * 7))["o"] == info.min


def test_int8_quantized_to_4_bits_is_packed_in_4_bits():
    weights = np.tile(np.arange(-7, 8, dtype=np.int8), 20)  # 300 values, all 15 levels
    spec = round_trip(weights)
    assert spec == {"e": "pack", "b": 4, "o": -7}
    assert len(encode_tensor(weights).data) == 150


@pytest.mark.parametrize("levels", [8, 15, 200])
def test_large_packed_tensors_unpack_chunk_by_chunk_exactly(levels):
    values = (np.random.default_rng(levels).integers(0, levels, 200_003) - levels // 2)
    spec = round_trip(values.astype(np.int8 if levels < 128 else np.int16), entropy_coding=False)
    assert spec["e"] == "pack" and spec["b"] == (levels - 1).bit_length()


def test_a_long_huffman_stream_is_decoded_in_bounded_memory():
    # 3.1 million bits of 12-bit codes: decoded in one call, the decoder's temporaries took
    # about 50 MiB; a chunk at a time, the peak is the output's few MiB plus one chunk's.
    values = np.random.default_rng(0).integers(0, 2**12, 2**18).astype(np.int64)
    (encoded,) = encodings._huffman(values)  # forced: "pack" would be smaller
    tracemalloc.start()
    decoded = decode_tensor(encoded.data, encoded.spec, values.dtype, values.shape)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert_bit_exact(decoded, values)
    assert peak < 16 * 2**20


def test_a_constant_tensor_takes_no_data_bytes():
    encoded = encode_tensor(np.full((8, 8), -3, dtype=np.int32))
    assert encoded.spec == {"e": "pack", "b": 0, "o": -3} and encoded.data == b""


def test_skewed_integers_are_huffman_coded_and_not_without_entropy_coding():
    rng = np.random.default_rng(0)
    skewed = np.minimum(rng.geometric(0.5, size=2000), 30).astype(np.int16)
    assert round_trip(skewed)["e"] == "huffman"
    assert round_trip(skewed, entropy_coding=False)["e"] == "pack"
    assert len(encode_tensor(skewed).data) < len(encode_tensor(skewed, entropy_coding=False).data)


def test_float32_with_16_distinct_values_uses_a_codebook():
    rng = np.random.default_rng(1)
    centroids = rng.normal(size=16).astype(np.float32)
    clustered = centroids[rng.integers(0, 16, size=(64, 32))]
    spec = round_trip(clustered)
    assert spec["e"] == "codebook" and spec["k"] == 16
    # 16 raw centroids plus (about) 4 bits per weight, a fraction of the raw 4 bytes.
    assert len(encode_tensor(clustered).data) <= 16 * 4 + 64 * 32 // 2 + 16


def test_tensor_with_90_percent_zeros_is_stored_sparse():
    rng = np.random.default_rng(2)
    pruned = np.where(rng.random((40, 25)) < 0.1, rng.normal(size=(40, 25)), 0).astype(np.float32)
    spec = round_trip(pruned)
    assert spec["e"] == "sparse" and spec["m"] >= np.count_nonzero(pruned)
    assert len(encode_tensor(pruned).data) < pruned.nbytes // 4


def test_sparse_clustered_values_nest_a_codebook():
    rng = np.random.default_rng(3)
    centroids = np.array([-0.5, 0.25, 0.75, 1.5], dtype=np.float32)
    pruned = np.where(rng.random(3000) < 0.1, centroids[rng.integers(0, 4, size=3000)], 0)
    spec = round_trip(pruned.astype(np.float32))
    assert spec["e"] == "sparse" and spec["V"]["e"] == "codebook"
    assert describe_spec(spec).startswith("sparse(runs ")


def test_random_floats_stay_raw():
    values = np.random.default_rng(4).normal(size=100).astype(np.float32)
    assert round_trip(values) == {"e": "raw"}


def test_the_writer_keeps_the_smallest_candidate_counting_the_spec():
    for dtype in SUPPORTED_DTYPES:
        for case in CASES:
            array = example(dtype, case)
            encoded = encode_tensor(array)
            raw_cost = array.nbytes + len('{"e":"raw"}')
            assert encoded.cost <= raw_cost
            assert encoded.cost == len(encoded.data) + len(
                json.dumps(encoded.spec, separators=(",", ":")))


def test_describe_spec_labels():
    assert describe_spec({"e": "raw"}) == "raw"
    assert describe_spec({"e": "pack", "b": 4, "o": -7}) == "pack4"
    assert describe_spec({"e": "codebook", "k": 16, "i": {"e": "pack", "b": 4}}) \
        == "codebook16/pack4"
    assert describe_spec({"e": "sparse", "R": {"e": "pack", "b": 3}, "V": {"e": "raw"}}) \
        == "sparse(runs pack3, raw)"


# --------------------------------------------------------------------------- the reader refuses


@pytest.mark.parametrize("spec, dtype, shape, data, message", [
    ({"e": "zstd"}, "float32", (2,), bytes(8), "unknown encoding 'zstd'"),
    ("raw", "float32", (2,), bytes(8), "unknown encoding"),
    ({"e": "raw"}, "float32", (3,), bytes(8), "holds 8 bytes where its 3 raw values takes 12"),
    ({"e": "raw"}, "bool", (2,), b"\x01\x02", "outside its dtype bool"),
    ({"e": "pack", "b": 4, "o": 0}, "float32", (2,), b"\x12", "integer encoding 'pack'"),
    ({"e": "pack", "b": 33, "o": 0}, "int64", (1,), bytes(5), "invalid pack parameter b=33"),
    ({"e": "pack", "b": 9, "o": 0}, "int8", (1,), bytes(2), "invalid pack parameter b=9"),
    ({"e": "pack", "b": True, "o": 0}, "int8", (2,), b"\x12", "invalid pack parameter b=True"),
    ({"e": "pack", "b": 4, "o": "0"}, "int8", (2,), b"\x12", "invalid pack parameter o='0'"),
    ({"e": "pack", "b": 8, "o": 100}, "int8", (1,), b"\xff", "outside its dtype int8"),
    ({"e": "pack", "b": 0, "o": 300}, "uint8", (4,), b"", "outside its dtype uint8"),
    ({"e": "huffman", "o": 0, "s": 2, "lb": 1, "c": 17}, "int8", (3,), b"\xc0\x00",
     "invalid huffman parameter c=17"),
    ({"e": "huffman", "o": 0, "s": 2, "lb": 1, "c": 9}, "int8", (3,), b"\xc0\x00",
     "Huffman table and codes takes 3"),
    ({"e": "huffman", "o": 0, "s": 3, "lb": 2, "c": 2}, "int8", (2,), b"\x54\x00",
     "invalid Huffman code table"),
    ({"e": "huffman", "o": 0, "s": 2, "lb": 1, "c": 9}, "int8", (3,), b"\xc0\x00\x00",
     "has 9 bits of Huffman codes, more than its 3 values can take"),
    ({"e": "codebook", "k": 5, "i": {"e": "pack", "b": 2, "o": 0}}, "float32", (4,), bytes(8),
     "invalid codebook parameter k=5"),
    ({"e": "codebook", "k": 2, "i": {"e": "pack", "b": 2, "o": 0}}, "float32", (4,),
     bytes(8) + b"\xc0", "codebook index beyond its 2 entries"),
    ({"e": "codebook", "k": 2, "i": {"e": "raw"}}, "float32", (4,), bytes(12),
     "invalid index encoding"),
    ({"e": "sparse", "r": 3, "m": 1, "rl": 1, "R": {"e": "pack", "b": 3, "o": 0},
      "V": {"e": "raw"}}, "int8", (2,), b"\xe0\x01", "zero run outside \\[0, 3\\]"),
    ({"e": "sparse", "r": 7, "m": 1, "rl": 1, "R": {"e": "pack", "b": 3, "o": 0},
      "V": {"e": "raw"}}, "int8", (2,), b"\xa0\x01", "zero runs that do not fit the tensor"),
    ({"e": "sparse", "r": 7, "m": 1, "rl": 1, "R": {"e": "raw"}, "V": {"e": "raw"}},
     "int8", (2,), b"\x00\x01", "invalid run or value encoding"),
])
def test_inconsistent_specs_raise_artifact_errors(spec, dtype, shape, data, message):
    with pytest.raises(ArtifactError, match=message):
        decode_tensor(data, spec, np.dtype(dtype), shape)


# --------------------------------------------------------------------------- property tests


def _spec_values():
    scalars = st.one_of(st.integers(-(2**70), 2**70), st.integers(-3, 40), st.booleans(),
                        st.none(), st.text(max_size=3), st.floats(allow_nan=False))
    keys = st.sampled_from(["e", "b", "o", "s", "lb", "c", "k", "i", "r", "m", "rl", "R", "V"])
    return st.recursive(scalars | st.sampled_from(ENCODINGS),
                        lambda inner: st.dictionaries(keys, inner, max_size=7), max_leaves=12)


@FUZZ
@given(spec=_spec_values(), data=st.binary(max_size=64),
       dtype=st.sampled_from(SUPPORTED_DTYPES),
       shape=st.lists(st.integers(0, 9), max_size=3).map(tuple))
def test_any_spec_and_data_decode_or_raise_artifact_error(spec, data, dtype, shape):
    try:
        decoded = decode_tensor(data, spec, np.dtype(dtype), shape)
    except ArtifactError:
        return
    assert decoded.dtype == np.dtype(dtype) and decoded.shape == shape


def _tweak(spec: dict, draw) -> dict:
    """``spec`` with one integer parameter (possibly nested) replaced by a drawn integer."""
    keys = [key for key, value in spec.items() if isinstance(value, int) or isinstance(value, dict)]
    if not keys:
        return spec
    key = draw(st.sampled_from(keys))
    if isinstance(spec[key], dict):
        return {**spec, key: _tweak(spec[key], draw)}
    delta = draw(st.one_of(st.integers(-3, 3), st.integers(-(2**66), 2**66)))
    return {**spec, key: spec[key] + delta}


@FUZZ
@given(dtype=st.sampled_from(SUPPORTED_DTYPES), case=st.sampled_from(CASES[2:]),
       entropy_coding=st.booleans(), draw=st.data())
def test_mutated_valid_encodings_decode_or_raise_artifact_error(dtype, case, entropy_coding,
                                                                draw):
    array = example(dtype, case)
    encoded = encode_tensor(array, entropy_coding=entropy_coding)
    data = bytearray(encoded.data)
    if data and draw.draw(st.booleans()):
        position = draw.draw(st.integers(0, len(data) - 1))
        data[position] ^= draw.draw(st.integers(1, 255))
    if draw.draw(st.booleans()):
        data = data[:draw.draw(st.integers(0, len(data)))] + draw.draw(st.binary(max_size=3))
    spec = _tweak(encoded.spec, draw.draw)
    try:
        decoded = decode_tensor(bytes(data), spec, array.dtype, array.shape)
    except ArtifactError:
        return
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
