"""``vlmcodec bench matched-bytes``: a paired comparison at equal file size, image by image.

For each image and each quality of an anchor codec (WebP by default), the anchor's file size is
the budget; vlmcodec codes the same image into at most that many bytes (``Codec.encode_to_size``)
and both decoded images are scored against the original (by default DINOv2 token similarity,
EfficientNet-Lite0 KL, top-1 agreement on one view and on ten views).

Where a BD-rate compares two curves averaged over the images and interpolated between their
points, this compares pairs: the same image, at most the same bytes. Reported per anchor quality:
the pairs (an image whose budget is below vlmcodec's quality 0 is counted apart, as "unfit"; a pair
where vlmcodec's quality 100 fits is counted too: its budget is above vlmcodec's range, and it
uses fewer bytes), both mean bpp, each metric's means, the mean paired gain (vlmcodec − anchor,
signed so that > 0 is better for vlmcodec) with its 95 % bootstrap interval over the images,
and wins / ties / losses.

    vlmcodec bench matched-bytes                                        # vlmcodec@256 vs full-size WebP
    vlmcodec bench matched-bytes --anchor webp@256 --qualities 20,30,50,75
    vlmcodec bench matched-bytes --codec vlmcodec+r10@256               # the refined encoder (slow)
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .bootstrap import mean_interval
from .common import count_arg, progress_bar, repeated

DEFAULT_METRICS = ("teacher-sim", "effnet-kl", "effnet-top1", "effnet-top1-10crop")
# column titles and number formats of the Markdown table; other metrics show their own name
LABELS = {"teacher-sim": ("token similarity", "{:.4f}"), "effnet-kl": ("Lite0 KL", "{:.3f}"),
          "effnet-top1": ("Lite0 top-1", "{:.3f}"), "effnet-top1-10crop": ("top-1, 10 views", "{:.3f}"),
          "psnr": ("PSNR", "{:.2f}")}


def _encode_to_size(codec, img: np.ndarray, budget: int, refined_only: bool) -> tuple[bytes, bool]:
    """``codec.encode_to_size`` and whether it fell back to a one-pass stream (``refine``, a
    budget no refined stream fits); with ``refined_only`` a fallback is a BudgetError instead."""
    from vlmcodec import BudgetError, RefineFallbackWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = codec.encode_to_size(img, max_bytes=budget)
    fell_back = False
    for w in caught:
        if issubclass(w.category, RefineFallbackWarning):
            fell_back = True
        else:  # not ours to swallow
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if fell_back and refined_only:
        raise BudgetError(f"no refined stream fits in {budget} bytes")
    return data, fell_back


def paired_point(originals: Sequence[np.ndarray], anchor, codec, quality: float, metrics: Sequence,
                 progress=None, refined_only: bool = False) -> dict:
    """One anchor quality: each image coded by ``anchor`` (a bench codec: ``encode(img, q)``,
    ``decode``) and by ``codec`` (a ``vlmcodec.Codec``) into at most the anchor's bytes, then
    scored. ``progress``: called once per image. With a refining codec, a pair whose budget only
    a one-pass stream fits is counted (``one_pass_fallbacks``), or with ``refined_only`` left
    out as unfit."""
    from vlmcodec import BudgetError
    from vlmcodec.bitstream import container

    from .metrics import compute_all

    pairs, unfit, at_top, fallbacks = [], 0, 0, 0
    for img in originals:
        a_data = anchor.encode(img, quality)
        try:
            v_data, fell_back = _encode_to_size(codec, img, len(a_data), refined_only)
        except BudgetError:
            unfit += 1
        else:
            fallbacks += fell_back
            if len(v_data) > len(a_data):  # the premise of the comparison; encode_to_size promises it
                raise AssertionError(f"vlmcodec used {len(v_data)} bytes for a budget of {len(a_data)}")
            at_top += container.unpack(v_data)[0].quality == 100
            pairs.append((img, anchor.decode(a_data), codec.decode(v_data), len(a_data), len(v_data)))
        if progress is not None:
            progress()
    point: dict = {"anchor_quality": float(quality), "pairs": len(pairs), "unfit": unfit,
                   "vlmcodec_at_quality_100": at_top}
    if codec.refine:
        point["one_pass_fallbacks"] = fallbacks
    if not pairs:
        return point
    imgs = [p[0] for p in pairs]
    pixels = np.array([i.shape[0] * i.shape[1] for i in imgs], dtype=np.float64)
    point["bpp_anchor"] = float(np.mean(8 * np.array([p[3] for p in pairs]) / pixels))
    point["bpp_vlmcodec"] = float(np.mean(8 * np.array([p[4] for p in pairs]) / pixels))
    for m in metrics:
        a = np.array(compute_all(m, imgs, [p[1] for p in pairs]))
        v = np.array(compute_all(m, imgs, [p[2] for p in pairs]))
        for side, vals in ((getattr(anchor, "name", "the anchor"), a), ("vlmcodec", v)):
            if not np.isfinite(vals).all():  # (a mean of inf and an interval of NaN, reported as figures)
                raise ValueError(f"metric {m.name} is not finite ({vals[~np.isfinite(vals)][0]}) for "
                                 f"{int((~np.isfinite(vals)).sum())} of {len(vals)} images coded by {side} at "
                                 f"anchor quality {quality:g}")
        gain = (v - a) if m.higher_is_better else (a - v)  # > 0: vlmcodec better
        lo, hi = mean_interval(gain)
        point[m.name] = {"anchor": float(a.mean()), "vlmcodec": float(v.mean()), "gain": float(gain.mean()),
                         "gain_95": [lo, hi], "wins": int((gain > 0).sum()), "ties": int((gain == 0).sum()),
                         "losses": int((gain < 0).sum())}
    return point


def markdown(report: dict, command: str) -> str:
    """The report as a Markdown table, one row per anchor quality."""
    anchor, metrics = report["anchor"], report["metrics"]
    title = f"# {report['vlmcodec']} against {anchor} at equal file size, image by image ({report['images']} images)"
    legend = (f"`{command}`; model {report['model']}. Gain: vlmcodec − {anchor} (for metrics where lower is "
              f"better, such as KL: {anchor} − vlmcodec), > 0 better for vlmcodec; [95 % bootstrap interval "
              "over the images]; wins/ties/losses.")
    refines = any("one_pass_fallbacks" in pt for pt in report["points"])
    counts = "unfit; vlmcodec at q100; one-pass" if refines else "unfit; vlmcodec at q100"
    if refines:
        legend += (" One-pass: pairs where no refined stream fits the budget and vlmcodec's is the one-pass one"
                   + (" (left out as unfit here: --refined-only)." if report.get("refined_only") else "."))
    lines = [title, "", legend, "",
             f"| {anchor} q | pairs ({counts}) | bpp {anchor} / vlmcodec | "
             + " | ".join(LABELS.get(m, (m,))[0] for m in metrics) + " |",
             "|---:|---:|---:|" + "---|" * len(metrics)]
    for pt in report["points"]:
        tally = f"{pt['unfit']}; {pt['vlmcodec_at_quality_100']}" + (
            f"; {pt['one_pass_fallbacks']}" if "one_pass_fallbacks" in pt else "")
        if not pt["pairs"]:
            lines.append(f"| {pt['anchor_quality']:g} | 0 ({tally}) | – |" + " – |" * len(metrics))
            continue
        cells = []
        for key in metrics:
            fmt = LABELS.get(key, (key, "{:.4f}"))[1]
            r = pt[key]
            cells.append(f"{fmt.format(r['anchor'])} → {fmt.format(r['vlmcodec'])}, gain {r['gain']:+.4f} "
                         f"[{r['gain_95'][0]:+.4f}, {r['gain_95'][1]:+.4f}], {r['wins']}/{r['ties']}/{r['losses']}")
        lines.append(f"| {pt['anchor_quality']:g} | {pt['pairs']} ({tally}) "
                     f"| {pt['bpp_anchor']:.3f} / {pt['bpp_vlmcodec']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(originals: Sequence[np.ndarray], anchor, vlm, qualities: Sequence[float], metrics: Sequence,
        progress: bool = True, refined_only: bool = False) -> dict:
    """Every anchor quality (``paired_point``) → the report: names, model, points, seconds.
    ``vlm``: the bench's ``VlmCodec`` (``make_codec("vlmcodec@256")``)."""
    report = {"anchor": anchor.name, "vlmcodec": vlm.name, "model": vlm.codec.fingerprint.hex(),
              "images": len(originals), "metrics": [m.name for m in metrics], "refined_only": refined_only,
              "points": []}
    t0 = time.perf_counter()
    with progress_bar(len(qualities) * len(originals), f"{vlm.name} in {anchor.name}'s bytes",
                      enabled=progress) as bar:
        for q in qualities:
            report["points"].append(paired_point(originals, anchor, vlm.codec, q, metrics, bar.update, refined_only))
    report["seconds"] = time.perf_counter() - t0
    return report


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what}: expected numbers separated by commas, got {text!r}") from None
    if not values:
        raise ValueError(f"{what}: no values")
    twice = repeated(values)
    if twice:
        raise ValueError(f"{what}: {twice} given more than once")
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vlmcodec bench matched-bytes", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="?", type=Path, help="folder of images (default ../shared/data/kodak)")
    p.add_argument("--limit", type=count_arg, default=0, help="first N images only")
    p.add_argument("--anchor", default="webp", help="a bench codec name: webp, jpeg, webp@256, ... (default webp)")
    p.add_argument("--qualities", default="0,5,15,30", help="the anchor's qualities; its sizes are the budgets")
    p.add_argument("--codec", default="vlmcodec@256",
                   help="the vlmcodec side, as bench rd names it: vlmcodec, vlmcodec@256, vlmcodec+r10@256 "
                        "(default vlmcodec@256)")
    p.add_argument("--model", help="vlmcodec model .safetensors (default: the bundled model)")
    p.add_argument("--threads", type=count_arg, default=0, help="vlmcodec CPU threads (default: the Codec's, up to 4)")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help=f"comma-separated (default {','.join(DEFAULT_METRICS)}); psnr and ms-ssim work too")
    p.add_argument("--out", type=Path, default=Path("results/matched_bytes"),
                   help="folder for the report's .json and .md (default results/matched_bytes)")
    p.add_argument("--refined-only", action="store_true",
                   help="with vlmcodec+rK: a budget only a one-pass stream fits counts as unfit (by default "
                        "the one-pass stream is compared, as encode_to_size returns it, and counted)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    from vlmcodec.errors import VlmcodecError
    from vlmcodec.files import write_whole

    from .common import check_output_folder, kodak_dir, output_folder
    from .metrics import build_metrics
    from .rd import VlmCodec, list_images, load_rgb, make_codec

    def fail(msg: str) -> int:
        print(f"vlmcodec bench matched-bytes: error: {msg}", file=sys.stderr)
        return 2

    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if not names:  # (the whole comparison ran with no metric, exit 0)
        return fail(f"--metrics: none given (got {args.metrics!r}; e.g. {','.join(DEFAULT_METRICS)})")
    try:
        qualities = _floats(args.qualities, "--qualities")
        anchor = make_codec(args.anchor)
        vlm = make_codec(args.codec, model=args.model, threads=args.threads or None)
        if not isinstance(vlm, VlmCodec):  # (the classic codecs' names: jpeg, webp, ...)
            return fail(f"--codec names the vlmcodec side (vlmcodec, vlmcodec@N, vlmcodec+rK@N), got {args.codec!r}")
        anchor.check_qualities(qualities)  # (jpeg=150 was coded at 100 and reported as 150)
        ok, why = anchor.available()
        if not ok:
            return fail(f"anchor {args.anchor} not available: {why}")
        check_output_folder(args.out)  # before the run: an --out that cannot be a folder failed only after it
        folder = args.images or kodak_dir("vlmcodec bench matched-bytes IMAGES_DIR")
        files = list_images(folder, args.limit)
        originals = [load_rgb(f) for f in files]
        metrics, missing = build_metrics(names, originals)
        if missing:
            return fail("; ".join(f"metric {k} not available: {why}" for k, why in missing.items()))
        metrics = sorted(metrics, key=lambda m: names.index(m.name))
        if args.refined_only and not vlm.refine:
            return fail("--refined-only applies to a refining codec (--codec vlmcodec+rK...)")
        with output_folder(args.out):  # removed again if nothing was written in it (an error, Ctrl-C)
            report = run(originals, anchor, vlm, qualities, metrics, progress=not args.quiet,
                         refined_only=args.refined_only)
            command = "vlmcodec bench matched-bytes " + " ".join(shlex.quote(a) for a in
                                                                 (sys.argv[1:] if argv is None else argv))
            md = markdown(report, command.strip())
            stem = (f"{report['vlmcodec']}_vs_{report['anchor']}".replace("@", "at")
                    + ("_refined_only" if args.refined_only else ""))
            write_whole(args.out / f"{stem}.json", (json.dumps(report, indent=1) + "\n").encode())  # whole or not at all
            write_whole(args.out / f"{stem}.md", md.encode())
    except (ValueError, FileNotFoundError, VlmcodecError) as e:
        return fail(str(e))
    print(md, end="")
    print(f"wrote {args.out / f'{stem}.md'} and .json ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    from vlmcodec.bench.cli import main_of_module

    raise SystemExit(main_of_module("matched_bytes"))
