"""Target profiles: the machines generated C is built for, as data.

* ``samv71``: Microchip SAMV71Q21RT (radiation tolerant), Arm Cortex-M7 at 300 MHz, 2 MB flash,
  384 KB SRAM, double-precision FPU (FPv5-D16); ``arm-none-eabi-gcc``.
* ``cortex-m4``: a generic Arm Cortex-M4F at 168 MHz, 1 MB flash, 192 KB SRAM, single-precision
  FPU (FPv4-SP-D16); ``arm-none-eabi-gcc``.
* ``host``: the machine running satcompress; the system ``cc``; no memory limits.

A microcontroller profile keeps the weights compressed in flash (codebooks, 4-bit values;
:mod:`satcompress.codegen.emit`) and names the QEMU board its test firmware runs on (Arm's
MPS2 FPGA images: ``mps2-an500`` is a Cortex-M7, ``mps2-an386`` a Cortex-M4). The host
profile stores dense weights laid out for vectorised products and has no memory limits.

Torch-free: part of the flight path.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Target", "TARGETS", "get_target", "WARNING_FLAGS"]

WARNING_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
"""Every build of generated code uses these: C99, and any warning is an error."""


@dataclass(frozen=True)
class Target:
    """One target: compiler, flags, memory sizes and clock.

    Attributes
    ----------
    name, description : str
    compiler : str
        The C compiler command (``cc`` for the host; a cross compiler otherwise).
    cpu_flags : tuple of str
        Flags that select the processor and floating-point unit.
    optimisation : tuple of str
        Optimisation flags.
    flash_bytes, ram_bytes : int or None
        Program memory and data memory (None: the host, unlimited).
    clock_hz : int or None
        Processor clock (an estimate of inference time is instructions / clock, assuming one
        instruction per cycle).
    compressed_weights : bool
        Keep weights compressed in flash (decoded where read) rather than dense.
    qemu_machine : str or None
        The ``qemu-system-arm -M`` board the test firmware runs on.
    """

    name: str
    description: str
    compiler: str
    cpu_flags: tuple[str, ...]
    optimisation: tuple[str, ...]
    flash_bytes: int | None
    ram_bytes: int | None
    clock_hz: int | None
    compressed_weights: bool
    qemu_machine: str | None = None

    @property
    def embedded(self) -> bool:
        return self.qemu_machine is not None

    @property
    def cflags(self) -> tuple[str, ...]:
        return WARNING_FLAGS + self.optimisation + self.cpu_flags

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "compiler": self.compiler,
                "cflags": list(self.cflags), "flash_bytes": self.flash_bytes,
                "ram_bytes": self.ram_bytes, "clock_hz": self.clock_hz,
                "compressed_weights": self.compressed_weights,
                "qemu_machine": self.qemu_machine}


_SECTIONS = ("-ffunction-sections", "-fdata-sections", "-fno-math-errno")
"""Unused functions and constants dropped at link; ``sqrt`` as the FPU instruction (no
``errno``; the results are the same). Microcontrollers build with ``-Os``: on the flares
``assembled`` model it gives 808 bytes less code than ``-O2`` and 10 % fewer instructions
(875k vs 973k per inference on the Cortex-M7)."""
TARGETS: dict[str, Target] = {target.name: target for target in (
    Target("samv71", "Microchip SAMV71Q21RT: radiation-tolerant Arm Cortex-M7, 300 MHz, 2 MB "
           "flash, 384 KB SRAM, double-precision FPU", "arm-none-eabi-gcc",
           ("-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard"),
           ("-Os", *_SECTIONS), 2 * 1024 * 1024, 384 * 1024, 300_000_000, True, "mps2-an500"),
    Target("cortex-m4", "Generic Arm Cortex-M4F, 168 MHz, 1 MB flash, 192 KB SRAM, "
           "single-precision FPU", "arm-none-eabi-gcc",
           ("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"),
           ("-Os", *_SECTIONS), 1024 * 1024, 192 * 1024, 168_000_000, True, "mps2-an386"),
    Target("host", "The machine running satcompress (system C compiler, shared library)",
           "cc", ("-fPIC",), ("-O3", "-march=native"), None, None, None, False),
)}
"""Every target profile, by name."""


def get_target(name: str) -> Target:
    """The profile called ``name`` (ValueError listing the profiles otherwise)."""
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"Unknown target {name!r}; choose one of {', '.join(TARGETS)}.") from None
