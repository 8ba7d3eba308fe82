"""The C stream decoder (kernels/decoder): built with cmake here, called through ctypes and its
command-line tool; its latents must be the Python decoder's bit for bit, its errors the same."""

import json
import os
import random
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from vlmcodec import Codec
from vlmcodec.backends.torch_backend import optimize_for_inference
from vlmcodec.bitstream import container
from vlmcodec.bitstream.damage import damage
from vlmcodec.errors import BitstreamError, ConfigError, ModelMismatchError
from vlmcodec.export.c_decoder import (CDecoderError, CStreamDecoder, build_c_decoder, decoder_model_bytes,
                                       export_c_decoder, find_cmake)
from vlmcodec.image_io import load_image
from vlmcodec.models.checkpoint import load_model

from conftest import build_cpp_program, smooth_image

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "assets" / "samples").glob("*.png"))


@pytest.fixture(scope="module")
def built(c_decoder_build):
    return c_decoder_build


def _ctest(decoder_dir: Path) -> str:
    """Runs the ctest suite of the build holding ``decoder_dir``; its output, asserted all passed."""
    ctest = Path(find_cmake()).with_name("ctest")
    run = subprocess.run([str(ctest) if ctest.exists() else "ctest", "--test-dir", str(decoder_dir.parents[1]),
                          "--output-on-failure"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "100% tests passed" in run.stdout, run.stdout[-3000:] + run.stderr[-2000:]
    return run.stdout


def _check_the_picked_version(decoder_dir: Path) -> None:
    """The build's convolutions take the widest version the CPU has (x86-64 Linux with GCC ≥ 11 or
    Clang ≥ 12), and the AVX2 one with VLMC_NO_AVX512=1: what its test_conv_dispatch reports."""
    import os
    import sys

    from vlmcodec.export.c_decoder import cpu_vector_isa

    widest, without = cpu_vector_isa(), cpu_vector_isa(no_avx512=True)
    if widest is None:
        return  # elsewhere there is one version, which the ctest suite checks
    tool = decoder_dir.parents[1] / "tests" / "cpp" / "test_conv_dispatch"
    # and the library says so (vlmc_decoder_vector_isa, through ctypes, in a fresh process each)
    ask = ("import sys, ctypes; lib = ctypes.CDLL(sys.argv[1]); lib.vlmc_decoder_vector_isa.restype = ctypes.c_char_p; "
           "print(lib.vlmc_decoder_vector_isa().decode())")
    for env, want in (({"VLMC_NO_AVX512": ""}, widest), ({"VLMC_NO_AVX512": "1"}, without)):
        run = subprocess.run([str(tool)], capture_output=True, text=True, timeout=300, env={**os.environ, **env})
        assert run.returncode == 0 and f"the {want} version" in run.stdout, (env, run.stdout[-500:])
        run = subprocess.run([sys.executable, "-c", ask, str(decoder_dir / "libvlmc_decoder.so")], capture_output=True,
                             text=True, timeout=120, env={**os.environ, **env})
        assert run.returncode == 0 and run.stdout.strip() == want, (env, run.stdout, run.stderr[-500:])


def _check_wide_registers_only_where_dispatched(library: Path) -> None:
    """No function of the library touches a ymm or zmm register but the versions picked at run
    time by the CPU's features (``*_avx2``, ``*_avx512``: the convolutions' products, the encoder's
    element-wise helpers): elsewhere an AVX instruction is an illegal instruction on a CPU without it."""
    import platform
    import re
    import shutil

    objdump = shutil.which("objdump")
    if platform.machine() != "x86_64" or objdump is None:
        return  # (nothing to check off x86-64; objdump comes with the binutils the build needs)
    listing = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True,
                             check=True, timeout=300).stdout
    wide, function = set(), None
    for line in listing.splitlines():
        head = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if head:
            function = head.group(1)
        elif function and re.search(r"%[yz]mm", line):
            wide.add(function)
    dispatched = re.compile(r"_avx(2|512)[EI]")  # (mangled: the name ends, its parameters or template's follow)
    stray = sorted(f for f in wide if not dispatched.search(f))
    assert wide and not stray, stray


def test_ctest_suite(built):
    """The C and C++ tests (rANS core, both C APIs, the convolutions, the worker pools) from the
    same build, so that CI runs them."""
    out = _ctest(built)
    assert all(name in out for name in ("decoder_c_api", "decoder_cpp", "rans_c_api", "conv_dispatch",
                                        "conv_dispatch_no_avx512", "conv_portable", "pool"))
    _check_the_picked_version(built)
    _check_wide_registers_only_where_dispatched(built / "libvlmc_decoder.so")


def _decoder(built, model_path, tmp_path_factory):
    out = export_c_decoder(load_model(model_path), tmp_path_factory.mktemp("decoder_model"))
    return CStreamDecoder(built / "libvlmc_decoder.so", out), out


@pytest.fixture(scope="module")
def default_pair(built, tmp_path_factory):
    from vlmcodec.codec import default_model_path

    dec, path = _decoder(built, default_model_path(), tmp_path_factory)
    return Codec(), dec, path


@pytest.fixture(scope="module")
def tiny_pair(built, tiny_model_path, tmp_path_factory):
    dec, path = _decoder(built, tiny_model_path, tmp_path_factory)
    return Codec(tiny_model_path), dec, path


def test_default_model_latents_are_the_python_decoders_bit_for_bit(default_pair):
    codec, dec, _ = default_pair
    img = load_image(SAMPLES[0])
    cases = [dict(quality=0), dict(quality=37.5), dict(quality=100), dict(quality=60, short_side=256)]
    for case in cases:
        data = codec.encode(img, **case)
        ours = dec.latents(data, raw=True)
        theirs = codec.entropy_decode(data).y_hat.numpy()
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        assert np.array_equal(ours, theirs), case
        info, header = dec.info(data), container.unpack(data)[0]
        assert (info["coded_height"], info["coded_width"]) == header.coded_hw
        assert (info["width"], info["height"], info["quality"]) == (header.width, header.height, header.quality)
        assert info["fingerprint"] == header.fingerprint


def test_odd_sizes_levels_and_threads_on_a_second_architecture(tiny_pair, rng):
    codec, dec, _ = tiny_pair  # N=16, M=24, 3 levels
    for h, w, q in [(1, 1, 50), (37, 101, 12.34), (130, 65, 99.99), (64, 200, 0)]:
        data = codec.encode(smooth_image(rng, h, w), q)
        theirs = codec.entropy_decode(data).y_hat.numpy()
        for threads in (1, 3):
            assert np.array_equal(dec.latents(data, raw=True, threads=threads), theirs), (h, w, q, threads)


def test_a_forked_child_decodes_with_the_parents_decoder(tiny_pair, rng):
    """The decoder keeps worker threads between calls; a child process after fork() has none of
    them, and must start its own rather than wait on the parent's (a server that forks workers)."""
    import os
    import select
    import signal

    codec, dec, _ = tiny_pair
    data = codec.encode(smooth_image(rng, 150, 230), 40)
    want = dec.image(data, threads=2)  # the parent's decoder now holds a pool of 2
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: decode, send the pixels, leave without Python's clean-up
        try:
            os.close(read_end)
            out = dec.image(data, threads=2).tobytes()
            with os.fdopen(write_end, "wb") as f:
                f.write(out)
        finally:
            os._exit(0)
    os.close(write_end)
    got = b""
    try:
        with os.fdopen(read_end, "rb") as f:
            while select.select([f], [], [], 60)[0]:
                chunk = os.read(f.fileno(), 1 << 20)
                if not chunk:
                    break
                got += chunk
            else:
                pytest.fail("the forked child did not finish decoding within 60 s")
    finally:
        if os.waitpid(pid, os.WNOHANG) == (0, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert got == want.tobytes()
    assert np.array_equal(dec.image(data, threads=2), want)  # and the parent's pool still works


def test_gained_latents_decode_to_the_python_decoders_image(default_pair):
    codec, dec, _ = default_pair
    img = load_image(SAMPLES[-1])
    for q in (20, 85.5):
        data = codec.encode(img, quality=q)
        latent = codec.entropy_decode(data)
        ours = dec.latents(data)  # what g_s takes: ŷ · inverse gain, in float32 (exp/log: an ULP)
        _, inv_gain = codec.model.gains(torch.tensor([codec.model.level_of_quality(latent.header.quality)]))
        theirs = (latent.y_hat * inv_gain[0, :, None, None]).detach().numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
        with torch.inference_mode():
            x = codec.backend.synthesis(torch.from_numpy(ours)[None]).clamp_(0, 1)
        h, w = img.shape[:2]
        pixels = x[0, :, :h, :w].mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        reference = codec.decode(data)
        diff = np.abs(pixels.astype(int) - reference.astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.999, (q, diff.max(), (diff == 0).mean())


def test_images_are_the_python_decoders_within_one_level(default_pair, tiny_pair, rng):
    """vlmc_decoder_image: the latents, g_s in float32, clamp, crop, (upsample,) round; against
    Codec.decode (torch backend), which sums in another order: a level apart at most, and rarely."""
    codec, dec, _ = default_pair
    img = load_image(SAMPLES[0])
    cases = [(codec, dec, img, dict(quality=10)), (codec, dec, img, dict(quality=90)),
             (codec, dec, img, dict(quality=50, short_side=256))]
    tiny_codec, tiny_dec, _ = tiny_pair
    cases.append((tiny_codec, tiny_dec, smooth_image(rng, 45, 77), dict(quality=60)))
    cases.append((codec, dec, img, dict(quality=20, short_side=200)))
    for c, d, image, case in cases:
        data = c.encode(image, **case)
        pairs = [(d.image(data, threads=t), c.decode(data)) for t in (1, 2)]
        if "short_side" in case:  # upsampled to the original size (bicubic), or at the coded size
            pairs.append((d.image(data, coded_size=True), c.decode(data, short_side=case["short_side"])))
            assert pairs[-1][0].shape[:2] != image.shape[:2]
        for ours, theirs in pairs:
            assert ours.shape == theirs.shape, case
            diff = np.abs(ours.astype(int) - theirs.astype(int))
            assert diff.max() <= 1 and (diff == 0).mean() > 0.999, (case, diff.max(), (diff == 0).mean())


def test_images_at_a_consumers_size_are_the_python_decoders(default_pair, tiny_pair, rng):
    """vlmc_decoder_image_at(short_side=N) = Codec.decode(data, short_side=N) within a level: from
    full-size streams (antialiased downscale), from streams coded at a consumer's scale (as coded,
    downscaled further, or upscaled towards the original), N at or above the original (its size)."""
    codec, dec, _ = default_pair
    img = load_image(SAMPLES[0])
    tiny_codec, tiny_dec, _ = tiny_pair
    cases = [(codec, dec, img, None, [16, 100, 224, 256, 320, 4000]),
             (codec, dec, img, 256, [100, 200, 256, 300, 512]),
             (tiny_codec, tiny_dec, smooth_image(rng, 91, 57), None, [16, 33, 56, 57])]
    for c, d, image, coded_at, sides in cases:
        data = c.encode(image, quality=40, short_side=coded_at)
        for side in sides:
            theirs = c.decode(data, short_side=side)
            for threads in (1, 2):
                ours = d.image(data, threads=threads, short_side=side)
                assert ours.shape == theirs.shape, (coded_at, side)
                diff = np.abs(ours.astype(int) - theirs.astype(int))
                assert diff.max() <= 1 and (diff == 0).mean() > 0.999, (coded_at, side, diff.max(), (diff == 0).mean())
        if coded_at:  # at the coded scale: what VLMC_DEC_CODED_SIZE gives, no resize
            assert np.array_equal(d.image(data, short_side=coded_at), d.image(data, coded_size=True))
    data = codec.encode(img, quality=40)
    with pytest.raises(CDecoderError, match="short_side must be 0 or at least 16") as e:
        dec.image(data, short_side=15)
    assert e.value.code == -1
    # ctypes wrapped these modulo 2^32 (-1 gave the original size, 2^32 + 16 a 16-px image) or
    # raised its own ArgumentError
    for bad in (-1, -240, (1 << 32) + 16, True, 100.0, "100"):
        with pytest.raises(ConfigError, match="short_side must be None, 0 or an integer >= 16"):
            dec.image(data, short_side=bad)
    assert dec.image(data, short_side=np.int64(256)).shape == (256, 384, 3)
    with pytest.raises(CDecoderError, match="the image needs 294912$") as e:  # 384 x 256 x 3 (a 768 x 512 sample)
        dec._check(dec._lib.vlmc_decoder_image_at(dec._handle, data, len(data), 256, 1, bytes(1), 1))
    assert e.value.code == -4
    with pytest.raises(ValueError, match="exclude each other"):
        dec.image(data, coded_size=True, short_side=256)


def test_bands_give_the_same_pixels(default_pair, built):
    """g_s in bands of rows (each with its receptive field's halo) = g_s on the whole image, bit
    for bit, down to one latent row per band; also at a consumer's size."""
    codec, _, model_file = default_pair
    data = codec.encode(load_image(SAMPLES[-1]), quality=40)
    dec = CStreamDecoder(built / "libvlmc_decoder.so", model_file)
    dec.set_band_pixels(0)
    whole, small = dec.image(data, threads=2), dec.image(data, threads=2, short_side=100)
    for band_pixels in (1, 16 * 16 * 48 * 5, 100_000):
        dec.set_band_pixels(band_pixels)
        assert np.array_equal(dec.image(data, threads=2), whole), band_pixels
        # at a consumer's size, each band's rows are resampled across as they come
        assert np.array_equal(dec.image(data, threads=2, short_side=100), small), band_pixels


def test_bands_below_the_images_last_row_are_skipped(default_pair, built):
    """An image whose height is not a multiple of 64 is coded padded; a band of latent rows that
    starts below its last row holds only padding. Its row count wrapped below zero and on two
    threads the rows were written far past the caller's buffer (a crash, found at 3800×260 with
    the default band size, 150×97 with 64-pixel bands)."""
    codec, _, model_file = default_pair
    dec = CStreamDecoder(built / "libvlmc_decoder.so", model_file)
    for h, w in [(97, 150), (150, 700)]:
        data = codec.encode(load_image(SAMPLES[0])[:h, :w], quality=50)
        dec.set_band_pixels(0)
        whole, small = dec.image(data, threads=1), dec.image(data, threads=1, short_side=48)
        assert np.abs(whole.astype(int) - codec.decode(data)).max() <= 1  # (float g_s: within one level)
        for band_pixels in (1, 64, 65_536):
            dec.set_band_pixels(band_pixels)
            for threads in (1, 2):
                assert np.array_equal(dec.image(data, threads=threads), whole), (h, w, band_pixels, threads)
                assert np.array_equal(dec.image(data, threads=threads, short_side=48), small), (h, w, band_pixels)


def test_kept_buffers_give_the_same_pixels(default_pair, built):
    """Working buffers kept between calls (vlmc_decoder_set_cache_bytes): streams of two sizes
    decoded in turn, in full and at a consumer's size, on 1 and 2 threads, give the pixels they
    give with no cache; lowering the limit to 0 frees what is kept."""
    codec, _, model_file = default_pair
    streams = [codec.encode(load_image(SAMPLES[-1]), quality=40), codec.encode(load_image(SAMPLES[0])[:200, :300], quality=60)]
    dec = CStreamDecoder(built / "libvlmc_decoder.so", model_file)
    dec.set_cache_bytes(0)
    want = [(dec.image(data, threads=2), dec.image(data, threads=2, short_side=100)) for data in streams]
    assert dec.cached_bytes() == 0
    dec.set_cache_bytes(1 << 30)
    for threads in (1, 2):
        for data, (whole, small) in list(zip(streams, want)) * 2:
            assert np.array_equal(dec.image(data, threads=threads), whole)
            assert np.array_equal(dec.image(data, threads=threads, short_side=100), small)
    assert dec.cached_bytes() > 0
    dec.set_cache_bytes(0)
    assert dec.cached_bytes() == 0


def test_a_clang_build_decodes_what_the_default_build_decodes(default_pair, tmp_path):
    """The decoder and its C tests built with Clang too (GCC accepts code C++17 does not, e.g. a
    lambda capturing a structured binding): the ctest suite passes and the latents are the default
    build's bit for bit, the images within one level (float32 g_s may differ by an ULP), the
    streams it writes the Python encoder's byte for byte."""
    import shutil

    cc, cxx = shutil.which("clang"), shutil.which("clang++")
    if not (cc and cxx):
        pytest.skip("not available: clang is not installed (apt install clang)")
    lib_dir = build_c_decoder(ROOT, tmp_path / "clang", tests=True, compilers=(cc, cxx))
    assert "decoder_c_api" in _ctest(lib_dir)
    _check_the_picked_version(lib_dir)
    # (Clang 14 built the target_clones functions for AVX2 alone: no dispatch, an illegal instruction without it)
    _check_wide_registers_only_where_dispatched(lib_dir / "libvlmc_decoder.so")
    codec, dec, model_file = default_pair
    clang_dec = CStreamDecoder(lib_dir / "libvlmc_decoder.so", model_file)
    img = load_image(SAMPLES[0])
    for case in (dict(quality=37.5), dict(quality=80, short_side=200)):
        data = codec.encode(img, **case)
        assert np.array_equal(clang_dec.latents(data), dec.latents(data)), case
        ours, theirs = clang_dec.image(data, threads=2), dec.image(data, threads=2)
        assert ours.shape == theirs.shape and int(np.abs(ours.astype(int) - theirs).max()) <= 1, case
    # and it writes the Python encoder's streams too (vlmc_decoder_write_stream)
    prep = codec.prepare(img, 55)
    y, z = codec.analyse([prep.pixels], [prep.quality])
    (h, w) = prep.size
    assert clang_dec.write_stream(y[0].numpy(), z[0].numpy(), w, h, 55, pre_edited=True) == \
        codec.entropy_encode(y[0], z[0], prep)


def test_damaged_streams_fail_exactly_where_python_fails(tiny_pair, rng):
    """Random damage, with and without the CRC recomputed (so that it reaches the varints, the
    chunk table, rANS and h_s): C errs exactly when Python raises, and agrees on what decodes."""
    codec, dec, _ = tiny_pair
    streams = [codec.encode(smooth_image(rng, h, w), q) for h, w, q in [(64, 64, 50), (90, 70, 10)]]
    streams.append(codec.encode(smooth_image(rng, 130, 65), 40, short_side=32))  # a rescaled header
    r = random.Random(3)
    seen = {"both raised": 0, "both decoded": 0}
    for i in range(600):
        original = r.choice(streams)
        kind = i % 4
        if kind == 0:
            data = damage(original, "truncate", r)
        elif kind == 3:  # the payload alone, behind a valid CRC: reaches rANS and h_s
            data = damage(original, "flip", r, edits=1, payload_only=True, valid_crc=True)
        else:  # 1..3 flips anywhere, the CRC recomputed over them for kind 2
            data = damage(original, "flip", r, valid_crc=kind == 2)
        try:
            theirs = codec.entropy_decode(data).y_hat.numpy()
        except (BitstreamError, ModelMismatchError):
            theirs = None
        try:
            ours = dec.latents(data, raw=True)
        except CDecoderError as e:
            assert e.code in (-2, -3), e
            ours = None
        assert (ours is None) == (theirs is None), (i, kind)
        if ours is not None:
            assert np.array_equal(ours, theirs), i
        seen["both raised" if ours is None else "both decoded"] += 1
    # most damage is caught (the CRC; behind a valid one, rANS's end-of-chunk checks); what is not
    # decodes to the same latents on both sides
    assert seen["both raised"] > 300 and seen["both decoded"] > 3, seen


def test_errors_are_codes_and_messages(tiny_pair, second_model_path, built, tmp_path, rng):
    codec, dec, model_file = tiny_pair
    data = codec.encode(smooth_image(rng, 70, 90), 50)
    other = Codec(second_model_path).encode(smooth_image(rng, 70, 90), 50)
    with pytest.raises(CDecoderError, match="written by model") as e:
        dec.latents(other)
    assert e.value.code == -3 and other[6:14].hex() in e.value.message
    with pytest.raises(CDecoderError, match="bad magic"):
        dec.info(b"JUNK" + data[4:])
    with pytest.raises(CDecoderError, match="the latent needs") as e:
        dec.latents(data, out_count=10)
    assert e.value.code == -4
    small = CStreamDecoder(built / "libvlmc_decoder.so", model_file)
    small.set_max_pixels(70 * 90 - 1)
    with pytest.raises(CDecoderError, match="max_pixels") as e:
        small.latents(data)
    assert e.value.code == -7
    damaged = bytearray(Path(model_file).read_bytes())
    damaged[len(damaged) // 2] ^= 4
    (tmp_path / "damaged.vlmd").write_bytes(bytes(damaged))
    with pytest.raises(CDecoderError, match="damaged.vlmd: .*CRC-32") as e:  # (the file named)
        CStreamDecoder(built / "libvlmc_decoder.so", tmp_path / "damaged.vlmd")
    assert e.value.code == -6
    with pytest.raises(CDecoderError, match="cannot open .*missing.vlmd: No such file or directory"):
        CStreamDecoder(built / "libvlmc_decoder.so", tmp_path / "missing.vlmd")
    with pytest.raises(CDecoderError, match="num_threads"):
        dec.latents(data, threads=-1)
    with pytest.raises(CDecoderError, match="the image needs") as e:
        dec._check(dec._lib.vlmc_decoder_image(dec._handle, data, len(data), 0, 1, bytes(10), 10))
    assert e.value.code == -4
    # a null buffer is an invalid argument, whatever size comes with it (it was "too small":
    # "rgb holds 18900 bytes, the image needs 18900")
    for call, size in [(dec._lib.vlmc_decoder_image, 70 * 90 * 3), (dec._lib.vlmc_decoder_latents, 1 << 20)]:
        with pytest.raises(CDecoderError, match="is null") as e:
            dec._check(call(dec._handle, data, len(data), 0, 1, None, size))
        assert e.value.code == -1
    with pytest.raises(CDecoderError, match="unknown flags"):
        dec._check(dec._lib.vlmc_decoder_image(dec._handle, data, len(data), 4, 1, None, 0))
    # a device file is refused by its first bytes, not read until memory runs out
    if Path("/dev/zero").exists():
        with pytest.raises(CDecoderError, match="bad magic") as e:
            CStreamDecoder(built / "libvlmc_decoder.so", "/dev/zero")
        assert e.value.code == -6
    with pytest.raises(CDecoderError, match="CRC-32"):
        dec.image(data[:-5] + bytes([data[-5] ^ 1]) + data[-4:])


def test_over_long_varints_are_refused_as_python_refuses_them(tiny_pair, rng):
    """A width padded to two bytes behind a valid CRC: both decoders refuse it (one byte form per stream)."""
    from test_container import over_long_width

    codec, dec, _ = tiny_pair
    data = codec.encode(smooth_image(rng, 70, 90), 50)
    padded = over_long_width(data)
    with pytest.raises(BitstreamError, match="over-long"):
        codec.decode(padded)
    with pytest.raises(CDecoderError, match="width is not a valid varint .over-long") as e:
        dec.info(padded)
    assert e.value.code == -2


def test_bytes_after_a_streams_end_are_named_as_python_names_them(tiny_pair, rng):
    """Both decoders say "N bytes after the stream's end" of a stream with bytes appended (it was
    "corrupt or truncated"); a cut stream is still "corrupt or truncated"."""
    codec, dec, _ = tiny_pair
    data = codec.encode(smooth_image(rng, 70, 90), 50)
    message = r"corrupt stream: 3 bytes after the stream's end \(chunk table says \d+ payload bytes"
    with pytest.raises(BitstreamError, match=message):
        codec.decode(data + data[:3])
    with pytest.raises(CDecoderError, match=message) as e:
        dec.info(data + data[:3])
    assert e.value.code == -2
    with pytest.raises(CDecoderError, match="corrupt or truncated stream: chunk table says"):
        dec.info(data[:-1])


def test_a_decoder_opens_from_the_model_files_bytes(tiny_pair, built, rng):
    """vlmc_decoder_open_memory: the same decoder as from the file, the same checks on the bytes."""
    codec, dec, model_file = tiny_pair
    blob = Path(model_file).read_bytes()
    from_memory = CStreamDecoder(built / "libvlmc_decoder.so", blob)
    data = codec.encode(smooth_image(rng, 70, 90), 50)
    assert np.array_equal(from_memory.latents(data, raw=True), dec.latents(data, raw=True))
    assert np.array_equal(from_memory.image(data, threads=2), dec.image(data, threads=2))
    damaged = bytearray(blob)
    damaged[len(damaged) // 3] ^= 1
    with pytest.raises(CDecoderError, match="CRC-32") as e:
        CStreamDecoder(built / "libvlmc_decoder.so", bytes(damaged))
    assert e.value.code == -6
    with pytest.raises(CDecoderError, match="bad magic"):
        CStreamDecoder(built / "libvlmc_decoder.so", b"")


def test_a_model_file_whose_scale_bounds_are_out_of_order_is_refused(tiny_model_path, built):
    """The scale-table search assumes increasing bounds: a file with two swapped, or a NaN, is a bad
    model file (code −6), even with a valid CRC-32."""
    loaded = load_model(tiny_model_path)
    blob = decoder_model_bytes(loaded)
    bounds = loaded.model.gaussian_conditional.scale_table.detach().double().cpu().numpy()[:-1]
    raw = bounds.astype("<f8").tobytes()
    at = blob.find(raw)
    assert at > 0 and blob.find(raw, at + 1) < 0
    swapped = bounds.copy()
    swapped[[3, 4]] = swapped[[4, 3]]
    body = blob[:at] + swapped.astype("<f8").tobytes() + blob[at + len(raw):-4]
    with pytest.raises(CDecoderError, match="scale bounds not finite and increasing") as e:
        CStreamDecoder(built / "libvlmc_decoder.so", body + struct.pack("<I", zlib.crc32(body)))
    assert e.value.code == -6
    CStreamDecoder(built / "libvlmc_decoder.so", blob).close()  # (the unchanged file opens)
    table = loaded.model.gaussian_conditional.scale_table
    table[[3, 4]] = table[[4, 3]].clone()  # the exporter refuses such a model before writing a file
    with pytest.raises(ConfigError, match="scale table is not finite and increasing"):
        decoder_model_bytes(loaded)


def _last_bias(seq) -> np.ndarray:
    last = list(seq)[-1]
    return getattr(last, "conv", last).bias.detach().float().numpy().astype("<f4")


def test_a_model_file_with_a_parameter_not_finite_is_refused_where_it_is(tiny_model_path, built):
    """A NaN or an infinity anywhere among the file's floating-point values (a diverged training,
    a damaged file behind a recomputed CRC-32) is a bad model file (code −6) naming its offset,
    not garbage pixels: the entropy model's medians and scale bounds, g_s's last bias, and g_a's
    last bias in the encoder's section."""
    loaded = load_model(tiny_model_path)
    blob = decoder_model_bytes(loaded)
    model = loaded.model
    arrays = {
        "medians": model.entropy_bottleneck.medians().detach().float().numpy().astype("<f4"),
        "bounds": model.gaussian_conditional.scale_table.detach().double().numpy()[:-1].astype("<f8"),
        "g_s bias": _last_bias(optimize_for_inference(model.g_s)),  # (as exported: folded)
        "g_a bias": _last_bias(model.g_a),
    }
    for name, values in arrays.items():
        # (the random model's medians are all 0: they follow the header's 40 bytes)
        at = 40 if name == "medians" else blob.find(values.tobytes())
        assert blob[at:at + values.nbytes] == values.tobytes(), name
        assert name == "medians" or blob.find(values.tobytes(), at + 1) < 0, name
        for i, bad in ((0, np.nan), (len(values) - 1, np.inf), (len(values) // 2, -np.inf)):
            changed = values.copy()
            changed[i] = bad
            body = blob[:at] + changed.tobytes() + blob[at + values.nbytes:-4]
            where = at + i * values.itemsize
            with pytest.raises(CDecoderError, match=rf"a parameter is not finite \(offset {where}\)") as e:
                CStreamDecoder(built / "libvlmc_decoder.so", body + struct.pack("<I", zlib.crc32(body)))
            assert e.value.code == -6, name


def test_a_convolution_that_does_not_keep_the_size_is_refused_at_open(tiny_model_path, built, monkeypatch):
    """Every convolution of h_s, g_s, g_a and h_a keeps its input's size (an odd kernel k, padding
    (k - 1) / 2, as the models' and SubPixelConv's): the exporter refuses a model with one of
    padding 0 (a "valid" one; it wrote it), and a file holding one is a bad model file (code −6)
    naming the layer, at open. It was opened: g_a's short output failed encoding small images as an
    internal error and, in bands (above ~1 Mpx), was read out of bounds."""
    from vlmcodec.export import c_decoder

    def refused(blob: bytes, words: str) -> None:
        with pytest.raises(CDecoderError) as e:
            CStreamDecoder(built / "libvlmc_decoder.so", blob)
        assert e.value.code == -6 and words in e.value.message, e.value.message

    for net, i, words in (("g_a", -1, "g_a layer 6 convolution: padding 0x0 of a 3x3 kernel does not keep the size"),
                          ("h_a", 0, "h_a layer 0 convolution: padding 0x0 of a 3x3 kernel"),
                          ("h_s", -1, "decoder-model file: h_s layer 4: padding 0x0 of a 3x3 kernel")):
        loaded = load_model(tiny_model_path)
        getattr(loaded.model, net)[i].padding = (0, 0)
        with pytest.raises(ConfigError, match="with padding 0x0 does not keep the size"):
            decoder_model_bytes(loaded)
        with monkeypatch.context() as m:  # such a file, written without the exporter's check
            m.setattr(c_decoder, "_check_keeps_size", lambda *a: None)
            blob = decoder_model_bytes(loaded)
        refused(blob, words)
    # g_s (its transposed convolutions become SubPixelConv's 3x3 ones): its first conv's padding set to 0
    loaded = load_model(tiny_model_path)
    blob = decoder_model_bytes(loaded)
    first = optimize_for_inference(loaded.model.g_s)[0].conv
    at = blob.find(first.weight.detach().float().numpy().astype("<f4").tobytes())
    assert at > 0 and struct.unpack_from("<9I", blob, at - 36)[2:] == (3, 3, 1, 1, 1, 1, 1)  # kh, kw, sh, sw, ph, pw
    body = blob[:at - 12] + struct.pack("<II", 0, 0) + blob[at - 4:-4]
    refused(body + struct.pack("<I", zlib.crc32(body)), "decoder-model file: g_s layer 0: padding 0x0 of a 3x3 kernel")
    CStreamDecoder(built / "libvlmc_decoder.so", blob).close()  # (the unchanged file opens)


def test_opening_decoders_declares_the_librarys_types_once(tiny_model_path, built):
    """ctypes keeps every POINTER type for good: the types declared in each CStreamDecoder kept
    ~7 KB per decoder opened (or failed to open), a server opening one per request grew."""
    import ctypes
    import gc

    blob = decoder_model_bytes(load_model(tiny_model_path))
    CStreamDecoder(built / "libvlmc_decoder.so", blob).close()
    gc.collect()
    kept = len(ctypes._pointer_type_cache)
    for _ in range(50):
        CStreamDecoder(built / "libvlmc_decoder.so", blob).close()
        with pytest.raises(CDecoderError):
            CStreamDecoder(built / "libvlmc_decoder.so", b"not a model file")
    gc.collect()
    assert len(ctypes._pointer_type_cache) == kept


def test_model_file_is_deterministic_and_names_both_fingerprints(tiny_model_path):
    loaded = load_model(tiny_model_path)
    blob = decoder_model_bytes(loaded)
    assert blob == decoder_model_bytes(load_model(tiny_model_path))
    assert blob[:8] == b"VLMCDEC\0" and blob[12:20] == loaded.fingerprint[:8] and blob[20:28] == loaded.stream_fingerprint[:8]
    assert struct.unpack("<I", blob[-4:])[0] == zlib.crc32(blob[:-4])


def _status_and_peak(command: list[str]) -> tuple[int, int, str]:
    """(exit status, peak memory in KiB, standard error) of ``command``, measured in a process
    whose only child it is."""
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(r.stderr)")
    run = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, timeout=60)
    first, _, stderr = run.stdout.partition("\n")
    status, peak_kib = map(int, first.split())
    return status, peak_kib, stderr


def test_command_line_tool(tiny_pair, built, tmp_path, rng):
    codec, _, model_file = tiny_pair
    data = codec.encode(smooth_image(rng, 50, 80), 30)
    (tmp_path / "s.vlmc").write_bytes(data)
    tool = str(built / "vlmc_decode_latents")
    run = subprocess.run([tool, str(model_file), str(tmp_path / "s.vlmc"), str(tmp_path / "y.f32"), "--raw"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert (info["width"], info["height"], info["fingerprint"]) == (80, 50, data[6:14].hex())
    y = np.fromfile(tmp_path / "y.f32", np.float32).reshape(info["channels"], info["latent_height"], info["latent_width"])
    assert np.array_equal(y, codec.entropy_decode(data).y_hat.numpy())
    run = subprocess.run([tool, str(model_file), str(tmp_path / "s.vlmc"), "--image", str(tmp_path / "x.ppm")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.ppm")), CStreamDecoder(
        built / "libvlmc_decoder.so", model_file).image(data))
    (tmp_path / "bad.vlmc").write_bytes(data[:-1])
    run = subprocess.run([tool, str(model_file), str(tmp_path / "bad.vlmc"), str(tmp_path / "y2.f32")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.startswith("vlmc_decode_latents: error: corrupt or truncated")
    assert not (tmp_path / "y2.f32").exists()
    # options: bands (the same pixels down to one latent row per band), and bad values refused by name
    stream, image = str(tmp_path / "s.vlmc"), str(tmp_path / "b.ppm")
    run = subprocess.run([tool, str(model_file), stream, "--image", str(tmp_path / "c.ppm"), "--short-side", "32"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr  # 50 x 80 → 32 x 51 (80 · 0.64 = 51.2)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "c.ppm")), CStreamDecoder(
        built / "libvlmc_decoder.so", model_file).image(data, short_side=32))
    assert Image.open(tmp_path / "c.ppm").size == (51, 32)
    fields = json.loads(run.stdout)  # the stream's size, and the image's (it said the stream's alone)
    assert (fields["width"], fields["height"], fields["image_width"], fields["image_height"]) == (80, 50, 51, 32)
    # 0: the original size, as vlmc_encode, the C API and vlmcodec decode take it (it was refused)
    run = subprocess.run([tool, str(model_file), stream, "--image", str(tmp_path / "o.ppm"), "--short-side", "0"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and (tmp_path / "o.ppm").read_bytes() == (tmp_path / "x.ppm").read_bytes(), run.stderr
    for band in ("0", "1"):
        run = subprocess.run([tool, str(model_file), stream, "--image", image, "--band-pixels", band, "--threads", "2"],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0 and (tmp_path / "b.ppm").read_bytes() == (tmp_path / "x.ppm").read_bytes(), run.stderr
    for args, message in [(["--threads", "abc"], "--threads takes a whole number (0..256; 0: up to 4), got 'abc'"),
                          (["--threads", "257"], "--threads takes a whole number"),
                          (["--threads", "-1"], "--threads takes a whole number"),
                          (["--max-pixels", "0"], "--max-pixels takes a whole number (at least 1)"),
                          (["--band-pixels", "1e6"], "--band-pixels takes a whole number"),
                          (["--short-side", "15"], "--short-side takes a whole number (a consumer's shorter side, at least 16; 0: the original size)"),
                          (["--coded-size", "--short-side", "32"], "--coded-size and --short-side exclude each other"),
                          (["--image"], "--image needs a value"),
                          (["--frobnicate"], "unknown option --frobnicate")]:
        run = subprocess.run([tool, str(model_file), stream, str(tmp_path / "y3.f32"), *args], capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 2 and f"vlmc_decode_latents: error: {message}" in run.stderr, (args, run.stderr)
    run = subprocess.run([tool, str(model_file), stream, str(tmp_path / "y3.f32"), "--max-pixels", "100"],
                         capture_output=True, text=True, timeout=60)  # 80x50 is more than 100 pixels
    assert run.returncode == 2 and "max_pixels" in run.stderr, run.stderr
    # a large file of something else is refused from its first bytes: it was read whole first (a
    # sparse 2 GB file: 2 GB of memory); measured in a process whose only child is the tool
    with open(tmp_path / "big.mp4", "wb") as f:
        f.truncate(2 << 30)
    status, peak_kib, stderr = _status_and_peak([tool, str(model_file), str(tmp_path / "big.mp4"), str(tmp_path / "y4.f32")])
    assert status == 2 and "vlmc_decode_latents: error: not a .vlmc stream (bad magic)" in stderr, stderr
    assert peak_kib < 200_000, peak_kib
    run = subprocess.run([tool, str(model_file), str(tmp_path / "missing.vlmc"), str(tmp_path / "y4.f32")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and f"cannot read the stream file {tmp_path / 'missing.vlmc'}: No such file" in run.stderr
    # modes that exclude each other, or options of a mode not asked for, are refused, not ignored
    for args, message in [([str(tmp_path / "y5.f32"), "--info"], "--info writes nothing"),
                          (["--info", "--image", str(tmp_path / "i.ppm")], "--info writes nothing"),
                          ([str(tmp_path / "y5.f32"), "--short-side", "32"], "--short-side size --image's output"),
                          (["--image", str(tmp_path / "i.ppm"), "--raw"], "--raw is of the latents OUT.f32"),
                          # PPM bytes under another format's name: refused (they were written as asked)
                          (["--image", str(tmp_path / "i.png")], "--image writes a binary PPM, not .png: name it .ppm"),
                          (["--image", str(tmp_path / "i.v2.JPeG")], "--image writes a binary PPM, not .JPeG")]:
        run = subprocess.run([tool, str(model_file), stream, *args], capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and message in run.stderr, (args, run.stderr)
    assert not (tmp_path / "y5.f32").exists() and not (tmp_path / "i.ppm").exists()
    assert not (tmp_path / "i.png").exists() and not (tmp_path / "i.v2.JPeG").exists()
    piped = subprocess.run([tool, str(model_file), "/dev/stdin", "--image", str(tmp_path / "p.ppm")], timeout=60,
                           input=Path(stream).read_bytes(), capture_output=True)  # a pipe: opened once (see vlmc_encode's)
    assert piped.returncode == 0 and (tmp_path / "p.ppm").read_bytes().startswith(b"P6"), piped.stderr
    for name in ("i.pnm", "i.png.ppm", "i"):  # PPM's names, and names of no other format, are written
        run = subprocess.run([tool, str(model_file), stream, "--image", str(tmp_path / name)], capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 0 and (tmp_path / name).read_bytes().startswith(b"P6"), (name, run.stderr)


def test_the_tools_help_unreadable_inputs_and_a_stdout_that_cannot_be_written(tiny_pair, built, tmp_path, rng):
    """--help was an unknown option (exit 2); a folder given as an input was read as an empty file
    (the wrong error), and a failed read part way gave a 1-byte buffer announced as the bytes read;
    a JSON result that could not reach stdout (/dev/full) still exited 0; vlmc_encode read a large
    file of something else whole before it looked at it."""
    import os

    codec, _, model_file = tiny_pair
    model = str(model_file)
    from PIL import Image

    Image.fromarray(smooth_image(rng, 40, 56)).save(tmp_path / "in.ppm")
    (tmp_path / "s.vlmc").write_bytes(codec.encode(smooth_image(rng, 40, 56), 40))
    tools = {name: str(built / name) for name in ("vlmc_decode_latents", "vlmc_write_stream", "vlmc_encode")}
    for name, tool in tools.items():
        for flag in ("--help", "-h"):
            run = subprocess.run([tool, flag], capture_output=True, text=True, timeout=60)
            assert run.returncode == 0 and run.stdout.startswith(f"usage: {name} ") and not run.stderr, run
    folder = str(tmp_path)
    for args, message in [([tools["vlmc_decode_latents"], model, folder, str(tmp_path / "y.f32")],
                           f"cannot read the stream file {folder}: Is a directory"),
                          ([tools["vlmc_encode"], model, folder, str(tmp_path / "o.vlmc")],
                           f"cannot read the input image {folder}: Is a directory"),
                          ([tools["vlmc_write_stream"], model, folder, folder, str(tmp_path / "o.vlmc"), "--size",
                            "64x64", "--quality", "50"], f"cannot read {folder}: Is a directory")]:
        run = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and message in run.stderr, (args, run.stderr)
    if os.path.exists("/dev/full"):
        for args in ([tools["vlmc_decode_latents"], model, str(tmp_path / "s.vlmc"), "--info"],
                     [tools["vlmc_encode"], model, str(tmp_path / "in.ppm"), str(tmp_path / "o.vlmc")],
                     [tools["vlmc_write_stream"], model, "--gain", "50", str(tmp_path / "g.f32")]):
            with open("/dev/full", "w") as full:
                run = subprocess.run(args, stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
            assert run.returncode == 2 and "cannot write to standard output" in run.stderr, (args, run.stderr)
    with open(tmp_path / "big.mp4", "wb") as f:  # a sparse 2 GB file of no image
        f.truncate(2 << 30)
    status, peak_kib, stderr = _status_and_peak([tools["vlmc_encode"], model, str(tmp_path / "big.mp4"),
                                                 str(tmp_path / "o2.vlmc")])
    assert status == 2 and "not a binary PPM or PGM" in stderr and peak_kib < 200_000, stderr


def _run_fed(args: list[str], head: bytes, folder: Path) -> subprocess.CompletedProcess:
    """``args`` with ``head`` then zeros without end on its standard input (a pipe), until it exits
    (its output in files: closing the pipe to read them would end the input)."""
    with open(folder / "fed.out", "w+b") as out, open(folder / "fed.err", "w+b") as err:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=out, stderr=err)

        def feed() -> None:
            try:
                proc.stdin.write(head)
                while True:
                    proc.stdin.write(bytes(1 << 16))
            except (BrokenPipeError, ValueError, OSError):
                pass

        threading.Thread(target=feed, daemon=True).start()
        try:
            proc.wait(timeout=60)
        finally:
            proc.kill()
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess(args, proc.returncode, out.read(), err.read().decode())


def test_the_tools_options_values_dashes_and_endless_inputs(tiny_pair, built, tmp_path, rng):
    """An option's value that is another option was taken as the value (--image --info wrote a
    file named --info); an argument with one dash was a path (-o, -); the printed quality was the
    argument's, not the stream's (50.005 printed 50.01 beside a stream of 50.00); vlmc_encode had
    no --max-pixels; an input that never ends (a pipe, /dev/zero) was read until memory ran out."""
    codec, _, model_file = tiny_pair
    model = str(model_file)
    from PIL import Image

    image = smooth_image(rng, 40, 56)
    Image.fromarray(image).save(tmp_path / "in.ppm")
    (tmp_path / "s.vlmc").write_bytes(codec.encode(image, 40))
    dec, enc, write = (str(built / n) for n in ("vlmc_decode_latents", "vlmc_encode", "vlmc_write_stream"))
    ppm, stream = str(tmp_path / "in.ppm"), str(tmp_path / "s.vlmc")
    for args, message in [([dec, model, stream, "--image", "--info"], "--image needs a value"),
                          ([dec, model, stream, str(tmp_path / "y.f32"), "--threads", "--raw"], "--threads needs a value"),
                          ([enc, model, ppm, str(tmp_path / "o.vlmc"), "--quality", "--no-pre-edit"],
                           "--quality needs a value"),
                          ([write, model, "--gain", "--quality", str(tmp_path / "g.f32")], "--gain needs a value"),
                          ([dec, model, stream, "-o"], "unknown option -o (a path that begins with '-': ./-o)"),
                          ([dec, model, stream, "--image", "-o"], "unknown option -o"),
                          ([dec, model, stream, "--image", "-"], "'-' is not read as standard input or output here"),
                          ([enc, model, ppm, "-"], "'-' is not read as standard input or output here"),
                          ([write, model, "-", "z.f32", "o.vlmc"], "'-' is not read as standard input or output here"),
                          ([enc, model, ppm, str(tmp_path / "o.vlmc"), "--quality", "0x20"], "--quality takes a number"),
                          ([enc, model, ppm, str(tmp_path / "o.vlmc"), "--max-pixels", "2239"],
                           "image of 56x40 pixels, more than max_pixels=2239 (--max-pixels)")]:
        run = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert run.returncode == 2 and message in run.stderr, (args, run.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ppm", "s.vlmc"]  # nothing written
    run = subprocess.run([enc, model, ppm, str(tmp_path / "o.vlmc"), "--max-pixels", "2240", "--quality", "50.005"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and '"quality": 50.00,' in run.stdout, run.stderr
    assert (tmp_path / "o.vlmc").read_bytes() == codec.encode(image, 50)
    run = subprocess.run([enc, model, ppm, str(tmp_path / "z.vlmc"), "--quality", "-0"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and '"quality": 0.00,' in run.stdout, run.stdout
    run = subprocess.run([write, model, "--gain", "50.005", str(tmp_path / "g.f32")], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0 and run.stdout.startswith('{"quality": 50.00,'), run.stdout
    # inputs without end: refused at a bound (the pixels --max-pixels allows; the latents --size takes)
    run = _run_fed([enc, model, "/dev/stdin", str(tmp_path / "e.vlmc"), "--max-pixels", "1000"], b"P6\n4 4\n255\n",
                   tmp_path)
    assert run.returncode == 2 and "holds more bytes than a PPM of --max-pixels pixels" in run.stderr, run.stderr
    run = _run_fed([dec, model, "/dev/stdin", "--info", "--max-pixels", "1000"], b"VLMC", tmp_path)
    assert run.returncode == 2 and "more bytes than a stream of --max-pixels pixels can" in run.stderr, run.stderr
    if os.path.exists("/dev/zero"):
        run = subprocess.run([write, model, "/dev/zero", "/dev/zero", str(tmp_path / "w.vlmc"), "--size", "64x64",
                              "--quality", "50"], capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and "/dev/zero holds more than the " in run.stderr, run.stderr
        assert "float32s the coded size given takes" in run.stderr, run.stderr


_COUNT_THREADS_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
static atomic_long started;
int pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*f)(void *), void *arg) {
    static int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
    if (!real) real = (int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))dlsym(RTLD_NEXT, "pthread_create");
    atomic_fetch_add(&started, 1);
    return real(t, a, f, arg);
}
long threads_started(void) { return atomic_load(&started); }
"""

_MIXED_THREADS_CPP = r"""
#include <dlfcn.h>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <thread>
#include <vector>
#include "vlmc_decoder.h"
int main(int, char **argv) {
    auto count = (long (*)())dlsym(RTLD_DEFAULT, "threads_started");
    std::ifstream f(argv[2], std::ios::binary);
    std::vector<unsigned char> s((std::istreambuf_iterator<char>(f)), {});
    for (int first : {1, 3}) {  // a fresh decoder: eight calls at once of another thread count, then 2-thread calls
        vlmc_decoder *dec = nullptr;
        vlmc_stream_info info;
        if (!count || vlmc_decoder_open(argv[1], &dec) || vlmc_decoder_stream_info(dec, s.data(), s.size(), &info))
            return 3;
        const size_t n = size_t(info.channels) * info.latent_height * info.latent_width;
        auto decode = [&](int threads) {
            std::vector<float> y(n);
            if (vlmc_decoder_latents(dec, s.data(), s.size(), 0, threads, y.data(), n)) std::abort();
        };
        std::vector<std::thread> calls;
        std::atomic<int> ready{0};
        for (int i = 0; i < 8; ++i)
            calls.emplace_back([&] {
                for (++ready; ready < 8;) std::this_thread::yield();  // (all start together)
                for (int k = 0; k < 3; ++k) decode(first);
            });
        for (auto &t : calls) t.join();
        decode(2);  // (its pool is made once)
        const long before = count();
        for (int k = 0; k < 20; ++k) decode(2);
        std::printf("%d %ld\n", first, count() - before);
        vlmc_decoder_free(dec);
    }
}
"""


def test_kept_workers_serve_a_process_that_mixes_thread_counts(tiny_pair, built, tmp_path, rng):
    """Eight idle pools of another thread count (or one-thread "pools" with no workers) filled the
    kept places: every later 2-thread call then started and joined its worker anew (20 calls, 20
    threads). The most recently used pools are kept now, and one-thread calls keep none."""
    import shutil

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("not available: no C compiler (cc) to build the thread-counting shim")
    codec, _, model_file = tiny_pair
    (tmp_path / "s.vlmc").write_bytes(codec.encode(smooth_image(rng, 384, 512), 50))  # (calls long enough to overlap)
    (tmp_path / "count.c").write_text(_COUNT_THREADS_C)
    run = subprocess.run([cc, "-shared", "-fPIC", str(tmp_path / "count.c"), "-o", str(tmp_path / "count.so"), "-ldl"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    program = build_cpp_program(_MIXED_THREADS_CPP, built, tmp_path / "mixed")
    run = subprocess.run([str(program), str(model_file), str(tmp_path / "s.vlmc")], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "LD_PRELOAD": str(tmp_path / "count.so")})
    assert run.returncode == 0, run.stderr
    started = dict(map(int, line.split()) for line in run.stdout.split("\n") if line)
    assert started == {1: 0, 3: 0}, started  # (after the 3-thread calls: 20, one a call)


def test_export_command(tiny_model_path, tmp_path, capsys):
    from vlmcodec.cli import main

    assert main(["export", "--format", "c-decoder", "-o", str(tmp_path / "c"), "--model", str(tiny_model_path)]) == 0
    written = tmp_path / "c" / "decoder_model.vlmd"
    assert written.read_bytes() == decoder_model_bytes(load_model(tiny_model_path))
    assert "decoder_model.vlmd" in capsys.readouterr().out
    assert main(["export", "--format", "c-decoder", "-o", str(tmp_path / "d"), "--fp16"]) == 2
    assert "tensorrt only" in capsys.readouterr().err
    # --decode-only: version 2, without the encoder's networks
    assert main(["export", "--format", "c-decoder", "-o", str(tmp_path / "e"), "--model", str(tiny_model_path),
                 "--decode-only"]) == 0
    small = (tmp_path / "e" / "decoder_model.vlmd").read_bytes()
    assert small == decoder_model_bytes(load_model(tiny_model_path), version=2) and len(small) < len(written.read_bytes())
    assert "encodes images" not in capsys.readouterr().out
    assert main(["info", str(tmp_path / "e" / "decoder_model.vlmd")]) == 0  # (it said "before version 3: re-export it")
    assert "encodes images  no (exported with --decode-only: export without it to encode)" in capsys.readouterr().out
    assert main(["export", "--format", "onnx", "-o", str(tmp_path / "f"), "--decode-only"]) == 2
    assert "c-decoder only" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="writes 2"):
        export_c_decoder(load_model(tiny_model_path), tmp_path / "g", version=1)


def test_the_c_packages_version_is_the_python_packages():
    """find_package(vlmcodec 0.1) and the pkg-config files take the version from CMakeLists.txt;
    it must be the Python package's."""
    import re

    import vlmcodec

    match = re.search(r"project\(vlmcodec VERSION ([0-9.]+)", (ROOT / "CMakeLists.txt").read_text())
    assert match and match.group(1) == vlmcodec.__version__


def test_the_libraries_export_their_c_api_alone_under_a_versioned_soname(built):
    """libvlmc_decoder exported 84 symbols: the rANS core's C++ internals (which a host's own
    copy of the core then replaced: its streams failed to decode) and std template instances
    among them; and an unversioned SONAME, which tells no ABI change from an update."""
    import re
    import shutil

    import vlmcodec

    nm, readelf = shutil.which("nm"), shutil.which("readelf")
    if nm is None or readelf is None:
        pytest.skip("not available: binutils (nm, readelf) to list a library's exported symbols")
    major_minor = ".".join(vlmcodec.__version__.split(".")[:2])
    for lib, prefix in ((built / "libvlmc_decoder.so", "vlmc_decoder_"),
                        (built.parent / "rans" / "libvlmc_rans.so", "vlmc_rans_")):
        run = subprocess.run([nm, "-D", "--defined-only", str(lib)], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        names = [line.split()[-1] for line in run.stdout.splitlines() if line.strip()]
        assert len(names) > 5 and [n for n in names if not n.startswith(prefix)] == [], names
        run = subprocess.run([readelf, "-d", str(lib)], capture_output=True, text=True, timeout=60)
        assert re.search(rf"SONAME\).*\[{lib.name}\.{re.escape(major_minor)}\]", run.stdout), run.stdout


def test_the_c_constants_are_pythons():
    """The stream-format and fixed-point constants the C decoder copies must be the Python
    decoder's (a change on one side alone would break streams, or bit-exactness, silently)."""
    import re

    from vlmcodec import codec as codec_module
    from vlmcodec.entropy import exact_hyper
    from vlmcodec import rate_control
    from vlmcodec.export import c_decoder

    source = (ROOT / "kernels" / "decoder" / "vlmc_decoder.cpp").read_text()
    found = {}
    for name, expr in re.findall(r"constexpr \w+ (k\w+) = ([0-9.ul<> ]+)[;,]", source):
        found[name] = eval(re.sub(r"(?<=\d)(ull|u)\b", "", expr), {"__builtins__": {}})  # digits, '.', '<<' only
    for name, expr in re.findall(r", (k\w+) = ([0-9.ul<> ]+)(?=[;,])", source):
        found[name] = eval(re.sub(r"(?<=\d)(ull|u)\b", "", expr), {"__builtins__": {}})
    expected = {"kStreamVersion": container.FORMAT_VERSION, "kModelVersion": c_decoder.MODEL_FILE_VERSION,
                "kMaxDim": container.MAX_DIM, "kMaxChunks": container.MAX_CHUNKS,
                "kMaxChunkBytes": container.MAX_CHUNK_BYTES, "kFlagRescaled": container.FLAG_RESCALED,
                "kFlagPreEdited": container.FLAG_PRE_EDITED, "kOldestModelVersion": min(c_decoder.READABLE_VERSIONS),
                "kGrid": rate_control.GRID, "kTolerance": rate_control.DEFAULT_TOLERANCE,
                "kSlack": rate_control.DEFAULT_SLACK, "kMaxProbes": rate_control.MAX_PROBES,
                "kKnownFlags": container._KNOWN_FLAGS, "kSymbolsPerChunk": codec_module.SYMBOLS_PER_CHUNK,
                "kMaxYChunks": codec_module.MAX_Y_CHUNKS, "kActScale": 2.0 ** exact_hyper.ACT_FRAC_BITS,
                "kExactLimit": exact_hyper._EXACT_LIMIT, "kLeakyNum": exact_hyper.LEAKY_NUM,
                "kLeakyDen": 2.0 ** exact_hyper.LEAKY_SHIFT}
    assert {k: found.get(k) for k in expected} == expected


USER_PROGRAM = r"""
#include <vlmc_decoder.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    static unsigned char data[1 << 22];
    vlmc_decoder *dec;
    vlmc_stream_info info;
    FILE *f = fopen(argv[2], "rb");
    size_t n = fread(data, 1, sizeof data, f), bytes, i;
    unsigned long long sum = 0;
    unsigned char *rgb;
    fclose(f);
    if (vlmc_decoder_open(argv[1], &dec) != VLMC_DEC_OK || vlmc_decoder_stream_info(dec, data, n, &info) != VLMC_DEC_OK)
        return fprintf(stderr, "%s\n", vlmc_decoder_last_error()), 1;
    bytes = (size_t)info.width * info.height * 3;
    rgb = malloc(bytes);
    if (vlmc_decoder_image(dec, data, n, 0, 2, rgb, bytes) != VLMC_DEC_OK)
        return fprintf(stderr, "%s\n", vlmc_decoder_last_error()), 1;
    for (i = 0; i < bytes; ++i) sum += rgb[i];
    printf("%u %u %llu\n", info.width, info.height, sum);
    free(rgb);
    vlmc_decoder_free(dec);
    return 0;
}
"""


# the same through the C++ interface (vlmc_decoder.hpp): the image, the image a 256-px consumer
# sees, the latents' count, and the code a truncated stream throws
USER_PROGRAM_CPP = r"""
#include <vlmc_decoder.hpp>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <numeric>
int main(int argc, char **argv) {
    std::ifstream f(argv[2], std::ios::binary);
    const std::vector<uint8_t> data{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
    try {
        const vlmc::Decoder dec(argv[1]);
        const vlmc::Image full = dec.image(data, 2), small = dec.image_at(data, 256, 2);
        auto sum = [](const vlmc::Image &im) { return std::accumulate(im.rgb.begin(), im.rgb.end(), 0ull); };
        std::ifstream m(argv[1], std::ios::binary);  // the same model opened from its bytes
        const vlmc::Decoder from_memory = vlmc::Decoder::from_memory(
            std::vector<uint8_t>{std::istreambuf_iterator<char>(m), std::istreambuf_iterator<char>()});
        if (from_memory.image(data, 2).rgb != full.rgb) return std::fprintf(stderr, "from memory differs\n"), 1;
        std::printf("%u %u %llu %u %u %llu %zu", full.width, full.height, sum(full), small.width, small.height,
                    sum(small), dec.latents(data).size());
        try {
            dec.image(data.data(), data.size() - 1);
        } catch (const vlmc::DecodeError &e) {
            std::printf(" %d\n", e.code());
        }
    } catch (const vlmc::DecodeError &e) {
        std::fprintf(stderr, "%s (%d)\n", e.what(), e.code());
        return 1;
    }
    return 0;
}
"""


def test_installed_library_builds_a_users_program(built, default_pair, tmp_path):
    """`cmake --install` lays out headers, libraries, the tool, pkg-config and CMake package
    files; a C program built against the installed files alone (by hand, with `pkg-config`, and
    as a CMake project with `find_package(vlmcodec)`) decodes a stream to the library's pixels,
    and so does a C++ one through vlmc_decoder.hpp (its exceptions included)."""
    import shutil

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("not available: no C compiler (cc) to build a program against the installed library")
    codec, dec, model_file = default_pair
    prefix = tmp_path / "prefix"
    run = subprocess.run([find_cmake(), "--install", str(built.parents[1]), "--prefix", str(prefix)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lib = next(d for d in (prefix / "lib", prefix / "lib64") if (d / "libvlmc_decoder.so").exists())
    assert all((prefix / "include" / h).exists() for h in ("vlmc_decoder.h", "vlmc_decoder.hpp", "vlmc_rans.h"))
    assert all((prefix / "bin" / t).exists() for t in ("vlmc_decode_latents", "vlmc_write_stream", "vlmc_encode"))
    (tmp_path / "user.c").write_text(USER_PROGRAM)
    run = subprocess.run([cc, "-std=c99", str(tmp_path / "user.c"), f"-I{prefix / 'include'}", f"-L{lib}",
                          "-lvlmc_decoder", f"-Wl,-rpath,{lib}", "-o", str(tmp_path / "user")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    data = codec.encode(load_image(SAMPLES[0]), quality=45)
    (tmp_path / "s.vlmc").write_bytes(data)
    run = subprocess.run([str(tmp_path / "user"), str(model_file), str(tmp_path / "s.vlmc")], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["768", "512", str(int(dec.image(data, threads=2).astype(np.uint64).sum()))]
    run = subprocess.run([str(prefix / "bin" / "vlmc_decode_latents"), str(model_file), str(tmp_path / "s.vlmc"),
                          "--info"], capture_output=True, text=True, timeout=60)  # finds its library (RPATH)
    assert run.returncode == 0 and json.loads(run.stdout)["quality"] == 45.0, run.stderr
    from PIL import Image

    Image.fromarray(load_image(SAMPLES[0])[:64, :96]).save(tmp_path / "small.ppm")
    run = subprocess.run([str(prefix / "bin" / "vlmc_encode"), str(model_file), str(tmp_path / "small.ppm"),
                          str(tmp_path / "small.vlmc"), "--quality", "45"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and json.loads(run.stdout)["width"] == 96, run.stderr  # the installed encoder too
    assert dec.info((tmp_path / "small.vlmc").read_bytes())["quality"] == 45.0
    # the same program built the two other ways a C/C++ project would: pkg-config, find_package
    expected = ["768", "512", str(int(dec.image(data, threads=2).astype(np.uint64).sum()))]

    def run_user(program: Path) -> None:
        out = subprocess.run([str(program), str(model_file), str(tmp_path / "s.vlmc")], capture_output=True,
                             text=True, timeout=60, env={"LD_LIBRARY_PATH": str(lib)})
        assert out.returncode == 0 and out.stdout.split() == expected, out.stderr

    pkg_config = shutil.which("pkg-config")
    if pkg_config:  # pkg-config --cflags --libs vlmc_decoder, the .pc file found from the prefix alone
        flags = subprocess.run([pkg_config, "--cflags", "--libs", "vlmc_decoder"], capture_output=True, text=True,
                               env={"PKG_CONFIG_PATH": str(lib / "pkgconfig")}, timeout=60)
        assert flags.returncode == 0 and "-lvlmc_decoder" in flags.stdout, flags.stderr
        built_pc = subprocess.run([cc, "-std=c99", str(tmp_path / "user.c"), *flags.stdout.split(), "-o",
                                   str(tmp_path / "user_pc")], capture_output=True, text=True, timeout=120)
        assert built_pc.returncode == 0, built_pc.stderr
        run_user(tmp_path / "user_pc")
    # find_package(vlmcodec CONFIG) and the imported target vlmcodec::vlmc_decoder
    project = tmp_path / "user_project"
    project.mkdir()
    (project / "user.c").write_text(USER_PROGRAM)
    (project / "user_cpp.cpp").write_text(USER_PROGRAM_CPP)
    (project / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\nproject(user LANGUAGES C CXX)\n"
        "find_package(vlmcodec 0.1 CONFIG REQUIRED)\nadd_executable(user user.c)\n"
        "target_link_libraries(user PRIVATE vlmcodec::vlmc_decoder)\n"
        "add_executable(user_cpp user_cpp.cpp)\ntarget_compile_features(user_cpp PRIVATE cxx_std_17)\n"
        "target_link_libraries(user_cpp PRIVATE vlmcodec::vlmc_decoder)\n")
    for cmd in ([find_cmake(), "-S", str(project), "-B", str(project / "build"), f"-DCMAKE_PREFIX_PATH={prefix}"],
                [find_cmake(), "--build", str(project / "build")]):
        step = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert step.returncode == 0, step.stdout[-2000:] + step.stderr[-2000:]
    run_user(project / "build" / "user")
    out = subprocess.run([str(project / "build" / "user_cpp"), str(model_file), str(tmp_path / "s.vlmc")],
                         capture_output=True, text=True, timeout=60, env={"LD_LIBRARY_PATH": str(lib)})
    small = dec.image(data, threads=2, short_side=256)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [*expected, "384", "256", str(int(small.astype(np.uint64).sum())),
                                  str(dec.latents(data).size), "-2"]  # -2: VLMC_DEC_ERR_CORRUPT


def test_info_reads_a_decoder_model_file(tiny_model_path, tmp_path, capsys):
    from vlmcodec.cli import main

    path = export_c_decoder(load_model(tiny_model_path), tmp_path)
    assert main(["info", "--json", str(path)]) == 0
    d = json.loads(capsys.readouterr().out)
    loaded = load_model(tiny_model_path)
    assert (d["model"], d["N"], d["M"], d["levels"], d["bytes"]) == (loaded.fingerprint[:8].hex(), 16, 24, 3,
                                                                     path.stat().st_size)
    assert d["format_version"] == 3 and d["writes_streams"] is True and d["encodes_images"] is True
    text = main(["info", str(path)]) == 0 and capsys.readouterr().out
    assert text and "writes streams  yes" in text and "encodes images  yes" in text
    damaged = bytearray(path.read_bytes())
    damaged[100] ^= 1
    (tmp_path / "bad.vlmd").write_bytes(bytes(damaged))
    assert main(["info", str(tmp_path / "bad.vlmd")]) == 2
    assert "CRC-32" in capsys.readouterr().err


def test_the_wrapper_says_which_vector_version_runs(default_pair):
    """CStreamDecoder.vector_isa(): the version this process's convolutions run, as the C library
    reports it; on x86-64 Linux the widest the CPU's flags allow (AVX2 if VLMC_NO_AVX512 is set)."""
    import os

    from vlmcodec.export.c_decoder import cpu_vector_isa

    isa = default_pair[1].vector_isa()
    assert isa in ("avx512", "avx2", "portable")
    want = cpu_vector_isa(no_avx512=os.environ.get("VLMC_NO_AVX512", "") not in ("", "0"))
    assert want is None or isa == want, (isa, want)


def test_a_small_stream_announcing_a_large_image_fails_before_its_buffers_are_touched(built, default_pair, tmp_path):
    """A stream of a few hundred bytes whose header (CRC valid) announces 8000×8000 and whose z
    does not decode: the image's latent buffer was zero-filled first (~116 MB resident for the
    default model, its pages touched; Python's decoder refuses it at ~0.1 MB)."""
    import dataclasses
    import sys

    from vlmcodec.bitstream.container import pack, unpack

    codec, _, model = default_pair
    header, z_chunks, y_chunks = unpack(codec.encode(load_image(SAMPLES[0])[:48, :48], 30))
    big = pack(dataclasses.replace(header, width=8000, height=8000), z_chunks, [b""] * 64)
    stream = tmp_path / "big.vlmc"
    stream.write_bytes(big)
    script = ("import resource, sys\n"
              "from vlmcodec.export.c_decoder import CStreamDecoder\n"
              "dec = CStreamDecoder(sys.argv[1], sys.argv[2])\n"
              "data = open(sys.argv[3], 'rb').read()\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
              "try:\n"
              "    dec.image(data, threads=1)\n"
              "except Exception as e:\n"
              "    print(type(e).__name__, str(e)[:80])\n"
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n")
    run = subprocess.run([sys.executable, "-c", script, str(built / "libvlmc_decoder.so"), str(model), str(stream)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    message, faults = run.stdout.splitlines()
    assert "z payload does not decode" in message
    # pages touched (minor faults): the default model's latent for 8000×8000 is 128 MB, 32 768 pages
    assert int(faults) < 8000, run.stdout


def test_broken_y_chunks_fail_before_the_exact_h_s_in_both_decoders(tiny_pair, rng):
    """A hostile stream's y chunks (8 zero bytes: no rANS start an encoder writes) were looked at
    only after the exact h_s, whose cost it made both decoders pay first (62 KB at 8000x8000: 9.5 s
    and 1.4 GB in Python, 3.8 s and 1.3 GB in C). Here z's symbols are also too large for the exact
    h_s: a decoder that runs h_s first says so; one that checks the y chunks first names them."""
    from vlmcodec.kernels import rans

    codec, dec, _ = tiny_pair
    stream = codec.encode(smooth_image(rng, 64, 64), 50)
    header, z_chunks, y_chunks = container.unpack(stream)
    idx = np.ascontiguousarray(codec._z_indexes(1, 1).ravel())  # (64x64: one z position a channel)
    huge = rans.encode(np.full(idx.size, 2**30, np.int32), idx, codec.tables["z"], num_chunks=1)
    forged = container.pack(header, list(huge), [bytes(8)] * len(y_chunks))
    says = "y payload does not decode .*initial state out of range"
    with pytest.raises(BitstreamError, match=says):
        codec.decode(forged)
    with pytest.raises(CDecoderError, match=says):
        dec.image(forged)
    with pytest.raises(BitstreamError, match="z values out of range"):  # (the z alone: h_s refuses it)
        codec.decode(container.pack(header, list(huge), y_chunks))


def test_header_fields_out_of_bounds_behind_a_valid_crc_are_refused_as_python_refuses_them(tiny_pair, rng):
    """A width of 0, the rescaled flag with a coded size equal to the image's, a second z chunk:
    each passes the CRC and is refused by both decoders (code -2, the same words)."""
    from test_container import with_header

    codec, dec, _ = tiny_pair
    data = codec.encode(smooth_image(rng, 70, 90), 50)
    h, z, y = container.unpack(data)
    assert data[14] == 90 and data[15] == 70  # (one-byte width and height)

    def width_zero(head: bytearray) -> bytearray:
        head[14] = 0
        return head

    def rescaled_to_its_own_size(head: bytearray) -> bytearray:
        head[5] |= 2
        return head[:16] + bytes([90, 70]) + head[16:]

    cases = [(with_header(data, width_zero), r"width = 0 is outside \[1, "),
             (with_header(data, rescaled_to_its_own_size), "rescaled flag set but the coded size equals the image size"),
             (container.pack(h, [z[0][:1], z[0][1:]], y), "chunk count does not match the image size")]
    for damaged, message in cases:
        with pytest.raises(BitstreamError):
            codec.decode(damaged)
        with pytest.raises(CDecoderError, match=message) as e:
            dec.latents(damaged)
        assert e.value.code == -2


def test_buffers_one_element_short_and_a_model_file_with_bytes_before_its_crc_are_refused(tiny_pair, built, tmp_path,
                                                                                        rng):
    """A latent buffer one float short and an image buffer one byte short: -4 (a check one off
    would write past them); a decoder-model file with 4 bytes more before its valid CRC: -6,
    "trailing bytes"."""
    codec, dec, model_file = tiny_pair
    data = codec.encode(smooth_image(rng, 70, 90), 50)
    i = dec.info(data)
    need = i["channels"] * i["latent_height"] * i["latent_width"]
    with pytest.raises(CDecoderError, match="the latent needs") as e:
        dec.latents(data, out_count=need - 1)
    assert e.value.code == -4
    assert dec.latents(data, out_count=need).size == need
    rgb = np.empty(70 * 90 * 3, np.uint8)
    with pytest.raises(CDecoderError, match="the image needs") as e:
        dec._check(dec._lib.vlmc_decoder_image(dec._handle, data, len(data), 0, 1, rgb.ctypes.data, rgb.size - 1))
    assert e.value.code == -4
    body = Path(model_file).read_bytes()[:-4] + bytes(4)
    (tmp_path / "longer.vlmd").write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    with pytest.raises(CDecoderError, match="trailing bytes") as e:
        CStreamDecoder(built / "libvlmc_decoder.so", tmp_path / "longer.vlmd")
    assert e.value.code == -6


def test_the_tools_refuse_signed_counts_over_long_sizes_and_ppm_dimensions_that_wrap(tiny_pair, built, tmp_path, rng):
    """--max-pixels -1 (strtoull wraps it to 2^64 - 1), a --size longer than the tools read (one
    character more wrote past their buffer), a PPM width of 2^64 + 1 (wrapped to 1): refused,
    exit 2, nothing written."""
    codec, _, model_file = tiny_pair
    model = str(model_file)
    (tmp_path / "s.vlmc").write_bytes(codec.encode(smooth_image(rng, 40, 56), 40))
    (tmp_path / "big.ppm").write_bytes(b"P6\n18446744073709551617 1\n255\n\x10\x20\x30")
    dec, enc, write = (str(built / n) for n in ("vlmc_decode_latents", "vlmc_encode", "vlmc_write_stream"))
    long_size = "0" * 31 + "1x1"
    for args, message in [([dec, model, "s.vlmc", "y.f32", "--max-pixels", "-1"],
                           "--max-pixels takes a whole number (at least 1), got '-1'"),
                          ([dec, model, "s.vlmc", "y.f32", "--band-pixels", " 5"], "--band-pixels takes a whole number"),
                          ([write, model, "y.f32", "z.f32", "o.vlmc", "--size", long_size], "--size takes WIDTHxHEIGHT"),
                          ([enc, model, "big.ppm", "o.vlmc"], "the PPM header is malformed")]:
        run = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert run.returncode == 2 and message in run.stderr, (args, run.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.ppm", "s.vlmc"]


# (a script's start: the decoder of argv[1:3] opened, and against_a_guard_page; argv[3]: the
# streams of _GUARDED_DECODES; test_c_gaps opens model files after it)
_GUARD_PAGE_SETUP = r"""
import ctypes, json, mmap, sys
import numpy as np
from vlmcodec.export.c_decoder import CStreamDecoder

lib_path, model_path, streams_path = sys.argv[1:4]
dec = CStreamDecoder(lib_path, model_path)
lib, libc = dec._lib, ctypes.CDLL(None)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
page = mmap.PAGESIZE
areas = []

def against_a_guard_page(data):
    # data copied to end exactly where a page no access is allowed to begins
    size = (len(data) // page + 2) * page
    area = mmap.mmap(-1, size)
    base = ctypes.addressof(ctypes.c_char.from_buffer(area))
    assert libc.mprotect(base + size - page, page, 0) == 0
    start = base + size - page - len(data)
    ctypes.memmove(start, data, len(data))
    areas.append(area)
    return ctypes.cast(start, ctypes.c_char_p)
"""
_GUARDED_DECODES = _GUARD_PAGE_SETUP + r"""
codes = {}
out = np.empty(1 << 20, np.float32)
blob, pos = open(streams_path, "rb").read(), 0
for n in map(int, sys.stdin.read().split()):  # the streams' lengths, in order
    data, pos = blob[pos:pos + n], pos + n
    rc = lib.vlmc_decoder_latents(dec._handle, against_a_guard_page(data), n, 0, 1, out.ctypes.data, out.size)
    codes[rc] = codes.get(rc, 0) + 1
print(json.dumps(codes))
"""


@pytest.mark.skipif(os.name != "posix", reason="not available: the guard page needs mmap and mprotect (POSIX)")
def test_no_damaged_stream_is_read_past_its_end(tiny_pair, built, tmp_path, rng):
    """Every prefix of a stream, and the stream with its last y chunk cut to each shorter length
    behind a valid CRC (the rANS decoder and the chunk header then run out of bytes), each placed
    to end where a page that may not be read begins: each is refused (no read past its end, which
    would kill the process), the whole stream decoded. (A bound one byte off reads past the end
    and decodes on, the same error after: only a guard page or a sanitizer sees it.)"""
    codec, _, model_file = tiny_pair
    data = codec.encode(smooth_image(rng, 40, 56), 50)
    h, z, y = container.unpack(data)
    streams = [data[:k] for k in range(len(data))]
    streams += [container.pack(h, z, y[:-1] + [y[-1][:c]]) for c in range(len(y[-1]))]
    streams.append(data)
    (tmp_path / "streams").write_bytes(b"".join(streams))
    run = subprocess.run([sys.executable, "-c", _GUARDED_DECODES, str(built / "libvlmc_decoder.so"), str(model_file),
                          str(tmp_path / "streams")], input=" ".join(str(len(s)) for s in streams),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])  # (-11: a read past a stream's end)
    codes = {int(rc): n for rc, n in json.loads(run.stdout).items()}
    assert codes.pop(0) == 1 and sum(codes.values()) == len(streams) - 1 and all(c < 0 for c in codes), codes
