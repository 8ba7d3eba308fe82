"""``AsyncRemoteCodec``: RemoteCodec's calls awaited from asyncio code."""

import asyncio
import warnings

import numpy as np
import pytest

from conftest import serving, smooth_image
from vlmcodec import Codec, ImageError, RefineFallbackWarning
from vlmcodec.runtime import AsyncRemoteCodec


def test_concurrent_awaited_calls_give_the_codecs_bytes_and_pixels(tiny_model_path, rng):
    images = [smooth_image(rng, 32, 48 + 16 * i) for i in range(4)]
    codec = Codec(tiny_model_path)

    async def go(url):
        async with AsyncRemoteCodec(url) as remote:
            streams = await asyncio.gather(*(remote.encode(im, quality=40) for im in images))
            pixels = await asyncio.gather(*(remote.decode(s) for s in streams))
            with pytest.raises(ImageError):
                await remote.encode(b"not an image path or array")
            return streams, pixels, await remote.health(), await remote.stats()

    with serving(tiny_model_path) as server:
        streams, pixels, health, stats = asyncio.run(go(server.url))
    assert streams == [codec.encode(im, 40) for im in images]
    assert all(np.array_equal(p, codec.decode(s)) for p, s in zip(pixels, streams))
    assert health["status"] == "ok" and stats["ok"] >= 8


def test_a_refine_fallback_warns_in_the_awaiting_task(tiny_model_path, rng):
    img = smooth_image(rng, 128, 192)
    with serving(tiny_model_path, max_refine=1) as server:
        codec = server.engine.codec
        analyse = codec.analyse

        def larger(pixels, qualities, *, refine=None):  # refined streams larger: a budget fits one-pass only
            y, z = analyse(pixels, qualities, refine=refine)
            return (y * 1.5, z) if codec.refine_steps(refine) else (y, z)

        codec.analyse = larger
        smallest = len(codec.encode(img, 0, refine=0))
        budget = smallest + (len(codec.encode(img, 20, refine=0)) - smallest) // 2

        async def go():
            async with AsyncRemoteCodec(server.url) as remote:
                return await remote.encode(img, max_bytes=budget, refine=1)

        with pytest.warns(RefineFallbackWarning, match=f"no refined stream fits in {budget} bytes"):
            data = asyncio.run(go())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RefineFallbackWarning)
            assert data == codec.encode_to_size(img, budget, refine=1)
