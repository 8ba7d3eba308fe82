"""What the server's /stats and /metrics count: decode latency from submit, every HTTP answer by
status, and the latency objects of kinds with no request yet."""

import json
import socket
import threading
import time

import pytest

from vlmcodec import Codec
from vlmcodec.runtime import Engine, running_server

from conftest import smooth_image
from test_server import _png, _request, _wait_for

PERCENTILES = ("p50_s", "p90_s", "p99_s", "max_s")


def test_decode_latency_includes_the_entropy_decode(tiny_model_path, rng, monkeypatch):
    """A decode's latency runs from its submit: its wait for the coding pool and its entropy
    decode (made 0.3 s slow here) are in it, not only its time after them."""
    codec = Codec(tiny_model_path)
    data = codec.encode(smooth_image(rng, 64, 64), 50)
    real = codec.entropy_decode

    def slow(*args, **kwargs):
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(codec, "entropy_decode", slow)
    with Engine(codec, max_batch=2, max_delay_ms=0) as engine:
        engine.submit_decode(data).result()
        window, totals = engine.latency()["decode"], engine.latency_histogram()["decode"]
    assert window["count"] == 1 and window["max_s"] >= 0.3
    assert totals["count"] == 1 and totals["sum"] >= 0.3


def _stats(server) -> dict:
    status, _, payload = _request(server, "GET", "/stats")
    assert status == 200
    return json.loads(payload)


def test_a_fresh_servers_latency_has_every_kind_with_count_0(tiny_model_path):
    with running_server(Engine(Codec(tiny_model_path), block=False)) as server:
        stats = _stats(server)
    for latency in (stats["latency"], *(m["latency"] for m in stats["by_model"].values())):
        assert set(latency) == {"encode", "decode", "refine"}
        for kind in latency.values():
            assert kind["count"] == 0 and kind["total"] == 0 and kind["total_s"] == 0
            assert all(kind[key] is None for key in PERCENTILES)


def _hold_the_engine(engine, monkeypatch) -> threading.Event:
    """The engine's networks wait for the returned event to be set: a request admitted meanwhile
    stays in flight."""
    gate = threading.Event()
    real = engine.codec.analyse

    def held(*args, **kwargs):
        gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.codec, "analyse", held)
    return gate


def _metric_samples(text: str, family: str) -> dict[str, float]:
    """The family's samples by their ``code`` label, read with Prometheus' own parser."""
    parser = pytest.importorskip("prometheus_client.parser", reason="prometheus-client not installed (test extra)")
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    assert families[family].type == "counter"
    return {s.labels["code"]: s.value for s in families[family].samples if s.name == family + "_total"}


def test_every_answer_is_counted_by_status(tiny_model_path, rng, monkeypatch):
    """A known mix of answers (coding and monitoring requests, refusals before and inside the
    engine, a full queue) counted exactly in /stats' ``responses`` and /metrics; the engine's
    ``failed`` counts only requests it admitted."""
    engine = Engine(Codec(tiny_model_path), block=False, max_queue=1)
    png = _png(smooth_image(rng, 64, 64))
    with running_server(engine, max_body=100_000) as server:
        for _ in range(2):
            assert _request(server, "POST", "/encode?quality=50", png)[0] == 200
        assert _request(server, "GET", "/health")[0] == 200
        assert _request(server, "POST", "/encode", b"junk" * 20)[0] == 400  # not an image
        assert _request(server, "POST", "/encode?quality=500", png)[0] == 400  # refused at submit
        assert _request(server, "POST", "/encode", b"x" * 200_000)[0] == 413  # over max_body
        assert _request(server, "GET", "/nowhere")[0] == 404
        gate = _hold_the_engine(engine, monkeypatch)
        held = engine.submit_encode(smooth_image(rng, 64, 64), 50)  # the queue's one place
        status, headers, _ = _request(server, "POST", "/encode?quality=50", png)
        gate.set()
        held.result(timeout=30)
        assert status == 503 and headers["Retry-After"] == "1"
        stats = _stats(server)  # (its own answer is counted after it is made)
        assert stats["responses"] == {"200": 3, "400": 2, "404": 1, "413": 1, "503": 1}
        assert stats["ok"] == 3 and stats["failed"] == 0  # two encodes and the held one
        _, _, text = _request(server, "GET", "/metrics")
    assert _metric_samples(text.decode(), "vlmcodec_http_responses") == {
        "200": 4, "400": 2, "404": 1, "413": 1, "503": 1}


def test_the_connection_bounds_refusals_are_counted_as_503(tiny_model_path):
    with running_server(Engine(Codec(tiny_model_path), block=False), max_connections=1) as server:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=30):  # holds the only one
            _wait_for(lambda: server.connections == 1)
            assert _request(server, "GET", "/health")[0] == 503
        _wait_for(lambda: server.connections == 0)
        assert _stats(server)["responses"] == {"503": 1}
