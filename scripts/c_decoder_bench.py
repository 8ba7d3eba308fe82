"""The C stream decoder against the Python decoder, side by side.

Encodes each image once, then times, alternating per image and round, ``Codec.entropy_decode``
(the Python decoder up to g_s: container, z, exact h_s, indexes, y) against the C library's
``vlmc_decoder_latents``, and ``Codec.decode`` (torch backend) against ``vlmc_decoder_image``, on
the same bytes (through ctypes; the model file loaded once, as a service would); checks that the
latents are identical and reports the largest pixel difference. Medians per image.

    python scripts/c_decoder_bench.py [--images DIR] [--quality 50] [--short-side 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", default=str(ROOT.parent / "shared/data/kodak"))
    p.add_argument("--limit", type=int)
    p.add_argument("--quality", type=float, default=50)
    p.add_argument("--short-side", type=int, default=0, help="code at a consumer's scale (0: full size)")
    p.add_argument("--threads", type=int, default=2, help="threads for both decoders")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", help="write the figures here as JSON")
    a = p.parse_args()

    from vlmcodec import Codec
    from vlmcodec.codec import default_model_path
    from vlmcodec.export.c_decoder import CStreamDecoder, build_c_decoder, export_c_decoder
    from vlmcodec.image_io import load_image
    from vlmcodec.models.checkpoint import load_model

    torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix="c_decoder_bench_"))
    lib = build_c_decoder(ROOT, work / "build") / "libvlmc_decoder.so"
    c = CStreamDecoder(lib, export_c_decoder(load_model(default_model_path()), work))
    codec = Codec(threads=a.threads)
    files = sorted(Path(a.images).glob("*.png"))[: a.limit]
    streams = [codec.encode(load_image(f), quality=a.quality, short_side=a.short_side or None) for f in files]
    side = a.short_side or None
    calls = {"python latents": lambda d: codec.entropy_decode(d).y_hat.numpy(),
             "c latents": lambda d: c.latents(d, raw=True, threads=a.threads),
             "python image": lambda d: codec.decode(d, short_side=side),
             "c image": lambda d: c.image(d, threads=a.threads, coded_size=side is not None)}
    times: dict[str, list[float]] = {k: [] for k in calls}
    worst = 0
    for r in range(a.rounds):
        for i, data in enumerate(streams):
            for stage in ("latents", "image"):
                order = ("python", "c") if (i + r) % 2 == 0 else ("c", "python")
                out = {}
                for who in order:
                    t0 = time.perf_counter()
                    out[who] = calls[f"{who} {stage}"](data)
                    times[f"{who} {stage}"].append(time.perf_counter() - t0)
                if stage == "latents" and not np.array_equal(out["c"], out["python"]):
                    raise SystemExit(f"latents differ on {files[i].name}")
                if stage == "image":
                    worst = max(worst, int(np.abs(out["c"].astype(int) - out["python"].astype(int)).max()))
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    result = {"images": len(files), "quality": a.quality, "short_side": a.short_side, "threads": a.threads,
              "rounds": a.rounds, "median_ms": med,
              "ratio_c_over_python": {s: med[f"c {s}"] / med[f"python {s}"] for s in ("latents", "image")},
              "latents_identical": True, "image_max_abs_diff": worst}
    print(json.dumps(result, indent=1))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
