"""The host backend: an artifact's generated C compiled with the system compiler, via ctypes.

``runtime.load(path, backend="c")`` returns a :class:`CRuntime`: the NumPy runtime (kept as
the reference, for metadata and input checks) whose ``run`` calls the compiled
``predict`` once per example (one call at a time: the generated code has one static arena;
``init`` runs once, when the library is loaded). The
library is built once per (source, compiler flags) into
:func:`~satcompress.firmware.build.cache_dir`. Without a compiler :func:`load_c` warns, naming
the missing command, and returns the NumPy runtime.

Torch-free: part of the flight path.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

from satcompress.codegen import CSource, generate_c
from satcompress.firmware.build import (
    build_cache_key,
    cache_dir,
    compile_command,
    write_sources,
)
from satcompress.firmware.targets import TARGETS, Target
from satcompress.runtime import Runtime

__all__ = ["CRuntime", "build_host_library", "load_c"]

_LOCKS: dict[str, threading.Lock] = {}
"""Library path -> the lock serialising calls into it."""

_BATCH = """#include <stddef.h>
#include "model.h"
void {prefix}predict_batch(const float *x, float *y, size_t n)
{{
    size_t i;
    for (i = 0; i < n; ++i)
        (void){prefix}predict(x + i * {macro}INPUT_SIZE, y + i * {macro}OUTPUT_SIZE);
}}
"""


def build_host_library(source: CSource, target: Target = TARGETS["host"]) -> Path:
    """Compile ``source`` (plus a batch loop) into a shared library in the cache; its path.

    Raises
    ------
    ToolchainError
        If the compiler is missing or the code does not compile (its message included).
    """
    flags = [*target.cflags, "-shared"]
    key = build_cache_key(source.header, source.source, target.compiler, *flags)
    library = cache_dir() / key / "libmodel.so"
    if library.is_file():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
        folder = Path(scratch)
        _, body = write_sources(source, folder)
        batch = folder / "batch.c"
        batch.write_text(_BATCH.format(prefix=source.prefix, macro=source.prefix.upper()))
        built = folder / "libmodel.so"
        compile_command([target.compiler, *flags, "-o", str(built), str(body), str(batch), "-lm"],
                        "compiling the model's C code for the host")
        os.replace(built, library)
    return library


class CRuntime:
    """A flight artifact run by its compiled C code (host); see the module docstring."""

    def __init__(self, reference: Runtime, source: CSource, library: Path) -> None:
        self.reference = reference
        self.source = source
        self.library_path = library
        self._library = ctypes.CDLL(str(library))
        self._batch = getattr(self._library, f"{source.prefix}predict_batch")
        self._batch.restype = None
        self._batch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        # one static arena per loaded library (dlopen shares it): one inference at a time
        self._lock = _LOCKS.setdefault(str(library), threading.Lock())
        with self._lock:
            getattr(self._library, f"{source.prefix}init")()  # the RAM tables, if any
        self.backend = "c"

    def __getattr__(self, name: str):
        # metadata, class_names, input_shape, plan, peak_buffer_bytes... of the reference
        return getattr(self.__dict__["reference"], name)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits (batch, n_classes) from the compiled code; input checks as :meth:`Runtime.run`."""
        x = self.reference.check_input(x)  # the reference's own checks
        x = np.ascontiguousarray(x, np.float32)
        y = np.empty((len(x), self.source.output_size), np.float32)
        with self._lock:  # ctypes releases the GIL during the call
            self._batch(x.ctypes.data, y.ctypes.data, len(x))
        return y

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        logits = self.run(x).astype(np.float64)
        exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exponentials / exponentials.sum(axis=1, keepdims=True)


def load_c(reference: Runtime, target: Target = TARGETS["host"]) -> CRuntime | Runtime:
    """The compiled C backend of a loaded runtime, or the runtime itself (with a warning
    naming the missing compiler) when there is no C compiler."""
    if not shutil.which(target.compiler):
        warnings.warn(f"No C compiler ({target.compiler!r}) found: running the NumPy runtime "
                      "instead of backend='c'. Install one (e.g. apt-get install gcc) to use "
                      "the compiled backend.", RuntimeWarning, stacklevel=3)
        return reference
    source = generate_c(reference, compressed=target.compressed_weights)
    return CRuntime(reference, source, build_host_library(source, target))
