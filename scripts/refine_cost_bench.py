"""What encoder-side refinement costs per image, side by side: ``Codec.encode(..., refine=K)`` at
the consumer's scale (short side 256) for several arms — K steps, spelt as in the bench codec
names after ``vlmcodec+r`` (``8v168``: teacher view 168 px, ``10bf16``: a bfloat16 teacher; ``0``:
one pass), each made by ``bench.rd.make_codec`` — on the first ``--images`` Kodak images, each
image's arms in a rotating order, ``--rounds`` times; the median seconds per image of each arm.
Rates and quality come from ``scripts/refine_eval.sh``.

    python scripts/refine_cost_bench.py [--arms 0,2,3,5] [--images 6] [--quality 50] [--rounds 2]
        [--out results/refine_c08abdce/cost.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", default="0,2,3,5", help="comma-separated: 0 (one pass), K, KvAxB, Kbf16")
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--quality", type=float, default=50)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="write the medians here as JSON")
    a = p.parse_args()
    arms = a.arms.split(",")

    from vlmcodec.bench.rd import make_codec
    from vlmcodec.image_io import load_image

    try:
        codecs = {arm: make_codec("vlmcodec@256" if arm == "0" else f"vlmcodec+r{arm}@256", threads=a.threads)
                  for arm in arms}
    except ValueError as e:
        raise SystemExit(f"--arms: {e}") from None

    torch.set_num_threads(a.threads)
    files = sorted((ROOT.parent / "shared/data/kodak").glob("*.png"))[: a.images]
    if not files:
        raise SystemExit("no Kodak images under ../shared/data/kodak")
    images = [load_image(f) for f in files]
    for c in codecs.values():  # warm-up: the model's and the teacher's load, first calls
        c.encode(images[0], a.quality)
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    for r in range(a.rounds):
        for i, image in enumerate(images):
            k = (i + r) % len(arms)
            for arm in arms[k:] + arms[:k]:
                t0 = time.perf_counter()
                codecs[arm].encode(image, a.quality)
                times[arm].append(time.perf_counter() - t0)
    medians = {arm: statistics.median(t) for arm, t in times.items()}
    for arm, m in medians.items():
        print(f"refine {arm}: {m:.3f} s per image (median of {len(times[arm])})")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"images": len(images), "quality": a.quality, "rounds": a.rounds,
                                           "threads": a.threads, "median_s": medians, "times_s": times},
                                          indent=2) + "\n")
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
