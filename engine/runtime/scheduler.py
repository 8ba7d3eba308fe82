"""The batching policy, as pure CPU logic (no threads, no networks): tested on its own.

Requests are grouped by priority and key (kind and padded image size). A group is ready when
it holds ``max_batch`` requests or its oldest request has waited ``max_delay`` seconds; of the
ready groups, those of the highest priority go first, and among them the one whose head arrived
first (FIFO across groups, so no size starves). Priority is strict: a lower one runs when no
higher one is ready, so bulk traffic sent at a low priority takes the capacity that interactive
traffic leaves, and waits while that traffic keeps the networks busy.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from ..checks import check_count, check_number
from .request import InflightRequest


class Scheduler:
    def __init__(self, max_batch: int, max_delay: float):
        self.max_batch = check_count("max_batch", max_batch)
        self.max_delay = check_number("max_delay", max_delay)
        self._groups: OrderedDict[tuple, deque[InflightRequest]] = OrderedDict()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, req: InflightRequest) -> None:
        self._groups.setdefault((req.priority, req.key), deque()).append(req)
        self._count += 1

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
        self._count -= len(batch)
        return batch

    def next_due(self) -> float | None:
        """Earliest time at which some group becomes ready by delay (None when empty)."""
        heads = [q[0].arrival for q in self._groups.values() if q]
        return min(heads) + self.max_delay if heads else None

    def drain_all(self) -> list[InflightRequest]:
        """Remove and return every waiting request."""
        out = [r for q in self._groups.values() for r in q]
        self._groups.clear()
        self._count = 0
        return out
