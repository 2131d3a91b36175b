"""``satcompress export-c``: the C99 library of a flight artifact for one target."""

from __future__ import annotations

from pathlib import Path

import typer

from satcompress.cli.common import console, fail

__all__ = ["export_c", "TARGET_HELP"]

TARGET_HELP = ("Target profile: samv71 (Cortex-M7, 2 MB flash, 384 KB RAM), cortex-m4 or host "
               "(see satcompress.firmware.targets).")


def export_c(
    artifact: Path = typer.Argument(..., help="The flight artifact (.sca)."),
    target: str = typer.Option("samv71", help=TARGET_HELP),
    out: Path = typer.Option(Path("out/firmware"), help="Folder for model.h, model.c and "
                             "firmware.json."),
    prefix: str = typer.Option("scm_", help="Prefix of every C name the library exports."),
    emulate: bool = typer.Option(True, "--emulate/--no-emulate", help="Run the test firmware "
                                 "on QEMU (stack, instructions, agreement with the host build) "
                                 "when it is installed."),
    ram_tables: bool = typer.Option(None, "--ram-tables/--no-ram-tables", help="Decode the "
                                    "most read compressed weights into the RAM the target has "
                                    "left after the arena (at init) instead of at every read. "
                                    "Default: on, unless the C applies the artifact's "
                                    "protection (no protection covers those RAM copies)."),
    ram_limit: str = typer.Option("", help="RAM the firmware may take in all, e.g. 64KiB "
                                  "(default: the target's RAM); limits the RAM tables."),
    protection: bool = typer.Option(True, "--protection/--no-protection", help="Apply in the "
                                    "C the protection against upsets the artifact records "
                                    "(ranges, triplicated tables, scrubbing; model.h says "
                                    "what it adds), or generate the unprotected code."),
) -> None:
    """Generate ARTIFACT's C99 library (one predict function, static arena, const weights)
    for a target; build and measure its firmware where the cross toolchain is installed."""
    from satcompress import runtime
    from satcompress.artifact import ArtifactError
    from satcompress.codegen import CodegenError
    from satcompress.firmware import ToolchainError, get_target
    from satcompress.firmware.export import FIRMWARE_JSON
    from satcompress.firmware.export import export_c as export
    from satcompress.pipeline.budget import parse_bytes
    from satcompress.report import rich_table

    try:
        profile = get_target(target)
        limit = parse_bytes(ram_limit) if ram_limit else None
        flight = runtime.load(artifact, protect=protection)
        if ram_tables is None:
            ram_tables = not flight.protection.names
        with console.status(f"generating C for {profile.name}"):
            report = export(flight, profile, out, prefix=prefix, emulate=emulate,
                            ram_tables=ram_tables, ram_limit=limit)
    except FileNotFoundError:
        fail(f"Artifact {artifact} does not exist.")
    except (ArtifactError, CodegenError, ToolchainError, ValueError) as error:
        fail(str(error))
    console.print(rich_table(report.rows(), title=f"{artifact.name} on {profile.name}"))
    console.print(f"wrote {out / 'model.h'}, {out / 'model.c'} and {out / FIRMWARE_JSON}")
