"""Scale-table indexes of the exact h_s's scales: the table lookup (``Codec._exact_scale_index``)
against ``build_indexes``'s bucketize, side by side on the same scales (arms alternating), and the
end-to-end encode and decode with either. Checks the indexes and streams are the same.

    python scripts/scale_index_bench.py [--images 6] [--rounds 7] [--threads 2]
"""

import argparse
import statistics
import time
from pathlib import Path

import torch

from vlmcodec import Codec
from vlmcodec.image_io import load_image

p = argparse.ArgumentParser()
p.add_argument("--kodak", default="../shared/data/kodak")
p.add_argument("--images", type=int, default=6)
p.add_argument("--rounds", type=int, default=7)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
codec = Codec(threads=a.threads)
files = sorted(Path(a.kodak).glob("*.png"))[: a.images]
images = [load_image(f) for f in files]
scales = []
for img in images:
    prep = codec.prepare(img, 50)
    _, z = codec.analyse([prep.pixels], [prep.quality])
    m = codec.medians.reshape(-1, 1, 1)
    scales.append(codec.exact_hs((torch.round(z[0] - m) + m)[None])[0])
assert all(torch.equal(codec._exact_scale_index(s), codec._scale_index(s)) for s in scales)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


lookup = codec._exact_scale_index
arms: dict[str, list[float]] = {"bucketize": [], "table": []}
ends: dict[str, list[float]] = {"bucketize": [], "table": []}
streams = {}
for _ in range(a.rounds):
    for arm in ("bucketize", "table"):
        arms[arm].append(timed(lambda: [(codec._scale_index if arm == "bucketize" else lookup)(s) for s in scales]))
        codec._exact_scale_index = codec._scale_index if arm == "bucketize" else lookup
        out = []
        ends[arm].append(timed(lambda: out.extend(codec.decode(codec.encode(img, 50)) for img in images)))
        streams[arm] = [codec.encode(img, 50) for img in images[:2]]
        codec._exact_scale_index = lookup
assert streams["bucketize"] == streams["table"]
med = {k: statistics.median(v) for k, v in arms.items()}
end = {k: statistics.median(v) for k, v in ends.items()}
print(f"{len(images)} Kodak images, {a.rounds} rounds, {a.threads} threads, medians")
print(f"indexes: bucketize {1e3 * med['bucketize']:.2f} ms, table {1e3 * med['table']:.2f} ms: "
      f"{med['table'] / med['bucketize']:.2f}x")
print(f"encode + decode: bucketize {end['bucketize']:.3f} s, table {end['table']:.3f} s: "
      f"{end['table'] / end['bucketize']:.3f}x")
print("indexes and streams identical")
