"""Factorized ("entropy bottleneck") prior of Ballé et al. 2018, CompressAI-compatible names."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import LowerBound, making_meta


class EntropyBottleneck(nn.Module):
    """Per-channel learned CDF c(z) = sigmoid(f(z)) with f a small monotone network.

    Training adds uniform noise; inference rounds around the channel medians:
    ``ẑ = round(z − m) + m``. ``quantized_cdfs()`` builds the integer tables for coding.
    """

    target: Tensor

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3, 3), init_scale: float = 10.0,
                 tail_mass: float = 1e-9, likelihood_bound: float = 1e-9):
        super().__init__()
        self.channels = int(channels)
        self.filters = tuple(int(f) for f in filters)
        self.init_scale = float(init_scale)
        self.tail_mass = float(tail_mass)
        dims = (1,) + self.filters + (1,)
        scale = self.init_scale ** (1 / (len(self.filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(self.filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, dims[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(self.filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))
        quantiles = torch.tensor([-self.init_scale, 0.0, self.init_scale])
        # (no repeat on meta: its meta kernel imports sympy, ~0.3 s; layers.making_meta)
        self.quantiles = nn.Parameter(torch.empty(channels, 1, 3) if making_meta() else quantiles.repeat(channels, 1, 1))
        target = math.log(2 / self.tail_mass - 1)
        self.register_buffer("target", torch.tensor([-target, 0.0, target]))
        self.likelihood_lower_bound = LowerBound(likelihood_bound)

    def medians(self) -> Tensor:
        """Per-channel medians m [C]."""
        return self.quantiles[:, 0, 1]

    def _logits_cumulative(self, x: Tensor, stop_gradient: bool) -> Tensor:
        logits = x
        for i in range(len(self.filters) + 1):
            matrix, bias = self.matrices[i], self.biases[i]
            if stop_gradient:
                matrix, bias = matrix.detach(), bias.detach()
            logits = torch.matmul(F.softplus(matrix), logits) + bias
            if i < len(self.filters):
                factor = self.factors[i].detach() if stop_gradient else self.factors[i]
                logits = logits + torch.tanh(factor) * torch.tanh(logits)
        return logits

    def _likelihood(self, x: Tensor, stop_gradient: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        lower = self._logits_cumulative(x - 0.5, stop_gradient)
        upper = self._logits_cumulative(x + 0.5, stop_gradient)
        # sigmoid(u) - sigmoid(l) computed on the side of the median where it is precise
        sign = -torch.sign(lower + upper).detach()
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        lik = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return lik, lower, upper

    def aux_loss(self) -> Tensor:
        """Drives ``quantiles`` to the tail-mass targets (optimised separately)."""
        logits = self._logits_cumulative(self.quantiles, stop_gradient=True)
        return torch.abs(logits - self.target).sum()

    def likelihood(self, z_hat: Tensor) -> Tensor:
        """Likelihoods of already quantised values (B, C, H, W), differentiable in ``z_hat``
        (``forward`` rounds, which stops the gradient)."""
        b, c = z_hat.shape[:2]
        lik, _, _ = self._likelihood(z_hat.transpose(0, 1).reshape(c, 1, -1))
        lik = self.likelihood_lower_bound(lik)
        return lik.reshape((c, b) + tuple(z_hat.shape[2:])).transpose(0, 1)

    def forward(self, z: Tensor, noise: bool | None = None) -> tuple[Tensor, Tensor]:
        """Returns (ẑ or z + noise, likelihoods), both shaped like z (B, C, H, W)."""
        if noise is None:
            noise = self.training
        b, c = z.shape[:2]
        values = z.transpose(0, 1).reshape(c, 1, -1)
        if noise:
            out = values + torch.empty_like(values).uniform_(-0.5, 0.5)
        else:
            m = self.medians().detach().reshape(c, 1, 1)
            out = torch.round(values - m) + m
        lik, _, _ = self._likelihood(out)
        lik = self.likelihood_lower_bound(lik)
        shape = (c, b) + tuple(z.shape[2:])
        out = out.reshape(shape).transpose(0, 1)
        lik = lik.reshape(shape).transpose(0, 1)
        return out, lik

    @torch.no_grad()
    def pmfs(self) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Per-channel pmfs over the integer support [offset, offset + len), tail masses, offsets.

        The symbol coded for channel c is ``round(z − m_c)``; offsets are relative to that.
        """
        m = self.quantiles[:, 0, 1]
        minima = torch.clamp(torch.ceil(m - self.quantiles[:, 0, 0]).int(), min=0)
        maxima = torch.clamp(torch.ceil(self.quantiles[:, 0, 2] - m).int(), min=0)
        lengths = (minima + maxima + 1)
        max_len = int(lengths.max())
        samples = torch.arange(max_len, dtype=m.dtype)[None, :] + (m - minima)[:, None]
        pmf, lower, upper = self._likelihood(samples[:, None, :].double().float(), stop_gradient=True)
        pmf = pmf[:, 0, :]
        tails = torch.sigmoid(lower[:, 0, 0]) + torch.sigmoid(-upper[:, 0, -1])
        pmfs = [pmf[c, : int(lengths[c])].double().numpy() for c in range(self.channels)]
        return pmfs, tails.double().numpy(), (-minima).numpy().astype(np.int32)
