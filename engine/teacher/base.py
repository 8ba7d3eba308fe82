"""The teacher interface: a frozen vision transformer that maps images to tokens of chosen layers.

Every teacher takes ``x`` as float RGB in [0, 1], shape [B, 3, H, W], normalises it itself (its
own mean/std), and returns one token tensor [B, T, D] per requested layer, in the order asked.
``T = num_prefix_tokens + (H/p)·(W/p)``: prefix tokens (CLS, registers) first, then the patch
tokens in raster order. Layer ``0`` is the embedding output (before the first block), layer ``i``
the output of block ``i`` (1-based), negative indices count from the end (``-1`` = last block).

Teachers are frozen (``requires_grad_(False)``, always in eval mode — ``train()`` does not switch
them back) but differentiable with respect to their input, so a loss on their tokens trains the
network in front of them. Keep a teacher outside the model being trained (not as a submodule),
so its weights do not end up in the model's checkpoint.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import is_real, is_whole
from ..devices import torch_device
from ..errors import ConfigError, ImageError, VlmcodecWarning

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Size = int | tuple[int, int]

TEACHER_MAX_ASPECT = 4  # teacher_input_size: the longer side at most this many times the short side


def check_device(device: str | torch.device, what: str = "teacher") -> torch.device:
    """``device`` as a ``torch.device`` this process can use (any type: ``devices.torch_device``)."""
    return torch_device(device, f"{what} device", kinds=None)


def check_stats(mean: object, std: object, where: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel normalisation statistics: a number (every channel) or 3 finite numbers each,
    ``std`` above 0 (a zero std turns every token into NaN); ``ConfigError`` naming ``where``."""
    def three(name: str, v: object) -> tuple[float, ...]:
        vals = [v] * 3 if is_real(v) else (list(v) if isinstance(v, (list, tuple)) else None)
        if vals is None or len(vals) != 3 or not all(is_real(a) and math.isfinite(a) for a in vals):
            raise ConfigError(f"{where}: {name} must be 3 finite numbers (R, G, B), got {v!r}")
        return tuple(float(a) for a in vals)

    m, s = three("image_mean", mean), three("image_std", std)
    if min(s) <= 0:
        raise ConfigError(f"{where}: image_std must be above 0, got {std!r}")
    return m, s


@runtime_checkable
class Teacher(Protocol):
    """What training and evaluation rely on; ``FrozenTeacher`` implements it."""

    name: str
    num_layers: int  # transformer blocks
    embed_dim: int  # token width D
    patch_size: int
    num_prefix_tokens: int  # CLS (+ registers) before the patch tokens

    def __call__(self, x: Tensor, layers: Sequence[int] = ..., *, norm: bool = True,
                 size: Size | None = None) -> list[Tensor]: ...


def cpu_lacks_native_bfloat16() -> bool:
    """Whether this CPU has no bfloat16 matrix instructions (AVX512-BF16 or AMX-BF16), so that a
    teacher under bfloat16 autocast runs on emulated products: far slower than float32 (a
    refinement took ~22x its float32 time on a 2-core AVX2 EPYC), not faster. False where
    it has them or where torch cannot tell (then nothing is claimed)."""
    try:
        cap = torch._C._cpu._get_cpu_capability()
        return not (cap["avx512_bf16"] or cap["amx_bf16"])
    except (AttributeError, KeyError, TypeError, RuntimeError):
        pass
    try:
        return not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        return False


def warn_if_slow_bfloat16(device: torch.device | str, what: str) -> None:
    """A ``VlmcodecWarning`` when ``what`` (a teacher under bfloat16 autocast) is about to run on
    a CPU without native bfloat16 products (``cpu_lacks_native_bfloat16``)."""
    if torch.device(device).type == "cpu" and cpu_lacks_native_bfloat16():
        warnings.warn(f"{what}: this CPU has no bfloat16 matrix instructions (AVX512-BF16 or AMX), so the "
                      "teacher's bfloat16 products are emulated and take far longer than float32's (measured: "
                      "~22x the time of a refinement on an AVX2 CPU); leave bfloat16 off here",
                      VlmcodecWarning, stacklevel=3)


def spaced_layers(num_layers: int, n: int = 4) -> tuple[int, ...]:
    """``n`` block indices spread evenly up to the last one: 12 → (3, 6, 9, 12); 2 → (1, 2)."""
    return tuple(sorted({max(1, round(num_layers * k / n)) for k in range(1, n + 1)}))


def resize_to(x: Tensor, size: Size, patch_size: int) -> Tensor:
    """Differentiable resize of [B, 3, H, W] to ``size`` (int → square), which must be a multiple of
    the patch size. Bicubic (half-pixel centres), antialiased when shrinking; not clamped, so the
    gradient reaches every input pixel (bicubic overshoot is a few 1e-3 at sharp edges)."""
    if is_whole(size):
        h = w = int(size)
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(is_whole(v) for v in size):
        h, w = int(size[0]), int(size[1])
    else:
        raise ConfigError(f"teacher input size must be an int or a pair of ints (H, W), got {size!r}")
    if h <= 0 or w <= 0 or h % patch_size or w % patch_size:
        raise ConfigError(f"teacher input size {h}x{w} must be positive multiples of the patch size {patch_size}")
    if x.shape[-2:] == (h, w):
        return x
    shrink = h < x.shape[-2] or w < x.shape[-1]
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=shrink)


def teacher_input_size(h: int, w: int, short_side: int = 224, patch: int = 14) -> tuple[int, int]:
    """Shorter side → ``short_side``; the longer side → nearest multiple of ``patch`` keeping the aspect.

    The longer side is at most ``TEACHER_MAX_ASPECT · short_side`` (896 px at 224): an image more
    elongated than 1:4 is scaled so that its longer side is that, and its shorter side becomes the
    nearest multiple of ``patch`` (at least one patch), so the teacher never sees more tokens than
    a 1:4 image gives (a 4×4000 strip would otherwise be 256 000 tokens). ``ImageError`` for an
    empty image."""
    if not is_whole(short_side) or short_side <= 0 or short_side % patch:
        raise ConfigError(f"short_side {short_side!r} must be a positive multiple of the patch size {patch}")
    if h <= 0 or w <= 0:
        raise ImageError(f"image {h}x{w} is empty: the teacher needs at least one pixel each way")
    short, long = min(h, w), max(h, w)
    cap = TEACHER_MAX_ASPECT * short_side
    if long * short_side > cap * short:  # more elongated than 1:TEACHER_MAX_ASPECT
        s, l = max(patch, patch * round(short * cap / long / patch)), cap
    else:
        s, l = short_side, max(patch, patch * round(long * short_side / short / patch))
    return (s, l) if h <= w else (l, s)


def token_similarity(a: Sequence[Tensor], b: Sequence[Tensor], eps: float = 1e-8) -> Tensor:
    """Mean token cosine similarity of two images' tokens, per item: [B].

    ``a`` and ``b`` are what a teacher returned for the two inputs (one [B, T, D] tensor per
    layer, same grid). Per layer: cosine similarity of the tokens at the same position, averaged
    over the T tokens (prefix and patches, equal weight); then averaged over the layers (equal
    weight). Differentiable; ``1 − token_similarity`` is a token distortion.
    """
    if len(a) != len(b) or not len(a):
        raise ConfigError(f"token lists differ in length or are empty: {len(a)} vs {len(b)}")
    per_layer = [F.cosine_similarity(u, v, dim=-1, eps=eps).mean(-1) for u, v in zip(a, b)]
    return torch.stack(per_layer).mean(0)


class FrozenTeacher(nn.Module):
    """Common part of every teacher: input checks, normalisation, layer parsing, freezing.

    Subclasses set ``name``, ``num_layers``, ``embed_dim``, ``patch_size``, ``num_prefix_tokens``
    and implement ``_forward_layers(x_normalised, layers, norm) -> list[Tensor]`` with ``layers``
    already resolved to sorted-or-not non-negative block indices.
    """

    name: str = "teacher"
    num_layers: int
    embed_dim: int
    patch_size: int
    num_prefix_tokens: int = 1
    default_layers: tuple[int, ...] = (3, 6, 9, 12)
    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        mean, std = check_stats(mean, std, type(self).__name__)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def freeze(self) -> "FrozenTeacher":
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        """A teacher stays in eval mode whatever its parent does (no dropout, no BN updates)."""
        return super().train(False)

    def resolve_layers(self, layers: Sequence[int] | int | None) -> list[int]:
        if layers is None:
            layers = tuple(l for l in self.default_layers if l <= self.num_layers) or (self.num_layers,)
        if isinstance(layers, int):
            layers = (layers,)
        if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
            raise ConfigError(f"teacher layers must be an int or a sequence of ints, got {layers!r}")
        out = []
        for l in layers:
            if isinstance(l, bool) or not isinstance(l, int):
                raise ConfigError(f"teacher layers must be ints, got {l!r}")
            li = l + self.num_layers + 1 if l < 0 else l
            if not 0 <= li <= self.num_layers:
                raise ConfigError(f"teacher layer {l} out of range for {self.name} "
                                  f"(0 = embeddings, 1..{self.num_layers} = blocks, negatives from the end)")
            out.append(li)
        if not out:
            raise ConfigError("teacher layers must not be empty")
        return out

    def normalise(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: Tensor, layers: Sequence[int] | int | None = None, *, norm: bool = True,
                size: Size | None = None) -> list[Tensor]:
        """Tokens [B, T, D] of each layer in ``layers`` (default ``default_layers``).

        x: float RGB in [0, 1], [B, 3, H, W] (or [3, H, W]). With ``size=None`` H and W must be
        multiples of ``patch_size``; otherwise the input is first resized to ``size`` (see
        ``resize_to``). ``norm=True`` passes every returned layer through the model's final norm.
        ``x`` is cast to the teacher's parameter dtype (float64 input to a float32 teacher runs in
        float32); under autocast, autocast still picks the dtype of each product.
        """
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.shape[1] != 3:
            raise ConfigError(f"teacher input must be [B, 3, H, W] RGB, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ConfigError(f"teacher input must be float RGB in [0, 1], got {x.dtype}")
        if not x.shape[-2] or not x.shape[-1]:
            raise ImageError(f"{self.name}: input {x.shape[-2]}x{x.shape[-1]} is empty")
        dtype = next((p.dtype for p in self.parameters() if p.is_floating_point()), x.dtype)
        x = x.to(dtype)
        if size is not None:
            x = resize_to(x, size, self.patch_size)
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ConfigError(f"{self.name}: input {h}x{w} is not a multiple of the patch size {self.patch_size}; "
                              f"crop it or pass size=(H, W) to resize")
        return self._forward_layers(self.normalise(x), self.resolve_layers(layers), norm)

    def _forward_layers(self, x: Tensor, layers: list[int], norm: bool) -> list[Tensor]:
        raise NotImplementedError

    def patch_tokens(self, tokens: Tensor) -> Tensor:
        """Drop the prefix tokens (CLS, registers): [B, T, D] → [B, (H/p)·(W/p), D]."""
        return tokens[:, self.num_prefix_tokens:]

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, layers={self.num_layers}, dim={self.embed_dim}, patch={self.patch_size}, "
                f"prefix={self.num_prefix_tokens}")
