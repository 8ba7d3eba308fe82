#!/usr/bin/env bash
# A whole GPU session's work in ONE device call, for sessions lent ~15 minutes of device time in all
# (the machine's start counts, and it goes back 30 s after a call): set-up (build included), the GPU
# tests, the kernel and codec speed benchmarks, then a training slice sized to what is left (device_train.py
# --fit-steps: the cosine schedule ends inside the call) with its fp16 weights and logs under $OUT.
# The run tool brings back at most 8 files from $OUT, so this leaves at most 7 there: session.txt
# (every step's output, appended as it goes: a call cut off keeps what ran), speed.json, and what
# device_train.py writes (weights.safetensors, with an average also weights_last.safetensors,
# log.csv, log.jsonl, fit.json).
#
# The run tool's 64 MiB counts the checkout (~24 MiB) AND the carried folders. Here, first:
#   python scripts/extra_train_data.py --out data/train_plus
#   python scripts/prepare_gpu_data.py data/train_plus gpu_data/train --max-pixels 600000 --quality 90 \
#       --teacher gpu_data/dinov2_vits14_int8.safetensors       # budget = 64 MiB - checkout - 1 MiB
# On the device (run tool: carry ["gpu_data"], timeout_s 590):
#   bash scripts/device_session.sh 560 [CONFIG [device_train.py options, e.g. --set batch=8]]
# Back here: vlmcodec convert --from-weights <files_at>/weights.safetensors -o runs/gpu_slice.safetensors,
# then bash scripts/eval_stage.sh runs/gpu_slice.safetensors gpu1
# A rehearsal on a CPU machine (everything but CUDA; DEVICE_SESSION_ALLOW_CPU=1, see the README).
set -uo pipefail
cd "$(dirname "$0")/.."
# Python holds its output back in a pipe (tee): a step stopped at its limit lost all it had printed
export PYTHONUNBUFFERED=1
budget=${1:-560}
config=${2:-configs/semantic.toml}
shift $(($# < 2 ? $# : 2))
PY=${PYTHON:-python3}
OUT=${OUT:-out}
mkdir -p "$OUT"
log="$OUT/session.txt"
: > "$log"
left() { echo $((budget - SECONDS)); }
# step SECONDS TITLE COMMAND...: the command under a time limit, its output and exit status appended
# to session.txt and shown. At the limit it gets SIGINT, as Ctrl-C (pytest then prints its summary
# and the failures so far; SIGTERM lost them), and SIGKILL 10 s later
step() {
  local limit=$1 title=$2
  shift 2
  echo "== $title" | tee -a "$log"
  timeout -s INT -k 10 "$limit" "$@" 2>&1 | tee -a "$log"
  echo "exit ${PIPESTATUS[0]}" | tee -a "$log"
}
bash scripts/device_setup.sh 2>&1 | tee -a "$log"
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  if [ "${DEVICE_SESSION_ALLOW_CPU:-0}" != 1 ]; then
    echo "device_session: no CUDA device here; nothing to do (DEVICE_SESSION_ALLOW_CPU=1 rehearses on the CPU)" \
      | tee -a "$log" >&2
    exit 1
  fi
  echo "device_session: no CUDA device; rehearsal on the CPU" | tee -a "$log"
fi
step 120 "GPU tests (at most 120 s)" \
  $PY scripts/device_run.py pytest -m gpu -q -rs -p no:cacheprovider --continue-on-collection-errors tests/
step 60 "kernel benchmark (at most 60 s)" $PY scripts/device_run.py vlmcodec.bench.kernels
step 60 "codec speed on the two samples, torch and triton backends (at most 60 s; needs the build)" \
  $PY scripts/device_run.py vlmcodec.bench.speed --images assets/samples --backends torch,triton \
  --device cuda --out "$OUT/speed.json"
step 40 "exact h_s, CPU vs CUDA (hs_device), bit-identity and time (at most 40 s)" \
  $PY scripts/device_run.py scripts/hs_device_bench.py
train_s=$(($(left) - 25))
echo "== training: $train_s s with $config" | tee -a "$log"
if [ "$train_s" -lt 120 ]; then
  echo "device_session: only $train_s s left for training; skipped" | tee -a "$log" >&2
  exit 1
fi
$PY scripts/device_train.py --config "$config" --fit-steps --time-limit "$train_s" --out "$OUT" "$@" 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
echo "== done in $SECONDS s (budget $budget s), training exit $status" | tee -a "$log"
exit "$status"
