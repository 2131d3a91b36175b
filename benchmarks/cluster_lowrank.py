"""Weight clustering (+ Huffman coding) and low-rank factorization on both reference tasks.

    SATCOMPRESS_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/cluster_lowrank.py

For each task's base model: stage ``weight_cluster`` at k = 16 and 64 (linear initialisation)
with the entropy-coding report of its indices (Huffman bytes against the Shannon entropy), and
stage ``low_rank`` (truncated SVD) at two fixed ranks, each fine-tuned for a few epochs. Every
model is measured (parameters, non-zero, theoretical bytes, MACs, batch-1 PyTorch latency with
one thread), exported to ONNX and timed under ONNX Runtime (one thread), and scored on the test
split, also before fine-tuning. Writes ``benchmarks/results/cluster_lowrank.json`` and prints
Markdown tables.

T2's embedding is a kernel-1 Conv1d from the input channels (4 in the current transients
data) to d_model, where Tucker-2 reduces to the SVD of a (d_model x channels) matrix: only ranks
below channels x d_model / (channels + d_model) (here 3 of 4) save parameters, so at the ranks
benchmarked ``low_rank`` leaves it dense (it is absent from the factored layers).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch import nn

from satcompress import stages
from satcompress.cluster import CODEBOOK_BUFFER, WeightClusterConfig
from satcompress.entropy.model_report import entropy_report, report_totals
from satcompress.fileio import atomic_write_text
from satcompress.lowrank import LowRankConfig, lowrank_report
from satcompress.measure import measure, theoretical_bytes
from satcompress.onnx_export import export_onnx, run_onnx
from satcompress.pipeline.base_model import cached_base_model
from satcompress.report import markdown_table

RESULTS = Path(__file__).parent / "results" / "cluster_lowrank.json"
FINETUNE_EPOCHS = 2
CLUSTERS = (16, 64)
SVD_RANKS = {"flares": (64, 16), "transients": (24, 8)}


def onnx_latency_ms(onnx_model: bytes, x: np.ndarray, repeats: int = 200, warmup: int = 20
                    ) -> float:
    """Median batch-1 latency of the model under ONNX Runtime, one thread (CPU provider)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(x)}
    for _ in range(warmup):
        session.run(None, feed)
    elapsed = np.empty(repeats)
    gc.disable()
    try:
        for i in range(repeats):
            start = time.perf_counter_ns()
            session.run(None, feed)
            elapsed[i] = time.perf_counter_ns() - start
    finally:
        gc.enable()
    return float(np.median(elapsed) / 1e6)


def coded_model_bytes(model: nn.Module) -> tuple[int, dict]:
    """Theoretical bytes with every clustered layer's fixed-width indices + codebook replaced by
    its best entropy coding (Huffman, or zero runs + Huffman) + codebook; and the report."""
    report = entropy_report(model)
    replaced = 0
    for layer in report:
        module = model.get_submodule(layer.layer)
        bits = module.stored_bits["weight"]
        codebook_bytes = 4 * len(getattr(module, CODEBOOK_BUFFER))
        replaced += -(-module.weight.numel() * bits // 8) + codebook_bytes
    totals = report_totals(report)
    coded = theoretical_bytes(model) - replaced + totals["coded_bytes"]
    return coded, {"totals": totals, "layers": [layer.to_dict() for layer in report]}


def compress(trained, config: stages.StageConfig) -> tuple[nn.Module, float, float]:
    """The stage's model, its primary test metric without fine-tuning, and the stage's seconds."""
    untuned = stages.apply(trained.model, dataclasses.replace(config, finetune_epochs=0),
                           trained.data)
    before = trained.task.evaluate(untuned, trained.data)[trained.task.primary_metric]
    started = time.perf_counter()
    model = stages.apply(trained.model, config, trained.data)
    return model, before, time.perf_counter() - started


def evaluate(trained, model: nn.Module, stage: str, base_bytes: int, extra: dict
             ) -> tuple[dict, dict]:
    """Table row and JSON record of one model: sizes, MACs, both latencies, test metrics."""
    data, task = trained.data, trained.task
    x = torch.from_numpy(data.test.x[:1])
    metrics = task.evaluate(model, data)
    measurement = measure(model, x, metrics=metrics, stage=stage)
    onnx_model = export_onnx(model, x)
    batch = data.test.x[:64]
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(batch)).numpy()
    onnx_error = float(np.abs(run_onnx(onnx_model, batch) - expected).max())
    onnx_ms = onnx_latency_ms(onnx_model, data.test.x[:1])
    primary = task.primary_metric
    row = {
        "stage": stage,
        "params": measurement.parameters,
        "nonzero": measurement.nonzero_parameters,
        "theoretical_kB": round(measurement.theoretical_bytes / 1000, 2),
        "ratio": round(base_bytes / measurement.theoretical_bytes, 2),
        **extra,
        "MACs": measurement.macs,
        "torch_p50_ms": round(measurement.latency_ms_p50, 4),
        "onnx_p50_ms": round(onnx_ms, 4),
        primary: round(metrics[primary], 4),
    }
    record = {"measurement": measurement.to_dict(), "onnx_p50_ms": onnx_ms,
              "onnx_max_abs_error": onnx_error, **extra}
    return row, record


def run_task(name: str) -> tuple[list[dict], dict]:
    trained = cached_base_model(name, seed=0, progress=True)
    primary = trained.task.primary_metric
    base_bytes = theoretical_bytes(trained.model)
    row, record = evaluate(trained, trained.model, "base", base_bytes, {})
    rows, records = [row], {"base": record}

    def add(stage: str, config: stages.StageConfig, model: nn.Module, before: float,
            seconds: float, extra: dict, details: dict) -> None:
        row, record = evaluate(trained, model, stage, base_bytes, extra)
        row[f"{primary}_no_ft"] = round(before, 4)
        record.update({"config": stages.config_to_dict(config), "stage_seconds": seconds,
                       f"{primary}_before_finetune": before, **details})
        rows.append(row)
        records[stage] = record
        print(f"  {name} {stage}: stage {seconds:.0f} s", flush=True)

    for k in CLUSTERS:
        config = WeightClusterConfig(n_clusters=k, finetune_epochs=FINETUNE_EPOCHS)
        model, before, seconds = compress(trained, config)
        coded, report = coded_model_bytes(model)
        totals = report["totals"]
        extra = {"huffman_kB": round(coded / 1000, 2),
                 "huffman_ratio": round(base_bytes / coded, 2),
                 "index_entropy_kB": round(totals["entropy_bytes"] / 1000, 2),
                 "index_huffman_kB": round(totals["huffman_bytes"] / 1000, 2)}
        add(f"cluster k={k}", config, model, before, seconds, extra, {"entropy_report": report})
    for rank in SVD_RANKS[name]:
        config = LowRankConfig(rank_by="rank", rank=rank, finetune_epochs=FINETUNE_EPOCHS)
        model, before, seconds = compress(trained, config)
        add(f"svd rank={rank}", config, model, before, seconds, {},
            {"factored_layers": lowrank_report(model)["layers"]})
    return rows, records


def main(task_names: list[str]) -> None:
    results = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
               "finetune_epochs": FINETUNE_EPOCHS, "tasks": {}}
    for name in task_names:
        rows, records = run_task(name)
        results["tasks"][name] = records
        print(f"\n## {name}\n")
        print(markdown_table(rows))
    atomic_write_text(RESULTS, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or ["flares", "transients"])
