"""Recurrent and attention models: the ONNX GRU/LSTM kernels against ONNX Runtime, and
GRU, LSTM and transformer-encoder classifiers, written as a user writes them, the flight way
(ONNX export -> graph description -> artifact -> runtime) against PyTorch.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from satcompress import runtime
from satcompress.onnx_export import run_onnx
from satcompress.pipeline.flight import LOGIT_TOLERANCE, build_artifact
from satcompress.runtime import GraphError
from satcompress.runtime.kernels import KERNELS

pytestmark = pytest.mark.filterwarnings(  # the exporter's own, while it traces nn.GRU/nn.LSTM
    "ignore:The tensor attributes self.rnn._flat_weights:UserWarning",
    "ignore:The .grad attribute of a Tensor that is not a leaf Tensor:UserWarning")

STEPS, BATCH, SIZE, HIDDEN = 6, 3, 4, 5
GATES = {"GRU": 3, "LSTM": 4}
OUTPUTS = {"GRU": ("Y", "Y_h"), "LSTM": ("Y", "Y_h", "Y_c")}


# --- one node against ONNX Runtime ------------------------------------------------------------


def _node_case(op: str, direction: str, bias: bool, initial: bool, seed: int):
    """(input names, tensors, X) of one GRU/LSTM node with random weights."""
    rng = np.random.default_rng(seed)
    directions = 2 if direction == "bidirectional" else 1
    rows = GATES[op] * HIDDEN
    tensors = {"W": rng.normal(0, 0.5, (directions, rows, SIZE)),
               "R": rng.normal(0, 0.5, (directions, rows, HIDDEN))}
    names = ["x", "W", "R", "B" if bias else "", "", "h0" if initial else ""]
    if bias:
        tensors["B"] = rng.normal(0, 0.5, (directions, 2 * rows))
    if initial:
        tensors["h0"] = rng.normal(0, 0.5, (directions, BATCH, HIDDEN))
        if op == "LSTM":
            tensors["c0"] = rng.normal(0, 0.5, (directions, BATCH, HIDDEN))
            names.append("c0")
    while not names[-1]:
        names.pop()
    x = rng.normal(0, 1, (STEPS, BATCH, SIZE)).astype(np.float32)
    return names, {name: value.astype(np.float32) for name, value in tensors.items()}, x


def _onnx_runtime(op: str, names: list[str], tensors: dict, attributes: dict, x: np.ndarray
                  ) -> list[np.ndarray]:
    """Every output of the node, each from ONNX Runtime as the one output of its model."""
    node = helper.make_node(op, names, list(OUTPUTS[op]), **attributes)
    results = []
    for output in OUTPUTS[op]:
        graph = helper.make_graph(
            [node], op, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
            [numpy_helper.from_array(value, name) for name, value in tensors.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        results.append(run_onnx(model.SerializeToString(), x))
    return results


NODE_CASES = [(op, direction, before_reset, bias, initial)
              for op, direction, before_reset, bias, initial in itertools.product(
                  GATES, ("forward", "reverse", "bidirectional"), (0, 1), (True, False),
                  (True, False))
              if op == "GRU" or before_reset == 0]


@pytest.mark.parametrize("op,direction,before_reset,bias,initial", NODE_CASES)
def test_recurrent_kernels_compute_what_onnx_runtime_computes(op, direction, before_reset, bias,
                                                               initial):
    seed = NODE_CASES.index((op, direction, before_reset, bias, initial))
    names, tensors, x = _node_case(op, direction, bias, initial, seed)
    attributes = {"hidden_size": HIDDEN, "direction": direction,
                  **({"linear_before_reset": before_reset} if op == "GRU" else {})}
    expected = _onnx_runtime(op, names, tensors, attributes, x)
    inputs = [x] + [tensors[name] if name else None for name in names[1:]]
    actual = KERNELS[op].run(inputs, attributes)
    assert len(actual) == len(expected)
    for computed, reference in zip(actual, expected):
        assert computed.dtype == np.float32 and computed.shape == reference.shape
        np.testing.assert_allclose(computed, reference, rtol=0, atol=2e-6)
    assert KERNELS[op].allocates(inputs, attributes) >= max(value.size for value in actual)


REFUSED = {
    "sequence_lens": ({4: np.full(BATCH, STEPS, np.int32)}, {}, "sequence_lens"),
    "peepholes": ({7: np.zeros((1, 3 * HIDDEN), np.float32)}, {}, "peephole weights P"),
    "layout": ({}, {"layout": 1}, "layout=1"),
    "clip": ({}, {"clip": 3.0}, "clip=3.0"),
    "activations": ({}, {"activations": ["Relu", "Tanh", "Tanh"]}, "activations"),
    "input_forget": ({}, {"input_forget": 1}, "input_forget=1"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_what_the_kernels_do_not_implement_is_refused_with_the_reason(name):
    names, tensors, x = _node_case("LSTM", "forward", False, False, seed=0)
    extra, attributes, reason = REFUSED[name]
    inputs: list = [x, tensors["W"], tensors["R"], None, None, None, None, None]
    for position, value in extra.items():
        inputs[position] = value
    for call in (KERNELS["LSTM"].run, KERNELS["LSTM"].allocates):
        with pytest.raises(ValueError, match=f"LSTM with {reason}.*not supported"):
            call(inputs, {"hidden_size": HIDDEN, **attributes})


def test_a_recurrent_node_that_does_not_fit_its_weights_does_not_load():
    from satcompress.artifact import encode_artifact

    names, tensors, _ = _node_case("GRU", "forward", True, False, seed=0)
    graph = {"format": runtime.GRAPH_FORMAT,
             "inputs": [{"name": "x", "dtype": "float32", "shape": [None, STEPS, SIZE + 1]}],
             "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, HIDDEN]}],
             "nodes": [{"op": "Transpose", "in": ["x"], "out": ["xs"],
                        "attrs": {"perm": [1, 0, 2]}},
                       {"op": "GRU", "in": ["xs", "W", "R", "B"], "out": ["Y", "h"],
                        "attrs": {"hidden_size": HIDDEN}},
                       {"op": "Squeeze", "in": ["h", "zero"], "out": ["logits"]}]}
    content = encode_artifact(graph, {**tensors, "zero": np.array([0])}, {})
    with pytest.raises(GraphError, match=r"GRU.*W has shape \(1, 15, 4\), expected "
                                         r"\(1, 15, 5\)"):
        runtime.load(content)


# --- user models against PyTorch --------------------------------------------------------------


class GRUClassifier(nn.Module):
    """A RAPID-style classifier: a GRU over the light curve, a Linear head on the last step."""

    def __init__(self, features: int = SIZE, classes: int = 3) -> None:
        super().__init__()
        self.gru = nn.GRU(features, 16, batch_first=True)
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, h = self.gru(x)
        return self.head(out[:, -1])


class StackedGRUClassifier(nn.Module):
    """Two bidirectional GRU layers; the head reads the last layer's final (backward) state."""

    def __init__(self, features: int = SIZE, classes: int = 3) -> None:
        super().__init__()
        self.gru = nn.GRU(features, 12, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(12, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x)
        return self.head(h[-1])


class LSTMClassifier(nn.Module):
    """An LSTM; the head reads the final hidden state."""

    def __init__(self, features: int = SIZE, classes: int = 3) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, 16, batch_first=True)
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        return self.head(h[-1])


class StackedLSTMClassifier(nn.Module):
    """Two bidirectional LSTM layers, a ReLU and a Linear head on the last step."""

    def __init__(self, features: int = SIZE, classes: int = 3) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, 8, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(torch.relu(out[:, -1]))


class TransformerClassifier(nn.Module):
    """Linear embedding, a 2-layer nn.TransformerEncoder, mean over time, Linear head."""

    def __init__(self, norm_first: bool, activation: str, features: int = SIZE,
                 classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(features, 16)
        layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, activation=activation,
                                           batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


class AttentionClassifier(nn.Module):
    """A bare nn.MultiheadAttention (self-attention) with a residual, mean over time, head."""

    def __init__(self, features: int = SIZE, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(features, 16)
        self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        attended, _ = self.attention(h, h, h)
        return self.head((h + attended).mean(dim=1))


MODELS = {
    "gru": (GRUClassifier, {"GRU"}),
    "gru-2-layers-bidirectional": (StackedGRUClassifier, {"GRU"}),
    "lstm": (LSTMClassifier, {"LSTM"}),
    "lstm-2-layers-bidirectional": (StackedLSTMClassifier, {"LSTM"}),
    "transformer-post-norm-relu": (lambda: TransformerClassifier(False, "relu"), {"Softmax"}),
    "transformer-post-norm-gelu": (lambda: TransformerClassifier(False, "gelu"), {"Erf"}),
    "transformer-pre-norm-relu": (lambda: TransformerClassifier(True, "relu"), {"Softmax"}),
    "transformer-pre-norm-gelu": (lambda: TransformerClassifier(True, "gelu"), {"Erf"}),
    "multihead-attention": (AttentionClassifier, {"Softmax"}),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_recurrent_and_attention_models_match_torch(name, tmp_path):
    make, operators = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()  # eval: PyTorch runs its fused encoder "fast path" for the reference
    x = np.random.default_rng(3).normal(0, 1, (40, 9, SIZE)).astype(np.float32)
    build_artifact(model, torch.from_numpy(x[:2]), {"task": "tiny"}, tmp_path / "model.sca")
    flight = runtime.load(tmp_path / "model.sca")
    assert operators <= set(flight.operators)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    actual = flight.run(x)
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    np.testing.assert_array_equal(actual.argmax(1), expected.argmax(1))
    assert np.abs(actual - expected).max() <= LOGIT_TOLERANCE * max(1.0, np.abs(expected).max())
