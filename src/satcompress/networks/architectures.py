"""Rebuild a named architecture from a state dict alone, reading its sizes from the weights.

A user's model file holds weights, never code (see :mod:`satcompress.pipeline.user_model`):
the layers come from an architecture satcompress knows, sized to fit the weights. The sizes
that shapes do not reveal (the number of attention heads) are options.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
from torch import nn

from satcompress.networks.residual_mlp import ResidualMLP
from satcompress.networks.t2 import T2Transformer

__all__ = ["ARCHITECTURES", "MAX_ABS_WEIGHT", "check_weights", "load_weights", "model_from_state_dict"]

MAX_ABS_WEIGHT = 1e10
"""Largest weight magnitude accepted: beyond it a few float32 layers overflow to inf."""


def _shape(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise KeyError(key)
    return tuple(state_dict[key].shape)


def _count_blocks(state_dict: Mapping[str, torch.Tensor]) -> int:
    indices = {int(m.group(1)) for key in state_dict if (m := re.match(r"blocks\.(\d+)\.", key))}
    return len(indices)


def _residual_mlp(state_dict: Mapping[str, torch.Tensor], n_heads: int) -> nn.Module:
    del n_heads  # an MLP has none
    width, n_features = _shape(state_dict, "stem.weight")
    hidden = _shape(state_dict, "blocks.0.fc1.weight")[0] if _count_blocks(state_dict) else None
    return ResidualMLP(n_features=n_features, n_classes=_shape(state_dict, "head.weight")[0],
                       width=width, depth=_count_blocks(state_dict), hidden=hidden)


def _t2(state_dict: Mapping[str, torch.Tensor], n_heads: int) -> nn.Module:
    d_model, n_channels, _ = _shape(state_dict, "embedding.weight")
    return T2Transformer(
        n_timesteps=_shape(state_dict, "positional_encoding")[1],
        n_channels=n_channels,
        n_classes=_shape(state_dict, "head.weight")[0],
        d_model=d_model,
        n_heads=n_heads,
        ff_dim=_shape(state_dict, "blocks.0.ff1.weight")[0],
        n_blocks=_count_blocks(state_dict),
    )


ARCHITECTURES: dict[str, Callable[[Mapping[str, torch.Tensor], int], nn.Module]] = {
    "residual_mlp": _residual_mlp,
    "t2": _t2,
}
"""Architecture name -> builder from ``(state_dict, n_heads)``."""


def check_weights(state_dict: Mapping[str, object]) -> None:
    """Every entry is a real tensor, and every floating one finite and within
    :data:`MAX_ABS_WEIGHT`.

    Raises
    ------
    ValueError
        Naming the first bad tensor (and the index of its first bad value).
    """
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"the entry {name!r} is a {type(tensor).__name__}, not a tensor")
        if tensor.is_complex() or tensor.dtype == torch.bool or tensor.is_quantized:
            raise ValueError(f"the tensor {name!r} is {str(tensor.dtype).removeprefix('torch.')}; "
                             "weights must be real floating point (integer buffers allowed)")
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        magnitude = tensor.detach().double().abs()
        bad = ~(magnitude <= MAX_ABS_WEIGHT)  # NaN compares False
        if bool(bad.any()):
            index = tuple(int(i) for i in torch.nonzero(bad)[0])
            value = float(tensor[index]) if index else float(tensor)
            raise ValueError(f"the tensor {name!r} holds {value} at index {list(index)}; weights "
                             f"must be finite and at most {MAX_ABS_WEIGHT:g} in magnitude")


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """Load ``state_dict`` (already passed by :func:`check_weights`) into ``model``, refusing an
    integer tensor where the layer holds floats (``load_state_dict`` would convert it
    silently).

    Raises
    ------
    ValueError
        If a tensor is missing, unexpected, mis-shaped or of the wrong kind (``what`` names
        the architecture in the message).
    """
    expected = model.state_dict()
    for name, tensor in state_dict.items():
        if name in expected and expected[name].is_floating_point() != tensor.is_floating_point():
            raise ValueError(f"The weights do not fit the {what} architecture: the tensor "
                             f"{name!r} is {str(tensor.dtype).removeprefix('torch.')}, the layer "
                             f"holds {str(expected[name].dtype).removeprefix('torch.')}.")
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ValueError(f"The weights do not fit the {what} architecture: "
                         f"{str(error)[:400]}") from None


def model_from_state_dict(
    architecture: str, state_dict: Mapping[str, torch.Tensor], n_heads: int = 4
) -> nn.Module:
    """The named architecture sized to ``state_dict``, with its weights loaded, in eval mode.

    Raises
    ------
    ValueError
        If the architecture is unknown, or the weights are not those of that architecture
        (a missing, unexpected, mis-shaped, non-finite or wrongly typed tensor is named).
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {architecture!r}; satcompress can rebuild "
                         f"{', '.join(sorted(ARCHITECTURES))}.")
    check_weights(state_dict)
    try:
        model = ARCHITECTURES[architecture](state_dict, n_heads)
    except KeyError as missing:
        raise ValueError(f"The weights are not a {architecture}: they have no tensor "
                         f"{missing}.") from None
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"The weights are not a {architecture}: {str(error)[:300]}") from None
    load_weights(model, state_dict, architecture)
    return model.eval()
