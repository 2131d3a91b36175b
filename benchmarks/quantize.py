"""Quantize both reference tasks' base models and compare size, latency and skill, in one run.

    SATCOMPRESS_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/quantize.py

For each task's base model (trained or taken from the cache) this applies, from the same float
model: post-training quantization W8A8 (min/max and percentile calibration, and min/max with
the first layer -- which sees the raw, heavy-tailed inputs -- kept in float), int8, int4 and
int2 weight-only, quantization-aware training at 4 and 2 bits, and mixed precision (average 4
bits without fine-tuning, average 3 bits with a short QAT fine-tuning). Each result is
measured (:func:`satcompress.measure.measure`: parameters, theoretical bytes, MACs, batch-1
PyTorch latency with one thread), scored on the test split (and by its class-weighted
validation loss, what QAT optimises), exported to ONNX (QDQ, weights folded to integers with
:func:`satcompress.quantize.fold_weight_quantizers`) and timed in ONNX Runtime under the same
conditions (batch 1, one thread, median of 300 runs after 30 warm-up runs, full graph
optimisation), once as exported (QDQ kernels) and once with ``session.disable_quant_qdq``
(ONNX Runtime dequantizes the constant weights once at load and runs float kernels). The ONNX
Runtime outputs are checked against PyTorch's on the whole test split and the integer kernels
ONNX Runtime fused are listed. Writes ``benchmarks/results/quantize.json`` and prints Markdown
tables (results, and the per-layer widths chosen by mixed precision).
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn

from satcompress import stages
from satcompress.fileio import atomic_write_text
from satcompress.measure import measure
from satcompress.onnx_export import export_onnx
from satcompress.pipeline.base_model import TrainedModel, cached_base_model
from satcompress.quantize import (
    MixedPrecisionQuantizeConfig,
    PostTrainingQuantizeConfig,
    QuantizationAwareTrainConfig,
    bits_report_rows,
    fold_weight_quantizers,
    quantizable_layers,
)
from satcompress.report import markdown_table
from satcompress.training import class_weighted_loss

RESULTS = Path(__file__).parent / "results" / "quantize.json"
THREADS = 1
ORT_REPEATS = 300
ORT_WARMUP = 30
INTEGER_KERNELS = ("QGemm", "MatMulIntegerToFloat", "QLinearMatMul", "QLinearConv",
                   "MatMulNBits", "ConvInteger", "MatMulInteger")


def variants(trained: TrainedModel) -> dict[str, stages.StageConfig]:
    """Stage label -> config, all applied to the float base model."""
    batch_size = trained.task.train_settings["batch_size"]
    first_layer = quantizable_layers(trained.model)[0]
    return {
        "ptq_w8a8_minmax": PostTrainingQuantizeConfig(),
        "ptq_w8a8_percentile": PostTrainingQuantizeConfig(observer="percentile",
                                                          percentile=99.99),
        "ptq_w8a8_minmax_float_first_layer": PostTrainingQuantizeConfig(exclude=(first_layer,)),
        "ptq_w8_weight_only": PostTrainingQuantizeConfig(quantize_activations=False),
        "ptq_w4_weight_only": PostTrainingQuantizeConfig(weight_bits=4,
                                                         quantize_activations=False),
        "qat_w4": QuantizationAwareTrainConfig(weight_bits=4, max_epochs=6, patience_epochs=6,
                                               learning_rate=3e-4, batch_size=batch_size),
        "ptq_w2_weight_only": PostTrainingQuantizeConfig(weight_bits=2,
                                                         quantize_activations=False),
        "qat_w2": QuantizationAwareTrainConfig(weight_bits=2, max_epochs=6, patience_epochs=6,
                                               learning_rate=3e-4, batch_size=batch_size),
        "mixed_avg4": MixedPrecisionQuantizeConfig(target_average_bits=4.0),
        "mixed_avg3_qat": MixedPrecisionQuantizeConfig(
            target_average_bits=3.0, fine_tune_epochs=4, learning_rate=3e-4,
            batch_size=batch_size),
    }


def _session(onnx_model: bytes, float_kernels: bool = False) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = THREADS
    options.log_severity_level = 3
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if float_kernels:  # QDQ nodes become ordinary ops: constant weights dequantized at load
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    return onnxruntime.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])


def ort_latency_ms(onnx_model: bytes, x1: np.ndarray, float_kernels: bool = False) -> float:
    """Median batch-1 ONNX Runtime latency in ms (one thread, as for PyTorch)."""
    session = _session(onnx_model, float_kernels)
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(x1)}
    for _ in range(ORT_WARMUP):
        session.run(None, feed)
    times = []
    for _ in range(ORT_REPEATS):
        start = time.perf_counter_ns()
        session.run(None, feed)
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1e6


def ort_kernels(onnx_model: bytes) -> list[str]:
    """Integer kernels in ONNX Runtime's optimised graph (empty: everything ran in float)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "optimised.onnx"
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.optimized_model_filepath = str(path)
        onnxruntime.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        operators = [node.op_type for node in onnx.load(str(path)).graph.node]
    return sorted({op for op in operators if op in INTEGER_KERNELS})


def ort_max_difference(onnx_model: bytes, model: nn.Module, x: np.ndarray) -> float:
    """Largest |ONNX Runtime - PyTorch| logit difference over the inputs ``x``."""
    session = _session(onnx_model)
    outputs = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    return float(np.abs(outputs - expected).max())


@torch.no_grad()
def validation_loss(model: nn.Module, trained: TrainedModel) -> float:
    """Class-weighted cross-entropy on the validation split (what training early-stops on)."""
    logits = model.eval()(torch.from_numpy(trained.data.val.x.copy()))
    labels = torch.from_numpy(trained.data.val.y.copy())
    return class_weighted_loss(trained.data)(logits, labels).item()


def evaluate(label: str, model: nn.Module, trained: TrainedModel, seconds: float) -> dict[str, Any]:
    """Measurement, test metrics and ONNX Runtime figures of one model."""
    x1 = torch.from_numpy(trained.data.test.x[:1])
    metrics = trained.task.evaluate(model, trained.data)
    measurement = measure(model, x1, metrics=metrics, stage=label, repeats=200, warmup=20,
                          threads=THREADS)
    exported = fold_weight_quantizers(export_onnx(model, x1))
    operators = [node.op_type for node in onnx.load_from_string(exported).graph.node]
    return {
        "measurement": measurement.to_dict(),
        "validation_loss": validation_loss(model, trained),
        "stage_seconds": round(seconds, 1),
        "onnx_bytes": len(exported),
        "onnx_dequantize_nodes": operators.count("DequantizeLinear"),
        "ort_latency_ms_p50": ort_latency_ms(exported, x1.numpy()),
        "ort_float_kernels_latency_ms_p50": ort_latency_ms(exported, x1.numpy(), True),
        "ort_integer_kernels": ort_kernels(exported),
        "ort_max_abs_difference": ort_max_difference(exported, model, trained.data.test.x),
    }


def table_row(label: str, result: dict[str, Any], base: dict[str, Any], task) -> dict[str, Any]:
    measurement = result["measurement"]
    secondary = "hss" if task.name == "flares" else "macro_f1"
    return {
        "stage": label,
        "theoretical_kB": round(measurement["theoretical_bytes"] / 1000, 1),
        "ratio": round(base["measurement"]["theoretical_bytes"]
                       / measurement["theoretical_bytes"], 2),
        "onnx_kB": round(result["onnx_bytes"] / 1000, 1),
        "torch_p50_ms": round(measurement["latency_ms_p50"], 3),
        "ort_p50_ms": round(result["ort_latency_ms_p50"], 3),
        "ort_f32_p50_ms": round(result["ort_float_kernels_latency_ms_p50"], 3),
        task.primary_metric: round(measurement["metrics"][task.primary_metric], 4),
        secondary: round(measurement["metrics"][secondary], 4),
        "val_loss": round(result["validation_loss"], 4),
        "ort_int_kernels": ", ".join(result["ort_integer_kernels"]) or "none (float)",
        "ort_vs_torch": f"{result['ort_max_abs_difference']:.1e}",
        "stage_s": result["stage_seconds"],
    }


def main(task_names: list[str]) -> None:
    results: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "threads": THREADS,
        "ort_repeats": ORT_REPEATS,
        "tasks": {},
    }
    started = time.perf_counter()
    for name in task_names:
        trained = cached_base_model(name, seed=0, progress=True)
        task_results: dict[str, Any] = {"base": evaluate("base", trained.model, trained, 0.0)}
        configs = variants(trained)
        for label, config in configs.items():
            start = time.perf_counter()
            model = stages.apply(trained.model, config, trained.data)
            task_results[label] = evaluate(label, model, trained, time.perf_counter() - start)
            task_results[label]["config"] = stages.config_to_dict(config)
            if hasattr(model, "bits_report_"):
                task_results[label]["bits_report"] = bits_report_rows(model)
            print(f"{name} {label}: {time.perf_counter() - start:.0f} s", flush=True)
        results["tasks"][name] = task_results
        rows = [table_row(label, result, task_results["base"], trained.task)
                for label, result in task_results.items()]
        print(f"\n## {name}\n")
        print(markdown_table(rows))
        for label, result in task_results.items():
            if "bits_report" in result:
                print(f"\n### {name} {label}: per-layer weight bits\n")
                print(markdown_table(result["bits_report"]))
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_text(RESULTS, json.dumps(results, indent=2) + "\n")
    print(f"total {results['total_seconds']} s; wrote {RESULTS}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["flares", "transients"])
