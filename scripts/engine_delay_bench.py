"""The Engine's batching delay on a CPU backend: ``max_delay_ms=5`` (the old default) against 0
(the default now on backends that run a batch's items one at a time), side by side.

Per setting, in alternating rounds, one process: the median latency of a lone client (encode,
then decode, one request at a time) and the throughput of ``--concurrency`` clients sending
the 24 Kodak images (crops, ``--crop``) back to back.

    python scripts/engine_delay_bench.py [--rounds 3] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(codec, engine_cls, delay: float, image, data, images, concurrency: int, lone: int) -> dict:
    with engine_cls(codec, max_delay_ms=delay) as engine:
        engine.submit_encode(image, 50).result()
        enc, dec = [], []
        for _ in range(lone):
            t = time.perf_counter()
            engine.submit_encode(image, 50).result()
            enc.append(time.perf_counter() - t)
            t = time.perf_counter()
            engine.submit_decode(data).result()
            dec.append(time.perf_counter() - t)
        with ThreadPoolExecutor(concurrency) as clients:
            t = time.perf_counter()
            streams = list(clients.map(lambda im: engine.submit_encode(im, 50).result(), images))
            t_enc = time.perf_counter() - t
            t = time.perf_counter()
            list(clients.map(lambda s: engine.submit_decode(s).result(), streams))
            t_dec = time.perf_counter() - t
    return {"max_delay_ms": delay, "lone_encode_ms": 1000 * statistics.median(enc),
            "lone_decode_ms": 1000 * statistics.median(dec), "encode_img_s": len(images) / t_enc,
            "decode_img_s": len(images) / t_dec}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--lone", type=int, default=30, help="lone requests of each kind per round")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "runtime" / "engine_delay.json")
    args = p.parse_args()

    from vlmcodec import Codec
    from vlmcodec.image_io import load_image
    from vlmcodec.runtime import Engine

    kodak = sorted((ROOT.parent / "shared" / "data" / "kodak").glob("*.png"))
    images = [load_image(f)[:256, :384] for f in kodak]
    codec = Codec()
    image = images[22]
    data = codec.encode(image, 50)
    rows = []
    for r in range(args.rounds):
        for delay in ((5.0, 0.0) if r % 2 == 0 else (0.0, 5.0)):
            row = measure(codec, Engine, delay, image, data, images, args.concurrency, args.lone)
            row["round"] = r
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {key: {str(d): statistics.median(x[key] for x in rows if x["max_delay_ms"] == d) for d in (5.0, 0.0)}
               for key in ("lone_encode_ms", "lone_decode_ms", "encode_img_s", "decode_img_s")}
    print(json.dumps(summary))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python scripts/engine_delay_bench.py " + " ".join(sys.argv[1:]),
                                    "images": "24 Kodak, [:256, :384]", "concurrency": args.concurrency,
                                    "rows": rows, "summary": summary}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
