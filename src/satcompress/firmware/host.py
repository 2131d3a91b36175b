"""The host backend: an artifact's generated C compiled with the system compiler, via ctypes.

``runtime.load(path, backend="c")`` returns a :class:`CRuntime`: the NumPy runtime (kept as
the reference, for metadata and input checks) whose ``run`` calls the compiled
``predict`` once per example (one call at a time: the generated code has one static arena;
``init`` runs once, when the library is loaded). ``classify``, ``scrub``, ``clipped_values``
and ``faults`` report on the compiled code: the class or ``PREFIX_FAULT`` its ``predict``
returns, its ``PREFIX_scrub()``, ``PREFIX_clipped_count()`` and ``PREFIX_fault_count()``
(:mod:`satcompress.codegen.protect`) when the artifact records a protection. The
library is built once per (source, batch loop, compiler flags) into
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
from typing import Any

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
from satcompress.runtime.protect import FAULT, Classification, classify_logits

__all__ = ["CRuntime", "build_host_library", "load_c"]

_LOCKS: dict[str, threading.Lock] = {}
"""Library path -> the lock serialising calls into it."""

_BATCH = """#include <stddef.h>
#include "model.h"
void {prefix}predict_batch(const float *x, float *y, int *classes, size_t n)
{{
    size_t i;
    for (i = 0; i < n; ++i)
        classes[i] = {prefix}predict(x + i * {macro}INPUT_SIZE, y + i * {macro}OUTPUT_SIZE);
}}
"""
"""The batch loop compiled with the model: logits and what ``predict`` returned (a class, or
``PREFIX_FAULT`` from protected code) of every example."""


def build_host_library(source: CSource, target: Target = TARGETS["host"]) -> Path:
    """Compile ``source`` (plus a batch loop) into a shared library in the cache; its path.

    Raises
    ------
    ToolchainError
        If the compiler is missing or the code does not compile (its message included).
    """
    flags = [*target.cflags, "-shared"]
    batch_loop = _BATCH.format(prefix=source.prefix, macro=source.prefix.upper())
    key = build_cache_key(source.header, source.source, batch_loop, target.compiler, *flags)
    library = cache_dir() / key / "libmodel.so"
    if library.is_file():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
        folder = Path(scratch)
        _, body = write_sources(source, folder)
        batch = folder / "batch.c"
        batch.write_text(batch_loop)
        built = folder / "libmodel.so"
        compile_command([target.compiler, *flags, "-o", str(built), str(body), str(batch), "-lm"],
                        "compiling the model's C code for the host")
        os.replace(built, library)
    return library


class CRuntime:
    """A flight artifact run by its compiled C code (host); see the module docstring.

    Counters, of this runtime's calls into the library (read from the compiled code where it
    keeps them: an artifact with a protection record): ``clipped_values`` (range clips),
    ``faults`` (rows :meth:`classify` reported as faults) and ``repairs`` (by :meth:`scrub`).
    Libraries of the same source share their state (dlopen loads one copy): run one such
    runtime at a time for counts of its own.
    """

    def __init__(self, reference: Runtime, source: CSource, library: Path) -> None:
        self.reference = reference
        self.source = source
        self.library_path = library
        self._library = ctypes.CDLL(str(library))
        self._batch = self._function("predict_batch", None, ctypes.c_void_p, ctypes.c_void_p,
                                     ctypes.c_void_p, ctypes.c_size_t)
        # one static arena per loaded library (dlopen shares it): one inference at a time
        self._lock = _LOCKS.setdefault(str(library), threading.Lock())
        self._protected = bool(source.protection)
        counter = (ctypes.c_uint32,)
        self._scrub = self._function("scrub", *counter) if self._protected else None
        self._fault_count = self._function("fault_count", *counter) if self._protected else None
        self._clipped_count = (self._function("clipped_count", *counter) if self._protected
                               else None)
        with self._lock:
            self._function("init", None)()  # the RAM tables, if any
            self._clipped_base = self._clipped_count() if self._clipped_count else 0
        self.faults = self.repairs = 0
        self.backend = "c"

    def _function(self, name: str, restype: Any, *argtypes: Any) -> Any:
        """The library's entry point ``PREFIX_name`` with its C signature."""
        function = getattr(self._library, f"{self.source.prefix}{name}")
        function.restype, function.argtypes = restype, list(argtypes)
        return function

    def __getattr__(self, name: str):
        # metadata, class_names, input_shape, plan, peak_buffer_bytes... of the reference
        return getattr(self.__dict__["reference"], name)

    @property
    def clipped_values(self) -> int:
        """Values the compiled range clips changed since this runtime loaded the library
        (``PREFIX_clipped_count()``; 0 without ``ranges``)."""
        if self._clipped_count is None:
            return 0
        with self._lock:
            return int(self._clipped_count()) - self._clipped_base

    @property
    def resident_memory(self) -> dict[str, np.ndarray]:
        """The library's RAM its protection covers (``PREFIX_resident``), as writable byte
        arrays over it: the three copies of the tables as ``tables#k``, then each RAM weight
        table as ``ram#k`` (what an upset hits; empty without a protection record, whose
        constants are read-only data)."""
        if not self._protected:
            return {}
        resident = self._function("resident", ctypes.c_void_p, ctypes.c_int,
                                  ctypes.POINTER(ctypes.c_size_t))
        copies = 3 if self.source.triplicated_bytes else 0
        blocks, size = {}, ctypes.c_size_t()
        while address := resident(len(blocks), ctypes.byref(size)):
            k = len(blocks)
            name = f"tables#{k}" if k < copies else f"ram#{k - copies}"
            blocks[name] = np.ctypeslib.as_array((ctypes.c_uint8 * size.value)
                                                 .from_address(address))
        return blocks

    def _predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """(logits, what ``predict`` returned, faults the library counted) of every example."""
        x = self.reference.check_input(x)  # the reference's own checks
        x = np.ascontiguousarray(x, np.float32)
        y = np.empty((len(x), self.source.output_size), np.float32)
        returned = np.empty(len(x), np.intc)
        with self._lock:  # ctypes releases the GIL during the call
            before = self._fault_count() if self._fault_count else 0
            self._batch(x.ctypes.data, y.ctypes.data, returned.ctypes.data, len(x))
            counted = (self._fault_count() if self._fault_count else 0) - before
        return y, returned, counted

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits (batch, n_classes) from the compiled code; input checks as :meth:`Runtime.run`."""
        return self._predict(x)[0]

    def classify(self, x: np.ndarray) -> Classification:
        """As :meth:`Runtime.classify`, from the compiled code: the class each ``predict``
        returned, or a fault where protected code returned ``PREFIX_FAULT`` (counted by its
        ``PREFIX_fault_count()``) or, in unprotected code, a logit is not finite; the faults are
        added to :attr:`faults`."""
        logits, returned, counted = self._predict(x)
        softmax = classify_logits(logits)
        faults = returned == FAULT if self._protected else softmax.faults
        predicted = np.where(faults, FAULT, returned).astype(softmax.predicted.dtype)
        probabilities = softmax.probabilities
        probabilities[faults] = np.nan
        self.faults += counted if self._protected else int(np.count_nonzero(faults))
        return Classification(probabilities, predicted, faults)

    def scrub(self) -> int:
        """The compiled ``PREFIX_scrub()`` now (:mod:`satcompress.codegen.protect`): the
        kinds of repair it made, one per bit of its mask (a copy of the tables rewritten from
        the vote, the tables reloaded from flash, each RAM weight table decoded again); also
        added to :attr:`repairs`. 0 for code without a protection record, which keeps no
        writable table: its constants are the library's read-only data."""
        if self._scrub is None:
            return 0
        with self._lock:
            repaired = int(self._scrub()).bit_count()
        self.repairs += repaired
        return repaired

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities from the compiled code's logits (NaN in a row that is a
        fault), as :meth:`Runtime.predict_proba`."""
        return classify_logits(self.run(x)).probabilities


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
