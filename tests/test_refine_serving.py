"""Refinement per call: ``Codec.encode(refine=K)``, the Engine's refine workers, and
``/encode?refine=K`` behind ``serve --max-refine``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings

import pytest

from conftest import serving, smooth_image
from vlmcodec import Codec, ConfigError, EngineDeadError, RefineFallbackWarning
from vlmcodec.bitstream import container
from vlmcodec.runtime import Engine, RemoteCodec


def _make_refined_larger(codec: Codec) -> None:
    """Refined latents scaled up: their streams grow, as refined ones do a little on real images,
    so that a budget between the one-pass and refined quality-0 sizes fits one-pass streams only."""
    analyse = codec.analyse

    def larger(pixels, qualities, *, refine=None):
        y, z = analyse(pixels, qualities, refine=refine)
        return (y * 1.5, z) if codec.refine_steps(refine) else (y, z)

    codec.analyse = larger


def _fallback_budget(codec: Codec, img) -> int:
    smallest = len(codec.encode(img, 0, refine=0))
    return smallest + (len(codec.encode(img, 20, refine=0)) - smallest) // 2


def test_a_calls_refine_overrides_the_codecs(tiny_model_path, rng):
    img = smooth_image(rng, 64, 96)
    plain, refining = Codec(tiny_model_path), Codec(tiny_model_path, refine=3)
    assert plain.encode(img, 50, refine=3) == refining.encode(img, 50)
    assert refining.encode(img, 50, refine=0) == plain.encode(img, 50)
    assert plain.encode(img, 50, refine=3) != plain.encode(img, 50)  # the steps did run
    assert plain.encode_batch([img, img], 50, refine=3) == [refining.encode(img, 50)] * 2
    budget = (len(plain.encode(img, 0)) + len(plain.encode(img, 100))) // 2
    assert plain.encode_to_size(img, budget, refine=3) == refining.encode_to_size(img, budget)
    for bad in (-1, 1001, 2.5, True):
        with pytest.raises(ConfigError, match="refine must be an int"):
            plain.encode(img, 50, refine=bad)


def test_the_engine_refines_on_its_own_workers_and_keeps_serving_plain_requests(tiny_model_path, rng):
    """A refined encode runs on a refine worker, byte-identical to ``Codec.encode``; while it is
    held there, a plain encode and a decode still finish on the network worker. Its latency is
    kept apart ("refine"), and it is counted in the stats."""
    codec = Codec(tiny_model_path)
    img = smooth_image(rng, 64, 96)
    expected = codec.encode(img, 50, refine=3)
    analyse, release, refining, threads = codec.analyse, threading.Event(), threading.Event(), []

    def held(pixels, qualities, *, refine=None):
        if codec.refine_steps(refine):
            threads.append(threading.current_thread().name)
            refining.set()
            assert release.wait(60)
        return analyse(pixels, qualities, refine=refine)

    codec.analyse = held
    with Engine(codec, max_batch=2, max_delay_ms=1) as engine:
        refined = engine.submit_encode(img, 50, refine=3)
        assert refining.wait(60)
        plain = engine.submit_encode(img, 50).result(timeout=60)
        assert plain == codec.encode(img, 50, refine=0)
        assert engine.submit_decode(plain).result(timeout=60).shape == img.shape
        assert not refined.done()
        release.set()
        assert refined.result(timeout=60) == expected and refined.warning is None
        assert threads and all(name.startswith("vlmcodec-refine") for name in threads)
        latency = engine.latency()
    assert engine.stats["refined"] == 1 and engine.stats["ok"] == 3
    assert latency["refine"]["count"] == 1 and latency["encode"]["count"] == 1


def test_a_codec_with_refine_refines_every_engine_request_unless_one_asks_none(tiny_model_path, rng):
    codec = Codec(tiny_model_path, refine=2)
    img = smooth_image(rng, 64, 96)
    with Engine(codec) as engine:
        assert engine.submit_encode(img, 40).result(timeout=60) == codec.encode(img, 40)
        assert engine.submit_encode(img, 40, refine=0).result(timeout=60) == codec.encode(img, 40, refine=0)
        with pytest.raises(ConfigError):
            engine.submit_encode(img, 40, refine=-2).result(timeout=60)
    assert engine.stats["refined"] == 1


def test_the_engines_refined_budget_falls_back_with_the_warning_on_the_future(tiny_model_path, rng):
    codec = Codec(tiny_model_path)
    _make_refined_larger(codec)
    img = smooth_image(rng, 128, 192)
    budget = _fallback_budget(codec, img)
    with pytest.warns(RefineFallbackWarning) as caught:
        expected = codec.encode_to_size(img, budget, refine=1)
    with Engine(codec) as engine:
        fut = engine.submit_encode(img, max_bytes=budget, refine=1)
        assert fut.result(timeout=60) == expected
        assert fut.warning == str(caught[0].message)
        with pytest.warns(RefineFallbackWarning, match=f"no refined stream fits in {budget} bytes"):
            assert asyncio.run(engine.encode(img, max_bytes=budget, refine=1)) == expected
        roomy = len(codec.encode(img, 100, refine=1))
        fut = engine.submit_encode(img, max_bytes=roomy, refine=1)
        assert fut.result(timeout=60) == codec.encode_to_size(img, roomy, refine=1) and fut.warning is None


def _wait_until_closed(engine) -> None:
    """Until ``engine.shutdown`` (on another thread) has begun: its requests are refused from then."""
    deadline = time.monotonic() + 60
    while not engine.closed and time.monotonic() < deadline:
        time.sleep(0.001)
    assert engine.closed


def _held_refinements(model_path) -> tuple[Codec, threading.Event, threading.Event]:
    """A codec whose refined encodes wait for ``release`` once begun (``refining`` set then)."""
    codec = Codec(model_path)
    analyse, release, refining = codec.analyse, threading.Event(), threading.Event()

    def held(pixels, qualities, *, refine=None):
        if codec.refine_steps(refine):
            refining.set()
            assert release.wait(60)
        return analyse(pixels, qualities, refine=refine)

    codec.analyse = held
    return codec, release, refining


def test_shutting_down_without_drain_fails_the_queued_refinements(tiny_model_path, rng):
    codec, release, refining = _held_refinements(tiny_model_path)
    img = smooth_image(rng, 64, 96)
    engine = Engine(codec)
    running = engine.submit_encode(img, 50, refine=2)
    assert refining.wait(60)
    queued = [engine.submit_encode(img, 50, refine=2) for _ in range(3)]
    stopper = threading.Thread(target=engine.shutdown, kwargs={"drain": False})
    stopper.start()
    _wait_until_closed(engine)  # (released first, the held job could finish and the queued ones run)
    release.set()
    stopper.join(60)
    assert not stopper.is_alive()
    assert len(running.result(timeout=5)) > 0  # the one already running finishes
    for fut in queued:
        with pytest.raises(EngineDeadError):
            fut.result(timeout=5)
    assert engine.in_flight == 0


def test_queued_refinements_time_out_and_cancel_while_they_wait(tiny_model_path, rng):
    """A refined encode waiting for the refine worker failed at its deadline only when the worker
    took it (after every refinement before it: minutes behind a backlog), and a cancelled one held
    its max_queue place until then. Now one times out at its deadline and one cancelled leaves at
    once; the others still run, and the fairness tables forget owners with nothing left."""
    from vlmcodec.errors import RequestTimeoutError

    codec, release, refining = _held_refinements(tiny_model_path)
    img = smooth_image(rng, 64, 96)
    with Engine(codec) as engine:
        running = engine.submit_encode(img, 50, refine=2)
        assert refining.wait(60)
        t0 = time.monotonic()
        timed = engine.submit_encode(img, 50, refine=2, timeout_s=0.2, owner="a")
        cancelled = engine.submit_encode(img, 50, refine=2, owner="b")
        patient = engine.submit_encode(img, 50, refine=2, owner="c")
        assert cancelled.cancel() and engine.in_flight == 3
        err = timed.exception(timeout=30)
        assert isinstance(err, RequestTimeoutError) and time.monotonic() - t0 < 10, err  # (the worker is held)
        assert engine.in_flight == 2 and not patient.done()
        assert set(engine._refine_turn) <= {None, "c"} and "a" not in engine._refine_running
        release.set()
        assert len(running.result(timeout=60)) > 0 and len(patient.result(timeout=60)) > 0
    assert engine.in_flight == 0 and engine.stats["failed"] == 2


def _post(url: str, body: bytes) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_serve_refines_up_to_its_max_refine(tiny_model_path, rng, tmp_path):
    from PIL import Image

    img = smooth_image(rng, 64, 96)
    path = tmp_path / "im.png"
    Image.fromarray(img).save(path)
    codec = Codec(tiny_model_path)
    with serving(tiny_model_path) as server:  # the default: no refinement
        status, _, body = _post(f"{server.url}/encode?quality=50&refine=2", path.read_bytes())
        assert status == 400 and "refinement is not allowed here" in json.loads(body)["error"]
        assert _post(f"{server.url}/encode?quality=50&refine=0", path.read_bytes())[0] == 200
    with serving(tiny_model_path, max_refine=3) as server:
        status, _, body = _post(f"{server.url}/encode?quality=50&refine=4", path.read_bytes())
        assert status == 400 and "refine must be 0..3, got 4" in json.loads(body)["error"]
        assert _post(f"{server.url}/encode?quality=50&refine=x", path.read_bytes())[0] == 400
        status, headers, data = _post(f"{server.url}/encode?quality=50&refine=3", path.read_bytes())
        assert status == 200 and data == codec.encode(img, 50, refine=3) and "X-Refine-Fallback" not in headers
        with RemoteCodec(server.url) as remote:
            assert remote.encode(img, 50, refine=2) == codec.encode(img, 50, refine=2)
            assert remote.encode(img, 50) == codec.encode(img, 50)
            assert remote.health()["max_refine"] == 3
            for bad in (0.0, 1.5, -1, True, "2"):  # (0.0 was taken for "no refinement", 1.5 sent as such)
                with pytest.raises(ConfigError, match="refine must be a whole number of steps"):
                    remote.encode(img, 50, refine=bad)
            stats = remote.stats()
            assert stats["refined"] == 2 and stats["latency"]["refine"]["total"] == 2
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=30) as answer:
            assert f'vlmcodec_refined_total{{model="{codec.fingerprint.hex()}"}} 2' in answer.read().decode()
    with pytest.raises(ConfigError, match="refine must be an int"):
        with serving(tiny_model_path, max_refine=-1):
            pass


def test_a_refined_budget_met_by_one_pass_warns_the_remote_client(tiny_model_path, rng):
    img = smooth_image(rng, 128, 192)
    with serving(tiny_model_path, max_refine=2) as server:
        codec = server.engine.codec
        _make_refined_larger(codec)
        budget = _fallback_budget(codec, img)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RefineFallbackWarning)
            expected = codec.encode_to_size(img, budget, refine=1)
        with RemoteCodec(server.url) as remote:
            with pytest.warns(RefineFallbackWarning, match=f"no refined stream fits in {budget} bytes"):
                data = remote.encode(img, max_bytes=budget, refine=1)
    assert data == expected and container.unpack(data)[0].quality < 20


@contextlib.contextmanager
def _serve_process(model_path, *options: str):
    """``vlmcodec serve`` in a child process: (its start-up line, its URL), stopped on leaving."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from vlmcodec.cli import main; sys.exit(main())",
                             "serve", "--port", "0", "--model", str(model_path), *options],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        found = re.search(r"https?://[0-9.]+:[0-9]+", line)
        yield line, found.group(0) if found else None
    finally:
        proc.terminate()
        proc.wait(60)


def test_cli_serve_max_refine(tiny_model_path, capsys):
    """``--max-refine`` is checked by argparse, and the start-up line says what it allows."""
    from vlmcodec.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["serve", "--model", str(tiny_model_path), "--port", "0", "--max-refine", "2000"])
    assert stop.value.code == 2
    assert "refine must be an int in [0, 1000]" in capsys.readouterr().err
    with _serve_process(tiny_model_path, "--max-refine", "5", "--refine-workers", "2") as (line, _):
        assert "refine up to 5 steps on 2 worker(s)" in line, line


def test_cli_serve_refine_views_and_bf16(tiny_model_path, capsys):
    """``serve --refine-views`` sets the refined encodes' teacher views (the start-up line and
    /health say so); without any refinement allowed it is refused."""
    from vlmcodec.cli import main

    assert main(["serve", "--model", str(tiny_model_path), "--port", "0", "--refine-views", "224,336"]) == 2
    assert "--refine-views needs --max-refine" in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny_model_path), "--port", "0", "--refine-bf16"]) == 2
    assert "--refine-bf16 needs --max-refine" in capsys.readouterr().err
    with _serve_process(tiny_model_path, "--max-refine", "2", "--refine-views", "224,336",
                        "--refine-bf16") as (line, url):
        assert "refinement's teacher views 224,336 px, refinement's teacher in bfloat16" in line, line
        with urllib.request.urlopen(f"{url}/health", timeout=30) as answer:
            health = json.loads(answer.read())
        assert health["max_refine"] == 2 and health["refine_views"] == [224, 336] and health["refine_bf16"] is True
    with serving(tiny_model_path, max_refine=2) as server, RemoteCodec(server.url) as remote:
        health = remote.health()
        assert health["refine_views"] is None and health["refine_bf16"] is False  # the refiner's defaults


def test_a_refined_encode_larger_than_max_refine_pixels_is_refused(tiny_model_path, rng):
    from vlmcodec import ResourceError

    img = smooth_image(rng, 64, 96)
    codec = Codec(tiny_model_path)
    with serving(tiny_model_path, max_refine=2, max_refine_pixels=1000) as server:
        with RemoteCodec(server.url, retries=0) as remote:
            with pytest.raises(ResourceError, match=r"at most 1000 pixels on this server, this one 96x64"):
                remote.encode(img, 50, refine=2)
            assert remote.encode(img, 50) == codec.encode(img, 50)  # unrefined: no such bound
            # at a consumer's scale the coded size fits: 24x36
            assert remote.encode(img, 50, refine=2, short_side=24) == codec.encode(img, 50, 24, refine=2)
    with pytest.raises(ConfigError, match="max_refine_pixels must be a whole number, at least 1"):
        with serving(tiny_model_path, max_refine_pixels=0):
            pass


def test_a_clients_refine_cap_replaces_the_servers(tiny_model_path, rng):
    img = smooth_image(rng, 32, 48)
    tokens = {"archive": "tok-a", "bulk": "tok-b", "other": "tok-o"}
    with serving(tiny_model_path, auth_token=tokens, max_refine=1, client_max_refine={"archive": 3, "bulk": 0}) as server:
        with RemoteCodec(server.url, token="tok-a", retries=0) as archive, \
                RemoteCodec(server.url, token="tok-b", retries=0) as bulk, \
                RemoteCodec(server.url, token="tok-o", retries=0) as other:
            assert archive.encode(img, 50, refine=3) == Codec(tiny_model_path).encode(img, 50, refine=3)
            with pytest.raises(ConfigError, match="refine must be 0..3, got 4"):
                archive.encode(img, 50, refine=4)
            with pytest.raises(ConfigError, match="refinement is not allowed here"):
                bulk.encode(img, 50, refine=1)
            other.encode(img, 50, refine=1)  # the server's cap
            with pytest.raises(ConfigError, match="refine must be 0..1, got 2"):
                other.encode(img, 50, refine=2)
    with pytest.raises(ConfigError, match="a refine cap for client 'nobody', whom no token names"):
        with serving(tiny_model_path, auth_token=tokens, client_max_refine={"nobody": 2}):
            pass


def test_the_server_names_each_requests_owner_for_the_refine_workers(tiny_model_path, rng):
    """Refined encodes are shared between a server's clients: its token's name, else its address."""
    img = smooth_image(rng, 32, 48)
    owners = []
    with serving(tiny_model_path, auth_token={"archive": "tok-a"}, max_refine=1) as server:
        submit = server.engine.submit_encode

        def traced(*args, owner=None, **kw):
            owners.append(owner)
            return submit(*args, owner=owner, **kw)

        server.engine.submit_encode = traced
        with RemoteCodec(server.url, token="tok-a", retries=0) as archive:
            archive.encode(img, 50, refine=1)
    with serving(tiny_model_path, max_refine=1) as server:
        submit = server.engine.submit_encode
        server.engine.submit_encode = traced
        with RemoteCodec(server.url, retries=0) as anyone:
            anyone.encode(img, 50, refine=1)
    assert owners == ["client:archive", "address:127.0.0.1"]
