"""``satcompress inject``: a fault-injection campaign on a flight artifact (bit flips)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from satcompress.cli.common import TASK_HELP, check_task, console, fail

__all__ = ["inject"]


def _numbers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        fail(f"--flips takes whole numbers separated by commas (e.g. 1,10,100), not {text!r}.")


def inject(
    artifact: Path = typer.Argument(..., help="The flight artifact (.sca)."),
    task: str = typer.Option(..., help=TASK_HELP),
    flips: str = typer.Option("1,10,100", help="Bits flipped per trial, comma-separated."),
    where: str = typer.Option("weights", help="weights (resident tensors in RAM) or file "
                              "(the artifact's bytes: refused or repaired at load)."),
    bits: str = typer.Option("any", help="any | sign | exponent | exponent_top | mantissa "
                             "(float32 bits of resident tensors)."),
    trials: int = typer.Option(100, help="Trials per flip count."),
    threshold: float = typer.Option(0.1, help="A metric drop above this is a corruption that "
                                    "matters (P(drop > threshold) is reported)."),
    seed: int = typer.Option(0, help="Seed of the campaign (and of the data split)."),
    protect: str = typer.Option("stored", help="stored: the protection the artifact records "
                                "(none if it records none); none: without it; ranger: without "
                                "it, every layer output clipped to its range on the training "
                                "split (NaN to its low end)."),
    backend: str = typer.Option("numpy", help="numpy: the runtime; c: the generated C compiled "
                                "for this machine, bits flipped in what the library holds in "
                                "RAM (with --protect stored; weights in flash are not RAM)."),
    ram_bytes: int = typer.Option(0, help="With --backend c: RAM for weight tables decoded at "
                                  "init (compressed weights, as a microcontroller build with "
                                  "RAM tables); 0: dense weights in read-only data."),
    out: Path = typer.Option(None, help="Write the results as JSON here."),
) -> None:
    """Flip random bits in ARTIFACT's resident weights (or its file), in the runtime or the
    generated C, TRIALS times per flip count, and report the test metric's drop: mean, sd,
    P(drop > threshold), the rate of non-finite outputs, and per tensor which single flips
    hurt most."""
    check_task(task)
    from satcompress.artifact import ArtifactError, decode_artifact
    from satcompress.data import DataFileError
    from satcompress.fileio import atomic_write_text
    from satcompress.firmware import ToolchainError
    from satcompress.radiation import (
        Campaign,
        c_runtime,
        protection_overhead,
        run_campaign,
        task_scorer,
    )
    from satcompress.report import rich_table
    from satcompress.runtime import Runtime
    from satcompress.runtime.protect import Protection
    from satcompress.tasks.registry import get_task

    if not artifact.is_file():
        fail(f"Artifact {artifact} does not exist; `satcompress compress` writes OUT/model.sca.")
    try:
        campaign = Campaign(_numbers(flips), where, bits, trials, seed, threshold, protect,
                            backend, ram_bytes)
        content = artifact.read_bytes()
        clean = Runtime(decode_artifact(content), protect=protect == "stored")
        recorded = Protection.from_metadata(clean.metadata).names
        shown = (", ".join(recorded) if protect == "stored" else protect) or "none"
        if clean.metadata.get("task") != task:
            fail(f"{artifact} was built for task {clean.metadata.get('task')!r}, not {task!r}.")
        reference = get_task(task)
        with console.status(f"loading {task} data"):
            data = reference.load(seed=seed)
        compiled = c_runtime(content, ram_bytes) if backend == "c" else None
        engine = compiled or clean  # the clean outputs of what the campaign runs
        score = task_scorer(reference, data, engine.run(data.val.x), engine.run(data.test.x))
        with console.status(f"injecting: {trials} trials x {len(campaign.flips)} flip counts"):
            result = run_campaign(content, data.test.x, score, campaign, data.train.x)
        protected = protect == "ranger" or (protect == "stored" and recorded)
        overhead = (protection_overhead(content, data.test.x[:1], protect, data.train.x)
                    if protected and compiled is None else None)
    except (ArtifactError, DataFileError, ToolchainError, ValueError) as error:
        fail(str(error))
    metric = reference.primary_metric
    if compiled is not None:
        blocks = {name: block.size for name, block in compiled.resident_memory.items()}
        console.print(f"generated C (host build): bits flipped in the library's RAM, "
                      f"{sum(blocks.values()):,} bytes ({', '.join(blocks)}); weights in "
                      "flash (const) are not RAM and are out of scope for upsets in RAM")
    console.print(rich_table(result.summary_rows(),
                             title=f"{artifact.name}: {metric} drop under bit flips "
                                   f"({where}{' of the generated C' if compiled else ''}, "
                                   f"bits {bits}; protection: {shown})"))
    if overhead is not None:
        console.print(f"{shown}: batch-1 latency x{overhead:.3f} of the unprotected runtime "
                      "(medians of 40 interleaved blocks of 100 runs)")
    layers = result.layer_rows()
    if layers:
        console.print(rich_table(layers[:15], title="single flips: most vulnerable tensors"))
    if out is not None:
        atomic_write_text(out, json.dumps({"artifact": str(artifact), "sha256": clean.checksum,
                                           "task": task, "metric": metric,
                                           "protection": shown, "backend": backend,
                                           "protection_latency_ratio": overhead,
                                           **result.to_dict()}, indent=2) + "\n")
        console.print(f"wrote {out}")
