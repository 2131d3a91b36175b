"""The flight runtime: load a verified ``.sca`` artifact and run it with NumPy only.

No torch and no onnx is imported here (the flight path, see ``tests/test_flight_path.py``)::

    from satcompress import runtime
    model = runtime.load("out/compress/model.sca")   # verifies CRC32s and the SHA-256
    logits = model.run(x)                            # x: (batch, *model.input_shape) float32
    model.peak_buffer_bytes                          # planned batch-1 RAM

The graph is executed node by node in its stored order, one NumPy kernel per operator
(:mod:`satcompress.runtime.kernels` documents the arithmetic of each, including the integer
accumulation of quantized layers); memory is planned at load
(:mod:`satcompress.runtime.plan`). Loading allocates no more than its
:class:`~satcompress.artifact.LoadLimits` allow (``runtime.load(path, limits=...)``), and every
reason an artifact does not load raises :class:`~satcompress.artifact.ArtifactError`.
"""

from satcompress.artifact import LoadLimits
from satcompress.runtime.graph import (
    GRAPH_FORMAT,
    GraphError,
    Node,
    UnsupportedOperatorError,
    check_graph,
    check_input,
    check_operators,
)
from satcompress.runtime.kernels import KERNELS, Kernel, supported_operators
from satcompress.runtime import recurrent  # noqa: F401 (registers GRU, LSTM in KERNELS)
from satcompress.runtime.plan import ALIGNMENT, BufferPlan, Lifetime, PlannedBuffer, plan_buffers
from satcompress.runtime.session import CHUNK_EXAMPLES, InputError, Runtime, load

__all__ = [
    "GRAPH_FORMAT",
    "GraphError",
    "Node",
    "UnsupportedOperatorError",
    "check_graph",
    "check_input",
    "check_operators",
    "KERNELS",
    "Kernel",
    "supported_operators",
    "ALIGNMENT",
    "BufferPlan",
    "Lifetime",
    "PlannedBuffer",
    "plan_buffers",
    "CHUNK_EXAMPLES",
    "InputError",
    "LoadLimits",
    "Runtime",
    "load",
]
