"""Classifying alert files as they land in a folder: a Spark Structured Streaming job.

:func:`classify_stream` watches a folder with Spark's file source (format ``binaryFile``, of
which only the file names are used) and runs each micro-batch, the alert files that appeared
since the previous one, through ``foreachBatch``: the driver reads the files
(:func:`~satcompress.broker.alerts.read_alerts`, as ``satcompress classify-alerts`` does), the
executors classify them (:func:`~satcompress.broker.spark.classify_alerts_spark`) and the
results, unreadable alerts included (reason ``unparseable``), go to
``OUT/batch-<id>.parquet``, with a summary (files, counts, problems) in
``OUT/_batches/batch-<id>.json``. ``pandas.read_parquet(OUT)`` reads every result (names
starting with ``_`` or ``.`` are skipped).

Every alert is written exactly once, whenever the job stops or crashes: Spark records in the
checkpoint which files make up batch N before it runs it and marks it done after, and a restart
runs again a batch that was started but not marked done, with the same files and the same id.
Batch N's results are written atomically (a temporary file renamed into place) under a name
made of N alone, so a batch run again replaces its own file with the same rows: no alert is
written twice or lost. A file is taken once, when first listed, so alert files must land
whole: written elsewhere on the same file system and renamed into the folder. As in any
Spark file source, a file more than 7 days older than the newest file seen is ignored
(``maxFileAge``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from satcompress.broker.alerts import AUTO, SURVEYS, AlertProblem, SelectionCuts, read_alerts
from satcompress.broker.classify import (
    PREDICTED_CLASS,
    REASON,
    load_classifier,
    problem_rows,
    reason_counts,
    result_columns,
)
from satcompress.broker.spark import classify_alerts_spark
from satcompress.fileio import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["ALERT_FILE_GLOB", "StreamBatchError", "batch_path", "check_stream",
           "classify_stream", "default_checkpoint", "results_schema"]

ALERT_FILE_GLOB = "*.{avro,parquet}"
"""The files the stream takes from its folder."""
_BATCHES = "_batches"


def batch_path(out: str | os.PathLike, batch_id: int) -> Path:
    """Where the results of micro-batch ``batch_id`` go: ``OUT/batch-<id, 8 digits>.parquet``."""
    return Path(out) / f"batch-{batch_id:08d}.parquet"


def default_checkpoint(out: str | os.PathLike) -> Path:
    """The checkpoint folder used when none is given: ``OUT/_checkpoint``."""
    return Path(out) / "_checkpoint"


def results_schema(class_names: tuple[str, ...]) -> pa.Schema:
    """The Arrow schema of every batch's results (the same in every file, even one holding only
    unreadable alerts, whose classes are all null)."""
    names = result_columns(class_names)
    return pa.schema([
        ("objectId", pa.string()), ("candid", pa.int64()),
        *((name, pa.float64()) for name in names[: len(class_names)]),
        (PREDICTED_CLASS, pa.string()), (REASON, pa.string()),
    ])  # fmt: skip


def _local_path(uri: str) -> Path:
    """The local path of a file the source listed (a ``file:`` URI)."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"{uri}: the stream reads alert files on the driver, so the watched "
                         "folder must be on a local or mounted file system (file:), not "
                         f"{parsed.scheme}:.")
    return Path(unquote(parsed.path))


class StreamBatchError(RuntimeError):
    """A batch of the stream failed (the error it met is the ``__cause__``); the stream stopped
    there and resumes from its checkpoint when started again."""


def check_stream(source: str | os.PathLike, out: str | os.PathLike,
                 checkpoint: str | os.PathLike | None = None) -> Path:
    """Check a stream's folders before Spark starts; the checkpoint folder (default
    :func:`default_checkpoint`).

    Raises
    ------
    FileNotFoundError
        If ``source`` is not a folder.
    ValueError
        If ``out`` holds results but the checkpoint is missing (starting afresh would write
        those alerts again).
    """
    source, out = Path(source), Path(out)
    checkpoint = Path(checkpoint) if checkpoint is not None else default_checkpoint(out)
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a folder; --stream watches a folder into "
                                "which alert files (.avro, .parquet) are moved.")
    if not (checkpoint / "offsets").is_dir() and any(out.glob("batch-*.parquet")):
        raise ValueError(f"{out} holds the results of an earlier stream but its checkpoint "
                         f"{checkpoint} is missing: starting afresh would write those alerts "
                         "again; give that stream's --checkpoint, or a new --out folder.")
    return checkpoint


def classify_stream(
    spark: SparkSession,
    source: str | os.PathLike,
    out: str | os.PathLike,
    artifact: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    cuts: SelectionCuts = SelectionCuts(),  # noqa: B008 (frozen, immutable)
    *,
    once: bool = False,
    poll_seconds: float = 10.0,
    max_files_per_batch: int | None = None,
    backend: str = "numpy",
    on_batch: Callable[[dict[str, Any]], None] | None = None,
    survey: str = "ztf",
) -> list[dict[str, Any]]:
    """Classify the alert files (:data:`ALERT_FILE_GLOB`) landing in ``source`` into ``out``
    (see the module docstring) until done (``once``) or interrupted; the summaries of the
    batches run.

    ``once``: take the files present now (in batches of at most ``max_files_per_batch``) and
    stop (Spark's ``availableNow`` trigger); otherwise look for new files every
    ``poll_seconds`` until interrupted (Ctrl-C; a batch cut short runs again at the next
    start).
    ``checkpoint`` (default :func:`default_checkpoint`) holds the stream's progress: keep it
    with ``out``. ``on_batch`` is called with each batch's summary once its results are written.
    ``survey``: of the alert files (``ztf``, ``lsst``, or ``auto``: that of each batch's first
    alert; see :func:`~satcompress.broker.alerts.read_alerts`).

    Raises
    ------
    FileNotFoundError, ValueError
        See :func:`check_stream`; ValueError also if the artifact is not a transient
        classifier (:func:`~satcompress.broker.classify.load_classifier`) or ``survey`` is
        unknown.
    StreamBatchError
        If a batch failed (e.g. ``out`` could not be written): the stream stopped there.
    """
    from pyspark.errors import StreamingQueryException  # noqa: PLC0415

    if survey not in (*SURVEYS, AUTO):
        raise ValueError(f"Unknown survey {survey!r}; choose one of {[*SURVEYS, AUTO]}.")
    source, out = Path(source), Path(out)
    checkpoint = check_stream(source, out, checkpoint)
    content = Path(artifact).read_bytes()
    classifier = load_classifier(content, backend)
    schema = results_schema(classifier.class_names)
    summaries: list[dict[str, Any]] = []
    failures: list[Exception] = []

    def write_batch(batch: DataFrame, batch_id: int) -> None:
        try:
            summaries.append(classify_batch(batch, batch_id))
            if on_batch is not None:
                on_batch(summaries[-1])
        except Exception as error:
            failures.append(error)
            raise

    def classify_batch(batch: DataFrame, batch_id: int) -> dict[str, Any]:
        started = time.perf_counter()
        paths = sorted({_local_path(row.path) for row in batch.collect()})
        present = [path for path in paths if path.is_file()]
        alerts = read_alerts(present, survey)  # files of another survey: problems
        removed = [AlertProblem(str(path), None, None, None, "removed before it was read")
                   for path in paths if path not in present]
        problems = [*alerts.problems, *removed]
        frames = [problem_rows(problems, classifier.class_names)]
        if len(alerts.table):
            frames.insert(0, classify_alerts_spark(spark, alerts.table, content, cuts,
                                                   backend=backend))
        results = pd.concat(frames, ignore_index=True)
        target = batch_path(out, batch_id)
        with atomic_path(target) as temporary:
            pq.write_table(pa.Table.from_pandas(results, schema, preserve_index=False),
                           temporary)
        summary = {
            "batch_id": batch_id,
            "files": [str(path) for path in paths],
            "artifact_sha256": classifier.sha256,
            "survey": alerts.survey,
            "alerts_read": len(alerts.table),
            "counts": reason_counts(results),
            "problems": [problem._asdict() for problem in problems],
            "unreadable_files": sum(problem.index is None for problem in problems),
            "seconds": time.perf_counter() - started,
            "results": str(target),
        }
        atomic_write_text(out / _BATCHES / f"{target.stem}.json",
                          json.dumps(summary, indent=2) + "\n")
        return summary

    listing = "path string, modificationTime timestamp, length long, content binary"
    reader = (spark.readStream.format("binaryFile").schema(listing)
              .option("pathGlobFilter", ALERT_FILE_GLOB))
    if max_files_per_batch is not None:
        reader = reader.option("maxFilesPerTrigger", max_files_per_batch)
    writer = (reader.load(str(source)).select("path").writeStream
              .foreachBatch(write_batch).option("checkpointLocation", str(checkpoint)))
    trigger = {"availableNow": True} if once else {"processingTime": f"{poll_seconds:g} seconds"}
    query = writer.trigger(**trigger).start()
    try:
        while not query.awaitTermination(1.0):
            pass
    except KeyboardInterrupt:
        query.stop()
    except StreamingQueryException:
        if not failures:
            raise
        raise StreamBatchError(f"A batch failed: {failures[0]}; fix the cause and start the "
                               f"stream again: it resumes from {checkpoint}.") from failures[0]
    return summaries
