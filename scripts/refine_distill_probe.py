"""Issue 7 probe: distil encoder-side refinement into the encoder.

Refinement (``vlmcodec.refine``) lowers a latent's true objective — bits + λ·(w_pix·MSE + w_tok·
token distortion), with hard quantisation — by 20–37 % at the consumer's scale, where training
g_a further on the usual relaxed objective (enc1, wide1 in the README's lever table) gained
nothing. This asks whether g_a can learn the refined latents themselves:

1. targets: each training image resized to a 256-px short side, one seeded 256² crop; for each
   of the model's K levels, the one-pass latent y = g_a(pre-edit(x)) · gain refined with
   ``--refine`` steps (the default model's own objective and teacher);
2. training, ``--mode distil``: g_a alone (pre-editor, h_a, decoder frozen), regressing
   g_a(x) · gain_l onto the refined y of every level l (mean squared error in the quantiser's
   units); ``--mode hard``: g_a and h_a (the encoder side; pre-editor and decoder frozen) on the
   refinement's own objective — hard quantisation forward, straight-through backward, token term
   included — at a random level per crop ("soft then hard" training: the decoder stays, so do its
   streams); Adam with a cosine decay;
3. evaluation: on the Kodak images at a 256-px short side, the true objective of the one-pass
   latents (no refinement) with the old and the new g_a, per level (mean over images), and
   its parts (bits, pixel and token distortion);
4. the model with the new g_a, its decoder shared with the default (streams carry the default's
   fingerprint), written for ``bash scripts/eval_stage.sh``.

    python scripts/refine_distill_probe.py --out runs/distill1 [--mode distil|hard] [--refine 5] [--steps 600]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def consumer_crop(path: Path, side: int, rng: random.Random, crop: bool) -> np.ndarray:
    """The image at a ``side``-px short side (as the codec's consumer scale), and with ``crop`` a
    seeded side² crop of it; else its top-left multiple-of-64 part."""
    from vlmcodec.image_io import load_image
    from vlmcodec.resample import coded_size, downscale

    img = load_image(path)
    img = downscale(img, coded_size(*img.shape[:2], side))
    h, w = img.shape[:2]
    if crop:
        top, left = rng.randrange(h - side + 1), rng.randrange(w - side + 1)
        return np.ascontiguousarray(img[top : top + side, left : left + side])
    return np.ascontiguousarray(img[: h // 64 * 64, : w // 64 * 64])


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(arr)).permute(2, 0, 1)[None].float() / 255.0  # (a copy: arr may be read-only)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model file (default: the bundled default)")
    p.add_argument("--images", default=str(ROOT / "data" / "train_plus"))
    p.add_argument("--eval-images", default=str(ROOT.parent / "shared" / "data" / "kodak"))
    p.add_argument("--limit", type=int, help="first N training images only (a smoke run)")
    p.add_argument("--eval-limit", type=int, help="first N evaluation images only")
    p.add_argument("--side", type=int, default=256)
    p.add_argument("--refine", type=int, default=5, help="refinement steps for the targets")
    p.add_argument("--steps", type=int, default=600, help="training steps")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mode", choices=("distil", "hard"), default="distil")
    p.add_argument("--out", required=True)
    a = p.parse_args()

    from vlmcodec.codec import default_model_path
    from vlmcodec.models.checkpoint import load_model, save_model
    from vlmcodec.refine import LatentRefiner, RefineObjective

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_model(a.model or default_model_path())
    net = loaded.model.eval()
    for prm in net.parameters():
        prm.requires_grad_(False)
    refiner = LatentRefiner(net, RefineObjective.from_recipe(loaded.metadata), steps=a.refine)
    K = net.num_levels
    levels = torch.arange(K, dtype=torch.float32)
    gain, inv_gain = net.gains(levels)  # [K, M]
    log: dict = {"args": vars(a), "model": loaded.fingerprint.hex()[:16]}

    # 1. targets
    cache = out / "targets.pt"
    if cache.exists():
        xs, originals, targets = torch.load(cache)
    else:
        rng = random.Random(0)
        files = sorted(f for f in Path(a.images).iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg"))[: a.limit]
        xs, originals, targets, before, after = [], [], [], [], []
        t0 = time.time()
        for i, f in enumerate(files):
            x = to_tensor(consumer_crop(f, a.side, rng, crop=True))
            with torch.no_grad():
                xp = net.pre_editor(x).clamp(0, 1) if net.pre_editor is not None else x
                y = net.g_a(xp) * gain[:, :, None, None]  # [K, M, h, w]: one item per level
                z = net.h_a(y)
            xs.append(xp[0])
            originals.append(x[0])
            if a.mode == "hard":
                continue
            y_ref, _ = refiner.refine(x.expand(K, -1, -1, -1), y, z, levels, (a.side, a.side))
            before.append(refiner.last_losses[0])
            after.append([min(step[j] for step in refiner.last_losses) for j in range(K)])
            targets.append(y_ref)
            if i % 10 == 0:
                print(f"targets {i + 1}/{len(files)}, {time.time() - t0:.0f} s", flush=True)
        xs, originals = torch.stack(xs), torch.stack(originals)  # [n, 3, s, s] each
        targets = torch.stack(targets) if targets else None  # [n, K, M, h, w]
        torch.save((xs, originals, targets), cache)
        if targets is not None:
            drop = [float(np.mean([1 - af[j] / bf[j] for bf, af in zip(before, after)])) for j in range(K)]
            log["refinement_objective_drop_on_crops"] = drop
            print("refinement lowered the crops' objective by", [f"{100 * g:.1f} %" for g in drop])

    # 2. training the encoder side
    g_a_old, h_a_old = copy.deepcopy(net.g_a), copy.deepcopy(net.h_a)
    trained = [net.g_a] + ([net.h_a] if a.mode == "hard" else [])
    params = [prm for module in trained for prm in module.parameters()]
    for prm in params:
        prm.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=a.lr)
    n = xs.shape[0]
    order = torch.Generator().manual_seed(1)
    t0 = time.time()
    losses = []
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = a.lr * 0.5 * (1 + math.cos(math.pi * step / a.steps))
        idx = torch.randint(0, n, (a.batch,), generator=order)
        if a.mode == "distil":
            pred = net.g_a(xs[idx])[:, None] * gain[None, :, :, None, None]  # [B, K, M, h, w]
            loss = (pred - targets[idx]).pow(2).mean()
        else:  # a random level per crop, the refinement's objective on the one-pass latents
            lv = torch.rand(a.batch, generator=order) * (K - 1)
            g_b, inv_b = net.gains(lv)
            x = originals[idx]
            y = net.g_a(xs[idx]) * g_b[:, :, None, None]
            with torch.no_grad():
                ref_tokens = refiner._tokens(x) if refiner.layers else None
            loss = refiner._loss(y, net.h_a(y), x, inv_b.detach(), refiner.lmbda(lv), (a.side, a.side),
                                 ref_tokens).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % 25 == 0 or step == a.steps - 1:
            print(f"step {step}: loss {np.mean(losses[-25:]):.4f}, {time.time() - t0:.0f} s", flush=True)
    for prm in params:
        prm.requires_grad_(False)
    log["train_loss_first_last_25"] = [float(np.mean(losses[:25])), float(np.mean(losses[-25:]))]

    # 3. the true objective of one-pass latents on the evaluation images, old vs new g_a
    rows = []
    evals = sorted(Path(a.eval_images).glob("*.png"))[: a.eval_limit]
    for f in evals:
        x = to_tensor(consumer_crop(f, a.side, random.Random(0), crop=False))
        hw = tuple(x.shape[-2:])
        with torch.no_grad():
            xp = net.pre_editor(x).clamp(0, 1) if net.pre_editor is not None else x
            xk = x.expand(K, -1, -1, -1)
            ref_tokens = refiner._tokens(xk) if refiner.layers else None
            lm = refiner.lmbda(levels)
            row = {}
            for name, g_a, h_a in (("old", g_a_old, h_a_old), ("new", net.g_a, net.h_a)):
                y = g_a(xp) * gain[:, :, None, None]
                obj = refiner._loss(y, h_a(y), xk, inv_gain, lm, hw, ref_tokens)
                row[name] = [float(v) for v in obj]
            rows.append(row)
    change = [float(np.mean([r["new"][j] / r["old"][j] - 1 for r in rows])) for j in range(K)]
    log["eval_objective_change_per_level"] = change
    print("one-pass objective on", len(evals), "eval images, new vs old encoder, per level:",
          [f"{100 * c:+.2f} %" for c in change])

    # 4. the model with the new g_a, sharing the default's decoder
    # the default's recipe (refinement reads its objective there) and lineage; this run's record
    keep = {k: loaded.metadata[k] for k in ("train_recipe", "train_lineage") if k in loaded.metadata}
    keep["encoder_probe"] = json.dumps({"script": "scripts/refine_distill_probe.py", **vars(a)})
    save_model(net, out / "model.safetensors", extra_metadata=keep, decodes_as=loaded.identity, require_shared=True)
    (out / "log.json").write_text(json.dumps(log, indent=1) + "\n")
    print("wrote", out / "model.safetensors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
