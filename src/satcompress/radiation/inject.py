"""Fault injection: how single-event upsets (bit flips) in memory hurt a flight artifact.

A campaign flips ``n`` random bits, ``trials`` times for each ``n`` of :attr:`Campaign.flips`,
either in the runtime's resident memory (``where="weights"``: the arrays that stay in RAM
between inferences, :attr:`satcompress.runtime.Runtime.resident_memory`, in the layout the
artifact's protection gives them) or in the artifact file itself (``"file"``: on its way up
or in flash; the loader's checksums refuse it, or its Reed-Solomon code repairs it). Each
faulty model is scored on the test split exactly as a clean one -- thresholds tuned on the
clean validation outputs, as a deployed model's are -- and the drop of the task's primary
metric is recorded with whether any output was non-finite. ``bits`` restricts which bits of
float32 arrays are hit (``exponent`` and its top bit are the ones that matter, as Li et al.,
SC'17, found for DNN accelerators; integer arrays are hit only by ``any``).

The campaign is a pure function of the artifact, the data and :attr:`Campaign.seed`. Bits
are flipped after a scrub and the inference runs before the next (scrubbing is off during
trials): the exposure a flip has. A non-finite row of logits is a fault that
:meth:`~satcompress.runtime.Runtime.classify` reports, never a class; to score the metric it
counts as the first class (what an arg-max made of it) and the trials with one are counted.
An inference that raises (an upset shape table) is a detected fault, counted apart.

``protect`` chooses the protection the faulty models run with: ``"stored"`` (the default),
the artifact's own (:mod:`satcompress.runtime.protect`; none when it records none);
``"none"``, the runtime without it; ``"ranger"``, without it but with the layer outputs'
ranges (Ranger: Chen et al., DSN 2021; :meth:`~satcompress.runtime.Runtime.
restrict_activations`) calibrated on the calibration inputs (the training split).
:func:`protection_overhead` measures what a protection costs at batch 1, and
:func:`sdc_probability` is the vulnerability a budget's ``max_sdc_probability`` limits.

``backend="c"`` runs the campaign on the artifact's generated C compiled for this machine
(:class:`satcompress.firmware.host.CRuntime`, :func:`c_runtime`): bits are flipped in what the
compiled library holds in RAM between inferences (its ``resident_memory``: the three copies
of the protected tables and, with ``ram_bytes``, the weight tables decoded into RAM at init),
its ``predict`` runs, and the metric is scored from its logits. Weights in flash (``const``
data; read-only on the host) are not RAM and are out of scope for upsets in RAM, and the
static arena is rewritten by every inference, so code without a protection record, or
without ``tables`` and RAM weight tables, holds nothing to hit (a ``ValueError`` says so).
The library is compiled with the artifact's protection and scrubbing deferred past the
campaign (as the NumPy campaign turns it off), and its state is shared by the process: after
every trial the resident memory is restored from a pristine copy, and checked.
For the float bit classes a block's bytes are read as float32 words (the tables the code
holds are float32 but for integer ones, whose words are hit as if they were floats).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from satcompress.artifact import ArtifactError, decode_artifact
from satcompress.runtime import Runtime
from satcompress.runtime.protect import classify_logits

if TYPE_CHECKING:
    from satcompress.firmware.host import CRuntime

__all__ = ["BACKENDS", "BIT_CLASSES", "PROTECTIONS", "SDC_THRESHOLD", "SDC_TRIALS", "WHERE",
           "Campaign", "FlipResult", "CampaignResult", "c_runtime", "fault_probabilities",
           "protection_overhead", "run_campaign", "sdc_probability", "task_scorer"]

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

PROTECTIONS = ("stored", "none", "ranger")
"""Protections a campaign can run the faulty models with (see the module docstring)."""

BACKENDS = ("numpy", "c")
"""What runs the faulty model: the NumPy runtime, or the generated C compiled for the host."""

_NEVER = 2**31 - 1
"""The scrub period the C of a campaign is compiled with: no scrub falls in a campaign."""

SDC_TRIALS = 1000
"""Single-flip trials of :func:`sdc_probability` (0 of 1,000: a 95 % upper bound of 0.3 %)."""

SDC_THRESHOLD = 0.1
"""A metric drop above this is a silent data corruption for :func:`sdc_probability`."""

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
    protect: str = "stored"
    backend: str = "numpy"
    ram_bytes: int = 0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, "
                             f"got {self.backend!r}.")
        if not isinstance(self.ram_bytes, int) or self.ram_bytes < 0:
            raise ValueError(f"ram_bytes must be a whole number >= 0, got {self.ram_bytes!r}.")
        if self.backend == "numpy" and self.ram_bytes:
            raise ValueError("ram_bytes (RAM weight tables) is for backend='c' only.")
        if self.backend == "c" and (self.where != "weights" or self.protect != "stored"):
            raise ValueError("backend='c' flips bits in the compiled library's RAM as the "
                             "artifact's protection lays it out: use where='weights' and "
                             "protect='stored'.")
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
    non-finite, the inference raised (``failed``) or (``where="file"``) the file was refused
    or repaired at load."""

    flips: int
    drops: tuple[float, ...]
    non_finite_trials: int
    refused_trials: int = 0
    repaired_trials: int = 0
    clipped_values: int = 0
    hit_tensors: tuple[tuple[str, ...], ...] = field(default=(), repr=False)
    failed_trials: int = 0

    def summary(self, threshold: float) -> dict[str, float | int]:
        """Mean and sd of the drop, P(drop > threshold), rates of non-finite, failed and
        refused."""
        drops = np.asarray(self.drops, dtype=np.float64)
        trials = len(self.drops) + self.refused_trials + self.failed_trials
        return {
            "flips": self.flips,
            "trials": trials,
            "mean_drop": float(drops.mean()) if len(drops) else 0.0,
            "sd_drop": float(drops.std(ddof=1)) if len(drops) > 1 else 0.0,
            "p_drop_over_threshold": float((drops > threshold).sum() / trials),
            "non_finite_rate": self.non_finite_trials / trials,
            "failed_rate": self.failed_trials / trials,
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
        """Per resident array, over the single-flip trials that hit only it and ran: trials
        and P(drop > threshold), most vulnerable first (empty without a 1-flip weights run)."""
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
    result = classify_logits(logits)
    probabilities = result.probabilities
    probabilities[result.faults] = np.eye(probabilities.shape[1])[0]
    return probabilities, bool(result.faults.any())


def _eligible(memory: dict[str, np.ndarray], bits: str) -> list[str]:
    """The resident arrays ``bits`` can hit."""
    names = sorted(name for name, array in memory.items() if array.size)
    if BIT_CLASSES[bits] is not None:
        names = [name for name in names if memory[name].dtype == np.float32]
    if not names:
        raise ValueError(f"The artifact keeps no resident array that bits={bits!r} can hit.")
    return names


def _flip_weights(tensors: dict[str, np.ndarray], names: Sequence[str], bits: str, count: int,
                  rng: np.random.Generator) -> tuple[list[tuple[str, int, int]], tuple[str, ...]]:
    """Flip ``count`` random bits in place; return (array, byte, bit) of each to undo them."""
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


def _c_memory(runtime: CRuntime) -> dict[str, np.ndarray]:
    """The compiled library's resident blocks, each as float32 words where its size allows
    (the float bit classes address them so), else as bytes; a ValueError when there is none."""
    blocks = runtime.resident_memory
    if not blocks:
        raise ValueError("The compiled code holds nothing in RAM between inferences to flip: "
                         "its weights are in flash (const data: out of scope for upsets in "
                         "RAM) and its arena is rewritten by every inference. Protect the "
                         "artifact with 'tables', or give ram_bytes for RAM weight tables "
                         "(with a protection record).")
    return {name: block.view(np.float32) if block.size % 4 == 0 else block
            for name, block in blocks.items()}


def _restorer(memory: dict[str, np.ndarray]) -> Callable[[list[tuple[str, int, int]]], None]:
    """Undo a trial's flips in the compiled library's RAM: every block rewritten from a
    pristine copy taken now, and checked (the library's state is shared by the process)."""
    pristine = {name: array.view(np.uint8).copy() for name, array in memory.items()}

    def restore(flipped: list[tuple[str, int, int]]) -> None:
        for name, array in memory.items():
            array.view(np.uint8)[:] = pristine[name]
        if not all(np.array_equal(array.view(np.uint8), pristine[name])
                   for name, array in memory.items()):
            raise RuntimeError("The compiled library's resident memory was not restored.")

    return restore


def _memory_trials(runtime: Runtime | CRuntime, memory: dict[str, np.ndarray],
                   restore: Callable[[list[tuple[str, int, int]]], None], x: np.ndarray,
                   score: Scorer, campaign: Campaign, flips: int, rng: np.random.Generator
                   ) -> FlipResult:
    """``campaign.trials`` trials of ``flips`` flips in ``memory`` (what ``runtime`` holds
    resident), each undone by ``restore`` once the inference has run."""
    names = _eligible(memory, campaign.bits)
    drops, hits, non_finite, failed = [], [], 0, 0
    clipped = runtime.clipped_values
    for _ in range(campaign.trials):
        flipped, hit = _flip_weights(memory, names, campaign.bits, flips, rng)
        try:
            with np.errstate(all="ignore"):
                logits = runtime.run(x)
        except ArtifactError:  # a GraphError: detected, not silent
            failed += 1
            continue
        finally:
            restore(flipped)
        probabilities, bad = fault_probabilities(logits)
        drops.append(score(probabilities))
        hits.append(hit)
        non_finite += bad
    return FlipResult(flips, tuple(drops), non_finite,
                      clipped_values=runtime.clipped_values - clipped,
                      hit_tensors=tuple(hits), failed_trials=failed)


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
            runtime = Runtime(artifact, protect=campaign.protect == "stored")
        except ArtifactError:
            refused += 1  # detected: the file is not used
            continue
        repaired += artifact.corrected_bytes > 0
        if bounds is not None:
            runtime.restrict_activations(bounds)
        with np.errstate(all="ignore"):
            probabilities, bad = fault_probabilities(runtime.run(x))
        drops.append(score(probabilities))
        non_finite += bad
        clipped += runtime.clipped_values
    return FlipResult(flips, tuple(drops), non_finite, refused, repaired, clipped)


def _one_blas_thread() -> contextlib.AbstractContextManager:
    """BLAS limited to one thread: a trial's products are small, and multi-threaded OpenBLAS
    made a flares campaign ten times slower on a loaded 2-core machine."""
    try:
        from threadpoolctl import threadpool_limits  # a scikit-learn dependency
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _ranger_bounds(content: bytes, protect: str, calibration_x: np.ndarray | None
                   ) -> dict[str, tuple[float, float]] | None:
    """The layer outputs' ranges over ``calibration_x`` for ``protect="ranger"``, else None."""
    if protect not in PROTECTIONS:
        raise ValueError(f"protect must be one of {', '.join(PROTECTIONS)}, got {protect!r}.")
    if protect != "ranger":
        return None
    if calibration_x is None:
        raise ValueError("protect='ranger' needs calibration inputs (the training split).")
    return Runtime(decode_artifact(content), protect=False).activation_ranges(calibration_x)


def _runtime(content: bytes, campaign: Campaign,
             bounds: Mapping[str, tuple[float, float]] | None) -> Runtime:
    """The artifact loaded as ``campaign.protect`` says, scrubbing off (see the module)."""
    runtime = Runtime(decode_artifact(content), protect=campaign.protect == "stored",
                      source=content)
    if bounds is not None:
        runtime.restrict_activations(bounds)
    runtime.scrub_every = 0
    return runtime


def c_runtime(content: bytes, ram_bytes: int = 0) -> CRuntime:
    """The artifact ``content``'s generated C as a C ``backend`` campaign runs it: compiled for
    the host with the artifact's protection, scrubbing deferred past any campaign (the caller
    may still :meth:`~satcompress.firmware.host.CRuntime.scrub`); dense weights in read-only
    data, or with ``ram_bytes`` > 0 compressed with up to that many bytes of weight tables
    decoded into RAM at init (a microcontroller build's RAM tables).

    Raises
    ------
    ToolchainError
        If there is no C compiler or the code does not compile.
    """
    from satcompress.codegen import generate_c
    from satcompress.firmware.host import CRuntime, build_host_library
    from satcompress.firmware.targets import TARGETS

    reference = Runtime(decode_artifact(content), source=content)
    if reference.protection.scrub_every:
        reference.protection = replace(reference.protection, scrub_every=_NEVER)
    source = generate_c(reference, compressed=ram_bytes > 0, ram_bytes=ram_bytes)
    return CRuntime(reference, source, build_host_library(source, TARGETS["host"]))


def run_campaign(content: bytes, x: np.ndarray, score: Scorer, campaign: Campaign,
                 calibration_x: np.ndarray | None = None) -> CampaignResult:
    """Run ``campaign`` on the artifact ``content`` with test inputs ``x``.

    ``score(probabilities)`` returns the metric's drop from the clean artifact on ``x``
    (positive: worse); see :func:`task_scorer` for the task's. ``calibration_x`` (the
    training inputs) calibrates the bounds of ``protect="ranger"``.
    """
    bounds = _ranger_bounds(content, campaign.protect, calibration_x)
    rng = np.random.default_rng(campaign.seed)
    results = []
    if campaign.backend == "c":  # one library, restored after every trial
        compiled = c_runtime(content, campaign.ram_bytes)
        memory = _c_memory(compiled)
        restore = _restorer(memory)
    with _one_blas_thread():
        for flips in campaign.flips:
            if campaign.backend == "c":
                results.append(_memory_trials(compiled, memory, restore, x, score, campaign,
                                              flips, rng))
            elif campaign.where == "weights":  # a fresh copy per flip count
                runtime = _runtime(content, campaign, bounds)
                memory = runtime.resident_memory
                results.append(_memory_trials(runtime, memory, partial(_undo, memory), x,
                                              score, campaign, flips, rng))
            else:
                results.append(_file_trials(content, x, score, campaign, flips, rng, bounds))
    return CampaignResult(campaign, tuple(results))


def protection_overhead(content: bytes, example: np.ndarray, protect: str = "stored",
                        calibration_x: np.ndarray | None = None, repeats: int = 40,
                        block: int = 100) -> float:
    """Batch-1 latency with protection ``protect`` (see :class:`Campaign`) over latency
    without: the ratio of the medians of ``repeats`` interleaved blocks of ``block`` runs of
    one ``example`` (so both see the same machine load, and a block holds the scrubs its
    runs are due), timed in CPU time (single-threaded runs; other load on a shared machine
    does not count)."""
    bounds = _ranger_bounds(content, protect, calibration_x)
    runtimes = {False: Runtime(decode_artifact(content), protect=False),
                True: Runtime(decode_artifact(content), protect=protect == "stored",
                              source=content)}
    if bounds is not None:
        runtimes[True].restrict_activations(bounds)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for protected, runtime in runtimes.items():
            started = time.process_time()
            for _ in range(block):
                runtime.run(example)
            times[protected].append(time.process_time() - started)
    return float(np.median(times[True]) / np.median(times[False]))


def task_scorer(task: Any, data: Any, clean_logits_val: np.ndarray,
                clean_logits_test: np.ndarray) -> Scorer:
    """``probabilities -> drop`` of ``task``'s primary metric on ``data``'s test split,
    thresholds tuned on the clean validation outputs (as the deployed model's were);
    ``task`` a :class:`satcompress.tasks.registry.Task`, ``data`` its ``TaskData``."""
    val, _ = fault_probabilities(clean_logits_val)
    clean = task.score(val, data.val.y, fault_probabilities(clean_logits_test)[0],
                       data.test.y)[task.primary_metric]
    sign = 1.0 if task.higher_is_better else -1.0

    def score(probabilities: np.ndarray) -> float:
        faulty = task.score(val, data.val.y, probabilities, data.test.y)[task.primary_metric]
        return sign * (clean - faulty)

    return score


def sdc_probability(content: bytes, task: Any, data: Any, trials: int = SDC_TRIALS,
                    seed: int = 0, threshold: float = SDC_THRESHOLD) -> float:
    """P(one random bit flip in the resident memory moves ``task``'s primary metric on the
    test split by more than ``threshold``), the artifact running with its stored
    protection: the share of ``trials`` seeded single-flip trials (a trial whose inference
    raises is detected, not silent, and counts as none). What a budget's
    ``max_sdc_probability`` limits."""
    clean = Runtime(decode_artifact(content))
    with _one_blas_thread():  # the clean outputs summed as the trials' are
        score = task_scorer(task, data, clean.run(data.val.x), clean.run(data.test.x))
    campaign = Campaign(flips=(1,), trials=trials, seed=seed, threshold=threshold)
    return float(run_campaign(content, data.test.x, score, campaign).summary_rows()[0]
                 ["p_drop_over_threshold"])
