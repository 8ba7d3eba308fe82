"""``vlmcodec serve``: an HTTP front for an :class:`Engine`, on the standard library alone.

    POST /encode?quality=75[&short_side=256]   body: an image file   → application/x-vlmc
    POST /encode?width=W&height=H[&quality=75] body: H×W×3 RGB bytes → application/x-vlmc
    POST /decode[?format=png|ppm|raw]          body: a .vlmc stream   → the image
    GET  /health                                model, backend, requests in flight (JSON)
    GET  /stats                                 the engine's counters and latency percentiles (JSON)
    GET  /metrics                               the same for Prometheus (text exposition format)

Each connection gets a thread (``ThreadingHTTPServer``), which reads the body, hands the request
to the engine and waits for its future: requests that arrive together are batched by the engine,
as in-process callers' are. ``format=raw`` answers the decoded pixels as they are (H×W×3 bytes,
row-major RGB, size in the ``X-Image-Width``/``X-Image-Height`` headers): no PNG to compress, the
fastest for a consumer in the same data centre. Errors answer JSON ``{"error": message, "type":
exception class}`` (``RemoteCodec`` raises that class again): 400 for a
bad image, stream or parameter, 409 for a stream of another model, 411/413 for a missing or too
large body, 503 when the queue is full or the engine is shut down, 504 on a request timeout.

Connections are bounded (``max_connections``): one more is answered 503 at once (``Retry-After``)
by a single refusing thread and closed, so that a flood of clients, idle or not, costs a bounded
number of threads and bodies in memory. ``ssl_context`` serves HTTPS; ``auth_token`` answers 401
to any request but /health without ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import io
import json
import queue
import socket
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ..bitstream import container
from ..errors import BitstreamError, ConfigError, EngineDeadError, ImageError, ModelMismatchError, ResourceError
from ..image_io import as_rgb_array, image_bytes, load_image
from .engine import Engine, QueueFull

STREAM_TYPE = "application/x-vlmc"
IMAGE_FORMATS = {"png": ("PNG", "image/png"), "ppm": ("PPM", "image/x-portable-pixmap"),
                 "raw": (None, "application/octet-stream")}
DEFAULT_MAX_BODY = 64 * 2**20
# a connection silent this long (between requests, or in the middle of one) is closed, so that
# idle keep-alive clients do not hold a thread each forever
DEFAULT_IDLE_TIMEOUT = 60.0
_DRAIN_LIMIT = 16 * 2**20  # an oversized body up to this much more is read (and dropped) before the 413
DEFAULT_MAX_CONNECTIONS = 128
# a refused connection gets this long to send its request (read and dropped) and read the 503;
# refusals beyond _REFUSAL_BACKLOG waiting their turn are closed without an answer
_REFUSAL_SECONDS = 1.0
_REFUSAL_BACKLOG = 64


class _HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str, kind: str = "ConfigError"):
        super().__init__(message)
        self.status, self.kind = status, kind


def _status_of(err: BaseException) -> HTTPStatus:
    if isinstance(err, ModelMismatchError):
        return HTTPStatus.CONFLICT
    if isinstance(err, (ImageError, BitstreamError, ConfigError, TypeError, ValueError)):
        return HTTPStatus.BAD_REQUEST
    if isinstance(err, ResourceError):
        return HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    if isinstance(err, (QueueFull, EngineDeadError)):
        return HTTPStatus.SERVICE_UNAVAILABLE
    if isinstance(err, (TimeoutError, FutureTimeout)):
        return HTTPStatus.GATEWAY_TIMEOUT
    return HTTPStatus.INTERNAL_SERVER_ERROR


class CodecServer(ThreadingHTTPServer):
    """An HTTP server bound to ``(host, port)`` (port 0: any free one, see ``server_port``) that
    serves ``engine``, or several engines of different models (the first is the default of
    /encode; /decode takes each stream to its model's). ``serve_forever()`` runs it;
    ``shutdown()`` then ``server_close()`` stops it (the engines stay the caller's to shut down)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog: connections the kernel holds until accepted

    def __init__(self, engine: Engine | Sequence[Engine], host: str = "127.0.0.1", port: int = 8080, *,
                 max_body: int = DEFAULT_MAX_BODY, png_level: int = 1, quiet: bool = True,
                 idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT, quality: float = 75.0,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, ssl_context: ssl.SSLContext | None = None,
                 auth_token: str | None = None):
        if auth_token is not None and not auth_token.strip():
            raise ConfigError("auth_token is empty")
        if int(max_connections) < 1:
            raise ConfigError(f"max_connections must be >= 1, got {max_connections}")
        engines = [engine] if isinstance(engine, Engine) else list(engine)
        if not engines:
            raise ConfigError("a CodecServer needs at least one Engine")
        # several models: /decode takes each stream to the model that wrote it (its fingerprint),
        # /encode uses the first unless ?model= names another
        self.engines: dict[bytes, Engine] = {}
        for e in engines:
            fp = e.codec.fingerprint
            if fp in self.engines:
                raise ConfigError(f"model {fp.hex()} given twice")
            self.engines[fp] = e
        self.engine = engines[0]
        self.quality = float(quality)  # of an /encode request that gives none
        self.idle_timeout = idle_timeout
        self.max_body = int(max_body)
        self.png_level = int(png_level)
        self.quiet = quiet
        self.max_connections = int(max_connections)
        self.connections = 0  # open now, each with its thread
        self.connections_refused = 0
        self._connections_lock = threading.Condition()
        self._handlers: set[_Handler] = set()  # the open connections' handlers
        self._closing = False
        self._refusals: queue.Queue = queue.Queue(maxsize=_REFUSAL_BACKLOG)
        # TLS: each accepted socket is wrapped here and its handshake run on its own thread (in
        # the handler's setup, under the idle timeout), never in the accepting loop
        self.ssl_context = ssl_context
        # every request but /health must carry "Authorization: Bearer <auth_token>"
        self.auth_token = auth_token.strip() if auth_token is not None else None
        super().__init__((host, port), _Handler)
        self._refuser = threading.Thread(target=self._refuse_loop, name="vlmcodec-http-refuse", daemon=True)
        self._refuser.start()

    def engine_for_stream(self, data: bytes) -> Engine:
        """The engine whose model wrote ``data`` (ModelMismatchError when none does)."""
        fp = container.fingerprint_of(data)
        engine = self.engines.get(fp)
        if engine is None:
            served = ", ".join(f.hex() for f in self.engines)
            raise ModelMismatchError(f"stream was written by model {fp.hex()}, this server holds {served}; "
                                     "decode it with the model that wrote it (serve --extra-model MODEL)")
        return engine

    def engine_named(self, prefix: str) -> Engine:
        """The engine whose model fingerprint (hex) starts with ``prefix`` (at least 4 digits)."""
        name = prefix.strip().lower()
        served = ", ".join(f.hex() for f in self.engines)
        if len(name) < 4:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, f"model={prefix!r}: give at least 4 hex digits of one of {served}")
        found = [e for fp, e in self.engines.items() if fp.hex().startswith(name)]
        if not found:
            raise _HTTPError(HTTPStatus.NOT_FOUND, f"model={prefix!r} names no model here ({served})",
                             "ModelMismatchError")
        if len(found) > 1:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, f"model={prefix!r} matches several models ({served})")
        return found[0]

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.ssl_context else 'http'}://{host}:{port}"

    def get_request(self):
        sock, address = super().get_request()
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request, client_address) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, (ssl.SSLError, OSError)):  # a failed TLS handshake, a client gone: one line
            if not self.quiet:
                sys.stderr.write(f"{client_address[0]} - connection ended: {err}\n")
            return
        super().handle_error(request, client_address)

    # -- the connection bound ---------------------------------------------------------------
    def process_request(self, request, client_address) -> None:
        with self._connections_lock:
            admitted = self.connections < self.max_connections
            if admitted:
                self.connections += 1
            else:
                self.connections_refused += 1
        if not admitted:
            try:
                self._refusals.put_nowait(request)
            except queue.Full:
                self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._connections_lock:
            self.connections -= 1
            self._connections_lock.notify_all()

    def _refuse_loop(self) -> None:
        while (sock := self._refusals.get()) is not None:
            try:
                _refuse(sock, self.max_connections)
            except OSError:
                pass  # the client left: nothing to answer
            finally:
                self.shutdown_request(sock)

    def server_close(self, drain_s: float = 30.0) -> None:
        """Stop listening and close the connections: idle keep-alive ones at once, those with a
        request in flight once it is answered (waiting up to ``drain_s`` seconds for them), so
        that no connection is served after the server is closed."""
        super().server_close()
        with self._connections_lock:
            self._closing = True
            idle = [h for h in self._handlers if not h.busy]
        for handler in idle:  # its thread, waiting for a next request line, reads the end and returns
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._connections_lock:
            self._connections_lock.wait_for(lambda: self.connections == 0, timeout=drain_s)
        while True:  # refusals still waiting are closed unanswered; then the refusing thread ends
            try:
                sock = self._refusals.get_nowait()
            except queue.Empty:
                try:
                    self._refusals.put_nowait(None)
                    break
                except queue.Full:  # filled meanwhile (serve_forever still running): drain again
                    continue
            if sock is not None:
                self.shutdown_request(sock)


class _Handler(BaseHTTPRequestHandler):
    server: CodecServer
    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection

    busy = False  # a request read and not yet answered
    _answering = False

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout  # StreamRequestHandler applies it to the socket
        super().setup()
        with self.server._connections_lock:  # registered idle first: server_close also ends a slow handshake
            self.server._handlers.add(self)
            closing = self.server._closing
        if closing:  # accepted as the server closed: nothing will be served
            self.close_connection = True
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except BaseException:  # finish() will not run: unregister here; handle_error logs a line
                with self.server._connections_lock:
                    self.server._handlers.discard(self)
                raise

    def finish(self) -> None:
        with self.server._connections_lock:
            self.server._handlers.discard(self)
        super().finish()

    def parse_request(self) -> bool:  # called once a request line has arrived
        self._started = time.perf_counter()
        with self.server._connections_lock:
            self.busy = True
        return super().parse_request()

    def log_request(self, code="-", size="-") -> None:
        """The access log line: request, status, answer bytes and the time from the request line
        to the answer written (ms)."""
        if self._answering:  # send_response's call: _send logs once the answer is written
            return
        if isinstance(code, HTTPStatus):
            code = code.value
        started = getattr(self, "_started", None)
        ms = f"{1000 * (time.perf_counter() - started):.1f}" if started is not None else "-"
        request_id = _request_id(self.headers) if getattr(self, "headers", None) is not None else None
        self.log_message('"%s" %s %s %s ms%s', self.requestline, str(code), str(size), ms,
                         f" id={request_id}" if request_id else "")

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        finally:
            with self.server._connections_lock:
                self.busy = False
                if self.server._closing:  # answered; the server is closing: no next request
                    self.close_connection = True

    # -- routing -------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        """GET's status and headers without the body (load balancers' health checks)."""
        self.do_GET()

    def _token_ok(self) -> bool:
        """Whether the request carries the server's token (always true for a server without one)."""
        token = self.server.auth_token
        if token is None:
            return True
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())

    def _unauthorized(self) -> None:
        wrong = " (wrong token)" if self.headers.get("Authorization") else ""
        self._json(HTTPStatus.UNAUTHORIZED, {"error": f"this server needs 'Authorization: Bearer <token>'{wrong}",
                                             "type": "AuthenticationError"}, {"WWW-Authenticate": "Bearer"})

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        server = self.server
        if path != "/health" and not self._token_ok():  # health stays open to load balancers' probes
            self._unauthorized()
            return
        if path == "/health":
            codec = server.engine.codec
            closed = any(e.closed for e in server.engines.values())
            # a shut-down engine answers every request 503: so does its health, for load balancers
            self._json(HTTPStatus.SERVICE_UNAVAILABLE if closed else HTTPStatus.OK,
                       {"status": "shut down" if closed else "ok", "model": codec.fingerprint.hex(),
                        "models": [fp.hex() for fp in server.engines],
                        "backend": type(codec.backend).__name__,
                        "in_flight": sum(e.in_flight for e in server.engines.values())})
        elif path == "/stats":
            engine = server.engine  # the default model's at the top level; every model's by_model
            by_model = {fp.hex(): dict(e.stats, in_flight=e.in_flight, latency=e.latency())
                        for fp, e in server.engines.items()}
            self._json(HTTPStatus.OK, dict(by_model[engine.codec.fingerprint.hex()],
                                           connections=server.connections,
                                           connections_refused=server.connections_refused, by_model=by_model))
        elif path == "/metrics":
            self._send(HTTPStatus.OK, "text/plain; version=0.0.4", prometheus_text(server.engines, server).encode())
        else:
            self._json(HTTPStatus.NOT_FOUND,
                       {"error": f"no such endpoint: {self.command} {path} (GET or HEAD /health, /stats, /metrics)",
                        "type": "RequestError"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if not self._token_ok():
            self._discard_body()  # read and dropped, so that the client reads the 401, not a reset
            self._unauthorized()
            return
        try:
            if url.path not in ("/encode", "/decode"):
                self._discard_body()
                raise _HTTPError(HTTPStatus.NOT_FOUND, f"no such endpoint: POST {url.path} (POST /encode, /decode)",
                                 "RequestError")
            params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            body = self._body()
            if url.path == "/encode":
                self._encode(body, params)
            else:
                self._decode(body, params)
        except _HTTPError as e:
            self._json(e.status, {"error": str(e), "type": e.kind})
        except Exception as e:  # noqa: BLE001 — every failure becomes an answer, never a dropped connection
            busy = {"Retry-After": "1"} if isinstance(e, QueueFull) else None  # a full queue drains soon
            self._json(_status_of(e), {"error": str(e) or type(e).__name__, "type": type(e).__name__}, busy)

    # -- endpoints -----------------------------------------------------------------------
    def _encode(self, body: bytes, params: dict) -> None:
        unknown = set(params) - {"quality", "short_side", "timeout", "width", "height", "model"}
        if unknown:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, f"unknown parameter(s) {sorted(unknown)} "
                                                     "(quality, short_side, timeout, width, height, model)")
        quality = _number(params, "quality", self.server.quality)
        short_side = params.get("short_side")
        short = _integer(params, "short_side") if short_side not in (None, "") else None
        engine = self.server.engine_named(params["model"]) if "model" in params else self.server.engine
        if "width" in params or "height" in params:
            image = _raw_image(body, params, engine.codec.max_pixels)
        else:
            image = load_image(io.BytesIO(body), engine.codec.max_pixels)
        data = self._wait(engine.submit_encode(image, quality, _timeout(params), short_side=short))
        h, w = image.shape[:2]
        self._send(HTTPStatus.OK, STREAM_TYPE, data,
                   {"X-Image-Width": str(w), "X-Image-Height": str(h), "X-Bpp": f"{8 * len(data) / (w * h):.4f}"})

    def _decode(self, body: bytes, params: dict) -> None:
        unknown = set(params) - {"format", "timeout"}
        if unknown:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, f"unknown parameter(s) {sorted(unknown)} (format, timeout)")
        fmt = params.get("format", "png").lower()
        if fmt not in IMAGE_FORMATS:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, f"format must be one of {sorted(IMAGE_FORMATS)}, got {fmt!r}")
        img = self._wait(self.server.engine_for_stream(body).submit_decode(body, _timeout(params)))
        pil_format, content_type = IMAGE_FORMATS[fmt]
        payload = img.tobytes() if pil_format is None else image_bytes(img, pil_format, self.server.png_level)
        self._send(HTTPStatus.OK, content_type, payload,
                   {"X-Image-Width": str(img.shape[1]), "X-Image-Height": str(img.shape[0])})

    # -- plumbing ------------------------------------------------------------------------
    @staticmethod
    def _wait(future):
        return future.result()  # the engine's own timeout (or the server's) ends it

    def _chunked(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def _body(self) -> bytes:
        if self._chunked():
            return self._chunked_body()
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise _HTTPError(HTTPStatus.LENGTH_REQUIRED,
                             "a request body with Content-Length (or Transfer-Encoding: chunked) is required",
                             "RequestError")
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise _HTTPError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length!r}") from None
        if n < 0 or n > self.server.max_body:
            self.close_connection = True
            if 0 < n <= self.server.max_body + _DRAIN_LIMIT:
                # read what the client is sending, so that it gets to read the answer instead
                # of a reset connection; larger bodies are cut off
                self._skip(n)
            raise _HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                             f"body of {n} bytes; this server takes at most {self.server.max_body} (--max-body-mb)",
                             "ResourceError")
        try:
            body = self.rfile.read(n)
        except TimeoutError:
            self.close_connection = True
            raise _HTTPError(HTTPStatus.REQUEST_TIMEOUT, f"the body did not arrive within {self.server.idle_timeout} s",
                             "TimeoutError") from None
        if len(body) < n:
            self.close_connection = True
            raise _HTTPError(HTTPStatus.BAD_REQUEST, f"body ended after {len(body)} of {n} bytes", "RequestError")
        return body

    def _chunked_body(self) -> bytes:
        """A ``Transfer-Encoding: chunked`` body (a client streaming a body of unknown length: curl
        -T -, Go's and Java's HTTP clients), within ``max_body``. Any failure closes the connection."""
        parts, total, close_after = [], 0, self.close_connection
        self.close_connection = True  # until the body has been read whole
        try:
            while True:
                line = self.rfile.readline(1026)
                size_text = line.split(b";", 1)[0].strip()  # chunk extensions are ignored
                if not line.endswith(b"\n") or not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                    if not line:
                        raise _HTTPError(HTTPStatus.BAD_REQUEST, f"chunked body ended after {total} bytes",
                                         "RequestError")
                    raise _HTTPError(HTTPStatus.BAD_REQUEST, f"bad chunk size line {line[:40]!r}", "RequestError")
                size = int(size_text, 16)
                if size == 0:
                    while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):  # trailer fields, dropped
                        pass
                    break
                total += size
                if total > self.server.max_body:
                    raise _HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                     f"chunked body over {self.server.max_body} bytes (--max-body-mb)", "ResourceError")
                data = self.rfile.read(size)
                if len(data) < size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                    raise _HTTPError(HTTPStatus.BAD_REQUEST, f"chunked body ended or malformed after "
                                     f"{total - size + len(data)} bytes", "RequestError")
                parts.append(data)
        except TimeoutError:
            raise _HTTPError(HTTPStatus.REQUEST_TIMEOUT, f"the body did not arrive within {self.server.idle_timeout} s",
                             "TimeoutError") from None
        self.close_connection = close_after
        return b"".join(parts)

    def _discard_body(self) -> None:
        if self._chunked():
            self.close_connection = True  # not worth reading: the connection ends after the answer
            return
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = 0
        if 0 < n <= self.server.max_body:
            self._skip(n)
        elif n:
            self.close_connection = True

    def _skip(self, n: int) -> None:
        while n > 0:
            chunk = self.rfile.read(min(n, 2**20))
            if not chunk:
                break
            n -= len(chunk)

    def _json(self, status: HTTPStatus, obj: dict, headers: dict | None = None) -> None:
        self._send(status, "application/json", (json.dumps(obj) + "\n").encode(), headers)

    def _send(self, status: HTTPStatus, content_type: str, payload: bytes, headers: dict | None = None) -> None:
        self._answering = True
        request_id = _request_id(self.headers)
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            if request_id:  # echoed, so that a client or proxy can match answers and log lines
                self.send_header("X-Request-Id", request_id)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client left: nobody to answer
            self.close_connection = True
        finally:
            self._answering = False
        self.log_request(status, len(payload))

    def log_message(self, format: str, *args) -> None:  # noqa: A002 — the base class's signature
        if not self.server.quiet:
            super().log_message(format, *args)


def _request_id(headers) -> str | None:
    """The client's ``X-Request-Id``, when it is short printable ASCII (it goes into a header
    and the log as it is)."""
    value = headers.get("X-Request-Id") if headers is not None else None
    if value and len(value) <= 128 and value.isascii() and value.isprintable():
        return value
    return None


def _raw_image(body: bytes, params: dict, max_pixels: int | None) -> np.ndarray:
    """``width``×``height`` RGB pixels sent as they are (row-major, 3 bytes each): no image file
    to write on the client's side nor to parse on this one."""
    if "width" not in params or "height" not in params:
        raise _HTTPError(HTTPStatus.BAD_REQUEST, "raw pixels need both width and height")
    w, h = _integer(params, "width"), _integer(params, "height")
    if w < 1 or h < 1:
        raise _HTTPError(HTTPStatus.BAD_REQUEST, f"width and height must be positive, got {w}, {h}")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(f"{w}x{h} is more than max_pixels={max_pixels} (--max-pixels raises it)")
    if len(body) != w * h * 3:
        raise ImageError(f"raw pixels: {w}x{h}x3 = {w * h * 3} bytes expected, got {len(body)}")
    return as_rgb_array(np.frombuffer(body, np.uint8).reshape(h, w, 3))  # checks the size limits


def _refuse(sock: socket.socket, limit: int) -> None:
    """Answer 503 on a connection over the bound, reading (and dropping) what the client sends
    meanwhile: closing a socket with unread data resets the connection, and the client would see
    a reset instead of the answer."""
    body = (json.dumps({"error": f"server busy: {limit} connections open (--max-connections); retry later",
                        "type": "QueueFull"}) + "\n").encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
    deadline = time.monotonic() + _REFUSAL_SECONDS
    sock.settimeout(_REFUSAL_SECONDS)
    if isinstance(sock, ssl.SSLSocket):
        sock.do_handshake()
    received = b""
    while b"\r\n\r\n" not in received and len(received) < 65536:  # the request head, if it comes
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    sock.sendall(head + body)
    sock.shutdown(socket.SHUT_WR)
    while (left := deadline - time.monotonic()) > 0:  # the body, until the client closes
        sock.settimeout(left)
        if not sock.recv(2**20):
            break


def _number(params: dict, name: str, default: float) -> float:
    text = params.get(name)
    if text is None:
        return default
    try:
        return float(text)
    except ValueError:
        raise _HTTPError(HTTPStatus.BAD_REQUEST, f"{name} must be a number, got {text!r}") from None


def _integer(params: dict, name: str) -> int:
    text = params[name]
    try:
        return int(text)
    except ValueError:
        raise _HTTPError(HTTPStatus.BAD_REQUEST, f"{name} must be an integer, got {text!r}") from None


def _timeout(params: dict) -> float | None:
    if "timeout" not in params:
        return None
    t = _number(params, "timeout", 0.0)
    if not t > 0:
        raise _HTTPError(HTTPStatus.BAD_REQUEST, f"timeout must be > 0 seconds, got {params['timeout']!r}")
    return t


def prometheus_text(engine: Engine | dict[bytes, Engine], server: CodecServer | None = None) -> str:
    """The engines' counters and latency quantiles (each series labelled with its model's
    fingerprint), and ``server``'s connections, in Prometheus' text exposition format."""
    engines = engine if isinstance(engine, dict) else {engine.codec.fingerprint: engine}
    lines = []
    if server is not None:
        lines += [
            "# HELP vlmcodec_http_connections Connections open now.",
            "# TYPE vlmcodec_http_connections gauge",
            f"vlmcodec_http_connections {server.connections}",
            "# HELP vlmcodec_http_connections_refused_total Connections answered 503 for the connection bound.",
            "# TYPE vlmcodec_http_connections_refused_total counter",
            f"vlmcodec_http_connections_refused_total {server.connections_refused}",
        ]
    families = [
        ("vlmcodec_requests_total", "counter", "Requests finished, by outcome.",
         lambda e, st: [('outcome="ok"', st["ok"]), ('outcome="failed"', st["failed"])]),
        ("vlmcodec_batches_total", "counter", "Network batches run.", lambda e, st: [("", st["batches"])]),
        ("vlmcodec_batched_items_total", "counter", "Requests run in network batches.",
         lambda e, st: [("", st["batched_items"])]),
        ("vlmcodec_in_flight", "gauge", "Requests admitted and not finished.", lambda e, st: [("", e.in_flight)]),
    ]
    snapshot = {fp: (e, dict(e.stats), e.latency()) for fp, e in engines.items()}
    for name, kind, text, values in families:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for fp, (e, stats, _) in snapshot.items():
            for labels, value in values(e, stats):
                lines.append(f'{name}{{model="{fp.hex()}"{"," + labels if labels else ""}}} {value}')
    lines += ["# HELP vlmcodec_latency_seconds Submit-to-result time of the last successful requests.",
              "# TYPE vlmcodec_latency_seconds summary"]
    for fp, (_, _, latency) in snapshot.items():
        model = f'model="{fp.hex()}"'
        for kind, q in latency.items():
            for key, quantile in (("p50_s", "0.5"), ("p90_s", "0.9"), ("p99_s", "0.99")):
                if q:
                    lines.append(f'vlmcodec_latency_seconds{{{model},kind="{kind}",quantile="{quantile}"}} {q[key]:.6f}')
            lines.append(f'vlmcodec_latency_seconds_count{{{model},kind="{kind}"}} {q.get("count", 0)}')
    return "\n".join(lines) + "\n"


def serve_in_thread(server: CodecServer) -> threading.Thread:
    """Run ``server`` on a daemon thread (tests, notebooks); stop it with ``server.shutdown()``."""
    thread = threading.Thread(target=server.serve_forever, name="vlmcodec-http", daemon=True)
    thread.start()
    return thread


__all__ = ["CodecServer", "serve_in_thread", "STREAM_TYPE", "IMAGE_FORMATS"]
