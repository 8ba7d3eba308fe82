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

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run_once(codec, image, seconds: float, flood_threads: int, interval: float, rate_limit: float | None) -> dict:
    from vlmcodec.runtime import Engine, RateLimited, RemoteCodec
    from vlmcodec.runtime.server import CodecServer, serve_in_thread

    engine = Engine(codec, block=False, max_queue=64)
    server = CodecServer(engine, "127.0.0.1", 0, auth_token={"flood": "tok-flood", "polite": "tok-polite"},
                         rate_limit=rate_limit, max_connections=64)
    serve_in_thread(server)
    stop = time.monotonic() + seconds
    served = {"flood": 0, "flood_refused": 0, "flood_other_errors": 0}
    lock = threading.Lock()

    def flood() -> None:
        with RemoteCodec(server.url, token="tok-flood", retries=0) as remote:
            while time.monotonic() < stop:
                try:
                    remote.encode(image, quality=50)
                    key = "flood"
                except RateLimited:
                    key = "flood_refused"
                except Exception:  # noqa: BLE001 — a full queue (503) and the like: counted, not fatal
                    key = "flood_other_errors"
                with lock:
                    served[key] += 1

    threads = [threading.Thread(target=flood) for _ in range(flood_threads)]
    for t in threads:
        t.start()
    latencies = []
    errors = 0
    with RemoteCodec(server.url, token="tok-polite", retries=0) as polite:
        time.sleep(1.0)  # let the flood fill the queue first
        while time.monotonic() < stop - interval:
            t0 = time.perf_counter()
            try:
                polite.encode(image, quality=50)
                latencies.append(time.perf_counter() - t0)
            except Exception:  # noqa: BLE001
                errors += 1
            time.sleep(max(0.0, interval - (time.perf_counter() - t0)))
    for t in threads:
        t.join()
    server.shutdown()
    server.server_close()
    engine.shutdown()
    lat = np.array(latencies) * 1000
    return {"rate_limit": rate_limit, "polite_served": len(latencies), "polite_errors": errors,
            "polite_p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "polite_p95_ms": float(np.percentile(lat, 95)) if len(lat) else None, **served}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0, help="length of each run")
    p.add_argument("--flood-threads", type=int, default=6)
    p.add_argument("--interval", type=float, default=0.5, help="the polite client's pace (s)")
    p.add_argument("--rate-limit", type=float, default=2.0, help="per client, requests/s, in the limited runs")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "serve" / "rate_limit_fairness.json")
    args = p.parse_args()

    from vlmcodec import Codec
    from vlmcodec.image_io import load_image

    image = load_image(ROOT.parent / "shared" / "data" / "kodak" / "kodim23.png")[:256, :384]
    codec = Codec()
    codec.encode(image, 50)  # first run out of the way
    runs = []
    for r in range(args.rounds):
        for limit in (None, args.rate_limit):
            res = run_once(codec, image, args.seconds, args.flood_threads, args.interval, limit)
            res["round"] = r
            runs.append(res)
            print(json.dumps(res), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python scripts/rate_limit_fairness.py " + " ".join(sys.argv[1:]),
                                    "image": "kodim23.png[:256, :384]", "seconds": args.seconds,
                                    "flood_threads": args.flood_threads, "interval_s": args.interval,
                                    "runs": runs}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
