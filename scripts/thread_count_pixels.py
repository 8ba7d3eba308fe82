"""Do streams and decoded pixels depend on torch's thread count? Kodak crops (192 px, three per
image) encoded and decoded by codecs of ``threads=1`` and ``threads=2``: streams compared byte
for byte, decoded images pixel by pixel.

    python scripts/thread_count_pixels.py [--images 10] [--quality 50]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import vlmcodec
from vlmcodec.image_io import load_image

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--quality", type=float, default=50)
    ap.add_argument("--kodak", type=Path, default=KODAK)
    args = ap.parse_args()
    crops = []
    for f in sorted(args.kodak.glob("*.png"))[: args.images]:
        im = load_image(f)
        crops += [np.ascontiguousarray(im[y:y + 192, x:x + 192]) for y, x in ((0, 0), (200, 300), (320, 500))]
    runs = {}
    for threads in (1, 2):
        codec = vlmcodec.Codec(threads=threads)
        streams = [codec.encode(c, args.quality) for c in crops]
        runs[threads] = (streams, [codec.decode(s) for s in streams])
    same = sum(a == b for a, b in zip(runs[1][0], runs[2][0]))
    diffs = [np.abs(a.astype(np.int16) - b.astype(np.int16)) for a, b in zip(runs[1][1], runs[2][1])]
    off = [int((d > 0).any(axis=2).sum()) for d in diffs]
    print(f"{len(crops)} crops of 192x192, quality {args.quality:g}, threads 1 vs 2: streams identical "
          f"{same}/{len(crops)}; decoded images that differ {sum(n > 0 for n in off)}/{len(crops)}, "
          f"largest difference {max(int(d.max()) for d in diffs)}, pixels off per image at most {max(off)} "
          f"of {192 * 192}")


if __name__ == "__main__":
    main()
