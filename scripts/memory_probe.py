"""Peak memory of encoding (with and without the pre-editor) and decoding at two image sizes,
each in a fresh process: the growth of the process's high-water mark (VmHWM) over its resident
size just before the call, per coded pixel. The figures behind ``vlmcodec.memory``'s estimate.

    python scripts/memory_probe.py [--sizes 1536x2048,3072x4096] [--threads 2]   (Linux only)
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = r"""
import sys, numpy as np
from vlmcodec import Codec
from vlmcodec.image_io import padded_size
mode, h, w, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
c = Codec(threads=threads, pre_edit=mode != "encode-no-pre-edit", check_memory=False)
y, x = np.mgrid[0:h, 0:w]
img = (128 + 100 * np.sin(x[..., None] / 37.0 + y[..., None] / 53.0 + np.arange(3))).astype(np.uint8)
data = c.encode(img if mode == "decode" else img[:64, :64], 75)  # also warms the networks up
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the high-water mark restarts from the current resident size
before = status("VmRSS:")
c.decode(data) if mode == "decode" else c.encode(img, 75)
ph, pw = padded_size(h, w)
print(status("VmHWM:") - before, ph * pw)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1536x2048,3072x4096", help="HxW,...")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
    for mode in ("encode", "encode-no-pre-edit", "decode"):
        cells = []
        for h, w in sizes:
            out = subprocess.run([sys.executable, "-c", CHILD, mode, str(h), str(w), str(a.threads)],
                                 capture_output=True, text=True, check=True).stdout.split()
            grow, px = int(out[-2]), int(out[-1])
            cells.append((grow, px))
            print(f"{mode:>19} {w}x{h}: peak growth {grow / 2**30:.2f} GiB, {grow / px:.0f} B per coded pixel")
        if len(cells) >= 2:
            (g0, p0), (g1, p1) = cells[0], cells[-1]
            print(f"{mode:>19} slope between the sizes: {(g1 - g0) / (p1 - p0):.0f} B per coded pixel")


if __name__ == "__main__":
    main()
