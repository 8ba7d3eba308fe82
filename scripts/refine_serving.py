"""What running refined encodes on their own workers buys the plain requests of a server.

One in-process server (the default model, ``max_refine``) and two clients: "plain" sends one
/encode every ``--interval`` seconds and records each latency; "refiner" sends
/encode?refine=K requests back to back. Three arms, alternated ``--rounds`` times so that each
sees the same machine:

- ``alone``: the plain client only;
- ``refine_workers``: beside the refiner, refined encodes on the Engine's refine worker (now);
- ``network_worker``: beside the refiner, refined encodes run in the network worker's batches,
  as they would in a single-queue engine (a subclass here, for the comparison only).

    python scripts/refine_serving.py [--seconds 20] [--refine 10] [--interval 0.5]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from vlmcodec.bench.common import positive_arg
from serve_load import (back_to_back, crop_384x256, latency_summary, paced, rounds_of, serving_parser, warm_codec,
                        write_results)


def _network_worker_engine():
    """An Engine whose refined encodes queue for the network worker with the plain ones."""
    from vlmcodec.runtime import Engine
    from vlmcodec.runtime.request import Kind, Status

    class NetworkWorkerRefine(Engine):
        def _submit_refined(self, req):
            self._enqueue(req)

        def _run_networks(self, live):
            if live[0].kind is not Kind.ENCODE or live[0].budget is not None:
                return super()._run_networks(live)
            for steps in sorted({r.refine for r in live}):
                group = [r for r in live if r.refine == steps]
                y, z = self.codec.analyse([r.payload.pixels for r in group], [r.payload.quality for r in group],
                                          refine=steps)
                for j, r in enumerate(group):
                    r.status = Status.CODING
                    self._submit_coding(self._entropy_encode, r, y[j], z[j])

    return NetworkWorkerRefine


def run_once(codec, image, arm: str, seconds: float, interval: float, steps: int) -> dict:
    from vlmcodec.runtime import Engine, running_server

    refined: list[float] = []

    def refine(remote) -> str:
        t0 = time.perf_counter()
        remote.encode(image, quality=50, refine=steps)
        refined.append(time.perf_counter() - t0)
        return "refined"

    engine_class = _network_worker_engine() if arm == "network_worker" else Engine
    with running_server(engine_class(codec, block=False, max_queue=64), max_refine=steps) as server:
        stop = time.monotonic() + seconds
        threads, _ = back_to_back(server.url, 0 if arm == "alone" else 1, stop, refine, retries=0, timeout_s=600)
        # the refiner's first request is running by the first plain one
        latencies, _ = paced(server.url, interval, stop, lambda remote: remote.encode(image, quality=50),
                             retries=0, timeout_s=600)
        for t in threads:
            t.join()
    summary = latency_summary("plain", latencies)
    return {"arm": arm, **summary, "plain_max_ms": 1000 * max(latencies), "refined_served": len(refined),
            "refined_p50_s": float(np.median(refined)) if refined else None}


def main() -> int:
    p = serving_parser(__doc__, "refine_serving.json", paced_client="plain")
    p.add_argument("--refine", type=positive_arg, default=10, help="the refiner's steps")
    args = p.parse_args()

    image = crop_384x256()
    codec = warm_codec(image, refine=True)
    runs = rounds_of(["alone", "refine_workers", "network_worker"], args.rounds,
                     lambda arm: run_once(codec, image, arm, args.seconds, args.interval, args.refine))
    write_results(args.out, sys.argv[1:], {"seconds": args.seconds, "interval_s": args.interval,
                                           "refine": args.refine}, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
