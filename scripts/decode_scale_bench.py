"""Decoding for a consumer at N px (``Codec.decode(data, short_side=N)``) against what a pipeline
does without it: decode at the original size, then resize to the consumer's size.

Two kinds of streams of the 24 Kodak images, quality 50: coded at the consumer's scale
(``short_side=N``) and at full size. For each image the two arms run one after another, in an
order that alternates from image to image; reported are the medians of the per-image time ratio,
the decoded sizes, how far the two arms' pixels are apart (PSNR between them), and each arm's
PSNR against the original resized to the consumer's size the same way.

    python scripts/decode_scale_bench.py [--short-side 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default=str(KODAK))
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--quality", type=float, default=50.0)
    p.add_argument("--rounds", type=int, default=3, help="passes over the images (ratios pooled)")
    p.add_argument("--out", default=str(ROOT / "results" / "decode_scale"))
    args = p.parse_args()

    from vlmcodec import Codec
    from vlmcodec.image_io import load_image, psnr
    from vlmcodec.resample import coded_size, downscale

    n = args.short_side
    codec = Codec()
    images = [load_image(f) for f in sorted(Path(args.images).glob("*.png"))]
    report = {"model": codec.fingerprint.hex(), "images": len(images), "short_side": n, "quality": args.quality,
              "rounds": args.rounds, "streams": {}}
    for kind, side in (("coded at the consumer's scale", n), ("coded at full size", 0)):
        streams = [codec.encode(img, args.quality, short_side=side) for img in images]
        codec.decode(streams[0]), codec.decode(streams[0], short_side=n)  # warm
        ratios, gaps, out_px, full_px = [], [], 0, 0
        fidelity = {"then_resize": [], "direct": []}  # PSNR against the original resized the same way
        for r in range(args.rounds):
            for i, (img, data) in enumerate(zip(images, streams, strict=True)):
                size = coded_size(*img.shape[:2], n)

                def then_resize(data=data, size=size):
                    return downscale(codec.decode(data), size)

                def direct(data=data):
                    return codec.decode(data, short_side=n)

                arms = [("then_resize", then_resize), ("direct", direct)]
                if (i + r) % 2:
                    arms.reverse()
                times, outs = {}, {}
                for name, fn in arms:
                    t0 = time.perf_counter()
                    outs[name] = fn()
                    times[name] = time.perf_counter() - t0
                if outs["direct"].shape != outs["then_resize"].shape:
                    print(f"sizes differ for image {i}", file=sys.stderr)
                    return 1
                ratios.append(times["direct"] / times["then_resize"])
                if r == 0:
                    gaps.append(psnr(outs["then_resize"], outs["direct"]))
                    reference = downscale(img, size)
                    for name in fidelity:
                        fidelity[name].append(psnr(reference, outs[name]))
                    out_px += outs["direct"].shape[0] * outs["direct"].shape[1]
                    full_px += img.shape[0] * img.shape[1]
        report["streams"][kind] = {"time_direct_vs_decode_then_resize": statistics.median(ratios),
                                   "psnr_between_arms_db_min": min(gaps),
                                   "psnr_between_arms_db_median": statistics.median(gaps),
                                   "pixels_vs_original": out_px / full_px,
                                   "psnr_vs_resized_original_db_mean": {k: statistics.mean(v) for k, v in fidelity.items()}}
        print(kind, json.dumps(report["streams"][kind]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_{n}.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
