"""Load-time fusion: fewer nodes, and exactly the values of the stored operators."""

from __future__ import annotations

import numpy as np
import torch

from conftest import make_blobs, make_sequences, tiny_mlp, tiny_t2
from satcompress import runtime
from satcompress.pipeline.flight import build_artifact
from satcompress.runtime import Node
from satcompress.runtime.fuse import fuse_program


def _artifact(model, x: np.ndarray, path):
    build_artifact(model.eval(), torch.from_numpy(x[:1]), {"task": "tiny"}, path)
    return path


def test_a_transformer_runs_fused_attention_and_linear_layers_with_identical_results(tmp_path):
    torch.manual_seed(0)
    data = make_sequences()
    path = _artifact(tiny_t2(), data.test.x, tmp_path / "t2.sca")
    fused, plain = runtime.load(path), runtime.load(path, fuse=False)
    ops = [node.op for node in fused._program]
    assert "MatMulScaleSoftmax" in ops and "MatMulAdd" in ops
    assert "Softmax" not in ops and len(fused._program) < len(plain._program)
    assert any(node.attributes.get("activation") == "Relu" for node in fused._program)
    for batch in (1, 7, len(data.test.x)):
        x = data.test.x[:batch]
        assert np.array_equal(fused.run(x), plain.run(x))  # bit for bit
    assert fused.peak_buffer_bytes <= plain.peak_buffer_bytes


def test_an_mlp_keeps_its_gemm_layers_and_its_results(tmp_path):
    data = make_blobs()
    path = _artifact(tiny_mlp(), data.test.x, tmp_path / "mlp.sca")
    fused, plain = runtime.load(path), runtime.load(path, fuse=False)
    assert np.array_equal(fused.run(data.test.x), plain.run(data.test.x))


def test_a_value_read_twice_or_a_stored_input_that_does_not_fit_is_not_fused():
    constants = {"w": np.ones((3, 4), np.float32), "b": np.ones(4, np.float32),
                 "wide": np.ones((2, 4), np.float32)}
    reused = [Node("MatMul", ("x", "w"), ("y",)), Node("Add", ("y", "b"), ("z",)),
              Node("Add", ("y", "z"), ("out",))]
    assert fuse_program(reused, constants, {"out"}) == reused  # y is also read by the last Add
    broadcast = [Node("MatMul", ("x", "w"), ("y",)), Node("Add", ("y", "wide"), ("out",))]
    assert fuse_program(broadcast, constants, {"out"}) == broadcast  # not a per-column bias
    output = [Node("MatMul", ("x", "w"), ("y",)), Node("Add", ("y", "b"), ("out",))]
    assert fuse_program(output, constants, {"out", "y"}) == output  # y is a graph output
    assert fuse_program(output, constants, {"out"}) == [
        Node("MatMulAdd", ("x", "w", "b"), ("out",))]
