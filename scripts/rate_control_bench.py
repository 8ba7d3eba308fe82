"""Rate control (``Codec.encode_to_size``) on the 24 Kodak images, three arms side by side:

- ``encode_to_size``: g_a once, then h_a + entropy coding for each quality the search tries;
- ``whole encodes``: the same search, each quality tried a whole ``encode`` (g_a each time);
- ``one encode``: a plain ``encode`` at the quality the search found (the floor: no search).

For each image and budget the arms run one after another, their order rotating from one to the
next, and the three streams must be byte-identical. Reported per budget: how many images fit,
the probes per search, how full the budget is (bytes / budget), and the medians of the per-image
time ratios encode_to_size / one encode and encode_to_size / whole encodes.

    python scripts/rate_control_bench.py                       # full size and 256 px
    python scripts/rate_control_bench.py --limit 4 --modes full
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from vlmcodec.bench.common import count_arg, image_files

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"
BUDGETS = {"full": (0.4, 0.7, 1.0), "256": (0.12, 0.18, 0.25)}  # bits per pixel of the original image


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default=str(KODAK))
    p.add_argument("--limit", type=count_arg, default=0, help="the first N images only (default 0: all)")
    p.add_argument("--modes", default="full,256", help="comma-separated: full, 256 (the consumer's scale)")
    p.add_argument("--out", default=str(ROOT / "results" / "rate_control"))
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in BUDGETS]
    if unknown or not modes:
        p.error(f"--modes: {'unknown ' + ', '.join(unknown) if unknown else 'none given'}; choose from "
                f"{', '.join(BUDGETS)}")
    try:  # (an empty folder or --limit 0 failed at images[0], --limit -1 left out the last image)
        files = image_files(args.images, args.limit)
    except FileNotFoundError as e:
        p.error(str(e))

    from vlmcodec import BudgetError, Codec, rate_control
    from vlmcodec.bitstream import container
    from vlmcodec.image_io import load_image

    images = [load_image(f) for f in files]
    probes: list = []
    search = rate_control.largest_fitting

    def counting(*a, **k):  # the probes of the last search
        data, tried = search(*a, **k)
        probes[:] = tried
        return data, tried

    rate_control.largest_fitting = counting
    results = {"images": len(images), "model": None, "modes": {}}
    for mode in modes:
        codec = Codec(short_side=None if mode == "full" else int(mode))
        results["model"] = codec.fingerprint.hex()
        codec.encode(images[0], 50)  # warm
        rows = []
        for bpp in BUDGETS[mode]:
            fit, at_top, fills, counts, vs_one, vs_whole = 0, 0, [], [], [], []
            for i, img in enumerate(images):
                h, w = img.shape[:2]
                budget = rate_control.budget_bytes(w, h, None, bpp)
                times, streams = {}, {}

                def fast():
                    return codec.encode_to_size(img, max_bpp=bpp)

                def whole():
                    return rate_control.largest_fitting(lambda q: codec.encode(img, q), budget)[0]

                try:
                    quality = container.unpack(fast())[0].quality
                except BudgetError:
                    continue
                arms = {"fast": fast, "whole": whole, "one": lambda: codec.encode(img, quality)}
                names = list(arms)
                names = names[i % 3:] + names[: i % 3]
                for name in names:
                    t0 = time.perf_counter()
                    streams[name] = arms[name]()
                    times[name] = time.perf_counter() - t0
                    if name == "fast":
                        counts.append(len(probes))
                if not streams["fast"] == streams["whole"] == streams["one"]:
                    print(f"streams differ: {files[i].name} at {bpp} bpp", file=sys.stderr)
                    return 1
                fit += 1
                if quality == 100:  # the whole range fits: nothing to fill
                    at_top += 1
                else:
                    fills.append(len(streams["fast"]) / budget)
                vs_one.append(times["fast"] / times["one"])
                vs_whole.append(times["fast"] / times["whole"])
            row = {"bpp": bpp, "fit": fit, "of": len(images), "at_quality_100": at_top}
            if fit:
                row |= {"probes_mean": statistics.mean(counts), "probes_max": max(counts),
                        "fill_min": min(fills, default=None), "fill_median": statistics.median(fills) if fills else None,
                        "time_vs_one_encode": statistics.median(vs_one),
                        "time_vs_whole_encodes": statistics.median(vs_whole)}
            rows.append(row)
            print(mode, json.dumps(row), flush=True)
        results["modes"][mode] = rows
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [f"# Rate control, {results['images']} Kodak images, model {results['model']}", "",
             "`python scripts/rate_control_bench.py` (medians of per-image ratios; streams of the three arms identical)", "",
             "| mode | budget (bpp) | images that fit (at quality 100) | probes (mean / max) "
             "| bytes / budget below quality 100 (min / median) | time vs one encode | time vs whole-encode search |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for mode, rows in results["modes"].items():
        for r in rows:
            if r["fit"]:
                fill = (f"{r['fill_min']:.3f} / {r['fill_median']:.3f}" if r["fill_min"] is not None else "–")
                lines.append(f"| {mode} | {r['bpp']} | {r['fit']} / {r['of']} ({r['at_quality_100']}) "
                             f"| {r['probes_mean']:.1f} / {r['probes_max']} | {fill} | {r['time_vs_one_encode']:.2f}× "
                             f"| {r['time_vs_whole_encodes']:.2f}× |")
            else:
                lines.append(f"| {mode} | {r['bpp']} | 0 / {r['of']} | – | – | – | – |")
    lines += ["", "An image that does not fit even at quality 0 raises BudgetError (not counted); one whose "
              "quality-100 stream fits costs one probe."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
