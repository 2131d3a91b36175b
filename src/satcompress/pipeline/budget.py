"""Hard limits of a deployment target, in physical units, and the check a candidate must pass.

A budget is written as ``max_bytes=40kB,max_ram_bytes=256KiB,max_latency_ms=2,
max_metric_drop=tss:0.01`` on the command line (:meth:`Budget.parse`), or given as keyword
values (``Budget(**table)`` of a TOML table or of :meth:`Budget.to_dict`: sizes and latencies
as numbers or strings with units, metric drops as ``{metric = drop}``). Every route is checked
alike: sizes and latencies must be finite and > 0, metric drops finite and >= 0, and no limit
or metric may be given twice. A metric drop is measured in the metric's own direction: for TSS
(higher is better) the drop is ``base - candidate``; for a log loss (lower is better) it is
``candidate - base``.

``max_sdc_probability=0.001`` limits the artifact's vulnerability to upsets in RAM: the
probability that one random bit flip in the runtime's resident memory moves the task's
primary metric by more than :data:`satcompress.radiation.SDC_THRESHOLD`, with the protection
the artifact records, estimated by a seeded campaign of
:data:`satcompress.radiation.SDC_TRIALS` single-flip trials
(:func:`satcompress.radiation.sdc_probability`). ``compress`` (and the final run of each
candidate ``search`` delivers) measures it on the artifact once the artifact meets every other
limit, and records it among the artifact's metrics as :data:`SDC_METRIC`; a measurement
without it (a stage's PyTorch model, a search trial, an artifact already over another limit)
is not judged on it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from satcompress.measure import Measurement
from satcompress.tasks import user

__all__ = [
    "Budget",
    "Violation",
    "parse_bytes",
    "parse_milliseconds",
    "metric_direction",
    "METRIC_ALIASES",
    "SDC_METRIC",
    "shortfall",
]

_BYTE_UNITS = {
    "b": 1, "": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}  # fmt: skip
_TIME_UNITS = {"ms": 1.0, "": 1.0, "s": 1000.0, "us": 1e-3}
_QUANTITY = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*$")

HIGHER_IS_BETTER = {"tss", "hss", "recall", "precision", "bss", "macro_f1", "accuracy",
                    "ia_vs_rest_auc"}  # fmt: skip
LOWER_IS_BETTER = {"weighted_log_loss", "false_alarm_rate"}
METRIC_ALIASES = {"logloss": "weighted_log_loss", "log_loss": "weighted_log_loss",
                  "auc": "ia_vs_rest_auc", "f1": "macro_f1"}  # fmt: skip
SDC_METRIC = "sdc_probability"
"""The artifact measurement's metric that ``max_sdc_probability`` limits."""


def _quantity(text: str | float, units: dict[str, float], what: str, example: str) -> float:
    """``text`` (a number, or a string of a number and one of ``units``) in the base unit."""
    if isinstance(text, numbers.Real) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _QUANTITY.match(text) if isinstance(text, str) else None
        unit = match.group(2).lower() if match else None
        if match is None or unit not in units:
            named = ", ".join(unit for unit in units if unit)
            raise ValueError(
                f"Cannot read {what} {text!r}: write a finite number"
                f"{f' with one of the units {named}' if named else ''} (e.g. {example})."
            )
        value = float(match.group(1)) * units[unit]
    if not math.isfinite(value):
        raise ValueError(f"{what.capitalize()} {text!r} is not a finite number; write a finite "
                         f"value (e.g. {example}).")
    return value


def parse_bytes(text: str | float) -> int:
    """``"40kB"`` -> 40000, ``"1.5MiB"`` -> 1572864; a bare number is bytes (rounded)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    return int(round(_quantity(text, _BYTE_UNITS, "a byte size", "40kB or 1MiB")))


def parse_milliseconds(text: str | float) -> float:
    """``"2ms"`` -> 2.0, ``"0.5s"`` -> 500.0, ``"800us"`` -> 0.8; a bare number is ms."""
    return _quantity(text, _TIME_UNITS, "a latency", "2ms or 0.5s")


def _is_pairs(value: Any) -> bool:
    """Whether ``value`` is a list or tuple of two-item lists or tuples."""
    return isinstance(value, (list, tuple)) and all(
        isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in value
    )


def _metric_drop(metric: str, drop: str | float) -> tuple[str, float]:
    """One ``(metric, drop)`` pair, the metric's alias resolved and the drop checked."""
    if not isinstance(metric, str):
        raise ValueError(f"Budget max_metric_drop names metric {metric!r}; name it as text, "
                         "e.g. tss:0.01.")
    metric = METRIC_ALIASES.get(metric.strip(), metric.strip())
    metric_direction(metric)
    try:
        value = _quantity(drop, {"": 1.0}, "a metric drop", "tss:0.01")
    except ValueError as error:
        raise ValueError(f"Budget max_metric_drop for {metric}: {error}") from None
    if value < 0:
        raise ValueError(f"Budget max_metric_drop for {metric} must be >= 0, got {drop!r}.")
    return metric, value


def metric_direction(metric: str) -> bool:
    """True when higher values of ``metric`` are better; a clear error for unknown metrics."""
    metric = METRIC_ALIASES.get(metric, metric)
    if metric in HIGHER_IS_BETTER or metric.startswith("recall_"):
        return True
    if metric in LOWER_IS_BETTER:
        return False
    if metric in user.METRICS:  # one registered for a user's task
        return user.METRICS[metric]
    known = sorted(HIGHER_IS_BETTER | LOWER_IS_BETTER | set(METRIC_ALIASES))
    raise ValueError(f"Unknown metric {metric!r} in a budget; known metrics: {', '.join(known)}.")


@dataclass(frozen=True)
class Violation:
    """One limit and a candidate's value for it: which, the limit, and the value.

    :meth:`Budget.violations` returns only limits a candidate breaks; :meth:`Budget.usage`
    returns every limit set, broken or not (``broken`` tells).
    """

    limit: str
    allowed: float
    actual: float

    @property
    def broken(self) -> bool:
        """Whether the value exceeds the limit (by more than float rounding)."""
        return self.actual > self.allowed + 1e-12

    @property
    def relative_excess(self) -> float:
        """How far over the limit, as a fraction of it (absolute when the limit is 0)."""
        over = self.actual - self.allowed
        return over / self.allowed if self.allowed > 0 else over

    def __str__(self) -> str:
        def shown(value: float) -> str:  # byte counts in full, other quantities to 6 digits
            return f"{value:.0f}" if self.limit.endswith("bytes") else f"{value:.6g}"

        return f"{self.limit}: {shown(self.actual)} > allowed {shown(self.allowed)}"


@dataclass(frozen=True)
class Budget:
    """Hard limits; ``None`` means unconstrained.

    Construction checks every limit (see the module notes) and normalises it: sizes and
    latencies may be given as strings with units, metric drops as a mapping; the stored values
    are the types below.

    Attributes
    ----------
    max_bytes : int, optional
        Flash: everything the flight artifact stores (here: the measurement's
        ``theoretical_bytes`` until the artifact exists).
    max_ram_bytes : int, optional
        Peak RAM of one inference (weights + live activations).
    max_latency_ms : float, optional
        Batch-1 latency, p50, on the measuring machine.
    max_metric_drop : tuple of (metric, drop) pairs
        Largest allowed worsening of each named test metric relative to the base model.
    max_sdc_probability : float, optional
        Largest allowed probability, between 0 and 1, that one bit flip in resident memory
        is a silent data corruption (see the module notes).
    """

    max_bytes: int | None = None
    max_ram_bytes: int | None = None
    max_latency_ms: float | None = None
    max_metric_drop: tuple[tuple[str, float], ...] = ()
    max_sdc_probability: float | None = None

    def __post_init__(self) -> None:
        limits = (("max_bytes", parse_bytes), ("max_ram_bytes", parse_bytes),
                  ("max_latency_ms", parse_milliseconds))
        for name, parse in limits:
            value = getattr(self, name)
            if value is None:
                continue
            try:
                parsed = parse(value)
            except ValueError as error:
                raise ValueError(f"Budget {name}: {error}") from None
            if not parsed > 0:
                raise ValueError(f"Budget {name} must be > 0, got {value!r}; omit the limit "
                                 "to leave it unconstrained.")
            object.__setattr__(self, name, parsed)
        given = self.max_metric_drop
        pairs = tuple(given.items()) if isinstance(given, Mapping) else given
        if not _is_pairs(pairs):
            raise ValueError(f"Budget max_metric_drop must map metrics to drops, e.g. "
                             f"{{'tss': 0.01}}; got {given!r}.")
        drops = tuple(_metric_drop(metric, drop) for metric, drop in pairs)
        metrics = [metric for metric, _ in drops]
        repeated = sorted({metric for metric in metrics if metrics.count(metric) > 1})
        if repeated:
            raise ValueError(f"Budget max_metric_drop gives {', '.join(repeated)} more than once "
                             "(aliases count as the same metric); give each metric one drop.")
        object.__setattr__(self, "max_metric_drop", drops)
        if self.max_sdc_probability is not None:
            try:
                probability = _quantity(self.max_sdc_probability, {"": 1.0}, "a probability",
                                        "0.001")
            except ValueError as error:
                raise ValueError(f"Budget max_sdc_probability: {error}") from None
            if not 0 <= probability <= 1:
                raise ValueError(f"Budget max_sdc_probability must be between 0 and 1, got "
                                 f"{self.max_sdc_probability!r}.")
            object.__setattr__(self, "max_sdc_probability", probability)

    @classmethod
    def parse(cls, text: str) -> "Budget":
        """Parse ``"max_bytes=40kB,max_metric_drop=tss:0.01"`` (comma-separated key=value).

        ``max_metric_drop`` may repeat, or list several ``metric:drop`` pairs joined by ``+``;
        every other limit, and every metric, may be given once only.
        """
        fields = [field.name for field in dataclasses.fields(cls)]
        settings: dict[str, Any] = {"max_metric_drop": []}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, separator, value = item.partition("=")
            key = key.strip()
            if not separator or not value.strip():
                raise ValueError(f"Budget item {item!r} is not of the form key=value.")
            if key not in fields:
                raise ValueError(f"Unknown budget limit {key!r}; the limits are "
                                 f"{', '.join(fields)}.")
            if key == "max_metric_drop":
                for pair in value.split("+"):
                    metric, colon, drop = pair.partition(":")
                    if not colon:
                        raise ValueError(
                            f"max_metric_drop {pair!r} must be metric:drop, e.g. tss:0.01."
                        )
                    settings["max_metric_drop"].append((metric, drop))
            elif key in settings:
                raise ValueError(f"Budget limit {key} is given twice ({settings[key]!r} and "
                                 f"{value.strip()!r}); give it once.")
            else:
                settings[key] = value.strip()
        return cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_bytes": self.max_bytes,
            "max_ram_bytes": self.max_ram_bytes,
            "max_latency_ms": self.max_latency_ms,
            "max_metric_drop": dict(self.max_metric_drop),
            "max_sdc_probability": self.max_sdc_probability,
        }

    def violations(self, candidate: Measurement, base: Measurement) -> list[Violation]:
        """Every limit ``candidate`` breaks (empty when it fits), relative to ``base``."""
        return [usage for usage in self.usage(candidate, base) if usage.broken]

    def usage(self, candidate: Measurement, base: Measurement) -> list[Violation]:
        """``candidate``'s value for every limit set (broken or not), relative to ``base``.

        The metric drop is measured in the metric's direction (see the module docstring);
        ``max_sdc_probability`` is judged where ``candidate.metrics`` has :data:`SDC_METRIC`.
        """
        found = []
        resource_limits = (
            ("max_bytes", self.max_bytes, candidate.theoretical_bytes),
            ("max_ram_bytes", self.max_ram_bytes, candidate.peak_ram_bytes),
            ("max_latency_ms", self.max_latency_ms, candidate.latency_ms_p50),
        )
        for name, allowed, actual in resource_limits:
            if allowed is not None:
                found.append(Violation(name, allowed, actual))
        for metric, allowed_drop in self.max_metric_drop:
            for side, values in (("candidate", candidate.metrics), ("base", base.metrics)):
                if metric not in values:
                    raise ValueError(
                        f"The budget limits {metric!r} but the {side} measurement has no such "
                        f"metric; it has {', '.join(sorted(values))}."
                    )
            change = candidate.metrics[metric] - base.metrics[metric]
            drop = -change if metric_direction(metric) else change
            found.append(Violation(f"max_metric_drop[{metric}]", allowed_drop, drop))
        if self.max_sdc_probability is not None and SDC_METRIC in candidate.metrics:
            found.append(Violation("max_sdc_probability", self.max_sdc_probability,
                                   candidate.metrics[SDC_METRIC]))
        return found


def shortfall(violations: Sequence[Violation]) -> tuple[int, float]:
    """Sort key of a candidate by how far it misses a budget: the number of limits broken,
    then their summed relative excess. The smallest is the closest candidate."""
    broken = [violation for violation in violations if violation.broken]
    return len(broken), sum(violation.relative_excess for violation in broken)
