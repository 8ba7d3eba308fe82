"""Rate–distortion loss: bits per pixel + λ_k · 255² · MSE, λ per item (its quality level)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def bpp_per_item(likelihoods: dict[str, Tensor], num_pixels: int) -> Tensor:
    """Estimated bits per pixel for each item of the batch, [B]."""
    total = 0
    for lik in likelihoods.values():
        total = total + torch.log(lik).flatten(1).sum(1)
    return total / (-math.log(2) * num_pixels)


def rd_loss(out: dict, x: Tensor, lmbdas: Tensor) -> dict[str, Tensor]:
    n_pix = x.shape[2] * x.shape[3]
    bpp = bpp_per_item(out["likelihoods"], n_pix)
    mse = (out["x_hat"] - x).pow(2).flatten(1).mean(1)
    loss = (bpp + lmbdas * 255.0**2 * mse).mean()
    return {"loss": loss, "bpp": bpp.mean(), "mse": mse.mean()}
