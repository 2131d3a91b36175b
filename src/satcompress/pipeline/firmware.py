"""A compress run with a target: the budget's memory limits from the profile, and the verdict
on bytes and RAM from the built firmware.

:func:`target_budget` fills ``max_bytes`` / ``max_ram_bytes`` from a microcontroller
profile's flash and RAM unless the budget gives them. :func:`firmware_measurement` exports
the artifact's C for the target beside it (``OUT/firmware/``: ``model.h``, ``model.c``,
``firmware.json``; :func:`satcompress.firmware.export.export_c`) and returns the artifact's
measurement with ``theoretical_bytes`` = the firmware's flash and ``peak_ram_bytes`` = its RAM
(static + measured stack) where the cross toolchain built it; without the toolchain (or for
the host) the artifact's own numbers stay, and ``firmware.json`` says what was skipped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from satcompress import runtime
from satcompress.firmware.export import ExportReport, export_c
from satcompress.firmware.targets import Target
from satcompress.measure import Measurement
from satcompress.pipeline.budget import Budget

__all__ = ["FIRMWARE_FOLDER", "target_budget", "firmware_measurement"]

FIRMWARE_FOLDER = "firmware"


def target_budget(budget: Budget, target: Target) -> Budget:
    """``budget`` with the target's flash and RAM as ``max_bytes`` / ``max_ram_bytes`` where
    it sets none (a host target has no limits to add)."""
    limits = {}
    if budget.max_bytes is None and target.flash_bytes:
        limits["max_bytes"] = target.flash_bytes
    if budget.max_ram_bytes is None and target.ram_bytes:
        limits["max_ram_bytes"] = target.ram_bytes
    return dataclasses.replace(budget, **limits) if limits else budget


def firmware_measurement(artifact: Path, flight: Measurement, target: Target, out_dir: Path,
                         examples: np.ndarray) -> tuple[Measurement, ExportReport]:
    """(``flight`` judged on the firmware, the export report); see the module docstring."""
    report = export_c(runtime.load(artifact), target, out_dir / FIRMWARE_FOLDER,
                      examples=examples)
    if report.flash_bytes is None:
        return flight, report
    return dataclasses.replace(flight, theoretical_bytes=int(report.flash_bytes),
                               peak_ram_bytes=int(report.ram_bytes)), report
