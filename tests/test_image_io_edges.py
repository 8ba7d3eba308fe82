"""Reading and writing images at the edges: damaged files, odd extensions and scales, size limits
checked before any work, Pillow's own pixel limit, a decode that would replace its own stream."""

from __future__ import annotations

import io
import re
import struct
import threading
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from vlmcodec.cli import main
from vlmcodec.errors import ImageError, VlmcodecWarning
from vlmcodec.image_io import as_rgb_array, image_bytes, load_image, pil_to_rgb, save_image


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _random_png(shape=(48, 64, 3)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _corrupt_idat(data: bytes) -> bytes:
    """The PNG with bytes inside its pixel data (IDAT) scrambled; the chunk CRCs left as they were."""
    out = bytearray(data)
    start = data.index(b"IDAT") + 4
    for i in range(start + 200, start + 240):
        out[i] ^= 0x5A
    return bytes(out)


def test_a_png_with_corrupt_pixel_data_is_an_image_error(tmp_path, tiny_model_path, capsys):
    """Decoding the pixels failed inside upright()'s EXIF read, was taken for malformed EXIF, and
    half a (mostly black) image was coded with exit status 0."""
    path = tmp_path / "corrupt.png"
    path.write_bytes(_corrupt_idat(_random_png()))
    with pytest.raises(OSError):  # (what Pillow itself says of the file)
        Image.open(path).load()
    with pytest.raises(ImageError, match=r"cannot read image .*corrupt\.png"):
        load_image(path)
    with pytest.raises(ImageError, match="cannot read image <stream>"):
        load_image(io.BytesIO(path.read_bytes()))
    out = tmp_path / "c.vlmc"
    assert main(["encode", str(path), "-o", str(out), "--no-psnr", "--model", str(tiny_model_path)]) == 2
    assert "corrupt.png" in capsys.readouterr().err and not out.exists()


def test_only_the_documented_extensions_are_written(tmp_path):
    """.ico shrank the image to an icon, .icns enlarged it, .gif quantised it, .blp and .xbm were
    Pillow's bare ValueError/OSError."""
    img = np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    for suffix in (".ico", ".icns", ".gif", ".blp", ".xbm", ".msp", ".pgm", ".pdf"):
        with pytest.raises(ImageError, match=re.escape(f"unknown image file extension '{suffix}'") + r".*\.png"):
            save_image(img, tmp_path / f"a{suffix}")
    assert list(tmp_path.iterdir()) == []
    for suffix in (".png", ".PNG", ".ppm", ".pnm", ".bmp", ".tif", ".tiff", ".webp", ".jpg", ".jpeg"):
        save_image(img, tmp_path / f"a{suffix}")
        with Image.open(tmp_path / f"a{suffix}") as im:
            assert im.size == (50, 30) and im.mode == "RGB"
    assert np.array_equal(load_image(tmp_path / "a.pnm"), img) and np.array_equal(load_image(tmp_path / "a.tiff"), img)


def test_a_float_image_in_0_1_is_scaled_rounded_and_the_scale_told(tmp_path):
    """A float TIFF in [0, 1] came out black (read as 0..255, truncated) without a word."""
    values = np.array([[0.0, 0.2, 0.5, 1.0]], np.float32)
    Image.fromarray(values).save(tmp_path / "unit.tif")
    with Image.open(tmp_path / "unit.tif") as im:
        assert im.mode == "F"
    with pytest.warns(VlmcodecWarning, match=r"unit\.tif: floating-point image with values in \[0, 1\]: .*0\.\.1"):
        assert load_image(tmp_path / "unit.tif")[0, :, 1].tolist() == [0, 51, 128, 255]
    wide = np.array([[0.0, 100.7, 2.4, 255.0]], np.float32)  # rounded, not truncated
    with pytest.warns(VlmcodecWarning, match=r"values in \[0, 255\]: read on the scale 0\.\.255"):
        assert pil_to_rgb(Image.fromarray(wide))[0, :, 0].tolist() == [0, 101, 2, 255]
    for bad in (np.nan, np.inf):
        with pytest.raises(ImageError, match="NaN or infinite"):
            pil_to_rgb(Image.fromarray(np.array([[0.5, bad]], np.float32)))


def test_a_lazy_or_closed_pil_image_that_cannot_be_read_is_an_image_error(tmp_path):
    data = _random_png()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "corrupt.png").write_bytes(_corrupt_idat(data))
    for name in ("trunc.png", "corrupt.png"):
        with Image.open(tmp_path / name) as im, pytest.raises(ImageError, match="cannot read the PIL image"):
            as_rgb_array(im)
    closed = Image.new("RGB", (8, 8))
    closed.close()
    with pytest.raises(ImageError, match="cannot read the PIL image: Operation on closed image"):
        as_rgb_array(closed)
    with Image.open(io.BytesIO(data)) as im:  # a lazy image of a whole file is decoded as before
        assert as_rgb_array(im).shape == (48, 64, 3)


def test_a_16_bit_grey_png_with_a_transparent_grey_shows_it_over_white(tmp_path):
    h, w = 2, 4
    grey = np.full((h, w), 0x8000, np.uint16)
    grey[:, :2] = 0x1234  # the tRNS key
    rows = b"".join(b"\x00" + grey[y].astype(">u2").tobytes() for y in range(h))
    path = tmp_path / "g16t.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0))
                     + _chunk(b"tRNS", struct.pack(">H", 0x1234)) + _chunk(b"IDAT", zlib.compress(rows))
                     + _chunk(b"IEND", b""))
    with Image.open(path) as im:
        assert im.mode.startswith("I;16") and im.info["transparency"] == 0x1234
    arr = load_image(path)
    assert (arr[:, :2] == 255).all() and (arr[:, 2:] == 128).all()  # 0x8000 · 255 / 65535 → 128


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # (Pillow's, over its limit)
def test_max_pixels_above_pillows_bomb_limit_decides(tmp_path, monkeypatch):
    """Pillow's own limit (Image.MAX_IMAGE_PIXELS, ~179 Mpx) refused images that a raised
    max_pixels allows; vlmcodec's check from the header still refuses what is over max_pixels,
    before decoding, and Pillow's limit is as it was afterwards."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # Pillow refuses over 1000, warns over 500
    img = np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)  # 2000 pixels
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(img).save(tmp_path / "a.tif")  # (a TIFF meets the limit again when its pixels load)
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(tmp_path / "a.png")  # no max_pixels: Pillow's limit stands
    for name in ("a.png", "a.tif"):
        assert np.array_equal(load_image(tmp_path / name, max_pixels=2000), img)
    assert Image.MAX_IMAGE_PIXELS == 500
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1) or real_load(self))
    with pytest.raises(ImageError, match="40 is more than max_pixels=1999"):
        load_image(tmp_path / "a.png", max_pixels=1999)
    assert decoded == [] and Image.MAX_IMAGE_PIXELS == 500

    # reads on several threads at once, some raising the limit and some not, leave it as it was
    errors: list[BaseException] = []

    def read(limit):
        try:
            for _ in range(20):
                assert load_image(tmp_path / "a.png", max_pixels=limit).shape == (40, 50, 3)
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=read, args=(limit,)) for limit in (2000, 5000, 10**9, 2000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and Image.MAX_IMAGE_PIXELS == 500


def test_decode_refuses_to_replace_its_own_input_stream(tmp_path, tiny_model_path, capsys):
    Image.fromarray(_rgb(32, 32)).save(tmp_path / "src.png")
    model = ["--model", str(tiny_model_path)]
    stream = tmp_path / "stream.png"  # a stream under an image's name
    assert main(["encode", str(tmp_path / "src.png"), "-o", str(stream), "--no-psnr", *model]) == 0
    data = stream.read_bytes()
    assert data[:4] == b"VLMC"
    capsys.readouterr()
    assert main(["decode", str(stream), "-o", str(stream), *model]) == 2
    assert "would replace its own input stream (-o names it)" in capsys.readouterr().err
    assert main(["decode", str(stream), "--force", *model]) == 2  # beside it, under its own name
    assert "would replace its own input stream (name the output with -o)" in capsys.readouterr().err
    link = tmp_path / "link.png"
    link.symlink_to(stream)  # written through a link, the decoded image would land on the stream
    assert main(["decode", str(stream), "-o", str(link), *model]) == 2
    assert stream.read_bytes() == data
    assert main(["decode", str(stream), "-o", str(tmp_path / "out.png"), *model]) == 0
    assert load_image(tmp_path / "out.png").shape == (32, 32, 3)


def _rgb(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_the_32_bit_integer_scale_warning_names_the_file(tmp_path):
    path = tmp_path / "deep.tif"
    Image.fromarray(np.full((4, 4), 40000, np.int32)).save(path)
    with pytest.warns(VlmcodecWarning, match=re.escape(f"{path}: 32-bit integer image")):
        load_image(path)
    with pytest.warns(VlmcodecWarning, match=r"^32-bit integer image"):  # a PIL image has no name
        pil_to_rgb(Image.fromarray(np.full((4, 4), 40000, np.int32)))


def test_image_bytes_takes_the_png_level_whatever_the_case_of_png():
    arr = np.tile(np.arange(256, dtype=np.uint8), (64, 1))
    sizes = {(fmt, level): len(image_bytes(arr, fmt, level)) for fmt in ("PNG", "png", "Png") for level in (0, 9)}
    for fmt in ("png", "Png"):
        assert sizes[fmt, 0] == sizes["PNG", 0] and sizes[fmt, 9] == sizes["PNG", 9]
    assert sizes["png", 0] > 4 * sizes["png", 9]


def test_the_largest_side_is_accepted_in_either_orientation():
    """16384 pixels a side is the documented maximum (``MAX_SIDE``), 16385 the first refused."""
    row = np.broadcast_to(np.zeros(3, np.uint8), (1, 16384, 3))
    for arr in (row, row.transpose(1, 0, 2)):
        assert as_rgb_array(arr).shape == arr.shape
    long = np.broadcast_to(np.zeros(3, np.uint8), (1, 16385, 3))
    for arr in (long, long.transpose(1, 0, 2)):
        with pytest.raises(ImageError, match=r"outside the supported 1\.\.16384 per side"):
            as_rgb_array(arr)


def test_array_sizes_are_checked_before_any_copy():
    """A 17000×17000 grey broadcast view (no memory of its own) was expanded to H×W×3 — 867 MB,
    ~1.1 GB at the peak — before its size was refused; tracemalloc sees numpy's allocations."""
    gray = np.broadcast_to(np.uint8(7), (17000, 17000))
    rgba = np.broadcast_to(np.uint8(7), (17000, 100, 4))
    tracemalloc.start()
    try:
        for arr in (gray, rgba):
            with pytest.raises(ImageError, match=r"outside the supported 1\.\.16384 per side"):
                as_rgb_array(arr)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20
    with pytest.raises(ImageError, match=r"100x100 pixels is more than max_pixels=9999"):
        as_rgb_array(np.broadcast_to(np.uint8(7), (100, 100)), max_pixels=9999)
    assert as_rgb_array(np.broadcast_to(np.uint8(7), (100, 100)), max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(ImageError, match=re.escape("convert it first: a.astype(np.uint8) * 255")):
        as_rgb_array(np.ones((4, 4, 3), bool))
