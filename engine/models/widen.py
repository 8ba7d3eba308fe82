"""Widening the analysis transform g_a without changing what it computes.

A model's g_a (conv → GDN, three times, then conv to M channels) at width A becomes one at width
A' > A: each hidden layer gets A' − A new channels fed by small random weights, and every weight
from a new channel into an old one (the next convolution's inputs, GDN's cross terms) starts at
zero, so the old channels — and y — are what they were, bit for bit in exact arithmetic. Training
then moves the zeros (their gradients are not zero: the new channels are active) and the new
channels join in. The decoder side is untouched: streams of the widened model decode with the
original's g_s, h_s and tables, and with ``save_model(..., decodes_as=)`` its streams carry the
original's fingerprint, so every decoder of the original reads them.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import torch
from torch import nn

from ..checks import is_real
from ..errors import ConfigError
from ..layers import GDN
from .hyperprior import MeanScaleHyperprior


def widen_analysis(model: MeanScaleHyperprior, width: int, init_scale: float = 1.0,
                   seed: int = 0) -> MeanScaleHyperprior:
    """A copy of ``model`` whose g_a is ``width`` channels wide (at least its present width), the
    same function; new weights are ``init_scale`` × the layer's default initialisation.
    ConfigError (a ValueError) for a width that is no channel count or narrower, or a scale that is
    not a finite number of at least 0."""
    old = model.config.analysis_width
    if not isinstance(width, numbers.Integral) or isinstance(width, bool):
        raise ConfigError(f"the width of g_a is a channel count, got {width!r}")
    if width < old:
        raise ConfigError(f"g_a is {old} channels wide; widening to {width} would narrow it")
    if not (is_real(init_scale) and math.isfinite(init_scale) and init_scale >= 0):
        raise ConfigError(f"init_scale must be a finite number of at least 0, got {init_scale!r}")
    width = int(width)
    wide = MeanScaleHyperprior(dataclasses.replace(model.config, N_a=width))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("g_a.")}
    wide.load_state_dict(state, strict=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, (src, dst) in enumerate(zip(model.g_a, wide.g_a)):
            if isinstance(src, nn.Conv2d):
                _widen_conv(src, dst, old, init_scale, gen, first=i == 0)
            elif isinstance(src, GDN):
                _widen_gdn(src, dst, old)
    return wide


def _widen_conv(src: nn.Conv2d, dst: nn.Conv2d, old: int, scale: float, gen: torch.Generator, first: bool) -> None:
    """dst's weight [out, in, k, k]: the old block as it was, new outputs from small random weights
    of every input, old outputs reading nothing from new inputs."""
    fan_in = dst.weight.shape[1] * dst.weight.shape[2] * dst.weight.shape[3]
    bound = scale / fan_in ** 0.5
    w = (torch.rand(dst.weight.shape, generator=gen) * 2 - 1) * bound
    n_out, n_in = src.weight.shape[:2]
    w[:n_out, :n_in] = src.weight
    if not first:
        w[:n_out, n_in:] = 0  # the old outputs stay blind to the new channels
    dst.weight.copy_(w)
    assert src.bias is not None and dst.bias is not None  # g_a's convolutions all have one
    b = torch.zeros(dst.bias.shape)
    b[:n_out] = src.bias
    dst.bias.copy_(b)


def _widen_gdn(src: GDN, dst: GDN, old: int) -> None:
    """New channels normalise by themselves (β = 1, γ = 0.1 on the diagonal); nothing crosses
    between old and new channels."""
    beta = torch.ones(dst.channels)
    gamma = torch.zeros(dst.channels, dst.channels)
    new = torch.arange(old, dst.channels)
    gamma[new, new] = 0.1
    beta_p, gamma_p = dst.beta_reparam.init(beta), dst.gamma_reparam.init(gamma)
    beta_p[:old] = src.beta  # the stored parameters themselves: the old channels bit for bit
    gamma_p[:old, :old] = src.gamma
    dst.beta.copy_(beta_p)
    dst.gamma.copy_(gamma_p)
