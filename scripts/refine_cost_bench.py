"""What encoder-side refinement costs per image, side by side: ``Codec.encode(..., refine=K)`` at
the consumer's scale (short side 256) for several arms — a number of steps, optionally with its
own teacher views (``KvAxB``: views A and B px, as the bench codec names spell them) — on the
first ``--images`` Kodak images, each image's arms in a rotating order, ``--rounds`` times; the
median seconds per image of each arm. Rates and quality come from ``scripts/refine_eval.sh``.

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


def parse_arm(text: str) -> tuple[int, tuple[int, ...] | None]:
    """'5' → (5, None); '8v168' → (8, (168,)); '10v224x336' → (10, (224, 336))."""
    steps, _, views = text.partition("v")
    return int(steps), (tuple(int(v) for v in views.split("x")) if views else None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", default="0,2,3,5", help="comma-separated: K or KvAxB")
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--quality", type=float, default=50)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="write the medians here as JSON")
    a = p.parse_args()
    arms = a.arms.split(",")
    parsed = {arm: parse_arm(arm) for arm in arms}

    from vlmcodec import Codec
    from vlmcodec.image_io import load_image

    torch.set_num_threads(a.threads)
    files = sorted((ROOT.parent / "shared/data/kodak").glob("*.png"))[: a.images]
    if not files:
        raise SystemExit("no Kodak images under ../shared/data/kodak")
    images = [load_image(f) for f in files]
    codecs = {views: Codec(threads=a.threads, refine_views=views) for _, views in parsed.values()}
    for c in codecs.values():  # warm-up: the teacher's load and first calls
        c.encode(images[0], a.quality, short_side=256, refine=1)
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    for r in range(a.rounds):
        for i, image in enumerate(images):
            k = (i + r) % len(arms)
            for arm in arms[k:] + arms[:k]:
                steps, views = parsed[arm]
                t0 = time.perf_counter()
                codecs[views].encode(image, a.quality, short_side=256, refine=steps)
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
