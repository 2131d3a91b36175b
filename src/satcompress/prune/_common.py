"""The report every pruning stage leaves behind (fine-tuning settings: satcompress.finetune).

Every pruning stage fine-tunes briefly after it removes weights (the "prune -> retrain" loop of
Han et al. 2015) and records what it did on the returned model as a plain, JSON-able dict in
the attribute ``prune_report_`` (read it with :func:`prune_report`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from satcompress.stages import stage_report


__all__ = ["PRUNE_REPORT_ATTRIBUTE", "prune_report"]

PRUNE_REPORT_ATTRIBUTE = "prune_report_"
"""Name of the model attribute where a pruning stage leaves its report (a JSON-able dict)."""


def prune_report(model: nn.Module) -> dict[str, Any]:
    """A copy of the report the last pruning stage stored on ``model``.

    Raises
    ------
    ValueError
        If ``model`` was not produced by a satcompress pruning stage.
    """
    return stage_report(model, PRUNE_REPORT_ATTRIBUTE, "pruning", "a satcompress.prune stage")

