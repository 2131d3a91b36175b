"""Loading and running an artifact: verified input, clear errors, never a crash inside NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_blobs, tiny_mlp

from satcompress import runtime
from satcompress.artifact import ArtifactError, encode_artifact
from satcompress.pipeline.flight import build_artifact
from satcompress.runtime import GRAPH_FORMAT, GraphError, InputError, UnsupportedOperatorError


@pytest.fixture(scope="module")
def artifact_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("artifact") / "mlp.sca"
    metadata = {"task": "tiny", "class_names": ["a", "b", "c"]}
    build_artifact(tiny_mlp(), torch.zeros(1, 6), metadata, path)
    return path


def linear_graph(op: str = "Gemm") -> dict:
    return {"format": GRAPH_FORMAT,
            "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 2]}],
            "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 2]}],
            "nodes": [{"op": op, "in": ["x", "c0"], "out": ["logits"]}]}


def test_load_from_path_or_bytes_gives_the_same_model(artifact_path):
    x = make_blobs().test.x
    from_path, from_bytes = runtime.load(artifact_path), runtime.load(artifact_path.read_bytes())
    np.testing.assert_array_equal(from_path.run(x), from_bytes.run(x))
    assert from_path.checksum == from_bytes.checksum and len(from_path.checksum) == 64
    assert from_path.class_names == ("a", "b", "c") and from_path.input_shape == (6,)
    assert from_path.size_bytes == artifact_path.stat().st_size


def test_probabilities_are_the_softmax_of_the_logits(artifact_path):
    flight = runtime.load(artifact_path)
    x = make_blobs().test.x[:10]
    probabilities = flight.predict_proba(x)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(probabilities.argmax(1), flight.run(x).argmax(1))


def test_large_batches_run_in_chunks_with_the_same_results(artifact_path):
    flight = runtime.load(artifact_path)
    x = np.tile(make_blobs().test.x[:3], (100, 1))  # 300 examples > CHUNK_EXAMPLES
    logits = flight.run(x)
    assert logits.shape == (300, 3)
    np.testing.assert_allclose(logits[:3], logits[-3:], rtol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 5), np.float32), r"shape \(2, 5\) but the model takes \(batch, 6\)"),
    (np.zeros(6, np.float32), r"add the batch axis: x\[None\]"),
    (np.zeros((0, 6), np.float32), r"batch >= 1"),
    (np.zeros((2, 6), np.float64), r"dtype float64 .* x.astype\(np.float32\)"),
    ([[0.0] * 6], r"must be a NumPy array"),
    (np.array([[0, 1, np.nan, 0, 0, 0], [0] * 6], np.float32), r"1 input example\(s\) contain NaN"),
])
def test_bad_inputs_fail_with_a_clear_error(artifact_path, bad, message):
    with pytest.raises(InputError, match=message):
        runtime.load(artifact_path).run(bad)


def test_a_corrupted_file_fails_with_the_artifact_error(artifact_path):
    content = bytearray(artifact_path.read_bytes())
    content[len(content) // 2] ^= 0x10
    with pytest.raises(ArtifactError):
        runtime.load(bytes(content))


def test_an_unsupported_operator_is_named(tmp_path):
    content = encode_artifact(linear_graph("CumSum"), {"c0": np.eye(2, dtype=np.float32)}, {})
    with pytest.raises(UnsupportedOperatorError, match=r"operator\(s\) CumSum, which the flight runtime"):
        runtime.load(content)


def test_graphs_out_of_order_or_of_another_format_are_refused():
    tensors = {"c0": np.eye(2, dtype=np.float32)}
    graph = linear_graph()
    graph["nodes"] = [{"op": "Relu", "in": ["v0"], "out": ["logits"]},
                      {"op": "Gemm", "in": ["x", "c0"], "out": ["v0"]}]
    with pytest.raises(GraphError, match="reads v0 before any node defines it"):
        runtime.load(encode_artifact(graph, tensors, {}))
    with pytest.raises(GraphError, match="rebuild the artifact"):
        runtime.load(encode_artifact({**linear_graph(), "format": "satcompress-graph/99"}, tensors, {}))


def test_a_graph_that_does_not_fit_its_tensors_fails_at_load_naming_the_node():
    content = encode_artifact(linear_graph(), {"c0": np.ones((3, 2), np.float32)}, {})
    with pytest.raises(GraphError, match=r"node 0 \(Gemm\) failed on inputs of shapes \[\(1, 2\), \(3, 2\)\]"):
        runtime.load(content)


def test_a_quantized_layer_whose_accumulator_could_overflow_int32_is_refused():
    depth = 70_000  # 70,000 * 255 * 127 > 2**31
    graph = {"format": GRAPH_FORMAT,
             "inputs": [{"name": "x", "dtype": "float32", "shape": [None, depth]}],
             "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 2]}],
             "nodes": [{"op": "QuantizeLinear", "in": ["x", "c0", "c1"], "out": ["v0"]},
                       {"op": "QuantGemm", "in": ["v0", "c0", "c1", "c2", "c3", ""], "out": ["logits"]}]}
    tensors = {"c0": np.array(0.1, np.float32), "c1": np.array(0, np.uint8),
               "c2": np.full((2, depth), 127, np.int8), "c3": np.ones(2, np.float32)}
    with pytest.raises(GraphError, match="beyond int32"):
        runtime.load(encode_artifact(graph, tensors, {}))
