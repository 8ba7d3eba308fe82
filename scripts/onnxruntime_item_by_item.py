"""The onnxruntime backend on the CPU running a batch item by item (the default) or whole, side by
side in one process: the network stages of Kodak images, batched, in the batch sizes given.

    python scripts/onnxruntime_item_by_item.py 8,8,8,3,5,5 [--threads 1] [--images 8]

Each codec has its own sessions (and arenas) and has coded one image before; per batch size the two run one after the other,
alternating which goes first. Prints the seconds of ``Codec.analyse`` (pre-editor, g_a, h_a)
and ``Codec.synthesize`` (g_s) for each, the ratio item-by-item / whole, and whether the batch's
streams equal single calls' (the batch-invariance item-by-item guarantees).
"""

from __future__ import annotations

import argparse
import time

from vlmcodec import Codec
from vlmcodec.bench.common import image_files
from vlmcodec.image_io import load_image, padded_size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("batches", help="comma-separated batch sizes, run in this order")
    p.add_argument("--threads", type=int, default=1, help="session threads (default 1, as under the Engine)")
    p.add_argument("--images", type=int, default=8, help="Kodak images to draw batches from (one padded size)")
    p.add_argument("--quality", type=float, default=60.0)
    a = p.parse_args()
    codecs = {"item": Codec(backend="onnxruntime", threads=a.threads),
              "whole": Codec(backend="onnxruntime", threads=a.threads, backend_options={"item_by_item": False})}
    first = codecs["item"]
    imgs = [load_image(f) for f in image_files(None)]
    preps = [first.prepare(im, a.quality) for im in imgs]
    key = padded_size(*preps[0].pixels.shape[:2])
    preps = [pr for pr in preps if padded_size(*pr.pixels.shape[:2]) == key][: a.images]
    streams = [first.encode(pr.pixels, a.quality) for pr in preps]
    latents = [first.entropy_decode(s) for s in streams]
    codecs["whole"].decode(codecs["whole"].encode(preps[0].pixels, a.quality))  # both have run one image
    for r, n in enumerate(int(v) for v in a.batches.split(",")):
        batch, lat = [preps[i % len(preps)] for i in range(n)], [latents[i % len(latents)] for i in range(n)]
        times = {}
        for name in (("item", "whole") if r % 2 == 0 else ("whole", "item")):
            c = codecs[name]
            t = time.perf_counter()
            y, z = c.analyse([pr.pixels for pr in batch], [pr.quality for pr in batch])
            te = time.perf_counter() - t
            t = time.perf_counter()
            c.synthesize(lat)
            times[name] = (te, time.perf_counter() - t)
            if name == "whole":
                same = [c.entropy_encode(y[j], z[j], pr) for j, pr in enumerate(batch)] == \
                       [c.encode(pr.pixels, a.quality) for pr in batch]
        (ie, idd), (we, wd) = times["item"], times["whole"]
        print(f"batch {n}: analyse item {ie:.2f} s / whole {we:.2f} s = {ie / we:.2f}; "
              f"synthesize item {idd:.2f} / whole {wd:.2f} = {idd / wd:.2f}; "
              f"whole-batch streams equal single calls: {same}", flush=True)


if __name__ == "__main__":
    main()
