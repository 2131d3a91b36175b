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

``--baseline-src NAME=SRC`` adds the preprocessing of other source trees to the interleaved
preprocessing phase, e.g. version 3 itself (the code before the batched GP) and an earlier
version 4, exported without touching the checkout::

    git archive 872b7215 src | tar -x -C /tmp/h2/v3     # the parent of the batched-GP commit
    ... --baseline-src "version 3=/tmp/h2/v3/src" "version 4 (HEAD)=/tmp/h2/v4/src"

Each runs in a worker process with that tree first on ``PYTHONPATH`` (the same alerts, cuts,
one BLAS thread, this run's GP settings where the tree knows them; version 3 knows no search,
so it runs L-BFGS-B); a replay there is timed here, round trip of the pipe (< 0.1 ms)
included. ``--preprocessing-only`` times the preprocessing alone, without an artifact (the
broker's settings: :data:`satcompress.broker.classify.ALERT_HYPERPARAMETER_SEARCH`).

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
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from satcompress import broker, runtime  # noqa: E402
from satcompress.broker.classify import (  # noqa: E402
    ALERT_HYPERPARAMETER_SEARCH,
    predict_probabilities,
    preprocess_alerts,
)
from satcompress.data import fetch  # noqa: E402
from satcompress.fileio import atomic_write_text  # noqa: E402
from satcompress.pipeline.base_model import cached_base_model  # noqa: E402
from satcompress.report import markdown_table  # noqa: E402
from satcompress.tasks.lightcurves import PreprocessingConfig  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "broker.json"
PUBLISHED = ("models/t2/t2_tinho_GR-noZ-28341.tflite",
             "models/t2/t2_tinho_GR-noZ-28341_quantized.tflite")
WORKLOAD_CUTS = broker.SelectionCuts(max_age_days=None)
MIN_REPLAYS = 5


# Run in a worker with another tree on PYTHONPATH: argv = tree, GP settings (JSON); then one
# preprocessing replay per line read, answering its seconds (the first line: what it set up).
WORKER = """
import dataclasses, json, os, sys, time
from satcompress import broker
from satcompress.broker import classify
tree, fields = os.path.realpath(sys.argv[1]), json.loads(sys.argv[2])
if not os.path.realpath(broker.__file__).startswith(tree + os.sep):
    raise SystemExit(f"satcompress came from {broker.__file__}, not from {tree}")
known = {field.name for field in dataclasses.fields(classify.PreprocessingConfig)}
config = classify.PreprocessingConfig(**{name: tuple(value) if isinstance(value, list) else value
                                         for name, value in fields.items() if name in known})
cuts = broker.SelectionCuts(max_age_days=None)
table = broker.read_alerts(broker.bundled_alert_paths()).table
classified = len(classify.preprocess_alerts(table, config, cuts).rows)
print(json.dumps({"classified": classified, "settings": dataclasses.asdict(config)}), flush=True)
for _ in sys.stdin:
    started = time.perf_counter()
    classify.preprocess_alerts(table, config, cuts)
    print(time.perf_counter() - started, flush=True)
"""


class TreeWorker:
    """The alert preprocessing of another source tree in a worker process; a call is a replay."""

    def __init__(self, src: Path, config: PreprocessingConfig) -> None:
        environment = dict(os.environ, PYTHONPATH=str(src), OPENBLAS_NUM_THREADS="1")
        settings = json.dumps(dataclasses.asdict(config))
        self.process = subprocess.Popen([sys.executable, "-c", WORKER, str(src), settings],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=environment)  # fmt: skip
        self.info = json.loads(self._answer(src))
        self.src = src

    def _answer(self, src: Path) -> str:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"The preprocessing worker of {src} stopped (see its error above).")
        return line

    def __call__(self) -> float:
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        return float(self._answer(self.src))

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def named(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` -> (name, path)."""
    name, _, path = text.partition("=")
    if not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


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


def preprocessing_phase(table: pd.DataFrame, paths: list[Path], config: PreprocessingConfig,
                        baselines: dict[str, TreeWorker], seconds: float
                        ) -> tuple[dict[str, dict], list[dict]]:  # fmt: skip
    """Preprocessing alone, interleaved: reading the files, then cuts + light curves + GP of
    this tree (its search and L-BFGS-B), of each baseline tree, and with the default cuts."""
    legacy = dataclasses.replace(config, hyperparameter_search="lbfgs")
    n_stream = len(table)
    n_classified = len(preprocess_alerts(table, config, WORKLOAD_CUTS).rows)
    n_default = len(preprocess_alerts(table, config, broker.SelectionCuts()).rows)
    functions = {
        "read alert files": lambda: broker.read_alerts(paths),
        "cuts + light curves + GP": lambda: preprocess_alerts(table, config, WORKLOAD_CUTS),
        "cuts + light curves + GP, L-BFGS-B search of this tree": lambda: preprocess_alerts(
            table, legacy, WORKLOAD_CUTS),
        "cuts + light curves + GP, default cuts": lambda: preprocess_alerts(
            table, config, broker.SelectionCuts()),
    }
    for name, worker in baselines.items():
        if worker.info["classified"] != n_classified:
            raise SystemExit(f"{name} classifies {worker.info['classified']} alerts, this tree "
                             f"{n_classified}: not the same workload.")
        functions[f"cuts + light curves + GP, {name} (worker)"] = worker
    timed = interleaved(functions, seconds)
    reference_name = "cuts + light curves + GP, L-BFGS-B search of this tree"
    if baselines:  # the ratios are to the first baseline tree
        reference_name = f"cuts + light curves + GP, {next(iter(baselines))} (worker)"
    reference = timed[reference_name]["median_s"]
    rows = [{"step": "read + flatten alert files", "seconds_per_replay":
             timed["read alert files"]["median_s"], "ms_per_classified_alert": None,
             "x_reference": None}]  # fmt: skip
    for name, result in timed.items():
        if name == "read alert files":
            continue
        classified = n_default if name.endswith("default cuts") else n_classified
        rows.append({"step": f"{name} ({classified} classified)",
                     "seconds_per_replay": result["median_s"],
                     "ms_per_classified_alert": 1e3 * result["median_s"] / classified,
                     "x_reference": (None if name.endswith("default cuts")
                                          else reference / result["median_s"])})  # fmt: skip
    for row in rows:
        row["ms_per_stream_alert"] = 1e3 * row["seconds_per_replay"] / n_stream
    return timed, rows


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
    parser.add_argument("--baseline-src", type=named, nargs="+", default=[], metavar="NAME=SRC",
                        help="other src/ trees whose preprocessing is timed in a worker, "
                             "interleaved (the first one is the reference of the ratios)")
    parser.add_argument("--preprocessing-only", action="store_true",
                        help="time the preprocessing alone (no artifact, models or Spark)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON file to write")
    options = parser.parse_args()
    torch.set_num_threads(1)

    paths = broker.bundled_alert_paths()
    alerts = broker.read_alerts(paths)
    table = alerts.table
    if options.preprocessing_only:
        classifier = None
        config = PreprocessingConfig(hyperparameter_search=ALERT_HYPERPARAMETER_SEARCH)
    else:
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
    baselines = {name: TreeWorker(src, config) for name, src in options.baseline_src}
    try:
        preprocessing, preprocessing_rows = preprocessing_phase(
            table, paths, config, baselines, options.end_to_end_seconds)
    finally:
        for worker in baselines.values():
            worker.close()
    results = {
        "machine": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "numpy": np.__version__,
        "load_average_1_5_15_min_at_end": None,
        "threads": 1, "stream_alerts_per_replay": n_stream, "classified_per_replay": n_classified,
        "settings": dataclasses.asdict(config),
        "baselines": {name: {"src": str(src), "settings": baselines[name].info["settings"]}
                      for name, src in options.baseline_src},
        "preprocessing": preprocessing, "preprocessing_table": preprocessing_rows,
        "input_differences_version_4_vs_3": input_differences,
    }  # fmt: skip
    if classifier is not None:
        results.update(model_phases(options, alerts, classifier, x, legacy))
    results["load_average_1_5_15_min_at_end"] = list(os.getloadavg())
    atomic_write_text(options.results, json.dumps(results, indent=2) + "\n")
    print(markdown_table([{k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
                          for row in preprocessing_rows]))
    for key in ("throughput", "end_to_end_side_by_side"):
        if key in results:
            print(markdown_table([{k: round(v, 3) if isinstance(v, float) else v
                                   for k, v in row.items()} for row in results[key]]))
    print(json.dumps(input_differences, indent=2))
    if "spark_local1" in results:
        print(json.dumps(results["spark_local1"], indent=2))


def model_phases(options: argparse.Namespace, alerts: broker.Alerts, classifier: broker.Classifier,
                 x: np.ndarray, legacy: PreprocessingConfig) -> dict:  # fmt: skip
    """The models on the preprocessed inputs (batched, one by one) and end to end with the
    preprocessing (this tree's and the L-BFGS-B search), interleaved; and Spark."""
    table, config, n_classified = alerts.table, classifier.config, len(x)
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
    results = {
        "artifacts": [{"path": str(path), "bytes": path.stat().st_size,
                       "sha256": broker.load_classifier(path).sha256} for path in options.artifact],
        "base_parameters": sum(p.numel() for p in base.parameters()),
        "counts_default_cuts": default_counts, "counts_workload_cuts": workload_counts,
        "model_batched": batched, "model_one_by_one": single, "with_preprocessing": included,
        "throughput": rows, "end_to_end_side_by_side": side_by_side,
    }
    if options.spark:
        results["spark_local1"] = spark_rate(options.artifact[0], table, options.spark_replays)
    return results


if __name__ == "__main__":
    main()
