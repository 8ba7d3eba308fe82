"""Per-client rate limits for ``vlmcodec serve`` (``--rate-limit``): a token bucket per client.

Each client (the name its bearer token carries, or its IP address on a server without tokens)
may send ``burst`` coding requests at once and ``rate`` a second after that; a request over the
limit is answered 429 with ``Retry-After`` (the seconds until the bucket holds one again) and
never reaches the engine. One client flooding the server then cannot fill the queue that the
others share (the queue's own bound, ``--max-queue``, answers 503 to everyone alike). A client's
line in the token file may set its own limit, or none (``tokens.read_token_file``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import cast

from ..checks import check_count
from ..errors import ConfigError, VlmcodecError

MAX_CLIENTS = 10_000  # buckets kept, the least recently used dropped past it: IP keys are unbounded
MIN_RATE = 1e-6  # requests a second (one in ~12 days): below it the waits are not numbers one can say
Limit = tuple[float, int]  # (requests a second, burst)
DEFAULT = object()  # RateLimiter.wait's "the limiter's own limit"


class RateLimited(VlmcodecError, RuntimeError):
    """The client sent requests faster than the server's ``--rate-limit``; ``retry_after_s`` says
    when the next one will be admitted."""

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


def check_rate(rate: float | str | None, burst: int | None) -> tuple[float, int] | None:
    """(rate, burst) validated, burst defaulting to one second's worth (at least 1); None for
    no limit (``rate`` None); ``rate`` may be text (a token file's ``rate=``). ConfigError for a
    rate that is not a positive number or a burst below 1."""
    if rate is None:
        if burst is not None:
            raise ConfigError("a rate burst needs a rate limit (--rate-limit)")
        return None
    try:
        if isinstance(rate, bool):  # (True was a rate of 1 a second)
            raise TypeError
        rate = float(rate)
    except (TypeError, ValueError):
        raise ConfigError(f"the rate limit must be a number of requests per second, got {rate!r}") from None
    if not math.isfinite(rate) or rate < MIN_RATE:
        raise ConfigError(f"the rate limit must be a number of requests per second of at least {MIN_RATE:g}, "
                          f"got {rate}")
    if burst is None:
        burst = max(1, math.ceil(rate))
    return rate, check_count("the rate burst", burst)


def check_client_limits(limits: Mapping[str, Limit | None] | None,
                        tokens: Mapping[str, str] | None) -> dict[str, Limit | None]:
    """Clients' own limits validated: each a client the tokens name, with a (rate, burst) as
    ``check_rate`` takes them (burst may be None) or None (no limit). ConfigError otherwise."""
    from .tokens import check_client_option

    return check_client_option("a rate limit", limits, tokens, _checked_limit)


def _checked_limit(limit) -> Limit | None:
    if limit is None:
        return None
    try:
        rate, burst = limit
    except (TypeError, ValueError):
        raise ConfigError(f"a limit is (requests a second, burst) or None, got {limit!r}") from None
    return check_rate(rate, burst)


class RateLimiter:
    """Token buckets, one per client key, each holding up to ``burst`` requests and refilling at
    ``rate`` a second (a client may have a limit of its own: ``wait(key, limit)``). Thread-safe.
    ``rate`` None: no limit but the clients' own. ``clock``: seconds, monotonic (fake in tests)."""

    def __init__(self, rate: float | None, burst: int | None = None, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = MAX_CLIENTS):
        self.limit: Limit | None = check_rate(rate, burst)
        self._clock = clock
        self._max_clients = check_count("max_clients", max_clients)
        # key -> (requests held, when, its limit), least recently used first
        self._buckets: OrderedDict[str, tuple[float, float, Limit]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def rate(self) -> float | None:
        return self.limit[0] if self.limit else None

    @property
    def burst(self) -> int | None:
        return self.limit[1] if self.limit else None

    def wait(self, key: str, limit: Limit | None | object = DEFAULT, cost: float = 1.0) -> float:
        """0.0 when ``key`` may send a request now (and it is counted), else the seconds until it
        may (nothing is counted: a refused request costs the client nothing). ``limit``: this
        client's own (rate, burst), or None for none; by default the limiter's. ``cost``: how many
        requests this one counts as (a refined encode may count more), at most the burst, so that
        it is admitted once the bucket is full."""
        limit = self.limit if limit is DEFAULT else cast("Limit | None", limit)
        if limit is None:
            return 0.0
        rate, burst = limit
        cost = min(max(float(cost), 1.0), float(burst))
        now = self._clock()
        with self._lock:
            held, then, _ = self._buckets.get(key, (float(burst), now, limit))
            held = min(float(burst), held + (now - then) * rate)  # a lowered burst takes effect at once
            admitted = held >= cost
            self._buckets[key] = (held - cost if admitted else held, now, limit)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self._max_clients:
                # the client idle longest is forgotten (it starts again with a full bucket): O(1) a
                # request, where sweeping for refilled buckets scanned the whole table under the lock
                # each time none had refilled (a slow rate, or many addresses at once)
                self._buckets.popitem(last=False)
            return 0.0 if admitted else (cost - held) / rate

    @property
    def clients(self) -> int:
        """Clients with a bucket now (not ``__len__``: an empty limiter must stay truthy)."""
        with self._lock:
            return len(self._buckets)
