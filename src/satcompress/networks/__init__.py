"""Model architectures of the reference tasks (PyTorch), with width/depth multipliers, and the
standardisation layer that puts a user's feature scaling into the flight graph."""

from satcompress.networks.residual_mlp import ResidualBlock, ResidualMLP, build_residual_mlp
from satcompress.networks.standardize import Standardize, standardized
from satcompress.networks.t2 import T2Transformer, build_t2

__all__ = ["ResidualBlock", "ResidualMLP", "build_residual_mlp", "Standardize", "standardized",
           "T2Transformer", "build_t2"]
