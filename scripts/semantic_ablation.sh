#!/usr/bin/env bash
# Issue 7's CPU ablation: four fine-tunes of the default model with the same recipe
# (configs/semantic_cpu.toml: 1000 steps, 256² crops, batch 4, one thread each, two at a time),
# then each on Kodak and the comparison against the default model, JPEG and WebP.
#   full       pre-editor + token loss (the config as written)
#   no-pre     token loss only                (--set pre_editor=false)
#   no-tok     pre-editor, pixel loss only    (--set w_tok=0 --set w_pix=1.0)
#   control    neither: more MSE fine-tuning  (both)
# Usage: bash scripts/semantic_ablation.sh RUNS_DIR   (≈ 50 min of training on 2 cores, then ≈ 20 min of evaluation)
set -euo pipefail
runs=${1:?usage: semantic_ablation.sh RUNS_DIR}
cfg=configs/semantic_cpu.toml
mkdir -p "$runs"
# the runs start from the MSE default of commit c983c8c (fingerprint 6127f0c2), not today's default
git show c983c8c:engine/weights/default.safetensors > "$runs/mse_default.safetensors"
train() { vlmcodec train --config "$cfg" --quiet --out-dir "$runs/$1" --init-from "$runs/mse_default.safetensors" \
            "${@:2}" > "$runs/$1.out" 2>&1; }
train full & train no-pre --set pre_editor=false & wait
train no-tok --set w_tok=0 --set w_pix=1.0 & train control --set pre_editor=false --set w_tok=0 --set w_pix=1.0 & wait
for run in full no-pre no-tok control; do
  out=results/semantic/$run
  mkdir -p "$out/cache"
  for c in jpeg webp; do  # reuse the anchors' measurements where a local rd_kodak run left them (not in git)
    if [ -d results/rd_kodak/cache/$c ]; then cp -r results/rd_kodak/cache/$c "$out/cache/"; fi
  done
  vlmcodec bench rd --out "$out" --codecs vlmcodec,jpeg,webp --model "$runs/$run/model.safetensors" \
    --qualities vlmcodec=0,5,10,20,35,50 --qualities jpeg=5,10,20,30,50 --qualities webp=5,10,20,30,50 \
    --threads 1 --quiet --no-plots
done
vlmcodec bench compare --curve default=results/semantic/mse-default/rd.json \
  $(for run in full no-pre no-tok control; do echo "--curve $run=results/semantic/$run/rd.json"; done) \
  --anchor webp=results/semantic/mse-default/rd.json:webp --anchor jpeg=results/semantic/mse-default/rd.json:jpeg \
  --max-bpp 0.3 --out results/semantic/compare.md
