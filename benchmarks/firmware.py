"""Flight firmware: host C vs the NumPy runtime vs ONNX Runtime (vs LiteRT), and Cortex-M7
flash, RAM and instructions, for compress run folders, in one run.

    export SATCOMPRESS_DATA_DIR=/work/shared/data
    satcompress compress --task flares --recipe assembled --out /tmp/fw/flares
    .venv/bin/python benchmarks/firmware.py /tmp/fw/flares [/tmp/fw/t2 ...] \
        [--baseline /tmp/before]   # a copy of src/ of another commit: its C timed alongside

For every run folder (``model.sca`` + the checkpoint ``run.json`` records for it):

* batch-1 latency on the first :data:`EXAMPLES` test examples, each engine called one example
  at a time, round-robin, the median over :data:`ROUNDS` rounds (one thread everywhere): the
  NumPy runtime; the generated C compiled for the host (``runtime.load(path, backend="c")``,
  with its Python input checks, and the bare ``predict`` call through ctypes); ONNX Runtime on
  the ONNX export of the same final model; for transient models also LiteRT on the published
  t2 file (``models/t2/t2_tinho_GR-noZ-28341.tflite``, which reads the g and r fluxes: the
  first two of the four input channels, for timing only); with ``--baseline DIR``, the bare
  ``predict`` of the C that the satcompress in ``DIR`` (on ``PYTHONPATH``) generates, built
  with the same flags (the code before a change, timed in the same run);
* agreement on the whole test split: predictions of the host C (dense and compressed
  weights) that differ from the NumPy runtime's, largest logit difference;
* the ``samv71`` firmware (Cortex-M7, QEMU ``mps2-an500``): flash (code included), RAM
  (static + painted stack), instructions per inference (QEMU ``-icount``/SysTick: an
  estimate), estimated ms at 300 MHz, and whether its logits equal the host build's bit for bit
  on the first 32 test examples; built twice, every compressed weight decoded where it is read
  (flash only) and with RAM tables (the most read weights decoded at init into the RAM left):
  the tables, their bytes, the instruction model's expected speedup and the measured one.

Writes ``benchmarks/results/firmware.json`` and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from satcompress import runtime
from satcompress.codegen import generate_c
from satcompress.fileio import atomic_write_text
from satcompress.firmware import TARGETS
from satcompress.firmware.build import compile_command
from satcompress.firmware.export import export_c, ram_for_tables
from satcompress.firmware.host import CRuntime, build_host_library
from satcompress.onnx_export import export_onnx
from satcompress.pipeline.runner import artifact_checkpoint, load_checkpoint
from satcompress.report import markdown_table
from satcompress.tasks.registry import get_task

RESULTS = Path(__file__).parent / "results" / "firmware.json"
EXAMPLES = 50
ROUNDS = 40
PUBLISHED_T2 = "models/t2/t2_tinho_GR-noZ-28341.tflite"


def onnx_engine(model: torch.nn.Module, example: np.ndarray) -> Callable[[np.ndarray], object]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(export_onnx(model, torch.from_numpy(example)), options,
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def litert_engine(path: Path) -> Callable[[np.ndarray], object]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    source = interpreter.get_input_details()[0]["index"]
    target = interpreter.get_output_details()[0]["index"]
    interpreter.resize_tensor_input(source, [1, 100, 2])
    interpreter.allocate_tensors()

    def run(x: np.ndarray) -> object:
        interpreter.set_tensor(source, np.ascontiguousarray(x[..., :2]))  # its g, r fluxes
        interpreter.invoke()
        return interpreter.get_tensor(target)

    return run


_GENERATE = """import sys
from pathlib import Path
from satcompress import runtime
from satcompress.codegen import generate_c
source = generate_c(runtime.load(sys.argv[1]), compressed=False)
Path(sys.argv[2], "model.h").write_text(source.header)
Path(sys.argv[2], "model.c").write_text(source.source)
"""


def baseline_c(root: Path, artifact: Path, folder: Path) -> Callable[[np.ndarray], object]:
    """The bare ``predict`` of the C the satcompress in ``root`` generates for ``artifact``,
    built with the host flags into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", _GENERATE, str(artifact), str(folder)], check=True,
                   env={**os.environ, "PYTHONPATH": str(root)})
    host = TARGETS["host"]
    library = folder / "libbaseline.so"
    compile_command([host.compiler, *host.cflags, "-shared", "-o", str(library),
                     str(folder / "model.c"), "-lm"], "compiling the baseline C")
    loaded = ctypes.CDLL(str(library))
    if hasattr(loaded, "scm_init"):
        loaded.scm_init()
    predict = loaded.scm_predict
    predict.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    output = np.empty(64, np.float32)
    return lambda x: predict(x.ctypes.data, output.ctypes.data)


def bare_c(compiled: CRuntime) -> Callable[[np.ndarray], object]:
    predict = getattr(compiled._library, f"{compiled.source.prefix}predict")  # noqa: SLF001
    predict.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    output = np.empty(compiled.source.output_size, np.float32)
    return lambda x: predict(x.ctypes.data, output.ctypes.data)


def batch1_ms(engines: dict[str, Callable[[np.ndarray], object]], x: np.ndarray) -> dict:
    """Median ms per example of each engine, called one example at a time, round-robin."""
    rows = [np.ascontiguousarray(x[i : i + 1]) for i in range(len(x))]
    times: dict[str, list[float]] = {name: [] for name in engines}
    for engine in engines.values():
        engine(rows[0])
    for _ in range(ROUNDS):
        for name, engine in engines.items():
            started = time.perf_counter()
            for row in rows:
                engine(row)
            times[name].append((time.perf_counter() - started) / len(rows) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def benchmark(folder: Path, baseline: Path | None) -> dict:
    artifact = folder / "model.sca"
    flight = runtime.load(artifact)
    task = get_task(flight.metadata["task"])
    data = task.load(seed=0)
    model = load_checkpoint(artifact_checkpoint(folder, flight.checksum)).eval()
    x = data.test.x
    dense = CRuntime(flight, generate_c(flight, compressed=False),
                     build_host_library(generate_c(flight, compressed=False)))
    compressed_source = generate_c(flight, compressed=True)
    compressed = CRuntime(flight, compressed_source, build_host_library(compressed_source))
    tables_source = generate_c(flight, compressed=True,
                               ram_bytes=ram_for_tables(flight, TARGETS["samv71"]))
    tables = CRuntime(flight, tables_source, build_host_library(tables_source))
    reference = flight.run(x)
    agreement = {}
    for name, engine in (("host C, dense weights", dense), ("host C, compressed weights",
                                                            compressed),
                         ("host C, compressed weights, samv71 RAM tables", tables)):
        logits = engine.run(x)
        agreement[name] = {
            "examples": len(x),
            "differing_predictions": int(np.count_nonzero(logits.argmax(1) != reference.argmax(1))),
            "max_abs_logit_difference": float(np.abs(logits - reference).max()),
            "bit_identical_to_compressed": bool(np.array_equal(
                logits.view(np.uint32), compressed.run(x).view(np.uint32)))}
    engines = {"NumPy runtime": flight.run, "host C (runtime.load backend='c')": dense.run,
               "host C (bare predict via ctypes)": bare_c(dense),
               "ONNX Runtime (same model)": onnx_engine(model, x[:1])}
    if flight.metadata["task"] == "transients":
        from satcompress.data import fetch

        engines["LiteRT (published t2 .tflite)"] = litert_engine(fetch(PUBLISHED_T2))
    with tempfile.TemporaryDirectory() as scratch:
        if baseline is not None:
            engines["host C before (bare predict via ctypes)"] = baseline_c(
                baseline, artifact, Path(scratch))
        torch.set_num_threads(1)
        latency = batch1_ms(engines, x[:EXAMPLES])
    samv71 = {tables: export_c(flight, TARGETS["samv71"], folder / f"firmware-samv71-{tables}",
                               examples=x[:32], ram_tables=tables == "ram-tables").to_dict()
              for tables in ("flash-only", "ram-tables")}
    flash, ram = (samv71[key]["firmware"] for key in ("flash-only", "ram-tables"))
    if flash.get("instructions_per_inference") and ram.get("instructions_per_inference"):
        samv71["measured_speedup"] = (flash["instructions_per_inference"]
                                      / ram["instructions_per_inference"])
    return {"folder": str(folder), "task": flight.metadata["task"],
            "artifact_bytes": flight.size_bytes, "batch1_ms": latency, "agreement": agreement,
            "samv71": samv71}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, default=[Path("/tmp/fw/flares")])
    parser.add_argument("--baseline", type=Path, help="a copy of src/ of another commit")
    arguments = parser.parse_args()
    results = {"machine": platform.platform(), "processor": platform.processor(),
               "runs": [benchmark(folder, arguments.baseline) for folder in arguments.folders]}
    RESULTS.parent.mkdir(exist_ok=True)
    atomic_write_text(RESULTS, json.dumps(results, indent=2) + "\n")
    latency_rows, firmware_rows, agreement_rows = [], [], []
    for run in results["runs"]:
        name = f"{run['task']} ({Path(run['folder']).name})"
        latency_rows.append({"model": name, **{k: f"{v:.4f}" for k, v in run["batch1_ms"].items()}})
        for engine, numbers in run["agreement"].items():
            agreement_rows.append({"model": name, "engine": engine, **numbers})
        for tables in ("flash-only", "ram-tables"):
            exported = run["samv71"][tables]
            firmware = exported["firmware"]
            if firmware:
                firmware_rows.append({
                    "model": name, "weights": tables, "flash_bytes": firmware["flash_bytes"],
                    "ram_bytes (static + stack)": f"{firmware['ram_bytes']} ("
                    f"{firmware['static_ram_bytes']} + {firmware['stack_bytes']})",
                    "RAM tables (bytes, tensors)": f"{exported['source']['ram_table_bytes']} "
                    f"({len(exported['source']['ram_tables'])})",
                    "instructions/inference (estimate)": firmware["instructions_per_inference"],
                    "init instructions": firmware.get("init_instructions"),
                    "ms at 300 MHz (estimate)": round(firmware["estimated_ms"], 3),
                    "expected speedup": exported["source"]["expected_speedup"],
                    "measured speedup": round(run["samv71"].get("measured_speedup", 1.0), 3)
                    if tables == "ram-tables" else "",
                    "logits = host build": firmware["bit_identical_to_host_build"]})
    print("Batch-1 latency, ms per example (median)\n")
    print(markdown_table(latency_rows))
    print("\nAgreement with the NumPy runtime on the whole test split\n")
    print(markdown_table(agreement_rows))
    print("\nsamv71 (Cortex-M7) firmware on QEMU mps2-an500\n")
    print(markdown_table(firmware_rows))


if __name__ == "__main__":
    main()
