"""Torch's thread count, which torch keeps per thread, as codecs set and record it; forks while
another thread makes a codec; the top-level API's codec cache while a codec is being made.
The fork and thread-count cases run in scripts of their own (fresh interpreters), each forked
child with a deadline (SIGALRM), so a hang fails the test instead of hanging pytest."""

import os
import subprocess
import sys
import textwrap
import threading

import pytest

import vlmcodec

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")

PRELUDE = textwrap.dedent("""
    import os, signal, sys, threading, time, warnings
    from concurrent.futures import ThreadPoolExecutor
    import numpy as np
    import torch
    import vlmcodec
    import vlmcodec.torch_threads as tt
    from vlmcodec import Codec
    img = (np.random.default_rng(0).random((96, 96, 3)) * 255).astype(np.uint8)

    def own_count(n):
        # this thread's torch threads: n from now on (a thread's first torch call takes the count
        # set last anywhere: made here, it keeps its own)
        torch.set_num_threads(n)
        return torch.get_num_threads()

    def forked(fn, deadline=60):
        # fork, run fn in the child: 'ok' (it returned, not False), 'failed' or 'HUNG' (past the deadline)
        pid = os.fork()
        if pid == 0:
            signal.alarm(deadline)  # (a child stuck on a lock dies of SIGALRM)
            try:
                os._exit(1 if fn() is False else 0)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        return "ok" if code == 0 else ("HUNG" if code == -signal.SIGALRM else "failed")
""")


def run_script(body: str, timeout: int = 500) -> list[str]:
    run = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(body)], capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.split("\n")


@needs_fork
def test_a_child_forked_while_another_thread_makes_a_codec_makes_its_own():
    """A model's random weight init holds torch's CPU generator mutex: a child forked while
    another thread was in it found it locked for good, and its own Codec() hung (3 in 30)."""
    out = run_script("""
        Codec(threads=1)
        stop = threading.Event()

        def maker():
            while not stop.is_set():
                Codec(threads=1)

        making = threading.Thread(target=maker)
        making.start()
        results = []
        for i in range(20):
            time.sleep(0.05 + (i % 7) * 0.03)
            results.append(forked(lambda: Codec(threads=1)))
            if results[-1] != "ok":
                break
        stop.set()
        making.join()
        print(results)
    """)
    assert eval(out[0]) == ["ok"] * 20


@needs_fork
def test_a_model_loads_in_a_child_forked_while_torchs_random_generator_was_busy():
    """load_model made the network with a random init, then loaded the weights: in a child forked
    while another thread held torch's CPU generator mutex (here a long uniform_, held ~all the
    time), the child's load waited on it for good. The network is made without one now."""
    out = run_script("""
        from vlmcodec.models.checkpoint import load_model
        stop = threading.Event()

        def draw():
            noise = torch.empty(1 << 23)
            while not stop.is_set():
                noise.uniform_()

        drawing = threading.Thread(target=draw)
        drawing.start()
        time.sleep(0.5)
        results = []
        while len(results) < 3 and "HUNG" not in results:
            results.append(forked(lambda: load_model(vlmcodec.default_model_path()) and None))
        stop.set()
        drawing.join()
        print(results)
    """)
    assert eval(out[0]) == ["ok"] * 3


def test_making_a_codec_draws_nothing_from_torchs_generator():
    """No module of a codec is made with a random init (the sub-pixel convolutions were: a child
    forked meanwhile could inherit torch's generator mutex held), so its state is untouched."""
    import torch

    from vlmcodec import Codec

    Codec(threads=1)
    before = torch.random.get_rng_state()
    for optimize in (True, False):
        Codec(threads=1, backend_options={"optimize": optimize})
    assert torch.equal(before, torch.random.get_rng_state())


@needs_fork
def test_a_fork_waits_for_the_blocks_other_threads_have_under_way():
    """forks.fork_waits(): a fork in another thread waits until the block has ended, and the
    blocks under way are not counted in the child."""
    out = run_script("""
        from vlmcodec import forks
        inside, entered, release = [False], threading.Event(), threading.Event()

        def block():
            with forks.fork_waits():
                inside[0] = True
                entered.set()
                release.wait()
                inside[0] = False

        a = threading.Thread(target=block)
        a.start()
        assert entered.wait(60)
        got = []
        f = threading.Thread(target=lambda: got.append(forked(lambda: not inside[0] and forks._busy == 0)))
        f.start()
        t0 = time.time()
        while not forks._forking and time.time() - t0 < 60:  # the fork waits in its before-fork hook
            time.sleep(0.01)
        waited = forks._forking == 1
        release.set()
        a.join()
        f.join()
        with forks.fork_waits():  # a fork from inside a block does not wait for itself
            print(waited, got, forked(lambda: forks._busy == 1))
    """)
    assert out[0] == "True ['ok'] ok"


@needs_fork
@pytest.mark.parametrize("threads", [1, None])
def test_a_child_forked_after_a_thread_ran_a_codec_on_two_threads_works(threads):
    """Torch's thread count is per thread: a pool thread made before the codec ran the codec on
    its 2 threads, then lowered its count (a Codec(threads=1) made there) and forked; the fork
    guard, looking at that count at fork time only, let the child keep its threads, and the
    child's first 2-thread encode hung in OpenMP's barrier. threads=1: the codec runs on 1 thread
    in that thread too (nothing to record); None: the codec runs on the thread's 2, recorded."""
    out = run_script(f"""
        pool = ThreadPoolExecutor(1)
        assert pool.submit(own_count, 2).result() == 2  # a worker thread existing before the codec
        torch.set_num_threads(1)
        codec = Codec(threads={threads})
        ref = codec.encode(img, 50)

        def job():
            same = codec.encode(img, 50) == ref
            Codec(threads=1)  # e.g. another codec made here later: this thread's count is 1 now

            def child():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    assert Codec(threads=2).encode(img, 50) == ref

            return same, forked(child), tt._threads_started

        print(pool.submit(job).result())
    """)
    same, child, marked = eval(out[0])
    assert (same, child) == (True, "ok")
    assert marked == (threads is None)


def test_a_codecs_calls_run_on_its_own_threads_from_any_thread():
    """Codec(threads=N) set torch's count only for the thread that made it and threads started
    after: a pool thread that existed ran a threads=2 codec on its 1 (its repr said 2), and the
    threads=1 codec ran on 2 in the main thread once a Codec(threads=2) was made there. The
    bytes do not depend on the threads."""
    out = run_script("""
        seen = []

        def probe(codec, tag):  # the torch threads its networks and exact h_s see
            for name in ("analysis", "hyper_analysis", "synthesis"):
                orig = getattr(codec.backend, name)
                setattr(codec.backend, name, lambda x, orig=orig, name=name: (
                    seen.append((tag, name, torch.get_num_threads())), orig(x))[1])
            exact = codec.exact_hs
            codec.exact_hs = lambda z: (seen.append((tag, "h_s", torch.get_num_threads())), exact(z))[1]

        old = ThreadPoolExecutor(1)
        assert old.submit(own_count, 1).result() == 1  # a pool thread existing before the codecs, on 1
        one = Codec(threads=1)
        two = Codec(threads=2)  # made after: the main thread's count is 2 now
        probe(two, "two"); probe(one, "one")
        data = {}
        for tag, codec in (("two", two), ("one", one)):
            for where, run in (("main", lambda f, *a: f(*a)), ("old", lambda f, *a: old.submit(f, *a).result())):
                data[tag, where] = run(codec.encode, img, 50)
                assert run(codec.decode, data[tag, where]).shape == img.shape
        print(sorted(set(seen)))
        print(len(set(data.values())), two.threads)
    """)
    seen = eval(out[0])
    assert seen == sorted({(tag, name, {"two": 2, "one": 1}[tag]) for tag in ("two", "one")
                           for name in ("analysis", "hyper_analysis", "synthesis", "h_s")})
    assert out[1] == "1 2"


class _SlowCodec:
    """Stands for Codec in vlmcodec's cache: "slow" ones wait for an event before they are made."""

    made: list = []
    started = threading.Event()
    finish = threading.Event()

    def __init__(self, model=None, backend="torch"):
        if model == "slow":
            _SlowCodec.started.set()
            assert _SlowCodec.finish.wait(60)
        if model == "bad":
            raise vlmcodec.ModelNotFoundError("model file not found: bad")
        _SlowCodec.made.append(model)
        self.model = model

    def encode(self, image, quality, short_side=None, refine=0):
        return f"{self.model}:{quality}".encode()


@pytest.fixture
def slow_codecs(monkeypatch):
    import vlmcodec.codec

    monkeypatch.setattr(vlmcodec.codec, "Codec", _SlowCodec)
    monkeypatch.setattr(vlmcodec, "_codecs", {})
    monkeypatch.setattr(vlmcodec, "_making", {})
    _SlowCodec.made = []
    _SlowCodec.started.clear()
    _SlowCodec.finish.clear()
    yield _SlowCodec
    _SlowCodec.finish.set()


def test_a_cached_codec_answers_while_another_is_being_made(slow_codecs):
    """The cache's lock was held while a codec was made: a first call for another model or
    backend (an onnxruntime export: seconds) held up every call on the codecs already made.
    Callers of the codec being made wait for that one construction."""
    assert vlmcodec.encode(None, 50, model="fast") == b"fast:50"
    results = []
    slow = [threading.Thread(target=lambda: results.append(vlmcodec.encode(None, 60, model="slow"))) for _ in range(3)]
    for t in slow:
        t.start()
    assert slow_codecs.started.wait(60)
    fast = threading.Thread(target=lambda: results.append(vlmcodec.encode(None, 50, model="fast")))
    fast.start()
    fast.join(60)
    done_while_making = not fast.is_alive() and list(results)
    slow_codecs.finish.set()
    for t in slow:
        t.join(60)
    assert done_while_making == [b"fast:50"]
    assert sorted(results) == [b"fast:50"] + [b"slow:60"] * 3
    assert slow_codecs.made == ["fast", "slow"]  # one construction per key
    assert vlmcodec._making == {}


def test_a_failed_construction_is_tried_again_by_the_next_call(slow_codecs):
    for _ in range(2):
        with pytest.raises(vlmcodec.ModelNotFoundError):
            vlmcodec.encode(None, 50, model="bad")
    assert vlmcodec._codecs == {} and vlmcodec._making == {}
    assert vlmcodec.encode(None, 50, model="good") == b"good:50"
