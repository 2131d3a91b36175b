"""Over-parameterised residual MLP: the flare task's base model.

The published solar-flare compression work (Feng et al. 2023) starts from a ResNet-18 of about
11M parameters; on 25 tabular SHARP keys the equivalent is a wide pre-norm residual MLP
(He et al. 2016's identity shortcuts around Linear-ReLU-Linear blocks), deliberately larger
than the problem needs so that compression has something to remove.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResidualBlock", "ResidualMLP", "build_residual_mlp"]


class ResidualBlock(nn.Module):
    """``x + W2 dropout(relu(W1 norm(x)))`` with a LayerNorm before the block (pre-norm)."""

    def __init__(self, width: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.drop(self.act(self.fc1(self.norm(x)))))


class ResidualMLP(nn.Module):
    """Stem ``Linear(n_features, width)``, ``depth`` residual blocks, LayerNorm, Linear head.

    Returns logits of shape ``(batch, n_classes)``.
    """

    def __init__(
        self,
        n_features: int,
        n_classes: int = 2,
        width: int = 512,
        depth: int = 4,
        hidden: int | None = None,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        for name, value in (("n_features", n_features), ("n_classes", n_classes),
                            ("width", width), ("depth", depth)):
            if value < 1:
                raise ValueError(f"ResidualMLP {name} must be >= 1, got {value}.")
        if not 0 <= dropout < 1:
            raise ValueError(f"ResidualMLP dropout must be in [0, 1), got {dropout}.")
        self.stem = nn.Linear(n_features, width)
        self.blocks = nn.Sequential(
            *(ResidualBlock(width, hidden or width, dropout) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.stem(x))))


def build_residual_mlp(
    input_shape: tuple[int, ...],
    n_classes: int,
    width_multiplier: float = 1.0,
    depth_multiplier: float = 1.0,
) -> ResidualMLP:
    """The flare base model (width 512, 4 blocks: about 2.1M parameters), optionally scaled.

    Multipliers below 1 give the narrower/shallower students that distillation trains.
    """
    if len(input_shape) != 1:
        raise ValueError(
            f"ResidualMLP takes tabular input of shape (features,), got {input_shape}."
        )
    if width_multiplier <= 0 or depth_multiplier <= 0:
        raise ValueError("width_multiplier and depth_multiplier must be > 0.")
    return ResidualMLP(
        n_features=input_shape[0],
        n_classes=n_classes,
        width=max(1, round(512 * width_multiplier)),
        depth=max(1, round(4 * depth_multiplier)),
    )
