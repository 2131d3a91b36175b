"""Settings of a compression search: the choices offered per layer and how trials are judged."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import TYPE_CHECKING, Any

from satcompress.cluster import MAX_CLUSTERS
from satcompress.pipeline.recipe import DEFAULT_FEC
from satcompress.prune import IMPORTANCE_CRITERIA
from satcompress.quantize.fake_quant import MAX_BITS, MIN_BITS
from satcompress.radiation import check_protections
from satcompress.stages import StageConfig, config_type

if TYPE_CHECKING:
    from satcompress.tasks.registry import Task

__all__ = ["CODECS", "DECISION_KINDS", "DISTILL_STAGES", "SearchSettings", "parse_codec"]

DECISION_KINDS = ("student", "prune", "rank", "sparsity", "codec")
"""The kinds of search decision, in the order their stages run (an anchor sets each for every
decision of its kind; :mod:`satcompress.search.space`)."""

CODECS = ("float", "int8", "int6", "int4", "int3", "int2", "k64", "k16", "k8", "k4")
"""Default weight codecs a layer may get: float32, integer weights of ``intB`` bits
(symmetric, per channel), or ``kK`` shared centroids (weight clustering, ``log2 K``-bit
indices)."""

DISTILL_STAGES = ("hinton_kd", "dynamic_kd")
"""Distillation stages a student trial may use (both need nothing but the teacher)."""

_CODEC = re.compile(r"^(?:(float)|int(\d+)|k(\d+))$")


def parse_codec(codec: str) -> tuple[str, int]:
    """``"int4"`` -> ``("int", 4)``, ``"k16"`` -> ``("cluster", 16)``, ``"float"`` ->
    ``("float", 32)``; a clear error for anything else."""
    match = _CODEC.match(codec) if isinstance(codec, str) else None
    if match is None:
        raise ValueError(
            f"Unknown weight codec {codec!r}: write 'float', 'int<bits>' ({MIN_BITS} to "
            f"{MAX_BITS} bits, e.g. int4) or 'k<clusters>' (2 to {MAX_CLUSTERS}, e.g. k16)."
        )
    if match.group(1):
        return "float", 32
    if match.group(2):
        bits = int(match.group(2))
        if not MIN_BITS <= bits <= MAX_BITS:
            raise ValueError(f"Codec {codec!r}: integer weights take {MIN_BITS} to {MAX_BITS} bits.")
        return "int", bits
    clusters = int(match.group(3))
    if not 2 <= clusters <= MAX_CLUSTERS:
        raise ValueError(f"Codec {codec!r}: a codebook holds 2 to {MAX_CLUSTERS} centroids.")
    return "cluster", clusters


def _fractions(values: Any, name: str, low_open: bool, high: float, must_start: float) -> None:
    if not isinstance(values, tuple) or not values or values[0] != must_start:
        raise ValueError(
            f"SearchSettings.{name} must be a non-empty tuple starting with {must_start} (no "
            f"compression), got {values!r}."
        )
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            (0 < value if low_open else 0 <= value) and value <= high
        ):
            raise ValueError(f"SearchSettings.{name} holds {value!r}, outside the allowed range.")
    if len(set(values)) != len(values):
        raise ValueError(f"SearchSettings.{name} has repeats: {values!r}.")


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """How a compression search explores and judges candidates.

    Attributes
    ----------
    student_fractions : tuple of float
        Student sizes a trial may distil the model into first, as fractions of its
        parameters (:mod:`satcompress.distill`); the first, 1.0, keeps the model itself.
        Offered only for architectures distillation can shrink (ResidualMLP, T2Transformer).
    distill_stage : str
        The distillation stage of a student trial: ``"hinton_kd"`` or ``"dynamic_kd"``.
    distill_epochs, distill_patience : int
        Its maximum epochs and early-stopping patience (the same student is distilled once
        per worker process and reused by every trial choosing it).
    prune_ratios : tuple of float
        Fractions of a structured group's units (hidden channels, heads, residual features)
        a trial may remove; the first, 0.0, keeps the group whole.
    sparsities : tuple of float
        Fractions of the weights a trial may set to zero by global magnitude pruning (Deep
        Compression, Han et al. 2016; gradual, Zhu & Gupta 2017, in a full evaluation) after
        structured pruning and factorization, before the codec; the first, 0.0, prunes none.
    rank_fractions : tuple of float
        Ranks a factorizable layer may get, as fractions of its largest rank after pruning;
        the first, 1.0, leaves it unfactored. A rank that saves no weights is skipped.
    codecs : tuple of str
        Weight storage a layer may get (see :data:`CODECS`); the first should be "float".
    importance : str
        Channel importance criterion of structured pruning (see
        :data:`satcompress.prune.IMPORTANCE_CRITERIA`).
    finetune_epochs : int
        Fine-tuning epochs of each pruning / factorization / clustering stage in a full
        evaluation (proxies never fine-tune).
    qat_epochs, qat_patience : int
        Quantization-aware training of a full evaluation: at most ``qat_epochs`` epochs,
        stopping after ``qat_patience`` epochs without a better validation loss.
    proxy_examples : int
        Validation examples (a fixed random subset) the cheap proxy scores on.
    recovery_margin : float or None
        How much fine-tuning may lower a proxy's primary-metric drop. A proxy whose drop
        exceeds the allowed drop by more than this is infeasible without a full evaluation;
        one that a fully evaluated feasible trial beats by more than this while being no
        larger (bytes, MACs) is pruned as dominated. None: learnt during the search (1.25 x
        the largest recovery seen, after five trials evaluated both ways; until then only
        resource limits screen proxies).
    latency_repeats : int
        Timed batch-1 forward passes per latency measurement.
    population_size : int or None
        NSGA-II population; None: a fifth of the trial budget, between 4 and 50.
    anchors : bool
        Start a fresh study with a few uniform settings (every layer int8, int4, k16, and
        half of every group pruned with int4) before the evolutionary search.
    recipe_anchor : tuple of (str, value) pairs
        One of those anchors: the shape of the task's tuned recipe as uniform settings
        (``student``, ``prune``, ``sparsity``, ``codec``, ``rank``; see
        :meth:`satcompress.search.SearchSpace.uniform`), so the search starts where the hand
        recipe is. Default: `assembled`'s (student 1/10, half of every group pruned, 85 %
        sparsity, 16 clusters).
    min_block_fraction : float
        Divide and conquer: a block of layers holding less than this fraction of the
        searched weights is merged into its neighbour.
    block_trial_fraction : float
        Divide and conquer: share of the trial budget spent on the per-block sub-problems;
        the rest evaluates combinations of their fronts.
    seed : int
        Seeds the sampler, the proxy subset and every stage.
    fec : bool
        Whether the artifacts carry Reed-Solomon error correction: candidates are measured,
        and the chosen recipe written, with it (see
        :data:`satcompress.pipeline.recipe.DEFAULT_FEC`).
    protect : tuple of str
        Protections against upsets in RAM the chosen recipe records (``Recipe.protect``;
        :mod:`satcompress.runtime.protect`): the final runs measure and count them, and judge a
        budget's ``max_sdc_probability`` on the protected artifact. Trials are measured
        without them (their bytes are a few hundred at most).
    """

    student_fractions: tuple[float, ...] = (1.0, 0.25, 0.1, 0.05)
    distill_stage: str = "dynamic_kd"
    distill_epochs: int = 12
    distill_patience: int = 5
    prune_ratios: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9)
    sparsities: tuple[float, ...] = (0.0, 0.5, 0.75, 0.85, 0.9)
    rank_fractions: tuple[float, ...] = (1.0, 0.25, 0.125, 0.0625)
    codecs: tuple[str, ...] = CODECS
    importance: str = "l2"
    finetune_epochs: int = 1
    qat_epochs: int = 3
    qat_patience: int = 1
    proxy_examples: int = 512
    recovery_margin: float | None = None
    latency_repeats: int = 30
    population_size: int | None = None
    anchors: bool = True
    recipe_anchor: tuple[tuple[str, Any], ...] = (("student", 0.1), ("prune", 0.5),
                                                  ("sparsity", 0.85), ("codec", "k16"))
    min_block_fraction: float = 0.05
    block_trial_fraction: float = 0.7
    seed: int = 0
    fec: bool = DEFAULT_FEC
    protect: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "protect", check_protections(self.protect))
        for name in ("student_fractions", "prune_ratios", "sparsities", "rank_fractions",
                     "codecs"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "recipe_anchor",
                           tuple((str(key), value) for key, value in self.recipe_anchor))
        unknown = {key for key, _ in self.recipe_anchor} - set(DECISION_KINDS)
        if unknown:
            raise ValueError(f"SearchSettings.recipe_anchor sets {sorted(unknown)}; it may set "
                             f"{', '.join(DECISION_KINDS)}.")
        _fractions(self.student_fractions, "student_fractions", True, 1.0, 1.0)
        if self.distill_stage not in DISTILL_STAGES:
            raise ValueError(
                f"SearchSettings.distill_stage must be one of {DISTILL_STAGES}, got "
                f"{self.distill_stage!r}."
            )
        _fractions(self.prune_ratios, "prune_ratios", False, 0.99, 0.0)
        _fractions(self.sparsities, "sparsities", False, 0.99, 0.0)
        _fractions(self.rank_fractions, "rank_fractions", True, 1.0, 1.0)
        if not self.codecs or len(set(self.codecs)) != len(self.codecs):
            raise ValueError(f"SearchSettings.codecs must list distinct codecs, got {self.codecs!r}.")
        for codec in self.codecs:
            parse_codec(codec)
        if self.importance not in IMPORTANCE_CRITERIA:
            raise ValueError(
                f"SearchSettings.importance must be one of {IMPORTANCE_CRITERIA}, got "
                f"{self.importance!r}."
            )
        for name, minimum in (("distill_epochs", 1), ("distill_patience", 1), ("finetune_epochs", 0), ("qat_epochs", 1), ("qat_patience", 1),
                              ("proxy_examples", 1), ("latency_repeats", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"SearchSettings.{name} must be an integer >= {minimum}, got {value!r}.")
        if self.population_size is not None and (
            isinstance(self.population_size, bool) or not isinstance(self.population_size, int)
            or self.population_size < 2
        ):
            raise ValueError(
                f"SearchSettings.population_size must be an integer >= 2 or None, got "
                f"{self.population_size!r}."
            )
        if self.recovery_margin is not None and not (
            isinstance(self.recovery_margin, (int, float)) and math.isfinite(self.recovery_margin)
            and self.recovery_margin >= 0
        ):
            raise ValueError(f"SearchSettings.recovery_margin must be a number >= 0 or None, got "
                             f"{self.recovery_margin!r}.")
        if not isinstance(self.fec, bool):
            raise ValueError(f"SearchSettings.fec must be True or False, got {self.fec!r}.")
        for name in ("min_block_fraction", "block_trial_fraction"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise ValueError(f"SearchSettings.{name} must be a fraction in [0, 1), got {value!r}.")

    @classmethod
    def for_task(cls, task: "Task", **overrides: Any) -> "SearchSettings":
        """The settings of a search on ``task``: its ``search_settings``, then ``overrides``."""
        return cls(**{**task.search_settings, **overrides})

    def student_config(self, fraction: float) -> StageConfig:
        """The distillation stage of a student of ``fraction`` of the model's parameters."""
        return config_type(self.distill_stage)(
            target_parameter_fraction=fraction, epochs=self.distill_epochs,
            patience_epochs=self.distill_patience, seed=self.seed)

    def population(self, trials: int) -> int:
        """The NSGA-II population for a study of ``trials`` trials."""
        if self.population_size is not None:
            return self.population_size
        return min(50, max(4, trials // 5))

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values (``protect`` only when set: a study stored before it
        existed resumes with the same settings)."""
        return {field.name: (list(value) if isinstance(value, tuple) else value)
                for field in dataclasses.fields(self)
                for value in (getattr(self, field.name),)
                if field.name != "protect" or value}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
