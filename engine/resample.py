"""Consumer-scale coding: code an image at the resolution its consumer will look at.

A vision-language model's vision tower sees a photo at a fixed, small scale (a ViT at 224 or
336 px on the short side; EfficientNet-style classifiers at 224 from a 256 px resize), so every
bit spent on detail above that scale is lost on it. ``short_side=N`` makes the encoder
downscale the image (antialiased bicubic) so its shorter side is ``N`` pixels before the
pre-editor and the codec, and the stream records both sizes; the decoder upsamples its output
(bicubic, on the float reconstruction before rounding) back to the original size, so the
consumer gets what it always got. Images whose shorter side is already ``≤ N`` are coded as
they are (never upscaled).

Both functions are used by the codec and by the bench's resized classic codecs
(``bench/classic.py``), so a comparison at equal consumer scale uses the same resampling.
"""

from __future__ import annotations

from typing import overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import is_whole
from .errors import ConfigError

MIN_SHORT_SIDE = 16


def coded_size(h: int, w: int, short_side: int | None) -> tuple[int, int]:
    """The size an ``h×w`` image is coded at for a consumer that sees ``short_side`` pixels."""
    if short_side is None or min(h, w) <= short_side:
        return h, w
    s = short_side / min(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


@overload
def check_short_side(short_side: None, *, zero: bool = ...) -> None: ...
@overload
def check_short_side(short_side: int, *, zero: bool = ...) -> int: ...
@overload
def check_short_side(short_side: object, *, zero: bool = ...) -> int | None: ...
def check_short_side(short_side: object, *, zero: bool = False) -> int | None:
    """Validate a ``short_side`` option (None, or an integer ≥ MIN_SHORT_SIDE; with ``zero``, a
    call's option, the integer 0 too: the original size). A bool or a float is never one."""
    if short_side is None:
        return None
    if zero and is_whole(short_side) and short_side == 0:
        return 0
    if not is_whole(short_side) or short_side < MIN_SHORT_SIDE:
        also = ", 0 (the original size)," if zero else ""
        raise ConfigError(f"short_side must be None{also} or an integer >= {MIN_SHORT_SIDE}, got {short_side!r}")
    return int(short_side)


def call_short_side(short_side: object, default: int | None = None) -> int | None:
    """The side one call codes or decodes at: None gives ``default`` (a codec's setting), 0 the
    original size (None), else ``check_short_side``'s rule."""
    if short_side is None:
        return default
    return check_short_side(short_side, zero=True) or None


def parse_short_side(text: str) -> int:
    """A ``short_side`` given as text (a CLI value, the ``N`` of a bench codec ``NAME@N``)."""
    try:
        return check_short_side(int(text))
    except ValueError:
        raise ValueError(f"expected an integer >= {MIN_SHORT_SIDE}, got {text!r}") from None


def downscale(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 H×W×3 → uint8 h×w×3, antialiased bicubic in float (identity when the size is equal)."""
    if tuple(arr.shape[:2]) == tuple(size):
        return arr
    x = torch.from_numpy(np.array(arr)).permute(2, 0, 1)[None].float()
    y = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    return np.ascontiguousarray(y[0].clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy())


def upscale(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Float [3, h, w] in [0, 1] → float [3, *size], bicubic, clamped (identity when the size is equal)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None].float(), size=size, mode="bicubic", align_corners=False)[0].clamp_(0, 1)


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Float [3, h, w] in [0, 1] → float [3, *size]: :func:`upscale` when growing (what a decoder
    restoring the original size does), antialiased bicubic when shrinking, clamped."""
    h, w = x.shape[-2:]
    if size[0] > h or size[1] > w or tuple(size) == (h, w):
        return upscale(x, size)
    return F.interpolate(x[None].float(), size=size, mode="bicubic", align_corners=False,
                         antialias=True)[0].clamp_(0, 1)


def upscale_uint8(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 h×w×3 → uint8 H×W×3 with :func:`upscale` (for codecs that decode to uint8)."""
    if tuple(arr.shape[:2]) == tuple(size):
        return arr
    x = torch.from_numpy(np.array(arr)).permute(2, 0, 1).float().div_(255.0)
    y = upscale(x, size)
    return np.ascontiguousarray(y.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy())
