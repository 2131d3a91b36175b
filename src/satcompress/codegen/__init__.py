"""C code generation from a flight artifact (torch-free: part of the flight path).

::

    from satcompress import runtime
    from satcompress.codegen import generate_c
    source = generate_c(runtime.load("model.sca"), compressed=True)   # model.h + model.c

:mod:`satcompress.codegen.operators` writes one C block per runtime operator with the NumPy
kernels' arithmetic; :mod:`satcompress.codegen.generate` assembles the library.
"""

from satcompress.codegen.generate import DEFAULT_PREFIX, CSource, generate_c
from satcompress.codegen.operators import EMITTERS, emitted_operators
from satcompress.codegen import recurrent  # noqa: F401 (registers GRU, LSTM in EMITTERS)
from satcompress.codegen.program import CodegenError, StaticProgram, Value, static_program

__all__ = [
    "DEFAULT_PREFIX",
    "CSource",
    "generate_c",
    "EMITTERS",
    "emitted_operators",
    "CodegenError",
    "StaticProgram",
    "Value",
    "static_program",
]
