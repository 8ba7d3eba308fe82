"""Peak memory of encoding (with and without the pre-editor) and decoding at two image sizes,
each in a fresh process: the growth of the process's high-water mark (VmHWM) over its resident
size just before the call, per coded pixel. The figures behind ``vlmcodec.memory``'s estimate.

    python scripts/memory_probe.py [--sizes 1536x2048,3072x4096] [--threads 2]   (Linux only)
    python scripts/memory_probe.py --batch 4 --sizes 1536x2048      # a batch of 4 against one image
    python scripts/memory_probe.py --refine 2 --sizes 768x1024,1536x2048   # encoding with refinement
    python scripts/memory_probe.py --compare-bands   # each call also without row bands, side by side
    python scripts/memory_probe.py --backend onnxruntime   # the onnxruntime backend's figures
    python scripts/memory_probe.py --model FILE --modes encode-no-pre-edit,decode   # another model
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = r"""
import sys, time, numpy as np
from vlmcodec import Codec
from vlmcodec.image_io import padded_size
from vlmcodec.models.pre_editor import PreEditor
mode, h, w, threads, n, refine = sys.argv[1], *map(int, sys.argv[2:7])
backend, global_attention, network_bands = sys.argv[7], sys.argv[8] == "1", sys.argv[9] == "1"
model = sys.argv[10] or None
if global_attention:
    PreEditor.attention_window = 0  # as before windows (onnxruntime: its graph at every size)
if not network_bands:  # g_a, g_s and the entropy parameters in one pass at every size, as before
    import vlmcodec.codec
    from vlmcodec.backends.torch_backend import TorchBackend
    from vlmcodec.backends.onnxruntime_backend import OnnxRuntimeBackend
    TorchBackend.band_pixels = OnnxRuntimeBackend.band_pixels = None
    vlmcodec.codec.ENTROPY_BAND_PIXELS = 1 << 62
c = Codec(model, backend=backend, threads=threads, pre_edit=mode != "encode-no-pre-edit", check_memory=False,
          refine=refine)
y, x = np.mgrid[0:h, 0:w]
imgs = [(128 + 100 * np.sin(x[..., None] / (37.0 + i) + y[..., None] / 53.0 + np.arange(3))).astype(np.uint8)
        for i in range(n)]
# also warms the networks up
data = c.encode_batch(imgs, [75] * n) if mode == "decode" else c.encode(imgs[0][:64, :64], 75)
from vlmcodec import allocator
allocator.release_free_memory()  # the warm-up's freed maps, kept by a tuned malloc, go back first
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the high-water mark restarts from the current resident size
before = status("VmRSS:")
t = time.perf_counter()
out = c.decode_batch(data) if mode == "decode" else c.encode_batch(imgs, [75] * n)
t = time.perf_counter() - t
ph, pw = padded_size(h, w)
print(status("VmHWM:") - before, ph * pw, t, sum(map(len, out)) if mode != "decode" else 0)
"""


def probe(mode: str, h: int, w: int, threads: int = 2, n: int = 1, refine: int = 0, backend: str = "torch",
          global_attention: bool = False, network_bands: bool = True,
          model: str | None = None) -> tuple[int, int, float, int]:
    """One coding call in a fresh process: (peak growth in bytes, coded pixels of one image,
    seconds, stream bytes when encoding)."""
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(h), str(w), str(threads), str(n), str(refine),
                          backend, "1" if global_attention else "0", "1" if network_bands else "0", model or ""],
                         capture_output=True, text=True, check=True)
    grow, px, secs, size = out.stdout.split()[-4:]
    return int(grow), int(px), float(secs), int(size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1536x2048,3072x4096", help="HxW,...")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1, help="also code a batch of this many images of each size")
    ap.add_argument("--refine", type=int, default=0, help="encode only, with this many refinement steps")
    ap.add_argument("--compare-bands", action="store_true",
                    help="also run each single-image call with g_a, g_s and the entropy parameters "
                         "in one pass (no row bands; the pre-editor's head stays banded)")
    ap.add_argument("--backend", default="torch", help="torch or onnxruntime (the estimate's backends)")
    ap.add_argument("--modes", default="encode,encode-no-pre-edit,decode", help="which calls to probe")
    ap.add_argument("--model", help="a model file (default: the bundled default model)")
    a = ap.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
    modes = ("encode",) if a.refine else tuple(a.modes.split(","))
    for mode in modes:
        cells = []
        for h, w in sizes:
            for n in sorted({1, a.batch}):
                grow, px, secs, size = probe(mode, h, w, a.threads, n, a.refine, a.backend, model=a.model)
                label = f"{mode}{f' refine={a.refine}' if a.refine else ''}"
                print(f"{label:>19} {w}x{h} x{n}: peak growth {grow / 2**30:.2f} GiB, "
                      f"{grow / px:.0f} B per coded pixel of one image, {secs:.1f} s")
                if a.compare_bands and n == 1:
                    g0, _, s0, size0 = probe(mode, h, w, a.threads, n, a.refine, a.backend, network_bands=False,
                                             model=a.model)
                    print(f"{'(one pass)':>19} {w}x{h} x{n}: peak growth {g0 / 2**30:.2f} GiB, "
                          f"{g0 / px:.0f} B per coded pixel, {s0:.1f} s; bands/one pass: memory "
                          f"{grow / g0:.2f}, time {secs / s0:.2f}"
                          + (f", stream {size} vs {size0} bytes" if mode != "decode" else ""))
                if n == 1:
                    cells.append((grow, px))
                else:
                    print(f"{'':>19} each image after the first adds {(grow - cells[-1][0]) / (n - 1) / px:.0f} B per pixel")
        if len(cells) >= 2:
            (g0, p0), (g1, p1) = cells[0], cells[-1]
            print(f"{mode:>19} slope between the sizes: {(g1 - g0) / (p1 - p0):.0f} B per coded pixel")


if __name__ == "__main__":
    main()
