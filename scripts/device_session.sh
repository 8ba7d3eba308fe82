#!/usr/bin/env bash
# A whole GPU session's work in ONE device call, for sessions lent ~15 minutes of device time in all
# (the machine's start counts, and it goes back 30 s after a call): set-up, the GPU tests, the
# kernel benchmark, then a training slice sized to what is left (device_train.py --fit-steps: the
# cosine schedule ends inside the call) with its fp16 weights and logs under $OUT.
#
# Here, first (62.6 MiB to carry, under the 64 MiB limit; the device's Python must match the wheels):
#   python scripts/extra_train_data.py --out data/train_plus
#   python scripts/prepare_gpu_data.py data/train_plus gpu_data/train --max-pixels 400000 --quality 90 \
#       --teacher gpu_data/dinov2_vits14_fp16.safetensors --budget-mib 54.5
#   bash scripts/device_wheels.sh 3.11
# On the device (run tool: carry ["gpu_data", "device_wheels"], timeout_s 590):
#   bash scripts/device_session.sh 560 [CONFIG]
# Back here: vlmcodec convert --from-weights <files_at>/weights.safetensors -o runs/gpu_slice.safetensors,
# then bash scripts/eval_stage.sh runs/gpu_slice.safetensors gpu1
set -uo pipefail
cd "$(dirname "$0")/.."
budget=${1:-560}
config=${2:-configs/semantic.toml}
OUT=${OUT:-out}
mkdir -p "$OUT"
left() { echo $((budget - SECONDS)); }
bash scripts/device_setup.sh 2>&1 | tee "$OUT/setup.txt"
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "device_session: no CUDA device here; nothing to do" >&2
  exit 1
fi
echo "== GPU tests (at most 120 s)"
timeout 120 python scripts/device_run.py pytest -m gpu -q -rs -p no:cacheprovider tests/ > "$OUT/gpu_tests.txt" 2>&1
echo "exit $?" >> "$OUT/gpu_tests.txt"
tail -15 "$OUT/gpu_tests.txt"
echo "== kernel benchmark (at most 60 s)"
timeout 60 python scripts/device_run.py vlmcodec.bench.kernels > "$OUT/kernels.txt" 2>&1
echo "exit $?" >> "$OUT/kernels.txt"
cat "$OUT/kernels.txt"
train_s=$(($(left) - 25))
echo "== training: $train_s s with $config"
if [ "$train_s" -lt 120 ]; then
  echo "device_session: only $train_s s left for training; skipped" >&2
  exit 1
fi
python scripts/device_train.py --config "$config" --fit-steps --time-limit "$train_s" --out "$OUT" 2>&1 | tee "$OUT/train.txt"
status=${PIPESTATUS[0]}
echo "== done in $SECONDS s (budget $budget s), training exit $status"
exit "$status"
