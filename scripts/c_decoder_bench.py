"""The C stream decoder against the Python decoder, side by side.

Encodes each image once, then times, alternating per image and round, ``Codec.entropy_decode``
(the Python decoder up to g_s: container, z, exact h_s, indexes, y) against the C library's
``vlmc_decoder_latents``, and ``Codec.decode`` (torch backend) against ``vlmc_decoder_image``, on
the same bytes (through ctypes; the model file loaded once, as a service would); checks that the
latents are identical and reports the largest pixel difference. Medians per image. With
``--decode-side N``, the images are decoded at the size a consumer of N px sees
(``Codec.decode(data, short_side=N)`` against ``vlmc_decoder_image_at``). With
``--baseline REV``, the C library built from that git revision too (a third arm, same ctypes
calls, same bytes out): the C decoder against an earlier build of itself.

With ``--throughput P1xT1,P2xT2,...``, measures the C decoder alone under concurrency instead:
P callers (Python threads: ctypes releases the GIL) decoding the streams to images, each call on
T threads, one decoder shared; images per second and per-call latency for each configuration,
configurations alternating per round — how to spend a machine's cores, on calls or within them.

With ``--write``, times the entropy stage of encoding instead: ``Codec.entropy_encode`` (z
symbols, exact h_s, y symbols, rANS, container) against the C library's
``vlmc_decoder_write_stream`` on the same (y · gain, z) from the networks, alternating per image
and round; checks that the streams are identical. (In one process, torch's OpenMP workers spin
on after the Python arm and slow the C call after it: ``OMP_WAIT_POLICY=PASSIVE`` removes that.)

With ``--encode``, times whole encodes instead: ``Codec.encode`` (torch backend: pre-editor,
g_a, h_a, entropy stage) against the C library's ``vlmc_decoder_encode_image`` (the same networks
in float32 in C) on the same pixels, alternating per image and round; reports how many streams are
identical to the Python encoder's, the largest size difference, the largest fraction of y symbols
that differ and the largest difference in decoded PSNR. With ``--baseline REV``, an earlier build's
``vlmc_decoder_encode_image`` is a third arm. Decodes and encodes report each arm's median count of
minor page faults per call too (after the first round): the pages of fresh buffers touched
first (``--cache-bytes N`` sets how many bytes of buffers the C library keeps between calls).

With ``--kernels``, times the convolutions alone instead: the C library's (``vlmc_conv_bench``)
and torch's ``conv2d`` on the same shapes, those the default model's exact h_s (float64) and
sub-pixel g_s (float32) run to decode a 768x512 image and those g_a and h_a run to encode it,
alternating, best of ``--rounds`` each; GMAC/s count every multiply of the dense shape, also where
the C decoder skips the sub-pixel phases' zero weights (torch's conv2d computes them). On a CPU
with AVX-512, the C library's AVX2 version (``VLMC_NO_AVX512=1``) is a third arm.

    python scripts/c_decoder_bench.py [--images DIR] [--quality 50] [--short-side 256] [--decode-side 256] [--threads 2] [--baseline REV]
    python scripts/c_decoder_bench.py --throughput 1x1,1x2,2x1 [--short-side 256]
    python scripts/c_decoder_bench.py --write [--quality 50] [--short-side 256] [--threads 2]
    python scripts/c_decoder_bench.py --encode [--quality 50] [--short-side 256] [--threads 2] [--baseline REV]
    python scripts/c_decoder_bench.py --kernels [--threads 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _served import report

ROOT = Path(__file__).resolve().parents[1]

# (dtype, in, out, k, h, w): the default model (N 64, M 128) decoding 768x512: h_s's transposed
# 5x5/2 convolutions as 3x3 sub-pixel ones (4x the outputs; "sp": with the zero weights of the
# phases, which the C decoder skips and torch's conv2d computes), then its 3x3; g_s's likewise,
# and the 1x1 convolutions of its three inverse GDNs
KERNEL_SHAPES = [("f64sp", 64, 512, 3, 8, 12), ("f64sp", 128, 768, 3, 16, 24), ("f64", 192, 256, 3, 32, 48),
                 ("f32sp", 128, 256, 3, 32, 48), ("f32", 64, 64, 1, 64, 96), ("f32sp", 64, 256, 3, 64, 96),
                 ("f32", 64, 64, 1, 128, 192), ("f32sp", 64, 256, 3, 128, 192), ("f32", 64, 64, 1, 256, 384),
                 ("f32sp", 64, 12, 3, 256, 384)]


# ... and encoding it: g_a's four 5x5/2 convolutions (f32s2: as the C encoder runs them, 3x3 on the
# input unshuffled by 2; h, w the output's), the 1x1 convolutions of its GDNs, h_a's 3x3 and 5x5/2
ENCODER_KERNEL_SHAPES = [("f32s2", 3, 64, 5, 256, 384), ("f32", 64, 64, 1, 256, 384), ("f32s2", 64, 64, 5, 128, 192),
                         ("f32", 64, 64, 1, 128, 192), ("f32s2", 64, 64, 5, 64, 96), ("f32", 64, 64, 1, 64, 96),
                         ("f32s2", 64, 128, 5, 32, 48), ("f32", 128, 64, 3, 32, 48), ("f32s2", 64, 64, 5, 16, 24),
                         ("f32s2", 64, 64, 5, 8, 12)]


def torch_gmacs(dtype: str, cin: int, cout: int, k: int, h: int, w: int, rounds: int) -> float:
    """torch.nn.functional.conv2d (padding k // 2, bias; "s2": stride 2 to an h × w output) on one
    shape: best of ``rounds`` after a warm-up."""
    dt = torch.float32 if dtype.startswith("f32") else torch.float64
    stride = 2 if dtype.endswith("s2") else 1
    x = torch.randn(1, cin, h * stride, w * stride, dtype=dt)
    weight, bias = torch.randn(cout, cin, k, k, dtype=dt) * 0.05, torch.randn(cout, dtype=dt)
    best = float("inf")
    with torch.no_grad():
        for r in range(rounds + 1):
            t0 = time.perf_counter()
            torch.nn.functional.conv2d(x, weight, bias, stride=stride, padding=k // 2)
            if r:
                best = min(best, time.perf_counter() - t0)
    return cout * cin * k * k * h * w / best / 1e9


def kernel_bench(threads: int, rounds: int) -> dict:
    """Each shape timed by vlmc_conv_bench and by torch, alternately; GMAC/s and their ratio. On a
    CPU with AVX-512, the C library's AVX2 version too (VLMC_NO_AVX512=1), as a third arm."""
    import os
    import subprocess

    from vlmcodec.export.c_decoder import build_c_decoder, cpu_vector_isa

    tool = build_c_decoder(ROOT, Path(tempfile.mkdtemp(prefix="c_conv_bench_")) / "build", bench=True) / "vlmc_conv_bench"
    avx512 = cpu_vector_isa() == "avx512"
    arms = {"c": {"VLMC_NO_AVX512": ""}, "c_avx2": {"VLMC_NO_AVX512": "1"}} if avx512 else {"c": {}}
    result = {"threads": threads, "rounds": rounds, "avx512": avx512}
    for part, shapes in (("decoder", KERNEL_SHAPES), ("encoder", ENCODER_KERNEL_SHAPES)):
        rows = []
        for shape in shapes:
            row = {"dtype": shape[0], "in": shape[1], "out": shape[2], "k": shape[3], "h": shape[4], "w": shape[5]}
            for arm, env in arms.items():
                run = subprocess.run([str(tool), str(threads), str(rounds), *map(str, shape)], capture_output=True,
                                     text=True, check=True, env={**os.environ, **env})
                row[f"{arm}_gmac_s"] = round(json.loads(run.stdout)["gmac_s"], 2)
            row["torch_gmac_s"] = round(torch_gmacs(*shape, rounds), 2)
            row["c_over_torch"] = round(row["c_gmac_s"] / row["torch_gmac_s"], 3)
            rows.append(row)
        macs = [r["out"] * r["in"] * r["k"] ** 2 * r["h"] * r["w"] for r in rows]
        total = {who: sum(m / r[f"{who}_gmac_s"] for m, r in zip(macs, rows)) / 1e6 for who in (*arms, "torch")}
        result[part] = {"shapes": rows, "all_shapes_ms": {k: round(v, 2) for k, v in total.items()},
                        "time_ratio_c_over_torch": round(total["c"] / total["torch"], 3)}
        if "c_avx2" in total:
            result[part]["time_ratio_c_over_c_avx2"] = round(total["c"] / total["c_avx2"], 3)
    return result


def throughput(dec, streams: list[bytes], configs: list[tuple[int, int]], rounds: int, coded_size: bool) -> list[dict]:
    """For each (callers, threads): all streams decoded to images by that many concurrent callers,
    each call on that many threads; best round's images/s, and the median latency of a call."""
    from concurrent.futures import ThreadPoolExecutor

    best: dict[tuple[int, int], float] = {}
    latencies: dict[tuple[int, int], list[float]] = {c: [] for c in configs}
    for r in range(rounds):
        for callers, threads in configs[r % len(configs):] + configs[: r % len(configs)]:
            def one(data: bytes, threads: int = threads, key: tuple[int, int] = (callers, threads)) -> None:
                t0 = time.perf_counter()
                dec.image(data, threads=threads, coded_size=coded_size)
                latencies[key].append(time.perf_counter() - t0)

            with ThreadPoolExecutor(callers) as pool:
                t0 = time.perf_counter()
                list(pool.map(one, streams))
                rate = len(streams) / (time.perf_counter() - t0)
            best[(callers, threads)] = max(best.get((callers, threads), 0.0), rate)
    return [{"callers": c, "threads_per_call": t, "images_per_s": round(best[(c, t)], 2),
             "median_call_ms": round(statistics.median(latencies[(c, t)]) * 1000, 1)} for c, t in configs]


def write_bench(codec, c, files: list[Path], quality: float, short_side: int, threads: int, rounds: int) -> dict:
    """Codec.entropy_encode against vlmc_decoder_write_stream on the same latents, alternating."""
    from vlmcodec.image_io import load_image

    cases = []
    for f in files:
        prep = codec.prepare(load_image(f), quality, short_side or None)
        y, z = codec.analyse([prep.pixels], [prep.quality])
        cases.append((prep, y[0], z[0], y[0].numpy(), z[0].numpy()))
    times: dict[str, list[float]] = {"python": [], "c": []}
    for r in range(rounds):
        for i, (prep, y, z, y_np, z_np) in enumerate(cases):
            (h, w), (ch, cw) = prep.size, prep.pixels.shape[:2]
            calls = {"python": lambda: codec.entropy_encode(y, z, prep),
                     "c": lambda: c.write_stream(y_np, z_np, w, h, prep.quality, coded_size=(cw, ch),
                                                 pre_edited=codec.pre_edit, threads=threads)}
            out = {}
            for who in (("python", "c") if (i + r) % 2 == 0 else ("c", "python")):
                t0 = time.perf_counter()
                out[who] = calls[who]()
                times[who].append(time.perf_counter() - t0)
            if out["c"] != out["python"]:
                raise SystemExit(f"streams differ on {files[i].name}")
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    return {"images": len(files), "quality": quality, "short_side": short_side, "threads": threads, "rounds": rounds,
            "median_ms": {"python entropy_encode": med["python"], "c write_stream": med["c"]},
            "ratio_c_over_python": med["c"] / med["python"], "streams_identical": True}


def minor_faults() -> int:
    """This process's minor page faults so far (first touches of fresh pages, mostly)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def encode_bench(codec, c, files: list[Path], quality: float, short_side: int, threads: int, rounds: int,
                 base=None) -> dict:
    """Codec.encode against vlmc_decoder_encode_image on the same pixels, alternating (and an
    earlier build's vlmc_decoder_encode_image, given ``base``)."""
    from vlmcodec.image_io import load_image

    images = [load_image(f) for f in files]
    side = short_side or None
    calls = {"python": lambda im: codec.encode(im, quality, short_side=side),
             "c": lambda im: c.encode_image(im, quality, short_side=short_side, threads=threads)}
    if base is not None:
        calls["baseline"] = lambda im: base.encode_image(im, quality, short_side=short_side, threads=threads)
    arms = list(calls)
    times: dict[str, list[float]] = {who: [] for who in arms}
    faults: dict[str, list[int]] = {who: [] for who in arms}
    identical, size_diff, symbol_diff, psnr_diff = set(), 0.0, 0.0, 0.0
    # every order in turn, as the decode benchmark does: each arm follows each other one as often
    # (a rotation of three arms put the C arm after the Python one twice as often as the baseline,
    # and torch's OpenMP workers spinning on after it slowed the C arm: the same build as both C
    # arms measured 1.07× itself at 256 px)
    orders = list(itertools.permutations(arms))
    for r in range(rounds):
        for i, im in enumerate(images):
            out = {}
            for who in orders[(i + r * len(images)) % len(orders)]:
                f0, t0 = minor_faults(), time.perf_counter()
                out[who] = calls[who](im)
                times[who].append(time.perf_counter() - t0)
                faults[who].append(minor_faults() - f0)
            if r:
                continue
            ours, theirs = out["c"], out["python"]
            if ours == theirs:
                identical.add(files[i].name)
            size_diff = max(size_diff, abs(len(ours) - len(theirs)) / len(theirs))
            symbol_diff = max(symbol_diff, float(np.mean(c.latents(ours, raw=True) != c.latents(theirs, raw=True))))
            psnr_diff = max(psnr_diff, abs(_psnr(codec.decode(ours), im) - _psnr(codec.decode(theirs), im)))
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    result = {"images": len(files), "quality": quality, "short_side": short_side, "threads": threads,
              "rounds": rounds, "median_ms": {"python Codec.encode": med["python"], "c encode_image": med["c"]},
              "ratio_c_over_python": med["c"] / med["python"], "streams_identical": len(identical),
              "max_size_difference": size_diff, "max_symbols_differing": symbol_diff,
              "max_psnr_difference_db": psnr_diff,
              "median_page_faults": {who: statistics.median(faults[who][len(images):] or faults[who]) for who in arms}}
    if base is not None:
        result["median_ms"]["c encode_image, baseline build"] = med["baseline"]
        result["ratio_c_over_baseline"] = med["c"] / med["baseline"]
    return result


def baseline_library(rev: str, work: Path) -> Path:
    """libvlmc_decoder built from git revision ``rev`` of this repository (a detached worktree)."""
    import subprocess

    from vlmcodec.export.c_decoder import build_c_decoder

    tree = work / "baseline_src"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True,
                   capture_output=True)
    try:
        return build_c_decoder(tree, work / "baseline_build") / "libvlmc_decoder.so"
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False,
                       capture_output=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", default=str(ROOT.parent / "shared/data/kodak"))
    p.add_argument("--limit", type=int)
    p.add_argument("--quality", type=float, default=50)
    p.add_argument("--short-side", type=int, default=0, help="code at a consumer's scale (0: full size)")
    p.add_argument("--decode-side", type=int, default=0, help="decode at a consumer's scale (0: the original size)")
    p.add_argument("--threads", type=int, default=2, help="threads for both decoders")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", help="write the figures here as JSON")
    p.add_argument("--kernels", action="store_true", help="time the convolutions alone against torch's")
    p.add_argument("--baseline", metavar="REV", help="also time the C library built from this git revision")
    p.add_argument("--throughput", metavar="PxT,...", help="C decoder alone: P concurrent callers, T threads per call")
    p.add_argument("--write", action="store_true", help="time writing streams: Codec.entropy_encode against "
                   "vlmc_decoder_write_stream")
    p.add_argument("--cache-bytes", type=int, help="the C library's kept working buffers "
                   "(vlmc_decoder_set_cache_bytes; default: the library's, 128 MiB)")
    p.add_argument("--encode", action="store_true", help="time whole encodes: Codec.encode against "
                   "vlmc_decoder_encode_image")
    a = p.parse_args()
    if a.kernels:
        torch.set_num_threads(a.threads)
        return report(kernel_bench(a.threads, a.rounds), a.out)

    from vlmcodec import Codec
    from vlmcodec.codec import default_model_path
    from vlmcodec.export.c_decoder import CStreamDecoder, build_c_decoder, export_c_decoder
    from vlmcodec.image_io import load_image
    from vlmcodec.models.checkpoint import load_model

    configs = []
    for c in a.throughput.split(",") if a.throughput else []:
        parts = c.strip().lower().split("x")
        if len(parts) != 2 or not all(v.isdigit() and int(v) >= 1 for v in parts):
            p.error(f"--throughput takes PxT pairs (callers x threads, each at least 1), e.g. 1x2,2x1; got {c!r}")
        configs.append((int(parts[0]), int(parts[1])))
    if a.decode_side and a.baseline:
        p.error("--decode-side and --baseline exclude each other (earlier libraries may lack vlmc_decoder_image_at)")
    torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix="c_decoder_bench_"))
    lib = build_c_decoder(ROOT, work / "build") / "libvlmc_decoder.so"
    model_file = export_c_decoder(load_model(default_model_path()), work)
    c = CStreamDecoder(lib, model_file)
    isa = c.vector_isa()  # the convolutions' version in this process (baseline builds run their own)

    def report_isa(result: dict, out: str | None) -> int:
        return report({**result, "vector_isa": isa}, out)

    if a.cache_bytes is not None:
        c.set_cache_bytes(a.cache_bytes)
    base = CStreamDecoder(baseline_library(a.baseline, work), model_file) if a.baseline else None
    codec = Codec(threads=a.threads)
    files = sorted(Path(a.images).glob("*.png"))[: a.limit]
    if a.encode:
        return report_isa(encode_bench(codec, c, files, a.quality, a.short_side, a.threads, a.rounds, base), a.out)
    if a.write:
        return report_isa(write_bench(codec, c, files, a.quality, a.short_side, a.threads, a.rounds), a.out)
    streams = [codec.encode(load_image(f), quality=a.quality, short_side=a.short_side or None) for f in files]
    if a.throughput:
        return report_isa({"images": len(files), "quality": a.quality, "short_side": a.short_side, "rounds": a.rounds,
                       "configs": throughput(c, streams, configs, a.rounds, a.short_side > 0)}, a.out)
    side = a.short_side or None
    calls = {"python latents": lambda d: codec.entropy_decode(d).y_hat.numpy(),
             "c latents": lambda d: c.latents(d, raw=True, threads=a.threads),
             "python image": lambda d: codec.decode(d, short_side=a.decode_side or side),
             "c image": (lambda d: c.image(d, threads=a.threads, short_side=a.decode_side)) if a.decode_side
             else (lambda d: c.image(d, threads=a.threads, coded_size=side is not None))}
    if base is not None:
        calls["baseline latents"] = lambda d: base.latents(d, raw=True, threads=a.threads)
        calls["baseline image"] = lambda d: base.image(d, threads=a.threads, coded_size=side is not None)
    arms = ["python", "c"] + (["baseline"] if base is not None else [])
    # every order in turn, so that each arm follows each other one as often (the arm before leaves
    # its traces: torch's OpenMP workers spin on for a while after the Python decoder returns)
    orders = list(itertools.permutations(arms))
    times: dict[str, list[float]] = {k: [] for k in calls}
    faults: dict[str, list[int]] = {k: [] for k in calls}
    worst = 0
    baseline_differs: set[str] = set()  # images whose pixels differ from the baseline build's, in any round
    for r in range(a.rounds):
        for i, data in enumerate(streams):
            for stage in ("latents", "image"):
                order = orders[(i + r) % len(orders)]
                out = {}
                for who in order:
                    f0, t0 = minor_faults(), time.perf_counter()
                    out[who] = calls[f"{who} {stage}"](data)
                    times[f"{who} {stage}"].append(time.perf_counter() - t0)
                    if r:  # (the first round's first touches aside)
                        faults[f"{who} {stage}"].append(minor_faults() - f0)
                if stage == "latents" and not all(np.array_equal(out[w], out["python"]) for w in arms[1:]):
                    raise SystemExit(f"latents differ on {files[i].name}")
                if stage == "image":
                    worst = max(worst, int(np.abs(out["c"].astype(int) - out["python"].astype(int)).max()))
                    if base is not None and not np.array_equal(out["c"], out["baseline"]):
                        baseline_differs.add(files[i].name)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    result = {"images": len(files), "quality": a.quality, "short_side": a.short_side, "decode_side": a.decode_side,
              "threads": a.threads,
              "rounds": a.rounds, "median_ms": med,
              "ratio_c_over_python": {s: med[f"c {s}"] / med[f"python {s}"] for s in ("latents", "image")},
              "latents_identical": True, "image_max_abs_diff": worst,
              "median_page_faults": {k: statistics.median(v) for k, v in faults.items() if v}}
    if base is not None:
        result["baseline"] = a.baseline
        result["ratio_c_over_baseline"] = {s: med[f"c {s}"] / med[f"baseline {s}"] for s in ("latents", "image")}
        result["images_differing_from_baseline"] = len(baseline_differs)
    return report_isa(result, a.out)


if __name__ == "__main__":
    raise SystemExit(main())
