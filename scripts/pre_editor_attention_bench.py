"""Encode time of the default model with the pre-editor's attention as written before (explicit
matmul/softmax) and as it is now (``scaled_dot_product_attention``), side by side in one run:
the two alternate image by image so machine noise hits both alike. Also checks the streams.

    python scripts/pre_editor_attention_bench.py [--images ../shared/data/kodak] [--limit 24]
"""

from __future__ import annotations

import argparse
import statistics
import time

from vlmcodec import Codec
from vlmcodec.image_io import load_image
from vlmcodec.models.pre_editor import _Block, attention_ref
from vlmcodec.training.data import list_images

FUSED = _Block.attend
EXPLICIT = staticmethod(attention_ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="../shared/data/kodak")
    ap.add_argument("--limit", type=int, default=24)
    ap.add_argument("--quality", type=float, default=50)
    ap.add_argument("--short-side", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    codec = Codec(threads=a.threads)
    times = {"explicit": [], "fused": []}
    same = 0
    paths = list_images(a.images)[: a.limit]
    for i, p in enumerate(paths):
        img = load_image(p)
        order = ("explicit", "fused") if i % 2 == 0 else ("fused", "explicit")
        streams = {}
        for name in order:
            _Block.attend = EXPLICIT if name == "explicit" else FUSED
            codec.encode(img, a.quality, short_side=a.short_side)  # warm
            t0 = time.perf_counter()
            streams[name] = codec.encode(img, a.quality, short_side=a.short_side)
            times[name].append(time.perf_counter() - t0)
        same += streams["explicit"] == streams["fused"]
    _Block.attend = FUSED
    e, f = statistics.median(times["explicit"]), statistics.median(times["fused"])
    ratios = [x / y for x, y in zip(times["fused"], times["explicit"])]
    print(f"{len(paths)} images, q{a.quality:g}, short side {a.short_side}, {a.threads} threads")
    print(f"encode median: explicit {e * 1e3:.0f} ms, fused {f * 1e3:.0f} ms; "
          f"per-image ratio fused/explicit median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    print(f"byte-identical streams: {same} of {len(paths)}")


if __name__ == "__main__":
    main()
