"""``vlmcodec serve``: an HTTP front for an :class:`Engine`, on the standard library alone.

    POST /encode?quality=75[&short_side=256]   body: an image file   → application/x-vlmc
    POST /encode?max_bytes=N (or max_bpp=B)    rate control instead of quality (X-Quality: the one found)
    POST /encode?width=W&height=H[&quality=75] body: H×W×3 RGB bytes → application/x-vlmc
    POST /encode?...&refine=K                  K steps of latent refinement (K <= max_refine)
    POST /decode[?format=png|ppm|raw]          body: a .vlmc stream   → the image
    POST ...&priority=P                        higher runs first (P <= the client's own, 0 by default)
    GET  /health                                model, backend, requests in flight (JSON)
    GET  /stats                                 the engine's counters, latency percentiles, answers by status (JSON)
    GET  /metrics                               the same for Prometheus (text exposition format)

Each connection gets a thread (``ThreadingHTTPServer``), which reads the body, hands the request
to the engine and waits for its future: requests that arrive together are batched by the engine,
as in-process callers' are. ``format=raw`` answers the decoded pixels as they are (H×W×3 bytes,
row-major RGB, size in the ``X-Image-Width``/``X-Image-Height`` headers): no PNG to compress, the
fastest for a consumer in the same data centre. Errors answer JSON ``{"error": message, "type":
exception class}`` (``RemoteCodec`` raises that class again): 400 for a
bad image, stream or parameter, 409 for a stream of another model, 411/413 for a missing or too
large body, 503 when the queue is full or the engine is shut down, 504 on a request timeout.

Connections are bounded (``max_connections``, and ``max_connections_per_address`` from one
address): one more is answered 503 at once (``Retry-After``) by a single refusing thread and
closed, so that a flood of clients, idle or not, costs a bounded number of threads and bodies in
memory. ``ssl_context`` serves HTTPS; ``auth_token`` (one token, several, or ``{client name:
token}``, see :mod:`.tokens`) answers 401 to any request but /health without ``Authorization:
Bearer <token>``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import socket
import ssl
import sys
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import cast
from contextlib import contextmanager
from http import HTTPStatus
from http.server import ThreadingHTTPServer

from ..checks import check_count, check_in_range, check_seconds
from ..codec_set import CodecSet
from ..errors import ConfigError, ModelMismatchError
from ..image_io import check_png_level
from ..refine import check_refine_steps
from .engine import Engine
from .forwarded import client_key, plain_address, trusted_networks, trusted_peer
from .http_handler import IMAGE_FORMATS, STREAM_TYPE, HTTPError, RequestHandler, json_log_line
from .metrics import prometheus_text
from .rate_limit import RateLimiter, check_client_limits
from .refusals import answer_503, answer_at_once, refuse_loop
from .tokens import check_client_max_refine, check_client_priorities, token_table

DEFAULT_MAX_BODY = 64 * 2**20
# a connection silent this long (between requests, or in the middle of one) is closed, so that
# idle keep-alive clients do not hold a thread each forever
DEFAULT_IDLE_TIMEOUT = 60.0
# a request's line and headers must arrive within this long of its first byte (its body within
# this plus its length at http_handler.MIN_BODY_RATE): a client trickling them a byte at a time
# inside the idle timeout held its connection for ever
DEFAULT_HEADER_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 128
DEFAULT_MAX_REFINE_PIXELS = 2**20  # 1 Mpx: 13 s of refinement at K = 10 on 2 CPU cores (1024x1024)
# refusals beyond _REFUSAL_BACKLOG waiting for the refusing thread get their 503 from the accepting
# thread if it can be sent at once, without the drain (refusals.answer_at_once), and are closed
# (the refusing thread answers each at once, then drains it for up to refusals.REFUSAL_SECONDS)
_REFUSAL_BACKLOG = 64


class CodecServer(ThreadingHTTPServer):
    """An HTTP server bound to ``(host, port)`` (port 0: any free one, see ``server_port``) that
    serves ``engine``, or several engines of different models (the first is the default of
    /encode; /decode takes each stream to its model's). ``serve_forever()`` runs it;
    ``shutdown()`` then ``server_close()`` stops it (the engines stay the caller's to shut down).

    Its options are ``vlmcodec serve``'s (docs/serving.md says what each does):

    - bounds: ``max_body`` (bytes of a request body), ``max_connections`` (over it: 503 at once),
      ``max_connections_per_address`` (the same from one peer address, a trusted proxy's aside; None: none),
      ``idle_timeout`` and ``header_timeout`` (seconds; None: no bound), ``max_refine`` and
      ``max_refine_pixels`` (encoder-side refinement a request may ask for), ``refine_cost``;
    - defaults of a request: ``quality``, ``png_level`` (of decoded PNGs);
    - clients: ``auth_token`` (one token, several, or {name: token}), ``rate_limit`` and
      ``rate_burst`` (per client), ``client_limits``, ``client_priorities`` and
      ``client_max_refine`` (per token name), ``trusted_proxies`` (whose X-Forwarded-For is read);
    - transport and logs: ``ssl_context`` (HTTPS), ``quiet``, ``log_format`` ("text" or "json").

    A setting it cannot use raises ConfigError here, before anything listens."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog: connections the kernel holds until accepted

    def __init__(self, engine: Engine | Sequence[Engine], host: str = "127.0.0.1", port: int = 8080, *,
                 max_body: int = DEFAULT_MAX_BODY, png_level: int = 1, quiet: bool = True,
                 idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT, quality: float = 75.0,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, ssl_context: ssl.SSLContext | None = None,
                 auth_token: str | Sequence[str] | Mapping[str, str] | None = None,
                 rate_limit: float | None = None, rate_burst: int | None = None,
                 client_limits: Mapping[str, tuple[float, int] | None] | None = None, log_format: str = "text",
                 max_refine: int = 0, trusted_proxies: Sequence[str] | None = None,
                 client_priorities: Mapping[str, int] | None = None,
                 max_refine_pixels: int = DEFAULT_MAX_REFINE_PIXELS,
                 client_max_refine: Mapping[str, int] | None = None, refine_cost: float = 0.0,
                 header_timeout: float | None = DEFAULT_HEADER_TIMEOUT,
                 max_connections_per_address: int | None = None):
        check_count("max_connections", max_connections)
        if max_connections_per_address is not None:
            check_count("max_connections_per_address", max_connections_per_address)
        check_in_range("quality", quality, 0, 100)
        png_level = check_png_level(png_level)
        check_seconds("idle_timeout", idle_timeout)
        check_seconds("header_timeout", header_timeout)
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):  # (failed at each connection)
            raise ConfigError(f"ssl_context must be an ssl.SSLContext, got {type(ssl_context).__name__}")
        engines = [engine] if isinstance(engine, Engine) else list(engine)
        if not engines:
            raise ConfigError("a CodecServer needs at least one Engine")
        # several models: /decode takes each stream to the model that wrote it (its fingerprint),
        # /encode uses the first unless ?model= names another; CodecSet refuses a model given twice
        self.models = CodecSet([e.codec for e in engines])
        self.engines: dict[bytes, Engine] = {e.codec.fingerprint: e for e in engines}
        self.engine = engines[0]
        self.quality = float(quality)  # of an /encode request that gives none
        # the most refinement steps an /encode may ask (?refine=K); 0: none. A refined encode
        # takes seconds (~0.5 s a step at 256 px on 2 CPU cores; README) on the engine's refine workers
        self.max_refine = check_refine_steps(max_refine)
        max_refine_pixels = check_count("max_refine_pixels", max_refine_pixels)
        self.max_refine_pixels = max_refine_pixels  # coded pixels of one refined encode, at most
        # under a rate limit, an /encode?refine=K counts as 1 + refine_cost * K requests (0: as one)
        self.refine_cost = check_in_range("refine_cost", refine_cost, 0, 100, unit="requests per refinement step")
        self.idle_timeout = idle_timeout  # the most one read waits (a keep-alive connection's silence)
        self.header_timeout = header_timeout  # a request's head, from its first byte (None: no bound)
        max_body = check_count("max_body", max_body)  # bytes
        self.max_body = max_body
        self.png_level = png_level
        self.quiet = quiet
        if log_format not in ("text", "json"):
            raise ConfigError(f"log_format must be 'text' or 'json', got {log_format!r}")
        self.log_format = log_format  # the access log: the classic line, or one JSON object a line
        self.max_connections = int(max_connections)
        self.connections = 0  # open now, each with its thread
        self.connections_refused = 0
        # open connections of each peer address (those of trusted proxies not counted: many clients behind one)
        self.max_connections_per_address = max_connections_per_address
        self._by_address: dict[str, int] = {}
        self._address_of: dict[object, str] = {}  # each counted connection's socket → its address
        self._connections_lock = threading.Condition()
        self._handlers: set[RequestHandler] = set()  # the open connections' handlers
        self._closing = False
        self._refusals: queue.Queue = queue.Queue(maxsize=_REFUSAL_BACKLOG)
        # TLS: each accepted socket is wrapped here and its handshake run on its own thread (in
        # the handler's setup, under the idle timeout), never in the accepting loop
        self.ssl_context = ssl_context
        self.set_clients(auth_token, client_limits, client_priorities, client_max_refine)
        self.requests_by_client: dict[str, int] = {}  # requests that carried each client's token
        self._clients_lock = threading.Lock()
        # rate_limit: /encode and /decode requests a second per client (its token's name, else its
        # IP address), rate_burst at once; over it, 429 (rate_limit.py)
        self.rate_limiter = RateLimiter(rate_limit, rate_burst)
        # addresses or networks of reverse proxies whose X-Forwarded-For names the client, for the
        # rate limit of clients without a token and the access log (forwarded.py); none: never read
        self.trusted_proxies = trusted_networks(trusted_proxies)
        self.rate_limited = 0  # requests answered 429
        self.abandoned = 0  # requests whose client hung up while they waited (cancelled if not begun)
        self.rate_limited_by_client: dict[str, int] = {}  # of those, by token name
        # every answer sent, by HTTP status ("200", "503"...): all endpoints, the connection bound's 503s too
        self.responses: dict[str, int] = {}
        if ":" in host:  # an IPv6 address ("::1", "::" for every interface): the socket's family follows it
            self.address_family = socket.AF_INET6
        super().__init__((host, port), RequestHandler)
        # the thread holds the server weakly: a server never closed (a script that just ends) is
        # then not kept alive by a daemon thread frozen at exit, with its codec's native tables
        self._refuser = threading.Thread(target=refuse_loop, args=(self._refusals, weakref.ref(self)),
                                         name="vlmcodec-http-refuse", daemon=True)
        self._refuser.start()
        # a server dropped without server_close(): its refusing thread ends too (it waited for good)
        weakref.finalize(self, _wake_refuser, self._refusals)

    def count_client(self, name: str) -> None:
        """One more request that carried client ``name``'s token (``/stats``, ``/metrics``)."""
        with self._clients_lock:
            self.requests_by_client[name] = self.requests_by_client.get(name, 0) + 1

    def client_counts(self) -> dict[str, int]:
        """Requests admitted by each client's token so far (empty for a server without tokens)."""
        with self._clients_lock:
            return dict(self.requests_by_client)

    def rate_wait(self, client: str | None, address: str, cost: float = 1.0) -> tuple[float, tuple[float, int] | None]:
        """(0.0, limit) when the client (its token's name, else its ``address``) may send a coding
        request now, else (the seconds until it may, the limit that holds it), the request then
        counted as refused. The limit is the client's own, else the server's; None: none.
        ``cost``: the requests this one counts as (``RateLimiter.wait``)."""
        own = self.rate_limiter.limit  # the server's, unless the client has one
        limit = own if client is None else self.client_limits.get(client, own)
        wait = self.rate_limiter.wait(client_key(client, address), limit, cost)
        if wait > 0:
            with self._clients_lock:
                self.rate_limited += 1
                if client:
                    self.rate_limited_by_client[client] = self.rate_limited_by_client.get(client, 0) + 1
        return wait, limit

    def set_clients(self, auth_token, client_limits: Mapping | None = None, client_priorities: Mapping | None = None,
                    client_max_refine: Mapping | None = None) -> None:
        """The tokens and the clients' own options, all checked before any is replaced (a reload
        that fails leaves the ones in force; ConfigError says why), each replaced whole, never
        changed in place (requests read them without a lock).

        - ``auth_token``: every request but /health must carry "Authorization: Bearer <one of
          them>" (one token, several, or {client name: token}; None: no token);
        - ``client_limits``: {name: (rate, burst), or None for no limit}, in place of the server's
          rate limit;
        - ``client_priorities``: {name: P}, the client's requests' default priority and the most
          they may ask (?priority=); 0 for the others;
        - ``client_max_refine``: {name: N}, the most refinement steps the client's encodes may
          ask, in place of ``max_refine``."""
        tokens = token_table(auth_token)
        limits = check_client_limits(client_limits, tokens)
        priorities = check_client_priorities(client_priorities, tokens)
        max_refine = check_client_max_refine(client_max_refine, tokens)
        self.auth_tokens, self.client_limits = tokens, limits
        self.client_priorities, self.client_max_refine = priorities, max_refine

    def count_response(self, status: int) -> None:
        """One more answer sent with HTTP ``status`` (``/stats``' ``responses``, ``/metrics``)."""
        code = str(int(status))
        with self._clients_lock:
            self.responses[code] = self.responses.get(code, 0) + 1

    def response_counts(self) -> dict[str, int]:
        """Answers sent so far by HTTP status, in the order of the codes."""
        with self._clients_lock:
            return dict(sorted(self.responses.items()))

    def count_abandoned(self) -> None:
        with self._clients_lock:
            self.abandoned += 1

    def rate_limited_counts(self) -> tuple[int, dict[str, int]]:
        """Requests answered 429 so far: in all, and by token name."""
        with self._clients_lock:
            return self.rate_limited, dict(self.rate_limited_by_client)

    def engine_for_stream(self, data: bytes) -> Engine:
        """The engine whose model wrote ``data`` (ModelMismatchError when none does)."""
        try:
            return self.engines[self.models.codec_for(data).fingerprint]
        except ModelMismatchError as e:
            raise ModelMismatchError(f"{e} (serve --extra-model MODEL)") from None

    def engine_named(self, prefix: str) -> Engine:
        """The engine whose model fingerprint (hex) starts with ``prefix`` (at least 4 digits)."""
        try:
            return self.engines[self.models.named(prefix).fingerprint]
        except ModelMismatchError as e:
            raise HTTPError(HTTPStatus.NOT_FOUND, str(e), "ModelMismatchError") from None
        except ConfigError as e:
            raise HTTPError(HTTPStatus.BAD_REQUEST, str(e)) from None

    @property
    def url(self) -> str:
        host, port = cast("tuple[str, int]", self.server_address[:2])  # (an IP socket's)
        host = f"[{host}]" if ":" in host else host  # an IPv6 address, bracketed as URLs write it
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
                if self.log_format == "json":
                    sys.stderr.write(json_log_line(plain_address(client_address[0]), {
                        "level": "error", "message": f"connection ended: {err}"}))
                else:
                    sys.stderr.write(f"{plain_address(client_address[0])} - connection ended: {err}\n")
            return
        super().handle_error(request, client_address)

    # -- the connection bound ---------------------------------------------------------------
    def process_request(self, request, client_address) -> None:
        socket_peer = str(client_address[0]) if isinstance(client_address, tuple) and client_address else ""
        peer = plain_address(socket_peer)
        counted = self.max_connections_per_address is not None and not trusted_peer(socket_peer, self.trusted_proxies)
        with self._connections_lock:
            refusal = self._refusal(peer if counted else None)
            if refusal is None:
                self.connections += 1
                if counted:
                    self._by_address[peer] = self._by_address.get(peer, 0) + 1
                    self._address_of[request] = peer
            else:
                self.connections_refused += 1
        if refusal is not None:
            answer = answer_503(refusal)
            try:
                self._refusals.put_nowait((request, answer))
            except queue.Full:  # (a burst the refusing thread has not caught up with)
                answer_at_once(request, answer, self)
            return
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self._release(request)
            raise

    def _refusal(self, peer: str | None) -> str | None:
        """(Under the lock.) Why a new connection (from ``peer``, when its address is counted) is
        refused, or None when it is admitted."""
        if self.connections >= self.max_connections:
            return f"server busy: {self.max_connections} connections open (--max-connections); retry later"
        cap = self.max_connections_per_address
        if peer is not None and cap is not None and self._by_address.get(peer, 0) >= cap:
            return (f"too many connections from {peer}: {cap} open (--max-connections-per-address); close one "
                    "or retry later")
        return None

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _release(self, request) -> None:
        with self._connections_lock:
            self.connections -= 1
            peer = self._address_of.pop(request, None)
            if peer is not None:
                left = self._by_address[peer] - 1
                if left:
                    self._by_address[peer] = left
                else:
                    del self._by_address[peer]
            self._connections_lock.notify_all()

    def server_close(self, drain_s: float = 30.0) -> None:
        """Stop listening and close the connections: idle keep-alive ones (and those whose
        request head is still arriving) at once, those with a request in flight once it is
        answered, waiting up to ``drain_s`` seconds for them, then ended whatever they do, so that
        no connection is served after the server is closed."""
        super().server_close()
        with self._connections_lock:
            self._closing = True
            idle = [h for h in self._handlers if not h.busy]
        _end_connections(idle)  # each thread, waiting for a next request line, reads the end and returns
        with self._connections_lock:
            self._connections_lock.wait_for(lambda: self.connections == 0, timeout=drain_s)
            late = list(self._handlers)
        _end_connections(late)  # still reading a request or answering one after drain_s
        while True:  # refusals still waiting are closed unanswered; then the refusing thread ends
            try:
                item = self._refusals.get_nowait()
            except queue.Empty:
                try:
                    self._refusals.put_nowait(None)
                    break
                except queue.Full:  # filled meanwhile (serve_forever still running): drain again
                    continue
            if item is not None:
                self.shutdown_request(item[0])


def _end_connections(handlers) -> None:
    """Shut each handler's connection both ways: its thread's read or write ends at once."""
    for handler in handlers:
        try:
            handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _wake_refuser(refusals: queue.Queue) -> None:
    """Ends the refusing thread of a server gone: a None, or, with its queue full, the next refusal
    it takes finds the server gone (never a blocking put in a finalizer)."""
    with contextlib.suppress(queue.Full):
        refusals.put_nowait(None)


# servers serve_in_thread started, for the interpreter's exit (_stop_served): server -> the
# process serving it
_served: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _stop_served() -> None:
    """At the interpreter's exit, stop every server serve_in_thread left serving in this process
    and close its connections: their daemon threads would otherwise be frozen holding the server,
    its engines and their codecs (whose rANS tables nanobind then reports as leaked). A process
    forked from the serving one leaves them alone (shutdown() would wait there for ever for a
    serving loop that runs in the parent)."""
    for server, pid in list(_served.items()):
        if pid != os.getpid():
            continue
        try:
            server.shutdown()
            server.server_close(drain_s=1.0)
        except Exception:  # (exiting: nothing to report to)
            pass


atexit.register(_stop_served)  # registered after the engines' own: runs before it


def serve_in_thread(server: CodecServer) -> threading.Thread:
    """Run ``server`` on a daemon thread (tests, notebooks); stop it with ``server.shutdown()``
    (a server still serving when the interpreter exits is stopped then)."""
    # (shutdown() waits for the loop's next look: 0.5 s by default, 0.34 s a stop on average)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="vlmcodec-http",
                              daemon=True)
    thread.start()
    _served[server] = os.getpid()
    return thread


@contextmanager
def running_server(engine: Engine | Sequence[Engine], host: str = "127.0.0.1", port: int = 0,
                   **options) -> Iterator[CodecServer]:
    """A ``CodecServer`` (``options``) for ``engine`` (or engines), serving on a thread (tests,
    notebooks, benchmarks; port 0: a free one, ``server.url``); on leaving, the server shuts down
    (answering what is in flight), then the engines. A server that cannot start shuts the
    engines down too."""
    engines = [engine] if isinstance(engine, Engine) else list(engine)
    try:
        server = CodecServer(engines, host, port, **options)
    except BaseException:
        for each in engines:
            each.shutdown()
        raise
    serve_in_thread(server)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        for each in engines:
            each.shutdown()


__all__ = ["CodecServer", "running_server", "serve_in_thread", "prometheus_text", "STREAM_TYPE", "IMAGE_FORMATS"]
