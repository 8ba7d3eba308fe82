"""Side by side: the CLI's file loop as it was (read, code, write the PNG with Pillow's default
zlib level 6, one after another) and as it is (next image read and last PNG written on background
threads, zlib level 1), for ``vlmcodec decode`` and ``vlmcodec roundtrip`` over a folder.

Each arm is a fresh process timing one whole command (model load included, interpreter start
not); the arms alternate, round after round, so the machine's noise falls on all of them. The
"as it was" arms run a copy of the old loop (the lines of ``cmd_encode``/``cmd_decode`` before the
change); "overlap, level 6" isolates the threads from the zlib level. Every arm's decoded
PNGs must hold the same pixels.

    python scripts/cli_io_bench.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

KODAK = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kodak"

WORKER = r"""
import hashlib, json, sys, time
from pathlib import Path
import numpy as np
from PIL import Image
a = json.loads(sys.argv[1])
out = Path(a["out"])
t0 = time.perf_counter()
if a["arm"] == "sequential, level 6":
    from vlmcodec import Codec
    from vlmcodec.image_io import load_image, psnr
    codec = Codec(threads=a["threads"])
    if a["job"] == "decode":
        for src in sorted(Path(a["inputs"]).glob("*.vlmc")):
            img = codec.decode(src.read_bytes())
            Image.fromarray(img).save(out / (src.stem + ".png"))
    else:
        for src in sorted(Path(a["inputs"]).glob("*.png")):
            img = load_image(src, codec.max_pixels)
            data = codec.encode(img, quality=a["quality"])
            dst = out / (src.stem + ".vlmc"); dst.write_bytes(data)
            rec = codec.decode(dst.read_bytes())
            psnr(img, rec)
            Image.fromarray(rec).save(dst.with_suffix(".png"))
else:
    from vlmcodec.cli import main
    level = "6" if a["arm"] == "overlap, level 6" else "1"
    argv = [a["job"], a["inputs"], "-o", str(out), "--threads", str(a["threads"]), "--quiet", "--png-level", level]
    if a["job"] == "roundtrip":
        argv += ["-q", str(a["quality"])]
    import contextlib, io
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    assert rc == 0, rc
wall = time.perf_counter() - t0
digest = hashlib.sha256()
pngs = sorted(out.glob("*.png"))
for p in pngs:
    digest.update(np.asarray(Image.open(p)).tobytes())
print(json.dumps({"wall_s": wall, "digest": digest.hexdigest(), "files": len(pngs),
                  "png_bytes": sum(p.stat().st_size for p in pngs)}))
"""

ARMS = ("sequential, level 6", "overlap, level 6", "overlap, level 1")


def run_arm(arm: str, job: str, inputs: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as out:
        spec = {"arm": arm, "job": job, "inputs": inputs, "out": out, "threads": args.threads,
                "quality": args.quality}
        res = subprocess.run([sys.executable, "-c", WORKER, json.dumps(spec)], capture_output=True, text=True,
                             check=False, env=dict(os.environ))
        if res.returncode != 0:
            raise SystemExit(f"{arm} / {job} failed:\n{res.stderr[-2000:]}")
        return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=str(KODAK))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quality", type=float, default=50.0)
    ap.add_argument("--jobs", default="decode,roundtrip")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    from vlmcodec.cli import main as cli

    with tempfile.TemporaryDirectory() as streams:
        assert cli(["encode", args.images, "-o", streams, "-q", str(args.quality), "--no-psnr", "--quiet",
                    "--threads", str(args.threads)]) == 0
        inputs = {"decode": streams, "roundtrip": args.images}
        results: dict = {job: {arm: [] for arm in ARMS} for job in args.jobs.split(",")}
        for r in range(args.rounds):
            for job in results:
                order = ARMS if r % 2 == 0 else ARMS[::-1]
                for arm in order:
                    results[job][arm].append(run_arm(arm, job, inputs[job], args))
                    print(f"round {r + 1} {job:<9} {arm:<20} {results[job][arm][-1]['wall_s']:.2f} s", flush=True)
    summary = {}
    for job, arms in results.items():
        digests = {run["digest"] for runs in arms.values() for run in runs}
        base = statistics.median(run["wall_s"] for run in arms[ARMS[0]])
        print(f"\n{job}: {arms[ARMS[0]][0]['files']} images, pixels identical in every arm: {len(digests) == 1}")
        summary[job] = {}
        for arm, runs in arms.items():
            wall = statistics.median(run["wall_s"] for run in runs)
            size = runs[0]["png_bytes"] / 2**20
            summary[job][arm] = {"wall_s": wall, "ratio": wall / base, "png_mib": size,
                                 "walls": [run["wall_s"] for run in runs]}
            print(f"  {arm:<20} median {wall:6.2f} s  ({wall / base:.2f}x)   PNGs {size:6.2f} MiB")
        summary[job]["identical"] = len(digests) == 1
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
