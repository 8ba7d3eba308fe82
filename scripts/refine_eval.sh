#!/usr/bin/env bash
# Encoder-side refinement (Codec(refine=K)) on Kodak at the consumer's scale (short side 256): the
# default model with K steps next to its one-pass encoder and WebP (full size and @256) from
# results/consumer_scale, with bootstrap intervals (the one-pass encoder is the reference curve). K defaults to 30 (~50 min on 2 cores).
# Usage: bash scripts/refine_eval.sh [K]    → results/refine/{rd.json,report.md,compare.md}
# K may carry teacher views (KvAxB, e.g. 30v224x336: the token term over views 224 and 336 px);
# QUALITIES=0,15,50,85,100 overrides the quality grid. A second K merges into the same rd.json
# (bench rd --merge) and is compared too. OUT=DIR writes elsewhere (a new model: a new folder,
# since --merge would mix two models' curves).
set -euo pipefail
cd "$(dirname "$0")/.."
k=${1:-30} out=${OUT:-results/refine} C=results/consumer_scale/rd.json
merge=$([ -f "$out/rd.json" ] && echo --merge || true)
vlmcodec bench rd --out "$out" --codecs "vlmcodec+r$k@256" $merge \
  --qualities "vlmcodec=${QUALITIES:-0,15,30,50,70,85,100}" --threads 2 --quiet \
  --metrics psnr,ms-ssim,recall@1,teacher-sim,effnet-top1,effnet-kl,effnet-top1-10crop
curves=(--curve "one-pass=$C:vlmcodec@256")
for codec in $(python -c "import json; print(' '.join(json.load(open('$out/rd.json'))['codecs']))"); do
  curves+=(--curve "${codec#vlmcodec+}=$out/rd.json:$codec")
done
vlmcodec bench compare "${curves[@]}" \
  --anchor "webp=$C:webp" --anchor "webp@256=$C:webp@256" \
  --metrics psnr,teacher-sim,effnet-top1,effnet-kl,effnet-top1-10crop --max-bpp 0.3 --out "$out/compare.md"
