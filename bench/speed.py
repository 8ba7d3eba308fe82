"""Per-stage timings of encode and decode for each available backend.

    python -m vlmcodec.bench.speed [--images DIR] [--limit N] [--backends torch,onnxruntime]
                                    [--compressai] [--out results/speed.json]

Stages (wall time, mean per image): pad, pre-edit (models with a pre-editor), g_a, h_a, z coding, h_s (exact fixed point),
y coding, g_s. ``--compressai`` adds the end-to-end comparison of ``vlmcodec.bench.codec``
(same architecture and weights in CompressAI) in the same run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from .common import check_output_path, count_arg, environment, image_files, progress_bar, write_json

STAGES = ("pad", "pre-edit", "g_a", "h_a", "z coding", "h_s", "y coding", "g_s")


def stage_times(codec, images, quality: float) -> dict:
    import time

    codec.encode(images[0], quality)  # warm-up
    enc_stages: dict[str, float] = {}
    dec_stages: dict[str, float] = {}
    enc_total, dec_total = 0.0, 0.0
    for img in images:
        codec.stage_times = {}
        t0 = time.perf_counter()
        data = codec.encode(img, quality)
        enc_total += time.perf_counter() - t0
        for k, v in codec.stage_times.items():
            enc_stages[k] = enc_stages.get(k, 0.0) + v
        codec.stage_times = {}
        t0 = time.perf_counter()
        codec.decode(data)
        dec_total += time.perf_counter() - t0
        for k, v in codec.stage_times.items():
            dec_stages[k] = dec_stages.get(k, 0.0) + v
    codec.stage_times = None
    n = len(images)
    return {
        "encode_s": enc_total / n, "decode_s": dec_total / n,
        "encode_stages_s": {k: enc_stages[k] / n for k in STAGES if k in enc_stages},
        "decode_stages_s": {k: dec_stages[k] / n for k in STAGES if k in dec_stages},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="vlmcodec bench speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path)
    p.add_argument("--limit", type=count_arg, default=0)
    p.add_argument("--quality", type=float, default=75.0)
    p.add_argument("--model")
    p.add_argument("--backends", default="torch,onnxruntime,triton,tensorrt")
    p.add_argument("--device", help="e.g. cuda (default: each backend's own)")
    p.add_argument("--compressai", action="store_true", help="also run the CompressAI comparison")
    p.add_argument("--out", default="results/speed.json")
    a = p.parse_args(argv)
    from vlmcodec import Codec
    from vlmcodec.errors import BackendUnavailableError
    from vlmcodec.image_io import load_image

    from vlmcodec.backends import BACKENDS

    names = [n.strip() for n in a.backends.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:  # (a misspelt one was listed as "not available" and the run exited 0)
        print(f"vlmcodec bench speed: error: unknown backend(s) {unknown or 'none given'}; choose from "
              f"{', '.join(BACKENDS)}", file=sys.stderr)
        return 2
    check_output_path(a.out)  # (a folder failed only after the whole run, with no result printed)
    if a.compressai:  # CompressAI missing: BackendUnavailableError now, not after the backends' timings
        from .compressai_compat import import_compressai

        import_compressai("models.google")
    files = image_files(a.images, a.limit)
    images = [load_image(f) for f in files]
    if a.compressai:  # (sides not multiples of 64 failed after every backend's timings)
        from .codec import check_sides

        check_sides(files, images)
    results, missing = {}, {}
    for name in progress_bar(len(names), "backends", iterable=names):
        try:
            codec = Codec(a.model, backend=name, device=a.device)
        except BackendUnavailableError as e:
            missing[name] = str(e)
            continue
        results[name] = stage_times(codec, images, a.quality)
    if not results:  # nothing measured: no file (one of no results replaced an earlier good one)
        why = "; ".join(f"{name}: {why}" for name, why in missing.items())
        print(f"vlmcodec bench speed: error: none of the backends asked for is available here ({why})",
              file=sys.stderr)
        return 2
    payload = {"benchmark": "speed", "env": environment(), "images": len(images), "results": results,
               "unavailable": missing,
               # (what was measured: the count of images alone did not say which, nor at what quality)
               "settings": {"images": str(a.images) if a.images else "Kodak", "files": [f.name for f in files],
                            "quality": a.quality, "model": a.model or "default", "device": a.device,
                            "backends": names}}
    if a.compressai:
        from .codec import run as run_compressai

        compressai = run_compressai(files, ["N128-M192", "default-weights"])
        payload["compressai"] = compressai
    write_json(a.out, payload)
    for name, r in results.items():
        print(f"[{name}] encode {r['encode_s']*1000:.0f} ms, decode {r['decode_s']*1000:.0f} ms per image")
        for phase in ("encode_stages_s", "decode_stages_s"):
            print("   " + phase.split("_")[0] + ": " + ", ".join(f"{k} {v*1000:.0f}" for k, v in r[phase].items()) + " (ms)")
    for name, why in missing.items():
        print(f"[{name}] not available: {why}")
    if a.compressai:  # (measured and written, but not shown)
        from .codec import print_table

        print("CompressAI, the same weights:")
        print_table(compressai)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    from vlmcodec.bench.cli import main_of_module

    raise SystemExit(main_of_module("speed"))
