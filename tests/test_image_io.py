"""Reading images: bit depths and orientation come in as a viewer would show them."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from vlmcodec.errors import ImageError, VlmcodecWarning
from vlmcodec.image_io import as_rgb_array, load_image, pil_to_rgb


def _write_png16(path, values: np.ndarray) -> None:
    """A 16-bit PNG (grayscale for H×W, RGB for H×W×3), written by hand: Pillow cannot save RGB;16."""
    h, w = values.shape[:2]
    color_type = 0 if values.ndim == 2 else 2
    rows = b"".join(b"\x00" + values[i].astype(">u2").tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_sixteen_bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 6 * 7).reshape(6, 7).astype(np.uint16)
    _write_png16(tmp_path / "g16.png", ramp)
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")  # what makes Pillow's convert("RGB") clip
    arr = load_image(tmp_path / "g16.png")
    assert arr.shape == (6, 7, 3) and arr.dtype == np.uint8
    expected = np.round(ramp.astype(np.float64) / 257).astype(np.uint8)
    np.testing.assert_array_equal(arr[..., 0], expected)
    np.testing.assert_array_equal(arr[..., 0], arr[..., 2])
    assert arr.min() == 0 and arr.max() == 255 and len(np.unique(arr)) > 30


def test_sixteen_bit_colour_png_keeps_its_scale(tmp_path):
    values = np.zeros((4, 5, 3), np.uint16)
    values[...] = [40000, 10000, 65535]
    _write_png16(tmp_path / "rgb16.png", values)
    np.testing.assert_allclose(load_image(tmp_path / "rgb16.png")[0, 0], [40000 / 257, 10000 / 257, 255], atol=1)


def test_mode_i_with_eight_bit_values_is_unchanged_and_the_guess_is_told():
    a = np.arange(0, 256, dtype=np.int32).reshape(16, 16)
    with pytest.warns(VlmcodecWarning, match=r"32-bit integer image with values in \[0, 255\].*0\.\.255 \(8-bit\)"):
        np.testing.assert_array_equal(pil_to_rgb(Image.fromarray(a, mode="I"))[..., 1], a)


def test_a_32_bit_tiff_says_which_scale_it_was_read_on(tmp_path):
    Image.fromarray(np.full((4, 4), 200, np.int32)).save(tmp_path / "dark.tif")
    Image.fromarray(np.full((4, 4), 40000, np.int32)).save(tmp_path / "bright.tif")
    with pytest.warns(VlmcodecWarning, match=r"8-bit"):
        assert (load_image(tmp_path / "dark.tif") == 200).all()
    with pytest.warns(VlmcodecWarning, match=r"16-bit"):
        assert (load_image(tmp_path / "bright.tif") == round(40000 / 257)).all()
    with warnings.catch_warnings():  # a 16-bit PGM (mode "I" too) has a declared scale: no warning
        warnings.simplefilter("error")
        Image.fromarray(np.full((4, 4), 200, np.uint16)).save(tmp_path / "dark.pgm")
        assert (load_image(tmp_path / "dark.pgm") == 1).all()


def test_out_of_range_integer_and_float_images_are_refused():
    with pytest.raises(ImageError, match="8- or 16-bit"):
        pil_to_rgb(Image.fromarray(np.full((3, 3), 70000, np.int32), mode="I"))
    with pytest.raises(ImageError, match="floating-point"):
        pil_to_rgb(Image.fromarray(np.full((3, 3), 300.0, np.float32), mode="F"))
    with pytest.warns(VlmcodecWarning, match="0..255"):
        ok = pil_to_rgb(Image.fromarray(np.full((3, 3), 100.0, np.float32), mode="F"))
    assert (ok == 100).all()


def test_exif_orientation_is_applied(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = 255  # left half white: stored landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(img).save(tmp_path / "cam.png", exif=exif.tobytes())
    arr = load_image(tmp_path / "cam.png")
    assert arr.shape == (40, 20, 3)  # shown portrait
    assert arr[:20].mean() > 200 and arr[20:].mean() < 50  # the white half is now on top
    Image.fromarray(img).save(tmp_path / "plain.png")
    assert load_image(tmp_path / "plain.png").shape == (20, 40, 3)


def test_non_uint8_arrays_get_a_fitting_hint():
    with pytest.raises(ImageError, match=r">> 8"):
        as_rgb_array(np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(ImageError, match=r"a \* 255"):
        as_rgb_array(np.zeros((4, 4, 3), np.float32))


def test_channels_first_arrays_and_tensors_get_a_fitting_hint():
    import torch

    planar = r"got shape \(3, 64, 48\) \(channels first\? a.transpose\(1, 2, 0\) is H×W×3\)"
    with pytest.raises(ImageError, match=planar):
        as_rgb_array(np.zeros((3, 64, 48), np.uint8))
    with pytest.raises(ImageError, match=r"got shape \(64, 48, 2\)$"):  # no guess where none fits
        as_rgb_array(np.zeros((64, 48, 2), np.uint8))
    with pytest.raises(ImageError, match=r"got Tensor \(a tensor: e.g. \(t.permute\(1, 2, 0\) \* 255\)"):
        as_rgb_array(torch.zeros(3, 8, 8))
    with pytest.raises(ImageError, match=r"got list$"):
        as_rgb_array([[0]])


def test_animated_image_reads_its_first_frame_with_a_warning(tmp_path):
    from vlmcodec.errors import VlmcodecWarning

    frames = [Image.new("RGB", (24, 16), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    with pytest.warns(VlmcodecWarning, match="2 frames; only the first"):
        img = load_image(tmp_path / "a.gif")
    assert img.shape == (16, 24, 3) and img[..., 0].min() > 200 and img[..., 1].max() < 50


def test_psnr_integer_path_equals_float64_across_slices(monkeypatch):
    """uint8 PSNR is summed exactly in integer slices; a slice size that does not divide the
    sample count must not drop or double any sample."""
    import vlmcodec.image_io as io

    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-9, 10, a.shape), 0, 255).astype(np.uint8)
    ref = 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2))
    monkeypatch.setattr(io, "_PSNR_SLICE", 1000)  # 5883 samples: five full slices and a partial one
    assert io.psnr(a, b) == pytest.approx(ref, abs=1e-12)
    assert io.psnr(a, b) == pytest.approx(io.psnr(a.astype(np.float32), b.astype(np.float32)), abs=1e-12)
    assert io.psnr(a, a) == float("inf")
    with pytest.raises(ValueError, match="different shapes"):
        io.psnr(a, b[:5])


def test_api_takes_a_file_path(tmp_path, tiny_model_path):
    from pathlib import Path

    from vlmcodec import Codec

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    codec = Codec(tiny_model_path)
    data = codec.encode(arr, 50)
    assert codec.encode(str(tmp_path / "a.png"), 50) == data == codec.encode(Path(tmp_path / "a.png"), 50)
    with pytest.raises(ImageError, match="image not found"):
        codec.encode(str(tmp_path / "missing.png"))
    with pytest.raises(ImageError, match="numpy array, PIL image or file path, got int"):
        codec.encode(3)


def test_max_pixels_refuses_from_the_header_before_decoding(tmp_path, monkeypatch, tiny_model_path):
    """A file over max_pixels is refused from its size alone: no pixel is decoded."""
    from vlmcodec import Codec

    Image.new("RGB", (300, 200), (10, 20, 30)).save(tmp_path / "a.png")
    from PIL import ImageFile

    decoded = []
    real_load = ImageFile.ImageFile.load  # what decodes a file's pixels (Image.Image.load is overridden)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1) or real_load(self))
    with pytest.raises(ImageError, match="300x200 is more than max_pixels=59999"):
        load_image(tmp_path / "a.png", max_pixels=59_999)
    assert decoded == []
    with pytest.raises(ImageError, match="max_pixels=1000"):
        Codec(tiny_model_path, max_pixels=1000).encode(str(tmp_path / "a.png"))
    assert decoded == []
    assert load_image(tmp_path / "a.png", max_pixels=60_000).shape == (200, 300, 3)
    assert decoded  # the spy does see a decode


@pytest.mark.parametrize("maxval, value, expected", [(65535, 200, 1), (4095, 100, 6), (4095, 4095, 255),
                                                     (255, 200, 200), (65535, 65535, 255)])
def test_pgm_is_scaled_by_its_maxval_even_when_dark(tmp_path, maxval, value, expected):
    """A 16-bit (or 12-bit) PGM whose pixels all happen to be below 256 is still a dark 16-bit
    image, not an 8-bit one (Pillow opens it as mode "I" on a 0..65535 scale)."""
    path = tmp_path / "g.pgm"
    width, dtype = (1, ">u1") if maxval < 256 else (2, ">u2")
    pixels = np.full((3, 4), value, dtype).tobytes()
    assert len(pixels) == 12 * width
    path.write_bytes(f"P5\n4 3\n{maxval}\n".encode() + pixels)
    img = load_image(path)
    assert img.shape == (3, 4, 3) and (img == expected).all()


def test_transparent_pixels_are_shown_over_white(tmp_path):
    """RGBA, LA and palette-with-transparency files: transparent pixels come out white (not the
    colour they store), half-transparent ones blended, opaque ones exact; RGBA arrays alike."""
    from vlmcodec.image_io import composite_alpha

    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = [[[10, 20, 30], [200, 100, 0], [0, 0, 0]], [[40, 50, 60], [7, 7, 7], [255, 0, 0]]]
    rgba[..., 3] = [[255, 0, 128], [255, 255, 0]]
    expect = composite_alpha(rgba)
    assert expect[0, 0].tolist() == [10, 20, 30] and expect[0, 1].tolist() == [255, 255, 255]
    assert expect[0, 2].tolist() == [127, 127, 127]  # black at alpha 128 over white: 255·127/255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(load_image(tmp_path / "a.png"), expect)
    assert np.array_equal(as_rgb_array(rgba), expect)
    assert np.array_equal(pil_to_rgb(Image.fromarray(rgba, "RGBA")), expect)

    la = Image.fromarray(np.stack([np.full((2, 2), 30, np.uint8), np.array([[255, 0], [0, 255]], np.uint8)], 2), "LA")
    la.save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png")[..., 0].tolist() == [[30, 255], [255, 30]]

    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 0, 90, 90, 90] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 0  # palette entry 0 (black) is transparent
    p.save(tmp_path / "p.png", transparency=0)
    assert load_image(tmp_path / "p.png")[0].tolist() == [[255, 255, 255], [90, 90, 90]]

    opaque = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    Image.fromarray(opaque).convert("RGBA").save(tmp_path / "o.png")
    assert np.array_equal(load_image(tmp_path / "o.png"), opaque)  # an opaque alpha changes nothing


def test_compositing_rounds_to_the_nearest_value():
    """Each channel over white is round((c·a + 255·(255 − a)) / 255), exactly, for every value
    (never floored: colour 2 at alpha 64 is 191.50..., so 192)."""
    from vlmcodec.image_io import composite_alpha

    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    rgba[0, 0] = [2, 2, 2, 64]
    c, a = rgba[..., :3].astype(np.float64), rgba[..., 3:].astype(np.float64)
    expect = np.round((c * a + 255 * (255 - a)) / 255).astype(np.uint8)  # never a tie: 255 is odd
    assert np.array_equal(composite_alpha(rgba), expect)
    assert composite_alpha(rgba)[0, 0].tolist() == [192, 192, 192]
    c, a = np.meshgrid(np.arange(256), np.arange(256))  # every colour at every alpha, over grey 100
    every = np.stack([c, c, c, a], axis=2).astype(np.uint8)
    grey = np.round((c * a + 100 * (255 - a)) / 255).astype(np.uint8)
    assert np.array_equal(composite_alpha(every, 100), np.repeat(grey[:, :, None], 3, axis=2))


def test_image_io_arguments_of_the_wrong_kind_are_vlmcodec_errors(tmp_path):
    """(Pillow's AttributeErrors and TypeErrors from inside, and a missing folder named by the
    temporary file's name)"""
    from vlmcodec.errors import ConfigError
    from vlmcodec.image_io import image_bytes, save_image

    img = np.zeros((8, 8, 3), np.uint8)
    for arr in (None, [1], 2.5, np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 5), np.uint8)):
        with pytest.raises(ImageError, match="expected a uint8 H×W×3 \\(or H×W\\)"):
            save_image(arr, tmp_path / "a.png")
    for path in (None, 2.5, [1]):
        with pytest.raises(ImageError, match="save_image: the path must be a str or os.PathLike"):
            save_image(img, path)
    for level in ([1], 2.5, True, 10, "1"):
        with pytest.raises(ConfigError, match="png_level must be 0..9"):
            save_image(img, tmp_path / "a.png", png_level=level)
    for fmt in (None, 2.5, "NOPE", "ICO", "gif", "MPO"):  # (an ICO shrank to 256 px, a GIF quantised)
        with pytest.raises(ConfigError, match="unknown image format"):
            image_bytes(img, fmt)
    assert image_bytes(img, "tiff")[:2] in (b"II", b"MM") and image_bytes(img, "webp")[:4] == b"RIFF"
    for source in (None, 2.5, [1], True):
        with pytest.raises(ImageError, match="expected an image file's path or a binary file object"):
            load_image(source)
    for limit in ([1], "10", 0, float("nan"), True):
        with pytest.raises(ConfigError, match="max_pixels must be a number of pixels"):
            load_image(tmp_path / "a.png", max_pixels=limit)
    with pytest.raises(FileNotFoundError, match=r"cannot write .*nowhere/a.png: No such file"):
        save_image(img, tmp_path / "nowhere" / "a.png")
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_file_replaced_keeps_its_permissions_and_a_long_name_is_written(tmp_path, capsys):
    """write_whole (every output: images, streams, models) made a 0600 file 0644 when it replaced
    it; a name of ~225+ characters failed (the temporary name, longer, passed NAME_MAX) and the
    error named the temporary file."""
    import os

    from vlmcodec.cli import main
    from vlmcodec.files import write_whole
    from vlmcodec.image_io import save_image

    img = np.zeros((8, 8, 3), np.uint8)
    private = tmp_path / "private.png"
    save_image(img, private)
    private.chmod(0o600)
    save_image(img + 1, private)
    assert private.stat().st_mode & 0o777 == 0o600 and load_image(private)[0, 0, 0] == 1
    stream = tmp_path / "s.vlmc"
    stream.write_bytes(b"")
    stream.chmod(0o640)
    assert main(["encode", str(private), "-o", str(stream), "--no-psnr"]) == 0
    assert stream.stat().st_mode & 0o777 == 0o640 and stream.read_bytes()[:4] == b"VLMC"
    os.umask(old := os.umask(0o022))  # a new file: the umask's permissions, as a plain open's
    write_whole(tmp_path / "new.bin", b"x")
    assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o666 & ~old
    long = tmp_path / ("n" * 240 + ".png")
    save_image(img, long)
    assert load_image(long).shape == (8, 8, 3)
    with pytest.raises(OSError, match=r"cannot write .*nowhere/"):
        write_whole(tmp_path / "nowhere" / ("m" * 250), b"x")
    assert not list(tmp_path.glob(".*.tmp"))
