"""Rate–distortion loss: bits per pixel + λ_k · D, λ per item (its quality level); D = pixel MSE
(scaled by 255²) plus the optional semantic terms of ``semantic.py``."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def bpp_per_item(likelihoods: dict[str, Tensor], num_pixels: int) -> Tensor:
    """Estimated bits per pixel for each item of the batch, [B]."""
    total: Tensor | int = 0
    for lik in likelihoods.values():
        total = total + torch.log(lik).flatten(1).sum(1)
    assert isinstance(total, Tensor)  # (a model's likelihoods are never empty: y and z)
    return total / (-math.log(2) * num_pixels)


def rd_loss(out: dict, x: Tensor, lmbdas: Tensor, w_pix: float = 1.0,
            semantic: Tensor | None = None) -> dict[str, Tensor]:
    """bpp + λ_k · (w_pix · 255² · MSE(x̂, x) + semantic), averaged over the batch.

    ``semantic`` is the already weighted per-item semantic distortion [B] (or None). The
    distortion is always measured against the original x, also when a pre-editor edits it.
    """
    n_pix = x.shape[2] * x.shape[3]
    bpp = bpp_per_item(out["likelihoods"], n_pix)
    mse = (out["x_hat"] - x).pow(2).flatten(1).mean(1)
    dist = w_pix * 255.0**2 * mse
    if semantic is not None:
        dist = dist + semantic
    loss = (bpp + lmbdas * dist).mean()
    sem = semantic.detach().mean() if semantic is not None else torch.zeros((), device=x.device)
    return {"loss": loss, "bpp": bpp.mean(), "mse": mse.mean(), "semantic": sem}
