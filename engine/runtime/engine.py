"""``Engine``: serves encode/decode requests for one ``Codec`` with dynamic batching.

    with Engine(max_batch=8, max_delay_ms=5) as engine:
        fut = engine.submit_encode(image, quality=60)   # concurrent.futures.Future[bytes]
        data = fut.result()
        img = await engine.decode(data)                 # asyncio

Threads: the caller validates its request; one scheduler thread forms batches (requests of
one kind and padded size, up to ``max_batch`` or ``max_delay_ms``: by default 0 on the CPU
backends, which run a batch's items one at a time, 5 ms where whole batches run) whenever one of
``network_workers`` threads is free to run its networks; a pool of ``workers`` threads does
the entropy coding (the C++ coder releases the GIL), so the coding of one batch overlaps the
networks of the next. Decode streams are entropy-decoded by the pool as soon as they arrive,
then batched for the synthesis network. Encodes with latent refinement (``refine`` steps, a
request's or the codec's) run whole, one image at a time, on their own ``refine_workers``
threads: a refinement takes seconds, and meanwhile the network worker and the coding pool keep
serving the fast requests; the refine workers take the highest-priority refined encode waiting,
shared between the requests' owners (a server's clients) within a priority.

On a CPU, ``network_workers=os.cpu_count()`` with ``intra_op_threads=1`` (which calls
``torch.set_num_threads(1)`` for the whole process) runs several requests side by side on
single-threaded kernels instead of one request on multi-threaded kernels; on CUDA keep one
network worker per GPU. ``intra_op_threads`` sets torch's threads only: an onnxruntime
backend's sessions keep the threads its ``Codec(threads=...)`` gave them (None: one per core),
so give such a codec ``threads=1`` (README, "Runtime").

Results are byte-identical to ``Codec.encode`` / ``Codec.decode`` one at a time on backends
that run a batch's items one at a time (``backend.item_by_item``: torch and onnxruntime on the
CPU); on CUDA whole batches run and the encoder's float rounding may vary with the batch. A bad
request (unreadable image, corrupt stream, timeout, cancellation) fails its own future and
nothing else. At most ``max_queue`` requests are in flight; beyond that ``submit_*`` blocks
(``block=True``) or raises ``QueueFull``. ``warmup(samples)`` pre-runs the batch shapes a server
will see, so that no live request pays a backend's first run at a shape.
"""

from __future__ import annotations

import asyncio
import atexit
import bisect
import functools
import itertools
import math
import os
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, cast, overload

import numpy as np

from .. import memory, rate_control, resample
from ..bitstream import container
from ..checks import (MAX_SECONDS, check_count, check_number, check_seconds, check_switch, check_threads, is_switch,
                      is_whole, quality_or_budget)
from ..codec import Codec, check_batch
from ..errors import (BitstreamError, ConfigError, EngineDeadError, MemoryBusyError,  # noqa: F401 (QueueFull: here too)
                      QueueFull, RequestError, RequestTimeoutError, ResourceError, VlmcodecError, warn_refine_fallback)
from ..image_io import ImageInput, padded_size
from .request import InflightRequest, Kind, Status
from .scheduler import Scheduler


LATENCY_WINDOW = 1024
# the kinds latency is kept for: refined encodes apart, their seconds would swamp the encodes' tail
LATENCY_KINDS = ("encode", "decode", "refine")
# upper bounds (s) of the cumulative latency histogram: a small image's encode is milliseconds,
# a refined or very large one many seconds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _drop_if_cancelled(engine_ref, req_ref, fut: Future) -> None:
    """A queued request's done-callback: one cancelled leaves its engine's queue."""
    engine, req = engine_ref(), req_ref()
    if fut.cancelled() and engine is not None and req is not None:
        engine._drop_cancelled(req)


class EncodeFuture(Future[bytes]):
    """``Engine.submit_encode``'s future: .vlmc bytes, and ``warning`` (see there)."""

    def __init__(self) -> None:
        super().__init__()
        self.warning: str | None = None


@dataclass
class _LatencyTotals:
    """Every successful request of a kind since the start: the count per bucket (+Inf last) and the
    sum of the seconds."""

    counts: list[int]
    total: float = 0.0


PRIORITY_RANGE = (-100, 100)
# threads of an engine's pool for its async calls' submits (image checks and conversion, a
# short_side downscale, a full queue's wait), off the event loop's thread
SUBMIT_THREADS = 4
WHOLE_BATCH_DELAY_MS = 5.0


def default_max_delay_ms(codec: Codec) -> float:
    """How long a request waits for others to batch with, by default: 0 on a backend that runs a
    batch's items one at a time (the CPU backends), where a batch saves nothing and the wait
    would be pure latency (batches still form from what queues while the networks are busy);
    ``WHOLE_BATCH_DELAY_MS`` where whole batches run (CUDA, TensorRT)."""
    return 0.0 if getattr(codec.backend, "item_by_item", False) else WHOLE_BATCH_DELAY_MS


def check_priority(priority) -> int:
    """A request's priority: an int in ``PRIORITY_RANGE`` (higher runs first; 0 the default)."""
    lo, hi = PRIORITY_RANGE
    if not is_whole(priority) or not lo <= priority <= hi:
        raise ConfigError(f"priority must be an int in [{lo}, {hi}] (higher runs first), got {priority!r}")
    return int(priority)


def _percentiles(ordered: list[float]) -> dict[str, float | int]:
    """Nearest-rank percentiles of an ascending list."""
    if not ordered:
        return {}
    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]
    return {"count": len(ordered), "p50_s": rank(50), "p90_s": rank(90), "p99_s": rank(99), "max_s": ordered[-1]}


# engines not shut down yet, for the interpreter's exit (_shut_down_live_engines)
_live_engines: weakref.WeakSet = weakref.WeakSet()


def _shut_down_live_engines() -> None:
    """At the interpreter's exit, shut down every engine the program left running: its queued
    requests fail with EngineDeadError instead of vanishing with its daemon thread, and its threads
    release the codec (whose rANS tables nanobind otherwise reports, ten lines of "leaked")."""
    for engine in list(_live_engines):
        try:
            engine.shutdown(drain=False, timeout_s=5.0)
        except Exception:  # (exiting: nothing to report to)
            pass


atexit.register(_shut_down_live_engines)


class Engine:
    """Serves one ``Codec``'s encodes and decodes with dynamic batching (the module's doc).

    ``codec``: the ``Codec`` served (None: ``Codec()``; for a ``CodecSet``'s models, one Engine
    per codec, as ``vlmcodec serve`` does); ``max_batch``: the most requests in one network batch;
    ``max_delay_ms``: how long a batch waits to fill (None: 0 on the CPU backends, 5 where whole
    batches run); ``workers``: entropy-coding threads; ``network_workers``: threads running the
    networks; ``intra_op_threads``: torch's threads, set for the whole process (None: unchanged);
    ``max_queue``: the most requests in flight; ``block``: beyond it ``submit_*`` waits (True) or
    raises ``QueueFull``; ``timeout_s``: a request's default deadline (None: none);
    ``refine_workers``: threads running the encodes with latent refinement.
    """

    def __init__(self, codec: Codec | None = None, *, max_batch: int = 8, max_delay_ms: float | None = None,
                 workers: int = 2, network_workers: int = 1, intra_op_threads: int | None = None,
                 max_queue: int = 256, block: bool = True, timeout_s: float | None = None,
                 refine_workers: int = 1):
        for name, value in (("max_batch", max_batch), ("workers", workers), ("network_workers", network_workers),
                            ("refine_workers", refine_workers), ("max_queue", max_queue)):
            check_count(name, value)
        if codec is not None and not isinstance(codec, Codec):  # (an AttributeError at the first request)
            raise ConfigError(f"Engine takes a Codec (or None: the default model), got {type(codec).__name__}; "
                              "for a model path or a CodecSet's models: one Engine per Codec")
        if max_delay_ms is not None:
            max_delay_ms = check_number("max_delay_ms", max_delay_ms, most=MAX_SECONDS * 1000)
        timeout_s = check_seconds("timeout_s", timeout_s)
        if intra_op_threads is not None:
            from ..torch_threads import set_torch_threads

            set_torch_threads(check_threads("intra_op_threads", intra_op_threads))  # process-wide: the module's doc
        self.codec = codec if codec is not None else Codec()
        self.max_queue = int(max_queue)
        self.block = check_switch("block", block)  # ("no" blocked)
        self.timeout_s = timeout_s
        if max_delay_ms is None:
            max_delay_ms = default_max_delay_ms(self.codec)
        self.max_delay_ms = float(max_delay_ms)
        self._sched = Scheduler(max_batch, self.max_delay_ms / 1000.0)
        self._cv = threading.Condition()
        self._own_threads: set[int] = set()  # its workers' thread idents (shutdown from one of them)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vlmcodec-coder",
                                        initializer=_note_thread, initargs=(self._own_threads,))
        self._net_pool = ThreadPoolExecutor(max_workers=network_workers, thread_name_prefix="vlmcodec-net",
                                            initializer=_note_thread, initargs=(self._own_threads,))
        self._net_slots = int(network_workers)
        # resolves the futures of requests the loop fails at their deadline: their done-callbacks
        # must not run on the loop (a callback that waited for another request stalled batching)
        self._resolver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlmcodec-resolve",
                                            initializer=_note_thread, initargs=(self._own_threads,))
        self.refine_workers = int(refine_workers)
        self._refine_pool: ThreadPoolExecutor | None = None  # made by the first refined encode
        self._submit_pool: ThreadPoolExecutor | None = None  # the async calls' submits, made by the first
        self._refine_waiting: list[InflightRequest] = []  # refined encodes without a worker yet
        self._decoding: dict[int, InflightRequest] = {}  # decodes waiting for a coding thread
        self._refine_running: Counter = Counter()  # owner → refined encodes it has running
        self._refine_turn: dict = {}  # owner → when one of its refined encodes last started
        self._refine_starts = itertools.count()
        self._net_busy = 0
        self._warming = False     # a warm-up waits for (then holds) every network worker
        self._inflight = 0
        self._closed = False      # no new requests
        self._loop_failure: str | None = None  # why the batching loop died, if it did (a bug)
        self._draining = False    # finish what is queued, then stop
        self._stopped = False
        self._pid = os.getpid()  # its threads live in this process alone (_check_process)
        # finished under the lock, resolved once it is let go (_finishing): (future, result, error)
        self._unresolved: list[tuple[Future, object, BaseException | None]] = []
        self._lock_depth = threading.local()
        self.stats = {"batches": 0, "batched_items": 0, "ok": 0, "failed": 0, "max_batch_seen": 0, "refined": 0}
        # seconds from submit to result of the last LATENCY_WINDOW successful requests, per kind
        self._latencies: dict[str, deque[float]] = {kind: deque(maxlen=LATENCY_WINDOW) for kind in LATENCY_KINDS}
        # and of every successful request since the start
        self._latency_totals = {kind: _LatencyTotals([0] * (len(LATENCY_BUCKETS) + 1)) for kind in LATENCY_KINDS}
        self._thread = threading.Thread(target=self._loop, name="vlmcodec-engine", daemon=True)
        self._thread.start()
        _live_engines.add(self)

    # -- client side ---------------------------------------------------------------------
    def submit_encode(self, image: ImageInput, quality: float | None = None, timeout_s: float | None = None,
                      short_side: int | None = None, *, max_bytes: int | None = None,
                      max_bpp: float | None = None, refine: int | None = None, priority: int = 0,
                      owner: str | None = None) -> EncodeFuture:
        """Queue one image; the future resolves to .vlmc bytes (or the request's error).

        ``short_side`` as in ``Codec.encode`` (None: the codec's setting). ``max_bytes`` or
        ``max_bpp``: rate control instead of ``quality``, as ``Codec.encode_to_size`` (such requests
        batch g_a with each other; each search then runs on the coding pool). ``refine``: steps of
        latent refinement (None: the codec's ``refine``), run on the refine workers. The future's
        ``warning`` is None, or the message of the ``RefineFallbackWarning`` that
        ``Codec.encode_to_size`` would issue (a refined budget met by a one-pass stream).
        ``priority``: higher runs first among the batches ready, and among the refined encodes
        waiting for a refine worker (strictly). ``owner``: who asked (a server passes its client's
        name); within a priority the refine workers go to the owner with the fewest refined encodes
        running, then to the one served longest ago, FIFO within an owner — so one owner's
        hundred refined encodes do not hold another's one behind them."""
        fut = EncodeFuture()
        budget = None
        try:
            steps = self.codec.refine_steps(refine)
            priority = check_priority(priority)
            timeout_s = check_seconds("timeout_s", timeout_s)
            quality = quality_or_budget(quality, max_bytes, max_bpp)
            if owner is not None and not isinstance(owner, str):  # (a list failed on a refine worker: a hang)
                raise ConfigError(f"owner must be None or a name (str), got {owner!r:.80}")
            prep = self.codec.prepare(image, quality, short_side)
            if isinstance(image, np.ndarray) and np.may_share_memory(prep.pixels, image):
                # the caller's own pixels: a buffer it fills again (a capture loop) was coded as it was
                # when the batch ran, every queued frame as the last (other inputs are copies already)
                prep = prep._replace(pixels=prep.pixels.copy())
            if max_bytes is not None or max_bpp is not None:
                budget = rate_control.budget_bytes(prep.size[1], prep.size[0], max_bytes, max_bpp)
        except Exception as e:  # the bad request fails alone, with the codec's clear error
            fut.set_exception(e)
            return fut
        self._admit()
        now = time.monotonic()
        key = (Kind.ENCODE, padded_size(*prep.pixels.shape[:2]), budget is not None)
        req = InflightRequest(Kind.ENCODE, key, prep, fut, now, self._deadline(now, timeout_s), budget=budget,
                              refine=steps, priority=priority, owner=owner)
        if steps:
            self._submit_refined(req)
        else:
            self._enqueue(req)
        return fut

    def submit_decode(self, data: container.Stream, timeout_s: float | None = None, short_side: int | None = None, *,
                      priority: int = 0) -> Future[np.ndarray]:
        """Queue one stream; the future resolves to a uint8 H×W×3 array (or the request's error).

        ``short_side`` as in ``Codec.decode`` (None: the original size); ``priority`` as in
        ``submit_encode``."""
        fut: Future = Future()
        try:
            data = container.as_bytes(data)
            side = resample.call_short_side(short_side)  # 0: the original size, as None
            priority = check_priority(priority)
            timeout_s = check_seconds("timeout_s", timeout_s)
        except BitstreamError as e:  # StreamTypeError: a BitstreamError and a TypeError
            fut.set_exception(e)
            return fut
        except ValueError as e:
            fut.set_exception(e)
            return fut
        self._admit()
        now = time.monotonic()
        req = InflightRequest(Kind.DECODE, (), bytes(data), fut, now, self._deadline(now, timeout_s), short_side=side,
                              priority=priority)
        with self._cv:  # (the loop fails it at its deadline, a cancel takes it out, while it waits)
            self._decoding[req.id] = req
            self._cv.notify_all()
        self._watch_cancel(req)
        self._submit_coding(self._entropy_decode, req)
        return fut

    async def encode(self, image: ImageInput, quality: float | None = None, timeout_s: float | None = None,
                     short_side: int | None = None, *, max_bytes: int | None = None,
                     max_bpp: float | None = None, refine: int | None = None, priority: int = 0,
                     owner: str | None = None) -> bytes:
        """``submit_encode``, awaited (``owner`` too: refined encodes are shared fairly between
        owners); a refined budget met by a one-pass stream issues ``RefineFallbackWarning`` here,
        as ``Codec.encode_to_size`` does."""
        fut = cast(EncodeFuture, await self._submit_off_loop(
            self.submit_encode, image, quality, timeout_s, short_side, max_bytes=max_bytes, max_bpp=max_bpp,
            refine=refine, priority=priority, owner=owner))
        data = await asyncio.wrap_future(fut)
        warn_refine_fallback(fut.warning)
        return data

    async def decode(self, data: container.Stream, timeout_s: float | None = None, short_side: int | None = None, *,
                     priority: int = 0) -> np.ndarray:
        """``submit_decode``, awaited."""
        return await asyncio.wrap_future(await self._submit_off_loop(self.submit_decode, data, timeout_s, short_side,
                                                                     priority=priority))

    async def _submit_off_loop(self, submit: Callable[..., Future], *args, **kwargs) -> Future:
        """``submit(*args, **kwargs)`` on a thread of the engine's submit pool, awaited: the
        caller's part of a request (validating and converting the image, a ``short_side``
        downscale: 0.1-0.5 s for a 12 MP input; a full queue's wait for room) ran on the event
        loop's thread, stalling every other coroutine (and ``wait_for``) meanwhile. A task cancelled
        while its submit runs cancels the request the submit then makes."""
        loop = asyncio.get_running_loop()
        called_off = threading.Event()

        def run() -> Future:
            fut = submit(*args, **kwargs)
            if called_off.is_set():  # (cancelled meanwhile: its loop may be gone by now)
                fut.cancel()
            return fut

        try:
            pending = loop.run_in_executor(self._submit_threads(), run)
        except RuntimeError as e:  # (the pool shut down under us)
            raise EngineDeadError(f"engine is shut down ({e})") from None
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            called_off.set()
            pending.add_done_callback(_cancel_submitted)  # (a submit that returned before the flag)
            raise

    def _submit_threads(self) -> ThreadPoolExecutor:
        """The async calls' submit pool, made on first use (not the engine's own threads: a
        submit may wait there for room in the queue)."""
        self._check_process()
        with self._cv:
            if self._closed:
                raise EngineDeadError("engine is shut down; create a new Engine")
            if self._submit_pool is None:
                self._submit_pool = ThreadPoolExecutor(max_workers=SUBMIT_THREADS, thread_name_prefix="vlmcodec-submit")
            return self._submit_pool

    @overload
    def encode_many(self, images: Iterable[ImageInput], quality: float | None = ..., *, window: int | None = ...,
                    return_exceptions: Literal[False] = ..., **options) -> Iterator[bytes]: ...

    @overload
    def encode_many(self, images: Iterable[ImageInput], quality: float | None = ..., *, window: int | None = ...,
                    return_exceptions: bool, **options) -> Iterator[bytes | BaseException]: ...

    def encode_many(self, images: Iterable[ImageInput], quality: float | None = None, *, window: int | None = None,
                    return_exceptions: bool = False, **options) -> Iterator[bytes | BaseException]:
        """Encode an iterable of images, yielding their streams in input order: images are taken
        lazily and at most ``window`` (default ``2 · max_batch``, at most ``max_queue``) are in
        flight, so that a long stream of images batches without all of them in memory.
        ``options``: ``submit_encode``'s (``short_side``, ``max_bytes``, ``refine``,
        ``priority``...). An image's error is raised at its place (the requests still in flight
        are cancelled), or yielded instead of its stream with ``return_exceptions=True``."""
        check_batch(images, "encode_many", "submit_encode")
        return self._many(lambda image: self.submit_encode(image, quality, **options), images, window,
                          return_exceptions)

    @overload
    def decode_many(self, streams: Iterable, *, window: int | None = ..., return_exceptions: Literal[False] = ...,
                    **options) -> Iterator[np.ndarray]: ...

    @overload
    def decode_many(self, streams: Iterable, *, window: int | None = ..., return_exceptions: bool,
                    **options) -> Iterator[np.ndarray | BaseException]: ...

    def decode_many(self, streams: Iterable, *, window: int | None = None, return_exceptions: bool = False,
                    **options) -> Iterator[np.ndarray | BaseException]:
        """``encode_many`` for decoding: uint8 H×W×3 arrays in input order (``options``:
        ``submit_decode``'s ``short_side``, ``priority``...)."""
        check_batch(streams, "decode_many", "submit_decode")
        return self._many(lambda data: self.submit_decode(data, **options), streams, window, return_exceptions)

    def _many(self, submit, items: Iterable, window: int | None, return_exceptions: bool) -> Iterator:
        limit = min(2 * self._sched.max_batch, self.max_queue) if window is None else check_count("window", window)

        def results() -> Iterator:
            pending: deque[Future] = deque()
            failure: Exception | None = None
            try:
                it = iter(items)
                while True:
                    try:
                        pending.append(submit(next(it)))
                    except StopIteration:
                        break
                    except Exception as e:  # noqa: BLE001 — the input failed, or the engine shut down:
                        failure = e  # the items before it are yielded first (they were cancelled)
                        break
                    if len(pending) >= limit:
                        yield _outcome(pending.popleft(), return_exceptions)
                while pending:
                    yield _outcome(pending.popleft(), return_exceptions)
                if failure is not None:
                    raise failure
            finally:  # an error raised, or the caller stopped early: nothing left running for nobody
                for fut in pending:
                    fut.cancel()

        return results()

    def warmup(self, images, quality: float = 75.0, batch_sizes=None, short_side: int | None = None,
               decode: bool = True, refine: bool = False) -> list[dict]:
        """Run the networks at each batch size for each sample image's size, before traffic.

        A backend's first run at a batch shape can be far slower than the next (onnxruntime
        grows its memory arena then: 24 s instead of 2.5 s for 8 Kodak images whole on this
        project's VM, where fresh memory is slow), and so can a thread's first run (its
        allocator's memory); a server would otherwise pay that on live requests. Each shape
        runs on every network worker at once (a barrier makes them distinct threads), as under
        load. ``images``: one image or a list, one per coded size the traffic will bring (only
        their sizes matter); ``batch_sizes``: default ``max_batch`` and 1 where the backend runs
        a batch's items one at a time (the CPU backends: a batch size is no new shape), else
        every size from ``max_batch`` down to 1 (largest first, so an arena grows once). A
        batch that would not fit in memory is skipped and reported, as serving would run it one
        request at a time. Called under traffic, each shape waits for the running batches to
        end and holds every network worker while it runs (requests queue meanwhile). ``refine``:
        also one refined encode (1 step) per coded size on a refine worker, whose first run
        costs ~1 s more than the next (the teacher's and autograd's first passes). Returns one
        record per (mode, coded size, batch size): wall seconds or the skip reason.
        """
        for name, value in (("decode", decode), ("refine", refine)):
            if not is_switch(value):  # ("false" would be true)
                raise ConfigError(f"{name} must be True or False, got {value!r}")
        self._check_process()
        if self._closed:
            raise EngineDeadError("engine is shut down; create a new Engine")
        samples = list(images) if isinstance(images, (list, tuple)) else [images]
        if not samples:
            raise ConfigError("warmup needs at least one sample image")
        top = self._sched.max_batch
        default = (top, 1) if getattr(self.codec.backend, "item_by_item", False) else range(1, top + 1)
        if batch_sizes is not None and (isinstance(batch_sizes, (str, bytes)) or not isinstance(batch_sizes, Iterable)):
            raise ConfigError(f"batch_sizes must be a list of whole numbers, got {batch_sizes!r}")  # ("12": 1, 2)
        sizes = sorted({check_count("batch_sizes' items", n, least=0) for n in (batch_sizes or default)}, reverse=True)
        if sizes[-1] < 1 or sizes[0] > top:
            raise ConfigError(f"batch sizes must lie in 1..max_batch={top}, got {sizes}")
        seen, records = set(), []
        for image in samples:
            prep = self.codec.prepare(image, quality, short_side)
            key = padded_size(*prep.pixels.shape[:2])
            if key in seen:
                continue
            seen.add(key)
            latent = None
            if decode:
                y, z = self.codec.analyse([prep.pixels], [prep.quality], refine=0)
                # (its memory is checked per batch size below, where a batch that does not fit is skipped)
                latent = self.codec.entropy_decode(self.codec.entropy_encode(y[0], z[0], prep), check_memory=False)
            for n in sizes:
                jobs: list[tuple[str, Callable[..., object]]] = [
                    ("encode", lambda n=n, p=prep: self.codec.analyse([p.pixels] * n, [p.quality] * n, refine=0))]
                if latent is not None:
                    jobs.append(("decode", lambda n=n, lat=latent: self.codec.synthesize([lat] * n)))
                for mode, job in jobs:
                    record = {"mode": mode, "coded_size": key, "batch": n}
                    try:
                        record["seconds"] = self._on_every_network_worker(job)
                    except ResourceError as e:
                        record["skipped"] = str(e)
                    records.append(record)
            if refine:
                record = {"mode": "refine", "coded_size": key, "batch": 1}
                t0 = time.perf_counter()
                try:  # on a refine worker, outside the request counts and latencies
                    self._refine_threads().submit(self.codec.encode, image, quality, short_side, refine=1).result()
                    record["seconds"] = time.perf_counter() - t0
                except ResourceError as e:
                    record["skipped"] = str(e)
                records.append(record)
        return records

    def _on_every_network_worker(self, job) -> float:
        """Run ``job`` once on each network thread, all at once; the wall seconds. The first
        error raised (e.g. ResourceError) is raised here after all have finished.

        It holds every network worker meanwhile, as batches do (``_net_busy``): no batch is
        formed while it waits for running ones to end or while it runs, so a warm-up under
        traffic pauses serving (requests keep queueing) instead of competing with it."""
        with self._cv:
            while self._warming:  # another warm-up: one at a time
                self._cv.wait()
            self._warming = True  # from here on no batch is formed
            while self._net_busy and not self._closed:
                self._cv.wait()
            if self._closed:
                self._warming = False
                self._cv.notify_all()
                raise EngineDeadError("engine is shut down; create a new Engine")
            self._net_busy = self._net_slots
        try:
            return self._run_on_every_network_worker(job)
        finally:
            with self._cv:
                self._net_busy = 0
                self._warming = False
                self._cv.notify_all()

    def _run_on_every_network_worker(self, job) -> float:
        barrier = threading.Barrier(self._net_slots)

        def run():
            try:  # hold each thread until all have a copy: the copies land on distinct threads
                barrier.wait(timeout=60.0)
            except threading.BrokenBarrierError:  # a thread busy with a long batch: run anyway
                pass
            job()

        t0 = time.perf_counter()
        futures = [self._net_pool.submit(run) for _ in range(self._net_slots)]
        errors = [f.exception() for f in futures]
        seconds = time.perf_counter() - t0
        for e in errors:
            if e is not None:
                raise e
        return seconds

    def shutdown(self, drain: bool = True, timeout_s: float | None = None) -> None:
        """Stop accepting requests; finish queued ones (``drain``) or fail them with EngineDeadError.
        Then wait for the engine's threads to end — unless called on one of them (a request's
        done-callback): there it returns at once, and a later call from another thread waits.
        ``timeout_s``: how long draining may take; past it, the requests that have not begun fail
        with EngineDeadError, and those running are waited for."""
        # checked before the engine closes ("1", nan or inf failed in Thread.join, the engine half shut;
        # -1 was 0); inf: no limit
        drain = check_switch("drain", drain)
        if timeout_s is not None and timeout_s == math.inf:
            timeout_s = None
        timeout_s = check_seconds("timeout_s", timeout_s)
        if os.getpid() != self._pid:  # a forked copy: nothing of it runs here, and its locks may be held
            self._closed = self._stopped = True
            return
        with self._finishing():
            if self._stopped:
                return
            self._closed = True
            if drain and self._loop_failure is None:
                self._draining = True
                self._cv.notify_all()
            else:  # (a dead loop drains nothing: draining again would queue requests it never runs)
                self._stop_draining(self._why_stopped())
        if threading.get_ident() in self._own_threads:  # (a thread cannot wait for itself to end)
            return
        self._thread.join(timeout_s)
        if self._thread.is_alive():  # not drained within timeout_s: what has not begun fails now
            with self._finishing():
                self._stop_draining(f"engine shut down: its queue was not drained within timeout_s={timeout_s}")
            # the loop ends at once now; only then may the network pool close (the loop submitting
            # to a closed pool died, its queued requests never resolved)
            self._thread.join()
        self._net_pool.shutdown(wait=True)
        with self._cv:
            refine_pool = self._refine_pool
        if refine_pool is not None:  # without drain, the queued refinements fail at once (_submit)
            refine_pool.shutdown(wait=True)
        self._pool.shutdown(wait=True)  # without drain, the queued coding jobs fail at once (_submit)
        self._resolver.shutdown(wait=True)
        with self._cv:
            self._stopped = True
            submit_pool = self._submit_pool
        if submit_pool is not None:  # (its submits left fail with EngineDeadError: closed)
            submit_pool.shutdown(wait=False)

    def _stop_draining(self, why: str) -> None:
        """(Under the lock, closed.) The queued requests fail with EngineDeadError(``why``), and
        queued coding and refinement jobs as they come up (_run_unless_dead); the loop ends."""
        self._draining = False
        for r in [*self._sched.drain_all(), *self._decoding.values()]:
            self._finish_locked(r, exc=EngineDeadError(why))
        self._decoding.clear()
        self._cv.notify_all()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown(drain=exc[0] is None)

    def __reduce__(self):
        raise TypeError("an Engine does not pickle: its threads and queue live in the process that made it; give "
                        "worker processes its codec (a Codec made from a model file pickles) and make an Engine in "
                        "each")

    @property
    def closed(self) -> bool:
        """True once :meth:`shutdown` has begun: new requests are refused."""
        return self._closed

    @property
    def in_flight(self) -> int:
        """The requests submitted and not finished yet (at most ``max_queue``)."""
        return self._inflight

    def latency(self) -> dict[str, dict[str, float | int]]:
        """Per kind ("encode", "decode", "refine": the encodes with refinement): ``count`` and the
        50th/90th/99th percentile and largest submit-to-result seconds over the last
        ``LATENCY_WINDOW`` successful requests (queueing, batching and coding included, a decode's
        entropy decode too; from admission: a submit that waits for room in a full queue,
        ``block=True``, waits before); an empty dict for a kind with none yet."""
        with self._cv:
            windows = {kind: sorted(window) for kind, window in self._latencies.items()}
        return {kind: _percentiles(values) for kind, values in windows.items()}

    def latency_histogram(self) -> dict[str, dict]:
        """Per kind: ``count`` and ``sum`` (seconds) of every successful request since the start,
        and ``buckets``: [(upper bound s, requests at most that long)], cumulative, ``inf`` last —
        what a Prometheus histogram carries (``LATENCY_BUCKETS``)."""
        with self._cv:
            totals = {kind: (list(t.counts), t.total) for kind, t in self._latency_totals.items()}
        out = {}
        for kind, (counts, total) in totals.items():
            cumulative = list(itertools.accumulate(counts))
            out[kind] = {"count": cumulative[-1], "sum": total,
                         "buckets": list(zip((*LATENCY_BUCKETS, math.inf), cumulative))}
        return out

    # -- internals -----------------------------------------------------------------------
    def _deadline(self, now: float, timeout_s: float | None) -> float | None:
        t = timeout_s if timeout_s is not None else self.timeout_s
        return None if t is None else now + t

    def _check_process(self) -> None:
        """Refuse use from a process forked from the engine's: its threads are not there, and a
        request would wait for ever (before any lock: one held at the fork is never released)."""
        if os.getpid() != self._pid:
            raise EngineDeadError(f"this Engine was started in process {self._pid}; process {os.getpid()} was "
                                  "forked from it and has none of its threads: make an Engine in this process "
                                  "(or start workers with multiprocessing's 'spawn' or 'forkserver' method)")

    def _admit(self) -> None:
        self._check_process()
        with self._cv:
            while True:
                if self._closed:
                    raise EngineDeadError("engine is shut down; create a new Engine")
                if self._inflight < self.max_queue:
                    self._inflight += 1
                    return
                if not self.block:
                    raise QueueFull(f"{self._inflight} requests in flight (max_queue={self.max_queue})")
                self._cv.wait()

    def _enqueue(self, req: InflightRequest) -> None:
        with self._finishing():
            if self._stopping_now():
                self._finish_locked(req, exc=EngineDeadError(self._why_stopped()))
                return
            if req.future.cancelled():  # (a decode cancelled in its entropy decode: its done-callback
                self._finish_locked(req)  # found it nowhere to take out, so its place is given back here)
                return
            req.arrival = time.monotonic()
            self._sched.add(req)
            self._cv.notify_all()
        if req.kind is not Kind.DECODE:  # (a decode's is watched from its submit)
            self._watch_cancel(req)

    def _watch_cancel(self, req: InflightRequest) -> None:
        # (weak: a future the caller keeps must not keep the request's pixels, nor the engine)
        req.future.add_done_callback(functools.partial(_drop_if_cancelled, weakref.ref(self), weakref.ref(req)))

    def _drop_cancelled(self, req: InflightRequest) -> None:
        """A queued request its client cancelled leaves the queue now, and its place in ``max_queue``
        with it (it held that place until its batch was formed, or a refine worker took it: a server
        whose clients hang up under overload refused new requests with QueueFull)."""
        with self._finishing():
            if (self._sched.remove(req) or self._unwait_refined(req)
                    or self._decoding.pop(req.id, None) is not None):
                # (no status: _finish_locked notifies the cancelled future's waiters, as an executor
                # does; concurrent.futures.wait() and as_completed() did not see it done)
                self._finish_locked(req)

    def _unwait_refined(self, req: InflightRequest) -> bool:
        """(Under the lock.) Take a refined encode out of those waiting for a refine worker (its
        job then finds one fewer waiting); False if it is not waiting. Its owner, with nothing
        else running or waiting, is forgotten (as when its last refined encode ends)."""
        if req not in self._refine_waiting:
            return False
        self._refine_waiting.remove(req)
        self._forget_idle_owner(req.owner)
        return True

    def _forget_idle_owner(self, owner: str | None) -> None:
        """(Under the lock.) An owner with no refined encode running or waiting leaves the fairness
        tables: they stay as small as the queue, and its next request counts as a first."""
        if not self._refine_running[owner] and all(r.owner != owner for r in self._refine_waiting):
            self._refine_running.pop(owner, None)
            self._refine_turn.pop(owner, None)

    def _expired_decoding(self, now: float) -> list[InflightRequest]:
        """(Under the lock.) The decodes whose deadline passed while they waited for a coding
        thread (behind an entropy-coding backlog), taken out: their jobs then do nothing."""
        expired = [r for r in self._decoding.values() if r.deadline is not None and r.deadline < now]
        for r in expired:
            del self._decoding[r.id]
        return expired

    def _expired_refined(self, now: float) -> list[InflightRequest]:
        """(Under the lock.) The refined encodes whose deadline passed while they waited for a
        refine worker, taken out (they failed only when a worker took them: after the refinements
        queued before them, minutes behind a backlog)."""
        expired = [r for r in self._refine_waiting if r.deadline is not None and r.deadline < now]
        for r in expired:
            self._unwait_refined(r)
        return expired

    def _finish_locked(self, req: InflightRequest, result=None, exc: BaseException | None = None,
                       status: Status | None = None) -> None:
        if req.status.finished:
            return
        fut = req.future
        # a request that never ran may be cancelled by its client at any time: made running here
        # (or found cancelled), so that resolving it after the lock cannot fail
        if status is not Status.FINISHED_CANCELLED and not fut.running():
            try:
                running = fut.set_running_or_notify_cancel()
            except RuntimeError:  # (already done or cancelled and notified: nothing to resolve)
                running = False
            if not running:
                status = Status.FINISHED_CANCELLED
        if status is not Status.FINISHED_CANCELLED:
            self._unresolved.append((fut, result, exc))
        req.status = status or (Status.FINISHED_ERROR if exc is not None else Status.FINISHED_OK)
        self.stats["ok" if req.status is Status.FINISHED_OK else "failed"] += 1
        if req.status is Status.FINISHED_OK:
            seconds = time.monotonic() - req.submitted
            kind = "refine" if req.refine else req.kind.value
            self._latencies[kind].append(seconds)
            totals = self._latency_totals[kind]
            totals.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            totals.total += seconds
        self._inflight -= 1
        self._cv.notify_all()

    def _finish(self, req: InflightRequest, result=None, exc: BaseException | None = None,
                status: Status | None = None) -> None:
        with self._finishing():
            self._finish_locked(req, result, exc, status)

    @contextmanager
    def _finishing(self):
        """The engine's lock, for finishing requests (_finish_locked): their futures are resolved
        once this thread lets go of it, so that done-callbacks never run under it (one that shut
        the engine down, or waited for another request, hung it)."""
        depth = getattr(self._lock_depth, "n", 0)
        try:
            with self._cv:
                self._lock_depth.n = depth + 1
                try:
                    yield
                finally:
                    self._lock_depth.n = depth
        finally:  # (what was finished before an error inside is resolved all the same)
            if depth == 0:
                self._resolve_finished()

    def _resolve_finished(self) -> None:
        with self._cv:
            unresolved, self._unresolved = self._unresolved, []
        for fut, result, exc in unresolved:
            try:
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(result)
            except InvalidStateError:  # (resolved by someone else meanwhile: not ours to report)
                pass

    def _submit(self, pool: ThreadPoolExecutor, job, req: InflightRequest, *args) -> None:
        """``job(req, *args)`` on ``pool``, unless a shutdown without drain has begun by then: a
        request still queued then fails with its error (a job cancelled instead would leave its
        future unresolved, its caller waiting forever)."""
        try:
            pool.submit(self._run_unless_dead, req, job, *args)
        except RuntimeError as e:  # pool shut down under us
            self._finish(req, exc=EngineDeadError(f"engine is shut down ({e})"))

    def _run_unless_dead(self, req: InflightRequest, job, *args) -> None:
        """``job(req, *args)``, or ``req`` fails if a shutdown without drain has begun."""
        if self._stopping_now():
            self._finish(req, exc=EngineDeadError(self._why_stopped()))
            return
        try:
            job(req, *args)
        except BaseException as e:  # (jobs catch Exception: this is KeyboardInterrupt, SystemExit...)
            # the pool's own future would keep it, and the request's stay unresolved for ever
            self._finish(req, exc=EngineDeadError(f"engine failure: {e!r}"))
            raise

    def _submit_coding(self, job, req: InflightRequest, *args) -> None:
        """``job(req, *args)`` on the coding pool (``_submit``)."""
        self._submit(self._pool, job, req, *args)

    def _entropy_decode(self, req: InflightRequest) -> None:
        with self._cv:
            if self._decoding.pop(req.id, None) is None:  # failed at its deadline, or cancelled, meanwhile
                return
        if req.future.cancelled():  # (its client gave up as this thread took it)
            self._finish(req)  # (cancelled, its waiters notified: _finish_locked)
            return
        try:
            latent = self.codec.entropy_decode(req.payload, req.short_side)
        except Exception as e:
            self._finish(req, exc=e)
            return
        req.payload = latent
        req.key = (Kind.DECODE, padded_size(*latent.header.coded_hw))
        self._enqueue(req)

    def _entropy_encode(self, req: InflightRequest, y, z) -> None:
        try:
            self._finish(req, result=self.codec.entropy_encode(y, z, req.payload))
        except Exception as e:
            self._finish(req, exc=_request_error(req, e))

    def _loop(self) -> None:
        self._own_threads.add(threading.get_ident())  # (a shutdown from a callback run here returns)
        try:
            self._batching_loop()
        except BaseException as e:
            # a bug here must not leave requests waiting for ever behind a healthy-looking engine:
            # it closes (so /health says 503) and its queued requests fail; the traceback is logged
            with self._cv:
                self._closed = True
                self._loop_failure = f"engine failure: its batching loop stopped ({e!r})"
                self._stop_draining(self._loop_failure)
            self._resolve_finished()
            raise

    def _batching_loop(self) -> None:
        while True:
            batch = None
            with self._cv:
                while True:
                    if self._closed and (self._inflight == 0 or not self._draining):
                        return
                    now = time.monotonic()
                    # a request fails at its deadline, not when its batch's turn comes (seconds later
                    # behind a backlog, or max_delay_ms later on its own)
                    expired = self._sched.pop_expired(now) + self._expired_refined(now) + self._expired_decoding(now)
                    for r in expired:
                        self._finish_locked(r, exc=RequestTimeoutError(
                            f"request timed out in the queue: its deadline passed {now - r.submitted:.3f}s after "
                            "it was submitted, before it ran"), status=Status.FINISHED_TIMEOUT)
                    if expired:
                        break  # (resolved once the lock is let go, by the resolver)
                    # a batch is formed only when a network worker is free: meanwhile it keeps growing
                    free = self._net_busy < self._net_slots and not self._warming
                    batch = self._sched.pop_batch(now, force=self._closed) if free else None
                    if batch:
                        self._net_busy += 1
                        break
                    waiting = itertools.chain(self._refine_waiting, self._decoding.values())
                    wakes = [t for t in (self._sched.next_due() if free else None, self._sched.next_deadline(),
                                         min((r.deadline for r in waiting if r.deadline is not None), default=None))
                             if t is not None]
                    # (at most an hour at a time: a wake far off is looked at again, never overflows the clock)
                    self._cv.wait(min(max(0.0, min(wakes) - now), 3600.0) if wakes else None)
            if batch is None:
                try:
                    self._resolver.submit(self._resolve_finished)
                except RuntimeError:  # (shut down: here then)
                    self._resolve_finished()
                continue
            try:
                self._net_pool.submit(self._network_task, batch)
            except RuntimeError as e:
                # the pool shut down under us (concurrent.futures refuses new work once the
                # interpreter exits, before atexit's engine shutdown): the batch taken off the
                # queue fails rather than vanishing with this thread
                for r in batch:
                    self._finish(r, exc=EngineDeadError(f"engine is shut down ({e})"))
                self._free_network_slot()
                return

    def _network_task(self, batch: list[InflightRequest]) -> None:
        try:
            self._run_batch(batch)
        except BaseException as e:  # a failure here fails its batch, never the engine silently
            for r in batch:
                self._finish(r, exc=EngineDeadError(f"engine failure: {e!r}"))
        finally:
            self._free_network_slot()

    def _free_network_slot(self) -> None:
        """A batch's network worker is done (or never started): the loop may form the next."""
        with self._cv:
            self._net_busy -= 1
            self._cv.notify_all()

    def _begin(self, req: InflightRequest, now: float) -> bool:
        """Whether a request taken from its queue runs: else it is finished here, timed out (its
        deadline passed in the queue) or cancelled (by its client)."""
        if req.deadline is not None and now > req.deadline:
            # (arrival is when it was queued: its deadline was set before, when it was submitted)
            late = RequestTimeoutError(f"request timed out in the queue: its deadline passed {now - req.deadline:.3f}s "
                                       f"before its turn, {now - req.arrival:.3f}s after it was queued")
            self._finish(req, exc=late, status=Status.FINISHED_TIMEOUT)
            return False
        if not req.future.set_running_or_notify_cancel():
            self._finish(req, status=Status.FINISHED_CANCELLED)
            return False
        req.status = Status.SCHEDULED
        return True

    def _run_batch(self, batch: list[InflightRequest]) -> None:
        now = time.monotonic()
        live = [r for r in batch if self._begin(r, now)]
        if not live:
            return
        with self._cv:  # (network workers count at once)
            self.stats["batches"] += 1
            self.stats["batched_items"] += len(live)
            self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(live))
        try:
            self._run_networks(live)
        except Exception as e:
            # (a wait for other batches' memory that ended, at the batch's earliest deadline or
            # called off by a shutdown: retried item by item it would wait as long again for each)
            if len(live) == 1 or isinstance(e, MemoryBusyError):
                for r in live:
                    self._finish(r, exc=self._failure(r, e))
                return
            for r in live:  # isolate: a failing item must not take its batch-mates down
                try:
                    self._run_networks([r])
                except Exception as e_one:
                    self._finish(r, exc=self._failure(r, e_one))

    def _failure(self, r: InflightRequest, e: Exception) -> Exception:
        """What a request that failed in the network stage gets: ``_request_error``'s, and for a
        wait for memory that ended, a timeout when its deadline passed, EngineDeadError when the
        engine shut down meanwhile, else that MemoryBusyError."""
        if not isinstance(e, MemoryBusyError):
            return _request_error(r, e)
        if r.deadline is not None and time.monotonic() >= r.deadline:
            return RequestTimeoutError(f"request timed out waiting for memory other batches held ({e})")
        if self._stopping_now():
            return EngineDeadError("engine shut down while the request waited for memory")
        return e

    def _why_stopped(self) -> str:
        """What a request the engine's stop keeps from running is told: its batching loop's
        failure, where that stopped it."""
        return self._loop_failure or "engine shut down before the request ran"

    def _stopping_now(self) -> bool:
        """Shut down without drain: what has not finished fails."""
        return self._closed and not self._draining

    def _run_networks(self, live: list[InflightRequest]) -> None:
        # a memory wait (other batches' memory: network_workers, refine workers) lasts until the
        # earliest deadline of the batch, and ends once a shutdown without drain begins
        deadlines = [r.deadline for r in live if r.deadline is not None]
        with memory.waiting(min(deadlines) if deadlines else None, abort=self._stopping_now):
            self._run_networks_now(live)

    def _run_networks_now(self, live: list[InflightRequest]) -> None:
        if live[0].budget is not None:
            self._run_budgeted(live)
        elif live[0].kind is Kind.ENCODE:
            y, z = self.codec.analyse([r.payload.pixels for r in live], [r.payload.quality for r in live], refine=0)
            for j, r in enumerate(live):
                r.status = Status.CODING
                self._submit_coding(self._entropy_encode, r, y[j], z[j])
        else:
            images = self.codec.synthesize([r.payload for r in live])
            for r, img in zip(live, images):
                self._finish(r, result=img)

    def _run_budgeted(self, live: list[InflightRequest]) -> None:
        """Rate-controlled encodes: g_a once for the batch here; each request's search (h_a and
        the entropy coding per quality tried) then runs on the coding pool, as entropy coding
        does, so that it does not hold the network worker (every backend takes calls from
        several threads; TensorRT's take turns)."""
        _, y_raw = self.codec.analyse_unscaled([r.payload.pixels for r in live], refining=False)
        for j, r in enumerate(live):
            r.status = Status.CODING
            self._submit_coding(self._encode_within, r, y_raw[j])

    def _encode_within(self, req: InflightRequest, y_raw) -> None:
        try:
            assert req.budget is not None  # (a batch's key says it has one: _run_budgeted's)
            data, _ = self.codec.encode_within(req.payload, req.budget, y_raw, refine=0)
            self._finish(req, result=data)
        except Exception as e:
            self._finish(req, exc=_request_error(req, e))

    def _refine_threads(self) -> ThreadPoolExecutor:
        """The refine workers' pool, made on first use."""
        with self._cv:
            if self._refine_pool is None:
                self._refine_pool = ThreadPoolExecutor(max_workers=self.refine_workers,
                                                       thread_name_prefix="vlmcodec-refine",
                                                       initializer=_note_thread, initargs=(self._own_threads,))
            return self._refine_pool

    def _submit_refined(self, req: InflightRequest) -> None:
        """Queue a refined encode: each refine-pool job takes the refined request that
        ``_next_refined`` chooses then, not the one that queued it."""
        with self._cv:
            self._refine_waiting.append(req)
            self._cv.notify_all()  # (the loop wakes at its deadline)
        self._watch_cancel(req)

        def take() -> None:
            with self._cv:
                if not self._refine_waiting:  # (the one this job was for timed out or was cancelled)
                    return
                nxt = self._next_refined()
            try:
                self._run_unless_dead(nxt, self._refine_encode)
            finally:
                with self._cv:
                    self._refine_running[nxt.owner] -= 1
                    self._forget_idle_owner(nxt.owner)

        try:
            self._refine_threads().submit(take)
        except RuntimeError as e:  # pool shut down under us: this request never gets a job
            with self._finishing():
                if self._unwait_refined(req):  # (unless cancelled meanwhile)
                    self._finish_locked(req, exc=EngineDeadError(f"engine is shut down ({e})"))

    def _next_refined(self) -> InflightRequest:
        """The refined encode a free refine worker takes (under the lock): the highest priority;
        within it the owner with the fewest running, then the one that started one longest ago
        (never: first); then the oldest request. A linear pass: the queue is bounded."""
        top = max(r.priority for r in self._refine_waiting)
        nxt = min((r for r in self._refine_waiting if r.priority == top),
                  key=lambda r: (self._refine_running[r.owner], self._refine_turn.get(r.owner, -1), r.id))
        self._refine_waiting.remove(nxt)
        self._refine_running[nxt.owner] += 1
        self._refine_turn[nxt.owner] = next(self._refine_starts)
        return nxt

    def _refine_encode(self, req: InflightRequest) -> None:
        """A refined encode, whole, on a refine worker (g_a again for each refined try of a
        budget: cheap beside the refinement)."""
        if not self._begin(req, time.monotonic()):
            return
        prep = req.payload
        try:
            with memory.waiting(req.deadline, abort=self._stopping_now):
                if req.budget is not None:
                    data, warning = self.codec.encode_within(prep, req.budget, refine=req.refine)
                    cast(EncodeFuture, req.future).warning = warning  # (an encode's future)
                else:
                    y, z = self.codec.analyse([prep.pixels], [prep.quality], refine=req.refine)
                    req.status = Status.CODING
                    data = self.codec.entropy_encode(y[0], z[0], prep)
        except Exception as e:
            self._finish(req, exc=self._failure(req, e))
            return
        with self._finishing():
            self.stats["refined"] += 1
            self._finish_locked(req, result=data)


def _cancel_submitted(pending: asyncio.Future) -> None:
    """The request a cancelled task's submit made: cancelled (it never runs if it has not begun)."""
    if not pending.cancelled() and pending.exception() is None:
        pending.result().cancel()


def _note_thread(idents: set[int]) -> None:
    """An engine pool's thread initializer: the thread is one of the engine's own."""
    idents.add(threading.get_ident())


def _outcome(fut: Future, return_exceptions: bool):
    """A finished request's result (a refined budget met by a one-pass stream warns, as
    ``Codec.encode_to_size`` does); its error raised, or returned with ``return_exceptions``."""
    try:
        result = fut.result()
    except Exception as e:  # noqa: BLE001 — handed to the caller in the request's place
        if not return_exceptions:
            raise
        return e
    warn_refine_fallback(getattr(fut, "warning", None))
    return result


def _request_error(r: InflightRequest, e: Exception) -> Exception:
    """What a request that failed in the network stage gets: the codec's own clear error as it
    is (e.g. ResourceError: the image would not fit in memory), anything else wrapped."""
    if isinstance(e, VlmcodecError):
        return e
    # the cause kept (a traceback to the failing line) and named when it says nothing (an assert)
    wrapped = RequestError(f"{r.kind.value} failed: {str(e) or type(e).__name__}")
    wrapped.__cause__ = e
    return wrapped
