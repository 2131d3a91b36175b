"""Issue 14's two convolution failures, before and after their fixes, side by side in one run.

    export SATCOMPRESS_DATA_DIR=/work/shared/data
    .venv/bin/python benchmarks/conv_fixes.py            # blob_cnn and resnet18_1d, seed 0
    .venv/bin/python benchmarks/conv_fixes.py --no-resnet   # blob_cnn only (seconds)

Each zoo model (``benchmarks/zoo.py``) is trained exactly as ``benchmarks/your_own_model.py``
trains it (seed 0), then:

* ``blob_cnn`` W8A8 (the ``int8`` recipe's stage): "before" keeps its two Conv2d layers in
  float (``exclude``), which is what ``post_training_quantize`` did when it quantized only
  Linear and Conv1d; "after" quantizes them.
* ``blob_cnn`` and ``resnet18_1d`` clustered to 16 values per layer (no fine-tuning):
  "before" is :func:`satcompress.cluster.cluster_model` + :func:`bake_clusters` on the model
  as it is (the stage before BatchNorm folding; the export then folds each BatchNorm into
  its clustered convolution); "after" is the ``weight_cluster`` stage, which folds first.

Reported: float32 bytes (4 x parameters), artifact bytes with Reed-Solomon parity (as the
recipes write them), the largest number of distinct values in one convolution weight of the
artifact, and the test predictions where the NumPy runtime and PyTorch differ. Writes
``benchmarks/results/conv_fixes.json``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import zoo  # noqa: E402
from benchmarks.your_own_model import TRAINING, blob_images, train, transient_splits  # noqa: E402
from satcompress import runtime, stages  # noqa: E402
from satcompress.artifact import decode_artifact, encode_artifact  # noqa: E402
from satcompress.cluster import bake_clusters, cluster_model  # noqa: E402
from satcompress.fileio import atomic_write_text  # noqa: E402
from satcompress.pipeline.flight import flight_graph  # noqa: E402
from satcompress.tasks import Split, TaskData  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "conv_fixes.json"
REGISTERED = stages.load_builtin_stages()


def measure(model: nn.Module, data: TaskData) -> dict:
    """Artifact bytes (FEC on), most distinct values in one Conv weight, differing predictions."""
    graph, tensors = flight_graph(model, torch.from_numpy(data.test.x[:1]))
    content = encode_artifact(graph, tensors, {}, fec=True)
    artifact = decode_artifact(content)
    conv_weights = [artifact.tensors[node["in"][1]] for node in artifact.graph["nodes"]
                    if node["op"] == "Conv"]
    flight = runtime.Runtime(artifact)
    with torch.no_grad():
        reference = model.eval()(torch.from_numpy(data.test.x)).numpy()
    differing = int((flight.run(data.test.x).argmax(1) != reference.argmax(1)).sum())
    return {"artifact_bytes": len(content),
            "max_distinct_per_conv": max((len(np.unique(w)) for w in conv_weights), default=0),
            "float_conv_nodes": len(conv_weights),
            "differing": differing, "examples": len(data.test)}


def old_clustering(model: nn.Module) -> nn.Module:
    """Clustering to 16 values without folding BatchNorm first (no fine-tuning)."""
    model = copy.deepcopy(model)
    cluster_model(model, 16)
    return bake_clusters(model)


def new_clustering(model: nn.Module, data: TaskData) -> nn.Module:
    return stages.apply(model, REGISTERED["weight_cluster"](n_clusters=16, finetune_epochs=0),
                        data)


def task_data(parts) -> TaskData:
    splits = [Split(x=x, y=y, groups=np.arange(len(y)) + 100_000 * i)
              for i, (x, y) in enumerate(parts)]
    n_classes = int(parts[0][1].max()) + 1
    return TaskData(*splits, class_names=tuple(f"class {c}" for c in range(n_classes)))


def blob_cnn_rows() -> list[dict]:
    x, y = blob_images(3000, seed=0)
    cut = np.cumsum([int(0.6 * len(y)), int(0.2 * len(y))])
    parts = [(x[:cut[0]], y[:cut[0]]), (x[cut[0]:cut[1]], y[cut[0]:cut[1]]),
             (x[cut[1]:], y[cut[1]:])]
    model, _ = train(zoo.blob_cnn, parts[0], parts[1], 3, seed=0, **TRAINING["blob_cnn"])
    data = task_data(parts)
    w8a8 = REGISTERED["post_training_quantize"](weight_bits=8, quantize_activations=True)
    convs = tuple(name for name, m in model.named_modules() if isinstance(m, nn.Conv2d))
    before = stages.apply(model, REGISTERED["post_training_quantize"](
        weight_bits=8, quantize_activations=True, exclude=convs), data)
    float_bytes = 4 * sum(p.numel() for p in model.parameters())
    rows = [("int8 (W8A8)", before, stages.apply(model, w8a8, data)),
            ("16 clusters", old_clustering(model), new_clustering(model, data))]
    return [{"model": "blob_cnn", "step": step, "float_bytes": float_bytes,
             "before": measure(old, data), "after": measure(new, data)}
            for step, old, new in rows]


def resnet_rows() -> list[dict]:
    (train_split, val_split, test_split), _ = transient_splits(quick=False)
    parts = [(s.x, s.y) for s in (train_split, val_split, test_split)]
    model, _ = train(zoo.resnet18_1d, parts[0], parts[1], 5, seed=0, **TRAINING["resnet18_1d"])
    data = task_data(parts)
    float_bytes = 4 * sum(p.numel() for p in model.parameters())
    return [{"model": "resnet18_1d", "step": "16 clusters", "float_bytes": float_bytes,
             "before": measure(old_clustering(model), data),
             "after": measure(new_clustering(model, data), data)}]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-resnet", action="store_true", help="blob_cnn only")
    arguments = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = blob_cnn_rows() + ([] if arguments.no_resnet else resnet_rows())
    for row in rows:
        print(f"{row['model']:12} {row['step']:12} float {row['float_bytes']:>10,} B | "
              + " | ".join(f"{when}: {row[when]['artifact_bytes']:>9,} B, <= "
                           f"{row[when]['max_distinct_per_conv']} values/conv, "
                           f"{row[when]['differing']} / {row[when]['examples']} differ"
                           for when in ("before", "after")))
    atomic_write_text(RESULTS, json.dumps({
        "command": "python benchmarks/conv_fixes.py"
                   + (" --no-resnet" if arguments.no_resnet else ""),
        "date": datetime.date.today().isoformat(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
