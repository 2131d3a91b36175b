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
``benchmarks/results/radiation_<task>.json`` and prints a Markdown table.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from satcompress.artifact import read_artifact  # noqa: E402
from satcompress.fileio import atomic_write_text  # noqa: E402
from satcompress.radiation import (  # noqa: E402
    Campaign,
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
            "all (+compact)": ("ranges", "tables", "scrub", "compact")}
CAMPAIGNS = (("any", 1), ("exponent_top", 1), ("any", 100))
"""(bits, flips) of each campaign."""
LATENCY_RUNS = 3


def measure(path: Path, task, data, bare_bytes: int, bare_ram: int,
            trials: tuple[int, ...]) -> dict:
    """Bytes, RAM, latency ratios and the campaigns of the artifact at ``path``."""
    content = path.read_bytes()
    flight = load(path)
    clean = task_scorer(task, data, flight.run(data.val.x), flight.run(data.test.x))
    ratios = sorted(protection_overhead(content, data.test.x[:1])
                    for _ in range(LATENCY_RUNS if flight.protection.names else 0))
    row = {"bytes": len(content), "bytes_%": 100 * (len(content) / bare_bytes - 1),
           "ram_bytes": flight.peak_buffer_bytes,
           "ram_%": 100 * (flight.peak_buffer_bytes / bare_ram - 1),
           "clipped_on_clean_val_test": flight.clipped_values,
           "latency_ratios": ratios or [1.0]}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="an artifact built without protection")
    parser.add_argument("--task", required=True)
    parser.add_argument("--seed", type=int, default=0, help="the data split's seed")
    parser.add_argument("--trials", default="1000,500,200",
                        help="trials of the 1-flip, top-exponent and 100-flip campaigns")
    arguments = parser.parse_args()
    trials = tuple(int(part) for part in arguments.trials.split(","))
    task = get_task(arguments.task)
    data = task.load(seed=arguments.seed)
    bare = read_artifact(arguments.artifact)
    if "protection" in bare.metadata:
        raise SystemExit(f"{arguments.artifact} already records a protection; give the "
                         "artifact compress wrote without one.")
    bare_ram = load(arguments.artifact).peak_buffer_bytes
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, protect in VARIANTS.items():
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
    out = RESULTS / f"radiation_{task.name}.json"
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    print(markdown_table([{"protection": name, **row} for name, row in rows.items()]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
