"""Engine paths that only a race or a held resource reaches: a deadline or a cancel that lands
between a batch's forming and its run, a memory wait that ends in a batch, a warm-up waiting for
the network workers, a decode timing out behind the coding pool. The engine's clock is held still
(and moved by hand) where a deadline must pass at one exact point."""

import threading
import time
from concurrent.futures import CancelledError
from types import SimpleNamespace

import pytest

import vlmcodec.runtime.engine as engine_module
from vlmcodec.errors import MemoryBusyError, RequestTimeoutError
from vlmcodec.runtime import Engine

from conftest import smooth_image
from test_runtime import _held_first


def _held_clock(monkeypatch) -> list[float]:
    """The engine's ``time.monotonic`` held at its value now: it moves only when the test sets
    ``clock[0]`` (the engine's waits still run on the real clock)."""
    clock = [time.monotonic()]
    monkeypatch.setattr(engine_module, "time", SimpleNamespace(monotonic=lambda: clock[0],
                                                               perf_counter=time.perf_counter))
    return clock


def _counted(monkeypatch, codec, stage: str) -> list[int]:
    """``codec``'s ``stage`` (analyse, entropy_decode...) records its calls: the batch size for
    ``analyse``, 1 for the others."""
    real, calls = getattr(codec, stage), []

    def counted(*a, **kw):
        calls.append(len(a[0]) if stage == "analyse" else 1)
        return real(*a, **kw)

    monkeypatch.setattr(codec, stage, counted)
    return calls


def _wake(engine: Engine) -> None:
    """The batching loop looks at its queue again now (as after a submit)."""
    with engine._cv:
        engine._cv.notify_all()


def test_a_deadline_passing_between_a_batch_forming_and_its_run_fails_the_request_unrun(tiny_codec, rng,
                                                                                     monkeypatch):
    """A request whose deadline passes after the loop took it into a batch, before a network worker
    ran it, fails with RequestTimeoutError and never reaches the networks."""
    clock = _held_clock(monkeypatch)
    analysed = _counted(monkeypatch, tiny_codec, "analyse")
    with Engine(tiny_codec, max_delay_ms=0) as e:
        run_batch = e._run_batch

        def late(batch):
            clock[0] += 2.0
            run_batch(batch)

        monkeypatch.setattr(e, "_run_batch", late)
        err = e.submit_encode(smooth_image(rng, 64, 64), 50, timeout_s=1.0).exception(timeout=30)
    assert isinstance(err, RequestTimeoutError) and "before its turn" in str(err), err
    assert analysed == [] and e.stats["batches"] == 0 and e.in_flight == 0


def test_a_request_cancelled_between_a_batch_forming_and_its_run_never_runs(tiny_codec, rng, monkeypatch):
    """A request its client cancels after the loop took it into a batch is finished cancelled when
    the batch starts: no network runs for it and no batch is counted."""
    analysed = _counted(monkeypatch, tiny_codec, "analyse")
    with Engine(tiny_codec, max_delay_ms=0) as e:
        run_batch = e._run_batch

        def cancelled_first(batch):
            assert all(r.future.cancel() for r in batch)
            run_batch(batch)

        monkeypatch.setattr(e, "_run_batch", cancelled_first)
        fut = e.submit_encode(smooth_image(rng, 64, 64), 50)
        with pytest.raises(CancelledError):
            fut.result(timeout=30)
    assert analysed == [] and e.stats["batches"] == 0 and e.in_flight == 0


def test_a_memory_wait_that_outlasts_the_deadline_is_a_timeout(tiny_codec, rng, monkeypatch):
    """A batch whose wait for other batches' memory ended at the request's deadline gives the
    request a RequestTimeoutError, not the MemoryBusyError of the wait."""
    clock = _held_clock(monkeypatch)

    def waited_out(*a, **kw):
        clock[0] += 2.0
        raise MemoryBusyError("memory held by other coding: its deadline passed while waiting")

    monkeypatch.setattr(tiny_codec, "analyse", waited_out)
    with Engine(tiny_codec, max_delay_ms=0) as e:
        err = e.submit_encode(smooth_image(rng, 64, 64), 50, timeout_s=1.0).exception(timeout=30)
    assert isinstance(err, RequestTimeoutError) and "waiting for memory" in str(err), err
    assert not isinstance(err, MemoryBusyError)


def test_a_batch_whose_memory_wait_ended_is_not_retried_item_by_item(tiny_codec, rng, monkeypatch):
    """A MemoryBusyError fails the whole batch at once: retried one request at a time, each would
    wait for the same memory again."""
    sizes: list[int] = []

    def busy(pixels, *a, **kw):
        sizes.append(len(pixels))
        raise MemoryBusyError("memory held by other coding: the wait was called off")

    monkeypatch.setattr(tiny_codec, "analyse", busy)
    img = smooth_image(rng, 64, 64)
    with Engine(tiny_codec, max_batch=2, max_delay_ms=60_000) as e:
        futs = [e.submit_encode(img, 50) for _ in range(2)]
        errors = [f.exception(timeout=30) for f in futs]
    assert sizes == [2], sizes
    assert all(isinstance(err, MemoryBusyError) for err in errors), errors


def test_requests_submitted_while_a_warmup_waits_for_the_workers_run_after_it(tiny_codec, rng, monkeypatch):
    """Once a warm-up waits for the running batch to end, no new batch starts on a free network
    worker: a request submitted meanwhile runs only after the warm-up's jobs have ended."""
    img, sample = smooth_image(rng, 64, 64), smooth_image(rng, 32, 32)
    events: list[tuple[str, str]] = []
    lock, held, release, second = threading.Lock(), threading.Event(), threading.Event(), threading.Event()
    analyse = tiny_codec.analyse

    def traced(pixels, *a, **kw):
        kind = "warm" if pixels[0].shape[0] == 32 else "serve"
        with lock:
            events.append(("start", kind))
            if events.count(("start", "serve")) == 2:
                second.set()
        if kind == "serve" and not release.is_set():
            held.set()
            release.wait(30)
        out = analyse(pixels, *a, **kw)
        with lock:
            events.append(("end", kind))
        return out

    monkeypatch.setattr(tiny_codec, "analyse", traced)
    with Engine(tiny_codec, max_batch=1, max_delay_ms=0, network_workers=2) as e:
        try:
            first = e.submit_encode(img, 40)
            assert held.wait(30)
            warmer = threading.Thread(target=e.warmup, args=(sample,), kwargs={"quality": 40, "decode": False})
            warmer.start()
            deadline = time.monotonic() + 30
            while not e._warming:
                assert time.monotonic() < deadline, "the warm-up never began waiting"
                time.sleep(0.005)
            queued = e.submit_encode(img, 40)
            second.wait(0.3)  # (time for a batch to start, were one started)
        finally:
            release.set()
        warmer.join(30)
        assert first.result(timeout=30) == queued.result(timeout=30)
    starts = [i for i, ev in enumerate(events) if ev == ("start", "serve")]
    warm_ends = [i for i, ev in enumerate(events) if ev == ("end", "warm")]
    assert len(starts) == 2 and len(warm_ends) == 2, events
    assert starts[1] > max(warm_ends), events


def test_a_decode_waiting_for_a_coding_thread_fails_the_moment_its_deadline_passes(tiny_codec, rng, monkeypatch):
    """A decode queued behind a busy coding thread fails as soon as the clock passes its deadline
    (no grace period), and its entropy decode then never runs."""
    clock = _held_clock(monkeypatch)
    stream = tiny_codec.encode(smooth_image(rng, 64, 64), 50)
    held, release = _held_first(monkeypatch, tiny_codec, "entropy_encode")
    decoded = _counted(monkeypatch, tiny_codec, "entropy_decode")
    with Engine(tiny_codec, workers=1, max_delay_ms=0) as e:
        try:
            backlog = e.submit_encode(smooth_image(rng, 64, 64), 50)
            assert held.wait(30)
            timed = e.submit_decode(stream, timeout_s=1.0)
            clock[0] += 1.2
            _wake(e)
            err = timed.exception(timeout=5)
        finally:
            release.set()
        assert isinstance(err, RequestTimeoutError), err
        assert backlog.result(timeout=30)[:4] == b"VLMC"
    assert decoded == [] and e.in_flight == 0
