"""What the server reads of an uploaded image file: only the formats the README lists reach a
decoder (an EPS went to Ghostscript), and the read itself runs under the memory check (a 7.8 KB
PNG of 8000×8000 took ~735 MB to read before any check saw it)."""

import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from vlmcodec import memory
from vlmcodec.errors import ImageError
from vlmcodec.image_io import READ_BYTES_PER_PIXEL, composite_alpha, image_size, load_image

from conftest import serving, smooth_image

_MIB = 1 << 20


def _post(url: str, body: bytes) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=60) as r:
            return r.status, {}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _png(img: np.ndarray | Image.Image) -> bytes:
    buf = io.BytesIO()
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(buf, "PNG")
    return buf.getvalue()


def test_only_the_listed_formats_are_read():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n"
    tga = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tga, "TGA")
    for data in (eps, tga.getvalue()):
        with pytest.raises(ImageError, match="not a PNG, JPEG, WebP, BMP, PPM/PGM, TIFF or GIF file"):
            load_image(io.BytesIO(data))
        assert image_size(data) is None
    for fmt in ("PNG", "JPEG", "WEBP", "BMP", "PPM", "TIFF", "GIF"):
        buf = io.BytesIO()
        Image.new("RGB", (9, 7), (10, 20, 30)).save(buf, fmt)
        assert load_image(io.BytesIO(buf.getvalue())).shape == (7, 9, 3) and image_size(buf.getvalue()) == (9, 7)


def test_the_in_place_alpha_compositing_is_the_exact_formula():
    """(composite_alpha went to uint16 in place: an RGBA read peaked at 56 B per pixel.)"""
    c, a = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    rgba = np.stack([c, 255 - c, c // 2, a], -1).astype(np.uint8)
    for background in (0, 77, 255):
        wide = rgba.astype(np.uint32)
        exact = (wide[..., :3] * wide[..., 3:] + background * (255 - wide[..., 3:]) + 127) // 255
        assert np.array_equal(composite_alpha(rgba, background), exact.astype(np.uint8))


def test_an_upload_is_read_under_the_memory_check(tiny_model_path, rng, monkeypatch):
    big = _png(Image.new("1", (2000, 1500)))  # ~2 KB announcing 3 Mpx: ~84 MB to read
    small = _png(smooth_image(rng, 64, 64))
    assert len(big) < 4096 and 3_000_000 * READ_BYTES_PER_PIXEL > 64 * _MIB
    seen = []
    real_load = load_image

    def watched(source, max_pixels=None):
        seen.append(memory.held_bytes())  # what is held aside while the read runs
        return real_load(source, max_pixels)

    monkeypatch.setattr("vlmcodec.runtime.http_handler.load_image", watched)
    with serving(tiny_model_path) as server:
        monkeypatch.setattr(memory, "available_memory", lambda: 64 * _MIB)
        status, body = _post(f"{server.url}/encode?quality=50", big)
        assert status == 413 and body["error"].startswith("reading the image of 3.0 Mpx needs about"), body
        assert "send it smaller (or as raw pixels)" in body["error"] and not seen  # refused before it was read
        assert _post(f"{server.url}/encode?quality=50", small)[0] == 200
        assert seen[-1] >= 64 * 64 * READ_BYTES_PER_PIXEL  # the small one's read was held aside
        # a read that fits only once other work ends waits for it, until the request's timeout: 503
        monkeypatch.setattr(memory, "available_memory", lambda: 100 * _MIB)
        with memory.holding("other coding", 1, 60 * _MIB):
            status, body = _post(f"{server.url}/encode?quality=50&timeout=1", big)
        assert status == 503 and "held by other coding" in body["error"], body
