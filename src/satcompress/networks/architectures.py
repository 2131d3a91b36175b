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

__all__ = ["ARCHITECTURES", "model_from_state_dict"]


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


def model_from_state_dict(
    architecture: str, state_dict: Mapping[str, torch.Tensor], n_heads: int = 4
) -> nn.Module:
    """The named architecture sized to ``state_dict``, with its weights loaded, in eval mode.

    Raises
    ------
    ValueError
        If the architecture is unknown, or the weights are not those of that architecture
        (a missing, unexpected or mis-shaped tensor is named).
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {architecture!r}; satcompress can rebuild "
                         f"{', '.join(sorted(ARCHITECTURES))}.")
    try:
        model = ARCHITECTURES[architecture](state_dict, n_heads)
    except KeyError as missing:
        raise ValueError(f"The weights are not a {architecture}: they have no tensor "
                         f"{missing}.") from None
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ValueError(f"The weights do not fit the {architecture} architecture: "
                         f"{str(error)[:400]}") from None
    return model.eval()
