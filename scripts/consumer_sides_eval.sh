#!/usr/bin/env bash
# Which short side: the model and WebP coding Kodak at 192 and 320 px, next to 256 px
# (results/consumer_scale, from scripts/consumer_scale_eval.sh) and full-size WebP.
# Usage: bash scripts/consumer_sides_eval.sh [MODEL]   (default: the bundled model; ~10 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out=results/consumer_scale_sides C=results/consumer_scale/rd.json
model=${1:-}
vlmcodec bench rd --out "$out" --codecs vlmcodec@192,vlmcodec@320,webp@192,webp@320 ${model:+--model "$model"} \
  --qualities vlmcodec=0,30,50,70,100 --qualities webp=0,5,10,20,30,50,70 --threads 2 --quiet --no-plots \
  --metrics psnr,ms-ssim,recall@1,teacher-sim,effnet-top1,effnet-kl,effnet-top1-10crop
vlmcodec bench compare --curve v192="$out/rd.json:vlmcodec@192" --curve v256="$C:vlmcodec@256" \
  --curve v320="$out/rd.json:vlmcodec@320" --curve w192="$out/rd.json:webp@192" --curve w256="$C:webp@256" \
  --curve w320="$out/rd.json:webp@320" --anchor webp="$C:webp" \
  --metrics teacher-sim,effnet-top1,effnet-kl,effnet-top1-10crop --out "$out/compare.md"
