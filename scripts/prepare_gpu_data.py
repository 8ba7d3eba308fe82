"""Pack the training images into a folder small enough to carry to the GPU machine (≤ 64 MiB
with the rest of the tree): each image re-encoded as high-quality WebP (q=95).

python scripts/prepare_gpu_data.py ../shared/data/train gpu_data/train
"""

import sys
from pathlib import Path

from PIL import Image

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
total = 0
for p in sorted(src.iterdir()):
    if p.suffix.lower() not in {".png", ".jpg", ".jpeg"}:
        continue
    out = dst / (p.stem + ".webp")
    Image.open(p).convert("RGB").save(out, quality=95, method=4)
    total += out.stat().st_size
print(f"{dst}: {total / 2**20:.1f} MiB")
