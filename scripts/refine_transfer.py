"""Does refinement's token-similarity gain transfer beyond the view it optimises?

Refinement (``Codec(refine=K)``) minimises DINOv2 token distortion with the teacher at a 224-px
short side, the same view the ``teacher-sim`` metric takes. This script measures the one-pass and
the refined encoder on views the objective never saw — the teacher at 336 and 448 px — and on
Lite0's KL (another network), on the first N Kodak images at a few qualities. The one-pass
encoder also runs on a dense quality grid; for each refined point and each measure, "rate at
equal value" is the one-pass rate (interpolated in log-bpp) that reaches the refined value,
relative to the refined point's own rate (negative: refinement needs fewer bits).

    python scripts/refine_transfer.py [--images 8] [--steps 30] [--qualities 15,70] [--views 224[,336]]
        → results/refine/transfer.md (+ .json)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from vlmcodec import Codec
from vlmcodec.bench.common import kodak_dir
from vlmcodec.bench.rd import list_images, load_rgb
from vlmcodec.bench.semantic import Lite0, Lite0KL, TeacherSimilarity
from vlmcodec.teacher import load_teacher

SIDES = (224, 336, 448)
REFERENCE_QUALITIES = (0, 15, 30, 50, 70, 85, 100)


def _measure(codec, images, q, sims, kl) -> dict:
    t0 = time.perf_counter()
    streams = [codec.encode(im, q) for im in images]
    enc_s = (time.perf_counter() - t0) / len(images)
    decoded = [codec.decode(s) for s in streams]
    row = {"quality": q, "enc_s": enc_s,
           "bpp": float(np.mean([8 * len(s) / (im.shape[0] * im.shape[1]) for s, im in zip(streams, images)]))}
    for side, m in sims.items():
        row[f"teacher-sim s{side}"] = float(np.mean(m.compute_batch(images, decoded)))
    row["effnet-kl"] = float(np.mean(kl.compute_batch(images, decoded)))
    return row


def rate_at_equal_value(reference: list[dict], key: str, value: float, bpp: float, higher_is_better: bool) -> float | None:
    """``bpp`` / (the one-pass rate reaching ``value`` on ``key``, log-bpp interpolation along the
    reference curve sorted by rate) − 1: negative when ``bpp`` is fewer bits; None outside the
    reference's range."""
    pts = sorted((r["bpp"], r[key] if higher_is_better else -r[key]) for r in reference)
    v = value if higher_is_better else -value
    for (b0, v0), (b1, v1) in zip(pts, pts[1:]):
        if v0 <= v <= v1 and v1 > v0:
            t = (v - v0) / (v1 - v0)
            return float(bpp / np.exp((1 - t) * np.log(b0) + t * np.log(b1)) - 1)
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--qualities", default="15,70")
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--views", default="224", help="the refinement objective's teacher views (short sides)")
    p.add_argument("--reference", type=Path, help="a transfer.json whose one-pass curve to reuse (same images)")
    p.add_argument("--out", type=Path, default=Path("results/refine/transfer.md"))
    a = p.parse_args()
    torch.set_num_threads(2)
    qualities = [float(q) for q in a.qualities.split(",")]
    images = [load_rgb(f) for f in list_images(kodak_dir(), a.images)]
    teacher = load_teacher("dinov2-vits14")
    sims = {s: TeacherSimilarity(teacher, short_side=s) for s in SIDES}
    kl = Lite0KL(Lite0())
    views = tuple(int(v) for v in a.views.split(","))
    refined = Codec(short_side=a.short_side, threads=2, refine=a.steps, refine_views=views)
    encoders = {"one-pass": Codec(short_side=a.short_side, threads=2), f"refine {a.steps}": refined}
    if a.reference:
        reference = json.loads(a.reference.read_text())["reference"]
    else:
        reference = [_measure(encoders["one-pass"], images, q, sims, kl) for q in REFERENCE_QUALITIES]
    for r in reference:
        print(json.dumps({"encoder": "one-pass", **r}), flush=True)
    rows = []
    for q in qualities:
        row = {"encoder": f"refine {a.steps}", **_measure(encoders[f"refine {a.steps}"], images, q, sims, kl)}
        for key in [f"teacher-sim s{side}" for side in SIDES] + ["effnet-kl"]:
            row[f"{key} saving"] = rate_at_equal_value(reference, key, row[key], row["bpp"], key != "effnet-kl")
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = [f"teacher-sim s{side}" for side in SIDES] + ["effnet-kl"]
    cols = ["bpp"] + keys + ["enc_s"]
    fmt = lambda r, c: f"{r[c]:.1f} s" if c == "enc_s" else f"{r[c]:.4f}"
    lines = [f"# Refinement: transfer to views the objective did not see (first {a.images} Kodak images, "
             f"short side {a.short_side})", "",
             "Command: `python scripts/refine_transfer.py --images {} --steps {} --qualities {} --views {}`".format(
                 a.images, a.steps, a.qualities, a.views), "",
             f"The objective's teacher views: {', '.join(f's{v}' for v in views)} (DINOv2 at that short side); the other "
             "columns are the same teacher at views it never optimised; effnet-kl is another network (nats, lower is "
             "better). "
             "Means over the images.", "",
             "| quality | encoder | " + " | ".join(cols) + " |", "|---|---|" + "---:|" * len(cols)]
    for r in reference + rows:
        lines.append(f"| q{r['quality']:g} | {r['encoder'] if 'encoder' in r else 'one-pass'} | "
                     + " | ".join(fmt(r, c) for c in cols) + " |")
    lines += ["", "Rate of each refined point against the one-pass curve at equal value (refined bpp / one-pass bpp "
              "reaching the same value − 1; negative = refinement needs fewer bits; – = outside the one-pass range):", "",
              "| quality | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for r in rows:
        cells = ["–" if r[f"{k} saving"] is None else f"{100 * r[f'{k} saving']:+.1f} %" for k in keys]
        lines.append(f"| q{r['quality']:g} | " + " | ".join(cells) + " |")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    a.out.with_suffix(".json").write_text(json.dumps({"args": vars(a) | {"out": str(a.out)}, "reference": reference, "rows": rows}, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
