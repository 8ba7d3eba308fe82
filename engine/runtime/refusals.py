"""The connection bounds' refusals (``CodecServer(max_connections=,
max_connections_per_address=)``): one thread answers each connection over a bound with 503 as it
comes, then reads and drops what its client sends until the client closes or ``REFUSAL_SECONDS``
pass (closing a socket with unread data resets the connection, and the client would see a reset
instead of the answer). The connections are drained
together, through a selector: one that stays silent no longer holds up the answers of the next
(each waited its turn, up to a second per silent one before it)."""

from __future__ import annotations

import json
import queue
import selectors
import socket
import ssl
import time
import weakref
from http import HTTPStatus
from typing import cast

# a refused connection is drained this long at most, then closed
REFUSAL_SECONDS = 1.0
# connections drained at once at most: one more is answered and closed without its drain
_MOST_DRAINING = 256
# how often the refusing thread looks at its connections while some are being drained
_POLL_SECONDS = 0.02
_NOTHING_NEW = object()


class _Refused:
    """A refused connection: what of its answer is still to send, and until when it is drained."""

    __slots__ = ("sock", "fd", "out", "deadline", "handshake")

    def __init__(self, sock: socket.socket, answer: bytes, deadline: float) -> None:
        self.sock, self.fd, self.out, self.deadline = sock, sock.fileno(), answer, deadline
        self.handshake = isinstance(sock, ssl.SSLSocket)  # (TLS: the answer goes after the handshake)


def answer_503(message: str) -> bytes:
    """The whole answer to a connection over a bound, ``message`` its error."""
    body = (json.dumps({"error": message, "type": "QueueFull"}) + "\n").encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
    return head + body


def answer_at_once(sock: socket.socket, answer: bytes, server) -> None:
    """A refusal the refusing thread has no room for: its 503 sent if it goes out at once (not
    over TLS, which needs a handshake first), counted, and the connection closed, without the
    drain (a client still sending may see a reset instead)."""
    try:
        if not isinstance(sock, ssl.SSLSocket):
            sock.setblocking(False)
            if sock.send(answer) == len(answer):
                server.count_response(HTTPStatus.SERVICE_UNAVAILABLE)
                sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        sock.close()


def refuse_loop(refusals: queue.Queue, server_ref: weakref.ref) -> None:
    """The refusing thread: answers each (connection, its answer) ``refusals`` brings until a None
    (or the server is gone); those still being drained then are closed."""
    selector = selectors.DefaultSelector()
    draining: dict[int, _Refused] = {}
    try:
        while True:
            try:
                item = refusals.get(timeout=_POLL_SECONDS) if draining else refusals.get()
            except queue.Empty:
                item = _NOTHING_NEW
            if item is None:
                return
            if item is not _NOTHING_NEW:
                sock, answer = cast(tuple[socket.socket, bytes], item)
                if not _start(sock, answer, selector, draining, server_ref):
                    return
            for key, _ in selector.select(0):
                _step(key.data, selector, draining, server_ref)
            now = time.monotonic()
            for refused in [r for r in draining.values() if r.deadline <= now]:
                _close(refused, selector, draining)
    finally:
        for refused in list(draining.values()):
            _close(refused, selector, draining)
        selector.close()


def _start(sock: socket.socket, answer: bytes, selector: selectors.BaseSelector, draining: dict,
           server_ref: weakref.ref) -> bool:
    """A newly refused connection: registered to be drained and taken as far as it goes at once;
    False (and closed) when the server is gone."""
    if server_ref() is None:
        sock.close()
        return False
    try:
        refused = _Refused(sock, answer, time.monotonic() + REFUSAL_SECONDS)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, refused)
    except (OSError, ValueError):  # (the client left already)
        sock.close()
        return True
    if len(draining) >= _MOST_DRAINING:
        refused.deadline = 0.0  # (answered if it can be at once, then closed)
    draining[refused.fd] = refused
    _step(refused, selector, draining, server_ref)
    return True


def _step(refused: _Refused, selector: selectors.BaseSelector, draining: dict, server_ref: weakref.ref) -> None:
    """Take ``refused`` as far as it goes without waiting: its handshake, its answer (counted in
    the server's ``responses`` once sent), then what its client has sent; closed at its end."""
    sock = refused.sock
    try:
        if refused.handshake:
            sock.do_handshake()  # type: ignore[attr-defined]
            refused.handshake = False
        if refused.out:
            refused.out = refused.out[sock.send(refused.out):]
            if refused.out:
                selector.modify(sock, selectors.EVENT_WRITE, refused)
                return
            server = server_ref()
            if server is not None:
                server.count_response(HTTPStatus.SERVICE_UNAVAILABLE)
            del server
            sock.shutdown(socket.SHUT_WR)
            selector.modify(sock, selectors.EVENT_READ, refused)
        for _ in range(16):  # (then the others' turn: a client sending fast does not hold the thread)
            if not sock.recv(2**16):
                _close(refused, selector, draining)
                return
    except ssl.SSLWantWriteError:
        selector.modify(sock, selectors.EVENT_WRITE, refused)
    except ssl.SSLWantReadError:  # (a handshake's, or TLS wanting to read before it can send)
        selector.modify(sock, selectors.EVENT_READ, refused)
    except BlockingIOError:  # the answer's send (its buffer full), or nothing yet to read
        selector.modify(sock, selectors.EVENT_WRITE if refused.out else selectors.EVENT_READ, refused)
    except OSError:  # the client left (a reset, a failed handshake): nothing more to answer
        _close(refused, selector, draining)


def _close(refused: _Refused, selector: selectors.BaseSelector, draining: dict) -> None:
    draining.pop(refused.fd, None)
    try:
        selector.unregister(refused.sock)
    except (KeyError, ValueError, OSError):
        pass
    refused.sock.close()
