"""Classic image codecs for the rate–distortion bench, behind one small interface.

    codec = CLASSIC_CODECS["avif"]()
    ok, why = codec.available()           # (False, "reason") when its library is missing
    data = codec.encode(img, q)            # img uint8 H×W×3; q from codec.qualities
    out = codec.decode(data)               # uint8 H×W×3

Sizes are the real encoded files: every ``encode`` returns the complete file (JPEG/JFIF,
WebP/RIFF, AVIF/HEIF, JPEG XL codestream, HEVC Annex-B elementary stream), metadata-free.

- ``jpeg``  Pillow/libjpeg, quality 5..95, 4:2:0 chroma (Pillow's default), optimised Huffman.
- ``webp``  Pillow/libwebp lossy, quality 5..95, method 6.
- ``avif``  Pillow's own AVIF support (Pillow ≥ 11.3), else ``pillow-avif-plugin``; quality
            10..90, 4:4:4, speed 6.
- ``jxl``   ``pillow-jxl-plugin`` (libjxl), else ``imagecodecs``; quality 10..95 (libjxl's
            distance mapping), effort 7, bare codestream (no container).
- ``hevc``  ffmpeg + libx265 (preset medium, tune psnr), all-intra, one frame, 4:4:4 8-bit at
            QP 17..47 (the ``qualities`` of this codec are QPs, lower = better). RGB → YCbCr uses the full-range BT.601
            (JFIF) matrix in numpy and raw yuv444p goes in and out of ffmpeg, so no swscale
            conversion is involved; the size is the .hevc elementary stream without x265's
            version/options SEI (``info=0``).
Every encoder runs on one thread.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from typing import Sequence

import numpy as np

from .common import repeated


class ClassicCodec:
    name: str = ""
    label: str = ""
    qualities: Sequence[float] = ()
    quality_name: str = "quality"
    suffix: str = ""
    quality_range: tuple[float, float] = (0, 100)  # the encoder's own (Pillow clamps beyond it)
    whole_qualities = True  # the encoder takes whole numbers (int() would take 50.7 as 50)

    def available(self) -> tuple[bool, str]:
        return True, ""

    def check_qualities(self, qualities: Sequence[float]) -> None:
        """ValueError for a quality the encoder does not take as given (jpeg=200 was coded at
        Pillow's 100 and recorded as 200)."""
        lo, hi = self.quality_range
        twice = repeated(qualities)
        if twice:  # (a curve with two points at one rate)
            raise ValueError(f"{self.name}: {self.quality_name} {twice} given more than once")
        for q in qualities:
            whole = not self.whole_qualities or float(q).is_integer()
            if not (lo <= q <= hi and whole):
                kind = "whole numbers" if self.whole_qualities else "numbers"
                raise ValueError(f"{self.name}: {self.quality_name} must be {kind} in [{lo:g}, {hi:g}], got {q:g}")

    def version(self) -> str:
        return ""

    def settings(self) -> dict:
        """Encoder settings recorded with every cached result (a change invalidates the cache)."""
        return {}

    def encode(self, img: np.ndarray, quality: float) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> np.ndarray:
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _pil_save(img: np.ndarray, fmt: str, **params) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **params)
    return buf.getvalue()


class JPEG(ClassicCodec):
    name, label, suffix = "jpeg", "JPEG (libjpeg, 4:2:0)", ".jpg"
    qualities = (5, 10, 20, 30, 50, 70, 85, 95)

    def version(self) -> str:
        from PIL import __version__, features

        return f"Pillow {__version__}, libjpeg {features.version('jpg')}"

    def settings(self) -> dict:
        return {"subsampling": "4:2:0", "optimize": True}

    def encode(self, img, quality):
        return _pil_save(img, "JPEG", quality=int(quality), optimize=True, subsampling=2)


class WebP(ClassicCodec):
    name, label, suffix = "webp", "WebP (libwebp)", ".webp"
    qualities = (5, 10, 20, 30, 50, 70, 85, 95)

    def available(self):
        from PIL import features

        return (True, "") if features.check("webp") else (False, "Pillow built without WebP")

    def version(self) -> str:
        from PIL import __version__, features

        return f"Pillow {__version__}, libwebp {features.version('webp')}"

    def settings(self) -> dict:
        return {"method": 6, "lossless": False}

    def encode(self, img, quality):
        return _pil_save(img, "WEBP", quality=int(quality), method=6, lossless=False)


class AVIF(ClassicCodec):
    name, label, suffix = "avif", "AVIF (libavif/aom, 4:4:4)", ".avif"
    qualities = (10, 20, 30, 45, 60, 75, 90)

    def _source(self) -> str | None:
        from PIL import features

        try:
            if features.check("avif"):
                return "pillow"
        except ValueError:  # Pillow older than 11.3 does not know the feature
            pass
        try:
            import pillow_avif  # noqa: F401  (registers the plugin)

            return "pillow-avif-plugin"
        except ImportError:
            return None

    def available(self):
        return (True, "") if self._source() else (
            False, "no AVIF in Pillow and pillow-avif-plugin not installed (pip install pillow-avif-plugin)")

    def version(self) -> str:
        from PIL import __version__, features

        src = self._source()
        if src == "pillow":
            return f"Pillow {__version__}, libavif {features.version('avif')}"
        import pillow_avif

        return f"pillow-avif-plugin {getattr(pillow_avif, '__version__', '?')}"

    def settings(self) -> dict:
        return {"subsampling": "4:4:4", "speed": 6, "source": self._source()}

    def encode(self, img, quality):
        self._source()
        return _pil_save(img, "AVIF", quality=int(quality), speed=6, subsampling="4:4:4", max_threads=1)


class JPEGXL(ClassicCodec):
    name, label, suffix = "jxl", "JPEG XL (libjxl)", ".jxl"
    qualities = (10, 25, 40, 55, 70, 85, 95)

    def _source(self) -> str | None:
        try:
            import pillow_jxl  # noqa: F401

            return "pillow-jxl-plugin"
        except ImportError:
            pass
        try:
            import imagecodecs

            if imagecodecs.JPEGXL.available:
                return "imagecodecs"
        except (ImportError, AttributeError):
            pass
        return None

    def available(self):
        return (True, "") if self._source() else (
            False, "neither pillow-jxl-plugin nor imagecodecs (with JPEG XL) installed (pip install pillow-jxl-plugin)")

    def version(self) -> str:
        from importlib.metadata import version

        src = self._source()
        return f"{src} {version(src)}" if src else ""

    def settings(self) -> dict:
        return {"effort": 7, "container": False, "source": self._source()}

    def encode(self, img, quality):
        if self._source() == "pillow-jxl-plugin":
            return _pil_save(img, "JXL", quality=int(quality), effort=7, use_container=False, num_threads=1)
        import imagecodecs

        return imagecodecs.jpegxl_encode(img, level=int(quality), effort=7, numthreads=1)

    def decode(self, data):
        if self._source() == "pillow-jxl-plugin":
            return super().decode(data)
        import imagecodecs

        return np.asarray(imagecodecs.jpegxl_decode(data))[..., :3]


# Full-range BT.601 (JFIF) RGB <-> YCbCr, the convention of JPEG and of BPG's "ycbcr" anchor.
_RGB2YCC = np.array([[0.299, 0.587, 0.114],
                     [-0.168735892, -0.331264108, 0.5],
                     [0.5, -0.418687589, -0.081312411]])
_YCC2RGB = np.linalg.inv(_RGB2YCC)


def rgb_to_ycbcr444(img: np.ndarray) -> np.ndarray:
    """uint8 RGB H×W×3 → uint8 planar Y, Cb, Cr (3×H×W), full range."""
    ycc = img.astype(np.float64) @ _RGB2YCC.T + np.array([0.0, 128.0, 128.0])
    return np.clip(np.rint(ycc), 0, 255).astype(np.uint8).transpose(2, 0, 1)


def ycbcr444_to_rgb(planes: np.ndarray) -> np.ndarray:
    """uint8 planar Y, Cb, Cr (3×H×W), full range → uint8 RGB H×W×3."""
    ycc = planes.transpose(1, 2, 0).astype(np.float64) - np.array([0.0, 128.0, 128.0])
    return np.clip(np.rint(ycc @ _YCC2RGB.T), 0, 255).astype(np.uint8)


class HEVC(ClassicCodec):
    name, label, suffix = "hevc", "HEVC intra (x265, 4:4:4)", ".hevc"
    qualities = (47, 42, 37, 32, 27, 22, 17)
    quality_name = "qp"
    quality_range = (0, 51)
    preset = "medium"
    tune = "psnr"  # psy-rd, psy-rdoq and AQ off: +0.3..0.8 dB PSNR at equal rate on Kodak

    def available(self):
        ffmpeg = shutil.which("ffmpeg")
        if not ffmpeg:
            return False, "ffmpeg not found (scripts/setup_bench.sh installs Debian's ffmpeg)"
        try:
            enc = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True,
                                 timeout=30).stdout
        except (OSError, subprocess.SubprocessError) as e:
            return False, f"ffmpeg does not run: {e}"
        if "libx265" not in enc:
            return False, "ffmpeg has no libx265 encoder"
        return True, ""

    def version(self) -> str:
        out = subprocess.run(["ffmpeg", "-hide_banner", "-version"], capture_output=True, text=True).stdout
        return out.splitlines()[0] if out else ""

    def settings(self) -> dict:
        return {"preset": self.preset, "tune": self.tune, "pix_fmt": "yuv444p", "matrix": "BT.601 full range (numpy)",
                "x265": "keyint=1, info=0, one thread"}

    def encode(self, img, quality):
        h, w = img.shape[:2]
        params = f"qp={int(quality)}:keyint=1:min-keyint=1:info=0:pools=1:frame-threads=1:log-level=error"
        cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "yuv444p",
               "-s", f"{w}x{h}", "-i", "-", "-frames:v", "1", "-c:v", "libx265", "-preset", self.preset,
               "-tune", self.tune, "-x265-params", params, "-color_range", "pc", "-colorspace", "bt470bg",
               "-threads", "1",
               "-f", "hevc", "-"]
        res = subprocess.run(cmd, input=rgb_to_ycbcr444(img).tobytes(), capture_output=True)
        if res.returncode != 0 or not res.stdout:
            raise RuntimeError(f"ffmpeg/x265 encode failed: {res.stderr.decode(errors='replace')[-500:]}")
        return res.stdout

    def decode(self, data):
        cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-threads", "1", "-f", "hevc", "-i", "-",
               "-f", "rawvideo", "-pix_fmt", "yuv444p", "-"]
        res = subprocess.run(cmd, input=data, capture_output=True)
        if res.returncode != 0:
            raise RuntimeError(f"ffmpeg HEVC decode failed: {res.stderr.decode(errors='replace')[-500:]}")
        h, w = self._probe_size(data)
        planes = np.frombuffer(res.stdout, dtype=np.uint8)[: 3 * h * w].reshape(3, h, w)
        return ycbcr444_to_rgb(planes)

    def _probe_size(self, data: bytes) -> tuple[int, int]:
        res = subprocess.run(["ffprobe", "-v", "error", "-f", "hevc", "-i", "-", "-select_streams", "v:0",
                              "-show_entries", "stream=width,height", "-of", "csv=p=0"],
                             input=data, capture_output=True)
        try:
            w, h = (int(v) for v in res.stdout.decode().strip().split(",")[:2])
        except ValueError:
            raise RuntimeError(f"ffprobe could not read the HEVC stream: {res.stderr.decode(errors='replace')[-300:]}")
        return h, w


CLASSIC_CODECS = {c.name: c for c in (JPEG, WebP, AVIF, JPEGXL, HEVC)}


class ConsumerScale(ClassicCodec):
    """A classic codec run at the consumer's scale, the control for ``vlmcodec@N``.

    ``encode`` downscales so the shorter side is ``short_side`` px and encodes with ``inner``;
    ``decode`` upsamples back. Both resizes are ``vlmcodec.resample``'s, the ones vlmcodec's own
    ``short_side`` uses. The file is ``varint(W) varint(H)`` of the original (2 × 2 bytes for
    Kodak, counted in the size: a real deployment has to carry them too) followed by the inner file.
    """

    def __init__(self, inner: ClassicCodec, short_side: int):
        self.inner, self.short_side = inner, int(short_side)
        self.name = f"{inner.name}@{self.short_side}"
        self.label = f"{inner.label} @ short side {self.short_side}"
        self.qualities, self.quality_name, self.suffix = inner.qualities, inner.quality_name, inner.suffix
        self.quality_range, self.whole_qualities = inner.quality_range, inner.whole_qualities

    def available(self) -> tuple[bool, str]:
        return self.inner.available()

    def version(self) -> str:
        return self.inner.version()

    def settings(self) -> dict:
        return {**self.inner.settings(), "short_side": self.short_side, "resample": "bicubic (vlmcodec.resample)"}

    def encode(self, img, quality):
        from vlmcodec.bitstream.container import _varint
        from vlmcodec.resample import coded_size, downscale

        h, w = img.shape[:2]
        small = downscale(img, coded_size(h, w, self.short_side))
        return _varint(w) + _varint(h) + self.inner.encode(small, quality)

    def decode(self, data):
        from vlmcodec.bitstream.container import MAX_DIM, _Reader
        from vlmcodec.resample import upscale_uint8

        r = _Reader(data)
        w, h = r.varint("width", 1, MAX_DIM), r.varint("height", 1, MAX_DIM)
        return upscale_uint8(self.inner.decode(data[r.pos:]), (h, w))
