#!/usr/bin/env bash
# A training stage's model at the consumer's scale (short side 256) on Kodak, next to the bundled
# default and WebP (full size and @256) from results/consumer_scale, with bootstrap intervals.
# Usage: bash scripts/eval_stage.sh MODEL NAME    → results/semantic/NAME-consumer/{rd.json,compare.md}
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 name=$2 out=results/semantic/$2-consumer C=results/consumer_scale/rd.json
vlmcodec bench rd --out "$out" --codecs vlmcodec@256 --model "$model" \
  --qualities vlmcodec=0,15,30,50,70,85,100 --threads 2 --quiet \
  --metrics psnr,ms-ssim,recall@1,teacher-sim,effnet-top1,effnet-kl,effnet-top1-10crop --no-plots
vlmcodec bench compare --curve "$name=$out/rd.json:vlmcodec@256" --curve "default=$C:vlmcodec@256" \
  --anchor "webp=$C:webp" --anchor "webp@256=$C:webp@256" \
  --metrics psnr,teacher-sim,effnet-top1,effnet-kl,effnet-top1-10crop --max-bpp 0.3 --out "$out/compare.md"
