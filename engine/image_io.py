"""Images in and out: numpy uint8 H×W×3 or PIL images, files, padding to the codec's grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError

MAX_SIDE = 16384
PAD_MULTIPLE = 64


def as_rgb_array(image) -> np.ndarray:
    """Validate and convert ``image`` (numpy uint8 H×W×3, H×W grayscale, or PIL) to uint8 H×W×3."""
    if isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"))
    elif isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ImageError(f"expected an H×W×3 RGB array, got shape {arr.shape}")
        if arr.dtype != np.uint8:
            raise ImageError(f"expected dtype uint8, got {arr.dtype} (convert with np.clip(a, 0, 255).astype(np.uint8))")
    else:
        raise ImageError(f"expected a numpy array or PIL image, got {type(image).__name__}")
    h, w = arr.shape[:2]
    if h < 1 or w < 1 or h > MAX_SIDE or w > MAX_SIDE:
        raise ImageError(f"image size {w}x{h} outside the supported 1..{MAX_SIDE} per side")
    return np.ascontiguousarray(arr)


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 H×W×3 (clear ImageError when unreadable)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.draft("RGB", im.size)
            if im.width > MAX_SIDE or im.height > MAX_SIDE:
                raise ImageError(f"{path}: size {im.width}x{im.height} outside 1..{MAX_SIDE} per side")
            return as_rgb_array(im)
    except FileNotFoundError as e:
        raise ImageError(f"image not found: {path}") from e
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as e:
        raise ImageError(f"cannot read image {path}: {e}") from e


def save_image(arr: np.ndarray, path: str | Path) -> None:
    Image.fromarray(arr).save(path)


def padded_size(h: int, w: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int]:
    return (-(-h // multiple) * multiple, -(-w // multiple) * multiple)


def pad_edge(arr: np.ndarray, multiple: int = PAD_MULTIPLE) -> np.ndarray:
    """Pad H×W×3 bottom/right by edge replication to a multiple of ``multiple``."""
    h, w = arr.shape[:2]
    ph, pw = padded_size(h, w, multiple)
    if (ph, pw) == (h, w):
        return arr
    return np.pad(arr, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images (inf when identical)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))
