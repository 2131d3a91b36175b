"""The Spark pandas UDF against the in-process path, on the bundled alerts (one SparkSession)."""

from __future__ import annotations

import pandas.testing as pdt
import pytest

from satcompress.broker import (
    FAULT,
    FAULT_REASON,
    EngineCosts,
    SelectionCuts,
    choose_engine,
    classify_alerts,
    classify_alerts_spark,
    reason_counts,
)


# PySpark 4.0's toPandas passes pandas 3 a deprecated ``copy`` argument (a DeprecationWarning,
# an error under filterwarnings=error); the converted values are checked exactly below.
pytestmark = pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")


def test_the_spark_udf_gives_exactly_the_in_process_probabilities(spark, bundled, tiny_artifact):
    cuts = SelectionCuts(max_age_days=None)  # classify every alert with enough points: 78
    in_process = classify_alerts(bundled, tiny_artifact, cuts)
    on_spark = classify_alerts_spark(spark, bundled.table, tiny_artifact, cuts, partitions=3)
    pdt.assert_frame_equal(on_spark, in_process, check_exact=True)
    assert reason_counts(on_spark)["classified"] == 78


def test_a_fault_comes_out_of_spark_as_in_process(spark, bundled, faulty_artifact):
    cuts = SelectionCuts(max_age_days=None)
    in_process = classify_alerts(bundled, faulty_artifact, cuts)
    on_spark = classify_alerts_spark(spark, bundled.table, faulty_artifact, cuts, partitions=2)
    pdt.assert_frame_equal(on_spark, in_process, check_exact=True)
    assert (on_spark["predicted_class"] == FAULT).sum() == reason_counts(on_spark)[FAULT_REASON] > 0


def test_the_engine_choice_weighs_each_surveys_cost_per_alert():
    costs = EngineCosts(spark_start_s=20.0, per_alert_s=0.0, per_candidate_s=1e-3,
                        lsst_per_candidate_s=3e-3, spark_driver_per_alert_s=0.0,
                        spark_executor_per_alert_s=0.0)
    # 10,000 candidates on 4 cores: ZTF 10 s in process vs 20 + 2.5 s; LSST 30 vs 20 + 7.5 s
    ztf = choose_engine(10_000, 10_000, 4, costs)
    lsst = choose_engine(10_000, 10_000, 4, costs, survey="lsst")
    assert (ztf.spark, lsst.spark) == (False, True)
    assert (lsst.in_process_s, lsst.spark_s) == pytest.approx((30.0, 27.5))
    assert (ztf.in_process_s, ztf.spark_s) == pytest.approx((10.0, 22.5))
