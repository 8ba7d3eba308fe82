"""The refinement's teacher in bfloat16 (``Codec(refine_bf16=True)``) against float32, side by
side: the time of a refined encode per image, in alternating rounds, on the first ``--images``
Kodak images at the consumer's scale (short side 256), and the streams' bpp, DINOv2 token
similarity and Lite0 KL (the evaluators as ``vlmcodec bench rd`` runs them, in float32).

    python scripts/refine_bf16_bench.py [--images 8] [--steps 10] [--qualities 15,50] [--rounds 2]
        [--views 224,336] → results/refine_bf16/speed.json (with --views: speed_views.json)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--qualities", default="15,50")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--views", help="the refinement's teacher views, comma-separated (refine_views; default 224)")
    p.add_argument("--out", help="default: results/refine_bf16/speed.json, or speed_views.json with --views")
    a = p.parse_args()
    views = tuple(int(v) for v in a.views.split(",")) if a.views else None
    a.out = a.out or str(ROOT / "results/refine_bf16" / ("speed_views.json" if views else "speed.json"))

    from vlmcodec import Codec
    from vlmcodec.bench.semantic import Lite0, Lite0KL, TeacherSimilarity
    from vlmcodec.image_io import load_image

    torch.set_num_threads(a.threads)
    files = sorted((ROOT.parent / "shared/data/kodak").glob("*.png"))[: a.images]
    images = [load_image(f) for f in files]
    qualities = [float(q) for q in a.qualities.split(",")]
    codecs = {name: Codec(short_side=256, threads=a.threads, refine_bf16=(name == "bfloat16"), refine_views=views)
              for name in ("float32", "bfloat16")}
    for codec in codecs.values():  # first runs (teacher load, allocations) outside the timing
        codec.encode(images[0], qualities[0], refine=1)
    seconds = {name: {q: [] for q in qualities} for name in codecs}
    streams: dict[str, dict[float, list[bytes]]] = {}
    for r in range(a.rounds):
        order = list(codecs) if r % 2 == 0 else list(codecs)[::-1]
        for name in order:
            for q in qualities:
                t = time.perf_counter()
                out = [codecs[name].encode(im, q, refine=a.steps) for im in images]
                seconds[name][q].append((time.perf_counter() - t) / len(images))
                streams.setdefault(name, {})[q] = out
    sim, kl = TeacherSimilarity(), Lite0KL(Lite0())
    result = {"images": len(images), "steps": a.steps, "views": list(views or (224,)), "threads": a.threads,
              "rounds": a.rounds,
              "cpu_bf16": "avx512_bf16" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else None,
              "by_quality": {}}
    for q in qualities:
        row = {}
        for name, codec in codecs.items():
            decoded = [codec.decode(s) for s in streams[name][q]]
            row[name] = {"s_per_image": [round(s, 3) for s in seconds[name][q]],
                         "bpp": float(np.mean([8 * len(s) / (im.shape[0] * im.shape[1])
                                               for s, im in zip(streams[name][q], images)])),
                         "teacher_sim": float(np.mean(sim.compute_batch(images, decoded))),
                         "effnet_kl": float(np.mean(kl.compute_batch(images, decoded)))}
        row["time_ratio"] = round(statistics.median(row["bfloat16"]["s_per_image"])
                                  / statistics.median(row["float32"]["s_per_image"]), 3)
        result["by_quality"][f"{q:g}"] = row
        print(f"q{q:g}: bfloat16 / float32 time {row['time_ratio']}x; " + "; ".join(
            f"{n}: {v['bpp']:.4f} bpp, token sim {v['teacher_sim']:.5f}, KL {v['effnet_kl']:.4f}, "
            f"{v['s_per_image']} s/image" for n, v in row.items() if n != "time_ratio"))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
