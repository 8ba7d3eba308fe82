"""Mistakes the type checker must catch in code using vlmcodec (tests/test_typing.py): each line
marked with an error comment (``# E:`` and the text) must be reported with that text. Never run."""

import numpy as np

import vlmcodec
from vlmcodec.runtime import Engine


def mistakes(image: np.ndarray) -> None:
    codec = vlmcodec.Codec()
    codec.encode(image, qualty=50)  # E: Unexpected keyword argument "qualty"
    count: int = codec.decode(b"")  # E: Incompatible types in assignment
    vlmcodec.Codec(threads="2")  # E: Argument "threads" to "Codec" has incompatible type "str"
    codec.encode(b"\x89PNG")  # E: Argument 1 to "encode" of "Codec" has incompatible type "bytes"
    codec.encode_batch([image], "60")  # E: Argument 2 to "encode_batch" of "Codec" has incompatible type "str"
    text: str = vlmcodec.encode(image)  # E: Incompatible types in assignment
    with Engine(codec) as engine:
        sizes: list[int] = list(engine.encode_many([image]))  # E: Argument 1 to "list" has incompatible type
        shape: str = engine.submit_decode(b"").result()  # E: Incompatible types in assignment
    print(count, text, sizes, shape)


async def async_mistakes(image: np.ndarray) -> None:
    from vlmcodec.runtime import AsyncRemoteCodec

    remote = AsyncRemoteCodec("http://gpu-box:8080", tokn="x")  # E: Unexpected keyword argument "tokn"
    await remote.encode(image, qualty=60)  # E: Unexpected keyword argument "qualty"
    await remote.decode(b"", shortside=256)  # E: Unexpected keyword argument "shortside"
