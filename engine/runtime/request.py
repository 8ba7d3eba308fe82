"""Requests in flight: what a client submitted (kind, payload, options), its future, and the
state the scheduler and workers update as it moves through the stages."""

from __future__ import annotations

import enum
import itertools
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

_ids = itertools.count()


class Kind(enum.Enum):
    ENCODE = "encode"
    DECODE = "decode"


class Status(enum.IntEnum):
    """Life of a request; everything >= FINISHED_OK is final."""

    WAITING = 0        # accepted, entropy-decoding (decode) or queued for the networks
    SCHEDULED = 1      # in a batch on the networks
    CODING = 2         # entropy coding (encode)
    FINISHED_OK = 10
    FINISHED_ERROR = 11
    FINISHED_CANCELLED = 12
    FINISHED_TIMEOUT = 13

    @property
    def finished(self) -> bool:
        return self >= Status.FINISHED_OK


@dataclass(eq=False)
class InflightRequest:
    """A request inside the engine. ``key`` groups requests that can share a batch. ``arrival``:
    when it was last queued for the networks (the batching delay runs from it; a decode's comes
    after its entropy decode); ``submitted``: when it was submitted (its latency runs from it)."""

    kind: Kind
    key: tuple
    payload: Any                 # encode: (array, quality); decode: DecodedLatent
    future: Future
    arrival: float
    deadline: float | None
    id: int = field(default_factory=lambda: next(_ids))
    status: Status = Status.WAITING
    budget: int | None = None    # encode with rate control: the stream's size limit in bytes
    short_side: int | None = None  # decode at a consumer's scale (Codec.decode's short_side)
    refine: int = 0              # encode with this many steps of latent refinement (Codec.encode's refine)
    priority: int = 0            # higher runs first among the batches ready (Scheduler)
    owner: str | None = None     # who asked (a server's client): refined encodes are shared between owners
    submitted: float = field(init=False)

    def __post_init__(self) -> None:
        self.submitted = self.arrival  # made at submit: set once, where arrival moves on at each queueing
