#!/usr/bin/env bash
# Consumer-scale coding on Kodak (24 images): the model coding at a 256-px short side
# (Codec(short_side=256)) next to WebP and JPEG at the same scale (same resampling) and at full
# size, then the BD tables and the point-by-point check at <= 0.3 bpp against each anchor.
# Usage: bash scripts/consumer_scale_eval.sh [MODEL]   (default: the bundled model; ~10 min on 2 cores)
# Reads results/rd_kodak/rd.json for the model's full-size curve and
# results/semantic/stage5-consumer/rd.json for the stage-5 model's consumer-scale curve.
set -euo pipefail
cd "$(dirname "$0")/.."
out=results/consumer_scale
model=${1:-}
vlmcodec bench rd --out "$out" --codecs vlmcodec@256,webp@256,jpeg@256,webp,jpeg ${model:+--model "$model"} \
  --qualities vlmcodec=0,15,30,50,70,85,100 --qualities webp=0,2,5,10,20,30,50,70,85,95 --threads 2 --quiet \
  --metrics psnr,ms-ssim,recall@1,teacher-sim,effnet-top1,effnet-kl,effnet-top1-10crop
vlmcodec bench compare --curve default=results/rd_kodak/rd.json:vlmcodec --curve default@256="$out/rd.json:vlmcodec@256" \
  --curve stage5@256=results/semantic/stage5-consumer/rd.json:vlmcodec@256 \
  --anchor webp="$out/rd.json:webp" --anchor webp@256="$out/rd.json:webp@256" \
  --anchor jpeg="$out/rd.json:jpeg" --anchor jpeg@256="$out/rd.json:jpeg@256" \
  --metrics psnr,teacher-sim,effnet-top1,effnet-kl,effnet-top1-10crop --max-bpp 0.3 --out "$out/compare.md"
