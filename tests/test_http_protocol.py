"""`vlmcodec serve` at the level of HTTP itself: where a request's body ends (never read two
ways), how long a request may take to arrive, "Expect: 100-continue", the standard library's own
refusals, closing; and RemoteCodec against servers that answer oddly."""

import io
import re
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from vlmcodec import Codec
from vlmcodec.errors import ConfigError, ImageError, RequestTimeoutError, ResourceError
from vlmcodec.image_io import load_image
from vlmcodec.rate_control import budget_bytes
from vlmcodec.runtime import Engine, RemoteCodec
from vlmcodec.runtime.server import CodecServer, running_server, serve_in_thread

from conftest import serving, smooth_image

# a request hidden in another's body: answered only if the server read the body as a request
HIDDEN = b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _exchange(port: int, raw: bytes, seconds: float = 3.0) -> bytes:
    """Everything the server sends back on one connection for ``raw``, until it closes or goes
    quiet for ``seconds``."""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        sock.sendall(raw)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return out


def _statuses(answer: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d\d\d)", answer)]


def test_a_body_whose_end_is_ambiguous_is_refused_and_never_read_as_a_request(tiny_model_path):
    """Request smuggling: each of these was answered twice, the hidden /stats the second time (a
    proxy reading the framing otherwise would let it past its rules). Now one answer, the
    connection closed."""
    body = b"abc" + HIDDEN
    chunked = b"0\r\n\r\n" + HIDDEN
    cases = {  # the request → the one status it gets
        b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: %d\r\n\r\n" % len(body) + body: 400,
        b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
        % len(chunked) + chunked: 400,
        b"POST /decode HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunkedx\r\nContent-Length: 5\r\n\r\n" + chunked: 501,
        b"POST /decode HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + chunked: 501,
        b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: 0_3\r\n\r\nabc" + HIDDEN: 400,
        b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc" + HIDDEN: 400,
        b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n" + HIDDEN: 400,
        # (more digits than int() reads: a ValueError ended the connection unanswered)
        b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"1" * 5000 + b"\r\nContent-Length: 3\r\n\r\n"
        + HIDDEN: 400,
    }
    with serving(tiny_model_path) as server:
        for raw, status in cases.items():
            answer = _exchange(server.server_port, raw)
            assert _statuses(answer) == [status], (raw[:90], answer[:300])
            assert b'"connections"' not in answer and b'"type": "RequestError"' in answer
            assert b"Connection: close" in answer
        one_huge = b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"1" * 5000 + b"\r\n\r\n" + HIDDEN
        answer = _exchange(server.server_port, one_huge)
        assert _statuses(answer) == [400] and b"bad Content-Length" in answer and b'"connections"' not in answer


def test_a_get_with_a_body_reads_it_and_keeps_the_connection(tiny_model_path):
    """A GET's body was left unread and parsed as the connection's next request."""
    with serving(tiny_model_path) as server:
        raw = (b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(HIDDEN) + HIDDEN
               + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = _exchange(server.server_port, raw)
        assert _statuses(answer) == [200, 200] and b'"connections"' not in answer


def test_a_request_trickled_a_byte_at_a_time_is_cut_off(tiny_model_path):
    """Each read waited the idle timeout afresh, so clients sending a byte a second held every
    one of max_connections for ever (/health answered 503). A request's head now has
    header_timeout from its first byte; a body its time at the least rate."""
    with serving(tiny_model_path, max_connections=2, idle_timeout=5.0, header_timeout=1.0) as server:
        ended, stop = [], threading.Event()

        def trickle(head: bytes) -> None:
            start = time.monotonic()
            with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
                try:
                    sock.sendall(head)
                    for _ in range(60):
                        if stop.is_set():
                            return
                        sock.send(b"a")
                        time.sleep(0.2)
                        if time.monotonic() - start > 0.5 and not _still_open(sock):
                            break
                except OSError:
                    pass
                ended.append((time.monotonic() - start, sock.recv(4096) if _readable(sock) else b""))

        heads = [b"GET /health HTTP/1.1\r\nX-Pad: ", b"POST /decode HTTP/1.1\r\nContent-Length: 100\r\n\r\n"]
        threads = [threading.Thread(target=trickle, args=(h,)) for h in heads]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10  # (both admitted: a fixed wait assumed it of a busy machine)
        while server.connections < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _statuses(_exchange(server.server_port, b"GET /health HTTP/1.1\r\n\r\n", 5)) == [503]  # both held
        for t in threads:
            t.join(15)
        stop.set()
        assert len(ended) == 2 and all(seconds < 4 for seconds, _ in ended), ended
        # the one whose body was due was told so (408), the head was cut off without an answer
        assert sorted(_statuses(answer) for _, answer in ended) == [[], [408]]
        answer = _exchange(server.server_port, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n", 5)
        assert _statuses(answer) == [200]


def test_a_chunked_body_trickled_in_small_chunks_is_cut_off_by_its_rate(tiny_model_path):
    """A chunked body's length is not known: it had the time of a max_body body (header_timeout +
    max_body at 64 KiB/s: 17 s for 1 MiB here, 17 min at the default 64 MiB), so small chunks
    trickled at a byte rate far below the least held the connection that long. Its time now grows
    with the chunks announced."""
    with serving(tiny_model_path, idle_timeout=5.0, header_timeout=1.0, max_body=2**20) as server:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
            start = time.monotonic()
            sock.sendall(b"POST /decode HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            try:
                for _ in range(40):  # 8 bytes every 0.25 s: 32 B/s
                    sock.sendall(b"8\r\nVLMCVLMC\r\n")
                    time.sleep(0.25)
                    if not _still_open(sock):
                        break
            except OSError:
                pass
            seconds = time.monotonic() - start
            answer = sock.recv(4096) if _readable(sock) else b""
    assert _statuses(answer) == [408] and b"did not arrive" in answer, answer
    assert seconds < 5, seconds  # (1 s and the chunks' 0.005 ms; was 17 s)


def _readable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0.5)[0])


def _still_open(sock: socket.socket) -> bool:
    """False once the server has closed its end (end of file, or a reset)."""
    import select

    if not select.select([sock], [], [], 0)[0]:
        return True
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except OSError:
        return False


def test_a_body_on_a_slow_link_gets_its_time(tiny_model_path, rng):
    """header_timeout bounds the head; the body has that plus its length at MIN_BODY_RATE, so a
    body sent in pieces with pauses inside that time is read."""
    img = smooth_image(rng, 24, 32)
    png = _png(img)
    # (margins of 1.5 s and 1.3 s against a client thread that a busy machine holds up)
    with serving(tiny_model_path, header_timeout=3.0) as server:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
            sock.sendall(b"POST /encode?quality=50 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n")
            time.sleep(1.5)
            sock.sendall(b"Content-Length: %d\r\n\r\n" % len(png) + png[:10])
            time.sleep(1.75)  # 3.25 s after the request began: past header_timeout, the body in time (4.5 s)
            sock.sendall(png[10:])
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert _statuses(answer) == [200]
        assert answer.split(b"\r\n\r\n", 1)[1] == Codec(tiny_model_path).encode(img, 50)


def test_expect_100_continue_is_sent_only_to_an_admitted_request(tiny_model_path, rng):
    """"100 Continue" came before any check: a client then sent a body of any size to be told
    401 or 413. Now a refused request is answered at once (the connection closed), an admitted
    one gets "100 Continue" when its body is wanted."""
    png = _png(smooth_image(rng, 24, 32))
    head = b"POST /encode?quality=50 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
    with serving(tiny_model_path, auth_token="s3cret", max_body=2**20) as server:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
            sock.sendall(head + b"Authorization: Bearer s3cret\r\nContent-Length: %d\r\n\r\n" % len(png))
            assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
            sock.sendall(png)
            assert _statuses(sock.recv(65536)) == [200]
        refused = {b"Content-Length: 10\r\n\r\n": 401,  # no token
                   b"Authorization: Bearer s3cret\r\nContent-Length: 1000000000\r\n\r\n": 413}
        for rest, status in refused.items():
            answer = _exchange(server.server_port, head + rest)
            assert _statuses(answer) == [status] and b"100 Continue" not in answer


def test_the_standard_librarys_refusals_answer_json(tiny_model_path):
    """A request line that does not parse, one too long, a method nobody serves: HTML pages
    before (a line that did not parse even without a status line); now JSON like every error,
    405 with Allow for the methods HTTP knows."""
    with serving(tiny_model_path) as server:
        cases = {b"GARBAGE\r\n\r\n": 400, b"PUT /encode HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc": 405,
                 b"OPTIONS * HTTP/1.1\r\n\r\n": 405, b"BREW /pot HTTP/1.1\r\n\r\n": 501,
                 b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n": 414}
        for raw, status in cases.items():
            answer = _exchange(server.server_port, raw)
            assert _statuses(answer) == [status], (raw[:40], answer[:200])
            head, body = answer.split(b"\r\n\r\n", 1)
            assert b"Content-Type: application/json" in head and b'"error"' in body and b"<html" not in body.lower()
            if status == 405:
                assert b"Allow: GET, HEAD, POST" in head


def test_a_clients_timeout_cannot_lift_the_servers(tiny_model_path, rng):
    """?timeout= replaced the server's --timeout: any client could lift the bound the server sheds
    load by. Now the shorter of the two holds."""
    png = _png(smooth_image(rng, 24, 32))
    with running_server(Engine(Codec(tiny_model_path), block=False, timeout_s=1e-6)) as server:
        remote = RemoteCodec(server.url, retries=0)
        for path in ("/encode?quality=50", "/encode?quality=50&timeout=3600"):
            with pytest.raises(RequestTimeoutError, match="HTTP 504"):
                remote._post(path, png)
    with running_server(Engine(Codec(tiny_model_path), block=False, timeout_s=60)) as server:
        assert len(RemoteCodec(server.url)._post("/encode?quality=50&timeout=30", png)[0]) > 0


def test_an_astronomical_max_bpp_takes_the_best_stream(tiny_model_path, rng):
    """max_bpp=1e308 overflowed to infinity (a 500 OverflowError); any budget that large fits."""
    assert budget_bytes(4000, 3000, None, 1e308) == budget_bytes(1, 1, None, 1e300) == 2**62
    assert budget_bytes(100, 80, None, 0.5) == 500
    img = smooth_image(rng, 24, 32)
    with serving(tiny_model_path) as server:
        data = RemoteCodec(server.url).encode(img, max_bpp=1e308)
    assert data == Codec(tiny_model_path).encode(img, 100)


def test_remote_codec_gets_the_413_of_a_body_far_over_the_limit(tiny_model_path):
    """The server answered 413 and closed without reading a body more than 16 MiB over
    max_body; the client, still sending, saw a broken pipe, sent it all again and raised
    ConnectionError. Now the server lingers to drop the body after its answer, and the client
    reads the answer when its send fails."""
    with serving(tiny_model_path, max_body=2**20) as server:
        remote = RemoteCodec(server.url, timeout_s=60)
        for side in (1000, 2600):  # 3 MB, 20 MB
            with pytest.raises(ResourceError, match="HTTP 413"):
                remote.encode(np.zeros((side, side, 3), np.uint8), 50)


def test_server_close_ends_a_connection_whose_request_head_is_still_arriving(tiny_model_path):
    """A request line without its headers counted as a request in flight: server_close waited
    its whole drain for it, and the request was answered after the server had closed."""
    engine = Engine(Codec(tiny_model_path), block=False)
    server = CodecServer(engine, "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            time.sleep(0.3)
            start = time.monotonic()
            server.shutdown()
            server.server_close(drain_s=5)
            assert time.monotonic() - start < 2.5 and server.connections == 0
            try:
                sock.sendall(b"Host: x\r\n\r\n")
                assert sock.recv(200) == b""
            except OSError:  # (reset: closed all the same)
                pass
    finally:
        engine.shutdown()


class _FakeServer:
    """A listening socket that answers each connection with ``reply`` and records what it got."""

    def __init__(self, reply: bytes):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.got: list[bytes] = []
        threading.Thread(target=self._serve, args=(reply,), daemon=True).start()

    def _serve(self, reply: bytes) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.got.append(conn.recv(65536))
                conn.sendall(reply)

    def close(self) -> None:
        self.sock.close()


def test_remote_codec_takes_the_path_of_its_url():
    """A server behind a proxy under a path: the path was dropped (requests went to /health)."""
    body = b'{"status": "ok"}'
    fake = _FakeServer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    try:
        remote = RemoteCodec(f"http://127.0.0.1:{fake.port}/vlmcodec/", timeout_s=5)
        assert remote.health() == {"status": "ok"}
        assert fake.got[0].startswith(b"GET /vlmcodec/health HTTP/1.1\r\n")
    finally:
        fake.close()
    with pytest.raises(ConfigError, match="no query"):
        RemoteCodec("http://127.0.0.1:8080/?x=1")


@pytest.mark.parametrize("reply", [b"SSH-2.0-OpenSSH_9.2\r\n",
                                   b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"])
def test_remote_codec_says_when_it_is_not_talking_to_a_vlmcodec_server(reply):
    """Another service on the port raised http.client's BadStatusLine, an answer without the
    image's size a KeyError: both are ConnectionError, naming the URL."""
    fake = _FakeServer(reply)
    try:
        with pytest.raises(ConnectionError, match=f"127.0.0.1:{fake.port}"):
            RemoteCodec(f"http://127.0.0.1:{fake.port}", timeout_s=5, retries=0).decode(b"VLMC" + bytes(40))
    finally:
        fake.close()


def test_an_unreadable_body_is_named_without_an_address():
    """Pillow names a file object by its repr ("<_io.BytesIO object at 0x7f…>"), which went into
    the error (and the server's answers)."""
    with pytest.raises(ImageError) as e:
        load_image(io.BytesIO(b"not an image"))
    assert "0x" not in str(e.value) and "cannot read image <stream>: not a PNG, JPEG" in str(e.value)


def test_connections_send_without_waiting_for_acks(tiny_model_path):
    """An answer's head and body are two writes: with Nagle's algorithm on, the second waited for
    the client's delayed ACK of the first, ~40 ms on every small answer of a keep-alive
    connection (/health 44 ms, a 256-px encode 111 vs 62 ms: scripts/serve_nodelay_bench.py)."""
    with serving(tiny_model_path) as server:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _statuses(sock.recv(65536)) == [200]
            with server._connections_lock:
                handlers = list(server._handlers)
            assert len(handlers) == 1
            assert handlers[0].connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_a_pipelined_requests_body_keeps_its_own_time(tiny_model_path, rng):
    """A request whose head came whole with the one before it (pipelined) never started its
    head's deadline; its body's first bytes did, cutting the body's time to header_timeout."""
    img = smooth_image(rng, 260, 256)  # 199 680 bytes of raw pixels: 3 s at MIN_BODY_RATE
    raw = img.tobytes()
    with serving(tiny_model_path, header_timeout=1.0) as server:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=15) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"POST /encode?quality=50&width=256&height=260 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(raw))
            time.sleep(0.3)
            sock.sendall(raw[:1000])
            time.sleep(1.3)  # past header_timeout after the body's first bytes, inside its own time
            sock.sendall(raw[1000:])
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert _statuses(answer) == [200, 200], answer[-300:]
        assert answer.endswith(Codec(tiny_model_path).encode(img, 50))
