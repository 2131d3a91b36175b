"""Model architectures of the reference tasks (PyTorch), with width/depth multipliers."""

from satcompress.networks.residual_mlp import ResidualBlock, ResidualMLP, build_residual_mlp

__all__ = ["ResidualBlock", "ResidualMLP", "build_residual_mlp"]
