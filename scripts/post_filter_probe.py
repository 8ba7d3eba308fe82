"""A decoder-side post-filter for the default model, trained on the teacher's tokens: does more
capacity after ``g_s`` buy semantic quality at the same bits?

The stream is untouched (the encoder, ŷ and the bits are the default's); a small residual
network maps the decoded x̂ (and the quality level, as a constant plane) to x̂ + Δ. It is
trained with the codec frozen, on the joint recipe's distortion (w_pix · 255² · MSE +
w_tok · DINOv2 token distortion at the teacher view, half of the steps at the consumer's 256-px
scale), each item's distortion divided by that of x̂ itself (the loss starts at 1.0, and every
quality level weighs the same).

    python scripts/post_filter_probe.py train --out runs/postfilter1 [--steps 1500]
    python scripts/post_filter_probe.py eval runs/postfilter1/post_filter.pt
        → results/post_filter_probe/{probe.json,report.md}

``eval`` codes the Kodak images with the default at ``--short-side`` (256) and scores the decoded
images with and without the filter as ``vlmcodec bench rd`` scores them (PSNR, DINOv2 token
similarity, Lite0 top-1 and KL against the original); the report gives the BD-rate of the
filtered curve against the default's with a 95 % paired bootstrap interval over the images.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
METRICS = (("psnr", True), ("teacher-sim", True), ("effnet-top1", True), ("effnet-kl", False))


class PostFilter(nn.Module):
    """x̂ → x̂ + Δ(x̂, level): a full-resolution stem of ``channels``, two stride-2 steps (each
    doubling the width) down to a residual body at a quarter of the resolution (wide context at
    little cost), and back up with skips; the last convolution starts at zero, so the untrained
    filter is the identity."""

    def __init__(self, channels: int = 16, blocks: int = 6):
        super().__init__()
        c = channels
        act = nn.LeakyReLU(0.1)
        self.head = nn.Sequential(nn.Conv2d(4, c, 3, padding=1), act)
        self.down1 = nn.Sequential(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), act)
        self.down2 = nn.Sequential(nn.Conv2d(2 * c, 4 * c, 4, stride=2, padding=1), act)
        self.body = nn.ModuleList(nn.Sequential(nn.Conv2d(4 * c, 4 * c, 3, padding=1), act,
                                                nn.Conv2d(4 * c, 4 * c, 3, padding=1)) for _ in range(blocks))
        self.up2 = nn.Sequential(nn.ConvTranspose2d(4 * c, 2 * c, 4, stride=2, padding=1), act)
        self.up1 = nn.Sequential(nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), act)
        self.tail = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), act, nn.Conv2d(c, 3, 3, padding=1))
        nn.init.zeros_(self.tail[-1].weight)
        nn.init.zeros_(self.tail[-1].bias)

    def forward(self, x: Tensor, level01: Tensor) -> Tensor:
        """``x`` (B, 3, H, W) with H, W multiples of 4; ``level01`` (B,) the quality level scaled to [0, 1]."""
        plane = level01.to(x.dtype)[:, None, None, None].expand(x.shape[0], 1, *x.shape[2:])
        h0 = self.head(torch.cat([x, plane], 1))
        h1 = self.down1(h0)
        d = self.down2(h1)
        for block in self.body:
            d = d + block(d)
        return x + self.tail(self.up1(self.up2(d) + h1) + h0)


def train(a: argparse.Namespace) -> None:
    from tqdm import tqdm

    from vlmcodec.models.checkpoint import load_model
    from vlmcodec.training.data import CropSampler
    from vlmcodec.training.trainer import TrainConfig, _semantic_term

    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    codec = load_model(a.model).model.eval()
    for p in codec.parameters():
        p.requires_grad_(False)
    K = codec.num_levels
    cfg = TrainConfig(teacher="dinov2-vits14", teacher_layers=(3, 6, 9, 12), w_tok=a.w_tok,
                      teacher_scale=0.4375)
    token_term = _semantic_term(cfg, torch.device("cpu"))
    full = CropSampler(a.data, a.crop, seed=a.seed)
    consumer = CropSampler(a.data, a.crop, seed=a.seed + 1, downscale=False, short_side=256)
    pf = PostFilter(a.channels, a.blocks)
    opt = torch.optim.Adam(pf.parameters(), lr=a.lr)
    gen = torch.Generator().manual_seed(a.seed + 2)
    log = open(out / "log.jsonl", "w")
    acc, n, t0 = {"rel": 0.0, "rel_pix": 0.0, "rel_tok": 0.0}, 0, time.perf_counter()
    for step in tqdm(range(a.steps), desc="post-filter", mininterval=30):
        t = step / max(1, a.steps - 1)
        lr = a.lr_final + 0.5 * (a.lr - a.lr_final) * (1 + math.cos(math.pi * t))
        for g in opt.param_groups:
            g["lr"] = lr
        at_consumer = step % 2 == 1
        x = (consumer if at_consumer else full).sample(a.batch)
        levels = torch.rand(a.batch, generator=gen) * (K - 1)
        with torch.no_grad():
            x_hat = codec(x, levels)["x_hat"].clamp(0, 1)
        scale = 0.875 if at_consumer else 0.4375
        with torch.no_grad():
            base_pix = a.w_pix * 255.0**2 * (x_hat - x).pow(2).flatten(1).mean(1)
            base_tok = token_term(x, x_hat, scale)
        y = pf(x_hat, levels / (K - 1))
        pix = a.w_pix * 255.0**2 * (y - x).pow(2).flatten(1).mean(1)
        tok = token_term(x, y, scale)
        rel = ((pix + tok) / (base_pix + base_tok)).mean()
        opt.zero_grad(set_to_none=True)
        rel.backward()
        torch.nn.utils.clip_grad_norm_(pf.parameters(), 1.0)
        opt.step()
        acc["rel"] += rel.item()
        acc["rel_pix"] += (pix / base_pix).mean().item()
        acc["rel_tok"] += (tok / base_tok).mean().item()
        n += 1
        if (step + 1) % a.log_every == 0:
            row = {"step": step + 1, "lr": lr, **{k: v / n for k, v in acc.items()},
                   "sec_per_step": (time.perf_counter() - t0) / n}
            log.write(json.dumps(row) + "\n")
            log.flush()
            acc, n, t0 = {k: 0.0 for k in acc}, 0, time.perf_counter()
        if (step + 1) % a.ckpt_every == 0 or step + 1 == a.steps:
            torch.save({"state": pf.state_dict(), "channels": a.channels, "blocks": a.blocks,
                        "step": step + 1, "args": vars(a)}, out / "post_filter.pt")


def filtered_codec(path: str | None, short_side: int | None):
    """The default model's ``Codec`` at ``short_side``, its decoder followed by the post-filter at
    ``path`` (None: the plain codec)."""
    from vlmcodec import Codec

    if path is None:
        return Codec(short_side=short_side)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    pf = PostFilter(saved["channels"], saved["blocks"])
    pf.load_state_dict(saved["state"])
    pf.eval()

    class FilteredCodec(Codec):
        """``synthesize`` runs the filter on g_s's output, before the clamp and the resize."""

        def synthesize(self, latents, **options):
            K = self.model.num_levels
            levels = torch.tensor([self.model.level_of_quality(d.header.quality) / (K - 1) for d in latents])
            synthesis, done = self.backend.synthesis, [0]

            def filtered(y_hat):  # called once per batch, or per item (item_by_item backends)
                n, done[0] = y_hat.shape[0], done[0] + y_hat.shape[0]
                return pf(synthesis(y_hat).clamp(0, 1), levels[done[0] - n : done[0]])

            self.backend.synthesis = filtered
            try:
                return super().synthesize(latents, **options)
            finally:
                self.backend.synthesis = synthesis

    return FilteredCodec(short_side=short_side)


def evaluate(a: argparse.Namespace) -> None:
    from vlmcodec.bench.metrics import psnr
    from vlmcodec.bench.report import bd_cell
    from vlmcodec.bench.semantic import semantic_metrics
    from vlmcodec.image_io import load_image

    torch.set_num_threads(a.threads)
    files = sorted(Path(a.images).glob("*.png"))[: a.limit]
    images = [load_image(f) for f in files]
    tsim, top1, kl = semantic_metrics()
    scorers = {"psnr": psnr, "teacher-sim": tsim.compute, "effnet-top1": top1.compute, "effnet-kl": kl.compute}
    qualities = [float(q) for q in a.qualities.split(",")]
    side = a.short_side or None  # 0: full size
    plain = filtered_codec(None, side)
    filt = filtered_codec(a.filter, side)
    curves: dict[str, list[dict]] = {"default": [], "post-filter": []}
    t0 = time.time()
    with torch.inference_mode():
        for q in qualities:
            per = {name: {"bpp": [], **{m: [] for m in scorers}} for name in curves}
            for img in images:
                data = plain.encode(img, quality=q)
                bpp = len(data) * 8 / (img.shape[0] * img.shape[1])
                for name, codec in (("default", plain), ("post-filter", filt)):
                    dec = codec.decode(data)
                    per[name]["bpp"].append(bpp)
                    for m, score in scorers.items():
                        per[name][m].append(float(score(img, dec)))
            for name in curves:
                curves[name].append({"quality": q, **{k: float(np.mean(v)) for k, v in per[name].items()},
                                     "per_image": per[name]})
            print(f"q{q:g}: {time.time() - t0:.0f} s; " + "; ".join(
                f"{n} " + " ".join(f"{m} {curves[n][-1][m]:.4f}" for m in ("bpp", "psnr", "teacher-sim", "effnet-kl"))
                for n in curves), flush=True)
    base, ours = curves["default"], curves["post-filter"]
    cells = [bd_cell(base, ours, m, higher) for m, higher in METRICS]
    table = ("| BD-rate vs the default | " + " | ".join(m for m, _ in METRICS) + " |\n|---|"
             + "---:|" * len(METRICS) + "\n| post-filter | " + " | ".join(cells) + " |\n")
    points = "\n".join(f"| q{b['quality']:g} | {b['bpp']:.4f} | " + " | ".join(
        f"{b[m]:.4f} → {o[m]:.4f}" for m, _ in METRICS) + " |" for b, o in zip(base, ours))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps({"images": [f.name for f in files], "qualities": qualities,
                                                "short_side": a.short_side, "filter": a.filter,
                                                "curves": curves}, indent=1))
    cmd_side = "" if a.short_side == 256 else f" --short-side {a.short_side}"
    where = f"short side {a.short_side}" if a.short_side else "full size"
    report = ("# A decoder-side post-filter on the default model vs the default\n\n"
              f"`python scripts/post_filter_probe.py eval {a.filter}{cmd_side}` on {len(files)} images at "
              f"{where}, qualities {a.qualities}; the same streams decoded both ways, so the bits are "
              "equal point by point; negative = fewer bits for the same score; 95 % paired bootstrap "
              "interval over the images (1000 draws).\n\n" + table
              + "\n| point | bpp | " + " | ".join(m for m, _ in METRICS) + " |\n|---|---:|"
              + "---:|" * len(METRICS) + "\n" + points + "\n")
    (out / "report.md").write_text(report)
    print(report)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--model", default=str(ROOT / "engine/weights/default.safetensors"))
    t.add_argument("--data", default=str(ROOT / "data/train_plus"))
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--batch", type=int, default=4)
    t.add_argument("--crop", type=int, default=256)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--lr-final", type=float, default=2e-5)
    t.add_argument("--w-pix", type=float, default=0.5)
    t.add_argument("--w-tok", type=float, default=4000.0)
    t.add_argument("--channels", type=int, default=16)
    t.add_argument("--blocks", type=int, default=6)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--log-every", type=int, default=25)
    t.add_argument("--ckpt-every", type=int, default=100)
    e = sub.add_parser("eval")
    e.add_argument("filter")
    e.add_argument("--qualities", default="0,10,30,50,70,90")
    e.add_argument("--images", default=str(ROOT.parent / "shared/data/kodak"))
    e.add_argument("--limit", type=int)
    e.add_argument("--short-side", type=int, default=256, help="the consumer's scale; 0: full size")
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--out", default=str(ROOT / "results/post_filter_probe"))
    a = p.parse_args()
    (train if a.cmd == "train" else evaluate)(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
