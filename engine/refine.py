"""Encoder-side latent refinement: a slower, better encode that the decoder never notices.

The analysis network g_a gives a good latent in one pass, but not the best one for this image
(Campos et al. 2019; Yang et al. 2020, "Improving Inference for Neural Image Compression").
``LatentRefiner`` starts from (y · gain, z) and takes a few Adam steps on the model's own
training objective, with the networks frozen and the real quantisers in the forward pass
(straight-through gradients):

    bpp(ẑ, ŷ) + λ(q) · (w_pix · 255² · MSE(x̂, x) + w_tok · D_tok(teacher(x̂), teacher(x)))

λ(q) is interpolated between the model's anchor λs as the gains are; w_pix, w_tok, the teacher
and its layers come from the model's training recipe (the model file's metadata). The stream
is an ordinary one: ẑ and ŷ = round(y − μ) + μ with μ from the exact h_s(ẑ), so every decoder
and backend decodes it unchanged. The best (lowest-loss) step is kept, never worse than step 0
by the objective's own estimate. Deterministic on one device and thread count (no noise).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .checks import is_whole
from .errors import ConfigError, VlmcodecWarning
from .models.hyperprior import level_neighbours
from .teacher.base import teacher_input_size, warn_if_slow_bfloat16
from .training.loss import bpp_per_item
from .training.semantic import token_distortion

DEFAULT_REFINE_STEPS = 30
MAX_REFINE_STEPS = 1000


def check_refine_steps(steps) -> int:
    """Validate a number of refinement steps (0 = off)."""
    if not is_whole(steps) or not 0 <= steps <= MAX_REFINE_STEPS:
        raise ConfigError(f"refine must be an int in [0, {MAX_REFINE_STEPS}] (steps), got {steps!r}")
    return int(steps)


def check_refine_views(views) -> tuple[int, ...] | None:
    """Validate refinement teacher views: None, or short sides in pixels (at most 4, 14..1024)."""
    if views is None:
        return None
    if isinstance(views, (str, bytes)):
        raise ConfigError(f"refine_views must be a sequence of short sides in pixels, got {views!r}")
    try:
        sides = tuple(views)
    except TypeError:
        raise ConfigError(f"refine_views must be a sequence of short sides in pixels, got {views!r}") from None
    # 224.7 or "224" is refused rather than taken as 224 (checks.py's rule)
    if not 1 <= len(sides) <= 4 or any(not is_whole(v) or not 14 <= v <= 1024 for v in sides):
        raise ConfigError(f"refine_views must be 1 to 4 whole short sides in [14, 1024] px, got {views!r}")
    return tuple(int(v) for v in sides)


@dataclass(frozen=True)
class RefineObjective:
    """The distortion the refinement minimises (a model's training recipe, or pixels only)."""

    w_pix: float = 1.0
    w_tok: float = 0.0
    teacher: str = ""
    teacher_layers: tuple[int, ...] = (3, 6, 9, 12)
    # the teacher's views (short sides, px): the token term is averaged over them at every step
    teacher_short_sides: tuple[int, ...] = (224,)
    # the teacher's forward and backward under bfloat16 autocast (its token distances stay float32)
    teacher_bf16: bool = False

    @classmethod
    def from_recipe(cls, metadata: dict) -> "RefineObjective":
        """The objective of a model file's ``train_recipe`` metadata (pixels only when absent)."""
        recipe = train_recipe(metadata)
        if not recipe:
            return cls()
        w_tok = token_weight(recipe)
        if recipe.get("teacher") and float(recipe.get("w_rank", 0.0) or 0.0) > 0:
            warnings.warn(f"the model was trained with a rank term (w_rank {recipe['w_rank']}); refinement "
                          "minimises the pixel and token terms only", VlmcodecWarning, stacklevel=2)
        return cls(w_pix=float(recipe.get("w_pix", 1.0)), w_tok=w_tok,
                   teacher=_portable_teacher(str(recipe.get("teacher") or "")) if w_tok else "",
                   teacher_layers=tuple(int(l) for l in recipe.get("teacher_layers", (3, 6, 9, 12))))


def train_recipe(metadata: dict) -> dict:
    """A model file's ``train_recipe`` metadata as a dict ({} without one); ConfigError when it
    is not JSON."""
    raw = metadata.get("train_recipe")
    if not raw:
        return {}
    try:
        return json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model metadata train_recipe is not JSON: {e}") from e


def token_weight(recipe: dict) -> float:
    """A recipe's token-term weight: its ``w_tok`` where it names a teacher, else 0."""
    return float(recipe.get("w_tok") or 0.0) if recipe.get("teacher") else 0.0


# the patch sizes of the teachers named (not paths): views are checked against them when a codec
# is made, before a first refined encode loads the teacher (which checks any teacher's)
NAMED_TEACHER_PATCH = {"dinov2-vits14": 14}


def refining_teacher(metadata: dict) -> str:
    """The teacher a model's refinement runs (its recipe names one with a token weight), read from
    its metadata without loading it; "" for none, or a recipe that is no JSON (the refiner says so
    when it is made)."""
    try:
        recipe = train_recipe(metadata)
    except ConfigError:
        return ""
    return _portable_teacher(str(recipe.get("teacher") or "")) if token_weight(recipe) > 0 else ""


def check_views_fit_teacher(views: tuple[int, ...] | None, metadata: dict) -> None:
    """ConfigError when refinement views are not multiples of the patch size of the model's
    teacher, where its name tells it (``Codec(refine_views=(100,))`` was taken, and refused 1-2 s
    into the first refined encode)."""
    teacher = refining_teacher(metadata)
    patch = NAMED_TEACHER_PATCH.get(teacher)
    bad = [v for v in views or () if patch and v % patch]
    if bad:
        raise ConfigError(f"refine_views {bad} must be multiples of {teacher}'s patch size {patch}")


def _portable_teacher(teacher: str) -> str:
    """A recipe's teacher as this machine can load it: the GPU machine's packed DINOv2 ViT-S/14
    file (``scripts/prepare_gpu_data.py --teacher gpu_data/dinov2_vits14_int8.safetensors``: a path
    of that machine, relative to its checkout) is the installed DINOv2 teacher it was made from
    (a GPU-trained model could not refine: "teacher weights not found"); others as they are."""
    path = Path(teacher).expanduser()
    if teacher and not path.exists() and path.name.startswith(("dinov2_vits14", "dinov2-vits14")):
        return "dinov2-vits14"
    return teacher


class LatentRefiner:
    """Refines (y · gain, z) of a batch of one padded size for a frozen model (see module doc)."""

    def __init__(self, model, objective: RefineObjective, steps: int = DEFAULT_REFINE_STEPS,
                 lr: float = 0.02, teacher=None):
        if not (lr > 0 and math.isfinite(lr)):
            raise ConfigError(f"refine lr must be a positive number, got {lr!r}")
        self.model, self.objective, self.steps, self.lr = model, objective, check_refine_steps(steps), float(lr)
        self.teacher = teacher
        if self.teacher is None and objective.w_tok:
            from .teacher import load_teacher  # raises ModelNotFoundError without the teacher's package

            self.teacher = load_teacher(objective.teacher, device=next(model.parameters()).device)
        if self.teacher is not None and objective.w_tok:
            bad = [v for v in objective.teacher_short_sides if v % self.teacher.patch_size]
            if bad or not objective.teacher_short_sides:
                raise ConfigError(f"refinement teacher views {objective.teacher_short_sides} must be multiples of "
                                  f"{self.teacher.name}'s patch size {self.teacher.patch_size}")
        self.layers = (self.teacher.resolve_layers([l for l in objective.teacher_layers if l <= self.teacher.num_layers])
                       if self.teacher is not None and objective.w_tok else [])
        if self.layers and objective.teacher_bf16:
            warn_if_slow_bfloat16(next(model.parameters()).device, "refine_bf16")
        # the rate-distortion trade-off of each level is the λ it was trained with: a model without
        # one per level (a CompressAI conversion's λ 0, a config that left lmbdas short) has none to
        # refine for (λ was NaN, so refinement kept the one-pass latents, or 1 at every level)
        lmbdas = tuple(model.config.lmbdas)
        if len(lmbdas) != model.num_levels or not all(math.isfinite(v) and v > 0 for v in lmbdas):
            raise ConfigError(f"refinement needs the model's training λ for each of its {model.num_levels} quality "
                              f"level(s); it records {list(lmbdas)} (a converted model's is unknown): refine a model "
                              "trained here, or encode without refine")
        self._log_lmbdas = torch.log(torch.tensor(lmbdas, dtype=torch.float64))
        self.last_losses: list[list[float]] = []  # per step, per item: for diagnostics and tests

    def lmbda(self, levels: Tensor) -> Tensor:
        """λ per item for continuous levels, geometric between the anchors (as the gains are)."""
        lo, hi, t = level_neighbours(levels.double(), self.model.num_levels)
        return torch.exp((1 - t) * self._log_lmbdas[lo] + t * self._log_lmbdas[hi]).float()

    def _tokens(self, img: Tensor) -> list[list[Tensor]]:
        """Per view (``teacher_short_sides``), the patch tokens of each layer."""
        out = []
        with torch.autocast(img.device.type, dtype=torch.bfloat16, enabled=self.objective.teacher_bf16):
            for side in self.objective.teacher_short_sides:
                size = teacher_input_size(img.shape[-2], img.shape[-1], side, self.teacher.patch_size)
                out.append([self.teacher.patch_tokens(t).float() for t in self.teacher(img, self.layers, size=size)])
        return out

    def _loss(self, y: Tensor, z: Tensor, x: Tensor, inv_gain: Tensor, lmbda: Tensor, hw: tuple[int, int],
              ref_tokens: list[list[Tensor]] | None) -> Tensor:
        """Per-item objective [B] with hard quantisation forward, straight-through backward."""
        m = self.model
        med = m.entropy_bottleneck.medians().detach().reshape(1, -1, 1, 1)
        z_hat = z + (torch.round(z - med) + med - z).detach()
        z_lik = m.entropy_bottleneck.likelihood(z_hat)
        scales, means = m.h_s(z_hat).chunk(2, 1)
        y_hat = y + (torch.round(y - means) + means - y).detach()
        y_lik = m.gaussian_conditional.likelihood(y_hat, scales, means)
        x_hat = m.g_s(y_hat * inv_gain[:, :, None, None])[:, :, : hw[0], : hw[1]]
        ref = x[:, :, : hw[0], : hw[1]]
        bpp = bpp_per_item({"y": y_lik, "z": z_lik}, hw[0] * hw[1])
        dist = self.objective.w_pix * 255.0**2 * (x_hat - ref).pow(2).flatten(1).mean(1)
        if ref_tokens is not None:
            views = zip(self._tokens(x_hat.clamp(0, 1)), ref_tokens)
            dist = dist + self.objective.w_tok * torch.stack([token_distortion(h, r) for h, r in views]).mean(0)
        return bpp + lmbda * dist

    def refine(self, x: Tensor, y: Tensor, z: Tensor, levels: Tensor, coded_hw: tuple[int, int],
               steps: int | None = None) -> tuple[Tensor, Tensor]:
        """x: padded originals [B, 3, H, W] in [0, 1] (before any pre-edit: the distortion is
        measured against them); y, z: the analysis output; coded_hw: the unpadded size. All on
        the model's device. ``steps``: this call's number of steps (None: the refiner's)."""
        steps = self.steps if steps is None else check_refine_steps(steps)
        if steps == 0:
            return y, z
        m = self.model
        # Gradients go to (y, z) only (autograd.grad): the shared model's parameters are never
        # touched, so refinements may run concurrently on one model (the runtime's network workers).
        with torch.inference_mode(False), torch.enable_grad():
            x = x.clone()
            _, inv_gain = m.gains(levels)
            inv_gain = inv_gain.detach().clone()
            lmbda = self.lmbda(levels.cpu()).to(x.device)
            ref_tokens = None
            if self.layers:
                with torch.no_grad():
                    ref_tokens = self._tokens(x[:, :, : coded_hw[0], : coded_hw[1]])
            y_var = y.detach().clone().requires_grad_(True)
            z_var = z.detach().clone().requires_grad_(True)
            opt = torch.optim.Adam([y_var, z_var], lr=self.lr)
            best_loss = torch.full((x.shape[0],), float("inf"), device=x.device)
            best_y, best_z = y.detach().clone(), z.detach().clone()
            losses = []
            for step in range(steps + 1):
                with torch.set_grad_enabled(step < steps):  # the last step is only evaluated
                    loss = self._loss(y_var, z_var, x, inv_gain, lmbda, coded_hw, ref_tokens)
                with torch.no_grad():
                    better = loss.detach() < best_loss
                    best_loss = torch.where(better, loss.detach(), best_loss)
                    best_y[better] = y_var.detach()[better]
                    best_z[better] = z_var.detach()[better]
                losses.append([float(v) for v in loss.detach()])
                if step == steps:
                    break
                for g in opt.param_groups:  # cosine decay: large early moves, settling late
                    g["lr"] = self.lr * 0.5 * (1 + math.cos(math.pi * step / steps))
                y_var.grad, z_var.grad = torch.autograd.grad(loss.sum(), [y_var, z_var])
                opt.step()
        self.last_losses = losses
        return best_y, best_z
