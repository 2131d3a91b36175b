"""The tiny flight graph the protection and injection tests share (inputs ``w1``, ``b1``, ``w2``):
x (40) -> Gemm(w1, b1) -> Relu -> Gemm(w2) -> logits (3)."""

from __future__ import annotations

from satcompress.runtime.graph import GRAPH_FORMAT

MLP_GRAPH = {"format": GRAPH_FORMAT,
             "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 40]}],
             "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 3]}],
             "nodes": [{"op": "Gemm", "in": ["x", "w1", "b1"], "out": ["pre"]},
                       {"op": "Relu", "in": ["pre"], "out": ["hidden"]},
                       {"op": "Gemm", "in": ["hidden", "w2"], "out": ["logits"]}]}
