"""Helpers for the C generator's tests: tiny graphs as artifacts, many libraries in one build.

A plain module, not a conftest, so that ``from conftest import ...`` elsewhere keeps meaning
``tests/conftest.py``.
"""

from __future__ import annotations

import ctypes
import shutil
from pathlib import Path

import numpy as np
import pytest

from satcompress import runtime
from satcompress.artifact import encode_artifact
from satcompress.codegen import CSource, generate_c
from satcompress.firmware.build import compile_command
from satcompress.firmware.targets import TARGETS
from satcompress.runtime import GRAPH_FORMAT


def tiny_graph(input_shape, nodes) -> dict:
    """A graph reading ``x`` of ``input_shape`` (per example) and writing ``logits``."""
    return {"format": GRAPH_FORMAT,
            "inputs": [{"name": "x", "dtype": "float32", "shape": [None, *input_shape]}],
            "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, None]}],
            "nodes": [{"op": op, "in": list(inputs), "out": list(outputs),
                       **({"attrs": attrs} if attrs else {})}
                      for op, inputs, outputs, attrs in nodes]}


def load_graph(input_shape, nodes, tensors, fuse: bool = True) -> runtime.Runtime:
    content = encode_artifact(tiny_graph(input_shape, nodes), tensors,
                              {"task": "tiny", "class_names": []})
    return runtime.load(content, fuse=fuse)


def compile_many(sources: list[CSource], folder: Path) -> ctypes.CDLL:
    """One host shared library holding every source (each behind its own prefix)."""
    if not shutil.which("cc"):
        pytest.skip("no C compiler (cc) on this machine: install gcc")
    files = []
    for source in sources:
        header = folder / f"{source.prefix}model.h"
        header.write_text(source.header)
        body = folder / f"{source.prefix}model.c"
        body.write_text(source.source.replace('#include "model.h"',
                                              f'#include "{header.name}"'))
        files.append(str(body))
    library = folder / "libcases.so"
    host = TARGETS["host"]
    compile_command([host.compiler, *host.cflags, "-O1", "-shared", "-o", str(library), *files,
                     "-lm"], "compiling the test cases")
    return ctypes.CDLL(str(library))


def run_compiled(library: ctypes.CDLL, source: CSource, x: np.ndarray) -> np.ndarray:
    """Logits of every example of ``x`` from the compiled ``predict`` (``predict_uint8`` or
    ``predict_int8`` for an already quantized ``x``)."""
    getattr(library, f"{source.prefix}init")()
    quantized = x.dtype in (np.uint8, np.int8)
    predict = getattr(library, f"{source.prefix}predict"
                      + (f"_{x.dtype.name}" if quantized else ""))
    predict.restype = ctypes.c_int
    predict.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    x = np.ascontiguousarray(x, None if quantized else np.float32).reshape(len(x), -1)
    y = np.empty((len(x), source.output_size), np.float32)
    for row in range(len(x)):
        best = predict(x[row].ctypes.data, y[row].ctypes.data)
        assert best == int(np.argmax(y[row]))
    return y


__all__ = ["tiny_graph", "load_graph", "compile_many", "run_compiled", "generate_c"]
