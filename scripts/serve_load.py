"""What the serving measurements share (scripts/*_serving.py, rate_limit_fairness.py,
hangup_goodput.py): their common options, the warmed default codec, clients sending back to
back, a paced client that records its latencies, and their summary (the in-process server they
measure is ``vlmcodec.runtime.running_server``)."""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"


def crop_384x256():
    """The image these measurements send: kodim23's top-left 384×256 (the consumer's scale)."""
    from vlmcodec.image_io import load_image

    return load_image(KODAK / "kodim23.png")[:256, :384]


def serving_parser(doc: str, out_name: str, paced_client: str | None = None) -> argparse.ArgumentParser:
    """The options every serving measurement takes: --seconds, --rounds, --out (default
    results/serve/OUT_NAME) and, with a paced client (named in the help), --interval."""
    from vlmcodec.bench.common import positive_arg
    from vlmcodec.bench.throughput import finite_arg

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=finite_arg(0, above=True), default=20.0, help="length of each run")
    if paced_client:
        p.add_argument("--interval", type=finite_arg(0, above=True), default=0.5,
                       help=f"the {paced_client} client's pace (s)")
    p.add_argument("--rounds", type=positive_arg, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "serve" / out_name)
    return p


def warm_codec(image, refine: bool = False):
    """The default model's Codec with its first encode of ``image`` done (and, with ``refine``, its
    first refined one: the refiner loads its teacher then), so that no measured run pays them."""
    from vlmcodec import Codec

    codec = Codec()
    codec.encode(image, 50)
    if refine:
        codec.encode(image, 50, refine=1)
    return codec


def back_to_back(url: str, threads: int, stop_at: float, send: Callable, **client) -> tuple[list, dict]:
    """``threads`` clients (``RemoteCodec(url, **client)`` each) calling ``send(remote)`` until
    ``stop_at`` (time.monotonic); ``send`` returns the outcome's name, counted in the dict (an
    exception's class name when it raises). Returns the started threads and the counts."""
    from vlmcodec.runtime import RemoteCodec

    counts: dict[str, int] = {}
    lock = threading.Lock()

    def run() -> None:
        with RemoteCodec(url, **client) as remote:
            while time.monotonic() < stop_at:
                try:
                    key = send(remote)
                except Exception as e:  # noqa: BLE001 — every outcome is counted, none stops the client
                    key = type(e).__name__
                with lock:
                    counts[key] = counts.get(key, 0) + 1

    started = [threading.Thread(target=run) for _ in range(threads)]
    for t in started:
        t.start()
    return started, counts


def paced(url: str, interval: float, stop_at: float, send: Callable, warmup_s: float = 1.0,
          **client) -> tuple[list[float], int]:
    """One client calling ``send(remote)`` every ``interval`` seconds from ``warmup_s`` on until
    ``stop_at``: the seconds each successful call took, and the number that raised."""
    from vlmcodec.runtime import RemoteCodec

    latencies, errors = [], 0
    with RemoteCodec(url, **client) as remote:
        time.sleep(warmup_s)  # the others' traffic first
        while time.monotonic() < stop_at - interval:
            t0 = time.perf_counter()
            try:
                send(remote)
                latencies.append(time.perf_counter() - t0)
            except Exception:  # noqa: BLE001 — counted
                errors += 1
            time.sleep(max(0.0, interval - (time.perf_counter() - t0)))
    return latencies, errors


def latency_summary(prefix: str, seconds: list[float]) -> dict:
    """``{prefix}_served``, ``{prefix}_p50_ms``, ``{prefix}_p95_ms`` (None without any)."""
    ms = np.array(seconds) * 1000
    return {f"{prefix}_served": len(ms),
            f"{prefix}_p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            f"{prefix}_p95_ms": float(np.percentile(ms, 95)) if len(ms) else None}


def rounds_of(arms: list, rounds: int, run: Callable, alternate: bool = False) -> list[dict]:
    """``run(arm)`` for every arm, ``rounds`` times (the order reversed every other round with
    ``alternate``), each result tagged with its round and printed as it comes."""
    import json

    out = []
    for r in range(rounds):
        for arm in (arms[::-1] if alternate and r % 2 else arms):
            res = dict(run(arm), round=r)
            out.append(res)
            print(json.dumps(res), flush=True)
    return out


def write_results(out: Path, argv: list[str], fields: dict, runs: list[dict]) -> None:
    """The runs as JSON at ``out``, with the command that made them and ``fields``."""
    import json
    import sys

    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join([str(Path(sys.argv[0]).relative_to(ROOT)) if Path(sys.argv[0]).is_absolute()
                                     else sys.argv[0], *argv])
    out.write_text(json.dumps({"command": command, "image": "kodim23.png[:256, :384]", **fields, "runs": runs},
                              indent=1) + "\n")
    print(f"wrote {out}")
