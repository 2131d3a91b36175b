"""Radiation protection (issue 17): an artifact with and without each protection, side by side.

    SATCOMPRESS_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/radiation.py \
        /tmp/demo/flares/model.sca --task flares [--trials 3000,500,200]

The artifact (built without protection) is copied and rewritten with each protection set of
:data:`VARIANTS` (:func:`satcompress.radiation.protect_artifact`, ranges calibrated on the
training split), and every copy is measured in this one run: file bytes, the runtime's
planned peak RAM, batch-1 latency against the unprotected runtime
(:func:`satcompress.radiation.protection_overhead`, three times: medians of 40 interleaved
blocks of 100 runs in CPU time, scrubs included; one BLAS thread), and seeded fault-injection
campaigns in resident memory as it runs with that protection
(:func:`satcompress.radiation.run_campaign`, campaign seed 0 for every variant): 1 random bit
flip, 1 flip of a float32's top exponent bit, 100 random flips (``--trials`` of each). Writes
``benchmarks/results/radiation_<task>.json`` and prints a Markdown table. ``--latency-only``
skips the campaigns (bytes, RAM and the latency ratios alone, into
``radiation_latency_<task>.json``).

With ``--c`` it measures the generated C instead (:mod:`satcompress.codegen.protect`): the
artifact and a copy protected with :data:`C_PROTECT`, side by side in this one run: the
host build's batch-1 latency (the bare ``predict`` through ctypes, dense weights as the host
target builds them; CPU time of blocks of :data:`C_CALLS` calls, scrubs included, the
median of :data:`C_ROUNDS` interleaved rounds, three times) and the ``samv71`` (Cortex-M7)
firmware's flash (code and constants), static RAM and, with QEMU, instructions per inference
on the first 32 test examples (an estimate; no scrub falls among 32), weights decoded where
read (flash only) and with RAM tables. Writes ``benchmarks/results/radiation_c_<task>.json``.

With ``--c-inject`` it runs the fault-injection campaigns on the generated C
(``Campaign(backend="c")``: bits flipped in what the compiled host library holds in RAM, its
``predict`` scored) for each build of :data:`C_INJECT`, campaign seed 0 for every build: the
artifact rewritten with the protection, its weights dense in read-only data or compressed with
the ``samv71``'s RAM for weight tables decoded at init
(:func:`satcompress.firmware.export.ram_for_tables`). The code of an artifact without a
protection record holds nothing in RAM to flip (constants in flash, an arena rewritten by
every inference); ``scrub`` alone (deferred past the campaign, as every campaign defers it)
is the RAM weight tables as unprotected code holds them. Writes
``benchmarks/results/radiation_c_inject_<task>.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads its BLAS

import argparse  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from satcompress.artifact import read_artifact  # noqa: E402
from satcompress.codegen import generate_c  # noqa: E402
from satcompress.fileio import atomic_write_text  # noqa: E402
from satcompress.firmware import TARGETS  # noqa: E402
from satcompress.firmware.export import export_c, ram_for_tables  # noqa: E402
from satcompress.firmware.host import build_host_library  # noqa: E402
from satcompress.radiation import (  # noqa: E402
    Campaign,
    c_runtime,
    protect_artifact,
    protection_overhead,
    run_campaign,
    task_scorer,
)
from satcompress.report import markdown_table  # noqa: E402
from satcompress.runtime import load  # noqa: E402
from satcompress.tasks.registry import get_task  # noqa: E402

RESULTS = Path(__file__).parent / "results"
VARIANTS = {"none": (), "ranges": ("ranges",),
            "ranges+tables+scrub": ("ranges", "tables", "scrub"),
            "all (+compact)": ("ranges", "tables", "scrub", "compact"),
            "tables+scrub+compact": ("tables", "scrub", "compact"),
            "ranges+tables+scrub+compact-vulnerable": ("ranges", "tables", "scrub",
                                                       "compact-vulnerable")}
CAMPAIGNS = (("any", 1), ("exponent_top", 1), ("any", 100))
"""(bits, flips) of each campaign."""
LATENCY_RUNS = 3
C_PROTECT = ("ranges", "tables", "scrub")
"""The protection measured in the generated C (``compact`` changes nothing there)."""
C_CALLS = 100
C_ROUNDS = 400
C_INJECT = {"scrub, RAM tables": (("scrub",), True),
            "ranges, RAM tables": (("ranges",), True),
            "ranges+tables+scrub, RAM tables": (C_PROTECT, True),
            "ranges+tables+scrub, dense": (C_PROTECT, False),
            "tables+scrub, RAM tables": (("tables", "scrub"), True),
            "tables+scrub, dense": (("tables", "scrub"), False)}
"""Build -> (protection, RAM weight tables) of ``--c-inject``."""


def measure(path: Path, task, data, bare_bytes: int, bare_ram: int,
            trials: tuple[int, ...]) -> dict:
    """Bytes, RAM, latency ratios and the campaigns of the artifact at ``path`` (none when
    ``trials`` is empty)."""
    content = path.read_bytes()
    flight = load(path)
    ratios = sorted(protection_overhead(content, data.test.x[:1])
                    for _ in range(LATENCY_RUNS if flight.protection.names else 0))
    row = {"bytes": len(content), "bytes_%": 100 * (len(content) / bare_bytes - 1),
           "ram_bytes": flight.peak_buffer_bytes,
           "ram_%": 100 * (flight.peak_buffer_bytes / bare_ram - 1),
           "latency_ratios": ratios or [1.0]}
    if not trials:
        return row
    clean = task_scorer(task, data, flight.run(data.val.x), flight.run(data.test.x))
    row["clipped_on_clean_val_test"] = flight.clipped_values
    for (bits, flips), trials in zip(CAMPAIGNS, trials):
        started = time.perf_counter()
        campaign = Campaign(flips=(flips,), bits=bits, trials=trials, seed=0)
        summary = run_campaign(content, data.test.x, clean, campaign).summary_rows()[0]
        key = f"{bits}x{flips}"
        row[f"p_drop_{key}"] = summary["p_drop_over_threshold"]
        row[f"non_finite_{key}"] = summary["non_finite_rate"]
        row[f"failed_{key}"] = summary["failed_rate"]
        row[f"trials_{key}"] = summary["trials"]
        print(f"  {key}: {summary} ({time.perf_counter() - started:.0f} s)", flush=True)
    return row


def bare_predict(path: Path) -> Callable[[np.ndarray], object]:
    """The host build's ``predict`` of the artifact at ``path`` (its protection applied),
    called through ctypes on one example."""
    source = generate_c(load(path), compressed=TARGETS["host"].compressed_weights)
    library = ctypes.CDLL(str(build_host_library(source)))
    getattr(library, f"{source.prefix}init")()
    predict = getattr(library, f"{source.prefix}predict")
    predict.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    output = np.empty(source.output_size, np.float32)
    return lambda x: predict(x.ctypes.data, output.ctypes.data)


def c_latency_ratio(bare: Path, protected: Path, x: np.ndarray) -> tuple[float, float]:
    """(median µs per call unprotected, protected / unprotected) of the host builds' bare
    ``predict``, in interleaved rounds of :data:`C_CALLS` calls over the examples ``x``."""
    engines = {"bare": bare_predict(bare), "protected": bare_predict(protected)}
    rows = [np.ascontiguousarray(x[i % len(x)]) for i in range(C_CALLS)]
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(C_ROUNDS):
        for name, predict in engines.items():
            started = time.process_time()
            for row in rows:
                predict(row)
            times[name].append((time.process_time() - started) / C_CALLS)
    bare_s = statistics.median(times["bare"])
    return bare_s * 1e6, statistics.median(times["protected"]) / bare_s


def c_rows(bare: Path, protected: Path, x: np.ndarray, folder: Path) -> dict:
    """The generated C of ``bare`` and ``protected`` side by side (see the module docstring)."""
    rows: dict = {"latency": [c_latency_ratio(bare, protected, x[:50]) for _ in range(3)]}
    for name, path in (("none", bare), ("protected", protected)):
        flight = load(path)
        for tables in (False, True):
            report = export_c(flight, TARGETS["samv71"], folder / f"{name}-{tables}",
                              examples=x[:32], ram_tables=tables)
            rows[f"{name}, {'RAM tables' if tables else 'flash only'}"] = {
                **{key: report.firmware.get(key) for key in (
                    "flash_bytes", "static_ram_bytes", "stack_bytes",
                    "instructions_per_inference", "bit_identical_to_host_build",
                    "differing_predictions_vs_numpy")},
                "ram_table_bytes": report.source["ram_table_bytes"],
                "triplicated_bytes": report.source["triplicated_bytes"],
                "skipped": report.skipped}
            print(f"  {name}, RAM tables {tables}: {rows[list(rows)[-1]]}", flush=True)
    return rows


def main_c(artifact: Path, task, data) -> None:
    """``--c``: the generated C with and without :data:`C_PROTECT`."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        protected = folder / "protected.sca"
        shutil.copyfile(artifact, protected)
        protect_artifact(protected, C_PROTECT, data.train.x)
        rows = c_rows(artifact, protected, data.test.x, folder)
    record = {"artifact": str(artifact), "sha256": read_artifact(artifact).sha256,
              "task": task.name, "protect": list(C_PROTECT), **rows}
    out = RESULTS / f"radiation_c_{task.name}.json"
    atomic_write_text(out, json.dumps(record, indent=2, default=str) + "\n")
    table = []
    for key, row in rows.items():
        if key == "latency":
            continue
        table.append({"build": key, "flash": row["flash_bytes"],
                      "static RAM": row["static_ram_bytes"], "stack": row["stack_bytes"],
                      "triplicated tables": row["triplicated_bytes"],
                      "RAM weight tables": row["ram_table_bytes"],
                      "instructions / inference": row["instructions_per_inference"],
                      "= host build": row["bit_identical_to_host_build"],
                      "differing from NumPy": row["differing_predictions_vs_numpy"]})
    print(markdown_table(table))
    print("host C batch-1 (µs unprotected, protected / unprotected): "
          + ", ".join(f"{us:.2f} µs x{ratio:.3f}" for us, ratio in rows["latency"]))
    print(f"wrote {out}")


def main_c_inject(artifact: Path, task, data, trials: tuple[int, ...],
                  builds: list[str]) -> None:
    """``--c-inject``: the campaigns of :data:`CAMPAIGNS` on ``builds`` of :data:`C_INJECT`."""
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, (protect, ram_tables) in ((name, C_INJECT[name]) for name in builds):
            path = Path(folder) / "model.sca"
            shutil.copyfile(artifact, path)
            protect_artifact(path, protect, data.train.x)
            content = path.read_bytes()
            ram = ram_for_tables(load(path), TARGETS["samv71"]) if ram_tables else 0
            compiled = c_runtime(content, ram)
            blocks = {block: array.size for block, array in compiled.resident_memory.items()}
            row = {"protect": list(protect), "ram_bytes_for_tables": ram,
                   "resident_bytes": blocks}
            clean = task_scorer(task, data, compiled.run(data.val.x), compiled.run(data.test.x))
            print(f"{name}: resident {sum(blocks.values()):,} B in {len(blocks)} blocks",
                  flush=True)
            for (bits, flips), count in zip(CAMPAIGNS, trials):
                started = time.perf_counter()
                campaign = Campaign(flips=(flips,), bits=bits, trials=count, seed=0,
                                    backend="c", ram_bytes=ram)
                summary = run_campaign(content, data.test.x, clean, campaign).summary_rows()[0]
                row[f"{bits}x{flips}"] = summary
                print(f"  {bits}x{flips}: {summary} ({time.perf_counter() - started:.0f} s)",
                      flush=True)
            rows[name] = row
    record = {"artifact": str(artifact), "sha256": read_artifact(artifact).sha256,
              "task": task.name, "campaigns": [[*c, n] for c, n in zip(CAMPAIGNS, trials)],
              "threshold": Campaign().threshold, "builds": rows}
    out = RESULTS / f"radiation_c_inject_{task.name}{subset_suffix(builds, C_INJECT)}.json"
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    table = [{"build": name, "RAM hit (B)": sum(row["resident_bytes"].values()),
              **{key: f"{row[key]['p_drop_over_threshold']:.2%} of {row[key]['trials']} "
                      f"(non-finite {row[key]['non_finite_rate']:.1%})"
                 for key in (f"{b}x{f}" for b, f in CAMPAIGNS[:len(trials)])}}
             for name, row in rows.items()]
    print(markdown_table(table))
    print(f"wrote {out}")


def chosen(text: str | None, offered: dict) -> list[str]:
    """The names ``--variants`` gives (separated by commas not followed by a space: a build's
    name holds ", "), every one of ``offered`` without it."""
    names = re.split(r",(?! )", text) if text else list(offered)
    if set(names) - set(offered):
        raise SystemExit(f"--variants: unknown {sorted(set(names) - set(offered))}; "
                         f"choose among {', '.join(offered)}.")
    return names


def subset_suffix(names: list[str], offered: dict) -> str:
    """The results file name's suffix for a subset of ``offered`` (empty for all of them):
    ``_`` and each name with its runs of other characters than letters and digits as ``-``."""
    if names == list(offered):
        return ""
    return "".join("_" + re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") for name in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="an artifact built without protection")
    parser.add_argument("--task", required=True)
    parser.add_argument("--seed", type=int, default=0, help="the data split's seed")
    parser.add_argument("--trials", default="1000,500,200",
                        help="trials of the 1-flip, top-exponent and 100-flip campaigns")
    parser.add_argument("--variants", default=None,
                        help="the protection sets of VARIANTS (with --c-inject: the builds of "
                             "C_INJECT) to measure, separated by commas not followed by a "
                             "space; a subset writes radiation_<task>_<sets>.json")
    parser.add_argument("--latency-only", action="store_true",
                        help="bytes, RAM and batch-1 latency only (no campaigns)")
    parser.add_argument("--c", action="store_true",
                        help="measure the generated C (flash, RAM, latency, instructions)")
    parser.add_argument("--c-inject", action="store_true",
                        help="fault-injection campaigns on the generated C (see the docstring)")
    arguments = parser.parse_args()
    trials = (() if arguments.latency_only
              else tuple(int(part) for part in arguments.trials.split(",")))
    task = get_task(arguments.task)
    data = task.load(seed=arguments.seed)
    bare = read_artifact(arguments.artifact)
    if "protection" in bare.metadata:
        raise SystemExit(f"{arguments.artifact} already records a protection; give the "
                         "artifact compress wrote without one.")
    if arguments.c:
        main_c(arguments.artifact, task, data)
        return
    if arguments.c_inject:
        main_c_inject(arguments.artifact, task, data, trials,
                      chosen(arguments.variants, C_INJECT))
        return
    variants = chosen(arguments.variants, VARIANTS)
    bare_ram = load(arguments.artifact).peak_buffer_bytes
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, protect in ((name, VARIANTS[name]) for name in variants):
            path = Path(folder) / "model.sca"
            shutil.copyfile(arguments.artifact, path)
            protect_artifact(path, protect, data.train.x)
            print(f"{name}:", flush=True)
            rows[name] = measure(path, task, data, bare.size_bytes, bare_ram, trials)
    record = {"artifact": str(arguments.artifact), "sha256": bare.sha256, "task": task.name,
              "campaigns": [[*c, n] for c, n in zip(CAMPAIGNS, trials)],
              "threshold": Campaign().threshold,
              "variants": {name: {"protect": list(VARIANTS[name]), **row}
                           for name, row in rows.items()}}
    out = RESULTS / (f"radiation_{'latency_' if not trials else ''}{task.name}"
                     f"{subset_suffix(variants, VARIANTS)}.json")
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    print(markdown_table([{"protection": name, **row} for name, row in rows.items()]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
