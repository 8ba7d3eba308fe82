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
from vlmcodec.export.c_decoder import CDecoderError, CStreamDecoder, decoder_model_bytes, export_c_decoder
from vlmcodec.image_io import load_image
from vlmcodec.models.checkpoint import load_model

from conftest import smooth_image

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "assets" / "samples").glob("*.png"))


def _writer(build, model_path, tmp_path_factory) -> tuple[CStreamDecoder, Path]:
    out = export_c_decoder(load_model(model_path), tmp_path_factory.mktemp("writer_model"))
    return CStreamDecoder(build / "libvlmc_decoder.so", out), out


@pytest.fixture(scope="module")
def default_writer(c_decoder_build, tmp_path_factory):
    from vlmcodec.codec import default_model_path

    return Codec(), _writer(c_decoder_build, default_model_path(), tmp_path_factory)[0]


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
    codec, writer = default_writer
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
    for codec, writer in (tiny_writer, default_writer):
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


def test_version_1_model_file_decodes_but_cannot_write(c_decoder_build, tiny_writer, tiny_model_path, rng, tmp_path):
    """A decoder-model file of version 1 (before the gains) still decodes; writing says why not."""
    codec, writer = tiny_writer
    loaded = load_model(tiny_model_path)
    blob = decoder_model_bytes(loaded)[:-4]
    gain = loaded.model.gain.detach().abs().float().numpy().astype("<f4").tobytes()
    at = blob.find(gain)
    assert at > 0 and blob.find(gain, at + 1) == -1
    old = blob[:8] + struct.pack("<I", 1) + blob[12:at] + blob[at + len(gain):]
    old += struct.pack("<I", zlib.crc32(old))
    v1 = CStreamDecoder(c_decoder_build / "libvlmc_decoder.so", old)
    data = codec.encode(smooth_image(rng, 64, 96), quality=30)
    np.testing.assert_array_equal(v1.latents(data), writer.latents(data))
    assert not v1.can_write() and writer.can_write()
    with pytest.raises(CDecoderError) as e:
        v1.write_stream(np.zeros((24, 4, 6), np.float32), np.zeros((16, 1, 2), np.float32), 96, 64, 30)
    assert e.value.code == -6 and "re-export" in e.value.message
    with pytest.raises(CDecoderError) as e:
        v1.gain(30)
    assert e.value.code == -6
    # and a file of a version after this library's is refused, naming the versions it reads
    newer = blob[:8] + struct.pack("<I", 3) + blob[12:]
    with pytest.raises(CDecoderError, match="reads 1 to 2"):
        CStreamDecoder(c_decoder_build / "libvlmc_decoder.so", newer + struct.pack("<I", zlib.crc32(newer)))
