"""Gaussian conditional for y given (μ, σ) from the hyper-decoder, CompressAI-compatible names."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from ..layers import LowerBound, making_meta

SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64


def default_scale_table(lo: float = SCALE_MIN, hi: float = SCALE_MAX, levels: int = SCALE_LEVELS) -> Tensor:
    """Log-spaced scale table (CompressAI's ``get_scale_table``)."""
    return torch.exp(torch.linspace(math.log(lo), math.log(hi), levels))


def _std_cdf(x: Tensor) -> Tensor:
    return 0.5 * torch.erfc(x * (-(2**-0.5)))


class GaussianConditional(nn.Module):
    """p(ŷ | μ, σ) = N(μ, σ²) * U(−½, ½) evaluated at ŷ; σ lower-bounded at the table's first entry."""

    scale_table: Tensor
    scale_bound: Tensor

    def __init__(self, scale_table: Tensor | None = None, scale_bound: float = SCALE_MIN,
                 tail_mass: float = 1e-9, likelihood_bound: float = 1e-9):
        super().__init__()
        table = (torch.empty(SCALE_LEVELS) if making_meta() else default_scale_table()) if scale_table is None \
            else torch.as_tensor(scale_table, dtype=torch.float32)
        self.register_buffer("scale_table", table)
        self.register_buffer("scale_bound", torch.tensor([float(scale_bound)]))
        self.tail_mass = float(tail_mass)
        self.lower_bound_scale = LowerBound(scale_bound)
        self.likelihood_lower_bound = LowerBound(likelihood_bound)

    def likelihood(self, y_hat: Tensor, scales: Tensor, means: Tensor) -> Tensor:
        values = torch.abs(y_hat - means)
        scales = self.lower_bound_scale(scales)
        upper = _std_cdf((0.5 - values) / scales)
        lower = _std_cdf((-0.5 - values) / scales)
        return self.likelihood_lower_bound(upper - lower)

    def forward(self, y: Tensor, scales: Tensor, means: Tensor, noise: bool | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (ŷ for the rate term, ŷ for the decoder, likelihoods).

        Training: the rate sees y + U(−½, ½); the decoder sees round(y − μ) + μ with a
        straight-through gradient (better than noise on both, as later CompressAI recipes do).
        """
        if noise is None:
            noise = self.training
        rounded = torch.round(y - means) + means
        if noise:
            y_rate = y + torch.empty_like(y).uniform_(-0.5, 0.5)
            y_dec = y + (rounded - y).detach()
        else:
            y_rate = y_dec = rounded
        return y_rate, y_dec, self.likelihood(y_rate, scales, means)

    def build_indexes(self, scales: Tensor) -> Tensor:
        """Index k of σ in the scale table: the first i with σ ≤ table[i] (else last).

        Computed in the dtype of ``scales`` (the codec passes the exact float64 scales; widening
        the float32 table is exact), so the comparison is exact and device-independent."""
        scales = torch.clamp_min(scales, float(self.scale_bound)).contiguous()
        bounds = self.scale_table[:-1].to(device=scales.device, dtype=scales.dtype).contiguous()
        return torch.bucketize(scales, bounds, right=False).to(torch.int32)

    @torch.no_grad()
    def pmfs(self) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Discretised Gaussian pmfs for every table entry (float64), tail masses and offsets."""
        table = self.scale_table.double()
        # float64: in float32, 2p - 1 rounds to -1 and the quantile becomes -inf
        multiplier = -float(math.sqrt(2) * torch.erfinv(torch.tensor(self.tail_mass - 1.0, dtype=torch.float64)))
        pmf_center = torch.ceil(table * multiplier).int()
        pmf_length = 2 * pmf_center + 1
        pmfs, tails = [], []
        for i in range(table.numel()):
            L = int(pmf_length[i])
            samples = torch.abs(torch.arange(L, dtype=torch.float64) - int(pmf_center[i]))
            s = table[i]
            upper = _std_cdf((0.5 - samples) / s)
            lower = _std_cdf((-0.5 - samples) / s)
            pmfs.append((upper - lower).numpy())
            tails.append(float(2 * _std_cdf(-(int(pmf_center[i]) + 0.5) / s)))
        return pmfs, np.asarray(tails), (-pmf_center).numpy().astype(np.int32)
