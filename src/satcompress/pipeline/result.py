"""What a recipe run returns: every stage's measurement, the artifact's, and the verdict.

Below both the runner (:mod:`satcompress.pipeline.runner`), which makes it, and the report
(:mod:`satcompress.report.document`), which renders it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from satcompress.measure import Measurement
from satcompress.pipeline.budget import Budget, Violation
from satcompress.pipeline.flight import VerifyReport
from satcompress.pipeline.recipe import Recipe
from satcompress.report.comparison import ModelComparison

__all__ = ["BudgetNotMet", "RunResult"]


class BudgetNotMet(RuntimeError):
    """The recipe's result breaks the budget; ``result`` holds every stage's measurement."""

    def __init__(self, message: str, result: "RunResult") -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class RunResult:
    """Measurements of the base model, of the model after each stage, and of its artifact.

    ``flight`` is the final model as its artifact delivers it (see
    :func:`satcompress.pipeline.flight.flight_measurement`): the budget's verdict is
    ``flight_violations``; ``verification`` compares the artifact with the final model.
    ``warnings``: what the run found wrong without breaking the budget (a stage that lost most
    of the base model's skill, :func:`satcompress.pipeline.runner.skill_warnings`).
    """

    task: str
    recipe: Recipe
    budget: Budget
    measurements: tuple[Measurement, ...]
    violations: tuple[tuple[Violation, ...], ...]
    model: nn.Module
    flight: Measurement | None = None
    flight_violations: tuple[Violation, ...] = ()
    verification: VerifyReport | None = None
    comparison: ModelComparison | None = None
    firmware: dict | None = None
    out_dir: Path | None = None
    warnings: tuple[str, ...] = ()

    @property
    def artifact_path(self) -> Path | None:
        """The artifact written (``OUT/model.sca``, or ``OUT/rejected/model.sca`` over budget)."""
        return None if self.verification is None else Path(self.verification.artifact)

    @property
    def report_path(self) -> Path | None:
        """The run's HTML report."""
        return None if self.out_dir is None else self.out_dir / "report.html"

    @property
    def final(self) -> Measurement:
        return self.measurements[-1]

    def rows(self) -> list[dict]:
        """One table row per stage and one for the artifact, with the limits each breaks."""
        counted = ["stored widths, torch"] * len(self.measurements)
        candidates = list(zip(self.measurements, self.violations, counted))
        if self.flight is not None:
            candidates.append((self.flight, self.flight_violations, "artifact file, runtime"))
        return [
            {**measurement.summary_row(), "counted": counted,
             "fits_budget": "yes" if not broken else "; ".join(str(v) for v in broken)}
            for measurement, broken, counted in candidates
        ]
