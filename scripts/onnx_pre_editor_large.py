"""The onnxruntime backend on a large image: its pre-editor as the exported graph (global
attention, what it did before) against the torch module's windowed attention (what it does now
above 1024 px), each in a fresh process: encode time and peak memory growth (Linux only).

    python scripts/onnx_pre_editor_large.py [--size 1536x2048] [--threads 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = r"""
import sys, time, numpy as np
from vlmcodec import Codec
from vlmcodec.models.pre_editor import PreEditor
mode, h, w, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if mode == "graph":
    PreEditor.attention_window = 0  # global attention everywhere: the backend keeps to the graph
c = Codec(backend="onnxruntime", threads=threads, check_memory=False)
y, x = np.mgrid[0:h, 0:w]
img = (128 + 100 * np.sin(x[..., None] / 37.0 + y[..., None] / 53.0 + np.arange(3))).astype(np.uint8)
c.encode(img[:64, :64], 75)
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS:")
t = time.perf_counter()
data = c.encode(img, 75)
t = time.perf_counter() - t
print(f"onnxruntime encode {w}x{h}, pre-editor {mode}: {t:.1f} s, "
      f"peak growth {(status('VmHWM:') - before) / 2**30:.2f} GiB, {len(data)} bytes")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1536x2048", help="HxW")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    h, w = (int(v) for v in a.size.split("x"))
    for mode in ("graph", "windowed"):
        out = subprocess.run([sys.executable, "-c", CHILD, mode, str(h), str(w), str(a.threads)],
                             capture_output=True, text=True)
        print(out.stdout.strip() or f"{mode}: failed (status {out.returncode}) {out.stderr.strip()[-300:]}")


if __name__ == "__main__":
    main()
