"""Side by side: coding with glibc's malloc as it comes and with vlmcodec's tuned thresholds
(``vlmcodec.allocator``). The setting is process-wide and one-way, so each arm is a fresh
process (``VLMCODEC_TUNE_MALLOC=0`` / ``1``); the arms alternate, round after round, so that the
machine's noise falls on both. Each process encodes and decodes the same images ``--reps`` times
after one untimed pass and reports its median times, page faults, system time and peak memory,
and a hash of every stream and decoded image — which must be the same in both arms.

    python scripts/allocator_bench.py --rounds 4
    python scripts/allocator_bench.py --rounds 3 --backend onnxruntime --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from vlmcodec.bench.common import count_arg, image_files, positive_arg

KODAK = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kodak"

WORKER = r"""
import hashlib, json, resource, statistics, sys, time
import torch
from vlmcodec import Codec, allocator
from vlmcodec.image_io import load_image
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
codec = Codec(backend=a["backend"], threads=a["threads"], short_side=a["short_side"])
images = [load_image(p) for p in a["images"]]
digest = hashlib.sha256()
for im in images:  # untimed first pass: the first call's one-off costs are not what is measured
    data = codec.encode(im, a["quality"])
    digest.update(data); digest.update(codec.decode(data).tobytes())
before = resource.getrusage(resource.RUSAGE_SELF)
enc, dec = [], []
for _ in range(a["reps"]):
    for im in images:
        t = time.perf_counter(); data = codec.encode(im, a["quality"]); enc.append(time.perf_counter() - t)
        t = time.perf_counter(); codec.decode(data); dec.append(time.perf_counter() - t)
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"tuned": allocator.is_tuned(), "encode_ms": 1000 * statistics.median(enc),
                  "decode_ms": 1000 * statistics.median(dec), "faults": after.ru_minflt - before.ru_minflt,
                  "sys_s": after.ru_stime - before.ru_stime, "peak_mib": after.ru_maxrss / 1024,
                  "digest": digest.hexdigest()}))
"""


def run_arm(tuned: bool, args: argparse.Namespace, images: list[str]) -> dict:
    env = dict(os.environ, VLMCODEC_TUNE_MALLOC="1" if tuned else "0")
    spec = {"threads": args.threads, "backend": args.backend, "short_side": args.short_side,
            "quality": args.quality, "reps": args.reps, "images": images}
    out = subprocess.run([sys.executable, "-c", WORKER, json.dumps(spec)], env=env, capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"worker failed ({'tuned' if tuned else 'plain'}):\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["tuned"] != tuned:
        raise SystemExit(f"the {'tuned' if tuned else 'plain'} arm reports tuned={result['tuned']}: "
                         "is malloc glibc's here?")
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=positive_arg, default=3)
    ap.add_argument("--images", type=Path, default=KODAK)
    ap.add_argument("--limit", type=count_arg, default=3, help="images from the folder (sorted; default 3; 0: all)")
    ap.add_argument("--reps", type=positive_arg, default=3)
    ap.add_argument("--quality", type=float, default=50.0)
    ap.add_argument("--threads", type=positive_arg, default=2)
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--short-side", type=positive_arg, default=None)
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    try:
        images = [str(p) for p in image_files(args.images, args.limit)]
    except FileNotFoundError as e:  # (an empty folder: a StatisticsError after the runs)
        ap.error(str(e))
    rows = {"plain": [], "tuned": []}
    for r in range(args.rounds):
        for tuned in ((False, True) if r % 2 == 0 else (True, False)):
            res = run_arm(tuned, args, images)
            rows["tuned" if tuned else "plain"].append(res)
            print(f"round {r + 1} {'tuned' if tuned else 'plain'}: encode {res['encode_ms']:.1f} ms, "
                  f"decode {res['decode_ms']:.1f} ms, {res['faults']} page faults, {res['sys_s']:.2f} s system, "
                  f"peak {res['peak_mib']:.0f} MiB", flush=True)
    digests = {res["digest"] for arm in rows.values() for res in arm}
    med = {arm: {k: statistics.median(x[k] for x in v) for k in ("encode_ms", "decode_ms", "faults", "sys_s", "peak_mib")}
           for arm, v in rows.items()}
    print(f"\n{len(images)} images × {args.reps} reps, {args.backend}, {args.threads} thread(s), q{args.quality:g}"
          + (f", short_side {args.short_side}" if args.short_side else "") + f", {args.rounds} rounds; medians")
    print("| arm | encode ms | decode ms | page faults | system s | peak MiB |\n|---|---:|---:|---:|---:|---:|")
    for arm, m in med.items():
        print(f"| {arm} | {m['encode_ms']:.1f} | {m['decode_ms']:.1f} | {m['faults']:.0f} | {m['sys_s']:.2f} | "
              f"{m['peak_mib']:.0f} |")
    print(f"tuned / plain: encode {med['tuned']['encode_ms'] / med['plain']['encode_ms']:.2f}×, "
          f"decode {med['tuned']['decode_ms'] / med['plain']['decode_ms']:.2f}×, "
          f"peak memory {med['tuned']['peak_mib'] / med['plain']['peak_mib']:.2f}×; "
          f"streams and decoded images {'identical' if len(digests) == 1 else 'DIFFERENT'} in every process")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                        "medians": med, "identical": len(digests) == 1}, indent=1))
    if len(digests) != 1:
        raise SystemExit("the two arms coded differently")


if __name__ == "__main__":
    main()
