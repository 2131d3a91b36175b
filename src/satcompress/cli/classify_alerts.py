"""``satcompress classify-alerts``: class probabilities for raw ZTF alerts, with Spark or pandas."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import typer

from satcompress.cli.common import console, fail

__all__ = ["classify_alerts", "summary_path"]

_LISTED_PROBLEMS = 20


def summary_path(out: Path) -> Path:
    """Where the JSON summary of a results file goes: beside it, ``.json`` instead of its suffix."""
    return out.with_suffix(".json")


def classify_alerts(
    alerts: list[Path] = typer.Argument(
        ..., help="ZTF alert files (.avro packets or Fink's .parquet tables) or folders of them."),
    artifact: Path = typer.Option(
        ..., help="Transient flight artifact (OUT/model.sca of satcompress compress --task "
                  "transients)."),
    out: Path = typer.Option(
        Path("scores.parquet"), help="Results table (Parquet, one row per alert), written "
                                     "atomically; a JSON summary is written beside it."),
    master: str = typer.Option(
        "local[*]", help="Spark master: local[*] runs Spark embedded, spark://HOST:7077 a "
                         "standalone cluster."),
    spark: bool = typer.Option(
        True, "--spark/--no-spark", help="Classify with Spark, or in this process with pandas "
                                         "(for small batches)."),
    max_age_days: float = typer.Option(
        90.0, help="Age cut: largest jd - jdstarthist in days (Fink's t2: 90); 0: no age cut."),
    sso_max_distance_arcsec: float = typer.Option(
        5.0, help="Solar-system cut: reject alerts with a known asteroid this close; 0: no cut."),
) -> None:
    """Classify ALERTS with a transient flight artifact: class probabilities for the alerts that
    pass the selection cuts, the reason for those that do not, and every alert that cannot be
    read counted and listed (reason "unparseable", or the file in the summary)."""
    import pandas as pd

    from satcompress.broker import (
        SelectionCuts,
        classify_alerts_spark,
        load_classifier,
        problem_rows,
        read_alerts,
        reason_counts,
        spark_session,
    )
    from satcompress.broker import classify_alerts as classify_in_process
    from satcompress.fileio import atomic_path, atomic_write_text
    from satcompress.report import rich_table

    if not artifact.is_file():
        fail(f"Artifact {artifact} does not exist; `satcompress compress --task transients` "
             "writes OUT/model.sca.")
    try:
        cuts = SelectionCuts(max_age_days=max_age_days or None,
                             sso_max_distance_arcsec=sso_max_distance_arcsec or None)
        classifier = load_classifier(artifact)
        with console.status("reading alerts"):
            read = read_alerts(alerts)
    except (OSError, ValueError) as error:
        fail(str(error))
    if read.table.empty and read.problems:
        fail(f"No alert could be read from {len(alerts)} path(s); first problem: "
             f"{read.problems[0].source}: {read.problems[0].message}.")
    started = time.perf_counter()
    engine = f"spark {master}" if spark else "pandas (in process)"
    with console.status(f"classifying {len(read.table)} alerts with {engine}"):
        if spark:
            try:
                session = spark_session(master)
            except Exception as error:  # noqa: BLE001 (py4j/Java start-up errors vary)
                fail(f"Spark could not start on master {master!r}: {error}. It needs Java 17 "
                     "(JAVA_HOME) and a reachable master; or run with --no-spark.")
            results = classify_alerts_spark(session, read.table, artifact, cuts)
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
