"""CodecSet: several models behind one object, each stream decoded by the model that wrote it."""

import numpy as np
import pytest

from vlmcodec import Codec, CodecSet
from vlmcodec.errors import BitstreamError, ConfigError, ModelMismatchError

from conftest import smooth_image


@pytest.fixture(scope="module")
def pair(tiny_model_path, second_model_path):
    return Codec(tiny_model_path), Codec(second_model_path)


def test_streams_of_either_model_decode_as_their_own_codec_decodes_them(pair, rng):
    new, old = pair
    codecs = CodecSet([new, old])
    assert codecs.default is new and codecs.fingerprints == [new.fingerprint.hex(), old.fingerprint.hex()]
    assert len(codecs) == 2 and list(codecs) == [new, old]
    images = [smooth_image(rng, 32, 48), smooth_image(rng, 40, 40), smooth_image(rng, 32, 48)]
    streams = [new.encode(images[0], 50), old.encode(images[1], 50), old.encode(images[2], 30)]
    with pytest.raises(ModelMismatchError):  # the premise: one codec alone cannot
        new.decode(streams[1])
    for data in streams:
        assert codecs.codec_for(data) is (new if data is streams[0] else old)
        np.testing.assert_array_equal(codecs.decode(data), codecs.codec_for(data).decode(data))
    batch = codecs.decode_batch(streams)  # grouped by model, returned in order
    for got, data in zip(batch, streams, strict=True):
        np.testing.assert_array_equal(got, codecs.codec_for(data).decode(data))


def test_encode_uses_the_default_or_the_model_named(pair, rng):
    new, old = pair
    codecs = CodecSet([new, old])
    img = smooth_image(rng, 32, 48)
    assert codecs.encode(img, 50) == new.encode(img, 50)
    assert codecs.encode(img, 50, model=old.fingerprint.hex()[:5].upper()) == old.encode(img, 50)
    assert codecs.encode_batch([img, img], [30, 60], model=old.fingerprint.hex()) == old.encode_batch([img, img], [30, 60])
    budget = (len(old.encode(img, 0)) + len(old.encode(img, 100))) // 2
    assert codecs.encode_to_size(img, budget, model=old.fingerprint.hex()) == old.encode_to_size(img, budget)
    refined = old.encode(img, 50, refine=2)
    assert refined != old.encode(img, 50)  # the steps ran
    assert codecs.encode(img, 50, model=old.fingerprint.hex(), refine=2) == refined
    assert codecs.encode_batch([img], [50], model=old.fingerprint.hex(), refine=2) == [refined]
    assert codecs.encode_to_size(img, budget, refine=2) == new.encode_to_size(img, budget, refine=2)
    stream = old.encode(img, 50)
    np.testing.assert_array_equal(codecs.decode(stream, short_side=16), old.decode(stream, short_side=16))
    np.testing.assert_array_equal(codecs.decode_batch([stream], short_side=16)[0], old.decode(stream, short_side=16))
    with pytest.raises(ConfigError, match="at least 4 hex digits"):
        codecs.encode(img, 50, model="ab")
    with pytest.raises(ModelMismatchError, match="names no model held"):
        codecs.encode(img, 50, model="zzzz")


def test_foreign_and_damaged_streams_and_bad_sets_are_refused(pair, tiny_model_path, rng):
    new, old = pair
    only_new = CodecSet([tiny_model_path], threads=1)  # paths open as Codecs, with the options given
    assert only_new.default.fingerprint == new.fingerprint and only_new.default.threads == 1
    stream = old.encode(smooth_image(rng, 32, 48), 50)
    with pytest.raises(ModelMismatchError, match=f"written by model {old.fingerprint.hex()}.*{new.fingerprint.hex()}"):
        only_new.decode(stream)
    with pytest.raises(ModelMismatchError):  # refused before any stream of the batch is decoded
        only_new.decode_batch([new.encode(smooth_image(rng, 32, 48), 50), stream])
    with pytest.raises(BitstreamError, match="bad magic"):
        only_new.decode(b"\x89PNG\r\n\x1a\n" + bytes(20))
    # a bit flipped in the fingerprint of a held model's stream named a model that does not exist
    # (ModelMismatchError, a server's 409 "serve --extra-model"): it is a damaged stream
    damaged = bytearray(new.encode(smooth_image(rng, 32, 48), 50))
    damaged[9] ^= 0x10
    with pytest.raises(BitstreamError, match="CRC"):
        only_new.decode(bytes(damaged))
    with pytest.raises(ConfigError, match="given twice"):
        CodecSet([new, Codec(tiny_model_path)])
    with pytest.raises(ConfigError, match="at least one"):
        CodecSet([])
    with pytest.raises(ConfigError, match="Codecs or model paths"):
        CodecSet([42])


def test_a_model_is_named_by_its_full_fingerprint_or_its_bytes_too(pair, tiny_model_path):
    """`vlmcodec info` prints a model file's 64-digit fingerprint and Codec.fingerprint is 8 bytes:
    both were "names no model held" (the bytes' repr was compared as text)."""
    new, old = pair
    codecs = CodecSet([new, old])
    full = old.fingerprint.hex() + "0f" * 24  # (any 64 digits starting with the stream's 16)
    assert codecs.named(full) is old and codecs.named(full.upper()) is old
    assert codecs.named(old.fingerprint) is old and codecs.named(bytearray(new.fingerprint)) is new
    assert codecs.named(old.fingerprint.hex()[:6].encode()) is old  # ASCII hex as bytes
    with pytest.raises(ModelMismatchError, match="names no model held"):
        codecs.named(b"\x00" * 8)
    for bad in (0x1d43, 12.5, ["abcd"]):
        with pytest.raises(ConfigError, match="model must be a hex fingerprint"):
            codecs.named(bad)
    with pytest.raises(ConfigError, match="give a hex fingerprint"):
        codecs.named(b"\xff\xfe\xfd\xfc")


def test_an_ambiguous_prefix_lists_only_the_models_it_matches(pair):
    new, old = pair
    a = new.fingerprint.hex()
    fake = CodecSet([new, old])
    twin = bytes.fromhex(a[:6] + "ffffffffff")  # a second fingerprint sharing 6 digits with new's
    fake._codecs[twin] = old
    with pytest.raises(ConfigError, match=rf"matches several models \({a}, {twin.hex()}\): give more digits"):
        fake.named(a[:5])


def test_cli_extra_models_repeated_or_empty(pair, tiny_model_path, second_model_path, tmp_path, rng, capsys):
    """A repeated --extra-model is named in a warning and held once (serve refused it only after
    warming every engine, naming no file); an empty one is refused (it meant --model's file)."""
    import shutil

    from vlmcodec.cli import main

    new, old = pair
    data = old.encode(smooth_image(rng, 32, 48), 50)
    (tmp_path / "s.vlmc").write_bytes(data)
    copy = tmp_path / "copy.safetensors"
    shutil.copy(second_model_path, copy)
    out = tmp_path / "out.png"
    assert main(["decode", str(tmp_path / "s.vlmc"), "-o", str(out), "--model", str(tiny_model_path),
                 "--extra-model", str(second_model_path), "--extra-model", str(copy), "--quiet"]) == 0
    assert out.exists()
    assert (f"--extra-model {copy} is the same model ({old.fingerprint.hex()}) as --extra-model "
            f"{second_model_path}: held once") in capsys.readouterr().err
    main(["decode", str(tmp_path / "s.vlmc"), "-o", str(tmp_path / "o2.png"), "--model", str(tiny_model_path),
          "--extra-model", str(tiny_model_path), "--quiet"])
    assert f"is the same model ({new.fingerprint.hex()}) as --model {tiny_model_path}" in capsys.readouterr().err
    assert main(["decode", str(tmp_path / "s.vlmc"), "-o", str(out), "--force", "--model", str(tiny_model_path),
                 "--extra-model", "", "--quiet"]) == 2
    assert "--extra-model takes a model file's path, got an empty one" in capsys.readouterr().err


def test_remote_codec_sends_a_codecs_fingerprint_as_hex():
    from vlmcodec.codec_set import model_name as _model_name

    assert _model_name(bytes.fromhex("1d4393f53405b238")) == "1d4393f53405b238"
    assert _model_name(b"1d43") == "1d43" and _model_name("1D43") == "1D43"
    for bad in (0x1d43, None.__class__):
        with pytest.raises(ConfigError, match="model must be a hex fingerprint"):
            _model_name(bad)


def test_a_model_is_named_by_four_hex_digits_at_least(pair):
    """?model= / named(): a three-digit prefix is refused (too easily another model's), four name it."""
    codecs = CodecSet(list(pair))
    with pytest.raises(ConfigError, match="at least 4 hex digits"):
        codecs.named(codecs.fingerprints[0][:3])
    assert codecs.named(codecs.fingerprints[0][:4]) is codecs.default
