"""Request priorities: the scheduler's order, the Engine's, and ``?priority=`` on the server
(at most the client's own, from its token-file line)."""

import argparse
import threading
from concurrent.futures import Future

import pytest

from conftest import serving, smooth_image
from vlmcodec import Codec
from vlmcodec.runtime import Engine, RemoteCodec, Scheduler
from vlmcodec.runtime.engine import check_priority
from vlmcodec.runtime.request import InflightRequest, Kind


def _req(key, t, priority=0):
    return InflightRequest(Kind.ENCODE, key, None, Future(), t, None, priority=priority)


def test_the_highest_priority_ready_group_goes_first_then_the_oldest():
    s = Scheduler(max_batch=2, max_delay=0.5)
    s.add(_req("a", 0.0))
    s.add(_req("b", 0.1, priority=-1))
    s.add(_req("a", 0.2, priority=5))      # same key, other priority: a group of its own
    s.add(_req("c", 0.3, priority=5))
    order = [s.pop_batch(now=1.0) for _ in range(4)]
    assert [(b[0].key, b[0].priority, len(b)) for b in order] == [("a", 5, 1), ("c", 5, 1), ("a", 0, 1), ("b", -1, 1)]
    assert s.pop_batch(now=1.0) is None and len(s) == 0


def test_a_high_priority_group_not_yet_ready_does_not_hold_a_ready_one():
    s = Scheduler(max_batch=4, max_delay=0.5)
    s.add(_req("low", 0.0, priority=-3))
    s.add(_req("high", 0.4, priority=3))
    assert s.pop_batch(now=0.6)[0].key == "low"   # the high one has waited 0.2 s of its 0.5
    assert s.pop_batch(now=0.6) is None
    assert s.next_due() == pytest.approx(0.9)


@pytest.mark.parametrize("bad", [101, -101, 1.5, True, "1", None])
def test_a_priority_is_an_int_in_range(bad):
    with pytest.raises(ValueError, match=r"priority must be an int in \[-100, 100\]"):
        check_priority(bad)


def test_the_engine_runs_a_later_high_priority_request_before_queued_low_ones(tiny_model_path, rng):
    codec = Codec(tiny_model_path)
    img = smooth_image(rng, 32, 48)
    analyse, first, release, order = codec.analyse, threading.Event(), threading.Event(), []

    def traced(pixels, qualities, **options):
        order.append(qualities[0])
        if len(order) == 1:
            first.set()
            assert release.wait(60)
        return analyse(pixels, qualities, **options)

    codec.analyse = traced
    with Engine(codec, max_batch=1, max_delay_ms=0) as engine:
        running = engine.submit_encode(img, 10)
        assert first.wait(60)  # the network worker is held: the rest queue
        low = [engine.submit_encode(img, q, priority=-1) for q in (20, 30)]
        normal = engine.submit_encode(img, 40)
        high = engine.submit_encode(img, 50, priority=7)
        release.set()
        for fut in (running, *low, normal, high):
            fut.result(timeout=60)
        with pytest.raises(ValueError, match="priority"):
            engine.submit_encode(img, 50, priority=1000).result(timeout=60)
        with pytest.raises(ValueError, match="priority"):
            engine.submit_decode(running.result(), priority=-1000).result(timeout=60)
    assert order == [10, 50, 40, 20, 30]


def _recorded_priorities(server) -> list:
    seen, engine = [], server.engine
    submit_encode, submit_decode = engine.submit_encode, engine.submit_decode

    def encode(*args, **kwargs):
        seen.append(("encode", kwargs["priority"]))
        return submit_encode(*args, **kwargs)

    def decode(*args, **kwargs):
        seen.append(("decode", kwargs["priority"]))
        return submit_decode(*args, **kwargs)

    engine.submit_encode, engine.submit_decode = encode, decode
    return seen


def test_a_client_may_lower_its_priority_but_not_raise_it_above_its_own(tiny_model_path, rng):
    img = smooth_image(rng, 32, 48)
    with serving(tiny_model_path) as server:  # no tokens: everyone's own priority is 0
        seen = _recorded_priorities(server)
        with RemoteCodec(server.url, retries=0) as remote:
            data = remote.encode(img, 50)
            remote.encode(img, 50, priority=-5)
            remote.decode(data, priority=-2)
            with pytest.raises(PermissionError, match=r"priority 1 is above this client's 0 .*\(HTTP 403\)"):
                remote.encode(img, 50, priority=1)
            with pytest.raises(ValueError, match="priority must be an int"):
                remote.encode(img, 50, priority=-500)
        assert seen == [("encode", 0), ("encode", -5), ("decode", -2)]
    tokens = {"front": "tok-f", "bulk": "tok-b", "other": "tok-o"}
    with serving(tiny_model_path, auth_token=tokens, client_priorities={"front": 5, "bulk": -5}) as server:
        seen = _recorded_priorities(server)
        with RemoteCodec(server.url, token="tok-f", retries=0) as front, \
                RemoteCodec(server.url, token="tok-b", retries=0) as bulk, \
                RemoteCodec(server.url, token="tok-o", retries=0) as other:
            front.encode(img, 50)
            front.encode(img, 50, priority=5)
            front.encode(img, 50, priority=-1)
            with pytest.raises(PermissionError):
                front.encode(img, 50, priority=6)
            data = bulk.encode(img, 50)
            with pytest.raises(PermissionError, match="priority 0 is above this client's -5"):
                bulk.decode(data, priority=0)
            other.decode(data)
        assert seen == [("encode", 5), ("encode", 5), ("encode", -1), ("encode", -5), ("decode", 0)]
    from vlmcodec.errors import ConfigError

    with pytest.raises(ConfigError, match="a priority for client 'nobody', whom no token names"):
        with serving(tiny_model_path, auth_token=tokens, client_priorities={"nobody": 1}):
            pass


def test_a_reload_changes_the_clients_priorities(tiny_model_path, tmp_path, capsys):
    from vlmcodec.cli.serve import _reload_security, _serve_security

    tokens = tmp_path / "tokens.txt"
    tokens.write_text("front tok-f priority=3\n")
    tokens.chmod(0o600)  # (readable by others: a warning)
    args = argparse.Namespace(tls_cert=None, tls_key=None, tls_client_ca=None, auth_token_file=str(tokens))
    _, token_file = _serve_security(args)
    with serving(tiny_model_path, auth_token=token_file.tokens, client_priorities=token_file.priorities) as server:
        assert server.client_priorities == {"front": 3}
        tokens.write_text("front tok-f priority=9\n")
        _reload_security(server, args)
        assert server.client_priorities == {"front": 9}
        tokens.write_text("front tok-f priority=900\n")
        _reload_security(server, args)
        assert server.client_priorities == {"front": 9}  # a file that does not load is refused
    assert "reload refused" in capsys.readouterr().err


def _hold_the_first_refinement(codec):
    """Patch ``codec.analyse`` to record each refined encode's quality in ``order`` and hold the
    first until ``release`` is set (``first`` is set once it runs): the rest queue meanwhile."""
    analyse, first, release, order = codec.analyse, threading.Event(), threading.Event(), []

    def traced(pixels, qualities, *, refine=None):
        order.append(qualities[0])
        if len(order) == 1:
            first.set()
            assert release.wait(60)
        return analyse(pixels, qualities, refine=refine)

    codec.analyse = traced
    return first, release, order


def test_the_refine_workers_take_the_highest_priority_refined_encode_waiting(tiny_model_path, rng):
    codec = Codec(tiny_model_path)
    img = smooth_image(rng, 32, 48)
    first, release, order = _hold_the_first_refinement(codec)
    with Engine(codec, refine_workers=1) as engine:
        running = engine.submit_encode(img, 10, refine=1)
        assert first.wait(60)  # the refine worker is held: the rest wait for it
        low = [engine.submit_encode(img, q, refine=1, priority=-1) for q in (20, 30)]
        normal = engine.submit_encode(img, 40, refine=1)
        high = [engine.submit_encode(img, q, refine=1, priority=7) for q in (50, 60)]
        release.set()
        results = [fut.result(timeout=60) for fut in (running, *low, normal, *high)]
    assert order == [10, 50, 60, 40, 20, 30]
    assert results[1] == codec.encode(img, 20, refine=1)  # each request got its own image and quality
    assert engine.stats["refined"] == 6 and engine.in_flight == 0


def test_the_refine_workers_share_a_priority_between_owners(tiny_model_path, rng):
    """One owner's queue of refined encodes does not hold another's behind it: within a priority
    the worker goes to the owner with the fewest running, then the one served longest ago."""
    codec = Codec(tiny_model_path)
    img = smooth_image(rng, 32, 48)
    first, release, order = _hold_the_first_refinement(codec)
    with Engine(codec, refine_workers=1) as engine:
        running = engine.submit_encode(img, 10, refine=1, owner="flood")
        assert first.wait(60)
        flood = [engine.submit_encode(img, q, refine=1, owner="flood") for q in (20, 30, 40)]
        polite = [engine.submit_encode(img, q, refine=1, owner="polite") for q in (50, 60)]
        urgent = engine.submit_encode(img, 70, refine=1, owner="flood", priority=2)
        release.set()
        for fut in (running, *flood, *polite, urgent):
            fut.result(timeout=60)
    # nobody left: forgotten (checked once the workers have stopped: a future resolves before
    # its worker's bookkeeping ends)
    assert engine._refine_running == {} and engine._refine_turn == {}
    # priority first; then turns: polite had none, flood had just had one
    assert order == [10, 70, 50, 20, 60, 30, 40]
