"""Does torch.compile speed up a training step on this CPU? Times one part of the step, eager or
compiled (Inductor), in its own process: the codec (default architecture with the pre-editor,
forward + backward of rate + MSE, batch 4 of 256² crops) or the teacher (a DINOv2 ViT-S/14 of
random weights, token distortion over layers 3/6/9/12 and its gradient with respect to the
input, batch 4 at SIDE², 112 being the training recipe's view of a 256² crop).

    python scripts/compile_probe.py codec eager
    python scripts/compile_probe.py codec compile
    python scripts/compile_probe.py teacher eager
    python scripts/compile_probe.py teacher compile --side 112

Prints the first step (compilation included) and the median and best of 8 timed steps after
2 warm-up steps. Run the two modes one after the other on a quiet machine and compare.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def codec_step(compiled: bool):
    from vlmcodec.models import MeanScaleHyperprior, ModelConfig

    cfg = ModelConfig(N=64, M=128, num_levels=4, lmbdas=(0.0018, 0.0054, 0.016, 0.0483), pre_editor=True)
    model = MeanScaleHyperprior(cfg).to(memory_format=torch.channels_last).train()
    forward = torch.compile(model) if compiled else model
    x = torch.rand(4, 3, 256, 256).contiguous(memory_format=torch.channels_last)
    levels = torch.arange(4).float()

    def step() -> float:
        out = forward(x, levels)
        bpp = sum(l.log2().sum() for l in out["likelihoods"].values()) / (-4 * 256 * 256)
        loss = bpp + 0.01 * 255**2 * (out["x_hat"] - x).pow(2).mean()
        model.zero_grad(set_to_none=True)
        loss.backward()
        return loss.item()

    return step


def teacher_step(compiled: bool, side: int):
    from vlmcodec.teacher import VisionTransformer, ViTConfig

    vit = VisionTransformer(ViTConfig()).eval().requires_grad_(False)
    layers = [3, 6, 9, 12]
    tokens = torch.compile(vit.forward_layers) if compiled else vit.forward_layers
    x = torch.rand(4, 3, side, side)
    ref = [t.detach() for t in vit.forward_layers(x, layers)]

    def step() -> float:
        x_hat = (x + 0.01 * torch.randn_like(x)).requires_grad_(True)
        loss = sum((1 - F.cosine_similarity(o, r, dim=-1)).mean() for o, r in zip(tokens(x_hat, layers), ref))
        loss.backward()
        return loss.item()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=["codec", "teacher"])
    p.add_argument("mode", choices=["eager", "compile"])
    p.add_argument("--side", type=int, default=112, help="the teacher's input side (default 112)")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    step = codec_step(a.mode == "compile") if a.part == "codec" else teacher_step(a.mode == "compile", a.side)
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    for _ in range(2):
        step()
    times = []
    for _ in range(8):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(f"{a.part} {a.mode}: first step {first:.1f} s, then median {statistics.median(times):.3f} s, "
          f"best {min(times):.3f} s")


if __name__ == "__main__":
    main()
