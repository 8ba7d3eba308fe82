"""Images in and out: numpy uint8 H×W×3 or PIL images, files, padding to the codec's grid."""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from pathlib import Path
from typing import BinaryIO, TypeAlias

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ImageInput: TypeAlias = np.ndarray | Image.Image | str | os.PathLike[str]
"""An image the encoders take: uint8 H×W×3 (RGB), H×W×4 (RGBA), H×W or H×W×1 (grayscale) numpy,
a PIL image, or an image file's path (``as_rgb_array``)."""

from .checks import is_real, is_whole
from .errors import ConfigError, ImageError, VlmcodecWarning
from .files import write_whole

MAX_SIDE = 16384
PAD_MULTIPLE = 64
DEFAULT_PNG_LEVEL = 1
WEBP_MAX_SIDE = 16383  # the WebP format's own limit (Pillow's bare "encoding error 5" beyond it)
FORMAT_MAX_SIDE = {"WEBP": WEBP_MAX_SIDE}  # Pillow formats that hold less than MAX_SIDE a side
JPEG_QUALITY = 95  # decoded images written as JPEG: one more lossy step, kept small (and 4:4:4)


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# the formats read (Pillow's names; JPEG's opener also gives a camera's multi-picture MPO): only
# these of Pillow's plugins see a file's bytes, so an upload is never handed to Ghostscript (EPS)
# or to rarer decoders
READ_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "PPM", "TIFF", "GIF")
# a read's peak memory per pixel, conversions included (measured: 12 B for 1-bit and palette PNGs,
# 18 for RGB PNG and JPEG, 21 for 16-bit grey, 22 for RGBA; a margin above): the server admits
# a read under its memory check with it
READ_BYTES_PER_PIXEL = 28
# transparent pixels are shown over white, as viewers and VLM image loaders commonly show them;
# dropping alpha instead would expose whatever colour the transparent pixels happen to store
ALPHA_BACKGROUND = 255


def composite_alpha(rgba: np.ndarray, background: int = ALPHA_BACKGROUND) -> np.ndarray:
    """uint8 H×W×4 → uint8 H×W×3 over a grey ``background`` (0..255), rounded; opaque pixels
    keep their colour exactly."""
    # in place in uint16: c·a + bg·(255 − a) + 127 ≤ 255² + 127 fits, and the temporaries of the
    # uint32 expression are gone (a 16 Mpx RGBA PNG's read peaked at 56 B per pixel, now 23)
    a = rgba[:, :, 3:4].astype(np.uint16)
    out = rgba[:, :, :3].astype(np.uint16)
    out *= a
    np.subtract(255, a, out=a)
    a *= background
    out += a
    out += 127
    out //= 255
    return out.astype(np.uint8)


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def _rgb16_low_bytes(im: Image.Image) -> np.ndarray | None:
    """Of a 16-bit RGB PNG with a transparent colour (tRNS), not yet loaded: the low bytes of its
    samples (``im`` decodes to the high ones); None for any other image.

    Pillow keeps such a PNG's transparent colour at 16 bits but its pixels at 8, so that nothing
    (or, for a colour below 256, the wrong pixels) matched it: the file is decoded once more, by
    Pillow's unpacker of little-endian samples, which takes the other byte of each."""
    key = im.info.get("transparency")
    if not (isinstance(im, ImageFile.ImageFile) and im.format == "PNG" and im.mode == "RGB"
            and isinstance(key, tuple) and im.fp is not None and [t[3] for t in im.tile] == ["RGB;16B"]):
        return None
    im.fp.seek(0)  # (load seeks back to the pixel data itself)
    with Image.open(io.BytesIO(im.fp.read())) as low:
        # (a tile was a plain tuple before Pillow 11)
        low.tile = [t._replace(args="RGB;16L") if hasattr(t, "_replace") else (*t[:3], "RGB;16L")  # type: ignore[misc]
                    for t in low.tile]
        low.load()
        return np.asarray(low)


def _keyed(im: Image.Image, low: np.ndarray) -> Image.Image:
    """Loaded 16-bit RGB PNG ``im`` (its high bytes; ``low``: ``_rgb16_low_bytes``) as a new RGBA
    image, transparent where all 16 bits of a pixel's samples equal its transparent colour."""
    value = np.asarray(im).astype(np.uint16) << 8 | low
    opaque = (value != np.array(im.info["transparency"], np.uint16)).any(axis=2)
    keyed = im.copy()  # (info, EXIF included, goes with it)
    del keyed.info["transparency"]
    keyed.putalpha(Image.fromarray(opaque.astype(np.uint8) * 255, "L"))
    return keyed


def pil_to_rgb(im: Image.Image, sixteen_bit: bool = False, name: str | None = None) -> np.ndarray:
    """A PIL image as uint8 H×W×3, high-bit-depth grayscale scaled rather than clipped.

    Pillow's ``convert("RGB")`` clips 16-bit grayscale (a 16-bit PNG) at 255, which turns most of
    such an image white; here 0..65535 maps onto 0..255. 16-bit colour PNGs already open as
    8-bit RGB (Pillow keeps the high byte; their transparent colour is matched on all 16 bits by
    ``load_image`` and ``as_rgb_array``, from the file); palettes are expanded; transparent pixels
    are composited over white (``ALPHA_BACKGROUND``). A mode "I" image is taken as 16-bit when
    ``sixteen_bit`` or when it holds values above 255 (with a VlmcodecWarning naming the scale
    chosen, unless ``sixteen_bit``); a mode "F" (floating-point) one as 0..1 when no value
    exceeds 1 and as 0..255 otherwise, rounded (with a VlmcodecWarning naming the scale).
    ``name``: the file's, for the messages."""
    where = f"{name}: " if name else ""
    if im.mode in _SIXTEEN_BIT_MODES or im.mode == "I":
        a = np.asarray(im).astype(np.int64)
        low, top = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if low < 0 or top > 65535:
            raise ImageError(f"{where}integer image with values in [{low}, {top}]: expected 8- or 16-bit data")
        sixteen = im.mode in _SIXTEEN_BIT_MODES or sixteen_bit or top > 255
        if im.mode == "I" and not sixteen_bit:
            # 32-bit integer pixels (a TIFF, say) declare no scale: the values decide, and the
            # caller is told, since a dark 16-bit image stored so would come out 257x too bright
            scale = "0..65535 (16-bit)" if sixteen else "0..255 (8-bit)"
            warnings.warn(f"{where}32-bit integer image with values in [{low}, {top}]: read on the scale {scale}; "
                          "convert it to 8- or 16-bit to choose", VlmcodecWarning, stacklevel=3)
        key = im.info.get("transparency")  # a 16-bit grey PNG's tRNS: one transparent grey value
        gray = ((a * 255 + 32767) // 65535 if sixteen else a).astype(np.uint8)
        if isinstance(key, int) and not isinstance(key, bool):
            gray[a == key] = ALPHA_BACKGROUND
        return np.repeat(gray[:, :, None], 3, axis=2)
    if im.mode == "F":
        a = np.asarray(im).astype(np.float64)
        if a.size and not np.isfinite(a).all():
            raise ImageError(f"{where}floating-point image with NaN or infinite values")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo < 0 or hi > 255:
            raise ImageError(f"{where}floating-point image outside [0, 255]: convert it to 8-bit first")
        # a float image declares no scale either: [0, 1] (as float TIFFs usually hold) read as
        # 0..255 would come out black
        unit = hi <= 1
        warnings.warn(f"{where}floating-point image with values in [{lo:g}, {hi:g}]: read on the scale "
                      f"{'0..1' if unit else '0..255'}; convert it to 8-bit to choose", VlmcodecWarning,
                      stacklevel=3)
        gray = np.clip(np.rint(a * 255 if unit else a), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    try:
        if _has_alpha(im):
            # (Pillow converts premultiplied "La" to "LA" only: to RGBA it raised ValueError)
            return composite_alpha(np.asarray((im.convert("LA") if im.mode == "La" else im).convert("RGBA")))
        return np.asarray(im.convert("RGB"))
    except ValueError as e:  # a mode Pillow cannot convert to RGB
        raise ImageError(f"{where}image of mode {im.mode!r}: {e}") from None


def _check_max_pixels(max_pixels) -> None:
    # (1e6 is taken, 1.5 is not: Codec's max_pixels is whole)
    if max_pixels is not None and (not is_real(max_pixels) or not max_pixels >= 1 or max_pixels != int(max_pixels)):
        raise ConfigError(f"max_pixels must be a number of pixels, at least 1 and whole (or None), got {max_pixels!r}")


def _check_size(w: int, h: int, max_pixels: int | None) -> None:
    """ImageError for a ``w``×``h`` image outside 1..MAX_SIDE per side or over ``max_pixels``."""
    if h < 1 or w < 1 or h > MAX_SIDE or w > MAX_SIDE:
        raise ImageError(f"image size {w}x{h} outside the supported 1..{MAX_SIDE} per side")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(f"image of {w}x{h} pixels is more than max_pixels={max_pixels} "
                         "(Codec(max_pixels=...) or --max-pixels raises it)")


def as_rgb_array(image, max_pixels: int | None = None) -> np.ndarray:
    """Validate and convert ``image`` (numpy uint8 H×W×3, H×W×4 RGBA — composited over white —,
    H×W or H×W×1 grayscale, PIL, or the path of an image file, read by :func:`load_image`) to uint8 H×W×3.
    The size (1..MAX_SIDE per side, at most ``max_pixels``) is checked before any pixel is
    decoded or copied."""
    _check_max_pixels(max_pixels)
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, max_pixels)
    if isinstance(image, Image.Image):
        _check_size(image.width, image.height, max_pixels)
        try:  # a lazily opened file decodes here (a damaged one: Pillow's OSError; a closed image: ValueError)
            low = _rgb16_low_bytes(image)
            image.load()
        except (OSError, ValueError, SyntaxError, TypeError, Image.DecompressionBombError) as e:
            raise ImageError(f"cannot read the PIL image: {e}") from e
        arr = pil_to_rgb(image if low is None else _keyed(image, low))
    elif isinstance(image, np.ndarray):
        arr = np.asarray(image)  # (a np.matrix stays 2-D whatever is done to it: numpy's error)
        if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4))):
            planar = arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] > 4
            hint = f" (channels first? a.transpose(1, 2, 0) is H×W×{arr.shape[0]})" if planar else ""
            raise ImageError(f"expected an H×W×3 RGB (or H×W×4 RGBA, H×W grey) array, got shape {arr.shape}{hint}")
        if arr.dtype != np.uint8:
            hint = ("16-bit data: (a >> 8).astype(np.uint8)" if arr.dtype == np.uint16
                    else "e.g. np.clip(a * 255, 0, 255).round().astype(np.uint8) for floats in [0, 1]"
                    if arr.dtype.kind == "f" else "a.astype(np.uint8) * 255" if arr.dtype.kind == "b"
                    else "np.clip(a, 0, 255).astype(np.uint8)")
            raise ImageError(f"expected dtype uint8, got {arr.dtype} (convert it first: {hint})")
        # before any copy: a broadcast view of a huge image holds no memory of its own, its copy would
        _check_size(arr.shape[1], arr.shape[0], max_pixels)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.shape[2] == 4:
            arr = composite_alpha(arr)
    else:
        # a torch tensor (a VLM pipeline's usual image) is not taken as such: its layout (C×H×W or
        # H×W×C) and scale (0..1 or 0..255) are conventions the caller knows and this cannot
        hint = (" (a tensor: e.g. (t.permute(1, 2, 0) * 255).round().clamp(0, 255).byte().cpu().numpy() for a "
                "C×H×W tensor in [0, 1])" if type(image).__name__ == "Tensor" else "")
        raise ImageError(f"expected a numpy array, PIL image or file path, got {type(image).__name__}{hint}")
    return np.ascontiguousarray(arr)


def upright(im: Image.Image) -> Image.Image:
    """``im`` turned as its EXIF orientation tag says (how viewers show it); as it is without one.

    The stream keeps no metadata, so a camera photo stored sideways with a rotate-on-display tag
    would otherwise decode sideways — and a vision model would see it that way."""
    try:
        return ImageOps.exif_transpose(im)
    except (SyntaxError, ValueError, TypeError, KeyError, OSError):  # malformed EXIF: keep the pixels as stored
        return im


# Pillow refuses images over its module-wide Image.MAX_IMAGE_PIXELS (~179 Mpx; ~89 Mpx warns) as
# decompression bombs, read at open (and when a TIFF or GIF frame loads), and offers no per-call
# limit: while reads with a higher max_pixels are in flight it is raised to the highest of them
# (vlmcodec's own check, from the header, refuses what is over each read's max_pixels), then
# restored. The lock guards only this bookkeeping, so reads still decode in parallel; another
# thread's own Image.open meanwhile sees the higher limit.
_PILLOW_LIMIT_LOCK = threading.Lock()
_pillow_raised: list[float] = []  # the max_pixels of the reads in flight that raised it
_pillow_own: list[int | None] = [None]  # Pillow's limit as it was before them


def _set_pillow_limit(pixels: float | None) -> None:
    Image.MAX_IMAGE_PIXELS = None if pixels is None or pixels == float("inf") else int(pixels)


@contextlib.contextmanager
def _pillow_limit(max_pixels: float | None):
    """Pillow's bomb limit at least ``max_pixels`` for the duration."""
    with _PILLOW_LIMIT_LOCK:
        own = _pillow_own[0] if _pillow_raised else Image.MAX_IMAGE_PIXELS
        # max_pixels where it raises Pillow's limit, else None
        raised = max_pixels if max_pixels is not None and own is not None and max_pixels > own else None
        if raised is not None:
            if not _pillow_raised:
                _pillow_own[0] = own
            _pillow_raised.append(raised)
            _set_pillow_limit(max(_pillow_raised))
    if raised is None:  # Pillow neither refuses nor warns about an image this read takes
        yield
        return
    try:
        yield
    finally:
        with _PILLOW_LIMIT_LOCK:
            _pillow_raised.remove(raised)
            _set_pillow_limit(max(_pillow_raised) if _pillow_raised else _pillow_own[0])


def load_image(path: str | os.PathLike[str] | BinaryIO, max_pixels: float | None = None) -> np.ndarray:
    """Read an image file (a path, or a binary file object such as ``io.BytesIO(data)``) as uint8
    H×W×3, upright per its EXIF orientation (ImageError when unreadable or damaged). Of an
    animation or a multi-page file, the first frame (with a VlmcodecWarning). ``max_pixels``:
    refuse larger images from their header, before decoding any pixel; a higher one than Pillow's
    own decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) overrides it for this read."""
    _check_max_pixels(max_pixels)
    source: Path | BinaryIO
    if isinstance(path, (str, os.PathLike)):
        if os.fspath(path) == "":  # (Path("") is ".": "is a directory", of the current folder)
            raise ImageError("the image path is empty")
        source = path = Path(path)
    elif callable(getattr(path, "read", None)):
        source, path = path, getattr(path, "name", None) or "<stream>"
    else:  # (an AttributeError "no attribute 'read'" from Pillow)
        raise ImageError(f"expected an image file's path or a binary file object, got {type(path).__name__}")
    try:
        with _pillow_limit(max_pixels), Image.open(source, formats=READ_FORMATS) as im:
            if max_pixels is not None and im.width * im.height > max_pixels:
                raise ImageError(f"{path}: {im.width}x{im.height} is more than max_pixels={max_pixels} "
                                 "(Codec(max_pixels=...) or --max-pixels raises it)")
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                warnings.warn(f"{path} holds {frames} frames; only the first is coded", VlmcodecWarning,
                              stacklevel=2)
            im.draft("RGB", im.size)
            if im.width > MAX_SIDE or im.height > MAX_SIDE:
                raise ImageError(f"{path}: size {im.width}x{im.height} outside 1..{MAX_SIDE} per side")
            low = _rgb16_low_bytes(im)  # (before load, which may close the file)
            # decoded here, so that a damaged file is an ImageError (upright's EXIF read would
            # otherwise decode it and take the failure for malformed EXIF, keeping half an image)
            im.load()
            # a PGM with maxval > 255 opens as mode "I" on a 0..65535 scale (Pillow rescales other
            # maxvals to it), even when a dark image holds only values below 256
            sixteen_bit = im.format == "PPM" and im.mode == "I"
            shown = im if low is None else _keyed(im, low)
            return as_rgb_array(pil_to_rgb(upright(shown), sixteen_bit, str(path)))
    except ImageError:
        raise
    except FileNotFoundError as e:
        raise ImageError(f"image not found: {path}") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"cannot read image {path}: not a PNG, JPEG, WebP, BMP, PPM/PGM, TIFF or GIF file") from e
    # (Pillow raises ValueError for a damaged PPM/PGM header, TypeError for some damaged TIFFs)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError, TypeError) as e:
        # (Pillow names a file object by its repr, an address: "<_io.BytesIO object at 0x7f…>")
        text = str(e) if isinstance(source, Path) else str(e).replace(f" {source!r}", "")
        raise ImageError(f"cannot read image {path}: {text}") from e


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) an image file's header announces, read without decoding a pixel; None when
    it is no image ``load_image`` reads (which then says why)."""
    try:
        with Image.open(io.BytesIO(data), formats=READ_FORMATS) as im:
            return im.size
    except Exception:  # noqa: BLE001 — any failure is load_image's to report
        return None


_WRITTEN_FORMATS = {".png": "PNG", ".ppm": "PPM", ".pnm": "PPM", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
                    ".webp": "WEBP", ".jpg": "JPEG", ".jpeg": "JPEG"}


def written_format(path: str | os.PathLike[str]) -> str:
    """The Pillow format ``save_image`` writes ``path`` in, from its suffix; ImageError for a
    suffix it does not write (the CLI asks before decoding anything)."""
    # these only: Pillow saves more (.ico shrinks the image to an icon, .gif quantises it to 256
    # colours, .blp and others fail with Pillow's own errors)
    path = Path(path)
    fmt = _WRITTEN_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"cannot write {path}: unknown image file extension {path.suffix!r} "
                         "(use .png, .ppm/.pnm, .bmp, .tif/.tiff, .webp or .jpg/.jpeg)")
    return fmt


def check_png_level(png_level) -> int:
    """A PNG's zlib level: a whole number in 0..9 (ConfigError otherwise)."""
    if not is_whole(png_level) or not 0 <= png_level <= 9:
        raise ConfigError(f"png_level must be 0..9, got {png_level!r}")
    return int(png_level)


def check_format_size(fmt: str, w: int, h: int) -> None:
    """ImageError when a ``w``×``h`` image cannot be written in Pillow format ``fmt``: a WebP
    holds at most ``WEBP_MAX_SIDE`` pixels a side (``MAX_SIDE`` is one more)."""
    most = FORMAT_MAX_SIDE.get(fmt.upper())
    if most is not None and max(w, h) > most:
        raise ImageError(f"cannot write a {w}x{h} image as {fmt.upper()}: the format holds at most {most} "
                         "pixels a side (write it as .png)")


def _save_options(fmt: str, png_level: int) -> dict:
    """Pillow's save options of format ``fmt``: WebP lossless and JPEG at ``JPEG_QUALITY`` without
    chroma subsampling (Pillow's defaults, q80 and q75 4:2:0, were a second, undocumented loss)."""
    options: dict[str, dict] = {"PNG": {"compress_level": png_level}, "WEBP": {"lossless": True},
                                "JPEG": {"quality": JPEG_QUALITY, "subsampling": 0}}
    return options.get(fmt.upper(), {})


def image_bytes(arr: np.ndarray, fmt: str = "PNG", png_level: int = DEFAULT_PNG_LEVEL) -> bytes:
    """uint8 H×W×3 (or H×W) ``arr`` as the bytes of an image file in Pillow format ``fmt``: PNG,
    PPM, BMP, TIFF, WEBP (lossless) or JPEG (quality 95, 4:4:4), any case — the formats
    ``save_image`` writes (others Pillow saves shrink the image, an ICO, or quantise it, a GIF)."""
    check_png_level(png_level)
    if not isinstance(fmt, str) or fmt.upper() not in _WRITTEN_FORMATS.values():
        raise ConfigError(f"unknown image format {fmt!r}: PNG, PPM, BMP, TIFF, WEBP or JPEG")
    _check_writable(arr)
    check_format_size(fmt, arr.shape[1], arr.shape[0])
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **_save_options(fmt, png_level))
    return buf.getvalue()


def _check_writable(arr) -> None:
    """ImageError unless ``arr`` is an image Pillow writes as vlmcodec's: uint8 H×W×3 or H×W
    (a float or 5-channel array was Pillow's TypeError "Cannot handle this data type")."""
    if not isinstance(arr, np.ndarray):
        raise ImageError(f"expected a uint8 H×W×3 (or H×W) numpy array to write, got {type(arr).__name__}")
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ImageError(f"expected a uint8 H×W×3 (or H×W) array to write, got {arr.dtype} of shape {arr.shape}")
    if arr.size == 0:  # (Pillow's "cannot write empty image", over its own AttributeError)
        raise ImageError(f"cannot write an empty image (shape {arr.shape})")


def save_image(arr: np.ndarray, path: str | os.PathLike[str], png_level: int = DEFAULT_PNG_LEVEL) -> None:
    """Write uint8 H×W×3 (or H×W) ``arr`` to ``path``, its format from the suffix (``written_format``).

    The file appears whole or not at all: it is written under a temporary name beside ``path``
    and renamed over it, so an interrupted or failed write (a full disk, Ctrl-C) leaves no
    truncated image. ``png_level``: zlib level 0..9 of a PNG (default 1, as OpenCV's: on decoded
    Kodak images 4x faster than Pillow's 6 for files ~7 % larger)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ImageError(f"save_image: the path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    # the file's bytes made in memory first: a FIFO is not seekable for Pillow
    write_whole(path, image_bytes(arr, written_format(path), png_level))


def padded_size(h: int, w: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int]:
    return (-(-h // multiple) * multiple, -(-w // multiple) * multiple)


def pad_edge(arr: np.ndarray, multiple: int = PAD_MULTIPLE) -> np.ndarray:
    """Pad H×W×3 bottom/right by edge replication to a multiple of ``multiple``."""
    h, w = arr.shape[:2]
    ph, pw = padded_size(h, w, multiple)
    if (ph, pw) == (h, w):
        return arr
    return np.pad(arr, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR in dB between two uint8 images (inf when identical); other dtypes as float64."""
    if a.shape != b.shape:
        raise ValueError(f"psnr of images of different shapes {a.shape} and {b.shape}")
    if a.dtype == np.uint8 and b.dtype == np.uint8:
        # exact integer sum of squared errors, in slices: ~50x faster than float64 arrays at 12 Mpx
        d = np.subtract(a, b, dtype=np.int16).ravel()
        sse = sum(int(np.einsum("i,i->", c, c, dtype=np.int64))
                  for c in (d[i : i + _PSNR_SLICE].astype(np.int32) for i in range(0, d.size, _PSNR_SLICE)))
        mse = sse / max(d.size, 1)
    else:
        mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


_PSNR_SLICE = 1 << 20
