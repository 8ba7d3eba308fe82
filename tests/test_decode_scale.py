"""Decoding at a consumer's scale: Codec.decode(short_side=N), the Engine, the server, the CLI."""

import numpy as np
import pytest
from PIL import Image

from vlmcodec import Codec
from vlmcodec.image_io import psnr
from vlmcodec.resample import downscale

from conftest import smooth_image


@pytest.fixture(scope="module")
def codec(tiny_model_path):
    return Codec(tiny_model_path)


def test_decode_at_a_consumers_size(codec, rng):
    img = smooth_image(rng, 96, 160)
    full = codec.encode(img, 60)                 # coded at 96x160
    scaled = codec.encode(img, 60, short_side=48)  # coded at 48x80
    default = codec.decode(full)
    small = codec.decode(full, short_side=48)
    assert small.shape == (48, 80, 3)
    # one antialiased resize of the float reconstruction: what resizing the decoded image gives, to rounding
    assert psnr(downscale(default, (48, 80)), small) > 45
    assert codec.decode(scaled, short_side=48).shape == (48, 80, 3)
    assert codec.decode(scaled, short_side=64).shape == (64, 107, 3)
    for side in (96, 200):  # at or above the original's short side: the original size, as by default
        np.testing.assert_array_equal(codec.decode(scaled, short_side=side), codec.decode(scaled))
        np.testing.assert_array_equal(codec.decode(full, short_side=side), default)
    batch = codec.decode_batch([full, scaled], short_side=48)
    np.testing.assert_array_equal(batch[0], small)
    np.testing.assert_array_equal(batch[1], codec.decode(scaled, short_side=48))
    with pytest.raises(ValueError, match="short_side must be"):
        codec.decode(full, short_side=8)


def test_engine_server_and_cli_decode_at_a_consumers_size(codec, tiny_model_path, rng, tmp_path):
    from vlmcodec.cli import main
    from vlmcodec.runtime import Engine, RemoteCodec
    from vlmcodec.runtime.server import CodecServer, serve_in_thread

    img = smooth_image(rng, 96, 160)
    data = codec.encode(img, 60, short_side=48)
    engine = Engine(codec, block=False)
    server = CodecServer(engine, "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        want = codec.decode(data, short_side=48)
        np.testing.assert_array_equal(engine.submit_decode(data, short_side=48).result(timeout=60), want)
        with pytest.raises(ValueError, match="short_side must be"):
            engine.submit_decode(data, short_side=3).result(timeout=60)
        with RemoteCodec(server.url) as remote:
            np.testing.assert_array_equal(remote.decode(data, short_side=48), want)
            np.testing.assert_array_equal(remote.decode(data), codec.decode(data))
            with pytest.raises(ValueError, match="short_side"):
                remote.decode(data, short_side=3)
    finally:
        server.shutdown()
        server.server_close()
        engine.shutdown()
    stream = tmp_path / "a.vlmc"
    stream.write_bytes(data)
    out = tmp_path / "a.png"
    assert main(["decode", str(stream), "-o", str(out), "--short-side", "48", "--model", str(tiny_model_path)]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out)), want)
