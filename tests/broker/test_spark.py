"""The Spark pandas UDF against the in-process path, on the bundled alerts (one SparkSession)."""

from __future__ import annotations

import pandas.testing as pdt
import pytest

from satcompress.broker import SelectionCuts, classify_alerts, classify_alerts_spark, reason_counts


# PySpark 4.0's toPandas passes pandas 3 a deprecated ``copy`` argument (a DeprecationWarning,
# an error under filterwarnings=error); the converted values are checked exactly below.
pytestmark = pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")


def test_the_spark_udf_gives_exactly_the_in_process_probabilities(spark, bundled, tiny_artifact):
    cuts = SelectionCuts(max_age_days=None)  # classify every alert with enough points: 78
    in_process = classify_alerts(bundled, tiny_artifact, cuts)
    on_spark = classify_alerts_spark(spark, bundled.table, tiny_artifact, cuts, partitions=3)
    pdt.assert_frame_equal(on_spark, in_process, check_exact=True)
    assert reason_counts(on_spark)["classified"] == 78
