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
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run_once(codec, image, seconds: float, bulk_threads: int, interval: float, bulk_priority: int) -> dict:
    from vlmcodec.runtime import Engine, RemoteCodec
    from vlmcodec.runtime.server import CodecServer, serve_in_thread

    engine = Engine(codec, block=False, max_queue=64)
    server = CodecServer(engine, "127.0.0.1", 0, max_connections=64)
    serve_in_thread(server)
    stop = time.monotonic() + seconds
    served = {"bulk": 0, "bulk_errors": 0}
    lock = threading.Lock()

    def bulk() -> None:
        with RemoteCodec(server.url, retries=0) as remote:
            while time.monotonic() < stop:
                try:
                    remote.encode(image, quality=50, priority=bulk_priority)
                    key = "bulk"
                except Exception:  # noqa: BLE001 — a full queue (503) and the like: counted, not fatal
                    key = "bulk_errors"
                with lock:
                    served[key] += 1

    threads = [threading.Thread(target=bulk) for _ in range(bulk_threads)]
    for t in threads:
        t.start()
    latencies = []
    errors = 0
    with RemoteCodec(server.url, retries=0) as interactive:
        time.sleep(1.0)  # let the bulk traffic fill the queue first
        while time.monotonic() < stop - interval:
            t0 = time.perf_counter()
            try:
                interactive.encode(image, quality=50)
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
    return {"bulk_priority": bulk_priority, "interactive_served": len(latencies), "interactive_errors": errors,
            "interactive_p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "interactive_p95_ms": float(np.percentile(lat, 95)) if len(lat) else None, **served}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0, help="length of each run")
    p.add_argument("--bulk-threads", type=int, default=6)
    p.add_argument("--interval", type=float, default=0.5, help="the interactive client's pace (s)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "serve" / "priority_serving.json")
    args = p.parse_args()

    from vlmcodec import Codec
    from vlmcodec.image_io import load_image

    image = load_image(ROOT.parent / "shared" / "data" / "kodak" / "kodim23.png")[:256, :384]
    codec = Codec()
    codec.encode(image, 50)  # first run out of the way
    runs = []
    for r in range(args.rounds):
        for bulk_priority in (0, -1):
            res = run_once(codec, image, args.seconds, args.bulk_threads, args.interval, bulk_priority)
            res["round"] = r
            runs.append(res)
            print(json.dumps(res), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python scripts/priority_serving.py " + " ".join(sys.argv[1:]),
                                    "image": "kodim23.png[:256, :384]", "seconds": args.seconds,
                                    "bulk_threads": args.bulk_threads, "interval_s": args.interval,
                                    "runs": runs}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
