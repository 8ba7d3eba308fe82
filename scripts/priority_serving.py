"""What a low ``priority`` on bulk traffic buys an interactive client of the same server.

One in-process server (the default model, an Engine, a CodecServer) and two clients: "bulk"
sends /encode requests back to back from several threads, "interactive" sends one every
``--interval`` seconds and records each latency. Run with both at the default priority, then
with the bulk requests at ``?priority=-1`` (any client may lower its own), and again in that
order (``--rounds``), so that both settings see the same machine; reports the interactive
client's median and p95 latency and how many bulk requests were served.

    python scripts/priority_serving.py [--seconds 20] [--bulk-threads 6]
"""

from __future__ import annotations

import sys
import time

from vlmcodec.bench.common import positive_arg
from serve_load import (back_to_back, crop_384x256, latency_summary, paced, rounds_of, serving_parser, warm_codec,
                        write_results)


def run_once(codec, image, seconds: float, bulk_threads: int, interval: float, bulk_priority: int) -> dict:
    from vlmcodec.runtime import Engine, running_server

    def bulk(remote) -> str:
        remote.encode(image, quality=50, priority=bulk_priority)
        return "bulk"

    with running_server(Engine(codec, block=False, max_queue=64), max_connections=64) as server:
        stop = time.monotonic() + seconds
        threads, counts = back_to_back(server.url, bulk_threads, stop, bulk, retries=0)
        latencies, errors = paced(server.url, interval, stop, lambda remote: remote.encode(image, quality=50),
                                  retries=0)
        for t in threads:
            t.join()
    return {"bulk_priority": bulk_priority, **latency_summary("interactive", latencies),
            "interactive_errors": errors, "bulk": counts.get("bulk", 0),
            "bulk_errors": sum(n for key, n in counts.items() if key != "bulk")}


def main() -> int:
    p = serving_parser(__doc__, "priority_serving.json", paced_client="interactive")
    p.add_argument("--bulk-threads", type=positive_arg, default=6)
    args = p.parse_args()

    image = crop_384x256()
    codec = warm_codec(image)
    runs = rounds_of([0, -1], args.rounds,
                     lambda priority: run_once(codec, image, args.seconds, args.bulk_threads, args.interval, priority))
    write_results(args.out, sys.argv[1:], {"seconds": args.seconds, "bulk_threads": args.bulk_threads,
                                           "interval_s": args.interval}, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
