"""Protection written into an artifact at compress time (issue 17), torch-free.

:func:`protect_artifact` records in an artifact's metadata the protections a recipe's
``protect = [...]`` names (:data:`satcompress.runtime.protect.PROTECTIONS`), the layer
output ranges calibrated on the training split (Ranger: Chen et al., DSN 2021) among them;
the runtime applies them at load without recalibration
(:class:`satcompress.runtime.protect.Protection`). The record is part of the file, so its
bytes count in the budget's ``max_bytes`` like every other byte.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from satcompress.artifact import Artifact, read_artifact, write_artifact
from satcompress.runtime import Runtime
from satcompress.runtime.protect import DEFAULT_SCRUB_EVERY, PROTECTIONS, Protection

__all__ = ["check_protections", "protect_artifact"]


def check_protections(protect: Sequence[str]) -> tuple[str, ...]:
    """``protect`` as a tuple, each name one of :data:`PROTECTIONS` and given once."""
    if isinstance(protect, str) or not all(isinstance(name, str) for name in protect):
        raise ValueError(f"protect must be a list of names among {', '.join(PROTECTIONS)}, "
                         f"e.g. [\"ranges\", \"tables\"]; got {protect!r}.")
    unknown = sorted(set(protect) - set(PROTECTIONS))
    repeated = sorted({name for name in protect if list(protect).count(name) > 1})
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
    protection = Protection(ranges, "tables" in protect, "compact" in protect,
                            DEFAULT_SCRUB_EVERY if "scrub" in protect else 0)
    metadata = {key: value for key, value in stored.metadata.items() if key != "protection"}
    if protect:
        metadata["protection"] = protection.to_metadata()
    return write_artifact(path, stored.graph, stored.tensors, metadata,
                          fec=stored.fec_parity > 0)
