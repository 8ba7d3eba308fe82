"""The onnxruntime backend on a large image: its pre-editor as the exported graph (global
attention, what it did before) against the torch module's windowed attention (what it does now
above 1024 px), each in a fresh process: encode time and peak memory growth (Linux only).

    python scripts/onnx_pre_editor_large.py [--size 1536x2048] [--threads 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory_probe import probe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1536x2048", help="HxW")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    h, w = (int(v) for v in a.size.split("x"))
    for mode, global_attention in (("graph", True), ("windowed", False)):
        try:
            grow, _, secs, size = probe("encode", h, w, a.threads, backend="onnxruntime",
                                        global_attention=global_attention)
        except subprocess.CalledProcessError as e:
            print(f"{mode}: failed (status {e.returncode}) {e.stderr.strip()[-300:]}")
            continue
        print(f"onnxruntime encode {w}x{h}, pre-editor {mode}: {secs:.1f} s, "
              f"peak growth {grow / 2**30:.2f} GiB, {size} bytes")


if __name__ == "__main__":
    main()
