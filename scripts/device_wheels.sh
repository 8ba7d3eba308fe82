#!/usr/bin/env bash
# Run on the development machine (PyPI reachable): fetch into device_wheels/ the wheels a bare GPU
# device machine (torch + Triton, no internet) may lack, for its Python version.
#   bash scripts/device_wheels.sh 3.11          # pytest, hypothesis, Pillow, safetensors, tqdm (~10 MB)
#   bash scripts/device_wheels.sh 3.11 build    # + scikit-build-core, nanobind, ninja, cmake (~31 MB more)
# Carry device_wheels with the run tool; on the device: bash scripts/device_setup.sh
set -euo pipefail
PY=${1:?usage: device_wheels.sh PYTHON_VERSION [build], e.g. 3.11}
OUT=device_wheels
mkdir -p "$OUT"
BIN=(--only-binary=:all: --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --python-version "$PY")
pip download -q --no-deps -d "$OUT" pytest pluggy iniconfig packaging tqdm attrs sortedcontainers
pip download -q --no-deps "${BIN[@]}" -d "$OUT" pillow safetensors hypothesis
if [ "${2:-}" = build ]; then
  pip download -q --no-deps -d "$OUT" scikit-build-core==1.1.2 pathspec nanobind
  pip download -q --no-deps "${BIN[@]}" -d "$OUT" cmake ninja
fi
du -sh "$OUT"
