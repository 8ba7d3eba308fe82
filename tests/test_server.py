"""`vlmcodec serve`: the HTTP front of the runtime Engine (vlmcodec.runtime.server)."""

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from vlmcodec import Codec
from vlmcodec.runtime import Engine
from vlmcodec.runtime.server import CodecServer, serve_in_thread
from vlmcodec.runtime.tokens import TokenFile

from conftest import serving, smooth_image


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def served(tiny_model_path):
    codec = Codec(tiny_model_path)
    engine = Engine(codec, max_batch=4, max_delay_ms=20, block=False, max_queue=64)
    server = CodecServer(engine, "127.0.0.1", 0, max_body=2**20)
    serve_in_thread(server)
    yield server, codec
    server.shutdown()
    server.server_close()
    engine.shutdown()


def _request(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_encode_and_decode_give_the_codecs_bytes_and_pixels(served, rng):
    server, codec = served
    img = smooth_image(rng, 48, 80)
    status, headers, data = _request(server, "POST", "/encode?quality=40", _png(img))
    assert status == 200 and headers["Content-Type"] == "application/x-vlmc"
    assert data == codec.encode(img, 40)
    assert (headers["X-Image-Width"], headers["X-Image-Height"]) == ("80", "48")
    assert float(headers["X-Bpp"]) == pytest.approx(8 * len(data) / (48 * 80), abs=1e-4)
    expected = codec.decode(data)
    status, headers, png = _request(server, "POST", "/decode", data)
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), expected)
    status, headers, raw = _request(server, "POST", "/decode?format=raw", data)
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    h, w = int(headers["X-Image-Height"]), int(headers["X-Image-Width"])
    assert np.array_equal(np.frombuffer(raw, np.uint8).reshape(h, w, 3), expected)
    status, _, ppm = _request(server, "POST", "/decode?format=ppm", data)
    assert status == 200 and np.array_equal(np.asarray(Image.open(io.BytesIO(ppm))), expected)
    # short_side codes at the consumer's scale, as Codec.encode does
    status, _, small = _request(server, "POST", "/encode?quality=40&short_side=32", _png(img))
    assert status == 200 and small == codec.encode(img, 40, short_side=32)


def test_health_stats_and_keep_alive(served, rng):
    server, codec = served
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
    try:
        for _ in range(2):  # one connection, several requests
            conn.request("GET", "/health")
            resp = conn.getresponse()
            health = json.loads(resp.read())
            assert resp.status == 200 and health["status"] == "ok" and health["model"] == codec.fingerprint.hex()
        conn.request("POST", "/encode?quality=10", body=_png(smooth_image(rng, 32, 32)))
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read()[:4] == b"VLMC"
        conn.request("GET", "/stats")
        resp = conn.getresponse()
        stats = json.loads(resp.read())
        assert resp.status == 200 and stats["ok"] >= 1 and "in_flight" in stats
        assert stats["latency"]["encode"]["count"] >= 1 and stats["latency"]["encode"]["p99_s"] > 0
        assert stats["latency"]["encode"]["total"] >= stats["latency"]["encode"]["count"]
        assert stats["latency"]["encode"]["total_s"] > 0
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode()
        assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/plain")
        metrics = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                   for line in text.splitlines() if line and not line.startswith("#")}
        model = f'model="{codec.fingerprint.hex()}"'
        assert metrics[f'vlmcodec_requests_total{{{model},outcome="ok"}}'] >= 1
        assert metrics[f'vlmcodec_latency_seconds{{{model},kind="encode",quantile="0.99"}}'] > 0
        assert metrics[f'vlmcodec_latency_seconds_count{{{model},kind="encode"}}'] >= 1
        enc = f'{model},kind="encode"'
        count = metrics[f"vlmcodec_request_duration_seconds_count{{{enc}}}"]
        assert count == metrics[f'vlmcodec_request_duration_seconds_bucket{{{enc},le="+Inf"}}'] >= 1
        assert count == metrics[f"vlmcodec_latency_seconds_count{{{enc}}}"]
        assert 0 < metrics[f"vlmcodec_request_duration_seconds_sum{{{enc}}}"] == metrics[f"vlmcodec_latency_seconds_sum{{{enc}}}"]
        buckets = [v for k, v in metrics.items() if k.startswith(f"vlmcodec_request_duration_seconds_bucket{{{enc},")]
        assert len(buckets) == 14 and buckets == sorted(buckets)
        assert f"vlmcodec_in_flight{{{model}}}" in metrics
    finally:
        conn.close()


def test_errors_answer_json_with_the_right_status(served, rng):
    server, codec = served
    img = _png(smooth_image(rng, 32, 48))
    stream = codec.encode(smooth_image(rng, 32, 48), 50)
    cases = [
        ("POST", "/decode", b"not a stream", 400, "bad magic"),
        ("POST", "/encode", b"not an image", 400, "cannot read image"),
        ("POST", "/encode?quality=x", img, 400, "quality must be a number"),
        ("POST", "/encode?quality=101", img, 400, "quality"),
        ("POST", "/encode?colour=1", img, 400, "unknown parameter"),
        ("POST", "/decode?format=jpeg", b"x", 400, "format must be one of"),
        ("POST", "/encode?timeout=-1", img, 400, "timeout must be > 0"),
        ("POST", "/encode?timeout=1e10", img, 400, "at most 1e+07"),  # (took: the engine's loop died of it)
        ("POST", "/decode?timeout=1e10", stream, 400, "at most 1e+07"),
        ("POST", "/transcode", img, 404, "no such endpoint"),
        ("GET", "/", None, 404, "no such endpoint"),
        ("POST", "/encode", b"\0" * (2**20 + 1), 413, "at most"),
    ]
    for method, path, body, status, message in cases:
        got, headers, payload = _request(server, method, path, body)
        assert got == status, (path, got, payload)
        assert headers["Content-Type"] == "application/json" and message in json.loads(payload)["error"], path
    # a stream of another model: 409
    other = Codec().encode(smooth_image(rng, 32, 32), 50)
    got, _, payload = _request(server, "POST", "/decode", other)
    assert got == 409 and "decode it with the model that wrote it" in json.loads(payload)["error"]
    # no Content-Length: 411
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
    try:
        conn.putrequest("POST", "/encode")
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 411 and "Content-Length" in json.loads(resp.read())["error"]
    finally:
        conn.close()


def test_request_timeout_is_504_and_a_shut_down_engine_503(tiny_model_path, rng):
    codec = Codec(tiny_model_path)
    engine = Engine(codec, max_batch=2, max_delay_ms=200, block=False)
    server = CodecServer(engine, "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        img = _png(smooth_image(rng, 32, 32))
        got, _, payload = _request(server, "POST", "/encode?timeout=0.000001", img)
        assert got == 504 and "timed out" in json.loads(payload)["error"]
        got, _, payload = _request(server, "GET", "/health")
        assert got == 200 and json.loads(payload)["status"] == "ok" and not engine.closed
        engine.shutdown()
        got, _, payload = _request(server, "POST", "/encode", img)
        assert got == 503 and "shut down" in json.loads(payload)["error"]
        got, _, payload = _request(server, "GET", "/health")  # a load balancer takes it out
        assert got == 503 and json.loads(payload)["status"] == "shut down" and engine.closed
    finally:
        server.shutdown()
        server.server_close()
        engine.shutdown()


def test_concurrent_requests_are_batched_and_equal_single_calls(served, rng):
    server, codec = served
    images = [smooth_image(rng, 40, 64) for _ in range(8)]
    results: list = [None] * len(images)
    before = dict(server.engine.stats)

    def client(i):
        results[i] = _request(server, "POST", "/encode?quality=60", _png(images[i]))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for img, (status, _, data) in zip(images, results):
        assert status == 200 and data == codec.encode(img, 60)
    stats = server.engine.stats
    assert stats["batched_items"] - before["batched_items"] == len(images)
    assert stats["batches"] - before["batches"] < len(images)  # some requests shared a batch


def test_cli_serve_starts_answers_and_stops_on_sigterm(tiny_model_path, second_model_path, rng, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    sample = tmp_path / "sample.png"
    Image.fromarray(smooth_image(rng, 32, 48)).save(sample)
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from vlmcodec.cli import main; sys.exit(main())",
                             "serve", "--port", "0", "--model", str(tiny_model_path), "--quiet", "--max-batch", "2",
                             "--warmup", str(sample), "-q", "35", "--extra-model", str(second_model_path),
                             "--rate-limit", "100"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        # encode and decode at batch 2 and 1, for each of the two models
        assert "warmed up 8 shapes of 2 models (1 coded sizes)" in line, line
        line = proc.stderr.readline()
        assert "serving model" in line and "(torch backend, 100 requests/s per client, burst 100)" in line, line
        port = int(line.split("http://127.0.0.1:")[1].split(":")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/encode?quality=30", body=_png(smooth_image(rng, 32, 48)))
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read()[:4] == b"VLMC"
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)  # no quality: the server's -q
        img = smooth_image(rng, 32, 48)
        conn.request("POST", "/encode", body=_png(img))
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == Codec(tiny_model_path).encode(img, 35)
        second = Codec(second_model_path)  # --extra-model: its streams decode too
        assert second.fingerprint.hex() in line
        conn.request("POST", "/decode?format=raw", body=second.encode(img, 35))
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == second.decode(second.encode(img, 35)).tobytes()
        conn.close()
        proc.send_signal(signal.SIGHUP)  # nothing to reload: said, and still serving (SIGHUP killed it)
        assert "SIGHUP: nothing to reload" in proc.stderr.readline()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "server stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals only")
def test_a_second_ctrl_c_while_serve_drains_stops_it_at_once(tiny_model_path):
    """Ctrl-C makes serve answer what is in flight first (a body still arriving: up to 30 s); a
    second Ctrl-C meanwhile stops it at once, as a command's Ctrl-C does: "interrupted", exit 130,
    no traceback."""
    import socket

    proc = subprocess.Popen([sys.executable, "-c", "import sys; from vlmcodec.cli import main; sys.exit(main())",
                             "serve", "--port", "0", "--model", str(tiny_model_path), "--quiet"],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        port = int(line.split("http://127.0.0.1:")[1].split(":")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            time.sleep(0.3)  # (the head read: the request is in flight, its body arriving)
            proc.send_signal(signal.SIGINT)
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)  # draining: it waits for the body
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=20) == 130
        err = proc.stderr.read()
        assert "vlmcodec: interrupted" in err and "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_silent_connection_is_closed_and_a_short_body_refused(tiny_model_path):
    import socket

    codec = Codec(tiny_model_path)
    engine = Engine(codec, block=False)
    server = CodecServer(engine, "127.0.0.1", 0, idle_timeout=0.3)
    serve_in_thread(server)
    try:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=30) as sock:
            sock.sendall(b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            reply = sock.makefile("rb").read()  # the server answers, then closes: read() returns
        assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive" in reply
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=30) as sock:
            sock.sendall(b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            sock.shutdown(socket.SHUT_WR)  # the client gives up sending
            reply = sock.makefile("rb").read()
        assert reply.startswith(b"HTTP/1.1 400") and b"body ended after 10 of 100 bytes" in reply
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=30) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive, then silence
            reply = sock.makefile("rb").read()
        assert reply.startswith(b"HTTP/1.1 200") and b'"status": "ok"' in reply
    finally:
        server.shutdown()
        server.server_close()
        engine.shutdown()


def test_remote_codec_mirrors_the_codec(served, rng, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from vlmcodec.errors import BitstreamError, ImageError, ModelMismatchError
    from vlmcodec.runtime import RemoteCodec

    server, codec = served
    remote = RemoteCodec(server.url)
    img = smooth_image(rng, 40, 56)
    data = remote.encode(img, 35)
    assert data == codec.encode(img, 35)
    assert np.array_equal(remote.decode(data), codec.decode(data))
    path = tmp_path / "a.png"
    Image.fromarray(img).save(path)
    assert remote.encode(str(path), 35) == data  # a path: the file's bytes as they are
    assert remote.encode(img, 35, short_side=32) == codec.encode(img, 35, short_side=32)
    assert remote.health()["model"] == codec.fingerprint.hex() and remote.stats()["ok"] >= 2
    images = [smooth_image(rng, 32, 40) for _ in range(6)]
    with ThreadPoolExecutor(3) as pool:  # one connection per thread
        streams = list(pool.map(lambda im: remote.encode(im, 50), images))
    assert streams == [codec.encode(im, 50) for im in images]
    # the server's errors come back as the codec's exceptions
    with pytest.raises(BitstreamError, match="HTTP 400"):
        remote.decode(b"VLMC junk")
    with pytest.raises(ImageError):
        remote.encode(np.zeros((4, 4), np.float32))  # refused here already, as Codec does
    with pytest.raises(ValueError, match="quality") as remote_err:
        remote.encode(img, 150)
    with pytest.raises(ValueError) as local_err:
        codec.encode(img, 150)
    assert type(remote_err.value) is type(local_err.value)
    with pytest.raises(ModelMismatchError):
        remote.decode(Codec().encode(smooth_image(rng, 32, 32), 50))
    with pytest.raises(ValueError, match="https://host:port"):
        RemoteCodec("ftp://example.com")
    with pytest.raises(ValueError, match="needs an https:// URL"):
        import ssl

        RemoteCodec("http://example.com", ssl_context=ssl.create_default_context())


def test_remote_codec_reports_an_unreachable_server_and_reconnects(tiny_model_path, rng):
    import socket

    from vlmcodec.runtime import RemoteCodec

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        RemoteCodec(f"http://127.0.0.1:{port}", timeout_s=5).health()
    codec = Codec(tiny_model_path)
    engine = Engine(codec, block=False)
    server = CodecServer(engine, "127.0.0.1", 0, idle_timeout=0.2)
    serve_in_thread(server)
    try:
        remote = RemoteCodec(server.url)
        img = smooth_image(rng, 32, 32)
        first = remote.encode(img, 40)
        import time

        time.sleep(0.6)  # the server closes the idle kept-alive connection meanwhile
        assert remote.encode(img, 40) == first
    finally:
        server.shutdown()
        server.server_close()
        engine.shutdown()


def test_remote_codec_times_out_on_a_server_that_does_not_answer():
    """A server that accepts and never answers: RequestTimeoutError after timeout_s (a
    TimeoutError and a VlmcodecError; it was a ConnectionError "timed out"), the request not
    sent again; a server's 504 is the same error."""
    import socket

    from vlmcodec.errors import RequestTimeoutError, VlmcodecError
    from vlmcodec.runtime import RemoteCodec
    from vlmcodec.runtime.client import _error_of

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        remote = RemoteCodec(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_s=0.3, retries=3)
        with pytest.raises(RequestTimeoutError, match=r"no answer within timeout_s=0.3 s") as err:
            remote.encode(np.zeros((8, 8, 3), np.uint8), quality=50)
        assert isinstance(err.value, TimeoutError) and isinstance(err.value, VlmcodecError)
        first, _ = listener.accept()
        listener.settimeout(0.5)
        with pytest.raises(TimeoutError):  # not retried: the server may still be working on it
            listener.accept()
        first.close()
    late = _error_of(504, b'{"error": "request timed out after 0.1s in queue", "type": "TimeoutError"}')
    assert isinstance(late, RequestTimeoutError) and "HTTP 504" in str(late)
    assert isinstance(_error_of(504, b"<html>gateway</html>"), RequestTimeoutError)  # a proxy's 504


def _wait_for(predicate, seconds=10.0):
    import time

    end = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


def _full_server(tiny_model_path):
    """A served engine with room for one connection, and that one taken: (engine, server, [its socket])."""
    import socket

    engine = Engine(Codec(tiny_model_path), block=False)
    server = CodecServer(engine, "127.0.0.1", 0, max_connections=1, idle_timeout=30)
    serve_in_thread(server)
    held = [socket.create_connection(("127.0.0.1", server.server_port), timeout=30)]
    _wait_for(lambda: server.connections == 1)
    return engine, server, held


def _stop_all(server, engine, socks) -> None:
    """Close the test's sockets, stop the server and the engine; the refusing thread ends too."""
    for sock in socks:
        sock.close()
    server.shutdown()
    server.server_close()
    engine.shutdown()
    server._refuser.join(5)
    assert not server._refuser.is_alive()  # server_close ends the refusing thread


def test_connections_over_the_bound_are_answered_503_and_counted(tiny_model_path, rng):
    import socket

    from vlmcodec.runtime import QueueFull, RemoteCodec

    codec = Codec(tiny_model_path)
    engine = Engine(codec, block=False)
    server = CodecServer(engine, "127.0.0.1", 0, max_connections=2, idle_timeout=30)
    serve_in_thread(server)
    held = []
    try:
        for _ in range(2):  # two clients hold their connections open, silent
            held.append(socket.create_connection(("127.0.0.1", server.server_port), timeout=30))
        _wait_for(lambda: server.connections == 2)
        # a third is refused at once, its request (here a 3 MB body, larger than socket buffers)
        # read and dropped, so that it reads the answer and not a reset
        status, headers, payload = _request(server, "POST", "/decode", body=b"\0" * (3 * 2**20))
        answer = json.loads(payload)
        assert status == 503 and answer["type"] == "QueueFull" and "--max-connections" in answer["error"]
        assert headers["Retry-After"] == "1" and headers["Connection"] == "close"
        with pytest.raises(QueueFull, match="server busy"):
            RemoteCodec(server.url, retries=0).health()
        assert server.connections == 2 and server.connections_refused == 2
        held.pop().close()  # a slot frees: requests are served again
        _wait_for(lambda: server.connections == 1)
        status, _, payload = _request(server, "GET", "/stats")
        stats = json.loads(payload)
        assert status == 200 and stats["connections_refused"] == 2
        assert stats["connections"] == 2  # the held one and this request's own
        _wait_for(lambda: server.connections == 1)
        status, _, text = _request(server, "GET", "/metrics")
        assert status == 200 and b"vlmcodec_http_connections_refused_total 2" in text
        img = smooth_image(rng, 32, 48)
        assert RemoteCodec(server.url).encode(img, quality=50) == codec.encode(img, quality=50)
    finally:
        _stop_all(server, engine, held)


def test_connections_over_the_bound_of_one_address_are_refused_and_others_served(tiny_model_path):
    """``max_connections_per_address``: one client holding its share of connections gets 503 for
    the next, naming its address, while another address is served; a closed connection frees its
    address's place; a trusted proxy's connections (many clients behind it) are not counted."""
    import socket

    engine = Engine(Codec(tiny_model_path), block=False)
    server = CodecServer(engine, "127.0.0.1", 0, max_connections=8, max_connections_per_address=2, idle_timeout=30)
    serve_in_thread(server)
    held: list[socket.socket] = []
    try:
        for _ in range(2):
            held.append(socket.create_connection(("127.0.0.1", server.server_port), timeout=30))
        _wait_for(lambda: server.connections == 2)
        status, headers, payload = _request(server, "GET", "/health")
        answer = json.loads(payload)
        assert status == 503 and answer["type"] == "QueueFull" and headers["Retry-After"] == "1", answer
        assert "too many connections from 127.0.0.1: 2 open (--max-connections-per-address)" in answer["error"]
        other = socket.create_connection(("127.0.0.1", server.server_port), timeout=30,
                                          source_address=("127.0.0.2", 0))
        held.append(other)
        other.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert other.recv(12) == b"HTTP/1.1 200"
        held.pop(0).close()
        _wait_for(lambda: server.connections == 2)
        status, _, _ = _request(server, "GET", "/health")
        assert status == 200 and server.connections_refused == 1
    finally:
        _stop_all(server, engine, held)
    assert server._by_address == {} and server._address_of == {}

    engine = Engine(Codec(tiny_model_path), block=False)
    server = CodecServer(engine, "127.0.0.1", 0, max_connections_per_address=1, trusted_proxies=["127.0.0.1"])
    serve_in_thread(server)
    held = []
    try:
        held.append(socket.create_connection(("127.0.0.1", server.server_port), timeout=30))
        _wait_for(lambda: server.connections == 1)
        status, _, _ = _request(server, "GET", "/health")
        assert status == 200 and server.connections_refused == 0
    finally:
        _stop_all(server, engine, held)


def test_the_bound_per_address_is_checked(tiny_model_path):
    """max_connections_per_address must be a whole number >= 1 (or None)."""
    from vlmcodec.errors import ConfigError

    engine = Engine(Codec(tiny_model_path), block=False)
    try:
        for bad in (0, -1, 1.5):
            with pytest.raises(ConfigError, match="max_connections_per_address"):
                CodecServer(engine, "127.0.0.1", 0, max_connections_per_address=bad)
    finally:
        engine.shutdown()


def test_refusals_are_answered_as_they_come_even_behind_silent_connections(tiny_model_path):
    """The refusing thread read each refused connection's request head first, for up to a second,
    one connection at a time: a client that sent nothing got no answer at all (closed after its
    second), and ten silent ones held a real client's 503 back ten seconds. Each is answered as it
    comes now, then drained alongside the others."""
    import socket

    engine, server, held = _full_server(tiny_model_path)
    try:
        silent = [socket.create_connection(("127.0.0.1", server.server_port), timeout=5) for _ in range(10)]
        held += silent
        for sock in silent:  # answered without sending a byte
            assert sock.makefile("rb").readline().startswith(b"HTTP/1.1 503 "), sock
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=5)  # (was ~10 s behind them)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            assert resp.status == 503 and json.loads(resp.read())["type"] == "QueueFull"
        finally:
            conn.close()
        _wait_for(lambda: server.responses.get("503") == 11)
        assert server.connections_refused == 11 and server.connections == 1
    finally:
        _stop_all(server, engine, held)


def test_a_refused_client_gets_its_answer_and_end_at_once_and_is_dropped_after_the_drain(tiny_model_path):
    """The 503 is followed by the server's end of the connection (its FIN) at once, so a client
    reading to the end is not held for the drain; a client that keeps sending after it is dropped
    once the drain's time (REFUSAL_SECONDS) is over, not held for ever."""
    import socket

    from vlmcodec.runtime import refusals

    assert refusals.REFUSAL_SECONDS == 1.0  # (docs/serving.md: "for up to a second")
    engine, server, held = _full_server(tiny_model_path)
    try:
        sock = socket.create_connection(("127.0.0.1", server.server_port), timeout=0.9 * refusals.REFUSAL_SECONDS)
        held.append(sock)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.makefile("rb").read()  # to the end: within the drain's time (a timeout otherwise)
        assert answer.startswith(b"HTTP/1.1 503 ") and answer.endswith(b"\n"), answer
        dropped, end = False, time.monotonic() + 5 * refusals.REFUSAL_SECONDS
        while not dropped and time.monotonic() < end:  # it keeps sending: the server's close resets it
            try:
                sock.sendall(b"x" * 1024)
                time.sleep(0.05)
            except OSError:
                dropped = True
        assert dropped, "the refused connection was drained past REFUSAL_SECONDS"
    finally:
        _stop_all(server, engine, held)


def test_a_burst_of_refusals_beyond_the_backlog_is_answered_too(tiny_model_path):
    """Beyond the refusing thread's backlog (64 waiting) a refused connection was closed without
    an answer (143 of 500 in a burst); the accepting thread now sends its 503 when it goes out at once."""
    import socket

    engine, server, held = _full_server(tiny_model_path)
    try:
        burst = [socket.create_connection(("127.0.0.1", server.server_port), timeout=10) for _ in range(300)]
        held += burst
        for sock in burst:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = [sock.makefile("rb").read() for sock in burst]
        assert sum(a.startswith(b"HTTP/1.1 503 ") for a in answers) == 300
        _wait_for(lambda: server.responses.get("503") == 300)
    finally:
        _stop_all(server, engine, held)


def test_a_tls_connection_over_the_bound_gets_its_503_over_tls(tiny_model_path, tls_files):
    import socket
    import ssl

    from vlmcodec.runtime import QueueFull, RemoteCodec

    cert, key = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    engine = Engine(Codec(tiny_model_path), block=False)
    server = CodecServer(engine, "127.0.0.1", 0, ssl_context=context, max_connections=1, idle_timeout=30)
    serve_in_thread(server)
    held = socket.create_connection(("127.0.0.1", server.server_port), timeout=30)
    try:
        _wait_for(lambda: server.connections == 1)
        trust = ssl.create_default_context(cafile=str(cert))
        for _ in range(3):
            with pytest.raises(QueueFull, match="server busy"):
                RemoteCodec(server.url, ssl_context=trust, retries=0).health()
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=30) as plain:  # no handshake
            plain.sendall(b"GET /health HTTP/1.1\r\n\r\n")
            try:  # (a failed handshake: closed, no answer; a reset, as what it sent is unread)
                assert b"503" not in plain.makefile("rb").read()
            except ConnectionResetError:
                pass
        assert server.connections_refused == 4 and server.responses.get("503") == 3
    finally:
        held.close()
        server.shutdown()
        server.server_close()
        engine.shutdown()


def test_max_connections_must_be_positive(tiny_model_path):
    from vlmcodec.errors import ConfigError

    engine = Engine(Codec(tiny_model_path), block=False)
    try:
        with pytest.raises(ConfigError, match="max_connections"):
            CodecServer(engine, "127.0.0.1", 0, max_connections=0)
    finally:
        engine.shutdown()


def test_remote_codec_retries_a_busy_server_after_its_retry_after(tiny_model_path, rng, monkeypatch):
    """A 503 QueueFull is retried `retries` times, waiting what Retry-After asks: a client that
    meets a full server succeeds once a slot frees; with no retries left it raises QueueFull."""
    import socket
    import time

    from vlmcodec.runtime import QueueFull, RemoteCodec
    from vlmcodec.runtime import client as client_module

    codec = Codec(tiny_model_path)
    engine = Engine(codec, block=False)
    server = CodecServer(engine, "127.0.0.1", 0, max_connections=1, idle_timeout=30)
    serve_in_thread(server)
    waits = []
    monkeypatch.setattr(client_module, "_sleep", lambda s: (waits.append(s), time.sleep(min(s, 0.05))))
    held = socket.create_connection(("127.0.0.1", server.server_port), timeout=30)
    try:
        _wait_for(lambda: server.connections == 1)
        with pytest.raises(QueueFull, match="HTTP 503"):
            RemoteCodec(server.url, retries=2).health()
        assert waits == [1.0, 1.0] and server.connections_refused == 3  # Retry-After: 1, three tries
        img = smooth_image(rng, 32, 48)
        remote = RemoteCodec(server.url, retries=50)
        waits.clear()
        threading.Timer(0.2, held.close).start()  # the slot frees while the client is retrying
        assert remote.encode(img, quality=50) == codec.encode(img, quality=50)
        assert waits and server.connections_refused >= 4
        with pytest.raises(ValueError, match="retries"):
            RemoteCodec(server.url, retries=-1)
        # timeout_s bounds the whole call, its retries too: a retry that would begin past it is not
        # made (each attempt had timeout_s afresh: retries=5 and timeout_s=1.5 took 5 s and more)
        remote.close()  # (its kept-alive connection held the one slot: held2 was refused, racily counted)
        _wait_for(lambda: server.connections == 0)
        held2 = socket.create_connection(("127.0.0.1", server.server_port), timeout=30)
        try:
            _wait_for(lambda: server.connections == 1)
            waits.clear()
            refused = server.connections_refused
            monkeypatch.setattr(client_module, "_sleep", lambda s: (waits.append(s), time.sleep(s)))
            with pytest.raises(QueueFull, match="HTTP 503"):
                RemoteCodec(server.url, retries=5, timeout_s=1.5).health()
            assert waits == [1.0] and server.connections_refused == refused + 2
        finally:
            held2.close()
    finally:
        held.close()
        server.shutdown()
        server.server_close()
        engine.shutdown()


def test_server_close_answers_what_is_in_flight_and_closes_idle_connections(tiny_model_path, rng):
    """After shutdown() and server_close(), no connection is served any more: an idle keep-alive
    connection is closed at once, a request in flight is answered first, and no thread is left."""
    from concurrent.futures import ThreadPoolExecutor

    from vlmcodec.runtime import RemoteCodec

    codec = Codec(tiny_model_path)
    engine = Engine(codec, block=False, max_batch=8, max_delay_ms=600)  # a lone request waits 0.6 s
    server = CodecServer(engine, "127.0.0.1", 0)
    serve_in_thread(server)
    img = smooth_image(rng, 32, 48)
    idle = RemoteCodec(server.url, retries=0)
    assert idle.health()["status"] == "ok"  # its keep-alive connection stays open, idle
    _wait_for(lambda: server.connections == 1)
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(RemoteCodec(server.url, retries=0).encode, img, 50)
        _wait_for(lambda: engine.in_flight == 1)
        server.shutdown()
        server.server_close()
        assert in_flight.result(timeout=30) == codec.encode(img, quality=50)
    assert server.connections == 0 and not server._handlers
    with pytest.raises(ConnectionError):  # its connection was closed, and the port with it
        idle.health()
    engine.shutdown()


def test_an_answer_sent_while_the_server_drains_says_connection_close(tiny_model_path, rng):
    """Answered during server_close's drain, a keep-alive request's answer did not say
    "Connection: close": its client sent its next request on a connection about to close."""
    from concurrent.futures import ThreadPoolExecutor

    codec = Codec(tiny_model_path)
    engine = Engine(codec, block=False, max_batch=8, max_delay_ms=600)  # a lone request waits 0.6 s
    server = CodecServer(engine, "127.0.0.1", 0)
    serve_in_thread(server)
    img = _png(smooth_image(rng, 32, 48))

    def encode() -> tuple[int, str | None]:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
        try:
            conn.request("POST", "/encode?quality=50", body=img)
            resp = conn.getresponse()
            resp.read()
            return resp.status, resp.getheader("Connection")
        finally:
            conn.close()

    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(encode)
        _wait_for(lambda: engine.in_flight == 1)
        server.shutdown()
        server.server_close()
        assert in_flight.result(timeout=30) == (200, "close")
    engine.shutdown()


def test_a_half_sent_request_head_is_neither_run_nor_counted_at_server_close(tiny_model_path):
    """A connection whose request head was still arriving is shut down as idle by server_close;
    the end it then read was taken as the head's end: the half-sent request ran (GET /stats: 200,
    a body-less POST: 411), was logged and counted, its answer written to a dead socket."""
    import socket

    engine = Engine(Codec(tiny_model_path), block=False)
    server = CodecServer(engine, "127.0.0.1", 0, quiet=True)
    serve_in_thread(server)
    heads = [b"GET /stats HTTP/1.1\r\nHost: x\r\n", b"POST /decode HTTP/1.1\r\nHost: x\r\n",  # no blank line yet
             b"POST /decode", b"POST"]  # (a request line cut short: it was answered 400 and logged)
    socks = [socket.create_connection(("127.0.0.1", server.server_port), timeout=30) for _ in heads]
    try:
        for sock, head in zip(socks, heads):
            sock.sendall(head)
        _wait_for(lambda: server.connections == len(heads))
        time.sleep(0.2)  # (both heads are being read)
        server.shutdown()
        server.server_close()
        assert server.connections == 0
        assert server.responses == {}, server.responses
        for sock in socks:
            assert sock.makefile("rb").read() == b""  # closed, unanswered
    finally:
        for sock in socks:
            sock.close()
        engine.shutdown()


def _chunked(data: bytes, size: int) -> bytes:
    pieces = [data[i:i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x;ext=1\r\n" % len(p) + p + b"\r\n" for p in pieces) + b"0\r\nX-Trailer: y\r\n\r\n"


def test_chunked_request_bodies(served, rng):
    """A body sent with Transfer-Encoding: chunked (unknown length) is read whole: the same
    stream as with Content-Length, on a connection that stays open; a malformed, truncated or
    oversized one is refused and its connection closed."""
    import socket

    server, codec = served
    img = smooth_image(rng, 40, 56)
    body = _png(img)
    head = b"POST /encode?quality=50 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=30) as sock:
        reader = sock.makefile("rb")
        for chunk_size in (7, 4096):  # two requests on one keep-alive connection
            sock.sendall(head + _chunked(body, chunk_size))
            status = reader.readline()
            headers = {}
            while (line := reader.readline()) not in (b"\r\n", b""):
                k, v = line.decode().split(":", 1)
                headers[k.strip().lower()] = v.strip()
            assert status.startswith(b"HTTP/1.1 200"), status
            assert reader.read(int(headers["content-length"])) == codec.encode(img, quality=50)

    def answer(raw: bytes) -> tuple[bytes, dict]:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=30) as sock:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)  # the client has sent all it will
            reply = sock.makefile("rb").read()  # the server closes after the answer: read() returns
        return reply.split(b" ", 2)[1], json.loads(reply.split(b"\r\n\r\n", 1)[1])

    code, err = answer(head + b"zz\r\nabc\r\n0\r\n\r\n")
    assert code == b"400" and "bad chunk size" in err["error"]
    code, err = answer(head + b"10\r\nabc")  # 16 bytes announced, 3 sent, then the client stops
    assert code == b"400" and "ended" in err["error"]
    code, err = answer(head + b"%x\r\n" % (server.max_body + 1))
    assert code == b"413" and err["type"] == "ResourceError"


def test_encode_takes_raw_pixels(served, rng):
    """POST /encode?width=W&height=H with the H×W×3 bytes gives the stream of the same image sent
    as a file; sizes that do not add up are refused with 400."""
    server, codec = served
    img = smooth_image(rng, 40, 56)
    status, headers, payload = _request(server, "POST", "/encode?quality=40&width=56&height=40", body=img.tobytes())
    assert status == 200 and payload == codec.encode(img, quality=40)
    assert headers["X-Image-Width"] == "56" and headers["X-Image-Height"] == "40"
    bad = {
        "/encode?width=56": "need both width and height",
        "/encode?width=55&height=40": "bytes expected",
        "/encode?width=5.5&height=40": "width must be an integer, got '5.5'",
        "/encode?width=1e400&height=40": "width must be an integer",
        "/encode?width=56&height=nan": "height must be an integer",
        "/encode?width=0&height=40": "must be positive",
        "/encode?short_side=nan": "short_side must be an integer",
        "/encode?short_side=256.5": "short_side must be an integer",
        f"/encode?width={2**20}&height={2**20}": "max_pixels",
    }
    for path, message in bad.items():
        status, _, payload = _request(server, "POST", path, body=img.tobytes())
        assert status == 400 and message in json.loads(payload)["error"], (path, payload)


def test_access_log_gives_status_size_and_time(tiny_model_path, rng, capsys):
    import re

    codec = Codec(tiny_model_path)
    engine = Engine(codec, block=False)
    server = CodecServer(engine, "127.0.0.1", 0, quiet=False)
    serve_in_thread(server)
    try:
        img = smooth_image(rng, 32, 48)
        status, _, payload = _request(server, "POST", "/encode?quality=50", body=_png(img))
        assert status == 200, payload[:2000]  # (a 500 once, in a loaded run: its message, should it recur)
        _request(server, "GET", "/nowhere", headers={"X-Request-Id": "r-1"})
    finally:
        server.shutdown()
        server.server_close()
        engine.shutdown()
    # (in either order: a line is written once its answer is, and the client's next request can
    # be logged first by its own thread)
    lines = sorted(capsys.readouterr().err.splitlines(), key=lambda line: "GET /nowhere" in line)
    assert re.search(rf'"POST /encode\?quality=50 HTTP/1.1" 200 {len(payload)} \d+\.\d ms$', lines[0]), lines
    assert re.search(r'"GET /nowhere HTTP/1.1" 404 \d+ \d+\.\d ms id=r-1$', lines[1]), lines
    assert len(lines) == 2  # one line a request


def test_several_models_decode_their_own_streams(tiny_model_path, second_model_path, rng, tmp_path):
    """A server holding two models decodes each stream with the model that wrote it, encodes with
    the first unless ?model= names the other, and refuses a third model's streams (409)."""
    from vlmcodec.errors import ConfigError
    from vlmcodec.runtime import RemoteCodec

    first, second = Codec(tiny_model_path), Codec(second_model_path)
    assert first.fingerprint != second.fingerprint
    engines = [Engine(first, block=False), Engine(second, block=False)]
    server = CodecServer(engines, "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        img = smooth_image(rng, 40, 56)
        remote = RemoteCodec(server.url)
        a = remote.encode(img, quality=50)
        b = remote.encode(img, quality=50, model=second.fingerprint.hex()[:6])
        assert a == first.encode(img, quality=50) and b == second.encode(img, quality=50)
        np.testing.assert_array_equal(remote.decode(a), first.decode(a))
        np.testing.assert_array_equal(remote.decode(b), second.decode(b))
        health = remote.health()
        assert health["model"] == first.fingerprint.hex()
        assert health["models"] == [first.fingerprint.hex(), second.fingerprint.hex()]
        stats = remote.stats()
        assert stats["by_model"][second.fingerprint.hex()]["ok"] == 2 and stats["ok"] == 2
        status, _, text = _request(server, "GET", "/metrics")
        for fp in (first.fingerprint.hex(), second.fingerprint.hex()):
            assert f'vlmcodec_requests_total{{model="{fp}",outcome="ok"}} 2'.encode() in text
        # a third model's stream (whole: its CRC holds): 409, naming what the server holds
        import dataclasses

        from vlmcodec.bitstream.container import pack, unpack

        header, z_chunks, y_chunks = unpack(a)
        foreign = pack(dataclasses.replace(header, fingerprint=bytes(8)), z_chunks, y_chunks)
        status, _, payload = _request(server, "POST", "/decode", body=foreign)
        err = json.loads(payload)
        assert status == 409 and err["type"] == "ModelMismatchError" and second.fingerprint.hex() in err["error"]
        damaged = bytearray(a)  # a damaged fingerprint names no model: a damaged stream
        damaged[6:14] = bytes(8)
        status, _, payload = _request(server, "POST", "/decode", body=bytes(damaged))
        assert status == 400 and json.loads(payload)["type"] == "BitstreamError"
        status, _, payload = _request(server, "POST", "/decode", body=b"VLMC")
        assert status == 400 and json.loads(payload)["type"] == "BitstreamError"
        for model, code in (("ab", 400), ("00000000", 404)):
            status, _, payload = _request(server, "POST", f"/encode?model={model}", body=_png(img))
            assert status == code and "model=" in json.loads(payload)["error"], (model, payload)
        with pytest.raises(ConfigError, match="given twice"):
            CodecServer([engines[0], engines[0]], "127.0.0.1", 0)
    finally:
        server.shutdown()
        server.server_close()
        for e in engines:
            e.shutdown()


def test_head_and_request_ids(served, rng):
    """HEAD answers GET's status and headers without a body; X-Request-Id is echoed (when it is
    short printable ASCII)."""
    import socket

    server, codec = served
    status, headers, payload = _request(server, "HEAD", "/health")
    assert status == 200 and payload == b"" and int(headers["Content-Length"]) > 0
    status, headers, _ = _request(server, "POST", "/encode?quality=50", body=_png(smooth_image(rng, 32, 48)),
                                  headers={"X-Request-Id": "job-42/7"})
    assert status == 200 and headers["X-Request-Id"] == "job-42/7"
    status, headers, _ = _request(server, "GET", "/nowhere", headers={"X-Request-Id": "e1"})
    assert status == 404 and headers["X-Request-Id"] == "e1"
    status, headers, _ = _request(server, "GET", "/health", headers={"X-Request-Id": "x" * 200})
    assert status == 200 and "X-Request-Id" not in headers
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=30) as sock:  # keep-alive after HEAD
        sock.sendall(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = sock.makefile("rb").read()
    assert reply.count(b"HTTP/1.1 200") == 2 and reply.count(b'"status": "ok"') == 1


def test_remote_codec_close_releases_its_connections(tiny_model_path, rng):
    from concurrent.futures import ThreadPoolExecutor

    from vlmcodec.runtime import QueueFull, RemoteCodec

    codec = Codec(tiny_model_path)
    engine = Engine(codec, block=False)
    server = CodecServer(engine, "127.0.0.1", 0, max_connections=2)
    serve_in_thread(server)
    try:
        barrier = threading.Barrier(2)
        with RemoteCodec(server.url, retries=0) as pooled:
            def call(_):
                barrier.wait(10)  # both threads hold a connection at once
                return pooled.health()["status"]

            with ThreadPoolExecutor(2) as pool:
                assert list(pool.map(call, range(2))) == ["ok", "ok"]
                _wait_for(lambda: server.connections == 2)  # kept alive by the pool's threads
                with pytest.raises(QueueFull):
                    RemoteCodec(server.url, retries=0).health()
                pooled.close()
                _wait_for(lambda: server.connections == 0)
                with RemoteCodec(server.url, retries=0) as other:
                    assert other.health()["status"] == "ok"
                img = smooth_image(rng, 32, 48)  # usable after close(): connects again
                assert pooled.encode(img, quality=50) == codec.encode(img, quality=50)
        _wait_for(lambda: server.connections == 0)  # the with block closed it
    finally:
        server.shutdown()
        server.server_close()
        engine.shutdown()


def test_a_finished_threads_connection_is_released(tiny_model_path):
    """close() tracks connections weakly: a thread that ends takes its connection (and the
    server slot it holds) with it, as before close() existed."""
    import gc
    import warnings

    from vlmcodec.runtime import RemoteCodec

    engine = Engine(Codec(tiny_model_path), block=False)
    server = CodecServer(engine, "127.0.0.1", 0)  # its own: no other test's clients count here
    serve_in_thread(server)
    try:
        remote = RemoteCodec(server.url)
        gc.collect()  # (earlier tests' garbage, a socket one of them dropped unclosed, is not this test's)
        with warnings.catch_warnings(record=True) as caught:  # (process-wide: the threads' too)
            warnings.simplefilter("always")
            for _ in range(3):
                t = threading.Thread(target=remote.health)
                t.start()
                t.join()
            gc.collect()
        _wait_for(lambda: server.connections == 0)
        assert len(remote._open) == 0
        # closed as the thread ended, not by the socket's finalizer: its ResourceWarning, raised in
        # the dying thread, kept ~2 objects per finished thread for good
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
    finally:
        server.shutdown()
        server.server_close()
        engine.shutdown()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (openssl; the tests skip without it)."""
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("not available: needs the openssl command to make a test certificate")
    return _self_signed(tmp_path_factory.mktemp("tls"), "server")


def _self_signed(folder, name: str):
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_tls_and_a_bearer_token(tiny_model_path, rng, tls_files):
    """HTTPS with a certificate, and a token every request but /health must carry: right token,
    same stream; no or a wrong token, 401 (PermissionError); a plain-HTTP client or one that does
    not trust the certificate fails without harming the server."""
    import socket
    import ssl

    from vlmcodec.runtime import RemoteCodec

    cert, key = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    codec = Codec(tiny_model_path)
    engine = Engine(codec, block=False)
    server = CodecServer(engine, "127.0.0.1", 0, ssl_context=context, auth_token="s3cret\n")
    serve_in_thread(server)
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        assert server.url.startswith("https://")
        img = smooth_image(rng, 32, 48)
        with RemoteCodec(server.url, token="s3cret", ssl_context=trust) as remote:
            assert remote.encode(img, quality=50) == codec.encode(img, quality=50)
            assert remote.stats()["ok"] == 1
        with RemoteCodec(server.url, ssl_context=trust) as anonymous:
            assert anonymous.health()["status"] == "ok"  # open to load balancers
            with pytest.raises(PermissionError, match="HTTP 401"):
                anonymous.encode(img, quality=50)
            with pytest.raises(PermissionError, match="wrong token"):
                RemoteCodec(server.url, token="guess", ssl_context=trust).stats()
        with pytest.raises(ConnectionError):  # the certificate is not in the system's store
            RemoteCodec(server.url, token="s3cret").health()
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=30) as sock:  # plain HTTP
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"200" not in sock.makefile("rb").read()
        with RemoteCodec(server.url, token="s3cret", ssl_context=trust) as remote:  # still serving
            assert remote.decode(codec.encode(img, 50)).shape == img.shape
    finally:
        server.shutdown()
        server.server_close()
        engine.shutdown()


def test_named_tokens_are_each_admitted_logged_and_counted(tiny_model_path, rng, capsys):
    """Several clients, a token each: each is served, the access log and /stats name the client
    (never the token), /metrics counts by client; a token of no client gets 401."""
    import re

    from vlmcodec.runtime import RemoteCodec

    codec = Codec(tiny_model_path)
    engine = Engine(codec, block=False)
    server = CodecServer(engine, "127.0.0.1", 0, quiet=False, auth_token={"app": "tok-a", "batch": "tok-b"})
    serve_in_thread(server)
    try:
        img = smooth_image(rng, 32, 48)
        with RemoteCodec(server.url, token="tok-a") as app, RemoteCodec(server.url, token="tok-b") as batch:
            assert app.encode(img, quality=50) == batch.encode(img, quality=50) == codec.encode(img, quality=50)
            batch.health()  # open: no token needed, none counted
            stats = batch.stats()
        assert stats["requests_by_client"] == {"app": 1, "batch": 2}  # /stats itself is a request of batch's
        with pytest.raises(PermissionError, match="wrong token"):
            RemoteCodec(server.url, token="tok-c").stats()
        status, _, metrics = _request(server, "GET", "/metrics", headers={"Authorization": "Bearer tok-a"})
        assert status == 200
        assert 'vlmcodec_http_requests_by_client_total{client="app"} 2' in metrics.decode()
        assert 'vlmcodec_http_requests_by_client_total{client="batch"} 2' in metrics.decode()
    finally:
        server.shutdown()
        server.server_close()
        engine.shutdown()
    log = capsys.readouterr().err
    assert re.search(r'"POST /encode\?quality=50[^ ]* HTTP/1.1" 200 \d+ \d+\.\d ms client=app$', log, re.M), log
    assert re.search(r'"GET /stats HTTP/1.1" 200 \d+ \d+\.\d ms client=batch$', log, re.M), log
    assert re.search(r'"GET /stats HTTP/1.1" 401 \d+ \d+\.\d ms$', log, re.M), log
    assert "tok-" not in log


def test_cli_serve_security_options_are_checked(tiny_model_path, tmp_path, tls_files, capsys):
    from vlmcodec.cli import main

    cert, key = tls_files
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    bad_tokens = tmp_path / "bad_tokens.txt"
    bad_tokens.write_text("app tok-a\nthree fields here\n")
    bad_limit = tmp_path / "bad_limit.txt"
    bad_limit.write_text("app tok-a burst=3\n")
    model = ["--model", str(tiny_model_path), "--port", "0"]
    cases = {
        ("--tls-cert", str(cert)): "--tls-cert and --tls-key go together",
        ("--tls-client-ca", str(cert)): "--tls-client-ca needs --tls-cert",
        ("--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(empty)): "cannot load --tls-client-ca",
        ("--tls-cert", str(cert), "--tls-key", str(tmp_path / "none.pem")): "cannot load the TLS certificate",
        ("--auth-token-file", str(empty)): "is empty",
        ("--auth-token-file", str(bad_tokens)): "bad_tokens.txt line 2: expected 'TOKEN' or 'NAME TOKEN'",
        ("--auth-token-file", str(bad_limit)): "bad_limit.txt line 1: burst= needs rate= on the same line",
        ("--auth-token-file", str(tmp_path / "missing")): "cannot read --auth-token-file",
    }
    for argv, message in cases.items():
        assert main(["serve", *model, *argv]) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_mutual_tls_admits_only_clients_with_a_signed_certificate(tiny_model_path, rng, tls_files, tmp_path):
    """serve --tls-client-ca (through the CLI's own option parsing): a client presenting a
    certificate the CA signed is served; one without, or with another, is refused at the handshake."""
    import argparse
    import ssl

    from vlmcodec.cli.serve import _serve_security
    from vlmcodec.runtime import RemoteCodec

    cert, key = tls_files
    client_cert, client_key = _self_signed(tmp_path, "client")  # self-signed: its own CA
    stranger_cert, stranger_key = _self_signed(tmp_path, "stranger")
    context, token_file = _serve_security(argparse.Namespace(tls_cert=str(cert), tls_key=str(key),
                                                             tls_client_ca=str(client_cert), auth_token_file=None))
    assert token_file == TokenFile(None) and context.verify_mode == ssl.CERT_REQUIRED
    codec = Codec(tiny_model_path)
    engine = Engine(codec, block=False)
    server = CodecServer(engine, "127.0.0.1", 0, ssl_context=context)
    serve_in_thread(server)

    def client(chain=None):
        ctx = ssl.create_default_context(cafile=str(cert))
        if chain:
            ctx.load_cert_chain(*map(str, chain))
        return RemoteCodec(server.url, ssl_context=ctx, retries=0)

    try:
        img = smooth_image(rng, 32, 48)
        with client((client_cert, client_key)) as remote:
            assert remote.encode(img, quality=50) == codec.encode(img, quality=50)
        for chain in (None, (stranger_cert, stranger_key)):
            with pytest.raises(ConnectionError), client(chain) as refused:
                refused.health()
    finally:
        server.shutdown()
        server.server_close()
        engine.shutdown()


def test_cli_serve_reloads_certificate_and_token_on_sighup(tiny_model_path, tls_files, tmp_path):
    """SIGHUP reads the TLS and token files again: a token added is admitted and one removed is
    refused at once (an overlapping rotation); a file that no longer loads is refused and the
    current tokens stay."""
    import ssl

    from vlmcodec.runtime import RemoteCodec

    cert, key = tls_files
    token = tmp_path / "token"
    token.write_text("first\n")
    token.chmod(0o600)  # (readable by others, serve's first line would be a warning saying so)
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from vlmcodec.cli import main; sys.exit(main())",
                             "serve", "--port", "0", "--model", str(tiny_model_path), "--quiet",
                             "--tls-cert", str(cert), "--tls-key", str(key), "--auth-token-file", str(token)],
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        line = proc.stderr.readline()
        url = line.split(" on ")[1].split(": POST")[0]
        assert url.startswith("https://"), line
        assert RemoteCodec(url, token="first", ssl_context=trust).stats()["ok"] == 0
        token.write_text("first\nnew second\n")  # a rotation overlaps: both admitted for a while
        proc.send_signal(signal.SIGHUP)
        assert "reloaded" in proc.stderr.readline()
        for each in ("first", "second"):
            assert RemoteCodec(url, token=each, ssl_context=trust).stats()["ok"] == 0
        token.write_text("second\n")  # then the old one goes
        proc.send_signal(signal.SIGHUP)
        assert "reloaded" in proc.stderr.readline()
        with pytest.raises(PermissionError):
            RemoteCodec(url, token="first", ssl_context=trust).stats()
        assert RemoteCodec(url, token="second", ssl_context=trust).stats()["ok"] == 0
        token.write_text("\n")  # emptied: refused, "second" stays
        proc.send_signal(signal.SIGHUP)
        assert "reload refused" in proc.stderr.readline()
        assert RemoteCodec(url, token="second", ssl_context=trust).stats()["ok"] == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_server_close_ends_a_stalled_tls_handshake(tiny_model_path, tls_files):
    """A client that connects to an HTTPS server and never sends its hello does not hold
    server_close for the drain time."""
    import socket
    import ssl
    import time

    cert, key = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    engine = Engine(Codec(tiny_model_path), block=False)
    server = CodecServer(engine, "127.0.0.1", 0, ssl_context=context)
    serve_in_thread(server)
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=30):  # silent
        _wait_for(lambda: len(server._handlers) == 1)
        server.shutdown()
        t = time.monotonic()
        server.server_close(drain_s=20)
        assert time.monotonic() - t < 5 and server.connections == 0
    engine.shutdown()


def test_the_json_access_log_has_one_object_a_line(tiny_model_path, rng, capsys):
    """serve --log-format json: each request an object (method, path, status, bytes, ms, request
    id, client), a malformed request an error object; no token ever in it."""
    import socket

    from vlmcodec.errors import ConfigError

    with pytest.raises(ConfigError, match="log_format must be 'text' or 'json'"):
        with serving(tiny_model_path, log_format="xml"):
            pass
    with serving(tiny_model_path, quiet=False, log_format="json", auth_token={"app": "tok-a"}) as server:
        status, _, data = _request(server, "POST", "/encode?quality=50", _png(smooth_image(rng, 32, 48)),
                                   {"Authorization": "Bearer tok-a", "X-Request-Id": "req-7"})
        assert status == 200
        assert _request(server, "GET", "/stats")[0] == 401
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=30) as sock:
            sock.sendall(b"NONSENSE\r\n\r\n")
            assert b" 400 " in sock.recv(1024)
    err = capsys.readouterr().err
    records = [json.loads(line) for line in err.splitlines()]
    # by path, not by place: a request is logged once answered, so two answered close together
    # (on two connections) may be logged in either order
    encode = next(r for r in records if r.get("path") == "/encode?quality=50")
    unauthorized = next(r for r in records if r.get("path") == "/stats")
    assert encode["method"] == "POST" and encode["path"] == "/encode?quality=50" and encode["status"] == 200
    assert encode["bytes"] == len(data) and encode["ms"] > 0 and encode["request_id"] == "req-7"
    assert encode["client"] == "app" and encode["remote"] == "127.0.0.1" and encode["time"].endswith("+00:00")
    assert (unauthorized["path"], unauthorized["status"], unauthorized["client"]) == ("/stats", 401, None)
    assert any(r.get("level") == "error" and "NONSENSE" in r["message"] for r in records), records
    assert "tok-a" not in err


def test_serve_warns_when_it_listens_beyond_this_machine_unprotected():
    from vlmcodec.cli.serve import _exposure_warning

    assert _exposure_warning("127.0.0.1", False, False) is None
    assert _exposure_warning("::1", False, False) is None and _exposure_warning("localhost", False, False) is None
    assert "without --auth-token-file" in _exposure_warning("0.0.0.0", False, False)
    assert "without --auth-token-file" in _exposure_warning("10.1.2.3", False, True)
    assert "in clear" in _exposure_warning("0.0.0.0", True, False)
    assert _exposure_warning("0.0.0.0", True, True) is None
    assert "without --auth-token-file" in _exposure_warning("myhost.example", False, False)


def test_cli_serve_on_all_interfaces_without_a_token_says_so(tiny_model_path):
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from vlmcodec.cli import main; sys.exit(main())",
                             "serve", "--host", "0.0.0.0", "--port", "0", "--model", str(tiny_model_path)],
                            stderr=subprocess.PIPE, text=True)
    try:
        first, second = proc.stderr.readline(), proc.stderr.readline()
        assert first.startswith("vlmcodec: warning: listening on 0.0.0.0 without --auth-token-file"), first
        assert "serving model" in second
    finally:
        proc.terminate()
        proc.wait(60)


def test_a_request_whose_client_hangs_up_is_cancelled_and_not_answered(tiny_model_path, rng, capsys):
    """While the network worker is held, a second client sends a request and closes its
    connection: the request is cancelled before its networks run (never analysed), counted as
    abandoned, logged 499; the server goes on serving."""
    import socket
    import threading
    import time

    from conftest import serving

    img = smooth_image(rng, 32, 48)
    png = _png(img)
    with serving(tiny_model_path, quiet=False, log_format="json") as server:
        codec = server.engine.codec
        analyse, release, held, seen = codec.analyse, threading.Event(), threading.Event(), []

        def traced(pixels, qualities, **options):
            seen.append(qualities[0])
            if len(seen) == 1:
                held.set()
                assert release.wait(60)
            return analyse(pixels, qualities, **options)

        codec.analyse = traced
        answers = []
        first = threading.Thread(target=lambda: answers.append(_request(server, "POST", "/encode?quality=10", png)))
        first.start()
        assert held.wait(60)
        request = (f"POST /encode?quality=20 HTTP/1.1\r\nHost: x\r\nContent-Length: {len(png)}\r\n\r\n").encode() + png
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=30) as sock:
            sock.sendall(request)
            deadline = time.monotonic() + 30
            while server.engine.in_flight < 2 and time.monotonic() < deadline:  # queued behind the first
                time.sleep(0.01)
        deadline = time.monotonic() + 30
        while server.abandoned < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.abandoned == 1
        release.set()
        first.join(60)
        assert answers[0][0] == 200  # a client that waited, connection open, is answered
        status, _, data = _request(server, "POST", "/encode?quality=30", png)
        assert status == 200 and data == Codec(tiny_model_path).encode(img, 30)
        stats = json.loads(_request(server, "GET", "/stats")[2])
        metrics = _request(server, "GET", "/metrics")[2].decode()
    assert seen == [10, 30]  # the abandoned request's networks never ran
    assert stats["abandoned"] == 1 and "vlmcodec_http_abandoned_total 1" in metrics
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert any(r.get("status") == 499 and r.get("path") == "/encode?quality=20" for r in records), records


@pytest.mark.skipif(os.name != "posix", reason="POSIX file permissions")
def test_serve_warns_of_secrets_other_users_can_read(tmp_path, tls_files):
    """The TLS key and the token file hold secrets: readable by the machine's other users, serve
    says so with the fix (as ssh does); mode 600 says nothing."""
    import argparse
    import shutil
    import warnings

    from vlmcodec.cli.serve import _serve_security
    from vlmcodec.errors import VlmcodecWarning

    cert, key = tls_files
    key = tmp_path / "server.key"
    shutil.copy(tls_files[1], key)
    tokens = tmp_path / "tokens"
    tokens.write_text("app tok-a\n")
    args = argparse.Namespace(tls_cert=str(cert), tls_key=str(key), tls_client_ca=None, auth_token_file=str(tokens))
    for mode in (0o644, 0o640, 0o604):
        key.chmod(mode)
        tokens.chmod(mode)
        with pytest.warns(VlmcodecWarning) as seen:
            _serve_security(args)
        assert [str(w.message) for w in seen] == [
            f"--tls-key {key} can be read by other users of this machine (mode {mode:o}): chmod 600 {key}",
            f"--auth-token-file {tokens} can be read by other users of this machine (mode {mode:o}): chmod 600 {tokens}"]
    key.chmod(0o644)
    tokens.chmod(0o600)
    for _ in range(2):  # each reload says it again (the default filter said it once per process)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("default")
            _serve_security(args)
        assert [str(w.message).split(" can be")[0] for w in seen] == [f"--tls-key {key}"]
    key.chmod(0o600)
    tokens.chmod(0o400)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VlmcodecWarning)
        _serve_security(args)


def test_remote_codec_arguments_are_checked_as_the_codec_checks_them(tiny_model_path, rng, tmp_path):
    """decode's short_side and priority go to the server to check, as encode's do (int("abc")
    was a ValueError here, 2.5 taken as 2); a missing image file is an ImageError, as
    Codec.encode says it (a FileNotFoundError before)."""
    from vlmcodec.errors import ConfigError, ImageError
    from vlmcodec.runtime import RemoteCodec

    codec = Codec(tiny_model_path)
    engine = Engine(codec, block=False)
    server = CodecServer(engine, "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        remote = RemoteCodec(server.url, retries=0)
        data = codec.encode(smooth_image(rng, 32, 48), 50)
        for side in ("abc", 2.5, -1, float("nan")):
            with pytest.raises(ConfigError, match="HTTP 400"):
                remote.decode(data, short_side=side)
        assert remote.decode(data, short_side=16).shape == codec.decode(data, 16).shape
        with pytest.raises(ImageError, match="cannot read image .*missing.png"):
            remote.encode(tmp_path / "missing.png")
        for token, message in ((5, "must be a string, got int"), (b"tok", "must be a string, got bytes"),
                               ("tok\nen", "token is made of"), ("  ", "token is empty")):
            with pytest.raises(ConfigError, match=message) as e:  # sent as b'tok', or failing each request
                RemoteCodec(server.url, token=token)
            assert "tok" not in str(e.value).replace("token", "")  # never echoed
    finally:
        server.shutdown()
        server.server_close()
        engine.shutdown()


def test_a_remote_codec_pickles_as_its_url_and_settings():
    """(it raised "cannot pickle '_thread._local' object": worker processes could not be given one)"""
    import pickle
    import ssl

    from vlmcodec.runtime import RemoteCodec

    remote = RemoteCodec("http://127.0.0.1:1/", timeout_s=7, retries=1, token="tok-a")
    copy = pickle.loads(pickle.dumps(remote))
    assert (copy.url, copy.timeout_s, copy.retries, copy._headers) == (
        "http://127.0.0.1:1", 7, 1, {"Authorization": "Bearer tok-a"})
    with pytest.raises(TypeError, match="ssl_context cannot be pickled"):
        pickle.dumps(RemoteCodec("https://127.0.0.1:1", ssl_context=ssl.create_default_context()))


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_the_server_listens_on_an_ipv6_address(tiny_model_path, rng):
    """--host ::1 (or :: for every interface) listens on IPv6 (it was refused: "Address family
    for hostname not supported"); the URL brackets the address; a client sees the same bytes."""
    from vlmcodec.runtime import RemoteCodec

    codec = Codec(tiny_model_path)
    engine = Engine(codec, block=False)
    server = CodecServer(engine, "::1", 0)
    serve_in_thread(server)
    try:
        assert server.url.startswith("http://[::1]:")
        img = smooth_image(rng, 32, 48)
        with RemoteCodec(server.url, retries=0) as remote:
            assert remote.encode(img, 50) == codec.encode(img, 50)
    finally:
        server.shutdown()
        server.server_close()
        engine.shutdown()


def test_a_server_dropped_without_server_close_leaves_no_thread(tiny_model_path):
    """Its refusing thread waited for a socket for good (one thread more per server dropped)."""
    import gc
    import threading
    import time

    engine = Engine(Codec(tiny_model_path), block=False)
    try:
        def refusers() -> set[threading.Thread]:
            return {t for t in threading.enumerate() if t.name == "vlmcodec-http-refuse"}

        before = refusers()  # (an earlier test's may end meanwhile: only this test's are counted)
        servers = [CodecServer(engine, "127.0.0.1", 0) for _ in range(5)]
        ours = refusers() - before
        assert len(ours) == 5
        for server in servers:
            server.socket.close()
        del servers, server  # dropped: no server_close()
        gc.collect()
        deadline = time.monotonic() + 10
        for t in ours:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not [t for t in ours if t.is_alive()]
    finally:
        engine.shutdown()


def test_serve_start_line_says_which_streams_a_decoder_sharing_model_writes(tmp_path):
    """A model sharing another's decoder writes streams that carry that model's fingerprint:
    the start line names both (it named the model alone, as though its streams carried it)."""
    from vlmcodec.cli.serve import _model_label
    from vlmcodec.codec import Codec
    from vlmcodec.models import MeanScaleHyperprior, ModelConfig
    from vlmcodec.models.checkpoint import load_model, save_model
    from vlmcodec.models.widen import widen_analysis

    net = MeanScaleHyperprior(ModelConfig(N=8, M=12, num_levels=2, lmbdas=(0.01, 0.05)))
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_model(net, a)
    save_model(widen_analysis(net, 16), b, decodes_as=load_model(a).identity)
    own, shared = Codec(a), Codec(b)
    assert _model_label(own) == own.fingerprint.hex()
    label = _model_label(shared)
    assert label.startswith(shared.fingerprint.hex()) and f"carry {own.fingerprint.hex()}" in label, label


def _dual_stack() -> bool:
    import socket

    if not (_ipv6_loopback() and socket.has_dualstack_ipv6()):
        return False
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        return s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0


@pytest.mark.skipif(not _dual_stack(), reason="no dual-stack IPv6 socket on this machine")
def test_an_ipv4_client_of_a_dual_stack_server_is_named_by_its_ipv4_address(tiny_model_path, capsys):
    """On --host :: an IPv4 client came as ::ffff:127.0.0.1: the access log and the connection
    bound named it so, and it was another client than the same address given by a proxy's
    X-Forwarded-For (another rate-limit bucket)."""
    import http.client

    engine = Engine(Codec(tiny_model_path), block=False)
    server = CodecServer(engine, "::", 0, quiet=False, max_connections_per_address=1)
    serve_in_thread(server)
    try:
        first = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        first.request("GET", "/nowhere")
        assert first.getresponse().read() and server._by_address == {"127.0.0.1": 1}
        second = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        second.request("GET", "/nowhere")
        refused = second.getresponse()
        assert refused.status == 503 and b"too many connections from 127.0.0.1:" in refused.read()
        first.close()
        second.close()
    finally:
        server.shutdown()
        server.server_close()
        engine.shutdown()
    lines = [line for line in capsys.readouterr().err.splitlines() if "GET /nowhere" in line]
    assert lines and lines[0].startswith("127.0.0.1 "), lines
