"""What row bands change in the output: encode and decode large images with and without them
(g_a, g_s and the entropy parameters; the pre-editor's head is banded in both arms), in one
process, and compare streams and decoded pixels. Peak memory: scripts/memory_probe.py --compare-bands.

    python scripts/row_bands_check.py [--sizes 1536x2048,3072x4096] [--backend torch] [--no-pre-edit]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import vlmcodec.codec as codec_module
from vlmcodec import Codec
from vlmcodec.backends.onnxruntime_backend import OnnxRuntimeBackend
from vlmcodec.backends.torch_backend import TorchBackend


def _set_bands(on: bool, entropy_band: int) -> None:
    band = codec_module.NETWORK_BAND_PIXELS if on else None
    TorchBackend.band_pixels = OnnxRuntimeBackend.band_pixels = band
    codec_module.ENTROPY_BAND_PIXELS = entropy_band if on else 1 << 62


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1536x2048,3072x4096", help="HxW,...")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quality", type=float, default=75)
    ap.add_argument("--no-pre-edit", action="store_true")
    a = ap.parse_args()
    entropy_band = codec_module.ENTROPY_BAND_PIXELS
    codec = Codec(backend=a.backend, threads=a.threads, pre_edit=not a.no_pre_edit, check_memory=False)
    for size in a.sizes.split(","):
        h, w = (int(v) for v in size.split("x"))
        y, x = np.mgrid[0:h, 0:w]
        img = (128 + 100 * np.sin(x[..., None] / 37.0 + y[..., None] / 53.0 + np.arange(3))).astype(np.uint8)
        del x, y
        out = {}
        for on in (True, False):
            _set_bands(on, entropy_band)
            t0 = time.perf_counter()
            data = codec.encode(img, a.quality)
            t1 = time.perf_counter()
            pixels = codec.decode(data)
            out[on] = (data, pixels, t1 - t0, time.perf_counter() - t1)
        (d1, p1, e1, g1), (d0, p0, e0, g0) = out[True], out[False]
        diff = np.abs(p1.astype(np.int16) - p0.astype(np.int16))
        cross = np.array_equal(codec.decode(d0), p1)  # bands decode the one-pass stream alike
        print(f"{w}x{h} {a.backend}: streams {'identical' if d1 == d0 else 'DIFFER'} ({len(d1)} / {len(d0)} bytes); "
              f"decoded pixels: max difference {int(diff.max())}, {np.count_nonzero(diff) / diff.size:.2e} of values "
              f"differ; one-pass stream decoded with bands {'equals' if cross else 'differs from'} the bands' decode; "
              f"time bands/one pass: encode {e1 / e0:.2f} ({e1:.1f} s), decode {g1 / g0:.2f} ({g1:.1f} s)")
    _set_bands(True, entropy_band)


if __name__ == "__main__":
    main()
