"""ONNX Runtime's memory pattern against changing batch sizes: the onnxruntime backend with
``memory_pattern`` on and off (the default), side by side in one process, on Kodak images.

Three workloads, each timed per backend in alternation (``--reps`` rounds):
  mixed   a batch of ``--batch`` encoded and decoded, then ``--singles`` images one at a time
          (what the runtime Engine does when requests arrive unevenly)
  sizes   the same at five image sizes (centre crops), one after another (a server's traffic)
  steady  the same batch encoded and decoded twice (one shape: where the pattern could help)

    python scripts/onnxruntime_shape_change.py [--kodak DIR] [--batch 8] [--singles 4] [--reps 3]
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import time

from vlmcodec import Codec
from vlmcodec.image_io import load_image


def landscape_images(folder: str, n: int) -> list:
    """The first ``n`` images of ``folder``, portrait ones transposed so all share one size."""
    files = sorted(glob.glob(os.path.join(folder, "*.png")))[:n]
    if len(files) < n:
        raise SystemExit(f"{folder}: need {n} PNG images, found {len(files)}")
    imgs = [load_image(f) for f in files]
    return [a if a.shape[0] <= a.shape[1] else a.transpose(1, 0, 2).copy() for a in imgs]


def mixed(codec: Codec, imgs: list, singles: int) -> None:
    codec.decode_batch(codec.encode_batch(imgs, [75] * len(imgs)))
    for a in imgs[:singles]:
        codec.decode(codec.encode(a, 75))


CROPS = ((512, 768), (448, 640), (384, 512), (512, 512), (320, 480))


def sizes(codec: Codec, imgs: list, singles: int) -> None:
    for h, w in CROPS:
        top, left = (imgs[0].shape[0] - h) // 2, (imgs[0].shape[1] - w) // 2
        mixed(codec, [a[top : top + h, left : left + w] for a in imgs], singles)


def steady(codec: Codec, imgs: list, singles: int) -> None:
    for _ in range(2):
        codec.decode_batch(codec.encode_batch(imgs, [75] * len(imgs)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kodak", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "kodak"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--singles", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    imgs = landscape_images(a.kodak, a.batch)
    codecs = {flag: Codec(backend="onnxruntime", threads=a.threads, check_memory=False,
                          backend_options={"memory_pattern": flag})
              for flag in (True, False)}
    for c in codecs.values():  # warm-up: sessions, first allocations
        mixed(c, imgs[:2], 1)
    streams = {flag: codecs[flag].encode_batch(imgs, [75] * len(imgs)) for flag in codecs}
    if streams[True] != streams[False]:
        raise SystemExit("memory_pattern changed the streams")
    print(f"onnxruntime backend, {len(imgs)} Kodak images of {imgs[0].shape[1]}x{imgs[0].shape[0]}, "
          f"{a.reps} rounds, times in s (median); streams identical either way")
    for name, work in (("mixed", mixed), ("sizes", sizes), ("steady", steady)):
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(a.reps):
            for flag, c in codecs.items():
                t = time.perf_counter()
                work(c, imgs, a.singles)
                times[flag].append(time.perf_counter() - t)
        on, off = statistics.median(times[True]), statistics.median(times[False])
        print(f"{name:>7}: memory_pattern on {on:.2f}, off {off:.2f}; off/on {off / on:.2f} "
              f"(rounds on {', '.join(f'{t:.1f}' for t in times[True])}; "
              f"off {', '.join(f'{t:.1f}' for t in times[False])})")


if __name__ == "__main__":
    main()
