"""Model architectures of the reference tasks (PyTorch), with width/depth multipliers."""

from satcompress.networks.residual_mlp import ResidualBlock, ResidualMLP, build_residual_mlp
from satcompress.networks.t2 import T2Transformer, build_t2

__all__ = ["ResidualBlock", "ResidualMLP", "build_residual_mlp", "T2Transformer", "build_t2"]
