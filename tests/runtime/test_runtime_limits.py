"""A bounded loader: every crafted artifact (checksums valid) is refused with ArtifactError
before it allocates, whatever the field, and random headers load or raise ArtifactError only.

The crafted files are loaded in a child process whose address space is capped (``resource``),
each under ``tracemalloc``: a limit that stopped working would end there in MemoryError (or a
large measured peak), never by exhausting the shared machine.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zlib
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from satcompress import runtime
from satcompress.artifact import MAGIC, ArtifactError, LoadLimits, encode_artifact
from satcompress.artifact.encodings import SUPPORTED_DTYPES
from satcompress.runtime import GRAPH_FORMAT, supported_operators
from satcompress.runtime import plan as buffer_plan

PEAK_BYTES = 16 * 2**20
"""Most memory (traced) the loader may take to refuse a crafted file, with the default
limits (the largest cost: parsing a 256 KiB header of empty lists, 7 MiB)."""
CHILD_ADDRESS_SPACE = 2**30
"""The child's address-space cap (Python and NumPy take about 100 MiB of it)."""
BIG = 2**14  # a side of 2**28-element products: 1 GiB of int32, far beyond every default


def graph(nodes: list[dict], shape: object = (None, 2), dtype: object = "float32",
          output: str = "logits", **changes: object) -> dict:
    """A classifier graph: input ``x`` of ``shape``, output ``logits``."""
    shape = list(shape) if isinstance(shape, tuple) else shape
    return {"format": GRAPH_FORMAT, "inputs": [{"name": "x", "dtype": dtype, "shape": shape}],
            "outputs": [{"name": output, "dtype": "float32", "shape": [None, 2]}],
            "nodes": nodes, **changes}


def node(op: str, inputs: list[str], output: str = "logits", **attrs: object) -> dict:
    return {"op": op, "in": inputs, "out": [output], **({"attrs": attrs} if attrs else {})}


RELU = node("Relu", ["x"])


def artifact(nodes: list[dict], tensors: dict | None = None, metadata: dict | None = None,
             **graph_options: object) -> bytes:
    return encode_artifact(graph(nodes, **graph_options), tensors or {}, metadata or {})


def sealed(header: bytes, blocks: bytes = b"") -> bytes:
    """An artifact of a raw (uncompressed) JSON ``header``, every checksum valid."""
    compressed = zlib.compress(header, 9)
    size = 19 + len(compressed) + len(blocks) + 32
    body = struct.pack("<4sHBIII", MAGIC, 1, 0, len(compressed), zlib.crc32(compressed),
                       size) + compressed + blocks
    return body + hashlib.sha256(body).digest()


def mutate_table(content: bytes, row: int, field: int, value: object) -> bytes:
    """``content`` with one block-table field replaced, every checksum recomputed."""
    header_bytes = struct.unpack_from("<I", content, 7)[0]
    parsed = json.loads(zlib.decompress(content[19:19 + header_bytes]))
    if not parsed["b"]:
        return content
    parsed["b"][row % len(parsed["b"])][field] = value
    return sealed(json.dumps(parsed).encode(), content[19 + header_bytes:-32])


def zeros(shape: tuple[int, ...], dtype=np.int32) -> np.ndarray:
    return np.zeros(shape, dtype)  # a constant: stored in 0 bytes ("pack", 0 bits)


def live_chain(width: int, count: int) -> bytes:
    """``count`` values of ``width`` floats all alive until one Concat reads them all."""
    products = [node("Mul", ["x", "one"], f"v{i}") for i in range(count)]
    return artifact(products + [node("Concat", [f"v{i}" for i in range(count)], axis=1)],
                    {"one": np.ones(1, np.float32)}, shape=(None, width))


@functools.cache
def relu_chain(count: int) -> bytes:
    nodes = [node("Relu", ["x" if i == 0 else f"v{i - 1}"], f"v{i}") for i in range(count - 1)]
    return artifact(nodes + [node("Relu", [f"v{count - 2}"])])


class Case(NamedTuple):
    """A crafted artifact, the limits it is loaded with, and the memory refusing it may take."""

    build: Callable[[], bytes]
    changes: dict = {}
    peak: int = PEAK_BYTES


CRAFTED = {
    "fold bomb: Add of [N, 1] and [1, N] stored in 0 bytes": Case(lambda: artifact(
        [node("Add", ["a", "b"], "big"), RELU], {"a": zeros((BIG, 1)), "b": zeros((1, BIG))})),
    "fold bomb: MatMul of [N, 1] and [1, N]": Case(lambda: artifact(
        [node("MatMul", ["a", "b"], "big"), RELU], {"a": zeros((BIG, 1)), "b": zeros((1, BIG))})),
    "fold bomb: Gather of N zero indices": Case(lambda: artifact(
        [node("Gather", ["a", "i"], "big"), RELU],
        {"a": zeros((1, BIG), np.int8), "i": zeros((BIG,), np.int64)})),
    "fold bomb: a chain of folds, each within the limit": Case(lambda: artifact(
        [node("Add", ["a", "b"], f"big{i}") for i in range(16)] + [RELU],
        {"a": zeros((2**9, 1)), "b": zeros((1, 2**9))}), {"max_folded_bytes": 4 * 2**20}),
    "activation bomb: MatMul of the input [N, 1] and [1, N]": Case(lambda: artifact(
        [node("MatMul", ["x", "b"])], {"b": zeros((1, BIG), np.float32)}, shape=(None, BIG, 1))),
    "activation bomb: padded convolution": Case(lambda: artifact(
        [node("Conv", ["x", "w"], pads=[2**40, 2**40])], {"w": np.ones((2, 1, 1), np.float32)},
        shape=(None, 1, 2))),
    "activation bomb: padded max pooling": Case(lambda: artifact(
        [node("MaxPool", ["x"], kernel_shape=[1], pads=[2**40, 0])], shape=(None, 1, 2))),
    "activation bomb: QuantizeLinear scale broadcast along the other axis": Case(lambda: artifact(
        [node("QuantizeLinear", ["x", "s"], axis=0)], {"s": np.ones(2**12, np.float32)},
        shape=(None, 2**12))),
    "activation bomb: BatchNormalization parameters broadcast": Case(lambda: artifact(
        [node("BatchNormalization", ["x", "p", "p", "p", "p"])],
        {"p": np.ones(2**12, np.float32)}, shape=(None, 1, 2**12))),
    "activation bomb: 4000 values alive at once": Case(lambda: live_chain(2**8, 4000),
                                                       {"max_activation_bytes": 2**21}),
    "positional encoding of a declared [1, 10**6, 10**6]": Case(lambda: artifact(
        [node("SinusoidalPositionalEncoding", [], "pe", shape=[1, 10**6, 10**6]), RELU])),
    "positional encoding of a non-integer shape": Case(lambda: artifact(
        [node("SinusoidalPositionalEncoding", [], "pe", shape=[1.5, "2"]), RELU])),
    "graph input of a declared [null, 10**6, 10**6]": Case(lambda: artifact(
        [RELU], shape=(None, 10**6, 10**6))),
    "graph input shape of a boolean and a string": Case(lambda: artifact(
        [RELU], shape=(None, True, "3"))),
    "graph input of dtype V1000000000": Case(lambda: artifact([RELU], dtype="V1000000000")),
    "graph of two inputs": Case(lambda: encode_artifact(
        {**graph([RELU]), "inputs": graph([])["inputs"] * 2}, {}, {})),
    "stored tensor of shape [0, 10**30]": Case(lambda: mutate_table(
        artifact([RELU], {"a": zeros((0, 1))}), 0, 2, [0, 10**30])),
    "stored tensor of 9 dimensions": Case(lambda: mutate_table(
        artifact([RELU], {"a": zeros((0, 1))}), 0, 2, [1] * 8 + [0])),
    "block storing more bytes than its tensor decodes to": Case(lambda: mutate_table(
        artifact([RELU], {"a": np.arange(4, dtype=np.float32)}), 0, 2, [2])),
    "node reading an absent input": Case(lambda: artifact([node("Relu", [""])])),
    "QuantGemm with two inputs of six": Case(lambda: artifact(
        [node("QuantGemm", ["x", "w"])], {"w": np.ones((2, 2), np.int8)})),
    "MatMul with one input, then Add (a fusion pattern)": Case(lambda: artifact(
        [node("MatMul", ["x"], "p"), node("Add", ["p", "b"])], {"b": np.ones(2, np.float32)})),
    "Conv with group 0": Case(lambda: artifact(
        [node("Conv", ["x", "w"], group=0)], {"w": np.ones((2, 1, 1), np.float32)},
        shape=(None, 1, 2))),
    "Cast to an unknown type": Case(lambda: artifact([node("Cast", ["x"], to=99)])),
    "Reshape to a shape of 2**20 entries": Case(lambda: artifact(
        [node("Reshape", ["x", "s"])], {"s": zeros((2**20,), np.int64)})),
    "Unsqueeze along 10**4 axes": Case(lambda: artifact(
        [node("Unsqueeze", ["x"], axes=list(range(10**4)))])),
    "metadata class_names that is a number": Case(lambda: artifact([RELU], metadata={
        "class_names": 5})),
    "header inflating to 32 MiB of JSON": Case(lambda: sealed(b'{"g":{},"m":{"pad":[' + b"[]," * (
        2**25 // 3) + b'[]]},"b":[]}')),
    "header of 256 KiB of empty lists (within the limit)": Case(lambda: sealed(
        b'{"g":{},"m":{"pad":[' + b"[]," * ((2**18 - 32) // 3) + b'[]]},"b":[]}')),
    "header with NaN and Infinity": Case(lambda: sealed(
        b'{"g":{"format":"satcompress-graph/1","x":NaN},"m":{"y":-Infinity},"b":[]}')),
    "200,000-node graph": Case(lambda: relu_chain(200_000)),
    "200,000-node graph, header limit raised": Case(  # parsing 7 MB of JSON: ~130 MiB
        lambda: relu_chain(200_000), {"max_header_bytes": 2**24}, 192 * 2**20),
}

CHILD = textwrap.dedent("""
    import json, resource, sys, time, tracemalloc
    resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
    from satcompress import runtime
    from satcompress.artifact import ArtifactError, LoadLimits
    results = {{}}
    for name, (path, changes) in json.load(open(sys.argv[1])).items():
        content = open(path, "rb").read()
        tracemalloc.start()
        started = time.perf_counter()
        try:
            runtime.load(content, limits=LoadLimits(**changes))
            error = None
        except Exception as failure:
            error = failure
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        results[name] = {{"type": type(error).__name__, "message": str(error),
                          "artifact_error": isinstance(error, ArtifactError),
                          "peak": peak, "seconds": seconds}}
    print(json.dumps(results))
""").format(cap=CHILD_ADDRESS_SPACE)


@pytest.fixture(scope="module")
def refusals(tmp_path_factory) -> dict[str, dict]:
    """Every crafted file loaded once, in one address-space-capped child process."""
    folder = tmp_path_factory.mktemp("crafted")
    manifest = {}
    for position, (name, case) in enumerate(CRAFTED.items()):
        path = folder / f"{position}.sca"
        path.write_bytes(case.build())
        manifest[name] = (str(path), case.changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    child = subprocess.run([sys.executable, "-c", CHILD, str(folder / "manifest.json")],
                           capture_output=True, text=True, timeout=300,
                           env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout)


@pytest.mark.parametrize("name", list(CRAFTED))
def test_a_crafted_artifact_is_refused_with_artifact_error_within_the_memory_cap(name,
                                                                                   refusals):
    result = refusals[name]
    assert result["artifact_error"], result
    assert result["peak"] < CRAFTED[name].peak, result
    assert "\n" not in result["message"] and len(result["message"]) < 1000


@pytest.mark.parametrize("name, limit", [
    ("fold bomb: Add of [N, 1] and [1, N] stored in 0 bytes", "max_folded_bytes"),
    ("fold bomb: a chain of folds, each within the limit", "max_folded_bytes"),
    ("activation bomb: MatMul of the input [N, 1] and [1, N]", "max_activation_bytes"),
    ("activation bomb: 4000 values alive at once", "max_activation_bytes"),
    ("positional encoding of a declared [1, 10**6, 10**6]", "max_folded_bytes"),
    ("graph input of a declared [null, 10**6, 10**6]", "max_tensor_elements"),
    ("stored tensor of shape [0, 10**30]", "max_tensor_elements"),
    ("header inflating to 32 MiB of JSON", "max_header_bytes"),
    ("200,000-node graph", "max_header_bytes"),
    ("200,000-node graph, header limit raised", "max_nodes"),
])
def test_an_oversized_artifact_is_refused_naming_the_limit_to_raise(name, limit, refusals):
    assert f"beyond the loader's limit {limit}=" in refusals[name]["message"]
    assert f"LoadLimits({limit}=...)" in refusals[name]["message"]


def test_the_200k_node_artifact_is_refused_by_its_node_count_before_the_graph_is_read(refusals):
    # The count is checked first: a few seconds at most even on a loaded machine (0.5 s here,
    # most of it parsing the 7 MB header that the raised header limit lets through).
    assert refusals["200,000-node graph"]["seconds"] < 5
    assert refusals["200,000-node graph, header limit raised"]["seconds"] < 10


def test_a_genuine_large_graph_loads_when_its_limits_are_raised():
    content = relu_chain(5000)
    with pytest.raises(ArtifactError, match="The graph has 5000 nodes, beyond .* max_nodes=4096"):
        runtime.load(content)
    flight = runtime.load(content, limits=LoadLimits(max_nodes=5000))
    assert np.array_equal(flight.run(np.array([[-1.0, 2.0]], np.float32)), [[0.0, 2.0]])
    assert flight.plan.arena_bytes == 32  # two 8-byte values alive at once, aligned to 16


def test_each_node_is_checked_before_it_runs_against_the_activations_alive():
    content = live_chain(4, 8)  # 8 values of 16 bytes alive at once, and their Concat
    flight = runtime.load(content)
    assert flight.plan.arena_bytes == flight.plan.peak_live_bytes == 8 * 16 + 128
    # Before the Concat: 128 bytes alive + 8 bytes per element of its 32-element output.
    runtime.load(content, limits=LoadLimits(max_activation_bytes=128 + 8 * 32))
    with pytest.raises(ArtifactError, match=r"node 8 \(Concat\) may take 256 bytes while 128 "
                                            r"bytes of activations are alive, beyond the "
                                            r"loader's limit max_activation_bytes=383"):
        runtime.load(content, limits=LoadLimits(max_activation_bytes=383))


def test_the_planned_arena_is_checked_too(monkeypatch):
    content = relu_chain(10)  # 10 values of 8 bytes, 2 alive at once
    assert runtime.load(content, limits=LoadLimits(max_activation_bytes=100)).plan.arena_bytes \
        == 32
    monkeypatch.setattr(buffer_plan, "MAX_OVERLAPS", 0)  # every buffer stacked: 11 x 16 bytes
    with pytest.raises(ArtifactError, match="The planned activation arena takes 176 bytes, "
                                            "beyond the loader's limit max_activation_bytes=100"):
        runtime.load(content, limits=LoadLimits(max_activation_bytes=100))


def test_graph_errors_are_artifact_errors():
    assert issubclass(runtime.GraphError, ArtifactError)
    assert issubclass(runtime.UnsupportedOperatorError, ArtifactError)


# --------------------------------------------------------------------------- random headers

SMALL = LoadLimits(max_file_bytes=2**20, max_header_bytes=2**16, max_decoded_bytes=2**20,
                   max_tensor_elements=2**16, max_dims=6, max_nodes=64,
                   max_folded_bytes=2**20, max_activation_bytes=2**20)
FUZZ = settings(derandomize=True, max_examples=250, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HUGE = 2**40  # "huge" values fail at once if ever allocated; no medium ones that would not
INTEGER = st.sampled_from([-1, 0, 1, 2, 3, HUGE])
VALUE = st.one_of(INTEGER, st.lists(INTEGER, max_size=4), st.sampled_from(
    [1.5, "a", None, True, [], {}, [[1]], "Relu"]))
ATTRIBUTE_NAMES = ["axis", "axes", "perm", "shape", "pads", "strides", "dilations",
                   "kernel_shape", "group", "to", "transA", "transB", "alpha", "beta",
                   "keepdims", "allowzero", "start", "end", "epsilon", "activation",
                   "noop_with_empty_axes", "count_include_pad"]
SHAPES = [(None, 2)] * 16 + [(None, 3, 2)] * 4 + [(None, 1, 2, 2)] * 4 + [
    (None, HUGE), (None, 0), (None,), (2, 2), (None, -1), "x", (None, 2.0)]
DTYPES = ["float32"] * 20 + ["int8", "float64", "V8", "object", "bogus", 3]
TENSOR_DTYPES = ["float32"] * 4 + list(SUPPORTED_DTYPES)


@st.composite
def tensors(draw) -> dict[str, np.ndarray]:
    arrays = {}
    for index in range(draw(st.integers(0, 4))):
        shape = tuple(draw(st.lists(st.sampled_from([2, 2, 1, 3, 0]), max_size=3)))
        dtype = np.dtype(draw(st.sampled_from(TENSOR_DTYPES)))
        arrays[f"c{index}"] = np.full(shape, draw(st.sampled_from([1, 0, 2, -1]))).astype(dtype)
    return arrays


@st.composite
def graphs(draw, stored: list[str]) -> dict:
    """Mostly well-formed graphs (defined names, one output per node, few inputs) of random
    operators, attributes and shapes: most reach the kernels."""
    defined = ["x", *stored]
    nodes = []
    for position in range(draw(st.integers(1, 6))):
        names = st.sampled_from([*defined[::-1]] * 4 + ["", "undefined"])
        inputs = draw(st.lists(names, min_size=1, max_size=draw(st.sampled_from([2, 3, 7]))))
        outputs = [f"v{position}_{k}" for k in range(draw(st.sampled_from([1] * 6 + [0, 3])))]
        attrs = draw(st.dictionaries(st.sampled_from(ATTRIBUTE_NAMES), VALUE, max_size=3))
        nodes.append({"op": draw(st.sampled_from([*supported_operators(), "CumSum"])),
                      "in": inputs, "out": outputs, **({"attrs": attrs} if attrs else {})})
        defined += outputs
    return graph(nodes, shape=draw(st.sampled_from(SHAPES)), dtype=draw(st.sampled_from(DTYPES)),
                 output=defined[-1] if draw(st.booleans()) else draw(st.sampled_from(defined)))


@FUZZ
@given(draw=st.data())
def test_random_headers_load_or_raise_artifact_error_within_the_memory_cap(draw):
    stored = draw.draw(tensors())
    content = encode_artifact(draw.draw(graphs(list(stored))), stored,
                              draw.draw(st.sampled_from([{}, {"class_names": ["a", "b"]},
                                                         {"class_names": [1]}])))
    if draw.draw(st.booleans()):
        field, value = draw.draw(st.sampled_from([
            (1, "float64"), (1, "int8"), (1, "complex64"), (2, [HUGE, 0]), (2, [2, 2]),
            (2, [1] * 7), (2, []), (5, {"e": "pack", "b": 0, "o": 1}), (5, {"e": "raw"})]))
        content = mutate_table(content, draw.draw(st.integers(0, 3)), field, value)
    tracemalloc.start()
    try:
        flight = runtime.load(content, limits=SMALL)
    except ArtifactError:
        flight = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < PEAK_BYTES
    if flight is not None:
        assert flight.plan.arena_bytes <= SMALL.max_activation_bytes
