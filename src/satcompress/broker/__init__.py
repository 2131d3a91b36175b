"""Live classification of raw ZTF and LSST alerts with a flight artifact, as an alert broker
runs it.

The compressed t2 classifier of Allam & McEwen (2022) runs inside the Fink broker (Möller et
al. 2021) as Spark pandas UDFs over the ZTF alert stream. This package does the same with a
satcompress artifact and the NumPy runtime (no PyTorch):

* :mod:`~satcompress.broker.alerts`: read ZTF alert packets (Avro with fastavro, or Fink's
  Parquet form), flatten them, build light curves, the selection cuts (with numbers);
  :mod:`~satcompress.broker.lsst` the same for Rubin (LSST) and ELAsTiCC alerts;
* :mod:`~satcompress.broker.classify`: cuts + the transient task's GP preprocessing + the
  runtime (a row whose logits are not finite is a fault, never a class), one code path for
  every engine; the in-process path (pandas, no Spark);
* :mod:`~satcompress.broker.spark`: the pandas UDF, a local or cluster SparkSession, a
  standalone cluster on this machine;
* :mod:`~satcompress.broker.streaming`: a Structured Streaming job classifying alert files as
  they land in a folder, each alert written exactly once.

::

    from satcompress import broker
    alerts = broker.read_alerts(["alerts/"])
    scores = broker.classify_alerts(alerts, "out/model.sca")            # pandas, in process
    spark = broker.spark_session("local[*]")
    same = broker.classify_alerts_spark(spark, alerts.table, "out/model.sca")

``satcompress classify-alerts`` is the command line; ``benchmarks/broker.py`` measures the
throughput.
"""

from satcompress.broker.alerts import (
    ALERT_COLUMNS,
    BUNDLED_ALERTS,
    AlertProblem,
    Alerts,
    SelectionCuts,
    alert_files,
    bundled_alert_paths,
    cut_reasons,
    flatten_alert,
    light_curves,
    read_alerts,
)
from satcompress.broker.classify import (
    FAULT,
    FAULT_REASON,
    ID_COLUMNS,
    PREDICTED_CLASS,
    REASON,
    UNPARSEABLE,
    Classifier,
    PreprocessedAlerts,
    classify_alerts,
    classify_examples,
    classify_table,
    load_classifier,
    predict_probabilities,
    preprocess_alerts,
    preprocessing_config,
    probability_column,
    problem_rows,
    reason_counts,
    result_columns,
)
from satcompress.broker.spark import (
    DEFAULT_MASTER,
    EngineChoice,
    EngineCosts,
    alert_schema,
    choose_engine,
    classification_udf,
    classify_alerts_spark,
    local_cores,
    result_schema,
    spark_session,
    standalone_cluster,
)
from satcompress.broker.streaming import (
    ALERT_FILE_GLOB,
    StreamBatchError,
    batch_path,
    check_stream,
    classify_stream,
    default_checkpoint,
    results_schema,
)

__all__ = [
    "ALERT_COLUMNS",
    "BUNDLED_ALERTS",
    "AlertProblem",
    "Alerts",
    "SelectionCuts",
    "alert_files",
    "bundled_alert_paths",
    "cut_reasons",
    "flatten_alert",
    "light_curves",
    "read_alerts",
    "FAULT",
    "FAULT_REASON",
    "ID_COLUMNS",
    "PREDICTED_CLASS",
    "REASON",
    "UNPARSEABLE",
    "Classifier",
    "PreprocessedAlerts",
    "classify_alerts",
    "classify_examples",
    "classify_table",
    "load_classifier",
    "predict_probabilities",
    "preprocess_alerts",
    "preprocessing_config",
    "probability_column",
    "problem_rows",
    "reason_counts",
    "result_columns",
    "DEFAULT_MASTER",
    "EngineChoice",
    "EngineCosts",
    "alert_schema",
    "choose_engine",
    "classification_udf",
    "classify_alerts_spark",
    "local_cores",
    "result_schema",
    "spark_session",
    "standalone_cluster",
    "ALERT_FILE_GLOB",
    "StreamBatchError",
    "batch_path",
    "check_stream",
    "classify_stream",
    "default_checkpoint",
    "results_schema",
]
