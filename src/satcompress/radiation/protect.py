"""Protection written into an artifact at compress time (issue 17), torch-free.

:func:`protect_artifact` records in an artifact's metadata the protections a recipe's
``protect = [...]`` names (:data:`satcompress.runtime.protect.PROTECTIONS`), the layer
output ranges calibrated on the training split (Ranger: Chen et al., DSN 2021) among them;
the runtime applies them at load without recalibration
(:class:`satcompress.runtime.protect.Protection`). The record is part of the file, so its
bytes count in the budget's ``max_bytes`` like every other byte. ``compact-vulnerable``
records the weights :func:`vulnerable_weights` finds vulnerable under the other protections.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from satcompress.artifact import Artifact, read_artifact, write_artifact
from satcompress.runtime import Runtime
from satcompress.radiation.inject import BIT_CLASSES
from satcompress.runtime.protect import (
    DEFAULT_SCRUB_EVERY,
    PROTECTIONS,
    Protection,
    classify_logits,
    compact_form,
    layer_weights,
)

__all__ = ["PROBE_FLIPS", "PROBE_ROWS", "PROBE_NATS", "check_protections", "protect_artifact",
           "vulnerable_weights"]

PROBE_FLIPS = 48
"""Elements of each weight whose top exponent bit the probe flips, one at a time."""
PROBE_ROWS = 256
"""Calibration rows the probe runs each flipped model on."""
PROBE_NATS = 0.1
"""A flip moving the class probabilities by more than this mean KL divergence (nats) makes
its weight vulnerable."""
_TOP_EXPONENT = np.uint32(1 << BIT_CLASSES["exponent_top"][0])


def check_protections(protect: Sequence[str]) -> tuple[str, ...]:
    """``protect`` as a tuple, each name one of :data:`PROTECTIONS` and given once."""
    if isinstance(protect, str) or not all(isinstance(name, str) for name in protect):
        raise ValueError(f"protect must be a list of names among {', '.join(PROTECTIONS)}, "
                         f"e.g. [\"ranges\", \"tables\"]; got {protect!r}.")
    unknown = sorted(set(protect) - set(PROTECTIONS))
    repeated = sorted({name for name in protect if list(protect).count(name) > 1})
    if {"compact", "compact-vulnerable"} <= set(protect):
        raise ValueError("protect names both compact (every clustered weight) and "
                         "compact-vulnerable (the vulnerable ones); choose one.")
    if unknown or repeated:
        problem = f"unknown {unknown}" if unknown else f"repeated {repeated}"
        raise ValueError(f"protect names {problem}; choose each at most once among "
                         f"{', '.join(PROTECTIONS)}.")
    return tuple(protect)


def protect_artifact(path: str | os.PathLike, protect: Sequence[str],
                     calibration_x: np.ndarray) -> Artifact:
    """Rewrite the artifact at ``path`` (atomically, keeping its FEC) recording the
    protections ``protect`` names, the ranges calibrated on ``calibration_x`` (the training
    inputs), and return it; an empty ``protect`` removes any record."""
    protect = check_protections(protect)
    stored = read_artifact(Path(path))
    ranges = {}
    if "ranges" in protect:
        ranges = Runtime(stored, protect=False).activation_ranges(calibration_x)
    compact: bool | tuple[str, ...] = "compact" in protect
    if "compact-vulnerable" in protect:
        compact = vulnerable_weights(stored, Protection(ranges, "tables" in protect),
                                     calibration_x)
    protection = Protection(ranges, "tables" in protect, compact,
                            DEFAULT_SCRUB_EVERY if "scrub" in protect else 0)
    metadata = {key: value for key, value in stored.metadata.items() if key != "protection"}
    if protect:
        metadata["protection"] = protection.to_metadata()
    return write_artifact(path, stored.graph, stored.tensors, metadata,
                          fec=stored.fec_parity > 0)


def vulnerable_weights(artifact: Artifact, protection: Protection, calibration_x: np.ndarray,
                       seed: int = 0) -> tuple[str, ...]:
    """The clustered weights (those ``compact`` can hold as indices) where a flip of a
    float32's top exponent bit gets past ``protection``: for each, :data:`PROBE_FLIPS` random
    elements (seeded) are flipped one at a time in the runtime's resident memory, and the
    weight is vulnerable if any flip moves the class probabilities on the first
    :data:`PROBE_ROWS` rows of ``calibration_x`` by more than :data:`PROBE_NATS` (mean KL
    divergence from the clean model's). Li et al. (SC'17): the top exponent bit is where a
    float's upsets do their harm."""
    probe = dataclasses.replace(artifact, metadata={**artifact.metadata,
                                                    "protection": protection.to_metadata()})
    runtime = Runtime(probe)
    x = np.ascontiguousarray(calibration_x[:PROBE_ROWS])
    clean = _probabilities(runtime.run(x))
    memory = runtime.resident_memory
    weights = layer_weights(runtime.program, memory)
    rng = np.random.default_rng(seed)
    vulnerable = []
    for name in sorted(weights):
        value = memory[name]
        if compact_form(value) is None:
            continue
        bits = value.reshape(-1).view(np.uint32)
        for element in rng.choice(bits.size, min(PROBE_FLIPS, bits.size), replace=False):
            bits[element] ^= _TOP_EXPONENT
            try:
                with np.errstate(all="ignore"):  # a blown-up weight may overflow: that is the point
                    flipped = _probabilities(runtime.run(x))
                    divergence = np.sum(clean * (np.log(clean) - np.log(flipped)), axis=1)
            finally:
                bits[element] ^= _TOP_EXPONENT
            if not np.all(np.isfinite(divergence)) or divergence.mean() > PROBE_NATS:
                vulnerable.append(name)
                break
    return tuple(vulnerable)


def _probabilities(logits: np.ndarray) -> np.ndarray:
    """:func:`~satcompress.runtime.protect.classify_logits`'s probabilities (NaN in a fault
    row), floored at 1e-12 so a KL divergence stays finite."""
    return np.maximum(classify_logits(logits).probabilities, 1e-12)
