"""``Engine.encode_many`` / ``decode_many`` against a plain loop over ``Codec``, side by side.

The 24 Kodak images (or ``--images``), encoded at ``--quality`` then decoded, each way in turn
for ``--rounds`` rounds (the order alternating), one process, one codec; reports images per
second per round and the median ratio. Streams and pixels are checked equal.

    python scripts/engine_many_bench.py [--rounds 3] [--quality 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "kodak")
    p.add_argument("--quality", type=float, default=50.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "runtime" / "engine_many.json")
    args = p.parse_args()

    from vlmcodec import Codec
    from vlmcodec.image_io import load_image
    from vlmcodec.runtime import Engine

    images = [load_image(f) for f in sorted(args.images.glob("*.png"))]
    codec = Codec()
    reference = [codec.encode(img, args.quality) for img in images]  # first runs out of the way
    ways = {
        "loop": (lambda: [codec.encode(img, args.quality) for img in images],
                 lambda streams: [codec.decode(s) for s in streams]),
        "engine_many": None,
    }
    rows = []
    with Engine(codec) as engine:
        ways["engine_many"] = (lambda: list(engine.encode_many(images, args.quality)),
                               lambda streams: list(engine.decode_many(streams)))
        order = list(ways)
        for r in range(args.rounds):
            for name in (order if r % 2 == 0 else order[::-1]):
                encode, decode = ways[name]
                t0 = time.perf_counter()
                streams = encode()
                t1 = time.perf_counter()
                pixels = decode(streams)
                t2 = time.perf_counter()
                assert streams == reference, name
                if name == "loop":
                    loop_pixels = pixels
                else:
                    assert all(np.array_equal(a, b) for a, b in zip(pixels, loop_pixels)), name
                row = {"round": r, "way": name, "encode_img_s": len(images) / (t1 - t0),
                       "decode_img_s": len(images) / (t2 - t1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for kind in ("encode_img_s", "decode_img_s"):
        med = {w: statistics.median(r[kind] for r in rows if r["way"] == w) for w in ways}
        summary[kind] = {**med, "engine_many_over_loop": med["engine_many"] / med["loop"]}
    print(json.dumps(summary))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python scripts/engine_many_bench.py " + " ".join(sys.argv[1:]),
                                    "images": len(images), "quality": args.quality, "rows": rows,
                                    "summary": summary}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
