"""Peak memory of one decode in a fresh process against the memory check's estimate for it
(``Codec.memory_needed(h, w, decoding=True)``): the first run of a process, whose allocator arenas
grow from nothing. Each size's stream is made in a process of its own first.

    python scripts/memory_fresh_decode.py [--backend onnxruntime] [--sizes 2700x1800,3000x2000] [--threads 2]

Prints, per size: the estimate, the peak (VmHWM after the decode less VmRSS just before it, the
high-water mark reset first) and their ratio; exit status 1 when a peak is above its estimate.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys
import numpy as np
from vlmcodec import Codec
from vlmcodec.image_io import load_image
mode, backend, threads, h, w, path = sys.argv[1:7]
threads, h, w = int(threads), int(h), int(w)
codec = Codec(backend=backend, threads=threads)
if mode == "encode":
    import torch
    img = load_image(sys.argv[7])
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    big = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    arr = big[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
    open(path, "wb").write(codec.encode(arr, 75))
    sys.exit(0)
data = open(path, "rb").read()
status = lambda key: next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS:")
codec.decode(data)
print(json.dumps({"estimate": codec.memory_needed(h, w, decoding=True), "peak": status("VmHWM:") - before}))
"""

p = argparse.ArgumentParser()
p.add_argument("--backend", default="onnxruntime")
p.add_argument("--sizes", default="2700x1800,3000x2000")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--image", default="assets/samples/kodim23.png")
a = p.parse_args()
over = False
with tempfile.TemporaryDirectory() as tmp:
    for size in a.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        stream = str(Path(tmp) / f"{size}.vlmc")
        common = [sys.executable, "-c", CHILD]
        subprocess.run([*common, "encode", a.backend, str(a.threads), str(h), str(w), stream, a.image], check=True)
        run = subprocess.run([*common, "decode", a.backend, str(a.threads), str(h), str(w), stream],
                             check=True, capture_output=True, text=True)
        r = json.loads(run.stdout.strip().splitlines()[-1])
        ratio = r["estimate"] / r["peak"]
        over |= ratio < 1
        print(f"{a.backend} decode {size}, {a.threads} threads: estimate {r['estimate'] / 2**30:.3f} GiB, "
              f"fresh-process peak {r['peak'] / 2**30:.3f} GiB, estimate / peak {ratio:.2f}")
sys.exit(1 if over else 0)
