"""Generated C for every runtime operator, compiled on the host, against the NumPy runtime.

Every case is a tiny graph stored as an artifact; its C (compressed weights, as for a
microcontroller, and dense weights, as for the host) is compiled once for the whole module
and run on the same inputs as the runtime. Integer arithmetic and exactly rounded float
operations must agree bit for bit; float products and transcendental functions (summed in
another order, or another libm) within a float32 tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
from c_build import compile_many, generate_c, load_graph, run_compiled

from satcompress.codegen import emitted_operators
from satcompress.runtime import supported_operators

RNG = np.random.default_rng(7)


def _w(*shape, scale=0.5):
    return RNG.normal(0, scale, shape).astype(np.float32)


def _i64(*values):
    return np.array(values, np.int64)


FLAT = ("Flatten", ["y"], ["logits"], {})
CASES: dict[str, tuple] = {}  # name -> (input shape, nodes, tensors, exact, fuse)


def case(name, shape, nodes, tensors=None, exact=True, fuse=True):
    CASES[name] = (shape, nodes, tensors or {}, exact, fuse)


for op in ("Relu", "Neg", "Abs", "Identity"):
    case(op, (8,), [(op, ["x"], ["logits"], {})])
for op in ("Sigmoid", "Tanh", "Erf", "Exp"):
    case(op, (8,), [(op, ["x"], ["logits"], {})], exact=False)
case("Sqrt", (8,), [("Abs", ["x"], ["a"], {}), ("Sqrt", ["a"], ["logits"], {})])
for op in ("Add", "Sub", "Mul", "Div"):
    case(op, (3, 4), [(op, ["x", "c"], ["y"], {}), FLAT], {"c": _w(4) + 2.0})
    case(op + "-dynamic", (8,), [(op, ["x", "x"], ["logits"], {})])
case("Pow", (8,), [("Abs", ["x"], ["a"], {}), ("Pow", ["a", "c"], ["logits"], {})],
     {"c": np.float32([2.0])}, exact=False)
for op in ("ReduceMean", "ReduceSum", "ReduceMax"):
    case(op, (4, 6), [(op, ["x", "ax"], ["logits"], {"keepdims": 0})], {"ax": _i64(-1)})
    case(op + "-two-axes", (4, 6), [(op, ["x", "ax"], ["y"], {}), FLAT], {"ax": _i64(1, 2)})
case("Softmax", (3, 5), [("Softmax", ["x"], ["y"], {"axis": 1}), FLAT], exact=False)
case("LayerNormalization", (4, 6),
     [("LayerNormalization", ["x", "s", "b"], ["y"], {"epsilon": 1e-3}), FLAT],
     {"s": _w(6) + 1, "b": _w(6)})
case("BatchNormalization", (3, 5),
     [("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], {}), FLAT],
     {"s": _w(3) + 1, "b": _w(3), "m": _w(3), "v": np.abs(_w(3)) + 0.5})
case("MatMul", (6,), [("MatMul", ["x", "w"], ["logits"], {})], {"w": _w(6, 4)}, exact=False)
case("MatMul-dynamic", (3, 4), [("Transpose", ["x"], ["t"], {"perm": [0, 2, 1]}),
                                ("MatMul", ["x", "t"], ["y"], {}), FLAT], exact=False)
case("MatMulAdd", (6,), [("MatMul", ["x", "w"], ["m"], {}), ("Add", ["m", "b"], ["a"], {}),
                         ("Relu", ["a"], ["logits"], {})],
     {"w": _w(6, 5), "b": _w(5)}, exact=False)
case("MatMulScaleSoftmax", (3, 4),
     [("Transpose", ["x"], ["t"], {"perm": [0, 2, 1]}), ("MatMul", ["x", "t"], ["m"], {}),
      ("Div", ["m", "d"], ["s"], {}), ("Softmax", ["s"], ["y"], {}), FLAT],
     {"d": np.float32(2.0)}, exact=False)
# attention (MatMulScaleSoftmax, then the MatMul of its weights: generated together)
case("attention", (2, 12, 6),
     [("MatMul", ["x", "wv"], ["v"], {}), ("MatMul", ["x", "wk"], ["k"], {}),
      ("Transpose", ["k"], ["kt"], {"perm": [0, 1, 3, 2]}), ("MatMul", ["x", "kt"], ["m"], {}),
      ("Div", ["m", "d"], ["s"], {}), ("Softmax", ["s"], ["p"], {}),
      ("MatMul", ["p", "v"], ["y"], {}), FLAT],
     {"wv": _w(6, 13), "wk": _w(6, 6), "d": np.float32(2.5)}, exact=False)
case("attention-stored-keys", (2, 12, 6),
     [("MatMul", ["x", "kt"], ["m"], {}), ("Div", ["m", "d"], ["s"], {}),
      ("Softmax", ["s"], ["p"], {}), ("MatMul", ["p", "v"], ["y"], {}), FLAT],
     {"kt": _w(2, 6, 9), "v": _w(9, 5), "d": np.float32(1.5)}, exact=False)
case("Gemm", (6,), [("Gemm", ["x", "w", "c"], ["logits"],
                     {"transB": 1, "alpha": 0.5, "beta": 2.0})],
     {"w": _w(4, 6), "c": _w(4)}, exact=False)
clustered = np.array([-0.5, -0.25, 0.0, 0.25, 0.5], np.float32)[RNG.integers(0, 5, (40, 30))]
case("Gemm-codebook", (30,), [("Gemm", ["x", "w", "c"], ["logits"], {"transB": 1})],
     {"w": clustered, "c": _w(40)}, exact=False)
case("Conv-1d", (4, 10), [("Conv", ["x", "w", "b"], ["y"],
                           {"kernel_shape": [3], "pads": [1, 2], "strides": [2],
                            "dilations": [2], "group": 2}), FLAT],
     {"w": _w(6, 2, 3), "b": _w(6)}, exact=False)
case("Conv-2d", (2, 5, 5), [("Conv", ["x", "w"], ["y"], {"kernel_shape": [3, 3],
                                                         "pads": [1, 1, 1, 1]}), FLAT],
     {"w": _w(3, 2, 3, 3)}, exact=False)
quantize = {"sx": np.float32(0.05), "zx": np.uint8(128)}
case("QuantizeLinear", (8,), [("QuantizeLinear", ["x", "sx", "zx"], ["q"], {}),
                              ("DequantizeLinear", ["q", "sx", "zx"], ["logits"], {})],
     quantize)
int_weights = RNG.integers(-7, 8, (5, 8)).astype(np.int8)
case("QuantGemm", (8,), [("QuantizeLinear", ["x", "sx", "zx"], ["q"], {}),
                         ("QuantGemm", ["q", "sx", "zx", "w", "sw", "", "b"], ["logits"], {})],
     {**quantize, "w": int_weights, "sw": np.abs(_w(5)) * 0.1, "b": _w(5)})
case("QuantGemm-int8", (8,), [("QuantizeLinear", ["x", "sx", "zx"], ["q"], {}),
                              ("QuantGemm", ["q", "sx", "zx", "w", "sw", ""], ["logits"], {})],
     {**quantize, "w": RNG.integers(-127, 128, (5, 8)).astype(np.int8),
      "sw": np.abs(_w(5)) * 0.1})
case("QuantGemm-weight-only", (8,), [("QuantGemm", ["x", "", "", "w", "sw", "", "b"],
                                      ["logits"], {})],
     {"w": int_weights, "sw": np.abs(_w(5)) * 0.1, "b": _w(5)}, exact=False)
case("QuantConv", (2, 9), [("QuantizeLinear", ["x", "sx", "zx"], ["q"], {}),
                           ("QuantConv", ["q", "sx", "zx", "w", "sw", "", "b"], ["y"],
                            {"kernel_shape": [3], "pads": [1, 1]}), FLAT],
     {**quantize, "w": RNG.integers(-7, 8, (4, 2, 3)).astype(np.int8),
      "sw": np.abs(_w(4)) * 0.1, "b": _w(4)})
case("QuantConv-int8-after-transpose", (9, 2), [
    ("Transpose", ["x"], ["t"], {"perm": [0, 2, 1]}),
    ("QuantizeLinear", ["t", "sx", "zx"], ["q"], {}),
    ("QuantConv", ["q", "sx", "zx", "w", "sw", "", "b"], ["y"], {"kernel_shape": [3]}), FLAT],
    {"sx": np.float32(0.04), "zx": np.int8(-3), "w": RNG.integers(-7, 8, (4, 2, 3)).astype(
        np.int8), "sw": np.abs(_w(4)) * 0.1, "b": _w(4)})
case("MaxPool", (2, 7, 6), [("MaxPool", ["x"], ["y"], {"kernel_shape": [3, 2],
                                                      "pads": [1, 0, 1, 1], "strides": [2, 2]}),
                            FLAT])
case("AveragePool", (2, 9), [("AveragePool", ["x"], ["y"], {"kernel_shape": [3],
                                                            "pads": [1, 1]}), FLAT])
case("AveragePool-include-pad", (2, 9),
     [("AveragePool", ["x"], ["y"], {"kernel_shape": [3], "pads": [1, 1],
                                     "count_include_pad": 1}), FLAT])
case("GlobalAveragePool", (3, 4, 5), [("GlobalAveragePool", ["x"], ["y"], {}), FLAT])
case("Transpose", (2, 3, 4), [("Transpose", ["x"], ["y"], {"perm": [0, 3, 1, 2]}), FLAT])
case("Reshape", (2, 6), [("Reshape", ["x", "s"], ["logits"], {})], {"s": _i64(0, -1)})
case("Unsqueeze-Squeeze", (6,), [("Unsqueeze", ["x", "a"], ["u"], {}),
                                 ("Squeeze", ["u", "a"], ["logits"], {})], {"a": _i64(1)})
case("Concat", (3,), [("Neg", ["x"], ["n"], {}),
                      ("Concat", ["x", "n", "x"], ["logits"], {"axis": 1})])
case("Gather", (5, 2), [("Gather", ["x", "g"], ["y"], {"axis": 1}), FLAT],
     {"g": _i64(4, -1, 0, 2)})
case("Slice", (4, 8), [("Slice", ["x", "st", "en", "ax", "sp"], ["y"], {}), FLAT],
     {"st": _i64(1, 7), "en": _i64(4, 0), "ax": _i64(1, 2), "sp": _i64(1, -2)})
case("Cast", (8,), [("Cast", ["x"], ["i"], {"to": 6}), ("Cast", ["i"], ["logits"], {"to": 1})])
case("Shape", (2, 3), [("Shape", ["x"], ["sh"], {}), ("Gather", ["sh", "zero"], ["n"], {}),
                       ("Concat", ["n", "minus"], ["s"], {"axis": 0}),
                       ("Reshape", ["x", "s"], ["logits"], {})],
     {"zero": _i64(0), "minus": _i64(-1)})
case("SinusoidalPositionalEncoding", (4, 6),
     [("SinusoidalPositionalEncoding", [], ["pe"], {"shape": [1, 4, 6]}),
      ("Add", ["x", "pe"], ["y"], {}), FLAT])
for op, attrs in (("LeakyRelu", {"alpha": 0.1}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
                  ("HardSwish", {}), ("Sign", {}), ("Reciprocal", {})):
    case(op, (8,), [(op, ["x"], ["logits"], attrs)])
for op, attrs in (("Softplus", {}), ("Elu", {"alpha": 0.7})):
    case(op, (8,), [(op, ["x"], ["logits"], attrs)], exact=False)
case("Log", (8,), [("Abs", ["x"], ["a"], {}), ("Log", ["a"], ["logits"], {})], exact=False)
case("Clip", (8,), [("Clip", ["x", "lo", "hi"], ["logits"], {})],
     {"lo": np.float32(-0.5), "hi": np.float32(0.7)})
case("Clip-high-only", (8,), [("Clip", ["x", "", "hi"], ["logits"], {})], {"hi": np.float32(0.7)})
case("Min-Max", (3, 4), [("Neg", ["x"], ["n"], {}), ("Min", ["x", "n", "c"], ["m"], {}),
                         ("Max", ["m", "x"], ["y"], {}), FLAT], {"c": _w(4)})
for op in ("Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual"):
    case(op, (3, 4), [("Max", ["x", "c"], ["m"], {}), (op, ["x", "m"], ["b"], {}),
                      ("Cast", ["b"], ["y"], {"to": 1}), FLAT], {"c": _w(4)})
for op in ("And", "Or", "Xor"):
    case(op, (3, 4), [("Greater", ["x", "c"], ["p"], {}), ("Less", ["x", "d"], ["q"], {}),
                      (op, ["p", "q"], ["b"], {}), ("Not", ["b"], ["n"], {}),
                      ("Cast", ["n"], ["y"], {"to": 1}), FLAT], {"c": _w(4), "d": _w(3, 1)})
case("Where", (3, 4), [("Greater", ["x", "c"], ["b"], {}), ("Neg", ["x"], ["n"], {}),
                       ("Where", ["b", "x", "n"], ["y"], {}), FLAT], {"c": _w(4)})
case("Split", (4, 5), [("Split", ["x", "s"], ["a", "b"], {"axis": 2}),
                       ("Concat", ["b", "a"], ["y"], {"axis": 2}), FLAT], {"s": _i64(2, 3)})
case("Split-num-outputs", (7, 2), [("Split", ["x"], ["a", "b", "c"], {"axis": 1, "num_outputs": 3}),
                                   ("Concat", ["c", "a"], ["y"], {"axis": 1}), FLAT])
case("Pad", (3, 6), [("Pad", ["x", "p", "v"], ["y"], {}), FLAT],
     {"p": _i64(0, 1, -1, 0, -2, 2), "v": np.float32(0.5)})
case("Pad-reflect", (3, 6), [("Pad", ["x", "p"], ["y"], {"mode": "reflect"}), FLAT],
     {"p": _i64(0, 2, 0, 0, 1, 5)})
case("Pad-edge-axes", (3, 6), [("Pad", ["x", "p", "", "a"], ["y"], {"mode": "edge"}), FLAT],
     {"p": _i64(3, -1, 2, 4), "a": _i64(-1, 1)})
case("Expand", (3, 1), [("Expand", ["x", "s"], ["y"], {}), FLAT], {"s": _i64(1, 3, 4)})
case("int4-and-shared-weights", (8,), [
    ("QuantGemm", ["x", "", "", "w", "sw", ""], ["h"], {}),
    ("QuantGemm", ["h", "", "", "w2", "sw", ""], ["logits"], {})],
    {"w": RNG.integers(-8, 8, (8, 8)).astype(np.int8), "sw": np.abs(_w(8)) * 0.1,
     "w2": RNG.integers(-8, 8, (8, 8)).astype(np.int8)}, exact=False)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Every case, both weight forms, in one host library: (runtime, source, library)."""
    built, sources = {}, []
    for number, (name, (shape, nodes, tensors, _, fuse)) in enumerate(CASES.items()):
        flight = load_graph(shape, nodes, tensors, fuse)
        for compressed in (True, False):
            source = generate_c(flight, prefix=f"t{number}{'c' if compressed else 'd'}_",
                                compressed=compressed)
            built[name, compressed] = (flight, source)
            sources.append(source)
    library = compile_many(sources, tmp_path_factory.mktemp("cases"))
    return built, library


def test_every_runtime_operator_has_an_emitter_and_a_case():
    assert emitted_operators() == supported_operators()
    covered = {node[0] for shape, nodes, *_ in CASES.values() for node in nodes}
    covered |= {"MatMulAdd", "MatMulScaleSoftmax"}  # written by the runtime's fusion
    covered |= {"GRU", "LSTM"}  # tests/codegen/test_codegen_recurrent.py
    assert set(supported_operators()) <= covered


@pytest.mark.parametrize("compressed", [True, False], ids=["compressed", "dense"])
@pytest.mark.parametrize("name", list(CASES))
def test_generated_c_matches_the_numpy_runtime(compiled, name, compressed):
    built, library = compiled
    flight, source = built[name, compressed]
    shape, _, _, exact, _ = CASES[name]
    x = np.random.default_rng(1).normal(0, 1.5, (6, *shape)).astype(np.float32)
    expected = flight.run(x)
    actual = run_compiled(library, source, x)
    if exact:
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_allclose(actual, expected, rtol=2e-5, atol=2e-5)
    np.testing.assert_array_equal(actual.argmax(1), expected.argmax(1))


def test_fused_operators_are_what_the_fusion_cases_run(compiled):
    built, _ = compiled
    assert "MatMulAdd" in built["MatMulAdd", True][0].operators or any(
        node.op == "MatMulAdd" for node in built["MatMulAdd", True][0]._program)
    assert any(node.op == "MatMulScaleSoftmax"
               for node in built["MatMulScaleSoftmax", True][0]._program)


def test_an_attentions_two_products_are_one_block(compiled):
    built, _ = compiled
    for name in ("attention", "attention-stored-keys"):
        for compressed in (True, False):
            flight, source = built[name, compressed]
            assert [node.op for node in flight._program][-3:-1] == ["MatMulScaleSoftmax",
                                                                    "MatMul"]
            assert "computed with node" in source.source


@pytest.mark.parametrize("compressed", [True, False], ids=["compressed", "dense"])
@pytest.mark.parametrize("name", ["QuantGemm", "QuantConv", "QuantConv-int8-after-transpose"])
def test_the_quantized_entry_point_gives_the_float_ones_logits(compiled, name, compressed):
    built, library = compiled
    flight, source = built[name, compressed]
    tensors = CASES[name][2]
    scale, zero = tensors["sx"], tensors["zx"]
    grid = np.dtype(zero.dtype)
    assert source.quantized_input == grid.name
    macro = source.prefix.upper()
    assert f"#define {macro}INPUT_ZERO_POINT {int(zero)}" in source.header
    assert (f"int {source.prefix}predict_{grid.name}(const {grid.name}_t *input, float *output);"
            in source.header)
    x = np.random.default_rng(2).normal(0, 1.5, (6, *CASES[name][0])).astype(np.float32)
    limits = np.iinfo(grid)
    q = np.clip(np.rint(x * (np.float32(1) / scale)) + int(zero), limits.min, limits.max)
    expected = run_compiled(library, source, x)
    actual = run_compiled(library, source, q.astype(grid))
    np.testing.assert_array_equal(actual.view(np.uint32), expected.view(np.uint32))


def test_a_model_with_a_float_input_has_no_quantized_entry_point(compiled):
    built, _ = compiled
    for name in ("Gemm", "QuantGemm-weight-only", "attention"):
        source = built[name, True][1]
        assert source.quantized_input is None and "predict_" not in source.header


def test_compressed_weights_take_less_flash_than_dense(compiled):
    built, _ = compiled
    _, compressed = built["Gemm-codebook", True]
    _, dense = built["Gemm-codebook", False]
    assert compressed.constant_bytes < dense.constant_bytes / 4
    _, int4 = built["int4-and-shared-weights", True]
    assert "_ix[" in int4.source and int4.weights == "compressed"


def test_what_cannot_be_generated_is_refused_with_the_reason():
    from satcompress.artifact import encode_artifact
    from satcompress.codegen import CodegenError
    from satcompress.runtime import load

    graph = {"format": "satcompress-graph/1",
             "inputs": [{"name": "x", "dtype": "uint8", "shape": [None, 4]}],
             "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 4]}],
             "nodes": [{"op": "Cast", "in": ["x"], "out": ["logits"], "attrs": {"to": 1}}]}
    flight = load(encode_artifact(graph, {}, {}))
    with pytest.raises(CodegenError, match="takes uint8 input; the C generator writes a float32"):
        generate_c(flight)
    relu = load_graph((3,), [("Relu", ["x"], ["logits"], {})], {})
    with pytest.raises(CodegenError, match="not a C identifier"):
        generate_c(relu, prefix="model-")
