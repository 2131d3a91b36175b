"""Students of any architecture: the teacher's own modules, fewer blocks, fewer channels.

For a teacher that is not one of satcompress's reference architectures, the student is derived
from the teacher's module tree itself, as the width/depth multipliers of MobileNets (Howard et
al. 2017) prescribe:

1. Depth: in every ``nn.Sequential`` / ``nn.ModuleList``, a run of consecutive children of
   the same class (with parameters) is a stack of repeated blocks; ``round(n x
   depth_multiplier)`` of its ``n`` blocks are kept (at least one) by dropping the later
   *removable* ones -- those whose output has the shape of their input on the example input
   (so a ResNet stage keeps its downsampling first block). A run whose blocks hold runs of
   their own is left to the inner runs. ``nn.Sequential`` children keep their names (a
   dropped block leaves a gap in the numbering); a ``nn.ModuleList`` renumbers its children.
2. Width: every group of coupled channels that Torch-Pruning's dependency graph finds
   (DepGraph, Fang et al. 2023) keeps ``round(c x width_multiplier)`` of its ``c`` channels.
   A group holding ``nn.MultiheadAttention`` channels keeps ``round(heads x
   heads_multiplier)`` whole heads of ``round(head_dim x width_multiplier)`` channels each.
   One-direction ``nn.RNN``/``nn.GRU``/``nn.LSTM`` layers without projections lose hidden
   units through :class:`RecurrentPruner`. A group is scaled only where removing one unit of
   it leaves a model that runs and keeps the teacher's output shape: the classifier's classes,
   the input features and whatever Torch-Pruning cannot resize (e.g. a bidirectional RNN)
   stay at full width (:attr:`StudentTemplate.full_width` says why).
3. Initialisation: every module's ``reset_parameters()`` is called (``_reset_parameters()``
   for ``nn.MultiheadAttention``), so the student shares no weights with the teacher.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from satcompress.prune.structured import output_layers

__all__ = ["RecurrentPruner", "StudentTemplate", "repeated_blocks"]

_RECURRENT_GATES = {nn.RNN: 1, nn.GRU: 3, nn.LSTM: 4}
_ROOT_TYPES = (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention, *_RECURRENT_GATES)


def _recurrent_refusal(layer: nn.RNNBase) -> str | None:
    if layer.bidirectional:
        return "a bidirectional recurrent layer"
    if getattr(layer, "proj_size", 0):
        return "an LSTM with proj_size"
    return None


class RecurrentPruner(tp.pruner.BasePruningFunc):
    """Torch-Pruning pruner of the hidden units of a one-direction ``nn.RNN``, ``nn.GRU`` or
    ``nn.LSTM`` without projections, of any number of layers.

    Torch-Pruning 1.6 has no GRU or RNN pruner, and its LSTM pruner handles one layer only
    (and fails on a Linear -> LSTM -> Linear classifier with an IndexError). This one removes
    hidden unit ``j`` from every gate of every layer (rows ``g x hidden + j`` of each
    ``weight_ih``/``weight_hh``/bias, column ``j`` of ``weight_hh`` and of the next layer's
    ``weight_ih``). Bidirectional layers and LSTM projections are refused
    (``ValueError``), so the groups holding them stay at full width.
    """

    TARGET_MODULES = tuple(_RECURRENT_GATES)

    @staticmethod
    def _kept(size: int, idxs: Sequence[int]) -> torch.Tensor:
        return torch.tensor(sorted(set(range(size)) - {int(i) for i in idxs}), dtype=torch.long)

    @staticmethod
    def _check(layer: nn.RNNBase) -> None:
        refusal = _recurrent_refusal(layer)
        if refusal:
            raise ValueError(f"RecurrentPruner cannot resize {refusal}.")

    def prune_out_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.RNNBase:
        self._check(layer)
        hidden = layer.hidden_size
        keep = self._kept(hidden, idxs)
        gates = _RECURRENT_GATES[type(layer)]
        gate_rows = torch.cat([keep + gate * hidden for gate in range(gates)])
        for index in range(layer.num_layers):
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                name = f"{kind}_l{index}"
                if getattr(layer, name, None) is None:
                    continue
                value = getattr(layer, name).data[gate_rows]
                if kind == "weight_hh" or (kind == "weight_ih" and index > 0):
                    value = value[:, keep]
                setattr(layer, name, nn.Parameter(value.contiguous()))
        layer.hidden_size = len(keep)
        return layer

    def prune_in_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.RNNBase:
        self._check(layer)
        keep = self._kept(layer.input_size, idxs)
        layer.weight_ih_l0 = nn.Parameter(layer.weight_ih_l0.data[:, keep].contiguous())
        layer.input_size = len(keep)
        return layer

    def get_out_channels(self, layer: nn.RNNBase) -> int:
        """Features of the output sequence (both directions, after any projection)."""
        return (layer.proj_size or layer.hidden_size) * (2 if layer.bidirectional else 1)

    def get_in_channels(self, layer: nn.RNNBase) -> int:
        return layer.input_size


# -------------------------------------------------------------------------------------------
# Depth
# -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Call:
    count: int = 0
    same_shape: bool = False


def _calls(model: nn.Module, example_input: torch.Tensor) -> dict[str, _Call]:
    """Per module name: how often it ran on ``example_input`` and whether its (last) output was
    one tensor of its first input's shape."""
    calls: dict[str, _Call] = {}
    names = {module: name for name, module in model.named_modules()}

    def record(module: nn.Module, args: tuple, output: object) -> None:
        call = calls.setdefault(names[module], _Call())
        call.count += 1
        call.same_shape = bool(args) and isinstance(args[0], torch.Tensor) \
            and isinstance(output, torch.Tensor) and args[0].shape == output.shape

    handles = [module.register_forward_hook(record) for module in model.modules()]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _runs(container: nn.Module) -> list[list[str]]:
    """Runs (of at least two) of consecutive same-class children with parameters."""
    runs: list[list[str]] = []
    previous: type | None = None
    for key, child in container.named_children():
        if next(child.parameters(), None) is None:
            previous = None
            continue
        if type(child) is previous:
            runs[-1].append(key)
        else:
            runs.append([key])
        previous = type(child)
    return [run for run in runs if len(run) > 1]


def _block_runs(model: nn.Module) -> dict[str, list[list[str]]]:
    """Container name -> its innermost runs of repeated blocks (see the module docstring)."""
    found = {name: _runs(module) for name, module in model.named_modules()
             if isinstance(module, (nn.Sequential, nn.ModuleList))}
    found = {name: runs for name, runs in found.items() if runs}
    innermost = {}
    for name, runs in found.items():
        prefix = f"{name}." if name else ""
        kept = [run for run in runs
                if not any(other.startswith(f"{prefix}{key}.") for key in run for other in found)]
        if kept:
            innermost[name] = kept
    return innermost


def repeated_blocks(model: nn.Module) -> list[str]:
    """Names of the repeated blocks of ``model`` (members of the runs depth reduction acts
    on), in model order."""
    blocks = []
    for container, runs in _block_runs(model).items():
        prefix = f"{container}." if container else ""
        blocks += [f"{prefix}{key}" for run in runs for key in run]
    order = {name: index for index, (name, _) in enumerate(model.named_modules())}
    return sorted(blocks, key=order.__getitem__)


def _drop_blocks(container: nn.Module, keys: Sequence[str]) -> None:
    if isinstance(container, nn.ModuleList):
        for index in sorted((int(key) for key in keys), reverse=True):
            del container[index]
    else:  # nn.Sequential: keep the other children's names
        for key in keys:
            delattr(container, key)


def _forward_failure(model: nn.Module, example_input: torch.Tensor) -> str | None:
    """None if ``model`` runs on ``example_input``, else the error."""
    try:
        with torch.no_grad():
            model(example_input)
    except Exception as error:  # any failure means the change cannot be kept
        return f"{type(error).__name__}: {error}"
    return None


def _reduce_depth(
    model: nn.Module, depth_multiplier: float, example_input: torch.Tensor
) -> tuple[nn.Module, dict[str, str]]:
    """``model`` with fewer repeated blocks (a copy if any is dropped), and the containers
    left alone (why)."""
    left: dict[str, str] = {}
    if depth_multiplier >= 1:
        return model, left
    calls = _calls(model, example_input)
    # the last containers first: renumbering a ModuleList cannot rename what is left to do
    for container_name, runs in reversed(_block_runs(model).items()):
        prefix = f"{container_name}." if container_name else ""
        dropped: list[str] = []
        for run in runs:
            n_drop = len(run) - max(1, round(len(run) * depth_multiplier))
            removable = [key for key in run
                         if calls.get(prefix + key, _Call()).count == 1
                         and calls[prefix + key].same_shape]
            if n_drop > 0:
                dropped += removable[-n_drop:]
        if not dropped:
            continue
        trial = copy.deepcopy(model)
        _drop_blocks(trial.get_submodule(container_name), dropped)
        failure = _forward_failure(trial, example_input)
        if failure is None:
            model = trial
        else:
            left[container_name or type(model).__name__] = (
                f"dropping blocks {dropped} breaks the forward pass ({failure})")
    return model, left


# -------------------------------------------------------------------------------------------
# Width
# -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Group:
    """A group of coupled channels, by the name of its root layer; ``heads`` > 0 when the
    channels are those of attention heads (``size = heads x head_dim``)."""

    root: str
    size: int
    heads: int = 0
    attention: tuple[str, ...] = ()

    @property
    def unit(self) -> int:
        """Channels one width step scales: a head's channels, or the whole group."""
        return self.size // self.heads if self.heads else self.size

    def removed(self, width_multiplier: float, heads_multiplier: float) -> list[int]:
        """Channel indices a student at these multipliers drops (the last ones)."""
        unit = _kept(self.unit, width_multiplier)
        if not self.heads:
            return list(range(unit, self.size))
        heads, head_dim = _kept(self.heads, heads_multiplier), self.unit
        return [c for c in range(self.size) if c // head_dim >= heads or c % head_dim >= unit]

    def one_less(self) -> list[int]:
        """The channels of one unit: the last channel of each head (or the last head, of one
        channel), or the last channel."""
        if self.heads and self.unit > 1:
            return [c for c in range(self.size) if c % self.unit == self.unit - 1]
        return [self.size - 1]


def _kept(size: int, multiplier: float) -> int:
    return min(size, max(1, round(size * multiplier)))


def _trace(
    model: nn.Module, example_input: torch.Tensor
) -> tuple[tp.DependencyGraph, dict[str, tuple[_Group, nn.Module]], dict[str, str]]:
    """Dependency graph of ``model`` (pruned in place later), its groups by root name (with the
    root module) and the groups that cannot be scaled (why)."""
    names = {module: name for name, module in model.named_modules()}
    pruner = RecurrentPruner()
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tp's notes on operations it treats as element-wise
        graph = tp.DependencyGraph().build_dependency(
            model, example_inputs=example_input, verbose=False,
            customized_pruners={kind: pruner for kind in _RECURRENT_GATES},
        )
    groups: dict[str, tuple[_Group, nn.Module]] = {}
    refused: dict[str, str] = {}
    outputs, visited = set(output_layers(graph)), set()
    for root in list(graph.module2node):  # tp's get_all_groups, surviving a group it cannot map
        if not isinstance(root, _ROOT_TYPES) or root in visited or root in outputs:
            continue
        name = names[root]
        size = graph.get_out_channels(root)
        try:
            group = graph.get_pruning_group(
                root, graph.get_pruner_of_module(root).prune_out_channels, list(range(size)))
        except Exception as error:  # an index mapping Torch-Pruning cannot follow
            refused[name] = (f"Torch-Pruning cannot map its channels "
                             f"({type(error).__name__}: {error})")
            visited.add(root)
            continue
        producers = {dep.target.module for dep, _ in group
                     if graph.is_out_channel_pruning_fn(dep.handler)}
        visited |= producers
        if producers & outputs:
            continue
        attention = sorted({dep.target.module for dep, _ in group
                            if isinstance(dep.target.module, nn.MultiheadAttention)},
                           key=lambda module: names[module])
        head_counts = {module.num_heads for module in attention}
        if len(head_counts) > 1:
            refused[name] = (f"attention layers {[names[m] for m in attention]} share these "
                             f"channels with different head counts {sorted(head_counts)}")
        elif size < 2:
            refused[name] = "it has a single channel"
        else:
            info = _Group(name, size, head_counts.pop() if head_counts else 0,
                          tuple(names[module] for module in attention))
            groups[name] = (info, root)
    traced = [f"{names[module]}." for module in graph.module2node if module in names]
    for name, module in model.named_modules():
        if isinstance(module, _ROOT_TYPES) and module not in graph.module2node \
                and not any(name.startswith(parent) for parent in traced):
            refused[name] = ("Torch-Pruning's trace does not reach its output (e.g. a recurrent "
                             "layer read through its final hidden state)")
    return graph, groups, refused


def _prune(graph: tp.DependencyGraph, root: nn.Module, channels: list[int]) -> None:
    pruning_fn = graph.get_pruner_of_module(root).prune_out_channels
    graph.get_pruning_group(root, pruning_fn, channels).prune()


def _set_heads(model: nn.Module, group: _Group, channels: list[int]) -> None:
    """Set the head count of the group's attention layers to the heads removing ``channels``
    leaves."""
    heads = len({c // group.unit for c in set(range(group.size)) - set(channels)})
    for name in group.attention:
        attention = model.get_submodule(name)
        attention.num_heads = heads
        attention.head_dim = attention.embed_dim // heads


def _reinitialise(model: nn.Module) -> list[str]:
    """Call every module's ``reset_parameters()`` (children before parents, as their
    constructors run); return the parameters no such call covers."""
    covered: set[int] = set()
    for module in reversed(list(model.modules())):
        reset = getattr(module, "reset_parameters", None) \
            or getattr(module, "_reset_parameters", None)  # nn.MultiheadAttention's
        if callable(reset):
            reset()
            covered.update(id(parameter) for parameter in module.parameters(recurse=False))
    return [name for name, parameter in model.named_parameters() if id(parameter) not in covered]


def _without_hooks(model: nn.Module) -> nn.Module:
    """``model`` without forward (post) and backward hooks: a teacher's instrumentation (e.g.
    feature capture) is not part of its architecture. Pre-hooks (weight norm) stay."""
    for module in model.modules():
        for hooks in (module._forward_hooks, module._forward_hooks_with_kwargs,
                      module._forward_hooks_always_called, module._backward_hooks,
                      module._backward_pre_hooks):
            hooks.clear()
    return model


def _output_shape(model: nn.Module, example_input: torch.Tensor) -> torch.Size:
    with torch.no_grad():
        return model(example_input).shape


class StudentTemplate:
    """What a teacher's students share: its depth-reduced copy and the groups a width scales.

    Parameters
    ----------
    teacher : nn.Module
        Any classifier Torch-Pruning can trace; never modified (a copy is taken).
    depth_multiplier : float
        In (0, 1]: the fraction of each run of repeated blocks kept.
    example_input : Tensor
        One input batch (e.g. ``x[:1]``) to trace the teacher with.

    Attributes
    ----------
    groups : list
        The groups a width multiplier scales, in model order.
    full_width : dict of str to str
        Groups (by root layer) and containers left as they are, and why.
    """

    def __init__(self, teacher: nn.Module, depth_multiplier: float,
                 example_input: torch.Tensor) -> None:
        self.example_input = example_input
        base = _without_hooks(copy.deepcopy(teacher)).eval().requires_grad_(True)
        self.output_shape = _output_shape(base, example_input)
        self._base, self.full_width = _reduce_depth(base, depth_multiplier, example_input)
        _, groups, refused = _trace(copy.deepcopy(self._base), example_input)
        self.full_width.update(refused)
        self.groups = [group for group, _ in groups.values()]
        if self._failure({group.root: group.one_less() for group in self.groups}):
            for group in list(self.groups):  # find the culprits one at a time
                failure = self._failure({group.root: group.one_less()})
                if failure:
                    self.groups.remove(group)
                    self.full_width[group.root] = failure

    @property
    def width_units(self) -> int:
        """Channels of the widest unit a width multiplier scales (1 if nothing scales)."""
        return max((group.unit for group in self.groups), default=1)

    def _pruned(self, removed: dict[str, list[int]]) -> nn.Module:
        model = copy.deepcopy(self._base)
        graph, groups, _ = _trace(model, self.example_input)
        for name, channels in removed.items():
            group, root = groups[name]
            if channels:
                _prune(graph, root, channels)
                if group.heads:
                    _set_heads(model, group, channels)
        return model

    def _failure(self, removed: dict[str, list[int]]) -> str | None:
        """None if removing these channels leaves a model that runs with the teacher's output
        shape, else what goes wrong."""
        try:
            model = self._pruned(removed)
            shape = _output_shape(model, self.example_input)
        except Exception as error:  # Torch-Pruning or the forward pass failed: not scalable
            return f"Torch-Pruning cannot resize it ({type(error).__name__}: {error})"
        if shape != self.output_shape:
            return f"it holds the model's outputs (shape {tuple(shape)} after pruning)"
        return None

    def build(self, width_multiplier: float, heads_multiplier: float = 1.0,
              initialise: bool = True) -> nn.Module:
        """A student: the template pruned to the multipliers, freshly initialised (unless
        ``initialise=False``, for counting parameters), in training mode."""
        removed = {group.root: group.removed(width_multiplier, heads_multiplier)
                   for group in self.groups}
        student = self._pruned(removed)
        if _output_shape(student, self.example_input) != self.output_shape:
            raise RuntimeError("build_student: the pruned student changed the output shape; "
                               "this is a satcompress bug, please report it.")
        if initialise:
            untouched = _reinitialise(student)
            if untouched:
                warnings.warn(
                    f"build_student: no reset_parameters() covers {untouched} of the "
                    f"{type(student).__name__}; the student keeps the teacher's values there "
                    "(cut to its width).", stacklevel=3)
        return student.train()
