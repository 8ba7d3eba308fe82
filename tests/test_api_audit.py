"""The Python API as an embedding program meets it: buffers reused after a submit, arguments of
the wrong kind (owners, switches, timeouts, PIL modes, np.matrix), the names the package lists,
and a clean exit."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vlmcodec import Codec
from vlmcodec.errors import BitstreamError, ConfigError, ImageError
from vlmcodec.runtime import Engine

from conftest import smooth_image


def test_an_engine_codes_each_frame_as_it_was_when_submitted(tiny_model_path, rng):
    """A capture loop filling one buffer: the queued request held the caller's array itself, so
    every stream was the last frame's (4 of 4)."""
    codec = Codec(tiny_model_path)
    frames = [smooth_image(rng, 64, 96) for _ in range(4)]
    expected = [codec.encode(f, 50) for f in frames]
    buffer = np.empty_like(frames[0])
    with Engine(codec, max_batch=4, max_delay_ms=10_000) as engine:  # (the batch waits for all four)
        futures = []
        for f in frames:
            buffer[...] = f
            futures.append(engine.submit_encode(buffer, 50))
        got = [fut.result(timeout=120) for fut in futures]
    assert got == expected


def test_an_owner_that_is_no_name_is_refused_at_submit(tiny_model_path, rng):
    """A list as owner failed on the refine worker: its request and every later refined one
    never resolved, and shutdown() blocked for good."""
    with Engine(Codec(tiny_model_path)) as engine:
        fut = engine.submit_encode(smooth_image(rng, 32, 32), 50, owner=["a"], refine=1)
        with pytest.raises(ConfigError, match="owner"):
            fut.result(timeout=60)


@pytest.mark.parametrize("bad", ["1", float("nan"), -1, 0])
def test_shutdown_checks_its_timeout_before_closing(tiny_model_path, bad):
    """shutdown(timeout_s="1" / nan) failed in Thread.join with the engine half shut; -1 was 0."""
    engine = Engine(Codec(tiny_model_path))
    with pytest.raises(ConfigError, match="timeout_s"):
        engine.shutdown(timeout_s=bad)
    assert not engine.closed
    engine.shutdown(timeout_s=float("inf"))  # (no limit)
    assert engine.closed


def test_switches_are_true_or_false(tiny_model_path):
    """memory_needed(decoding="no") gave the decode's figure, Engine(block="no") blocked,
    shutdown(drain="no") drained."""
    codec = Codec(tiny_model_path)
    with pytest.raises(ConfigError, match="decoding must be True or False"):
        codec.memory_needed(64, 64, decoding="no")
    with pytest.raises(ConfigError, match="block must be True or False"):
        Engine(codec, block="no")
    engine = Engine(codec)
    with pytest.raises(ConfigError, match="drain must be True or False"):
        engine.shutdown(drain="no")
    engine.shutdown(drain=np.False_)
    assert engine.closed


def test_odd_images_are_coded_or_refused_clearly(tiny_model_path, rng):
    """PIL mode "La" raised Pillow's ValueError; a np.matrix numpy's "shape too large to be a
    matrix"; decode_batch of one stream as a uint8 array decoded it byte by byte."""
    codec = Codec(tiny_model_path)
    la = Image.new("La", (16, 16))
    assert codec.encode(la, 50) == codec.encode(Image.new("LA", (16, 16)), 50)
    with pytest.warns(PendingDeprecationWarning):  # (numpy's own, on making one)
        gray = np.asmatrix(smooth_image(rng, 16, 16)[:, :, 0])
    assert codec.encode(gray, 50) == codec.encode(np.asarray(gray), 50)
    stream = codec.encode(smooth_image(rng, 16, 16), 50)
    with pytest.raises(BitstreamError, match="for one, use decode"):
        codec.decode_batch(np.frombuffer(stream, np.uint8))
    with pytest.raises(ImageError, match="dtype"), pytest.warns(PendingDeprecationWarning):
        codec.encode(np.asmatrix(np.zeros((4, 4))), 50)


def test_quality_none_is_the_default_everywhere(tiny_model_path, rng):
    """Codec.encode(img, None) was a ConfigError where vlmcodec.encode, the Engine and
    RemoteCodec took None as the default quality."""
    codec = Codec(tiny_model_path)
    img = smooth_image(rng, 32, 32)
    assert codec.encode(img, None) == codec.encode(img)
    with Engine(codec) as engine:
        assert engine.submit_encode(img, None).result(timeout=60) == codec.encode(img)


def test_the_package_lists_its_lazy_names_and_every_error():
    """dir(vlmcodec) had no Codec (help() listed no class), dir(vlmcodec.runtime) no Engine;
    QueueFull and RateLimited, in the README's list of errors, were not in vlmcodec."""
    import vlmcodec.runtime

    assert {"Codec", "CodecSet", "allocator", "QueueFull", "RateLimited"} <= set(dir(vlmcodec))
    assert {"Engine", "CodecServer", "running_server"} <= set(dir(vlmcodec.runtime))
    assert vlmcodec.QueueFull is vlmcodec.runtime.QueueFull and vlmcodec.RateLimited is vlmcodec.runtime.RateLimited
    out = subprocess.run([sys.executable, "-c", "import sys, vlmcodec; print('numpy' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # (the CLI starts without numpy: RateLimited stays lazy)


def test_a_codec_alive_at_exit_beside_a_daemon_thread_exits_quietly(tiny_model_path):
    """nanobind printed ten lines of "leaked instances" at such an exit."""
    script = ("import threading, time, vlmcodec\n"
              "threading.Thread(target=lambda: time.sleep(100), daemon=True).start()\n"
              f"codec = vlmcodec.Codec({str(tiny_model_path)!r}, threads=1)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "leaked" not in done.stderr, done.stderr[-2000:]
