"""How far the int8 teacher file (prepare_gpu_data.py --teacher-dtype int8) moves the training signal.

On the Kodak images, against the fp32 teacher: the token cosine of each chosen layer, and the token
distortion D_tok between each image and its WebP-coded version (what training minimises), as
computed with the fp32 teacher, the int8 file and — for scale — the fp32 weights with bf16
activations (``teacher_bf16``, what GPU training uses). Writes a markdown table.

    python scripts/teacher_int8_check.py [--images 24] [--out results/teacher_int8.md]
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vlmcodec.teacher import load_teacher, save_dinov2_weights
from vlmcodec.teacher.base import teacher_input_size
from vlmcodec.training.semantic import token_distortion

LAYERS = (3, 6, 9, 12)


def webp(img: Image.Image, q: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="WEBP", quality=q)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--short-side", type=int, default=224, help="teacher view (224: the evaluator's)")
    p.add_argument("--qualities", default="5,50,90")
    p.add_argument("--out", type=Path, default=Path("results/teacher_int8.md"))
    a = p.parse_args()
    torch.set_grad_enabled(False)
    ref = load_teacher("dinov2-vits14")
    with tempfile.TemporaryDirectory() as tmp:
        path = save_dinov2_weights(Path(tmp) / "t8.safetensors", dtype=torch.int8)
        size_mib = path.stat().st_size / 2**20
        int8 = load_teacher(path)
    files = sorted(a.kodak.glob("*.png"))[: a.images]
    qs = [int(q) for q in a.qualities.split(",")]
    cos = {"int8": {l: [] for l in LAYERS}, "bf16 activations": {l: [] for l in LAYERS}}
    dtok = {"fp32": [], "int8": [], "bf16 activations": []}

    def bf16(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return [t.float() for t in ref(x, layers=LAYERS, size=size)]

    for f in files:
        img = Image.open(f).convert("RGB")
        size = teacher_input_size(img.height, img.width, a.short_side, ref.patch_size)  # the evaluator's view
        runs = {"fp32": lambda x: ref(x, layers=LAYERS, size=size),
                "int8": lambda x: int8(x, layers=LAYERS, size=size), "bf16 activations": bf16}
        x = to_tensor(img)
        toks = {k: fn(x) for k, fn in runs.items()}
        for k in cos:
            for l, t, r in zip(LAYERS, toks[k], toks["fp32"]):
                cos[k][l].append(F.cosine_similarity(t, r, dim=-1).flatten())
        for q in qs:
            xq = to_tensor(webp(img, q))
            for k, fn in runs.items():
                dtok[k].append(float(token_distortion(fn(xq), toks[k])[0]))
        print(f.name, flush=True)
    ref_d = np.array(dtok["fp32"])
    lines = ["# Teacher weights as int8: what they move\n",
             f"`python scripts/teacher_int8_check.py --images {a.images} --short-side {a.short_side}` — "
             f"{len(files)} Kodak images at a {a.short_side}-px short side; int8 file {size_mib:.1f} MiB.\n",
             "Token cosine against the fp32 teacher (mean / min over all tokens of all images):\n",
             "| teacher | " + " | ".join(f"layer {l}" for l in LAYERS) + " |",
             "|---|" + "---:|" * len(LAYERS)]
    for k, per in cos.items():
        cells = [f"{torch.cat(v).mean():.5f} / {torch.cat(v).min():.4f}" for v in per.values()]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", f"Token distortion D_tok (layers {','.join(map(str, LAYERS))}) between each image and its "
              f"WebP version at q {a.qualities} ({len(ref_d)} pairs), against the fp32 teacher's:\n",
              "| teacher | mean D_tok | mean relative difference | max relative difference | rank correlation |",
              "|---|---:|---:|---:|---:|"]
    for k, v in dtok.items():
        v = np.array(v)
        rel = np.abs(v - ref_d) / ref_d
        rank = np.corrcoef(np.argsort(np.argsort(v)), np.argsort(np.argsort(ref_d)))[0, 1]
        lines.append(f"| {k} | {v.mean():.5f} | {rel.mean() * 100:.2f} % | {rel.max() * 100:.2f} % | {rank:.4f} |")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
