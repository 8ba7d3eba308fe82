"""Paired comparison at equal file size, image by image: for each Kodak image and each quality of
an anchor codec (WebP by default), the anchor's file size is the budget, vlmcodec codes the same
image into at most that many bytes (``Codec.encode_to_size``), and both decoded images are scored
against the original (DINOv2 token similarity, EfficientNet-Lite0 KL, top-1 agreement on one view
and on ten views).

Where a BD-rate compares two curves averaged over the images and interpolated between their
points, this compares pairs: the same image, at most the same bytes. Reported per anchor quality:
the pairs (images vlmcodec could fit; an image whose budget is below vlmcodec's quality 0 is
counted apart; so is a pair where vlmcodec's quality 100 fits: its budget is above vlmcodec's
range, and it uses fewer bytes), both mean bpp, each metric's means, the mean paired difference (vlmcodec − anchor,
signed so that > 0 is better for vlmcodec) with its 95 % bootstrap interval over the images, and
wins / ties / losses.

    python scripts/matched_bytes_eval.py                                  # vs full-size WebP
    python scripts/matched_bytes_eval.py --anchor webp@256 --qualities 0,10,25,50,75
    python scripts/matched_bytes_eval.py --refine 10                      # the refined encoder (slow)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"


def _interval(diffs: np.ndarray, seed: int = 0, n_boot: int = 1000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(n_boot, len(diffs)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default=str(KODAK))
    p.add_argument("--limit", type=int)
    p.add_argument("--anchor", default="webp", help="a bench codec name (webp, jpeg, webp@256, ...)")
    p.add_argument("--qualities", default="0,5,15,30", help="the anchor's qualities (its sizes are the budgets)")
    p.add_argument("--short-side", type=int, default=256, help="vlmcodec's consumer scale (0: full size)")
    p.add_argument("--refine", type=int, default=0, help="vlmcodec's refinement steps (slow)")
    p.add_argument("--model", help="vlmcodec model (default: the bundled one)")
    p.add_argument("--out", default=str(ROOT / "results" / "matched_bytes"))
    args = p.parse_args()

    from vlmcodec.bench.rd import make_codec
    from vlmcodec.bench.semantic import semantic_metrics

    from vlmcodec import BudgetError, Codec
    from vlmcodec.bitstream import container
    from vlmcodec.image_io import load_image

    files = sorted(Path(args.images).glob("*.png"))[: args.limit]
    originals = [load_image(f) for f in files]
    anchor = make_codec(args.anchor)
    ok, why = anchor.available()
    if not ok:
        print(f"anchor {args.anchor} not available: {why}", file=sys.stderr)
        return 2
    codec = Codec(args.model, short_side=args.short_side or None, refine=args.refine)
    name = f"vlmcodec{f'+r{args.refine}' if args.refine else ''}{f'@{args.short_side}' if args.short_side else ''}"
    metrics = semantic_metrics(optional=True)
    report = {"anchor": args.anchor, "vlmcodec": name, "model": codec.fingerprint.hex(), "images": len(files),
              "points": []}
    t_start = time.perf_counter()
    for q in [float(v) for v in args.qualities.split(",")]:
        pairs, unfit, at_top = [], 0, 0
        for img in originals:
            a_data = anchor.encode(img, q)
            try:
                v_data = codec.encode_to_size(img, max_bytes=len(a_data))
            except BudgetError:
                unfit += 1
                continue
            at_top += container.unpack(v_data)[0].quality == 100  # the budget is above vlmcodec's range
            pairs.append((img, anchor.decode(a_data), codec.decode(v_data), len(a_data), len(v_data)))
        point = {"anchor_quality": q, "pairs": len(pairs), "unfit": unfit, "vlmcodec_at_quality_100": at_top}
        if pairs:
            imgs = [p[0] for p in pairs]
            px = np.array([i.shape[0] * i.shape[1] for i in imgs], dtype=np.float64)
            point["bpp_anchor"] = float(np.mean(8 * np.array([p[3] for p in pairs]) / px))
            point["bpp_vlmcodec"] = float(np.mean(8 * np.array([p[4] for p in pairs]) / px))
            assert all(p[4] <= p[3] for p in pairs)  # the premise: never more bytes than the anchor
            for m in metrics:
                a = np.array(m.compute_batch(imgs, [p[1] for p in pairs]))
                v = np.array(m.compute_batch(imgs, [p[2] for p in pairs]))
                gain = (v - a) if m.higher_is_better else (a - v)  # > 0: vlmcodec better
                lo, hi = _interval(gain)
                point[m.name] = {"anchor": float(a.mean()), "vlmcodec": float(v.mean()), "gain": float(gain.mean()),
                                 "gain_95": [lo, hi], "wins": int((gain > 0).sum()), "ties": int((gain == 0).sum()),
                                 "losses": int((gain < 0).sum())}
        report["points"].append(point)
        print(json.dumps(point), flush=True)
    report["seconds"] = time.perf_counter() - t_start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{name}_vs_{args.anchor}".replace("@", "at")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    cmd = "python scripts/matched_bytes_eval.py " + " ".join(sys.argv[1:])
    lines = [f"# {name} against {args.anchor} at equal file size, image by image ({len(files)} Kodak images)", "",
             f"`{cmd.strip()}`; model {report['model']}. Gain: vlmcodec − {args.anchor} (KL: {args.anchor} − "
             "vlmcodec), > 0 better for vlmcodec; [95 % bootstrap interval over the images]; wins/ties/losses.", "",
             f"| {args.anchor} q | pairs (unfit; vlmcodec at q100) | bpp {args.anchor} / vlmcodec | token similarity "
             "| Lite0 KL "
             "| Lite0 top-1 | top-1, 10 views |", "|---:|---:|---:|---|---|---|---|"]
    for pt in report["points"]:
        if not pt["pairs"]:
            lines.append(f"| {pt['anchor_quality']:g} | 0 ({pt['unfit']}) | – | – | – | – | – |")
            continue
        cells = []
        for key, fmt in (("teacher-sim", "{:.4f}"), ("effnet-kl", "{:.3f}"), ("effnet-top1", "{:.3f}"),
                         ("effnet-top1-10crop", "{:.3f}")):
            r = pt[key]
            cells.append(f"{fmt.format(r['anchor'])} → {fmt.format(r['vlmcodec'])}, gain {r['gain']:+.4f} "
                         f"[{r['gain_95'][0]:+.4f}, {r['gain_95'][1]:+.4f}], {r['wins']}/{r['ties']}/{r['losses']}")
        lines.append(f"| {pt['anchor_quality']:g} | {pt['pairs']} ({pt['unfit']}; {pt['vlmcodec_at_quality_100']}) "
                     f"| {pt['bpp_anchor']:.3f} / "
                     f"{pt['bpp_vlmcodec']:.3f} | " + " | ".join(cells) + " |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
