"""The batching policy, as pure CPU logic (no threads, no networks): tested on its own.

Requests are grouped by priority and key (kind and padded image size). A group is ready when
it holds ``max_batch`` requests or its oldest request has waited ``max_delay`` seconds; of the
ready groups, those of the highest priority go first, and among them the one whose head arrived
first (FIFO across groups, so no size starves). Priority is strict: a lower one runs when no
higher one is ready, so bulk traffic sent at a low priority takes the capacity that interactive
traffic leaves, and waits while that traffic keeps the networks busy.

A request whose deadline passes while it waits is taken out (``pop_expired``) when its deadline
comes (``next_deadline``), not when its group's turn does.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque

from ..checks import MAX_SECONDS, check_count, check_number
from .request import InflightRequest


class Scheduler:
    """The requests waiting for the networks, grouped into batches (the module's policy):
    ``max_batch`` requests at most per batch, ``max_delay`` seconds (the Engine's
    ``max_delay_ms`` / 1000) at most for a group's oldest request to wait for its batch to fill.
    Not thread-safe: the Engine calls it under its lock."""

    def __init__(self, max_batch: int, max_delay: float):
        self.max_batch = check_count("max_batch", max_batch)
        self.max_delay = check_number("max_delay", max_delay, most=MAX_SECONDS)
        self._groups: OrderedDict[tuple, deque[InflightRequest]] = OrderedDict()
        # (deadline, id) of the requests queued with one; those that left the queue meanwhile (in
        # a batch) stay until they come up, then are skipped. Ids, not requests: an entry must not
        # keep a finished request's pixels alive until its deadline
        self._deadlines: list[tuple[float, int]] = []
        self._queued: dict[int, InflightRequest] = {}  # every queued request by id (its size: the queue's)

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, req: InflightRequest) -> None:
        self._groups.setdefault((req.priority, req.key), deque()).append(req)
        self._queued[req.id] = req
        if req.deadline is not None:
            heapq.heappush(self._deadlines, (req.deadline, req.id))
            if len(self._deadlines) > 2 * len(self._queued) + 64:
                # mostly entries of requests gone in batches, kept below one that waits (a low
                # priority starved by strict priority): rebuilt from the queue, amortised O(1)
                self._deadlines = [(r.deadline, r.id) for r in self._queued.values() if r.deadline is not None]
                heapq.heapify(self._deadlines)

    def _ready(self, q: deque, now: float, force: bool) -> bool:
        return force or len(q) >= self.max_batch or now - q[0].arrival >= self.max_delay

    def pop_batch(self, now: float, force: bool = False) -> list[InflightRequest] | None:
        """The next batch to run, or None if no group is ready at ``now``."""
        best_key: tuple | None = None
        best_rank: tuple[int, float] | None = None
        for key, q in self._groups.items():
            if not q:
                continue
            rank = (-key[0], q[0].arrival)  # the highest priority, then the oldest head
            if self._ready(q, now, force) and (best_rank is None or rank < best_rank):
                best_key, best_rank = key, rank
        if best_key is None:
            return None
        q = self._groups[best_key]
        batch = [q.popleft() for _ in range(min(self.max_batch, len(q)))]
        if not q:
            del self._groups[best_key]
        for r in batch:
            del self._queued[r.id]
        return batch

    def remove(self, req: InflightRequest) -> bool:
        """Take ``req`` out of the queue (a request its client cancelled); False if not queued."""
        if req.id not in self._queued:
            return False
        key = (req.priority, req.key)
        q = self._groups[key]
        q.remove(req)
        if not q:
            del self._groups[key]
        del self._queued[req.id]
        return True

    def _drop_left(self) -> None:
        """Forget the deadlines of requests no longer queued, at the heap's top."""
        while self._deadlines and self._deadlines[0][1] not in self._queued:
            heapq.heappop(self._deadlines)

    def next_deadline(self) -> float | None:
        """The earliest deadline of a queued request (None when none has one)."""
        self._drop_left()
        return self._deadlines[0][0] if self._deadlines else None

    def pop_expired(self, now: float) -> list[InflightRequest]:
        """Remove and return the queued requests whose deadline is before ``now``."""
        expired = []
        while self.next_deadline() is not None and self._deadlines[0][0] < now:
            _, rid = heapq.heappop(self._deadlines)
            req = self._queued[rid]
            self.remove(req)  # (linear in its group; a timeout is the exception)
            expired.append(req)
        return expired

    def next_due(self) -> float | None:
        """Earliest time at which some group becomes ready by delay (None when empty)."""
        heads = [q[0].arrival for q in self._groups.values() if q]
        return min(heads) + self.max_delay if heads else None

    def drain_all(self) -> list[InflightRequest]:
        """Remove and return every waiting request."""
        out = [r for q in self._groups.values() for r in q]
        self._groups.clear()
        self._deadlines.clear()
        self._queued.clear()
        return out
