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


# a centred token matrix whose singular values sum to at most this × (‖T‖_F + 1) has no spectrum
# to speak of (all tokens equal to float precision, or zero): it counts as the zero spectrum (a
# distance of 1 to any other), with no gradient — normalising its rounding noise gave ~1e12
_FLAT = 1e-4


def _spectrum(t: Tensor) -> Tensor:
    """Normalised singular values per item; NaN for an item whose tokens are not finite (a
    diverging step: svdvals raised, and the trainer's guard is to skip the step)."""
    c = t - t.mean(dim=1, keepdim=True)
    finite = torch.isfinite(c).all(dim=-1).all(dim=-1)
    s = torch.linalg.svdvals(torch.where(finite[..., None, None], c, torch.zeros_like(c)))
    total = s.sum(dim=-1, keepdim=True)
    flat = total <= _FLAT * (torch.linalg.matrix_norm(t.detach()) + 1)[..., None]
    out = torch.where(flat, torch.zeros_like(s), s / total.clamp_min(1e-12))
    return torch.where(finite[..., None], out, torch.full_like(out, float("nan")))


def rank_distortion(hat: list[Tensor], ref: list[Tensor]) -> Tensor:
    """L1 distance between normalised singular-value spectra, mean over layers, per item [B]."""
    per_layer = [(_spectrum(h) - _spectrum(r).detach()).abs().sum(dim=-1) for h, r in zip(hat, ref)]
    return torch.stack(per_layer).mean(0)


def teacher_size(h: int, w: int, patch: int) -> tuple[int, int]:
    """Nearest multiple of the teacher's patch size at or above (h, w)."""
    return (-(-h // patch) * patch, -(-w // patch) * patch)
