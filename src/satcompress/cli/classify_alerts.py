"""``satcompress classify-alerts``: class probabilities for raw ZTF or LSST alerts, with Spark or
pandas, from files or as a stream of files landing in a folder."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from satcompress.cli.common import console, fail

if TYPE_CHECKING:
    from satcompress.broker import SelectionCuts

__all__ = ["classify_alerts", "summary_path"]

_LISTED_PROBLEMS = 20


def summary_path(out: Path) -> Path:
    """Where the JSON summary of a results file goes: beside it, ``.json`` instead of its suffix."""
    return out.with_suffix(".json")


def classify_alerts(
    alerts: list[Path] | None = typer.Argument(
        None, help="ZTF or LSST alert files (.avro packets or Fink's .parquet tables) or "
                   "folders of them (or --stream FOLDER)."),
    artifact: Path = typer.Option(
        ..., help="Transient flight artifact (OUT/model.sca of satcompress compress --task "
                  "transients)."),
    out: Path | None = typer.Option(
        None, help="Results table (Parquet, one row per alert, written atomically, a JSON "
                   "summary beside it; default scores.parquet); with --stream a folder of one "
                   "file per batch."),
    master: str | None = typer.Option(
        None, help="Spark master: local[*] (the default) runs Spark embedded, "
                   "spark://HOST:7077 a standalone cluster (naming one runs Spark)."),
    spark: bool | None = typer.Option(
        None, "--spark/--no-spark", help="Classify with Spark, or in this process with pandas. "
                                         "Default: the engine predicted faster for these "
                                         "alerts (Spark pays off only for many)."),
    backend: str = typer.Option(
        "numpy", help="Runtime: numpy (the reference) or c (the artifact's C code compiled "
                      "for this machine, on each Spark executor too)."),
    stream: Path | None = typer.Option(
        None, help="Classify the alert files moved into this folder as they land (Spark "
                   "Structured Streaming, each alert written once, even across restarts); "
                   "needs --out FOLDER."),
    checkpoint: Path | None = typer.Option(
        None, help="With --stream: the stream's progress (default OUT/_checkpoint); keep it "
                   "with OUT to resume."),
    once: bool = typer.Option(
        False, "--once", help="With --stream: classify the files there now and stop (e.g. from "
                              "cron); otherwise run until interrupted."),
    poll_seconds: float = typer.Option(
        10.0, min=0.1, help="With --stream: how often to look for new files."),
    max_files_per_batch: int | None = typer.Option(
        None, min=1, help="With --stream: at most this many files per batch."),
    max_age_days: float = typer.Option(
        90.0, help="Age cut: largest jd - jdstarthist in days (Fink's t2: 90); 0: no age cut."),
    sso_max_distance_arcsec: float = typer.Option(
        5.0, help="Solar-system cut: reject alerts with a known asteroid this close (LSST: any "
                  "Rubin associated); 0: no cut."),
    survey: str = typer.Option(
        "auto", help="Survey of the alerts: ztf, lsst (Rubin or ELAsTiCC: all six bands inform "
                     "the GP), or auto (recognised from their fields; with --stream, per "
                     "batch)."),
) -> None:
    """Classify ALERTS (or the files landing in --stream FOLDER) with a transient flight
    artifact: class probabilities for the alerts that pass the selection cuts, the reason for
    those that do not, and every alert that cannot be read counted and listed (reason
    "unparseable", or the file in the summary); in process or with Spark, as told or whichever
    is predicted faster."""
    from satcompress.broker import SelectionCuts, load_classifier

    if not artifact.is_file():
        fail(f"Artifact {artifact} does not exist; `satcompress compress --task transients` "
             "writes OUT/model.sca.")
    if bool(alerts) == (stream is not None):
        fail("Give alert files or folders, or --stream FOLDER to classify files as they land "
             "in it (not both).")
    if spark is False and master is not None:
        fail(f"--master {master} names a Spark master but --no-spark classifies in process; "
             "drop one of them.")
    if stream is None and (checkpoint is not None or once or max_files_per_batch is not None):
        fail("--checkpoint, --once and --max-files-per-batch go with --stream FOLDER.")
    try:
        cuts = SelectionCuts(max_age_days=max_age_days or None,
                             sso_max_distance_arcsec=sso_max_distance_arcsec or None)
        with console.status(f"loading {artifact} ({backend} runtime)"):
            load_classifier(artifact, backend)
    except (OSError, ValueError) as error:
        fail(str(error))
    if stream is not None:
        if spark is False:
            fail("--stream runs on Spark; drop --no-spark.")
        if out is None:
            fail("--stream needs --out FOLDER: one results file per batch goes there.")
        _classify_stream(stream, artifact, out, master, backend, checkpoint, once, poll_seconds,
                         max_files_per_batch, cuts, survey)
    else:
        _classify_files(alerts, artifact, out or Path("scores.parquet"), master, spark, backend,
                        cuts, survey)


def _spark_session(master: str) -> Any:
    """A SparkSession on ``master``, or one clear line when Spark cannot start."""
    from satcompress.broker import spark_session

    try:
        return spark_session(master)
    except Exception as error:  # noqa: BLE001 (py4j/Java start-up errors vary)
        fail(f"Spark could not start on master {master!r}: {error}. It needs Java 17 "
             "(JAVA_HOME) and a reachable master; or run with --no-spark.")


def _engine(alerts: int, candidates: int, master: str | None, spark: bool | None,
            survey: str) -> tuple[bool, str]:
    """Whether to run Spark, and why: as told (--spark, --no-spark, --master), else the engine
    :func:`~satcompress.broker.choose_engine` predicts faster on ``local[*]`` for alerts of
    ``survey``."""
    from satcompress.broker import DEFAULT_MASTER, choose_engine, local_cores

    if spark is not None:
        return spark, "--spark" if spark else "--no-spark"
    if master is not None:
        return True, "--master"
    cores = local_cores(DEFAULT_MASTER)
    choice = choose_engine(alerts, candidates, cores, survey=survey)
    return choice.spark, (f"auto: {candidates} of {alerts} alerts pass the cuts; predicted "
                          f"{choice.in_process_s:.1f} s in process, {choice.spark_s:.1f} s "
                          f"with Spark on {cores} cores")


def _classify_files(alerts: list[Path], artifact: Path, out: Path, master: str | None,
                    spark: bool | None, backend: str, cuts: SelectionCuts,
                    survey: str = "auto") -> None:
    """Classify the alerts of ``alerts`` (files, folders) of ``survey`` into ``out`` and its
    summary."""
    import numpy as np
    import pandas as pd

    from satcompress.broker import (
        DEFAULT_MASTER,
        classify_alerts_spark,
        load_classifier,
        problem_rows,
        read_alerts,
        reason_counts,
    )
    from satcompress.broker import classify_alerts as classify_in_process
    from satcompress.broker.lsst import survey_cut_reasons
    from satcompress.fileio import atomic_path, atomic_write_text
    from satcompress.report import rich_table

    classifier = load_classifier(artifact, backend)
    try:
        with console.status("reading alerts"):
            read = read_alerts(alerts, survey)
    except (OSError, ValueError) as error:
        fail(str(error))
    if read.table.empty and read.problems:
        fail(f"No alert could be read from {len(alerts)} path(s); first problem: "
             f"{read.problems[0].source}: {read.problems[0].message}.")
    candidates = int(np.sum(pd.isna(survey_cut_reasons(read.table, cuts))))
    use_spark, reason = _engine(len(read.table), candidates, master, spark, read.survey)
    if _trained_on(classifier) != read.survey:
        console.print(f"note: {read.survey.upper()} alerts, but the artifact's model was trained "
                      f"on {_trained_on(classifier).upper()} light curves", highlight=False)
    master = master or DEFAULT_MASTER
    engine = f"spark {master}" if use_spark else "pandas (in process)"
    console.print(f"engine: {engine} ({reason})", highlight=False)
    started = time.perf_counter()
    with console.status(f"classifying {len(read.table)} alerts with {engine}"):
        if use_spark:
            results = classify_alerts_spark(_spark_session(master), read.table, artifact, cuts,
                                            backend=backend)
        else:
            results = classify_in_process(read, classifier, cuts)
    seconds = time.perf_counter() - started
    results = pd.concat([results, problem_rows(read.problems, classifier.class_names)],
                        ignore_index=True)
    with atomic_path(out) as temporary:
        results.to_parquet(temporary, index=False)
    counts = reason_counts(results)
    unreadable_files = [problem for problem in read.problems if problem.index is None]
    summary = {
        "alerts": [str(path) for path in alerts],
        "artifact": str(artifact),
        "artifact_sha256": classifier.sha256,
        "engine": engine,
        "engine_reason": reason,
        "survey": read.survey,
        "artifact_trained_on": _trained_on(classifier),
        "backend": backend,
        "cuts": asdict(cuts),
        "alerts_read": len(read.table),
        "counts": counts,
        "problems": [problem._asdict() for problem in read.problems],
        "unreadable_files": len(unreadable_files),
        "classification_seconds": seconds,
        "results": str(out),
    }
    atomic_write_text(summary_path(out), json.dumps(summary, indent=2) + "\n")
    console.print(rich_table([{"outcome": k, "alerts": v} for k, v in counts.items()],
                             title=f"{len(results)} alerts, {engine}, {seconds:.1f} s"))
    for problem in read.problems[:_LISTED_PROBLEMS]:
        where = problem.source if problem.index is None else f"{problem.source}[{problem.index}]"
        console.print(f"[yellow]not read:[/] {where}: {problem.message}", highlight=False)
    if len(read.problems) > _LISTED_PROBLEMS:
        console.print(f"[yellow]... and {len(read.problems) - _LISTED_PROBLEMS} more[/] "
                      f"(all in {summary_path(out)})")
    console.print(f"wrote {out} and {summary_path(out)}")


def _trained_on(classifier: Any) -> str:
    """The survey the artifact's model was trained on (its metadata's ``preprocessing.survey``;
    ``ztf`` for artifacts made before it was recorded)."""
    return str((classifier.runtime.metadata.get("preprocessing") or {}).get("survey", "ztf"))


def _classify_stream(folder: Path, artifact: Path, out: Path, master: str | None, backend: str,
                     checkpoint: Path | None, once: bool, poll_seconds: float,
                     max_files_per_batch: int | None, cuts: SelectionCuts,
                     survey: str = "auto") -> None:
    """Classify the files landing in ``folder`` into ``out`` (:func:`broker.classify_stream`)."""
    from satcompress.broker import DEFAULT_MASTER, StreamBatchError, check_stream, classify_stream

    master = master or DEFAULT_MASTER
    try:
        checkpoint = check_stream(folder, out, checkpoint)
    except (OSError, ValueError) as error:
        fail(str(error))

    def report(summary: dict[str, Any]) -> None:
        counts = ", ".join(f"{name}: {count}" for name, count in summary["counts"].items())
        console.print(f"batch {summary['batch_id']}: {len(summary['files'])} file(s), "
                      f"{summary['alerts_read']} alerts ({counts}), "
                      f"{summary['unreadable_files']} unreadable file(s), "
                      f"{summary['seconds']:.1f} s -> {summary['results']}", highlight=False)

    session = _spark_session(master)
    how = "the files there now" if once else f"new files every {poll_seconds:g} s (Ctrl-C stops)"
    console.print(f"streaming {folder} with spark {master}: {how}; results in {out}, progress "
                  f"in {checkpoint}", highlight=False)
    try:
        batches = classify_stream(session, folder, out, artifact, checkpoint, cuts, once=once,
                                  poll_seconds=poll_seconds,
                                  max_files_per_batch=max_files_per_batch, backend=backend,
                                  on_batch=report, survey=survey)
    except StreamBatchError as error:
        fail(str(error))
    alerts = sum(summary["alerts_read"] for summary in batches)
    console.print(f"{len(batches)} batch(es), {alerts} alerts this run; all results: "
                  f"pandas.read_parquet({str(out)!r})", highlight=False)
