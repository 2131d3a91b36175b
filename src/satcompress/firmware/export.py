"""``export-c``: an artifact's C library for one target, and the firmware numbers a budget uses.

:func:`export_c` writes ``model.h`` and ``model.c`` (:mod:`satcompress.codegen`) generated
for the target's weight form into a folder with ``firmware.json``: the target, the weight
form, constant and arena bytes, the RAM tables, and, for a microcontroller whose toolchain is
installed, the footprint firmware's flash and static RAM and (with QEMU) the stack high-water
mark, instructions per inference (and for ``init``) and the logits' agreement with the host
build of the same code.

RAM tables (``ram_tables=True``; ``export-c``'s default for an artifact without a protection
record): on a microcontroller with compressed weights, the RAM left after the arena and
:data:`RAM_RESERVE` (the stack and the caller's data) holds decoded copies of the compressed
weights read most often per inference (decoded once by ``PREFIX_init``; each read is then one
load instead of a decode); with no room, every weight is decoded where it is read, as before.
Those copies are float weights in RAM, which no protection covers (on the transformer, 4-5 % of
top-exponent flips there changed its log loss by more than 0.1: benchmarks/README.md,
"Injection on the generated C"), so a protected artifact's code keeps its weights in flash
unless asked otherwise, and the report then warns (:data:`RAM_TABLES_UNPROTECTED`).

Torch-free: part of the flight path.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from satcompress.codegen import DEFAULT_PREFIX, CSource, generate_c
from satcompress.firmware.build import INSTALL_HINT, missing_tools, write_sources
from satcompress.firmware.emulate import STACK_BYTES, build_footprint, run_firmware
from satcompress.firmware.host import CRuntime, build_host_library
from satcompress.firmware.targets import TARGETS, Target
from satcompress.runtime import Runtime

__all__ = ["ExportReport", "export_c", "FIRMWARE_JSON", "RAM_RESERVE", "RAM_TABLES_UNPROTECTED",
           "ram_for_tables"]

FIRMWARE_JSON = "firmware.json"
RAM_RESERVE = STACK_BYTES
"""RAM kept free of RAM tables for the stack and the caller's data (the test firmware's stack
reservation)."""
RAM_TABLES_UNPROTECTED = (
    "the weights decoded into RAM at init are floats the artifact's protection does not cover "
    "(an upset there is not caught); keep them in flash with --no-ram-tables")
"""The report's warning for RAM tables in the code of a protected artifact."""
_EXAMPLES = 8
"""Examples compiled into the test firmware when none are given (zeros and fixed noise)."""


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_c` wrote and measured (``firmware`` holds the firmware numbers
    when a toolchain was there; ``skipped`` says why something was not measured;
    ``warnings``, what the code leaves exposed)."""

    folder: str
    target: dict
    source: dict
    firmware: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def flash_bytes(self) -> int | None:
        return self.firmware.get("flash_bytes")

    @property
    def ram_bytes(self) -> int | None:
        return self.firmware.get("ram_bytes")

    def rows(self) -> list[dict]:
        """One table row per quantity: weights, constants, arena, and the firmware's flash,
        RAM, instructions and agreement where measured (the CLI's and the report's table)."""
        firmware, source, target = self.firmware, self.source, self.target
        rows = [{"quantity": "target", "value": target["name"]},
                {"quantity": "weights", "value": source["weights"]},
                {"quantity": "constants (bytes)", "value": source["constant_bytes"]},
                {"quantity": "arena (bytes)", "value": source["arena_bytes"]}]
        if source.get("ram_tables"):
            tensors = ", ".join(table["tensor"] for table in source["ram_tables"])
            rows += [{"quantity": "weights decoded into RAM at init (bytes)",
                      "value": f"{source['ram_table_bytes']:,} ({tensors})"},
                     {"quantity": "expected speedup from them (instruction model)",
                      "value": f"{source['expected_speedup']:.2f}x"}]
        if source.get("protection"):
            rows.append({"quantity": "protection (in the C)",
                         "value": f"{', '.join(source['protection'])}; triplicated tables "
                                  f"{source['triplicated_bytes']:,} B of RAM"})
        if source.get("quantized_input"):
            rows.append({"quantity": "quantized entry point",
                         "value": f"predict_{source['quantized_input']}"})
        if firmware:
            rows += [{"quantity": "flash (bytes, code included)",
                      "value": f"{firmware['flash_bytes']:,} of {target['flash_bytes']:,}"},
                     {"quantity": "RAM (bytes, static + stack)",
                      "value": f"{firmware['ram_bytes']:,} of {target['ram_bytes']:,}"}]
        if firmware.get("instructions_per_inference"):
            rows += [{"quantity": "instructions / inference (estimate)",
                      "value": f"{firmware['instructions_per_inference']:,}"},
                     {"quantity": f"ms / inference at {target['clock_hz'] / 1e6:g} MHz "
                                  "(estimate, 1 instruction per cycle)",
                      "value": f"{firmware['estimated_ms']:.3f}"},
                     {"quantity": "init instructions (RAM tables; estimate)",
                      "value": f"{firmware.get('init_instructions') or 0:,}"},
                     {"quantity": "QEMU logits bit-identical to the host build",
                      "value": firmware.get("bit_identical_to_host_build")},
                     {"quantity": "predictions differing from the NumPy runtime",
                      "value": firmware.get("differing_predictions_vs_numpy")}]
        rows += [{"quantity": "not measured", "value": reason} for reason in self.skipped]
        rows += [{"quantity": "warning", "value": warning} for warning in self.warnings]
        return rows

    def to_dict(self) -> dict:
        return {"folder": self.folder, "target": self.target, "source": self.source,
                "firmware": self.firmware, "skipped": self.skipped, "warnings": self.warnings}


def _examples(flight: Runtime, x: np.ndarray | None) -> np.ndarray:
    if x is not None:
        return np.asarray(x, np.float32)[:_EXAMPLES * 4]
    rng = np.random.default_rng(0)
    return rng.normal(0, 1, (_EXAMPLES, *flight.input_shape)).astype(np.float32)


def _host_logits(flight: Runtime, source: CSource, x: np.ndarray) -> np.ndarray | None:
    if missing_tools(TARGETS["host"]):
        return None
    return CRuntime(flight, source, build_host_library(source)).run(x)


def _measure(flight: Runtime, source: CSource, target: Target, build: Path, emulate: bool,
             examples: np.ndarray | None) -> dict:
    """The firmware numbers: footprint only, or with the QEMU run and its agreement."""
    if not emulate:
        flash, ram, sections = build_footprint(source, target, build)
        return {"target": target.name, "flash_bytes": flash, "static_ram_bytes": ram,
                "stack_bytes": None, "ram_bytes": ram, "sections": sections}
    x = _examples(flight, examples)
    report = run_firmware(source, target, x, build)
    host = _host_logits(flight, source, x)
    reference = flight.run(x)
    return {**report.to_dict(), "examples": len(x),
            "bit_identical_to_host_build": None if host is None else bool(
                np.array_equal(host.view(np.uint32), report.logits.view(np.uint32))),
            "differing_predictions_vs_numpy": int(np.count_nonzero(
                report.logits.argmax(1) != reference.argmax(1))),
            "max_abs_logit_difference_vs_numpy": float(
                np.abs(report.logits.astype(np.float64) - reference).max(initial=0.0))}


def ram_for_tables(flight: Runtime, target: Target, ram_limit: int | None = None) -> int:
    """Bytes of RAM tables ``flight`` may have on ``target``: its RAM (or ``ram_limit``, a
    smaller budget) less the arena and :data:`RAM_RESERVE`; 0 without room or compression."""
    limits = [size for size in (target.ram_bytes, ram_limit) if size]
    if not target.compressed_weights or not limits:
        return 0
    return max(0, min(limits) - max(16, flight.plan.arena_bytes) - RAM_RESERVE)


def export_c(flight: Runtime, target: Target, out: str | os.PathLike, *,
             prefix: str = DEFAULT_PREFIX, emulate: bool = True,
             examples: np.ndarray | None = None, ram_tables: bool = False,
             ram_limit: int | None = None) -> ExportReport:
    """Write the C library of ``flight`` for ``target`` into ``out`` (see the module docstring).

    ``emulate``: also run the test firmware on QEMU (stack, instructions, agreement) when it
    is installed; ``examples`` are the inputs compiled into it (default: fixed noise);
    ``ram_tables``: decode the most read compressed weights into the RAM the target has left
    (``ram_limit``: a smaller RAM budget to keep to; off by default, so that a budget's RAM
    limit judged on the firmware keeps meaning the model's own RAM).
    """
    folder = Path(out)
    room = ram_for_tables(flight, target, ram_limit) if ram_tables else 0
    source = generate_c(flight, prefix=prefix, compressed=target.compressed_weights,
                        ram_bytes=room)
    write_sources(source, folder)
    firmware: dict = {}
    skipped: list[str] = []
    if target.embedded:
        if emulate and missing_tools(target, True) and not missing_tools(target, False):
            skipped.append(f"emulation: missing {', '.join(missing_tools(target, True))}")
            emulate = False
        lacking = missing_tools(target, emulate)
        if lacking:
            skipped.append(f"firmware build: missing Debian packages {', '.join(lacking)} "
                           f"({INSTALL_HINT})")
        else:
            with tempfile.TemporaryDirectory() as scratch:
                firmware = _measure(flight, source, target, Path(scratch), emulate, examples)
    exposed = bool(source.ram_tables) and bool(source.protection)
    result = ExportReport(str(folder), target.to_dict(), source.summary(), firmware, skipped,
                          [RAM_TABLES_UNPROTECTED] if exposed else [])
    (folder / FIRMWARE_JSON).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result
