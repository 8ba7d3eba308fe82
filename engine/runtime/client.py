"""``RemoteCodec``: the encode/decode calls of a ``Codec``, answered by a `vlmcodec serve` server.

    remote = RemoteCodec("http://gpu-box:8080")
    data = remote.encode(image, quality=60)        # image: numpy, PIL (sent as raw pixels), or a file path
    pixels = remote.decode(data)                   # uint8 H×W×3, sent as raw pixels (no PNG)

No HTTP library beyond Python's own. Each thread keeps its own keep-alive connection, so one
``RemoteCodec`` serves a thread pool, and the server batches what the threads send together. The
server's JSON errors come back as the exceptions the server's ``Codec`` raised (``ImageError``,
``BitstreamError``, ``ModelMismatchError``, ``ConfigError``, ``ResourceError``, ``QueueFull``, ``EngineDeadError``,
``RequestTimeoutError``, ``PermissionError`` for a missing or wrong token, ...), the HTTP status in
the message; a server that cannot be reached (or whose TLS certificate does not verify) raises
``ConnectionError``, one that does not answer within ``timeout_s`` ``RequestTimeoutError`` (a
``TimeoutError``; the request is not retried: the server may still be working on it). A busy
server's 503 (``QueueFull``: its queue or its connections full) and a rate-limited client's 429
(``RateLimited``: ``serve --rate-limit``) are retried ``retries`` times, after the wait the
server asks (at most ``MAX_RETRY_WAIT_S``), before the error is raised: encode and decode are
idempotent. An error the server answered carries its whole JSON answer as ``.answer``. ``timeout_s``
bounds a call's whole exchange (connecting, sending, and every byte of the answer; its retries and
the waits between them too: a retry that could not begin in time is not made), not each read.
A 200 answer that is not a vlmcodec server's (an HTML page, another JSON, a stream without its magic,
pixels their dimensions do not describe, a body over ``MAX_ANSWER_BYTES``) raises ``ConnectionError``.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import io
import json
import math
import os
import re
import socket
import ssl
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, cast
from urllib.parse import urlencode, urlsplit

import numpy as np

from ..bitstream.container import MAGIC, MAX_DIM, Stream, as_bytes, quantize_quality
from ..checks import check_count, check_in_range, check_seconds, is_whole, quality_or_budget
from ..codec_set import model_name
from ..errors import (ConfigError, EngineDeadError, ImageError, ModelMismatchError, QueueFull, RequestTimeoutError, ResourceError,
                      VlmcodecError, warn_refine_fallback)
from ..image_io import ImageInput, as_rgb_array
from .tokens import check_client_token


MAX_RETRY_WAIT_S = 10.0  # the longest a busy server's Retry-After is obeyed for, per retry
_sleep = time.sleep  # the retries' wait (a name of this module's own, for tests)
# the largest answer taken: a server's largest is a decode to raw pixels of a MAX_DIM² stream (768 MiB),
# an encode's stream and /health's JSON far smaller. A Content-Length above it (a proxy's or another
# service's answer, or a lie) is refused before anything is read: read, it was a MemoryError or OverflowError.
MAX_ANSWER_BYTES = max(1 << 30, 3 * MAX_DIM * MAX_DIM)
_BAD_PATH_CHAR = re.compile(r"[^\x21-\x7e]")  # (http.client refuses these in a request line, at each request)


class RemoteCodec:
    """``url``: ``http://host:port`` or ``https://host:port`` (verified against the system's CAs,
    or ``ssl_context``'s, e.g. ``ssl.create_default_context(cafile="server.pem")`` for a
    self-signed certificate); ``token``: sent as ``Authorization: Bearer`` (a server started
    with ``--auth-token-file``); ``timeout_s``: the most seconds one call's whole exchange, retries
    included, may take (``RequestTimeoutError``); ``retries``: how many times a busy server's 503 or a rate
    limit's 429 is retried before its error is raised (the module's doc)."""

    def __init__(self, url: str = "http://127.0.0.1:8080", timeout_s: float | None = 300.0, retries: int = 2,
                 token: str | None = None, ssl_context: ssl.SSLContext | None = None):
        if not isinstance(url, str):  # (an AttributeError from urlsplit)
            raise ConfigError(f"a server's URL must be a string such as 'http://host:port', got {type(url).__name__}")
        try:
            parts = urlsplit(url)
        except ValueError as e:  # ("Invalid IPv6 URL")
            raise ConfigError(f"expected an http:// or https://host:port URL, got {url!r} ({e})") from None
        if "@" in parts.netloc:  # (not in the message: it would show the password)
            raise ConfigError("a server's URL takes no user:password@ (it would not be sent): give a server's "
                              "token as the token argument")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"expected an http:// or https://host:port URL, got {url!r}")
        if parts.query or parts.fragment:
            raise ConfigError(f"a server's URL takes no query or fragment, got {url!r}")
        try:
            port = parts.port
        except ValueError as e:  # ("Port out of range 0-65535", "Port could not be cast to integer value")
            raise ConfigError(f"expected an http:// or https://host:port URL, got {url!r} ({e})") from None
        if port == 0:
            raise ConfigError(f"a server's port is 1-65535, got 0 in {url!r}")
        if _BAD_PATH_CHAR.search(parts.path):
            raise ConfigError(f"a server's URL path takes no spaces, control or non-ASCII characters "
                              f"(percent-encode them), got {parts.path!r}")
        check_count("retries", retries, least=0)
        check_seconds("timeout_s", timeout_s)  # (else http.client's "Timeout value out of range" at the first call)
        if ssl_context is not None and parts.scheme != "https":
            raise ConfigError("ssl_context needs an https:// URL")
        self._args = (url, timeout_s, retries, token)  # pickling (__reduce__)
        self.url = url.rstrip("/")
        self.host, self.port = parts.hostname, port or (443 if parts.scheme == "https" else 80)
        # a server behind a proxy under a path (http://host/vlmcodec): its endpoints are below it
        self._prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = int(retries)  # of a request a busy server answered 503 QueueFull
        self._https = parts.scheme == "https"
        self._ssl_context = ssl_context
        token = check_client_token(token)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._new_connections()

    def _new_connections(self) -> None:
        """No connection yet (made by this process: _connection)."""
        self._pid = os.getpid()
        self._local = threading.local()
        # every live thread's, for close(); weak, so that a finished thread's goes with it
        self._open: weakref.WeakSet[http.client.HTTPConnection] = weakref.WeakSet()
        self._open_lock = threading.Lock()

    def __repr__(self) -> str:  # (never the token)
        return f"RemoteCodec({self.url!r}, timeout_s={self.timeout_s}, retries={self.retries})"

    def __reduce__(self):
        """Pickled as its URL and settings (worker processes each open their own connections);
        one with an ``ssl_context`` does not pickle (a TypeError says so)."""
        if self._ssl_context is not None:
            raise TypeError("a RemoteCodec with an ssl_context cannot be pickled: make one in each process")
        return (type(self), self._args)

    def close(self) -> None:
        """Close every thread's kept-alive connection (each holds one of the server's
        ``--max-connections`` while open). Call it with no request in flight; a later call
        connects again."""
        self._forget_inherited()
        with self._open_lock:
            conns, self._open = list(self._open), weakref.WeakSet()
        for conn in conns:
            conn.close()

    def __enter__(self) -> RemoteCodec:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def encode(self, image: ImageInput, quality: float | None = None, short_side: int | None = None,
               model: str | bytes | None = None, *, max_bytes: int | None = None, max_bpp: float | None = None,
               refine: int | None = None, priority: int | None = None) -> bytes:
        """Compress ``image`` (uint8 numpy, PIL, or an image file's path — whose bytes are sent
        as they are) to .vlmc bytes on the server at ``quality`` (None: the server's ``-q``);
        ``model``: the fingerprint (hex, ≥ 4 digits) of another model the server holds
        (``serve --extra-model``) instead of its default.
        ``max_bytes`` or ``max_bpp``: rate control instead of ``quality`` (``Codec.encode_to_size``).
        ``refine``: steps of latent refinement (the server allows up to its ``--max-refine``); a
        refined budget met by a one-pass stream issues ``RefineFallbackWarning`` here.
        ``priority``: the request's (None: this client's own on the server, 0 without a token
        that grants one; above it the server answers PermissionError)."""
        data, fallback = self._encode(image, quality, short_side, model, max_bytes=max_bytes, max_bpp=max_bpp,
                                      refine=refine, priority=priority)
        warn_refine_fallback(fallback)
        return data

    def _encode(self, image, quality: float | None = None, short_side: int | None = None,
                model: str | bytes | None = None, *, max_bytes: int | None = None, max_bpp: float | None = None,
                refine: int | None = None, priority: int | None = None) -> tuple[bytes, str | None]:
        """``encode``'s request: the stream, and the server's refine-fallback message or None."""
        quality_or_budget(quality, max_bytes, max_bpp)  # (both: refused here)
        query: dict = {}
        if max_bytes is not None or max_bpp is not None:
            query |= {"max_bytes": max_bytes} if max_bytes is not None else {}
            query |= {"max_bpp": max_bpp} if max_bpp is not None else {}
        elif quality is not None:  # (none: the server's -q, as a request without one gets)
            # sent as the stream will carry it: str() of a numpy float32 (12.345 → "12.345") is
            # another number than its float (12.3450002...), rounded to 12.34 there and 12.35 by Codec
            query = {"quality": repr(quantize_quality(check_in_range("quality", quality, 0, 100)))}
        query |= {"short_side": short_side} if short_side is not None else {}
        query |= {"model": model_name(model)} if model is not None else {}
        if refine is not None and not (is_whole(refine) and refine >= 0):  # (0.0 passed as "none"; the server checks the most)
            raise ConfigError(f"refine must be a whole number of steps, at least 0, got {refine!r}")
        query |= {"refine": int(refine)} if refine else {}
        query |= {"priority": priority} if priority is not None else {}
        if isinstance(image, (str, Path)):
            try:
                body = Path(image).read_bytes()
            except OSError as e:  # as Codec.encode says it (a FileNotFoundError before)
                raise ImageError(f"cannot read image {image}: {e.strerror or e}") from e
        else:  # the pixels as they are: no image file to write here nor to parse there
            arr = as_rgb_array(image)
            body = arr.tobytes()
            query |= {"width": arr.shape[1], "height": arr.shape[0]}
        data, headers = self._post(f"/encode?{urlencode(query)}", body)
        if not data.startswith(MAGIC):  # (its Content-Type left aside: a proxy may rewrite it)
            raise ConnectionError(f"{self.url}: not a vlmcodec server's answer to /encode: not a .vlmc stream "
                                  f"(Content-Type {headers.get('content-type')!r}, {len(data)} bytes: {data[:40]!r})")
        return data, headers.get("x-refine-fallback")

    def decode(self, data: Stream, short_side: int | None = None, *, priority: int | None = None) -> np.ndarray:
        """Decompress .vlmc bytes on the server to a uint8 H×W×3 array (``short_side`` as in
        ``Codec.decode``: a consumer's size, fewer bytes on the wire; ``priority`` as in ``encode``)."""
        # the server checks the values, as encode's (int("abc") here was a ValueError, 2.5 taken as 2)
        query = {"format": "raw"} | ({"short_side": short_side} if short_side is not None else {})
        query |= {"priority": priority} if priority is not None else {}
        # (bytes(5) was five zero bytes sent off, bytes("x") a TypeError)
        payload, headers = self._post(f"/decode?{urlencode(query)}", as_bytes(data))
        try:
            h, w = int(headers["x-image-height"]), int(headers["x-image-width"])
        except (KeyError, ValueError):
            h = w = 0
        if not (h > 0 and w > 0 and h * w * 3 == len(payload)):  # (a -1 was reshape's "whatever fits")
            raise ConnectionError(f"{self.url}: not a vlmcodec server's answer to /decode: its X-Image-Width "
                                  f"{headers.get('x-image-width')!r} and -Height {headers.get('x-image-height')!r} "
                                  f"do not describe its {len(payload)} bytes")
        return np.frombuffer(payload, np.uint8).reshape(h, w, 3).copy()

    def health(self) -> dict:
        """The server's ``GET /health`` answer (its status and models), as a dict."""
        return self._json_object("/health")

    def stats(self) -> dict:
        """The server's ``GET /stats`` answer (its request counts and latencies), as a dict."""
        return self._json_object("/stats")

    def _json_object(self, path: str) -> dict:
        payload = self._request("GET", path, None)[0]
        try:
            answer = json.loads(payload)
        except (ValueError, RecursionError):  # (UnicodeDecodeError and JSONDecodeError are ValueErrors)
            answer = None
        if not isinstance(answer, dict):
            raise ConnectionError(f"{self.url}: not a vlmcodec server's answer to {path}: not a JSON object "
                                  f"({len(payload)} bytes: {payload[:40]!r})")
        return answer

    # -- plumbing ------------------------------------------------------------------------
    def _post(self, path: str, body: bytes) -> tuple[bytes, dict]:
        return self._request("POST", path, body)

    def _request(self, method: str, path: str, body: bytes | None) -> tuple[bytes, dict]:
        from .rate_limit import RateLimited

        # the whole call's, retries included: each attempt had timeout_s afresh, so a call with
        # retries=2 could last about three times it (and the busy waits between)
        deadline = time.monotonic() + self.timeout_s if self.timeout_s is not None else math.inf
        for retry in range(self.retries + 1):
            try:
                return self._request_once(method, path, body, deadline)
            except (QueueFull, RateLimited) as busy:
                wait = min(cast(_Answered, busy).retry_after_s, MAX_RETRY_WAIT_S)
                if retry == self.retries or time.monotonic() + wait >= deadline:  # (no try left in time)
                    raise
                call = getattr(self._local, "call", None)  # an AsyncRemoteCodec call: its cancel ends the wait
                if call is None:
                    _sleep(wait)
                elif call.ended.wait(wait):
                    raise asyncio.CancelledError("the awaiting task was cancelled")
        raise AssertionError("unreachable")

    def _request_once(self, method: str, path: str, body: bytes | None, deadline: float) -> tuple[bytes, dict]:
        # (the deadline bounds the whole exchange: each socket read waited timeout_s afresh, and an
        # answer trickled a byte at a time kept a call going for ever)
        call = getattr(self._local, "call", None)  # an AsyncRemoteCodec call's, whose cancel shuts its socket
        for attempt in (0, 1):  # a kept-alive connection the server closed meanwhile: one fresh try
            conn = self._connection()
            fresh = conn.sock is None
            try:
                conn.timeout = _time_left(deadline)  # (connecting)
                if fresh:
                    # the TLS handshake's reads wait the time left after connecting (they waited
                    # conn.timeout afresh: up to twice the time left in all)
                    conn._create_connection = functools.partial(_connect_by, deadline)  # type: ignore[attr-defined]
                    conn.connect()
                conn.sock.settimeout(_time_left(deadline))  # (sending: sendall's timeout is its total)
                if call is not None:
                    call.use(conn)
                # (typeshed wants a class; http.client only calls it)
                respond = functools.partial(_DeadlineResponse, deadline=deadline)
                conn.response_class = respond  # type: ignore[assignment]
                try:
                    conn.request(method, self._prefix + path, body=body, headers=self._headers)
                except (BrokenPipeError, ConnectionResetError):
                    # the server may have answered before reading the whole body (a 413) and
                    # stopped reading: its answer is still there to read
                    if conn.sock is None:
                        raise
                resp = conn.getresponse()
                payload = _read_answer(resp)
                if call is not None:  # (the exchange is over: a cancel in a retry's wait leaves the connection open)
                    call.use(None)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ssl.SSLEOFError,
                    ssl.SSLZeroReturnError) as e:  # (over TLS, a kept-alive connection the server closed: SSL EOF)
                self._drop(conn)
                # (a new connection failing: sending it all again would fail alike)
                if attempt or fresh or (call is not None and call.cancelled):
                    raise ConnectionError(f"{self.url}: connection lost ({e})") from e
                continue
            except TimeoutError as e:  # connecting, sending or waiting for the answer
                self._drop(conn)
                raise RequestTimeoutError(f"{self.url}: no answer within timeout_s={self.timeout_s} s") from e
            except OSError as e:
                self._drop(conn)
                raise ConnectionError(f"{self.url}: {e}") from e
            except http.client.HTTPException as e:  # an answer that is not HTTP (another service on the port)
                self._drop(conn)
                raise ConnectionError(f"{self.url}: not an HTTP server's answer ({type(e).__name__}: "
                                      f"{str(e)[:100]})") from e
            except BaseException:  # (Ctrl-C, a cancel): the connection is mid-exchange, of no use to the next
                self._drop(conn)
                raise
            if resp.will_close:
                self._drop(conn)
            headers = {k.lower(): v for k, v in resp.getheaders()}
            if resp.status != 200:
                err = _error_of(resp.status, payload)
                answered = cast(_Answered, err)
                # a rate-limited answer says to the millisecond (JSON) what Retry-After rounds up
                precise = answered.answer.get("retry_after_s")
                answered.retry_after_s = (max(0.0, float(precise)) if isinstance(precise, (int, float))
                                          else _seconds(headers.get("retry-after"), default=0.5))
                raise err
            return payload, headers
        raise AssertionError("unreachable")

    def _forget_inherited(self) -> None:
        """In a process forked from the one that connected, its kept-alive sockets are the
        parent's too, and requests of both on one socket would read each other's answers: this
        process's copies are closed (the parent's stay open), without the lock, which a thread of
        the parent may have held at the fork."""
        if self._pid != os.getpid():
            inherited = list(self._open)
            self._new_connections()
            for conn in inherited:
                conn.close()

    def _connection(self) -> http.client.HTTPConnection:
        self._forget_inherited()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._https:
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s,
                                                   context=self._ssl_context or ssl.create_default_context())
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            self._local.conn = conn
            self._local.closer = _CloseAtThreadEnd(conn)
        with self._open_lock:
            self._open.add(conn)  # again after close(): a closed HTTPConnection reconnects when used
        return conn

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = self._local.closer = None
        with self._open_lock:
            self._open.discard(conn)


class _CloseAtThreadEnd:
    """Held in a thread's locals beside its connection: when the thread ends, closes it before the
    connection goes (left to the socket's own finalizer, its ResourceWarning, raised in the dying
    thread, kept ~2 objects per finished thread for good)."""

    __slots__ = ("conn",)

    def __init__(self, conn: http.client.HTTPConnection):
        self.conn = conn

    def __del__(self) -> None:
        self.conn.close()


def _connect_by(deadline: float, address, timeout=None, source_address=None) -> socket.socket:
    """``socket.create_connection``, its socket then given the time left before ``deadline``."""
    sock = socket.create_connection(address, timeout, source_address)
    try:
        sock.settimeout(_time_left(deadline))
    except BaseException:
        sock.close()
        raise
    return sock


def _time_left(deadline: float) -> float | None:
    """The seconds a socket may wait before ``deadline`` (None: no timeout); TimeoutError past it."""
    if deadline == math.inf:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("past the request's deadline")
    return left


class _DeadlineReader(io.RawIOBase):
    """An answer's socket reads, each waiting only the time left before the request's deadline."""

    def __init__(self, raw: io.RawIOBase, sock: socket.socket, deadline: float):
        self._raw, self._sock, self._deadline = raw, sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int | None:
        self._sock.settimeout(_time_left(self._deadline))
        return self._raw.readinto(b)

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()  # (the socket's reference by the answer: http.client closes it so)
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """``http.client``'s answer, read (status line and headers too) within the request's deadline."""

    def __init__(self, sock, *args, deadline: float, **kwargs):
        super().__init__(sock, *args, **kwargs)
        self.fp = io.BufferedReader(_DeadlineReader(self.fp.detach(), sock, deadline))


def _read_answer(resp: http.client.HTTPResponse) -> bytes:
    """The answer's body, at most ``MAX_ANSWER_BYTES`` (ConnectionError, an OSError, above it)."""
    too_long = "a body over MAX_ANSWER_BYTES={} bytes: not a vlmcodec server's answer ({})"
    if resp.length is not None:
        if resp.length > MAX_ANSWER_BYTES:
            raise ConnectionError(too_long.format(MAX_ANSWER_BYTES, f"Content-Length {resp.length}"))
        return resp.read()
    parts, size = [], 0  # chunked, or to the connection's end
    while chunk := resp.read(1 << 20):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise ConnectionError(too_long.format(MAX_ANSWER_BYTES, f"{size} bytes read"))
        parts.append(chunk)
    return b"".join(parts)


def _seconds(text: str | None, default: float) -> float:
    """A Retry-After header's delay in seconds (the HTTP-date form is not used by our server)."""
    try:
        return max(0.0, float(text)) if text is not None else default
    except ValueError:
        return default


class _Answered(Protocol):
    """What an error the server answered carries besides its message (set here, not declared by
    its class): the server's JSON ``answer``, and ``retry_after_s`` (set by ``_request_once``)."""

    answer: dict
    retry_after_s: float


def _error_of(status: int, payload: bytes) -> Exception:
    """The exception the server reported (its JSON ``type``), else one that fits the status."""
    from .. import errors
    from .rate_limit import RateLimited

    try:
        answer = json.loads(payload)
    except (ValueError, RecursionError):  # not JSON
        answer = None
    answer = answer if isinstance(answer, dict) else {}  # (one without "error", a shut-down /health's, kept whole)
    if "error" in answer:
        message, kind = answer["error"], answer.get("type", "")
        kind = kind if isinstance(kind, str) else ""
    else:
        message, kind = payload[:200].decode("utf-8", "replace"), ""
    known = {"TimeoutError": RequestTimeoutError, "QueueFull": QueueFull, "ValueError": ValueError, "TypeError": TypeError,
             "AuthenticationError": PermissionError, "PermissionError": PermissionError, "RateLimited": RateLimited}
    cls = known.get(kind) or getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = {400: errors.ConfigError, 401: PermissionError, 403: PermissionError, 409: ModelMismatchError,
               413: ResourceError, 429: RateLimited, 503: EngineDeadError, 504: RequestTimeoutError}.get(status, VlmcodecError)
    err = cls(f"{message} (HTTP {status})")
    err.answer = answer  # the server's whole JSON answer (a 429's retry_after_s)
    return err


class _Call:
    """One ``AsyncRemoteCodec`` call's hold on the connection its worker thread uses: a cancel
    shuts that socket down, which ends a read or send blocked on it (closing it would not)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self.cancelled = False
        self.ended = threading.Event()  # set by cancel(): a retry's wait ends at once

    def use(self, conn: http.client.HTTPConnection | None) -> None:
        """(the worker, ``conn`` connected) CancelledError once cancelled."""
        with self._lock:
            if self.cancelled and conn is not None:
                raise asyncio.CancelledError("the awaiting task was cancelled")
            self._conn = conn

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            self.ended.set()
            sock = self._conn.sock if self._conn is not None else None
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:  # (closed meanwhile by its worker)
                    pass


class AsyncRemoteCodec:
    """``RemoteCodec``'s calls for asyncio code: ``await remote.encode(...)``. Each call runs the
    blocking client on a worker thread of its own pool (``max_workers`` threads, each keeping its
    own keep-alive connection), so that the event loop never waits on the network, and concurrent
    calls (``asyncio.gather``) reach the server together and are batched there: at most
    ``max_workers`` at once, the others wait for a thread. A cancelled call (``wait_for``, a
    task's ``cancel()``) shuts its connection's socket down, so that its thread does not wait on
    for ``timeout_s``. Takes ``RemoteCodec``'s arguments; ``async with`` closes its connections
    and its threads.

        async with AsyncRemoteCodec("http://gpu-box:8080") as remote:
            streams = await asyncio.gather(*(remote.encode(im, quality=60) for im in images))
    """

    # (RemoteCodec's signatures repeated, not *args / **kwargs: a type checker then catches a
    # misspelt keyword here as it does there)
    def __init__(self, url: str = "http://127.0.0.1:8080", timeout_s: float | None = 300.0, retries: int = 2,
                 token: str | None = None, ssl_context: ssl.SSLContext | None = None, *, max_workers: int = 32):
        self.max_workers = check_count("max_workers", max_workers, least=1)
        self.sync = RemoteCodec(url, timeout_s, retries, token, ssl_context)
        self._pool: ThreadPoolExecutor | None = None  # made at the first call (again after close())

    async def __aenter__(self) -> AsyncRemoteCodec:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections and end the threads (call it with no request in flight; a later
        call starts them again)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)  # (its idle threads end at once)
        self.sync.close()  # (closes sockets: nothing to wait for)

    async def _call(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` on a worker thread, its connection shut down if the awaiting task is cancelled."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="vlmcodec-remote")
        call = _Call()
        local = self.sync._local

        def run():
            local.call = call
            try:
                return fn(*args, **kwargs)
            finally:
                local.call = None
                call.use(None)  # (done: a late cancel leaves the connection alone)

        future = asyncio.get_running_loop().run_in_executor(self._pool, run)
        try:
            return await future
        except asyncio.CancelledError:
            call.cancel()
            raise

    async def encode(self, image: ImageInput, quality: float | None = None, short_side: int | None = None,
                     model: str | bytes | None = None, *, max_bytes: int | None = None,
                     max_bpp: float | None = None, refine: int | None = None, priority: int | None = None) -> bytes:
        """``RemoteCodec.encode``, awaited (a refine fallback's warning is issued here)."""
        data, fallback = await self._call(self.sync._encode, image, quality, short_side, model, max_bytes=max_bytes,
                                          max_bpp=max_bpp, refine=refine, priority=priority)
        warn_refine_fallback(fallback)
        return data

    async def decode(self, data: Stream, short_side: int | None = None, *,
                     priority: int | None = None) -> np.ndarray:
        """``RemoteCodec.decode``, awaited."""
        return await self._call(self.sync.decode, data, short_side, priority=priority)

    async def health(self) -> dict:
        """``RemoteCodec.health``, awaited."""
        return await self._call(self.sync.health)

    async def stats(self) -> dict:
        """``RemoteCodec.stats``, awaited."""
        return await self._call(self.sync.stats)


__all__ = ["AsyncRemoteCodec", "RemoteCodec"]
