"""Semantic distortion terms measured on a frozen vision transformer ("teacher").

For each chosen layer l with token matrices T_l(x), T_l(x̂) of shape [B, n, D]:

* token distortion  D_tok = mean_l mean_tokens (1 − cos(T_l(x̂), T_l(x)))
* rank term         D_rank = mean_l ‖ s(T_l(x̂)) − s(T_l(x)) ‖₁, with s the singular values of
  the centred token matrix normalised to sum 1 (its eigenvalue spectrum: keeps the effective
  rank / diversity of the representation, not only per-token directions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def token_distortion(hat: list[Tensor], ref: list[Tensor]) -> Tensor:
    """Mean (1 − cosine) over tokens and layers, per item [B]."""
    per_layer = [(1 - F.cosine_similarity(h, r, dim=-1)).mean(dim=-1) for h, r in zip(hat, ref)]
    return torch.stack(per_layer).mean(0)


def _spectrum(t: Tensor) -> Tensor:
    s = torch.linalg.svdvals(t - t.mean(dim=1, keepdim=True))
    return s / s.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def rank_distortion(hat: list[Tensor], ref: list[Tensor]) -> Tensor:
    """L1 distance between normalised singular-value spectra, mean over layers, per item [B]."""
    per_layer = [(_spectrum(h) - _spectrum(r).detach()).abs().sum(dim=-1) for h, r in zip(hat, ref)]
    return torch.stack(per_layer).mean(0)


def teacher_size(h: int, w: int, patch: int) -> tuple[int, int]:
    """Nearest multiple of the teacher's patch size at or above (h, w)."""
    return (-(-h // patch) * patch, -(-w // patch) * patch)
