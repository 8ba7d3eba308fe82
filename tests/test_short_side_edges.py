"""``short_side``'s edges: the full-size downscale of an encode at the consumer's scale is checked
for memory before it runs; a falsy value that is not the integer 0 is refused; 0 means the original
size when decoding too (as in the C library); ``entropy_decode`` validates it."""

import http.client

import numpy as np
import pytest

from vlmcodec import Codec, memory, resample
from vlmcodec.bitstream import container
from vlmcodec.errors import ConfigError, ResourceError
from vlmcodec.runtime import Engine, RemoteCodec

from conftest import serving, smooth_image

_MIB = 1 << 20


@pytest.fixture(scope="module")
def codec(tiny_model_path):
    return Codec(tiny_model_path)


@pytest.fixture(scope="module")
def stream(codec):
    return codec.encode(smooth_image(np.random.default_rng(0), 48, 80), 50)


# -- defect 1: the downscale to the coded size is checked before it runs ----------------------


def test_encode_at_a_consumers_scale_refuses_a_huge_original_before_downscaling(tiny_model_path, monkeypatch):
    img = np.broadcast_to(np.uint8(7), (8000, 6000, 3))  # 48 Mpx, no memory of its own

    def reached(*args, **kwargs):
        raise AssertionError("downscale ran before the memory check")

    monkeypatch.setattr(resample, "downscale", reached)
    monkeypatch.setattr(memory, "available_memory", lambda: 256 * _MIB)  # the 256-px encode alone fits
    big = Codec(tiny_model_path, max_pixels=8000 * 6000)
    with pytest.raises(ResourceError, match="downscaling"):
        big.encode(img, 50, short_side=256)
    with Engine(big, max_batch=2, max_delay_ms=0) as engine:
        assert isinstance(engine.submit_encode(img, 50, short_side=256).exception(timeout=60), ResourceError)


def test_memory_needed_at_a_consumers_scale_counts_the_originals_pixels(codec):
    sizes = [(3000, 4000), (6000, 8000), (8192, 16384)]
    needs = [codec.memory_needed(h, w, short_side=256) for h, w in sizes]
    assert needs[0] < needs[1] < needs[2]
    for (h, w), need in zip(sizes, needs):  # at least the float32 copy of the original
        assert need >= 12 * h * w


def test_memory_needed_is_the_downscale_checks_threshold(codec, monkeypatch):
    img = np.broadcast_to(np.uint8(7), (3000, 1000, 3))
    need = codec.memory_needed(3000, 1000, short_side=32)
    monkeypatch.setattr(memory, "available_memory", lambda: need - 1)
    with pytest.raises(ResourceError, match="downscaling"):
        codec.encode(img, 50, short_side=32)
    monkeypatch.setattr(memory, "available_memory", lambda: need)
    assert container.unpack(codec.encode(img, 50, short_side=32))[0].coded_hw == (96, 32)


# -- defect 2: a falsy value that is not the integer 0 is refused ---------------------------


@pytest.mark.parametrize("value", [False, 0.0, "", np.False_])
def test_a_falsy_short_side_other_than_0_is_refused(codec, value):
    img = smooth_image(np.random.default_rng(1), 40, 40)
    with pytest.raises(ConfigError, match="short_side"):
        codec.encode(img, 50, short_side=value)
    with pytest.raises(ConfigError, match="short_side"):
        codec.memory_needed(512, 768, short_side=value)
    with Engine(codec, max_batch=2, max_delay_ms=0) as engine:
        assert isinstance(engine.submit_encode(img, 50, short_side=value).exception(timeout=60), ConfigError)
    with pytest.raises(ConfigError, match="short_side"):
        codec.decode(codec.encode(img, 50), short_side=value)


def test_short_side_0_still_means_the_full_size_on_encode(tiny_model_path, codec):
    img = smooth_image(np.random.default_rng(2), 64, 96)
    assert Codec(tiny_model_path, short_side=32).encode(img, 50, short_side=0) == codec.encode(img, 50)
    assert codec.memory_needed(512, 768, short_side=0) == codec.memory_needed(512, 768)
    # the codec's own setting reads 0 as every call does (it refused it: "must be None or >= 16")
    full = Codec(tiny_model_path, short_side=0)
    assert full.short_side is None and full.encode(img, 50) == codec.encode(img, 50)
    with pytest.raises(ConfigError, match="short_side"):
        Codec(tiny_model_path, short_side=False)


# -- defect 3: short_side=0 decodes at the original size ------------------------------------


def test_decode_short_side_0_is_the_original_size(codec, stream):
    full = codec.decode(stream)
    assert np.array_equal(codec.decode(stream, short_side=0), full)
    assert np.array_equal(codec.decode_batch([stream], 0)[0], full)
    with Engine(codec, max_batch=2, max_delay_ms=0) as engine:
        assert np.array_equal(engine.submit_decode(stream, short_side=0).result(timeout=60), full)


def test_http_and_remote_decode_short_side_0_is_the_original_size(tiny_model_path, codec, stream):
    full = codec.decode(stream)
    with serving(tiny_model_path) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
        try:
            conn.request("POST", "/decode?format=raw&short_side=0", body=stream)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        assert resp.status == 200
        assert np.array_equal(np.frombuffer(raw, np.uint8).reshape(full.shape), full)
        assert np.array_equal(RemoteCodec(server.url).decode(stream, short_side=0), full)


# -- defect 4: entropy_decode validates short_side ------------------------------------------


@pytest.mark.parametrize("value", [3, True, False, -1, 2.5, "256"])
def test_entropy_decode_refuses_a_bad_short_side(codec, stream, value):
    with pytest.raises(ConfigError, match="short_side"):
        codec.entropy_decode(stream, value)


def test_entropy_decode_short_side_0_and_none_are_the_original_size(codec, stream):
    assert codec.entropy_decode(stream, 0).out_hw == codec.entropy_decode(stream).out_hw == (48, 80)
    assert codec.entropy_decode(stream, 16).out_hw == (16, 27)
