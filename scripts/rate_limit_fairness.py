"""What ``serve --rate-limit`` buys a polite client while another floods the server.

One in-process server (the default model, an Engine, a CodecServer with two tokens) and two
clients: "flood" sends /encode requests back to back from several threads (a 429 is dropped and
the thread goes on at once), "polite" sends one every ``--interval`` seconds and records each
latency. Run without a limit, then with ``--rate-limit`` per client, and again in that order
(``--rounds``), so that both settings see the same machine; reports the polite client's median
and p95 latency and how many requests of each client were served.

    python scripts/rate_limit_fairness.py [--seconds 20] [--flood-threads 6] [--rate-limit 2]
"""

from __future__ import annotations

import sys
import time

from vlmcodec.bench.common import positive_arg
from vlmcodec.bench.throughput import finite_arg

from serve_load import (back_to_back, crop_384x256, latency_summary, paced, rounds_of, serving_parser, warm_codec,
                        write_results)


def run_once(codec, image, seconds: float, flood_threads: int, interval: float, rate_limit: float | None) -> dict:
    from vlmcodec.runtime import Engine, RateLimited, running_server

    def flood(remote) -> str:
        try:
            remote.encode(image, quality=50)
            return "flood"
        except RateLimited:
            return "flood_refused"

    tokens = {"flood": "tok-flood", "polite": "tok-polite"}
    with running_server(Engine(codec, block=False, max_queue=64), auth_token=tokens, rate_limit=rate_limit,
                           max_connections=64) as server:
        stop = time.monotonic() + seconds
        threads, counts = back_to_back(server.url, flood_threads, stop, flood, token="tok-flood", retries=0)
        latencies, errors = paced(server.url, interval, stop, lambda remote: remote.encode(image, quality=50),
                                  token="tok-polite", retries=0)
        for t in threads:
            t.join()
    other = sum(n for key, n in counts.items() if key not in ("flood", "flood_refused"))
    return {"rate_limit": rate_limit, **latency_summary("polite", latencies), "polite_errors": errors,
            "flood": counts.get("flood", 0), "flood_refused": counts.get("flood_refused", 0),
            "flood_other_errors": other}


def main(argv: list[str] | None = None) -> int:
    p = serving_parser(__doc__, "rate_limit_fairness.json", paced_client="polite")
    p.add_argument("--flood-threads", type=positive_arg, default=6)
    p.add_argument("--rate-limit", type=finite_arg(0, above=True), default=2.0, help="per client, requests/s, in the limited runs")
    args = p.parse_args(argv)

    image = crop_384x256()
    codec = warm_codec(image)
    runs = rounds_of([None, args.rate_limit], args.rounds,
                     lambda limit: run_once(codec, image, args.seconds, args.flood_threads, args.interval, limit))
    write_results(args.out, sys.argv[1:], {"seconds": args.seconds, "flood_threads": args.flood_threads,
                                           "interval_s": args.interval}, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
