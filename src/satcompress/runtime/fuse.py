"""Load-time operator fusion: the same arithmetic in fewer passes over memory.

The stored graph is ONNX-shaped, one operator per node, and every node allocates its output.
For small models on batches (an alert broker's workload) that traffic, not the arithmetic,
is much of the time: a transformer's attention weights are written and read three times
(``MatMul`` -> ``Div`` -> ``Softmax``) and every ``Linear`` writes its product before the
bias is added. :func:`fuse_program` rewrites two patterns of ADJACENT nodes whose
intermediate values nothing else reads:

``MatMul(x, W)`` -> ``Add(., b)`` [-> ``Relu``] with stored ``W`` (2-D) and ``b`` (1-D, one
    per column) becomes ``MatMulAdd(x, W, b)`` [with ``activation="Relu"``]: the bias is
    added into the product, and the rectifier applied there.
``MatMul(a, b)`` -> ``Div(., c)`` with a stored scalar ``c`` -> ``Softmax``
    becomes ``MatMulScaleSoftmax(a, b, c)``: scaled dot-product attention weights computed
    in the product's own buffer.

Both fused kernels perform the replaced operators' float32 operations in the same order, so
the results are bit for bit those of the unfused graph (``tests/runtime/test_fuse.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from satcompress.runtime.graph import Node

__all__ = ["fuse_program"]


def _single_use(name: str, readers: Counter) -> bool:
    return readers[name] == 1


def _shaped(node: Node, op: str, inputs: int) -> bool:
    """Whether ``node`` applies ``op`` to ``inputs`` inputs and has one output (a node of
    another arity is left for its kernel to refuse)."""
    return node.op == op and len(node.inputs) == inputs and len(node.outputs) == 1


def _bias_of(add: Node, product: str, constants: Mapping[str, np.ndarray], columns: int
             ) -> str | None:
    """The stored 1-D bias ``add`` adds to ``product`` (one value per column), if any."""
    if not _shaped(add, "Add", 2) or product not in add.inputs:
        return None
    (other,) = [name for name in add.inputs if name != product] or [None]
    value = constants.get(other) if other else None
    if value is None or value.ndim != 1 or value.shape[0] != columns:
        return None
    return other


def _matmul_add(nodes: Sequence[Node], constants: Mapping[str, np.ndarray], readers: Counter
                ) -> Node | None:
    matmul, add = nodes
    if not _shaped(matmul, "MatMul", 2):
        return None
    weight = constants.get(matmul.inputs[1])
    if weight is None or weight.ndim != 2:
        return None
    (product,) = matmul.outputs
    bias = _bias_of(add, product, constants, weight.shape[1])
    if bias is None or not _single_use(product, readers):
        return None
    return Node("MatMulAdd", (matmul.inputs[0], matmul.inputs[1], bias), add.outputs)


def _matmul_add_relu(nodes: Sequence[Node], constants: Mapping[str, np.ndarray],
                     readers: Counter) -> Node | None:
    *linear, relu = nodes
    fused = _matmul_add(linear, constants, readers)
    if (fused is None or not _shaped(relu, "Relu", 1) or relu.inputs != fused.outputs
            or not _single_use(fused.outputs[0], readers)):
        return None
    return Node("MatMulAdd", fused.inputs, relu.outputs, {"activation": "Relu"})


def _attention_weights(nodes: Sequence[Node], constants: Mapping[str, np.ndarray],
                       readers: Counter) -> Node | None:
    matmul, divide, softmax = nodes
    if not (_shaped(matmul, "MatMul", 2) and _shaped(divide, "Div", 2)
            and _shaped(softmax, "Softmax", 1)):
        return None
    (product,), (scaled,) = matmul.outputs, divide.outputs
    scale = constants.get(divide.inputs[1])
    if (divide.inputs[0] != product or softmax.inputs[0] != scaled or scale is None
            or scale.size != 1 or not np.issubdtype(scale.dtype, np.floating)
            or not _single_use(product, readers) or not _single_use(scaled, readers)):
        return None
    return Node("MatMulScaleSoftmax", (*matmul.inputs, divide.inputs[1]), softmax.outputs,
                {"axis": softmax.attributes.get("axis", -1)})


_PATTERNS = ((3, _attention_weights), (3, _matmul_add_relu), (2, _matmul_add))
"""(length, matcher): longest first."""


def fuse_program(program: Sequence[Node], constants: Mapping[str, np.ndarray],
                 graph_outputs: set[str]) -> list[Node]:
    """``program`` with the patterns of the module docstring fused; other nodes unchanged.

    ``constants`` are the stored (and folded) tensors; ``graph_outputs`` are read by the
    caller, so a value among them is never fused away.
    """
    readers = Counter(name for node in program for name in node.inputs if name)
    readers.update(graph_outputs)
    fused: list[Node] = []
    position = 0
    while position < len(program):
        for length, match in _PATTERNS:
            window = program[position : position + length]
            node = match(window, constants, readers) if len(window) == length else None
            if node is not None:
                fused.append(node)
                position += length
                break
        else:
            fused.append(program[position])
            position += 1
    return fused
