"""Generated C of GRU and LSTM nodes, and of recurrent and attention models, against the
NumPy runtime.

Tiny graphs (every direction, with and without biases and initial states, several batch rows
in one node, compressed weights) and torch models (nn.GRU, nn.LSTM, nn.TransformerEncoder,
nn.MultiheadAttention) exported the flight way are compiled once for the module and run on
the same inputs as the runtime: logits within a float32 tolerance, the same argmax.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from c_build import compile_many, generate_c, load_graph, run_compiled
from torch import nn

from satcompress import runtime
from satcompress.codegen import CodegenError
from satcompress.pipeline.flight import LOGIT_TOLERANCE, build_artifact

pytestmark = pytest.mark.filterwarnings(  # the exporter's own, while it traces nn.GRU/nn.LSTM
    "ignore:The tensor attributes self.rnn._flat_weights:UserWarning",
    "ignore:The .grad attribute of a Tensor that is not a leaf Tensor:UserWarning")

RNG = np.random.default_rng(11)
STEPS, SIZE, HIDDEN = 5, 3, 4
GATES = {"GRU": 3, "LSTM": 4}
TO_SEQUENCE = ("Transpose", ["x"], ["xs"], {"perm": [1, 0, 2]})  # (N, S, I) -> (S, N, I)


def _w(*shape, scale=0.5):
    return RNG.normal(0, scale, shape).astype(np.float32)


def _weights(op: str, directions: int, bias: bool, size: int = SIZE) -> dict:
    gates = GATES[op] * HIDDEN
    tensors = {"W": _w(directions, gates, size), "R": _w(directions, gates, HIDDEN)}
    if bias:
        tensors["B"] = _w(directions, 2 * gates)
    return tensors


def _flat(name: str, rank: int, out: str) -> list[tuple]:
    """(S or D, ..., N, H) -> (N, ...): batch axis first, then flattened."""
    perm = [rank - 2, *range(rank - 2), rank - 1]
    return [("Transpose", [name], [f"{name}/t"], {"perm": perm}),
            ("Flatten", [f"{name}/t"], [out], {})]


def _state_from_x(directions: int) -> list[tuple]:
    """An initial state computed from the input: (D, N, H) from x[:, :1, :] (SIZE == HIDDEN)."""
    nodes = [("Slice", ["x", "zero", "one", "one"], ["x0"], {}),
             ("Transpose", ["x0"], ["x0t"], {"perm": [1, 0, 2]}), ("Tanh", ["x0t"], ["h1"], {})]
    return nodes + ([("Neg", ["h1"], ["h2"], {}), ("Concat", ["h1", "h2"], ["h0"], {"axis": 0})]
                    if directions == 2 else [("Identity", ["h1"], ["h0"], {})])


SLICE = {"zero": np.array([0]), "one": np.array([1])}
CASES: dict[str, tuple] = {}  # name -> (input shape, nodes, tensors, per-example)


def case(name, nodes, tensors, shape=(STEPS, SIZE), per_example=False):
    CASES[name] = (shape, nodes, tensors, per_example)


def _concat_outputs(names: list[str]) -> list[tuple]:
    nodes, flat = [], []
    for name in names:
        rank = 4 if name == "Y" else 3
        nodes += _flat(name, rank, f"{name}/f")
        flat.append(f"{name}/f")
    return nodes + [("Concat", flat, ["logits"], {"axis": 1})]


for op in ("GRU", "LSTM"):
    attrs = {"hidden_size": HIDDEN, **({"linear_before_reset": 1} if op == "GRU" else {})}
    outputs = ["Y", "Yh", "Yc"][:2 + (op == "LSTM")]
    case(f"{op}-forward", [TO_SEQUENCE, (op, ["xs", "W", "R", "B"], outputs, attrs),
                           *_concat_outputs(outputs)], _weights(op, 1, True))
    initial = ["", "h0"] + (["c0"] if op == "LSTM" else [])
    case(f"{op}-reverse-stored-state",
         [TO_SEQUENCE, (op, ["xs", "W", "R", "", *initial], outputs,
                        {**attrs, "direction": "reverse"}), *_concat_outputs(outputs[1:])],
         {**_weights(op, 1, False), "h0": _w(1, 1, HIDDEN),
          **({"c0": _w(1, 1, HIDDEN)} if op == "LSTM" else {})}, per_example=True)
    case(f"{op}-bidirectional-computed-state",
         [TO_SEQUENCE, *_state_from_x(2),
          (op, ["xs", "W", "R", "B", "", "h0", *(["h0"] if op == "LSTM" else [])], outputs,
           {**attrs, "direction": "bidirectional"}), *_concat_outputs(outputs)],
         {**_weights(op, 2, True, HIDDEN), **SLICE}, shape=(STEPS, HIDDEN))
    case(f"{op}-one-step", [TO_SEQUENCE, (op, ["xs", "W", "R", "B"], outputs, attrs),
                            *_concat_outputs(outputs)], _weights(op, 1, True), shape=(1, SIZE))
    # two rows of the node's batch per example: (N, S, 2, I) -> (S, 2N, I)
    case(f"{op}-two-rows",
         [("Transpose", ["x"], ["xt"], {"perm": [1, 0, 2, 3]}),
          ("Reshape", ["xt", "rows"], ["xs"], {}),
          (op, ["xs", "W", "R", "B"], outputs, {**attrs, "direction": "bidirectional"}),
          ("Transpose", ["Yh"], ["rows_first"], {"perm": [1, 0, 2]}),
          ("Reshape", ["rows_first", "columns"], ["logits"], {})],
         {**_weights(op, 2, True), "rows": np.array([0, -1, SIZE]),
          "columns": np.array([-1, 2 * 2 * HIDDEN])}, shape=(STEPS, 2, SIZE))
    clustered = np.float32([-0.5, -0.25, 0.0, 0.25, 0.5])  # 8 units: >= 64 weights each
    case(f"{op}-codebook-weights",
         [TO_SEQUENCE, (op, ["xs", "W", "R", "B"], outputs[:2], {**attrs, "hidden_size": 8}),
          *_concat_outputs(outputs[1:2])],
         {"W": clustered[RNG.integers(0, 5, (1, GATES[op] * 8, SIZE))],
          "R": clustered[RNG.integers(0, 5, (1, GATES[op] * 8, 8))],
          "B": _w(1, 2 * GATES[op] * 8)})


# --- torch models -----------------------------------------------------------------------------


class Recurrent(nn.Module):
    """A stacked recurrent classifier reading the last step (``out[:, -1]``) or ``h[-1]``."""

    def __init__(self, kind: type[nn.Module], layers: int, bidirectional: bool,
                 last_state: bool) -> None:
        super().__init__()
        self.rnn = kind(SIZE, 8, num_layers=layers, batch_first=True,
                        bidirectional=bidirectional)
        self.last_state = last_state
        self.head = nn.Linear(8 if last_state or not bidirectional else 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, state = self.rnn(x)
        h = state[0] if isinstance(state, tuple) else state
        return self.head(h[-1] if self.last_state else out[:, -1])


class Encoder(nn.Module):
    """Linear embedding, a 2-layer nn.TransformerEncoder, mean pooling, Linear head."""

    def __init__(self, norm_first: bool, activation: str) -> None:
        super().__init__()
        self.embed = nn.Linear(SIZE, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, activation=activation,
                                           batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


class Attention(nn.Module):
    """A bare nn.MultiheadAttention (self-attention) between two Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(SIZE, 16)
        self.attention = nn.MultiheadAttention(16, 4, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        attended, _ = self.attention(h, h, h, need_weights=False)
        return self.head(attended.mean(dim=1))


MODELS = {
    "gru-2-layers-bidirectional": lambda: Recurrent(nn.GRU, 2, True, False),
    "lstm-2-layers-last-state": lambda: Recurrent(nn.LSTM, 2, False, True),
    "transformer-pre-norm-gelu": lambda: Encoder(True, "gelu"),
    "multihead-attention": Attention,
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Every graph case and every model, both weight forms, in one host library."""
    folder = tmp_path_factory.mktemp("recurrent")
    built, sources = {}, []
    flights = {name: load_graph(shape, nodes, tensors)
               for name, (shape, nodes, tensors, _) in CASES.items()}
    torch.manual_seed(0)
    x = RNG.normal(0, 1, (8, 7, SIZE)).astype(np.float32)
    for name, make in MODELS.items():
        model = make().eval()
        build_artifact(model, torch.from_numpy(x[:2]), {"task": "tiny"}, folder / f"{name}.sca")
        flights[name] = runtime.load(folder / f"{name}.sca")
        with torch.inference_mode():
            built[name, "torch"] = (x, model(torch.from_numpy(x)).numpy())
    for number, (name, flight) in enumerate(flights.items()):
        for compressed in (True, False):
            source = generate_c(flight, prefix=f"r{number}{'c' if compressed else 'd'}_",
                                compressed=compressed)
            built[name, compressed] = (flight, source)
            sources.append(source)
    return built, compile_many(sources, folder)


def test_every_recurrent_operator_has_cases():
    assert {node[0] for _, nodes, *_ in CASES.values() for node in nodes} >= {"GRU", "LSTM"}


@pytest.mark.parametrize("compressed", [True, False], ids=["compressed", "dense"])
@pytest.mark.parametrize("name", list(CASES))
def test_generated_recurrent_nodes_match_the_numpy_runtime(compiled, name, compressed):
    built, library = compiled
    flight, source = built[name, compressed]
    shape, _, _, per_example = CASES[name]
    x = np.random.default_rng(1).normal(0, 1.5, (6, *shape)).astype(np.float32)
    expected = (np.concatenate([flight.run(row[None]) for row in x]) if per_example
                else flight.run(x))
    actual = run_compiled(library, source, x)
    np.testing.assert_allclose(actual, expected, rtol=2e-5, atol=2e-5)
    np.testing.assert_array_equal(actual.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("compressed", [True, False], ids=["compressed", "dense"])
@pytest.mark.parametrize("name", list(MODELS))
def test_generated_models_match_the_runtime_and_torch(compiled, name, compressed):
    built, library = compiled
    flight, source = built[name, compressed]
    x, reference = built[name, "torch"]
    expected = flight.run(x)
    actual = run_compiled(library, source, x)
    scale = max(1.0, float(np.abs(reference).max()))
    assert np.abs(actual - expected).max() <= LOGIT_TOLERANCE * scale
    assert np.abs(actual - reference).max() <= LOGIT_TOLERANCE * scale
    np.testing.assert_array_equal(actual.argmax(1), reference.argmax(1))


def test_clustered_recurrent_weights_stay_compressed(compiled):
    built, _ = compiled
    for op in ("GRU", "LSTM"):
        _, compressed = built[f"{op}-codebook-weights", True]
        _, dense = built[f"{op}-codebook-weights", False]
        assert "_cb[" in compressed.source and compressed.constant_bytes < dense.constant_bytes


def test_a_gru_without_linear_before_reset_is_refused_with_the_reason():
    flight = load_graph((STEPS, SIZE), [TO_SEQUENCE, ("GRU", ["xs", "W", "R"], ["Y", "Yh"],
                                                      {"hidden_size": HIDDEN}),
                                        *_concat_outputs(["Yh"])], _weights("GRU", 1, False))
    with pytest.raises(CodegenError, match="linear_before_reset=0 is not generated"):
        generate_c(flight)
