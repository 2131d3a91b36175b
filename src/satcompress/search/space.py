"""The search space: per-layer compression decisions, derived from the model itself.

One whole-model decision and three kinds of per-layer decision, each found by the stage
family's own layer discovery:

``student:model``
    Distil the model first into a student of a fraction of its parameters (its own
    architecture, narrower: :mod:`satcompress.distill`), or keep it (1.0). Offered for the
    architectures distillation can shrink. The per-layer decisions then act on the student,
    whose layers carry the teacher's names. A student is distilled once per process and
    reused by every trial choosing it.
``prune:<group>``
    The fraction of a structured group's units to remove (hidden width, attention heads,
    residual stream; :meth:`satcompress.prune.StructuredPruner.groups`). The output layer is
    never pruned (its outputs are the classes).
``sparsity:model``
    The fraction of all remaining weights set to zero by global magnitude pruning (Deep
    Compression's pruning; gradual with fine-tuning in a full evaluation), after structured
    pruning and factorization; the artifact codes the zeros as runs.
``rank:<layer>``
    The rank of a truncated-SVD / Tucker-2 factorization of a layer, as a fraction of its
    largest rank after pruning (:func:`satcompress.lowrank.factorizable_layers`); offered
    only where some fraction saves weights.
``codec:<layer>``
    How a layer's weights are stored: float, ``intB`` (B-bit integers) or ``kK`` (K shared
    centroids) (:func:`satcompress.quantize.quantizable_layers`). This one decision carries
    both the bit width and the cluster count: a layer is either quantized or clustered.

A trial's decisions become an ordered list of registered stage configs -- a
:class:`~satcompress.pipeline.recipe.Recipe` -- built stage by stage on the model (absolute
ranks and the names of factored layers depend on the shapes earlier stages leave):
``structured_prune(group_ratios)`` -> ``low_rank(layer_ranks)`` -> ``magnitude_prune`` ->
``weight_cluster(layer_clusters)`` -> ``post_training_quantize`` (proxy) or
``quantization_aware_train`` (full evaluation, without sparsity: training would regrow the
pruned weights) with ``layer_bits``. The recipe alone
reproduces the model: ``satcompress compress --recipe recipe.toml``. A student trial's
recipe starts with its distillation stage.

Blocks (for divide and conquer, EMO-DIR style) group the decisions by the top-level module
they act on (``blocks.0`` for an element of a ``ModuleList``/``Sequential``); blocks holding
less than ``min_block_fraction`` of the searched weights are merged into a neighbour. The
student decision is a block of its own, ``student``, first; the sparsity decision one of its
own, ``sparsity``, last.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, MutableMapping
from typing import Any

import torch
from torch import nn

from satcompress import stages
from satcompress.cluster import WeightClusterConfig
from satcompress.distill import parameter_count, width_multiplier_for_fraction
from satcompress.lowrank import FactorizableLayer, LowRankConfig, factorizable_layers
from satcompress.pipeline.recipe import Recipe
from satcompress.prune import (
    MagnitudePruneConfig,
    StructuredPruneConfig,
    StructuredPruner,
    prunable_weights,
    units_to_remove,
)
from satcompress.quantize import (
    PostTrainingQuantizeConfig,
    QuantizationAwareTrainConfig,
    quantizable_layers,
)
from satcompress.search.settings import DECISION_KINDS, SearchSettings, parse_codec
from satcompress.tasks.base import TaskData

__all__ = ["DECISION_KINDS", "SPARSITY", "STUDENT", "Decision", "SearchSpace", "Students",
           "derive_space"]

STUDENT = "student:model"
"""Name of the student decision (and ``student`` its block)."""

SPARSITY = "sparsity:model"
"""Name of the magnitude-pruning decision (and ``sparsity`` its block)."""

Students = MutableMapping[stages.StageConfig, nn.Module]
"""Distilled students by their distillation config: trained once, reused by later trials."""

Assignment = dict[str, Any]
"""Decision name -> chosen value, for every decision of a space."""


@dataclasses.dataclass(frozen=True)
class Decision:
    """One searchable choice: its kind, the group or layer it acts on, its block, its options.

    ``choices[0]`` is always "no compression" (the model itself, ratio 0, full rank, float).
    """

    kind: str
    target: str
    block: str
    choices: tuple[Any, ...]
    weights: int

    @property
    def name(self) -> str:
        """The Optuna parameter name, ``"<kind>:<target>"``."""
        return f"{self.kind}:{self.target}"


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Every decision of a model, its blocks, and how an assignment becomes a recipe.

    Attributes
    ----------
    decisions : tuple of Decision
        In stage order (student, prune, rank, codec), model order within a kind.
    blocks : tuple of str
        Block names in model order (after merging small blocks).
    output_layer : str
        The layer producing the logits: never pruned.
    settings : SearchSettings
        Fine-tuning and stage settings the recipes use.
    """

    decisions: tuple[Decision, ...]
    blocks: tuple[str, ...]
    output_layer: str
    settings: SearchSettings

    def by_name(self) -> dict[str, Decision]:
        return {decision.name: decision for decision in self.decisions}

    def defaults(self) -> Assignment:
        """The assignment that compresses nothing."""
        return {decision.name: decision.choices[0] for decision in self.decisions}

    def in_block(self, block: str) -> tuple[Decision, ...]:
        """The decisions of one block."""
        if block not in self.blocks:
            raise ValueError(f"No block {block!r}; the blocks are {list(self.blocks)}.")
        return tuple(decision for decision in self.decisions if decision.block == block)

    def uniform(self, prune: float = 0.0, rank: float = 1.0, codec: str = "float",
                student: float = 1.0, sparsity: float = 0.0) -> Assignment:
        """Every decision at one setting where offered (else at its uncompressed choice)."""
        wanted = {"student": student, "prune": prune, "rank": rank, "codec": codec,
                  "sparsity": sparsity}
        return {decision.name: (wanted[decision.kind] if wanted[decision.kind] in decision.choices
                                else decision.choices[0])
                for decision in self.decisions}

    def anchors(self, trials: int) -> tuple[Assignment, ...]:
        """Uniform starting points for a fresh study of ``trials`` trials (at most a fifth of
        them), in this order: every layer int8; the smallest offered student with k16; the
        task's hand recipe's shape (``settings.recipe_anchor``); every layer k16; half of
        every group pruned with int4; the second-smallest student with k16; 90% of every group
        pruned with k4; the smallest student, half pruned, k16 -- they span the sizes
        hand-written recipes reach. None when ``settings.anchors`` is off."""
        if not self.settings.anchors:
            return ()
        decisions = self.by_name()
        students = sorted(decisions[STUDENT].choices[1:]) if STUDENT in decisions else []
        smallest = students[:1] or [1.0]
        second = students[1:2] or smallest
        points = (
            {"codec": "int8"}, {"student": smallest[0], "codec": "k16"},
            dict(self.settings.recipe_anchor), {"codec": "k16"},
            {"prune": 0.5, "codec": "int4"}, {"student": second[0], "codec": "k16"},
            {"prune": 0.9, "codec": "k4"},
            {"student": smallest[0], "prune": 0.5, "codec": "k16"},
        )
        unique = list(dict.fromkeys(
            tuple(sorted(self.uniform(**point).items())) for point in points))
        return tuple(dict(items) for items in unique[: max(1, trials // 5)])

    def check(self, assignment: Mapping[str, Any]) -> Assignment:
        """``assignment`` completed with defaults; a clear error for unknown names or values."""
        decisions = self.by_name()
        unknown = sorted(set(assignment) - set(decisions))
        if unknown:
            raise ValueError(f"Unknown decision(s) {unknown}; the space has {sorted(decisions)}.")
        for name, value in assignment.items():
            if value not in decisions[name].choices:
                raise ValueError(
                    f"Decision {name} cannot be {value!r}; its choices are {decisions[name].choices}."
                )
        return {**self.defaults(), **assignment}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (stored with a study, so a resumed study can be checked)."""
        return {
            "blocks": list(self.blocks),
            "output_layer": self.output_layer,
            "decisions": [{"kind": d.kind, "target": d.target, "block": d.block,
                           "choices": list(d.choices), "weights": d.weights}
                          for d in self.decisions],
        }

    def rows(self) -> list[dict[str, Any]]:
        """One table row per decision: what a search may choose, per block."""
        return [{"block": d.block, "decision": d.kind, "target": d.target, "weights": d.weights,
                 "choices": " ".join(str(choice) for choice in d.choices)}
                for d in self.decisions]

    # ---------------------------------------------------------------------------------------
    # Assignment -> recipe (and model)
    # ---------------------------------------------------------------------------------------

    def compress(
        self, assignment: Mapping[str, Any], model: nn.Module, data: TaskData, *,
        fine_tune: bool, name: str = "search", students: Students | None = None,
    ) -> tuple[Recipe, nn.Module]:
        """Apply the stages ``assignment`` asks for to a copy of ``model``.

        Returns the recipe (registered stage configs only) and the compressed model; running
        the recipe on ``model`` with :func:`satcompress.pipeline.runner.run_recipe` gives the
        same model. ``fine_tune=False`` is the cheap proxy: no stage trains, and integer
        codecs are post-training quantized; ``fine_tune=True`` fine-tunes after every stage
        and quantizes with quantization-aware training (early stopping), unless some layer
        is clustered (training would move clustered weights off their codebook, so those
        recipes post-training quantize after the centroid fine-tuning). A student is
        distilled in both (a proxy cannot skip training a student); ``students`` keeps
        distilled students for reuse (they are never modified).
        """
        chosen = self.check(assignment)
        settings = self.settings
        epochs = settings.finetune_epochs if fine_tune else 0
        common = {"finetune_epochs": epochs, "seed": settings.seed}
        configs: list[stages.StageConfig] = []

        def run(config: stages.StageConfig) -> None:
            nonlocal model
            configs.append(config)
            model = stages.apply(model, config, data)

        students = {} if students is None else students
        fraction = chosen.get(STUDENT, 1.0)
        if fraction < 1:
            distillation = settings.student_config(fraction)
            if distillation not in students:
                students[distillation] = stages.apply(model, distillation, data)
            configs.append(distillation)
            model = students[distillation]
        by_kind = {kind: {d.target: chosen[d.name] for d in self.decisions if d.kind == kind}
                   for kind in DECISION_KINDS}
        ratios = tuple((group, ratio) for group, ratio in by_kind["prune"].items() if ratio > 0)
        if ratios:
            run(StructuredPruneConfig(group_ratios=ratios, importance=settings.importance,
                                      ignored_layers=(self.output_layer,), **common))
        ranks = self._ranks(model, by_kind["rank"])
        if ranks:
            run(LowRankConfig(rank_by="layer_ranks", layer_ranks=ranks, **common))
        sparsity = chosen.get(SPARSITY, 0.0)
        if sparsity > 0:
            run(MagnitudePruneConfig(sparsity=sparsity, pruning_steps=3 if fine_tune else 1,
                                     **common))
        codecs: dict[str, tuple[str, int]] = {}
        for layer, codec in by_kind["codec"].items():
            parsed = parse_codec(codec)
            for part in _stored_layers(model, layer):
                codecs[part] = parsed
        clusters = tuple((layer, k) for layer, (kind, k) in codecs.items() if kind == "cluster")
        if clusters:
            named = {layer for layer, _ in clusters}
            others = tuple(name.rpartition(".")[0] for name in prunable_weights(model)
                           if name.rpartition(".")[0] not in named)
            run(WeightClusterConfig(layer_clusters=clusters, skip_layers=others, **common))
        bits = tuple((layer, b) for layer, (kind, b) in codecs.items() if kind == "int")
        if bits or not configs:  # an all-float, uncompressed trial: a stage that changes nothing
            quantized = {layer for layer, _ in bits}
            exclude = tuple(layer for layer in quantizable_layers(model) if layer not in quantized)
            quantization = {"weight_bits": 8, "quantize_activations": False, "layer_bits": bits,
                            "exclude": exclude, "seed": settings.seed}
            if fine_tune and not clusters and not sparsity and bits:
                run(QuantizationAwareTrainConfig(max_epochs=settings.qat_epochs,
                                                 patience_epochs=settings.qat_patience,
                                                 **quantization))
            else:
                run(PostTrainingQuantizeConfig(**quantization))
        described = ", ".join(f"{key}={value}" for key, value in chosen.items()
                              if value != self.by_name()[key].choices[0]) or "nothing compressed"
        recipe = Recipe(name, tuple(configs), fec=settings.fec, protect=settings.protect,
                        description=f"Found by satcompress search: {described}.")
        return recipe, model

    def _ranks(self, model: nn.Module, fractions: Mapping[str, float]) -> tuple[tuple[str, int], ...]:
        """Absolute ranks for the layers given a fraction < 1 where they save weights."""
        wanted = {layer: fraction for layer, fraction in fractions.items() if fraction < 1}
        if not wanted:
            return ()
        candidates = {c.name: c for c in factorizable_layers(model, spectra=False)}
        ranks = ((layer, _saving_rank(candidates[layer], fraction))
                 for layer, fraction in wanted.items() if layer in candidates)
        return tuple((layer, rank) for layer, rank in ranks if rank is not None)


def _saving_rank(candidate: FactorizableLayer, fraction: float) -> int | None:
    """The rank ``fraction`` of ``candidate``'s largest rank, or None if it saves no weights."""
    rank = max(1, round(fraction * min(candidate.max_ranks)))
    saves = candidate.parameters(candidate.ranks_fixed(rank)) < candidate.original_parameters
    return rank if saves else None


def _stored_layers(model: nn.Module, layer: str) -> list[str]:
    """The layers holding ``layer``'s weights now: itself, or its factors once factored."""
    module = model.get_submodule(layer)
    if isinstance(module, nn.Sequential):
        return [f"{layer}.{name}" for name in quantizable_layers(module)]
    return [layer]


def _block_of(model: nn.Module, name: str) -> str:
    """Top-level module of ``name``; an element of a top-level ModuleList/Sequential counts
    as its own block (``blocks.0``)."""
    parts = name.split(".")
    if len(parts) > 1 and isinstance(model.get_submodule(parts[0]), (nn.ModuleList, nn.Sequential)):
        return ".".join(parts[:2])
    return parts[0]


def _merge_small_blocks(blocks: list[str], weights: Mapping[str, int], fraction: float
                        ) -> dict[str, str]:
    """Block -> merged block name: a block under ``fraction`` of all weights joins the next
    block in model order (the last one joins the previous)."""
    total = sum(weights.values()) or 1
    groups: list[list[str]] = []
    pending: list[str] = []
    for block in blocks:
        pending.append(block)
        if sum(weights[b] for b in pending) >= fraction * total:
            groups.append(pending)
            pending = []
    if pending:
        if groups:
            groups[-1].extend(pending)
        else:
            groups.append(pending)
    return {block: "+".join(group) for group in groups for block in group}


def derive_space(model: nn.Module, data: TaskData, settings: SearchSettings | None = None
                 ) -> SearchSpace:
    """The search space of ``model``: its structured groups, factorizable and quantizable
    layers (see the module docstring). ``model`` is not modified."""
    settings = settings or SearchSettings()
    layers = quantizable_layers(model)
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no Linear or Conv1d layer: there is nothing to search."
        )
    output_layer = layers[-1]
    example = torch.from_numpy(data.train.x[:1])
    sizes = {name: model.get_submodule(name).weight.numel() for name in layers}
    raw: list[tuple[str, str, tuple[Any, ...], int]] = []
    pruner = StructuredPruner(example, settings.importance, (output_layer,), seed=settings.seed)
    for group in pruner.groups(model):
        seen, choices = set(), []
        for ratio in settings.prune_ratios:
            removed = units_to_remove(ratio, group.size)
            if removed not in seen:
                seen.add(removed)
                choices.append(ratio)
        if len(choices) > 1:
            weight = sum(model.get_submodule(layer).weight.numel() for layer in group.layers)
            raw.append(("prune", group.name, tuple(choices), weight))
    for candidate in factorizable_layers(model, spectra=False):
        saving = [fraction for fraction in settings.rank_fractions[1:]
                  if _saving_rank(candidate, fraction) is not None]
        if saving:
            raw.append(("rank", candidate.name, (1.0, *saving), candidate.original_parameters))
    for layer in layers:
        raw.append(("codec", layer, settings.codecs, sizes[layer]))
    students = _student_choices(model, settings.student_fractions,
                                torch.from_numpy(data.train.x[:1]))
    order = {name: position for position, (name, _) in enumerate(model.named_modules())}
    targets = sorted({target for _, target, _, _ in raw}, key=order.__getitem__)
    block_order = list(dict.fromkeys(_block_of(model, target) for target in targets))
    block_weights = {block: sum(sizes[layer] for layer in layers
                                if _block_of(model, layer) == block) for block in block_order}
    merged = _merge_small_blocks(block_order, block_weights, settings.min_block_fraction)
    decisions = [Decision(kind, target, merged[_block_of(model, target)], choices, weight)
                 for kind, target, choices, weight in raw]
    blocks = list(dict.fromkeys(merged[block] for block in block_order))
    if len(students) > 1:  # whole-model decisions: each a block of its own
        decisions.append(Decision("student", "model", "student", students,
                                  parameter_count(model)))
        blocks.insert(0, "student")
    if len(settings.sparsities) > 1:
        decisions.append(Decision("sparsity", "model", "sparsity", settings.sparsities,
                                  sum(sizes.values())))
        blocks.append("sparsity")
    decisions.sort(key=lambda decision: DECISION_KINDS.index(decision.kind))  # stable
    return SearchSpace(tuple(decisions), tuple(blocks), output_layer, settings)


def _student_choices(model: nn.Module, fractions: tuple[float, ...],
                     example_input: torch.Tensor) -> tuple[float, ...]:
    """The student fractions giving distinct students of ``model`` (1.0 first); only 1.0 for
    an architecture distillation cannot shrink or fractions it cannot reach."""
    choices, widths = [fractions[0]], set()
    for fraction in fractions[1:]:
        try:
            width = width_multiplier_for_fraction(model, fraction, example_input=example_input)
        except ValueError:  # not a distillable architecture, or no student that small
            continue
        if width < 1 and width not in widths:
            widths.add(width)
            choices.append(fraction)
    return tuple(choices)

