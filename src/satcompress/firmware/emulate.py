"""Cross-build generated C into firmware, run it on QEMU, measure flash, RAM and instructions.

Two ELFs are linked for a microcontroller target (Debian's ``gcc-arm-none-eabi`` and
``libnewlib-arm-none-eabi``), both with the same start-up code and linker script:

* the *footprint* firmware: the model and a ``main`` that calls ``predict`` once: its flash
  (``.vectors + .text + .rodata + .ARM.exidx + .data``: code, libm and libgcc routines
  included) and static RAM (``.data + .bss``: the arena and the two I/O arrays) are read from
  the ELF's section table;
* the *test* firmware: the model and test examples compiled in; it calls ``init`` (timed:
  the RAM tables' decoding), then for each example prints the logits' bit patterns through
  semihosting and the SysTick ticks ``predict`` took; before the first inference it paints
  the stack and at the end reports its high-water mark.

The board is one of QEMU's MPS2 FPGA images (``-M mps2-an500``: Cortex-M7; ``mps2-an386``:
Cortex-M4): code and constants are linked into the first RAM region at address 0 (where the
vector table must be), data, arena and a 64 KiB stack into the SSRAM at 0x20000000; QEMU
loads the ELF as linked, so nothing copies ``.data``. The reset handler enables the FPU
(CPACR bits 20-23) before any float instruction and zeroes ``.bss``.

Instructions per inference are an **estimate**: with ``-icount shift=0`` QEMU advances
virtual time 1 ns per executed instruction and the SysTick timer, on the MPS2 processor
clock of 25 MHz, counts one tick per 40 instructions; ticks x 40 is the instruction count
(to 40 instructions), and instructions / the profile's clock is the time at one instruction
per cycle (a Cortex-M7 dual-issues some pairs and stalls on flash wait states: the real
figure differs by a small factor either way).

Torch-free: part of the flight path.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from satcompress.codegen import CSource
from satcompress.firmware.build import (
    INSTALL_HINT,
    ToolchainError,
    compile_command,
    flash_and_ram,
    missing_tools,
    section_sizes,
    write_sources,
)
from satcompress.firmware.targets import Target

__all__ = ["FirmwareReport", "build_footprint", "run_firmware", "INSTRUCTIONS_PER_TICK",
           "STACK_BYTES"]

INSTRUCTIONS_PER_TICK = 40
"""Executed instructions per SysTick tick under ``-icount shift=0`` (1 GHz / 25 MHz)."""
STACK_BYTES = 64 * 1024
"""Stack reserved (and painted) in the firmware."""
_PAINT = 0xDEADBEEF
_QEMU_TIMEOUT_S = 300

_STARTUP = """    .syntax unified
    .thumb
    .section .vectors, "a", %progbits
    .word __stack_top
    .word reset_handler
    .rept 14
    .word fault_handler
    .endr
    .text
    .thumb_func
    .global reset_handler
reset_handler:
    ldr r0, =0xE000ED88      /* CPACR: full access to CP10 and CP11 (the FPU) */
    ldr r1, [r0]
    orr r1, r1, #0xF00000
    str r1, [r0]
    dsb
    isb
    ldr r0, =__bss_start
    ldr r1, =__bss_end
    movs r2, #0
1:  cmp r0, r1
    bhs 2f
    str r2, [r0], #4
    b 1b
2:  bl main
    movs r0, #0x18           /* SYS_EXIT, ADP_Stopped_ApplicationExit */
    ldr r1, =0x20026
    bkpt 0xab
3:  b 3b
    .thumb_func
fault_handler:
    movs r0, #0x18           /* SYS_EXIT, ADP_Stopped_RunTimeErrorUnknown */
    ldr r1, =0x20023
    bkpt 0xab
4:  b 4b
"""

_LINKER = """MEMORY
{{
    CODE (rx) : ORIGIN = 0x00000000, LENGTH = {code_bytes}
    RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 4M
}}
ENTRY(reset_handler)
SECTIONS
{{
    .vectors : {{ KEEP(*(.vectors)) }} > CODE
    .text : {{ *(.text*) }} > CODE
    .rodata : {{ *(.rodata*) }} > CODE
    .ARM.exidx : {{ *(.ARM.exidx*) }} > CODE
    .data : {{ *(.data*) }} > RAM
    .bss (NOLOAD) : {{ . = ALIGN(4); __bss_start = .; *(.bss*) *(COMMON) . = ALIGN(4);
                      __bss_end = .; }} > RAM
    .stack (NOLOAD) : {{ . = ALIGN(8); __stack_bottom = .; . += {stack}; __stack_top = .; }} > RAM
}}
"""

_FOOTPRINT_MAIN = """#include "model.h"
static float input[{macro}INPUT_SIZE];
static float output[{macro}OUTPUT_SIZE];
int main(void) {{ {prefix}init(); return {prefix}predict(input, output); }}
"""

_TEST_MAIN = """#include <stdint.h>
#include "model.h"
#include "examples.h"
extern uint32_t __stack_bottom[];
extern uint32_t __stack_top[];
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
static void put(const char *text)
{{
    register int r0 __asm__("r0") = 0x04; /* SYS_WRITE0 */
    register const char *r1 __asm__("r1") = text;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
}}
static char *hex(char *at, uint32_t value)
{{
    for (int shift = 28; shift >= 0; shift -= 4) *at++ = "0123456789abcdef"[(value >> shift) & 15u];
    return at;
}}
static char line[32 + 9 * {macro}OUTPUT_SIZE];
static float output[{macro}OUTPUT_SIZE];
int main(void)
{{
    uint32_t *paint = __stack_bottom;
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    while (paint < sp - 32) *paint++ = {paint}u;
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0u;
    SYST_CSR = 5u; /* enabled, processor clock, no interrupt */
    {{
        uint32_t start = SYST_CVR;
        char *at = line;
        {prefix}init();
        *at++ = 'I'; *at++ = ' ';
        at = hex(at, (start - SYST_CVR) & 0xFFFFFFu);
        *at++ = '\\n'; *at = 0;
        put(line);
    }}
    for (int e = 0; e < FW_EXAMPLES; ++e) {{
        uint32_t start = SYST_CVR;
        int best = {prefix}predict(fw_examples[e], output);
        uint32_t ticks = (start - SYST_CVR) & 0xFFFFFFu;
        char *at = line;
        *at++ = 'E'; *at++ = ' ';
        at = hex(at, (uint32_t)best); *at++ = ' ';
        at = hex(at, ticks);
        for (int k = 0; k < {macro}OUTPUT_SIZE; ++k) {{
            uint32_t bits;
            __builtin_memcpy(&bits, &output[k], 4);
            *at++ = ' ';
            at = hex(at, bits);
        }}
        *at++ = '\\n'; *at = 0;
        put(line);
    }}
    uint32_t *mark = __stack_bottom;
    while (mark < __stack_top && *mark == {paint}u) ++mark;
    char *at = line;
    *at++ = 'S'; *at++ = ' ';
    at = hex(at, (uint32_t)((char *)__stack_top - (char *)mark));
    *at++ = '\\n'; *at = 0;
    put(line);
    return 0;
}}
"""


@dataclass(frozen=True)
class FirmwareReport:
    """A model's firmware on one target.

    Attributes
    ----------
    target : str
    flash_bytes : int
        Code and constants of the footprint firmware (start-up, model, libm/libgcc routines).
    static_ram_bytes : int
        ``.data + .bss`` of the footprint firmware (the arena and the I/O arrays).
    stack_bytes : int or None
        The stack's high-water mark measured by painting in the test firmware (None: not run).
    ram_bytes : int
        ``static_ram_bytes + stack_bytes`` (static RAM alone when not run).
    instructions : int or None
        Mean instructions per inference, an estimate (see the module docstring).
    estimated_ms : float or None
        ``instructions / clock`` in milliseconds at one instruction per cycle.
    logits : numpy.ndarray or None
        The logits the firmware printed, one row per example (bit for bit).
    sections : dict
        Section sizes of the footprint firmware.
    init_instructions : int or None
        Instructions ``PREFIX_init`` took (decoding the RAM tables), an estimate as
        ``instructions``.
    """

    target: str
    flash_bytes: int
    static_ram_bytes: int
    stack_bytes: int | None
    ram_bytes: int
    instructions: int | None
    estimated_ms: float | None
    logits: np.ndarray | None
    sections: dict
    init_instructions: int | None = None

    def to_dict(self) -> dict:
        return {"target": self.target, "flash_bytes": self.flash_bytes,
                "static_ram_bytes": self.static_ram_bytes, "stack_bytes": self.stack_bytes,
                "ram_bytes": self.ram_bytes, "instructions_per_inference": self.instructions,
                "instructions_are_estimate": True, "estimated_ms": self.estimated_ms,
                "init_instructions": self.init_instructions, "sections": self.sections}


def _require(target: Target, emulate: bool) -> None:
    if not target.embedded:
        raise ToolchainError(f"Target {target.name!r} is not a microcontroller; firmware is "
                             "built for samv71 or cortex-m4.")
    lacking = missing_tools(target, emulate)
    if lacking:
        raise ToolchainError(f"Building firmware for {target.name} needs the Debian packages "
                             f"{', '.join(lacking)}; install them with: {INSTALL_HINT}.")


def _link(target: Target, folder: Path, main: str, name: str, code_bytes: int) -> Path:
    (folder / "startup.S").write_text(_STARTUP)
    (folder / "fw.ld").write_text(_LINKER.format(code_bytes=code_bytes, stack=STACK_BYTES))
    (folder / f"{name}.c").write_text(main)
    model = folder / "model.o"
    if not model.is_file():
        compile_command([target.compiler, *target.cflags, "-c", "-o", str(model),
                         str(folder / "model.c")], f"cross-compiling the model for {target.name}")
    elf = folder / f"{name}.elf"
    compile_command([target.compiler, *target.cpu_flags, *target.optimisation, "-std=gnu99",
                     "-Wall", "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs",
                     "-Wl,--gc-sections", "-T", str(folder / "fw.ld"), "-o", str(elf),
                     str(folder / "startup.S"), str(folder / f"{name}.c"), str(model),
                     "-lm", "-lc", "-lgcc"], f"linking the {name} firmware for {target.name}")
    return elf


def _code_region(target: Target) -> str:
    """Size of the board's first RAM region (code and constants): the AN500's block RAM is
    256 KiB, the AN385/AN386's SSRAM1 4 MiB."""
    return "256K" if target.qemu_machine == "mps2-an500" else "4M"


def build_footprint(source: CSource, target: Target, folder: Path) -> tuple[int, int, dict]:
    """(flash bytes, static RAM bytes, sections) of the model's footprint firmware."""
    _require(target, emulate=False)
    write_sources(source, folder)
    main = _FOOTPRINT_MAIN.format(prefix=source.prefix, macro=source.prefix.upper())
    elf = _link(target, folder, main, "footprint", _code_region(target))
    sections = section_sizes(elf, "arm-none-eabi-size")
    sections.pop(".stack", None)
    flash, ram = flash_and_ram(sections)
    return flash, ram, sections


def _examples_header(x: np.ndarray, input_size: int) -> str:
    rows = []
    for example in np.asarray(x, np.float32).reshape(len(x), input_size):
        bits = example.view(np.uint32)
        rows.append("{" + ", ".join(f"0x{int(b):08x}u" for b in bits) + "}")
    body = ",\n    ".join(rows)
    return ("#include <stdint.h>\n"
            f"#define FW_EXAMPLES {len(x)}\n"
            f"static const union {{ uint32_t bits[{input_size}]; float f[{input_size}]; }}\n"
            f"fw_example_bits[{len(x)}] = {{\n    {body}\n}};\n"
            "#define fw_examples(e) fw_example_bits[e].f\n")


def _parse(output: str, classes: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    logits, ticks, stack, init = [], [], None, 0
    for line in output.splitlines():
        fields = line.split()
        if fields[:1] == ["E"] and len(fields) == 3 + classes:
            ticks.append(int(fields[2], 16))
            logits.append([int(value, 16) for value in fields[3:]])
        elif fields[:1] in (["S"], ["I"]) and len(fields) == 2:
            if fields[0] == "S":
                stack = int(fields[1], 16)
            else:
                init = int(fields[1], 16)
    if stack is None:
        raise ToolchainError(f"The firmware did not finish; its output was:\n{output[-2000:]}")
    return (np.array(logits, np.uint32).view(np.float32).reshape(-1, classes),
            np.array(ticks, np.int64), stack, init)


def run_firmware(source: CSource, target: Target, x: np.ndarray,
                 folder: Path | None = None) -> FirmwareReport:
    """Build both firmwares for ``target``, run the test one on QEMU with the examples ``x``
    compiled in, and report flash, RAM, instructions and the logits (see the module docstring).

    Raises
    ------
    ToolchainError
        If a Debian package is missing (named, with the install command), a build fails or
        the firmware does not finish on QEMU.
    """
    _require(target, emulate=True)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(folder or scratch)
        flash, static_ram, sections = build_footprint(source, target, work)
        (work / "examples.h").write_text(_examples_header(x, source.input_size))
        main = (_TEST_MAIN.format(prefix=source.prefix, macro=source.prefix.upper(),
                                  paint=f"0x{_PAINT:08x}")
                .replace("fw_examples[e]", "fw_examples(e)"))
        elf = _link(target, work, main, "test", _code_region(target))
        command = ["qemu-system-arm", "-M", target.qemu_machine, "-nographic", "-semihosting",
                   "-icount", "shift=0", "-kernel", str(elf)]
        try:
            result = subprocess.run(command, capture_output=True, text=True,
                                    timeout=_QEMU_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise ToolchainError(f"QEMU did not finish in {_QEMU_TIMEOUT_S} s: "
                                 f"{' '.join(command)}") from None
        if result.returncode:
            raise ToolchainError(f"The firmware failed on QEMU (exit {result.returncode}):\n"
                                 f"{(result.stdout + result.stderr)[-2000:]}")
        logits, ticks, stack, init = _parse(result.stdout + result.stderr, source.output_size)
    instructions = int(round(float(ticks.mean()) * INSTRUCTIONS_PER_TICK)) if len(ticks) else None
    estimate = (instructions / target.clock_hz * 1e3
                if instructions is not None and target.clock_hz else None)
    return FirmwareReport(target.name, flash, static_ram, stack, static_ram + stack,
                          instructions, estimate, logits, sections,
                          init * INSTRUCTIONS_PER_TICK)
