"""Overlapping file I/O with coding, for commands that run over many files.

Reading the next image and writing the last decoded one (a PNG of a Kodak image takes about as
long to compress as the image takes to decode) run on one background thread each while the
caller's thread codes; results are reported in input order. At most one file is read ahead and
``max_pending`` writes wait, so memory stays bounded whatever the number of files.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def read_ahead(items: Sequence[T], load: Callable[[T], R]) -> Iterator[tuple[T, Future]]:
    """Yield ``(item, future of load(item))`` in order; the next item loads on a background
    thread while the caller works on the current one. ``future.result()`` re-raises what the
    load raised, so a caller handles each item's error where it handles the item."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlmcodec-read") as pool:
        ahead = pool.submit(load, items[0])
        try:
            for i, item in enumerate(items):
                current = ahead
                if i + 1 < len(items):
                    ahead = pool.submit(load, items[i + 1])
                yield item, current
        finally:
            ahead.cancel()  # an abandoned loop (an error, Ctrl-C) does not read on


class WriteBehind:
    """Run writes on one background thread; ``then(error_or_None)`` is called on the caller's
    thread, in submission order, once each write has ended.

    ``submit`` returns at once unless more than ``max_pending`` writes wait, in which case it first
    finishes the oldest. Leaving the ``with`` block finishes every write (or, after an exception,
    cancels those not started and waits for the running one)."""

    def __init__(self, max_pending: int = 1):
        if max_pending < 0:
            raise ValueError("max_pending must be >= 0")
        self.max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlmcodec-write")
        self._pending: deque[tuple[Future, Callable[[BaseException | None], None]]] = deque()

    def submit(self, write: Callable[[], object], then: Callable[[BaseException | None], None]) -> None:
        self._pending.append((self._pool.submit(write), then))
        while len(self._pending) > self.max_pending:
            self._finish_oldest()

    def drain(self) -> None:
        """Finish every write submitted so far (their ``then`` run here)."""
        while self._pending:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        future, then = self._pending.popleft()
        try:
            future.result()
        except Exception as e:  # noqa: BLE001 — the write's own error goes to its callback
            then(e)
        else:
            then(None)

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.drain()
        finally:
            for future, _ in self._pending:
                future.cancel()
            self._pending.clear()
            self._pool.shutdown(wait=True)
