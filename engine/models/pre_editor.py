"""The semantic pre-editor P: a light vision transformer that predicts a residual edit of the
image before the codec, ``x' = x + Δ(x)`` (arXiv 2407.17060, "pre-editing"). Trained jointly
with the codec so that what the downstream vision tower needs survives compression and what
it ignores is cheap; it runs at encode time only.

Structure (all plain ops, so it exports to ONNX)::

    x ─┬─ conv3×3 ───────────────────────────────────────────────┐ full resolution
       ├─ conv4×4/4 ──────────────────────────────┐ 1/4          │
       └─ patch 16×16 → depth × [attention + MLP] ┴→ +, conv3×3 ─┴→ +, conv3×3 → Δ
                        (tokens at 1/16, conv position encoding)     (upsampled ×4, ×4)

The last convolution starts at zero, so an untrained pre-editor is the identity.

Attention is global while the token grid fits in ``global_attention_tokens`` tokens per side
(every image up to 1024 px per side); above that it runs in windows of ``attention_window``
tokens per side, shifted by half a window in every other block, so the cost grows with the
pixel count instead of its square.
Exported ONNX graphs attend globally at any size (the onnxruntime backend runs this module
instead above the window; TensorRT engines attend globally up to their profile's size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import tracing_here


@dataclass(frozen=True)
class PreEditorConfig:
    dim: int = 96
    depth: int = 2
    heads: int = 3
    hidden: int = 32
    patch: int = 16


def attention_ref(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q kᵀ / sqrt(head dim)) v written out: the reference for ``_Block.attend``."""
    return torch.softmax((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5, dim=-1) @ v


class _Block(nn.Module):
    """Pre-norm transformer block. ``attend`` is ``scaled_dot_product_attention``: on CPU it never
    materialises the scaled score matrix (a full-size Kodak encode takes ~0.93-0.95× the time it
    took with :func:`attention_ref`, same output to 1e-7: scripts/pre_editor_attention_bench.py),
    on CUDA it picks a fused kernel, and the ONNX exporter writes it as MatMul/Softmax."""

    attend = staticmethod(F.scaled_dot_product_attention)  # scale 1/sqrt(head dim)

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, t: Tensor, grid: tuple[int, int] | None = None, window: int = 0, shift: bool = False) -> Tensor:
        """``t`` (B, N, D) tokens; with ``grid`` (rows, cols) and ``window`` > 0, attention stays
        inside ``window``-sized squares of the grid (offset by half a window when ``shift``)."""
        b, n, d = t.shape
        q, k, v = self.qkv(self.norm1(t)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if grid is None or window <= 0 or max(grid) <= window:
            a = self.attend(q, k, v)
        else:
            a = windowed_attention(q, k, v, grid, window, shift, self.attend)
        t = t + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return t + self.mlp(self.norm2(t))


def window_spans(size: int, window: int, shift: bool) -> list[tuple[int, int]]:
    """[start, stop) spans covering ``range(size)``: one span when it fits, else the fewest pieces
    of at most ``window``, their lengths within one of each other (no sliver at the end); when
    ``shift``, every cut moves by half a piece (one more span: a half piece at each end)."""
    if size <= window:
        return [(0, size)]
    n = -(-size // window)
    cuts = [i * size // n for i in range(1, n)]
    half = size // n // 2
    if shift and half:  # (pieces of one token cannot shift)
        cuts = [c - half for c in cuts] + [size - half]
    return list(zip([0] + cuts, cuts + [size]))


def windowed_attention(q: Tensor, k: Tensor, v: Tensor, grid: tuple[int, int], window: int, shift: bool,
                       attend=F.scaled_dot_product_attention) -> Tensor:
    """Attention of (B, heads, rows·cols, d) tokens restricted to the windows of the token grid."""
    b, h, n, dh = q.shape
    rows, cols = grid
    q, k, v = (x.reshape(b, h, rows, cols, dh) for x in (q, k, v))
    out = torch.empty_like(q)
    for r0, r1 in window_spans(rows, window, shift):
        for c0, c1 in window_spans(cols, window, shift):
            qw, kw, vw = (x[:, :, r0:r1, c0:c1].reshape(b, h, -1, dh) for x in (q, k, v))
            out[:, :, r0:r1, c0:c1] = attend(qw, kw, vw).reshape(b, h, r1 - r0, c1 - c0, dh)
    return out.reshape(b, h, n, dh)


class PreEditor(nn.Module):
    """x (B, 3, H, W) in [0, 1], H and W multiples of ``patch`` → x + Δ(x)."""

    # tokens per side of an attention window: an inference setting, not a weight (training crops
    # are far smaller); 0 attends globally at any size. 32 rather than 64: the pre-editor took
    # 0.83x the time at 4032x3008, 0.96x at 2048x1536, its output within 4e-5 (scripts/
    # pre_editor_window_bench.py --window 32 --reference 64)
    attention_window: int = 32
    # attention stays global while the grid fits in this many tokens per side (None: the window),
    # so images up to 1024 px per side (Kodak among them) are coded as they always were
    global_attention_tokens: int | None = 64
    # above this many pixels, without gradients, the full-resolution head runs in bands of rows
    # (same values, a fraction of the peak memory; never in a traced graph)
    band_pixels: int = 1 << 20
    band_rows: int = 256

    def __init__(self, config: PreEditorConfig | None = None):
        super().__init__()
        c = self.config = config or PreEditorConfig()
        if c.dim % c.heads:
            raise ValueError("pre-editor dim must be divisible by heads")
        self.full = nn.Conv2d(3, c.hidden, 3, padding=1)
        self.quarter = nn.Conv2d(3, c.hidden, 4, stride=4)
        self.embed = nn.Conv2d(3, c.dim, c.patch, stride=c.patch)
        self.pos = nn.Conv2d(c.dim, c.dim, 3, padding=1, groups=c.dim)  # position encoding for any size
        self.blocks = nn.ModuleList(_Block(c.dim, c.heads) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.dim)
        self.to_hidden = nn.Conv2d(c.dim, c.hidden, 1)
        self.mid = nn.Conv2d(c.hidden, c.hidden, 3, padding=1)
        self.out = nn.Conv2d(c.hidden, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        assert self.out.bias is not None  # (made with one, just above)
        nn.init.zeros_(self.out.bias)

    def windowed_at(self, h: int, w: int) -> bool:
        """Whether attention over an h×w input runs in windows (in torch; traced graphs never do)."""
        p = self.config.patch
        fits = self.attention_window if self.global_attention_tokens is None else max(
            self.global_attention_tokens, self.attention_window)
        return self.attention_window > 0 and max(h // p, w // p) > fits

    def banded_at(self, h: int, w: int) -> bool:
        """Whether, at inference, the full-resolution head of an h×w input runs in row bands."""
        return h * w > self.band_pixels

    def delta(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        p = self.config.patch
        tok = self.embed(x)
        tok = tok + self.pos(tok)
        gh, gw = tok.shape[-2:]
        t = tok.flatten(2).transpose(1, 2)
        # a traced graph (ONNX export) cannot branch on the image size: exported graphs attend globally
        exporting = tracing_here()
        window = self.attention_window if not exporting and self.windowed_at(h, w) else 0
        for i, blk in enumerate(self.blocks):
            t = blk(t, (gh, gw), window, shift=i % 2 == 1)
        t = self.norm(t).transpose(1, 2).reshape(b, -1, gh, gw)
        # the sums are in place (GELU keeps its input for backward, not its output): at full
        # resolution every extra hidden-width map costs 128 bytes per pixel
        q = F.gelu(self.quarter(x))
        q += F.interpolate(self.to_hidden(t), scale_factor=p // 4, mode="bilinear", align_corners=False)
        q = F.gelu(self.mid(q))
        if not exporting and not torch.is_grad_enabled() and self.banded_at(h, w):
            return self._full_head_in_bands(x, q)
        f = F.gelu(self.full(x))
        f += F.interpolate(q, scale_factor=4, mode="bilinear", align_corners=False)
        return self.out(f)

    def _full_head_in_bands(self, x: Tensor, q: Tensor) -> Tensor:
        """The full-resolution head, ``band_rows`` rows at a time: each band reads x with a
        2-row halo (two 3×3 convolutions) and the rows of q its ×4 bilinear upsampling reads, so
        it computes the same values, but the peak holds a band's hidden maps, not the image's."""
        b, _, h, w = x.shape
        hq = q.shape[-2]
        out = x.new_empty(b, 3, h, w)
        for r0 in range(0, h, self.band_rows):
            r1 = min(r0 + self.band_rows, h)
            a0, a1 = max(r0 - 2, 0), min(r1 + 2, h)
            # upsampled row i reads q rows floor(i/4 - 3/8) and the next (clamped at the edges)
            s0 = max(math.floor(a0 / 4 - 0.375), 0)
            s1 = min(math.floor((a1 - 1) / 4 - 0.375) + 2, hq)
            f = F.gelu(self.full(x[:, :, a0:a1]))
            up = F.interpolate(q[:, :, s0:s1], scale_factor=4, mode="bilinear", align_corners=False)
            f += up[:, :, a0 - 4 * s0 : a1 - 4 * s0]
            out[:, :, r0:r1] = self.out(f)[:, :, r0 - a0 : r1 - a0]
        return out

    def forward(self, x: Tensor) -> Tensor:
        return x + self.delta(x)
