"""The runtime Engine on onnxruntime with batches run item by item (the CPU default) or whole,
side by side in one process: two codecs with 1-thread sessions, each under its own Engine
(one network worker per core), both warmed up with ``Engine.warmup`` at every batch size,
then timed in alternating rounds of Kodak requests.

    python scripts/onnxruntime_engine_item_by_item.py [--requests 24] [--concurrency 8] [--rounds 3]

Prints images/s per round and mode, and the median ratio item by item / whole.
"""

from __future__ import annotations

import argparse
import os
import statistics

from vlmcodec import Codec
from vlmcodec.bench.common import image_files
from vlmcodec.bench.throughput import with_engine
from vlmcodec.image_io import load_image
from vlmcodec.runtime import Engine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=24)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--quality", type=float, default=75.0)
    a = p.parse_args()
    images = [load_image(f) for f in image_files(None)]
    work = [images[i % len(images)] for i in range(a.requests)]
    engines, streams = {}, None
    for name, item in (("item", True), ("whole", False)):
        codec = Codec(backend="onnxruntime", threads=1, backend_options={"item_by_item": item})
        eng = Engine(codec, max_batch=a.max_batch, network_workers=os.cpu_count() or 1, max_queue=64)
        warm = eng.warmup(images, a.quality, batch_sizes=range(1, a.max_batch + 1))
        print(f"{name}: warm-up {sum(r.get('seconds', 0) for r in warm):.1f} s", flush=True)
        streams = streams or [codec.encode(im, a.quality) for im in work]
        engines[name] = eng
    rates: dict = {(n, m): [] for n in engines for m in ("encode", "decode")}
    for r in range(a.rounds):
        for name in (("item", "whole") if r % 2 == 0 else ("whole", "item")):
            eng = engines[name]
            enc = with_engine(lambda im: eng.submit_encode(im, a.quality), work, a.concurrency)["images_per_s"]
            dec = with_engine(eng.submit_decode, streams, a.concurrency)["images_per_s"]
            rates[name, "encode"].append(enc)
            rates[name, "decode"].append(dec)
            print(f"round {r} {name}: encode {enc:.2f} img/s, decode {dec:.2f} img/s", flush=True)
    for m in ("encode", "decode"):
        item, whole = statistics.median(rates["item", m]), statistics.median(rates["whole", m])
        print(f"{m}: item by item {item:.2f} img/s, whole {whole:.2f} img/s, ratio {item / whole:.2f}")
    for eng in engines.values():
        eng.shutdown()


if __name__ == "__main__":
    main()
