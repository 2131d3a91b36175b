"""LSST alerts in, classified out (issue 18): held-out ELAsTiCC alerts through the broker.

    SATCOMPRESS_DATA_DIR=/work/shared/data SATCOMPRESS_CACHE_DIR=/tmp/h3/cache \
        .venv/bin/python benchmarks/lsst_alerts.py --artifact /tmp/h3/ztf-bt2/model.sca \
        --lsst-artifact /tmp/h3/lsst-bt2/model.sca --spark 'local[1]' 'local[2]'

The artifacts are transient classifiers of ``satcompress compress --task transients --recipe
broker-t2`` (trained on real ZTF objects) and ``satcompress compress --task transients-lsst
--recipe broker-t2`` (trained on the ELAsTiCC objects of its training split, six passbands).
Workload: the simulated LSST alerts of the DESC ELAsTiCC challenge in the reference data
(``transients/elasticc_sim/``, 10,567 alerts of 6,676 SN Ia and SN II objects, Fink's Parquet
form), read by :func:`satcompress.broker.read_alerts` (survey recognised from the fields) and
limited to held-out objects: with ``--lsst-artifact``, the test objects of its object split
(recomputed from its metadata: task and split seed), never trained on by either artifact;
without, every object the artifact did not train on (its metadata says whether its training
split held ELAsTiCC objects, ``include_simulated``).

In one process and one thread (``OPENBLAS_NUM_THREADS=1``), so every rate is per core: the
in-process broker path (:func:`satcompress.broker.classify_alerts`: cuts, six-band light
curves, the task's GP evaluated at g and r, the NumPy runtime) on the whole table, repeated;
the median wall time gives alerts/s, and the process CPU time alerts per CPU-second (the rate
per core on a machine shared with other jobs). Reading the Parquet files is timed apart. With
``--spark``, the same alerts through Spark (:func:`satcompress.broker.classify_alerts_spark`)
on each master, warm, interleaved with the in-process path, the results checked equal bit for
bit.

Metrics (:func:`satcompress.tasks.transients.score` over each artifact's classes; truth from
the ``classId`` folder mapped as the task maps it: 111 -> SN Ia, 113 -> SN II): per classified
alert and per object (its classified alert with the longest history, as the task reads
ELAsTiCC objects). The same alerts are also classified from their g and r detections only
(the two-band GP of the ZTF path; same cuts), to show what the other four bands change.
Writes ``benchmarks/results/lsst_held_out.json`` (``lsst_alerts.json`` without
``--lsst-artifact``) and prints Markdown tables.
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
from satcompress.broker.lsst import survey_cut_reasons  # noqa: E402
from satcompress.data import fetch_all  # noqa: E402
from satcompress.fileio import atomic_write_text  # noqa: E402
from satcompress.report import markdown_table  # noqa: E402
from satcompress.tasks import lightcurves, transients  # noqa: E402
from satcompress.tasks.registry import get_task  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "lsst_alerts.json"
HELD_OUT_RESULTS = Path(__file__).parent / "results" / "lsst_held_out.json"
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


def split_objects(metadata: dict) -> tuple[set[str], set[str]]:
    """The ELAsTiCC object ids the artifact's model trained on (train and validation splits)
    and those of its test split: for a ``transients-lsst`` artifact (metadata survey
    ``lsst``) its object split; for a ZTF one none trained on unless it included the simulated
    objects (then its training split), and no test split."""
    preprocessing = metadata.get("preprocessing", {})
    seed = int(preprocessing.get("split_seed", 0))
    if preprocessing.get("survey") == "lsst":
        data = get_task(metadata["task"]).load(seed=seed)
        return ({str(g) for split in (data.train, data.val) for g in split.groups},
                {str(g) for g in data.test.groups})
    if not preprocessing.get("include_simulated"):
        return set(), set()
    data = transients.load(seed=seed, include_simulated=True)
    return {str(group) for group in data.train.groups}, set()


def gr_only(table: pd.DataFrame) -> pd.DataFrame:
    """The alerts with their g and r detections only; the first-detection time is kept from
    all bands, so the age cut is unchanged."""
    keep = [np.isin(bands, lightcurves.BANDS) for bands in table["cband"]]
    first = [float(np.min(times)) for times in table["cmidpointMjdTai"]]
    columns = {name: [values[mask] for values, mask in zip(table[name], keep)]
               for name in ("cmidpointMjdTai", "cband", "cpsfFlux", "cpsfFluxErr")}  # fmt: skip
    return table.assign(firstDiaSourceMjdTai=first, **columns)


def scores(results: pd.DataFrame, labels: np.ndarray, rows: np.ndarray,
           class_names: tuple[str, ...]) -> dict[str, float]:
    columns = [broker.probability_column(name) for name in class_names]
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


def measure(classifier: broker.Classifier, table: pd.DataFrame, labels: np.ndarray,
            cuts: broker.SelectionCuts, repeats: int) -> tuple[dict, pd.DataFrame]:
    """In-process rates (median of ``repeats`` after a warm-up) and metrics of one artifact on
    the alerts of ``table``; its results."""

    def classify(alerts: pd.DataFrame) -> pd.DataFrame:
        return broker.classify_alerts(alerts, classifier, cuts)

    walls, cpus = [], []
    results = classify(table)  # warm-up
    for _ in range(repeats):
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
    names = classifier.class_names
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    candidates = int(pd.isna(survey_cut_reasons(table, cuts)).sum())
    per_alert_s = broker.EngineCosts().per_alert_s
    return {
        "artifact_sha256": classifier.sha256,
        "task": classifier.runtime.metadata.get("task"),
        "class_names": list(names),
        "counts": broker.reason_counts(results),
        "wall_seconds": walls,
        "cpu_seconds": cpus,
        "alerts_per_s": len(table) / wall,
        "alerts_per_cpu_s": len(table) / cpu,
        "classified_per_s": len(classified) / wall,
        "classified_per_cpu_s": len(classified) / cpu,
        "candidates": candidates,
        "cpu_per_candidate_s": (cpu - len(table) * per_alert_s) / candidates,
        "predicted": dict(Counter(results["predicted_class"].dropna())),
        "six_bands_per_alert": scores(results, labels, classified, names),
        # the two classes present, their probabilities renormalised (the task's metric does)
        "six_bands_per_alert_sn_ia_ii_only": scores(results, labels, classified,
                                                    transients.LSST_CLASS_NAMES),
        "six_bands_per_object": scores(results, labels, objects, names),
        "six_bands_on_common_alerts": scores(results, labels, both, names),
        "g_and_r_only_on_common_alerts": scores(two_band, labels, both, names),
        "g_and_r_only_counts": broker.reason_counts(two_band),
    }, results


def spark_rates(artifact: Path, table: pd.DataFrame, cuts: broker.SelectionCuts,
                expected: pd.DataFrame, masters: list[str], repeats: int) -> dict:
    """Alerts/s through Spark on each master (warm: median of ``repeats`` after a first job),
    interleaved with the in-process path in the same process; the Spark results must equal
    the in-process ones bit for bit."""
    rates = {}
    for master in masters:
        started = time.perf_counter()
        session = broker.spark_session(master)
        first = broker.classify_alerts_spark(session, table, artifact, cuts)
        start_s = time.perf_counter() - started
        pd.testing.assert_frame_equal(first, expected, check_exact=True)
        spark_walls, local_walls = [], []
        for _ in range(repeats):
            wall = time.perf_counter()
            broker.classify_alerts_spark(session, table, artifact, cuts)
            spark_walls.append(time.perf_counter() - wall)
            wall = time.perf_counter()
            broker.classify_alerts(table, artifact, cuts)
            local_walls.append(time.perf_counter() - wall)
        session.stop()
        rates[master] = {
            "session_and_first_job_seconds": start_s,
            "spark_wall_seconds": spark_walls,
            "in_process_wall_seconds": local_walls,
            "spark_alerts_per_s": len(table) / statistics.median(spark_walls),
            "in_process_alerts_per_s": len(table) / statistics.median(local_walls),
            "equal_to_in_process": True,
        }
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path, required=True,
                        help="a transients artifact (e.g. broker-t2 trained on ZTF)")
    parser.add_argument("--lsst-artifact", type=Path,
                        help="a transients-lsst artifact: the alerts of its test objects only "
                             "are classified, by both artifacts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--spark", nargs="*", default=[], metavar="MASTER",
                        help="also through Spark on these masters (e.g. local[1] local[2])")
    parser.add_argument("--results", type=Path)
    args = parser.parse_args()

    artifacts = {"given": args.artifact}
    if args.lsst_artifact is not None:
        artifacts["lsst"] = args.lsst_artifact
    classifiers = {name: broker.load_classifier(path) for name, path in artifacts.items()}
    trained_on, tested = set(), None
    for classifier in classifiers.values():
        train, test = split_objects(classifier.runtime.metadata)
        trained_on |= train
        tested = test or tested
    table, read_seconds = read_elasticc()
    n_read = len(table)
    keep = ~table["objectId"].isin(trained_on)
    if tested is not None:
        keep &= table["objectId"].isin(tested)
    table = table[keep].reset_index(drop=True)
    labels = table.pop("label").to_numpy(np.int64)
    cuts = broker.SelectionCuts()

    measured = {name: measure(classifier, table, labels, cuts, args.repeats)
                for name, classifier in classifiers.items()}
    summary = {
        "artifacts": {name: str(path) for name, path in artifacts.items()},
        "machine": platform.platform(),
        "load_average": os.getloadavg(),
        "alerts_read": n_read,
        "read_seconds": read_seconds,
        "elasticc_objects_trained_on": len(trained_on),
        "held_out": ("the test objects of the transients-lsst artifact's object split"
                     if tested is not None else "every ELAsTiCC object not trained on"),
        "held_out_alerts": len(table),
        "held_out_objects": int(table["objectId"].nunique()),
        **{name: result for name, (result, _) in measured.items()},
    }
    if args.spark:
        name = "lsst" if "lsst" in artifacts else "given"
        summary["spark"] = {"artifact": name, "alerts": len(table), "cuts": "default",
                            **spark_rates(artifacts[name], table, cuts, measured[name][1],
                                          args.spark, args.repeats)}
    results_path = args.results or (RESULTS if tested is None else HELD_OUT_RESULTS)
    atomic_write_text(results_path, json.dumps(summary, indent=2) + "\n")
    print(f"{n_read} alerts read in {read_seconds:.1f} s; {len(table)} held out "
          f"({summary['held_out_objects']} objects, {summary['held_out']})")
    for name in measured:
        result = summary[name]
        print(f"\n{name}: {result['task']} {result['class_names']}; outcomes {result['counts']}")
        print(markdown_table([{
            "alerts": len(table), "classified": result["counts"].get("classified", 0),
            "alerts/s": f"{result['alerts_per_s']:.0f}",
            "alerts/CPU-s": f"{result['alerts_per_cpu_s']:.0f}",
            "classified/s": f"{result['classified_per_s']:.0f}",
            "classified/CPU-s": f"{result['classified_per_cpu_s']:.0f}"}]))  # fmt: skip
        print(markdown_table([{"set": key, **{k: (f"{v:.4f}" if isinstance(v, float) else v)
                                             for k, v in result[key].items()}}
                              for key in ("six_bands_per_alert",
                                          "six_bands_per_alert_sn_ia_ii_only",
                                          "six_bands_per_object",
                                          "six_bands_on_common_alerts",
                                          "g_and_r_only_on_common_alerts")]))  # fmt: skip
        print(f"predicted: {result['predicted']}; in process per alert passing the age and "
              f"solar-system cuts: {1e3 * result['cpu_per_candidate_s']:.2f} ms of CPU")
    for master, rate in summary.get("spark", {}).items():
        if isinstance(rate, dict):
            print(f"spark {master}: {rate['spark_alerts_per_s']:.0f} alerts/s warm, in process "
                  f"{rate['in_process_alerts_per_s']:.0f} (same run); session + first job "
                  f"{rate['session_and_first_job_seconds']:.1f} s; results equal bit for bit")
    print(f"wrote {results_path}")


if __name__ == "__main__":
    main()
