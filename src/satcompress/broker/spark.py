"""The classification as an Apache Spark pandas UDF, as the Fink broker runs its classifiers.

Fink (Möller et al. 2021, MNRAS 501, 3272) applies each science module to the alert stream
as a pandas UDF over Spark DataFrames; its t2 module (fink-science ``t2/processor.py``) takes
the ``concat_col`` arrays ``cjd, cfid, cmagpsf, csigmapsf`` and returns one value per alert.
:func:`classification_udf` does the same with a flight artifact and returns the class
probabilities, the predicted class and, for the alerts that fail a cut, the reason
(:func:`satcompress.broker.classify.classify_table`, the code of the in-process path too).

The artifact's bytes travel to the executors in a broadcast variable (no shared file system
is needed on a cluster) and each executor's Python worker loads it once
(:func:`~satcompress.broker.classify.load_classifier`, cached by SHA-256). The alerts are read
by the driver (:func:`~satcompress.broker.alerts.read_alerts`: the files named on the command
line need only exist there; reading Avro inside Spark would need the external ``spark-avro``
package) and distributed as a DataFrame of
:data:`~satcompress.broker.alerts.ALERT_COLUMNS`.

``local[*]`` runs Spark embedded in this process (Java 17 needed); ``spark://host:7077``
submits to a standalone cluster, whose workers need the same satcompress installed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from satcompress.broker.alerts import ALERT_COLUMNS, SelectionCuts
from satcompress.broker.classify import (
    ID_COLUMNS,
    PREDICTED_CLASS,
    REASON,
    classify_table,
    load_classifier,
    result_columns,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, SparkSession
    from pyspark.sql.types import StructType

__all__ = [
    "DEFAULT_MASTER",
    "alert_schema",
    "classification_udf",
    "classify_alerts_spark",
    "result_schema",
    "spark_session",
]

DEFAULT_MASTER = "local[*]"
_ROW = "_row"
_INPUT_COLUMNS = ALERT_COLUMNS[2:]  # the UDF needs no ids


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

    For a ``local`` master the Python workers run this interpreter (so they import the same
    satcompress; ``PYSPARK_PYTHON`` is set to it if unset); on a cluster they run the workers'
    ``PYSPARK_PYTHON``.
    """
    from pyspark.sql import SparkSession  # noqa: PLC0415

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
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.config("spark.pyspark.python", sys.executable).config(
            "spark.pyspark.driver.python", sys.executable)
    with _without_pandas_version_notice():
        session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def alert_schema() -> StructType:
    """Spark schema of a table of :data:`~satcompress.broker.alerts.ALERT_COLUMNS`."""
    from pyspark.sql import types as T  # noqa: PLC0415

    double_array = T.ArrayType(T.DoubleType())
    return T.StructType([
        T.StructField("objectId", T.StringType()),
        T.StructField("candid", T.LongType()),
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
    artifact: str | os.PathLike,
    cuts: SelectionCuts = SelectionCuts(),  # noqa: B008 (frozen, immutable)
) -> Callable[..., Column]:
    """A pandas UDF classifying alerts with ``artifact``: call it on the columns
    ``jd, jdstarthist, ssdistnr, ssmagnr, cjd, cfid, cmagpsf, csigmapsf``; it returns a struct of
    :func:`result_schema`.

    The artifact is checked on the driver first, so a wrong file fails here, not in a task.
    """
    from pyspark.sql.functions import pandas_udf  # noqa: PLC0415

    content = Path(artifact).read_bytes()
    classifier = load_classifier(content)
    shared = spark.sparkContext.broadcast(content)

    def classify(jd: pd.Series, jdstarthist: pd.Series, ssdistnr: pd.Series, ssmagnr: pd.Series,
                 cjd: pd.Series, cfid: pd.Series, cmagpsf: pd.Series,
                 csigmapsf: pd.Series) -> pd.DataFrame:  # fmt: skip
        columns = (jd, jdstarthist, ssdistnr, ssmagnr, cjd, cfid, cmagpsf, csigmapsf)
        table = pd.DataFrame(dict(zip(_INPUT_COLUMNS, (c.reset_index(drop=True) for c in columns))))
        return classify_table(table, load_classifier(shared.value), cuts)

    return pandas_udf(classify, returnType=result_schema(classifier.class_names))


def classify_alerts_spark(
    spark: SparkSession,
    table: pd.DataFrame,
    artifact: str | os.PathLike,
    cuts: SelectionCuts = SelectionCuts(),  # noqa: B008 (frozen, immutable)
    partitions: int | None = None,
) -> pd.DataFrame:
    """Classify a table of :data:`~satcompress.broker.alerts.ALERT_COLUMNS` with Spark.

    The alerts are spread over ``partitions`` partitions (default: Spark's default
    parallelism) and the results collected to the driver in the input order, with the same
    columns as :func:`satcompress.broker.classify.classify_alerts`.
    """
    from pyspark.sql import functions as F  # noqa: PLC0415

    rows = table[list(ALERT_COLUMNS)].reset_index(drop=True)
    with _without_pandas_version_notice():
        udf = classification_udf(spark, artifact, cuts)
        frame = spark.createDataFrame(rows.assign(**{_ROW: range(len(rows))}),
                                      alert_schema().add(_ROW, "long"))  # fmt: skip
        frame = frame.repartition(partitions or spark.sparkContext.defaultParallelism)
        scored = frame.select(_ROW, *ID_COLUMNS, udf(*_INPUT_COLUMNS).alias("result"))
        result = scored.select(_ROW, *ID_COLUMNS, "result.*").toPandas()
    return result.sort_values(_ROW).drop(columns=_ROW).reset_index(drop=True)
