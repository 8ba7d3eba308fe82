"""Image I/O as the audit found it wanting: a 16-bit RGB PNG's transparent colour, the quality of
decoded WebP and JPEG files, output suffixes and WebP sizes refused before decoding, H×W×1 arrays,
missing or dangling inputs named among several, standard input's name in warnings."""

from __future__ import annotations

import io
import re
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from vlmcodec.bitstream import container
from vlmcodec.cli import main
from vlmcodec.codec import Codec
from vlmcodec.errors import ImageError
from vlmcodec.image_io import as_rgb_array, image_bytes, load_image, save_image

from conftest import smooth_image

WEBP_MAX_SIDE = 16383  # the WebP format's own limit


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _rgb48_png(pixels: np.ndarray, key: tuple[int, int, int], exif: bytes | None = None) -> bytes:
    """A 16-bit RGB PNG of uint16 H×W×3 ``pixels`` with the transparent colour ``key`` (tRNS)."""
    h, w, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + _chunk(b"tRNS", struct.pack(">HHH", *key)) + (_chunk(b"eXIf", exif) if exif else b"")
            + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))


def test_a_16_bit_rgb_png_transparent_colour_is_matched_on_all_16_bits(tmp_path):
    """Pillow keeps the pixels' high bytes and the key at 16 bits: nothing matched (the colour's
    pixels kept their colour), or for a key below 256 the wrong pixels did."""
    key = (1000, 2000, 3000)
    pixels = np.array([[key, (1001, 2000, 3000), (40000, 50000, 60000)]], np.uint16)  # (same high bytes, not the key)
    path = tmp_path / "rgb48_trns.png"
    path.write_bytes(_rgb48_png(pixels, key))
    want = [[255, 255, 255], [3, 7, 11], [156, 195, 234]]
    assert load_image(path)[0].tolist() == want
    assert load_image(io.BytesIO(path.read_bytes()))[0].tolist() == want
    with Image.open(path) as im:  # a lazily opened PIL image, through the API
        assert as_rgb_array(im)[0].tolist() == want
        assert im.mode == "RGB" and im.info["transparency"] == key  # (the caller's image is left as it was)
    low = (0, 0, 255)  # a key Pillow compared with 8-bit pixels: (0, 0, 65535) matched, (0, 0, 255) did not
    path.write_bytes(_rgb48_png(np.array([[low, (0, 0, 65535)]], np.uint16), low))
    assert load_image(path)[0].tolist() == [[255, 255, 255], [0, 0, 255]]


def _adam7_sub_filtered(pixels: np.ndarray) -> bytes:
    """uint16 H×W×3 ``pixels`` as a 16-bit RGB PNG's IDAT data, Adam7-interlaced, each row with
    the Sub filter (which subtracts the sample 6 bytes before: the pixel size counts)."""
    out = b""
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)):
        for row in pixels[y0::dy, x0::dx]:
            raw = np.frombuffer(row.astype(">u2").tobytes(), np.uint8).astype(np.int32)
            out += b"\x01" + ((raw - np.concatenate([np.zeros(6, np.int32), raw[:-6]])) % 256).astype(np.uint8).tobytes()
    return out


def test_a_16_bit_rgb_png_transparent_colour_interlaced_and_filtered(tmp_path):
    key = (1000, 2000, 3000)
    pixels = np.zeros((9, 11, 3), np.uint16)
    pixels[:] = (40000, 50000, 60000)
    pixels[::2, ::3] = key
    pixels[1, 1], pixels[3, 4] = (1001, 2000, 3000), (1000, 2000, 3001)
    h, w, _ = pixels.shape
    path = tmp_path / "adam7.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 1))
                     + _chunk(b"tRNS", struct.pack(">HHH", *key)) + _chunk(b"IDAT", zlib.compress(_adam7_sub_filtered(pixels)))
                     + _chunk(b"IEND", b""))
    want = np.where((pixels == key).all(axis=2)[:, :, None], 255, pixels >> 8).astype(np.uint8)
    assert np.array_equal(load_image(path), want)


def test_a_16_bit_rgb_png_transparent_colour_keeps_its_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90° clockwise
    key = (1000, 2000, 3000)
    pixels = np.array([[key, (40000, 50000, 60000), (40000, 50000, 60000)]], np.uint16)
    path = tmp_path / "cam.png"
    path.write_bytes(_rgb48_png(pixels, key, exif.tobytes()[6:]))  # (eXIf holds no "Exif\0\0")
    arr = load_image(path)
    assert arr.shape == (3, 1, 3) and arr[0, 0].tolist() == [255, 255, 255] and arr[2, 0].tolist() == [156, 195, 234]


def _noise(h: int = 32, w: int = 48) -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_decoded_webp_is_lossless_and_jpeg_quality_95_without_subsampling(tmp_path):
    """Pillow's defaults (WebP lossy q80, JPEG q75 4:2:0) were a second, undocumented loss."""
    img = _noise()
    save_image(img, tmp_path / "a.webp")
    assert np.array_equal(load_image(tmp_path / "a.webp"), img)
    assert np.array_equal(load_image(io.BytesIO(image_bytes(img, "webp"))), img)
    reference = io.BytesIO()
    Image.fromarray(img).save(reference, "JPEG", quality=95, subsampling=0)
    save_image(img, tmp_path / "a.jpg")
    for data in ((tmp_path / "a.jpg").read_bytes(), image_bytes(img, "JPEG")):
        with Image.open(io.BytesIO(data)) as im, Image.open(reference) as ref:
            assert isinstance(im, JpegImagePlugin.JpegImageFile)
            assert JpegImagePlugin.get_sampling(im) == 0 and im.quantization == ref.quantization


def test_webp_wider_than_it_can_hold_is_an_image_error():
    """A side of 16384 (MAX_SIDE) was Pillow's bare ValueError "encoding error 5"."""
    for shape in ((1, WEBP_MAX_SIDE + 1, 3), (WEBP_MAX_SIDE + 1, 1, 3)):
        with pytest.raises(ImageError, match=r"as WEBP: the format holds at most 16383 pixels a side \(write it as \.png\)"):
            image_bytes(np.zeros(shape, np.uint8), "WEBP")
    assert image_bytes(np.zeros((1, WEBP_MAX_SIDE, 3), np.uint8), "webp")[:4] == b"RIFF"
    assert image_bytes(np.zeros((1, WEBP_MAX_SIDE + 1, 3), np.uint8), "PNG")[:4] == b"\x89PNG"


def test_save_image_refuses_a_webp_too_wide_and_writes_nothing(tmp_path):
    with pytest.raises(ImageError, match=r"cannot write a 16384x1 image as WEBP"):
        save_image(np.zeros((1, 16384, 3), np.uint8), tmp_path / "wide.webp")
    assert list(tmp_path.iterdir()) == []


def test_h_w_1_arrays_are_grey_and_the_channels_first_hint_fits():
    """H×W×1 was refused though H×W is taken, and (1, H, W) was told to transpose into H×W×1."""
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5)
    assert np.array_equal(as_rgb_array(grey[:, :, None]), as_rgb_array(grey))
    assert as_rgb_array(grey[:, :, None]).shape == (4, 5, 3)
    with pytest.raises(ImageError, match=r"got shape \(1, 64, 48\)$"):
        as_rgb_array(np.zeros((1, 64, 48), np.uint8))
    for c in (3, 4):
        with pytest.raises(ImageError, match=rf"a.transpose\(1, 2, 0\) is H×W×{c}\)$"):
            as_rgb_array(np.zeros((c, 64, 48), np.uint8))


@pytest.fixture
def stream(tmp_path, tiny_model_path) -> Path:
    """A .vlmc stream of a 32×48 image, written by the tiny model."""
    Image.fromarray(smooth_image(np.random.default_rng(0), 32, 48)).save(tmp_path / "src.png")
    out = tmp_path / "s.vlmc"
    assert main(["encode", str(tmp_path / "src.png"), "-o", str(out), "--no-psnr", "--quiet",
                 "--model", str(tiny_model_path)]) == 0
    return out


@pytest.fixture
def decodes(monkeypatch) -> list:
    """The streams Codec.decode is asked for, recorded (it still decodes)."""
    calls: list = []
    decode = Codec.decode

    def recorded(self, data, short_side=None):
        calls.append(len(data))
        return decode(self, data, short_side)

    monkeypatch.setattr(Codec, "decode", recorded)
    return calls


@pytest.mark.parametrize("name", ["a.npy", "noext", "a.gif"])
def test_decode_refuses_an_output_suffix_it_cannot_write_before_decoding(tmp_path, stream, tiny_model_path, decodes,
                                                                         capsys, name):
    capsys.readouterr()
    out = tmp_path / name
    assert main(["decode", str(stream), "-o", str(out), "--quiet", "--model", str(tiny_model_path)]) == 2
    with pytest.raises(ImageError) as saved:  # the message save_image gives
        save_image(np.zeros((2, 2, 3), np.uint8), out)
    assert capsys.readouterr().err == f"vlmcodec: error: {saved.value}\n"
    assert "unknown image file extension" in str(saved.value)
    assert decodes == [] and not out.exists()


def _announcing(data: bytes, width: int, height: int) -> bytes:
    """``data``'s stream with its header announcing ``width``×``height`` (its chunks unchanged:
    never decodable, refused or not from the header alone)."""
    h, z, y = container.unpack(data)
    return container.pack(container.Header(fingerprint=h.fingerprint, width=width, height=height,
                                           quality=h.quality, flags=h.flags), z, y)


def test_decode_refuses_a_webp_too_wide_from_the_header(tmp_path, stream, tiny_model_path, decodes, capsys):
    wide = tmp_path / "wide.vlmc"
    wide.write_bytes(_announcing(stream.read_bytes(), 16384, 1))
    model = ["--quiet", "--model", str(tiny_model_path)]
    capsys.readouterr()
    assert main(["decode", str(wide), "-o", str(tmp_path / "w.webp"), *model]) == 2
    err = capsys.readouterr().err
    assert "cannot write a 16384x1 image as WEBP" in err and "write it as .png" in err
    assert decodes == [] and not (tmp_path / "w.webp").exists()
    # at a consumer's scale it fits: the decode is tried (and fails on the stream's chunks)
    wide.write_bytes(_announcing(stream.read_bytes(), 16384, 64))
    assert main(["decode", str(wide), "-o", str(tmp_path / "w.webp"), "--short-side", "32", *model]) == 2
    assert "WEBP" not in capsys.readouterr().err and len(decodes) == 1
    assert main(["decode", str(stream), "-o", str(tmp_path / "s.webp"), *model]) == 0  # a small one is written
    assert load_image(tmp_path / "s.webp").shape == (32, 48, 3)


def test_named_inputs_missing_or_dangling_fail_alone_among_several(tmp_path, stream, tiny_model_path, capsys):
    """A dangling link or a missing name among several inputs stopped the whole run up front
    ("cannot read broken.png", nothing coded), while one found in a folder failed alone."""
    model = ["--quiet", "--model", str(tiny_model_path)]
    a = tmp_path / "src.png"
    (tmp_path / "broken.png").symlink_to("nowhere.png")
    missing = tmp_path / "missing.png"
    capsys.readouterr()
    assert main(["encode", str(a), str(tmp_path / "broken.png"), str(missing), "-o", str(tmp_path / "enc"),
                 "--no-psnr", *model]) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "missing.png" in err and "2 of 3 files failed" in err
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == ["src.vlmc"]
    assert main(["decode", str(stream), str(tmp_path / "gone.vlmc"), "-o", str(tmp_path / "dec"), *model]) == 2
    err = capsys.readouterr().err
    assert "gone.vlmc" in err and "1 of 2 files failed" in err
    assert sorted(p.name for p in (tmp_path / "dec").iterdir()) == ["s.png"]
    assert main(["info", str(stream), str(tmp_path / "gone.vlmc")]) == 2
    res = capsys.readouterr()
    assert "32" in res.out and "gone.vlmc" in res.err and "1 of 2 files failed" in res.err
    # a single named input still fails at once, before anything is coded
    assert main(["encode", str(tmp_path / "broken.png"), "-o", str(tmp_path / "one.vlmc"), *model]) == 2
    assert "cannot read" in capsys.readouterr().err and not (tmp_path / "one.vlmc").exists()
    assert main(["encode", str(missing), "-o", str(tmp_path / "one.vlmc"), *model]) == 2
    assert "input not found" in capsys.readouterr().err


class _Stdin:
    def __init__(self, data: bytes):
        self.buffer = io.BytesIO(data)


def test_an_animation_on_standard_input_is_named_as_standard_input(tmp_path, tiny_model_path, monkeypatch, capsys):
    """The warning said "<stream> holds 3 frames" where everything else says "<standard input>"."""
    frames = [Image.fromarray(np.full((32, 48, 3), c, np.uint8)) for c in (10, 200, 90)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    monkeypatch.setattr(sys, "stdin", _Stdin(buf.getvalue()))
    assert main(["encode", "-", "-o", str(tmp_path / "a.vlmc"), "--no-psnr", "--quiet",
                 "--model", str(tiny_model_path)]) == 0
    err = capsys.readouterr().err
    assert re.search(r"<standard input> holds 3 frames", err) and "<stream>" not in err

