"""Encoding images in C (vlmc_decoder_encode_image): the pre-editor, g_a and h_a run in the C
library in float32, from a decoder-model file of version 3. The latents must be the torch
backend's within float rounding, the streams valid and the Python encoder's but for the rare
symbol a rounding flips, the same whatever the thread count; bad input is refused clearly."""

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlmcodec import Codec
from vlmcodec.errors import BudgetError, ConfigError, ImageError, VlmcodecError
from vlmcodec.export.c_decoder import CDecoderError, CStreamDecoder, export_c_decoder, space_to_depth
from vlmcodec.image_io import load_image
from vlmcodec.models.checkpoint import load_model, save_model
from vlmcodec.models.hyperprior import MeanScaleHyperprior, ModelConfig

from conftest import build_cpp_program, smooth_image

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "assets" / "samples" / "kodim23.png"


@pytest.mark.parametrize("kernel,stride,padding", [(5, 2, 2), (4, 4, 0), (16, 16, 0), (3, 1, 1)])
def test_space_to_depth_is_the_strided_convolution(kernel, stride, padding):
    torch.manual_seed(kernel)
    w, x = torch.randn(7, 3, kernel, kernel), torch.randn(2, 3, 64, 96)
    w2, p2 = space_to_depth(w, stride, padding)
    assert w2.shape == (7, 3 * stride * stride, -(-kernel // stride), -(-kernel // stride))
    torch.testing.assert_close(F.conv2d(F.pixel_unshuffle(x, stride), w2, padding=p2),
                               F.conv2d(x, w, stride=stride, padding=padding), atol=1e-4, rtol=1e-5)
    with pytest.raises(ConfigError, match="does not unshuffle"):
        space_to_depth(w, 2, 1)


def _encoder(build, loaded, tmp_path_factory) -> CStreamDecoder:
    path = export_c_decoder(loaded, tmp_path_factory.mktemp("encoder_model"))
    return CStreamDecoder(build / "libvlmc_decoder.so", path)


@pytest.fixture(scope="module")
def default_encoder(c_decoder_build, tmp_path_factory):
    from vlmcodec.codec import default_model_path

    loaded = load_model(default_model_path())
    return Codec(loaded), _encoder(c_decoder_build, loaded, tmp_path_factory)


@pytest.fixture(scope="module")
def windowed_encoder(c_decoder_build, tmp_path_factory):
    """A small random model with a random pre-editor (its last layer no longer zero) that attends
    in windows of 2 tokens above a 2×2 grid: every branch of the pre-editor, at small sizes."""
    torch.manual_seed(3)
    net = MeanScaleHyperprior(ModelConfig(N=16, M=24, num_levels=3, lmbdas=(0.001, 0.004, 0.016), pre_editor=True))
    with torch.no_grad():
        net.g_a[-1].weight.mul_(40.0)
        net.pre_editor.out.weight.normal_(0.0, 0.05)
        net.pre_editor.out.bias.normal_(0.0, 0.05)
    path = tmp_path_factory.mktemp("windowed") / "windowed.safetensors"
    save_model(net, path)
    loaded = load_model(path)
    pre = loaded.model.pre_editor
    pre.attention_window, pre.global_attention_tokens = 2, None
    return Codec(loaded), _encoder(c_decoder_build, loaded, tmp_path_factory), loaded


def _torch_latents(codec: Codec, image: np.ndarray, quality: float, short_side: int = 0) -> tuple[np.ndarray, ...]:
    prep = codec.prepare(image, quality, short_side)
    y, z = codec.analyse([prep.pixels], [prep.quality])
    return y.numpy().ravel(), z.numpy().ravel()


def _assert_latents_close(codec, encoder, image, quality, short_side=0, **kw):
    y_t, z_t = _torch_latents(codec, image, quality, short_side)
    y_c, z_c = encoder.analyse_image(image, quality, short_side=short_side, **kw)
    scale = max(1.0, float(np.abs(y_t).max()))
    np.testing.assert_allclose(y_c, y_t, rtol=0, atol=2e-5 * scale)
    np.testing.assert_allclose(z_c, z_t, rtol=0, atol=2e-5 * max(1.0, float(np.abs(z_t).max())))


def test_the_latents_are_the_torch_encoders(default_encoder, windowed_encoder, rng):
    """y = g_a(pre-edit(x)) · gain and z = h_a(y) within float rounding of the torch backend's:
    the default model on a Kodak image at full size and at a consumer's 256 px, and a random
    model whose pre-editor attends in shifted windows, at odd sizes (edge padding)."""
    codec, enc = default_encoder
    image = load_image(SAMPLE)
    for side in (0, 256):
        _assert_latents_close(codec, enc, image, 50, side, threads=2)
    codec, enc, _ = windowed_encoder
    for h, w in ((128, 192), (200, 130), (64, 320)):
        _assert_latents_close(codec, enc, smooth_image(rng, h, w), 37.5, threads=2)


def test_without_the_pre_editor(windowed_encoder, rng):
    """VLMC_ENC_NO_PRE_EDIT: g_a reads the image itself, as Codec(pre_edit=False); the stream's
    pre-edited bit is cleared."""
    _, enc, loaded = windowed_encoder
    plain = Codec(loaded, pre_edit=False)
    image = smooth_image(rng, 128, 192)
    _assert_latents_close(plain, enc, image, 60, pre_edit=False)
    data = enc.encode_image(image, 60, pre_edit=False)
    assert enc.info(data)["flags"] & 1 == 0 and enc.info(enc.encode_image(image, 60))["flags"] & 1 == 1
    # and the pre-editor does change the latents of this model (the comparison above is not vacuous)
    assert np.abs(enc.analyse_image(image, 60)[0] - enc.analyse_image(image, 60, pre_edit=False)[0]).max() > 1e-2


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def test_the_streams_are_the_python_encoders_but_for_rare_roundings(default_encoder):
    """The default model on a Kodak image, full size and 256 px, three qualities: each C stream is
    valid (the Python decoder reads it), within 0.5 % of the Python encoder's size, codes the same
    symbols but for at most 0.1 % of them, and decodes to the same PSNR within 0.02 dB."""
    codec, enc = default_encoder
    image = load_image(SAMPLE)
    for side in (0, 256):
        for q in (10, 50, 90):
            ours, theirs = enc.encode_image(image, q, short_side=side, threads=2), codec.encode(image, q, short_side=side)
            assert enc.info(ours) == enc.info(theirs)
            assert abs(len(ours) - len(theirs)) <= 0.005 * len(theirs)
            raw_c, raw_p = enc.latents(ours, raw=True), enc.latents(theirs, raw=True)
            assert np.mean(raw_c != raw_p) <= 1e-3
            # cross-decode (DESIGN.md, Determinism): the Python decoder reads the C encoder's symbols
            np.testing.assert_array_equal(codec.entropy_decode(ours).y_hat.numpy().reshape(raw_c.shape), raw_c)
            decoded = codec.decode(ours)
            assert decoded.shape == image.shape
            assert abs(_psnr(decoded, image) - _psnr(codec.decode(theirs), image)) <= 0.02


def test_the_thread_count_does_not_change_the_stream(windowed_encoder, default_encoder, rng):
    """The same stream on 1, 2 and 3 threads. (For the default model's 200 × 300 crop the token grid
    is 16 × 20: on one thread its 1×1 convolutions run in rows of four grid rows joined, on three in
    the grid's own rows — encoder.cpp's rows_to_join — so this also checks that joining rows changes
    no bit.)"""
    _, enc, _ = windowed_encoder
    image = smooth_image(rng, 200, 130)
    streams = {t: enc.encode_image(image, 45, threads=t) for t in (1, 2, 3)}
    assert streams[1] == streams[2] == streams[3]
    _, enc = default_encoder
    small = load_image(SAMPLE)[:200, :300]
    assert enc.encode_image(small, 45, threads=1) == enc.encode_image(small, 45, threads=3)


def test_rate_control_on_an_image(default_encoder):
    """encode_image_within: the stream fits, it is encode_image's at the quality found, and that
    quality is the Python search's within the streams' rounding differences."""
    codec, enc = default_encoder
    image = load_image(SAMPLE)
    for budget, side in ((20_000, 0), (4_000, 256)):
        data, q = enc.encode_image_within(image, budget, short_side=side)
        assert len(data) <= budget and data == enc.encode_image(image, q, short_side=side)
        theirs = codec.encode_to_size(image, budget, short_side=side)
        assert abs(q - codec_quality(enc, theirs)) <= 1.0
    data, q = enc.encode_image_within(image, 50_000, min_quality=10, max_quality=30)
    assert q == 30.0 and data == enc.encode_image(image, 30)
    with pytest.raises(CDecoderError) as e:
        enc.encode_image_within(image, 200)
    assert e.value.code == -9 and "over the budget of 200" in e.value.message
    # the hint fits the case, as the Python search's (it always named a smaller coded size)
    assert "a smaller coded size (a consumer's scale) makes smaller streams" in e.value.message
    for args, kw, hint in (((image, 200), {"min_quality": 40}, "a min_quality below 40 makes smaller streams"),
                           ((np.zeros((1, 1, 3), np.uint8), 10), {}, "this model makes no smaller stream")):
        with pytest.raises(CDecoderError) as e:
            enc.encode_image_within(*args, **kw)
        assert e.value.code == -9 and hint in e.value.message, e.value.message
        with pytest.raises(BudgetError, match=hint):  # the Python search says the same
            codec.encode_to_size(*args, **kw)


def codec_quality(enc: CStreamDecoder, data: bytes) -> float:
    return enc.info(data)["quality"]


def test_bad_input_is_refused_with_a_reason(default_encoder):
    _, enc = default_encoder
    image = np.zeros((64, 96, 3), np.uint8)
    cases = [
        (dict(quality=100.5), -1, "quality"),
        (dict(quality=float("nan")), -1, "quality"),
        (dict(short_side=8), -1, "short_side"),
        (dict(threads=-1), -1, "num_threads"),
    ]
    for kw, code, word in cases:
        args = {"quality": 50, **kw}
        with pytest.raises(CDecoderError) as e:
            enc.encode_image(image, args.pop("quality"), **args)
        assert e.value.code == code and word in e.value.message
    with pytest.raises(CDecoderError) as e:
        enc.encode_image(np.zeros((0, 96, 3), np.uint8), 50)
    assert e.value.code == -1 and "image size" in e.value.message
    assert isinstance(e.value, VlmcodecError)  # (a plain Exception: outside the package's errors)
    # not cast: a float image in [0, 1] was coded near black, int64 300 as 44; None a bare TypeError
    for bad in (np.full((64, 96, 3), 0.5, np.float32), np.full((64, 96, 3), 300, np.int64), None,
                np.zeros((64, 96), np.uint8)):
        for call in (enc.encode_image, enc.analyse_image):
            with pytest.raises(ImageError, match="expected an H×W×3 uint8 array"):
                call(bad, 50)
        with pytest.raises(ImageError, match="expected an H×W×3 uint8 array"):
            enc.encode_image_within(bad, 1000)
    # a budget ctypes would wrap modulo 2^64 (-1 was any size, 2^64 + 300 was 300); a huge one fits all
    for budget in (-1, 0, 10.5, None):
        with pytest.raises(ConfigError, match="max_bytes must be"):
            enc.encode_image_within(image, budget)
    assert enc.encode_image_within(image, 2**64 + 300)[1] == 100.0
    ct = enc._ct  # (the library's own check of a zero budget, past the wrapper's)
    buf, size, q = ct.POINTER(ct.c_uint8)(), ct.c_size_t(), ct.c_double()
    assert enc._lib.vlmc_decoder_encode_image_within(enc._handle, image.ctypes.data, 96, 64, 0, 0, 0.0, 100.0, 0, 0,
                                                     ct.byref(buf), ct.byref(size), ct.byref(q)) == -1
    assert b"max_bytes must be at least 1" in enc._lib.vlmc_decoder_last_error()
    for setter in (enc.set_max_pixels, enc.set_band_pixels):  # (ctypes wrapped -1 to 2^64 - 1)
        with pytest.raises(ConfigError, match="must be a whole number"):
            setter(-1)
    # a short side ctypes would wrap modulo 2^32 (-1 was the full size, 2^32 + 32 was 32)
    for side in (-1, 2**32 + 32, 2.5, None):
        with pytest.raises(ConfigError, match="short_side must be"):
            enc.encode_image(image, 50, short_side=side)
        with pytest.raises(ConfigError, match="short_side must be"):
            enc.encode_pixels(image, 50, short_side=side)
    enc.set_max_pixels(64 * 95)
    try:
        with pytest.raises(CDecoderError) as e:
            enc.encode_image(image, 50)
        assert e.value.code == -7 and "max_pixels" in e.value.message
    finally:
        enc.set_max_pixels(64_000_000)
    with pytest.raises(CDecoderError) as e:
        enc.encode_image_within(image, 1000, min_quality=60, max_quality=40)
    assert e.value.code == -1 and "min_quality" in e.value.message
    ny, nz = enc.latent_size(96, 64)
    lib = enc._lib
    y, z = np.empty(ny, np.float32), np.empty(nz, np.float32)
    rc = lib.vlmc_decoder_analyse_image(enc._handle, image.ctypes.data, 96, 64, 50.0, 0, 0, 0, y.ctypes.data, ny - 1,
                                        z.ctypes.data, nz)
    assert rc == -1 and b"y holds" in lib.vlmc_decoder_last_error()
    rc = lib.vlmc_decoder_analyse_image(enc._handle, image.ctypes.data, 96, 64, 50.0, 0, 4, 0, y.ctypes.data, ny,
                                        z.ctypes.data, nz)
    assert rc == -1 and b"unknown flags" in lib.vlmc_decoder_last_error()
    rc = lib.vlmc_decoder_encode_image(enc._handle, None, 96, 64, 50.0, 0, 0, 0, enc._ct.byref(enc._ct.POINTER(
        enc._ct.c_uint8)()), enc._ct.byref(enc._ct.c_size_t()))
    assert rc == -1 and b"rgb is null" in lib.vlmc_decoder_last_error()


# a C++ program encoding a PPM through vlmc_decoder.hpp, rate control included
_CPP = r"""
#include <vlmc_decoder.hpp>
#include <cstdio>
#include <fstream>
#include <iterator>
int main(int, char **argv) {
    std::ifstream in(argv[2], std::ios::binary);
    std::vector<uint8_t> raw((std::istreambuf_iterator<char>(in)), {});
    vlmc::Image im{uint32_t(std::atoi(argv[3])), uint32_t(std::atoi(argv[4])), raw};
    const vlmc::Decoder dec(argv[1]);
    if (!dec.can_encode()) return 3;
    const std::vector<uint8_t> s = dec.encode_image(im, 40.0);
    std::ofstream(argv[5], std::ios::binary).write(reinterpret_cast<const char *>(s.data()), s.size());
    const auto fit = dec.encode_image_within(im, s.size(), 0, 100);
    std::printf("%zu %.2f\n", fit.bytes.size(), fit.quality);
    // the same image as BGRA rows stored bottom-up (a Windows DIB), encoded in place
    const uint32_t w = im.width, h = im.height;
    std::vector<uint8_t> dib(size_t(w) * h * 4);
    for (uint32_t y = 0; y < h; ++y)
        for (uint32_t x = 0; x < w; ++x)
            for (int c = 0; c < 3; ++c) dib[(size_t(h - 1 - y) * w + x) * 4 + 2 - c] = im.rgb[(size_t(y) * w + x) * 3 + c];
    const vlmc_pixels px{dib.data() + size_t(h - 1) * w * 4, w, h, -ptrdiff_t(w) * 4, VLMC_PIXELS_BGRA8};
    std::printf("%d %d\n", int(dec.encode_pixels(px, 40.0) == s), int(dec.cached_bytes() > 0));
    try {
        im.rgb.pop_back();
        dec.encode_image(im, 40.0);
    } catch (const vlmc::DecodeError &e) {
        std::printf("%d\n", e.code());
    }
}
"""


def test_the_tool_and_a_cpp_program_encode_as_the_library_does(c_decoder_build, default_encoder, tmp_path):
    _, enc = default_encoder
    from vlmcodec.codec import default_model_path

    image = load_image(SAMPLE)[:256, :320]
    model = export_c_decoder(load_model(default_model_path()), tmp_path)
    Image.fromarray(image).save(tmp_path / "in.ppm")
    tool = c_decoder_build / "vlmc_encode"
    run = subprocess.run([tool, model, tmp_path / "in.ppm", tmp_path / "out.vlmc", "--quality", "30", "--threads", "2"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out.vlmc").read_bytes() == enc.encode_image(image, 30)
    assert '"quality": 30.00' in run.stdout
    from vlmcodec.checks import DEFAULT_QUALITY  # no --quality: the library's and vlmcodec encode's default (was 50)

    run = subprocess.run([tool, model, tmp_path / "in.ppm", tmp_path / "default.vlmc"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and f'"quality": {DEFAULT_QUALITY:.2f}' in run.stdout, run.stderr
    assert (tmp_path / "default.vlmc").read_bytes() == enc.encode_image(image, DEFAULT_QUALITY)
    # from a pipe (/dev/stdin): the input is opened once (its magic was read by a first open, so a
    # pipe lost its first two bytes and was refused as not a PPM)
    run = subprocess.run([tool, model, "/dev/stdin", tmp_path / "piped.vlmc"], input=(tmp_path / "in.ppm").read_bytes(),
                         capture_output=True, timeout=120)
    assert run.returncode == 0 and (tmp_path / "piped.vlmc").read_bytes() == (tmp_path / "default.vlmc").read_bytes(), run.stderr
    run = subprocess.run([tool, model, tmp_path / "in.ppm", tmp_path / "fit.vlmc", "--max-bytes", "3000",
                          "--short-side", "128", "--no-pre-edit"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    data, q = enc.encode_image_within(image, 3000, short_side=128, pre_edit=False)
    assert (tmp_path / "fit.vlmc").read_bytes() == data and f'"quality": {q:.2f}' in run.stdout
    for huge in ("9223372036854775807", "99999999999999999999999"):  # a budget every stream fits (refused above 2^40)
        run = subprocess.run([tool, model, tmp_path / "in.ppm", tmp_path / "huge.vlmc", "--max-bytes", huge,
                              "--short-side", "128"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and '"quality": 100.00' in run.stdout, run.stderr
    (tmp_path / "zero.pgm").write_bytes(b"P5 4 4 0\n" + bytes(16))
    (tmp_path / "short.ppm").write_bytes(b"P6\n# a comment\n4 4\n255\n" + bytes(40))
    bad = [[tmp_path / "in.ppm", tmp_path / "o.vlmc", "--quality", "101"],
           [tmp_path / "in.ppm", tmp_path / "o.vlmc", "--quality", "5", "--max-bytes", "100"],
           [tmp_path / "in.ppm", tmp_path / "o.vlmc", "--short-side", "8"],
           [tmp_path / "in.ppm", tmp_path / "o.vlmc", "--max-bytes", "10"],
           [tmp_path / "in.ppm", tmp_path / "o.vlmc", "--max-bytes", "0"],
           [tmp_path / "in.ppm", tmp_path / "o.vlmc", "--max-bytes", "12x"],
           [tmp_path / "zero.pgm", tmp_path / "o.vlmc"], [tmp_path / "short.ppm", tmp_path / "o.vlmc"],
           [tmp_path / "missing.ppm", tmp_path / "o.vlmc"], [tmp_path / "in.ppm"], [tmp_path / "in.ppm", "a", "--frob"]]
    for args in bad:
        run = subprocess.run([tool, model, *args], capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and run.stderr.startswith("vlmc_encode: error: "), (args, run.stderr)
    # the rate control's bounds without --max-bytes: refused (they were ignored silently)
    for bound in ("--min-quality", "--max-quality"):
        run = subprocess.run([tool, model, tmp_path / "in.ppm", tmp_path / "o.vlmc", bound, "70"], capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 2 and run.stderr == ("vlmc_encode: error: --min-quality and --max-quality bound "
                                                      "--max-bytes's search: give --max-bytes\n"), run.stderr
    build_cpp_program(_CPP, c_decoder_build, tmp_path / "encode")
    (tmp_path / "in.rgb").write_bytes(image.tobytes())
    run = subprocess.run([tmp_path / "encode", model, tmp_path / "in.rgb", "320", "256", tmp_path / "cpp.vlmc"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "cpp.vlmc").read_bytes() == enc.encode_image(image, 40)
    size, quality, same, kept, code = run.stdout.split()
    data, q = enc.encode_image_within(image, len(enc.encode_image(image, 40)))
    assert (int(size), float(quality), same, kept, code) == (len(data), q, "1", "1", "-1")


def test_bands_give_the_same_stream(default_encoder, windowed_encoder, rng):
    """g_a and the pre-editor's full-resolution head in bands (vlmc_decoder_set_band_pixels): the
    same latents and stream, bit for bit, as one pass; one latent row per band is the extreme."""
    for enc, image in ((default_encoder[1], load_image(SAMPLE)[:300, :420]), (windowed_encoder[1], smooth_image(rng, 200, 130))):
        enc.set_band_pixels(0)
        try:
            whole = enc.encode_image(image, 55, threads=2)
            y_whole, _ = enc.analyse_image(image, 55)
            for band in (1, 64 * 64, 100_000):
                enc.set_band_pixels(band)
                assert enc.encode_image(image, 55, threads=2) == whole
                np.testing.assert_array_equal(enc.analyse_image(image, 55)[0], y_whole)
        finally:
            enc.set_band_pixels(1 << 20)


def test_kept_buffers_give_the_same_streams(default_encoder, windowed_encoder, rng):
    """Working buffers kept between calls (vlmc_decoder_set_cache_bytes) come back holding an
    earlier call's values: images of three sizes encoded in turn, on 1 and 2 threads, with the
    cache give the streams they give with none; it holds bytes after a call, none once set to 0."""
    sample = load_image(SAMPLE)
    for enc, images in ((default_encoder[1], [sample[:300, :420], sample[:180, :250], sample]),
                        (windowed_encoder[1], [smooth_image(rng, 200, 130), smooth_image(rng, 96, 160)])):
        enc.set_cache_bytes(0)
        try:
            want = [enc.encode_image(image, 45, threads=2) for image in images]
            assert enc.cached_bytes() == 0
            enc.set_cache_bytes(1 << 30)
            for threads in (2, 1, 2):
                for image, stream in zip(images[::-1], want[::-1]):
                    assert enc.encode_image(image, 45, threads=threads) == stream, (image.shape, threads)
            assert enc.cached_bytes() > 0
            enc.set_cache_bytes(0)
            assert enc.cached_bytes() == 0
        finally:
            enc.set_cache_bytes(128 << 20)


def test_pixels_in_other_layouts_give_the_rgb_stream(default_encoder):
    """vlmc_decoder_encode_pixels reads BGR, RGBA and BGRA pixels, padded rows, a crop of a larger
    frame and bottom-up rows (a negative stride) in place: the stream is encode_image's of the same
    image as tight RGB, at full size, at a consumer's scale and under rate control."""
    enc = default_encoder[1]
    frame = load_image(SAMPLE)[:190, :270]
    rgb = np.ascontiguousarray(frame[10:150, 20:250])  # the image every layout below holds
    want = {side: enc.encode_image(rgb, 45, short_side=side, threads=2) for side in (0, 64)}
    alpha = np.full(rgb.shape[:2] + (1,), 7, np.uint8)
    padded = np.zeros((rgb.shape[0], rgb.shape[1] + 13, 4), np.uint8)  # BGRA rows of 13 pixels more
    padded[:, : rgb.shape[1]] = np.concatenate([rgb[..., ::-1], alpha], axis=2)
    upside_down = np.ascontiguousarray(rgb[::-1, :, ::-1])[::-1]  # BGR rows bottom-up in memory
    cases = {"rgb": [rgb, frame[10:150, 20:250]],  # tight, and a crop of the frame (row stride 270 · 3)
             "bgr": [np.ascontiguousarray(rgb[..., ::-1]), upside_down],
             "rgba": [np.concatenate([rgb, alpha], axis=2)],
             "bgra": [padded[:, : rgb.shape[1]]]}
    assert upside_down.strides[0] < 0 and cases["bgra"][0].strides[0] == (rgb.shape[1] + 13) * 4
    for layout, arrays in cases.items():
        for pixels in arrays:
            for side, stream in want.items():
                assert enc.encode_pixels(pixels, 45, layout=layout, short_side=side, threads=2) == stream, (
                    layout, pixels.strides, side)
    budget = len(want[0]) - 1
    assert (enc.encode_pixels_within(cases["bgra"][0], budget, layout="bgra", threads=2)
            == enc.encode_image_within(rgb, budget, threads=2))


def test_bad_pixel_layouts_are_refused(default_encoder):
    """A null data pointer, an unknown format and a row stride shorter than a row are refused with
    a reason (called through ctypes directly, past the Python wrapper's checks)."""
    enc = default_encoder[1]
    rgb = np.zeros((20, 30, 3), np.uint8)
    ct = enc._ct
    buf, size = ct.POINTER(ct.c_uint8)(), ct.c_size_t()

    def call(data, width, height, stride, fmt):
        desc = enc._Pixels(data, width, height, stride, fmt)
        return enc._lib.vlmc_decoder_encode_pixels(enc._handle, ct.byref(desc), 50.0, 0, 0, 1, ct.byref(buf),
                                                   ct.byref(size))

    for args, message in (((None, 30, 20, 0, 0), "pixels->data is null"),
                          ((rgb.ctypes.data, 30, 20, 0, 4), "unknown pixel format 4"),
                          ((rgb.ctypes.data, 30, 20, 89, 0), "row_stride 89 is shorter than a row (90 bytes)"),
                          ((rgb.ctypes.data, 30, 20, -89, 0), "row_stride -89 is shorter than a row (90 bytes)"),
                          ((rgb.ctypes.data, 0, 20, 0, 0), "image size 0x20 outside 1..16384")):
        with pytest.raises(CDecoderError, match=re.escape(message)) as e:
            enc._check(call(*args))
        assert e.value.code == -1, args
    with pytest.raises(CDecoderError, match="pixels or pixels->data is null"):
        enc._check(enc._lib.vlmc_decoder_encode_pixels(enc._handle, None, 50.0, 0, 0, 1, ct.byref(buf), ct.byref(size)))
    with pytest.raises(ValueError, match="strides"):
        enc.encode_pixels(rgb[:, ::2], 50)
    with pytest.raises(ValueError, match="H×W×4 uint8"):
        enc.encode_pixels(rgb, 50, layout="bgra")
    with pytest.raises(ValueError, match="layout must be one of"):
        enc.encode_pixels(rgb, 50, layout="yuv")


def test_the_avx512_version_encodes_and_decodes_as_the_avx2_one(c_decoder_build, tmp_path):
    """The convolutions' AVX-512 version (wider pixel blocks, each pixel's taps summed in the same
    order) gives the AVX2 version's streams and pixels bit for bit: the tools run with and without
    VLMC_NO_AVX512 on a sample image, at full size, at a consumer's scale and with an odd width."""
    import os

    from vlmcodec.export.c_decoder import cpu_vector_isa

    if cpu_vector_isa() != "avx512":
        pytest.skip("not available: this CPU has no AVX-512 (F/VL/BW/DQ), so only the AVX2 version runs here")
    from vlmcodec.codec import default_model_path

    model = export_c_decoder(load_model(default_model_path()), tmp_path)
    image = load_image(SAMPLE)
    Image.fromarray(image[:, :762]).save(tmp_path / "in.ppm")
    outputs = {}
    for arm, extra in (("avx512", {"VLMC_NO_AVX512": ""}), ("avx2", {"VLMC_NO_AVX512": "1"})):
        env = {**os.environ, **extra}
        for name, args in (("full", ["--quality", "35"]), ("small", ["--quality", "80", "--short-side", "200"])):
            stream = tmp_path / f"{arm}_{name}.vlmc"
            run = subprocess.run([c_decoder_build / "vlmc_encode", model, tmp_path / "in.ppm", stream, *args,
                                  "--threads", "2"], capture_output=True, text=True, timeout=300, env=env)
            assert run.returncode == 0, run.stderr
            pixels = tmp_path / f"{arm}_{name}.ppm"
            run = subprocess.run([c_decoder_build / "vlmc_decode_latents", model, stream, "--image", pixels,
                                  "--threads", "2"], capture_output=True, text=True, timeout=300, env=env)
            assert run.returncode == 0, run.stderr
            outputs[arm, name] = stream.read_bytes(), pixels.read_bytes()
    for name in ("full", "small"):
        assert outputs["avx512", name][0] == outputs["avx2", name][0], f"{name}: the streams differ"
        assert outputs["avx512", name][1] == outputs["avx2", name][1], f"{name}: the decoded pixels differ"


def test_the_tool_reads_pgm_and_high_bit_depth_ppm_as_python_does(c_decoder_build, default_encoder, tmp_path):
    """vlmc_encode takes P5 (gray) and P6 files of any maxval 1..65535 (two bytes a sample above
    255; it took P6 at 255 only), and reads them as vlmcodec's Python reader does (Pillow's PPM
    decoder: round-half-even of v / maxval · 255, 16-bit gray then onto 8 bits): its stream is the
    library's for the pixels load_image gives, so a pipeline may read a file with either."""
    from vlmcodec.codec import default_model_path

    _, enc = default_encoder
    model = export_c_decoder(load_model(default_model_path()), tmp_path)
    rng = np.random.default_rng(7)
    h, w = 48, 80
    for magic, maxval in (("P6", 100), ("P6", 1000), ("P6", 65535), ("P6", 1), ("P5", 255), ("P5", 200),
                          ("P5", 4095), ("P5", 65535)):
        channels = 3 if magic == "P6" else 1
        values = rng.integers(0, maxval + 1, size=(h, w, channels))
        values[0, :4] = [[0] * channels, [maxval] * channels, [maxval // 2] * channels, [(maxval + 1) // 2] * channels]
        body = values.astype(">u2" if maxval > 255 else np.uint8).tobytes()
        path = tmp_path / f"in_{magic}_{maxval}.pnm"
        path.write_bytes(f"{magic}\n# made here\n{w} {h}\n{maxval}\n".encode() + body)
        pixels = load_image(path)
        run = subprocess.run([c_decoder_build / "vlmc_encode", model, path, tmp_path / "o.vlmc", "--quality", "40"],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, (magic, maxval, run.stderr)
        assert (tmp_path / "o.vlmc").read_bytes() == enc.encode_image(pixels, 40), (magic, maxval)
    # the header as Pillow reads it: \v and \f are whitespace, a comment ends at \r too; the magic
    # and the maxval end at whitespace (P6 then a digit is another magic to Pillow)
    body = rng.integers(0, 256, size=(h, w, 3)).astype(np.uint8).tobytes()
    for name, head in (("vt", f"P6\v{w}\f{h}\v255\f"), ("cr", f"P6\r# made here\r{w} {h}\r255\r")):
        path = tmp_path / f"{name}.ppm"
        path.write_bytes(head.encode() + body)
        run = subprocess.run([c_decoder_build / "vlmc_encode", model, path, tmp_path / "o.vlmc", "--quality", "40"],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, (name, run.stderr)
        assert (tmp_path / "o.vlmc").read_bytes() == enc.encode_image(load_image(path), 40), name
    for name, head, why in (("magic", f"P6{w} {h} 255\n", "not a binary PPM or PGM"),
                            ("maxval", f"P6 {w} {h} 255x", "header is malformed")):
        path = tmp_path / f"{name}.ppm"
        path.write_bytes(head.encode() + body)
        with pytest.raises(ImageError):
            load_image(path)
        run = subprocess.run([c_decoder_build / "vlmc_encode", model, path, tmp_path / "o.vlmc"], capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 2 and why in run.stderr, (name, run.stderr)
