"""Alert-broker throughput: alerts per second per core, float base vs artifact vs published t2.

    SATCOMPRESS_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/broker.py \
        --artifact /tmp/broker/broker-t2/model.sca /tmp/broker/broker-t2-2heads/model.sca \
                   /tmp/broker/t2/model.sca

The artifacts are compressed transient classifiers of
``satcompress compress --task transients --recipe broker-t2 --out /tmp/broker/broker-t2`` and
``... --recipe assembled-t2 --out /tmp/broker/t2``. Each runs on the NumPy runtime as loaded
(with its load-time fusions) and with ``fuse=False`` (the stored operators one by one).

Workload: the 175 bundled raw ZTF alerts (``transients/ztf_alerts/``), replayed. With the
default cuts only 3 of them are classified (152 are older than 90 days), too few to time a
model, so the model comparison classifies every alert with >= 2 detections in g and r (age cut
off): 78 alerts per replay. In one process and one thread (``OPENBLAS_NUM_THREADS=1``, one
torch thread, LiteRT ``num_threads=1``), so every rate is per core:

* preprocessing: reading the alert files (Parquet -> flat rows), and the cuts + light curves +
  the task's GP interpolation (:func:`satcompress.broker.classify.preprocess_alerts`), timed
  alone;
* models on the same preprocessed inputs (preprocessing excluded): (a) the float PyTorch base
  t2 (``cached_base_model("transients")``), (b) the satcompress artifact on the NumPy runtime,
  (c) the published compressed t2 (``t2_tinho_GR-noZ-28341*.tflite``, LiteRT). The published
  models take (batch, 100, 2) PLAsTiCC inputs: they get the GP means in g and r of the same
  alerts (the first two of our four channels, the same 100 steps); they were trained on other
  scaling and classes, so only their speed means anything here. Batched (all 78 alerts of a
  replay in one call, as a Spark pandas UDF gets them) and one alert per call (as Fink's t2
  module runs);
* preprocessing included: cuts + GP + model on every replay, timed end to end, and for the
  first artifact also with the version-3 preprocessing (scikit-learn GP, L-BFGS-B per alert:
  ``hyperparameter_search="lbfgs"``) side by side in the same interleaved run, with the
  differences between the two preprocessings' model inputs.

Each measurement is repeated, interleaved across the engines (so load from other jobs on the
shared machine hits all of them alike), for at least ``--seconds`` per engine; the median
replay gives the rate, min and max are kept. Optionally (``--spark``) the whole path through
Spark ``local[1]`` (one core) on the replayed alerts. Writes ``benchmarks/results/broker.json``
and prints Markdown tables.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads its BLAS

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from satcompress import broker, runtime  # noqa: E402
from satcompress.broker.classify import predict_probabilities, preprocess_alerts  # noqa: E402
from satcompress.data import fetch  # noqa: E402
from satcompress.fileio import atomic_write_text  # noqa: E402
from satcompress.pipeline.base_model import cached_base_model  # noqa: E402
from satcompress.report import markdown_table  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "broker.json"
PUBLISHED = ("models/t2/t2_tinho_GR-noZ-28341.tflite",
             "models/t2/t2_tinho_GR-noZ-28341_quantized.tflite")
WORKLOAD_CUTS = broker.SelectionCuts(max_age_days=None)
MIN_REPLAYS = 5


def interleaved(functions: dict[str, Callable[[], object]], seconds: float) -> dict[str, dict]:
    """Time each function repeatedly, round-robin, until each has run >= ``seconds`` in all and
    at least :data:`MIN_REPLAYS` times; median, min and max seconds per call."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for function in functions.values():
        function()  # warm-up
    while any(sum(t) < seconds or len(t) < MIN_REPLAYS for t in times.values()):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - started)
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
                   "replays": len(t)} for name, t in times.items()}


def torch_model(model: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    model = model.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()

    return run


def litert_model(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A LiteRT interpreter (one thread) taking (batch, 100, 2); resized when the batch changes."""
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    source = interpreter.get_input_details()[0]["index"]
    target = interpreter.get_output_details()[0]["index"]
    shape = [None]

    def run(x: np.ndarray) -> np.ndarray:
        if shape[0] != x.shape:
            interpreter.resize_tensor_input(source, list(x.shape))
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(source, x)
        interpreter.invoke()
        return interpreter.get_tensor(target)

    return run


def one_by_one(function: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> Callable[[], object]:
    return lambda: [function(x[i : i + 1]) for i in range(len(x))]


def spark_rate(artifact: Path, table: pd.DataFrame, replays: int) -> dict:
    """End to end through Spark local[1] (the UDF, preprocessing included) on replayed alerts."""
    spark = broker.spark_session("local[1]")
    stream = pd.concat([table] * replays, ignore_index=True)
    broker.classify_alerts_spark(spark, table, artifact, WORKLOAD_CUTS, partitions=1)  # warm-up
    started = time.perf_counter()
    results = broker.classify_alerts_spark(spark, stream, artifact, WORKLOAD_CUTS, partitions=1)
    seconds = time.perf_counter() - started
    spark.stop()
    classified = int(results["reason"].isna().sum())
    return {"alerts": len(stream), "classified": classified, "seconds": seconds,
            "classified_alerts_per_s": classified / seconds, "stream_alerts_per_s": len(stream) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path, nargs="+",
                        default=[Path("/tmp/broker/broker-t2/model.sca")],
                        help="artifacts to compare; the first one sets the preprocessing and "
                             "runs through Spark")
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="least time per engine for the model-only rates")
    parser.add_argument("--end-to-end-seconds", type=float, default=8.0,
                        help="least time per engine with preprocessing included")
    parser.add_argument("--spark", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--spark-replays", type=int, default=4)
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON file to write")
    options = parser.parse_args()
    torch.set_num_threads(1)

    paths = broker.bundled_alert_paths()
    alerts = broker.read_alerts(paths)
    table = alerts.table
    classifier = broker.load_classifier(options.artifact[0])
    config = classifier.config
    # Today's preprocessing until issue 18 (version 3): scikit-learn's GP, L-BFGS-B per alert.
    legacy = dataclasses.replace(config, hyperparameter_search="lbfgs")
    prepared = preprocess_alerts(table, config, WORKLOAD_CUTS)
    x = prepared.x
    legacy_x = preprocess_alerts(table, legacy, WORKLOAD_CUTS).x
    per_alert = np.abs(x - legacy_x).reshape(len(x), -1).max(axis=1)
    input_differences = {
        "alerts": len(x),
        "max_abs_difference_quantiles_per_alert": {
            q: float(np.quantile(per_alert, float(q))) for q in ("0.5", "0.9", "0.95", "1.0")},
        "alerts_within_0.01": int(np.sum(per_alert <= 0.01)),
        "alerts_within_0.05": int(np.sum(per_alert <= 0.05)),
    }
    n_stream, n_classified = len(table), len(x)
    default_counts = broker.reason_counts(broker.classify_alerts(alerts, classifier))
    workload_counts = broker.reason_counts(broker.classify_alerts(alerts, classifier, WORKLOAD_CUTS))

    base = cached_base_model("transients").model
    engines = {
        "a: PyTorch float32 base t2": torch_model(base),
    }
    for path in options.artifact:
        label = f"{path.parent.name}, {path.stat().st_size:,} B"
        for fuse in (True, False):
            flight = runtime.load(path, fuse=fuse)
            name = f"b: satcompress artifact {label} (NumPy runtime{'' if fuse else ', unfused'})"
            engines[name] = lambda v, flight=flight: predict_probabilities(flight, v)
    for name in PUBLISHED:
        engines[f"c: LiteRT published {Path(name).name}"] = litert_model(fetch(name))
    gp_means = np.ascontiguousarray(x[:, :, :2])
    inputs = {name: (gp_means if name.startswith("c:") else x) for name in engines}

    # Preprocessing alone: reading the files, then cuts + light curves + GP.
    preprocessing = interleaved({
        "read alert files": lambda: broker.read_alerts(paths),
        "cuts + light curves + GP": lambda: preprocess_alerts(table, config, WORKLOAD_CUTS),
        "cuts + light curves + GP, version 3 (L-BFGS-B)": lambda: preprocess_alerts(
            table, legacy, WORKLOAD_CUTS),
        "cuts + light curves + GP, default cuts": lambda: preprocess_alerts(
            table, config, broker.SelectionCuts()),
    }, options.end_to_end_seconds)
    batched = interleaved({name: (lambda f=f, v=inputs[name]: f(v)) for name, f in engines.items()},
                          options.seconds)
    single = interleaved({name: one_by_one(f, inputs[name]) for name, f in engines.items()},
                         options.seconds)

    def end_to_end(name: str, function: Callable[[np.ndarray], np.ndarray],
                   settings=config) -> Callable[[], object]:
        def run() -> object:
            ready = preprocess_alerts(table, settings, WORKLOAD_CUTS).x
            return function(np.ascontiguousarray(ready[:, :, :2]) if name.startswith("c:") else ready)
        return run

    end_to_end_runs = {name: end_to_end(name, f) for name, f in engines.items()}
    first = next(name for name in engines if name.startswith("b:"))
    legacy_name = "version-3 preprocessing (L-BFGS-B) + " + first
    end_to_end_runs[legacy_name] = end_to_end(first, engines[first], legacy)
    included = interleaved(end_to_end_runs, options.end_to_end_seconds)
    side_by_side = [
        {"preprocessing": label, "engine": first,
         "ms_per_classified_alert": 1e3 * included[key]["median_s"] / n_classified,
         "classified_alerts_per_s": n_classified / included[key]["median_s"],
         "x_version_3": included[legacy_name]["median_s"] / included[key]["median_s"]}
        for label, key in (("version 3: scikit-learn GP, L-BFGS-B per alert", legacy_name),
                           ("version 4: batched grid search (this run)", first))
    ]

    rows = []
    base_name = next(iter(engines))
    for name in engines:
        rows.append({
            "engine": name,
            "batched_alerts_per_s": n_classified / batched[name]["median_s"],
            "one_by_one_alerts_per_s": n_classified / single[name]["median_s"],
            "with_preprocessing_alerts_per_s": n_classified / included[name]["median_s"],
        })
    for row in rows:
        reference = next(r for r in rows if r["engine"] == base_name)
        for key in ("batched_alerts_per_s", "one_by_one_alerts_per_s", "with_preprocessing_alerts_per_s"):
            row[key.replace("alerts_per_s", "x_base")] = row[key] / reference[key]
    gp = preprocessing["cuts + light curves + GP"]["median_s"]
    reading = preprocessing["read alert files"]["median_s"]
    default_gp = preprocessing["cuts + light curves + GP, default cuts"]["median_s"]
    legacy_gp = preprocessing["cuts + light curves + GP, version 3 (L-BFGS-B)"]["median_s"]
    preprocessing_rows = [
        {"step": "read + flatten alert files (175 alerts)", "seconds_per_replay": reading,
         "ms_per_stream_alert": 1e3 * reading / n_stream, "ms_per_classified_alert": None},
        {"step": "cuts + light curves + GP (age cut off: 78 classified)", "seconds_per_replay": gp,
         "ms_per_stream_alert": 1e3 * gp / n_stream, "ms_per_classified_alert": 1e3 * gp / n_classified},
        {"step": "cuts + light curves + GP, version 3 L-BFGS-B (age cut off: 78 classified)",
         "seconds_per_replay": legacy_gp, "ms_per_stream_alert": 1e3 * legacy_gp / n_stream,
         "ms_per_classified_alert": 1e3 * legacy_gp / n_classified},
        {"step": "cuts + light curves + GP (default cuts: 3 classified)", "seconds_per_replay": default_gp,
         "ms_per_stream_alert": 1e3 * default_gp / n_stream,
         "ms_per_classified_alert": 1e3 * default_gp / default_counts.get("classified", 1)},
    ]
    results = {
        "machine": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "numpy": np.__version__,
        "artifacts": [{"path": str(path), "bytes": path.stat().st_size,
                       "sha256": broker.load_classifier(path).sha256} for path in options.artifact],
        "base_parameters": sum(p.numel() for p in base.parameters()),
        "threads": 1, "stream_alerts_per_replay": n_stream, "classified_per_replay": n_classified,
        "counts_default_cuts": default_counts, "counts_workload_cuts": workload_counts,
        "preprocessing": preprocessing, "preprocessing_table": preprocessing_rows,
        "model_batched": batched, "model_one_by_one": single, "with_preprocessing": included,
        "throughput": rows, "end_to_end_side_by_side": side_by_side,
        "input_differences_version_4_vs_3": input_differences,
    }
    if options.spark:
        results["spark_local1"] = spark_rate(options.artifact[0], table, options.spark_replays)
    atomic_write_text(options.results, json.dumps(results, indent=2) + "\n")
    rounded = [{k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()} for row in rows]
    print(markdown_table(rounded))
    print(markdown_table([{k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
                          for row in preprocessing_rows]))
    print(markdown_table([{k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
                          for row in side_by_side]))
    print(json.dumps(input_differences, indent=2))
    if options.spark:
        print(json.dumps(results["spark_local1"], indent=2))


if __name__ == "__main__":
    main()
