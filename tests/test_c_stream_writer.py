"""Writing .vlmc streams in C (vlmc_decoder_write_stream): from the encoder networks' outputs
(y · gain, z) the C library must write the stream vlmcodec's Python encoder writes, byte for
byte; its gains must be the model's; bad input is refused with a clear error."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from vlmcodec import Codec
from vlmcodec.errors import ConfigError
from vlmcodec.export.c_decoder import (CDecoderError, CStreamDecoder, decoder_model_bytes, describe_decoder_model,
                                       export_c_decoder)
from vlmcodec.image_io import load_image
from vlmcodec.models.checkpoint import load_model

from conftest import build_cpp_program, smooth_image

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "assets" / "samples").glob("*.png"))


def _writer(build, model_path, tmp_path_factory) -> tuple[CStreamDecoder, Path]:
    out = export_c_decoder(load_model(model_path), tmp_path_factory.mktemp("writer_model"))
    return CStreamDecoder(build / "libvlmc_decoder.so", out), out


@pytest.fixture(scope="module")
def default_writer(c_decoder_build, tmp_path_factory):
    from vlmcodec.codec import default_model_path

    return (Codec(), *_writer(c_decoder_build, default_model_path(), tmp_path_factory))


@pytest.fixture(scope="module")
def tiny_writer(c_decoder_build, tiny_model_path, tmp_path_factory):
    return Codec(tiny_model_path), _writer(c_decoder_build, tiny_model_path, tmp_path_factory)[0]


def _both(codec: Codec, writer: CStreamDecoder, image: np.ndarray, quality: float, short_side: int | None = None,
          threads: int = 0) -> tuple[bytes, bytes]:
    """(Python's stream, the C writer's stream from the same y and z)."""
    prep = codec.prepare(image, quality, short_side)
    y, z = codec.analyse([prep.pixels], [prep.quality])
    ours = codec.entropy_encode(y[0], z[0], prep)
    (h, w), (ch, cw) = prep.size, prep.pixels.shape[:2]
    theirs = writer.write_stream(y[0].numpy(), z[0].numpy(), w, h, prep.quality, coded_size=(cw, ch),
                                 pre_edited=codec.pre_edit, threads=threads)
    return ours, theirs


def test_default_model_streams_are_the_python_encoders_byte_for_byte(default_writer):
    codec, writer, _ = default_writer
    assert codec.pre_edit and writer.can_write()  # the default model's pre-editor: header flag bit 0
    img = load_image(SAMPLES[0])
    for case in (dict(quality=0), dict(quality=37.5), dict(quality=100), dict(quality=60, short_side=256)):
        ours, theirs = _both(codec, writer, img, **case)
        assert theirs == ours, case
    # and the C decoder reads it back as the Python decoder does
    data = _both(codec, writer, img, 45)[1]
    np.testing.assert_array_equal(writer.latents(data, raw=True), codec.entropy_decode(data).y_hat.numpy())


def test_tiny_model_streams_byte_for_byte_at_any_size_quality_and_thread_count(tiny_writer, rng):
    codec, writer = tiny_writer
    assert not codec.pre_edit  # no pre-editor: flag bit 0 clear
    for h, w in ((64, 64), (70, 100), (130, 47), (200, 129)):
        img = smooth_image(rng, h, w)
        for q in (0, 12.34, 50, 62.5, 99.99, 100):
            ours, theirs = _both(codec, writer, img, q, threads=1)
            assert theirs == ours, (h, w, q)
        assert _both(codec, writer, img, 100, threads=3)[1] == ours  # the threads do not matter
    ours, theirs = _both(codec, writer, smooth_image(rng, 300, 200), 40, short_side=64)  # a consumer's scale
    assert theirs == ours


def test_a_large_latent_is_coded_in_several_chunks_as_python_does(tiny_writer, rng):
    """M · h · w above 2^16 symbols: several y chunks (codec.num_chunks_for), the same bytes."""
    codec, writer = tiny_writer
    ours, theirs = _both(codec, writer, smooth_image(rng, 1024, 768), 70, threads=2)
    from vlmcodec.bitstream import container

    assert len(container.unpack(ours)[2]) > 1 and theirs == ours


def test_gains_are_the_models(tiny_writer, default_writer):
    for codec, writer in (tiny_writer, default_writer[:2]):
        for q in (0, 10, 33.33, 50, 62.5, 100):
            level = torch.tensor([codec.model.level_of_quality(q)])
            with torch.no_grad():
                expected = codec.model.gains(level)[0][0].numpy()
            np.testing.assert_allclose(writer.gain(q), expected, rtol=2e-6, atol=0)


def test_bad_input_is_refused_with_a_clear_error(tiny_writer, rng):
    codec, writer = tiny_writer
    prep = codec.prepare(smooth_image(rng, 64, 64), 50)
    y, z = (t[0].numpy() for t in codec.analyse([prep.pixels], [prep.quality]))

    def refused(code: int, words: str, y=y, z=z, **kw) -> None:
        args = dict(width=64, height=64, quality=50)
        args.update(kw)
        with pytest.raises(CDecoderError) as e:
            writer.write_stream(y, z, **args)
        assert e.value.code == code and words in e.value.message, e.value.message

    refused(-1, "a 64x64 coded image needs", y=y[:, :2])
    refused(-1, "a 128x64 coded image needs", width=128)  # the latents of 64x64, told 128x64
    refused(-1, "a 64x64 coded image needs", y_count=y.size - 1)
    bad = y.copy()
    bad[3, 1, 2] = np.nan
    refused(-1, "is not finite", y=bad)
    bad = z.copy()
    bad[0, 0, 0] = np.inf
    refused(-1, "z[0] is not finite", z=bad)
    bad = z.copy()
    bad[1, 0, 0] = 3e7
    refused(-1, "z[1] is too large", z=bad)
    refused(-1, "too large for the exact h_s", z=np.full_like(z, 1e6))
    refused(-1, "quality must be", quality=100.5)
    refused(-1, "quality must be", quality=float("nan"))
    refused(-1, "outside 1..", width=0)
    refused(-1, "coded size 65x64 must be within", coded_size=(65, 64))
    refused(-1, "num_threads", threads=-1)
    writer.set_max_pixels(1000)
    try:
        refused(-7, "more than max_pixels=1000")
    finally:
        writer.set_max_pixels(64_000_000)
    with pytest.raises(CDecoderError) as e:
        writer.gain(-1)
    assert e.value.code == -1


def test_a_stream_whose_synthesis_is_not_finite_is_refused_as_the_python_decoder_does(tiny_writer):
    """Symbols far beyond an encoder's (codable: below 2^30) drove the C decoder's g_s past
    float32's range; its clamps made NaN 0 and it returned an all-black image where the Python
    decoder raises BitstreamError. Both refuse, in whole images and in row bands."""
    from vlmcodec.errors import BitstreamError

    codec, writer = tiny_writer
    prep = codec.prepare(np.full((64, 64, 3), 128, np.uint8), 50)
    y, z = (t[0].numpy() for t in codec.analyse([prep.pixels], [prep.quality]))
    for v, finite in ((1e9, False), (1e6, False), (1e4, True)):
        data = writer.write_stream(np.full_like(y, v), z, 64, 64, prep.quality)
        for band_pixels in (0, 256):
            writer.set_band_pixels(band_pixels)
            try:
                if finite:
                    np.testing.assert_array_equal(writer.image(data), codec.decode(data))
                    continue
                with pytest.raises(CDecoderError, match="drive the synthesis to values that are not finite") as e:
                    writer.image(data)
                assert e.value.code == -2  # VLMC_DEC_ERR_CORRUPT
            finally:
                writer.set_band_pixels(1 << 20)  # (the default)
        if not finite:
            with pytest.raises(BitstreamError, match="not finite"):
                codec.decode(data)


def test_older_model_files_decode_but_say_what_they_cannot_do(c_decoder_build, tiny_writer, tiny_model_path, rng,
                                                              tmp_path):
    """A decoder-model file of version 1 (before the gains) still decodes, one of version 2 (before
    the encoder's networks) decodes and writes streams; what they cannot do says why."""
    codec, writer = tiny_writer
    loaded = load_model(tiny_model_path)
    blobs = {v: decoder_model_bytes(loaded, version=v) for v in (1, 2, 3)}
    # each version is the one before plus its part: v2 adds the gains, v3 appends the encoder
    gain = loaded.model.gain.detach().abs().float().numpy().astype("<f4").tobytes()
    assert blobs[2][12:-4].replace(gain, b"", 1) == blobs[1][12:-4] and blobs[3][12:len(blobs[2]) - 4] == blobs[2][12:-4]
    v1, v2 = (CStreamDecoder(c_decoder_build / "libvlmc_decoder.so", blobs[v]) for v in (1, 2))
    for v in (1, 2):
        (tmp_path / f"v{v}.vlmd").write_bytes(blobs[v])
        d = describe_decoder_model(tmp_path / f"v{v}.vlmd")
        assert (d["format_version"], d["writes_streams"], d["encodes_images"]) == (v, v == 2, False)
    data = codec.encode(smooth_image(rng, 64, 96), quality=30)
    np.testing.assert_array_equal(v1.latents(data), writer.latents(data))
    np.testing.assert_array_equal(v2.latents(data), writer.latents(data))
    assert not v1.can_write() and v2.can_write() and writer.can_write()
    assert not v1.can_encode() and not v2.can_encode() and writer.can_encode()
    with pytest.raises(CDecoderError) as e:
        v1.write_stream(np.zeros((24, 4, 6), np.float32), np.zeros((16, 1, 2), np.float32), 96, 64, 30)
    assert e.value.code == -6 and "re-export" in e.value.message
    with pytest.raises(CDecoderError) as e:
        v1.gain(30)
    assert e.value.code == -6
    for old in (v1, v2):
        with pytest.raises(CDecoderError) as e:
            old.encode_image(np.zeros((64, 96, 3), np.uint8), 30)
        assert e.value.code == -6 and "re-export" in e.value.message
    # and a file of a version after this library's is refused, naming the versions it reads
    newer = blobs[3][:8] + struct.pack("<I", 4) + blobs[3][12:-4]
    with pytest.raises(CDecoderError, match="reads 1 to 3"):
        CStreamDecoder(c_decoder_build / "libvlmc_decoder.so", newer + struct.pack("<I", zlib.crc32(newer)))


# a C++ program writing a stream through vlmc_decoder.hpp from y and z in raw float32 files (as a
# C++ serving stack would from its own runtime's outputs)
USER_PROGRAM_CPP = r"""
#include <vlmc_decoder.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <stdexcept>
static std::vector<float> floats(const char *path) {
    std::ifstream f(path, std::ios::binary);
    const std::vector<char> b{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
    std::vector<float> v(b.size() / sizeof(float));
    std::copy(b.begin(), b.begin() + v.size() * sizeof(float), reinterpret_cast<char *>(v.data()));
    return v;
}
int main(int argc, char **argv) {
    try {
        const vlmc::Decoder dec(argv[1]);
        const uint32_t w = std::atoi(argv[4]), h = std::atoi(argv[5]);
        const double q = std::atof(argv[6]);
        const std::vector<uint8_t> s = dec.write_stream(floats(argv[2]), floats(argv[3]), w, h, q, VLMC_ENC_PRE_EDITED);
        std::ofstream(argv[7], std::ios::binary).write(reinterpret_cast<const char *>(s.data()), s.size());
        const auto sizes = dec.latent_size(w, h);
        std::printf("%d %zu %zu %.9g", int(dec.can_write()), sizes.first, sizes.second, double(dec.gain(q)[0]));
        try {
            dec.write_stream(floats(argv[2]), floats(argv[3]), w + 64, h, q);
        } catch (const vlmc::DecodeError &e) {
            std::printf(" %d", e.code());
        }
        // rate control with a stand-in h_a (z = y / 100 over z's count), and an h_a that throws
        const std::vector<float> y_raw = floats(argv[8]);
        auto stand_in = [](const float *y, size_t, float *z, size_t n_z) {
            for (size_t i = 0; i < n_z; ++i) z[i] = y[i] * 0.01f;
        };
        const auto fitted = dec.write_stream_within(y_raw, sizes.second, stand_in, w, h, std::atoi(argv[9]));
        std::ofstream(argv[10], std::ios::binary).write(reinterpret_cast<const char *>(fitted.bytes.data()),
                                                         fitted.bytes.size());
        std::printf(" %.2f", fitted.quality);
        try {
            dec.write_stream_within(y_raw, sizes.second, [](const float *, size_t, float *, size_t) {
                throw std::runtime_error("boom");
            }, w, h, 100000);
        } catch (const std::runtime_error &e) {
            std::printf(" %s\n", e.what());
        }
    } catch (const vlmc::DecodeError &e) {
        std::fprintf(stderr, "%s (%d)\n", e.what(), e.code());
        return 1;
    }
    return 0;
}
"""


def test_a_cpp_program_writes_the_python_encoders_stream(c_decoder_build, default_writer, tmp_path):
    import subprocess

    codec, writer, model_file = default_writer
    build_cpp_program(USER_PROGRAM_CPP, c_decoder_build, tmp_path / "user")
    prep = codec.prepare(load_image(SAMPLES[1]), 55)
    y_raw = codec.analyse_unscaled([prep.pixels])[1]
    y, z = codec.analyse([prep.pixels], [prep.quality])
    (tmp_path / "y.f32").write_bytes(y[0].numpy().astype("<f4").tobytes())
    (tmp_path / "z.f32").write_bytes(z[0].numpy().astype("<f4").tobytes())
    (tmp_path / "y_raw.f32").write_bytes(y_raw[0].numpy().astype("<f4").tobytes())
    h, w = prep.size
    run = subprocess.run([str(tmp_path / "user"), str(model_file),
                          str(tmp_path / "y.f32"), str(tmp_path / "z.f32"), str(w), str(h), "55",
                          str(tmp_path / "s.vlmc"), str(tmp_path / "y_raw.f32"), "60000", str(tmp_path / "r.vlmc")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "s.vlmc").read_bytes() == codec.entropy_encode(y[0], z[0], prep)
    out = run.stdout.split()
    assert out[:3] == ["1", str(y[0].numel()), str(z[0].numel())] and out[4] == "-1"  # -1: the counts do not match
    assert float(out[3]) == pytest.approx(float(writer.gain(55)[0]), rel=1e-7)
    # rate control through the C++ interface: the C API's stream for the same stand-in h_a, and
    # the exception thrown by an h_a comes back out of write_stream_within
    expected, quality = writer.write_stream_within(y_raw[0].numpy(), lambda y: y.reshape(-1)[: z[0].numel()] * 0.01,
                                                   tuple(z[0].shape), w, h, 60000)
    assert (tmp_path / "r.vlmc").read_bytes() == expected and len(expected) <= 60000
    assert out[5:] == [f"{quality:.2f}", "boom"]


def test_the_headers_recipe_on_onnx_runtime_writes_the_onnxruntime_backends_stream(default_writer, tmp_path):
    """Encoding with no vlmcodec Python code in the loop, as vlmc_decoder.h describes it: the
    exported graphs on ONNX Runtime (pad with repeated edges, pre-editor clamped to [0, 1], g_a,
    · vlmc_decoder_gain, h_a), then vlmc_decoder_write_stream: the stream of
    Codec(backend="onnxruntime"), byte for byte."""
    ort = pytest.importorskip("onnxruntime", reason="not available: onnxruntime is not installed")
    from vlmcodec.codec import default_model_path
    from vlmcodec.export.onnx import export_onnx

    codec, writer, _ = default_writer
    manifest = export_onnx(load_model(default_model_path()), tmp_path)
    assert bytes.fromhex(manifest["model_fingerprint"])[:8] == writer.fingerprints()[0]  # the same model's
    run = {name: ort.InferenceSession(str(tmp_path / f"{name}.onnx"), providers=["CPUExecutionProvider"]).run
           for name in ("pre_editor", "g_a", "h_a")}
    img = load_image(SAMPLES[0])[:300, :500]  # 300×500: padded to 320×512
    h, w = img.shape[:2]
    padded = np.pad(img, ((0, 320 - h), (0, 512 - w), (0, 0)), mode="edge")
    x = (padded.astype(np.float32) / 255).transpose(2, 0, 1)[None]
    x = np.clip(run["pre_editor"](None, {"x": x})[0], 0, 1)
    backend = Codec(backend="onnxruntime")
    for quality in (20, 80):
        y = run["g_a"](None, {"x": x})[0] * writer.gain(quality)[None, :, None, None]
        z = run["h_a"](None, {"y": y})[0]
        data = writer.write_stream(y[0], z[0], w, h, quality, pre_edited=True)
        assert data == backend.encode(img, quality=quality)
        assert codec.decode(data).shape == img.shape


def test_the_command_line_tool_writes_the_python_encoders_stream(c_decoder_build, default_writer, tmp_path):
    """vlmc_write_stream: y and z in raw float32 files → the stream (and --gain → the gain)."""
    import json
    import subprocess

    codec, writer, model_file = default_writer
    tool = c_decoder_build / "vlmc_write_stream"
    prep = codec.prepare(load_image(SAMPLES[0]), 33.5, 256)  # a consumer's scale: --coded-size
    y, z = codec.analyse([prep.pixels], [prep.quality])
    (tmp_path / "y.f32").write_bytes(y[0].numpy().astype("<f4").tobytes())
    (tmp_path / "z.f32").write_bytes(z[0].numpy().astype("<f4").tobytes())
    (h, w), (ch, cw) = prep.size, prep.pixels.shape[:2]

    def tool_run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(tool), str(model_file), *args], capture_output=True, text=True, timeout=60)

    run = tool_run(str(tmp_path / "y.f32"), str(tmp_path / "z.f32"), str(tmp_path / "s.vlmc"), "--size", f"{w}x{h}",
                   "--coded-size", f"{cw}x{ch}", "--quality", "33.5", "--pre-edited", "--threads", "2")
    assert run.returncode == 0, run.stderr
    data = (tmp_path / "s.vlmc").read_bytes()
    assert data == codec.entropy_encode(y[0], z[0], prep)
    assert json.loads(run.stdout) == {"bytes": len(data), "width": w, "height": h, "quality": 33.5,
                                      "bpp": pytest.approx(8 * len(data) / (w * h), rel=1e-5)}
    run = tool_run("--gain", "33.5", str(tmp_path / "g.f32"))
    assert run.returncode == 0, run.stderr
    np.testing.assert_array_equal(np.fromfile(tmp_path / "g.f32", "<f4"), writer.gain(33.5))
    # errors: exit status 2 and one line naming the problem, never a crash
    (tmp_path / "odd.f32").write_bytes(b"\0" * 7)
    with open(tmp_path / "big.f32", "wb") as f:  # a sparse 1 GiB file: refused before it is read whole
        f.truncate(1 << 30)
    for args, words in [((str(tmp_path / "y.f32"), str(tmp_path / "z.f32"), str(tmp_path / "o.vlmc"), "--size",
                          f"{w}x{h}", "--quality", "33.5"), "coded image needs"),  # the coded size left out
                        ((str(tmp_path / "odd.f32"), str(tmp_path / "z.f32"), str(tmp_path / "o.vlmc"), "--size", "64x64",
                          "--quality", "5"), "whole number of float32s"),
                        ((str(tmp_path / "no.f32"), str(tmp_path / "z.f32"), str(tmp_path / "o.vlmc"), "--size", "64x64",
                          "--quality", "5"), "cannot read"),
                        ((str(tmp_path / "big.f32"), str(tmp_path / "z.f32"), str(tmp_path / "o.vlmc"), "--size", "64x64",
                          "--quality", "5"), f"big.f32 holds {1 << 30} bytes, more than the"),
                        (("a", "b", "c", "--size", "64by64", "--quality", "5"), "--size takes WIDTHxHEIGHT"),
                        (("a", "b", "c", "--size", "64x64", "--quality", "101"), "--quality takes a number in 0..100"),
                        (("a", "b", "c", "--size", "64x64"), "usage:"),
                        (("--gain", "50"), "usage:"),
                        (("--gain", "x", "g.f32"), "--gain takes a number"),
                        # the stream's options beside --gain: refused (they were dropped silently)
                        (("--gain", "50", "g.f32", "--size", "64x64", "--quality", "3"), "--gain takes no --size"),
                        (("--gain", "50", "g.f32", "--pre-edited"), "--gain takes no --size"),
                        (("--threads", "2", "--gain", "50", "g.f32"), "--gain takes no --size"),
                        (("a", "b", "c", "--frobnicate"), "unknown option")]:
        run = tool_run(*args)
        assert run.returncode == 2 and run.stderr.startswith("vlmc_write_stream: error: ") and words in run.stderr, \
            (args, run.stderr)


def _hyper_analysis(codec: Codec):
    """h_a on the torch backend, as a caller's runtime would run h_a.onnx: y [M, h, w] → z."""

    def h_a(y: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return codec.backend.hyper_analysis(torch.from_numpy(y)[None])[0].numpy()

    return h_a


def _g_a_output(codec: Codec, image: np.ndarray, short_side: int | None = None):
    """(the prepared image, g_a's output before the gain [M, h, w], z's shape) for rate control."""
    prep = codec.prepare(image, 0, short_side)
    y_raw = codec.analyse_unscaled([prep.pixels])[1][0].numpy()
    return prep, y_raw, (codec.N, y_raw.shape[1] // 4, y_raw.shape[2] // 4)


def test_rate_control_in_c_gives_encode_to_sizes_stream(default_writer):
    """vlmc_decoder_write_stream_within, from g_a's output and a caller's h_a: the stream and the
    quality Codec.encode_to_size gives, byte for byte, over budgets from the smallest stream to
    above the largest, at full size and at a consumer's scale with quality bounds."""
    from vlmcodec.bitstream import container

    codec, writer, _ = default_writer
    img = load_image(SAMPLES[0])
    for short_side, bounds, budgets in ((None, {}, (14_000, 20_000, 26_000, 33_000, 60_000)),
                                        (256, {"min_quality": 10, "max_quality": 90}, (5_000, 6_500, 8_000, 50_000))):
        prep, y_raw, z_shape = _g_a_output(codec, img, short_side)
        (h, w), (ch, cw) = prep.size, prep.pixels.shape[:2]
        for budget in budgets:
            data, quality = writer.write_stream_within(y_raw, _hyper_analysis(codec), z_shape, w, h, budget,
                                                       coded_size=(cw, ch), pre_edited=True, **bounds)
            expected = codec.encode_to_size(img, budget, short_side=short_side, **bounds)
            assert data == expected and quality == container.unpack(expected)[0].quality, (short_side, budget)
            assert len(data) <= budget or quality == bounds.get("min_quality", 0)


def test_rate_control_in_c_is_the_python_search(tiny_writer, rng):
    """The C search against rate_control.largest_fitting over the C writer's own one-pass streams:
    the same stream for 40 budgets on another architecture (the port of the search, step for step)."""
    from vlmcodec import rate_control

    codec, writer = tiny_writer
    _, y_raw, z_shape = _g_a_output(codec, smooth_image(rng, 200, 300))
    h_a = _hyper_analysis(codec)

    def stream_at(q: float) -> bytes:
        y = y_raw * writer.gain(q)[:, None, None]
        return writer.write_stream(y, h_a(y), 300, 200, q)

    smallest, largest = len(stream_at(0)), len(stream_at(100))
    for budget in np.linspace(smallest, largest * 1.05, 40).astype(int):
        ours, quality = writer.write_stream_within(y_raw, h_a, z_shape, 300, 200, int(budget))
        theirs, probes = rate_control.largest_fitting(stream_at, int(budget))
        assert ours == theirs, (budget, quality, probes)


def test_rate_control_in_c_refuses_clearly(tiny_writer, rng):
    codec, writer = tiny_writer
    _, y_raw, z_shape = _g_a_output(codec, smooth_image(rng, 64, 64))
    h_a = _hyper_analysis(codec)

    def refused(code: int, words: str, h_a=h_a, budget: int = 10_000, **kw) -> None:
        with pytest.raises(CDecoderError) as e:
            writer.write_stream_within(y_raw, h_a, z_shape, 64, 64, budget, **kw)
        assert e.value.code == code and words in e.value.message, e.value.message

    refused(-9, "over the budget of 5", budget=5)  # even quality 0 needs more
    refused(-10, "the h_a callback failed (returned 1)", h_a=lambda y: 1 / 0)  # an exception in it
    refused(-10, "returned 2", h_a=lambda y: np.zeros(3, np.float32))  # the wrong size
    with pytest.raises(ConfigError, match="max_bytes must be a whole number, at least 1"):  # (the wrapper's check)
        writer.write_stream_within(y_raw, h_a, z_shape, 64, 64, 0)
    refused(-1, "min_quality is above max_quality", min_quality=60, max_quality=50)
    refused(-1, "quality must be", max_quality=101)
    with pytest.raises(CDecoderError) as e:
        writer.write_stream_within(y_raw[:, :2], h_a, z_shape, 64, 64, 10_000)
    assert e.value.code == -1 and "a 64x64 coded image needs" in e.value.message
