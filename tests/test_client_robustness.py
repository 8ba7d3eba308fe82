"""``RemoteCodec`` and ``AsyncRemoteCodec`` against servers that close, stall, trickle, lie or are
not a vlmcodec server at all, and URLs it cannot use: each a vlmcodec error, the client still usable."""

import asyncio
import json
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import numpy as np
import pytest

from conftest import serving, smooth_image
from vlmcodec import ConfigError, EngineDeadError, RequestTimeoutError
from vlmcodec.runtime import AsyncRemoteCodec, RemoteCodec

OK = b'{"status": "ok"}'


def _answer(body: bytes, status: str = "200 OK", content_type: str = "application/json", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def _read_request(sock: socket.socket) -> bytes | None:
    """One request's head (its body read and dropped); None once the client hung up."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head


class _FakeServer:
    """A listener on 127.0.0.1 whose every connection ``handle(sock, n)`` serves on a thread of its
    own (n: the connection's number, from 0)."""

    def __init__(self, handle):
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._handle, self._socks = handle, []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self._socks.append(sock)
            threading.Thread(target=self._serve, args=(sock, len(self._socks) - 1), daemon=True).start()

    def _serve(self, sock: socket.socket, n: int) -> None:
        try:
            self._handle(sock, n)
        except OSError:  # (the client hung up)
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for sock in [self._listener, *self._socks]:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # (wakes a thread blocked on it; close() would not)
            except OSError:
                pass
            sock.close()


def _answering(*answers: bytes) -> _FakeServer:
    """A fake server answering its requests with ``answers`` in turn (the last one from then on),
    keeping each connection alive."""
    count = iter(range(10**9))

    def handle(sock, _):
        while _read_request(sock) is not None:
            sock.sendall(answers[min(next(count), len(answers) - 1)])

    return _FakeServer(handle)


def _wait_until(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "waited too long"
        time.sleep(0.01)


def _self_signed(folder):
    """A certificate for 127.0.0.1 and its key: made with `cryptography`, else the openssl command."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("not available: needs the cryptography package or the openssl command to make a certificate")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        return cert, key
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(private, hashes.SHA256()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert, key


# -- D1: TLS ----------------------------------------------------------------------------------
def test_a_kept_alive_tls_connection_the_server_closed_is_reconnected(tiny_model_path, rng, tmp_path):
    """(over HTTPS the stale connection's ssl.SSLEOFError was a ConnectionError, where plain HTTP
    tried once again on a fresh connection)"""
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    img = smooth_image(rng, 32, 32)
    with serving(tiny_model_path, ssl_context=context, idle_timeout=0.3) as server:
        with RemoteCodec(server.url, ssl_context=ssl.create_default_context(cafile=str(cert)), retries=0) as remote:
            first = remote.encode(img, 50)
            for _ in range(3):
                _wait_until(lambda: server.connections == 0)  # the server closed the idle connection
                time.sleep(0.1)  # (its close on the wire)
                assert remote.encode(img, 50) == first


# -- D2: AsyncRemoteCodec's threads -----------------------------------------------------------
def test_a_cancelled_async_call_ends_its_socket_read_at_once():
    """(the call's thread read on until timeout_s, and asyncio.run waited for it at its end)"""
    hung_up = threading.Event()

    def first_stalls(sock, n):
        if n == 0:
            _read_request(sock)
            if sock.recv(1) == b"":  # never answered: until the client shuts the socket
                hung_up.set()
        else:
            while _read_request(sock) is not None:
                sock.sendall(_answer(OK))

    async def go(url):
        async with AsyncRemoteCodec(url, timeout_s=30, retries=0, max_workers=1) as remote:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(remote.health(), 0.2)
            # the one thread is free again
            assert (await asyncio.wait_for(remote.health(), 20)) == {"status": "ok"}

    with _FakeServer(first_stalls) as fake:
        start = time.monotonic()
        asyncio.run(go(fake.url))
        assert time.monotonic() - start < 10
        assert hung_up.wait(10)


def test_32_gathered_async_calls_are_in_flight_together():
    """(asyncio.to_thread ran them on the loop's default executor: min(32, cores + 4) threads, 6 here)"""
    cond, state = threading.Condition(), {"in": 0, "peak": 0, "first": None}

    def hold_until_all_in(sock, _):
        while _read_request(sock) is not None:
            with cond:
                state["in"] += 1
                state["peak"] = max(state["peak"], state["in"])
                state["first"] = state["first"] or time.monotonic()
                cond.notify_all()
                cond.wait_for(lambda: state["peak"] >= 32, timeout=max(0.0, state["first"] + 10 - time.monotonic()))
                state["in"] -= 1
            sock.sendall(_answer(OK))

    async def go(url):
        async with AsyncRemoteCodec(url, timeout_s=60, retries=0) as remote:
            assert remote.max_workers == 32
            return await asyncio.gather(*(remote.health() for _ in range(32)))

    with _FakeServer(hold_until_all_in) as fake:
        assert asyncio.run(go(fake.url)) == [{"status": "ok"}] * 32
    assert state["peak"] == 32
    with pytest.raises(ConfigError, match="max_workers"):
        AsyncRemoteCodec(fake.url, max_workers=0)


# -- D3: a deadline per request -----------------------------------------------------------------
@pytest.mark.parametrize("trickled", ["answer", "body"])
def test_timeout_s_bounds_the_whole_answer_of_a_server_that_trickles_it(trickled):
    """(timeout_s bounded each socket read: a byte every 0.3 s kept a call with timeout_s=1 going
    for the whole answer, for ever with an answer that never ends)"""
    body = b'{"status": "ok", "padding": "' + b"x" * 60 + b'"}'
    answer = _answer(body)

    def trickle(sock, _):
        if _read_request(sock) is None:
            return
        at_once = 0 if trickled == "answer" else answer.index(b"\r\n\r\n") + 4
        sock.sendall(answer[:at_once])
        for i in range(at_once, len(answer)):
            sock.sendall(answer[i:i + 1])
            time.sleep(0.3)

    with _FakeServer(trickle) as fake:
        start = time.monotonic()
        with pytest.raises(RequestTimeoutError, match="timeout_s=1"):
            RemoteCodec(fake.url, timeout_s=1, retries=0).health()
        assert time.monotonic() - start < 8


# -- D4: answers and interrupts that broke the connection ---------------------------------------
def test_an_absurd_content_length_is_refused_before_reading(monkeypatch):
    """(a MemoryError or OverflowError, raw, and the connection left half-read)"""
    from vlmcodec.runtime import client

    for length in (50 * 10**9, 2**63 + 5):
        lie = f"HTTP/1.1 200 OK\r\nContent-Type: application/x-vlmc\r\nContent-Length: {length}\r\n\r\nVLMC".encode()
        with _answering(lie, _answer(OK)) as fake, RemoteCodec(fake.url, timeout_s=10, retries=0) as remote:
            with pytest.raises(ConnectionError, match="MAX_ANSWER_BYTES"):
                remote.encode(np.zeros((8, 8, 3), np.uint8), 50)
            assert remote.health() == {"status": "ok"}
    # an answer of no stated length is counted as it comes
    monkeypatch.setattr(client, "MAX_ANSWER_BYTES", 1000)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"x" * 1024 + b"\r\n0\r\n\r\n"
    with _answering(chunked) as fake, RemoteCodec(fake.url, timeout_s=10, retries=0) as remote:
        with pytest.raises(ConnectionError, match="MAX_ANSWER_BYTES=1000"):
            remote.health()


class _Interrupt(BaseException):
    """A Ctrl-C's KeyboardInterrupt, but not one pytest would stop at."""


def test_an_interrupted_request_leaves_no_broken_connection_behind():
    """(a KeyboardInterrupt while waiting for the answer left the thread's connection half-used:
    the next request on it failed with CannotSendRequest)"""
    release = threading.Event()

    def first_answer_late(sock, n):
        while _read_request(sock) is not None:
            if n == 0:
                release.wait(30)
            sock.sendall(_answer(OK))

    def interrupt(*_):
        raise _Interrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with _FakeServer(first_answer_late) as fake, RemoteCodec(fake.url, timeout_s=30, retries=0) as remote:
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            with pytest.raises(_Interrupt):
                remote.health()
            release.set()
            assert remote.health() == {"status": "ok"}
            assert remote.health() == {"status": "ok"}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- D5: 200 answers that are not a vlmcodec server's ---------------------------------------------
def test_answers_that_are_not_a_vlmcodec_servers_are_connection_errors():
    """(an HTML page was returned as a stream, a list as /stats, -1 × 2 pixels reshaped to 1 × 2;
    /health of an HTML page raised json's JSONDecodeError)"""
    html = _answer(b"<html>hi</html>", content_type="text/html")
    image = np.zeros((8, 8, 3), np.uint8)
    calls = [(html, lambda r: r.encode(image, 50), "/encode"),
             (html, lambda r: r.health(), "/health"),
             (_answer(b"[]"), lambda r: r.stats(), "/stats"),
             (_answer(b"{" * 100_000), lambda r: r.stats(), "/stats"),
             (_answer(b"abcdef", content_type="application/octet-stream", extra="X-Image-Height: -1\r\n"
                      "X-Image-Width: 2\r\n"), lambda r: r.decode(b"VLMC" + bytes(20)), "/decode"),
             (_answer(b"abcdef", content_type="application/octet-stream", extra="X-Image-Height: 1\r\n"
                      "X-Image-Width: 1\r\n"), lambda r: r.decode(b"VLMC" + bytes(20)), "/decode")]
    for answer, call, path in calls:
        with _answering(answer) as fake, RemoteCodec(fake.url, timeout_s=10, retries=0) as remote:
            with pytest.raises(ConnectionError, match=f"not a vlmcodec server's answer to {path}"):
                call(remote)
    # what a vlmcodec server does send is taken
    stream = _answer(b"VLMC" + bytes(20), content_type="application/x-vlmc")
    pixels = _answer(bytes(range(6)), content_type="application/octet-stream",
                     extra="X-Image-Height: 1\r\nX-Image-Width: 2\r\n")
    with _answering(stream, pixels) as fake, RemoteCodec(fake.url, timeout_s=10, retries=0) as remote:
        assert remote.encode(image, 50) == b"VLMC" + bytes(20)
        assert remote.decode(b"VLMC" + bytes(20)).tolist() == [[[0, 1, 2], [3, 4, 5]]]


# -- D6: URLs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("url, message", [
    ("http://127.0.0.1:99999", "out of range"),
    ("http://127.0.0.1:abc", "Port could not be cast"),
    ("http://[::1", "Invalid IPv6 URL"),
    ("http://127.0.0.1:0", "port is 1-65535, got 0"),
    ("http://127.0.0.1:8080/my prefix", "no spaces, control or non-ASCII"),
    ("http://127.0.0.1:8080/a\x01b", "no spaces, control or non-ASCII"),
    ("http://user:secret@127.0.0.1:8080", "no user:password@.*token argument"),
])
def test_urls_the_client_cannot_use_are_config_errors(url, message):
    """(raw ValueErrors; port 0 taken as 80; a path with a space failed at each call as "not an
    HTTP server's answer"; user:password@ ignored, never sent, and shown by repr())"""
    with pytest.raises(ConfigError, match=message) as caught:
        RemoteCodec(url)
    assert "secret" not in str(caught.value)


# -- D7: a 503's whole answer ---------------------------------------------------------------------
def test_an_error_answer_without_an_error_key_is_kept_whole_as_answer():
    """(/health of a shut-down engine, a 503 {"status": "shut down", ...}, gave .answer == {})"""
    dead = {"status": "shut down", "model": "c08abdceb677671f", "in_flight": 0}
    with _answering(_answer(json.dumps(dead).encode(), "503 Service Unavailable")) as fake:
        with pytest.raises(EngineDeadError, match="shut down") as caught:
            RemoteCodec(fake.url, timeout_s=10, retries=0).health()
    assert caught.value.answer == dead


def test_a_numpy_or_fraction_quality_is_sent_as_the_stream_carries_it(tiny_model_path, rng):
    """str(np.float32(12.345)) is "12.345", a number below the float32's value: the server stored
    12.34 where Codec stores 12.35 (another stream); a Fraction was sent as "100/3" (a 400)."""
    from fractions import Fraction

    from vlmcodec import Codec
    from vlmcodec.bitstream.container import unpack

    img = smooth_image(rng, 32, 32)
    local = Codec(tiny_model_path)
    with serving(tiny_model_path) as server, RemoteCodec(server.url) as remote:
        for quality in (np.float32(12.345), np.float16(33.3), Fraction(100, 3), 50.004):
            stream = remote.encode(img, quality)
            assert stream == local.encode(img, quality), quality
        assert unpack(remote.encode(img, np.float32(12.345)))[0].quality == 12.35
        with pytest.raises(ConfigError, match="quality"):
            remote.encode(img, 101)


def test_an_encode_without_a_quality_gets_the_servers_default(tiny_model_path, rng):
    """serve -q 30: RemoteCodec.encode(img) sent quality=75 (the API's default), so its streams were
    not those a request without a quality gets (30); it now leaves the quality to the server."""
    from vlmcodec.bitstream.container import unpack

    img = smooth_image(rng, 32, 32)
    with serving(tiny_model_path, quality=30) as server, RemoteCodec(server.url) as remote:
        assert unpack(remote.encode(img))[0].quality == 30
        assert unpack(remote.encode(img, 60))[0].quality == 60
        with pytest.raises(ConfigError, match="exclude"):
            remote.encode(img, 60, max_bytes=500)


def test_a_slow_connect_and_a_stalled_tls_handshake_share_one_timeout(monkeypatch):
    """The TLS handshake waited timeout_s afresh after the connect: a slow connect (here 1.5 s) and
    a server that never answers the handshake took connect + timeout_s (3.5 s for timeout_s=2);
    it now ends at timeout_s."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # held open, never answered: the handshake stalls
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    real = socket.create_connection

    def slow_connect(*args, **kwargs):
        time.sleep(1.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", slow_connect)
    remote = RemoteCodec(f"https://127.0.0.1:{listener.getsockname()[1]}", timeout_s=2.0, retries=0)
    try:
        start = time.monotonic()
        with pytest.raises(RequestTimeoutError, match="no answer within timeout_s=2.0"):
            remote.health()
        assert time.monotonic() - start < 3.0  # (3.5 s before: the handshake's own 2 s after the connect)
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for s in held:
            s.close()


def test_a_cancelled_async_call_ends_its_retry_wait_at_once():
    """A 503 with Retry-After: 8 is retried after 8 s; an AsyncRemoteCodec call cancelled in that
    wait left its thread sleeping the 8 s (and the process's exit waited for it)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    busy = _answer(b'{"error": "queue full", "type": "QueueFull"}', "503 Service Unavailable", extra="Retry-After: 8\r\n")

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                while _read_request(conn) is not None:
                    conn.sendall(busy)

    server = threading.Thread(target=serve, daemon=True)
    server.start()

    async def go() -> float:
        remote = AsyncRemoteCodec(f"http://127.0.0.1:{listener.getsockname()[1]}", retries=3)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(remote.health(), 0.3)
        start = time.monotonic()
        await remote.close()
        workers = [t for t in threading.enumerate() if t.name.startswith("vlmcodec-remote")]
        for t in workers:
            t.join(5)
        assert not any(t.is_alive() for t in workers)
        return time.monotonic() - start

    try:
        assert asyncio.run(go()) < 2  # (8 s before)
    finally:
        stop.set()
        server.join(5)
        listener.close()
