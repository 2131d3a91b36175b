"""LSST alerts in, classified out (issue 18): held-out ELAsTiCC alerts through the broker.

    SATCOMPRESS_DATA_DIR=/work/shared/data SATCOMPRESS_CACHE_DIR=/tmp/lsst-cache \
        .venv/bin/python benchmarks/lsst_alerts.py --artifact /tmp/lsst-cache/bt2/model.sca

The artifact is a transient classifier of
``satcompress compress --task transients --recipe broker-t2 --out /tmp/lsst-cache/bt2``.
Workload: the simulated LSST alerts of the DESC ELAsTiCC challenge in the reference data
(``transients/elasticc_sim/``, 10,567 alerts of 6,676 SN Ia and SN II objects, Fink's Parquet
form), read by :func:`satcompress.broker.read_alerts` (survey recognised from the fields) and
limited to the objects the artifact's model did not train on: the artifact's metadata says
whether its training split held ELAsTiCC objects (``include_simulated``); if so, those of
``transients.load(seed, include_simulated=True).train`` are left out.

In one process and one thread (``OPENBLAS_NUM_THREADS=1``), so every rate is per core: the
in-process broker path (:func:`satcompress.broker.classify_alerts`: cuts, six-band light
curves, the task's GP evaluated at g and r, the NumPy runtime) on the whole table, repeated;
the median wall time gives alerts/s, and the process CPU time alerts per CPU-second (the rate
per core on a machine shared with other jobs). Reading the Parquet files is timed apart.

Metrics (:func:`satcompress.tasks.transients.score`, the task's five classes; truth from the
``classId`` folder mapped as the task maps it: 111 -> SN Ia, 113 -> SN II): per classified alert
and per object (its classified alert with the longest history, as the task reads ELAsTiCC
objects). The same alerts are also classified from their g and r detections only (the
two-band GP of the ZTF path; same cuts), to show what the other four bands change. Writes
``benchmarks/results/lsst_alerts.json`` and prints Markdown tables.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from satcompress import broker  # noqa: E402
from satcompress.data import fetch_all  # noqa: E402
from satcompress.fileio import atomic_write_text  # noqa: E402
from satcompress.report import markdown_table  # noqa: E402
from satcompress.tasks import lightcurves, transients  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "lsst_alerts.json"
METRICS = ("weighted_log_loss", "macro_f1", "accuracy", "recall_sn_ia", "recall_sn_ii",
           "ia_vs_rest_auc")  # fmt: skip


def read_elasticc() -> tuple[pd.DataFrame, float]:
    """Every ELAsTiCC alert as a row of LSST_ALERT_COLUMNS plus its class index; read seconds."""
    files = sorted(fetch_all(transients.ELASTICC_PREFIX))
    started = time.perf_counter()
    parts = []
    for folder in sorted({path.parent for path in files}):
        class_id = int(folder.name.removeprefix("classId="))
        label = transients.label_to_class(transients.ELASTICC_CLASS_LABELS[class_id])
        alerts = broker.read_alerts([p for p in files if p.parent == folder], survey="lsst")
        if alerts.problems:
            raise SystemExit(f"{folder}: {len(alerts.problems)} unreadable, first "
                             f"{alerts.problems[0]}")
        parts.append(alerts.table.assign(label=label))
    return pd.concat(parts, ignore_index=True), time.perf_counter() - started


def training_objects(metadata: dict) -> set[str]:
    """The ELAsTiCC object ids the artifact's model trained on (none unless it included them)."""
    preprocessing = metadata.get("preprocessing", {})
    if not preprocessing.get("include_simulated"):
        return set()
    data = transients.load(seed=int(preprocessing.get("split_seed", 0)), include_simulated=True)
    return {str(group) for group in data.train.groups}


def gr_only(table: pd.DataFrame) -> pd.DataFrame:
    """The alerts with their g and r detections only; the first-detection time is kept from
    all bands, so the age cut is unchanged."""
    keep = [np.isin(bands, lightcurves.BANDS) for bands in table["cband"]]
    first = [float(np.min(times)) for times in table["cmidpointMjdTai"]]
    columns = {name: [values[mask] for values, mask in zip(table[name], keep)]
               for name in ("cmidpointMjdTai", "cband", "cpsfFlux", "cpsfFluxErr")}  # fmt: skip
    return table.assign(firstDiaSourceMjdTai=first, **columns)


def scores(results: pd.DataFrame, labels: np.ndarray, rows: np.ndarray) -> dict[str, float]:
    columns = [broker.probability_column(name) for name in transients.CLASS_NAMES]
    probabilities = results[columns].to_numpy(np.float64)[rows]
    measured = transients.score(None, None, probabilities, labels[rows])
    return {"n": int(len(rows)), **{name: float(measured[name]) for name in METRICS}}


def per_object_rows(table: pd.DataFrame, classified: np.ndarray) -> np.ndarray:
    """Per object, the classified alert with the longest history (first of equals)."""
    frame = pd.DataFrame({"object": table["objectId"].to_numpy()[classified],
                          "n": table["cband"].map(len).to_numpy()[classified],
                          "row": classified})  # fmt: skip
    frame = frame.sort_values(["object", "n", "row"], ascending=[True, False, True],
                              kind="stable")  # fmt: skip
    return np.sort(frame.drop_duplicates("object")["row"].to_numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    classifier = broker.load_classifier(args.artifact)
    trained_on = training_objects(classifier.runtime.metadata)
    table, read_seconds = read_elasticc()
    n_read = len(table)
    table = table[~table["objectId"].isin(trained_on)].reset_index(drop=True)
    labels = table.pop("label").to_numpy(np.int64)
    cuts = broker.SelectionCuts()

    def classify(alerts: pd.DataFrame) -> pd.DataFrame:
        return broker.classify_alerts(alerts, classifier, cuts)

    walls, cpus = [], []
    results = classify(table)  # warm-up
    for _ in range(args.repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        again = classify(table)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    columns = list(broker.result_columns(classifier.class_names))
    assert again[columns].equals(results[columns]), "repeated runs differ"
    classified = np.flatnonzero(results["reason"].isna().to_numpy())
    objects = per_object_rows(table, classified)
    two_band = classify(gr_only(table))
    both = np.intersect1d(classified, np.flatnonzero(two_band["reason"].isna().to_numpy()))

    wall, cpu = statistics.median(walls), statistics.median(cpus)
    summary = {
        "artifact": str(args.artifact),
        "artifact_sha256": classifier.sha256,
        "machine": platform.platform(),
        "load_average": os.getloadavg(),
        "alerts_read": n_read,
        "read_seconds": read_seconds,
        "elasticc_objects_trained_on": len(trained_on),
        "held_out_alerts": len(table),
        "held_out_objects": int(table["objectId"].nunique()),
        "counts": broker.reason_counts(results),
        "wall_seconds": walls,
        "cpu_seconds": cpus,
        "alerts_per_s": len(table) / wall,
        "alerts_per_cpu_s": len(table) / cpu,
        "classified_per_s": len(classified) / wall,
        "classified_per_cpu_s": len(classified) / cpu,
        "predicted": dict(Counter(results["predicted_class"].dropna())),
        "six_bands_per_alert": scores(results, labels, classified),
        "six_bands_per_object": scores(results, labels, objects),
        "six_bands_on_common_alerts": scores(results, labels, both),
        "g_and_r_only_on_common_alerts": scores(two_band, labels, both),
        "g_and_r_only_counts": broker.reason_counts(two_band),
    }
    atomic_write_text(args.results, json.dumps(summary, indent=2) + "\n")
    print(f"{n_read} alerts read in {read_seconds:.1f} s; {len(table)} held out "
          f"({summary['held_out_objects']} objects); outcomes {summary['counts']}")
    print(markdown_table([{
        "alerts": len(table), "classified": len(classified),
        "wall s (median)": f"{wall:.2f}", "alerts/s": f"{summary['alerts_per_s']:.0f}",
        "alerts/CPU-s": f"{summary['alerts_per_cpu_s']:.0f}",
        "classified/s": f"{summary['classified_per_s']:.0f}",
        "classified/CPU-s": f"{summary['classified_per_cpu_s']:.0f}"}]))  # fmt: skip
    print(markdown_table([{"set": name, **{k: (f"{v:.4f}" if isinstance(v, float) else v)
                                          for k, v in summary[name].items()}}
                          for name in ("six_bands_per_alert", "six_bands_per_object",
                                       "six_bands_on_common_alerts",
                                       "g_and_r_only_on_common_alerts")]))  # fmt: skip
    print(f"predicted: {summary['predicted']}; wrote {args.results}")


if __name__ == "__main__":
    main()
