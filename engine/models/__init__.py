"""Model definitions: the mean-scale hyperprior with variable-rate gains."""

from .hyperprior import MeanScaleHyperprior, ModelConfig

__all__ = ["MeanScaleHyperprior", "ModelConfig"]
