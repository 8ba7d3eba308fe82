"""The Engine's network threads and glibc's per-thread arenas, side by side.

A thread other than the main one allocates from an arena of 64 MiB heaps, and a block that does
not fit is mmapped afresh, so the malloc tuning (``vlmcodec.allocator``) helps the Engine's
worker threads less than the main thread. ``MALLOC_ARENA_MAX=1`` in the environment at start-up
sends every thread to the main arena; so does ``mallopt(M_ARENA_MAX, 1)`` for the threads that
first allocate after it (``allocator.share_main_arena()``, called before the Engine is made;
the threads already attached keep their arenas). Arms: the Engine as it comes (its threads on
arenas of their own), after ``share_main_arena()``, and with the environment variable. Fresh processes, arms alternating; each runs an Engine
(2 network workers × 1 thread, max_batch 4) over 8 Kodak images once untimed, then twice timed,
for encode and for decode, and reports images per second and page faults.

    python scripts/engine_malloc_arenas.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

KODAK = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kodak"

WORKER = r"""
import json, resource, sys, time
from vlmcodec import Codec
from vlmcodec.image_io import load_image
from vlmcodec.runtime import Engine
from vlmcodec import allocator
paths, reps = json.loads(sys.argv[1]), int(sys.argv[2])
if sys.argv[3] == "on":
    assert allocator.share_main_arena()
images = [load_image(p) for p in paths]
usage = lambda: resource.getrusage(resource.RUSAGE_SELF)
out = {}
with Engine(Codec(threads=1), max_batch=4, network_workers=2, intra_op_threads=1) as engine:
    streams = [f.result() for f in [engine.submit_encode(im, 50) for im in images]]
    [f.result() for f in [engine.submit_decode(d) for d in streams]]
    for mode, submit, items in (("encode", lambda x: engine.submit_encode(x, 50), images),
                                ("decode", engine.submit_decode, streams)):
        before, t = usage(), time.perf_counter()
        for _ in range(reps):
            [f.result() for f in [submit(x) for x in items]]
        seconds, after = time.perf_counter() - t, usage()
        out[mode] = {"img_s": reps * len(items) / seconds, "faults": after.ru_minflt - before.ru_minflt}
out["shared"] = allocator.shares_main_arena()
print(json.dumps(out))
"""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=Path, default=KODAK)
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args(argv)
    paths = [str(p) for p in sorted(args.images.glob("*.png"))[: args.limit]]
    if not paths:
        raise SystemExit(f"no PNG images in {args.images}")
    arms = {"own arenas (as it comes)": ({}, "off"), "share_main_arena() first": ({}, "on"),
            "MALLOC_ARENA_MAX=1": ({"MALLOC_ARENA_MAX": "1"}, "off")}
    rows: dict[str, list[dict]] = {name: [] for name in arms}
    for r in range(args.rounds):
        for name in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
            extra, share = arms[name]
            env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | extra
            res = subprocess.run([sys.executable, "-c", WORKER, json.dumps(paths), str(args.reps), share], env=env,
                                 capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise SystemExit(f"worker failed ({name}):\n{res.stderr[-2000:]}")
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows[name].append(row)
            print(f"round {r + 1} {name}: " + ", ".join(
                f"{m} {row[m]['img_s']:.2f} img/s ({row[m]['faults']} faults)" for m in ("encode", "decode")), flush=True)
    print(f"\n{len(paths)} images × {args.reps}, {args.rounds} rounds; medians")
    for name, rs in rows.items():
        print(f"{name}: " + ", ".join(
            f"{m} {statistics.median(x[m]['img_s'] for x in rs):.2f} img/s, "
            f"{statistics.median(x[m]['faults'] for x in rs):.0f} faults" for m in ("encode", "decode")))


if __name__ == "__main__":
    main()
