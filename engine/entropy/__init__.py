"""Entropy models: the factorized prior for z and the Gaussian conditional for y."""

from .bottleneck import EntropyBottleneck
from .gaussian import GaussianConditional, default_scale_table

__all__ = ["EntropyBottleneck", "GaussianConditional", "default_scale_table"]
