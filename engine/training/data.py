"""Training data: images held in memory as uint8, random crops and flips sampled on the fly."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import TrainingDataError, VlmcodecWarning
from ..image_io import load_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".ppm", ".tif", ".tiff"}


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainingDataError(f"training folder {folder} is not a folder" if folder.exists()
                                else f"training folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise TrainingDataError(f"no images in {folder}")
    return files


class CropSampler:
    """Random ``crop``×``crop`` patches with flips; optional random downscale of the source
    (0.5–1×) so the model sees the finer detail of camera images like Kodak's."""

    def __init__(self, folder: str | Path, crop: int, seed: int = 0, downscale: bool = True,
                 short_side: int | Sequence[int] | None = None):
        """``short_side``: first resize each image as consumer-scale coding does
        (``vlmcodec.resample``, shorter side to that many px), e.g. for training at that scale.
        Several sides: each image at each of them, a sample drawn uniformly from all (scale
        jitter: more distinct crops of a few images near the consumer's scale)."""
        from ..resample import coded_size, downscale as resize

        self.crop = int(crop)
        sides = [None] if short_side is None else [short_side] if isinstance(short_side, int) else list(short_side)
        if not sides:
            raise ValueError("short_side: an empty list of sides")
        self.images: list[torch.Tensor] = []
        self.too_small: list[str] = []  # "name (WxH)" of each image (at a side) smaller than a crop
        files = list_images(folder)
        for p in files:
            full = load_image(p)
            for side in sides:
                arr = full if side is None else resize(full, coded_size(full.shape[0], full.shape[1], int(side)))
                if min(arr.shape[:2]) >= crop:
                    self.images.append(torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous())
                else:
                    at = "" if side is None else f" at short side {side}"
                    self.too_small.append(f"{p.name} ({arr.shape[1]}x{arr.shape[0]}{at})")
        if not self.images:
            raise TrainingDataError(f"no image in {folder} is at least {crop} px on each side")
        if self.too_small:
            shown = ", ".join(self.too_small[:5]) + (f" and {len(self.too_small) - 5} more"
                                                     if len(self.too_small) > 5 else "")
            of = (f"{len(files)}" if len(sides) == 1
                  else f"{len(files) * len(sides)} ({len(files)} at {len(sides)} sides)")
            warnings.warn(f"{len(self.too_small)} of {of} training images in {folder} are smaller than a "
                          f"{crop}x{crop} crop and are not used: {shown}", VlmcodecWarning, stacklevel=2)
        self.downscale = downscale
        self.gen = torch.Generator().manual_seed(seed)

    def _rand(self, n: int) -> int:
        return int(torch.randint(0, n, (1,), generator=self.gen))

    def sample(self, batch: int) -> torch.Tensor:
        """A float batch in [0, 1], (batch, 3, crop, crop)."""
        out = torch.empty(batch, 3, self.crop, self.crop)
        for i in range(batch):
            img = self.images[self._rand(len(self.images))]
            _, h, w = img.shape
            scale = 1.0
            if self.downscale and torch.rand(1, generator=self.gen).item() < 0.5:
                scale = 0.5 + 0.5 * torch.rand(1, generator=self.gen).item()
            src = max(self.crop, int(round(self.crop / scale)))
            src = min(src, h, w)
            top, left = self._rand(h - src + 1), self._rand(w - src + 1)
            patch = img[:, top : top + src, left : left + src].float().div_(255.0)
            if src != self.crop:
                patch = torch.nn.functional.interpolate(
                    patch[None], size=(self.crop, self.crop), mode="bilinear", antialias=True, align_corners=False
                )[0].clamp_(0, 1)
            if self._rand(2):
                patch = patch.flip(2)
            if self._rand(2):
                patch = patch.flip(1)
            out[i] = patch
        return out
