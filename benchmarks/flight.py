"""Flight artifacts of the shipped recipes: size, agreement with PyTorch, batch-1 latency.

    SATCOMPRESS_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/flight.py

(a) Each task's cached base model is compressed with shipped recipes by the recipe runner
(:func:`satcompress.pipeline.runner.run_recipe`), which writes the flight artifact and
verifies it: artifact bytes against the float32 base, and the runtime's predictions against
the PyTorch model's on every test example. (b) Batch-1 latency, side by side in this one run
and timed the same way (:func:`satcompress.measure.latency_ms`: median of 300 passes after 30
warm-up passes, one thread everywhere -- torch threads, ``OPENBLAS_NUM_THREADS=1`` for NumPy,
``num_threads=1`` for LiteRT and ONNX Runtime): the NumPy runtime on the compressed transient
artifacts, the float PyTorch base model, ONNX Runtime on the same compressed model, and the
published compressed t2 models (``t2/t2_tinho_GR-noZ-28341*.tflite``, LiteRT interpreter).
The published models take PLAsTiCC inputs of another shape: they get zeros of their own input
shape, and only their size and latency are compared. (c) Artifact sizes against the published
60,320-byte quantized t2 file. The runtime's planned memory is set beside the Python heap
peak ``tracemalloc`` measures during one batch-1 inference. Writes
``benchmarks/results/flight.json`` and prints Markdown tables.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads its BLAS

import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import torch  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from satcompress import runtime  # noqa: E402
from satcompress.data import fetch  # noqa: E402
from satcompress.fileio import atomic_write_text  # noqa: E402
from satcompress.measure import latency_ms  # noqa: E402
from satcompress.onnx_export import export_onnx  # noqa: E402
from satcompress.pipeline.base_model import cached_base_model  # noqa: E402
from satcompress.pipeline.budget import Budget  # noqa: E402
from satcompress.pipeline.flight import NumpyModule  # noqa: E402
from satcompress.pipeline.recipe import Recipe  # noqa: E402
from satcompress.pipeline.runner import run_recipe  # noqa: E402
from satcompress.quantize import fold_weight_quantizers  # noqa: E402
from satcompress.report import markdown_table  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "flight.json"
RUNS = (("flares", "assembled"), ("transients", "assembled-t2"), ("transients", "tinho"))
PUBLISHED = ("models/t2/t2_tinho_GR-noZ-28341.tflite", "models/t2/t2_tinho_GR-noZ-28341_quantized.tflite")
REPEATS, WARMUP = 300, 30
PIPELINE_REPEATS = 50  # latency repeats of the runner's per-stage measurements


def timed(function, example: np.ndarray) -> float:
    """Batch-1 p50 latency (ms) of a NumPy function, timed like every PyTorch model."""
    p50, _ = latency_ms(NumpyModule(function), torch.from_numpy(example), REPEATS, WARMUP)
    return p50


def litert(path: Path):
    """A LiteRT interpreter of ``path`` as a function, and a zero input of its shape."""
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def run(x: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(target["index"])

    return run, np.zeros(source["shape"], source["dtype"])


def onnx_runtime(model: torch.nn.Module, example: np.ndarray):
    """ONNX Runtime (one thread, full optimisation) on the model's QDQ export, as a function."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    content = fold_weight_quantizers(export_onnx(model, torch.from_numpy(example)))
    session = onnxruntime.InferenceSession(content, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0]


def heap_peak(path: Path, example: np.ndarray) -> int:
    """Python-heap bytes one batch-1 inference allocates beyond the loaded model (tracemalloc)."""
    flight = runtime.load(path)
    flight.run(example)  # warm
    tracemalloc.start()
    try:
        flight.run(example)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def compress(task: str, recipe: str, out: Path) -> dict:
    trained = cached_base_model(task)
    result = run_recipe(trained, Recipe.load(recipe), Budget(), out / f"{task}-{recipe}",
                        latency_repeats=PIPELINE_REPEATS)
    report, flight, base = result.verification, result.flight, result.measurements[0]
    primary = trained.task.primary_metric
    plan = runtime.load(report.artifact).plan
    example = trained.data.test.x[:1]
    return {
        "task": task, "recipe": recipe, "artifact": report.artifact,
        "artifact_bytes": report.size_bytes, "float32_base_bytes": base.theoretical_bytes,
        "size_ratio": base.theoretical_bytes / report.size_bytes,
        "theoretical_bytes": result.final.theoretical_bytes,
        "parameters": result.final.parameters,
        "test_examples": report.examples, "differing_predictions": report.differing_predictions,
        "max_abs_logit_difference": report.max_abs_logit_difference, "tolerance": report.tolerance,
        "passed": report.passed, "metric": primary,
        "base_metric": base.metrics[primary], "torch_metric": report.framework_metrics[primary],
        "runtime_metric": report.metrics[primary],
        "planned_peak_bytes": plan.peak_bytes, "planned_arena_bytes": plan.arena_bytes,
        "resident_bytes": plan.resident_bytes, "numpy_heap_peak_bytes": heap_peak(Path(report.artifact), example),
        "torch_peak_ram_bytes": result.final.peak_ram_bytes,
        "runtime_latency_ms": flight.latency_ms_p50, "operators": list(runtime.load(report.artifact).operators),
        "model": result.model,
    }


def latencies(compressed: list[dict]) -> list[dict]:
    trained = cached_base_model("transients")
    example = trained.data.test.x[:1]
    rows = []
    for entry in compressed:
        if entry["task"] == "transients":
            flight = runtime.load(entry["artifact"])
            rows.append({"engine": f"satcompress NumPy runtime, `{entry['recipe']}` artifact",
                         "bytes": entry["artifact_bytes"], "p50_ms": timed(flight.run, example)})
            rows.append({"engine": f"ONNX Runtime, `{entry['recipe']}` model (QDQ ONNX)",
                         "bytes": None, "p50_ms": timed(onnx_runtime(entry["model"], example), example)})
    base = trained.model.eval()
    p50, _ = latency_ms(base, torch.from_numpy(example), REPEATS, WARMUP)
    rows.append({"engine": "PyTorch, float32 base t2 (150,533 parameters)",
                 "bytes": 4 * sum(p.numel() for p in base.parameters()), "p50_ms": p50})
    for published in PUBLISHED:
        path = fetch(published)
        run, zeros = litert(path)
        rows.append({"engine": f"LiteRT, published `{path.name}` (PLAsTiCC input {list(zeros.shape)})",
                     "bytes": path.stat().st_size, "p50_ms": timed(run, zeros)})
    reference = rows[0]["p50_ms"]
    for row in rows:
        row["relative_to_first"] = round(row["p50_ms"] / reference, 3)
        row["p50_ms"] = round(row["p50_ms"], 4)
    return rows


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        compressed = [compress(task, recipe, Path(folder)) for task, recipe in RUNS]
        timing = latencies(compressed)
        published = fetch(PUBLISHED[1]).stat().st_size
        for entry in compressed:
            entry["artifact"] = Path(entry["artifact"]).name
            entry["smaller_than_published_quantized_t2"] = entry["artifact_bytes"] < published
            del entry["model"]
    size_rows = [{k: entry[k] for k in ("task", "recipe", "artifact_bytes", "float32_base_bytes",
                                         "size_ratio", "theoretical_bytes", "planned_peak_bytes",
                                         "numpy_heap_peak_bytes", "torch_peak_ram_bytes")}
                 for entry in compressed]
    agreement_rows = [{k: entry[k] for k in ("task", "recipe", "test_examples", "differing_predictions",
                                              "max_abs_logit_difference", "tolerance", "metric",
                                              "base_metric", "torch_metric", "runtime_metric")}
                      for entry in compressed]
    results = {"machine": platform.platform(), "torch": torch.__version__,
               "numpy": np.__version__, "onnxruntime": onnxruntime.__version__,
               "published_quantized_t2_bytes": published,
               "compressed": compressed, "latency": timing}
    atomic_write_text(RESULTS, json.dumps(results, indent=2) + "\n")
    print(markdown_table(size_rows))
    print(markdown_table(agreement_rows))
    print(markdown_table(timing))


if __name__ == "__main__":
    main()
