"""Protection of the generated C against single-event upsets (issue 17).

An artifact's protection record (:class:`satcompress.runtime.protect.Protection`) is applied
by its C library as the NumPy runtime applies it at load (:mod:`satcompress.runtime.protect`):

``ranges``
    After the node that writes each bounded value (a layer's output, or the ``Relu`` that
    alone reads it), every element is clipped to the value's calibrated ``[low, high]``,
    widened by one float32 step as the runtime widens it
    (:func:`satcompress.runtime.protect.widened`; NaN becomes ``low``), and counted
    (``PREFIX_clipped_count()``): Ranger (Chen et al., "A low-cost fault corrector for deep
    neural networks through range restriction", DSN 2021).
``tables``
    The critical tables (every codebook, and every dense array but a layer's weight of more
    than :data:`~satcompress.runtime.protect.TABLE_MAX_ELEMENTS` elements: the runtime's set;
    the bounds among them) are read from RAM: copied from their flash arrays at init into
    three copies and a working copy, the copies voted bit by bit (``a & (b | c) | b & c``)
    into the working copy before every inference (triple modular redundancy: Lyons &
    Vanderkulk, IBM J. Res. Dev. 1962). The weights stay in flash, decoded where read.
``scrub``
    ``PREFIX_scrub()`` votes and rewrites a copy that differs, compares the voted tables with
    their flash arrays (what the runtime's CRC32 of them stands for: here the source is at
    hand) and the CRC32 of every RAM table of decoded weights (``ram_bytes`` of
    :func:`~satcompress.codegen.generate_c`) with its value at init, and reloads what fails
    from flash (the tables from their flash arrays, a RAM table decoded again); it returns a
    mask of what failed. ``predict`` calls it every ``scrub_every`` inferences (the artifact's
    value), and the caller may at any time (Saleh, Serrano & Patel, "Reliability of scrubbing
    recovery-techniques for memory systems", IEEE Trans. Reliability 1990).
``compact``, ``compact-vulnerable``
    Nothing more: the generated code keeps compressed weights in flash and decodes them where
    they are read (:mod:`satcompress.codegen.emit`).

Any protection also makes a non-finite logit a fault: ``predict`` returns ``PREFIX_FAULT``
(-1, the runtime's :data:`~satcompress.runtime.protect.FAULT`) instead of a class and counts
it (``PREFIX_fault_count()``). ``PREFIX_resident(k, &bytes)`` gives the RAM the protection
covers (the three copies of the tables, then each RAM table), for fault-injection tests.

An artifact without a protection record generates the code it always did.

Torch-free: part of the flight path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from satcompress.codegen.emit import ConstantArray, array_text, c_type
from satcompress.codegen.program import CodegenError, StaticProgram
from satcompress.runtime.protect import FAULT, Protection, widened

if TYPE_CHECKING:
    from satcompress.codegen.block import Constants

__all__ = ["BOUNDS_KEY", "SCRUB_TABLES_REPAIRED", "SCRUB_TABLES_RELOADED", "Guard", "Tables",
           "crc32_table"]

BOUNDS_KEY = ":bounds"
"""The constant key of the range bounds (low, high of each bounded value in turn)."""
SCRUB_TABLES_REPAIRED = 1
"""``PREFIX_scrub()`` bit: a copy of the tables differed from the vote and was rewritten."""
SCRUB_TABLES_RELOADED = 2
"""``PREFIX_scrub()`` bit: the voted tables differed from flash and were reloaded from it
(bit ``2 + k``: RAM table ``k`` failed its CRC32 and was decoded again; tables from the 30th
on share bit 31)."""
_ALIGN = 8
"""Bytes each table starts on (its widest element)."""


def crc32_table() -> tuple[int, ...]:
    """The 256-entry table of the reflected CRC-32 (polynomial 0xEDB88320, zlib's), a byte at
    a time."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


class Tables:
    """The critical tables of one library in RAM: each one's flash array ``NAME_rom`` and
    ``NAME``, a pointer to its place in the working copy (copy 0 of ``PREFIX_tables``)."""

    def __init__(self, prefix: str) -> None:
        self.storage, self.parts = f"{prefix}tables", f"{prefix}table_parts"
        self._parts: list[tuple[str, int, int]] = []
        """(name, offset, bytes) of every table."""
        self._end = 0

    def add(self, name: str, values: np.ndarray) -> str:
        """The declarations of table ``name`` holding ``values``."""
        ctype = c_type(values.dtype)
        offset = self._end
        self._end += -(-max(1, values.nbytes) // _ALIGN) * _ALIGN
        self._parts.append((name, offset, int(values.nbytes)))
        return (array_text(f"{name}_rom", values, values.dtype)
                + f"static const {ctype} *const {name} = (const {ctype} *)(void *)"
                f"&{self.storage}[0].b[{offset}];\n")

    @property
    def nbytes(self) -> int:
        """Bytes of one copy (a multiple of 8)."""
        return max(_ALIGN, self._end)

    def __len__(self) -> int:
        return len(self._parts)

    def parts_text(self) -> str:
        """The flash array, offset and bytes of every table, as ``PREFIX_table_parts`` (one
        empty part when there is no table)."""
        rows = ",\n    ".join(f"{{{name}_rom, {offset}, {size}}}"
                              for name, offset, size in self._parts)
        return (f"static const struct {{\n    const void *rom;\n    size_t offset, size;\n}} "
                f"{self.parts}[{max(1, len(self))}] = {{\n    "
                f"{rows or f'{{{self.storage}[1].b, 0, 0}}'}\n}};\n")


class Guard:
    """The protection code of one library (see the module docstring), for ``program`` whose
    constants are ``constants`` (the bounds are added to them) and whose arena is
    ``arena``."""

    def __init__(self, prefix: str, protection: Protection, program: StaticProgram,
                 constants: Constants, arena: str) -> None:
        self.prefix, self.macro, self.protection = prefix, prefix.upper(), protection
        self.constants, self.program = constants, program
        self._clips: dict[str, str] = {}
        if protection.ranges:
            bounds = [widened(low, high) for low, high in protection.ranges.values()]
            array = constants.get(BOUNDS_KEY, np.array(bounds, np.float32).reshape(-1),
                                  dense=True)
            for k, name in enumerate(protection.ranges):
                value = program.values.get(name)
                if value is None or value.kind != "arena" or value.dtype != np.float32:
                    raise CodegenError(f"The artifact's range of {name!r} is not a float32 "
                                       "value the generated code computes; rebuild the "
                                       "artifact with `satcompress compress`.")
                self._clips[name] = (f"    {prefix}clip((float *)(void *)({arena} + "
                                     f"{value.offset}), {value.size}, {array.at(str(2 * k))}, "
                                     f"{array.at(str(2 * k + 1))});\n")

    def after(self, outputs: Sequence[str]) -> str:
        """The statements after a node writing ``outputs``: the range clips of those bounded."""
        return "".join(self._clips.get(name, "") for name in outputs)

    def entry(self) -> str:
        """The first statement of an entry point."""
        return f"    {self.prefix}guard();\n"

    def result(self) -> str:
        """The return statement of an entry point: a class or ``PREFIX_FAULT``."""
        return f"    return {self.prefix}result(output);\n"

    def _ram(self) -> list[ConstantArray]:
        return [array for array in self.constants.arrays.values() if array.ram]

    def _blocks(self) -> list[tuple[str, str]]:
        """(C pointer, byte count) of every resident block the protection covers."""
        tables = self.constants.tables
        blocks = [(f"{tables.storage}[{k}].b", str(tables.nbytes)) for k in (1, 2, 3)
                  ] if tables is not None else []
        return blocks + [(f"(unsigned char *){array.name}_ram", str(array.ram_bytes))
                         for array in self._ram()]

    def state(self) -> str:
        """The library's RAM for the protection (before the constants: their tables point
        into it)."""
        p, tables = self.prefix, self.constants.tables
        text = f"static uint32_t {p}clipped, {p}faults, {p}since;\n"
        if tables is not None:
            text += (f"static union {{\n    unsigned char b[{tables.nbytes}];\n    double align;"
                     f"\n}} {p}tables[4]; /* 0: the working copy the code reads; 1-3: the "
                     f"copies */\n")
        if self._ram():
            text += f"static uint32_t {p}ram_crc[{len(self._ram())}];\n"
        return text

    def functions(self) -> str:
        """The static helpers: CRC32, loading and voting the tables, clipping, the guard run
        before every inference and the result."""
        p, m, tables = self.prefix, self.macro, self.constants.tables
        values = [f"0x{value:08x}u" for value in crc32_table()]
        crc = ",\n    ".join(", ".join(values[i : i + 6]) for i in range(0, 256, 6))
        text = "" if not self._ram() else (
            f"static const uint32_t {p}crc_table[256] = {{\n    {crc}\n}};\n\n"
            f"/* CRC-32 (zlib's), a byte at a time. */\n"
            f"static uint32_t {p}crc32(const unsigned char *data, size_t size)\n{{\n"
            "    uint32_t crc = 0xffffffffu;\n"
            f"    for (size_t i = 0; i < size; ++i) crc = (crc >> 8) ^ {p}crc_table[(crc ^ "
            "data[i]) & 255u];\n"
            "    return crc ^ 0xffffffffu;\n}\n\n")
        if tables is not None:
            parts, count = tables.parts, max(1, len(tables))
            text += (
                tables.parts_text() + "\n"
                f"/* The tables from flash into the working copy and the three copies. */\n"
                f"static void {p}load_tables(void)\n{{\n"
                f"    for (int t = 0; t < {count}; ++t) memcpy({p}tables[0].b + "
                f"{parts}[t].offset, {parts}[t].rom, {parts}[t].size);\n"
                f"    for (int k = 1; k < 4; ++k) memcpy({p}tables[k].b, {p}tables[0].b, "
                f"{tables.nbytes});\n}}\n\n"
                f"/* Whether the working copy holds every table as flash does. */\n"
                f"static int {p}tables_intact(void)\n{{\n"
                f"    for (int t = 0; t < {count}; ++t) {{\n"
                f"        if (memcmp({p}tables[0].b + {parts}[t].offset, {parts}[t].rom, "
                f"{parts}[t].size) != 0) return 0;\n    }}\n    return 1;\n}}\n\n"
                f"/* Bitwise majority of the three copies into the working copy (memcpy: no\n"
                f"   aliasing assumption about the tables' types). */\n"
                f"static void {p}vote(void)\n{{\n"
                f"    for (size_t i = 0; i < {tables.nbytes}u; i += 4) {{\n"
                "        uint32_t a, b, c, v;\n"
                f"        memcpy(&a, {p}tables[1].b + i, 4);\n"
                f"        memcpy(&b, {p}tables[2].b + i, 4);\n"
                f"        memcpy(&c, {p}tables[3].b + i, 4);\n"
                "        v = (a & (b | c)) | (b & c);\n"
                f"        memcpy({p}tables[0].b + i, &v, 4);\n    }}\n}}\n\n")
        if self.protection.ranges:
            text += (
                f"/* v[0..n) clipped to [lo, hi] (NaN to lo), the values clipped counted. */\n"
                f"static void {p}clip(float *restrict v, int n, float lo, float hi)\n{{\n"
                "    uint32_t clipped = 0;\n"
                "    for (int i = 0; i < n; ++i) {\n"
                "        const float x = v[i];\n"
                "        float c = x >= lo ? x : lo;\n"
                "        c = c <= hi ? c : hi;\n"
                "        clipped += c != x;\n"
                "        v[i] = c;\n    }\n"
                f"    {p}clipped += clipped;\n}}\n\n")
        scrub = ""
        if self.protection.scrub_every:
            scrub = (f"    if ({p}since >= {m}SCRUB_EVERY) (void){p}scrub();\n"
                     f"    ++{p}since;\n")
        text += (
            f"/* Before every inference: init, a scrub when due, the tables voted. */\n"
            f"static void {p}guard(void)\n{{\n"
            f"    if (!{p}ready) {p}init();\n{scrub}"
            + (f"    {p}vote();\n" if tables is not None else "") + "}\n\n"
            f"/* The index of the largest logit, or {m}FAULT (counted) if one is not finite. */\n"
            f"static int {p}result(const float *output)\n{{\n"
            "    int best = 0;\n"
            f"    for (int i = 0; i < {self.program.output.size}; ++i) {{\n"
            "        if (!isfinite(output[i])) {\n"
            f"            ++{p}faults;\n            return {m}FAULT;\n        }}\n    }}\n"
            f"    for (int i = 1; i < {self.program.output.size}; ++i) if (output[i] > "
            "output[best]) best = i;\n    return best;\n}\n\n")
        return text

    def init(self) -> str:
        """The statements init adds (after decoding the RAM tables): the tables loaded, the
        checksums taken."""
        p = self.prefix
        text = f"    {p}load_tables();\n" if self.constants.tables is not None else ""
        return text + "".join(
            f"    {p}ram_crc[{k}] = {p}crc32((const unsigned char *){array.name}_ram, "
            f"{array.ram_bytes});\n" for k, array in enumerate(self._ram()))

    def public(self) -> str:
        """The protection's entry points: scrub, the counters, the resident blocks."""
        p, tables = self.prefix, self.constants.tables
        text = f"uint32_t {p}scrub(void)\n{{\n    uint32_t failed = 0;\n"
        if tables is not None:
            text += (
                f"    if (!{p}ready) {p}init();\n    {p}vote();\n"
                "    for (int k = 1; k < 4; ++k) {\n"
                f"        if (memcmp({p}tables[k].b, {p}tables[0].b, {tables.nbytes}) != 0) {{\n"
                f"            memcpy({p}tables[k].b, {p}tables[0].b, {tables.nbytes});\n"
                f"            failed |= {SCRUB_TABLES_REPAIRED}u;\n        }}\n    }}\n"
                f"    if (!{p}tables_intact()) {{\n"
                f"        {p}load_tables();\n        failed |= {SCRUB_TABLES_RELOADED}u;\n"
                "    }\n")
        elif self._ram():
            text += f"    if (!{p}ready) {p}init();\n"
        for k, array in enumerate(self._ram()):
            check = f"{p}crc32((const unsigned char *){array.name}_ram, {array.ram_bytes})"
            text += (f"    if ({check} != {p}ram_crc[{k}]) {{\n"
                     f"        {array.init_text('i')}\n"
                     f"        {p}ram_crc[{k}] = {check};\n"
                     f"        failed |= 1u << {min(2 + k, 31)};\n    }}\n")
        text += f"    {p}since = 0;\n    return failed;\n}}\n\n"
        cases = "".join(f"    case {k}: *bytes = {size}; return {pointer};\n"
                        for k, (pointer, size) in enumerate(self._blocks()))
        return (
            text
            + f"uint32_t {p}clipped_count(void)\n{{\n    return {p}clipped;\n}}\n\n"
            + f"uint32_t {p}fault_count(void)\n{{\n    return {p}faults;\n}}\n\n"
            + f"unsigned char *{p}resident(int block, size_t *bytes)\n{{\n"
            + "    switch (block) {\n" + cases
            + "    default: *bytes = 0; return NULL;\n    }\n}\n")

    def header(self) -> str:
        """``model.h``'s protection section."""
        p, m, tables = self.prefix, self.macro, self.constants.tables
        names = ", ".join(self.protection.names)
        copies = (f"   tables: the critical tables (codebooks, biases, scales, normalisation\n"
                  f"   parameters, range bounds) in RAM, three copies of {m}TABLE_BYTES bytes\n"
                  "   voted bit by bit into the working copy before every inference; the\n"
                  "   weights stay in flash.\n") if tables is not None else ""
        return (
            f"\n#define {m}FAULT ({FAULT})\n"
            f"#define {m}SCRUB_EVERY {self.protection.scrub_every}\n"
            f"#define {m}TABLE_BYTES {tables.nbytes if tables is not None else 0}\n"
            f"#define {m}RESIDENT_BLOCKS {len(self._blocks())}\n\n"
            f"/* Protection against single-event upsets recorded in the artifact: {names}.\n"
            f"   predict returns {m}FAULT instead of a class (and counts it) when a logit is\n"
            "   NaN or infinite: a fault, never a class.\n"
            + ("   ranges: every layer output clipped to its range on the training data\n"
               "   where it is written (NaN to the low end), the values clipped counted.\n"
               if self.protection.ranges else "")
            + copies
            + f"   scrub: {p}scrub() votes the tables and rewrites a copy that differs, checks\n"
            "   the voted tables against flash and the CRC32 of every weight table decoded\n"
            "   into RAM at init, and reloads from flash what fails; predict runs it every\n"
            f"   {m}SCRUB_EVERY inferences (0: only when called). It returns what failed:\n"
            f"   bit 0 a copy of the tables (rewritten), bit 1 the voted tables (reloaded),\n"
            "   bit 2 + k RAM weight table k (decoded again; k >= 29 share bit 31). */\n"
            f"uint32_t {p}scrub(void);\n\n"
            f"/* Values clipped by the ranges, and predictions that were faults, since load. */\n"
            f"uint32_t {p}clipped_count(void);\n"
            f"uint32_t {p}fault_count(void);\n\n"
            f"/* The RAM the protection covers, for fault-injection tests: block 0 to 2 the\n"
            "   copies of the tables (with tables), then each RAM weight table; sets *bytes\n"
            f"   and returns the block, NULL past the last ({m}RESIDENT_BLOCKS). */\n"
            f"unsigned char *{p}resident(int block, size_t *bytes);\n")
