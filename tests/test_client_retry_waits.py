"""``RemoteCodec``'s waits between retries of a busy server's answers (the Retry-After cap, a
missing or a negative wait), and the tries it does not make: a fresh connection closed without an
answer, an ``AsyncRemoteCodec`` call cancelled in its wait; and a 413 answered while the body was
still being sent. Fake servers on 127.0.0.1, the client's ``_sleep`` recorded instead of slept."""

import asyncio
import socket
import threading
import time

import pytest

import vlmcodec.runtime.client as client_module
from vlmcodec.errors import ResourceError
from vlmcodec.runtime import AsyncRemoteCodec, RemoteCodec

from test_client_robustness import OK, _answer, _answering, _FakeServer, _read_request

QUEUE_FULL = b'{"error": "queue full", "type": "QueueFull"}'


def _busy(extra: str = "", body: bytes = QUEUE_FULL, status: str = "503 Service Unavailable") -> bytes:
    return _answer(body, status, extra=extra)


def _recorded_waits(monkeypatch, sleep: bool = False) -> list[float]:
    """The waits the client asks of ``_sleep`` between retries, recorded (and slept when ``sleep``)."""
    waits: list[float] = []
    monkeypatch.setattr(client_module, "_sleep", lambda s: (waits.append(s), sleep and time.sleep(s)))
    return waits


def _noticed_retry_wait(monkeypatch) -> threading.Event:
    """Set once an AsyncRemoteCodec call begins waiting to retry (its cancel can then land there)."""
    waiting = threading.Event()

    class _NoticedEvent(threading.Event):
        def wait(self, timeout=None):
            waiting.set()
            return super().wait(timeout)

    class _NoticedCall(client_module._Call):
        def __init__(self):
            super().__init__()
            self.ended = _NoticedEvent()

    monkeypatch.setattr(client_module, "_Call", _NoticedCall)
    return waiting


def test_a_retry_after_beyond_the_cap_is_waited_for_max_retry_wait_s(monkeypatch):
    """A 503 asking for more than MAX_RETRY_WAIT_S is retried after MAX_RETRY_WAIT_S."""
    waits = _recorded_waits(monkeypatch)
    busy = _busy(f"Retry-After: {3 * client_module.MAX_RETRY_WAIT_S:g}\r\n")
    with _answering(busy, _answer(OK)) as fake, RemoteCodec(fake.url, timeout_s=60, retries=1) as remote:
        assert remote.health() == {"status": "ok"}
    assert waits == [client_module.MAX_RETRY_WAIT_S]


def test_a_busy_answer_without_a_usable_retry_after_waits_half_a_second(monkeypatch):
    """A 503 without Retry-After, or with one that is not a number, is retried after 0.5 s."""
    waits = _recorded_waits(monkeypatch)
    answers = (_busy(), _busy("Retry-After: soon\r\n"), _answer(OK))
    with _answering(*answers) as fake, RemoteCodec(fake.url, timeout_s=60, retries=2) as remote:
        assert remote.health() == {"status": "ok"}
    assert waits == [0.5, 0.5]


def test_a_negative_json_retry_after_s_is_waited_as_zero(monkeypatch):
    """A 429 whose JSON retry_after_s is negative is retried at once (that value, not its
    Retry-After header), without the sleep's ValueError."""
    waits = _recorded_waits(monkeypatch, sleep=True)
    limited = _busy("Retry-After: 3\r\n", b'{"error": "over the limit", "type": "RateLimited", "retry_after_s": -2.5}',
                    "429 Too Many Requests")
    with _answering(limited, _answer(OK)) as fake, RemoteCodec(fake.url, timeout_s=60, retries=1) as remote:
        assert remote.health() == {"status": "ok"}
    assert waits == [0.0]


def test_a_fresh_connection_closed_without_an_answer_is_not_tried_again():
    """A new connection the server closes without answering raises ConnectionError at once: only a
    kept-alive connection gets a second, fresh try."""
    served: list[int] = []

    def hang_up(sock, n):
        if _read_request(sock) is not None:
            served.append(n)
        sock.shutdown(socket.SHUT_RDWR)

    with (_FakeServer(hang_up) as fake, RemoteCodec(fake.url, timeout_s=30, retries=2) as remote,
          pytest.raises(ConnectionError, match="connection lost")):
        remote.health()
    assert served == [0]


def test_a_413_answered_while_the_body_is_still_sent_is_read():
    """A server that answers 413 and closes without reading the body breaks the client's send;
    the client reads the answer all the same and raises its ResourceError."""
    too_large = _answer(b'{"error": "body too large", "type": "ResourceError"}', "413 Content Too Large",
                        extra="Connection: close\r\n")

    def answer_early(sock, n):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                return
            head += chunk
        sock.sendall(too_large)
        sock.close()  # (the body left unread: the client's send is reset)

    with (_FakeServer(answer_early) as fake, RemoteCodec(fake.url, timeout_s=30, retries=0) as remote,
          pytest.raises(ResourceError, match="HTTP 413")):
        remote.decode(bytes(32 << 20))


@pytest.mark.parametrize("closes, connections", [(True, [0, 1]), (False, [0, 0])], ids=["closed", "kept-alive"])
def test_an_async_call_cancelled_in_its_retry_wait_makes_no_further_try(monkeypatch, closes, connections):
    """An AsyncRemoteCodec call cancelled while it waits to retry a 503 ends in that wait: its
    thread opens no new connection for a retry (the next call's request is the second connection
    the server sees after a 503 that closed its own), and a kept-alive connection, its exchange
    over, stays open for the thread's next call (the cancel shut it down, and the next call found
    it dead and connected again)."""
    waiting = _noticed_retry_wait(monkeypatch)
    served: list[int] = []
    busy = _busy("Retry-After: 8\r\n" + ("Connection: close\r\n" if closes else ""))

    def handle(sock, n):
        while _read_request(sock) is not None:
            served.append(n)
            sock.sendall(busy if len(served) == 1 else _answer(OK))

    async def go(url: str) -> None:
        async with AsyncRemoteCodec(url, timeout_s=30, retries=2, max_workers=1) as remote:
            first = asyncio.ensure_future(remote.health())
            assert await asyncio.to_thread(waiting.wait, 20)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            assert await asyncio.wait_for(remote.health(), 20) == {"status": "ok"}

    with _FakeServer(handle) as fake:
        asyncio.run(go(fake.url))
    assert served == connections, served
