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
