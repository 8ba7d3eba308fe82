"""Quick progress check of a training checkpoint: estimated bpp (likelihoods) and PSNR on Kodak.

python scripts/eval_ckpt.py runs/default/last.pt [--images 6]
"""

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vlmcodec.image_io import pad_edge
from vlmcodec.models import MeanScaleHyperprior, ModelConfig
from vlmcodec.training.loss import bpp_per_item

p = argparse.ArgumentParser()
p.add_argument("ckpt")
p.add_argument("--images", type=int, default=6)
p.add_argument("--kodak", default="../shared/data/kodak")
p.add_argument("--threads", type=int, default=1)
a = p.parse_args()
torch.set_num_threads(a.threads)
state = torch.load(a.ckpt, map_location="cpu", weights_only=True)
cfg = state["config"]
net = MeanScaleHyperprior(ModelConfig(N=cfg["N"], M=cfg["M"], num_levels=len(cfg["lmbdas"]), lmbdas=tuple(cfg["lmbdas"])))
net.load_state_dict(state["model"])
net.eval()
files = sorted(Path(a.kodak).glob("*.png"))[: a.images]
print(f"step {state['step']}")
for level in range(net.num_levels):
    bpps, psnrs = [], []
    for f in files:
        img = np.asarray(Image.open(f).convert("RGB"))
        h, w = img.shape[:2]
        x = torch.from_numpy(pad_edge(img)).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            out = net(x, torch.tensor([float(level)]))
        bpp = float(bpp_per_item(out["likelihoods"], h * w))
        xh = out["x_hat"][..., :h, :w].clamp(0, 1)
        mse = float(((xh * 255).round() - x[..., :h, :w] * 255).pow(2).mean())
        bpps.append(bpp); psnrs.append(10 * math.log10(255**2 / mse))
    print(f"level {level}: bpp {np.mean(bpps):.3f}  psnr {np.mean(psnrs):.2f}")
