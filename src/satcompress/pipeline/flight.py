"""From a compressed PyTorch model to a verified flight artifact, and the check that they agree.

:func:`build_artifact` exports the model to ONNX (:func:`satcompress.onnx_export.export_onnx`,
the route every stage keeps working; quantized models as QDQ graphs with their weights folded
to integers by :func:`satcompress.quantize.fold_weight_quantizers`), rewrites the ONNX graph
into the runtime's graph description (:mod:`satcompress.runtime.graph`) and writes the graph,
the tensors and the task's metadata with :func:`satcompress.artifact.write_artifact`:

* ``Constant`` nodes become stored tensors; nodes nothing reads are dropped.
* A ``MatMul``/``Gemm``/``Conv`` whose weight is ``DequantizeLinear`` of stored integers
  (possibly through a 2-D ``Transpose``) with one scale per output channel becomes one fused
  ``QuantGemm``/``QuantConv`` node that keeps the weight as integers; when its activation is
  ``DequantizeLinear(QuantizeLinear(x))`` the fused node reads the quantized activation and
  accumulates in integers (see :mod:`satcompress.runtime.kernels`). A ``MatMul``'s bias
  ``Add`` is folded in.
* Values and tensors get short names (``v0``, ``c0``, ...) to keep the header small.
* A stored tensor that is bit for bit the transformer's sinusoidal positional encoding is
  replaced by a ``SinusoidalPositionalEncoding`` node that regenerates it at load
  (:func:`generated_constants`): it costs a few header bytes instead of ``4 n d``.

With ``fec=True`` (a recipe's default, :data:`satcompress.pipeline.recipe.DEFAULT_FEC`) the
artifact is stored as Reed-Solomon codewords (:mod:`satcompress.artifact.fec`): the loader
corrects up to 4 wrong bytes per 255, and its parity bytes are part of the file size a budget
counts (:func:`fec_bytes`).

Int8 (and int4, int2 in int8 containers) weights are stored as integers with their scales
and zero points; clustered weights are float tensors with few distinct values and the
container stores them as a codebook and indices.

:func:`verify_artifact` runs the artifact with the NumPy runtime and the in-framework model on
the task's test split and reports the largest logit difference, the number of differing
predictions, the task metric computed from the runtime's own outputs, and the file's forward
error correction (parity, bytes it corrected on load).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from satcompress import runtime
from satcompress.artifact import Artifact, encode_artifact, read_artifact, write_artifact
from satcompress.artifact.fec import CODEWORD_BYTES
from satcompress.measure import Measurement, latency_ms
from satcompress.onnx_export import export_onnx
from satcompress.quantize import fold_weight_quantizers
from satcompress.runtime.graph import GRAPH_FORMAT, UnsupportedOperatorError, check_operators
from satcompress.runtime.kernels import sinusoidal_positional_encoding
from satcompress.tasks.base import TaskData
from satcompress.tasks.registry import Task
from satcompress.tasks.user import task_for_artifact

__all__ = [
    "ARTIFACT_FILE",
    "LOGIT_TOLERANCE",
    "QUANTIZED_LOGIT_TOLERANCE",
    "DATASET_DIAGNOSTICS",
    "VerifyReport",
    "NumpyModule",
    "graph_from_onnx",
    "generated_constants",
    "flight_graph",
    "task_metadata",
    "build_artifact",
    "artifact_size_bytes",
    "fec_bytes",
    "verify_artifact",
    "flight_measurement",
]

ARTIFACT_FILE = "model.sca"
"""Name of the flight artifact the recipe runner writes into its output folder."""

LOGIT_TOLERANCE = 1e-4
"""Largest allowed ``|runtime - torch|`` of a logit, relative to ``max(1, max |torch logit|)``,
for models whose activations are float (float, pruned, clustered, low-rank, weight-only
quantized models).

Float layers run as float32 BLAS products in both, whose summation orders differ, and the
runtime sums reductions in float64: measured differences on the reference models and their
compressed variants are below 1e-6 of the logit scale (at most 3.8e-6 on logits up to 5), so
1e-4 leaves a wide margin while still catching any real disagreement.
"""

QUANTIZED_LOGIT_TOLERANCE = 1e-2
"""The same bound for models with quantized activations (``QuantizeLinear`` in the graph).

Rounding to the activation grid is discontinuous: where PyTorch's float32 value and the
runtime's (exact integer accumulation) lie on either side of a rounding boundary, one
activation lands one integer step away, which moves logits by about 1e-3 of their scale
(measured at most 1.5e-3 on the W8A8 reference models and students). Predictions must still
agree exactly.
"""

_DEFAULTS: dict[str, dict[str, Any]] = {
    "Gemm": {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0},
    "Conv": {"group": 1},
    "QuantConv": {"group": 1},
    "LayerNormalization": {"axis": -1, "epsilon": 1e-5},
    "BatchNormalization": {"epsilon": 1e-5},
    "Reshape": {"allowzero": 0},
    "ReduceMean": {"keepdims": 1, "noop_with_empty_axes": 0},
    "ReduceSum": {"keepdims": 1, "noop_with_empty_axes": 0},
    "ReduceMax": {"keepdims": 1, "noop_with_empty_axes": 0},
    "Softmax": {"axis": -1},
    "QuantizeLinear": {"axis": 1},
    "DequantizeLinear": {"axis": 1},
    "AveragePool": {"count_include_pad": 0},
    "Flatten": {"axis": 1},
    "Gather": {"axis": 0},
    "Shape": {"start": 0},
}
"""Attribute defaults (ONNX opset 18) left out of the stored graph."""

_UNSUPPORTED_SETTINGS: dict[str, dict[str, Any]] = {
    "auto_pad": {"NOTSET"},
    "ceil_mode": {0},
    "stash_type": {1},
    "saturate": {1},
    "storage_order": {0},
    "training_mode": {0},
}
"""Attribute -> the only values the kernels implement; these attributes are not stored."""

_ALL_ONES = ("strides", "dilations")
_FUSABLE = ("MatMul", "Gemm", "Conv")


# --- reading the ONNX graph -------------------------------------------------------------------


@dataclass
class _Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attributes: dict[str, Any]
    layer: str = ""


def _layer(node: onnx.NodeProto) -> str:
    """The PyTorch layer an exported node comes from (module path, class and call, from the
    exporter's ``namespace`` metadata) and the node's name."""
    namespace = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
    scopes = [scope.partition(": ") for scope in namespace.split("/")]
    if len(scopes) < 2:
        return f"ONNX node {node.name}"
    (path, _, module), (_, _, call) = scopes[-2], scopes[-1]
    where = f"layer {path}" if path else "the model's forward"
    return f"{where} ({module.rsplit('.', 1)[-1]}: {call}), ONNX node {node.name}"


def _attribute(attribute: onnx.AttributeProto) -> Any:
    value = helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, (list, tuple)):
        return [item.decode() if isinstance(item, bytes) else item for item in value]
    return value


def _constant_value(node: _Node) -> np.ndarray:
    """The tensor of an ONNX ``Constant`` node (any of its value attributes)."""
    (name, value), = node.attributes.items()
    dtypes = {"value_float": np.float32, "value_floats": np.float32,
              "value_int": np.int64, "value_ints": np.int64}
    if name == "value":
        return np.asarray(value)
    if name not in dtypes:
        raise UnsupportedOperatorError(f"ONNX Constant with {name} is not supported.")
    return np.asarray(value, dtype=dtypes[name])


def _clean_attributes(node: _Node, position: int) -> dict[str, Any]:
    """Drop defaults, check settings the kernels do not implement, normalise types."""
    cleaned = {}
    defaults = _DEFAULTS.get(node.op, {})
    for name, value in node.attributes.items():
        if name in _UNSUPPORTED_SETTINGS:
            if value not in _UNSUPPORTED_SETTINGS[name]:
                raise UnsupportedOperatorError(
                    f"{node.op} at {node.layer or f'graph node {position}'} has "
                    f"{name}={value!r}; the flight runtime implements only "
                    f"{name}={sorted(_UNSUPPORTED_SETTINGS[name])[0]!r}. Use explicit padding "
                    "and floor rounding in the model."
                )
            continue
        if name == "kernel_shape" and node.op in ("Conv", "QuantConv"):
            continue  # read from the weight's shape
        if name in _ALL_ONES and all(v == 1 for v in value) or name == "pads" and not any(value):
            continue
        if name in defaults and (
            np.float32(value) == np.float32(defaults[name]) if isinstance(value, float)
            else value == defaults[name]
        ):
            continue
        cleaned[name] = value
    return cleaned


def _port(value: onnx.ValueInfoProto) -> dict[str, Any]:
    tensor_type = value.type.tensor_type
    shape = [dim.dim_value if dim.HasField("dim_value") else None for dim in tensor_type.shape.dim]
    dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
    return {"name": value.name, "dtype": np.dtype(dtype).name, "shape": shape}


# --- fusing quantized layers ------------------------------------------------------------------


class _Fuser:
    """Rewrites QDQ patterns of an ONNX graph into the runtime's fused quantized layers."""

    def __init__(self, nodes: list[_Node], tensors: dict[str, np.ndarray], outputs: set[str]):
        self.nodes, self.tensors, self.outputs = nodes, tensors, outputs
        self.producer = {name: node for node in nodes for name in node.outputs}
        self.readers: dict[str, list[_Node]] = {}
        for node in nodes:
            for name in node.inputs:
                self.readers.setdefault(name, []).append(node)
        self.transposed: dict[str, str] = {}

    def _stored(self, *names: str) -> bool:
        return all(name in self.tensors for name in names)

    def weight(self, name: str, flipped: bool) -> list[str] | None:
        """``[w, w_scale, w_zero_point]`` with ``w`` (N, ...) and per-N parameters, or None.

        ``name`` is the weight operand; ``flipped`` says whether the consumer reads it as
        (N, K) (Gemm with transB, Conv) rather than (K, N) (MatMul).
        """
        node = self.producer.get(name)
        if node is not None and node.op == "Transpose" and node.attributes.get("perm") == [1, 0]:
            flipped, node = not flipped, self.producer.get(node.inputs[0])
        if node is None or node.op != "DequantizeLinear" or len(node.inputs) < 2:
            return None
        integers, scale, *rest = node.inputs
        zero_point = rest[0] if rest else ""
        if not self._stored(integers, scale, *([zero_point] if zero_point else [])):
            return None
        values = self.tensors[integers]
        if values.dtype not in (np.int8, np.uint8) or values.ndim < 2:
            return None
        axis = node.attributes.get("axis", 1) % values.ndim
        if self.tensors[scale].size > 1 and axis != (0 if flipped else 1):
            return None  # scales not per output channel: keep the float path
        if not flipped:
            if values.ndim != 2:
                return None
            if integers not in self.transposed:
                self.transposed[integers] = f"{integers}/T"
                self.tensors[f"{integers}/T"] = np.ascontiguousarray(values.T)
            integers = self.transposed[integers]
        return [integers, scale, zero_point]

    def activation(self, name: str) -> list[str]:
        """``[q_x, x_scale, x_zero_point]`` of a per-tensor quantized activation.

        ``[x, "", ""]`` for a float activation.
        """
        node = self.producer.get(name)
        if node is not None and node.op == "DequantizeLinear" and len(node.inputs) == 3:
            quantized, scale, zero_point = node.inputs
            source = self.producer.get(quantized)
            if (source is not None and source.op == "QuantizeLinear"
                    and self._stored(scale, zero_point) and self.tensors[scale].size == 1):
                return [quantized, scale, zero_point]
        return [name, "", ""]

    def _bias_add(self, node: _Node, channels: int) -> _Node | None:
        """The ``Add`` of a constant (N,) bias that alone reads a MatMul's output."""
        (output,) = node.outputs
        readers = self.readers.get(output, [])
        if output in self.outputs or len(readers) != 1 or readers[0].op != "Add":
            return None
        (add,) = readers
        other = [name for name in add.inputs if name != output]
        if len(other) != 1 or not self._stored(other[0]):
            return None
        bias = self.tensors[other[0]]
        return add if bias.shape == (channels,) and bias.dtype == np.float32 else None

    def fuse(self, node: _Node) -> tuple[_Node, _Node | None] | None:
        """The fused replacement of ``node`` and the bias Add it absorbs, or None."""
        attributes = dict(node.attributes)
        bias = node.inputs[2] if len(node.inputs) > 2 else ""
        if node.op == "Gemm":
            if attributes.get("transA", 0) or attributes.get("alpha", 1.0) != 1.0 or (
                    bias and attributes.get("beta", 1.0) != 1.0):
                return None
            weight = self.weight(node.inputs[1], flipped=bool(attributes.get("transB", 0)))
            if weight is None or (bias and not (self._stored(bias)
                                                and self.tensors[bias].ndim <= 1)):
                return None
            attributes = {}
        elif node.op == "Conv":
            weight = self.weight(node.inputs[1], flipped=True)
        else:
            weight = self.weight(node.inputs[1], flipped=False)
        if weight is None:
            return None
        absorbed = None
        if node.op == "MatMul":
            absorbed = self._bias_add(node, self.tensors[weight[0]].shape[0])
            if absorbed is not None:
                bias = next(name for name in absorbed.inputs if name != node.outputs[0])
        op = "QuantConv" if node.op == "Conv" else "QuantGemm"
        outputs = absorbed.outputs if absorbed is not None else node.outputs
        inputs = self.activation(node.inputs[0]) + weight + ([bias] if bias else [])
        return _Node(op, inputs, list(outputs), attributes), absorbed

    def run(self) -> list[_Node]:
        rewritten: list[_Node] = []
        absorbed_ids: set[int] = set()
        for node in self.nodes:
            if id(node) in absorbed_ids:
                continue
            fused = self.fuse(node) if node.op in _FUSABLE else None
            if fused is None:
                rewritten.append(node)
                continue
            replacement, absorbed = fused
            if absorbed is not None:
                absorbed_ids.add(id(absorbed))
            rewritten.append(replacement)
        return rewritten


def _live_nodes(nodes: list[_Node], outputs: set[str]) -> list[_Node]:
    """Nodes that contribute to a graph output, in their order."""
    needed, kept = set(outputs), []
    for node in reversed(nodes):
        if needed.intersection(node.outputs):
            kept.append(node)
            needed.update(name for name in node.inputs if name)
    return kept[::-1]


def graph_from_onnx(onnx_model: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The runtime graph description and the stored tensors of a serialised ONNX model.

    Raises
    ------
    UnsupportedOperatorError
        If the model uses an operator (or an operator setting) the runtime does not support;
        the message names every such operator.
    """
    model = onnx.load_from_string(onnx_model)
    graph = model.graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    raw_nodes = [_Node(n.op_type, list(n.input), list(n.output),
                       {a.name: _attribute(a) for a in n.attribute}, _layer(n))
                 for n in graph.node]
    nodes = []
    for node in raw_nodes:
        if node.op == "Constant":
            tensors[node.outputs[0]] = _constant_value(node)
        else:
            nodes.append(node)
    layers: dict[str, list[str]] = {}
    for node in nodes:
        layers.setdefault(node.op, []).append(node.layer)
    check_operators(layers, "The model's ONNX export", layers)
    inputs = [value for value in graph.input if value.name not in tensors]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ValueError(
            f"A flight model must take one input and return one output (logits); this one has "
            f"{len(inputs)} inputs and {len(graph.output)} outputs."
        )
    output_names = {graph.output[0].name}
    nodes = _live_nodes(_Fuser(nodes, tensors, output_names).run(), output_names)
    return _renamed(nodes, tensors, _port(inputs[0]), _port(graph.output[0]))


def _renamed(nodes: list[_Node], tensors: dict[str, np.ndarray], source: dict,
             target: dict) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Short names: graph input and output keep theirs, values ``v<i>``, tensors ``c<i>``."""
    names = {"": "", source["name"]: source["name"], target["name"]: target["name"]}
    stored: dict[str, np.ndarray] = {}
    described = []
    for position, node in enumerate(nodes):
        for name in node.inputs:
            if name not in names:
                if name not in tensors:
                    raise ValueError(
                        f"ONNX node {position} ({node.op}) reads undefined value {name!r}.")
                names[name] = f"c{len(stored)}"
                stored[names[name]] = np.asarray(tensors[name], order="C")  # keeps 0-d
        for name in node.outputs:
            names.setdefault(name, f"v{position}" if len(node.outputs) == 1 else
                             f"v{position}_{node.outputs.index(name)}")
        entry: dict[str, Any] = {"op": node.op, "in": [names[n] for n in node.inputs],
                                 "out": [names[n] for n in node.outputs]}
        attributes = _clean_attributes(node, position)
        if attributes:
            entry["attrs"] = attributes
        described.append(entry)
    graph = {"format": GRAPH_FORMAT, "inputs": [source], "outputs": [target], "nodes": described}
    json.dumps(graph)  # plain data only
    return graph, stored


def _is_positional_encoding(tensor: np.ndarray) -> bool:
    if tensor.dtype != np.float32 or tensor.ndim < 2 or any(s != 1 for s in tensor.shape[:-2]):
        return False
    expected = sinusoidal_positional_encoding(*tensor.shape[-2:]).reshape(tensor.shape)
    return bool(np.array_equal(tensor.view(np.uint32), expected.view(np.uint32)))


def generated_constants(graph: dict[str, Any], tensors: dict[str, np.ndarray]
                        ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``graph`` and ``tensors`` with every stored positional encoding made a generator node.

    A tensor is replaced only when the runtime's generator reproduces it bit for bit, so the
    artifact computes exactly what the model stored.
    """
    generated = [name for name, tensor in tensors.items() if _is_positional_encoding(tensor)]
    nodes = [{"op": "SinusoidalPositionalEncoding", "in": [], "out": [name],
              "attrs": {"shape": list(tensors[name].shape)}} for name in generated]
    kept = {name: tensor for name, tensor in tensors.items() if name not in generated}
    return {**graph, "nodes": nodes + graph["nodes"]}, kept


# --- artifact and verification ----------------------------------------------------------------


DATASET_DIAGNOSTICS = ("skipped", "skipped_counts", "skipped_rows", "fit_counts",
                       "objects_per_class")
"""Entries of a task's ``preprocessing`` that describe its training data, not how to prepare
an input: left out of the artifact (they are in the run's ``stages.json``), every byte of
which is flash."""


def task_metadata(task: Task, data: TaskData) -> dict[str, Any]:
    """What the flight software needs besides the graph: task (and its metric, for a user's
    task), classes, input, and the preprocessing settings and constants (without
    :data:`DATASET_DIAGNOSTICS`) -- enough to verify the artifact or score new data with it
    from the data file alone (:func:`satcompress.tasks.user.task_for_artifact`)."""
    return {
        "task": task.name,
        **({"metric": task.metric} if task.metric is not None else {}),
        "class_names": list(data.class_names),
        "input_shape": list(data.input_shape),
        "input_dtype": np.dtype(data.test.x.dtype).name,
        "preprocessing": {key: value for key, value in data.preprocessing.items()
                          if key not in DATASET_DIAGNOSTICS},
        "preprocessing_version": task.preprocessing_version,
    }


def build_artifact(
    model: nn.Module,
    example_input: torch.Tensor,
    metadata: Mapping[str, Any],
    path: str | Path,
    *,
    fec: bool = False,
) -> Artifact:
    """Write ``model`` as a flight artifact at ``path`` (atomically) and return it.

    Parameters
    ----------
    model : nn.Module
        The (compressed) model; it is not modified.
    example_input : Tensor
        One input with a batch axis (e.g. ``torch.tensor(data.test.x[:1])``).
    metadata : dict
        JSON-able task metadata (see :func:`task_metadata`).
    path : path
        Where to write (conventionally ``*.sca``).
    fec : bool
        Store the file as Reed-Solomon codewords, so a loader corrects up to 4 wrong bytes per
        255 (about 3.3 % larger; see :func:`fec_bytes`).

    Raises
    ------
    UnsupportedOperatorError
        If the model exports to an operator the runtime does not support.
    """
    graph, tensors = flight_graph(model, example_input)
    return write_artifact(path, graph, tensors, dict(metadata), fec=fec)


def flight_graph(model: nn.Module, example_input: torch.Tensor
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The runtime graph and stored tensors of ``model`` (what an artifact holds).

    Raises
    ------
    UnsupportedOperatorError
        If the model exports to an operator the runtime lacks (naming it and its layer).
    """
    onnx_model = fold_weight_quantizers(export_onnx(model, example_input))
    return generated_constants(*graph_from_onnx(onnx_model))


def artifact_size_bytes(model: nn.Module, example_input: torch.Tensor,
                        metadata: Mapping[str, Any], *, fec: bool = False) -> int:
    """Size of the artifact :func:`build_artifact` would write, without writing it.

    What a budget's ``max_bytes`` counts (FEC parity included); the search measures its
    candidates with it.
    """
    graph, tensors = flight_graph(model, example_input)
    return len(encode_artifact(graph, tensors, dict(metadata), fec=fec))


_PREAMBLE_BYTES, _PREAMBLE_PARITY = 19, 8
"""An FEC artifact starts with the 19-byte preamble and its fixed 8 parity bytes, then the
codewords (format version 1, :mod:`satcompress.artifact.container`)."""


def fec_bytes(artifact: Artifact) -> int:
    """Bytes of ``artifact``'s file that are Reed-Solomon parity (0 without FEC): the
    preamble's 8, and ``fec_parity`` per codeword of at most 255 bytes after it."""
    if not artifact.fec_parity:
        return 0
    codewords = -(-(artifact.size_bytes - _PREAMBLE_BYTES - _PREAMBLE_PARITY) // CODEWORD_BYTES)
    return _PREAMBLE_PARITY + artifact.fec_parity * codewords


@dataclass(frozen=True)
class VerifyReport:
    """The runtime against the in-framework model on a task's test split.

    Attributes
    ----------
    artifact : str
        Path of the artifact.
    sha256 : str
        The artifact's content checksum.
    size_bytes : int
        The artifact's size on disk.
    peak_buffer_bytes : int
        The runtime's planned batch-1 peak RAM.
    examples : int
        Test examples compared.
    max_abs_logit_difference : float
        Largest ``|runtime - torch|`` over every logit of every test example.
    differing_predictions : int
        Test examples whose argmax differs (target 0).
    quantized_activations : bool
        Whether the graph quantizes activations (then the wider tolerance applies).
    tolerance : float
        The allowed maximum difference: :data:`LOGIT_TOLERANCE` (or
        :data:`QUANTIZED_LOGIT_TOLERANCE`) times ``max(1, max |torch logit|)``.
    examples_over_float_tolerance : int
        Test examples with a logit differing by more than the float tolerance (in a model with
        quantized activations: those where an activation landed on a neighbouring step).
    metrics : dict
        The task's test metrics computed from the runtime's own probabilities.
    framework_metrics : dict
        The same metrics of the in-framework model.
    fec_parity : int
        Reed-Solomon parity bytes per 255-byte codeword (0: no forward error correction).
    fec_bytes : int
        Bytes of the file that are parity (part of ``size_bytes``; see :func:`fec_bytes`).
    corrected_bytes : int
        Bytes forward error correction repaired while loading the file (0 for an intact one).
    """

    artifact: str
    sha256: str
    size_bytes: int
    peak_buffer_bytes: int
    examples: int
    max_abs_logit_difference: float
    differing_predictions: int
    quantized_activations: bool
    tolerance: float
    examples_over_float_tolerance: int
    metrics: dict[str, float]
    framework_metrics: dict[str, float]
    fec_parity: int
    fec_bytes: int
    corrected_bytes: int

    @property
    def passed(self) -> bool:
        """No differing prediction and every logit within the tolerance."""
        return self.differing_predictions == 0 and self.max_abs_logit_difference <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def _torch_logits(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return np.concatenate([model(torch.from_numpy(x[start : start + batch_size])).numpy()
                                   for start in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)


def verify_artifact(
    artifact_path: str | Path,
    model: nn.Module,
    data: TaskData,
    task: Task | None = None,
) -> VerifyReport:
    """Run the artifact (NumPy runtime) and ``model`` (PyTorch) on ``data.test`` and compare.

    The task metrics are the task's own evaluation (:meth:`Task.evaluate`: test
    scores, thresholds tuned on validation where the task tunes one) with the runtime as the
    model, so they are computed from the runtime's outputs alone. ``task`` defaults to the
    one the artifact's metadata names.
    """
    stored = read_artifact(artifact_path)
    flight = runtime.Runtime(stored)
    task = task or task_for_artifact(flight.metadata, data)
    test_logits = flight.run(data.test.x)
    reference = _torch_logits(model, data.test.x)
    differences = np.abs(test_logits.astype(np.float64) - reference).max(axis=1)
    differing = int(np.count_nonzero(test_logits.argmax(1) != reference.argmax(1)))
    scale = max(1.0, float(np.abs(reference).max(initial=0.0)))
    quantized = "QuantizeLinear" in flight.operators
    tolerance = (QUANTIZED_LOGIT_TOLERANCE if quantized else LOGIT_TOLERANCE) * scale
    metrics = task.evaluate(NumpyModule(flight.run), data)
    framework = task.evaluate(model, data)
    return VerifyReport(
        artifact=str(artifact_path), sha256=flight.checksum, size_bytes=flight.size_bytes,
        peak_buffer_bytes=flight.peak_buffer_bytes, examples=len(data.test),
        max_abs_logit_difference=float(differences.max(initial=0.0)),
        differing_predictions=differing, quantized_activations=quantized, tolerance=tolerance,
        examples_over_float_tolerance=int(np.count_nonzero(differences > LOGIT_TOLERANCE * scale)),
        metrics={k: float(v) for k, v in metrics.items() if math.isfinite(v)},
        framework_metrics={k: float(v) for k, v in framework.items() if math.isfinite(v)},
        fec_parity=stored.fec_parity, fec_bytes=fec_bytes(stored),
        corrected_bytes=stored.corrected_bytes,
    )


class NumpyModule(nn.Module):
    """A NumPy function ``f(x) -> y`` as a module, so :func:`satcompress.measure.latency_ms`
    times the runtime (or any other engine) exactly as it times a PyTorch model."""

    def __init__(self, function) -> None:
        super().__init__()
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.function(x.numpy()))


def flight_measurement(
    final: Measurement, report: VerifyReport, example_input: np.ndarray, repeats: int = 200
) -> Measurement:
    """``final`` (the last stage's measurement) as the artifact delivers it.

    Bytes are the artifact's size on disk (``theoretical_bytes``), RAM the runtime's planned
    peak (``peak_ram_bytes``), latency the runtime's batch-1 latency (timed like every
    stage, :func:`satcompress.measure.latency_ms`), metrics the runtime's own (from
    ``report``); parameters, MACs and the checkpoint size stay the model's.
    """
    flight = runtime.load(report.artifact)
    p50, p95 = latency_ms(NumpyModule(flight.run), torch.from_numpy(example_input[:1]),
                          repeats=repeats, warmup=min(20, repeats))
    return replace(
        final, theoretical_bytes=report.size_bytes, peak_ram_bytes=report.peak_buffer_bytes,
        latency_ms_p50=p50, latency_ms_p95=p95, metrics=dict(report.metrics),
        stage=f"artifact {Path(report.artifact).name}",
    )
