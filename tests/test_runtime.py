"""Runtime: the scheduler's policy on its own, then the Engine end to end on a tiny model."""

import asyncio
import math
import resource
import threading
import time
from concurrent.futures import CancelledError, Future

import numpy as np
import pytest

from vlmcodec.errors import BitstreamError, ConfigError, EngineDeadError, ImageError, RequestTimeoutError
from vlmcodec.runtime import Engine, QueueFull, Scheduler
from vlmcodec.runtime.request import InflightRequest, Kind

from conftest import smooth_image


# -- scheduler (pure logic, hand-built requests) -----------------------------------------
def _req(key, t):
    return InflightRequest(Kind.ENCODE, key, None, Future(), t, None)


def _slowed(monkeypatch, codec, stage: str, seconds: float) -> threading.Event:
    """``codec``'s ``stage`` (entropy_encode, entropy_decode) made ``seconds`` slower; the event
    is set as one begins."""
    real, started = getattr(codec, stage), threading.Event()

    def slow(*a, **kw):
        started.set()
        time.sleep(seconds)
        return real(*a, **kw)

    monkeypatch.setattr(codec, stage, slow)
    return started


def _held_first(monkeypatch, codec, stage: str) -> tuple[threading.Event, threading.Event]:
    """``codec``'s first ``stage`` call (entropy_encode...) held until the second event is set;
    the first is set as it begins. Later calls run at once."""
    real, first, release = getattr(codec, stage), threading.Event(), threading.Event()

    def held(*a, **kw):
        if not first.is_set():
            first.set()
            assert release.wait(60)
        return real(*a, **kw)

    monkeypatch.setattr(codec, stage, held)
    return first, release


def _coding_backlog(engine, img, first: threading.Event) -> tuple[Future, list[Future]]:
    """(one encode whose entropy coding runs, held by ``first``'s stage; three whose networks have
    run and whose coding waits behind it) on an ``engine`` of one coding thread, batches of one."""
    running = engine.submit_encode(img, 50)
    assert first.wait(60)
    queued = [engine.submit_encode(img, 50) for _ in range(3)]
    deadline = time.monotonic() + 60
    while engine.stats["batches"] < 4 and time.monotonic() < deadline:  # (their networks ran: coding is queued)
        time.sleep(0.01)
    return running, queued


def _break_the_loop(monkeypatch, engine) -> None:
    """``engine``'s batching loop fails (a bug in the scheduler) as it next looks for a batch."""
    def broken(now, force=False):
        raise RuntimeError("a bug in the scheduler")

    monkeypatch.setattr(engine._sched, "pop_batch", broken)
    with engine._cv:
        engine._cv.notify_all()


def test_scheduler_full_batch_goes_at_once():
    s = Scheduler(max_batch=3, max_delay=10.0)
    for i in range(4):
        s.add(_req("a", 0.0 + i * 1e-3))
    b = s.pop_batch(now=0.01)
    assert len(b) == 3 and len(s) == 1
    assert s.pop_batch(now=0.01) is None          # 1 waiting, not old enough
    assert s.next_due() == pytest.approx(10.003)
    assert len(s.pop_batch(now=10.01)) == 1       # delay reached
    for i in range(3):  # exactly max_batch: full, at once too
        s.add(_req("b", 20.0 + i * 1e-3))
    assert len(s.pop_batch(now=20.01)) == 3


def test_an_engines_own_timeout_bounds_requests_without_one(tiny_codec, rng):
    """Engine(timeout_s=) is the deadline of a request that gives none (a mutation dropping it survived)."""
    img = smooth_image(rng, 64, 64)
    with Engine(tiny_codec, max_batch=8, max_delay_ms=60_000, timeout_s=0.2) as e:
        t0 = time.monotonic()
        err = e.submit_encode(img).exception(timeout=30)
        assert isinstance(err, RequestTimeoutError) and time.monotonic() - t0 < 20, err
        assert e.submit_encode(img, timeout_s=100).cancel()  # its own, longer: still waiting


def test_a_draining_shutdown_runs_the_queue_at_once_not_after_the_batching_delay(tiny_codec, rng):
    """shutdown(drain=True) forms the queued batches at once (force), without waiting max_delay_ms."""
    img = smooth_image(rng, 64, 64)
    e = Engine(tiny_codec, max_batch=8, max_delay_ms=600_000)
    futs = [e.submit_encode(img) for _ in range(2)]
    t0 = time.monotonic()
    e.shutdown(timeout_s=60)  # (past its timeout_s the queue would fail: the futures say which)
    assert all(f.result(timeout=0)[:4] == b"VLMC" for f in futs) and time.monotonic() - t0 < 60


def test_a_shutdown_without_drain_fails_a_decode_waiting_for_a_coding_thread(tiny_codec, rng, monkeypatch):
    """A decode queued for entropy decoding (the coding thread busy) fails with EngineDeadError at
    a shutdown without drain, as the queue's requests do."""
    img = smooth_image(rng, 64, 64)
    e = Engine(tiny_codec, workers=1, max_delay_ms=1)
    stream = e.submit_encode(img).result(timeout=60)
    started = _slowed(monkeypatch, e.codec, "entropy_encode", 1.0)
    busy = e.submit_encode(img)
    assert started.wait(10)
    waiting = e.submit_decode(stream)
    ended: list[str] = []
    waiting.add_done_callback(lambda f: ended.append("decode"))
    busy.add_done_callback(lambda f: ended.append("busy encode"))
    e.shutdown(drain=False)
    err = waiting.exception(timeout=10)
    assert isinstance(err, EngineDeadError), err
    assert busy.result(timeout=30)[:4] == b"VLMC" and e.in_flight == 0
    assert ended == ["decode", "busy encode"]  # at the shutdown, not once the coding thread came to it


def test_scheduler_groups_by_key_and_is_fifo_across_groups():
    s = Scheduler(max_batch=8, max_delay=0.5)
    s.add(_req("big", 0.0)); s.add(_req("small", 0.1)); s.add(_req("big", 0.2))
    b1 = s.pop_batch(now=1.0)
    b2 = s.pop_batch(now=1.0)
    assert [r.key for r in b1] == ["big", "big"] and [r.key for r in b2] == ["small"]
    assert s.pop_batch(now=1.0) is None and len(s) == 0


def test_scheduler_force_and_drain():
    s = Scheduler(max_batch=8, max_delay=100)
    s.add(_req("a", 0.0))
    assert s.pop_batch(now=0.0) is None
    assert len(s.pop_batch(now=0.0, force=True)) == 1
    s.add(_req("a", 0.0)); s.add(_req("b", 0.0))
    assert len(s.drain_all()) == 2 and len(s) == 0
    with pytest.raises(ValueError):
        Scheduler(0, 1)


def test_scheduler_takes_out_requests_at_their_deadline():
    """Requests past their deadline leave the queue when it comes (pop_expired; next_deadline says
    when), whatever their group's turn; those gone in a batch before their deadline are not."""
    s = Scheduler(max_batch=2, max_delay=100)
    reqs = {name: InflightRequest(Kind.ENCODE, key, None, Future(), 0.0, deadline)
            for name, key, deadline in (("a1", "a", 5.0), ("a2", "a", None), ("b1", "b", 3.0), ("b2", "b", 9.0),
                                        ("a3", "a", 1.0))}
    for r in reqs.values():
        s.add(r)
    assert s.next_deadline() == 1.0 and s.pop_expired(0.5) == []
    assert s.pop_expired(4.0) == [reqs["a3"], reqs["b1"]] and len(s) == 3
    assert [r.key for r in s.pop_batch(now=4.0, force=True)] == ["a", "a"]  # a1, a2 leave in a batch
    assert s.next_deadline() == 9.0 and s.pop_expired(10.0) == [reqs["b2"]] and len(s) == 0
    assert s.next_deadline() is None and s.pop_batch(now=10.0, force=True) is None
    s.add(reqs["b2"])
    assert len(s.drain_all()) == 1 and s.next_deadline() is None
    # a request gone in a batch is not kept (its pixels) by its deadline's entry until that comes
    import gc
    import weakref

    far = InflightRequest(Kind.ENCODE, "a", None, Future(), 0.0, 1e9)
    s.add(InflightRequest(Kind.ENCODE, "a", None, Future(), 0.0, 1.0))
    s.add(far)
    gone = weakref.ref(far)
    assert len(s.pop_batch(now=0.0, force=True)) == 2
    del far
    gc.collect()
    assert gone() is None
    # entries of requests gone in batches below one that waits (starved by priority) stay bounded
    s = Scheduler(max_batch=1, max_delay=0)
    s.add(InflightRequest(Kind.ENCODE, "low", None, Future(), 0.0, 0.5, priority=-1))
    for i in range(1000):
        s.add(InflightRequest(Kind.ENCODE, "high", None, Future(), 0.0, 1.0 + i, priority=1))
        assert s.pop_batch(now=0.0)[0].key == "high"
    assert len(s) == 1 and len(s._deadlines) <= 2 * len(s) + 65 and s.next_deadline() == 0.5


# -- engine ------------------------------------------------------------------------------
@pytest.fixture
def engine(tiny_codec):
    e = Engine(tiny_codec, max_batch=4, max_delay_ms=2, workers=2, max_queue=64)
    yield e
    e.shutdown()


def test_engine_results_equal_codec(engine, tiny_codec, rng):
    imgs = [smooth_image(rng, h, w) for h, w in [(64, 64), (60, 70), (64, 64), (130, 65), (33, 64)]]
    qs = [0.0, 30.5, 60.0, 90.0, 100.0]
    futs = [engine.submit_encode(im, q) for im, q in zip(imgs, qs)]
    streams = [f.result(timeout=60) for f in futs]
    assert streams == [tiny_codec.encode(im, q) for im, q in zip(imgs, qs)]
    dec = [engine.submit_decode(s) for s in streams]
    for f, s in zip(dec, streams):
        assert np.array_equal(f.result(timeout=60), tiny_codec.decode(s))
    assert engine.stats["max_batch_seen"] >= 2  # it did batch


def test_bad_requests_fail_alone(engine, tiny_codec, rng):
    good = smooth_image(rng, 64, 64)
    stream = tiny_codec.encode(good, 50)
    futs = {
        "good_enc": engine.submit_encode(good, 50),
        "bad_img": engine.submit_encode(np.zeros((5, 5, 5), np.uint8)),
        "bad_q": engine.submit_encode(good, 500),
        "bad_stream": engine.submit_decode(b"VLMC" + b"\0" * 30),
        "truncated": engine.submit_decode(stream[:-3]),
        "not_bytes": engine.submit_decode(12345),
        "good_dec": engine.submit_decode(stream),
    }
    assert futs["good_enc"].result(timeout=60) == stream
    assert np.array_equal(futs["good_dec"].result(timeout=60), tiny_codec.decode(stream))
    assert isinstance(futs["bad_img"].exception(timeout=60), ImageError)
    assert isinstance(futs["bad_q"].exception(timeout=60), ValueError)
    assert isinstance(futs["bad_stream"].exception(timeout=60), BitstreamError)
    assert isinstance(futs["truncated"].exception(timeout=60), BitstreamError)
    not_bytes = futs["not_bytes"].exception(timeout=60)  # a TypeError, as before, and a VlmcodecError
    assert isinstance(not_bytes, TypeError) and isinstance(not_bytes, BitstreamError) and "got int" in str(not_bytes)


def test_queue_full_and_timeout(tiny_codec, rng):
    img = smooth_image(rng, 64, 64)
    e = Engine(tiny_codec, max_batch=64, max_delay_ms=300, max_queue=2, block=False)
    try:
        f1, f2 = e.submit_encode(img), e.submit_encode(img)
        with pytest.raises(QueueFull):
            e.submit_encode(img)
        f1.result(timeout=60); f2.result(timeout=60)
        t = e.submit_encode(img, timeout_s=0.01)   # waits 300 ms for its batch: times out
        late = t.exception(timeout=60)  # a VlmcodecError, and a TimeoutError as before
        assert isinstance(late, RequestTimeoutError) and isinstance(late, TimeoutError), late
    finally:
        e.shutdown()


def test_a_queued_request_fails_at_its_deadline_not_at_its_batch_turn(tiny_codec, rng):
    """The deadline was looked at only when the request's batch was formed: with max_delay_ms=3000
    a request of timeout 0.2 s failed after 3 s (an HTTP 504 as late), behind a backlog ten times
    its timeout. Its batch-mates queued without a deadline still run."""
    img = smooth_image(rng, 64, 64)
    with Engine(tiny_codec, max_batch=8, max_delay_ms=3000) as e:
        t0 = time.monotonic()
        timed, patient = e.submit_encode(img, timeout_s=0.2), e.submit_encode(img)
        late = timed.exception(timeout=60)
        waited = time.monotonic() - t0
        assert isinstance(late, RequestTimeoutError) and "before it ran" in str(late), late
        assert waited < 2.0, waited  # (3 s before: the batch's delay; generous for a loaded machine)
        assert not patient.done() and e.stats["failed"] == 1
        assert patient.result(timeout=60)[:4] == b"VLMC"


def test_cancel_before_run(tiny_codec, rng):
    e = Engine(tiny_codec, max_batch=64, max_delay_ms=300)
    try:
        f = e.submit_encode(smooth_image(rng, 64, 64))
        assert f.cancel()
        with pytest.raises(CancelledError):
            f.result(timeout=60)
        ok = e.submit_encode(smooth_image(rng, 64, 64))
        assert isinstance(ok.result(timeout=60), bytes)
    finally:
        e.shutdown()


def test_shutdown_drains_or_aborts(tiny_codec, rng):
    img = smooth_image(rng, 64, 64)
    e = Engine(tiny_codec, max_batch=64, max_delay_ms=10_000)
    futs = [e.submit_encode(img) for _ in range(3)]
    e.shutdown(drain=True)
    assert all(isinstance(f.result(timeout=1), bytes) for f in futs)
    with pytest.raises(EngineDeadError):
        e.submit_encode(img)
    e2 = Engine(tiny_codec, max_batch=64, max_delay_ms=10_000)
    futs = [e2.submit_encode(img) for _ in range(3)]
    e2.shutdown(drain=False)
    assert all(isinstance(f.exception(timeout=1), EngineDeadError) for f in futs)


def _wait_until_closed(engine) -> None:
    """Until ``engine.shutdown`` (on another thread) has begun: its requests are refused from then."""
    deadline = time.monotonic() + 60
    while not engine.closed and time.monotonic() < deadline:
        time.sleep(0.001)
    assert engine.closed


def test_shutdown_without_drain_fails_the_queued_coding_jobs_too(tiny_model_path, rng, monkeypatch):
    """Requests past the networks, their entropy coding queued behind a running one, each get
    EngineDeadError (they were once cancelled in the pool, their futures never resolved)."""
    from vlmcodec import Codec

    codec = Codec(tiny_model_path)
    first, release = _held_first(monkeypatch, codec, "entropy_encode")
    engine = Engine(codec, max_batch=1, max_delay_ms=0, workers=1)
    running, queued = _coding_backlog(engine, smooth_image(rng, 32, 48), first)
    stopper = threading.Thread(target=engine.shutdown, kwargs={"drain": False})
    stopper.start()
    _wait_until_closed(engine)  # (released first, the held job could finish and the queued ones run)
    release.set()
    stopper.join(60)
    assert isinstance(running.result(timeout=5), bytes)
    assert all(isinstance(f.exception(timeout=5), EngineDeadError) for f in queued)
    assert engine.in_flight == 0


def test_asyncio_api(engine, tiny_codec, rng):
    img = smooth_image(rng, 48, 80)

    async def go():
        data = await engine.encode(img, 40)
        return data, await engine.decode(data)

    data, out = asyncio.run(go())
    assert data == tiny_codec.encode(img, 40) and np.array_equal(out, tiny_codec.decode(data))


def _load_test(codec, rng, clients, per_client, sizes):
    """Clients submit mixed encodes/decodes, 5 % of them bad; every future must resolve, good
    results must equal the unbatched ones, bad ones must fail alone."""
    images = {s: smooth_image(rng, *s) for s in sizes}
    streams = {s: codec.encode(images[s], 50.0) for s in sizes}
    expected_img = {s: codec.decode(streams[s]) for s in sizes}
    expected_enc = {}
    errors, lock = [], threading.Lock()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def client(cid):
        r = np.random.default_rng(cid)
        futs = []
        for i in range(per_client):
            s = sizes[int(r.integers(len(sizes)))]
            q = float(r.choice([10.0, 50.0, 90.0]))
            u = r.random()
            if u < 0.025:
                futs.append(("bad", engine.submit_decode(streams[s][: len(streams[s]) // 2])))
            elif u < 0.05:
                futs.append(("bad", engine.submit_encode(np.zeros((4, 4), np.float64))))
            elif u < 0.5:
                futs.append((("enc", s, q), engine.submit_encode(images[s], q)))
            else:
                futs.append((("dec", s), engine.submit_decode(streams[s])))
        for tag, f in futs:
            try:
                if tag == "bad":
                    assert f.exception(timeout=300) is not None
                elif tag[0] == "enc":
                    key = (tag[1], tag[2])
                    with lock:
                        if key not in expected_enc:
                            expected_enc[key] = codec.encode(images[tag[1]], tag[2])
                    assert f.result(timeout=300) == expected_enc[key]
                else:
                    assert np.array_equal(f.result(timeout=300), expected_img[tag[1]])
            except BaseException as e:  # collected, reported below
                with lock:
                    errors.append(repr(e))

    engine = Engine(codec, max_batch=8, max_delay_ms=5, workers=2, network_workers=2, max_queue=64)
    try:
        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=900)
        assert not any(t.is_alive() for t in threads), "a client hung"
    finally:
        engine.shutdown()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert not errors, errors[:5]
    assert engine.in_flight == 0
    return engine.stats, (rss1 - rss0) / 1024


def test_load_small(tiny_codec, rng):
    stats, _ = _load_test(tiny_codec, rng, clients=8, per_client=25, sizes=[(64, 64), (96, 128), (128, 192)])
    assert stats["ok"] >= 150 and stats["batches"] < stats["ok"]  # most succeed, and batches formed


@pytest.mark.slow
def test_load_full(tiny_codec, rng, capsys):
    sizes = [(64, 64), (128, 128), (256, 192), (512, 384), (512, 768)]
    stats, rss_growth_mb = _load_test(tiny_codec, rng, clients=8, per_client=200, sizes=sizes)
    with capsys.disabled():
        print(f"\nload test: {stats}, peak RSS growth {rss_growth_mb:.1f} MiB")
    assert rss_growth_mb < 2048


def test_a_request_too_large_for_memory_gets_resource_error_and_a_batch_splits(tiny_codec, rng, monkeypatch):
    """A network-stage ResourceError reaches its request as itself (not as an engine failure);
    a batch that would not fit as a whole is retried image by image, and those that fit succeed."""
    from vlmcodec import memory
    from vlmcodec.errors import ResourceError

    img = smooth_image(rng, 64, 64)
    one = memory.SETUP_BYTES + 64 * 64 * memory.ENCODE_BYTES_PER_PIXEL[tiny_codec.pre_edit]
    e = Engine(tiny_codec, max_batch=3, max_delay_ms=200, workers=1)
    try:
        monkeypatch.setattr(memory, "available_memory", lambda: one - 1)
        f = e.submit_encode(img)
        assert isinstance(f.exception(timeout=60), ResourceError)
        monkeypatch.setattr(memory, "available_memory", lambda: one)  # one fits, three together do not
        futs = [e.submit_encode(img) for _ in range(3)]
        assert all(isinstance(x.result(timeout=60), bytes) for x in futs)
        assert e.stats["max_batch_seen"] == 3  # they did go as one batch first
        assert e.submit_encode(img).result(timeout=60) == futs[0].result()  # the engine lives on
    finally:
        e.shutdown()


def test_warmup_runs_every_batch_shape_once_per_coded_size(tiny_codec, rng, monkeypatch):
    """Largest batch first, each distinct padded size once (two samples of one padded size are
    one size), encode and decode; every batch size on a backend that runs whole batches, the
    largest and 1 on one that runs items one at a time. The engine then serves as before."""
    assert tiny_codec.backend.item_by_item  # torch on the CPU
    monkeypatch.setattr(type(tiny_codec.backend), "item_by_item", False)
    calls = []
    analyse, synthesize = tiny_codec.analyse, tiny_codec.synthesize

    def _counted(a, q, **options):
        calls.append(("encode", len(a)))
        return analyse(a, q, **options)

    monkeypatch.setattr(tiny_codec, "analyse", _counted)
    monkeypatch.setattr(tiny_codec, "synthesize", lambda s: calls.append(("decode", len(s))) or synthesize(s))
    samples = [smooth_image(rng, 64, 64), smooth_image(rng, 60, 62), smooth_image(rng, 64, 128)]
    with Engine(tiny_codec, max_batch=3, max_delay_ms=2) as e:
        records = e.warmup(samples, quality=40)
        per_size = [("encode", 1)] + [(m, n) for n in (3, 2, 1) for m in ("encode", "decode")]
        assert calls == per_size * 2  # the 60×62 sample pads to 64×64: no second run
        assert [(r["mode"], r["batch"]) for r in records] == per_size[1:] * 2
        assert {r["coded_size"] for r in records} == {(64, 64), (64, 128)}
        assert all(r["seconds"] > 0 and "skipped" not in r for r in records)
        calls.clear()
        assert len(e.warmup(samples[0], batch_sizes=[2], decode=False)) == 1 and calls == [("encode", 2)]
        monkeypatch.undo()
        calls.clear()
        monkeypatch.setattr(tiny_codec, "analyse", _counted)
        assert [r["batch"] for r in e.warmup(samples[0], decode=False)] == [3, 1]
        assert calls == [("encode", 3), ("encode", 1)]
        im = samples[2]
        assert e.submit_encode(im, 40).result(timeout=60) == tiny_codec.encode(im, 40)


def test_warmup_rejects_bad_arguments(tiny_codec, rng):
    e = Engine(tiny_codec, max_batch=2)
    img = smooth_image(rng, 32, 32)
    try:
        with pytest.raises(ValueError, match="max_batch=2"):
            e.warmup(img, batch_sizes=[3])
        with pytest.raises(ValueError, match="max_batch=2"):
            e.warmup(img, batch_sizes=[0])
        # a number, text, None or a fraction: bare TypeError / ValueError, or run as something else
        # ("12" as sizes 1 and 2, 2.5 as 2)
        for bad, message in ((2, "a list of whole numbers"), ("12", "a list of whole numbers"),
                             ([None], "whole number"), ([2.5], "whole number"), (["a"], "whole number")):
            with pytest.raises(ConfigError, match=message):
                e.warmup(img, batch_sizes=bad)
        with pytest.raises(ValueError, match="at least one"):
            e.warmup([])
        with pytest.raises(ImageError):
            e.warmup(np.zeros((4, 4), np.float64))
        with pytest.raises(ValueError, match="quality"):
            e.warmup(img, quality=101)
    finally:
        e.shutdown()
    with pytest.raises(EngineDeadError):
        e.warmup(img)


def test_warmup_skips_a_batch_that_would_not_fit(tiny_codec, rng, monkeypatch):
    """Serving runs such a batch one request at a time, so warm-up reports it and goes on."""
    from vlmcodec import memory

    img = smooth_image(rng, 64, 64)
    one = memory.SETUP_BYTES + 64 * 64 * memory.ENCODE_BYTES_PER_PIXEL[tiny_codec.pre_edit]
    monkeypatch.setattr(memory, "available_memory", lambda: one)
    with Engine(tiny_codec, max_batch=3) as e:
        records = e.warmup(img, decode=False, batch_sizes=[1, 2, 3])
    assert [r["batch"] for r in records] == [3, 2, 1]
    assert all("memory" in r["skipped"] for r in records[:2]) and records[2]["seconds"] > 0


def test_warmup_runs_each_shape_on_every_network_worker(tiny_codec, rng, monkeypatch):
    """A thread's first run is cold too (its allocator's memory): each shape runs once on each
    network thread, at the same time."""
    threads = []
    analyse = tiny_codec.analyse
    monkeypatch.setattr(tiny_codec, "analyse",
                        lambda a, q, **kw: threads.append((len(a), threading.current_thread().name))
                        or analyse(a, q, **kw))
    with Engine(tiny_codec, max_batch=2, network_workers=2) as e:
        records = e.warmup(smooth_image(rng, 64, 64), decode=False, batch_sizes=[1, 2])
    assert [r["batch"] for r in records] == [2, 1]
    for n in (2, 1):
        names = [t for k, t in threads if k == n]
        assert len(names) == 2 and len(set(names)) == 2 and all(t.startswith("vlmcodec-net") for t in names)


def test_warmup_under_traffic_holds_the_network_workers(tiny_codec, rng, monkeypatch):
    """A warm-up called while requests are served waits for the running batch, then no batch
    runs beside its jobs; requests submitted meanwhile queue and are served after it, with the
    bytes a single call gives. Two warm-ups at once take turns."""
    img = smooth_image(rng, 64, 64)
    events, lock = [], threading.Lock()
    in_batch = threading.Event()
    release = threading.Event()
    analyse = tiny_codec.analyse

    def traced(a, q, **options):
        name = threading.current_thread().name
        warm = name.startswith("vlmcodec-net") and getattr(local, "warm", False)
        with lock:
            events.append(("start", "warm" if warm else "serve", len(a)))
        if not warm and not release.is_set():
            in_batch.set()
            release.wait(timeout=30)
        out = analyse(a, q, **options)
        with lock:
            events.append(("end", "warm" if warm else "serve", len(a)))
        return out

    local = threading.local()
    monkeypatch.setattr(tiny_codec, "analyse", traced)
    with Engine(tiny_codec, max_batch=2, max_delay_ms=1, network_workers=2) as e:
        job_runner = e._run_on_every_network_worker

        def warm_jobs(job):
            def marked():
                local.warm = True
                try:
                    job()
                finally:
                    local.warm = False
            return job_runner(marked)

        monkeypatch.setattr(e, "_run_on_every_network_worker", warm_jobs)
        first = e.submit_encode(img, 40)
        assert in_batch.wait(timeout=30)              # a batch is running and held
        results = []
        warmers = [threading.Thread(target=lambda: results.append(e.warmup(img, quality=40, decode=False)))
                   for _ in range(2)]
        for t in warmers:
            t.start()
        time.sleep(0.2)
        assert not any(k == "warm" for _, k, _ in events)  # the warm-ups wait for the running batch
        queued = [e.submit_encode(img, 40) for _ in range(3)]
        time.sleep(0.2)
        release.set()
        for t in warmers:
            t.join(timeout=60)
        out = [f.result(timeout=60) for f in [first, *queued]]
    assert len(results) == 2 and all(r["seconds"] > 0 for rs in results for r in rs)
    # every warm-up job starts after the held batch ended, and while warm-up jobs run nothing
    # is served: running counts never mix the two kinds
    running = {"warm": 0, "serve": 0}
    first_serve_end = events.index(("end", "serve", 1))
    assert all(i > first_serve_end for i, ev in enumerate(events) if ev[:2] == ("start", "warm"))
    for edge, kind, _ in events:
        running[kind] += 1 if edge == "start" else -1
        assert not (running["warm"] and running["serve"]), events
    expected = tiny_codec.encode(img, 40)
    assert all(o == expected for o in out)


def test_latency_percentiles(tiny_codec, rng, monkeypatch):
    from vlmcodec.runtime import engine as engine_module

    assert engine_module._percentiles([]) == {}
    p = engine_module._percentiles([float(v) for v in range(1, 101)])
    assert (p["count"], p["p50_s"], p["p90_s"], p["p99_s"], p["max_s"]) == (100, 50.0, 90.0, 99.0, 100.0)
    assert engine_module._percentiles([0.5])["p99_s"] == 0.5
    monkeypatch.setattr(engine_module, "LATENCY_WINDOW", 5)  # a bounded window: only the last ones
    with Engine(tiny_codec, max_batch=4, max_delay_ms=2) as eng:
        assert eng.latency() == {"encode": {}, "decode": {}, "refine": {}}
        images = [smooth_image(rng, 32, 48) for _ in range(7)]
        t0 = time.monotonic()
        streams = [f.result() for f in [eng.submit_encode(im, 50) for im in images]]
        eng.submit_decode(streams[0]).result()
        wall = time.monotonic() - t0
        with pytest.raises(BitstreamError):
            eng.submit_decode(b"VLMC junk").result()  # failures are not latencies
        lat = eng.latency()
    assert lat["encode"]["count"] == 5 and lat["decode"]["count"] == 1
    for kind in ("encode", "decode"):
        q = lat[kind]
        assert 0 < q["p50_s"] <= q["p90_s"] <= q["p99_s"] <= q["max_s"] <= wall


def test_latency_histogram_counts_every_request_since_the_start(tiny_codec, rng, monkeypatch):
    """The cumulative histogram (Prometheus' histogram and summary _count/_sum) counts beyond the
    quantiles' sliding window; each request sits in the first bucket whose bound it does not exceed."""
    from vlmcodec.runtime import engine as engine_module

    monkeypatch.setattr(engine_module, "LATENCY_WINDOW", 3)
    monkeypatch.setattr(engine_module, "LATENCY_BUCKETS", (0.0, 0.5, 1e9))  # none is 0 s long, all < 1e9 s
    with Engine(tiny_codec, max_batch=4, max_delay_ms=2) as eng:
        empty = eng.latency_histogram()
        assert empty["encode"] == {"count": 0, "sum": 0.0, "buckets": [(0.0, 0), (0.5, 0), (1e9, 0), (math.inf, 0)]}
        t0 = time.monotonic()
        streams = [eng.submit_encode(smooth_image(rng, 32, 48), 50).result() for _ in range(5)]
        wall = time.monotonic() - t0
        eng.submit_decode(streams[0]).result()
        with pytest.raises(BitstreamError):
            eng.submit_decode(b"VLMC junk").result()  # failures are not latencies
        window = list(eng._latencies["encode"])
        hist, lat = eng.latency_histogram(), eng.latency()
    assert lat["encode"]["count"] == 3 and hist["encode"]["count"] == 5 and hist["decode"]["count"] == 1
    enc = hist["encode"]
    bounds, counts = zip(*enc["buckets"])
    assert bounds == (0.0, 0.5, 1e9, math.inf) and counts[0] == 0 and counts[2] == counts[3] == 5
    assert list(counts) == sorted(counts)  # cumulative
    assert counts[1] >= sum(1 for s in window if s <= 0.5)  # the window's 3 are among the 5
    assert sum(window) < enc["sum"] <= wall  # the window's 3 and 2 more, one after another


def test_prometheus_text_parses_as_the_exposition_format(tiny_codec, rng):
    """/metrics' text read back by Prometheus' own client parser: every family typed, the
    histogram's buckets cumulative up to +Inf = _count, the summary's _count the same."""
    parser = pytest.importorskip("prometheus_client.parser", reason="prometheus-client not installed (test extra)")
    from vlmcodec.runtime.metrics import prometheus_text

    with Engine(tiny_codec, max_batch=4, max_delay_ms=2) as eng:
        for _ in range(3):
            eng.submit_encode(smooth_image(rng, 32, 48), 50).result()
        text = prometheus_text(eng)
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    assert families["vlmcodec_request_duration_seconds"].type == "histogram"
    assert families["vlmcodec_latency_seconds"].type == "summary"
    assert families["vlmcodec_requests"].type == "counter"  # the parser drops a counter's _total
    samples = [s for s in families["vlmcodec_request_duration_seconds"].samples if s.labels["kind"] == "encode"]
    buckets = [s.value for s in samples if s.name.endswith("_bucket")]
    count = next(s.value for s in samples if s.name.endswith("_count"))
    assert buckets == sorted(buckets) and buckets[-1] == count == 3
    summary_count = next(s.value for s in families["vlmcodec_latency_seconds"].samples
                         if s.name.endswith("_count") and s.labels["kind"] == "encode")
    assert summary_count == 3


def test_encode_many_and_decode_many_keep_the_input_order_within_a_window(tiny_codec, rng):
    """Images are taken lazily (never more than the window ahead of the results), streams come
    out in input order and equal Codec.encode's; decode_many gives the images back."""
    images = [smooth_image(rng, 32 + 16 * (i % 3), 48) for i in range(7)]
    taken = []

    def lazily():
        for i, img in enumerate(images):
            taken.append(i)
            yield img

    with Engine(tiny_codec, max_batch=2, max_delay_ms=1) as engine:
        streams = []
        for i, data in enumerate(engine.encode_many(lazily(), 40, window=3)):
            assert len(taken) <= i + 3  # at most the window ahead
            streams.append(data)
        assert streams == [tiny_codec.encode(img, 40) for img in images]
        decoded = list(engine.decode_many(streams, short_side=16))
        assert all(np.array_equal(d, tiny_codec.decode(s, short_side=16)) for d, s in zip(decoded, streams))
        assert list(engine.encode_many([], 40)) == []
        with pytest.raises(ValueError, match="window must be a whole number, at least 1"):
            engine.encode_many(images, window=0)


def test_encode_many_raises_an_items_error_at_its_place_or_returns_it(tiny_codec, rng):
    good = smooth_image(rng, 32, 48)
    bad = np.zeros((4, 4, 5), np.uint8)  # not an image
    with Engine(tiny_codec, max_batch=2, max_delay_ms=1) as engine:
        out = list(engine.encode_many([good, bad, good], 40, return_exceptions=True))
        assert out[0] == out[2] == tiny_codec.encode(good, 40) and isinstance(out[1], ImageError)
        results = engine.encode_many([good, bad, good, good], 40, window=4)
        assert next(results) == out[0]
        with pytest.raises(ImageError):
            next(results)
        out = list(engine.decode_many([out[0], b"VLMC junk"], return_exceptions=True))
        assert out[0].shape == good.shape and isinstance(out[1], BitstreamError)
        # stopped early: the rest is cancelled, nothing stays in flight
        results = engine.encode_many([good] * 6, 40, window=6)
        next(results)
        results.close()
        deadline = time.monotonic() + 30
        while engine.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.in_flight == 0


def test_encode_many_yields_the_items_before_a_failing_input(tiny_codec, rng):
    """An input that raised (a dataset's unreadable record), or a submit that failed (the engine
    shut down meanwhile), cancelled the items before it, already done: none was yielded."""
    good = [smooth_image(rng, 32, 48) for _ in range(3)]

    def records():
        yield from good
        raise OSError("record 4 unreadable")

    with Engine(tiny_codec, max_batch=4, max_delay_ms=1) as engine:
        got = []
        with pytest.raises(OSError, match="record 4"):
            for stream in engine.encode_many(records(), 40, return_exceptions=True):
                got.append(stream)
        assert got == [tiny_codec.encode(im, 40) for im in good]

    engine = Engine(tiny_codec, max_batch=4, max_delay_ms=1)

    def then_shut_down():
        yield from good
        engine.shutdown(drain=True)
        yield good[0]

    got = []
    with pytest.raises(EngineDeadError):
        for stream in engine.encode_many(then_shut_down(), 40):
            got.append(stream)
    assert got == [tiny_codec.encode(im, 40) for im in good]


def test_encode_many_warns_of_a_refined_budget_met_by_a_one_pass_stream(tiny_model_path, rng):
    """Codec.encode_to_size and `await engine.encode` warn (RefineFallbackWarning); encode_many
    gave the right bytes without a word."""
    import warnings

    from vlmcodec import Codec
    from vlmcodec.errors import RefineFallbackWarning

    codec = Codec(tiny_model_path, threads=1)
    analyse = codec.analyse

    def larger_when_refined(pixels, qualities, **options):  # refined streams larger: the one-pass one fits
        y, z = analyse(pixels, qualities, **options)
        return (y * 1.5, z) if options.get("refine") else (y, z)

    codec.analyse = larger_when_refined
    img = smooth_image(rng, 128, 192)
    low = len(codec.encode(img, 0))
    budget = low + (len(codec.encode(img, 20)) - low) // 2
    with pytest.warns(RefineFallbackWarning):
        ref = codec.encode_to_size(img, budget, refine=1)
    with Engine(codec) as engine, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert list(engine.encode_many([img, img], max_bytes=budget, refine=1)) == [ref, ref]
    assert sum(issubclass(w.category, RefineFallbackWarning) for w in caught) == 2


def test_shutdown_with_a_timeout_fails_what_has_not_begun_and_never_hangs(tiny_model_path, rng):
    """Past timeout_s the network pool was closed under the engine's loop, which died submitting
    its next batch: the queued requests were never resolved, in_flight stayed above 0."""
    from concurrent.futures import wait

    from vlmcodec import Codec

    codec = Codec(tiny_model_path, threads=1)
    img = smooth_image(rng, 256, 384)
    engine = Engine(codec, max_batch=1)
    futures = [engine.submit_encode(img, 50) for _ in range(40)]
    engine.shutdown(drain=True, timeout_s=0.05)
    done, not_done = wait(futures, timeout=60)
    assert not not_done and engine.in_flight == 0 and not engine._thread.is_alive()
    failed = [f.exception() for f in futures if f.exception() is not None]
    # (those queued for the networks say so; a coding job queued fails as "before the request ran")
    assert failed and all(isinstance(e, EngineDeadError) for e in failed)
    assert any("not drained within timeout_s=0.05" in str(e) for e in failed)
    assert all(f.result() == codec.encode(img, 50) for f in futures if f.exception() is None)


def test_the_batching_delay_defaults_to_none_where_batches_run_item_by_item(tiny_codec, monkeypatch):
    from vlmcodec.runtime.engine import WHOLE_BATCH_DELAY_MS

    assert tiny_codec.backend.item_by_item  # torch on the CPU
    with Engine(tiny_codec) as engine:
        assert engine.max_delay_ms == 0.0 and engine._sched.max_delay == 0.0
    with Engine(tiny_codec, max_delay_ms=7) as engine:
        assert engine.max_delay_ms == 7.0
    monkeypatch.setattr(type(tiny_codec.backend), "item_by_item", False)  # as CUDA runs whole batches
    with Engine(tiny_codec) as engine:
        assert engine.max_delay_ms == WHOLE_BATCH_DELAY_MS == 5.0


def test_warmup_with_refine_runs_one_refined_encode_per_coded_size_on_a_refine_worker(tiny_model_path, rng):
    from vlmcodec import Codec

    codec = Codec(tiny_model_path)
    analyse, threads = codec.analyse, []

    def traced(pixels, qualities, *, refine=None):
        if codec.refine_steps(refine):
            threads.append((threading.current_thread().name, codec.refine_steps(refine)))
        return analyse(pixels, qualities, refine=refine)

    codec.analyse = traced
    samples = [smooth_image(rng, 64, 64), smooth_image(rng, 60, 62), smooth_image(rng, 64, 128)]
    with Engine(codec, max_batch=2) as engine:
        plain = engine.warmup(samples, decode=False)
        assert not threads and all(r["mode"] == "encode" for r in plain)
        records = engine.warmup(samples, decode=False, refine=True)
        assert engine.stats["refined"] == 0 and engine.latency()["refine"] == {}  # not a request
    refined = [r for r in records if r["mode"] == "refine"]
    assert [(r["coded_size"], r["batch"]) for r in refined] == [((64, 64), 1), ((64, 128), 1)]
    assert all(r["seconds"] > 0 for r in refined)
    assert len(threads) == 2 and all(name.startswith("vlmcodec-refine") and steps == 1 for name, steps in threads)


def test_an_engine_does_not_pickle_and_says_what_to_send_instead(tiny_model_path):
    """Sent to a spawn worker it failed with "cannot pickle '_thread.RLock' object"."""
    import pickle

    from vlmcodec import Codec

    with Engine(Codec(tiny_model_path, threads=1)) as engine:
        with pytest.raises(TypeError, match="an Engine does not pickle.*make an Engine in each"):
            pickle.dumps(engine)


def test_done_callbacks_run_outside_the_engines_lock(tiny_model_path, rng):
    """A request's done-callback ran under the engine's lock: one that waited for another request
    timed out (that request needed the lock to run), one that shut the engine down hung it for
    good. Now the first gets its answer, the second closes the engine and returns, and a later
    shutdown from this thread waits for the rest."""
    from vlmcodec import Codec

    img = smooth_image(rng, 64, 64)
    engine = Engine(Codec(tiny_model_path, threads=1), workers=2)
    chained, ended = Future(), threading.Event()

    def decode_it(f):  # waits for a second request on the engine's own thread (a coding thread of two:
        # the decode needs a network worker and a coding thread, free here; docs/serving.md)
        try:
            chained.set_result(engine.submit_decode(f.result()).result(timeout=60).shape)
        except Exception as e:  # noqa: BLE001 — handed to the test
            chained.set_exception(e)

    engine.submit_encode(img, 50).add_done_callback(decode_it)
    assert chained.result(timeout=90) == (64, 64, 3)

    def shut_down(f):
        engine.shutdown()
        ended.set()

    engine.submit_encode(img, 50).add_done_callback(shut_down)
    assert ended.wait(60) and engine.closed
    with pytest.raises(EngineDeadError):
        engine.submit_encode(img, 50)
    engine.shutdown()  # from here it waits for the engine's threads
    assert engine.in_flight == 0


def test_the_async_encode_takes_an_owner(tiny_codec, rng):
    """(submit_encode took one; `await engine.encode` had no way to pass it to the refine workers)"""
    img = smooth_image(rng, 32, 48)
    with Engine(tiny_codec) as engine:
        seen = []
        submit = engine.submit_encode

        def traced(*args, **kwargs):
            seen.append(kwargs.get("owner"))
            return submit(*args, **kwargs)

        engine.submit_encode = traced
        assert asyncio.run(engine.encode(img, 40, owner="client-a")) == tiny_codec.encode(img, 40)
    assert seen == ["client-a"]


def test_a_base_exception_on_the_coding_pool_fails_its_request(tiny_codec, rng, monkeypatch):
    """A KeyboardInterrupt / SystemExit in entropy coding (the jobs catch Exception) vanished into
    the pool's own future: the request's stayed pending for ever and a draining shutdown hung. It
    fails with EngineDeadError, as a BaseException in the network stage did."""
    img = smooth_image(rng, 64, 64)

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    with Engine(tiny_codec, max_delay_ms=1) as e:
        monkeypatch.setattr(e.codec, "entropy_encode", interrupted)
        err = e.submit_encode(img).exception(timeout=30)
        assert isinstance(err, EngineDeadError) and "KeyboardInterrupt" in str(err), err
        assert e.in_flight == 0
        monkeypatch.undo()
        assert e.submit_encode(img).result(timeout=60)[:4] == b"VLMC"  # the engine still runs


def test_a_cancelled_queued_request_gives_back_its_place_at_once(tiny_codec, rng):
    """A request cancelled while queued held its place in max_queue until its batch was formed
    (max_delay_ms later): a server whose clients hung up under overload refused new requests
    with QueueFull meanwhile. Now it leaves the queue when cancelled; the others still run."""
    img = smooth_image(rng, 64, 64)
    with Engine(tiny_codec, max_batch=8, max_delay_ms=60_000, max_queue=3, block=False) as e:
        futs = [e.submit_encode(img) for _ in range(3)]
        with pytest.raises(QueueFull):
            e.submit_encode(img)
        assert futs[0].cancel() and futs[1].cancel()
        assert e.in_flight == 1 and e.stats["failed"] == 2
        more = [e.submit_encode(img) for _ in range(2)]  # room again
        with pytest.raises(QueueFull):
            e.submit_encode(img)
        assert more[0].cancel() and e.in_flight == 2
    assert futs[2].result(timeout=0)[:4] == more[1].result(timeout=0)[:4] == b"VLMC"  # drained at the exit


def test_a_request_cancelled_in_the_queue_is_done_for_wait_and_as_completed(tiny_codec, rng):
    """Taken out of the queue when cancelled, its future was never notified as an executor does
    (set_running_or_notify_cancel): concurrent.futures.wait() and as_completed() never saw it done."""
    from concurrent.futures import as_completed, wait

    img = smooth_image(rng, 64, 64)
    with Engine(tiny_codec, max_batch=8, max_delay_ms=60_000) as e:
        fut = e.submit_encode(img)
        assert fut.cancel()
        done, pending = wait([fut], timeout=10)
        assert done == {fut} and not pending
        assert list(as_completed([fut], timeout=10)) == [fut]


def test_a_request_failed_at_its_deadline_calls_back_off_the_loop_thread(tiny_codec, rng):
    """The loop thread resolved the futures it failed at their deadline: their done-callbacks ran
    there, so one waiting for another request stalled all batching (for ever without a timeout),
    and one calling shutdown() failed joining its own thread. They run on a thread of their own."""
    img = smooth_image(rng, 64, 64)
    seen: dict = {}
    e = Engine(tiny_codec, max_batch=8, max_delay_ms=500, network_workers=2, workers=2)

    def chained(fut):
        seen["thread"] = threading.current_thread().name
        try:
            seen["inner"] = len(e.submit_encode(img, timeout_s=30).result(timeout=20))
        except Exception as err:  # noqa: BLE001 — handed to the test
            seen["inner"] = err
        e.shutdown()  # from a callback: closes the engine and returns
        seen["closed"] = e.closed

    e.submit_encode(img, timeout_s=0.05).add_done_callback(chained)
    deadline = time.monotonic() + 40
    while "closed" not in seen and time.monotonic() < deadline:
        time.sleep(0.05)
    e.shutdown()
    assert seen.get("thread", "").startswith("vlmcodec-resolve"), seen
    assert isinstance(seen["inner"], int) and seen["inner"] > 0 and seen["closed"], seen
    assert e.in_flight == 0


def test_a_wrapped_failure_keeps_its_cause_and_names_it(tiny_codec, rng, monkeypatch):
    """RequestError('encoding failed: ') of an AssertionError(): an empty message, and neither
    __cause__ nor a traceback to the failing line. Now the cause is chained and named."""
    from vlmcodec.errors import RequestError

    img = smooth_image(rng, 64, 64)

    def failing(*a, **kw):
        raise AssertionError()

    with Engine(tiny_codec, max_delay_ms=1) as e:
        monkeypatch.setattr(e.codec, "entropy_encode", failing)
        err = e.submit_encode(img).exception(timeout=30)
        monkeypatch.undo()
    assert isinstance(err, RequestError) and str(err) == "encode failed: AssertionError", err
    assert isinstance(err.__cause__, AssertionError)


def test_a_decode_waiting_for_a_coding_thread_times_out_and_cancels_at_once(tiny_codec, rng, monkeypatch):
    """Behind an entropy-coding backlog (one coding thread), a decode's deadline and cancel were
    looked at only when the thread took it: a 0.2 s timeout failed after ~1.9 s, and a cancelled
    one held its place (and wait() never saw it done). Now both end at once."""
    from concurrent.futures import wait as wait_futures

    img = smooth_image(rng, 64, 64)
    with Engine(tiny_codec, workers=1, max_delay_ms=1) as e:
        stream = e.submit_encode(img).result(timeout=60)
        _slowed(monkeypatch, e.codec, "entropy_encode", 0.5)
        backlog = [e.submit_encode(img) for _ in range(4)]
        time.sleep(0.1)  # (the encodes reach the coding thread first)
        t0 = time.monotonic()
        timed, cancelled = e.submit_decode(stream, timeout_s=0.2), e.submit_decode(stream)
        assert cancelled.cancel()
        assert wait_futures([cancelled], timeout=5).done == {cancelled}
        err = timed.exception(timeout=30)
        waited = time.monotonic() - t0
        assert isinstance(err, RequestTimeoutError) and waited < 1.2, (err, waited)
        assert all(len(f.result(timeout=60)) > 0 for f in backlog)
        monkeypatch.undo()
        assert e.submit_decode(stream).result(timeout=60).shape == (64, 64, 3)
    assert e.in_flight == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # (the loop's, re-raised)
def test_a_timeout_or_delay_beyond_the_clock_is_refused_and_a_dead_loop_fails_its_requests(tiny_codec, rng,
                                                                                           monkeypatch):
    """timeout_s=1e10 was taken, then the batching loop's wait overflowed the clock (OverflowError):
    the loop died, every later request waited for ever and the engine still looked alive. Such
    settings are refused now; a loop that dies all the same closes the engine and fails its queue."""
    from vlmcodec.checks import MAX_SECONDS

    img = smooth_image(rng, 64, 64)
    for kw in ({"timeout_s": 1e10}, {"max_delay_ms": 1e13}, {"timeout_s": MAX_SECONDS * 2}):
        with pytest.raises(ConfigError, match="at most"):
            Engine(tiny_codec, **kw)
    with Engine(tiny_codec, max_delay_ms=60_000, timeout_s=MAX_SECONDS) as e:
        refused = e.submit_encode(img, timeout_s=1e10).exception(timeout=10)
        assert isinstance(refused, ConfigError) and "at most 1e+07" in str(refused), refused
        queued = e.submit_encode(img, timeout_s=MAX_SECONDS)  # the longest: waits, does not overflow
        time.sleep(0.2)
        assert not queued.done()

        _break_the_loop(monkeypatch, e)
        err = queued.exception(timeout=30)
        assert isinstance(err, EngineDeadError) and "batching loop stopped" in str(err), err
        assert e.closed and e.in_flight == 0
        with pytest.raises(EngineDeadError):
            e.submit_encode(img)


def test_a_decode_cancelled_during_its_entropy_decode_gives_back_its_place(tiny_codec, rng, monkeypatch):
    """Cancelled while a coding thread decoded its entropy, a decode was queued for the networks all
    the same and held its max_queue place until its batch ran."""
    img = smooth_image(rng, 64, 64)
    with Engine(tiny_codec, max_delay_ms=60_000, max_queue=2, block=False) as e:
        stream = e.codec.encode(img, 50)
        started = _slowed(monkeypatch, e.codec, "entropy_decode", 0.5)
        fut = e.submit_decode(stream)
        assert started.wait(10) and fut.cancel()
        deadline = time.monotonic() + 10
        while e.in_flight and time.monotonic() < deadline:  # (until its entropy decode is over)
            time.sleep(0.02)
        assert e.in_flight == 0
        time.sleep(0.1)
        assert e.in_flight == 0  # (not queued again after it)
        e.submit_encode(img), e.submit_encode(img)  # both places free


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # (the loop's, re-raised)
def test_a_shutdown_after_the_loop_died_does_not_queue_what_no_loop_runs(tiny_codec, rng, monkeypatch):
    """A decode in its entropy decode when the batching loop died was queued after it, once a
    shutdown (drain=True, as a with block's) had turned draining back on: never resolved."""
    img = smooth_image(rng, 64, 64)
    e = Engine(tiny_codec, max_delay_ms=10)
    stream = e.codec.encode(img, 50)
    started = _slowed(monkeypatch, e.codec, "entropy_decode", 0.5)
    fut = e.submit_decode(stream)
    assert started.wait(10)

    _break_the_loop(monkeypatch, e)
    e._thread.join(10)
    assert not e._thread.is_alive() and e.closed
    e.shutdown()  # drain=True
    err = fut.exception(timeout=10)
    assert isinstance(err, EngineDeadError) and "batching loop stopped" in str(err), err
    assert e.in_flight == 0


def test_an_idle_engine_shuts_down_without_drain_at_once(tiny_codec):
    """With nothing queued the batching loop waits without a wake-up time: a shutdown without
    drain must wake it (a mutation dropping that wake-up hung shutdown for ever)."""
    e = Engine(tiny_codec)
    time.sleep(0.1)  # (the loop is waiting)
    stopper = threading.Thread(target=e.shutdown, kwargs={"drain": False}, daemon=True)
    stopper.start()
    stopper.join(10)
    assert not stopper.is_alive()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_batching_loop_reports_its_exception(tiny_codec, monkeypatch):
    """The loop's failure is raised on, to threading.excepthook (the log), not swallowed."""
    seen: list = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    e = Engine(tiny_codec, max_delay_ms=10)

    _break_the_loop(monkeypatch, e)
    e._thread.join(10)
    assert any(isinstance(x, RuntimeError) and "a bug in the scheduler" in str(x) for x in seen), seen
    e.shutdown()


def test_a_drain_past_its_timeout_fails_the_queued_coding_jobs(tiny_model_path, rng, monkeypatch):
    """Past shutdown(drain=True, timeout_s=)'s time the queued entropy-coding jobs fail with
    EngineDeadError (they ran on once the coding thread was free); the running one finishes."""
    from vlmcodec import Codec

    codec = Codec(tiny_model_path)
    first, release = _held_first(monkeypatch, codec, "entropy_encode")
    e = Engine(codec, max_batch=1, max_delay_ms=0, workers=1)
    running, queued = _coding_backlog(e, smooth_image(rng, 32, 48), first)
    threading.Timer(0.5, release.set).start()
    e.shutdown(drain=True, timeout_s=0.1)
    assert isinstance(running.result(timeout=5), bytes)
    assert all(isinstance(f.exception(timeout=5), EngineDeadError) for f in queued)
