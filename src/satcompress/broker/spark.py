"""The classification as an Apache Spark pandas UDF, as the Fink broker runs its classifiers.

Fink (Möller et al. 2021, MNRAS 501, 3272) applies each science module to the alert stream
as a pandas UDF over Spark DataFrames; its t2 module (fink-science ``t2/processor.py``) takes
the ``concat_col`` arrays ``cjd, cfid, cmagpsf, csigmapsf`` and returns one value per alert.
:func:`classification_udf` does the same with a flight artifact and returns the class
probabilities, the predicted class and, for the alerts that fail a cut (or whose logits are
not finite: a fault), the reason (:func:`satcompress.broker.classify.classify_table`, the code
of the in-process path too). It takes the alert columns of either survey, ZTF
(:data:`~satcompress.broker.alerts.ALERT_COLUMNS`) or LSST
(:data:`~satcompress.broker.lsst.LSST_ALERT_COLUMNS`, six passbands), as one struct column,
which reaches the UDF as a pandas DataFrame with the in-process table's columns.

The artifact's bytes travel to the executors in a broadcast variable (no shared file system
is needed on a cluster) and each executor's Python worker loads it once
(:func:`~satcompress.broker.classify.load_classifier`, cached by SHA-256). The alerts are read
by the driver (:func:`~satcompress.broker.alerts.read_alerts`: the files named on the command
line need only exist there; reading Avro inside Spark would need the external ``spark-avro``
package) and distributed as a DataFrame of
:data:`~satcompress.broker.alerts.ALERT_COLUMNS`.

``local[*]`` runs Spark embedded in this process (Java 17 needed); ``spark://host:7077``
submits to a standalone cluster, whose workers need the same satcompress installed: the
executors run the interpreter the driver's ``PYSPARK_PYTHON`` names (this one by default), so
it must exist at the same path on every worker. :func:`standalone_cluster` starts a master and
workers on this machine (the tests and ``benchmarks/spark_cluster.py`` use it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pandas as pd

from satcompress.broker.alerts import ALERT_COLUMNS, SURVEYS, SelectionCuts
from satcompress.broker.classify import (
    ID_COLUMNS,
    PREDICTED_CLASS,
    REASON,
    classify_table,
    load_classifier,
    result_columns,
)
from satcompress.broker.lsst import LSST_ALERT_COLUMNS, table_survey

if TYPE_CHECKING:
    from pyspark.sql import Column, SparkSession
    from pyspark.sql.types import StructType

__all__ = [
    "DEFAULT_MASTER",
    "EngineChoice",
    "EngineCosts",
    "alert_schema",
    "classification_udf",
    "choose_engine",
    "classify_alerts_spark",
    "local_cores",
    "result_schema",
    "spark_session",
    "standalone_cluster",
]

DEFAULT_MASTER = "local[*]"
_ROW = "_row"
_SURVEY_COLUMNS = {"ztf": ALERT_COLUMNS, "lsst": LSST_ALERT_COLUMNS}


@contextlib.contextmanager
def _without_pandas_version_notice() -> Iterator[None]:
    """PySpark 4.0 warns on every pandas conversion that it does not fully support pandas 3;
    the conversions used here (numbers, strings, arrays of numbers) are checked by the tests
    (the Spark results equal the in-process ones exactly), so the notice is silenced here only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas",
                                FutureWarning)
        yield


def spark_session(master: str = DEFAULT_MASTER,
                  app_name: str = "satcompress-broker") -> SparkSession:
    """A SparkSession for the broker: Arrow transfers on, no web UI, few shuffle partitions.

    The executors' Python workers run this interpreter (``PYSPARK_PYTHON`` is set to it if
    unset), so on a cluster it must exist at the same path, with satcompress, on every worker.

    Raises
    ------
    ValueError
        If this process already runs a SparkSession on another master (Spark would silently
        reuse it).
    """
    from pyspark.sql import SparkSession  # noqa: PLC0415

    running = SparkSession.getActiveSession()
    if running is not None and running.sparkContext.master != master:
        raise ValueError(f"This process already runs Spark on master "
                         f"{running.sparkContext.master!r}; stop that session (session.stop()) "
                         f"before starting one on {master!r}.")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.pyspark.fallback.enabled", "false")
    )
    if master.startswith("local"):
        builder = builder.config("spark.pyspark.python", sys.executable).config(
            "spark.pyspark.driver.python", sys.executable)
    with _without_pandas_version_notice():
        session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def _free_port() -> int:
    """A TCP port on 127.0.0.1 free right now (the OS's choice)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _master_state(web_port: int) -> dict | None:
    """The standalone master's state (its web UI's JSON), or None while it does not answer."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with direct.open(f"http://127.0.0.1:{web_port}/json/", timeout=2) as response:
            return json.load(response)
    except (OSError, ValueError):
        return None


def _stop(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    """Stop a daemon and what it started (its own process group): SIGTERM, then SIGKILL."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sent)
        try:
            process.wait(grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def standalone_cluster(folder: str | os.PathLike, workers: int = 1, cores: int = 1,
                       memory: str = "1g", timeout_s: float = 120.0) -> Iterator[str]:
    """Run a Spark standalone master and ``workers`` workers (``cores`` cores and ``memory``
    each) on 127.0.0.1, on free ports, with their logs and work folders under ``folder``;
    yield the master URL (``spark://127.0.0.1:PORT``) once every worker has registered.

    The daemons are PySpark's own (``bin/spark-class``); they and the executors they start are
    stopped on exit, also when the block raises. A session on this machine
    (``spark_session(url)``) needs nothing more.

    Raises
    ------
    RuntimeError
        If Java is missing, or a daemon exits or the workers have not registered within
        ``timeout_s`` (the message holds the end of its log).
    """
    import pyspark  # noqa: PLC0415

    if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
        raise RuntimeError("Spark needs Java 17: install it (apt-get install "
                           "openjdk-17-jre-headless) or set JAVA_HOME.")
    home = Path(pyspark.__file__).parent
    folder = Path(folder)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOG_DIR": str(folder / "logs"),
           "SPARK_LOCAL_DIRS": str(folder / "scratch"),
           "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable)}
    port, web_port = _free_port(), _free_port()
    url = f"spark://127.0.0.1:{port}"
    commands = {"master": ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                           "--port", str(port), "--webui-port", str(web_port)]}
    for index in range(workers):
        commands[f"worker-{index}"] = [
            "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
            "--cores", str(cores), "--memory", memory, "--webui-port", str(_free_port()),
            "--work-dir", str(folder / f"worker-{index}")]
    started: dict[str, subprocess.Popen] = {}
    try:
        for name, arguments in commands.items():
            with open(folder / "logs" / f"{name}.log", "wb") as log:
                started[name] = subprocess.Popen([str(home / "bin" / "spark-class"), *arguments],
                                                 env=env, stdout=log, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            state = _master_state(web_port) or {}
            alive = [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]
            if state.get("status") == "ALIVE" and len(alive) == workers:
                break
            exited = [name for name, process in started.items() if process.poll() is not None]
            if exited or time.monotonic() > deadline:
                name = exited[0] if exited else (
                    "worker-0" if state.get("status") == "ALIVE" else "master")
                why = ("exited" if exited else f"was not ready after {timeout_s:g} s "
                       f"({len(alive)} of {workers} workers registered)")
                log = folder / "logs" / f"{name}.log"
                raise RuntimeError(f"Spark standalone {name} {why}; end of its log ({log}):\n"
                                   f"{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        for process in reversed(started.values()):
            _stop(process)


class EngineCosts(NamedTuple):
    """What classifying alerts costs on each engine (seconds), as measured by
    ``benchmarks/spark_cluster.py`` (benchmarks/README.md, "Spark standalone cluster and
    streaming"); reading the alert files is not counted: the driver reads them for either
    engine."""

    spark_start_s: float = 22.0
    """Spark's start-up: the session (a JVM) and its first job (the Python workers)."""
    per_alert_s: float = 4.0e-5
    """Selection cuts and bookkeeping per alert, on one core."""
    per_candidate_s: float = 5.8e-4
    """Light curve + GP + model per ZTF alert that passes the age and solar-system cuts, on
    one core."""
    lsst_per_candidate_s: float = 1.75e-3
    """The same per LSST alert (six passbands: larger GPs), ``benchmarks/lsst_alerts.py``
    (benchmarks/README.md, "LSST alerts")."""
    spark_driver_per_alert_s: float = 1.0e-4
    """Spark's work per alert on the driver (the table to Arrow and to the executors, the
    results back), which the cores do not share."""
    spark_executor_per_alert_s: float = 1.1e-4
    """Spark's work per alert on the executors (Arrow to pandas and back around the UDF),
    shared by the cores."""


class EngineChoice(NamedTuple):
    """The engine :func:`choose_engine` picked and the predicted seconds of each."""

    spark: bool
    in_process_s: float
    spark_s: float


def local_cores(master: str) -> int:
    """The cores a ``local``, ``local[K]`` or ``local[*]`` master runs on.

    Raises
    ------
    ValueError
        If ``master`` is not a local one.
    """
    match = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master)
    if match is None:
        raise ValueError(f"{master!r} is not a local Spark master (local, local[K], local[*]).")
    threads = match.group(1)
    return len(os.sched_getaffinity(0)) if threads == "*" else int(threads or 1)


def choose_engine(alerts: int, candidates: int, cores: int,
                  costs: EngineCosts = EngineCosts(),  # noqa: B008 (immutable)
                  survey: str = "ztf") -> EngineChoice:
    """The faster engine for ``alerts`` alerts of ``survey`` of which ``candidates`` pass the
    age and solar-system cuts: one core in process, or Spark on ``cores`` cores (start-up, the
    driver's share, then the executors' share and the classification divided among the
    cores)."""
    per_candidate = costs.lsst_per_candidate_s if survey == "lsst" else costs.per_candidate_s
    in_process = alerts * costs.per_alert_s + candidates * per_candidate
    shared = in_process + alerts * costs.spark_executor_per_alert_s
    on_spark = (costs.spark_start_s + alerts * costs.spark_driver_per_alert_s
                + shared / max(cores, 1))
    return EngineChoice(on_spark < in_process, in_process, on_spark)


def alert_schema(survey: str = "ztf") -> StructType:
    """Spark schema of a table of :data:`~satcompress.broker.alerts.ALERT_COLUMNS` (``ztf``)
    or :data:`~satcompress.broker.lsst.LSST_ALERT_COLUMNS` (``lsst``).

    Raises
    ------
    ValueError
        If ``survey`` is not one of :data:`~satcompress.broker.alerts.SURVEYS`.
    """
    from pyspark.sql import types as T  # noqa: PLC0415

    if survey not in SURVEYS:
        raise ValueError(f"Unknown survey {survey!r}; choose one of {list(SURVEYS)}.")
    double_array = T.ArrayType(T.DoubleType())
    ids = [T.StructField("objectId", T.StringType()), T.StructField("candid", T.LongType())]
    if survey == "lsst":
        return T.StructType([
            *ids,
            T.StructField("midpointMjdTai", T.DoubleType()),
            T.StructField("firstDiaSourceMjdTai", T.DoubleType()),
            T.StructField("ssObjectId", T.LongType()),
            T.StructField("cmidpointMjdTai", double_array),
            T.StructField("cband", T.ArrayType(T.StringType())),
            T.StructField("cpsfFlux", double_array),
            T.StructField("cpsfFluxErr", double_array),
        ])  # fmt: skip
    return T.StructType([
        *ids,
        *(T.StructField(name, T.DoubleType()) for name in ALERT_COLUMNS[2:6]),
        T.StructField("cjd", double_array),
        T.StructField("cfid", T.ArrayType(T.LongType())),
        T.StructField("cmagpsf", double_array),
        T.StructField("csigmapsf", double_array),
    ])  # fmt: skip


def result_schema(class_names: tuple[str, ...]) -> StructType:
    """Spark schema of the UDF's struct: one probability per class, predicted class, reason."""
    from pyspark.sql import types as T  # noqa: PLC0415

    names = result_columns(class_names)
    return T.StructType([
        *(T.StructField(name, T.DoubleType()) for name in names[: len(class_names)]),
        T.StructField(PREDICTED_CLASS, T.StringType()),
        T.StructField(REASON, T.StringType()),
    ])  # fmt: skip


def classification_udf(
    spark: SparkSession,
    artifact: str | os.PathLike | bytes,
    cuts: SelectionCuts = SelectionCuts(),  # noqa: B008 (frozen, immutable)
    backend: str = "numpy",
) -> Callable[..., Column]:
    """A pandas UDF classifying alerts with ``artifact`` (a path or its bytes) on the runtime
    ``backend`` (``numpy`` or ``c``: compiled on each executor's host): call it on one struct
    of an alert table's columns after the ids (ZTF ``jd, jdstarthist, ssdistnr, ssmagnr, cjd,
    cfid, cmagpsf, csigmapsf``, or those of
    :data:`~satcompress.broker.lsst.LSST_ALERT_COLUMNS`: the survey is recognised from them);
    it returns a struct of :func:`result_schema`.

    The artifact is checked on the driver first, so a wrong file fails here, not in a task.
    """
    from pyspark.sql.functions import pandas_udf  # noqa: PLC0415

    content = artifact if isinstance(artifact, bytes) else Path(artifact).read_bytes()
    classifier = load_classifier(content)
    shared = spark.sparkContext.broadcast(content)

    def classify(alerts: pd.DataFrame) -> pd.DataFrame:
        table = alerts.reset_index(drop=True)
        return classify_table(table, load_classifier(shared.value, backend), cuts)

    return pandas_udf(classify, returnType=result_schema(classifier.class_names))


def classify_alerts_spark(
    spark: SparkSession,
    table: pd.DataFrame,
    artifact: str | os.PathLike | bytes,
    cuts: SelectionCuts = SelectionCuts(),  # noqa: B008 (frozen, immutable)
    partitions: int | None = None,
    backend: str = "numpy",
) -> pd.DataFrame:
    """Classify a table of ZTF (:data:`~satcompress.broker.alerts.ALERT_COLUMNS`) or LSST
    (:data:`~satcompress.broker.lsst.LSST_ALERT_COLUMNS`) alerts with Spark.

    The alerts are spread over ``partitions`` partitions (default: Spark's default
    parallelism) and the results collected to the driver in the input order, with the same
    columns as :func:`satcompress.broker.classify.classify_alerts`.
    """
    from pyspark.sql.functions import struct  # noqa: PLC0415

    survey = table_survey(table)
    columns = _SURVEY_COLUMNS[survey]
    rows = table[list(columns)].reset_index(drop=True)
    with _without_pandas_version_notice():
        udf = classification_udf(spark, artifact, cuts, backend)
        frame = spark.createDataFrame(rows.assign(**{_ROW: range(len(rows))}),
                                      alert_schema(survey).add(_ROW, "long"))  # fmt: skip
        frame = frame.repartition(partitions or spark.sparkContext.defaultParallelism)
        alerts = struct(*columns[len(ID_COLUMNS):])  # the UDF needs no ids
        scored = frame.select(_ROW, *ID_COLUMNS, udf(alerts).alias("result"))
        result = scored.select(_ROW, *ID_COLUMNS, "result.*").toPandas()
    return result.sort_values(_ROW).drop(columns=_ROW).reset_index(drop=True)
