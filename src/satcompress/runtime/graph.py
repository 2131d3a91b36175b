"""The graph description a flight artifact stores, and its validation.

A graph is plain JSON (it travels in the artifact's header)::

    {"format": "satcompress-graph/1",
     "inputs":  [{"name": "x", "dtype": "float32", "shape": [null, 25]}],
     "outputs": [{"name": "logits", "dtype": "float32", "shape": [null, 2]}],
     "nodes":   [{"op": "Gemm", "in": ["x", "c0", "c1"], "out": ["v0"], "attrs": {"transB": 1}},
                 ...]}

Nodes are in execution order (topological: every input is a graph input, a stored tensor or
an output of an earlier node); an empty input name marks an absent optional input; ``attrs``
holds only attributes that differ from the operator's default. ``null`` in a shape is the
batch axis. Operators are those of :mod:`satcompress.runtime.kernels`. The runtime runs
classifiers: one input ``[null, d1, d2, ...]`` and one output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from satcompress.artifact import ArtifactError, LoadLimits
from satcompress.artifact.encodings import SUPPORTED_DTYPES
from satcompress.artifact.errors import shown
from satcompress.runtime.kernels import KERNELS, supported_operators

__all__ = [
    "GRAPH_FORMAT",
    "GraphError",
    "UnsupportedOperatorError",
    "Node",
    "check_operators",
    "check_graph",
    "check_input",
]

GRAPH_FORMAT = "satcompress-graph/1"
_SHOWN_NAMES = 8
_SHOWN_NAME = 40
"""An error lists at most this many names (operators, values), each cut to this many
characters: a crafted file can hold huge ones."""
_SHOWN_LAYERS = 3
_SHOWN_LAYER = 160
"""At most this many layers are named per unsupported operator, each cut to this length."""


class GraphError(ArtifactError):
    """A graph description is malformed or cannot run on the given input.

    A kind of :class:`~satcompress.artifact.ArtifactError` (hence of :class:`ValueError`), so
    that one ``except ArtifactError`` catches every reason an artifact does not load.
    """


class UnsupportedOperatorError(GraphError):
    """A model uses operators the flight runtime has no kernel for."""


@dataclass(frozen=True)
class Node:
    """One operator application: ``outputs = op(inputs, attributes)``."""

    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict[str, Any] = field(default_factory=dict)


def _listed(names: Sequence[str], shown: int = _SHOWN_NAMES, width: int | None = _SHOWN_NAME,
            separator: str = ", ") -> str:
    """The first ``shown`` of ``names``, each cut to ``width`` characters, and how many more."""
    listed = separator.join(name[:width] for name in names[:shown])
    return listed + (f" and {len(names) - shown} more" if len(names) > shown else "")


def check_operators(operators: Iterable[str], where: str = "the model",
                    layers: Mapping[str, Sequence[str]] | None = None) -> None:
    """Raise :class:`UnsupportedOperatorError` naming every operator without a kernel and,
    where ``layers`` maps it to them, the layers that use it."""
    missing = sorted(set(operators) - set(KERNELS))
    if not missing:
        return
    layers = layers or {}
    named = [op[:_SHOWN_NAME] + (f" (in {_listed(layers[op], _SHOWN_LAYERS, _SHOWN_LAYER, '; ')})"
                                 if layers.get(op) else "") for op in missing]
    raise UnsupportedOperatorError(
        f"{where} uses operator(s) {_listed(named, width=None)}, which the flight runtime does "
        f"not support. Supported operators: {', '.join(supported_operators())}. Replace the "
        "layers that export to them with supported ones (e.g. nn.Linear, nn.Conv1d, "
        "nn.LayerNorm, nn.ReLU/GELU), or add a kernel to satcompress.runtime.kernels."
    )


def _names(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise GraphError(f"Graph {what} must be a list of value names, got {shown(value)}.")
    return tuple(value)


def _port(graph: Mapping[str, Any], key: str) -> dict:
    """The one ``{name, dtype, shape}`` of ``graph[key]`` (a classifier's input or output)."""
    ports = graph.get(key)
    if not (isinstance(ports, list) and len(ports) == 1 and isinstance(ports[0], dict)
            and isinstance(ports[0].get("name"), str) and isinstance(ports[0].get("shape"), list)
            and ports[0].get("dtype") in SUPPORTED_DTYPES):
        raise GraphError(f"Graph '{key}' must be a list of one {{name, dtype, shape}} with a "
                         f"dtype among {', '.join(SUPPORTED_DTYPES)}; got {shown(ports)}.")
    return ports[0]


def check_input(port: Mapping[str, Any], limits: LoadLimits) -> tuple[tuple[int, ...], np.dtype]:
    """The shape of one example and the dtype of a graph's input ``port``.

    Raises
    ------
    ArtifactError
        If its shape is not ``[null, d1, d2, ...]`` with every ``d_i > 0``, or one example
        is beyond ``limits`` (dimensions, elements).
    """
    shape = port["shape"]
    if not shape or shape[0] is not None or not limits.check_shape(shape[1:], "The graph input"):
        raise GraphError(f"Graph input shape {shown(shape)} must be [null, d1, d2, ...] with "
                         "d_i > 0.")
    return tuple(shape[1:]), np.dtype(port["dtype"])


def check_graph(graph: Mapping[str, Any], tensor_names: Iterable[str],
                limits: LoadLimits = LoadLimits()) -> list[Node]:
    """Validate a graph description against the stored tensor names; return its nodes.

    Raises
    ------
    UnsupportedOperatorError
        If a node's operator has no kernel (all such operators are named).
    GraphError
        If the format is unknown, the graph has more than one input or output, a node is
        malformed, uses a value before it is defined, defines a value twice, or a graph
        output is never produced.
    ArtifactError
        If the graph has more than ``limits.max_nodes`` nodes.
    """
    if not isinstance(graph, Mapping) or graph.get("format") != GRAPH_FORMAT:
        found = graph.get("format") if isinstance(graph, Mapping) else type(graph).__name__
        raise GraphError(
            f"The artifact's graph has format {shown(found)}, but this runtime reads "
            f"{GRAPH_FORMAT!r}; rebuild the artifact with this version of satcompress."
        )
    raw_nodes = graph.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise GraphError("Graph 'nodes' must be a non-empty list.")
    if len(raw_nodes) > limits.max_nodes:
        raise limits.exceeded("max_nodes", f"The graph has {len(raw_nodes)} nodes")
    source, target = _port(graph, "inputs"), _port(graph, "outputs")
    nodes = []
    for position, raw in enumerate(raw_nodes):
        if not isinstance(raw, dict) or not isinstance(raw.get("op"), str):
            raise GraphError(f"Graph node {position} is not an {{op, in, out}} object: "
                             f"{shown(raw)}.")
        attributes = raw.get("attrs", {})
        if not isinstance(attributes, dict):
            raise GraphError(f"Graph node {position} ({shown(raw['op'])}) has attrs that are "
                             "not an object.")
        nodes.append(Node(raw["op"], _names(raw.get("in"), f"node {position} 'in'"),
                          _names(raw.get("out"), f"node {position} 'out'"), attributes))
    check_operators((node.op for node in nodes), "The artifact's graph")
    defined = {source["name"], *tensor_names}
    for position, node in enumerate(nodes):
        undefined = [name for name in node.inputs if name and name not in defined]
        if undefined:
            raise GraphError(
                f"Graph node {position} ({node.op}) reads {_listed(undefined)} before "
                "any node defines it; nodes must be stored in execution order."
            )
        for name in node.outputs:
            if not name or name in defined:
                raise GraphError(f"Graph node {position} ({node.op}) redefines value "
                                 f"{shown(name)}.")
            defined.add(name)
    if target["name"] not in defined:
        raise GraphError(f"Graph output {shown(target['name'])} is never produced.")
    return nodes
