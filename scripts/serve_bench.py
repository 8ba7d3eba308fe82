"""Side by side: requests through `vlmcodec serve` (HTTP, server in its own process) against the
same requests submitted to an in-process Engine, the same settings, alternating round by round.
Each arm runs in fresh processes; clients are threads keeping ``--concurrency`` requests in
flight; each arm is warmed up with one pass first. Reported: images per second, and the
HTTP/in-process ratio.

    python scripts/serve_bench.py --rounds 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from _served import KODAK, start_server

IN_PROCESS = r"""
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from vlmcodec import Codec
from vlmcodec.runtime import Engine
from vlmcodec.image_io import image_bytes, load_image
a = json.loads(sys.argv[1])
files = sorted(Path(a["images"]).glob("*.png"))[: a["limit"]]
engine = Engine(Codec(), max_batch=8, max_delay_ms=5, block=False, max_queue=1024)
images = [load_image(f) for f in files]
streams = [engine.submit_encode(im, a["quality"]).result() for im in images]
def job(i):
    if a["job"] == "encode":
        return engine.submit_encode(load_image(files[i]), a["quality"]).result()
    img = engine.submit_decode(streams[i]).result()
    return image_bytes(img, "PNG", 1) if a["format"] == "png" else img.tobytes()
out = {}
with ThreadPoolExecutor(a["concurrency"]) as pool:
    list(pool.map(job, range(len(files))))  # warm-up pass
    t = time.perf_counter(); list(pool.map(job, range(len(files)))); out["wall_s"] = time.perf_counter() - t
engine.shutdown()
print(json.dumps(out))
"""


def http_arm(args, files: list[Path], streams: list[bytes]) -> float:
    proc, url = start_server()
    try:
        port = urlsplit(url).port
        bodies = [f.read_bytes() for f in files]

        def job(i: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            if args.job == "encode":
                conn.request("POST", f"/encode?quality={args.quality}", body=bodies[i])
            else:
                conn.request("POST", f"/decode?format={args.format}", body=streams[i])
            resp = conn.getresponse()
            resp.read()
            conn.close()
            if resp.status != 200:
                raise SystemExit(f"HTTP {resp.status}")

        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(job, range(len(files))))  # warm-up pass
            t = time.perf_counter()
            list(pool.map(job, range(len(files))))
            return time.perf_counter() - t
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def in_process_arm(args) -> float:
    spec = {"images": args.images, "limit": args.limit, "quality": args.quality, "job": args.job,
            "format": args.format, "concurrency": args.concurrency}
    res = subprocess.run([sys.executable, "-c", IN_PROCESS, json.dumps(spec)], capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])["wall_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=str(KODAK))
    ap.add_argument("--limit", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--quality", type=float, default=50.0)
    ap.add_argument("--jobs", default="encode,decode")
    ap.add_argument("--format", default="raw", choices=("raw", "png"), help="decode answers as raw pixels or PNG")
    args = ap.parse_args()
    from vlmcodec import Codec

    files = sorted(Path(args.images).glob("*.png"))[: args.limit]
    codec = Codec()
    streams = [codec.encode(str(f), args.quality) for f in files]
    del codec
    for job in args.jobs.split(","):
        args.job = job
        walls: dict[str, list[float]] = {"in-process Engine": [], "HTTP (vlmcodec serve)": []}
        for r in range(args.rounds):
            order = list(walls) if r % 2 == 0 else list(walls)[::-1]
            for arm in order:
                wall = in_process_arm(args) if arm.startswith("in-process") else http_arm(args, files, streams)
                walls[arm].append(wall)
                print(f"round {r + 1} {job} {arm}: {len(files) / wall:.2f} img/s", flush=True)
        med = {arm: statistics.median(w) for arm, w in walls.items()}
        base = med["in-process Engine"]
        what = f"{job}" + (f" ({args.format})" if job == "decode" else "")
        print(f"{what}, {len(files)} images, concurrency {args.concurrency}: " + ", ".join(
            f"{arm} {len(files) / m:.2f} img/s ({base / m:.2f}x)" for arm, m in med.items()))


if __name__ == "__main__":
    main()
