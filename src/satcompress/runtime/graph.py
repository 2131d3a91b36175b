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
batch axis. Operators are those of :mod:`satcompress.runtime.kernels`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from satcompress.runtime.kernels import KERNELS, supported_operators

__all__ = [
    "GRAPH_FORMAT",
    "GraphError",
    "UnsupportedOperatorError",
    "Node",
    "check_operators",
    "check_graph",
]

GRAPH_FORMAT = "satcompress-graph/1"


class GraphError(ValueError):
    """A graph description is malformed or cannot run on the given input."""


class UnsupportedOperatorError(GraphError):
    """A model uses operators the flight runtime has no kernel for."""


@dataclass(frozen=True)
class Node:
    """One operator application: ``outputs = op(inputs, attributes)``."""

    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict[str, Any] = field(default_factory=dict)


def check_operators(operators: Iterable[str], where: str = "the model") -> None:
    """Raise :class:`UnsupportedOperatorError` naming every operator without a kernel."""
    missing = sorted(set(operators) - set(KERNELS))
    if missing:
        raise UnsupportedOperatorError(
            f"{where} uses operator(s) {', '.join(missing)}, which the flight runtime does not "
            f"support. Supported operators: {', '.join(supported_operators())}. Replace the "
            "layers that export to them with supported ones (e.g. nn.Linear, nn.Conv1d, "
            "nn.LayerNorm, nn.ReLU/GELU), or add a kernel to satcompress.runtime.kernels."
        )


def _names(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise GraphError(f"Graph {what} must be a list of value names, got {value!r}.")
    return tuple(value)


def _ports(graph: Mapping[str, Any], key: str) -> list[dict]:
    ports = graph.get(key)
    if not isinstance(ports, list) or not ports or not all(
        isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("shape"), list)
        and isinstance(p.get("dtype"), str) for p in ports
    ):
        raise GraphError(f"Graph '{key}' must be a non-empty list of {{name, dtype, shape}}.")
    return ports


def check_graph(graph: Mapping[str, Any], tensor_names: Iterable[str]) -> list[Node]:
    """Validate a graph description against the stored tensor names; return its nodes.

    Raises
    ------
    UnsupportedOperatorError
        If a node's operator has no kernel (all such operators are named).
    GraphError
        If the format is unknown, a node is malformed, uses a value before it is defined,
        defines a value twice, or a graph output is never produced.
    """
    if not isinstance(graph, Mapping) or graph.get("format") != GRAPH_FORMAT:
        found = graph.get("format") if isinstance(graph, Mapping) else type(graph).__name__
        raise GraphError(
            f"The artifact's graph has format {found!r}, but this runtime reads {GRAPH_FORMAT!r}; "
            "rebuild the artifact with this version of satcompress."
        )
    inputs, outputs = _ports(graph, "inputs"), _ports(graph, "outputs")
    raw_nodes = graph.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise GraphError("Graph 'nodes' must be a non-empty list.")
    nodes = []
    for position, raw in enumerate(raw_nodes):
        if not isinstance(raw, dict) or not isinstance(raw.get("op"), str):
            raise GraphError(f"Graph node {position} is not an {{op, in, out}} object: {raw!r}.")
        attributes = raw.get("attrs", {})
        if not isinstance(attributes, dict):
            raise GraphError(
                f"Graph node {position} ({raw['op']}) has attrs that are not an object.")
        nodes.append(Node(raw["op"], _names(raw.get("in"), f"node {position} 'in'"),
                          _names(raw.get("out"), f"node {position} 'out'"), attributes))
    check_operators((node.op for node in nodes), "The artifact's graph")
    defined = {port["name"] for port in inputs} | set(tensor_names)
    for position, node in enumerate(nodes):
        undefined = [name for name in node.inputs if name and name not in defined]
        if undefined:
            raise GraphError(
                f"Graph node {position} ({node.op}) reads {', '.join(undefined)} before any "
                "node defines it; nodes must be stored in execution order."
            )
        for name in node.outputs:
            if not name or name in defined:
                raise GraphError(f"Graph node {position} ({node.op}) redefines value {name!r}.")
            defined.add(name)
    missing = [port["name"] for port in outputs if port["name"] not in defined]
    if missing:
        raise GraphError(f"Graph output(s) {', '.join(missing)} are never produced.")
    return nodes
