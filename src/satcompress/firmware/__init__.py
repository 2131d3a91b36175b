"""Flight firmware: target profiles, host and cross builds of generated C, emulation.

Torch-free: part of the flight path. :mod:`satcompress.firmware.targets` (profiles as data),
:mod:`satcompress.firmware.build` (tools, cache, section sizes),
:mod:`satcompress.firmware.host` (``runtime.load(path, backend="c")``),
:mod:`satcompress.firmware.emulate` (test firmware on QEMU: outputs, flash, RAM, instructions).
"""

from satcompress.firmware.build import INSTALL_HINT, ToolchainError, missing_tools
from satcompress.firmware.host import CRuntime, build_host_library, load_c
from satcompress.firmware.targets import TARGETS, Target, get_target

__all__ = ["INSTALL_HINT", "ToolchainError", "missing_tools", "CRuntime", "build_host_library",
           "load_c", "TARGETS", "Target", "get_target"]
