"""Fold each BatchNorm into the convolution before it: the clustered weights are the shipped ones.

Weight clustering gives a layer ``k`` shared values. A convolution followed by batch
normalisation computes, at inference (running statistics), ``s_c (W_c * x + b_c - mu_c) +
beta_c`` with ``s_c = gamma_c / sqrt(var_c + eps)`` per output channel ``c``. ONNX export folds
that scale into the convolution (onnxscript's optimizer rule ``fuse_batchnorm_into_conv``, run
by ``torch.onnx.export(dynamo=True)``), which multiplies each channel's weights by its own
``s_c``: a layer's ``k`` shared values become up to ``k`` per channel in the artifact, and the
container no longer stores them as a ``k``-entry codebook.

The fix chosen here is the one of Deep Compression-style pipelines (and of Jacob et al. 2018,
section 3.2, for quantization): fold the batch normalisation into the convolution *before*
clustering, ``W'_c = s_c W_c`` and ``b'_c = s_c (b_c - mu_c) + beta_c``, and replace the
BatchNorm by ``nn.Identity``. Clustering then acts on the weights that ship, the export has no
BatchNorm left to fold, and the artifact holds exactly the clustered model's values (its
predictions equal PyTorch's, and it runs one layer fewer per convolution). Keeping the
BatchNorm unfused in export was the alternative; it was not chosen because it needs the
exporter's internal rewrite-rule list (no public switch turns one rule off) and stores four
float vectors per channel where the folded convolution stores one bias. The price: centroid
fine-tuning after clustering trains the folded network, without batch statistics.

A pair is folded only when it is certain to be a pair: ``torch.fx`` traces the model, the
BatchNorm's input must be the output of one ``nn.Conv1d``/``Conv2d``/``Conv3d`` call that
nothing else reads, each module must be called once and its parameters not read elsewhere,
and the BatchNorm must have running statistics. Every BatchNorm left alone is reported with
the reason (a model ``torch.fx`` cannot trace keeps all of them, and its clustered
convolutions lose their codebook in the artifact as before).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import fx, nn
from torch.nn.utils import parametrize

__all__ = ["conv_batchnorm_pairs", "fold_batchnorm"]

_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _pair_refusal(model: nn.Module, node: fx.Node, calls: Counter[str], read: set[str]
                  ) -> str | None:
    """Why the BatchNorm called at ``node`` cannot be folded into its input's convolution."""
    name, source = node.target, node.args[0] if node.args else None
    norm = model.get_submodule(name)
    if not (isinstance(source, fx.Node) and source.op == "call_module"
            and isinstance(model.get_submodule(source.target), _CONVOLUTIONS)):
        return "its input is not the output of a convolution"
    conv = source.target
    if len(source.users) != 1:
        return f"the output of convolution {conv} is also read elsewhere"
    if calls[name] != 1 or calls[conv] != 1:
        return f"it or convolution {conv} is called more than once"
    if name in read or conv in read:
        return f"the parameters of it or of convolution {conv} are read outside the layer"
    if norm.running_mean is None or norm.running_var is None:
        return "it has no running statistics (track_running_stats=False)"
    if parametrize.is_parametrized(model.get_submodule(conv)):
        return f"convolution {conv} is parametrised"
    return None


def conv_batchnorm_pairs(model: nn.Module) -> tuple[dict[str, str], dict[str, str]]:
    """``({batchnorm: convolution}, {batchnorm: why not})`` for every BatchNorm of ``model``.

    The first dict holds the foldable pairs, the second every other BatchNorm with the reason.
    """
    norms = [name for name, module in model.named_modules() if isinstance(module, _BATCH_NORMS)]
    if not norms:
        return {}, {}
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as error:  # any failure of user code under tracing: fold nothing
        reason = (f"torch.fx cannot trace the {type(model).__name__} ({type(error).__name__}), "
                  "so the layer feeding it is unknown")
        return {}, dict.fromkeys(norms, reason)
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    read = {node.target.rpartition(".")[0] for node in graph.nodes if node.op == "get_attr"}
    pairs, refused = {}, {}
    for name in norms:
        nodes = [node for node in graph.nodes if node.op == "call_module" and node.target == name]
        reason = ("it is not called by the model's forward" if not nodes
                  else _pair_refusal(model, nodes[0], calls, read))
        if reason is None:
            pairs[name] = nodes[0].args[0].target
        else:
            refused[name] = reason
    return pairs, refused


@torch.no_grad()
def _fold(conv: nn.Module, norm: nn.Module) -> None:
    """``conv`` computes ``norm(conv(x))`` (with running statistics) afterwards; float64 math."""
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    shift = -norm.running_mean.double() * scale
    if norm.weight is not None:
        scale, shift = scale * norm.weight.double(), shift * norm.weight.double()
    if norm.bias is not None:
        shift = shift + norm.bias.double()
    if conv.bias is not None:
        shift = shift + conv.bias.double() * scale
    weight = conv.weight.double() * scale.reshape(-1, *[1] * (conv.weight.ndim - 1))
    conv.weight.copy_(weight.to(conv.weight.dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(shift.to(conv.weight.dtype))
    else:
        conv.bias.copy_(shift.to(conv.bias.dtype))


def fold_batchnorm(model: nn.Module, skip_layers: Sequence[str] = ()
                   ) -> tuple[dict[str, str], dict[str, str]]:
    """Fold every foldable BatchNorm into its convolution IN PLACE (the BatchNorm becomes
    ``nn.Identity``); convolutions in ``skip_layers`` keep theirs.

    Returns ``({batchnorm: convolution folded into}, {batchnorm: why it was kept})``.
    """
    pairs, refused = conv_batchnorm_pairs(model)
    folded = {}
    for norm_name, conv_name in pairs.items():
        if conv_name in skip_layers:
            refused[norm_name] = f"convolution {conv_name} is in skip_layers"
            continue
        _fold(model.get_submodule(conv_name), model.get_submodule(norm_name))
        model.set_submodule(norm_name, nn.Identity())
        folded[norm_name] = conv_name
    return folded, refused
