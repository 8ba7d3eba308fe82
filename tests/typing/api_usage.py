"""The Python API as the README uses it, for the type checker (tests/test_typing.py): never run.
Each line must type-check as written; bad_usage.py holds the mistakes it must catch."""

import asyncio
import io

import numpy as np
from PIL import Image

import vlmcodec
from vlmcodec.image_io import image_bytes, load_image, save_image
from vlmcodec.runtime import AsyncRemoteCodec, Engine, RemoteCodec


def readme(image: np.ndarray, images: list[np.ndarray], upload: bytes) -> None:
    data: bytes = vlmcodec.encode(image, quality=60)
    restored: np.ndarray = vlmcodec.decode(data)
    codec = vlmcodec.Codec()
    codec = vlmcodec.Codec("model.safetensors", backend="torch", threads=2)
    codec = vlmcodec.Codec(pre_edit=False)
    codec = vlmcodec.Codec(backend="onnxruntime", backend_options={"allow_spinning": False})
    data = vlmcodec.encode(image, quality=60, short_side=256)
    codec = vlmcodec.Codec(short_side=256, refine=30, refine_views=(224, 336))
    codec = vlmcodec.Codec(short_side=256, refine=10, refine_bf16=True)
    data = codec.encode(image, quality=50, refine=10)
    data = codec.encode("photo.png", quality=50)
    data = codec.encode(Image.new("RGB", (8, 8)), quality=50)
    data = codec.encode_to_size(image, max_bytes=20_000)
    data = codec.encode_to_size(image, max_bpp=0.5)
    streams: list[bytes] = codec.encode_batch(images, [30, 60, 90])
    decoded: list[np.ndarray] = codec.decode_batch(streams)
    codecs = vlmcodec.CodecSet([codec, "old.safetensors"])
    restored = codecs.decode(data)
    small: np.ndarray = codec.decode(data, short_side=256)
    vlmcodec.allocator.release_free_memory()
    need: int | None = codec.memory_needed(3000, 4000)
    img: np.ndarray = load_image(io.BytesIO(upload))
    save_image(restored, "out.png", png_level=1)
    png: bytes = image_bytes(restored, "PNG")
    print(decoded, small, need, img, png)

    with Engine(codec, max_batch=8, workers=2, max_queue=256) as engine:
        data = engine.submit_encode(image, quality=60).result()
        restored = engine.submit_decode(data).result()
        for stream in engine.encode_many(images, quality=60):
            print(len(stream))
        for pixels in engine.decode_many(streams):
            print(pixels.shape)
        for outcome in engine.encode_many(images, return_exceptions=True):
            print(outcome if isinstance(outcome, BaseException) else len(outcome))
        engine.warmup([image], quality=60)

    remote = RemoteCodec("http://gpu-box:8080")
    data = remote.encode(image, quality=60)
    restored = remote.decode(data)
    try:
        data = RemoteCodec("http://gpu-box:8080").encode(image, max_bytes=20_000)
    except vlmcodec.RequestTimeoutError as e:
        print(e)


async def readme_async(codec: vlmcodec.Codec, image: np.ndarray, images: list[np.ndarray]) -> None:
    with Engine(codec) as engine:
        data: bytes = await engine.encode(image, quality=60)
        pixels: np.ndarray = await engine.decode(data)
    async with AsyncRemoteCodec("http://gpu-box:8080") as remote:
        streams: list[bytes] = await asyncio.gather(*(remote.encode(im, quality=60) for im in images))
        pixels = await remote.decode(streams[0])
        pixels = await remote.decode(bytearray(streams[0]), short_side=256, priority=1)
    print(pixels.shape)


def buffers_and_fingerprints(codec: vlmcodec.Codec, image: np.ndarray, data: bytes) -> None:
    # any buffer of bytes decodes (bytes, bytearray, memoryview: container.as_bytes)
    restored: np.ndarray = codec.decode(bytearray(data))
    restored = codec.decode(memoryview(data), short_side=256)
    restored = vlmcodec.decode(bytearray(data))
    codecs = vlmcodec.CodecSet([codec])
    restored = codecs.decode(memoryview(data))
    # a model named by its fingerprint's bytes, as CodecSet.named takes it
    data = codecs.encode(image, 50, model=codec.fingerprint)
    data = codecs.encode_to_size(image, 20_000, model=codec.fingerprint)
    with Engine(codec) as engine:
        restored = engine.submit_decode(bytearray(data)).result()
    print(restored.shape, len(data))


def hints_as_wide_as_the_calls(image: np.ndarray, data: bytes) -> None:
    # what the calls take at run time, type-checked too (the hints were narrower)
    import pathlib

    from vlmcodec.bitstream import container

    codec = vlmcodec.Codec(max_pixels=1e6)
    img = load_image("photo.png", max_pixels=1e6)
    save_image(img, pathlib.PurePosixPath("out.png"))
    remote = RemoteCodec("http://gpu-box:8080", timeout_s=None)
    header, _, _ = container.unpack(bytearray(data))
    latent = codec.entropy_decode(memoryview(data))
    stream: bytes = vlmcodec.CodecSet([codec]).encode(image, quality=None)
    print(remote, header, latent, stream)
