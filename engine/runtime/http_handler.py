"""The request side of ``vlmcodec serve``: :class:`RequestHandler` reads each request of one
connection (body limits, chunked bodies, the bearer token), routes it to the server's engines and
answers it (errors as JSON ``{"error", "type"}``); the parsing helpers of its query parameters."""

from __future__ import annotations

import io
import json
import math
import select
import socket
import ssl
import sys
import time
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from .. import memory, resample
from ..bitstream import container
from ..errors import (BitstreamError, ConfigError, EngineDeadError, ImageError, MemoryBusyError, ModelMismatchError,
                      ResourceError)
from ..image_io import READ_BYTES_PER_PIXEL, as_rgb_array, image_bytes, image_size, load_image
from .engine import QueueFull, check_priority
from .forwarded import client_address, client_key, plain_address
from .metrics import prometheus_text
from .tokens import client_of

if TYPE_CHECKING:
    from .server import CodecServer

STREAM_TYPE = "application/x-vlmc"
IMAGE_FORMATS = {"png": ("PNG", "image/png"), "ppm": ("PPM", "image/x-portable-pixmap"),
                 "raw": (None, "application/octet-stream")}
# a body gets header_timeout plus its length at this rate to arrive (a client that trickles it
# cannot hold its connection for ever, one on a slow link still gets through)
MIN_BODY_RATE = 64 * 1024  # bytes a second
# after an answer given before the request's body was read (413, 401 …), the connection is shut
# for writing and what the client still sends is read and dropped for up to this long before it
# is closed: closing a socket with unread data resets the connection, and the client (which sends
# its whole body before it reads) would see the reset instead of the answer
_LINGER_S = 5.0
ALLOWED_METHODS = "GET, HEAD, POST"


# how often a request's wait looks whether its client has hung up
_HANGUP_POLL_S = 0.05
_CLIENT_CLOSED = 499


class _DeadlineReader(io.RawIOBase):
    """The connection's socket as the handler reads it: each read waits at most the idle timeout
    and, once a request has begun, no later than its deadline (``handler._read_deadline``). A
    client that sends its request a byte at a time within the idle timeout then cannot hold its
    connection (one of ``max_connections``) for ever."""

    def __init__(self, handler: RequestHandler):
        super().__init__()
        self._handler, self._sock = handler, handler.connection

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        handler, idle = self._handler, self._handler.server.idle_timeout
        deadline = handler._read_deadline
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request's deadline passed")
            self._sock.settimeout(left if idle is None else min(idle, left))
        try:
            n = self._sock.recv_into(buffer)
        finally:
            if deadline is not None:
                self._sock.settimeout(idle)
        if n and handler._arm_deadline:  # a request's first bytes: its head is due within header_timeout
            handler._arm_deadline = False
            if handler.server.header_timeout is not None:
                handler._read_deadline = time.monotonic() + handler.server.header_timeout
        return n


class _ClientGone(Exception):
    """The client closed its connection while its request waited: no answer is sent."""


class HTTPError(Exception):
    """An answer other than 200, with its status and the JSON ``type``."""

    def __init__(self, status: HTTPStatus, message: str, kind: str = "ConfigError"):
        super().__init__(message)
        self.status, self.kind = status, kind


def _status_of(err: BaseException) -> HTTPStatus:
    if isinstance(err, ModelMismatchError):
        return HTTPStatus.CONFLICT
    if isinstance(err, (ImageError, BitstreamError, ConfigError, TypeError, ValueError)):
        return HTTPStatus.BAD_REQUEST
    if isinstance(err, MemoryBusyError):  # (fits once other coding ends: try again later)
        return HTTPStatus.SERVICE_UNAVAILABLE
    if isinstance(err, ResourceError):
        return HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    if isinstance(err, (QueueFull, EngineDeadError)):
        return HTTPStatus.SERVICE_UNAVAILABLE
    if isinstance(err, (TimeoutError, FutureTimeout)):
        return HTTPStatus.GATEWAY_TIMEOUT
    return HTTPStatus.INTERNAL_SERVER_ERROR


class RequestHandler(BaseHTTPRequestHandler):
    """One connection of a :class:`~vlmcodec.runtime.server.CodecServer`: its requests, one after
    another (keep-alive), each routed to an endpoint and answered, errors as JSON."""

    server: CodecServer
    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
    # TCP_NODELAY: an answer's head and body go out as two writes; with Nagle's algorithm the
    # second waited for the client's delayed ACK of the first, ~40 ms on every keep-alive request
    disable_nagle_algorithm = True

    busy = False  # a request read and not yet answered
    _answering = False
    _request_id: str | None = None  # the request's X-Request-Id, echoed in the answer and the log
    _client: str | None = None  # the name of the token the request carried (servers with tokens)
    _remote: str | None = None  # the client's address: X-Forwarded-For's from a trusted proxy, else the peer's
    _forwarded = False          # whether _remote came from X-Forwarded-For
    _expect_continue = False    # the client waits for "100 Continue" before it sends the body
    _read_deadline: float | None = None  # reads of this request end by then (_DeadlineReader)
    _arm_deadline = False       # the next bytes read begin a request: its deadline starts
    _linger = False             # answered before its body was read: the close lingers (_LINGER_S)

    def setup(self) -> None:
        # StreamRequestHandler applies it to the socket (typeshed has it a class variable only)
        self.timeout = self.server.idle_timeout  # type: ignore[misc]
        super().setup()
        self.rfile.close()  # (the socket's own reader: one with the request's deadline instead)
        self.rfile = io.BufferedReader(_DeadlineReader(self), 65536)
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
        try:
            super().finish()
        finally:
            if self._linger:
                self._linger_close()

    def _linger_close(self) -> None:
        """Shut the connection for writing (the answer is out) and drop what the client still
        sends, until it closes or _LINGER_S pass; the server then closes the socket."""
        sock = self.connection
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + _LINGER_S
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                if not socket.socket.recv(sock, 2**20):  # (the raw bytes, also under TLS)
                    break
        except (OSError, ValueError):
            pass

    def parse_request(self) -> bool:  # called once a request line has arrived
        self._started = time.perf_counter()
        self._request_id = self._client = self._remote = None
        self._forwarded = self._expect_continue = False
        with self.server._connections_lock:  # (before the line is parsed: a cut one was answered 400 and logged)
            if self._cut_by_close():
                return False
        if not super().parse_request():
            return False
        with self.server._connections_lock:  # (a head still arriving is not in flight: server_close ends it)
            if self._cut_by_close():
                return False
            self.busy = True
        self._request_id = _request_id(self.headers)
        forwarded_for = self.headers.get_all("X-Forwarded-For") or []
        self._remote, self._forwarded = client_address(self.client_address[0], forwarded_for,
                                                       self.server.trusted_proxies)
        refused = self._framing_error()
        if refused is not None:  # the body's end is not known: answered, and the connection closed
            self.close_connection = self._linger = True
            self._json(refused.status, {"error": str(refused), "type": refused.kind}, {"Connection": "close"})
            return False
        return True

    def _cut_by_close(self) -> bool:
        """(Under the server's connections lock.) Whether server_close shut this connection down
        as idle while its request line or head was arriving (the end read as the head's end): then
        the half-sent request is neither run, answered, logged nor counted, and the connection ends."""
        if self.server._closing:
            self.close_connection = True
        return self.server._closing

    def handle_expect_100(self) -> bool:
        """"Expect: 100-continue": the client waits before sending its body. "100 Continue" is
        sent only once the request is admitted (token, endpoint, rate limit, size), when its body
        is read: a refused one is answered at once, without the client sending its body."""
        self._expect_continue = True
        return True

    def _framing_error(self) -> HTTPError | None:
        """Where this request's body ends must be plain: Content-Length (digits; several must
        agree) or ``Transfer-Encoding: chunked``, never both. Anything else is refused (its
        connection closed), as a proxy in front may read it otherwise (request smuggling)."""
        lengths = [v.strip() for v in self.headers.get_all("Content-Length") or []]
        codings = [c.strip().lower() for v in self.headers.get_all("Transfer-Encoding") or [] for c in v.split(",")]
        if codings:
            if codings != ["chunked"]:
                return HTTPError(HTTPStatus.NOT_IMPLEMENTED, f"Transfer-Encoding {', '.join(codings)!r}: only "
                                                             "'chunked' is taken", "RequestError")
            if lengths:
                return HTTPError(HTTPStatus.BAD_REQUEST, "both Transfer-Encoding and Content-Length: the body's "
                                                         "end is ambiguous", "RequestError")
            return None
        if any(not (v.isascii() and v.isdigit()) for v in lengths):
            return HTTPError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {', '.join(lengths)!r} (digits only)",
                             "RequestError")
        if len({v.lstrip("0") for v in lengths}) > 1:  # (as numbers, without int(): it refuses 4300+ digits)
            return HTTPError(HTTPStatus.BAD_REQUEST, f"Content-Length headers disagree: {', '.join(lengths)}",
                             "RequestError")
        return None

    def send_error(self, code, message=None, explain=None) -> None:
        """The standard library's refusals (a request line or header it cannot parse, one too long,
        a method nobody serves) answered as JSON like every other error, the connection closed."""
        if self.request_version == "HTTP/0.9":  # (a line that did not parse: a status line all the same)
            self.request_version = "HTTP/1.0"
        status = HTTPStatus(code)
        self.log_error("code %d, message %s", code, message or status.phrase)
        self.close_connection = True
        self._json(status, {"error": message or status.phrase, "type": "RequestError"}, {"Connection": "close"})

    def address_string(self) -> str:
        """The client's address in the text log (behind a trusted proxy: the one it forwarded)."""
        return self._remote or plain_address(self.client_address[0])

    def log_request(self, code="-", size="-") -> None:
        """The access log line: request, status, answer bytes and the time from the request line
        to the answer written (ms)."""
        if self._answering:  # send_response's call: _send logs once the answer is written
            return
        if isinstance(code, HTTPStatus):
            code = code.value
        started = getattr(self, "_started", None)
        if self.server.log_format == "json":
            if not self.server.quiet:
                # a request line that did not parse has no method or path
                self._log_json({"method": getattr(self, "command", None), "path": getattr(self, "path", None),
                                "status": _int_or_none(code),
                                "bytes": _int_or_none(size),
                                "ms": round(1000 * (time.perf_counter() - started), 1) if started is not None else None,
                                "request_id": self._request_id, "client": self._client})
            return
        ms = f"{1000 * (time.perf_counter() - started):.1f}" if started is not None else "-"
        extra = (f" id={self._request_id}" if self._request_id else "") + (
            f" client={self._client}" if self._client else "")
        self.log_message('"%s" %s %s %s ms%s', self.requestline, str(code), str(size), ms, extra)

    def log_error(self, format: str, *args) -> None:  # noqa: A002 — the base class's signature
        """A malformed request, a timeout: one line, an object of its own in the JSON log."""
        if self.server.log_format == "json":
            if not self.server.quiet:
                self._log_json({"level": "error", "message": format % args})
            return
        super().log_error(format, *args)

    def _log_json(self, fields: dict) -> None:
        peer = plain_address(self.client_address[0]) if self.client_address else None
        if self._forwarded:  # the proxy that forwarded it, beside the client's own address
            fields = dict(fields, proxy=peer)
        sys.stderr.write(json_log_line(self._remote or peer, fields))

    def handle_one_request(self) -> None:
        self._read_deadline, self._arm_deadline = None, True  # (a keep-alive wait has only the idle timeout)
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
        """Whether the request carries one of the server's tokens (always true for a server
        without any); the client it names is logged and counted."""
        tokens = self.server.auth_tokens
        if tokens is None:
            return True
        self._client = client_of(tokens, self.headers.get("Authorization", ""))
        if self._client is None:
            return False
        self.server.count_client(self._client)
        return True

    def _unauthorized(self) -> None:
        wrong = " (wrong token)" if self.headers.get("Authorization") else ""
        self._json(HTTPStatus.UNAUTHORIZED, {"error": f"this server needs 'Authorization: Bearer <token>'{wrong}",
                                             "type": "AuthenticationError"}, {"WWW-Authenticate": "Bearer"})

    def _not_allowed(self) -> None:
        self._discard_body()
        self._json(HTTPStatus.METHOD_NOT_ALLOWED,
                   {"error": f"{self.command} is not served here (GET or HEAD /health, /stats, /metrics; "
                             "POST /encode, /decode)", "type": "RequestError"}, {"Allow": ALLOWED_METHODS})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        server = self.server
        self._discard_body()  # a GET may carry one: read (not taken for the next request) and dropped
        if path != "/health" and not self._token_ok():  # health stays open to load balancers' probes
            self._unauthorized()
            return
        if path == "/health":
            codec = server.engine.codec
            closed = any(e.closed for e in server.engines.values())
            # a shut-down engine answers every request 503: so does its health, for load balancers
            self._json(HTTPStatus.SERVICE_UNAVAILABLE if closed else HTTPStatus.OK,
                       {"status": "shut down" if closed else "ok", "model": codec.fingerprint.hex(),
                        # what its streams carry: "model", or the model whose decoder it shares
                        "stream_model": codec.stream_fingerprint.hex(),
                        "models": [fp.hex() for fp in server.engines],
                        "backend": type(codec.backend).__name__, "max_refine": server.max_refine,
                        "refine_views": list(codec.refine_views) if codec.refine_views else None,
                        "refine_bf16": codec.refine_bf16,
                        "in_flight": sum(e.in_flight for e in server.engines.values())})
        elif path == "/stats":
            engine = server.engine  # the default model's at the top level; every model's by_model
            by_model = {fp.hex(): dict(e.stats, in_flight=e.in_flight, latency=_latency(e))
                        for fp, e in server.engines.items()}
            limited, limited_by_client = server.rate_limited_counts()
            self._json(HTTPStatus.OK, dict(by_model[engine.codec.fingerprint.hex()],
                                           connections=server.connections,
                                           connections_refused=server.connections_refused, by_model=by_model,
                                           requests_by_client=server.client_counts(),
                                           rate_limited=limited, rate_limited_by_client=limited_by_client,
                                           abandoned=server.abandoned, responses=server.response_counts()))
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
                raise HTTPError(HTTPStatus.NOT_FOUND, f"no such endpoint: POST {url.path} (POST /encode, /decode)",
                                 "RequestError")
            params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            cost = self._rate_cost(url.path, params)
            wait, limit = self.server.rate_wait(self._client, self.address_string(), cost)
            if wait > 0:  # never reaches the queue; the body is read and dropped
                self._discard_body()
                assert limit is not None  # (a wait comes of a limit)
                rate, burst = limit
                counts = f" (this one counts as {min(cost, burst):g}: refine × --refine-cost)" if cost > 1 else ""
                self._json(HTTPStatus.TOO_MANY_REQUESTS,
                           {"error": f"over this client's rate limit of {rate:g} requests/s (burst {burst}){counts}; "
                                     f"the next is admitted in {wait:.2f} s",
                            "type": "RateLimited", "retry_after_s": round(wait, 3)},
                           {"Retry-After": str(max(1, math.ceil(wait)))})
                return
            body = self._body()
            if url.path == "/encode":
                self._encode(body, params)
            else:
                self._decode(body, params)
        except HTTPError as e:
            self._json(e.status, {"error": str(e), "type": e.kind})
        except _ClientGone:  # nobody to answer: logged as nginx logs it, 499 "client closed request"
            self.close_connection = True
            self.server.count_abandoned()
            self.log_request(_CLIENT_CLOSED, 0)
        except Exception as e:  # noqa: BLE001 — every failure becomes an answer, never a dropped connection
            busy = {"Retry-After": "1"} if isinstance(e, QueueFull) else None  # a full queue drains soon
            self._json(_status_of(e), {"error": str(e) or type(e).__name__, "type": type(e).__name__}, busy)

    def _rate_cost(self, path: str, params: dict) -> float:
        """The requests this one counts as under a rate limit: 1, or 1 + refine_cost · K for an
        /encode?refine=K (a K that does not parse counts 1 here and is refused 400 later)."""
        if path != "/encode" or not self.server.refine_cost:
            return 1.0
        try:
            steps = _optional_integer(params, "refine") or 0
        except HTTPError:
            return 1.0
        return 1.0 + self.server.refine_cost * max(steps, 0)

    # -- endpoints -----------------------------------------------------------------------
    def _encode(self, body: bytes, params: dict) -> None:
        known = ("quality", "max_bytes", "max_bpp", "short_side", "timeout", "width", "height", "model", "refine",
                 "priority")
        unknown = set(params) - set(known)
        if unknown:
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"unknown parameter(s) {sorted(unknown)} ({', '.join(known)})")
        quality = _number(params, "quality", self.server.quality)
        budget: dict[str, Any] = {"max_bytes": _integer(params, "max_bytes")} if "max_bytes" in params else {}
        budget |= {"max_bpp": _number(params, "max_bpp", 0.0)} if "max_bpp" in params else {}
        if budget and "quality" in params:  # the budget picks the quality
            raise HTTPError(HTTPStatus.BAD_REQUEST, "quality and max_bytes / max_bpp exclude each other")
        short = _optional_integer(params, "short_side")
        refine = _optional_integer(params, "refine") or 0
        most = (self.server.max_refine if self._client is None
                else self.server.client_max_refine.get(self._client, self.server.max_refine))
        if not 0 <= refine <= most:
            allowed = (f"0..{most}" if most else "0: refinement is not allowed here (serve --max-refine N, or a "
                                                  "token-file line's refine=N, allows it)")
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"refine must be {allowed}, got {refine}")
        engine = self.server.engine_named(params["model"]) if "model" in params else self.server.engine
        if "width" in params or "height" in params:
            image = _raw_image(body, params, engine.codec.max_pixels)
            timeout = _timeout(params, engine)
        else:
            timeout = _timeout(params, engine)
            image = _read_image(body, engine.codec.max_pixels, engine.codec.check_memory,
                                None if timeout is None else time.monotonic() + timeout)
        if refine:
            self._check_refine_size(image.shape[:2], short, engine.codec.short_side)
        future = engine.submit_encode(image, None if budget else quality, timeout,
                                      short_side=short, refine=refine,
                                      priority=self._priority(params), owner=client_key(self._client, self.address_string()),
                                      **budget)
        data = self._wait(future)
        h, w = image.shape[:2]
        headers = {"X-Image-Width": str(w), "X-Image-Height": str(h), "X-Bpp": f"{8 * len(data) / (w * h):.4f}"}
        if budget:  # the quality the rate control found
            headers["X-Quality"] = f"{container.unpack(data)[0].quality:g}"
        if future.warning:  # a refined budget met by a one-pass stream (RemoteCodec warns with it)
            headers["X-Refine-Fallback"] = future.warning
        self._send(HTTPStatus.OK, STREAM_TYPE, data, headers)

    def _decode(self, body: bytes, params: dict) -> None:
        unknown = set(params) - {"format", "timeout", "short_side", "priority"}
        if unknown:
            raise HTTPError(HTTPStatus.BAD_REQUEST,
                            f"unknown parameter(s) {sorted(unknown)} (format, timeout, short_side, priority)")
        fmt = params.get("format", "png").lower()
        if fmt not in IMAGE_FORMATS:
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"format must be one of {sorted(IMAGE_FORMATS)}, got {fmt!r}")
        short = _optional_integer(params, "short_side")
        priority = self._priority(params)
        engine = self.server.engine_for_stream(body)
        img = self._wait(engine.submit_decode(body, _timeout(params, engine), short, priority=priority))
        pil_format, content_type = IMAGE_FORMATS[fmt]
        payload = img.tobytes() if pil_format is None else image_bytes(img, pil_format, self.server.png_level)
        self._send(HTTPStatus.OK, content_type, payload,
                   {"X-Image-Width": str(img.shape[1]), "X-Image-Height": str(img.shape[0])})

    def _check_refine_size(self, hw: tuple[int, int], short: int | None, codec_short: int | None) -> None:
        """413 for a refined encode of more coded pixels than the server's ``max_refine_pixels``:
        refinement's time grows with them (13 s for 1 Mpx at K = 10 on 2 cores)."""
        h, w = resample.coded_size(*hw, resample.call_short_side(short, codec_short))
        if h * w > self.server.max_refine_pixels:
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"a refined encode codes at most {self.server.max_refine_pixels} pixels on this server, "
                            f"this one {w}x{h} (ask short_side=N, or no refine)", "ResourceError")

    def _priority(self, params: dict) -> int:
        """The request's priority: its ``priority``, at most its client's (the token file's
        ``priority=``; 0 for everyone else), which is also the default."""
        own = 0 if self._client is None else self.server.client_priorities.get(self._client, 0)
        asked = _optional_integer(params, "priority")
        if asked is None:
            return own
        check_priority(asked)  # ValueError: 400
        if asked > own:
            raise HTTPError(HTTPStatus.FORBIDDEN, f"priority {asked} is above this client's {own} (a token-file "
                                                  "line's priority=P lets its client ask up to P)", "PermissionError")
        return asked

    # -- plumbing ------------------------------------------------------------------------
    def _wait(self, future):
        """The request's result. While it waits, a client that hangs up has its request
        cancelled (if the engine has not begun it) and nothing is answered: an overloaded
        server whose clients give up does not spend itself on answers that nobody reads."""
        while True:
            try:
                return future.result(timeout=_HANGUP_POLL_S)  # the engine's timeout (or the server's) ends it
            except FutureTimeout:
                if future.done():  # the request's own TimeoutError (504)
                    raise
                if self._client_gone():
                    future.cancel()
                    raise _ClientGone from None

    def _client_gone(self) -> bool:
        """Whether the client has closed its end (read as end of file; a next request it has
        already sent, pipelined, is data and not an end)."""
        sock = self.connection
        try:
            # poll where there is one: select() takes no descriptor above 1023
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(sock, select.POLLIN)
                readable = bool(poller.poll(0))
            else:
                readable = bool(select.select([sock], [], [], 0)[0])
            # the raw socket's recv, also under TLS: end of file is the TCP connection's
            return readable and socket.socket.recv(sock, 1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _chunked(self) -> bool:
        # (parse_request refused any other Transfer-Encoding, and one beside a Content-Length)
        return bool(self.headers.get_all("Transfer-Encoding"))

    def _body_due(self, n: int) -> None:
        """The body (``n`` bytes at most) is to be read now: its deadline, and "100 Continue" to a
        client that waits for it."""
        self._arm_deadline = False  # (a head read whole with the one before it never armed it: not the body's start)
        if self.server.header_timeout is not None:
            self._read_deadline = time.monotonic() + self.server.header_timeout + n / MIN_BODY_RATE
        if self._expect_continue:
            self._expect_continue = False
            self.send_response_only(HTTPStatus.CONTINUE)
            self.end_headers()

    def _body(self) -> bytes:
        if self._chunked():
            self._body_due(0)  # (its length is not known: _chunked_body grows the time as its chunks come)
            return self._chunked_body()
        n = self._content_length()
        if n is None:
            self.close_connection = True
            raise HTTPError(HTTPStatus.LENGTH_REQUIRED,
                             "a request body with Content-Length (or Transfer-Encoding: chunked) is required",
                             "RequestError")
        if n > self.server.max_body:
            # answered at once; what the client sends meanwhile is dropped after the answer (one
            # that waits for "100 Continue" is never asked for its body)
            self.close_connection = self._linger = True
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                             f"body of {n} bytes; this server takes at most {self.server.max_body} (--max-body-mb)",
                             "ResourceError")
        self._body_due(n)
        try:
            body = self.rfile.read(n)
        except TimeoutError:
            self.close_connection = True
            raise self._body_timeout() from None
        if len(body) < n:
            self.close_connection = True
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"body ended after {len(body)} of {n} bytes", "RequestError")
        return body

    def _content_length(self) -> int | None:
        """The declared body length, None when there is none; a 400 (closing) when it is not a number."""
        length = self.headers.get("Content-Length")
        if length is None:
            return None
        try:
            return int(length)
        except ValueError:
            self.close_connection = True
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length!r}") from None

    def _chunked_body(self) -> bytes:
        """A ``Transfer-Encoding: chunked`` body (a client streaming a body of unknown length: curl
        -T -, Go's and Java's HTTP clients), within ``max_body``. Any failure closes the connection."""
        parts, total, close_after = [], 0, self.close_connection
        self.close_connection = True  # until the body has been read whole
        start = time.monotonic()
        try:
            while True:
                line = self.rfile.readline(1026)
                size_text = line.split(b";", 1)[0].strip()  # chunk extensions are ignored
                if not line.endswith(b"\n") or not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                    if not line:
                        raise HTTPError(HTTPStatus.BAD_REQUEST, f"chunked body ended after {total} bytes",
                                         "RequestError")
                    raise HTTPError(HTTPStatus.BAD_REQUEST, f"bad chunk size line {line[:40]!r}", "RequestError")
                size = int(size_text, 16)
                if size == 0:
                    while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):  # trailer fields, dropped
                        pass
                    break
                total += size
                if total > self.server.max_body:
                    self._linger = True
                    raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                     f"chunked body over {self.server.max_body} bytes (--max-body-mb)", "ResourceError")
                if self.server.header_timeout is not None:
                    # its time grows with the chunks announced so far, at the least rate: it was the
                    # time of a max_body body from the start (17 min at 64 MiB for a trickled one)
                    self._read_deadline = start + self.server.header_timeout + total / MIN_BODY_RATE
                data = self.rfile.read(size)
                if len(data) < size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                    raise HTTPError(HTTPStatus.BAD_REQUEST, f"chunked body ended or malformed after "
                                     f"{total - size + len(data)} bytes", "RequestError")
                parts.append(data)
        except TimeoutError:
            raise self._body_timeout() from None
        self.close_connection = close_after
        return b"".join(parts)

    def _body_timeout(self) -> HTTPError:
        limit = (f"{self.server.idle_timeout} s between its parts" if self.server.header_timeout is None else
                 f"its time ({self.server.header_timeout} s + its length at {MIN_BODY_RATE // 1024} KiB/s, "
                 f"{self.server.idle_timeout} s at most between its parts)")
        return HTTPError(HTTPStatus.REQUEST_TIMEOUT, f"the body did not arrive within {limit}", "TimeoutError")

    def _discard_body(self) -> None:
        if self._expect_continue:
            self.close_connection = True  # not sent yet: the connection ends after the answer
            return
        if self._chunked():  # not worth reading: dropped after the answer, and the connection closed
            self.close_connection = self._linger = True
            return
        try:
            n = self._content_length() or 0
        except HTTPError:  # (digits beyond what int() reads: closing)
            n = 0
        if 0 < n <= self.server.max_body:
            self._body_due(n)
            try:
                self._skip(n)
            except TimeoutError:
                self.close_connection = True
        elif n:
            self.close_connection = self._linger = True

    def _skip(self, n: int) -> None:
        while n > 0:
            chunk = self.rfile.read(min(n, 2**20))
            if not chunk:
                self.close_connection = True
                break
            n -= len(chunk)

    def _json(self, status: HTTPStatus, obj: dict, headers: dict | None = None) -> None:
        self._send(status, "application/json", (json.dumps(obj) + "\n").encode(), headers)

    def _send(self, status: HTTPStatus, content_type: str, payload: bytes, headers: dict | None = None) -> None:
        """Every answer (but "100 Continue") goes out here, and is counted here by its status."""
        self.server.count_response(status)
        self._answering = True
        request_id = self._request_id
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            if request_id:  # echoed, so that a client or proxy can match answers and log lines
                self.send_header("X-Request-Id", request_id)
            headers = dict(headers or {})
            if self.server._closing:  # draining: this connection ends after the answer, and says so
                self.close_connection = True  # (a keep-alive client's next request met a closed socket)
            if self.close_connection and self.request_version == "HTTP/1.1":  # (said, not only done)
                headers.setdefault("Connection", "close")
            for k, v in headers.items():
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


# /stats' latency of a kind with no successful request in its window yet
_NO_LATENCY = {"count": 0, "p50_s": None, "p90_s": None, "p99_s": None, "max_s": None}


def _latency(engine) -> dict:
    """/stats' latency per kind: the window's count and percentiles (``Engine.latency``; 0 and
    nulls for a kind with none yet), and ``total`` / ``total_s``: every successful request since
    the start and their summed seconds."""
    window, totals = engine.latency(), engine.latency_histogram()
    return {kind: dict(window[kind] or _NO_LATENCY, total=totals[kind]["count"], total_s=round(totals[kind]["sum"], 6))
            for kind in window}


def json_log_line(remote: str | None, fields: dict) -> str:
    """One line of the JSON access log (``serve --log-format json``): an object with the time
    (UTC, ISO 8601, ms), the client's address and ``fields``, for log shippers."""
    record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "remote": remote, **fields}
    return json.dumps(record, separators=(",", ":")) + "\n"


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _request_id(headers) -> str | None:
    """The client's ``X-Request-Id``, when it is short printable ASCII (it goes into a header
    and the log as it is)."""
    value = headers.get("X-Request-Id") if headers is not None else None
    if value and len(value) <= 128 and value.isascii() and value.isprintable():
        return value
    return None


def _read_image(body: bytes, max_pixels: int | None, check_memory: bool, deadline: float | None) -> np.ndarray:
    """An uploaded image file, read under the process's memory check as coding is: its decode
    and conversion (``READ_BYTES_PER_PIXEL``, from the header's size) wait for memory held by
    other work until ``deadline``, or are refused (413). A 7.8 KB 1-bit PNG of 8000×8000 took
    ~735 MB to read, unchecked, on the connection's thread: six at once grew the server by 3.9 GB
    before any check saw them."""
    size = image_size(body)
    if (size is None or not check_memory
            or (max_pixels is not None and size[0] * size[1] > max_pixels)):  # (load_image says why)
        return load_image(io.BytesIO(body), max_pixels)
    with memory.waiting(deadline), memory.holding("reading the image", size[0] * size[1], READ_BYTES_PER_PIXEL):
        return load_image(io.BytesIO(body), max_pixels)


def _raw_image(body: bytes, params: dict, max_pixels: int | None) -> np.ndarray:
    """``width``×``height`` RGB pixels sent as they are (row-major, 3 bytes each): no image file
    to write on the client's side nor to parse on this one."""
    if "width" not in params or "height" not in params:
        raise HTTPError(HTTPStatus.BAD_REQUEST, "raw pixels need both width and height")
    w, h = _integer(params, "width"), _integer(params, "height")
    if w < 1 or h < 1:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"width and height must be positive, got {w}, {h}")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(f"{w}x{h} is more than max_pixels={max_pixels} (--max-pixels raises it)")
    if len(body) != w * h * 3:
        raise ImageError(f"raw pixels: {w}x{h}x3 = {w * h * 3} bytes expected, got {len(body)}")
    return as_rgb_array(np.frombuffer(body, np.uint8).reshape(h, w, 3))  # checks the size limits


def _number(params: dict, name: str, default: float) -> float:
    text = params.get(name)
    if text is None:
        return default
    try:
        return float(text)
    except ValueError:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"{name} must be a number, got {text!r}") from None


def _integer(params: dict, name: str) -> int:
    text = params[name]
    try:
        return int(text)
    except ValueError:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"{name} must be an integer, got {text!r}") from None


def _optional_integer(params: dict, name: str) -> int | None:
    """An integer parameter that may be absent or empty (None then)."""
    return _integer(params, name) if params.get(name) not in (None, "") else None


def _timeout(params: dict, engine) -> float | None:
    """The request's ``timeout``, at most the server's own (``--timeout``, the engine's
    ``timeout_s``): a client may shorten the bound the server sheds load by, never lift it."""
    bound = engine.timeout_s
    if "timeout" not in params:
        return bound
    t = _number(params, "timeout", 0.0)
    if not t > 0:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"timeout must be > 0 seconds, got {params['timeout']!r}")
    return t if bound is None else min(t, bound)
