"""The pre-editor's windowed attention (64 tokens per side, the default) against global attention,
side by side in one run: (1) pre-editor time at several image sizes, the two alternating, and
the full-resolution head in row bands against the whole image;
(2) on Kodak images upscaled past 1024 px, bpp, PSNR and DINOv2 token similarity of full encodes
with each — what windowing costs or buys where it applies (it changes nothing up to 1024 px).
``--window A --reference B`` compares window sizes instead (B = 0: global attention).

    python scripts/pre_editor_window_bench.py [--sizes 1024x768,2048x1536,4032x3008]
        [--images ../shared/data/kodak] [--limit 4] [--upscale 3] [--qualities 25,50,75]
    python scripts/pre_editor_window_bench.py --window 32 --reference 64 --sizes 2048x1536,4032x3008 --skip-bands
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image

from vlmcodec import Codec
from vlmcodec.image_io import load_image, psnr
from vlmcodec.models.pre_editor import PreEditor
from vlmcodec.training.data import list_images

WINDOW = PreEditor.attention_window
REFERENCE = 0  # the arm compared against: global attention, or another window (--reference)


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _side_by_side(pre, source: np.ndarray, w: int, h: int, reps: int, arms: dict) -> tuple:
    """Pre-editor runs on ``source`` resized to w×h (padded to the patch grid), the arms (name →
    function that sets the arm up) alternating; returns (x, median time per arm, last output per arm)."""
    img = np.array(Image.fromarray(source).resize((w, h), Image.BICUBIC))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255)
    x = torch.nn.functional.pad(x, (0, -w % 16, 0, -h % 16), mode="replicate")
    names = list(arms)
    times: dict[str, list[float]] = {n: [] for n in names}
    outs = {}
    with torch.inference_mode():
        for r in range(reps):
            for name in names if r % 2 == 0 else names[::-1]:
                arms[name]()
                t, outs[name] = _timed(lambda: pre(x))
                times[name].append(t)
    return x, {n: statistics.median(t) for n, t in times.items()}, outs


def set_arms(window: int, reference: int) -> None:
    global WINDOW, REFERENCE
    WINDOW, REFERENCE = window, reference


def _ref_name() -> str:
    return f"window {REFERENCE}" if REFERENCE else "global attention"


def speed(codec: Codec, sizes: list[tuple[int, int]], reps: int, source: np.ndarray) -> None:
    print(f"pre-editor time, window {WINDOW} vs {_ref_name()} ({torch.get_num_threads()} threads)")
    for w, h in sizes:
        x, t, outs = _side_by_side(codec.model.pre_editor, source, w, h, reps, {
            "window": lambda: setattr(PreEditor, "attention_window", WINDOW),
            "global": lambda: setattr(PreEditor, "attention_window", REFERENCE)})
        PreEditor.attention_window = WINDOW
        diff = float((outs["window"] - outs["global"]).abs().max())
        print(f"  {w}x{h} ({x.shape[-2] // 16}x{x.shape[-1] // 16} tokens): window {t['window']:.2f} s, "
              f"{_ref_name()} {t['global']:.2f} s, ratio {t['window'] / t['global']:.3f}; "
              f"max |difference| {diff:.2e}")


def bands(codec: Codec, sizes: list[tuple[int, int]], reps: int, source: np.ndarray) -> None:
    """The full-resolution head in row bands (the default above PreEditor.band_pixels) against
    the whole image at once: time and largest difference (peak memory: scripts/memory_probe.py)."""
    default = PreEditor.band_pixels
    print(f"pre-editor time, head in bands of {PreEditor.band_rows} rows vs whole")
    for w, h in sizes:
        _, t, outs = _side_by_side(codec.model.pre_editor, source, w, h, reps, {
            "bands": lambda: setattr(PreEditor, "band_pixels", 0),
            "whole": lambda: setattr(PreEditor, "band_pixels", 1 << 62)})
        PreEditor.band_pixels = default
        diff = float((outs["bands"] - outs["whole"]).abs().max())
        print(f"  {w}x{h}: bands {t['bands']:.2f} s, whole {t['whole']:.2f} s, ratio {t['bands'] / t['whole']:.3f}; "
              f"max |difference| {diff:.2e}")


def quality(codec: Codec, paths: list, upscale: int, qualities: list[float]) -> None:
    from vlmcodec.bench.semantic import TeacherSimilarity

    sim = TeacherSimilarity()
    rows: dict[str, list[tuple[float, float, float]]] = {"window": [], "global": []}
    for p in paths:
        small = load_image(p)
        img = np.asarray(Image.fromarray(small).resize((small.shape[1] * upscale, small.shape[0] * upscale),
                                                       Image.BICUBIC))
        for q in qualities:
            for name in ("window", "global"):
                PreEditor.attention_window = WINDOW if name == "window" else REFERENCE
                data = codec.encode(img, q)
                dec = codec.decode(data)
                rows[name].append((8 * len(data) / (img.shape[0] * img.shape[1]), psnr(img, dec),
                                   sim.compute(img, dec)))
    PreEditor.attention_window = WINDOW
    h, w = img.shape[:2]
    print(f"full encodes of {len(paths)} Kodak images upscaled x{upscale} (last {w}x{h}), "
          f"qualities {qualities}: mean over images and qualities")
    for name, r in rows.items():
        a = np.array(r)
        label = f"window {WINDOW}" if name == "window" else _ref_name()
        print(f"  {label}: bpp {a[:, 0].mean():.4f}  PSNR {a[:, 1].mean():.2f} dB  token similarity {a[:, 2].mean():.4f}")
    wv, gv = np.array(rows["window"]), np.array(rows["global"])
    print(f"  window {WINDOW} - {_ref_name()}, per encode: bpp {np.mean(wv[:, 0] / gv[:, 0] - 1) * 100:+.2f} %, "
          f"PSNR {np.mean(wv[:, 1] - gv[:, 1]):+.3f} dB, token similarity {np.mean(wv[:, 2] - gv[:, 2]):+.4f} "
          f"(wins {int((wv[:, 2] > gv[:, 2]).sum())} of {len(wv)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1024x768,2048x1536,4032x3008")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--images", default="../shared/data/kodak")
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--upscale", type=int, default=3)
    ap.add_argument("--qualities", default="25,50,75")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-bands", action="store_true")
    ap.add_argument("--window", type=int, default=WINDOW, help="the windowed arm's window (tokens per side)")
    ap.add_argument("--reference", type=int, default=0, help="the other arm's window (0: global attention)")
    a = ap.parse_args()
    set_arms(a.window, a.reference)
    codec = Codec(threads=a.threads)
    paths = list_images(a.images)[: a.limit]
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",") if s]
    speed(codec, sizes, a.reps, load_image(paths[0]))
    if not a.skip_bands:
        bands(codec, sizes, a.reps, load_image(paths[0]))
    if not a.skip_quality:
        quality(codec, paths, a.upscale, [float(q) for q in a.qualities.split(",")])


if __name__ == "__main__":
    main()
