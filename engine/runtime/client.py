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
idempotent. An error the server answered carries its whole JSON answer as ``.answer``.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import ssl
import threading
import time
import weakref
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np

from ..bitstream.container import as_bytes
from ..checks import check_count, check_seconds, quality_or_budget
from ..errors import (ConfigError, EngineDeadError, ImageError, ModelMismatchError, QueueFull, RequestTimeoutError, ResourceError,
                      VlmcodecError, warn_refine_fallback)
from ..image_io import as_rgb_array
from .tokens import check_client_token


MAX_RETRY_WAIT_S = 10.0  # the longest a busy server's Retry-After is obeyed for, per retry
_sleep = time.sleep  # the retries' wait (a name of this module's own, for tests)


class RemoteCodec:
    """``url``: ``http://host:port`` or ``https://host:port`` (verified against the system's CAs,
    or ``ssl_context``'s, e.g. ``ssl.create_default_context(cafile="server.pem")`` for a
    self-signed certificate); ``token``: sent as ``Authorization: Bearer`` (a server started
    with ``--auth-token-file``)."""

    def __init__(self, url: str = "http://127.0.0.1:8080", timeout_s: float = 300.0, retries: int = 2,
                 token: str | None = None, ssl_context: ssl.SSLContext | None = None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"expected an http:// or https://host:port URL, got {url!r}")
        if parts.query or parts.fragment:
            raise ConfigError(f"a server's URL takes no query or fragment, got {url!r}")
        check_count("retries", retries, least=0)
        check_seconds("timeout_s", timeout_s)  # (else http.client's "Timeout value out of range" at the first call)
        if ssl_context is not None and parts.scheme != "https":
            raise ConfigError("ssl_context needs an https:// URL")
        self._args = (url, timeout_s, retries, token)  # pickling (__reduce__)
        self.url = url.rstrip("/")
        self.host, self.port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
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

    def encode(self, image, quality: float | None = None, short_side: int | None = None, model: str | None = None,
               *, max_bytes: int | None = None, max_bpp: float | None = None, refine: int | None = None,
               priority: int | None = None) -> bytes:
        """Compress ``image`` (uint8 numpy, PIL, or an image file's path — whose bytes are sent
        as they are) to .vlmc bytes on the server; ``model``: the fingerprint (hex, ≥ 4 digits) of
        another model the server holds (``serve --extra-model``) instead of its default.
        ``max_bytes`` or ``max_bpp``: rate control instead of ``quality`` (``Codec.encode_to_size``).
        ``refine``: steps of latent refinement (the server allows up to its ``--max-refine``); a
        refined budget met by a one-pass stream issues ``RefineFallbackWarning`` here.
        ``priority``: the request's (None: this client's own on the server, 0 without a token
        that grants one; above it the server answers PermissionError)."""
        data, fallback = self._encode(image, quality, short_side, model, max_bytes=max_bytes, max_bpp=max_bpp,
                                      refine=refine, priority=priority)
        warn_refine_fallback(fallback)
        return data

    def _encode(self, image, quality: float | None = None, short_side: int | None = None, model: str | None = None,
                *, max_bytes: int | None = None, max_bpp: float | None = None, refine: int | None = None,
                priority: int | None = None) -> tuple[bytes, str | None]:
        """``encode``'s request: the stream, and the server's refine-fallback message or None."""
        quality = quality_or_budget(quality, max_bytes, max_bpp)
        if max_bytes is not None or max_bpp is not None:
            query: dict = {"max_bytes": max_bytes} if max_bytes is not None else {}
            query |= {"max_bpp": max_bpp} if max_bpp is not None else {}
        else:
            query = {"quality": quality}
        query |= {"short_side": short_side} if short_side is not None else {}
        query |= {"model": model} if model is not None else {}
        query |= {"refine": refine} if refine else {}
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
        return data, headers.get("x-refine-fallback")

    def decode(self, data: bytes, short_side: int | None = None, *, priority: int | None = None) -> np.ndarray:
        """Decompress .vlmc bytes on the server to a uint8 H×W×3 array (``short_side`` as in
        ``Codec.decode``: a consumer's size, fewer bytes on the wire; ``priority`` as in ``encode``)."""
        # the server checks the values, as encode's (int("abc") here was a ValueError, 2.5 taken as 2)
        query = {"format": "raw"} | ({"short_side": short_side} if short_side is not None else {})
        query |= {"priority": priority} if priority is not None else {}
        # (bytes(5) was five zero bytes sent off, bytes("x") a TypeError)
        payload, headers = self._post(f"/decode?{urlencode(query)}", as_bytes(data))
        try:
            h, w = int(headers["x-image-height"]), int(headers["x-image-width"])
            return np.frombuffer(payload, np.uint8).reshape(h, w, 3).copy()
        except (KeyError, ValueError) as e:  # (a KeyError, or numpy's "cannot reshape")
            raise ConnectionError(f"{self.url}: not a vlmcodec server's answer to /decode: its X-Image-Width and "
                                  f"-Height do not describe its {len(payload)} bytes ({e!r})") from None

    def health(self) -> dict:
        return json.loads(self._request("GET", "/health", None)[0])

    def stats(self) -> dict:
        return json.loads(self._request("GET", "/stats", None)[0])

    # -- plumbing ------------------------------------------------------------------------
    def _post(self, path: str, body: bytes) -> tuple[bytes, dict]:
        return self._request("POST", path, body)

    def _request(self, method: str, path: str, body: bytes | None) -> tuple[bytes, dict]:
        from .rate_limit import RateLimited

        for retry in range(self.retries + 1):
            try:
                return self._request_once(method, path, body)
            except (QueueFull, RateLimited) as busy:
                if retry == self.retries:
                    raise
                _sleep(min(busy.retry_after_s, MAX_RETRY_WAIT_S))
        raise AssertionError("unreachable")

    def _request_once(self, method: str, path: str, body: bytes | None) -> tuple[bytes, dict]:
        for attempt in (0, 1):  # a kept-alive connection the server closed meanwhile: one fresh try
            conn = self._connection()
            fresh = conn.sock is None
            try:
                try:
                    conn.request(method, self._prefix + path, body=body, headers=self._headers)
                except (BrokenPipeError, ConnectionResetError):
                    # the server may have answered before reading the whole body (a 413) and
                    # stopped reading: its answer is still there to read
                    if conn.sock is None:
                        raise
                resp = conn.getresponse()
                payload = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self._drop(conn)
                if attempt or fresh:  # (a new connection failing: sending it all again would fail alike)
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
            if resp.will_close:
                self._drop(conn)
            headers = {k.lower(): v for k, v in resp.getheaders()}
            if resp.status != 200:
                err = _error_of(resp.status, payload)
                # a rate-limited answer says to the millisecond (JSON) what Retry-After rounds up
                precise = err.answer.get("retry_after_s")
                err.retry_after_s = (max(0.0, float(precise)) if isinstance(precise, (int, float))
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


def _seconds(text: str | None, default: float) -> float:
    """A Retry-After header's delay in seconds (the HTTP-date form is not used by our server)."""
    try:
        return max(0.0, float(text)) if text is not None else default
    except ValueError:
        return default


def _error_of(status: int, payload: bytes) -> Exception:
    """The exception the server reported (its JSON ``type``), else one that fits the status."""
    from .. import errors
    from .rate_limit import RateLimited

    try:
        answer = json.loads(payload)
        message, kind = answer["error"], answer.get("type", "")
    except (ValueError, KeyError, TypeError):  # not JSON, or not an object with "error"
        answer, message, kind = {}, payload[:200].decode("utf-8", "replace"), ""
    known = {"TimeoutError": RequestTimeoutError, "QueueFull": QueueFull, "ValueError": ValueError, "TypeError": TypeError,
             "AuthenticationError": PermissionError, "PermissionError": PermissionError, "RateLimited": RateLimited}
    cls = known.get(kind) or getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = {400: errors.ConfigError, 401: PermissionError, 403: PermissionError, 409: ModelMismatchError,
               413: ResourceError, 429: RateLimited, 503: EngineDeadError, 504: RequestTimeoutError}.get(status, VlmcodecError)
    err = cls(f"{message} (HTTP {status})")
    err.answer = answer  # the server's whole JSON answer (a 429's retry_after_s)
    return err


class AsyncRemoteCodec:
    """``RemoteCodec``'s calls for asyncio code: ``await remote.encode(...)``. Each call runs the
    blocking client on a worker thread (``asyncio.to_thread``; each thread keeps its own
    keep-alive connection), so that the event loop never waits on the network, and concurrent
    calls (``asyncio.gather``) reach the server together and are batched there. Takes
    ``RemoteCodec``'s arguments; ``async with`` closes its connections.

        async with AsyncRemoteCodec("http://gpu-box:8080") as remote:
            streams = await asyncio.gather(*(remote.encode(im, quality=60) for im in images))
    """

    def __init__(self, *args, **kwargs):
        self.sync = RemoteCodec(*args, **kwargs)

    async def __aenter__(self) -> AsyncRemoteCodec:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def encode(self, image, quality: float | None = None, short_side: int | None = None, model: str | None = None,
                     **options) -> bytes:
        """``RemoteCodec.encode``, awaited (a refine fallback's warning is issued here)."""
        data, fallback = await asyncio.to_thread(self.sync._encode, image, quality, short_side, model, **options)
        warn_refine_fallback(fallback)
        return data

    async def decode(self, data: bytes, short_side: int | None = None, **options) -> np.ndarray:
        """``RemoteCodec.decode``, awaited."""
        return await asyncio.to_thread(self.sync.decode, data, short_side, **options)

    async def health(self) -> dict:
        return await asyncio.to_thread(self.sync.health)

    async def stats(self) -> dict:
        return await asyncio.to_thread(self.sync.stats)


__all__ = ["AsyncRemoteCodec", "RemoteCodec"]
