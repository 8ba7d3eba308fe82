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

import argparse
import sys
import time
from pathlib import Path

from serve_load import back_to_back, crop_384x256, in_process_server, latency_summary, paced, rounds_of, write_results

ROOT = Path(__file__).resolve().parents[1]


def run_once(codec, image, seconds: float, bulk_threads: int, interval: float, bulk_priority: int) -> dict:
    from vlmcodec.runtime import Engine

    def bulk(remote) -> str:
        remote.encode(image, quality=50, priority=bulk_priority)
        return "bulk"

    with in_process_server(Engine(codec, block=False, max_queue=64), max_connections=64) as server:
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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0, help="length of each run")
    p.add_argument("--bulk-threads", type=int, default=6)
    p.add_argument("--interval", type=float, default=0.5, help="the interactive client's pace (s)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "serve" / "priority_serving.json")
    args = p.parse_args()

    from vlmcodec import Codec

    image = crop_384x256()
    codec = Codec()
    codec.encode(image, 50)  # first run out of the way
    runs = rounds_of([0, -1], args.rounds,
                     lambda priority: run_once(codec, image, args.seconds, args.bulk_threads, args.interval, priority))
    write_results(args.out, sys.argv[1:], {"seconds": args.seconds, "bulk_threads": args.bulk_threads,
                                           "interval_s": args.interval}, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
