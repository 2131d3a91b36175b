"""The C library of one artifact: ``model.h`` (its entry points) and ``model.c``.

``model.c`` holds the weights as ``static const`` arrays, every activation in one static
arena placed by the runtime's batch-1 buffer plan (:attr:`satcompress.runtime.Runtime.plan`:
the same offsets, so ``ARENA_BYTES`` is the plan's arena), one static function per node and
the entry points::

    void PREFIX_init(void);                                  /* RAM tables, once */
    int PREFIX_predict(const float *input, float *output);   /* returns the argmax */
    int PREFIX_predict_uint8(const uint8_t *input, float *output);  /* quantized input */

* ``PREFIX_init`` decodes the compressed weights given RAM tables (``ram_bytes``: the
  tensors read most often per inference first, as many as fit; each then read from RAM
  instead of being decoded at every read); ``predict`` calls it on its first run if the
  caller has not. Without RAM tables it does nothing.
* ``PREFIX_predict_uint8`` (``_int8`` for an int8 grid) exists when the model quantizes its
  input with one scale and zero point (a ``QuantizeLinear`` that alone reads the input,
  possibly after data movement: Transpose, Reshape...): it takes the input already quantized,
  ``q = clamp(rint(x * (float)(1 / SCALE)) + ZERO_POINT)`` (``INPUT_SCALE``,
  ``INPUT_ZERO_POINT`` in ``model.h``), and gives the float entry point's logits bit for bit
  for the same ``q``.

An artifact that records a protection against single-event upsets (a recipe's ``protect``)
gets it in C too (:mod:`satcompress.codegen.protect`): range clipping, triplicated tables,
scrubbing, and ``predict`` returning ``PREFIX_FAULT`` for a non-finite logit; ``model.h``
documents what it adds. An artifact without one (or a runtime loaded with ``protect=False``)
generates exactly the code it did before.

No allocation, recursion or variable-length array; only ``<math.h>``, ``<stddef.h>``,
``<stdint.h>`` and ``<string.h>``; it compiles with ``-std=c99 -Wall -Wextra -Werror
-pedantic``. The static arena makes ``predict`` non-reentrant (one inference at a time).

Torch-free: part of the flight path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from satcompress.codegen.block import Block, Constants
from satcompress.codegen.emit import literal
from satcompress.codegen.operators import EMITTERS
from satcompress.codegen.program import CodegenError, StaticProgram, static_program
from satcompress.codegen.protect import Guard, Tables
from satcompress.runtime import Node, Runtime
from satcompress.runtime.protect import layer_weights

__all__ = ["CSource", "generate_c", "DEFAULT_PREFIX", "DECODE_INSTRUCTIONS"]

DEFAULT_PREFIX = "scm_"
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,30}")
_MOVES = frozenset({"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
"""Operators that only move elements: the chain between the input and its QuantizeLinear."""

DECODE_INSTRUCTIONS = {"codebook4": 2, "codebook8": 1, "int4": 2}
"""Instructions a read of a compressed weight takes beyond a read from a RAM table (the index
byte's load, shift or mask): the expected speedup's cost model, with
:data:`_MAC_INSTRUCTIONS`. Calibrated on QEMU (Cortex-M7, ``-Os``): a codebook4 read saved
1.65 to 1.83 instructions on the ``assembled``, ``assembled-t2`` and ``broker-t2`` models."""
_MAC_INSTRUCTIONS = 8
"""Instructions per multiply-accumulate of a product or convolution read from RAM (the loads,
the fused multiply-add, the index arithmetic and loop): 7.8 to 7.9 measured on the same
models."""


@dataclass(frozen=True)
class CSource:
    """A generated C library and what it takes.

    Attributes
    ----------
    header, source : str
        The text of ``model.h`` and ``model.c``.
    prefix : str
        The prefix of every external name (``PREFIX_predict``) and macro (upper case).
    weights : str
        ``"compressed"`` (codebooks, packed 4-bit values, decoded where read) or
        ``"dense"`` (every constant in its own type, laid out for vectorised products).
    constant_bytes : int
        Bytes of the constant arrays (flash).
    arena_bytes : int
        Bytes of the static activation arena (RAM).
    input_size, output_size : int
        Floats of one input and of the logits.
    quantized_input : str or None
        ``"uint8"`` or ``"int8"``: the grid of the quantized entry point
        (``PREFIX_predict_uint8``), None without one.
    ram_tables : tuple of dict
        The compressed arrays decoded into RAM at init: ``array``, ``tensor``, ``form``,
        ``bytes`` and ``reads_per_inference`` each.
    expected_speedup : float
        Inference time with the RAM tables over without, by the instruction model of
        :data:`DECODE_INSTRUCTIONS` (1.0 without tables).
    protection : tuple of str
        The protections the code applies (the artifact's record:
        :mod:`satcompress.codegen.protect`); empty for none.
    triplicated_bytes : int
        RAM of the critical tables with ``tables``: three copies and the working copy.
    """

    header: str
    source: str
    prefix: str
    weights: str
    constant_bytes: int
    arena_bytes: int
    input_size: int
    output_size: int
    quantized_input: str | None = None
    ram_tables: tuple[dict, ...] = ()
    expected_speedup: float = 1.0
    protection: tuple[str, ...] = ()
    triplicated_bytes: int = 0

    @property
    def ram_table_bytes(self) -> int:
        return sum(table["bytes"] for table in self.ram_tables)

    def summary(self) -> dict:
        return {"prefix": self.prefix, "weights": self.weights,
                "constant_bytes": self.constant_bytes, "arena_bytes": self.arena_bytes,
                "input_size": self.input_size, "output_size": self.output_size,
                "quantized_input": self.quantized_input, "ram_tables": list(self.ram_tables),
                "ram_table_bytes": self.ram_table_bytes,
                "expected_speedup": round(self.expected_speedup, 3),
                "protection": list(self.protection),
                "triplicated_bytes": self.triplicated_bytes}


def _quantized_input(program: StaticProgram) -> tuple[tuple[Node, ...], Node] | None:
    """(data-movement nodes, QuantizeLinear): the nodes that alone read the input, in turn,
    up to its quantization with one scale and zero point; None when the input is used
    otherwise."""
    chain: list[Node] = []
    name = program.input_name
    while True:
        readers = [node for node in program.nodes if name in node.inputs]
        if len(readers) != 1 or readers[0].inputs[0] != name or name in readers[0].inputs[1:]:
            return None
        node = readers[0]
        if node.op == "QuantizeLinear":
            parameters = [program.data.get(part) for part in node.inputs[1:3] if part]
            if (any(value is None or value.size != 1 for value in parameters)
                    or list(program.nodes[:len(chain) + 1]) != [*chain, node]):
                return None
            return tuple(chain), node
        if node.op not in _MOVES:
            return None
        chain.append(node)
        name = node.outputs[0]


def _quantized_chain(program: StaticProgram, chain: tuple[Node, ...], quantize: Node
                     ) -> tuple[StaticProgram, tuple[Node, ...]]:
    """The program and nodes that move an already quantized input into the QuantizeLinear's
    output: the chain's values in the quantized type, its last node writing that output."""
    q = program.values[quantize.outputs[0]]
    values = dict(program.values)
    values[program.input_name] = replace(program.input, dtype=q.dtype)
    nodes = []
    for step, node in enumerate(chain):
        if step == len(chain) - 1:
            node = replace(node, outputs=(q.name,))
        else:
            values[node.outputs[0]] = replace(values[node.outputs[0]], dtype=q.dtype)
        nodes.append(node)
    return replace(program, values=values), tuple(nodes)


def _reads(program: StaticProgram, tensor: str) -> int:
    """How many element reads of the stored ``tensor`` one inference makes (an estimate: a
    product's weight once per output row, a convolution's once per output position, a
    recurrent weight once per step; anything else once per output element)."""
    size, total = program.values[tensor].size, 0
    for node in program.nodes:
        out = program.values[node.outputs[0]]
        for position, name in enumerate(node.inputs):
            if name != tensor:
                continue
            if (node.op in ("MatMul", "MatMulAdd", "Gemm", "MatMulScaleSoftmax")
                    and position == 1) or (node.op == "QuantGemm" and position == 3):
                total += out.size * size // out.shape[-1]
            elif (node.op == "Conv" and position == 1) or (node.op == "QuantConv"
                                                             and position == 3):
                total += out.size * size // out.shape[1]
            elif node.op in ("GRU", "LSTM") and position in (1, 2):
                x = program.values[node.inputs[0]]
                total += size * (x.size // x.shape[-1])
            else:
                total += out.size
    return total


def _macs(program: StaticProgram) -> int:
    """Multiply-accumulates of one inference's products and convolutions."""
    total = 0
    for node in program.nodes:
        out = program.values[node.outputs[0]]
        if node.op in ("MatMul", "MatMulAdd", "Gemm", "MatMulScaleSoftmax", "QuantGemm"):
            a = program.values[node.inputs[0]]
            transposed = node.op == "Gemm" and node.attributes.get("transA", 0)
            total += out.size * (a.shape[0] if transposed else a.shape[-1])
        elif node.op in ("Conv", "QuantConv"):
            weight = program.values[node.inputs[1 if node.op == "Conv" else 3]]
            total += out.size * weight.size // out.shape[1]
    return total


def _tensor(program: StaticProgram, key: str) -> str:
    """The stored tensor a constant array's key names (``NAME`` or ``NAME:layout``)."""
    return key if key in program.values else key.rsplit(":", 1)[0]


def _ram_choice(program: StaticProgram, constants: Constants, ram_bytes: int
                ) -> tuple[frozenset[tuple[str, str]], tuple[dict, ...], float]:
    """(slots, report, expected speedup) of the compressed arrays given RAM tables: the most
    read per inference first, each one that fits what is left of ``ram_bytes``."""
    candidates = []
    for slot, array in constants.arrays.items():
        if array.form != "dense":
            tensor = _tensor(program, slot[0])
            candidates.append((_reads(program, tensor), array.ram_bytes, slot, array, tensor))
    candidates.sort(key=lambda item: (-item[0], item[1]))
    chosen, tables, left = [], [], ram_bytes
    for reads, size, slot, array, tensor in candidates:
        if size <= left:
            chosen.append(slot)
            left -= size
            tables.append({"array": array.name, "tensor": tensor, "form": array.form,
                           "bytes": size, "reads_per_inference": reads})
    decoding = sum(reads * DECODE_INSTRUCTIONS[array.form]
                   for reads, _, _, array, _ in candidates)
    saved = sum(table["reads_per_inference"] * DECODE_INSTRUCTIONS[table["form"]]
                for table in tables)
    estimate = _macs(program) * _MAC_INSTRUCTIONS + decoding
    speedup = estimate / (estimate - saved) if tables and estimate > saved else 1.0
    return frozenset(chosen), tuple(tables), speedup


def _header(program: StaticProgram, prefix: str, checksum: str, arena: int,
            constants: Constants, class_names: tuple[str, ...],
            quantized: tuple[Node, str] | None, guard: Guard | None) -> str:
    macro = prefix.upper()
    include_guard = f"{macro}MODEL_H"
    classes = ", ".join(re.sub(r"[^A-Za-z0-9 _.>=<-]", "?", name) for name in class_names)
    returns = (f"returns the index of the largest logit, or {macro}FAULT if a logit is not\n"
               f"   finite (classes: {classes or 'unnamed'})." if guard else
               f"returns the index of the largest logit (classes: {classes or 'unnamed'}).")
    text = (
        f"/* Generated by satcompress from the flight artifact {checksum}. Do not edit. */\n"
        f"#ifndef {include_guard}\n#define {include_guard}\n\n"
        + ("#include <stddef.h>\n#include <stdint.h>\n\n" if guard else
           "#include <stdint.h>\n\n" if quantized else "")
        + f"#define {macro}INPUT_SIZE {program.input.size}\n"
        f"#define {macro}OUTPUT_SIZE {program.output.size}\n"
        f"#define {macro}ARENA_BYTES {arena}\n"
        f"#define {macro}CONSTANT_BYTES {constants.flash_bytes}\n"
        f"#define {macro}RAM_TABLE_BYTES {constants.ram_bytes}\n\n"
        f"/* Decodes the weights kept in RAM ({macro}RAM_TABLE_BYTES bytes); call once before\n"
        "   predicting (predict calls it on its first run otherwise). */\n"
        f"void {prefix}init(void);\n\n"
        f"/* Logits of one example: output[{macro}OUTPUT_SIZE] from input[{macro}INPUT_SIZE];\n"
        f"   {returns}\n"
        "   Not reentrant: one static arena holds the activations. */\n"
        f"int {prefix}predict(const float *input, float *output);\n"
    )
    if quantized:
        node, grid = quantized
        scale = program.data[node.inputs[1]].reshape(-1)[0]
        zero = (program.data[node.inputs[2]].reshape(-1)[0]
                if len(node.inputs) > 2 and node.inputs[2] else 0)
        text += (
            f"\n#define {macro}INPUT_SCALE {literal(scale, np.dtype(np.float32))}\n"
            f"#define {macro}INPUT_ZERO_POINT {int(zero)}\n\n"
            f"/* The same from the input already quantized as predict quantizes it:\n"
            f"   q = clamp(rintf(x * (float)(1 / {macro}INPUT_SCALE)) + {macro}INPUT_ZERO_POINT)"
            f" (the {grid}_t range). */\n"
            f"int {prefix}predict_{grid}(const {grid}_t *input, float *output);\n")
    if guard:
        text += guard.header()
    return text + f"\n#endif /* {include_guard} */\n"


def _blocks(program: StaticProgram, nodes: tuple[Node, ...], constants: Constants,
            arena_name: str, name: str, first: int = 0, guard: Guard | None = None
            ) -> tuple[list[str], list[str]]:
    """(functions, calls) of ``nodes``, numbered from ``first`` (see :meth:`Block.function`;
    a call followed by the ``guard``'s range clips of what the node writes)."""
    functions, calls = [], []
    for step, node in enumerate(nodes, first):
        block = Block(program, constants, arena_name)
        EMITTERS[node.op](block, node)
        title = f"{step}: {node.op} -> {', '.join(node.outputs)}"
        clips = guard.after(node.outputs) if guard else ""
        if not block.lines:  # written by the node before it (an attention's P V)
            calls.append(f"    /* {title}: computed with node {step - 1} */\n{clips}")
            continue
        function, call = block.function(f"{name}{step}", title)
        functions.append(function)
        calls.append(call + clips)
    return functions, calls


def _source(flight: Runtime, program: StaticProgram, prefix: str, constants: Constants,
            header_name: str, quantized: tuple[tuple[Node, ...], Node] | None
            ) -> tuple[str, Guard | None]:
    """``model.c``, and the protection code in it (None for an unprotected artifact)."""
    arena_name = f"{prefix}arena.b"
    protection = flight.protection
    guard = (Guard(prefix, protection, program, constants, arena_name) if protection.names
             else None)
    functions, calls = _blocks(program, program.nodes, constants, arena_name, f"{prefix}node",
                               guard=guard)
    arena = max(16, program.arena_bytes)
    output = program.output
    ready = constants.ram_bytes > 0 or guard is not None
    check = (guard.entry() if guard else
             f"    if (!{prefix}ready) {prefix}init();\n" if ready else "")
    copy = f"    memcpy(output, {arena_name} + {output.offset}, {output.size * 4});\n"
    finish = copy + (guard.result() + "}\n" if guard else
                     f"    for (int i = 1; i < {output.size}; ++i) if (output[i] > output[best]) "
                     "best = i;\n    return best;\n}\n")
    init = (f"void {prefix}init(void)\n{{\n{constants.init_text()}"
            + (guard.init() if guard else "")
            + (f"    {prefix}ready = 1;\n" if ready else "") + "}\n\n")
    best = "" if guard else "    int best = 0;\n"
    if quantized is None:
        entries = (f"int {prefix}predict(const float *input, float *output)\n{{\n"
                   f"{best}    (void)input;\n" + check + "".join(calls) + finish)
    else:
        chain, quantize = quantized
        q = program.values[quantize.outputs[0]]
        grid = q.dtype.name
        opening = len(chain) + 1  # the nodes the float entry point alone runs
        moved, moves = _quantized_chain(program, chain, quantize)
        move_functions, move_calls = _blocks(moved, moves, constants, arena_name,
                                             f"{prefix}qnode", guard=guard)
        functions += move_functions
        if not chain:
            move_calls = [f"    memcpy({arena_name} + {q.offset}, input, {q.size});\n"]
        entries = (
            f"static int {prefix}layers(float *output)\n{{\n{best}"
            + "".join(calls[opening:]) + finish + "\n"
            f"int {prefix}predict(const float *input, float *output)\n{{\n" + check
            + "".join(calls[:opening]) + f"    return {prefix}layers(output);\n}}\n\n"
            f"int {prefix}predict_{grid}(const {grid}_t *input, float *output)\n{{\n" + check
            + "".join(move_calls) + f"    return {prefix}layers(output);\n}}\n")
    return (
        f"/* Generated by satcompress from the flight artifact {flight.checksum}. Do not "
        "edit. */\n"
        "#include <math.h>\n#include <stddef.h>\n#include <stdint.h>\n#include <string.h>\n\n"
        f'#include "{header_name}"\n\n'
        + (guard.state() if guard else "")
        + f"{constants.declarations()}\n"
        f"static union {{\n    unsigned char b[{arena}];\n    double align;\n}} {prefix}arena;\n"
        + (f"static int {prefix}ready;\n" if ready else "") + "\n"
        + (guard.functions() if guard else "")
        + "".join(functions) + init + (guard.public() + "\n" if guard else "") + entries
    ), guard


def generate_c(flight: Runtime, *, prefix: str = DEFAULT_PREFIX, compressed: bool = True,
               header_name: str = "model.h", ram_bytes: int = 0) -> CSource:
    """C99 for a loaded runtime (see the module docstring).

    ``compressed`` keeps weights in their compressed form (a microcontroller's flash);
    otherwise every constant is dense (the host, where vectorised products matter more).
    ``ram_bytes``: RAM the compressed weights may take decoded (RAM tables, filled at init;
    0: none, every compressed weight decoded where it is read), less, for an artifact
    protected with ``tables``, the RAM of the triplicated tables.

    Raises
    ------
    CodegenError
        If ``prefix`` is not a C identifier, or the model has an input or operator use the
        generator does not write (the message names it).
    """
    if not _PREFIX.fullmatch(prefix):
        raise CodegenError(f"The name prefix {prefix!r} is not a C identifier of at most 31 "
                           "characters; use letters, digits and underscores, e.g. 'flares_'.")
    program = static_program(flight)
    if program.output.dtype.name != "float32":
        raise CodegenError(f"The model's output is {program.output.dtype}; predict writes "
                           "floats.")
    quantized = _quantized_input(program)
    weights = frozenset(layer_weights(program.nodes, program.data))

    def constants_of(slots: frozenset[tuple[str, str]]) -> Constants:
        tables = Tables(prefix) if flight.protection.tables else None
        return Constants(prefix, compressed, slots, tables, weights)

    constants = constants_of(frozenset())
    source, guard = _source(flight, program, prefix, constants, header_name, quantized)
    tables: tuple[dict, ...] = ()
    speedup = 1.0
    if compressed and ram_bytes > 0:
        triplicated = 4 * constants.tables.nbytes if constants.tables else 0
        slots, tables, speedup = _ram_choice(program, constants, ram_bytes - triplicated)
        if slots:
            constants = constants_of(slots)
            source, guard = _source(flight, program, prefix, constants, header_name, quantized)
    arena = max(16, program.arena_bytes)
    grid = (program.values[quantized[1].outputs[0]].dtype.name if quantized else None)
    header = _header(program, prefix, flight.checksum, arena, constants, flight.class_names,
                     (quantized[1], grid) if quantized else None, guard)
    return CSource(header, source, prefix, "compressed" if compressed else "dense",
                   constants.flash_bytes, arena, program.input.size, program.output.size,
                   grid, tables, speedup, flight.protection.names,
                   4 * constants.tables.nbytes if constants.tables else 0)
