"""Budgets: physical units parsed exactly, metric drops in each metric's own direction."""

from __future__ import annotations

import pytest

from satcompress.measure import Measurement
from satcompress.pipeline.budget import Budget, parse_bytes, parse_milliseconds


def measurement(bytes_=1000, ram=2000, p50=1.0, **metrics) -> Measurement:
    return Measurement(parameters=250, nonzero_parameters=250, serialized_bytes=bytes_ + 500,
                       theoretical_bytes=bytes_, macs=1000, peak_ram_bytes=ram,
                       latency_ms_p50=p50, latency_ms_p95=p50 * 1.5, threads=1,
                       metrics=metrics, stage="test")


@pytest.mark.parametrize("text, expected", [("40kB", 40_000), ("1.5MiB", 1_572_864), ("512", 512),
                                            ("2 KiB", 2048), ("1e3B", 1000)])
def test_byte_sizes_with_units(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text, expected", [("2ms", 2.0), ("0.5s", 500.0), ("800us", 0.8), ("3", 3.0)])
def test_latencies_with_units(text, expected):
    assert parse_milliseconds(text) == pytest.approx(expected)


def test_the_command_line_form_parses_every_limit():
    budget = Budget.parse("max_bytes=40kB,max_ram_bytes=1MiB,max_latency_ms=2ms,"
                          "max_metric_drop=tss:0.01+logloss:0.02")
    assert budget.max_bytes == 40_000 and budget.max_ram_bytes == 1_048_576
    assert budget.max_latency_ms == 2.0
    assert budget.max_metric_drop == (("tss", 0.01), ("weighted_log_loss", 0.02))


@pytest.mark.parametrize("text, message", [
    ("max_bytes=40 parsecs", "Cannot read a byte size"),
    ("max_flash=1kB", "Unknown budget limit 'max_flash'"),
    ("max_metric_drop=tss", "must be metric:drop"),
    ("max_metric_drop=charm:0.1", "Unknown metric 'charm'"),
    ("max_bytes=0", "must be > 0"),
    ("max_bytes", "key=value"),
])
def test_bad_budgets_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        Budget.parse(text)


def test_a_fitting_candidate_has_no_violations_and_each_broken_limit_is_named():
    base = measurement(bytes_=100_000, tss=0.70, weighted_log_loss=1.00)
    budget = Budget.parse("max_bytes=40kB,max_latency_ms=2,max_metric_drop=tss:0.01+logloss:0.02")
    fits = measurement(bytes_=39_000, tss=0.695, weighted_log_loss=1.015)
    assert budget.violations(fits, base) == []
    breaks = measurement(bytes_=41_000, p50=3.0, tss=0.68, weighted_log_loss=0.90)
    broken = {violation.limit: violation for violation in budget.violations(breaks, base)}
    assert set(broken) == {"max_bytes", "max_latency_ms", "max_metric_drop[tss]"}
    assert broken["max_metric_drop[tss]"].actual == pytest.approx(0.02)
    # A lower log loss is an improvement, never a violation.
    assert "max_metric_drop[weighted_log_loss]" not in broken


def test_a_limited_metric_missing_from_the_measurement_is_an_error():
    with pytest.raises(ValueError, match="has no such metric"):
        Budget.parse("max_metric_drop=tss:0.01").violations(measurement(hss=0.1), measurement(tss=0.5))


@pytest.mark.parametrize("text, message", [
    ("max_bytes=1e400", "max_bytes: A byte size '1e400' is not a finite number"),
    ("max_ram_bytes=1e400GiB", "max_ram_bytes: A byte size '1e400GiB' is not a finite number"),
    ("max_latency_ms=1e400s", "max_latency_ms: A latency '1e400s' is not a finite number"),
    ("max_bytes=-5kB", "max_bytes must be > 0"),
    ("max_ram_bytes=0.4", "max_ram_bytes must be > 0"),
    ("max_latency_ms=0", "max_latency_ms must be > 0"),
    ("max_latency_ms=1e-400", "max_latency_ms must be > 0"),
    ("max_metric_drop=tss:nan", "max_metric_drop for tss: Cannot read a metric drop 'nan'"),
    ("max_metric_drop=tss:inf", "max_metric_drop for tss: Cannot read a metric drop 'inf'"),
    ("max_metric_drop=tss:1e400", "max_metric_drop for tss: A metric drop '1e400' is not a finite"),
    ("max_metric_drop=tss:-0.01", "max_metric_drop for tss must be >= 0"),
    ("max_metric_drop=tss:lots", "max_metric_drop for tss: Cannot read a metric drop 'lots'"),
])
def test_non_finite_and_non_positive_limits_are_refused_naming_the_key(text, message):
    with pytest.raises(ValueError, match=message):
        Budget.parse(text)


@pytest.mark.parametrize("text, message", [
    ("max_bytes=1kB,max_bytes=2kB", "max_bytes is given twice"),
    ("max_latency_ms=2,max_latency_ms=2", "max_latency_ms is given twice"),
    ("max_metric_drop=tss:0.01+tss:0.5", "gives tss more than once"),
    ("max_metric_drop=logloss:0.1,max_metric_drop=weighted_log_loss:0.2",
     "gives weighted_log_loss more than once"),
])
def test_a_repeated_limit_or_metric_is_refused_not_overwritten(text, message):
    with pytest.raises(ValueError, match=message):
        Budget.parse(text)


def test_a_zero_metric_drop_is_allowed():
    assert Budget.parse("max_metric_drop=tss:0").max_metric_drop == (("tss", 0.0),)


@pytest.mark.parametrize("values, message", [
    ({"max_bytes": float("inf")}, "max_bytes: A byte size inf is not a finite number"),
    ({"max_ram_bytes": float("nan")}, "max_ram_bytes: A byte size nan is not a finite number"),
    ({"max_latency_ms": float("nan")}, "max_latency_ms: A latency nan is not a finite number"),
    ({"max_bytes": True}, "max_bytes: Cannot read a byte size True"),
    ({"max_bytes": 0}, "max_bytes must be > 0"),
    ({"max_metric_drop": {"tss": float("nan")}}, "max_metric_drop for tss: A metric drop nan"),
    ({"max_metric_drop": (("tss", 0.1), ("tss", 0.2))}, "gives tss more than once"),
    ({"max_metric_drop": "tss:0.1"}, "max_metric_drop must map metrics to drops"),
])
def test_direct_construction_is_checked_like_parsing(values, message):
    with pytest.raises(ValueError, match=message):
        Budget(**values)


def test_a_table_or_to_dict_builds_the_same_budget_as_the_command_line():
    parsed = Budget.parse("max_bytes=40kB,max_ram_bytes=1MiB,max_latency_ms=0.5s,"
                          "max_metric_drop=tss:0.01+logloss:0.02")
    table = {"max_bytes": "40kB", "max_ram_bytes": 1_048_576, "max_latency_ms": "0.5s",
             "max_metric_drop": {"tss": 0.01, "logloss": 0.02}}
    assert Budget(**table) == parsed == Budget(**parsed.to_dict())
