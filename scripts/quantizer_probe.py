"""Other quantizers for y at encode time, against rounding: the decoder is unchanged (ŷ = s + μ),
only the symbols the encoder chooses differ. Two families:

- ``dz:D`` — a dead zone: s = sign(r)·floor(|r| + 0.5 − D), r = y − μ (D > 0 favours the cheap
  symbols near the mean; D < 0 the other way);
- ``rdo:L`` — per element the cheaper of floor(r) and ceil(r) by bits + L·(r − s)², the bits
  from the discretized Gaussian of the scale-table entry the coder uses.

Each arm codes the Kodak images at the consumer's scale (short side 256) at the same qualities
and is scored as ``vlmcodec bench rd`` scores (PSNR, DINOv2 token similarity, Lite0 KL, all
against the original); the report gives each arm's BD-rate against rounding with a 95 % paired
bootstrap interval over the images.

    python scripts/quantizer_probe.py dz:0.1 rdo:20 [--qualities 10,30,50,70,90] [--limit N]
        → results/quantizer_probe/{probe.json,report.md}
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
METRICS = (("psnr", True), ("teacher-sim", True), ("effnet-kl", False))


def parse_arm(text: str) -> tuple[str, float]:
    kind, _, value = text.partition(":")
    if kind not in ("dz", "rdo") or not value:
        raise argparse.ArgumentTypeError(f"an arm is dz:D or rdo:L, got {text!r}")
    return kind, float(value)


def choose_symbols(r: np.ndarray, scales: np.ndarray, kind: str, value: float) -> np.ndarray:
    """The symbols of residuals ``r`` = y − μ under an arm (``round`` for the stream's own rule)."""
    if kind == "round":
        return np.round(r)
    if kind == "dz":
        return np.sign(r) * np.floor(np.abs(r) + 0.5 - value)
    from scipy.stats import norm

    def bits(s: np.ndarray) -> np.ndarray:
        p = norm.cdf((s + 0.5) / scales) - norm.cdf((s - 0.5) / scales)
        return -np.log2(np.maximum(p, 1e-12))

    lo = np.floor(r)
    hi = lo + 1
    return np.where(bits(lo) + value * (r - lo) ** 2 <= bits(hi) + value * (hi - r) ** 2, lo, hi)


def probe_codec(kind: str, value: float, **kwargs):
    from vlmcodec import Codec

    class ProbeCodec(Codec):
        def _y_symbols(self, y, means, indexes):
            r = (y.to(torch.float64) - means).numpy()
            scales = self.scale_table64.numpy()[indexes.numpy()]
            return choose_symbols(r, scales, kind, value).astype(np.int32)

    return ProbeCodec(**kwargs)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("arms", nargs="+", type=parse_arm, help="dz:D or rdo:L, compared against rounding")
    p.add_argument("--qualities", default="10,30,50,70,90")
    p.add_argument("--images", default=str(ROOT.parent / "shared/data/kodak"))
    p.add_argument("--limit", type=int)
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--out", default=str(ROOT / "results/quantizer_probe"))
    a = p.parse_args()

    from vlmcodec.bench.metrics import psnr
    from vlmcodec.bench.report import bd_cell
    from vlmcodec.bench.semantic import semantic_metrics
    from vlmcodec.image_io import load_image

    files = sorted(Path(a.images).glob("*.png"))[: a.limit]
    images = [load_image(f) for f in files]
    tsim, _, kl = semantic_metrics()
    scorers = {"psnr": psnr, "teacher-sim": tsim.compute, "effnet-kl": kl.compute}
    qualities = [float(q) for q in a.qualities.split(",")]
    arms = [("round", 0.0)] + a.arms
    curves: dict[str, list[dict]] = {}
    for kind, value in arms:
        codec = probe_codec(kind, value, short_side=a.short_side)
        name = "round" if kind == "round" else f"{kind}:{value:g}"
        t0, points = time.time(), []
        for q in qualities:
            per = {"bpp": [], **{m: [] for m in scorers}}
            for img in images:
                data = codec.encode(img, quality=q)
                dec = codec.decode(data)
                per["bpp"].append(len(data) * 8 / (img.shape[0] * img.shape[1]))
                for m, score in scorers.items():
                    per[m].append(float(score(img, dec)))
            points.append({"quality": q, **{k: float(np.mean(v)) for k, v in per.items()}, "per_image": per})
        curves[name] = points
        print(f"{name}: {time.time() - t0:.0f} s, bpp " + " ".join(f"{pt['bpp']:.4f}" for pt in points), flush=True)

    lines = ["| arm | " + " | ".join(f"{m} BD-rate vs round" for m, _ in METRICS) + " |",
             "|---|" + "---:|" * len(METRICS)]
    for name, points in curves.items():
        if name == "round":
            continue
        cells = [bd_cell(curves["round"], points, m, higher) for m, higher in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps({"images": [f.name for f in files], "qualities": qualities,
                                                "short_side": a.short_side, "curves": curves}, indent=1))
    report = ("# Quantizers for y at encode time vs rounding\n\n"
              f"`python scripts/quantizer_probe.py {' '.join(n for n in curves if n != 'round')}` on {len(files)} "
              f"images at short side {a.short_side}, qualities {a.qualities}; positive = more bits than rounding "
              "for the same score; 95 % paired bootstrap interval over the images (1000 draws).\n\n"
              + "\n".join(lines) + "\n")
    (out / "report.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
