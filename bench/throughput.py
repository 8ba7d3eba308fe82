"""Throughput of the runtime Engine vs a sequential loop over ``Codec``, side by side.

    python -m vlmcodec.bench.throughput [--images DIR] [--limit N] [--requests 32] [--concurrency 1,4,16,32]
    vlmcodec bench throughput --url http://host:8080 ...   # a running `vlmcodec serve` instead

For encode and for decode: the sequential loop runs the same requests one after another; the
Engine is driven by C closed-loop client threads (each submits, waits, submits the next).
Reports images/s and latency p50/p95/p99 (submit → result), JSON and a table. The sequential
loop uses torch's default intra-op threads; the Engine, by default, one network worker per
core with single-threaded ops (onnxruntime: a codec of its own whose sessions have
``--intra-op-threads`` threads, as they take their threads when created). A request that fails
is left out of the rates and latencies and counted, by exception type, in the JSON; the command
then exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vlmcodec.console import backend_option

from ..checks import finite_number_arg
from .common import check_output_path, count_arg, environment, image_files, positive_arg, progress_bar, write_json

# the options that only an in-process Engine uses (with --url the server's own settings apply)
ENGINE_OPTIONS = ("max_batch", "max_delay_ms", "workers", "network_workers", "intra_op_threads", "model", "backend",
                  "device", "backend_option", "warmup", "warmup_shapes")


class _Cycle(Sequence):
    """``items`` repeated to ``n`` entries, indexed lazily (a list of ``--requests`` entries took
    memory in proportion, ~16 GB for 10⁹ requests, before the first was sent)."""

    def __init__(self, items: list, n: int):
        self.items, self.n = items, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):  # a prefix (the warm-up requests) stays lazy
            start, stop, step = i.indices(self.n)
            return _Cycle(self.items, stop) if start == 0 and step == 1 else [self[j] for j in range(start, stop, step)]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return self.items[i % self.n % len(self.items)]


def concurrency_list(text: str) -> list[int]:
    """An argparse ``type``: comma-separated client counts, each a whole number, at least 1."""
    items = [c.strip() for c in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, at least 1, got {text!r}")
    return [positive_arg(c) for c in items if c]


finite_arg = finite_number_arg  # (checked as the options are read: the Engine refused a bad delay only after the loops)


def _percentiles(lat: list[float]) -> dict:
    if not lat:  # every request failed: no latency to report
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    a = np.asarray(lat) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99))}


def _count_error(errors: dict[str, int], first_error: list[str], e: Exception) -> None:
    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
    if not first_error:
        first_error.append(f"{type(e).__name__}: {e}")


def _summary(lat: list[float], requests: int, total: float, errors: dict[str, int], first_error: list[str]) -> dict:
    """A setting's figures: the rate and latencies of the requests that succeeded, the failures by type."""
    out = {"images_per_s": len(lat) / total, "seconds": total, "requests": requests, "ok": len(lat),
           "failed": requests - len(lat), **_percentiles(lat)}
    if errors:
        out |= {"errors": errors, "first_error": first_error[0]}
    return out


def sequential(fn, work: Sequence) -> dict:
    """``fn(item)`` for each item, one after another; a call that raises is counted as failed (by
    exception type), as ``with_clients`` does, and the loop goes on."""
    lat: list[float] = []
    errors: dict[str, int] = {}
    first_error: list[str] = []
    t0 = time.perf_counter()
    for item in work:
        t = time.perf_counter()
        try:
            fn(item)
        except Exception as e:
            _count_error(errors, first_error, e)
            continue
        lat.append(time.perf_counter() - t)
    return _summary(lat, len(work), time.perf_counter() - t0, errors, first_error)


def with_engine(submit, work: Sequence, concurrency: int) -> dict:
    return with_clients(lambda item: submit(item).result(), work, concurrency)


def with_clients(call, work: Sequence, concurrency: int) -> dict:
    """``concurrency`` closed-loop client threads, each calling ``call(item)`` for the next item.
    A call that raises is counted as failed (by exception type) and its client goes on; the rate
    and latencies are those of the requests that succeeded."""
    lat, lock, idx = [], threading.Lock(), [0]
    errors: dict[str, int] = {}
    first_error: list[str] = []

    def client():
        while True:
            with lock:
                if idx[0] >= len(work):
                    return
                item = work[idx[0]]
                idx[0] += 1
            t = time.perf_counter()
            try:
                call(item)
            except Exception as e:
                with lock:
                    _count_error(errors, first_error, e)
                continue
            with lock:
                lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return _summary(lat, len(work), time.perf_counter() - t0, errors, first_error)


def run(images: list[np.ndarray], requests: int, concurrencies: list[int], quality: float,
        max_batch: int, max_delay_ms: float | None, workers: int, model=None, backend: str = "torch",
        network_workers: int = 1, intra_op_threads: int | None = None, device: str | None = None,
        backend_options: dict | None = None, warmup: int = 0, warmup_shapes: bool = False,
        max_bpp: float | None = None) -> dict:
    """``max_bpp``: the encode requests are rate-controlled to that budget instead of ``quality``
    (``Codec.encode_to_size`` in the loop, ``submit_encode(max_bpp=)`` in the Engine)."""
    import torch

    from vlmcodec import Codec
    from vlmcodec.runtime import Engine

    base_threads = torch.get_num_threads()
    codec = Codec(model, backend=backend, device=device, backend_options=backend_options)
    work_img = _Cycle(images, requests)
    work_dec = _Cycle([codec.encode(im, quality) for im in images], requests)
    engine_codec = codec
    if backend == "onnxruntime" and intra_op_threads:
        # ORT sessions take their threads when created (intra_op_threads sets torch's only):
        # the Engine's codec gets sessions of its own, warmed up like the sequential one
        engine_codec = Codec(codec.loaded, backend=backend, device=device, threads=intra_op_threads,
                             backend_options=backend_options)
        for im in images:
            engine_codec.decode(engine_codec.encode(im, quality))
    results: dict = {"encode": {}, "decode": {}}
    budget = {"max_bpp": max_bpp} if max_bpp is not None else {}
    one_quality = None if budget else quality  # a budget picks each image's quality

    def encode(im):
        return codec.encode_to_size(im, **budget) if budget else codec.encode(im, quality)

    steps = 2 * (1 + len(concurrencies))
    with progress_bar(steps, "throughput") as bar:
        results["encode"]["sequential"] = sequential(encode, work_img); bar.update()
        results["decode"]["sequential"] = sequential(codec.decode, work_dec); bar.update()
        for c in concurrencies:
            with Engine(engine_codec, max_batch=max_batch, max_delay_ms=max_delay_ms, workers=workers,
                        network_workers=network_workers, intra_op_threads=intra_op_threads,
                        max_queue=max(64, 2 * c)) as eng:
                if warmup_shapes:  # untimed: the batch shapes at each image size, on every network worker
                    results.setdefault("warmup_shapes_s", []).append(
                        sum(r.get("seconds", 0.0) for r in eng.warmup(images, quality)))
                if warmup:  # untimed: the batch shapes' first runs (onnxruntime's arena grows then)
                    with_engine(lambda im: eng.submit_encode(im, one_quality, max_bpp=max_bpp), work_img[:warmup], c)
                    with_engine(eng.submit_decode, work_dec[:warmup], c)
                results["encode"][f"engine_c{c}"] = with_engine(
                    lambda im: eng.submit_encode(im, one_quality, max_bpp=max_bpp), work_img, c)
                bar.update()
                results["decode"][f"engine_c{c}"] = with_engine(eng.submit_decode, work_dec, c)
                bar.update()
    torch.set_num_threads(base_threads)
    results["sequential_intra_op_threads"] = base_threads
    return _with_speedups(results)


def _with_speedups(results: dict) -> dict:
    """Each setting's images/s relative to the "sequential" one, per mode, added in place (None
    where the sequential run had no request succeed)."""
    for mode in ("encode", "decode"):
        base = results[mode]["sequential"]["images_per_s"]
        for v in results[mode].values():
            v["speedup_vs_sequential"] = v["images_per_s"] / base if base else None
    return results


def failed_requests(results: dict) -> tuple[int, int, dict]:
    """(failed, sent, failures by exception type) over every mode and setting of ``results``."""
    failed = sent = 0
    by_type: dict[str, int] = {}
    for mode in ("encode", "decode"):
        for v in results[mode].values():
            failed, sent = failed + v.get("failed", 0), sent + v.get("requests", 0)
            for k, n in v.get("errors", {}).items():
                by_type[k] = by_type.get(k, 0) + n
    return failed, sent, by_type


def run_remote(url: str, images: list[np.ndarray], requests: int, concurrencies: list[int],
               quality: float, token: str | None = None, cafile: str | None = None,
               max_bpp: float | None = None) -> dict:
    """The same requests sent to a running `vlmcodec serve` at ``url`` (RemoteCodec): one client
    after another ("sequential"), then ``c`` clients at once; the server's settings are its own."""
    from vlmcodec.runtime import RemoteCodec

    context = None
    if cafile:
        import ssl

        context = ssl.create_default_context(cafile=cafile)
    remote = RemoteCodec(url, token=token, ssl_context=context)
    health = remote.health()
    work_img = _Cycle(images, requests)
    work_dec = _Cycle([remote.encode(im, quality) for im in images], requests)
    one_quality = None if max_bpp is not None else quality  # a budget picks each image's quality
    results: dict = {"encode": {}, "decode": {}, "server": health}
    settings = [("sequential", 1)] + [(f"server_c{c}", c) for c in concurrencies]
    with progress_bar(2 * len(settings), "throughput") as bar:
        for name, c in settings:
            results["encode"][name] = with_clients(lambda im: remote.encode(im, one_quality, max_bpp=max_bpp),
                                                   work_img, c)
            bar.update()
            results["decode"][name] = with_clients(remote.decode, work_dec, c)
            bar.update()
    return _with_speedups(results)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="vlmcodec bench throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, help="folder of images (default ../shared/data/kodak)")
    p.add_argument("--limit", type=count_arg, default=0, help="first N images only (the requests cycle over them)")
    p.add_argument("--requests", type=positive_arg, default=32, help="requests per mode and setting")
    p.add_argument("--concurrency", type=concurrency_list, default="1,4,16,32",
                   help="comma-separated numbers of clients at once (default 1,4,16,32)")
    p.add_argument("--quality", type=float, default=75.0)
    p.add_argument("--max-bpp", type=finite_arg(0, above=True),
                   help="rate-controlled encodes to this budget instead of --quality")
    p.add_argument("--max-batch", type=positive_arg, default=8)
    p.add_argument("--max-delay-ms", type=finite_arg(0, unit=" of milliseconds"),
                   help="the Engine's (default: Engine's own, by backend)")
    p.add_argument("--workers", type=positive_arg, default=2, help="entropy-coding threads of the Engine")
    p.add_argument("--network-workers", type=positive_arg, default=os.cpu_count() or 1,
                   help="Engine threads running networks (default: one per core)")
    p.add_argument("--intra-op-threads", type=count_arg, default=1,
                   help="torch threads per op inside the Engine (default 1; 0 = leave as is)")
    p.add_argument("--model")
    p.add_argument("--backend", default="torch", help="the codec's backend (default torch)")
    p.add_argument("--device", help="e.g. cuda (default: the backend's own)")
    p.add_argument("--backend-option", type=backend_option, action="append", metavar="KEY=VALUE",
                   help="an option of the backend, repeatable (as for vlmcodec encode)")
    p.add_argument("--warmup", type=count_arg, default=0, metavar="N",
                   help="untimed requests (each mode) through each Engine before it is timed (default 0)")
    p.add_argument("--warmup-shapes", action="store_true",
                   help="Engine.warmup before timing, untimed: each image size at max-batch and 1 (CPU "
                        "backends) or every batch size (whole-batch backends)")
    p.add_argument("--url", help="drive a running `vlmcodec serve` at this URL instead of an in-process Engine "
                                 "(sequential = one client at a time; the server's own settings apply)")
    p.add_argument("--token-file", help="with --url: the server's bearer token (serve --auth-token-file)")
    p.add_argument("--cafile", help="with an https --url: the certificate to trust (a self-signed server's)")
    p.add_argument("--out", default="results/throughput.json")
    a = p.parse_args(argv)
    from vlmcodec.errors import ConfigError
    from vlmcodec.image_io import load_image

    if a.url:  # (options that did not apply were silently ignored)
        given = [f"--{k.replace('_', '-')}" for k in ENGINE_OPTIONS if getattr(a, k) != p.get_default(k)]
        if given:
            raise ConfigError(f"{', '.join(given)}: only for an in-process Engine; with --url the server's "
                              "own settings apply")
    else:
        given = [o for o, v in (("--token-file", a.token_file), ("--cafile", a.cafile)) if v]
        if given:
            raise ConfigError(f"{', '.join(given)}: only with --url (a running server)")
    check_output_path(a.out)
    files = image_files(a.images, a.limit)
    folder = files[0].parent
    images = [load_image(f) for f in files]
    conc = a.concurrency
    if a.url:
        token = None
        if a.token_file:  # a file with the client's token: the first of a server's token file
            from vlmcodec.runtime.tokens import parse_token_file

            token = next(iter(parse_token_file(Path(a.token_file).read_text(encoding="utf-8-sig"),
                                               a.token_file).values()))
        res = run_remote(a.url, images, a.requests, conc, a.quality, token, a.cafile, a.max_bpp)
        print(f"server {a.url}: model {res['server']['model']}, {res['server']['backend']}")
    else:
        res = run(images, a.requests, conc, a.quality, a.max_batch, a.max_delay_ms, a.workers, a.model, a.backend,
                  a.network_workers, a.intra_op_threads or None, a.device, dict(a.backend_option or ()), a.warmup,
                  a.warmup_shapes, a.max_bpp)
    write_json(a.out, {"benchmark": "throughput", "env": environment(), "args": vars(a) | {"images": str(folder)},
                       "files": [f.name for f in files], "results": res})

    def num(x, width: int, digits: int) -> str:  # "-": no request of the setting succeeded
        return f"{x:>{width}.{digits}f}" if x is not None else f"{'-':>{width}}"

    print(f"{'mode':<8} {'setting':<12} {'img/s':>8} {'x seq':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for mode in ("encode", "decode"):
        for k, v in res[mode].items():
            print(f"{mode:<8} {k:<12} {num(v['images_per_s'], 8, 2)} {num(v['speedup_vs_sequential'], 6, 2)} "
                  f"{num(v['p50_ms'], 8, 0)} {num(v['p95_ms'], 8, 0)} {num(v['p99_ms'], 8, 0)}"
                  + (f"  {v['failed']} failed" if v.get("failed") else ""))
    print(f"wrote {a.out}")
    failed, sent, by_type = failed_requests(res)
    if failed:  # (a failed request was counted as served, and the run exited 0)
        kinds = ", ".join(f"{k} {n}" for k, n in by_type.items())
        print(f"vlmcodec bench throughput: error: {failed} of {sent} requests failed ({kinds}); the rates count only "
              f"those that succeeded", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from vlmcodec.bench.cli import main_of_module

    raise SystemExit(main_of_module("throughput"))
