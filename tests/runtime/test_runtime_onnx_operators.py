"""The runtime's kernels for the operators common layers export to, against ONNX Runtime.

Every case is a one-node ONNX model (opset 18) built with ``onnx.helper`` whose inputs are all
graph inputs; ONNX Runtime's outputs on random inputs are the oracle for the kernel's on the
same arrays. Exactly rounded operations (and selections, comparisons, data movement) must
agree bit for bit; functions evaluated through ``exp``/``log`` within a float32 rounding.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from satcompress.runtime.kernels import KERNELS

RNG = np.random.default_rng(3)


def _x(*shape: int) -> np.ndarray:
    """Random float32 values on a grid of 1/8 (so comparisons meet ties and zeros)."""
    return (np.round(RNG.normal(0, 2, shape) * 8) / 8).astype(np.float32)


def _i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


X = _x(2, 3, 5)
P = np.abs(_x(2, 3, 5)) + np.float32(0.125)  # positive, for Log
B = X > 0
C = X < 0.5

CASES: dict[str, tuple] = {  # name -> (operator, inputs, attributes, outputs, exact)
    "LeakyRelu": ("LeakyRelu", [X], {"alpha": 0.1}, 1, True),
    "LeakyRelu-default": ("LeakyRelu", [X], {}, 1, True),
    "HardSigmoid": ("HardSigmoid", [X], {"alpha": 0.3, "beta": 0.4}, 1, True),
    "HardSigmoid-default": ("HardSigmoid", [X], {}, 1, True),
    "HardSwish": ("HardSwish", [X], {}, 1, True),
    "Softplus": ("Softplus", [X * 20], {}, 1, False),
    "Elu": ("Elu", [X], {"alpha": 0.7}, 1, False),
    "Sign": ("Sign", [X], {}, 1, True),
    "Log": ("Log", [P], {}, 1, False),
    "Reciprocal": ("Reciprocal", [P - 1.0625], {}, 1, True),
    "Clip": ("Clip", [X, np.float32(-0.5), np.float32(1.25)], {}, 1, True),
    "Clip-low-only": ("Clip", [X, np.float32(-0.5)], {}, 1, True),
    "Clip-high-only": ("Clip", [X, None, np.float32(1.25)], {}, 1, True),
    "Clip-unbounded": ("Clip", [X], {}, 1, True),
    "Min": ("Min", [X, _x(3, 1), _x(5)], {}, 1, True),
    "Max": ("Max", [X, _x(3, 1), _x(5)], {}, 1, True),
    "Max-one-input": ("Max", [X], {}, 1, True),
    "Where": ("Where", [B[:, :1], X, _x(5)], {}, 1, True),
    "Equal": ("Equal", [X, np.float32(0.0)], {}, 1, True),
    "Greater": ("Greater", [X, _x(5)], {}, 1, True),
    "GreaterOrEqual": ("GreaterOrEqual", [X, X[:1]], {}, 1, True),
    "Less": ("Less", [X, _x(3, 1)], {}, 1, True),
    "LessOrEqual": ("LessOrEqual", [X, np.float32(0.25)], {}, 1, True),
    "Not": ("Not", [B], {}, 1, True),
    "And": ("And", [B, C], {}, 1, True),
    "Or": ("Or", [B, C[:, :1]], {}, 1, True),
    "Xor": ("Xor", [B, C], {}, 1, True),
    "Split-sizes": ("Split", [X, _i64(1, 4)], {"axis": -1}, 2, True),
    "Split-num-outputs": ("Split", [X], {"axis": 1, "num_outputs": 3}, 3, True),
    "Split-uneven": ("Split", [X], {"axis": 2, "num_outputs": 2}, 2, True),
    "Pad-constant": ("Pad", [X, _i64(0, 1, 2, 1, 0, 3), np.float32(0.5)], {}, 1, True),
    "Pad-crop": ("Pad", [X, _i64(0, -1, 2, 0, 1, -3)], {}, 1, True),
    "Pad-axes": ("Pad", [X, _i64(2, 1, 0, 4), None, _i64(-1, 1)], {}, 1, True),
    "Pad-reflect": ("Pad", [X, _i64(0, 2, 4, 0, 0, 1)], {"mode": "reflect"}, 1, True),
    "Pad-edge": ("Pad", [X, _i64(1, 0, 6, 0, 4, -1)], {"mode": "edge"}, 1, True),
    "Expand": ("Expand", [X[:, :1], _i64(3, 1)], {}, 1, True),
    "Expand-both-ways": ("Expand", [_x(3, 1), _i64(2, 1, 4)], {}, 1, True),
}


def _onnx_runtime(op: str, inputs: list, attributes: dict, outputs: int) -> list[np.ndarray]:
    import onnxruntime

    names = [f"i{k}" if value is not None else "" for k, value in enumerate(inputs)]
    ports = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype),
                                           value.shape)
             for name, value in zip(names, inputs) if value is not None]
    results = [onnx.ValueInfoProto(name=f"o{k}") for k in range(outputs)]
    node = helper.make_node(op, names, [f"o{k}" for k in range(outputs)], **attributes)
    model = helper.make_model(helper.make_graph([node], op, ports, results),
                              opset_imports=[helper.make_opsetid("", 18)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    feeds = {name: np.asarray(value) for name, value in zip(names, inputs) if value is not None}
    return session.run(None, feeds)


@pytest.mark.parametrize("name", list(CASES))
def test_the_kernel_computes_what_onnx_runtime_computes(name):
    op, inputs, attributes, outputs, exact = CASES[name]
    expected = _onnx_runtime(op, inputs, attributes, outputs)
    actual = KERNELS[op].run([None if value is None else np.asarray(value) for value in inputs],
                             attributes)
    assert len(actual) == len(expected)
    for mine, theirs in zip(actual, expected):
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape
        if exact:
            np.testing.assert_array_equal(mine, theirs)
        else:
            np.testing.assert_allclose(mine, theirs, rtol=3e-7, atol=1e-7)


@pytest.mark.parametrize("op, inputs, attributes, message", [
    ("Split", [X, _i64(2, 2)], {"axis": 2}, "must be >= 0 and add up to the axis length 5"),
    ("Split", [X], {"axis": 1}, "needs its 'split' input"),
    ("Pad", [X, _i64(0, 0, 5, 0, 0, 0)], {"mode": "reflect"}, "reflect needs more elements"),
    ("Pad", [X, _i64(0, -2, 0, 0, -2, 0)], {}, "crop more than the 3 elements"),
    ("Pad", [X, _i64(1, 1)], {"mode": "wrap"}, "mode 'wrap' is not one of"),
    ("Expand", [X, _i64(4, 5)], {}, "shape mismatch"),
])
def test_a_node_that_does_not_fit_its_inputs_is_refused_saying_why(op, inputs, attributes,
                                                                    message):
    kernel = KERNELS[op]
    with pytest.raises(ValueError, match=message):
        kernel.allocates(inputs, attributes)
        kernel.run(inputs, attributes)


def test_a_split_into_many_parts_counts_each_part_before_it_runs():
    x = np.zeros((1, 10**6), np.float32)
    assert KERNELS["Split"].allocates([x], {"axis": 1, "num_outputs": 10**6}) == 16 * 10**6
