"""Compile generated C: tools present or named as missing, a cache of builds, ELF section sizes.

Torch-free: part of the flight path.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from satcompress.codegen import CSource
from satcompress.firmware.targets import Target

__all__ = ["ToolchainError", "DEBIAN_PACKAGES", "INSTALL_HINT", "missing_tools", "cache_dir",
           "compile_command", "write_sources", "section_sizes", "flash_and_ram",
           "build_cache_key"]

DEBIAN_PACKAGES = {"arm-none-eabi-gcc": "gcc-arm-none-eabi",
                   "arm-none-eabi-size": "binutils-arm-none-eabi",
                   "qemu-system-arm": "qemu-system-arm",
                   "newlib": "libnewlib-arm-none-eabi"}
"""Tool -> the Debian package that provides it."""

INSTALL_HINT = ("apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
                " (as root; Debian/Ubuntu)")
_TIMEOUT_S = 300


class ToolchainError(RuntimeError):
    """A compiler or emulator is missing, or a build or run failed (the message says which)."""


def _newlib_present() -> bool:
    return any(Path(root).is_dir() for root in ("/usr/lib/arm-none-eabi/newlib",
                                                 "/usr/lib/arm-none-eabi/lib"))


def missing_tools(target: Target, emulate: bool = False) -> list[str]:
    """The Debian packages (or, for the host, commands) a build for ``target`` lacks."""
    if not target.embedded:
        return [] if shutil.which(target.compiler) else [target.compiler]
    needed = ["arm-none-eabi-gcc", "arm-none-eabi-size", "newlib"]
    if emulate:
        needed.append("qemu-system-arm")
    lacking = [tool for tool in needed
               if (not _newlib_present() if tool == "newlib" else not shutil.which(tool))]
    return sorted({DEBIAN_PACKAGES[tool] for tool in lacking})


def cache_dir() -> Path:
    """Where compiled libraries are kept: ``$SATCOMPRESS_CACHE_DIR/c`` (default
    ``~/.cache/satcompress/c``)."""
    configured = os.environ.get("SATCOMPRESS_CACHE_DIR")
    root = Path(configured) if configured else Path.home() / ".cache" / "satcompress"
    return root / "c"


def build_cache_key(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def write_sources(source: CSource, folder: Path) -> tuple[Path, Path]:
    """Write ``model.h`` and ``model.c`` into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    header, body = folder / "model.h", folder / "model.c"
    header.write_text(source.header)
    body.write_text(source.source)
    return header, body


def compile_command(command: Sequence[str], what: str, cwd: Path | None = None) -> str:
    """Run a compiler (or linker) command; its output, or ToolchainError with the compiler's
    message."""
    try:
        result = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True,
                                timeout=_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise ToolchainError(f"{command[0]} is not installed; {what} needs it. Install: "
                             f"{INSTALL_HINT}.") from None
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"{what} took over {_TIMEOUT_S} s: {' '.join(command)}") from None
    if result.returncode:
        raise ToolchainError(f"{what} failed ({' '.join(command[:1])}, exit "
                             f"{result.returncode}):\n{(result.stderr or result.stdout)[-3000:]}")
    return result.stdout


def section_sizes(path: Path, size_tool: str) -> dict[str, int]:
    """Bytes of every allocated section of an object or ELF (``size -A``)."""
    output = compile_command([size_tool, "-A", str(path)], f"reading sections of {path.name}")
    sizes: dict[str, int] = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0].startswith(".") and fields[1].isdigit():
            sizes[fields[0]] = sizes.get(fields[0], 0) + int(fields[1])
    return sizes


def flash_and_ram(sizes: dict[str, int]) -> tuple[int, int]:
    """(flash, static RAM) of sections: flash = code + read-only data + initialised data;
    static RAM = initialised + zeroed data (the stack is measured apart)."""
    def total(*prefixes: str) -> int:
        return sum(size for name, size in sizes.items() if name.startswith(prefixes))

    flash = total(".text", ".rodata", ".data", ".vectors", ".ARM.exidx", ".init_array",
                  ".fini_array")
    ram = total(".data", ".bss")
    return flash, ram
