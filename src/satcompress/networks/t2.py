"""The t2 time-series transformer: the transient task's base model.

t2 (Allam & McEwen 2022, "Paying attention to astronomical transients: introducing the
time-series transformer for photometric classification", RASTI 2, 209) classifies
GP-interpolated multi-band light curves: a kernel-1 convolution embeds the bands of each time
step, a fixed sinusoidal positional encoding (Vaswani et al. 2017) marks the time, post-norm
transformer blocks mix the time steps, and global average pooling over time feeds a dense
classifier. It is the model the Fink broker runs on ZTF alerts.

Attention is written out with explicit ``nn.Linear`` query/key/value/output projections,
matmul and softmax (no ``nn.MultiheadAttention``), so pruning, export and a NumPy runtime see
every operation and every weight.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "sinusoidal_positional_encoding",
    "MultiHeadSelfAttention",
    "TransformerBlock",
    "T2Transformer",
    "build_t2",
]


def sinusoidal_positional_encoding(n_positions: int, d_model: int) -> torch.Tensor:
    """Fixed encoding ``PE[t, 2i] = sin(t / 10000^(2i/d))``, ``PE[t, 2i+1] = cos(...)``.

    Returns a float32 tensor of shape ``(n_positions, d_model)`` (Vaswani et al. 2017).
    """
    positions = torch.arange(n_positions, dtype=torch.float64)[:, None]
    frequencies = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model)
    )
    encoding = torch.zeros(n_positions, d_model, dtype=torch.float64)
    encoding[:, 0::2] = torch.sin(positions * frequencies)
    encoding[:, 1::2] = torch.cos(positions * frequencies[: d_model // 2])
    return encoding.float()


class MultiHeadSelfAttention(nn.Module):
    """Scaled dot-product self-attention over ``n_heads`` heads of ``head_dim`` features.

    ``softmax(Q K^T / sqrt(head_dim)) V`` per head, heads concatenated and projected by
    ``out``. ``query``, ``key``, ``value`` and ``out`` are ``Linear(d_model, d_model)``;
    head ``h`` uses features ``h*head_dim:(h+1)*head_dim`` of Q, K and V.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(
                f"d_model ({d_model}) must be divisible by n_heads ({n_heads}) so every head "
                "gets the same number of features."
            )
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.attention_dropout = nn.Dropout(dropout)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, _ = x.shape
        return x.reshape(batch, steps, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (batch, steps, d_model) -> (batch, steps, d_model)."""
        batch, steps, _ = x.shape
        q = self._split_heads(self.query(x))
        k = self._split_heads(self.key(x))
        v = self._split_heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        weights = torch.softmax(scores, dim=-1)
        mixed = torch.matmul(self.attention_dropout(weights), v)
        return self.out(mixed.transpose(1, 2).reshape(batch, steps, self.n_heads * self.head_dim))


class TransformerBlock(nn.Module):
    """Post-norm transformer block as in t2 (and Keras' transformer example it follows).

    ``y = LayerNorm(x + Dropout(Attention(x)))``, then
    ``LayerNorm(y + Dropout(Linear(ReLU(Linear(y)))))``.
    """

    def __init__(self, d_model: int, n_heads: int, ff_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.attention = MultiHeadSelfAttention(d_model, n_heads)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model, eps=1e-6)
        self.ff1 = nn.Linear(d_model, ff_dim)
        self.activation = nn.ReLU()
        self.ff2 = nn.Linear(ff_dim, d_model)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout1(self.attention(x)))
        return self.norm2(x + self.dropout2(self.ff2(self.activation(self.ff1(x)))))


class T2Transformer(nn.Module):
    """t2: Conv1d(kernel 1) embedding, positional encoding, transformer blocks, pooling, head.

    Parameters
    ----------
    n_timesteps : int
        Length of the input sequences (the GP grid, 100 in t2).
    n_channels : int
        Features per time step (the transient task: GP mean and GP standard deviation in g
        and r, so 4; t2 itself feeds the GP mean of each band only).
    n_classes : int
        Output classes.
    d_model : int
        Embedding width.
    n_heads : int
        Attention heads (must divide ``d_model``).
    ff_dim : int
        Hidden width of each block's feed-forward layer.
    n_blocks : int
        Transformer blocks.
    dropout : float
        Dropout after attention, feed-forward and pooling.

    Input ``(batch, n_timesteps, n_channels)``; output LOGITS ``(batch, n_classes)``.
    The defaults (d_model 96, 4 heads, ff 192, 2 blocks, 4 channels, 5 classes) have
    150,533 parameters.
    """

    def __init__(
        self,
        n_timesteps: int = 100,
        n_channels: int = 4,
        n_classes: int = 5,
        d_model: int = 96,
        n_heads: int = 4,
        ff_dim: int = 192,
        n_blocks: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        for name, value in (("n_timesteps", n_timesteps), ("n_channels", n_channels),
                            ("n_classes", n_classes), ("d_model", d_model), ("n_heads", n_heads),
                            ("ff_dim", ff_dim), ("n_blocks", n_blocks)):  # fmt: skip
            if value < 1:
                raise ValueError(f"T2Transformer {name} must be >= 1, got {value}.")
        if not 0 <= dropout < 1:
            raise ValueError(f"T2Transformer dropout must be in [0, 1), got {dropout}.")
        if d_model % n_heads:
            raise ValueError(
                f"T2Transformer d_model ({d_model}) must be divisible by n_heads ({n_heads})."
            )
        self.n_timesteps = n_timesteps
        self.n_channels = n_channels
        self.embedding = nn.Conv1d(n_channels, d_model, kernel_size=1)
        self.register_buffer(
            "positional_encoding", sinusoidal_positional_encoding(n_timesteps, d_model)[None]
        )
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, ff_dim, dropout) for _ in range(n_blocks)
        )
        self.pool_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (batch, n_timesteps, n_channels) -> logits (batch, n_classes)."""
        if x.dim() != 3 or x.shape[1] != self.n_timesteps or x.shape[2] != self.n_channels:
            raise ValueError(
                f"T2Transformer expects input of shape (batch, {self.n_timesteps}, "
                f"{self.n_channels}), got {tuple(x.shape)}."
            )
        h = self.embedding(x.transpose(1, 2)).transpose(1, 2) + self.positional_encoding
        for block in self.blocks:
            h = block(h)
        return self.head(self.pool_dropout(h.mean(dim=1)))


def build_t2(
    input_shape: tuple[int, ...],
    n_classes: int,
    width_multiplier: float = 1.0,
    depth_multiplier: float = 1.0,
) -> T2Transformer:
    """The transient base model (d_model 96, 4 heads, ff 192, 2 blocks), optionally scaled.

    ``input_shape`` is ``(n_timesteps, n_channels)``. The width multiplier scales d_model
    (rounded to a multiple of the 4 heads, at least 4) and the feed-forward width (2 x
    d_model); the depth multiplier scales the number of blocks (at least 1).
    """
    if len(input_shape) != 2:
        raise ValueError(
            f"T2Transformer takes sequences of shape (n_timesteps, n_channels), got {input_shape}."
        )
    if width_multiplier <= 0 or depth_multiplier <= 0:
        raise ValueError("width_multiplier and depth_multiplier must be > 0.")
    n_heads = 4
    d_model = max(n_heads, n_heads * round(96 * width_multiplier / n_heads))
    return T2Transformer(
        n_timesteps=input_shape[0],
        n_channels=input_shape[1],
        n_classes=n_classes,
        d_model=d_model,
        n_heads=n_heads,
        ff_dim=2 * d_model,
        n_blocks=max(1, round(2 * depth_multiplier)),
    )
