"""Structured pruning: physically remove hidden neurons, channels and attention heads.

Unlike unstructured sparsity, removing whole structures leaves a smaller dense model that is
faster on ordinary hardware and exports to ONNX as usual. Which tensors must shrink together
(a Linear's output rows, the next layer's input columns, a LayerNorm on the same features,
every layer on a residual stream) is worked out by Torch-Pruning's dependency graph
("DepGraph: Towards Any Structural Pruning", Fang et al. 2023); each set of coupled channels
is one *group*, and a group is pruned as a whole.

Groups come in three kinds:

``width``
    The hidden width of a block (ResidualMLP ``fc1``, t2 feed-forward ``ff1``): one layer's
    outputs and the inputs of the layer after it.
``heads``
    The attention heads of a :class:`~satcompress.networks.t2.MultiHeadSelfAttention`: whole
    heads are removed from the query/key/value outputs and the output projection's inputs
    (Torch-Pruning's ``num_heads`` idea), and the module's ``n_heads`` is updated so its
    forward still works. A head's importance is the mean of its channels' importances.
``residual_stream``
    Features shared by several layers through residual additions (ResidualMLP's ``stem``,
    every ``fc2`` and the LayerNorms). Such a group is only offered where the model still runs
    after it shrinks: in t2 a fixed positional-encoding buffer is added to the stream, which
    Torch-Pruning cannot resize, so t2's stream is left alone.

Channels are ranked within their group by an importance criterion: the group L1 or L2 norm
of the weights and biases (Li et al. 2017, "Pruning Filters for Efficient ConvNets"), the
first-order Taylor estimate ``|w * dL/dw|`` (Molchanov et al. 2019) or, as a control, random
scores. The layers producing the model's outputs (the classifier, found on the dependency
graph: :func:`output_layers`) and the layers named in ``ignored_layers`` keep all their
outputs; their inputs may still shrink.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from satcompress.measure import count_macs
from satcompress.networks.t2 import MultiHeadSelfAttention
from satcompress.finetune import FinetuneSettings
from satcompress.prune._common import PRUNE_REPORT_ATTRIBUTE
from satcompress.stages import check_layer_settings, check_module_names, register_stage
from satcompress.tasks.base import TaskData
from satcompress.training import class_weighted_loss

__all__ = [
    "OUTPUT_LAYER_TYPES",
    "output_layers",
    "IMPORTANCE_CRITERIA",
    "GROUP_KINDS",
    "PrunableGroup",
    "StructuredPruner",
    "units_to_remove",
    "GroupPruneSettings",
    "no_prunable_group",
    "StructuredPruneConfig",
    "structured_prune",
]

IMPORTANCE_CRITERIA = ("l1", "l2", "taylor", "random")
"""Names of the channel importance criteria."""

GROUP_KINDS = ("width", "heads", "residual_stream")
"""Kinds of prunable group (see the module docstring)."""

_ROOT_TYPES = (nn.Linear, nn.modules.conv._ConvNd)
OUTPUT_LAYER_TYPES = (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention, nn.RNNBase)
"""Layers that can produce a model's outputs (:func:`output_layers` stops at them)."""
_TAYLOR_EXAMPLES = 1024
"""Training examples whose loss gradient the Taylor criterion uses."""


def units_to_remove(ratio: float, size: int) -> int:
    """How many of a group's ``size`` units (channels or heads) a pruning ratio removes.

    ``floor(ratio * size)`` (with a 1e-9 guard so 0.3 x 10 is 3), capped at ``size - 1`` so a
    group never disappears entirely.
    """
    return min(math.floor(ratio * size + 1e-9), size - 1)


@dataclasses.dataclass(frozen=True)
class PrunableGroup:
    """One set of coupled channels that structured pruning removes together.

    Attributes
    ----------
    name : str
        The group's name: the attention module for ``heads`` groups, otherwise the first
        (in model order) layer whose outputs the group holds.
    kind : str
        One of :data:`GROUP_KINDS`.
    size : int
        Units in the group now: heads for ``heads`` groups, channels otherwise.
    layers : tuple of str
        The Linear/conv layers whose outputs shrink when the group is pruned.
    """

    name: str
    kind: str
    size: int
    layers: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Traced:
    group: PrunableGroup
    root: nn.Module
    attention: MultiHeadSelfAttention | None


def _channel_criteria() -> dict[str, tp.importance.Importance]:
    # normalizer=None: groups are ranked one at a time, so scaling would change nothing;
    # bias=True: a channel with zero weights but a bias still changes the output.
    return {
        "l1": tp.importance.GroupMagnitudeImportance(p=1, normalizer=None, bias=True),
        "l2": tp.importance.GroupMagnitudeImportance(p=2, normalizer=None, bias=True),
        "taylor": tp.importance.GroupTaylorImportance(normalizer=None, bias=True),
    }


def _sync_attention_heads(model: nn.Module) -> None:
    """Set ``n_heads`` of every attention module to what its pruned projections now hold."""
    for module in model.modules():
        if isinstance(module, MultiHeadSelfAttention):
            module.n_heads = module.query.out_features // module.head_dim


def output_layers(graph: tp.DependencyGraph) -> list[nn.Module]:
    """The layers whose output channels are the model's outputs (the classifier): reached
    backwards from the graph's final nodes through channel-preserving operations."""
    stack = [node for node in graph.module2node.values() if not node.outputs]
    seen, layers = set(), []
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if isinstance(node.module, OUTPUT_LAYER_TYPES):
            layers.append(node.module)
        elif not isinstance(node.module, torch.Tensor):  # not an unwrapped parameter
            stack.extend(node.inputs)
    return layers


class StructuredPruner:
    """Find, rank and remove structured groups of a model with Torch-Pruning's DepGraph.

    Every method works on a copy and leaves the model it is given untouched.

    Parameters
    ----------
    example_input : Tensor
        One input batch (e.g. ``x[:1]``) used to trace the model's dependency graph.
    importance : str
        Channel importance criterion, one of :data:`IMPORTANCE_CRITERIA`; ``"taylor"`` needs
        ``data`` when ranking.
    ignored_layers : tuple of str
        Module names whose outputs are never pruned, besides the output layers (always kept).
    prune_residual_stream : bool
        Offer ``residual_stream`` groups (where the model can be resized there at all).
    seed : int
        Seeds the ``"random"`` criterion and the Taylor criterion's choice of examples.
    """

    def __init__(
        self,
        example_input: torch.Tensor,
        importance: str = "l2",
        ignored_layers: tuple[str, ...] = (),
        prune_residual_stream: bool = True,
        seed: int = 0,
    ) -> None:
        self.example_input = example_input
        self.importance = importance
        self.ignored_layers = ignored_layers
        self.prune_residual_stream = prune_residual_stream
        self.seed = seed
        self._stream_verdicts: dict[tuple[type, tuple[str, ...]], bool] = {}

    # ---------------------------------------------------------------------------------------
    # Tracing
    # ---------------------------------------------------------------------------------------

    def _trace(
        self, model: nn.Module, check_streams: bool = True
    ) -> tuple[tp.DependencyGraph, dict[str, _Traced]]:
        """Dependency graph of ``model`` (modified in place later) and its prunable groups."""
        modules = dict(model.named_modules())
        unknown = sorted(set(self.ignored_layers) - set(modules))
        if unknown:
            raise ValueError(
                f"ignored_layers names {unknown}, which {type(model).__name__} does not have; "
                f"its layers are {[n for n, m in modules.items() if isinstance(m, _ROOT_TYPES)]}."
            )
        names = {module: name for name, module in modules.items()}
        order = {module: index for index, module in enumerate(modules.values())}
        attention_of = {
            projection: module
            for module in modules.values()
            if isinstance(module, MultiHeadSelfAttention)
            for projection in (module.query, module.key, module.value)
        }
        model.eval()
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(  # verbose: tp's notes on unknown ops
                model, example_inputs=self.example_input, verbose=False)
        traced: list[_Traced] = []
        ignored = [modules[name] for name in self.ignored_layers] + output_layers(graph)
        for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=_ROOT_TYPES):
            producers = sorted(
                {dep.target.module for dep, _ in group
                 if graph.is_out_channel_pruning_fn(dep.handler)
                 and isinstance(dep.target.module, _ROOT_TYPES)},
                key=order.__getitem__,
            )
            layers = tuple(names[module] for module in producers)
            attentions = {attention_of[module] for module in producers if module in attention_of}
            if attentions:
                attention = attentions.pop()
                if attentions or set(producers) - {attention.query, attention.key, attention.value}:
                    raise ValueError(
                        f"The heads of {names[attention]} are coupled to {list(layers)}; "
                        "structured pruning removes heads only where query, key and value "
                        "outputs form a group of their own."
                    )
                info = PrunableGroup(names[attention], "heads", attention.n_heads, layers)
                traced.append(_Traced(info, attention.query, attention))
                continue
            kind = "residual_stream" if len(producers) > 1 else "width"
            root = producers[0]
            info = PrunableGroup(names[root], kind, graph.get_out_channels(root), layers)
            traced.append(_Traced(info, root, None))
        traced.sort(key=lambda item: order[item.root])
        groups = {}
        for item in traced:
            if item.group.kind == "residual_stream" and not (
                self.prune_residual_stream and (not check_streams or self._resizable(model, item))
            ):
                continue
            groups[item.group.name] = item
        return graph, groups

    def _resizable(self, model: nn.Module, item: _Traced) -> bool:
        """Whether ``model`` still runs after one unit of ``item`` is removed.

        Tried once on a copy per architecture and group (the answer depends on the
        architecture, not on the weights or on how far other groups were pruned).
        """
        key = (type(model), item.group.layers)
        if key not in self._stream_verdicts:
            trial = copy.deepcopy(model)
            graph, groups = self._trace(trial, check_streams=False)
            self._remove_units(graph, groups[item.group.name], [0])
            try:
                with torch.no_grad():
                    trial(self.example_input)
                self._stream_verdicts[key] = True
            except RuntimeError:
                self._stream_verdicts[key] = False
        return self._stream_verdicts[key]

    @staticmethod
    def _remove_units(graph: tp.DependencyGraph, item: _Traced, units: Sequence[int]) -> None:
        if item.attention is not None:
            head_dim = item.attention.head_dim
            channels = [int(unit) * head_dim + offset for unit in units for offset in range(head_dim)]
        else:
            channels = [int(unit) for unit in units]
        pruning_fn = graph.get_pruner_of_module(item.root).prune_out_channels
        graph.get_pruning_group(item.root, pruning_fn, channels).prune()

    # ---------------------------------------------------------------------------------------
    # Public API
    # ---------------------------------------------------------------------------------------

    def groups(self, model: nn.Module) -> list[PrunableGroup]:
        """The prunable groups of ``model`` in model order."""
        _, groups = self._trace(copy.deepcopy(model))
        return [item.group for item in groups.values()]

    def rank(self, model: nn.Module, data: TaskData | None = None) -> dict[str, np.ndarray]:
        """Units of every group ordered from least to most important.

        Returns
        -------
        dict of str to ndarray
            Group name -> unit indices (heads or channels), least important first; ties keep
            index order.
        """
        if self.importance not in IMPORTANCE_CRITERIA:
            raise ValueError(
                f"Unknown importance criterion {self.importance!r}; use one of "
                f"{IMPORTANCE_CRITERIA}."
            )
        work = copy.deepcopy(model)
        graph, groups = self._trace(work)
        if self.importance == "taylor":
            self._loss_gradients(work, data)
        generator = torch.Generator().manual_seed(self.seed)
        criterion = _channel_criteria().get(self.importance)
        rankings = {}
        for name, item in groups.items():
            if criterion is None:  # the random control
                scores = torch.rand(item.group.size, generator=generator)
            else:
                channels = graph.get_out_channels(item.root)
                pruning_fn = graph.get_pruner_of_module(item.root).prune_out_channels
                scores = criterion(graph.get_pruning_group(item.root, pruning_fn, list(range(channels))))
                if item.attention is not None:
                    scores = scores.view(item.attention.n_heads, item.attention.head_dim).mean(1)
            rankings[name] = np.argsort(scores.detach().cpu().numpy(), kind="stable")
        return rankings

    def _loss_gradients(self, model: nn.Module, data: TaskData | None) -> None:
        """Accumulate the class-weighted training loss gradient (for the Taylor criterion)."""
        if data is None:
            raise ValueError("The 'taylor' importance needs training data for its gradients; "
                             "pass data, or use importance='l2'.")
        rng = np.random.default_rng(self.seed)
        chosen = np.sort(rng.permutation(len(data.train))[:_TAYLOR_EXAMPLES])
        inputs = torch.from_numpy(data.train.x[chosen])
        labels = torch.from_numpy(data.train.y[chosen])
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            class_weighted_loss(data)(model(inputs), labels).backward()

    def remove(self, model: nn.Module, removed: Mapping[str, Sequence[int]]) -> nn.Module:
        """A copy of ``model`` without the given units.

        Parameters
        ----------
        removed : dict of str to sequence of int
            Group name -> indices of the heads or channels to remove (at most ``size - 1``).
        """
        pruned = copy.deepcopy(model)
        graph, groups = self._trace(pruned)
        unknown = sorted(set(removed) - set(groups))
        if unknown:
            raise ValueError(f"No prunable group(s) {unknown}; the groups are {sorted(groups)}.")
        for name, units in removed.items():
            size = groups[name].group.size
            if len(set(units)) != len(units) or len(units) >= size or \
                    any(not 0 <= int(unit) < size for unit in units):
                raise ValueError(
                    f"Group {name!r} has {size} units; remove at most {size - 1} distinct "
                    f"indices in [0, {size}), got {list(units)}."
                )
            if len(units):
                self._remove_units(graph, groups[name], units)
        _sync_attention_heads(pruned)
        return pruned.eval()

    def prune(
        self, model: nn.Module, ratios: Mapping[str, float] | float, data: TaskData | None = None
    ) -> nn.Module:
        """A copy of ``model`` with the least important units of each group removed.

        Parameters
        ----------
        ratios : float or dict of str to float
            Fraction of each group's units to remove (:func:`units_to_remove`): one value for
            every group, or group name -> fraction for the named groups only.
        data : TaskData, optional
            Needed by the ``"taylor"`` criterion.
        """
        rankings = self.rank(model, data)
        if not isinstance(ratios, Mapping):
            ratios = dict.fromkeys(rankings, float(ratios))
        unknown = sorted(set(ratios) - set(rankings))
        if unknown:
            raise ValueError(f"No prunable group(s) {unknown}; the groups are {sorted(rankings)}.")
        return self.remove(model, _least_important(rankings, ratios))

    def prune_to_macs(
        self, model: nn.Module, mac_reduction: float, data: TaskData | None = None
    ) -> tuple[nn.Module, float]:
        """The least-pruned copy of ``model`` with at most ``1 / mac_reduction`` of its MACs.

        One ratio for every group, the smallest that reaches the target, found by bisection
        (MACs counted with :func:`satcompress.measure.count_macs` on ``example_input[:1]``).

        Returns
        -------
        (model, ratio)
            The pruned copy and the group ratio used.

        Raises
        ------
        ValueError
            If even pruning every group to one unit does not reach the target.
        """
        example = self.example_input[:1]
        target_macs = count_macs(model, example) / mac_reduction
        rankings = self.rank(model, data)
        if not rankings:
            raise ValueError(f"{type(model).__name__} has no prunable group; nothing to remove.")

        def at_ratio(ratio: float) -> nn.Module:
            return self.remove(model, _least_important(rankings, dict.fromkeys(rankings, ratio)))

        best, low, high = at_ratio(1.0), 0.0, 1.0
        smallest_macs = count_macs(best, example)
        if smallest_macs > target_macs:
            raise ValueError(
                f"A {mac_reduction}x MAC reduction is out of reach: pruning every group of "
                f"{type(model).__name__} to one unit gives only "
                f"{count_macs(model, example) / smallest_macs:.2f}x. Ask for less, or allow "
                "more groups (prune_residual_stream=True, fewer ignored_layers)."
            )
        resolution = 0.5 / max(len(ranking) for ranking in rankings.values())
        while high - low > resolution:
            middle = (low + high) / 2
            candidate = at_ratio(middle)
            if count_macs(candidate, example) <= target_macs:
                best, high = candidate, middle
            else:
                low = middle
        return best, high


def _least_important(
    rankings: Mapping[str, np.ndarray], ratios: Mapping[str, float]
) -> dict[str, list[int]]:
    return {name: [int(unit) for unit in rankings[name][: units_to_remove(ratio, len(rankings[name]))]]
            for name, ratio in ratios.items()}


@dataclasses.dataclass(frozen=True)
class GroupPruneSettings(FinetuneSettings):
    """Settings of the stages that prune structured groups (not a stage itself).

    Attributes
    ----------
    importance : str
        Channel importance criterion: ``"l1"``, ``"l2"`` (group norms), ``"taylor"``
        (first-order Taylor) or ``"random"`` (control).
    prune_residual_stream : bool
        Also prune residual-stream groups where the model allows it (see the module
        docstring).
    ignored_layers : tuple of str
        Module names whose outputs are never pruned, besides the layers producing the model's
        outputs (always kept).
    """

    importance: str = "l2"
    prune_residual_stream: bool = True
    ignored_layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        if self.importance not in IMPORTANCE_CRITERIA:
            raise ValueError(
                f"{name}.importance must be one of {IMPORTANCE_CRITERIA}, got {self.importance!r}."
            )
        if not isinstance(self.prune_residual_stream, bool):
            raise ValueError(f"{name}.prune_residual_stream must be True or False, got "
                             f"{self.prune_residual_stream!r}.")
        check_module_names(self, "ignored_layers")

    def pruner(self, data: TaskData | None) -> StructuredPruner:
        """A :class:`StructuredPruner` tracing with the first training example of ``data``."""
        if data is None:
            raise ValueError(
                f"Stage {self.stage_name!r} needs the task's data (an example input to trace "
                "the model, and training data to fine-tune); pass data."
            )
        return StructuredPruner(
            torch.from_numpy(data.train.x[:1]), self.importance, self.ignored_layers,
            self.prune_residual_stream, self.seed,
        )


def no_prunable_group(
    model: nn.Module, config: GroupPruneSettings, data: TaskData | None
) -> str | None:
    """The structured pruning stages' check (see :func:`satcompress.stages.check`): why
    ``model`` has no group to prune, or None (also without ``data``, which the stage asks for).
    """
    if data is None:
        return None
    try:
        groups = config.pruner(data).groups(model)
    except ValueError as error:  # e.g. ignored_layers naming a layer the model lacks
        return str(error)
    except Exception as error:  # Torch-Pruning fails on the model (e.g. a GRU after a Linear)
        return (f"Torch-Pruning cannot trace the channel groups of the {type(model).__name__} "
                f"({type(error).__name__}: {error}); leave this stage out.")
    if groups:
        return None
    return (f"the {type(model).__name__} has no channel group Torch-Pruning can remove "
            f"outside ignored_layers {list(config.ignored_layers)}; leave this stage out.")


@dataclasses.dataclass(frozen=True)
class StructuredPruneConfig(GroupPruneSettings):
    """Structured pruning of every group, or of named groups (stage ``structured_prune``).

    Give exactly one target; with none, ``mac_reduction=2.0`` is used.

    Attributes
    ----------
    mac_reduction : float or None
        Prune until the model needs at most ``1 / mac_reduction`` of its multiply-accumulates
        (2.0: half of them); the smallest uniform group ratio that gets there is used.
    channel_ratio : float or None
        Remove this fraction of every group's units instead (0.5: half the channels of each
        hidden layer and half the heads of each attention module).
    group_ratios : tuple of (str, float)
        Remove the given fraction of the units of each named group only (group names as in
        :meth:`StructuredPruner.groups`, e.g. ``(("blocks.0.fc1", 0.5),)``); other groups keep
        all their units. This is the per-group control a search chooses.
    """

    mac_reduction: float | None = None
    channel_ratio: float | None = None
    group_ratios: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        ratios = check_layer_settings(self, "group_ratios", _check_group_ratio)
        targets = [self.mac_reduction is not None, self.channel_ratio is not None, bool(ratios)]
        if not any(targets):
            object.__setattr__(self, "mac_reduction", 2.0)
        elif sum(targets) > 1:
            raise ValueError(
                "StructuredPruneConfig needs exactly one target: mac_reduction (e.g. 2.0), "
                "channel_ratio (e.g. 0.5) or group_ratios (e.g. (('blocks.0.fc1', 0.5),)); "
                "leave the others unset."
            )
        if self.mac_reduction is not None and not (
            isinstance(self.mac_reduction, (int, float)) and 1 < self.mac_reduction < math.inf
        ):
            raise ValueError(f"StructuredPruneConfig.mac_reduction must be a finite number > 1 "
                             f"(2.0 = half the MACs), got {self.mac_reduction!r}.")
        if self.channel_ratio is not None and not (
            isinstance(self.channel_ratio, (int, float)) and 0 < self.channel_ratio < 1
        ):
            raise ValueError(f"StructuredPruneConfig.channel_ratio must be a fraction in (0, 1), "
                             f"got {self.channel_ratio!r}.")


def _check_group_ratio(ratio: float) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise ValueError(
            f"StructuredPruneConfig.group_ratios values must be fractions in [0, 1), got {ratio!r}."
        )


@register_stage("structured_prune", check=no_prunable_group)
def structured_prune(
    model: nn.Module, config: StructuredPruneConfig, data: TaskData | None
) -> nn.Module:
    """Remove the least important units of every group (or of the named ones), then fine-tune.

    Returns a new, smaller model; ``model.prune_report_`` holds ``method``, ``importance``,
    ``channel_ratio`` (the uniform ratio used; None with ``group_ratios``), ``macs_before``, ``macs_after`` and ``groups`` (name,
    kind, ``size_before``, ``size_after`` of each group).
    """
    pruner = config.pruner(data)
    groups = pruner.groups(model)
    if config.mac_reduction is not None:
        pruned, ratio = pruner.prune_to_macs(model, config.mac_reduction, data)
        ratios = dict.fromkeys((group.name for group in groups), ratio)
    elif config.channel_ratio is not None:
        ratio = config.channel_ratio
        ratios = dict.fromkeys((group.name for group in groups), ratio)
        pruned = pruner.prune(model, ratio, data)
    else:
        ratio, ratios = None, dict(config.group_ratios)
        pruned = pruner.prune(model, ratios, data)
    pruned = config.finetune(pruned, data)
    example = pruner.example_input
    setattr(pruned, PRUNE_REPORT_ATTRIBUTE, {
        "method": "structured",
        "importance": config.importance,
        "channel_ratio": ratio,
        "macs_before": count_macs(model, example),
        "macs_after": count_macs(pruned, example),
        "groups": [
            {"group": group.name, "kind": group.kind, "size_before": group.size,
             "size_after": group.size - units_to_remove(ratios.get(group.name, 0.0), group.size)}
            for group in groups
        ],
    })
    return pruned.eval()
