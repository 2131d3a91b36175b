"""Fault injection: how single-event upsets (bit flips) in memory hurt a flight artifact.

A campaign flips ``n`` random bits, ``trials`` times for each ``n`` of :attr:`Campaign.flips`,
either in the runtime's resident tensors (``where="weights"``: the arrays that stay in RAM
between inferences, after load-time folding) or in the artifact file itself (``"file"``: on
its way up or in flash; the loader's checksums refuse it, or its Reed-Solomon code repairs
it). Each faulty model is scored on the test split exactly as a clean one -- thresholds tuned
on the clean validation outputs, as a deployed model's are -- and the drop of the task's
primary metric is recorded with whether any output was non-finite. ``bits`` restricts which
bits of float32 tensors are hit (``exponent`` and its top bit are the ones that matter, as
Li et al., SC'17, found for DNN accelerators; integer tensors are hit only by ``any``).

The campaign is a pure function of the artifact, the data and :attr:`Campaign.seed`.
Non-finite outputs are scored the way an arg-max treats them today -- as the first class --
and counted separately; that is the silent failure protection has to remove.

``protect="ranger"`` runs every faulty model with activation range restriction (Ranger: Chen
et al., DSN 2021; :meth:`satcompress.runtime.Runtime.restrict_activations`), the bounds
calibrated on the clean artifact over the calibration inputs (the training split);
:func:`protection_overhead` measures what it costs at batch 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from satcompress.artifact import ArtifactError, decode_artifact
from satcompress.runtime import Runtime

__all__ = ["BIT_CLASSES", "PROTECTIONS", "WHERE", "Campaign", "FlipResult", "CampaignResult",
           "fault_probabilities", "protection_overhead", "run_campaign"]

BIT_CLASSES: dict[str, tuple[int, ...] | None] = {
    "any": None,
    "sign": (31,),
    "exponent": tuple(range(23, 31)),
    "exponent_top": (30,),
    "mantissa": tuple(range(23)),
}
"""Bit class -> bit positions of a float32 hit (None: every bit of every resident tensor)."""

WHERE = ("weights", "file")
"""Where bits are flipped: the runtime's resident tensors, or the artifact file's bytes."""

PROTECTIONS = ("none", "ranger")
"""Protections a campaign can run the faulty models with."""

Scorer = Callable[[np.ndarray], float]
"""Test-split probabilities (examples, classes) -> the metric's drop from the clean model
(positive: worse)."""


@dataclass(frozen=True)
class Campaign:
    """What to inject: ``flips`` bits per trial, ``trials`` times each, reproducibly from
    ``seed``; a drop above ``threshold`` counts as a silent data corruption that matters."""

    flips: tuple[int, ...] = (1, 10, 100)
    where: str = "weights"
    bits: str = "any"
    trials: int = 100
    seed: int = 0
    threshold: float = 0.1
    protect: str = "none"

    def __post_init__(self) -> None:
        if self.protect not in PROTECTIONS:
            raise ValueError(f"protect must be one of {', '.join(PROTECTIONS)}, "
                             f"got {self.protect!r}.")
        if not self.flips or any(not isinstance(n, int) or n < 1 for n in self.flips):
            raise ValueError(f"flips must be positive whole numbers, got {self.flips!r}.")
        if self.where not in WHERE:
            raise ValueError(f"where must be one of {', '.join(WHERE)}, got {self.where!r}.")
        if self.bits not in BIT_CLASSES:
            raise ValueError(f"bits must be one of {', '.join(BIT_CLASSES)}, got {self.bits!r}.")
        if self.where == "file" and self.bits != "any":
            raise ValueError("A file has no float exponents: use bits='any' with where='file'.")
        if not isinstance(self.trials, int) or self.trials < 1:
            raise ValueError(f"trials must be a positive whole number, got {self.trials!r}.")
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold)
                and self.threshold >= 0):
            raise ValueError(f"threshold must be a finite number >= 0, got {self.threshold!r}.")


@dataclass(frozen=True)
class FlipResult:
    """The trials with ``flips`` bits flipped: every drop, and how often outputs were
    non-finite or (``where="file"``) the file was refused or repaired at load."""

    flips: int
    drops: tuple[float, ...]
    non_finite_trials: int
    refused_trials: int = 0
    repaired_trials: int = 0
    clipped_values: int = 0
    hit_tensors: tuple[tuple[str, ...], ...] = field(default=(), repr=False)

    def summary(self, threshold: float) -> dict[str, float | int]:
        """Mean and sd of the drop, P(drop > threshold), rates of non-finite and refused."""
        drops = np.asarray(self.drops, dtype=np.float64)
        trials = len(self.drops) + self.refused_trials
        return {
            "flips": self.flips,
            "trials": trials,
            "mean_drop": float(drops.mean()) if len(drops) else 0.0,
            "sd_drop": float(drops.std(ddof=1)) if len(drops) > 1 else 0.0,
            "p_drop_over_threshold": float((drops > threshold).sum() / trials),
            "non_finite_rate": self.non_finite_trials / trials,
            "refused_rate": self.refused_trials / trials,
            "repaired_rate": self.repaired_trials / trials,
            "clipped_values": self.clipped_values,
        }


@dataclass(frozen=True)
class CampaignResult:
    """A campaign's results: one :class:`FlipResult` per flip count."""

    campaign: Campaign
    results: tuple[FlipResult, ...]

    def summary_rows(self) -> list[dict[str, float | int]]:
        return [result.summary(self.campaign.threshold) for result in self.results]

    def layer_rows(self) -> list[dict[str, float | int | str]]:
        """Per resident tensor, over the single-flip trials that hit only it: trials and
        P(drop > threshold), most vulnerable first (empty without a 1-flip weights run)."""
        single = [r for r in self.results if r.flips == 1 and r.hit_tensors]
        if not single:
            return []
        by_tensor: dict[str, list[float]] = {}
        for (name,), drop in zip(single[0].hit_tensors, single[0].drops):
            by_tensor.setdefault(name, []).append(drop)
        rows = [{"tensor": name, "trials": len(drops),
                 "p_drop_over_threshold": float(np.mean(np.asarray(drops)
                                                        > self.campaign.threshold)),
                 "mean_drop": float(np.mean(drops))} for name, drops in by_tensor.items()]
        return sorted(rows, key=lambda row: (-row["p_drop_over_threshold"], row["tensor"]))

    def to_dict(self) -> dict:
        return {"campaign": asdict(self.campaign), "summary": self.summary_rows(),
                "layers": self.layer_rows()}


def fault_probabilities(logits: np.ndarray) -> tuple[np.ndarray, bool]:
    """Softmax of ``logits``, a non-finite row replaced by the first class (what arg-max makes
    of it today), and whether there was one."""
    logits = logits.astype(np.float64)
    bad = ~np.isfinite(logits).all(axis=1)
    with np.errstate(all="ignore"):
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    probabilities[bad] = np.eye(logits.shape[1])[0]
    return probabilities, bool(bad.any())


def _eligible(tensors: dict[str, np.ndarray], bits: str) -> list[str]:
    """The tensors ``bits`` can hit, each made a writable array of its own (as RAM is)."""
    names = sorted(name for name, array in tensors.items() if array.size)
    if BIT_CLASSES[bits] is not None:
        names = [name for name in names if tensors[name].dtype == np.float32]
    if not names:
        raise ValueError(f"The artifact keeps no resident tensor that bits={bits!r} can hit.")
    for name in names:
        tensors[name] = np.ascontiguousarray(tensors[name]).copy()
    return names


def _flip_weights(tensors: dict[str, np.ndarray], names: Sequence[str], bits: str, count: int,
                  rng: np.random.Generator) -> tuple[list[tuple[str, int, int]], tuple[str, ...]]:
    """Flip ``count`` random bits in place; return (tensor, byte, bit) of each to undo them."""
    positions = BIT_CLASSES[bits]
    sizes = np.array([tensors[name].size if positions else tensors[name].nbytes * 8
                      for name in names], dtype=np.int64)
    ends = np.cumsum(sizes)
    flipped = []
    for draw in rng.integers(0, ends[-1], size=count):
        index = int(np.searchsorted(ends, draw, side="right"))
        offset = int(draw - (ends[index - 1] if index else 0))
        if positions is None:
            byte, bit = divmod(offset, 8)
        else:  # little-endian float32: bit b of element e is bit b % 8 of byte 4e + b // 8
            chosen = positions[int(rng.integers(0, len(positions)))]
            byte, bit = 4 * offset + chosen // 8, chosen % 8
        tensors[names[index]].reshape(-1).view(np.uint8)[byte] ^= np.uint8(1 << bit)
        flipped.append((names[index], byte, bit))
    return flipped, tuple(sorted({name for name, _, _ in flipped}))


def _undo(tensors: dict[str, np.ndarray], flipped: list[tuple[str, int, int]]) -> None:
    for name, byte, bit in reversed(flipped):
        tensors[name].reshape(-1).view(np.uint8)[byte] ^= np.uint8(1 << bit)


def _weights_trials(runtime: Runtime, x: np.ndarray, score: Scorer, campaign: Campaign,
                    flips: int, rng: np.random.Generator) -> FlipResult:
    tensors = runtime.resident_tensors
    names = _eligible(tensors, campaign.bits)
    drops, hits, non_finite = [], [], 0
    for _ in range(campaign.trials):
        flipped, hit = _flip_weights(tensors, names, campaign.bits, flips, rng)
        try:
            with np.errstate(all="ignore"):
                probabilities, bad = fault_probabilities(runtime.run(x))
        finally:
            _undo(tensors, flipped)
        drops.append(score(probabilities))
        hits.append(hit)
        non_finite += bad
    return FlipResult(flips, tuple(drops), non_finite, clipped_values=runtime.clipped_values,
                      hit_tensors=tuple(hits))


def _file_trials(content: bytes, x: np.ndarray, score: Scorer, campaign: Campaign, flips: int,
                 rng: np.random.Generator, bounds: Mapping[str, tuple[float, float]] | None
                 ) -> FlipResult:
    drops, non_finite, refused, repaired, clipped = [], 0, 0, 0, 0
    for _ in range(campaign.trials):
        damaged = np.frombuffer(content, dtype=np.uint8).copy()
        for draw in rng.integers(0, len(content) * 8, size=flips):
            damaged[draw // 8] ^= np.uint8(1 << int(draw % 8))
        try:
            artifact = decode_artifact(damaged.tobytes())
            runtime = Runtime(artifact)
        except ArtifactError:
            refused += 1  # detected: the file is not used
            continue
        repaired += artifact.corrected_bytes > 0
        runtime.restrict_activations(bounds)
        with np.errstate(all="ignore"):
            probabilities, bad = fault_probabilities(runtime.run(x))
        drops.append(score(probabilities))
        non_finite += bad
        clipped += runtime.clipped_values
    return FlipResult(flips, tuple(drops), non_finite, refused, repaired, clipped)


def run_campaign(content: bytes, x: np.ndarray, score: Scorer, campaign: Campaign,
                 calibration_x: np.ndarray | None = None) -> CampaignResult:
    """Run ``campaign`` on the artifact ``content`` with test inputs ``x``.

    ``score(probabilities)`` returns the metric's drop from the clean artifact on ``x``
    (positive: worse); see :func:`satcompress.cli.inject.task_scorer` for the task's.
    ``calibration_x`` (the training inputs) calibrates the bounds of ``protect="ranger"``.
    """
    bounds = None
    if campaign.protect == "ranger":
        if calibration_x is None:
            raise ValueError("protect='ranger' needs calibration inputs (the training split).")
        bounds = Runtime(decode_artifact(content)).activation_ranges(calibration_x)
    rng = np.random.default_rng(campaign.seed)
    results = []
    for flips in campaign.flips:
        if campaign.where == "weights":
            runtime = Runtime(decode_artifact(content))  # a fresh copy per flip count
            runtime.restrict_activations(bounds)
            results.append(_weights_trials(runtime, x, score, campaign, flips, rng))
        else:
            results.append(_file_trials(content, x, score, campaign, flips, rng, bounds))
    return CampaignResult(campaign, tuple(results))


def protection_overhead(content: bytes, calibration_x: np.ndarray, example: np.ndarray,
                        repeats: int = 500) -> float:
    """Batch-1 latency with Ranger bounds over latency without, medians of ``repeats``
    interleaved runs of one ``example`` (so both see the same machine load)."""
    runtime = Runtime(decode_artifact(content))
    bounds = runtime.activation_ranges(calibration_x)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for protected in (False, True):
            runtime.restrict_activations(bounds if protected else None)
            started = time.perf_counter()
            runtime.run(example)
            times[protected].append(time.perf_counter() - started)
    return float(np.median(times[True]) / np.median(times[False]))
