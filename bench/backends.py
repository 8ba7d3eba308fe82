"""End-to-end codec speed per backend on Kodak (CPU), side by side, plus cross-decode counts.

    vlmcodec bench backends [--images DIR] [--limit N] [--threads T] [--repeat R]
                            [--variants torch,onnxruntime[,onnxruntime-plain]]
                            [--out results/backends.json]

Every variant holds the same model (the bundled one by default) and runs ``Codec.encode`` and
``Codec.decode`` on every image, in an order rotated per image (so drift of a shared machine's
load spreads over all variants); the first image is encoded and decoded once untimed as a warm-up.
Network threads are the same for every variant (``--threads``; entropy decoding uses the
codec's default). Variants:

- ``torch``: the torch backend (its inference rewrites, channels-last);
- ``onnxruntime``: the default export (folded GDN, ConvTranspose);
- ``onnxruntime-subpixel``: folded GDN and the sub-pixel rewrite of transposed convs;
- ``onnxruntime-plain``: the modules as trained (ConvTranspose, GDN re-parametrisation ops),
  to measure what each rewrite is worth in ONNX Runtime.

"nets enc" is the time in the encoder's networks (the pre-editor where the model has one, g_a,
h_a), "nets dec" in g_s.

Cross-decode (``vlmcodec.export.parity.compare_backends``, untimed): for each image, symbol
mismatches between the torch and onnxruntime encoders, streams that differ, streams of one that
fail to decode with the other (both directions), the largest x̂ difference (0–1 scale) and
pixel difference. The JSON records the machine, versions, threads and load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from .common import (check_output_path, count_arg, environment, image_files, kodak_dir, positive_arg, progress_bar,
                     write_json)

VARIANTS = ("torch", "onnxruntime", "onnxruntime-subpixel", "onnxruntime-plain")
# the encoder's network stages in ``Codec.stage_times`` ("nets enc"): the pre-editor too, where the model has one
ENCODE_NETWORKS = ("pre-edit", "g_a", "h_a")


def parse_variants(text: str) -> list[str]:
    """``--variants``: comma-separated, each known and named once; ConfigError otherwise."""
    from vlmcodec.errors import ConfigError

    variants = [v.strip() for v in text.split(",") if v.strip()]
    if not variants:  # (a ZeroDivisionError after the models were built)
        raise ConfigError(f"--variants {text!r}: no variant named; choose from {', '.join(VARIANTS)}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"--variants: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(VARIANTS)}")
    twice = sorted({v for v in variants if variants.count(v) > 1})
    if twice:  # (each was timed twice per image)
        raise ConfigError(f"--variants: {', '.join(twice)} named more than once")
    return variants


def _codecs(model_path, variants: list[str], threads: int, workdir: Path) -> dict:
    from vlmcodec import Codec
    from vlmcodec.backends import create_backend
    from vlmcodec.export.onnx import export_onnx
    from vlmcodec.models.checkpoint import load_model

    loaded = load_model(model_path)
    codecs = {}
    for v in variants:
        if v == "torch":
            codecs[v] = Codec(loaded, backend="torch", threads=threads)
            continue
        codec = Codec(loaded, backend="torch")  # Codec passes no thread option to other backends:
        graphs = None                           # build the backend here with the same threads
        if v in ("onnxruntime-plain", "onnxruntime-subpixel"):
            graphs = workdir / v
            export_onnx(loaded, graphs, fold_gdn=v.endswith("subpixel"), subpixel=v.endswith("subpixel"))
        elif v != "onnxruntime":
            raise SystemExit(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
        codec.backend = create_backend("onnxruntime", loaded.model, threads=threads, graphs=graphs)
        codecs[v] = codec
    return codecs


def run(images: list[Path], variants: list[str], threads: int, repeat: int = 1, quality: float = 75.0,
        model_path=None, cross_decode: bool = True, progress: bool = True) -> dict:
    from vlmcodec.codec import default_model_path
    from vlmcodec.export.parity import compare_backends
    from vlmcodec.image_io import load_image

    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    crossing = cross_decode and "torch" in variants and "onnxruntime" in variants
    bar = progress_bar(len(images) * (2 if crossing else 1),
                       "images (timed, then cross-decoded)" if crossing else "images", progress)
    with tempfile.TemporaryDirectory() as tmp, bar:
        codecs = _codecs(model_path or default_model_path(), variants, threads, Path(tmp))
        times: dict[str, dict[str, list[float]]] = {
            v: {"encode": [], "decode": [], "networks_encode": [], "networks_decode": []} for v in variants}
        warm = load_image(images[0])
        for c in codecs.values():
            c.decode(c.encode(warm, quality))
        for i, path in enumerate(images):
            img = load_image(path)
            order = variants[i % len(variants):] + variants[: i % len(variants)]
            for _ in range(repeat):
                for v in order:
                    c = codecs[v]
                    c.stage_times = {}
                    t0 = time.perf_counter()
                    data = c.encode(img, quality)
                    t1 = time.perf_counter()
                    enc_stages = dict(c.stage_times)
                    c.stage_times = {}
                    c.decode(data)
                    t2 = time.perf_counter()
                    times[v]["encode"].append(t1 - t0)
                    times[v]["decode"].append(t2 - t1)
                    times[v]["networks_encode"].append(sum(enc_stages.get(k, 0.0) for k in ENCODE_NETWORKS))
                    times[v]["networks_decode"].append(c.stage_times.get("g_s", 0.0))
                    c.stage_times = None
            bar.update()
        summary = {v: {k: {"mean_s": statistics.fmean(t), "median_s": statistics.median(t)} for k, t in d.items()}
                   for v, d in times.items()}
        cross = None
        if crossing:
            records = []
            for path in images:
                rec = compare_backends(codecs["torch"], codecs["onnxruntime"], load_image(path), quality)
                rec["image"] = path.name
                records.append(rec)
                bar.update()
            cross = {
                "images": len(records),
                "images_with_symbol_mismatch": sum(r["z_mismatch"] + r["y_mismatch"] + r["index_mismatch"] > 0
                                                   for r in records),
                "symbol_mismatches": sum(r["z_mismatch"] + r["y_mismatch"] for r in records),
                "index_mismatches": sum(r["index_mismatch"] for r in records),
                "streams_different": sum(not r["streams_equal"] for r in records),
                "torch_to_onnxruntime_decode_failures": sum(not r["a_to_b_ok"] for r in records),
                "onnxruntime_to_torch_decode_failures": sum(not r["b_to_a_ok"] for r in records),
                "max_x_hat_abs_diff": max(r["x_hat_max_abs_diff"] for r in records),
                "max_y_abs_diff": max(r["y_max_abs_diff"] for r in records),
                "max_pixel_diff": max(r.get("pixel_max_diff", -1) for r in records),
                "per_image": records,
            }
    import onnxruntime

    return {
        "benchmark": "backends",
        "environment": {**environment(), "onnxruntime": onnxruntime.__version__,
                        "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "settings": {"images": [p.name for p in images], "threads": threads, "repeat": repeat, "quality": quality,
                     "model": str(model_path or default_model_path()), "variants": variants,
                     "networks_encode_stages": list(ENCODE_NETWORKS)},
        "summary": summary,
        "per_image_seconds": times,
        "cross_decode": cross,
    }


def format_table(result: dict) -> str:
    s = result["summary"]
    base = s.get("torch")
    lines = [f"{'backend':<20} {'encode s/img':>13} {'decode s/img':>13} {'nets enc':>9} {'nets dec':>9} "
             f"{'enc/torch':>10} {'dec/torch':>10}"]
    for v, d in s.items():
        enc, dec = d["encode"]["mean_s"], d["decode"]["mean_s"]
        r_enc = f"{enc / base['encode']['mean_s']:.2f}x" if base else "-"
        r_dec = f"{dec / base['decode']['mean_s']:.2f}x" if base else "-"
        lines.append(f"{v:<20} {enc:>13.3f} {dec:>13.3f} {d['networks_encode']['mean_s']:>9.3f} "
                     f"{d['networks_decode']['mean_s']:>9.3f} {r_enc:>10} {r_dec:>10}")
    c = result.get("cross_decode")
    if c:
        lines.append(
            f"cross-decode torch<->onnxruntime over {c['images']} images: symbol mismatches {c['symbol_mismatches']} "
            f"(index {c['index_mismatches']}, images {c['images_with_symbol_mismatch']}), streams different "
            f"{c['streams_different']}, decode failures torch->ort {c['torch_to_onnxruntime_decode_failures']} "
            f"ort->torch {c['onnxruntime_to_torch_decode_failures']}, max |x_hat diff| {c['max_x_hat_abs_diff']:.2e}, "
            f"max pixel diff {c['max_pixel_diff']}")
    e = result["environment"]
    lines.append(f"threads {result['settings']['threads']}, load average before {e['loadavg_before'][0]:.2f} "
                 f"after {e['loadavg_after'][0]:.2f} on {e['cpu_count']} CPUs ({e['cpu']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vlmcodec bench backends", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", help="folder of images (default ../shared/data/kodak)")
    p.add_argument("--limit", type=count_arg, help="first N images only")
    p.add_argument("--threads", type=positive_arg, default=1, help="network threads for every backend (default 1)")
    p.add_argument("--repeat", type=positive_arg, default=1, help="timed runs per image and backend")
    p.add_argument("--quality", type=float, default=75.0)
    p.add_argument("--model", help="model .safetensors (default: the bundled model)")
    p.add_argument("--variants", default="torch,onnxruntime", help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--no-cross-decode", action="store_true")
    p.add_argument("--out", default="results/backends.json")
    args = p.parse_args(argv)
    variants = parse_variants(args.variants)
    check_output_path(args.out)
    images = image_files(args.images or kodak_dir("vlmcodec bench backends --images DIR"), args.limit or 0)
    result = run(images, variants, args.threads, args.repeat,
                 args.quality, args.model, cross_decode=not args.no_cross_decode)
    write_json(args.out, result)
    print(format_table(result))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    from vlmcodec.bench.cli import main_of_module

    raise SystemExit(main_of_module("backends"))
