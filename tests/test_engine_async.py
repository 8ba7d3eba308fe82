"""``Engine.encode`` / ``Engine.decode`` awaited: the caller's part of a request (image checks and
conversion, a short_side downscale, a full queue's wait for room) runs off the event loop."""

import asyncio
import threading
import time

import pytest

from conftest import smooth_image
from vlmcodec import Codec
from vlmcodec.runtime import Engine


async def _largest_gap(coro, tick: float = 0.01) -> tuple[object, float]:
    """``coro``'s result and the largest gap a 10 ms ticker saw while it ran."""
    gaps, done, started = [0.0], asyncio.Event(), asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        started.set()
        while not done.is_set():
            await asyncio.sleep(tick)
            now = time.monotonic()
            gaps[0] = max(gaps[0], now - last)
            last = now

    t = asyncio.create_task(ticker())
    await started.wait()  # (ticking before the call's own synchronous part runs)
    try:
        result = await coro
    finally:
        done.set()
        await t
    return result, gaps[0]


def test_an_awaited_encode_prepares_its_image_off_the_event_loop(tiny_model_path, rng, monkeypatch):
    """A 12 MP PNG with short_side=256 took ~0.46 s to prepare on the loop's thread: every other
    coroutine stalled that long (four gathered: ~2 s)."""
    codec = Codec(tiny_model_path)
    img = smooth_image(rng, 48, 64)
    real = codec.prepare

    def slow_prepare(*args, **kwargs):
        time.sleep(0.5)  # (a large image's conversion and downscale)
        return real(*args, **kwargs)

    monkeypatch.setattr(codec, "prepare", slow_prepare)
    engine = Engine(codec)
    try:
        data, gap = asyncio.run(_largest_gap(engine.encode(img, 50)))
        assert data == Codec(tiny_model_path).encode(img, 50)
        assert gap < 0.3, gap  # (0.5 s before)
        image, _ = asyncio.run(_largest_gap(engine.decode(data)))
        assert image.shape == img.shape
    finally:
        engine.shutdown()


def test_an_awaited_call_waits_for_room_in_a_full_queue_off_the_event_loop(tiny_model_path, rng):
    """With the queue full (block=True), the submit waited in _admit on the loop's thread:
    wait_for could not fire until room came."""
    codec = Codec(tiny_model_path)
    img = smooth_image(rng, 48, 64)
    real, release = codec.entropy_encode, threading.Event()

    def held(*args, **kwargs):
        assert release.wait(60)
        return real(*args, **kwargs)

    codec.entropy_encode = held
    engine = Engine(codec, max_queue=1, max_delay_ms=0)
    try:
        first = engine.submit_encode(img, 50)  # fills the queue, held in its entropy coding

        async def go() -> float:
            start = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(engine.encode(img, 50), 0.2)
            return time.monotonic() - start

        seconds, gap = asyncio.run(_largest_gap(go()))
        assert seconds < 1.0 and gap < 0.5, (seconds, gap)
        release.set()
        assert isinstance(first.result(timeout=60), bytes)
        deadline = time.monotonic() + 30
        while engine.in_flight and time.monotonic() < deadline:  # the cancelled call's request: never run
            time.sleep(0.01)
        assert engine.in_flight == 0 and engine.stats["batches"] == 1
    finally:
        release.set()
        engine.shutdown()


def test_an_awaited_call_after_shutdown_is_engine_dead(tiny_model_path, rng):
    from vlmcodec import EngineDeadError

    engine = Engine(Codec(tiny_model_path))
    engine.shutdown()
    with pytest.raises(EngineDeadError):
        asyncio.run(engine.encode(smooth_image(rng, 32, 32), 50))


def test_a_decode_cancelled_before_its_entropy_decoding_skips_it(tiny_model_path, rng):
    """A decode cancelled while it waited for a coding thread still paid its entropy decode."""
    codec = Codec(tiny_model_path)
    img = smooth_image(rng, 48, 64)
    data = codec.encode(img, 50)
    real_encode, real_decode, release = codec.entropy_encode, codec.entropy_decode, threading.Event()
    decoded = []

    def held(*args, **kwargs):
        assert release.wait(60)
        return real_encode(*args, **kwargs)

    def counted(*args, **kwargs):
        decoded.append(1)
        return real_decode(*args, **kwargs)

    codec.entropy_encode, codec.entropy_decode = held, counted
    engine = Engine(codec, workers=1, max_delay_ms=0)
    try:
        first = engine.submit_encode(img, 50)  # holds the one coding thread
        deadline = time.monotonic() + 30
        while engine.stats["batches"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        fut = engine.submit_decode(data)
        assert fut.cancel()
        release.set()
        assert isinstance(first.result(timeout=60), bytes)
        while engine.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.in_flight == 0 and decoded == []
    finally:
        release.set()
        engine.shutdown()
