"""Whole ``vlmc_encode`` and ``vlmc_decode_latents`` commands from several C builds, side by side.

Each arm is ``NAME=BUILD_DIR`` (the folder holding the tools, e.g. ``/tmp/b/kernels/decoder``),
optionally ``NAME=BUILD_DIR:VAR=VALUE`` to run that arm's tools with an environment variable set
(``VLMC_NO_AVX512=1``: the AVX2 version). The arms run in turn, the order reversed every other
round; each round encodes the image and decodes the stream to pixels; medians per command (the
model file is read by each command, as a one-shot tool would) and each arm's stream hash. With
``--open``, times opening the model file alone instead: ``vlmc_decode_latents MODEL STREAM --info``
(the model file read, checked and its weights packed; the stream's header parsed).

    python scripts/c_tools_bench.py MODEL.vlmd IMAGE.ppm new=/tmp/b/kernels/decoder \\
        new_avx2=/tmp/b/kernels/decoder:VLMC_NO_AVX512=1 old=/tmp/old/kernels/decoder [--rounds 4] [--open]
        [--short-side N]

IMAGE may be any binary PPM or PGM ``vlmc_encode`` reads (16-bit ones too); ``--short-side N``
codes it at a consumer's scale (``vlmc_encode --short-side``), where reading a large image is
much of the command's time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def parse_arm(text: str) -> tuple[str, Path, dict[str, str]]:
    name, _, rest = text.partition("=")
    folder, _, setting = rest.partition(":")
    if not name or not folder:
        raise argparse.ArgumentTypeError(f"an arm is NAME=BUILD_DIR[:VAR=VALUE], got {text!r}")
    env = dict([setting.split("=", 1)]) if setting else {}
    return name, Path(folder), env


def open_bench(a: argparse.Namespace, work: Path) -> int:
    """Each arm's ``vlmc_decode_latents MODEL STREAM --info``, arms in turn, medians."""
    stream = work / "probe.vlmc"
    name, folder, extra = a.arms[0]
    subprocess.run([folder / "vlmc_encode", a.model, a.image, stream, "--quality", a.quality], check=True,
                   capture_output=True, env={**os.environ, **extra})
    times: dict[str, list[float]] = {name: [] for name, _, _ in a.arms}
    for r in range(a.rounds):
        for name, folder, extra in (a.arms if r % 2 == 0 else list(reversed(a.arms))):
            t0 = time.perf_counter()
            subprocess.run([folder / "vlmc_decode_latents", a.model, stream, "--info"], check=True, capture_output=True,
                           env={**os.environ, **extra})
            times[name].append(time.perf_counter() - t0)
    result = {"model": a.model, "rounds": a.rounds, "arms": {n: {"build": str(f), "env": e} for n, f, e in a.arms},
              "median_ms_to_open": {n: round(statistics.median(v) * 1000, 1) for n, v in times.items()}}
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("image", help="a binary PPM")
    p.add_argument("arms", nargs="+", type=parse_arm)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--quality", default="50")
    p.add_argument("--threads", default="2")
    p.add_argument("--short-side", help="code at this consumer's short side (vlmc_encode --short-side)")
    p.add_argument("--out", help="write the figures here as JSON")
    p.add_argument("--open", action="store_true", help="time opening the model file alone (--info)")
    a = p.parse_args()
    for name, folder, _ in a.arms:
        for tool in ("vlmc_encode", "vlmc_decode_latents"):
            if not (folder / tool).exists():
                p.error(f"{name}: no {tool} in {folder}")
    work = Path(tempfile.mkdtemp(prefix="c_tools_bench_"))
    if a.open:
        return open_bench(a, work)
    times = {name: {"encode": [], "decode": []} for name, _, _ in a.arms}
    scale = ["--short-side", a.short_side] if a.short_side else []
    hashes = {}
    for r in range(a.rounds):
        for name, folder, extra in (a.arms if r % 2 == 0 else list(reversed(a.arms))):
            env = {**os.environ, **extra}
            stream, pixels = work / f"{name}.vlmc", work / f"{name}.ppm"
            t0 = time.perf_counter()
            subprocess.run([folder / "vlmc_encode", a.model, a.image, stream, "--quality", a.quality, "--threads",
                            a.threads, *scale], check=True, capture_output=True, env=env)
            t1 = time.perf_counter()
            subprocess.run([folder / "vlmc_decode_latents", a.model, stream, "--image", pixels, "--threads", a.threads],
                           check=True, capture_output=True, env=env)
            t2 = time.perf_counter()
            times[name]["encode"].append(t1 - t0)
            times[name]["decode"].append(t2 - t1)
            hashes[name] = {"stream": hashlib.sha256(stream.read_bytes()).hexdigest()[:16],
                            "pixels": hashlib.sha256(pixels.read_bytes()).hexdigest()[:16]}
    result = {"image": a.image, "quality": a.quality, "short_side": a.short_side, "threads": a.threads,
              "rounds": a.rounds,
              "arms": {name: {"build": str(folder), "env": extra} for name, folder, extra in a.arms},
              "median_ms_per_command": {n: {k: round(statistics.median(v) * 1000, 1) for k, v in t.items()}
                                        for n, t in times.items()},
              "sha256": hashes}
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
