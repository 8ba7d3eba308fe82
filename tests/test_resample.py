"""Consumer-scale coding (``short_side``): sizes, streams, decode, Engine, container, CLI, bench."""

import numpy as np
import pytest

from vlmcodec import resample
from vlmcodec.bitstream import container
from vlmcodec.cli import main
from vlmcodec.errors import BitstreamError, ConfigError
from vlmcodec.runtime import Engine

from conftest import smooth_image

FP = bytes(range(8))


@pytest.mark.parametrize("hw,side,expected", [
    ((512, 768), 256, (256, 384)),
    ((768, 512), 256, (384, 256)),
    ((512, 768), 224, (224, 336)),
    ((100, 3000), 16, (16, 480)),
    ((200, 200), 256, (200, 200)),   # never upscaled
    ((256, 999), 256, (256, 999)),   # already at the consumer's scale
    ((512, 768), None, (512, 768)),
])
def test_coded_size(hw, side, expected):
    assert resample.coded_size(*hw, side) == expected


@pytest.mark.parametrize("bad", [8, 15, -1, 3.5, True, "256"])
def test_short_side_validated(bad):
    with pytest.raises(ValueError, match="short_side"):
        resample.check_short_side(bad)


def test_resample_shapes_and_identity():
    yy, xx = np.mgrid[0:90, 0:120] / 40.0
    img = np.stack([np.sin(yy), np.cos(xx), np.sin(xx + yy)], -1).__mul__(100).__add__(128).astype(np.uint8)
    small = resample.downscale(img, (45, 60))
    assert small.shape == (45, 60, 3) and small.dtype == np.uint8
    assert resample.downscale(img, (90, 120)) is img
    big = resample.upscale_uint8(small, (90, 120))
    assert big.shape == img.shape
    # a low-frequency image survives the round trip to within a grey level
    assert np.abs(big.astype(int) - img.astype(int)).mean() < 1


def test_rescaled_stream_decodes_to_original_size(tiny_codec, rng):
    img = smooth_image(rng, 130, 200)
    full = tiny_codec.encode(img, 50)
    small = tiny_codec.encode(img, 50, short_side=64)
    h, _, _ = container.unpack(small)
    assert h.rescaled and h.coded_hw == (64, 98) and (h.height, h.width) == (130, 200)
    assert len(small) < len(full)
    out = tiny_codec.decode(small)
    assert out.shape == img.shape and out.dtype == np.uint8
    # the decode is exactly: the coded-size reconstruction, upsampled in float, then rounded
    from test_codec import reference_decode

    ref_small = reference_decode(tiny_codec, resample.downscale(img, (64, 98)), 50.0)
    ref_up = resample.upscale_uint8(ref_small, (130, 200))
    assert np.abs(out.astype(int) - ref_up.astype(int)).max() <= 1  # float vs uint8 input to the upsampler


def test_short_side_at_or_above_the_image_changes_nothing(tiny_codec, rng):
    img = smooth_image(rng, 64, 80)
    assert tiny_codec.encode(img, 30, short_side=64) == tiny_codec.encode(img, 30)
    assert not container.unpack(tiny_codec.encode(img, 30, short_side=200))[0].rescaled


def test_codec_default_and_per_call_override(tiny_model_path, rng):
    from vlmcodec import Codec

    c = Codec(tiny_model_path, short_side=32)
    img = smooth_image(rng, 96, 64)
    assert container.unpack(c.encode(img, 40))[0].coded_hw == (48, 32)
    assert not container.unpack(c.encode(img, 40, short_side=0))[0].rescaled  # 0: full size
    assert container.unpack(c.encode(img, 40, short_side=48))[0].coded_hw == (72, 48)
    with pytest.raises(ConfigError, match="short_side must be None, 0 .* or an integer >= 16, got 4"):
        Codec(tiny_model_path, short_side=4)


def test_batch_and_engine_equal_single(tiny_codec, rng):
    imgs = [smooth_image(rng, h, w) for h, w in [(128, 128), (130, 70), (64, 64), (200, 96)]]
    sides = [64, 32, None, 48]
    singles = [tiny_codec.encode(im, 60, short_side=s) for im, s in zip(imgs, sides)]
    with Engine(tiny_codec, max_batch=4, max_delay_ms=5, workers=2) as engine:
        futs = [engine.submit_encode(im, 60, short_side=s) for im, s in zip(imgs, sides)]
        assert [f.result(timeout=60) for f in futs] == singles
        decs = [engine.submit_decode(s).result(timeout=60) for s in singles]
    for d, s, im in zip(decs, singles, imgs):
        assert np.array_equal(d, tiny_codec.decode(s)) and d.shape == im.shape
    assert [im.shape for im in tiny_codec.decode_batch(singles)] == [im.shape for im in imgs]


def test_container_rescaled_fields_and_damage():
    hdr = container.Header(FP, 768, 512, 50.0, coded_width=384, coded_height=256)
    data = container.pack(hdr, [b"z"], [b"y" * 10])
    h, _, _ = container.unpack(data)
    assert h.flags & container.FLAG_RESCALED and h.coded_hw == (256, 384) and h.rescaled
    assert container.pack(h, [b"z"], [b"y" * 10]) == data  # an unpacked header packs back the same
    with pytest.raises(ValueError, match="coded size"):
        container.pack(container.Header(FP, 64, 64, 50.0, coded_width=65), [b"z"], [b"y"])
    # a coded size larger than the image, or a flag without a real rescale, is refused (CRC fixed up)
    for cw, ch in ((769, 256), (768, 512)):
        head = bytearray(b"VLMC" + bytes([1, container.FLAG_RESCALED]) + FP)
        head += container._varint(768) + container._varint(512) + container._varint(cw) + container._varint(ch)
        head += (5000).to_bytes(2, "little") + container._varint(1) + container._varint(1)
        head += container._varint(1) + container._varint(1)
        import zlib

        crc = zlib.crc32(b"zy", zlib.crc32(bytes(head)))
        with pytest.raises(BitstreamError, match="coded"):
            container.unpack(bytes(head) + crc.to_bytes(4, "little") + b"zy")
    # every truncation of a rescaled header raises
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            container.unpack(data[:n])


def test_cli_short_side(tiny_model_path, tmp_path, capsys, rng):
    from PIL import Image

    src = tmp_path / "a.png"
    Image.fromarray(smooth_image(rng, 128, 192)).save(src)
    out = tmp_path / "a.vlmc"
    assert main(["encode", str(src), "-o", str(out), "--model", str(tiny_model_path), "--short-side", "64",
                 "--quiet"]) == 0
    assert "consumer's scale" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    assert "192x128 (coded at 96x64)" in capsys.readouterr().out
    assert main(["decode", str(out), "-o", str(tmp_path / "b.png"), "--model", str(tiny_model_path), "--quiet"]) == 0
    assert Image.open(tmp_path / "b.png").size == (192, 128)
    with pytest.raises(SystemExit) as e:
        main(["encode", str(src), "--short-side", "4"])
    assert e.value.code == 2
    assert "expected 0 (the original size) or an integer >= 16, got '4'" in capsys.readouterr().err


def test_cli_short_side_zero_is_the_original_size(tiny_model_path, tmp_path, capsys, rng):
    """``--short-side 0`` is the original size on encode and decode, as the API's ``short_side=0``
    (the CLI refused it)."""
    from PIL import Image

    src = tmp_path / "a.png"
    Image.fromarray(smooth_image(rng, 128, 192)).save(src)
    out, plain = tmp_path / "a.vlmc", tmp_path / "plain.vlmc"
    model = ["--model", str(tiny_model_path), "--quiet"]
    assert main(["encode", str(src), "-o", str(out), "--short-side", "0", *model]) == 0
    assert main(["encode", str(src), "-o", str(plain), *model]) == 0
    assert out.read_bytes() == plain.read_bytes()
    capsys.readouterr()
    assert main(["decode", str(out), "-o", str(tmp_path / "b.png"), "--short-side", "0", *model]) == 0
    assert Image.open(tmp_path / "b.png").size == (192, 128)
    for bad in ("-1", "x", "", "15"):
        with pytest.raises(SystemExit) as e:
            main(["decode", str(out), "--short-side", bad, *model])
        assert e.value.code == 2
        assert "expected 0 (the original size) or an integer >= 16" in capsys.readouterr().err


def test_bench_consumer_scale_codecs(rng):
    from vlmcodec.bench.rd import make_codec

    img = smooth_image(rng, 96, 160)
    webp = make_codec("webp@32")
    assert webp.name == "webp@32" and webp.settings()["short_side"] == 32
    data = webp.encode(img, 50)
    assert data[:2] == container._varint(160)[:2]  # the original size leads the file
    assert webp.decode(data).shape == img.shape
    assert len(data) < len(make_codec("webp").encode(img, 50))
    assert make_codec("vlmcodec@256").name == "vlmcodec@256"
    for bad in ("webp@x", "webp@4", "nope@256"):
        with pytest.raises(ValueError):
            make_codec(bad)
