"""Spark standalone cluster with 1 and 2 workers, the streaming job, and where Spark pays off.

    SATCOMPRESS_DATA_DIR=../shared/data .venv/bin/python benchmarks/spark_cluster.py \
        --artifact /tmp/wll/final/model.sca

The artifact is a compressed transient classifier (``satcompress compress --task transients
--recipe broker-t2``). Workload: the 175 bundled raw ZTF alerts replayed ``--replays`` times.
One process (the driver), in three parts:

1. **Engine costs** (the constants of :class:`satcompress.broker.EngineCosts`, which
   ``classify-alerts`` uses to pick its engine): Spark ``local[*]``'s start-up (session +
   first job: this process's first Spark), then, interleaved (median of ``--repeats``, so the
   machine's load hits all alike): in process (one core; NumPy runtime, and the C backend for
   comparison) with the default cuts (22 of 175 alerts pass the age and solar-system cuts, 3
   are classified) and with the age cut off (174 pass, 78 classified), which give the cost
   per alert read and per alert passing those cuts; Spark with both cuts on every core
   (against the model's prediction), and in one partition with and without the UDF (the
   driver's transfers; the executors' extra work).
2. **Standalone cluster**: for each round, a cluster of 1 worker, then of 2 (1 core, 1 GiB
   each; :func:`satcompress.broker.standalone_cluster`), a session on it, a first job, then
   the replayed stream (age cut off) classified end to end (alert table on the driver to
   results on the driver), interleaved with a job of 175 alerts (a job's fixed cost), median
   of ``--repeats``: alerts/s end to end and marginal (without the job's fixed cost).
3. **Streaming** (last round's 2-worker cluster): ``--files`` copies of the bundled files land
   in a folder and :func:`satcompress.broker.classify_stream` takes them (``once``, at most
   ``--files-per-batch`` per batch): seconds per batch and alerts/s, reading included.

Writes ``benchmarks/results/spark_cluster.json`` and prints Markdown tables.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from satcompress import broker  # noqa: E402
from satcompress.fileio import atomic_write_text  # noqa: E402
from satcompress.report import markdown_table  # noqa: E402

warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
RESULTS = Path(__file__).parent / "results" / "spark_cluster.json"
DEFAULT_CUTS = broker.SelectionCuts()
NO_AGE_CUT = broker.SelectionCuts(max_age_days=None)


def timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def medians(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, run round-robin ``repeats`` times after a warm-up."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for function in functions.values():
        function()
    for _ in range(repeats):
        for name, function in functions.items():
            times[name].append(timed(function))
    return {name: statistics.median(t) for name, t in times.items()}


def candidates(table: pd.DataFrame, cuts: broker.SelectionCuts) -> int:
    return int(np.sum(pd.isna(broker.cut_reasons(table, cuts))))


def engine_costs(table: pd.DataFrame, artifact: Path, repeats: int) -> dict:
    """Part 1: in-process and Spark local[*] costs per alert, and Spark's start-up."""
    n = len(table)
    k = {"default": candidates(table, DEFAULT_CUTS), "no_age": candidates(table, NO_AGE_CUT)}
    load = os.getloadavg()[0]
    started = time.perf_counter()
    spark = broker.spark_session("local[*]")
    session_s = time.perf_counter() - started
    first_job_s = timed(lambda: broker.classify_alerts_spark(spark, table.iloc[:175], artifact,
                                                             NO_AGE_CUT))
    cores = broker.local_cores("local[*]")
    rows = table[list(broker.ALERT_COLUMNS)]

    def transfer_only() -> object:  # the driver's part: to the executors and back, no UDF
        frame = spark.createDataFrame(rows, broker.alert_schema()).repartition(1)
        return frame.select("objectId", "candid", "jd").toPandas()

    engines = {f"in process {backend}, {name}": (lambda b=backend, c=cuts: broker.classify_alerts(
        table, broker.load_classifier(artifact, b), c))
        for backend in ("numpy", "c") for name, cuts in (("default", DEFAULT_CUTS),
                                                         ("no_age", NO_AGE_CUT))}
    engines.update({
        "spark default": lambda: broker.classify_alerts_spark(spark, table, artifact,
                                                              DEFAULT_CUTS),
        "spark no_age": lambda: broker.classify_alerts_spark(spark, table, artifact, NO_AGE_CUT),
        "spark no_age, 1 partition": lambda: broker.classify_alerts_spark(
            spark, table, artifact, NO_AGE_CUT, partitions=1),
        "spark transfer only, 1 partition": transfer_only,
    })
    seconds = medians(engines, repeats)  # interleaved: the machine's load hits all alike
    spark.stop()
    per_candidate = ((seconds["in process numpy, no_age"] - seconds["in process numpy, default"])
                     / (k["no_age"] - k["default"]))
    transfer = seconds["spark transfer only, 1 partition"]
    executor = (seconds["spark no_age, 1 partition"] - transfer
                - seconds["in process numpy, no_age"])
    costs = broker.EngineCosts(
        spark_start_s=session_s + first_job_s,
        per_alert_s=seconds["in process numpy, default"] / n, per_candidate_s=per_candidate,
        spark_driver_per_alert_s=transfer / n,
        spark_executor_per_alert_s=max(executor, 0.0) / n)
    predicted_warm = {f"spark {name}": broker.choose_engine(n, k[name], cores, costs).spark_s
                      - costs.spark_start_s for name in k}
    return {"alerts": n, "candidates": k, "cores": cores, "load_before": load,
            "seconds": seconds, "spark_warm_predicted_s": predicted_warm,
            "spark_session_s": session_s, "spark_first_job_s": first_job_s,
            "measured_costs": costs._asdict(),
            "alerts_per_s": {name: n / s for name, s in seconds.items()},
            "load_after": os.getloadavg()[0]}


def break_even(costs: broker.EngineCosts, fraction: float, cores: int) -> float | None:
    """Alerts (a fraction ``fraction`` passing the cuts) from which Spark on ``cores`` cores is
    predicted faster than in process; None if never."""
    in_process = costs.per_alert_s + fraction * costs.per_candidate_s
    on_spark = (costs.spark_driver_per_alert_s
                + (in_process + costs.spark_executor_per_alert_s) / cores)
    return costs.spark_start_s / (in_process - on_spark) if in_process > on_spark else None


def cluster_round(workers: int, table: pd.DataFrame, artifact: Path, repeats: int,
                  stream: dict | None, folder: Path) -> dict:
    """Part 2 (and 3 when ``stream`` is given) on a fresh cluster of ``workers`` workers."""
    started = time.perf_counter()
    with broker.standalone_cluster(folder / f"cluster-{workers}", workers=workers) as master:
        cluster_s = time.perf_counter() - started
        started = time.perf_counter()
        spark = broker.spark_session(master)
        session_s = time.perf_counter() - started
        try:
            first_job_s = timed(lambda: broker.classify_alerts_spark(
                spark, table.iloc[:175], artifact, NO_AGE_CUT, partitions=2 * workers))
            load = os.getloadavg()[0]
            small = table.iloc[:175]
            times = medians({
                "stream": lambda: broker.classify_alerts_spark(spark, table, artifact,
                                                               NO_AGE_CUT, partitions=4),
                "175 alerts": lambda: broker.classify_alerts_spark(spark, small, artifact,
                                                                   NO_AGE_CUT, partitions=4),
            }, repeats)
            row = {"workers": workers, "cluster_start_s": cluster_s, "session_s": session_s,
                   "first_job_s": first_job_s, "seconds": times, "load": load,
                   "alerts_per_s": len(table) / times["stream"],
                   "marginal_alerts_per_s": (len(table) - 175)
                   / (times["stream"] - times["175 alerts"]),
                   "job_of_175_alerts_s": times["175 alerts"]}
            if stream is not None:
                row["stream"] = stream_run(spark, artifact, folder, **stream)
        finally:
            spark.stop()
    return row


def stream_run(spark, artifact: Path, folder: Path, files: int, per_batch: int) -> dict:
    """Part 3: ``files`` copies of the bundled files landing at once, taken by the stream."""
    inbox, out = folder / "inbox", folder / "stream-out"
    inbox.mkdir()
    for index in range(files):
        source = broker.bundled_alert_paths()[index % 3]
        shutil.copyfile(source, folder / "landing.parquet")
        (folder / "landing.parquet").rename(inbox / f"{index:04d}.parquet")
    started = time.perf_counter()
    summaries = broker.classify_stream(spark, inbox, out, artifact, cuts=NO_AGE_CUT, once=True,
                                       max_files_per_batch=per_batch)
    seconds = time.perf_counter() - started
    alerts = sum(summary["alerts_read"] for summary in summaries)
    written = pd.read_parquet(out)
    return {"files": files, "batches": len(summaries), "alerts": alerts, "seconds": seconds,
            "batch_seconds": [summary["seconds"] for summary in summaries],
            "alerts_per_s": alerts / seconds, "rows_written": len(written)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path, default=Path("/tmp/wll/final/model.sca"))
    parser.add_argument("--replays", type=int, default=20, help="copies of the 175 alerts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="1-worker/2-worker rounds")
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--files-per-batch", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    options = parser.parse_args()

    alerts = broker.read_alerts(broker.bundled_alert_paths())
    table = pd.concat([alerts.table] * options.replays, ignore_index=True)
    costs = engine_costs(table, options.artifact, options.repeats)
    measured = broker.EngineCosts(**costs["measured_costs"])
    fractions = {"default cuts": costs["candidates"]["default"] / len(table),
                 "age cut off": costs["candidates"]["no_age"] / len(table)}
    costs["break_even_alerts"] = {
        f"{name}, {cores} cores": break_even(measured, fraction, cores)
        for name, fraction in fractions.items() for cores in (2, 4, 16)}

    rounds = []
    with tempfile.TemporaryDirectory(prefix="spark-cluster-") as scratch:
        for index in range(options.rounds):
            for workers in (1, 2):
                last = index == options.rounds - 1 and workers == 2
                folder = Path(scratch) / f"round-{index}"
                folder.mkdir(exist_ok=True)
                stream = {"files": options.files, "per_batch": options.files_per_batch}
                rounds.append(cluster_round(workers, table, options.artifact, options.repeats,
                                            stream if last else None, folder))
                print(json.dumps({k: v for k, v in rounds[-1].items() if k != "stream"}),
                      flush=True)
    summary = [{"workers": workers,
                "alerts_per_s": statistics.median(r["alerts_per_s"] for r in rounds
                                                  if r["workers"] == workers),
                "marginal_alerts_per_s": statistics.median(
                    r["marginal_alerts_per_s"] for r in rounds if r["workers"] == workers),
                "job_of_175_alerts_s": statistics.median(
                    r["job_of_175_alerts_s"] for r in rounds if r["workers"] == workers),
                "cluster_start_s": statistics.median(r["cluster_start_s"] for r in rounds
                                                     if r["workers"] == workers),
                "session_plus_first_job_s": statistics.median(
                    r["session_s"] + r["first_job_s"] for r in rounds if r["workers"] == workers)}
               for workers in (1, 2)]
    results = {"machine": platform.platform(), "cpus": os.cpu_count(),
               "artifact": str(options.artifact),
               "artifact_sha256": broker.load_classifier(options.artifact).sha256,
               "alerts": len(table), "engine_costs": costs, "cluster_rounds": rounds,
               "cluster_summary": summary, "stream": rounds[-1].get("stream")}
    atomic_write_text(options.results, json.dumps(results, indent=2) + "\n")
    print(json.dumps(costs, indent=2))
    print(markdown_table([{k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
                          for row in summary]))
    print(json.dumps(results["stream"], indent=2))


if __name__ == "__main__":
    main()
